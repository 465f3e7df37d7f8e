//! Locating and running Nix, and turning its errors into findings that name
//! the file, line and column.

use std::process::{Command, Output};
use std::time::Duration;

use anyhow::{Context as _, Result};
use camino::{Utf8Path, Utf8PathBuf};
use serde_json::Value;

use crate::findings::{AttrPath, Finding, Location, Severity};
use crate::hosts::Host;
use crate::project::project_root;
use crate::setup;

/// The Nix tools `check` runs.
#[derive(Debug, Clone)]
pub struct Nix {
    pub instantiate: Utf8PathBuf,
}

impl Nix {
    /// Finds nix-instantiate (installing nix-bin when allowed).
    pub fn locate() -> Result<Nix> {
        let found = setup::ensure(&[setup::NIX_INSTANTIATE])?;
        Ok(Nix {
            instantiate: found.path(setup::NIX_INSTANTIATE)?.clone(),
        })
    }

    fn run(&self, args: &[&str]) -> Result<Output> {
        Command::new(&self.instantiate)
            .args(args)
            .current_dir(project_root())
            .output()
            .with_context(|| format!("running {}", self.instantiate))
    }

    /// Parses the files (`nix-instantiate --parse`) and reports every syntax
    /// error: one process for all files, and one more per broken file.
    pub fn parse_files(&self, files: &[Utf8PathBuf]) -> Result<Vec<Finding>> {
        let mut findings = Vec::new();
        let mut remaining: &[Utf8PathBuf] = files;
        while !remaining.is_empty() {
            let mut args = vec!["--parse"];
            args.extend(remaining.iter().map(|f| f.as_str()));
            let output = self.run(&args)?;
            if output.status.success() {
                break;
            }
            let stderr = String::from_utf8_lossy(&output.stderr);
            let error = NixError::parse(&stderr);
            // Nix stops at the first broken file; continue after it.
            let broken = error
                .location
                .as_ref()
                .and_then(|loc| remaining.iter().position(|f| same_file(f, &loc.file)));
            let (file, rest) = match broken {
                Some(index) => (remaining[index].clone(), &remaining[index + 1..]),
                // No location: it is about the first file Nix could not read.
                None => (remaining[0].clone(), &remaining[1..]),
            };
            // Nix resolves names while parsing, so an unknown name fails here too.
            let (code, hint) = if error.message.starts_with("undefined variable") {
                (
                    "NIX003",
                    "Define the name (in a `let`, or as a function argument) or fix its spelling.",
                )
            } else {
                ("NIX001", "Fix the syntax at the position shown (`nix-instantiate --parse <file>` shows it too).")
            };
            findings.push(
                Finding::new(
                    code,
                    Severity::Error,
                    AttrPath::root(),
                    format!(
                        "{} does not parse: {}",
                        crate::project::display_path(&file),
                        error.message
                    ),
                    hint,
                )
                .at(error.location.or(Some(Location {
                    file,
                    line: 0,
                    column: 0,
                }))),
            );
            remaining = rest;
        }
        Ok(findings)
    }

    /// Evaluates a host's standalone files to JSON through nix/lib/eval-host.nix.
    /// An evaluation error is a finding, not a failure to run.
    pub fn evaluate_host(
        &self,
        host: &Host,
        layout_file: &Utf8Path,
    ) -> Result<Result<Value, Finding>> {
        let wrapper = project_root().join("nix").join("lib").join("eval-host.nix");
        let mut args: Vec<&str> = vec![
            "--eval",
            "--strict",
            "--json",
            wrapper.as_str(),
            "--argstr",
            "layoutFile",
            layout_file.as_str(),
        ];
        if let Some(persistence) = &host.persistence_file {
            args.extend(["--argstr", "persistenceFile", persistence.as_str()]);
        }
        if let Some(machine) = &host.machine_file {
            args.extend(["--argstr", "machineFile", machine.as_str()]);
        }
        let output = self.run(&args)?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let error = NixError::parse(&stderr);
            return Ok(Err(Finding::new(
                "NIX002",
                Severity::Error,
                AttrPath::root(),
                format!("the layout does not evaluate: {}", error.message),
                "Fix the expression at the position shown; `nix-instantiate --eval --strict <file> --show-trace` tells more.",
            )
            .at(error.location)));
        }
        let value = serde_json::from_slice(&output.stdout)
            .context("reading the JSON nix-instantiate printed")?;
        Ok(Ok(value))
    }
}

fn same_file(a: &Utf8Path, b: &Utf8Path) -> bool {
    a == b
        || match (a.canonicalize_utf8(), b.canonicalize_utf8()) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        }
}

/// Nix's own message and the first position it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NixError {
    pub message: String,
    pub location: Option<Location>,
}

impl NixError {
    /// Reads an error as Nix 2.8 and later print it:
    /// `error: <message>` … `at /path/file.nix:LINE:COL:`.
    pub fn parse(stderr: &str) -> NixError {
        let lines: Vec<&str> = stderr.lines().map(str::trim).collect();
        // Newer Nix prints a trace first and the cause as the last `error:`.
        let cause = lines.iter().enumerate().rev().find_map(|(index, line)| {
            let message = line.strip_prefix("error:")?.trim();
            (!message.is_empty()).then_some((index, message))
        });
        let (after, message) = match cause {
            Some((index, message)) => (index, message.to_owned()),
            None => (
                0,
                lines
                    .iter()
                    .find(|l| !l.is_empty() && **l != "error:")
                    .copied()
                    .unwrap_or("(no message)")
                    .to_owned(),
            ),
        };
        let location = lines[after..]
            .iter()
            .chain(lines[..after].iter())
            .find_map(|line| parse_position(line));
        NixError { message, location }
    }
}

/// `at /path/file.nix:LINE:COL:` → a location; other positions (`«string»`) are skipped.
fn parse_position(line: &str) -> Option<Location> {
    let rest = line.strip_prefix("at ")?;
    let rest = rest.strip_suffix(':').unwrap_or(rest);
    let mut parts = rest.rsplitn(3, ':');
    let column = parts.next()?.parse().ok()?;
    let line = parts.next()?.parse().ok()?;
    let file = parts.next()?;
    file.starts_with('/').then(|| Location {
        file: Utf8PathBuf::from(file),
        line,
        column,
    })
}

/// Flake mode: the merged NixOS configuration, where Nix and the flake's inputs are available.
pub enum FlakeEvaluation {
    Evaluated(Value),
    /// Could not run here; the reason, for the report.
    NotRun(String),
}

/// Evaluates what `check` needs from `nixosConfigurations.<attribute>` of
/// the repo's flake, in the same shape as nix/lib/eval-host.nix.
pub fn evaluate_flake(attribute: &str, timeout: Duration) -> Result<FlakeEvaluation> {
    let root = project_root();
    if !root.join("flake.lock").is_file() {
        return Ok(FlakeEvaluation::NotRun(
            "no flake.lock yet: run `nix flake lock` once to pin the inputs".to_owned(),
        ));
    }
    let nix = match setup::ensure(&[setup::NIX]) {
        Ok(found) => found.path(setup::NIX)?.clone(),
        Err(error) => return Ok(FlakeEvaluation::NotRun(format!("{error:#}"))),
    };
    let evaluator = project_root().join("nix").join("lib").join("eval-flake.nix");
    // `nix eval --file` does not call a function with --argstr; the
    // arguments go through the environment so that no path is quoted into Nix.
    let expression = "import (builtins.getEnv \"XTASK_FLAKE_EVALUATOR\") { flake = builtins.getEnv \"XTASK_FLAKE\"; host = builtins.getEnv \"XTASK_FLAKE_HOST\"; }";
    let mut child = Command::new(nix.as_str())
        .args([
            "--extra-experimental-features",
            "nix-command flakes",
            "eval",
            "--json",
            "--impure",
            "--offline",
            "--expr",
            expression,
        ])
        .env("XTASK_FLAKE_EVALUATOR", evaluator.as_str())
        .env("XTASK_FLAKE", root.as_str())
        .env("XTASK_FLAKE_HOST", attribute)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("running {nix}"))?;
    let started = std::time::Instant::now();
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        if started.elapsed() > timeout {
            child.kill().ok();
            child.wait().ok();
            return Ok(FlakeEvaluation::NotRun(format!(
                "nix eval took longer than {} s",
                timeout.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output()?;
    if !output.status.success() {
        let error = NixError::parse(&String::from_utf8_lossy(&output.stderr));
        return Ok(FlakeEvaluation::NotRun(format!(
            "the flake does not evaluate here: {}",
            error.message
        )));
    }
    Ok(FlakeEvaluation::Evaluated(
        serde_json::from_slice(&output.stdout).context("reading nix eval's JSON")?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_nix_2_8_errors() {
        let stderr = "error: undefined variable 'y'\n\n       at /tmp/u.nix:1:7:\n\n            1| { x = y; }\n             |       ^\n";
        let error = NixError::parse(stderr);
        assert_eq!(error.message, "undefined variable 'y'");
        let location = error.location.unwrap();
        assert_eq!(location.file, "/tmp/u.nix");
        assert_eq!((location.line, location.column), (1, 7));
    }

    #[test]
    fn reads_errors_without_a_position() {
        let error =
            NixError::parse("error: getting status of '/nope.nix': No such file or directory\n");
        assert_eq!(
            error.message,
            "getting status of '/nope.nix': No such file or directory"
        );
        assert!(error.location.is_none());
        let error = NixError::parse("something odd\n");
        assert_eq!(error.message, "something odd");
    }

    #[test]
    fn reads_newer_multi_line_errors() {
        let stderr = "error:\n       … while calling the 'import' builtin\n         at «string»:1:1:\n\n       error: value is a string while a set was expected\n       at /x/disko.nix:3:5:\n";
        let error = NixError::parse(stderr);
        assert_eq!(error.message, "value is a string while a set was expected");
        assert_eq!(error.location.unwrap().line, 3);
    }
}
