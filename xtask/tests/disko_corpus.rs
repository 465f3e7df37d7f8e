//! `cargo xtask check` on the corpus in tests/fixtures/disko-corpus/, whose
//! verdicts were recorded against real disko and real sgdisk (see the
//! README.md there): each case gets exactly the recorded finding codes
//! (errors and warnings besides the HOST family, which compares a layout with
//! this host's machine.nix), its findings say the recorded
//! consequences (and fixes), the exit code follows, and the partition table `check`
//! predicts is the one sgdisk wrote under disko's create script.

use std::collections::{BTreeMap, BTreeSet};

use assert_cmd::Command;
use serde::Deserialize;
use serde_json::Value;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Verdicts {
    disko: Revision,
    disk_bytes: u64,
    cases: BTreeMap<String, Case>,
}

#[derive(Deserialize)]
struct Revision {
    revision: String,
}

#[derive(Deserialize)]
struct Case {
    class: String,
    /// Rows of `sgdisk -p`: number, first and last sector, name.
    sgdisk: Option<Vec<(u32, u64, u64, String)>>,
    check: Expected,
    /// What the real tools did (record.sh), for the cases recorded with it.
    real: Option<Real>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Real {
    install_fails: bool,
    verdict: String,
}

#[derive(Deserialize)]
struct Expected {
    codes: Vec<String>,
    says: Vec<String>,
}

fn corpus_dir() -> String {
    format!("{}/tests/fixtures/disko-corpus", env!("CARGO_MANIFEST_DIR"))
}

fn verdicts() -> Verdicts {
    let text = std::fs::read_to_string(format!("{}/verdicts.json", corpus_dir()))
        .expect("reading verdicts.json");
    serde_json::from_str(&text).expect("verdicts.json parses")
}

fn check(case: &str, disk_bytes: u64) -> (Option<i32>, Value) {
    let output = Command::cargo_bin("xtask")
        .expect("the xtask binary builds")
        .args(["check", "--mode", "standalone", "--json", "--disk-size"])
        .arg(disk_bytes.to_string())
        .arg("--disko")
        .arg(format!("{}/{case}.nix", corpus_dir()))
        .output()
        .expect("xtask runs");
    let report = serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
        panic!(
            "{case}: --json printed no JSON ({error}): {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output.status.code(), report)
}

#[test]
fn check_agrees_with_real_disko_on_every_case() {
    let verdicts = verdicts();
    assert_eq!(verdicts.disko.revision.len(), 40);
    let mut failures = Vec::new();
    for (name, case) in &verdicts.cases {
        let (code, report) = check(name, verdicts.disk_bytes);
        let host = &report["hosts"][0];
        let findings = host["findings"].as_array().cloned().unwrap_or_default();
        let codes: BTreeSet<String> = findings
            .iter()
            .filter_map(|f| f["code"].as_str())
            // The HOST family judges this host's machine.nix (the admin's
            // key, the sizes it requires), not agreement with disko.
            .filter(|c| !c.starts_with("HOST"))
            .map(str::to_owned)
            .collect();
        let expected: BTreeSet<String> = case.check.codes.iter().cloned().collect();
        if codes != expected {
            failures.push(format!(
                "{name} ({}): expected {expected:?}, got {codes:?}\n{}",
                case.class,
                serde_json::to_string_pretty(&findings).unwrap_or_default()
            ));
            continue;
        }
        let errors = findings.iter().any(|f| f["severity"] == "error");
        let wanted_exit = if errors { 1 } else { 0 };
        if code != Some(wanted_exit) {
            failures.push(format!("{name}: exit {code:?}, expected {wanted_exit}"));
        }
        for says in &case.check.says {
            let said = |f: &Value| {
                ["message", "hint"]
                    .iter()
                    .any(|field| f[field].as_str().unwrap_or("").contains(says.as_str()))
            };
            if !findings.iter().any(said) {
                failures.push(format!(
                    "{name}: no finding says {says:?}:\n{}",
                    serde_json::to_string_pretty(&findings).unwrap_or_default()
                ));
            }
        }
        // Every finding says what is wrong and how to fix it.
        for finding in &findings {
            if finding["hint"].as_str().is_none_or(str::is_empty) {
                failures.push(format!("{name}: a finding without a fix: {finding}"));
            }
        }
        // The table check predicts is the one sgdisk wrote under disko.
        if let Some(rows) = &case.sgdisk {
            let predicted: Vec<(u32, u64, u64)> = host["tables"]["disks"][0]["partitions"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .filter_map(|p| {
                    Some((
                        u32::try_from(p["number"].as_u64()?).ok()?,
                        p["start_sector"].as_u64()?,
                        p["end_sector"].as_u64()?,
                    ))
                })
                .collect();
            let mut real: Vec<(u32, u64, u64)> = rows.iter().map(|r| (r.0, r.1, r.2)).collect();
            let mut predicted = predicted;
            real.sort_unstable();
            predicted.sort_unstable();
            // A case whose hybrid MBR command erases the GPT leaves no table to read.
            if !real.is_empty() && real != predicted {
                failures.push(format!(
                    "{name}: sgdisk wrote {real:?}, check predicts {predicted:?}"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n---\n"));
}

/// Where the real tools ran the install (record.sh), check agrees with them:
/// an install that fails is an error, and the tool's own words are in the
/// record; the cases (and two of the same class nobody listed) are there.
#[test]
fn check_agrees_with_the_real_install() {
    let verdicts = verdicts();
    let mut failures = Vec::new();
    for (name, case) in &verdicts.cases {
        let Some(real) = &case.real else { continue };
        let (code, report) = check(name, verdicts.disk_bytes);
        let errors: Vec<String> = report["hosts"][0]["findings"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter(|f| {
                f["severity"] == "error" && !f["code"].as_str().unwrap_or("").starts_with("HOST")
            })
            .map(|f| f["message"].as_str().unwrap_or("").to_owned())
            .collect();
        if real.install_fails && (errors.is_empty() || code != Some(1)) {
            failures.push(format!(
                "{name}: real install fails ({}), check exits {code:?} with no error",
                real.verdict
            ));
        }
    }
    for name in [
        "esp-umask-then-fmask",
        "subvol-twice",
        "subvolid-with-subvol",
        "nodatasum-on-containers",
        "esp-fat12",
        "uppercase-partuuid",
        "swapfile-in-missing-dir",
        "second-disk-no-rest",
        "empty-gpt-disk",
        "tmpfs-tmp",
        "esp-umask-after-masks",
        "top-level-subvol-after-subvolid",
    ] {
        match verdicts.cases.get(name) {
            Some(Case { real: Some(_), .. }) => {}
            _ => failures.push(format!("{name}: no verdict recorded with the real tools")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_case_has_a_verdict() {
    let verdicts = verdicts();
    let mut files = BTreeSet::new();
    for entry in std::fs::read_dir(corpus_dir()).expect("the corpus") {
        let name = entry.expect("an entry").file_name();
        let name = name.to_string_lossy();
        if let Some(stem) = name.strip_suffix(".nix") {
            if stem != "with-change" {
                files.insert(stem.to_owned());
            }
        }
    }
    let cases: BTreeSet<String> = verdicts.cases.keys().cloned().collect();
    assert_eq!(
        files, cases,
        "every .nix of the corpus has a verdict, and no more"
    );
    // Both directions of the issue are covered.
    let classes: Vec<&str> = verdicts.cases.values().map(|c| c.class.as_str()).collect();
    for kind in ["no false positive", "false negative", "right reason"] {
        assert!(
            classes.iter().filter(|c| c.starts_with(kind)).count() >= 3,
            "fewer than 3 cases of {kind}"
        );
    }
}

#[test]
fn a_duplicated_mountpoint_shows_each_mounts_options() {
    let (_, report) = check("duplicated-mountpoint", 480_000_000_000);
    let subvolumes = report["hosts"][0]["tables"]["filesystems"][0]["subvolumes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let options = |name: &str| -> Vec<String> {
        subvolumes
            .iter()
            .find(|s| s["name"] == name)
            .and_then(|s| s["options_in_effect"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|o| o.as_str().map(str::to_owned))
            .collect()
    };
    let caddy = options("@caddy");
    let snapshots = options("@snapshots");
    assert!(
        caddy.contains(&"nodev".to_owned()) && !caddy.contains(&"noexec".to_owned()),
        "{caddy:?}"
    );
    assert!(
        snapshots.contains(&"noexec".to_owned()) && !snapshots.contains(&"nodev".to_owned()),
        "{snapshots:?}"
    );
}
