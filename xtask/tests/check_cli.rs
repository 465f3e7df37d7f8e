//! `cargo xtask check` as users run it: the real binary, the real
//! nix-instantiate, the repo's host and a corpus of broken configs.

use assert_cmd::Command;
use predicates::prelude::*;
use serde_json::Value;

fn xtask() -> Command {
    Command::cargo_bin("xtask").expect("the xtask binary builds")
}

fn fixture(name: &str) -> String {
    format!(
        "{}/tests/fixtures/bad/{name}.nix",
        env!("CARGO_MANIFEST_DIR")
    )
}

#[test]
fn the_repos_host_passes_with_real_geometry() {
    xtask()
        .args(["check"])
        .assert()
        .code(0)
        .stdout(predicate::str::contains("ok: 0 error(s)"))
        // Only the reminder that the repository cannot know the admin's key.
        .stdout(predicate::str::contains("warning[HOST001] adminSshKeys"))
        // The CPX52's 480 GB disk leaves 414 GiB for Btrfs, not the roadmap's 447.
        .stdout(predicate::str::is_match(r"4  root .* 69210112 +937498623 ").unwrap())
        .stdout(predicate::str::contains("414.0 GiB (444563718144 B)"))
        .stdout(predicate::str::contains("480.0 GB = 447.0 GiB"));
}

/// Every broken config gets its own finding code, exit 1, and never a panic.
#[test]
fn broken_configs_get_their_finding() {
    let corpus = [
        ("syntax-error", "NIX001"),
        ("undefined-variable", "NIX003"),
        ("evaluation-error", "NIX002"),
        ("wrong-type", "MODEL001"),
        ("unknown-content-type", "MODEL002"),
        ("misspelt-option", "MODEL003"),
        ("no-disks", "MODEL004"),
        ("garbage-size", "PART001"),
        ("over-the-disk", "PART002"),
        ("two-rest-partitions", "PART003"),
        ("esp-without-umask", "ESP004"),
        ("swap-unencrypted", "SWAP001"),
        ("unencrypted-swap-as-resume", "SWAP002"),
        ("duplicate-mountpoints", "BTRFS001"),
        ("dotdot-subvolume", "BTRFS003"),
        ("subvol-in-mount-options", "BTRFS012"),
        ("compress-level-per-subvolume", "BTRFS006"),
        ("nodatacow-with-compress", "BTRFS007"),
        ("missing-old-roots", "IMP003"),
        ("missing-needed-for-boot", "IMP004"),
        ("device-with-shell-characters", "DEV001"),
    ];
    let mut failures = Vec::new();
    for (name, code) in corpus {
        let output = xtask()
            .args(["check", "--mode", "standalone", "--disko", &fixture(name)])
            .output()
            .expect("xtask runs");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tag = format!("error[{code}]");
        if output.status.code() != Some(1) || !stdout.contains(&tag) || stderr.contains("panicked")
        {
            failures.push(format!(
                "{name}: expected exit 1 with {tag}, got {:?}\n{stdout}\n{stderr}",
                output.status.code()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n---\n"));
}

#[test]
fn findings_name_the_file_the_line_and_the_fix() {
    let output = xtask()
        .args(["check", "--json", "--disko", &fixture("syntax-error")])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    let finding = &report["hosts"][0]["findings"][0];
    assert_eq!(finding["code"], "NIX001");
    assert!(finding["location"]["file"]
        .as_str()
        .unwrap()
        .ends_with("syntax-error.nix"));
    assert_eq!(finding["location"]["line"], 1);
    assert_eq!(finding["location"]["column"], 52);
    assert!(!finding["hint"].as_str().unwrap().is_empty());
}

#[test]
fn json_report_has_the_documented_shape() {
    let output = xtask().args(["check", "--json"]).output().unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["schema"], 1);
    assert_eq!(report["errors"], 0);
    let host = &report["hosts"][0];
    assert_eq!(host["host"], "hetzner-cloud");
    assert_eq!(host["disk_sizes"]["main"], 480_000_000_000u64);
    let partitions = host["tables"]["disks"][0]["partitions"].as_array().unwrap();
    let numbers: Vec<(u64, &str, &str)> = partitions
        .iter()
        .map(|p| {
            (
                p["number"].as_u64().unwrap(),
                p["key"].as_str().unwrap(),
                p["label"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        numbers,
        vec![
            (1, "boot", "disk-main-boot"),
            (2, "ESP", "disk-main-ESP"),
            (3, "swap", "disk-main-swap"),
            (4, "root", "disk-main-root")
        ]
    );
    let subvolumes = host["tables"]["filesystems"][0]["subvolumes"]
        .as_array()
        .unwrap();
    let nix = subvolumes.iter().find(|s| s["name"] == "@nix").unwrap();
    assert_eq!(nix["compression"], "zstd:1");
    assert_eq!(nix["needed_for_boot"], true);
    assert!(nix["options_in_effect"]
        .as_array()
        .unwrap()
        .contains(&Value::from("discard=async")));
}

#[test]
fn a_disk_too_small_for_the_layout_is_a_finding() {
    xtask()
        .args(["check", "--disk-size", "30GB"])
        .assert()
        .code(1)
        .stdout(predicate::str::contains("error[PART002]"));
}

#[test]
fn bad_arguments_exit_2_with_the_reason() {
    xtask()
        .args(["check", "--disk-size", "lots"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--disk-size \"lots\""));
    xtask()
        .args(["check", "--host", "no-such-host"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("known hosts: hetzner-cloud"));
    xtask()
        .args(["check", "--disko", "/nonexistent/disko.nix"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no such file"));
}

#[test]
fn all_hosts_are_checked() {
    xtask()
        .args(["check", "--all", "--mode", "standalone"])
        .assert()
        .code(0)
        .stdout(predicate::str::contains("== hetzner-cloud"));
}

#[test]
fn without_nix_and_without_installing_it_exits_2_with_the_hint() {
    for (flag, env) in [(Some("--no-install"), None), (None, Some("1"))] {
        let mut command = xtask();
        command.env("PATH", "/nonexistent");
        if let Some(value) = env {
            command.env("XTASK_NO_INSTALL", value);
        } else {
            command.env_remove("XTASK_NO_INSTALL");
        }
        if let Some(flag) = flag {
            command.arg(flag);
        }
        command
            .arg("check")
            .assert()
            .code(2)
            .stderr(predicate::str::contains("nix-instantiate"))
            .stderr(predicate::str::contains(
                "apt-get install --no-install-recommends --no-remove --no-upgrade nix-bin",
            ));
    }
}

/// The text report of a case of the disko corpus: the finding, the real
/// consequence and the suggestion, and the tables without the refused option.
#[test]
fn an_unknown_mount_option_is_a_refused_mount_with_a_suggestion() {
    let case = format!(
        "{}/tests/fixtures/disko-corpus/unknown-option-on-root.nix",
        env!("CARGO_MANIFEST_DIR")
    );
    let output = xtask()
        .args(["check", "--mode", "standalone", "--disko", &case])
        .output()
        .expect("xtask runs");
    assert_eq!(output.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("error[MOUNT001]"), "{stdout}");
    assert!(stdout.contains("does not boot"), "{stdout}");
    assert!(stdout.contains("Did you mean `noatime`?"), "{stdout}");
    // Not "in effect" anywhere, and not a filesystem-wide setting (BTRFS006).
    assert!(!stdout.contains("noatimex,"), "{stdout}");
    assert!(!stdout.contains("BTRFS006"), "{stdout}");
}

/// Real `check --json` output, clean, with findings, with an unbuilt layout
/// and for every host, holds to the schema docs/reference/ publishes (and
/// `docs --check` keeps that file equal to the one the types give).
#[test]
fn check_json_holds_to_the_published_schema() {
    let root = format!("{}/..", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(format!("{root}/docs/reference/check.schema.json"))
        .expect("docs/reference/check.schema.json (cargo xtask docs writes it)");
    let schema: Value = serde_json::from_str(&text).expect("the schema is JSON");
    let validator = jsonschema::validator_for(&schema).expect("a valid JSON Schema");
    let mut runs: Vec<Vec<String>> = vec![
        vec!["--all".into()],
        vec!["--mode".into(), "standalone".into()],
        vec!["--disk-size".into(), "40GiB".into()],
    ];
    let bad = format!("{}/tests/fixtures/bad", env!("CARGO_MANIFEST_DIR"));
    let mut fixtures: Vec<_> = std::fs::read_dir(&bad)
        .expect("the corpus of broken configs")
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|e| e == "nix"))
        .collect();
    fixtures.sort();
    assert!(fixtures.len() > 10, "{fixtures:?}");
    for path in fixtures {
        runs.push(vec!["--disko".into(), path.display().to_string()]);
    }
    let mut codes = std::collections::BTreeSet::new();
    for args in runs {
        let output = xtask()
            .arg("check")
            .args(&args)
            .arg("--json")
            .output()
            .expect("running check --json");
        assert!(
            output.status.code().is_some_and(|c| c <= 1),
            "{args:?}: {output:?}"
        );
        let document: Value = serde_json::from_slice(&output.stdout).expect("one JSON document");
        let errors: Vec<String> = validator
            .iter_errors(&document)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{args:?}: {errors:#?}");
        for host in document["hosts"].as_array().into_iter().flatten() {
            for finding in host["findings"].as_array().into_iter().flatten() {
                codes.insert(finding["code"].as_str().unwrap_or("").to_owned());
            }
            if host["tables"].is_null() {
                codes.insert("(no tables)".to_owned());
            }
        }
    }
    // The runs covered findings and layouts that did not build, not only clean output.
    assert!(
        codes.len() > 10 && codes.contains("(no tables)"),
        "{codes:?}"
    );
    // And the schema is no formality: a wrong type fails it.
    let clean = xtask().args(["check", "--json"]).output().unwrap();
    let mut document: Value = serde_json::from_slice(&clean.stdout).unwrap();
    document["hosts"][0]["tables"]["disks"][0]["partitions"][0]["number"] = "one".into();
    assert!(!validator.is_valid(&document));
}
