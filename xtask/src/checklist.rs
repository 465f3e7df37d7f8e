//! `cargo xtask deploy-checklist`: gated deployment and rollback checklist (issue 5; being built).

use std::process::ExitCode;

use anyhow::{bail, Result};

#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> Result<ExitCode> {
    bail!("deploy-checklist is not built yet")
}
