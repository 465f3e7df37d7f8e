//! `cargo xtask deploy-checklist` as users run it, with results in a
//! temporary directory (`--results-dir`) so that the repository's
//! target/xtask is never touched. Whether the working tree is clean depends
//! on where the tests run, so these tests only assert what does not depend
//! on it; the gate logic itself is unit-tested case by case.

use assert_cmd::Command;
use camino::Utf8PathBuf;
use predicates::prelude::*;
use serde_json::{json, Value};

fn xtask() -> Command {
    Command::cargo_bin("xtask").expect("the xtask binary builds")
}

fn results_dir() -> (tempfile::TempDir, Utf8PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = Utf8PathBuf::from_path_buf(dir.path().to_owned()).unwrap();
    (dir, path)
}

fn head() -> String {
    let output = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("git runs");
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

fn header(kind: &str, commit: &str, passed: bool) -> Value {
    json!({
        "schema": 1,
        "kind": kind,
        "host": "hetzner-cloud",
        "revision": { "commit": commit, "dirty": false },
        "finished_at": "2026-11-28T12:00:00Z",
        "passed": passed,
    })
}

fn merge(mut base: Value, extra: Value) -> Value {
    for (key, value) in extra.as_object().unwrap() {
        base[key] = value.clone();
    }
    base
}

/// `deploy-checklist --allow-stale --format json` on the results in `dir`.
fn json_checklist(dir: &camino::Utf8Path) -> std::process::Output {
    xtask()
        .args([
            "deploy-checklist",
            "--results-dir",
            dir.as_str(),
            "--allow-stale",
            "--format",
            "json",
        ])
        .output()
        .unwrap()
}

#[test]
fn missing_results_withhold_the_checklist() {
    let (_keep, dir) = results_dir();
    let output = xtask()
        .args(["deploy-checklist", "--results-dir", dir.as_str()])
        .output()
        .unwrap();
    // 3 (stale) on a clean tree, 1 when the tree is dirty as well.
    assert!(
        matches!(output.status.code(), Some(1) | Some(3)),
        "{output:?}"
    );
    assert!(output.stdout.is_empty(), "the checklist is withheld");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("STALE  check"), "{stderr}");
    assert!(stderr.contains("STALE  vm-test"), "{stderr}");
    assert!(stderr.contains("PASS   docs"), "{stderr}");
    assert!(stderr.contains("--allow-stale"), "{stderr}");
}

#[test]
fn allow_stale_prints_json_with_the_gates_marked() {
    let (_keep, dir) = results_dir();
    let output = json_checklist(&dir);
    assert!(
        matches!(output.status.code(), Some(1) | Some(3)),
        "{output:?}"
    );
    let checklist: Value = serde_json::from_slice(&output.stdout).expect("JSON on stdout");
    assert_ne!(checklist["status"], "PASS");
    assert_eq!(checklist["gates"][0]["status"], "STALE");
    assert_eq!(checklist["gates"][1]["id"], "vm-test");
    assert_eq!(checklist["flake_attribute"], "hetzner-vps");
    assert!(checklist["verification"].as_array().unwrap().len() > 5);
}

#[test]
fn a_failed_check_at_head_fails_whatever_the_tree() {
    let (_keep, dir) = results_dir();
    let check = merge(
        header("check", &head(), false),
        json!({
            "disk_size_override": null,
            "hosts": [{ "host": "hetzner-cloud", "errors": 1, "warnings": 0, "findings": ["SWAP001 disko.devices.disk.main"] }],
        }),
    );
    std::fs::write(dir.join("check.json"), check.to_string()).unwrap();
    let out = dir.join("checklist.md");
    xtask()
        .args([
            "deploy-checklist",
            "--results-dir",
            dir.as_str(),
            "--allow-stale",
            "--out",
            out.as_str(),
        ])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("gates: FAIL"));
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.contains("> **NOT READY (FAIL)**"), "{text}");
    assert!(text.contains("| `cargo xtask check` is clean | **FAIL** |"));
    assert!(text.contains("SWAP001"));
    assert!(text.contains("## 4. Rollback plan"));
}

#[test]
fn passing_results_pass_their_gates() {
    let (_keep, dir) = results_dir();
    let commit = head();
    let check = merge(
        header("check", &commit, true),
        json!({
            "disk_size_override": null,
            "hosts": [{ "host": "hetzner-cloud", "errors": 0, "warnings": 0, "findings": [] }],
        }),
    );
    let vm = merge(
        header("vm-test", &commit, true),
        json!({
            "backend": "lab",
            "accelerator": "tcg",
            "kernel": "6.1.0-56-cloud-amd64",
            "disk_bytes": 480_000_000_000u64,
            "boots": [{ "number": 1, "kind": "install", "wall_ms": 1000, "steps": [], "passed": true }],
            "checks": [{ "boot": 1, "name": "subvolumes", "passed": true, "measured": "8", "expected": "8" }],
            "figures": { "compression.@nix.percent": 47.0 },
            "wall_ms": 2000,
        }),
    );
    std::fs::write(dir.join("check.json"), check.to_string()).unwrap();
    std::fs::write(dir.join("vm-test.json"), vm.to_string()).unwrap();
    let output = json_checklist(&dir);
    let checklist: Value = serde_json::from_slice(&output.stdout).expect("JSON on stdout");
    assert_eq!(checklist["gates"][0]["status"], "PASS", "{checklist:#}");
    assert_eq!(checklist["gates"][1]["status"], "PASS", "{checklist:#}");
    assert_eq!(checklist["gates"][2]["status"], "PASS", "{checklist:#}");
    assert_eq!(
        checklist["measured"]["figures"]["compression.@nix.percent"],
        47.0
    );
    // Everything else passes, so the exit code is the tree's: 0 clean, 1 dirty.
    let tree = checklist["gates"][3]["status"].as_str().unwrap();
    let expected = if tree == "PASS" { 0 } else { 1 };
    assert_eq!(output.status.code(), Some(expected));
}

#[test]
fn an_unknown_host_cannot_run() {
    xtask()
        .args(["deploy-checklist", "--host", "nowhere"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no host \"nowhere\""));
}
