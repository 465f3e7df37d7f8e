//! The lab backend: our initramfs and the host's kernel under qemu, on a
//! sparse disk of the real size. Boot 1 installs the layout, boots 2..N
//! rotate the root; the host measures the disk image between steps and
//! turns the guest's events into target/xtask/vm-test.json.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use camino::{Utf8Path, Utf8PathBuf};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::accel::{self, Accel, Choice};
use super::collect::{collect, Collected};
use super::disk::{self, Allocation};
use super::initramfs::{self, Image};
use super::kernel::{self, Kernel};
use super::modules::{self, Index};
use super::plan::{BootKind, Plan};
use super::protocol::Event;
use super::qemu::{self, BootRun, Ending, VmConfig};
use super::realise::{Realisation, Tamper};
use crate::check;
use crate::findings::Severity;
use crate::hosts;
use crate::layout::size::parse_disk_size;
use crate::nix::Nix;
use crate::project::{project_root, xtask_dir};
use crate::results::{BootRecord, CheckRecord, Header, VmTestResults};
use crate::rules::{self, Context};
use crate::setup;

/// The one rollback script (nix/modules/btrfs-rollback), embedded byte for byte.
pub fn rollback_script() -> Utf8PathBuf {
    project_root()
        .join("nix")
        .join("modules")
        .join("btrfs-rollback")
        .join("rollback.sh")
}

#[derive(Debug, Clone)]
pub struct Options {
    pub host: String,
    pub boots: u32,
    pub disk_size: Option<String>,
    pub kernel: Option<Utf8PathBuf>,
    pub modules: Option<Utf8PathBuf>,
    pub accel: Option<Choice>,
    pub memory_mib: u32,
    pub cpus: u32,
    /// Overrides every boot's timeout.
    pub boot_timeout: Option<Duration>,
    pub keep_logs: bool,
    pub tamper: Vec<Tamper>,
    /// Show a spinner with step names on stderr.
    pub progress: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            host: hosts::DEFAULT_HOST.to_owned(),
            boots: 3,
            disk_size: None,
            kernel: None,
            modules: None,
            accel: None,
            memory_mib: 1024,
            cpus: 2,
            boot_timeout: None,
            keep_logs: false,
            tamper: Vec::new(),
            progress: true,
        }
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
    pub log_dir: Utf8PathBuf,
    pub logs_kept: bool,
    /// The console log of the first boot that failed, and its last lines.
    pub failing_console: Option<(Utf8PathBuf, Vec<String>)>,
    /// What was booted, for the report.
    pub setup: Vec<(String, String)>,
}

/// Everything a boot needs that does not change between boots.
pub struct Prepared {
    pub layout: crate::layout::Layout,
    pub machine: hosts::Machine,
    pub disk_bytes: BTreeMap<String, u64>,
    pub kernel: Kernel,
    pub image: Image,
    pub accel: Accel,
    pub accel_reason: String,
    pub qemu: Utf8PathBuf,
    pub qemu_img: Utf8PathBuf,
    pub tools: super::plan::GuestTools,
}

/// Evaluates the host, finds the kernel and tools, builds (or reuses) the image.
pub fn prepare(options: &Options) -> Result<Prepared> {
    let found = setup::ensure(&[setup::QEMU, setup::QEMU_IMG])?;
    let qemu = found.path(setup::QEMU)?.clone();
    let qemu_img = found.path(setup::QEMU_IMG)?.clone();
    let nix = Nix::locate()?;
    let host = hosts::find(&options.host)?;
    let loaded = check::load(&nix, &host, &host.layout_file)?;
    let errors: Vec<String> = loaded
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .map(|f| format!("{} {}: {}", f.code, f.path, f.message))
        .collect();
    let Some(layout) = loaded.layout else {
        bail!(
            "the layout of {} does not build: {}",
            host.name,
            errors.join("; ")
        );
    };
    let mut disk_bytes = BTreeMap::new();
    for disk in &layout.disks {
        let bytes = match &options.disk_size {
            Some(given) => {
                parse_disk_size(given).with_context(|| format!("--disk-size {given:?}"))?
            }
            None => loaded.machine.disk_bytes(&disk.key)?.with_context(|| {
                format!(
                    "disk {:?} has no size: pass --disk-size or set diskSize in machine.nix",
                    disk.key
                )
            })?,
        };
        disk_bytes.insert(disk.key.clone(), bytes);
    }
    {
        let context = Context::new(&layout, &disk_bytes, check::firmware(&loaded.machine));
        let mut errors = errors;
        errors.extend(
            rules::run(&context)
                .iter()
                .filter(|f| f.severity == Severity::Error)
                .map(|f| format!("{} {}: {}", f.code, f.path, f.message)),
        );
        if !errors.is_empty() {
            bail!(
                "`cargo xtask check` finds {} error(s) in {}; a VM of a layout that check rejects proves nothing:\n  {}",
                errors.len(),
                host.name,
                errors.join("\n  ")
            );
        }
    }
    let kernel = kernel::discover(options.kernel.as_deref(), options.modules.as_deref())?;
    let index = Index::load(&kernel.modules)?;
    let resolved = index.resolve(modules::WANTED)?;
    let tools = initramfs::host_tools()?;
    let agent = Utf8PathBuf::try_from(std::env::current_exe()?)
        .context("the xtask binary's path is not UTF-8")?;
    let script = rollback_script();
    let image = initramfs::build(&initramfs::Inputs {
        tools: tools.clone(),
        agent,
        modules: resolved.modules,
        rollback_script: script.is_file().then_some(script),
        cache_dir: xtask_dir().join("initramfs"),
    })?;
    let (accel, accel_reason) = accel::choose(&qemu, options.accel)?;
    Ok(Prepared {
        layout,
        machine: loaded.machine,
        disk_bytes,
        kernel,
        image,
        accel,
        accel_reason,
        qemu,
        qemu_img,
        tools,
    })
}

/// A boot's default time limit: generous, because CI machines are slow.
fn boot_timeout(options: &Options, accel: Accel, kind: BootKind) -> Duration {
    if let Some(timeout) = options.boot_timeout {
        return timeout;
    }
    let seconds = match (accel, kind) {
        (Accel::Tcg, BootKind::Install) => 300,
        (Accel::Tcg, BootKind::Rotate) => 150,
        (Accel::Kvm, BootKind::Install) => 120,
        (Accel::Kvm, BootKind::Rotate) => 60,
    };
    Duration::from_secs(seconds)
}

/// One boot's result, with where its logs are.
pub struct BootOutcome {
    pub run: BootRun,
    pub collected: Collected,
    pub console_log: Utf8PathBuf,
}

/// The VM runs of one `vm-test`: the disk and plans live in a private
/// directory that is removed at the end, logs in the log directory.
pub struct Session<'a> {
    pub prepared: &'a Prepared,
    pub realisation: &'a Realisation<'a>,
    pub options: &'a Options,
    pub run_dir: &'a Utf8Path,
    pub log_dir: &'a Utf8Path,
    pub disk: Utf8PathBuf,
    pub progress: ProgressBar,
    /// Host measurements of the image, by point (`trim.before`).
    pub measurements: BTreeMap<String, Allocation>,
}

impl Session<'_> {
    /// Boots with `plan`; `on_event` sees every event after the session's own handling.
    pub fn boot(
        &mut self,
        plan: &Plan,
        label: &str,
        mut on_event: impl FnMut(&Event, &mut qemu::Control) -> Result<()>,
    ) -> Result<BootOutcome> {
        let plan_path = self.run_dir.join(format!("plan-{label}.json"));
        std::fs::write(&plan_path, plan.to_json())
            .with_context(|| format!("writing {plan_path}"))?;
        let _ = std::fs::copy(&plan_path, self.log_dir.join(format!("{label}.plan.json")));
        let console_log = self.log_dir.join(format!("{label}.console.log"));
        let config = VmConfig {
            qemu: self.prepared.qemu.clone(),
            accel: self.prepared.accel,
            memory_mib: self.options.memory_mib,
            cpus: self.options.cpus,
            kernel: self.prepared.kernel.image.clone(),
            initrd: self.prepared.image.path.clone(),
            disk: self.disk.clone(),
            plan: plan_path,
            console_log: console_log.clone(),
            protocol_log: self.log_dir.join(format!("{label}.protocol.log")),
            timeout: boot_timeout(self.options, self.prepared.accel, plan.kind),
        };
        let title = format!("boot {}/{} {}", plan.boot, plan.boots, plan.kind.as_str());
        self.progress.set_message(format!("{title}: starting"));
        let qemu_img = self.prepared.qemu_img.clone();
        let disk = self.disk.clone();
        let progress = self.progress.clone();
        let measurements = &mut self.measurements;
        let run = qemu::boot(&config, |event, control| {
            match event {
                Event::StepStarted { name } => progress.set_message(format!("{title}: {name}")),
                Event::Measure { point } => {
                    progress.set_message(format!("{title}: measuring the image ({point})"));
                    let allocation = disk::allocation(&qemu_img, &disk)?;
                    measurements.insert(point.clone(), allocation);
                    control.answer()?;
                }
                _ => {}
            }
            on_event(event, control)
        })?;
        let collected = collect(
            plan.boot,
            plan.kind,
            run.wall.as_millis() as u64,
            &run.events,
        );
        Ok(BootOutcome {
            run,
            collected,
            console_log,
        })
    }
}

fn progress_bar(show: bool) -> ProgressBar {
    let progress = if show {
        ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr())
    } else {
        ProgressBar::hidden()
    };
    progress.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    progress.enable_steady_tick(Duration::from_millis(120));
    progress
}

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

fn host_check(
    boot: u32,
    name: &str,
    passed: bool,
    measured: String,
    expected: String,
) -> CheckRecord {
    CheckRecord {
        boot,
        name: name.to_owned(),
        passed,
        measured,
        expected,
    }
}

/// Runs the whole lab vm-test.
pub fn run(options: &Options) -> Result<Outcome> {
    let started = Instant::now();
    qemu::handle_interrupts();
    anyhow::ensure!(options.boots >= 1, "--boots must be at least 1");
    let prepared = prepare(options)?;
    let disk_key = prepared
        .layout
        .disks
        .first()
        .map(|d| d.key.clone())
        .unwrap_or_default();
    let disk_bytes = prepared.disk_bytes.get(&disk_key).copied().unwrap_or(0);
    let context = Context::new(
        &prepared.layout,
        &prepared.disk_bytes,
        check::firmware(&prepared.machine),
    );
    let realisation = Realisation::new(
        &prepared.layout,
        &context,
        prepared.tools.clone(),
        prepared.image.rollback.clone(),
        options.boots,
        nonce(),
        options.tamper.clone(),
    )?;
    let tampered = !options.tamper.is_empty();
    let kind = if tampered {
        "vm-test-tampered"
    } else {
        "vm-test"
    };
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

    let setup = vec![
        ("host".to_owned(), prepared.layout.host.clone()),
        ("kernel".to_owned(), prepared.kernel.to_string()),
        (
            "accelerator".to_owned(),
            format!("{} ({})", prepared.accel, prepared.accel_reason),
        ),
        (
            "initramfs".to_owned(),
            format!(
                "{} ({} files, {:.1} MiB{})",
                crate::project::display_path(&prepared.image.path),
                prepared.image.files,
                prepared.image.bytes as f64 / 1048576.0,
                if prepared.image.reused {
                    ", cached"
                } else {
                    ", built"
                }
            ),
        ),
        (
            "disk".to_owned(),
            format!("{disk_bytes} bytes, sparse qcow2, virtio-blk discard=unmap"),
        ),
        (
            "vm".to_owned(),
            format!(
                "{} MiB, {} vCPUs, no network",
                options.memory_mib, options.cpus
            ),
        ),
    ];

    let mut session = Session {
        prepared: &prepared,
        realisation: &realisation,
        options,
        run_dir: &run_dir_path,
        log_dir: &log_dir,
        disk: disk_path,
        progress: progress_bar(options.progress),
        measurements: BTreeMap::new(),
    };
    let mut boots: Vec<BootRecord> = Vec::new();
    let mut checks: Vec<CheckRecord> = Vec::new();
    let mut figures: BTreeMap<String, f64> = BTreeMap::new();
    let mut data: Vec<BTreeMap<String, serde_json::Value>> = Vec::new();
    let mut verdict = Verdict::Passed;
    let mut failing_console = None;
    let mut peak = 0u64;
    for boot in 1..=options.boots {
        let plan = realisation.plan(boot)?;
        let outcome = session.boot(&plan, &format!("boot{boot}"), |_, _| Ok(()))?;
        let BootOutcome {
            run,
            collected,
            console_log,
        } = outcome;
        if let Some(bytes) = run.peak_rss_bytes {
            peak = peak.max(bytes);
            figures.insert(format!("vm.peak_rss_bytes.boot{boot}"), bytes as f64);
        }
        figures.insert(format!("boot_ms.boot{boot}"), run.wall.as_millis() as f64);
        figures.extend(collected.figures.clone());
        let mut record = collected.record.clone();
        checks.extend(collected.checks.clone());
        data.push(collected.data.clone());
        let summary = match (&run.ending, collected.finished) {
            (Ending::Exited { .. }, true) => None,
            (Ending::Interrupted, _) => {
                bail!("interrupted; the VM was stopped and its files removed")
            }
            (Ending::TimedOut, _) => Some(format!(
                "did not finish within {} s",
                boot_timeout(options, prepared.accel, plan.kind).as_secs()
            )),
            (Ending::Killed { reason }, _) => Some(format!("killed: {reason}")),
            (Ending::Exited { code }, false) => Some(format!(
                "qemu exited ({}) before the agent finished{}",
                code.map_or("signal".to_owned(), |c| format!("status {c}")),
                collected
                    .fatal
                    .as_ref()
                    .map(|f| format!(": {f}"))
                    .unwrap_or_default()
            )),
        };
        if !collected.started {
            session.progress.finish_and_clear();
            let reason = format!(
                "boot {boot}: the guest agent never started ({}){}{}",
                summary.unwrap_or_else(|| "no hello".to_owned()),
                collected
                    .fatal
                    .as_ref()
                    .map(|f| format!("; agent: {f}"))
                    .unwrap_or_default(),
                if run.qemu_stderr.trim().is_empty() {
                    String::new()
                } else {
                    format!("; qemu: {}", run.qemu_stderr.trim())
                }
            );
            verdict = Verdict::CouldNotRun(reason);
            failing_console = Some((console_log.clone(), qemu::tail(&console_log, 40)));
            boots.push(record);
            break;
        }
        checks.push(host_check(
            boot,
            "boot-completed",
            summary.is_none(),
            summary
                .clone()
                .unwrap_or_else(|| format!("powered off after {:.1} s", run.wall.as_secs_f64())),
            "the agent runs the plan and powers off".to_owned(),
        ));
        if summary.is_some() {
            record.passed = false;
        }
        if !record.passed && failing_console.is_none() {
            failing_console = Some((console_log.clone(), qemu::tail(&console_log, 40)));
        }
        session
            .progress
            .suspend(|| print_boot(&record, &collected, plan.boots));
        boots.push(record);
        if summary.is_some() {
            break;
        }
    }
    session.progress.finish_and_clear();
    if peak > 0 {
        figures.insert("vm.peak_rss_bytes".to_owned(), peak as f64);
    }
    figures.insert("vm.memory_mib".to_owned(), f64::from(options.memory_mib));
    figures.insert("initramfs.bytes".to_owned(), prepared.image.bytes as f64);

    // Host-side checks: the image shrinks after delete + trim; no old root is lost.
    if let (Some(before), Some(after)) = (
        session.measurements.get("trim.before"),
        session.measurements.get("trim.after"),
    ) {
        let freed = before.data_bytes.saturating_sub(after.data_bytes);
        let file_freed = before.file_bytes.saturating_sub(after.file_bytes);
        figures.insert(
            "trim.image_data_before_bytes".into(),
            before.data_bytes as f64,
        );
        figures.insert(
            "trim.image_data_after_bytes".into(),
            after.data_bytes as f64,
        );
        figures.insert("trim.freed_bytes".into(), freed as f64);
        figures.insert("trim.host_file_freed_bytes".into(), file_freed as f64);
        let minimum = realisation.host_expectations().trim_freed_min_bytes;
        checks.push(host_check(
            1,
            "trim:host-freed",
            freed >= minimum,
            format!(
                "qcow2 data {} → {} bytes: {freed} freed ({file_freed} bytes of the host file)",
                before.data_bytes, after.data_bytes
            ),
            format!("at least {minimum} bytes given back to the host after delete + fstrim"),
        ));
    }
    for boot in 3..=(data.len() as u32) {
        let names = |b: u32| -> Vec<String> {
            data[(b - 1) as usize]
                .get("old_roots")
                .and_then(|v| serde_json::from_value(v.clone()).ok())
                .unwrap_or_default()
        };
        let (before, now) = (names(boot - 1), names(boot));
        let lost: Vec<&String> = before.iter().filter(|n| !now.contains(n)).collect();
        let added = now.len() as i64 - before.len() as i64;
        checks.push(host_check(
            boot,
            "old-roots-kept",
            lost.is_empty() && added == 1,
            format!(
                "{} before, {} now{}",
                before.len(),
                now.len(),
                if lost.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; lost {}",
                        lost.iter()
                            .map(|s| s.as_str())
                            .collect::<Vec<_>>()
                            .join(" ")
                    )
                }
            ),
            "every old root of the last boot kept, one more added".to_owned(),
        ));
    }
    if verdict == Verdict::Passed && checks.iter().any(|c| !c.passed) {
        verdict = Verdict::ChecksFailed;
    }
    if verdict == Verdict::Passed && boots.iter().any(|b| !b.passed) {
        verdict = Verdict::ChecksFailed;
    }
    let passed = verdict == Verdict::Passed;
    let results = VmTestResults {
        header: Header::now(kind, &prepared.layout.host, passed),
        backend: "lab".to_owned(),
        accelerator: prepared.accel.to_string(),
        kernel: prepared.kernel.version.clone(),
        disk_bytes,
        boots,
        checks,
        figures,
        wall_ms: started.elapsed().as_millis() as u64,
    };
    let results_path = crate::results::write(kind, &results)?;
    let logs_kept = options.keep_logs || !passed;
    if !logs_kept {
        let _ = std::fs::remove_dir_all(&log_dir);
    }
    drop(session);
    drop(run_dir);
    Ok(Outcome {
        verdict,
        results,
        results_path,
        log_dir,
        logs_kept,
        failing_console,
        setup,
    })
}

/// One boot's times: the boot, then every step.
fn print_boot(record: &BootRecord, collected: &Collected, boots: u32) {
    let passed = collected.checks.iter().filter(|c| c.passed).count();
    let failed = collected.checks.len() - passed;
    eprintln!(
        "boot {}/{boots} {}: {:.1} s wall, {passed} checks passed, {failed} failed",
        record.number,
        record.kind,
        record.wall_ms as f64 / 1000.0
    );
    let cells: Vec<String> = record
        .steps
        .iter()
        .map(|s| format!("{:>6} ms  {}", s.ms, s.name))
        .collect();
    for row in cells.chunks(3) {
        let line: Vec<String> = row.iter().map(|c| format!("{c:<44}")).collect();
        eprintln!("  {}", line.join("").trim_end());
    }
}
