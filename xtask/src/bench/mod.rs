//! `cargo xtask bench`: figures anyone can re-run, printed and written to
//! docs/benchmarks.md. One section per thing measured.

use std::process::ExitCode;

use anyhow::{bail, Result};

#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> Result<ExitCode> {
    bail!("bench is not built yet")
}
