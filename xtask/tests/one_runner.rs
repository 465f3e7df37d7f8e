//! One runner for child processes on the host side: toolbox's `process`
//! module (`toolbox::process::Supervised`). Every other file of the host side
//! builds its commands with `Supervised::new`, or with xshell's `cmd!` or
//! std's `Command` handed straight to `Supervised::from_command`, and never
//! starts, pipes or waits for a process itself. A text scan, so that a new
//! raw `Command::new(…).output()` fails here, with the file and line.
//!
//! The guest agent (crates/guest) is exempt: it runs as
//! PID 1 in the lab VM with nothing of the host side, and must not pull the
//! toolbox (indicatif, which, apt) into the initramfs; it has its own small
//! runner.

use std::path::{Path, PathBuf};

/// What a file outside the runner may not contain, and why.
const FORBIDDEN: &[(&str, &str)] = &[
    ("Command::new(", "builds a std Command"),
    ("process::Command", "names std's Command"),
    (
        "CommandExt",
        "sets up a child by hand (pre_exec, process_group)",
    ),
    ("Stdio::", "sets up a child's pipes by hand"),
    ("wait_with_output", "waits for a child by hand"),
];

/// Findings for one file's text: `line: what`.
fn scan(text: &str) -> Vec<String> {
    let mut findings = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let code = line.trim_start();
        if code.starts_with("//") {
            continue;
        }
        for (pattern, why) in FORBIDDEN {
            // clap's Command is an argument parser, not a process.
            let shown = code.replace("clap::Command::new(", "");
            if shown.contains(pattern) {
                findings.push(format!("{}: {why} ({pattern})", index + 1));
            }
        }
        if code.contains("use std::process::{") && words(code).any(|w| w == "Command") {
            findings.push(format!("{}: names std's Command", index + 1));
        }
    }
    // xshell runs a `Cmd` itself with .run()/.read()/.output(): every
    // `cmd!` must go straight to the runner (rustfmt may break the line
    // between the two).
    for (at, _) in text.match_indices("cmd!(") {
        let line_start = text[..at].rfind('\n').map_or(0, |n| n + 1);
        if text[line_start..at].trim_start().starts_with("//") {
            continue;
        }
        let before = text[..at].trim_end();
        let before = before.strip_suffix("xshell::").unwrap_or(before);
        if !before.ends_with("from_command(") {
            let line = text[..at].matches('\n').count() + 1;
            findings.push(format!(
                "{line}: xshell's cmd! not handed to Supervised::from_command"
            ));
        }
    }
    findings
}

fn words(line: &str) -> impl Iterator<Item = &str> {
    line.split(|c: char| !(c.is_alphanumeric() || c == '_'))
}

fn rust_files(dir: &Path, files: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {dir:?}: {e}"));
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_path_buf()
}

/// The host side's product sources: xtask/src and crates/*/src, but the guest's.
fn host_side_sources() -> Vec<PathBuf> {
    let root = workspace();
    let mut files = Vec::new();
    rust_files(&root.join("xtask/src"), &mut files);
    let crates = root.join("crates");
    for entry in std::fs::read_dir(&crates).expect("the workspace's crates/") {
        let source = entry.expect("a directory entry").path().join("src");
        if source.is_dir() {
            rust_files(&source, &mut files);
        }
    }
    let exempt = [
        root.join("crates/guest"),
        // The runner itself.
        root.join("crates/toolbox/src/process.rs"),
    ];
    files.retain(|file| !exempt.iter().any(|e| file.starts_with(e)));
    files.sort();
    files
}

#[test]
fn no_host_side_file_starts_a_process_outside_the_runner() {
    let root = workspace();
    let files = host_side_sources();
    // The scan reads the tree it means to: the runner's callers are in it.
    assert!(
        files
            .iter()
            .any(|f| f.ends_with("xtask/src/nix_eval/run.rs")),
        "xtask/src/nix_eval/run.rs not among {} files",
        files.len()
    );
    let mut findings = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{file:?}: {e}"));
        let shown = file
            .strip_prefix(&root)
            .unwrap_or(file)
            .display()
            .to_string();
        findings.extend(scan(&text).into_iter().map(|f| format!("{shown}:{f}")));
    }
    assert!(
        findings.is_empty(),
        "run child processes through toolbox::process::Supervised (toolbox's runner):\n{}",
        findings.join("\n")
    );
}

#[test]
fn the_scan_finds_every_other_way_to_start_a_process() {
    let raw = [
        "let out = Command::new(\"git\").output()?;",
        "let out = std::process::Command::new(\"git\");",
        "use std::process::{Command, ExitCode};",
        "use std::process::{ExitCode, Command};",
        "use std::os::unix::process::CommandExt as _;",
        "    .stdout(Stdio::piped())",
        "let output = child.wait_with_output()?;",
        "cmd!(sh, \"git status\").read()?",
        "let x = xshell::cmd!(sh, \"true\").run();",
    ];
    for line in raw {
        assert!(!scan(line).is_empty(), "not caught: {line}");
    }
    let through_the_runner = [
        "Supervised::from_command(cmd!(sh, \"git status\")).read()?",
        "Supervised::from_command(xshell::cmd!(sh, \"true\")).checked()?;",
        "let listing = Supervised::from_command(\n    cmd!(sh, \"btrfs subvolume list {top}\"),\n)",
        "let finished = Supervised::new(\"git\").arg(\"status\").run()?;",
        "use std::process::{ExitCode, ExitStatus};",
        "// Command::new(\"x\") in a comment explains, it does not run",
        "enum Command { Check }",
    ];
    for line in through_the_runner {
        assert_eq!(scan(line), Vec::<String>::new(), "{line}");
    }
}
