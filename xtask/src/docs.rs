//! `cargo xtask docs`: documentation generated from the config (issue 5; being built).

use std::process::ExitCode;

use anyhow::{bail, Result};

#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> Result<ExitCode> {
    bail!("docs is not built yet")
}
