//! The first `check` on a machine meets an empty Nix database (right after
//! `apt-get install nix-bin`). Nix 2.8 initialises it without a lock, so
//! processes started at once used to race ("SQLite database … is busy",
//! "creating symlink … File exists") and `check` reported that as NIX001 or
//! NIX002 in the user's files. Each run here gets its own empty state and
//! store directory (NIX_STATE_DIR, NIX_STORE_DIR) and must be clean; a store
//! that cannot be used is exit 2 with Nix's message, never a finding.

use std::process::{Command, Output};

use assert_cmd::cargo::CommandCargoExt as _;

fn check_on(state: &std::path::Path) -> Command {
    let mut command = Command::cargo_bin("xtask").expect("the xtask binary");
    command
        .args(["check", "--mode", "standalone"])
        .env("NIX_STATE_DIR", state.join("state"))
        .env("NIX_STORE_DIR", state.join("store"))
        .env("NIX_LOG_DIR", state.join("log"))
        .env_remove("NIX_REMOTE")
        .env_remove("XTASK_NIX_TIMEOUT");
    command
}

fn describe(output: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The repository's host is clean (exit 0; HOST001 is a warning) and no
/// finding comes from Nix itself.
fn assert_clean(output: &Output, what: &str) {
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.code() == Some(0) && !stdout.contains("NIX00"),
        "{what}: {}",
        describe(output)
    );
}

#[test]
fn twenty_first_runs_on_an_empty_nix_database_give_no_finding() {
    for run in 1..=20 {
        let state = tempfile::tempdir().expect("a temporary directory");
        let output = check_on(state.path()).output().expect("check runs");
        assert_clean(&output, &format!("first run {run}"));
        assert!(
            state.path().join("state/db/db.sqlite").is_file(),
            "run {run} did not use the empty database it was given"
        );
    }
}

#[test]
fn four_checks_at_once_on_one_empty_database_give_no_finding() {
    for round in 1..=5 {
        let state = tempfile::tempdir().expect("a temporary directory");
        let children: Vec<_> = (0..4)
            .map(|_| {
                check_on(state.path())
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .expect("check starts")
            })
            .collect();
        for child in children {
            let output = child.wait_with_output().expect("check ends");
            assert_clean(&output, &format!("round {round}"));
        }
    }
}

#[test]
fn an_unusable_store_is_exit_2_with_nix_s_message_and_no_finding() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    // A state directory below a regular file can never be created.
    let blocker = dir.path().join("not-a-directory");
    std::fs::write(&blocker, "").expect("writing a file");
    let output = check_on(&blocker).output().expect("check runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    assert!(!stdout.contains("NIX00"), "{}", describe(&output));
    assert!(
        stderr.contains("Nix store") && stderr.contains("not-a-directory"),
        "the error should name the store and quote Nix: {}",
        describe(&output)
    );
}
