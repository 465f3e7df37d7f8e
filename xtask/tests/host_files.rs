//! Every host file `check` and `vm-test` read (disko.nix, persistence.nix,
//! machine.nix, rollback.nix) either evaluates or is a finding with its file
//! and position, and the partition sizes machine.nix requires are enforced.
//! Each test breaks one file of a copy of the repository's host (the
//! repository itself is never touched) and runs the real binary with the
//! real nix-instantiate.

mod support;
use support::copy_tree;

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use serde_json::Value;

const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
const HOST: &str = "hosts/servers/hetzner-cloud";

/// A copy of the repository's hosts/ and nix/lib/ with `file` of the host
/// changed by `edit`.
fn stand_in(file: &str, edit: impl FnOnce(String) -> String) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    copy_tree(Path::new(REPO).join("hosts"), root.join("hosts"));
    copy_tree(Path::new(REPO).join("nix/lib"), root.join("nix/lib"));
    let path = host_file(root, file);
    let text = std::fs::read_to_string(&path).unwrap();
    let changed = edit(text.clone());
    assert_ne!(changed, text, "the edit of {file} changed nothing");
    std::fs::write(&path, changed).unwrap();
    dir
}

fn host_file(root: &Path, file: &str) -> PathBuf {
    root.join(HOST).join(file)
}

fn replace(from: &'static str, to: &'static str) -> impl FnOnce(String) -> String {
    move |text| {
        assert!(text.contains(from), "{from:?} is not in the file");
        text.replacen(from, to, 1)
    }
}

/// `check --json` on the stand-in: its exit code and findings.
fn check(root: &Path) -> (Option<i32>, Vec<Value>) {
    let output = Command::cargo_bin("xtask")
        .unwrap()
        .args(["check", "--mode", "standalone", "--json"])
        .env("XTASK_PROJECT_ROOT", root)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    let report: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("check printed no report ({e}):\n{stderr}"));
    let findings = report["hosts"][0]["findings"].as_array().unwrap().clone();
    (output.status.code(), findings)
}

fn finding<'f>(findings: &'f [Value], code: &str) -> &'f Value {
    findings
        .iter()
        .find(|f| f["code"] == code)
        .unwrap_or_else(|| panic!("no {code} in {findings:#?}"))
}

/// The file, line and column a finding names.
fn place(finding: &Value) -> (String, u64, u64) {
    let location = &finding["location"];
    (
        location["file"].as_str().unwrap_or_default().to_owned(),
        location["line"].as_u64().unwrap_or(0),
        location["column"].as_u64().unwrap_or(0),
    )
}

/// The line (from 1) of the first line of `file` that holds `text`.
fn line_of(root: &Path, file: &str, text: &str) -> u64 {
    line_after(root, file, "", text)
}

/// The line (from 1) of the first line holding `text` at or after the first
/// line holding `after`.
fn line_after(root: &Path, file: &str, after: &str, text: &str) -> u64 {
    let content = std::fs::read_to_string(host_file(root, file)).unwrap();
    let lines: Vec<&str> = content.lines().collect();
    let start = lines
        .iter()
        .position(|line| line.contains(after))
        .unwrap_or_else(|| panic!("{after:?} not in {file}"));
    let index = lines[start..]
        .iter()
        .position(|line| line.contains(text))
        .unwrap_or_else(|| panic!("{text:?} not in {file}"));
    (start + index) as u64 + 1
}

fn assert_evaluation_error(file: &str, dir: &tempfile::TempDir, line: u64, column: Option<u64>) {
    let (code, findings) = check(dir.path());
    assert_eq!(code, Some(1), "{findings:#?}");
    let nix002 = finding(&findings, "NIX002");
    let (at, at_line, at_column) = place(nix002);
    assert!(at.ends_with(&format!("{HOST}/{file}")), "{nix002:#}");
    assert_eq!(at_line, line, "{nix002:#}");
    if let Some(column) = column {
        assert_eq!(at_column, column, "{nix002:#}");
    }
    assert!(
        nix002["message"].as_str().unwrap().contains(file),
        "the message names the file: {nix002:#}"
    );
}

#[test]
fn a_type_error_in_rollback_nix_is_nix002_at_its_position() {
    let dir = stand_in(
        "rollback.nix",
        replace("keepAtLeast = 5;", "keepAtLeast = 5 + \"a\";"),
    );
    let line = line_of(dir.path(), "rollback.nix", "keepAtLeast = 5 + \"a\";");
    // Nix points at the string it cannot add: column 23 of `    keepAtLeast = 5 + "a";`.
    assert_evaluation_error("rollback.nix", &dir, line, Some(23));
}

#[test]
fn infinite_recursion_in_rollback_nix_shows_where() {
    let dir = stand_in(
        "rollback.nix",
        replace("keepAtLeast = 5;", "keepAtLeast = let x = x; in x;"),
    );
    let line = line_of(dir.path(), "rollback.nix", "let x = x; in x;");
    let (_, findings) = check(dir.path());
    let nix002 = finding(&findings, "NIX002");
    assert!(
        nix002["message"]
            .as_str()
            .unwrap()
            .contains("infinite recursion"),
        "{nix002:#}"
    );
    // `    keepAtLeast = let x = x; in x;`: the inner x at column 27.
    assert_evaluation_error("rollback.nix", &dir, line, Some(27));
}

#[test]
fn a_throw_in_rollback_nix_names_the_file_and_the_attribute() {
    let dir = stand_in(
        "rollback.nix",
        replace(
            "retentionDays = 30;",
            "retentionDays = throw \"no retention\";",
        ),
    );
    let line = line_of(dir.path(), "rollback.nix", "retentionDays = throw");
    assert_evaluation_error("rollback.nix", &dir, line, None);
}

#[test]
fn errors_in_machine_nix_and_persistence_nix_are_nix002_there() {
    let dir = stand_in("machine.nix", replace("cpus = 12;", "cpus = 12 + \"a\";"));
    let line = line_of(dir.path(), "machine.nix", "cpus = 12 + \"a\";");
    assert_evaluation_error("machine.nix", &dir, line, None);

    let dir = stand_in(
        "persistence.nix",
        replace("\"/var/lib/nixos\"", "(\"/var/lib/nixos\" + 1)"),
    );
    let line = line_of(dir.path(), "persistence.nix", "(\"/var/lib/nixos\" + 1)");
    assert_evaluation_error("persistence.nix", &dir, line, None);
}

#[test]
fn rollback_nix_with_a_value_the_module_refuses_is_host004() {
    let dir = stand_in(
        "rollback.nix",
        replace("keepAtLeast = 5;", "keepAtLeast = \"5\";"),
    );
    let (code, findings) = check(dir.path());
    assert_eq!(code, Some(1), "{findings:#?}");
    let host004 = finding(&findings, "HOST004");
    assert_eq!(host004["path"], "boot.btrfsRollback.keepAtLeast");
    let (at, line, _) = place(host004);
    assert!(at.ends_with("rollback.nix"), "{host004:#}");
    assert_eq!(
        line,
        line_of(dir.path(), "rollback.nix", "keepAtLeast = \"5\";")
    );

    let dir = stand_in(
        "rollback.nix",
        replace("keepAtLeast = 5;", "keepAtleast = 5;"),
    );
    let (code, findings) = check(dir.path());
    assert_eq!(code, Some(1));
    assert_eq!(
        finding(&findings, "HOST004")["path"],
        "boot.btrfsRollback.keepAtleast"
    );
}

#[test]
fn rollback_nix_that_needs_nixos_is_nix004() {
    let dir = stand_in("rollback.nix", |text| format!("{{ lib, ... }}:\n{text}"));
    let (code, findings) = check(dir.path());
    assert_eq!(code, Some(1), "{findings:#?}");
    let (at, _, _) = place(finding(&findings, "NIX004"));
    assert!(at.ends_with("rollback.nix"), "{at}");
}

#[test]
fn a_1g_swap_is_host002_and_a_deliberate_one_host003() {
    let dir = stand_in("disko.nix", replace("size = \"32G\";", "size = \"1G\";"));
    let (code, findings) = check(dir.path());
    assert_eq!(code, Some(1), "{findings:#?}");
    let host002 = finding(&findings, "HOST002");
    assert_eq!(host002["severity"], "error");
    assert_eq!(
        host002["path"],
        "disko.devices.disk.main.content.partitions.swap.size"
    );
    let (at, line, _) = place(host002);
    assert!(at.ends_with("disko.nix"), "{host002:#}");
    assert_eq!(
        line,
        line_after(dir.path(), "disko.nix", "swap = {", "size = \"1G\";")
    );
    let message = host002["message"].as_str().unwrap();
    assert!(
        message.contains("1G") && message.contains("32G"),
        "{message}"
    );

    // Declared with its reason in machine.nix: a warning that shows it.
    let deliberate = "partitionSizeDeviations = {\n    swap = { size = \"1G\"; reason = \"a throwaway test server\"; };\n  };";
    let machine = host_file(dir.path(), "machine.nix");
    let text = std::fs::read_to_string(&machine).unwrap();
    assert!(text.contains("partitionSizeDeviations = { };"));
    std::fs::write(
        &machine,
        text.replacen("partitionSizeDeviations = { };", deliberate, 1),
    )
    .unwrap();
    let (code, findings) = check(dir.path());
    assert_eq!(code, Some(0), "{findings:#?}");
    let host003 = finding(&findings, "HOST003");
    assert_eq!(host003["severity"], "warning");
    assert!(host003["message"]
        .as_str()
        .unwrap()
        .contains("a throwaway test server"));
    assert!(findings.iter().all(|f| f["code"] != "HOST002"));
}

/// An IPv6-only server (publicIpv4 = false) that keeps ipv6Address = null
/// would come up with no address: HOST005 at machine.nix's ipv6Address.
#[test]
fn an_ipv6_only_server_without_its_address_is_host005() {
    let dir = stand_in(
        "machine.nix",
        replace("publicIpv4 = true;", "publicIpv4 = false;"),
    );
    let (code, findings) = check(dir.path());
    assert_eq!(code, Some(1), "{findings:#?}");
    let host005 = finding(&findings, "HOST005");
    let (file, line, _) = place(host005);
    assert!(
        file.ends_with(&format!("{HOST}/machine.nix")),
        "{host005:#}"
    );
    assert_eq!(
        line,
        line_of(dir.path(), "machine.nix", "ipv6Address = null;")
    );
    // With its address it is a server like any other.
    let dir = stand_in("machine.nix", |text| {
        text.replacen("publicIpv4 = true;", "publicIpv4 = false;", 1)
            .replacen(
                "ipv6Address = null;",
                "ipv6Address = \"2a01:4f8:c012:3456::1/64\";",
                1,
            )
    });
    let (code, findings) = check(dir.path());
    assert_eq!(code, Some(0), "{findings:#?}");
}

/// vm-test never boots what check rejects, and never falls back to the
/// module's defaults when rollback.nix does not give the settings: it stops
/// (exit 2) before starting a VM and says why.
#[test]
fn vm_test_refuses_broken_host_files_before_booting() {
    for (file, from, to, expected) in [
        (
            "rollback.nix",
            "keepAtLeast = 5;",
            "keepAtLeast = 5 + \"a\";",
            "NIX002",
        ),
        (
            "rollback.nix",
            "keepAtLeast = 5;",
            "keepAtLeast = \"5\";",
            "HOST004",
        ),
        ("disko.nix", "size = \"32G\";", "size = \"1G\";", "HOST002"),
    ] {
        let dir = stand_in(file, replace(from, to));
        let started = std::time::Instant::now();
        let output = Command::cargo_bin("xtask")
            .unwrap()
            .args(["vm-test", "--json"])
            .env("XTASK_PROJECT_ROOT", dir.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{file}: {stderr}");
        assert!(stderr.contains(expected), "{file}: {stderr}");
        if file == "rollback.nix" {
            assert!(
                stderr.contains("does not fall back to the module's defaults"),
                "{stderr}"
            );
        }
        assert!(
            started.elapsed().as_secs() < 60,
            "{file}: refused only after {:?}",
            started.elapsed()
        );
    }
}
