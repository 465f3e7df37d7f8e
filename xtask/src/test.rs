//! `cargo xtask test`: everything the product must prove, with its set-up.
//! Installs the system packages the tests use (as root on Debian/Ubuntu, in
//! one apt transaction, saying so; otherwise it names them and exits 2),
//! then runs `cargo test --workspace`, whose suites include the real
//! nix-instantiate, Btrfs on loop devices, sgdisk on sparse files and the
//! lab VM boots.
//!
//! `--quick` is the everyday tier: the unit tests and the CLI tests that need
//! no root, no loop device and no VM (see `TIERS`). The full suite stays the
//! default, and it is what CI runs: it runs every test, whatever its tier.
//!
//! Exit codes: 0 every test passed, 1 a test failed, 2 the tests could not
//! run (a tool missing, a build error, an argument cargo or the test
//! harness refused).

use std::io::{IsTerminal as _, Write as _};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{Context as _, Result};

use toolbox::context::Context;
use toolbox::process::{Output, Supervised};
use toolbox::project::project_root;
use toolbox::setup::{self, Tool};

/// Every program some test runs (the full suite). `cargo xtask test`
/// installs them; `.ci/run` installs nothing itself, so CI proves this list.
pub const TEST_TOOLS: &[Tool] = &[
    setup::NIX_INSTANTIATE,
    setup::NIX,
    setup::GIT,
    setup::MKFS_BTRFS,
    setup::BTRFS,
    setup::SGDISK,
    setup::COMPSIZE,
    setup::MKFS_VFAT,
    setup::MKFS_EXT4,
    setup::CRYPTSETUP,
    setup::BUSYBOX,
    setup::DASH,
    setup::QEMU,
    setup::QEMU_IMG,
    setup::FSTRIM,
    setup::FINDMNT,
    setup::BLKID,
    setup::LOSETUP,
    setup::MOUNT,
    setup::SWAPON,
    setup::MKSWAP,
    setup::LSATTR,
    setup::CHATTR,
    setup::DEPMOD,
    setup::MODPROBE,
    setup::ZSTD,
    setup::UMOUNT,
    setup::SWAPOFF,
    setup::LDD,
    setup::PYTHON3,
    // verify's tests: the real OpenSSH client and server, and sudo.
    setup::SSH,
    setup::SSH_KEYGEN,
    setup::SSHD,
    setup::SUDO,
    setup::UNSHARE,
    setup::SFDISK,
    // Optional for vm-test, but the tests build the VM image as users do.
    setup::STRIP,
];

/// What the quick tier runs: nix for check, sgdisk for the geometry, git
/// for the checklist's gates, python3 for the NixOS tests' scripts.
pub const QUICK_TOOLS: &[Tool] = &[
    setup::NIX_INSTANTIATE,
    setup::NIX,
    setup::GIT,
    setup::SGDISK,
    setup::PYTHON3,
];

/// Which tier each test binary (xtask/tests/<name>.rs) belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// No root, no loop device, no VM, a few seconds: in `--quick`.
    Quick,
    /// Root, loop devices, qemu, or minutes of work: only in the full suite.
    Full,
}

/// Every integration test binary and its tier (a unit test keeps this list
/// complete, so that no new binary is left out of a tier by accident).
pub const TIERS: &[(&str, Tier)] = &[
    ("check_cli", Tier::Quick),
    ("checklist_cli", Tier::Quick),
    ("disko_corpus", Tier::Quick),
    ("disko_reference", Tier::Quick),
    ("docs_golden", Tier::Quick),
    ("flake_mode", Tier::Quick),
    ("fuzz_regressions", Tier::Quick),
    // check against recorded real-tool verdicts on generated layouts, in process.
    ("generated_corpus", Tier::Quick),
    ("geometry_sgdisk", Tier::Quick),
    ("cli_conventions", Tier::Quick),
    ("host_fixture", Tier::Quick),
    // The host's NixOS modules through the module-system stand-in (nix-instantiate).
    ("host_modules", Tier::Quick),
    // Broken copies of the host files; vm-test refuses them before booting.
    ("host_files", Tier::Quick),
    ("nix_store", Tier::Quick),
    // A text scan: every host-side process goes through the one runner.
    ("one_runner", Tier::Quick),
    // The imports drawn with syn: no circle between folders, no long function.
    ("architecture", Tier::Quick),
    // The hostile corpus: memory bombs and endless evaluations, ~30 s.
    ("hostile", Tier::Full),
    // Btrfs on loop devices, as root.
    ("rollback", Tier::Full),
    ("recovery", Tier::Full),
    // Fresh generated layouts against mkfs and the kernel, as root (~25 s).
    ("generated_live", Tier::Full),
    // check --deep: disko's create script, mkfs and mounts for real, as root
    // (needs disko and nixpkgs.lib checkouts: XTASK_DISKO_SRC, XTASK_NIXPKGS_LIB).
    ("check_deep", Tier::Full),
    // qemu boots.
    ("vm_test", Tier::Full),
    // A real sshd and sudo in network and mount namespaces, as root.
    ("verify_ssh", Tier::Full),
    // A lab VM served over sshd: verify passes, and fails on each tamper.
    ("verify_lab", Tier::Full),
];

/// Unit tests that boot qemu or need a kernel, depmod or qemu-img live in
/// the `vm` module; the quick tier skips them by this name filter.
pub const QUICK_SKIPS: &[&str] = &["vm::"];

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The everyday tier: unit and CLI tests without root, loop devices or VMs
    /// (under a minute once built). The default runs everything.
    #[arg(long)]
    pub quick: bool,
    /// Extra arguments for `cargo test` (after `--`), e.g. a test name filter;
    /// arguments for the test harness follow a second `--`.
    #[arg(last = true, value_name = "CARGO_TEST_ARGS")]
    pub cargo_test_args: Vec<String>,
}

/// The arguments of `cargo test` for a tier and the user's extra ones.
pub fn cargo_test_args(quick: bool, extra: &[String]) -> Vec<String> {
    let (for_cargo, for_harness) = match extra.iter().position(|a| a == "--") {
        Some(index) => (&extra[..index], &extra[index + 1..]),
        None => (extra, &[][..]),
    };
    // Every failure in one run: CI shows them all, not only the first binary's.
    let mut args: Vec<String> = vec!["test".into(), "--workspace".into(), "--no-fail-fast".into()];
    if quick {
        args.extend(["--lib".into(), "--bins".into()]);
        for (name, tier) in TIERS {
            if *tier == Tier::Quick {
                args.extend(["--test".into(), (*name).into()]);
            }
        }
    }
    args.extend(for_cargo.iter().cloned());
    let mut harness: Vec<String> = for_harness.to_vec();
    if quick {
        for skip in QUICK_SKIPS {
            harness.extend(["--skip".into(), (*skip).into()]);
        }
    }
    if !harness.is_empty() {
        args.push("--".into());
        args.extend(harness);
    }
    args
}

pub fn run(context: &Context, args: Args) -> Result<ExitCode> {
    if args.quick {
        setup::provision(context, QUICK_TOOLS, false)?;
    } else {
        setup::provision(context, TEST_TOOLS, true)?;
    }
    let mut test_args = cargo_test_args(args.quick, &args.cargo_test_args);
    if std::io::stderr().is_terminal() && !test_args.iter().any(|a| a.starts_with("--color")) {
        test_args.insert(1, "--color=always".into());
    }
    let started = std::time::Instant::now();
    let outcome = run_cargo_test(&test_args, &context.child_env())?;
    let took = toolbox::progress::seconds(started.elapsed());
    Ok(match outcome {
        Outcome::Passed => {
            eprintln!(
                "{} passed in {took}",
                if args.quick {
                    "the quick tier"
                } else {
                    "every test"
                }
            );
            ExitCode::SUCCESS
        }
        Outcome::TestsFailed => {
            eprintln!("tests FAILED (after {took}); their output is above");
            ExitCode::from(1)
        }
        Outcome::CouldNotRun(code) => {
            eprintln!(
                "error: `cargo {}` could not run the tests (exit {code}: a build error, or an argument cargo or the test harness refused; its message is above)",
                test_args.join(" ")
            );
            ExitCode::from(2)
        }
    })
}

/// How `cargo test` ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Passed,
    /// A test binary ran and reported a failure.
    TestsFailed,
    /// Nothing said a test failed: cargo or the harness refused to run
    /// (bad argument, build error). The exit code of cargo.
    CouldNotRun(i32),
}

/// Whether a line of the test harness's output says a test failed.
pub fn reports_failure(line: &str) -> bool {
    let line = line.trim();
    // Only the harness says this, and only when tests ran: cargo's own
    // "N targets failed" also follows arguments the harness refused.
    line.starts_with("test result: FAILED") || line == "failures:"
}

/// Runs cargo, passing its output through as it comes, and tells a failed
/// test from a run that could not start.
/// Runs cargo test; `env` carries the flags to the xtask processes the tests start.
fn run_cargo_test(args: &[String], env: &[(&str, String)]) -> Result<Outcome> {
    let failed = Arc::new(AtomicBool::new(false));
    let pass = |to_stdout: bool| {
        let failed = Arc::clone(&failed);
        Output::lines(move |line| {
            if reports_failure(&String::from_utf8_lossy(line)) {
                failed.store(true, Ordering::Relaxed);
            }
            let _ = if to_stdout {
                std::io::stdout().lock().write_all(line)
            } else {
                std::io::stderr().lock().write_all(line)
            };
        })
    };
    let finished = Supervised::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(args)
        .envs(env.iter().map(|(key, value)| (*key, value)))
        .current_dir(project_root())
        .stdout(pass(true))
        .stderr(pass(false))
        .run()
        .context("running cargo test")?;
    let status = finished.status.context("cargo test was stopped")?;
    Ok(if status.success() {
        Outcome::Passed
    } else if failed.load(Ordering::Relaxed) {
        Outcome::TestsFailed
    } else {
        Outcome::CouldNotRun(status.code().unwrap_or(-1))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_test_binary_has_a_tier() {
        let dir = project_root().join("xtask").join("tests");
        let mut binaries: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.strip_suffix(".rs"))
                    .map(str::to_owned)
            })
            .collect();
        binaries.sort();
        let mut listed: Vec<String> = TIERS.iter().map(|(n, _)| (*n).to_owned()).collect();
        listed.sort();
        assert_eq!(
            binaries, listed,
            "xtask/tests/*.rs and test_cmd::TIERS differ: give each test binary a tier"
        );
    }

    #[test]
    fn the_quick_tier_names_its_binaries_and_skips_the_vm() {
        let args = cargo_test_args(true, &["layout".to_owned()]);
        let joined = args.join(" ");
        assert!(
            joined.starts_with("test --workspace --no-fail-fast --lib --bins --test check_cli"),
            "{joined}"
        );
        assert!(!joined.contains("--test rollback"), "{joined}");
        assert!(!joined.contains("--test vm_test"), "{joined}");
        assert!(joined.ends_with("layout -- --skip vm::"), "{joined}");
    }

    #[test]
    fn harness_arguments_stay_after_the_separator() {
        let extra: Vec<String> = ["--test", "check_cli", "--", "--nocapture"]
            .map(str::to_owned)
            .to_vec();
        assert_eq!(
            cargo_test_args(false, &extra).join(" "),
            "test --workspace --no-fail-fast --test check_cli -- --nocapture"
        );
        assert_eq!(
            cargo_test_args(true, &extra)
                .join(" ")
                .rsplit_once(" -- ")
                .unwrap()
                .1,
            "--nocapture --skip vm::"
        );
    }

    #[test]
    fn failures_are_told_from_refusals() {
        assert!(reports_failure(
            "test result: FAILED. 3 passed; 1 failed; 0 ignored"
        ));
        assert!(reports_failure("failures:"));
        assert!(!reports_failure("test result: ok. 8 passed; 0 failed"));
        assert!(!reports_failure("error: Unrecognized option: 'bogus'"));
        assert!(!reports_failure(
            "error: test failed, to rerun pass `-p xtask --lib`"
        ));
        assert!(!reports_failure("error: 13 targets failed:"));
    }

    #[test]
    fn the_readme_names_every_package_the_tests_install() {
        let readme = std::fs::read_to_string(project_root().join("README.md")).unwrap();
        let setup = readme
            .split("\n## ")
            .find(|s| s.starts_with("Set-up"))
            .expect("README.md has a \"## Set-up\" section");
        for package in setup::packages_of(TEST_TOOLS, true) {
            assert!(
                setup.contains(&format!("`{package}`")),
                "README's set-up does not name {package}"
            );
        }
    }

    #[test]
    fn ci_runs_the_readme_commands_and_installs_nothing_itself() {
        let ci = std::fs::read_to_string(project_root().join(".ci").join("run")).unwrap();
        let commands: Vec<&str> = ci
            .lines()
            .map(str::trim)
            .filter(|l| !l.starts_with('#'))
            .collect();
        assert!(
            commands.contains(&"cargo xtask test"),
            ".ci/run must run the README's test command"
        );
        assert!(
            commands
                .iter()
                .any(|l| l.starts_with("cargo xtask fresh-machine")),
            ".ci/run must prove the README's commands on a fresh Debian root"
        );
        assert!(
            !commands.iter().any(|l| l.contains("apt-get install")),
            ".ci/run must leave installing to the README's commands, so CI proves them"
        );
    }
}
