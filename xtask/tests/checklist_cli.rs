//! `cargo xtask deploy-checklist` as users run it, on a copy of this
//! repository committed into a fresh git repository (a "fresh clone" of the
//! working tree), so that the tree's state and the results are the test's
//! own and the repository's target/xtask is never touched.
//!
//! The NixOS gate cannot run here (no nixpkgs, no flake.lock): where a test
//! needs it to PASS it either writes a stand-in result or evaluates the
//! stand-in flake of tests/fixtures/flake-mode (builtins only; its toplevel
//! follows nixos/modules/system/activation/top-level.nix only in name and
//! shape). vm-test results are stand-ins too: the real vm-test runs in
//! tests/vm_test.rs.

use std::path::{Path, PathBuf};
use std::process::Output;

use assert_cmd::Command;
use camino::Utf8PathBuf;
use serde_json::Value;
use toolbox::project::Revision;
use xtask::flake_eval::{self, FlakeEvalResults};
use xtask::results::{
    self, BootRecord, CheckRecord, CommandOutcome, CommandRecord, CommandStatus, Header, Kind,
    VmTestRequest, VmTestResults, SCHEMA,
};

const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
const FLAKE_FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/flake-mode");
const MACHINE: &str = "hosts/servers/hetzner-cloud/machine.nix";
const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHhUC0u7PKE5pmq7xvUwZ5kzP8h0hMNkr5+vFJqv3mQx test@example";

fn git(dir: &Path, args: &[&str]) -> String {
    let output = std::process::Command::new("git")
        .args([
            "-c",
            "user.name=checklist test",
            "-c",
            "user.email=test@example.invalid",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git runs (on Debian: apt-get install git)");
    assert!(
        output.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// The working tree's files (tracked, and untracked but not ignored), copied
/// into a new git repository and committed: what a fresh clone holds.
fn fresh_clone() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("repo");
    let listed = git(
        Path::new(REPO),
        &["ls-files", "--cached", "--others", "--exclude-standard"],
    );
    for file in listed.lines() {
        let from = Path::new(REPO).join(file);
        if !from.is_file() {
            continue; // deleted in the working tree
        }
        let to = root.join(file);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(&from, &to).unwrap();
    }
    git(&root, &["init", "--quiet"]);
    git(&root, &["add", "--all"]);
    git(&root, &["commit", "--quiet", "-m", "fresh clone"]);
    (dir, root)
}

fn commit_all(root: &Path, message: &str) {
    git(root, &["add", "--all"]);
    git(root, &["commit", "--quiet", "-m", message]);
}

fn add_key(root: &Path) {
    let path = root.join(MACHINE);
    let text = std::fs::read_to_string(&path).unwrap();
    let edited = text.replace(
        "adminSshKeys = [\n",
        &format!("adminSshKeys = [\n    \"{KEY}\"\n"),
    );
    assert_ne!(text, edited, "machine.nix has an adminSshKeys list");
    std::fs::write(path, edited).unwrap();
}

fn xtask(root: &Path) -> Command {
    let mut command = Command::cargo_bin("xtask").expect("the xtask binary builds");
    command.env("XTASK_PROJECT_ROOT", root);
    command
}

fn checklist(root: &Path, extra: &[&str]) -> Output {
    xtask(root)
        .arg("deploy-checklist")
        .args(extra)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn utf8(path: &Path) -> Utf8PathBuf {
    Utf8PathBuf::from_path_buf(path.to_owned()).unwrap()
}

/// A header as the commands write it, for the files of `root` as they are now.
fn header(root: &Path, kind: Kind, passed: bool) -> Header {
    let root = utf8(root);
    Header {
        schema: SCHEMA,
        kind: kind.to_string(),
        host: "hetzner-cloud".to_owned(),
        revision: Revision {
            commit: Some(git(root.as_std_path(), &["rev-parse", "HEAD"])),
            dirty: false,
        },
        finished_at: "2026-11-28T12:00:00Z".to_owned(),
        passed,
        inputs: results::current_inputs(&root, kind, "hetzner-cloud"),
    }
}

/// A full, passing vm-test of the host's disk, as vm-test.pass.json.
fn stand_in_vm_test(root: &Path, boots: u32, disk_bytes: u64) -> VmTestResults {
    let kinds = ["install", "rotate", "rotate", "rotate"];
    VmTestResults {
        header: header(root, Kind::VmTest, true),
        backend: "lab".to_owned(),
        accelerator: "tcg".to_owned(),
        kernel: "6.1.0-56-cloud-amd64".to_owned(),
        disk_bytes,
        requested: VmTestRequest {
            boots,
            disk_size: None,
            power_cuts: 0,
            boot_timeout_s: None,
            thorough: false,
            drills: false,
        },
        boots: (1..=boots)
            .map(|n| BootRecord {
                number: n,
                kind: kinds[(n - 1) as usize].to_owned(),
                wall_ms: 10_000,
                steps: Vec::new(),
                passed: true,
            })
            .collect(),
        checks: (1..=boots)
            .map(|n| CheckRecord {
                boot: n,
                name: "subvolumes".to_owned(),
                passed: true,
                measured: "8".to_owned(),
                expected: "8".to_owned(),
            })
            .collect(),
        figures: [
            ("compression.@nix.percent".to_owned(), 52.0),
            ("rotation_ms.boot2".to_owned(), 280.0),
        ]
        .into_iter()
        .collect(),
        wall_ms: 30_000,
        procedures: Vec::new(),
    }
}

/// A passing `vm-test --thorough` as vm-test-thorough.pass.json: every
/// procedure of the checklist the lab runs passed (one command each), the
/// others NOT RUN, as vm-test records them.
fn stand_in_thorough(root: &Path) -> VmTestResults {
    use xtask::vm::procedure_runs::{not_run_record, tier, Tier};
    let loaded = xtask::deploy_checklist::load(
        &toolbox::context::Context::default(),
        &utf8(root),
        "hetzner-cloud",
    )
    .expect("the host loads");
    let mut results = stand_in_vm_test(root, results::FULL_VM_TEST_BOOTS, 480_000_000_000);
    results.header = header(root, results::THOROUGH_KIND, true);
    results.requested.thorough = true;
    results.procedures = xtask::deploy_checklist::server_procedures(&loaded.subject, &loaded.facts)
        .iter()
        .map(|n| {
            if tier(&n.procedure) == Tier::NotInLab {
                return not_run_record(n, None);
            }
            let first = &n.procedure.commands[0];
            let mut record = not_run_record(n, Some("stand-in"));
            record.commands = vec![CommandRecord {
                boot: 2,
                part: 0,
                outcome: CommandOutcome {
                    role: "checklist".to_owned(),
                    at: Some(first.at),
                    line: first.line.clone(),
                    ran: first.line.clone(),
                    status: CommandStatus::Pass,
                    exit: Some(0),
                    ms: 100,
                    stdout: String::new(),
                    stderr: String::new(),
                    expected: "exit 0".to_owned(),
                    passed: true,
                    problem: None,
                    proven_by: None,
                },
            }];
            record.settle();
            record
        })
        .collect();
    results
}

fn stand_in_nixos(root: &Path) -> FlakeEvalResults {
    FlakeEvalResults {
        header: header(root, flake_eval::KIND, true),
        attribute: "hetzner-vps".to_owned(),
        installable: flake_eval::installable("hetzner-vps"),
        drv_path: Some(
            "/nix/store/00000000000000000000000000000000-nixos-system-stand-in.drv".to_owned(),
        ),
        error: None,
        locked_inputs: Default::default(),
    }
}

fn put<T: serde::Serialize>(root: &Path, file: &str, value: &T) {
    let dir = root.join("target/xtask");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(file), serde_json::to_vec_pretty(value).unwrap()).unwrap();
}

#[test]
fn a_fresh_clone_is_not_ready_and_says_why() {
    let (_keep, root) = fresh_clone();
    let output = checklist(&root, &[]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(output.stdout.is_empty(), "the checklist is withheld");
    assert!(stderr.contains("FAIL     login"), "{stderr}");
    assert!(
        stderr.contains("no SSH key for hbohlen (adminSshKeys, HOST001)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("NOT RUN  nixos       cannot run here (no flake.lock"),
        "{stderr}"
    );
    assert!(
        stderr.contains("nix flake lock && git add flake.lock && git commit -m 'Pin the flake inputs'`, then `cargo xtask check --mode flake --host hetzner-cloud`"),
        "{stderr}"
    );
    assert!(stderr.contains("NOT RUN  check"), "{stderr}");
    assert!(stderr.contains("NOT RUN  vm-test"), "{stderr}");
    assert!(
        stderr.contains("NOT RUN  procedures  no `vm-test --thorough` result in"),
        "{stderr}"
    );
    assert!(
        stderr.contains("to fix: cargo xtask vm-test --thorough --drills --host hetzner-cloud"),
        "{stderr}"
    );
    assert!(stderr.contains("PASS     docs"), "{stderr}");
    assert!(stderr.contains("PASS     tree"), "{stderr}");
    assert!(stderr.contains("NOT READY (FAIL)"), "{stderr}");

    // `check` itself passes (HOST001 is a warning), but its gate does not.
    xtask(&root).arg("check").assert().code(0);
    let stderr = text(&checklist(&root, &[]).stderr);
    assert!(
        stderr.contains("FAIL     check       HOST001 adminSshKeys: a warning for `check`"),
        "{stderr}"
    );
}

#[test]
fn with_a_key_committed_and_every_result_the_checklist_is_ready() {
    let (_keep, root) = fresh_clone();
    add_key(&root);
    // Uncommitted, the key makes the tree gate fail.
    assert!(text(&checklist(&root, &[]).stderr).contains("FAIL     tree"));
    commit_all(&root, "the admin key");
    xtask(&root).arg("check").assert().code(0);
    put(&root, "flake-eval.pass.json", &stand_in_nixos(&root));
    put(
        &root,
        "vm-test.pass.json",
        &stand_in_vm_test(&root, results::FULL_VM_TEST_BOOTS, 480_000_000_000),
    );
    // Without a thorough run, the procedures gate is NOT RUN.
    let stderr = text(&checklist(&root, &[]).stderr);
    assert!(stderr.contains("NOT RUN  procedures"), "{stderr}");
    put(
        &root,
        "vm-test-thorough.pass.json",
        &stand_in_thorough(&root),
    );

    let output = checklist(&root, &[]);
    let stdout = text(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert!(
        stdout.contains("*vm-test: NOT RUN in the lab VM (needs systemd as PID 1"),
        "{stdout}"
    );
    assert!(
        stdout.contains("*vm-test --thorough (vm-test-thorough.pass.json): PASS, 1 of its commands ran as expected in the lab VM"),
        "{stdout}"
    );
    assert!(stdout.contains("> **READY**"), "{stdout}");
    assert!(stdout.contains("  local$ ssh hbohlen@<IP>\n"), "{stdout}");
    assert!(
        stdout.contains("| compression saves > 30 % on /nix | 52% saved | met |"),
        "{stdout}"
    );

    let json: Value = serde_json::from_slice(&checklist(&root, &["--json"]).stdout).unwrap();
    assert_eq!(json["ready"], true);
    assert_eq!(json["status"], "PASS");
    assert_eq!(json["gates"][1]["file"], "check.pass.json");

    // A failed run afterwards is shown, and the proof stays.
    let mut failed = stand_in_vm_test(&root, results::FULL_VM_TEST_BOOTS, 480_000_000_000);
    failed.header.passed = false;
    failed.header.finished_at = "2026-11-29T09:00:00Z".to_owned();
    failed.checks[1].passed = false;
    put(&root, "vm-test.json", &failed);
    let output = checklist(&root, &[]);
    assert_eq!(output.status.code(), Some(0));
    assert!(text(&output.stdout).contains("it does not replace this proof"));

    // A partial run, or one on another disk size, is no proof.
    std::fs::remove_file(root.join("target/xtask/vm-test.pass.json")).unwrap();
    put(
        &root,
        "vm-test.json",
        &stand_in_vm_test(&root, 1, 480_000_000_000),
    );
    let stderr = text(&checklist(&root, &[]).stderr);
    assert!(
        stderr.contains("NOT RUN  vm-test     only a partial run (--boots 1"),
        "{stderr}"
    );
    put(
        &root,
        "vm-test.json",
        &stand_in_vm_test(&root, results::FULL_VM_TEST_BOOTS, 40 << 30),
    );
    let stderr = text(&checklist(&root, &[]).stderr);
    assert!(
        stderr.contains("only a run on a 42949672960-byte disk"),
        "{stderr}"
    );
    put(
        &root,
        "vm-test.pass.json",
        &stand_in_vm_test(&root, results::FULL_VM_TEST_BOOTS, 480_000_000_000),
    );

    // An uncommitted edit to the layout makes every result that rests on it stale.
    let disko = root.join("hosts/servers/hetzner-cloud/disko.nix");
    let mut layout = std::fs::read_to_string(&disko).unwrap();
    layout.push_str("# edited\n");
    std::fs::write(&disko, layout).unwrap();
    let output = checklist(&root, &[]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    for gate in ["check  ", "nixos  ", "vm-test  ", "procedures"] {
        assert!(
            stderr.contains(&format!("STALE    {gate}")),
            "{gate}: {stderr}"
        );
    }
    assert!(
        stderr.contains("hosts/servers/hetzner-cloud/disko.nix changed (not committed)"),
        "{stderr}"
    );
    assert!(stderr.contains("FAIL     tree"), "{stderr}");
    assert!(stderr.contains("PASS     login"), "{stderr}");

    // Committed, the results are stale all the same: they name the old commit.
    commit_all(&root, "an edit");
    let stderr = text(&checklist(&root, &[]).stderr);
    assert!(
        stderr.contains("STALE    vm-test     vm-test.pass.json: made at"),
        "{stderr}"
    );
    assert!(stderr.contains("PASS     tree"), "{stderr}");
}

#[test]
fn the_nixos_gate_rests_on_check_mode_flake() {
    let (_keep, root) = fresh_clone();
    add_key(&root);
    for file in ["flake.nix", "flake.lock", "extra.nix"] {
        std::fs::copy(Path::new(FLAKE_FIXTURE).join(file), root.join(file)).unwrap();
    }
    commit_all(&root, "the stand-in flake and the key");
    xtask(&root)
        .args(["check", "--mode", "flake"])
        .assert()
        .code(0)
        .stdout(predicates::str::contains(
            "the system evaluates: /nix/store/",
        ));
    let written: FlakeEvalResults =
        results::read(&utf8(&root.join("target/xtask/flake-eval.pass.json")))
            .unwrap()
            .expect("check --mode flake records the NixOS gate");
    assert!(written
        .drv_path
        .unwrap()
        .ends_with("-nixos-system-hetzner-vps-stand-in.drv"));
    assert!(written.header.inputs.contains_key("flake.lock"));
    let json: Value =
        serde_json::from_slice(&checklist(&root, &["--json", "--allow-stale"]).stdout).unwrap();
    assert_eq!(json["gates"][2]["id"], "nixos");
    assert_eq!(json["gates"][2]["status"], "PASS", "{:#}", json["gates"][2]);
    assert_eq!(json["gates"][1]["status"], "PASS", "{:#}", json["gates"][1]);

    // A system that does not evaluate (as NixOS throws on a failed assertion)
    // is a finding of check and a failed gate; the last proof stays on file.
    std::fs::write(
        root.join("extra.nix"),
        "{ toplevel = throw \"Failed assertions:\\n- hbohlen has no SSH key\"; }\n",
    )
    .unwrap();
    commit_all(&root, "a system that does not evaluate");
    xtask(&root)
        .args(["check", "--mode", "flake"])
        .assert()
        .code(1)
        .stdout(predicates::str::contains("error[NIX005]"))
        .stdout(predicates::str::contains("hbohlen has no SSH key"));
    assert!(root.join("target/xtask/flake-eval.pass.json").is_file());
    let json: Value =
        serde_json::from_slice(&checklist(&root, &["--json", "--allow-stale"]).stdout).unwrap();
    let gate = &json["gates"][2];
    assert_eq!(gate["status"], "FAIL", "{gate:#}");
    assert!(
        gate["detail"]
            .as_str()
            .unwrap()
            .contains("hbohlen has no SSH key"),
        "{gate:#}"
    );
}

#[test]
fn allow_stale_prints_the_json_document_marked_not_ready() {
    let (_keep, root) = fresh_clone();
    let output = checklist(&root, &["--allow-stale", "--json"]);
    assert_eq!(output.status.code(), Some(1));
    let json: Value = serde_json::from_slice(&output.stdout).expect("JSON on stdout");
    assert_eq!(json["ready"], false);
    assert_eq!(json["status"], "FAIL");
    assert_eq!(json["facts"]["adminUser"], "hbohlen");
    assert_eq!(json["flake_attribute"], "hetzner-vps");
    assert!(json["verification"].as_array().unwrap().len() > 5);
    // The old flag is gone: one convention for every subcommand.
    checklist(&root, &["--format", "json"])
        .status
        .code()
        .filter(|code| *code == 2)
        .expect("--format is rejected with exit code 2");
}

#[test]
fn the_facts_fixture_is_the_real_evaluation_of_the_host() {
    let output = std::process::Command::new("nix-instantiate")
        .args(["--eval", "--strict", "--json"])
        .arg(format!("{REPO}/nix/lib/eval-facts.nix"))
        .args(["--argstr", "hostDir"])
        .arg(format!("{REPO}/hosts/servers/hetzner-cloud"))
        .output()
        .expect("nix-instantiate runs (on Debian: apt-get install nix-bin)");
    assert!(output.status.success(), "{}", text(&output.stderr));
    let evaluated: Value = serde_json::from_slice(&output.stdout).unwrap();
    let fixture: Value =
        serde_json::from_str(include_str!("fixtures/hetzner-cloud.facts.json")).unwrap();
    assert!(
        evaluated == fixture,
        "xtask/tests/fixtures/hetzner-cloud.facts.json is stale; regenerate it:\n{}",
        serde_json::to_string_pretty(&evaluated).unwrap()
    );
}

#[test]
fn facts_that_need_the_module_system_are_named() {
    let (_keep, root) = fresh_clone();
    let services = root.join("hosts/servers/hetzner-cloud/services.nix");
    let text_before = std::fs::read_to_string(&services).unwrap();
    std::fs::write(
        &services,
        text_before
            .replacen("{\n", "{ lib, ... }:\n{\n", 1)
            .replace(
                "PermitRootLogin = \"no\";",
                "PermitRootLogin = lib.mkForce \"no\";",
            ),
    )
    .unwrap();
    let output = checklist(&root, &[]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("services.nix: an option deploy-checklist reads depends on `lib`"),
        "{stderr}"
    );
}

#[test]
fn an_unknown_host_cannot_run() {
    let output = Command::cargo_bin("xtask")
        .unwrap()
        .args(["deploy-checklist", "--host", "nowhere"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("no host \"nowhere\""));
}
