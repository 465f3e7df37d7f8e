//! One set of conventions for every subcommand: usage shows `cargo xtask`,
//! every flag has help text (and its `XTASK_*` variable), values are
//! checked before anything runs, bad arguments exit 2, results come as
//! `--json`.

use assert_cmd::Command;

/// Every user-facing subcommand.
const COMMANDS: &[&str] = &[
    "check",
    "vm-test",
    "docs",
    "deploy-checklist",
    "bench",
    "test",
    "fuzz",
    "fresh-machine",
];

/// Flags whose help is another change's work: deploy-checklist's `--format`
/// becomes `--json` (issue 9). An entry that matches nothing is harmless.
const HELP_PENDING: &[(&str, &str)] = &[];

fn xtask() -> Command {
    let mut command = Command::cargo_bin("xtask").expect("the xtask binary");
    command.env("XTASK_NO_INSTALL", "1");
    command
}

fn help(subcommand: &str) -> String {
    let output = xtask()
        .args([subcommand, "--help"])
        .output()
        .expect("xtask runs");
    assert!(output.status.success(), "{subcommand} --help failed");
    String::from_utf8(output.stdout).expect("help is UTF-8")
}

/// The options of a long help text, each with its lines.
fn options(help: &str) -> Vec<Vec<&str>> {
    let Some((_, section)) = help.split_once("\nOptions:\n") else {
        return Vec::new();
    };
    let section = section.split("\n\n\n").next().unwrap_or(section);
    let mut entries: Vec<Vec<&str>> = Vec::new();
    for line in section.lines() {
        let trimmed = line.trim_start();
        let starts_option = line.starts_with("  ") && trimmed.starts_with('-');
        if starts_option && line.len() - trimmed.len() <= 6 {
            entries.push(vec![trimmed]);
        } else if let Some(entry) = entries.last_mut() {
            if !trimmed.is_empty() {
                entry.push(trimmed);
            }
        }
    }
    entries
}

#[test]
fn usage_shows_cargo_xtask() {
    let top = xtask().arg("--help").output().expect("xtask runs");
    assert!(String::from_utf8_lossy(&top.stdout).contains("Usage: cargo xtask [OPTIONS] <COMMAND>"));
    for command in COMMANDS {
        let text = help(command);
        assert!(
            text.contains(&format!("Usage: cargo xtask {command}")),
            "{command} --help:\n{text}"
        );
    }
}

#[test]
fn every_flag_has_help_text() {
    let mut without = Vec::new();
    for command in COMMANDS {
        let text = help(command);
        let entries = options(&text);
        assert!(
            !entries.is_empty(),
            "{command}: no options found in\n{text}"
        );
        for entry in entries {
            let flag = entry[0]
                .split([' ', ','])
                .find(|w| w.starts_with("--"))
                .unwrap_or(entry[0]);
            // Short help puts the text on the flag's line, after two spaces.
            let inline = entry[0]
                .split("  ")
                .filter(|p| !p.trim().is_empty())
                .count()
                > 1;
            if entry.len() < 2 && !inline && !HELP_PENDING.contains(&(*command, flag)) {
                without.push(format!("{command} {flag}"));
            }
        }
    }
    assert!(without.is_empty(), "flags without help text: {without:?}");
}

#[test]
fn variables_show_with_their_flags() {
    let text = help("vm-test");
    for variable in [
        "XTASK_VM_KERNEL",
        "XTASK_VM_MODULES",
        "XTASK_VM_ACCEL",
        "XTASK_NO_INSTALL",
        "XTASK_NIX_TIMEOUT",
    ] {
        assert!(
            text.contains(&format!("[env: {variable}")),
            "vm-test --help lacks {variable}"
        );
    }
    let top = xtask().arg("--help").output().expect("xtask runs");
    let top = String::from_utf8_lossy(&top.stdout);
    assert!(top.contains("XTASK_PROJECT_ROOT"), "{top}");
}

#[test]
fn commands_that_report_results_take_json() {
    for command in ["check", "vm-test", "docs", "bench", "fuzz", "fresh-machine"] {
        assert!(help(command).contains("--json"), "{command} has no --json");
    }
}

#[test]
fn bad_values_exit_2_before_anything_runs() {
    for args in [
        &["vm-test", "--boot-timeout", "0"][..],
        &["vm-test", "--boots", "0"],
        &["fuzz", "--seconds", "0"],
        &["fuzz", "--target", "nothing"],
        &["bench", "--runs", "0"],
        &["check", "--nix-timeout", "0"],
        &["check", "--no-such-flag"],
        &["no-such-command"],
    ] {
        let output = xtask().args(args).output().expect("xtask runs");
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[test]
fn a_bad_argument_passed_through_test_exits_2() {
    let output = xtask()
        .args(["test", "--quick", "--", "--no-such-cargo-test-flag"])
        .output()
        .expect("xtask runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("could not run the tests"), "{stderr}");
}
