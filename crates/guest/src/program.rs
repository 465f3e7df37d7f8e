//! Programs the agent runs: by absolute path, with argument vectors and a
//! clean environment, never a shell. The guest runs them itself rather
//! than through the host's runner (xtask's `process`): it is PID 1 in a VM
//! with nothing of the host side, and must not pull it in.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};

use anyhow::{bail, Context as _, Result};

use crate::port::say;

/// Output of a finished program.
pub struct Ran {
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    pub fn ok(&self) -> bool {
        self.status.success()
    }

    /// The status and the last lines of output, for a failure message.
    pub fn describe(&self) -> String {
        let tail = |text: &str| -> String {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(6)..].join(" | ")
        };
        format!(
            "{}; stderr: {}; stdout: {}",
            self.status,
            tail(&self.stderr),
            tail(&self.stdout)
        )
    }
}

/// Runs a program (absolute path) with a clean environment.
pub fn run_program(argv: &[String], env: &BTreeMap<String, String>) -> Result<Ran> {
    let (program, args) = argv.split_first().context("an empty command")?;
    if !program.starts_with('/') {
        bail!("{program}: programs are called by absolute path");
    }
    let mut command = Command::new(program);
    command
        .args(args)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .envs(env)
        .stdin(Stdio::null());
    let output = command
        .output()
        .with_context(|| format!("starting {program}"))?;
    let ran = Ran {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };
    for line in ran.stderr.lines().take(20) {
        say(&format!(
            "  {}: {line}",
            program.rsplit('/').next().unwrap_or(program)
        ));
    }
    Ok(ran)
}

/// Runs a program and requires exit status 0.
pub fn run_ok(argv: &[String]) -> Result<Ran> {
    let ran = run_program(argv, &BTreeMap::new())?;
    if !ran.ok() {
        bail!("{} failed: {}", argv.join(" "), ran.describe());
    }
    Ok(ran)
}
