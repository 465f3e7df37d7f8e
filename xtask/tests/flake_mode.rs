//! Flake mode with the real `nix eval`, on a stand-in flake: there is no
//! nixpkgs here, so tests/fixtures/flake-mode/flake.nix gives a
//! nixosConfigurations entry whose `config` has the merged configuration's
//! shape, built from the host's own files. It proves the wiring (the
//! expression nix eval runs, nix/lib/eval-flake.nix, reading and judging the
//! result) and that flake mode sees what only the merged config shows.

mod support;
use support::copy_tree;

use std::path::Path;

use assert_cmd::Command;
use predicates::prelude::*;

const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/flake-mode");

/// A repository root with the host, our Nix wrappers and the stand-in flake.
fn stand_in_repository(extra: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    copy_tree(Path::new(REPO).join("hosts"), root.join("hosts"));
    copy_tree(Path::new(REPO).join("nix/lib"), root.join("nix/lib"));
    for file in ["flake.nix", "flake.lock"] {
        std::fs::copy(Path::new(FIXTURE).join(file), root.join(file)).unwrap();
    }
    std::fs::write(root.join("extra.nix"), extra).unwrap();
    dir
}

fn check(root: &Path) -> Command {
    let mut command = Command::cargo_bin("xtask").unwrap();
    command
        .env("XTASK_PROJECT_ROOT", root)
        .args(["check", "--mode", "flake"]);
    command
}

#[test]
fn flake_mode_runs_and_agrees_with_standalone_mode() {
    let repository = stand_in_repository("{ }");
    check(repository.path())
        .assert()
        .code(0)
        .stdout(predicate::str::contains(
            "standalone and flake mode (nixosConfigurations.hetzner-vps)",
        ))
        .stdout(predicate::str::contains("ok: 0 error(s)"));
}

#[test]
fn flake_mode_sees_options_another_module_adds() {
    // Another module of the host adds a compress level to /nix: the plain
    // disko.nix looks clean, the merged configuration is not.
    let repository =
        stand_in_repository(r#"{ fileSystems."/nix".options = [ "compress=zstd:3" ]; }"#);
    check(repository.path())
        .assert()
        .code(1)
        .stdout(predicate::str::contains("error[BTRFS006]"))
        .stdout(predicate::str::contains("\"compress=zstd:3\" on /nix"));
    Command::cargo_bin("xtask")
        .unwrap()
        .env("XTASK_PROJECT_ROOT", repository.path())
        .args(["check", "--mode", "standalone"])
        .assert()
        .code(0);
}

#[test]
fn flake_mode_that_cannot_run_says_why() {
    let repository = stand_in_repository("{ }");
    std::fs::remove_file(repository.path().join("flake.lock")).unwrap();
    check(repository.path())
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no flake.lock yet"));
    // auto steps aside with the same reason instead of failing.
    Command::cargo_bin("xtask")
        .unwrap()
        .env("XTASK_PROJECT_ROOT", repository.path())
        .args(["check"])
        .assert()
        .code(0)
        .stdout(predicate::str::contains(
            "flake mode not run: no flake.lock yet",
        ));
}

/// What nixos/modules/tasks/filesystems.nix adds to a mount's options by
/// itself (x-initrd.mount on every stage-1 mount) is not taken for options
/// the host wrote: nix/lib/eval-flake.nix hands the model only the host's.
#[test]
fn options_nixos_adds_itself_are_not_the_hosts() {
    let repository =
        stand_in_repository(r#"{ fileSystems."/nix".options = [ "x-systemd.automount" ]; }"#);
    let root = repository.path();
    let output = std::process::Command::new("nix")
        .args([
            "--extra-experimental-features",
            "nix-command flakes",
            "eval",
            "--json",
            "--impure",
            "--offline",
            "--expr",
        ])
        .arg(format!(
            "(import {}/nix/lib/eval-flake.nix {{ flake = {}; host = \"hetzner-vps\"; }}).layout.fileSystems",
            root.display(),
            root.display()
        ))
        .current_dir(root)
        .output()
        .expect("nix runs (on Debian: apt-get install nix-bin)");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let file_systems: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let options = |mountpoint: &str| file_systems[mountpoint]["options"].clone();
    assert_eq!(options("/"), serde_json::json!([]));
    assert_eq!(options("/persist"), serde_json::json!([]));
    assert_eq!(options("/nix"), serde_json::json!(["x-systemd.automount"]));
}
