//! One VM boot of a run: the plan in, the events and the host's
//! measurements of the image out.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Result;
use camino::{Utf8Path, Utf8PathBuf};

use super::*;
use crate::vm::accel::Accel;
use crate::vm::collect::{collect, Collected};
use crate::vm::disk::{self, Allocation};
use crate::vm::plan::{BootKind, Plan};
use crate::vm::protocol::Event;
use crate::vm::qemu::{self, BootRun, VmConfig};
use toolbox::progress::Progress;

/// A boot's default time limit: generous, because CI machines are slow.
pub(super) fn boot_timeout(options: &Options, accel: Accel, kind: BootKind) -> Duration {
    if let Some(timeout) = options.boot_timeout {
        return timeout;
    }
    let seconds = match (accel, kind) {
        (Accel::Tcg, BootKind::Install) => 300,
        (Accel::Tcg, BootKind::Rotate | BootKind::RotateOnly | BootKind::Rescue) => 150,
        (Accel::Kvm, BootKind::Install) => 120,
        (Accel::Kvm, BootKind::Rotate | BootKind::RotateOnly | BootKind::Rescue) => 60,
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
            timeout: boot_timeout(self.options, self.prepared.accel, plan.kind)
                + if plan
                    .steps
                    .iter()
                    .any(|s| matches!(s.action, crate::vm::plan::Action::ServeSsh(_)))
                {
                    super::SERVE_WAIT
                } else {
                    Duration::ZERO
                },
            rtc_base: plan.rtc_base,
            second_disk: self.second_disk.clone(),
            ssh_forward: self.options.serve_ssh.as_ref().map(|s| s.port),
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
