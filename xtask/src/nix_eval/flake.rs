//! Flake mode: `nix eval` of the repository's flake with its pinned inputs,
//! where Nix and the inputs are available.

use std::time::Duration;

use anyhow::{Context as _, Result};
use serde_json::Value;

use super::errors::whole_message;
use super::run::{run_limited, run_retrying, Limits};
use super::{read_evaluation, MAX_OUTPUT_BYTES};
use toolbox::context::Context;
use toolbox::project::project_root;
use toolbox::setup;

/// Flake mode: the merged NixOS configuration, where Nix and the flake's inputs are available.
pub enum FlakeEvaluation {
    Evaluated(Value),
    /// Could not run here; the reason, for the report.
    NotRun(String),
}

/// Evaluates what `check` needs from `nixosConfigurations.<attribute>` of
/// the repo's flake, in the same shape as nix/lib/eval-host.nix.
pub fn evaluate_flake(
    context: &Context,
    attribute: &str,
    timeout: Duration,
) -> Result<FlakeEvaluation> {
    let root = project_root();
    if !root.join("flake.lock").is_file() {
        return Ok(FlakeEvaluation::NotRun(
            "no flake.lock yet: run `nix flake lock` once to pin the inputs".to_owned(),
        ));
    }
    let nix = match setup::ensure(context, &[setup::NIX]) {
        Ok(found) => found.path(setup::NIX)?.clone(),
        Err(error) => return Ok(FlakeEvaluation::NotRun(format!("{error:#}"))),
    };
    let evaluator = project_root()
        .join("nix")
        .join("lib")
        .join("eval-flake.nix");
    // `nix eval --file` does not call a function with --argstr; the
    // arguments go through the environment so that no path is quoted into Nix.
    let args = [
        "--extra-experimental-features",
        "nix-command flakes",
        "eval",
        "--json",
        "--impure",
        "--offline",
        "--expr",
        "import (builtins.getEnv \"XTASK_FLAKE_EVALUATOR\") { flake = builtins.getEnv \"XTASK_FLAKE\"; host = builtins.getEnv \"XTASK_FLAKE_HOST\"; }",
    ];
    let env = [
        ("XTASK_FLAKE_EVALUATOR", evaluator.as_str()),
        ("XTASK_FLAKE", root.as_str()),
        ("XTASK_FLAKE_HOST", attribute),
    ];
    // Read while it runs: a fleet's configuration is more than a pipe holds.
    let limits = Limits {
        timeout,
        max_heap_bytes: None,
        max_output_bytes: MAX_OUTPUT_BYTES,
    };
    let ran = run_retrying(&nix, &args, &env, limits)?;
    if ran.status.is_none() {
        return Ok(FlakeEvaluation::NotRun(format!(
            "nix eval took longer than {} s",
            timeout.as_secs()
        )));
    }
    if !ran.success() {
        return Ok(FlakeEvaluation::NotRun(format!(
            "the flake does not evaluate here: {}",
            ran.error().message
        )));
    }
    match read_evaluation(&ran.stdout).context("reading nix eval's JSON")? {
        Ok(value) => Ok(FlakeEvaluation::Evaluated(value)),
        Err(findings) => Ok(FlakeEvaluation::NotRun(format!(
            "the merged configuration holds values check cannot read: {}",
            findings
                .iter()
                .map(|f| f.message.as_str())
                .collect::<Vec<_>>()
                .join("; ")
        ))),
    }
}

/// How one `nix eval --raw <installable>` ended (the NixOS evaluation gate).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawEvaluation {
    /// It printed this (trimmed).
    Printed(String),
    /// Nix exited with an error: its message.
    Failed(String),
    /// It could not run to the end here: Nix is missing, it was stopped
    /// after the time limit or killed. The reason.
    NotRun(String),
}

/// Runs `nix eval --raw <installable>` in the repository, within `timeout`,
/// with the flake's inputs as flake.lock pins them.
pub fn eval_raw(context: &Context, installable: &str, timeout: Duration) -> Result<RawEvaluation> {
    let nix = match setup::ensure(context, &[setup::NIX]) {
        Ok(found) => found.path(setup::NIX)?.clone(),
        Err(error) => return Ok(RawEvaluation::NotRun(format!("{error:#}"))),
    };
    let args = [
        "--extra-experimental-features",
        "nix-command flakes",
        "eval",
        // The inputs as flake.lock pins them, or an error: never a fresh lock.
        "--no-update-lock-file",
        "--raw",
        installable,
    ];
    let limits = Limits {
        timeout,
        max_heap_bytes: None,
        max_output_bytes: 1 << 20,
    };
    let ran = run_limited(&nix, &args, &[], limits)?;
    Ok(match ran.status {
        Some(status) if status.success() && !ran.output_too_large() => {
            RawEvaluation::Printed(String::from_utf8_lossy(&ran.stdout).trim().to_owned())
        }
        Some(status) if status.code().is_some() && !ran.output_too_large() => {
            RawEvaluation::Failed(whole_message(&ran.stderr))
        }
        _ => RawEvaluation::NotRun(ran.error().message),
    })
}
