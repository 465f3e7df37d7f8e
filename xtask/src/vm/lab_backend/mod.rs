//! The lab backend: our initramfs and the host's kernel under qemu, on a
//! sparse disk of the real size. Boot 1 installs the layout, boots 2..N
//! rotate the root; the host measures the disk image between steps and
//! turns the guest's events into target/xtask/vm-test.json.
//!
//! - `prepare`: before the first boot (host, kernel, image, procedures);
//! - `session`: one boot under qemu and the host's measurements of it;
//! - `tally`: what the boots recorded, collected for vm-test.json;
//! - `report`: what the run tells of each boot as it ends (`Reporter`);
//! - `host_checks`: the checks the host makes itself after each boot;
//! - `power_cuts`, `thorough`: the runs beyond the default boots.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use camino::{Utf8Path, Utf8PathBuf};

use super::accel::Choice;
use super::budgets::Budgets;
use super::disk::{self};
use super::initramfs::{self};
use super::month::{self, MONTH_BOOT};
use super::plan::BootKind;
use super::procedure_runs::{self, LostFile, Schedule, Tier};
use super::qemu::{self};
use super::realise::{BootSpec, DiscardBudget, Realisation, RollbackTrim, RunInputs, Tamper};
use super::retention::Rules;
use crate::hosts;
use crate::hosts::Model;
use crate::results::{Header, Kind, VmTestResults};
use toolbox::progress::Progress;
use toolbox::project::{project_root, xtask_dir};
mod host_checks;
mod power_cuts;
mod prepare;
mod report;
mod session;
mod tally;
#[cfg(test)]
mod tests;
mod thorough;

use power_cuts::power_cuts;
use prepare::describe_setup;
pub use prepare::{prepare, rollback_settings, with_compression, Prepared};
pub use report::Reporter;
use session::boot_timeout;
pub use session::{BootOutcome, Session};
use tally::{Completion, Tally};
use thorough::{drills, thorough};

/// The one rollback script (nix/modules/btrfs-rollback), embedded byte for byte.
pub fn rollback_script() -> Utf8PathBuf {
    project_root()
        .join("nix")
        .join("modules")
        .join("btrfs-rollback")
        .join("rollback.sh")
}

/// What a lab run boots and checks. These are `vm-test`'s flags (flattened
/// into `vm_test::Args`), so each default is stated once, here; `bench`
/// starts from [`Options::defaults`].
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// The host whose layout is booted (a directory under hosts/).
    #[arg(long, default_value = hosts::DEFAULT_HOST)]
    pub host: String,
    /// Boots in all: the install boot, then rotation boots (the second is the
    /// month: its clock jumps past the retention and it rotates several times).
    #[arg(long, default_value_t = crate::results::FULL_VM_TEST_BOOTS, value_parser = clap::value_parser!(u32).range(1..=50))]
    pub boots: u32,
    /// The virtual disk's size, as sold (480GB) or binary (447GiB). Default: diskSize in machine.nix.
    #[arg(long)]
    pub disk_size: Option<String>,
    /// The kernel to boot (default: the NixOS system's, or /boot/vmlinuz-*).
    #[arg(long, env = super::kernel::KERNEL_ENV)]
    pub kernel: Option<Utf8PathBuf>,
    /// Its modules: the lib/modules/<version> directory (default: derived from the kernel).
    #[arg(long, requires = "kernel", env = super::kernel::MODULES_ENV)]
    pub modules: Option<Utf8PathBuf>,
    /// Keep the console and protocol logs under target/xtask/ after a pass too.
    #[arg(long)]
    pub keep_logs: bool,
    /// KVM or TCG (default: KVM when a probe shows it works).
    #[arg(long, value_enum, env = super::accel::ACCEL_ENV)]
    pub accel: Option<Choice>,
    /// Guest memory in MiB.
    #[arg(long = "memory", value_name = "MEMORY", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(256..=1024))]
    pub memory_mib: u32,
    /// Guest CPUs.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=16))]
    pub cpus: u32,
    /// Each boot's time limit in seconds, 1 to 3600 (default: 300 install / 150 rotate under TCG).
    #[arg(long, value_parser = clap::builder::TypedValueParser::map(clap::value_parser!(u64).range(1..=3600), Duration::from_secs))]
    pub boot_timeout: Option<Duration>,
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
    /// Show a spinner with step names on stderr.
    #[arg(skip = true)]
    pub progress: bool,
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
    /// Roadmap 7.2's probe in the month's boot (`bench` asks for it;
    /// `--thorough` has it in its first boot). It waits about 10 s for
    /// Btrfs to release the deletion, too long for the default run.
    #[arg(skip)]
    pub discard_probe: bool,
    /// Who hears of each boot as it ends (`Reporter::Quiet`: nobody).
    #[arg(skip)]
    pub reporter: Reporter,
    /// `--serve-ssh`: the last default boot ends by serving the booted
    /// system over sshd on the host's 127.0.0.1:port until stdin closes
    /// (`vm_test::Args` reads the keys' files into it).
    #[arg(skip)]
    pub serve_ssh: Option<SshServing>,
}

/// What `--serve-ssh` serves with: the port on the host's 127.0.0.1, the
/// host key (private, OpenSSH format) and the admin's public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshServing {
    pub port: u16,
    pub host_key: String,
    pub authorized_key: String,
}

impl Options {
    /// The flags' defaults, as `vm-test` without flags would run, except that
    /// the environment (`XTASK_KERNEL`, …) is not read: what `bench` and the
    /// tests start from.
    pub fn defaults() -> Result<Options> {
        use clap::{Args as _, FromArgMatches as _};
        let command = Options::augment_args(clap::Command::new("lab"))
            .mut_args(|arg| arg.env(None::<&'static str>));
        let matches = command
            .try_get_matches_from(["lab"])
            .context("reading the lab's default options")?;
        Options::from_arg_matches(&matches).context("reading the lab's default options")
    }
}

/// What a run ended with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Passed,
    ChecksFailed,
    /// The VM could not run the plan (no kernel start, no agent): exit 2.
    CouldNotRun(String),
}

#[derive(Debug)]
pub struct Outcome {
    pub verdict: Verdict,
    pub results: VmTestResults,
    pub results_path: Utf8PathBuf,
    /// Where the run was also recorded as the deploy gate's proof (a full pass).
    pub proof_path: Option<Utf8PathBuf>,
    pub log_dir: Utf8PathBuf,
    pub logs_kept: bool,
    /// The console log of the first boot that failed, and its last lines.
    pub failing_console: Option<(Utf8PathBuf, Vec<String>)>,
    /// What was booted, for the report.
    pub setup: Vec<(String, String)>,
}

/// A spinner in a terminal, one line per step in a log.
fn progress_bar(show: bool) -> Progress {
    Progress::shown_if(show, "vm-test")
}

/// How long a `--serve-ssh` boot serves at most.
pub const SERVE_WAIT: Duration = Duration::from_secs(1800);

/// Run directories are `.vm-test-run-<pid>-<random>` under target/xtask.
const RUN_DIR_PREFIX: &str = ".vm-test-run-";

/// Removes run directories whose xtask was killed (SIGKILL skips every
/// cleanup; PR_SET_PDEATHSIG took qemu down with it).
fn remove_abandoned_run_dirs() {
    let Ok(entries) = xtask_dir().read_dir_utf8() else {
        return;
    };
    for entry in entries.flatten() {
        let Some(rest) = entry.file_name().strip_prefix(RUN_DIR_PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Utf8Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// A short random id for this run's markers.
fn nonce() -> String {
    let mut bytes = [0u8; 8];
    if let Ok(mut random) = std::fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut random, &mut bytes);
    }
    initramfs::hex(&bytes)
}

/// The clock of a run: each boot's RTC starts at the host's time plus the
/// days the month has jumped so far (old roots must never look newer than
/// the clock, so the offset only grows).
struct Calendar {
    offset_s: i64,
}

impl Calendar {
    fn now(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64)
            + self.offset_s
    }
}

/// Everything one run keeps between boots.
struct Run<'r> {
    session: Session<'r>,
    realisation: &'r Realisation<'r>,
    tally: Tally,
    calendar: Calendar,
    rules: Rules,
    budgets: Budgets,
    /// The last boot that wrote its files into /.
    last_full_boot: u32,
    boot: u32,
}

impl Run<'_> {
    /// A spec for the next boot, with the clock and the model's count.
    fn spec(&self, kind: BootKind, extra_runs: Vec<i64>) -> BootSpec {
        let boot = self.boot + 1;
        let mut spec = BootSpec::new(boot);
        spec.kind = kind;
        spec.rtc_base = Some(self.calendar.now());
        spec.newest_holds = (self.last_full_boot == self.boot && boot > 1).then_some(self.boot);
        if kind != BootKind::Install {
            if let (Some(before), Some(now)) = (&self.tally.last_old_roots, spec.rtc_base) {
                let count = month::predict(self.rules, before, now, &extra_runs).len() as u32;
                spec.old_roots_expected = Some((count, count));
            }
        }
        if !extra_runs.is_empty() {
            // The first run's root holds the last boot's files (the model may
            // delete it by the last run); the newest is empty.
            spec.first_run_holds = spec.newest_holds.take();
        }
        spec.extra_runs = extra_runs;
        spec
    }

    /// Boots `spec`, records it and makes the host's checks; whether it completed.
    fn boot(&mut self, spec: &BootSpec, label: &str) -> Result<bool> {
        let plan = self.realisation.plan_for(spec)?;
        let serving = self.session.options.serve_ssh.as_ref().map(|s| s.port);
        let outcome = self.session.boot(&plan, label, |event, control| {
            if let (super::protocol::Event::Serving {}, Some(port)) = (event, serving) {
                // The served system stays up until the caller closes our stdin.
                eprintln!("vm-test: serving ssh on 127.0.0.1:{port}; close stdin to end");
                let mut rest = Vec::new();
                let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut rest);
                control.answer()?;
            }
            Ok(())
        })?;
        let completion = self.tally.completed(
            &plan,
            &outcome,
            self.session.options,
            self.session.prepared.accel,
        )?;
        let completed = match completion {
            Completion::NeverStarted => false,
            Completion::Ran { finished } => {
                if let Some(record) = self.tally.boots.last() {
                    let reporter = self.session.options.reporter;
                    self.session
                        .progress
                        .suspend(|| reporter.boot(record, &outcome.collected, plan.boots));
                }
                finished
            }
        };
        self.boot = spec.boot;
        self.after_boot(&plan, spec, &outcome.collected);
        if completed && !matches!(spec.kind, BootKind::RotateOnly | BootKind::Rescue) {
            self.last_full_boot = spec.boot;
        }
        Ok(completed)
    }
}

impl Run<'_> {
    /// The default boots: the install, then rotations (the month's among
    /// them), the last with the checklist's quick procedures of §3. False
    /// when one did not complete.
    fn default_boots(&mut self) -> Result<bool> {
        let options = self.session.options;
        let prepared = self.session.prepared;
        let month = month::month(self.rules);
        for boot in 1..=options.boots {
            let is_month = boot == MONTH_BOOT;
            if is_month {
                // The install boot's root stays in use for the whole jump: a long uptime.
                self.calendar.offset_s += month.jump_s;
            }
            let kind = if boot == 1 {
                BootKind::Install
            } else {
                BootKind::Rotate
            };
            let extra_runs = if is_month {
                month.extra_runs.clone()
            } else {
                Vec::new()
            };
            let mut spec = self.spec(kind, extra_runs);
            // The checklist's quick read-only checks of §3 in the last default
            // boot: the system as the server has it after a reboot.
            if boot == options.boots {
                let quick =
                    procedure_runs::of_tier(&prepared.procedures, Tier::Default, &prepared.lab)?;
                let mut schedule = Schedule::new(quick);
                if let Some(parts) = schedule.next_boot(&self.tally.captured) {
                    spec.procedures = parts.started;
                }
                if let Some(serving) = &options.serve_ssh {
                    let found = toolbox::setup::require(&[toolbox::setup::SSHD])?;
                    spec.serve_ssh = Some(crate::vm::plan::ServeSsh {
                        sshd: found.path(toolbox::setup::SSHD)?.to_string(),
                        host_key: serving.host_key.clone(),
                        authorized_key: serving.authorized_key.clone(),
                        login: prepared.lab.login.clone(),
                        wait_s: SERVE_WAIT.as_secs(),
                    });
                }
            }
            // In the month's boot: after its mounts only light work runs (swap,
            // checks), so the writes measure the release, not the install's
            // own flushes.
            if options.discard_probe && boot == MONTH_BOOT.min(options.boots) {
                spec.discard_probe = Some(DiscardBudget {
                    p99_ms: self.budgets.discard_p99_ms,
                    max_ms: self.budgets.discard_max_ms,
                });
            }
            // The install's root carries data into the month, whose rollback
            // deletes it; the month measures whether its space reaches the
            // image once the host's fstrim.service ran.
            if options.boots >= MONTH_BOOT && (boot == 1 || is_month) {
                spec.rollback_trim = Some(RollbackTrim {
                    triggers: prepared.fstrim.triggers(),
                });
            }
            let completed = self.boot(&spec, &format!("boot{boot}"))?;
            if is_month {
                // The last run set the clock on; later boots start after it.
                self.calendar.offset_s += month.stepped_s();
            }
            if !completed {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// Runs the whole lab vm-test.
pub fn run(context: &toolbox::context::Context, options: &Options) -> Result<Outcome> {
    let started = Instant::now();
    qemu::handle_interrupts();
    anyhow::ensure!(options.boots >= 1, "--boots must be at least 1");
    anyhow::ensure!(
        options.power_cuts == 0 || options.boots >= 2,
        "--power-cuts needs a normal rotation first: --boots 2 or more"
    );
    anyhow::ensure!(
        !options.thorough || options.boots >= MONTH_BOOT,
        "--thorough needs the month first: --boots {MONTH_BOOT} or more"
    );
    let prepared = prepare(context, options)?;
    let disk_key = prepared
        .layout
        .disks
        .first()
        .map(|d| d.key.clone())
        .unwrap_or_default();
    let disk_bytes = prepared.disk_bytes.get(&disk_key).copied().unwrap_or(0);
    let context = Model::new(
        &prepared.layout,
        &prepared.disk_bytes,
        hosts::firmware(&prepared.machine),
    );
    let rules = Rules {
        retention_days: prepared.rollback_settings.retention_days,
        keep_at_least: prepared.rollback_settings.keep_at_least,
    };
    let calendar_days = month::calendar(rules);
    let (thorough_boots, drill_boots) = extra_boots(&prepared, options, calendar_days.len())?;
    let total_boots = options.boots + 2 * options.power_cuts + thorough_boots + drill_boots;
    let realisation = Realisation::new(
        &prepared.layout,
        &context,
        RunInputs {
            tools: prepared.tools.clone(),
            rollback: prepared.image.rollback.clone(),
            rollback_settings: prepared.rollback_settings.clone(),
            boots: total_boots,
            nonce: nonce(),
            tamper: options.tamper.clone(),
        },
    )?;
    let kind = result_kind(options);
    let log_dir = xtask_dir().join(format!("{kind}-logs"));
    if log_dir.exists() {
        std::fs::remove_dir_all(&log_dir).with_context(|| format!("clearing {log_dir}"))?;
    }
    std::fs::create_dir_all(&log_dir).with_context(|| format!("creating {log_dir}"))?;
    // Removed when dropped: on success, failure, error and panic.
    remove_abandoned_run_dirs();
    let run_dir = tempfile::Builder::new()
        .prefix(&format!("{RUN_DIR_PREFIX}{}-", std::process::id()))
        .tempdir_in(xtask_dir())
        .context("creating the run directory")?;
    let run_dir_path = Utf8PathBuf::from_path_buf(run_dir.path().to_owned())
        .map_err(|p| anyhow::anyhow!("{p:?} is not UTF-8"))?;
    let disk_path = run_dir_path.join("disk.qcow2");
    disk::create(&prepared.qemu_img, &disk_path, disk_bytes)?;
    let second_disk = if options.thorough || options.drills {
        let path = run_dir_path.join("second-disk.qcow2");
        disk::create(&prepared.qemu_img, &path, procedure_runs::BACKUP_DISK_BYTES)?;
        Some(path)
    } else {
        None
    };

    let setup = describe_setup(&prepared, options, disk_bytes);
    if options.progress {
        // Before the first boot, so that a log shows what is being booted.
        for (what, value) in &setup {
            eprintln!("{what:>12}: {value}");
        }
    }
    let budgets = Budgets::for_accel(prepared.accel);
    let mut run = Run {
        session: Session {
            prepared: &prepared,
            options,
            run_dir: &run_dir_path,
            log_dir: &log_dir,
            disk: disk_path,
            second_disk,
            progress: progress_bar(options.progress),
            measurements: BTreeMap::new(),
        },
        realisation: &realisation,
        tally: Tally::default(),
        calendar: Calendar { offset_s: 0 },
        rules,
        budgets,
        last_full_boot: 0,
        boot: 0,
    };
    let mut all_completed = run.default_boots()?;
    if all_completed && run.tally.could_not_run.is_none() && options.power_cuts > 0 {
        all_completed = power_cuts(&mut run)?;
    }
    if all_completed && run.tally.could_not_run.is_none() && options.thorough {
        all_completed = thorough(&mut run, &calendar_days)?;
    }
    if all_completed && run.tally.could_not_run.is_none() && options.drills {
        all_completed = drills(&mut run)?;
    }
    let _ = all_completed;
    let Run {
        session, mut tally, ..
    } = run;
    tally.settle_procedures(&prepared.procedures, options.thorough, options.drills);
    session.progress.finish_and_clear();
    let failing_console = tally.failing_console.take();
    let (verdict, results) = settle(tally, &prepared, options, kind, disk_bytes, started);
    let passed = verdict == Verdict::Passed;
    // The proof the deploy gate reads is only ever replaced by another full pass.
    let host_disks: BTreeMap<String, u64> = prepared
        .layout
        .disks
        .iter()
        .filter_map(|d| Some((d.key.clone(), prepared.machine.disk_bytes(&d.key).ok()??)))
        .collect();
    let proof = kind == Kind::VmTest && passed && results.shortfall(&host_disks).is_none();
    let recorded = crate::results::record(kind, &results, proof)?;
    // A thorough run is also kept as the procedures' own results: a later
    // default run replaces vm-test.json, not these.
    if kind == Kind::VmTest && options.thorough {
        crate::results::record(crate::results::THOROUGH_KIND, &results, proof)?;
    }
    let logs_kept = options.keep_logs || !passed;
    if !logs_kept {
        let _ = std::fs::remove_dir_all(&log_dir);
    }
    drop(session);
    drop(run_dir);
    Ok(Outcome {
        verdict,
        results,
        results_path: recorded.run,
        proof_path: recorded.pass,
        log_dir,
        logs_kept,
        failing_console,
        setup,
    })
}

/// The run's verdict and its results, from what the boots recorded.
fn settle(
    mut tally: Tally,
    prepared: &Prepared,
    options: &Options,
    kind: Kind,
    disk_bytes: u64,
    started: Instant,
) -> (Verdict, VmTestResults) {
    let mut figures = std::mem::take(&mut tally.figures);
    if tally.peak > 0 {
        figures.insert("vm.peak_rss_bytes".to_owned(), tally.peak as f64);
    }
    figures.insert("vm.memory_mib".to_owned(), f64::from(options.memory_mib));
    figures.insert("initramfs.bytes".to_owned(), prepared.image.bytes as f64);

    let verdict = if let Some(reason) = tally.could_not_run.take() {
        Verdict::CouldNotRun(reason)
    } else if tally.checks.iter().any(|c| !c.passed) || tally.boots.iter().any(|b| !b.passed) {
        Verdict::ChecksFailed
    } else {
        Verdict::Passed
    };
    let passed = verdict == Verdict::Passed;
    let results = VmTestResults {
        header: Header::now(kind, &prepared.layout.host, passed),
        backend: "lab".to_owned(),
        accelerator: prepared.accel.to_string(),
        kernel: prepared.kernel.version.clone(),
        disk_bytes,
        requested: crate::results::VmTestRequest {
            boots: options.boots,
            disk_size: options.disk_size.clone(),
            power_cuts: options.power_cuts,
            boot_timeout_s: options.boot_timeout.map(|t| t.as_secs()),
            thorough: options.thorough,
            drills: options.drills,
        },
        boots: tally.boots,
        checks: tally.checks,
        figures,
        wall_ms: started.elapsed().as_millis() as u64,
        procedures: tally.procedures,
    };
    (verdict, results)
}

/// The boots `--thorough` and `--drills` add: their procedures' parts and
/// the calendar's short boots (`calendar_days`).
fn extra_boots(prepared: &Prepared, options: &Options, calendar_days: usize) -> Result<(u32, u32)> {
    let thorough_boots = if options.thorough {
        let counted = procedure_runs::Lab {
            lost: Some(LostFile {
                path: "counted".to_owned(),
                sha256: String::new(),
            }),
            ..prepared.lab.clone()
        };
        procedure_runs::Schedule::new(procedure_runs::of_tier(
            &prepared.procedures,
            Tier::Thorough,
            &counted,
        )?)
        .boots()
            + calendar_days as u32
    } else {
        0
    };
    let drill_boots = if options.drills {
        procedure_runs::Schedule::new(procedure_runs::of_tier(
            &prepared.procedures,
            Tier::Drill,
            &prepared.lab,
        )?)
        .boots()
    } else {
        0
    };
    Ok((thorough_boots, drill_boots))
}

/// What the run's results are recorded as. Only a run of the layout as it
/// is may stand as the vm-test result. What the host does to a served system
/// is not vm-test's to record; several may serve at once (verify --all's
/// test), each on its port.
fn result_kind(options: &Options) -> Kind {
    if !options.tamper.is_empty() || options.rollback_script.is_some() {
        Kind::VmTestTampered
    } else if let Some(served) = &options.serve_ssh {
        Kind::VmTestSsh(served.port)
    } else if options.compression.is_some() {
        Kind::VmTestWhatIf
    } else {
        Kind::VmTest
    }
}
