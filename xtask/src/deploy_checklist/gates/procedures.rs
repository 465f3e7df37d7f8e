//! The `procedures` gate: the checklist's procedures run by `vm-test
//! --thorough --drills` (the drills from the lab's rescue boot included:
//! a run without `--drills` leaves §4.6 NOT RUN, which the gate counts as
//! a procedure the run did not run).

use crate::results::{Header, ProcedureStatus, VmTestResults};

use super::proof::{decide, never_run_here, Proof};
use super::{gate, Gate, Observed, Status, ThoroughResults};

impl Proof for ThoroughResults {
    const KIND: crate::results::Kind = crate::results::THOROUGH_KIND;
    fn header(&self) -> &Header {
        &self.0.header
    }
    fn shortfall(&self, observed: &Observed) -> Option<String> {
        if !self.0.requested.thorough {
            return Some("a run without --thorough".to_owned());
        }
        if let Some(shortfall) = self.0.shortfall(&observed.disk_bytes) {
            return Some(shortfall.describe());
        }
        let missing: Vec<String> = observed
            .lab_procedures
            .iter()
            .filter(|(_, id)| {
                !self
                    .0
                    .procedures
                    .iter()
                    .any(|p| p.id == *id && p.status != ProcedureStatus::NotRun)
            })
            .map(|(step, id)| format!("{step} {id}"))
            .collect();
        let drills = if self.0.requested.drills {
            ""
        } else {
            " (a run without --drills: §4.6 runs from the lab's rescue boot with `vm-test --thorough --drills`)"
        };
        (!missing.is_empty()).then(|| {
            format!(
                "a thorough run that did not run {}{drills}",
                missing.join(", ")
            )
        })
    }
    fn failure(&self, observed: &Observed) -> Option<String> {
        let failed: Vec<String> = self
            .0
            .procedures
            .iter()
            .filter(|p| p.status == ProcedureStatus::Fail)
            .map(|p| match p.first_failure() {
                Some(c) => format!(
                    "checklist {} ({}) failed at `{}`: {}",
                    p.step,
                    p.id,
                    if c.outcome.ran.is_empty() {
                        &c.outcome.line
                    } else {
                        &c.outcome.ran
                    },
                    c.outcome.problem.as_deref().unwrap_or("not as expected")
                ),
                None => format!("checklist {} ({}) failed", p.step, p.id),
            })
            .collect();
        if !failed.is_empty() {
            return Some(failed.join("; "));
        }
        <VmTestResults as Proof>::failure(&self.0, observed)
    }
    fn summary(&self, _: &Observed) -> String {
        let ran: Vec<&crate::results::ProcedureRecord> = self
            .0
            .procedures
            .iter()
            .filter(|p| p.status == ProcedureStatus::Pass)
            .collect();
        let checklist_commands = |status: crate::results::CommandStatus| {
            self.0
                .procedures
                .iter()
                .flat_map(|p| &p.commands)
                .filter(|c| c.outcome.role == "checklist" && c.outcome.status == status)
                .count()
        };
        let not_run: Vec<&crate::results::CommandRecord> = self
            .0
            .procedures
            .iter()
            .flat_map(|p| &p.commands)
            .filter(|c| c.outcome.status == crate::results::CommandStatus::NotRun)
            .collect();
        let elsewhere = not_run
            .iter()
            .filter(|c| c.outcome.proven_by.is_some())
            .count();
        format!(
            "{} procedures of §3 and §4 ran in the lab VM as the admin ({} of the checklist's commands as expected); {} commands cannot run there and are NOT RUN, not counted ({elsewhere} of them run in the NixOS VM test, which needs nixpkgs and KVM and did not run here; the rest only on the server)",
            ran.len(),
            checklist_commands(crate::results::CommandStatus::Pass),
            not_run.len()
        )
    }
}

pub(super) fn procedures_gate(observed: &Observed) -> Gate {
    let rerun = format!(
        "cargo xtask vm-test --thorough --drills --host {}",
        observed.host
    );
    decide(
        gate(
            "procedures",
            "the checklist's procedures ran in the lab VM (`vm-test --thorough --drills`): every §3 and §4 command it can run, as expected, §4.6 from the lab's rescue boot",
            Status::NotRun,
            "",
        ),
        &observed.thorough,
        observed,
        &rerun,
        never_run_here(observed, "`vm-test --thorough` result", &rerun),
    )
}
