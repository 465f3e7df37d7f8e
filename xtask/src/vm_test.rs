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
use std::time::Duration;

use anyhow::{Context as _, Result};
use camino::Utf8PathBuf;

use crate::context::Context;
use crate::hosts::DEFAULT_HOST;
use crate::project::display_path;
use crate::vm::accel::Choice;
use crate::vm::lab::{self, Verdict};
use crate::vm::nixos;
use crate::vm::realise::Tamper;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// The host's kernel and tools under qemu; needs no Nix store and no KVM.
    Lab,
    /// The flake's NixOS VM test (`nix build .#checks.x86_64-linux.vm-test`).
    Nixos,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The host whose layout is booted (a directory under hosts/).
    #[arg(long, default_value = DEFAULT_HOST)]
    pub host: String,
    /// Boots in all: the install boot, then rotation boots (the second is the
    /// month: its clock jumps past the retention and it rotates several times).
    #[arg(long, default_value_t = crate::results::FULL_VM_TEST_BOOTS, value_parser = clap::value_parser!(u32).range(1..=50))]
    pub boots: u32,
    /// The virtual disk's size, as sold (480GB) or binary (447GiB). Default: diskSize in machine.nix.
    #[arg(long)]
    pub disk_size: Option<String>,
    /// The kernel to boot (default: the NixOS system's, or /boot/vmlinuz-*).
    #[arg(long, env = crate::vm::kernel::KERNEL_ENV)]
    pub kernel: Option<Utf8PathBuf>,
    /// Its modules: the lib/modules/<version> directory (default: derived from the kernel).
    #[arg(long, requires = "kernel", env = crate::vm::kernel::MODULES_ENV)]
    pub modules: Option<Utf8PathBuf>,
    /// Print the results (target/xtask/vm-test.json) as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Where the layout boots.
    #[arg(long, value_enum, default_value_t = Backend::Lab)]
    pub backend: Backend,
    /// Keep the console and protocol logs under target/xtask/ after a pass too.
    #[arg(long)]
    pub keep_logs: bool,
    /// KVM or TCG (default: KVM when a probe shows it works).
    #[arg(long, value_enum, env = crate::vm::accel::ACCEL_ENV)]
    pub accel: Option<Choice>,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(256..=1024))]
    pub memory: u32,
    /// Guest CPUs.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=16))]
    pub cpus: u32,
    /// Each boot's time limit in seconds, 1 to 3600 (default: 300 install / 150 rotate under TCG).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub boot_timeout: Option<u64>,
    /// Create something other than what is expected, to prove a check catches it
    /// (drop-subvolume=NAME, drop-mount-option=/MOUNTPOINT:OPTION), or run a
    /// wrong copy of a checklist procedure (procedure-expect=ID: an
    /// expectation its first command cannot meet; procedure-drop-sudo=ID:
    /// its first command without `sudo`; procedure-also-runs=ID:PROGRAM: its
    /// first command also runs PROGRAM; procedure-fixed-names=ID: `<stamp>`
    /// a fixed word and no `test ! -e` lines), or the lab's server PATH
    /// without the host's own packages (server-path=without-host-packages).
    /// For tests.
    #[arg(long, hide = true)]
    pub tamper: Vec<Tamper>,
    /// After the normal boots, SIGKILL the VM at N instants spread over the
    /// rollback of a rotation boot, boot again normally and check that
    /// nothing was lost. Without N: 3. Each cut costs two boots; 20 makes a soak run.
    #[arg(long, default_value_t = 0, num_args = 0..=1, default_missing_value = "3", value_name = "N",
          value_parser = clap::value_parser!(u32).range(0..=500))]
    pub power_cuts: u32,
    /// Boot a what-if layout whose Btrfs mounts all use this compression
    /// (zstd:3, none, …) instead of the layout's; for comparisons such as
    /// `cargo xtask bench`. Results go to target/xtask/vm-test-what-if.json.
    #[arg(long, hide = true)]
    pub compression: Option<String>,
    /// After the default boots (and any power cuts), run the deploy
    /// checklist's procedures that reboot, reinstall or change /persist, as
    /// the checklist prints them (§3.9 the root wiped and /persist kept
    /// across a reboot; §4.3 a file from an old root; §4.4 /persist from a
    /// snapshot; §4.5 /persist sent to a second disk and received after a
    /// reinstall) and the write latency while async discard releases a large
    /// deletion (roadmap 7.2), then a calendar of short boots over three
    /// retention periods. About 12 more boots; a pass is the proof of the
    /// deploy checklist's `procedures` gate.
    #[arg(long)]
    pub thorough: bool,
    /// After the default boots (and `--thorough`'s): the drill for a server
    /// that does not boot (§4.6), twice with /persist changed in between:
    /// its root deleted, the lab's rescue system (nothing of the installed
    /// system mounted, the rescue system's commands as root) saves /persist
    /// to the second disk, then the reinstall and the restore, checked by
    /// checksum. 8 more boots (about 4 minutes under TCG); the deploy
    /// checklist's `procedures` gate asks for `--thorough --drills`.
    #[arg(long)]
    pub drills: bool,
    /// Boot with this rollback script instead of
    /// nix/modules/btrfs-rollback/rollback.sh, e.g. a modified copy; the
    /// results go to target/xtask/vm-test-tampered.json.
    #[arg(long, value_name = "PATH")]
    pub rollback_script: Option<Utf8PathBuf>,
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
    pub fn lab_options(&self) -> Result<lab::Options> {
        let serve_ssh = match (self.serve_ssh, &self.ssh_host_key, &self.ssh_authorized_key) {
            (Some(port), Some(key), Some(authorized)) => Some(lab::SshServing {
                port,
                host_key: std::fs::read_to_string(key)
                    .with_context(|| format!("reading --ssh-host-key {key}"))?,
                authorized_key: std::fs::read_to_string(authorized)
                    .with_context(|| format!("reading --ssh-authorized-key {authorized}"))?,
            }),
            _ => None,
        };
        Ok(lab::Options {
            host: self.host.clone(),
            boots: self.boots,
            disk_size: self.disk_size.clone(),
            kernel: self.kernel.clone(),
            modules: self.modules.clone(),
            accel: self.accel,
            memory_mib: self.memory,
            cpus: self.cpus,
            boot_timeout: self.boot_timeout.map(Duration::from_secs),
            keep_logs: self.keep_logs,
            tamper: self.tamper.clone(),
            power_cuts: self.power_cuts,
            compression: self.compression.clone(),
            progress: true,
            thorough: self.thorough,
            drills: self.drills,
            rollback_script: self.rollback_script.clone(),
            discard_probe: false,
            reporter: lab::Reporter::Stderr,
            serve_ssh,
        })
    }
}

pub fn run(context: &Context, args: Args) -> Result<ExitCode> {
    if args.backend == Backend::Nixos {
        return nixos::run(context, &args.host);
    }
    let outcome = lab::run(context, &args.lab_options()?)?;
    let results = &outcome.results;
    let failed: Vec<_> = results.checks.iter().filter(|c| !c.passed).collect();
    let passed = results.checks.len() - failed.len();
    for check in &failed {
        eprintln!(
            "FAIL boot {} {}\n       measured: {}\n       expected: {}",
            check.boot, check.name, check.measured, check.expected
        );
    }
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
            crate::results::pass_file_name("vm-test")
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
