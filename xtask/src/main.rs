//! `cargo xtask <command>`: argument parsing and dispatch only.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use toolbox::context::{Context, Install, NIX_TIMEOUT_ENV, NO_INSTALL_ENV};
use xtask::{bench, check, deploy_checklist, docs, fresh_machine, fuzz, test, verify, vm_test};

/// Checks, tests, documents and plans the deployment of the Hetzner CPX52
/// Btrfs + impermanence layout, before anything touches the real server.
///
/// Every command exits 0 on success, 1 when what it checks is wrong, and 2
/// when it could not run (a bad argument, a missing tool, a failing tool).
#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    version,
    propagate_version = true,
    after_help = ENVIRONMENT
)]
struct Cli {
    /// Never install missing system packages; name them (with the exact apt
    /// command) and exit 2 instead.
    #[arg(long, global = true, env = NO_INSTALL_ENV, value_parser = clap::builder::FalseyValueParser::new())]
    no_install: bool,
    /// Seconds one nix-instantiate may run before it is stopped (exit 2).
    #[arg(long, global = true, env = NIX_TIMEOUT_ENV, value_name = "SECONDS",
          value_parser = parse_nix_timeout)]
    nix_timeout: Option<u64>,
    #[command(subcommand)]
    command: Command,
}

/// The variables every command reads, besides those shown with their flags.
const ENVIRONMENT: &str = "Environment:
  XTASK_NO_INSTALL=1       same as --no-install
  XTASK_NIX_TIMEOUT=SECS   same as --nix-timeout
  XTASK_VM_KERNEL, XTASK_VM_MODULES, XTASK_VM_ACCEL
                           vm-test's --kernel, --modules and --accel
  XTASK_FRESH_MIRROR       fresh-machine's --mirror
  XTASK_PROJECT_ROOT=DIR   work on another copy of the repository (used by the tests)";

fn parse_nix_timeout(value: &str) -> Result<u64, String> {
    value
        .trim()
        .parse::<u64>()
        .ok()
        .filter(|seconds| *seconds > 0)
        .ok_or_else(|| {
            format!(
                "give a whole number of seconds (at least 1), e.g. --nix-timeout 300 or {}=300",
                NIX_TIMEOUT_ENV
            )
        })
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
    DeployChecklist(deploy_checklist::Args),
    /// Prove over SSH, read-only, that the installed server matches the layout (exit 0 pass, 1 a check failed, 2 could not run).
    Verify(verify::Args),
    /// Measure check latency, rollback time, VM boots, compression and TRIM; write docs/benchmarks.md.
    Bench(bench::Args),
    /// Install what the tests need, then run every test (--quick: the everyday tier).
    Test(test::Args),
    /// Fuzz the size parsers, the model, the geometry and the JSON reader (cargo-fuzz; docs/fuzzing.md).
    Fuzz(fuzz::Args),
    /// Prove the README's two commands on a fresh Debian 12 root (debootstrap, then its own mount namespace with the root made / by pivot_root; root only).
    FreshMachine(fresh_machine::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let context = Context::new(
        if cli.no_install {
            Install::Forbidden
        } else {
            Install::Allowed
        },
        cli.nix_timeout.map(Duration::from_secs),
    );
    let context = &context;
    // A panic is a bug, but still a run that could not finish: exit 2, as promised.
    let result = std::panic::catch_unwind(|| match cli.command {
        Command::Check(args) => check::run(context, args),
        Command::VmTest(args) => vm_test::run(context, args),
        Command::Docs(args) => docs::run(context, args),
        Command::DeployChecklist(args) => deploy_checklist::run(context, args),
        Command::Verify(args) => verify::run(context, args),
        Command::Bench(args) => bench::run(context, args),
        Command::Test(args) => test::run(context, args),
        Command::Fuzz(args) => fuzz::run(context, args),
        Command::FreshMachine(args) => fresh_machine::run(context, args),
    });
    match result {
        Ok(Ok(code)) => code,
        Ok(Err(error)) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
        Err(_) => {
            eprintln!("error: the xtask panicked (a bug; the message is above)");
            ExitCode::from(2)
        }
    }
}
