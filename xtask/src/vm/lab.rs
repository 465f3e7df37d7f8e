//! The lab backend: our initramfs and the host's kernel under qemu, on a
//! sparse disk of the real size. Boot 1 installs the layout, boots 2..N
//! rotate the root; the host measures the disk image between steps and
//! turns the guest's events into target/xtask/vm-test.json.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use camino::{Utf8Path, Utf8PathBuf};

use super::accel::{self, Accel, Choice};
use super::budgets::Budgets;
use super::collect::{collect, Collected};
use super::disk::{self, Allocation};
use super::initramfs::{self, Image};
use super::kernel::{self, Kernel};
use super::modules::{self, Index};
use super::month::{self, MONTH_BOOT};
use super::plan::AdminLogin;
use super::plan::{Action, BootKind, Plan};
use super::procedures::{self, LostFile, Schedule, Tier};
use super::protocol::Event;
use super::qemu::{self, BootRun, Ending, VmConfig};
use super::realise::{
    BootSpec, DiscardBudget, History, Realisation, RollbackSettings, RunInputs, Tamper,
};
use super::retention::{Rules, DAY};
use crate::checklist::facts::HostFacts;
use crate::checklist::Numbered;
use crate::findings::Severity;
use crate::hosts;
use crate::hosts::Model;
use crate::layout::size::parse_disk_size;
use crate::nix::Nix;
use crate::progress::Progress;
use crate::project::{project_root, xtask_dir};
use crate::results::{
    BootRecord, CheckRecord, CommandRecord, Header, ProcedureRecord, ProcedureStatus, VmTestResults,
};
use crate::rules;
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
    /// Power cuts during the rollback after the normal boots (`--power-cuts`).
    pub power_cuts: u32,
    /// A what-if layout: every Btrfs mount with this compression (`none`: without).
    pub compression: Option<String>,
    /// Show a spinner with step names on stderr.
    pub progress: bool,
    /// After the default boots: the checklist's procedures that reboot or
    /// reinstall (§3.9, §4.3-4.5) and a calendar of short boots over more
    /// than three retention periods.
    pub thorough: bool,
    /// A rollback script other than nix/modules/btrfs-rollback/rollback.sh
    /// (tests use tampered copies); the results go to vm-test-tampered.json.
    pub rollback_script: Option<Utf8PathBuf>,
    /// Roadmap 7.2's probe in the month's boot (`bench` asks for it;
    /// `--thorough` has it in its first boot). It waits about 10 s for
    /// Btrfs to release the deletion, too long for the default run.
    pub discard_probe: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            host: hosts::DEFAULT_HOST.to_owned(),
            boots: 2,
            disk_size: None,
            kernel: None,
            modules: None,
            accel: None,
            memory_mib: 1024,
            cpus: 2,
            boot_timeout: None,
            keep_logs: false,
            tamper: Vec::new(),
            power_cuts: 0,
            compression: None,
            progress: true,
            thorough: false,
            rollback_script: None,
            discard_probe: false,
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
    /// Where the run was also recorded as the deploy gate's proof (a full pass).
    pub proof_path: Option<Utf8PathBuf>,
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
    pub rollback_settings: RollbackSettings,
    /// The checklist's §3 and §4, from its one source, for this host.
    pub procedures: Vec<Numbered>,
    /// What the procedures need to know of the lab (no lost file yet).
    pub lab: procedures::Lab,
}

/// Evaluates the host, finds the kernel and tools, builds (or reuses) the image.
pub fn prepare(context: &crate::context::Context, options: &Options) -> Result<Prepared> {
    // Every tool the run needs, installed in one transaction when missing;
    // the code below only looks them up.
    let found = setup::ensure(context, &initramfs::tools_for_vm_test())?;
    let qemu = found.path(setup::QEMU)?.clone();
    let qemu_img = found.path(setup::QEMU_IMG)?.clone();
    let nix = Nix::locate(context)?;
    let host = hosts::find(&options.host)?;
    let loaded = hosts::load(&nix, &host, &host.layout_file)?;
    // Before the layout's errors: settings that would differ from the
    // server's stop the run even when the layout is fine.
    let rollback_settings = rollback_settings(&host, &loaded)?;
    let errors: Vec<String> = loaded
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .map(|f| format!("{} {}: {}", f.code, f.path, f.message))
        .collect();
    let Some(mut layout) = loaded.layout else {
        bail!(
            "the layout of {} does not build: {}",
            host.name,
            errors.join("; ")
        );
    };
    if let Some(setting) = &options.compression {
        layout = with_compression(&layout, setting);
    }
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
        let context = Model::new(&layout, &disk_bytes, hosts::firmware(&loaded.machine));
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
    let kernel = match kernel::discover(options.kernel.as_deref(), options.modules.as_deref()) {
        Ok(kernel) => kernel,
        // None anywhere: install Debian's cloud kernel when setup may install.
        Err(error) if options.kernel.is_none() && !setup::kernel_installed() => {
            setup::ensure_kernel(context).context(error)?;
            kernel::discover(None, None)?
        }
        Err(error) => return Err(error),
    };
    let index = Index::load(&kernel.modules)?;
    let resolved = index.resolve(modules::WANTED)?;
    let tools = initramfs::host_tools()?;
    let agent = Utf8PathBuf::try_from(std::env::current_exe()?)
        .context("the xtask binary's path is not UTF-8")?;
    let script = match &options.rollback_script {
        Some(given) => {
            anyhow::ensure!(
                given.is_file(),
                "--rollback-script {given}: no such file; give the path of a copy of nix/modules/btrfs-rollback/rollback.sh"
            );
            given.clone()
        }
        None => rollback_script(),
    };
    let image = initramfs::build(&initramfs::Inputs {
        tools: tools.clone(),
        agent,
        modules: resolved.modules,
        rollback_script: script.is_file().then_some(script),
        admin_programs: initramfs::admin_programs()?,
        cache_dir: xtask_dir().join("initramfs"),
    })?;
    let (accel, accel_reason) = accel::choose(&qemu, &kernel.image, options.accel)?;
    let (mut procedures, lab) = checklist_procedures(&nix, &host, &layout, &loaded.machine)?;
    tamper_procedures(&mut procedures, &options.tamper)?;
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
        rollback_settings,
        procedures,
        lab,
    })
}

/// `--tamper procedure-…`: a wrong copy of a checklist procedure, to prove
/// that vm-test fails on it, naming the step (tests only).
fn tamper_procedures(all: &mut [Numbered], tamper: &[Tamper]) -> Result<()> {
    for t in tamper {
        let (id, drop_sudo) = match t {
            Tamper::ProcedureExpect(id) => (id, false),
            Tamper::ProcedureDropSudo(id) => (id, true),
            _ => continue,
        };
        let Some(command) = all
            .iter_mut()
            .find(|n| n.procedure.id == *id)
            .and_then(|n| n.procedure.commands.first_mut())
        else {
            bail!("--tamper {t}: the checklist has no procedure {id} with a command");
        };
        if drop_sudo {
            command.line = command
                .line
                .strip_prefix("sudo ")
                .with_context(|| format!("--tamper {t}: `{}` has no sudo", command.line))?
                .to_owned();
        } else {
            command
                .expect
                .push(crate::checklist::procedures::Expect::Line {
                    pattern: "a line no command prints (vm-test --tamper)".to_owned(),
                });
        }
    }
    Ok(())
}

/// The checklist's server procedures for the host as it is booted (the
/// same `Subject` and facts the checklist prints them from), and the lab's
/// side of them: the admin's login, the disk's name in the VM.
fn checklist_procedures(
    nix: &Nix,
    host: &hosts::Host,
    layout: &crate::layout::Layout,
    machine: &hosts::Machine,
) -> Result<(Vec<Numbered>, procedures::Lab)> {
    let facts = HostFacts::load(nix, &crate::project::project_root(), &host.dir)?;
    let subject =
        crate::hosts::Subject::new(&host.name, Vec::new(), layout.clone(), machine.clone())?;
    let all = crate::checklist::server_procedures(&subject, &facts);
    let names = crate::checklist::procedures::names(&subject.tables());
    let disk = layout
        .disks
        .first()
        .map(|d| (d.device.clone(), super::realise::GUEST_DISK.to_owned()))
        .filter(|(server, vm)| server != vm);
    // nixos/modules/misc/ids.nix: `users` (a normal user's group) is 100, `wheel` 1.
    let mut groups = vec![100];
    if facts.admin_groups.iter().any(|g| g == "wheel") {
        groups.push(super::guest::sudo::WHEEL_GID);
    }
    let login = AdminLogin {
        user: facts.admin_user.clone(),
        uid: facts.admin_uid.unwrap_or(1000),
        gid: 100,
        groups,
        home: facts.admin_home.clone(),
    };
    Ok((
        all,
        procedures::Lab {
            names,
            disk,
            login,
            lost: None,
        },
    ))
}

/// The host's `boot.btrfsRollback`, from rollback.nix as `hosts::load`
/// evaluated it, or the module's defaults when the host has no rollback.nix.
/// A rollback.nix that does not evaluate, or that check rejects (NIX002,
/// NIX004, HOST004), stops vm-test: booting with the defaults instead would
/// prove something about a server that is not ours.
fn rollback_settings(host: &hosts::Host, loaded: &hosts::Loaded) -> Result<RollbackSettings> {
    let Some(file) = &host.rollback_file else {
        return Ok(RollbackSettings {
            source: format!(
                "the module's defaults ({} has no {})",
                crate::project::display_path(&host.dir),
                hosts::ROLLBACK_FILE
            ),
            ..RollbackSettings::default()
        });
    };
    let source = crate::project::display_path(file);
    let refused: Vec<String> = loaded
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .filter(|f| {
            f.code == "HOST004"
                || f.location
                    .as_ref()
                    .is_some_and(|location| location.file == *file)
        })
        .map(|f| {
            let at = f
                .location
                .as_ref()
                .filter(|location| location.line > 0)
                .map(|location| format!(" ({source}:{}:{})", location.line, location.column))
                .unwrap_or_default();
            format!("{}{at}: {}", f.code, f.message)
        })
        .collect();
    if !refused.is_empty() {
        bail!(
            "{source} does not give the rollback's settings (`cargo xtask check` reports it); vm-test does not fall back to the module's defaults:\n  {}",
            refused.join("\n  ")
        );
    }
    let Some(value) = &loaded.rollback else {
        bail!(
            "{source} was not evaluated (the host's files do not evaluate: run `cargo xtask check`); vm-test does not fall back to the module's defaults"
        );
    };
    RollbackSettings::from_evaluation(value, &source)
}

/// The layout with every Btrfs mount's compression replaced by `setting`
/// (`zstd:3`, `lzo`, …; `none` removes it). Steps and expectations are both
/// made from the result, so the VM measures what that setting would do.
pub fn with_compression(layout: &crate::layout::Layout, setting: &str) -> crate::layout::Layout {
    use crate::layout::{Content, DiskContent};
    let is_compress = |o: &String| {
        o.starts_with("compress=") || o.starts_with("compress-force=") || o == "compress"
    };
    // Btrfs mounts always get the setting; NixOS's extra options only lose theirs.
    let replace = |options: &mut Vec<String>, btrfs_mount: bool| {
        let had = options.iter().any(is_compress);
        options.retain(|o| !is_compress(o));
        if (had || btrfs_mount) && setting != "none" {
            options.insert(0, format!("compress={setting}"));
        }
    };
    let mut layout = layout.clone();
    for disk in &mut layout.disks {
        let contents: Vec<&mut Content> = match &mut disk.content {
            Some(DiskContent::Gpt(gpt)) => gpt
                .partitions
                .iter_mut()
                .filter_map(|p| p.content.as_mut())
                .collect(),
            Some(DiskContent::Whole(content)) => vec![content],
            None => Vec::new(),
        };
        for content in contents {
            if let Content::Btrfs(btrfs) = content {
                replace(&mut btrfs.mount_options, true);
                for subvolume in &mut btrfs.subvolumes {
                    replace(&mut subvolume.mount_options, true);
                }
            }
        }
    }
    for flags in layout.file_systems.values_mut() {
        if flags.options.iter().any(is_compress) {
            flags.options.retain(|o| !is_compress(o));
        }
    }
    layout
}

/// A boot's default time limit: generous, because CI machines are slow.
fn boot_timeout(options: &Options, accel: Accel, kind: BootKind) -> Duration {
    if let Some(timeout) = options.boot_timeout {
        return timeout;
    }
    let seconds = match (accel, kind) {
        (Accel::Tcg, BootKind::Install) => 300,
        (Accel::Tcg, BootKind::Rotate | BootKind::RotateOnly) => 150,
        (Accel::Kvm, BootKind::Install) => 120,
        (Accel::Kvm, BootKind::Rotate | BootKind::RotateOnly) => 60,
    };
    Duration::from_secs(seconds)
}

/// One boot's result, with where its logs are.
pub struct BootOutcome {
    pub run: BootRun,
    pub collected: Collected,
    pub console_log: Utf8PathBuf,
    /// From the host's receipt of the rollback's start to its end.
    pub rollback_span: Option<Duration>,
}

/// The VM runs of one `vm-test`: the disk and plans live in a private
/// directory that is removed at the end, logs in the log directory.
pub struct Session<'a> {
    pub prepared: &'a Prepared,
    pub options: &'a Options,
    pub run_dir: &'a Utf8Path,
    pub log_dir: &'a Utf8Path,
    pub disk: Utf8PathBuf,
    /// The second disk of `--thorough` (/dev/vdb in the guest).
    pub second_disk: Option<Utf8PathBuf>,
    pub progress: Progress,
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
            rtc_base: plan.rtc_base,
            second_disk: self.second_disk.clone(),
        };
        let title = format!("boot {}/{} {}", plan.boot, plan.boots, plan.kind.as_str());
        self.progress.set_message(format!("{title}: starting"));
        let qemu_img = self.prepared.qemu_img.clone();
        let disk = self.disk.clone();
        let progress = self.progress.clone();
        let measurements = &mut self.measurements;
        let mut rollback_started = None;
        let mut rollback_span = None;
        let run = qemu::boot(&config, |event, control| {
            match event {
                Event::StepStarted { name } => {
                    if name == "rollback" {
                        rollback_started = Some(Instant::now());
                    }
                    progress.set_message(format!("{title}: {name}"));
                }
                Event::StepFinished { name, .. } if name == "rollback" => {
                    rollback_span = rollback_started.map(|at: Instant| at.elapsed());
                }
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
            rollback_span,
        })
    }
}

/// Everything the boots recorded, in the shape of vm-test.json.
#[derive(Default)]
struct Tally {
    boots: Vec<BootRecord>,
    checks: Vec<CheckRecord>,
    figures: BTreeMap<String, f64>,
    /// `old_roots` as each boot saw it, by boot number.
    old_roots: BTreeMap<u32, Vec<String>>,
    peak: u64,
    failing_console: Option<(Utf8PathBuf, Vec<String>)>,
    could_not_run: Option<String>,
    /// What @old_roots held when the last boot ended (None: unknown, after a power cut).
    last_old_roots: Option<Vec<String>>,
    /// Values procedures captured, by name.
    captured: BTreeMap<String, String>,
    procedures: Vec<ProcedureRecord>,
    /// Procedures (by step) whose part failed in a boot, a command or not.
    failed_procedures: Vec<String>,
}

impl Tally {
    /// Records a boot that should have run to the end; whether it did.
    fn completed(
        &mut self,
        plan: &Plan,
        outcome: &BootOutcome,
        options: &Options,
        accel: Accel,
    ) -> Result<bool> {
        let BootOutcome {
            run,
            collected,
            console_log,
            ..
        } = outcome;
        let boot = plan.boot;
        self.measure(boot, run, collected);
        let mut record = collected.record.clone();
        self.checks.extend(collected.checks.iter().cloned());
        let problem = match (&run.ending, collected.finished) {
            (Ending::Exited { .. }, true) => None,
            (Ending::Interrupted, _) => {
                bail!("interrupted; the VM was stopped and its files removed")
            }
            (Ending::TimedOut, _) => Some(format!(
                "did not finish within {} s",
                boot_timeout(options, accel, plan.kind).as_secs()
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
            self.could_not_run = Some(format!(
                "boot {boot}: the guest agent never started ({}){}{}",
                problem.unwrap_or_else(|| "no hello".to_owned()),
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
            ));
            self.failing_console = Some((console_log.clone(), qemu::tail(console_log, 40)));
            self.boots.push(record);
            return Ok(false);
        }
        self.checks.push(host_check(
            boot,
            "boot-completed",
            problem.is_none(),
            problem
                .clone()
                .unwrap_or_else(|| format!("powered off after {:.1} s", run.wall.as_secs_f64())),
            "the agent runs the plan and powers off".to_owned(),
        ));
        if problem.is_some() {
            record.passed = false;
        }
        if !record.passed && self.failing_console.is_none() {
            self.failing_console = Some((console_log.clone(), qemu::tail(console_log, 40)));
        }
        print_boot(&record, collected, plan.boots);
        self.boots.push(record);
        Ok(problem.is_none())
    }

    fn measure(&mut self, boot: u32, run: &BootRun, collected: &Collected) {
        if let Some(bytes) = run.peak_rss_bytes {
            self.peak = self.peak.max(bytes);
            self.figures
                .insert(format!("vm.peak_rss_bytes.boot{boot}"), bytes as f64);
        }
        if let Some(ms) = run.cpu_ms {
            self.figures
                .insert(format!("vm.cpu_ms.boot{boot}"), ms as f64);
            *self.figures.entry("vm.cpu_ms".to_owned()).or_insert(0.0) += ms as f64;
        }
        self.figures
            .insert(format!("boot_ms.boot{boot}"), run.wall.as_millis() as f64);
        self.figures.extend(collected.figures.clone());
        if let Some(names) = collected
            .data
            .get("old_roots")
            .and_then(|v| serde_json::from_value::<Vec<String>>(v.clone()).ok())
        {
            self.old_roots.insert(boot, names);
        }
        for (name, value) in &collected.data {
            if let (Some(key), Some(text)) = (name.strip_prefix("capture:"), value.as_str()) {
                self.captured.insert(key.to_owned(), text.to_owned());
            }
        }
    }

    /// The procedures' commands of a boot, under their checklist id and step.
    fn commands(&mut self, plan: &Plan, collected: &Collected) {
        for command in &collected.commands {
            let index = match self.procedures.iter().position(|p| p.id == command.id) {
                Some(index) => index,
                None => {
                    let title = plan
                        .steps
                        .iter()
                        .find_map(|s| match &s.action {
                            Action::Admin(a) if a.id == command.id => Some(a.title.clone()),
                            _ => None,
                        })
                        .unwrap_or_default();
                    self.procedures.push(ProcedureRecord {
                        id: command.id.clone(),
                        step: command.step.clone(),
                        title,
                        status: ProcedureStatus::NotRun,
                        passed: false,
                        commands: Vec::new(),
                    });
                    self.procedures.len() - 1
                }
            };
            self.procedures[index].commands.push(CommandRecord {
                boot: plan.boot,
                part: command.part,
                role: command.role.clone(),
                at: command.at,
                line: command.line.clone(),
                ran: command.ran.clone(),
                status: command.status,
                exit: command.exit,
                ms: command.ms,
                stdout: command.stdout.clone(),
                stderr: command.stderr.clone(),
                expected: command.expected.clone(),
                passed: command.passed,
                problem: command.problem.clone(),
                proven_by: command.proven_by.clone(),
            });
        }
        // A part whose check failed without a failing command (it could not start).
        for check in &collected.checks {
            // `procedure:<step>`, or `step:procedure:<step>` when the agent could not run the part.
            let name = check.name.strip_prefix("step:").unwrap_or(&check.name);
            if let Some(step) = name.strip_prefix("procedure:") {
                if !check.passed && !self.failed_procedures.iter().any(|s| s == step) {
                    self.failed_procedures.push(step.to_owned());
                }
            }
        }
    }

    /// Every procedure of the checklist's §3 and §4 in checklist order: as
    /// it ran, or NOT RUN with the reason (what the lab cannot run, what
    /// needs `--thorough`, what a stopped run never reached).
    fn settle_procedures(&mut self, all: &[Numbered], thorough: bool) {
        let mut records = Vec::new();
        for numbered in all {
            let id = &numbered.procedure.id;
            let record = match self.procedures.iter().position(|p| p.id == *id) {
                Some(index) => {
                    let mut record = self.procedures.remove(index);
                    record.settle();
                    if self.failed_procedures.contains(&record.step) {
                        record.status = ProcedureStatus::Fail;
                        record.passed = false;
                    }
                    record
                }
                None => {
                    let instead = match procedures::tier(&numbered.procedure) {
                        Tier::NotInLab => None,
                        Tier::Thorough if !thorough => {
                            Some("runs with `cargo xtask vm-test --thorough`")
                        }
                        _ => Some("the run stopped before it"),
                    };
                    procedures::not_run_record(numbered, instead)
                }
            };
            records.push(record);
        }
        // Anything else (none: every record comes from the checklist's list).
        records.append(&mut self.procedures);
        self.procedures = records;
    }

    fn check_passed(&self, boot: u32, name: &str) -> bool {
        self.checks
            .iter()
            .any(|c| c.boot == boot && c.name == name && c.passed)
    }

    /// Old roots that `earlier` saw and `later` does not.
    fn lost_old_roots(&self, earlier: u32, later: u32) -> Option<(Vec<String>, usize, usize)> {
        let before = self.old_roots.get(&earlier)?;
        let now = self.old_roots.get(&later)?;
        let lost = before
            .iter()
            .filter(|n| !now.contains(n))
            .cloned()
            .collect();
        Some((lost, before.len(), now.len()))
    }
}

/// A spinner in a terminal, one line per step in a log.
fn progress_bar(show: bool) -> Progress {
    Progress::shown_if(show, "vm-test")
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
        let outcome = self.session.boot(&plan, label, |_, _| Ok(()))?;
        let completed = self.session.progress.suspend(|| {
            self.tally.completed(
                &plan,
                &outcome,
                self.session.options,
                self.session.prepared.accel,
            )
        })?;
        self.boot = spec.boot;
        self.after_boot(&plan, spec, &outcome.collected);
        if completed && spec.kind != BootKind::RotateOnly {
            self.last_full_boot = spec.boot;
        }
        Ok(completed)
    }

    /// The host's checks of a boot that ran: retention, the month, mounts, procedures.
    fn after_boot(&mut self, plan: &Plan, spec: &BootSpec, collected: &Collected) {
        let boot = spec.boot;
        self.tally.commands(plan, collected);
        let observed = collected
            .data
            .get("old_roots")
            .and_then(|v| serde_json::from_value::<Vec<String>>(v.clone()).ok());
        match spec.kind {
            BootKind::Install => {
                trim_reached_the_host(&self.session, self.realisation, &mut self.tally, boot);
                self.session.measurements.clear();
                // A new disk: no old roots.
                self.tally.last_old_roots = Some(Vec::new());
            }
            BootKind::Rotate | BootKind::RotateOnly => {
                let runs = month::runs(collected);
                let before = match spec.history {
                    History::Clean => self.tally.last_old_roots.clone(),
                    // What the cut boot left is known only now: the last
                    // completed boot's old roots and, if it moved one, the
                    // new name that is not this boot's.
                    History::AfterPowerCut {
                        last_completed_boot,
                        ..
                    } => self.tally.old_roots.get(&last_completed_boot).map(|base| {
                        let moved = runs
                            .first()
                            .and_then(|r| r.status.get("rotated_to"))
                            .cloned()
                            .unwrap_or_default();
                        let mut before = base.clone();
                        before.extend(
                            observed
                                .iter()
                                .flatten()
                                .filter(|n| !base.contains(n) && **n != moved)
                                .cloned(),
                        );
                        before.sort();
                        before
                    }),
                };
                if let Some(before) = before {
                    let (checks, judged) =
                        month::judge(self.rules, boot, &before, &runs, observed.as_deref());
                    self.tally.checks.extend(checks);
                    if !spec.extra_runs.is_empty() {
                        let days = self.rules.retention_days + month::UPTIME_BEYOND_RETENTION_DAYS;
                        self.tally
                            .checks
                            .extend(month::coverage(self.rules, boot, &judged, days));
                    }
                }
                self.tally.last_old_roots = observed;
            }
        }
        if spec.kind != BootKind::RotateOnly && collected.finished {
            mount_time(&mut self.tally, boot, collected, self.budgets.mount_all_ms);
        }
    }
}

/// Runs the whole lab vm-test.
pub fn run(context: &crate::context::Context, options: &Options) -> Result<Outcome> {
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
    let thorough_boots = if options.thorough {
        let counted = procedures::Lab {
            lost: Some(LostFile {
                path: "counted".to_owned(),
                sha256: String::new(),
            }),
            ..prepared.lab.clone()
        };
        procedures::Schedule::new(procedures::of_tier(
            &prepared.procedures,
            Tier::Thorough,
            &counted,
        )?)
        .boots()
            + calendar_days.len() as u32
    } else {
        0
    };
    let total_boots = options.boots + 2 * options.power_cuts + thorough_boots;
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
    // Only a run of the layout as it is may stand as the vm-test result.
    let kind = if !options.tamper.is_empty() || options.rollback_script.is_some() {
        "vm-test-tampered"
    } else if options.compression.is_some() {
        "vm-test-what-if"
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
    let second_disk = if options.thorough {
        let path = run_dir_path.join("second-disk.qcow2");
        disk::create(&prepared.qemu_img, &path, procedures::BACKUP_DISK_BYTES)?;
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
    let month = month::month(rules);
    let mut all_completed = true;
    for boot in 1..=options.boots {
        let is_month = boot == MONTH_BOOT;
        if is_month {
            // The install boot's root stays in use for the whole jump: a long uptime.
            run.calendar.offset_s += month.jump_s;
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
        let mut spec = run.spec(kind, extra_runs);
        // The checklist's quick read-only checks of §3 in the last default
        // boot: the system as the server has it after a reboot.
        if boot == options.boots {
            let quick = procedures::of_tier(&prepared.procedures, Tier::Default, &prepared.lab)?;
            let mut schedule = Schedule::new(quick);
            if let Some(parts) = schedule.next_boot(&run.tally.captured) {
                spec.procedures = parts.started;
            }
        }
        // In the month's boot: after its mounts only light work runs (swap,
        // checks), so the writes measure the release, not the install's
        // own flushes.
        if options.discard_probe && boot == MONTH_BOOT.min(options.boots) {
            spec.discard_probe = Some(DiscardBudget {
                p99_ms: budgets.discard_p99_ms,
                max_ms: budgets.discard_max_ms,
            });
        }
        let completed = run.boot(&spec, &format!("boot{boot}"))?;
        if is_month {
            // The last run set the clock on; later boots start after it.
            run.calendar.offset_s += month.stepped_s();
        }
        if !completed {
            all_completed = false;
            break;
        }
    }
    if all_completed && run.tally.could_not_run.is_none() && options.power_cuts > 0 {
        all_completed = power_cuts(&mut run)?;
    }
    if all_completed && run.tally.could_not_run.is_none() && options.thorough {
        all_completed = thorough(&mut run, &calendar_days)?;
    }
    let _ = all_completed;
    let Run {
        session, mut tally, ..
    } = run;
    tally.settle_procedures(&prepared.procedures, options.thorough);
    session.progress.finish_and_clear();
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
        },
        boots: tally.boots,
        checks: tally.checks,
        figures,
        wall_ms: started.elapsed().as_millis() as u64,
        procedures: tally.procedures,
    };
    // The proof the deploy gate reads is only ever replaced by another full pass.
    let host_disks: BTreeMap<String, u64> = prepared
        .layout
        .disks
        .iter()
        .filter_map(|d| Some((d.key.clone(), prepared.machine.disk_bytes(&d.key).ok()??)))
        .collect();
    let proof = kind == "vm-test" && passed && results.shortfall(&host_disks).is_none();
    let recorded = crate::results::record(kind, &results, proof)?;
    // A thorough run is also kept as the procedures' own results: a later
    // default run replaces vm-test.json, not these.
    if kind == "vm-test" && options.thorough {
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
        failing_console: tally.failing_console,
        setup,
    })
}

/// `--thorough`: the checklist's procedures that reboot, reinstall or
/// change /persist (their parts spread over reboots and a reinstall), then
/// the calendar of short boots.
fn thorough(run: &mut Run, calendar_days: &[i64]) -> Result<bool> {
    // §4.3 copies back a file the last boot wrote into / (one in a
    // directory /persist lacks, if there is one).
    let lost_boot = run.last_full_boot;
    let files = run.realisation.root_files(lost_boot);
    let lost_path = files
        .iter()
        .find(|f| f.trim_start_matches('/').matches('/').count() >= 2)
        .or(files.first())
        .cloned()
        .context("no file is written into / at a boot")?;
    let lost = LostFile {
        path: lost_path.trim_start_matches('/').to_owned(),
        sha256: initramfs::hex(&sha2::Digest::finalize(sha2::Digest::chain_update(
            <sha2::Sha256 as sha2::Digest>::new(),
            run.realisation.root_file_contents(lost_boot).as_bytes(),
        ))),
    };
    let prepared = run.session.prepared;
    let lab = procedures::Lab {
        lost: Some(lost),
        ..prepared.lab.clone()
    };
    let mut schedule = Schedule::new(procedures::of_tier(
        &prepared.procedures,
        Tier::Thorough,
        &lab,
    )?);
    let mut first = true;
    while let Some(boot_procedures) = schedule.next_boot(&run.tally.captured) {
        let kind = if boot_procedures.install {
            BootKind::Install
        } else {
            BootKind::Rotate
        };
        let mut spec = run.spec(kind, Vec::new());
        spec.continued = boot_procedures.continued;
        spec.procedures = boot_procedures.started;
        // Roadmap 7.2, unless the month's boot had it: the procedures'
        // commands fill most of the 10 s the release waits for.
        if first && kind == BootKind::Rotate && !run.session.options.discard_probe {
            spec.discard_probe = Some(DiscardBudget {
                p99_ms: run.budgets.discard_p99_ms,
                max_ms: run.budgets.discard_max_ms,
            });
        }
        first = false;
        let label = format!("boot{}", spec.boot);
        let completed = run.boot(&spec, &label)?;
        let boot = spec.boot;
        let tally = &run.tally;
        schedule.finished_boot(|procedure| {
            tally.check_passed(boot, &format!("procedure:{}", procedure.step))
        });
        if !completed || run.tally.could_not_run.is_some() {
            return Ok(false);
        }
    }
    let start = run.calendar.offset_s;
    for day in calendar_days {
        run.calendar.offset_s = start + day * DAY;
        let spec = run.spec(BootKind::RotateOnly, Vec::new());
        let label = format!("boot{}-day{day}", spec.boot);
        if !run.boot(&spec, &label)? || run.tally.could_not_run.is_some() {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Roadmap 7.3: every mount of a boot against the budget (host check).
fn mount_time(tally: &mut Tally, boot: u32, collected: &Collected, budget_ms: u64) {
    let mounts: Vec<&crate::results::StepRecord> = collected
        .record
        .steps
        .iter()
        .filter(|s| s.name.starts_with("mount:"))
        .collect();
    if mounts.is_empty() {
        return;
    }
    let total: u64 = mounts.iter().map(|s| s.ms).sum();
    let slowest = mounts.iter().max_by_key(|s| s.ms);
    tally
        .figures
        .insert(format!("mount_ms.boot{boot}"), total as f64);
    tally.checks.push(host_check(
        boot,
        "mount-time",
        total <= budget_ms,
        format!(
            "{} mounts in {total} ms{}",
            mounts.len(),
            slowest
                .map(|s| format!(
                    ", the slowest {} ({} ms)",
                    s.name.trim_start_matches("mount:"),
                    s.ms
                ))
                .unwrap_or_default()
        ),
        format!("every mount of the layout in at most {budget_ms} ms (roadmap 7.3)"),
    ));
}

fn describe_setup(
    prepared: &Prepared,
    options: &Options,
    disk_bytes: u64,
) -> Vec<(String, String)> {
    vec![
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
        ("rollback".to_owned(), {
            let r = &prepared.rollback_settings;
            format!(
                "{} → {}, top level at {}, retention {} days, keep at least {} (from {}); script {}",
                r.root_subvolume,
                r.old_roots_subvolume,
                r.mount_point,
                r.retention_days,
                r.keep_at_least,
                r.source,
                prepared
                    .image
                    .rollback
                    .as_ref()
                    .map_or("none".to_owned(), |s| crate::project::display_path(&s.host_path))
            )
        }),
        (
            "boots".to_owned(),
            format!(
                "{}{}{}{}",
                options.boots,
                if options.boots >= MONTH_BOOT {
                    let month = month::month(Rules {
                        retention_days: prepared.rollback_settings.retention_days,
                        keep_at_least: prepared.rollback_settings.keep_at_least,
                    });
                    format!(
                        " (boot {MONTH_BOOT} is the month: the clock {} days on, {} rotations in one second, one more {} days later)",
                        month.jump_s / DAY,
                        month.extra_runs.len(),
                        month.stepped_s() / DAY
                    )
                } else {
                    String::new()
                },
                if options.power_cuts > 0 {
                    format!(", {} power cuts", options.power_cuts)
                } else {
                    String::new()
                },
                if options.thorough {
                    ", thorough: the checklist's procedures that reboot or reinstall (§3.9, §4.3-4.5) and a calendar of short boots"
                } else {
                    ""
                }
            ),
        ),
    ]
}

/// Host check: the qcow2 gave the deleted and trimmed probe's space back.
fn trim_reached_the_host(
    session: &Session,
    realisation: &Realisation,
    tally: &mut Tally,
    boot: u32,
) {
    let figures = &mut tally.figures;
    let (Some(before), Some(after)) = (
        session.measurements.get("trim.before"),
        session.measurements.get("trim.after"),
    ) else {
        return;
    };
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
    tally.checks.push(host_check(
        boot,
        "trim:host-freed",
        freed >= minimum,
        format!(
            "qcow2 data {} → {} bytes: {freed} freed ({file_freed} bytes of the host file)",
            before.data_bytes, after.data_bytes
        ),
        format!("at least {minimum} bytes given back to the host after delete + fstrim"),
    ));
}

/// `--power-cuts N`: SIGKILLs the VM at N instants spread over the rollback
/// of a rotation boot, then boots normally and checks that the boot
/// completes with a fresh root, /persist is intact, no old root is lost and
/// there is exactly one @root.
fn power_cuts(run: &mut Run) -> Result<bool> {
    // How long one rollback run took (the month's first run, as the guest timed it).
    let reference = run
        .tally
        .figures
        .iter()
        .filter(|(name, _)| name.starts_with("rotation_ms.boot"))
        .map(|(_, ms)| Duration::from_secs_f64(ms / 1000.0))
        .max()
        .unwrap_or(Duration::from_millis(500));
    let cuts = run.session.options.power_cuts;
    let mut last_completed = run.boot;
    let mut survived = 0u32;
    let mut all_completed = true;
    for cut in 1..=cuts {
        let delay = reference.mul_f64(f64::from(cut) / f64::from(cuts + 1));
        let spec = run.spec(BootKind::Rotate, Vec::new());
        let boot = spec.boot;
        let plan = run.realisation.plan_for(&spec)?;
        let reason = format!(
            "power cut {cut}/{cuts}, {} ms into the rollback",
            delay.as_millis()
        );
        let outcome =
            run.session
                .boot(&plan, &format!("boot{boot}-cut{cut}"), |event, control| {
                    if matches!(event, Event::StepStarted { name } if name == "rollback") {
                        control.kill_at(Instant::now() + delay, reason.clone());
                    }
                    Ok(())
                })?;
        if outcome.run.ending == Ending::Interrupted {
            bail!("interrupted; the VM was stopped and its files removed");
        }
        run.boot = boot;
        let tally = &mut run.tally;
        let cut_landed = matches!(outcome.run.ending, Ending::Killed { .. });
        let when = if !cut_landed {
            "the VM ended before the cut".to_owned()
        } else if outcome.rollback_span.is_some() {
            "after the rollback had finished".to_owned()
        } else {
            "during the rollback".to_owned()
        };
        tally.measure(boot, &outcome.run, &outcome.collected);
        let mut record = outcome.collected.record.clone();
        record.kind = "power-cut".to_owned();
        record.passed = cut_landed;
        tally.boots.push(record);
        // What the cut boot reported before it died was true when reported.
        tally
            .checks
            .extend(outcome.collected.checks.iter().cloned());
        // Whether it moved its root is unknown.
        tally.last_old_roots = None;

        let mut spec = run.spec(BootKind::Rotate, Vec::new());
        let base = run
            .tally
            .old_roots
            .get(&last_completed)
            .cloned()
            .unwrap_or_default();
        spec.history = History::AfterPowerCut {
            old_roots_before: base.len() as u32,
            last_completed_boot: last_completed,
        };
        spec.newest_holds = None;
        spec.some_holds = Some(last_completed);
        // With or without a root the cut boot moved (named a little earlier).
        if let Some(now) = spec.rtc_base {
            let without = month::predict(run.rules, &base, now, &[]).len() as u32;
            let mut with_cut = base.clone();
            with_cut.push(super::retention::next_name(&base, now - 60));
            let with = month::predict(run.rules, &with_cut, now, &[]).len() as u32;
            spec.old_roots_expected = Some((without.min(with), without.max(with)));
        }
        let boot = spec.boot;
        let checks_before = run.tally.checks.len();
        let completed = run.boot(&spec, &format!("boot{boot}-after-cut{cut}"))?;
        let tally = &mut run.tally;
        // Old roots the cut and this boot removed must be ones the retention
        // model deletes: `retention:run1` holds this boot against it.
        if let Some((lost, before, now)) = tally.lost_old_roots(last_completed, boot) {
            let agreed = tally.check_passed(boot, "retention:run1");
            tally.checks.push(host_check(
                boot,
                "old-roots-kept",
                agreed,
                format!(
                    "{before} before the cut, {now} after{}",
                    if lost.is_empty() {
                        String::new()
                    } else {
                        format!("; gone: {}", lost.join(" "))
                    }
                ),
                "every old root the last completed boot saw is still there, unless the retention model deletes it (retention:run1)"
                    .to_owned(),
            ));
        }
        let failed: Vec<String> = tally.checks[checks_before..]
            .iter()
            .filter(|c| !c.passed)
            .map(|c| c.name.clone())
            .collect();
        let ok = completed && failed.is_empty();
        survived += u32::from(ok);
        tally.checks.push(host_check(
            boot,
            &format!("power-cut:{cut}"),
            ok && cut_landed,
            format!(
                "SIGKILL {} ms after the rollback started ({when}); the next boot {}",
                delay.as_millis(),
                if ok {
                    "completed with a fresh root, /persist intact, the old roots as the retention rules say, one @root"
                        .to_owned()
                } else {
                    format!("failed: {}", failed.join(", "))
                }
            ),
            "a power cut in the rollback leaves a system that boots normally with nothing lost"
                .to_owned(),
        ));
        if !completed || tally.could_not_run.is_some() {
            all_completed = false;
            break;
        }
        last_completed = boot;
    }
    let tally = &mut run.tally;
    tally
        .figures
        .insert("power_cuts.total".to_owned(), f64::from(cuts));
    tally
        .figures
        .insert("power_cuts.survived".to_owned(), f64::from(survived));
    tally.figures.insert(
        "power_cuts.reference_ms".to_owned(),
        reference.as_millis() as f64,
    );
    Ok(all_completed)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::mount_options::{compression, effective};
    use crate::layout::testing::host_layout;

    #[test]
    fn what_if_compression_changes_every_btrfs_mount() {
        let layout = host_layout();
        let zstd3 = with_compression(&layout, "zstd:3");
        for (mountpoint, e) in effective(&zstd3) {
            if mountpoint != "/boot" {
                assert_eq!(
                    compression(&e.options).as_deref(),
                    Some("zstd:3"),
                    "{mountpoint}"
                );
            }
        }
        let none = with_compression(&layout, "none");
        assert!(effective(&none)
            .values()
            .all(|e| compression(&e.options).is_none()));
        // The original is untouched.
        assert_eq!(
            compression(&effective(&layout)["/nix"].options).as_deref(),
            Some("zstd:1")
        );
    }
}
