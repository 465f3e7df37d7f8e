//! `cargo xtask <command>`: argument parsing and dispatch only.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use xtask::{bench, check, checklist, docs, fuzz, setup, test_cmd, vm, vm_test};

/// Checks, tests, documents and plans the deployment of the Hetzner CPX52
/// Btrfs + impermanence layout, before anything touches the real server.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", version, propagate_version = true)]
struct Cli {
    /// Never install missing system packages; name them and exit 2 instead
    /// (same as XTASK_NO_INSTALL=1).
    #[arg(long, global = true)]
    no_install: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate the Nix and the disk layout (exit 0 clean, 1 findings, 2 could not run).
    Check(check::Args),
    /// Boot the real layout in VMs and run the in-VM checks (subvolumes, options, compsize, TRIM, swap, rotation).
    VmTest(vm_test::Args),
    /// Generate docs/reference/ from the config (--check: fail if it is stale).
    Docs(docs::Args),
    /// Print the deployment and rollback checklist, gated on real results.
    DeployChecklist(checklist::Args),
    /// Measure check latency, rollback time, VM boots, compression and TRIM; write docs/benchmarks.md.
    Bench(bench::Args),
    /// Install what the tests need, then run every test (cargo test --workspace).
    Test(test_cmd::Args),
    /// Fuzz the size parsers, the model, the geometry and the JSON reader (cargo-fuzz; docs/fuzzing.md).
    Fuzz(fuzz::Args),
    /// The vm-test VM's /init (runs only as PID 1 inside the VM).
    #[command(hide = true)]
    Guest(vm::guest::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.no_install {
        // Read by `setup` here and by the xtask processes tests start.
        std::env::set_var(setup::NO_INSTALL_ENV, "1");
    }
    let result = match cli.command {
        Command::Check(args) => check::run(args),
        Command::VmTest(args) => vm_test::run(args),
        Command::Docs(args) => docs::run(args),
        Command::DeployChecklist(args) => checklist::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Test(args) => test_cmd::run(args),
        Command::Fuzz(args) => fuzz::run(args),
        Command::Guest(args) => vm::guest::run(args),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}
