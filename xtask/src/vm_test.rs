//! `cargo xtask vm-test`: boots the real layout in VMs and runs the in-VM
//! checks: the partition table, all subvolumes, the mount options that take
//! effect, the ESP's permissions, encrypted swap, compression, No_COW, TRIM
//! down to the host's image, the root's rotation at every boot, a month of
//! rotations against the retention rules, the mount time (roadmap 7.3), the
//! deploy checklist's quick post-deploy checks (§3) as the admin runs them,
//! and with `--thorough` the checklist's procedures that reboot or
//! reinstall (§3.9, §4.3-4.5) and the write latency while async discard
//! runs (roadmap 7.2).
//! Exit codes: 0 every check passed, 1 a check failed, 2 could not run.

use std::process::ExitCode;

use anyhow::{Context as _, Result};
use camino::Utf8PathBuf;

use crate::results::VmTestResults;
use crate::vm::lab_backend::{self, Verdict};
use crate::vm::nixos_backend;
use toolbox::context::Context;
use toolbox::project::display_path;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// The host's kernel and tools under qemu; needs no Nix store and no KVM.
    Lab,
    /// The flake's NixOS VM test (`nix build .#checks.x86_64-linux.vm-test`).
    Nixos,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// What the lab boots and checks (the lab's own options, defaults and all).
    #[command(flatten)]
    pub lab: lab_backend::Options,
    /// Print the results (target/xtask/vm-test.json) as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Where the layout boots.
    #[arg(long, value_enum, default_value_t = Backend::Lab)]
    pub backend: Backend,
    /// For verify's tests: the last default boot ends by serving the booted
    /// system over the distribution's sshd, forwarded from this port of the
    /// host's 127.0.0.1 only, until stdin closes. Results go to
    /// target/xtask/vm-test-ssh-PORT.json.
    #[arg(long, hide = true, value_name = "PORT", requires_all = ["ssh_host_key", "ssh_authorized_key"])]
    pub serve_ssh: Option<u16>,
    /// The served sshd's host key (an OpenSSH private key file).
    #[arg(long, hide = true, value_name = "FILE")]
    pub ssh_host_key: Option<Utf8PathBuf>,
    /// The admin's public key the served sshd accepts.
    #[arg(long, hide = true, value_name = "FILE")]
    pub ssh_authorized_key: Option<Utf8PathBuf>,
}

impl Args {
    /// The lab's options with `--serve-ssh`'s key files read.
    pub fn lab_options(&self) -> Result<lab_backend::Options> {
        let serve_ssh = match (self.serve_ssh, &self.ssh_host_key, &self.ssh_authorized_key) {
            (Some(port), Some(key), Some(authorized)) => Some(lab_backend::SshServing {
                port,
                host_key: std::fs::read_to_string(key)
                    .with_context(|| format!("reading --ssh-host-key {key}"))?,
                authorized_key: std::fs::read_to_string(authorized)
                    .with_context(|| format!("reading --ssh-authorized-key {authorized}"))?,
            }),
            _ => None,
        };
        Ok(lab_backend::Options {
            serve_ssh,
            ..self.lab.clone()
        })
    }
}

pub fn run(context: &Context, args: Args) -> Result<ExitCode> {
    if args.backend == Backend::Nixos {
        return nixos_backend::run(context, &args.lab.host);
    }
    let outcome = lab_backend::run(context, &args.lab_options()?)?;
    let results = &outcome.results;
    let failed: Vec<_> = results.checks.iter().filter(|c| !c.passed).collect();
    let passed = results.checks.len() - failed.len();
    for check in &failed {
        eprintln!(
            "FAIL boot {} {}\n       measured: {}\n       expected: {}",
            check.boot, check.name, check.measured, check.expected
        );
    }
    let highlights = highlights(results);
    for line in highlights {
        eprintln!("  {line}");
    }
    eprintln!(
        "{}: {passed} checks passed, {} failed, {:.1} s in all; results in {}",
        match outcome.verdict {
            Verdict::Passed => "vm-test passed",
            Verdict::ChecksFailed => "vm-test FAILED",
            Verdict::CouldNotRun(_) => "vm-test could not run",
        },
        failed.len(),
        results.wall_ms as f64 / 1000.0,
        display_path(&outcome.results_path)
    );
    match &outcome.proof_path {
        Some(proof) => eprintln!("the deploy gate's proof now: {}", display_path(proof)),
        None => eprintln!(
            "not a proof for the deploy gate (only a full default run that passes is): {} kept",
            crate::results::pass_file_name(crate::results::Kind::VmTest)
        ),
    }
    if let Verdict::CouldNotRun(reason) = &outcome.verdict {
        eprintln!("error: {reason}");
    }
    if outcome.verdict != Verdict::Passed {
        if let Some((log, lines)) = &outcome.failing_console {
            eprintln!(
                "last {} console lines of {}:",
                lines.len(),
                display_path(log)
            );
            for line in lines {
                eprintln!("  | {line}");
            }
        }
    }
    if outcome.logs_kept {
        eprintln!("logs: {}", display_path(&outcome.log_dir));
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(results)?);
    }
    Ok(match outcome.verdict {
        Verdict::Passed => ExitCode::SUCCESS,
        Verdict::ChecksFailed => ExitCode::from(1),
        Verdict::CouldNotRun(_) => ExitCode::from(2),
    })
}

/// The lines under the verdict: each boot's time, the figures that matter,
/// the retention checks and the checklist's procedures.
fn highlights(results: &VmTestResults) -> Vec<String> {
    let figure = |name: &str| results.figures.get(name).copied();
    let mut highlights = Vec::new();
    for boot in &results.boots {
        highlights.push(format!(
            "boot {} {}: {:.1} s",
            boot.number,
            boot.kind,
            boot.wall_ms as f64 / 1000.0
        ));
        if let Some(ms) = figure(&format!("rotation_ms.boot{}", boot.number)) {
            highlights.push(format!("rotation at boot {}: {ms:.0} ms", boot.number));
        }
    }
    if let (Some(p99), Some(max)) = (
        figure("discard.latency_p99_ms"),
        figure("discard.latency_max_ms"),
    ) {
        highlights.push(format!(
            "writes while async discard released {:.1} GiB: p99 {p99:.1} ms, max {max:.1} ms",
            figure("discard.released_bytes").unwrap_or(0.0) / 1073741824.0
        ));
    }
    let mounts: Vec<String> = results
        .boots
        .iter()
        .filter_map(|b| figure(&format!("mount_ms.boot{}", b.number)).map(|ms| format!("{ms:.0}")))
        .collect();
    if !mounts.is_empty() {
        highlights.push(format!(
            "mounting every filesystem: {} ms per boot",
            mounts.join(", ")
        ));
    }
    let retention: Vec<_> = results
        .checks
        .iter()
        .filter(|c| c.name.starts_with("retention:") || c.name.starts_with("month:"))
        .collect();
    if !retention.is_empty() {
        highlights.push(format!(
            "retention: {}/{} rotations and rules as the model says",
            retention.iter().filter(|c| c.passed).count(),
            retention.len()
        ));
    }
    let (mut ran, mut not_run) = (0, 0);
    for procedure in &results.procedures {
        let (passed, own, skipped) = procedure.counts();
        match procedure.status {
            crate::results::ProcedureStatus::NotRun => not_run += 1,
            _ => ran += 1,
        }
        if procedure.status == crate::results::ProcedureStatus::NotRun {
            continue;
        }
        let failure = procedure
            .first_failure()
            .map(|c| {
                format!(
                    ": `{}` {}",
                    c.outcome.ran,
                    c.outcome.problem.as_deref().unwrap_or("failed")
                )
            })
            .unwrap_or_default();
        highlights.push(format!(
            "checklist {} {}: {}, {passed} of its commands as expected (and {own} of the lab's own), {skipped} NOT RUN in the lab{failure}",
            procedure.step,
            procedure.id,
            procedure.status.label(),
        ));
    }
    if ran + not_run > 0 {
        highlights.push(format!(
            "checklist procedures: {ran} ran in the VM, {not_run} NOT RUN (vm-test.json says why for each command)"
        ));
    }
    if let Some(percent) = figure("compression.@nix.percent") {
        highlights.push(format!("@nix compression: {percent:.1}% saved"));
    }
    if let Some(freed) = figure("trim.freed_bytes") {
        highlights.push(format!(
            "TRIM gave back {:.1} MiB to the host image",
            freed / 1048576.0
        ));
    }
    if let (Some(survived), Some(total)) =
        (figure("power_cuts.survived"), figure("power_cuts.total"))
    {
        highlights.push(format!(
            "power cuts in the rollback survived: {survived}/{total}"
        ));
    }
    if let Some(peak) = figure("vm.peak_rss_bytes") {
        highlights.push(format!("qemu peak memory: {:.0} MiB", peak / 1048576.0));
    }
    highlights
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::Parser as _;

    use super::*;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn parse(flags: &[&str]) -> Args {
        Cli::try_parse_from(std::iter::once("vm-test").chain(flags.iter().copied()))
            .unwrap()
            .args
    }

    /// vm-test's flags land in the lab's options as given: the names
    /// that differ (`--memory`) and the conversions (`--boot-timeout` in
    /// seconds) included.
    #[test]
    fn flags_become_the_lab_options() {
        let args = parse(&[
            "--host",
            "other",
            "--boots",
            "3",
            "--memory",
            "512",
            "--cpus",
            "1",
            "--boot-timeout",
            "30",
            "--power-cuts",
            "--thorough",
            "--drills",
            "--json",
        ]);
        let options = args.lab_options().unwrap();
        assert_eq!(options.host, "other");
        assert_eq!(
            (options.boots, options.memory_mib, options.cpus),
            (3, 512, 1)
        );
        assert_eq!(options.boot_timeout, Some(Duration::from_secs(30)));
        assert_eq!(options.power_cuts, 3);
        assert!(options.thorough && options.drills && options.progress);
        assert!(args.json);
        assert_eq!(args.backend, Backend::Lab);
        let err = Cli::try_parse_from(["vm-test", "--boot-timeout", "0"])
            .err()
            .unwrap();
        assert!(err.to_string().contains("1..=3600"), "{err}");
    }
}
