//! `cargo xtask vm-test`: boots the real layout in VMs (issue 4; being built).

use std::process::ExitCode;

use anyhow::{bail, Result};

#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> Result<ExitCode> {
    bail!("vm-test is not built yet")
}
