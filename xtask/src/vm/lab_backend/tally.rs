//! Everything the boots recorded, collected into the shape of vm-test.json.

use std::collections::BTreeMap;

use anyhow::{bail, Result};
use camino::Utf8PathBuf;

use super::*;
use crate::deploy_checklist::Numbered;
use crate::results::{BootRecord, CheckRecord, CommandRecord, ProcedureRecord, ProcedureStatus};
use crate::vm::accel::Accel;
use crate::vm::collect::Collected;
use crate::vm::plan::{Action, Plan};
use crate::vm::procedure_runs::{self, Tier};
use crate::vm::qemu::{self, BootRun, Ending};

/// How a boot that should have run to the end ended (`Tally::completed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Completion {
    /// The guest agent never started: the run cannot go on (exit 2).
    NeverStarted,
    /// The agent ran the plan; `finished`: the boot ran to the end.
    Ran { finished: bool },
}

/// Everything the boots recorded, in the shape of vm-test.json.
#[derive(Default)]
pub(super) struct Tally {
    pub(super) boots: Vec<BootRecord>,
    pub(super) checks: Vec<CheckRecord>,
    pub(super) figures: BTreeMap<String, f64>,
    /// `old_roots` as each boot saw it, by boot number.
    pub(super) old_roots: BTreeMap<u32, Vec<String>>,
    pub(super) peak: u64,
    pub(super) failing_console: Option<(Utf8PathBuf, Vec<String>)>,
    pub(super) could_not_run: Option<String>,
    /// What @old_roots held when the last boot ended (None: unknown, after a power cut).
    pub(super) last_old_roots: Option<Vec<String>>,
    /// Values procedures captured, by name.
    pub(super) captured: BTreeMap<String, String>,
    pub(super) procedures: Vec<ProcedureRecord>,
    /// Procedures (by step) whose part failed in a boot, a command or not.
    pub(super) failed_procedures: Vec<String>,
}

impl Tally {
    /// Records a boot that should have run to the end: whether the agent
    /// ran and whether the boot did. Prints nothing: the run hands the
    /// recorded boot to its `Reporter`.
    pub(super) fn completed(
        &mut self,
        plan: &Plan,
        outcome: &BootOutcome,
        options: &Options,
        accel: Accel,
    ) -> Result<Completion> {
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
            return Ok(Completion::NeverStarted);
        }
        self.checks.push(CheckRecord::new(
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
        self.boots.push(record);
        Ok(Completion::Ran {
            finished: problem.is_none(),
        })
    }

    pub(super) fn measure(&mut self, boot: u32, run: &BootRun, collected: &Collected) {
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
    pub(super) fn commands(&mut self, plan: &Plan, collected: &Collected) {
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
                outcome: command.outcome.clone(),
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
    pub(super) fn settle_procedures(&mut self, all: &[Numbered], thorough: bool, drills: bool) {
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
                    let instead = match procedure_runs::tier(&numbered.procedure) {
                        Tier::NotInLab => None,
                        Tier::Thorough if !thorough => {
                            Some("runs with `cargo xtask vm-test --thorough`")
                        }
                        Tier::Drill if !drills => Some(
                            "runs from the lab's rescue boot with `cargo xtask vm-test --thorough --drills`",
                        ),
                        _ => Some("the run stopped before it"),
                    };
                    procedure_runs::not_run_record(numbered, instead)
                }
            };
            records.push(record);
        }
        // Anything else (none: every record comes from the checklist's list).
        records.append(&mut self.procedures);
        self.procedures = records;
    }

    pub(super) fn check_passed(&self, boot: u32, name: &str) -> bool {
        self.checks
            .iter()
            .any(|c| c.boot == boot && c.name == name && c.passed)
    }

    /// Old roots that `earlier` saw and `later` does not.
    pub(super) fn lost_old_roots(
        &self,
        earlier: u32,
        later: u32,
    ) -> Option<(Vec<String>, usize, usize)> {
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
