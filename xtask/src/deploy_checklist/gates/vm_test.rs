//! The `vm-test` gate: the full `vm-test` of the host, at HEAD.

use crate::results::{Header, VmTestResults};

use super::proof::{decide, never_run_here, Proof};
use super::{gate, Gate, Observed, Status};

impl Proof for VmTestResults {
    const KIND: crate::results::Kind = crate::results::Kind::VmTest;
    fn header(&self) -> &Header {
        &self.header
    }
    fn shortfall(&self, observed: &Observed) -> Option<String> {
        self.shortfall(&observed.disk_bytes).map(|s| s.describe())
    }
    fn failure(&self, _: &Observed) -> Option<String> {
        let failed_checks: Vec<String> = self
            .checks
            .iter()
            .filter(|c| !c.passed)
            .map(|c| {
                format!(
                    "boot {} {}: measured {:?}, expected {:?}",
                    c.boot, c.name, c.measured, c.expected
                )
            })
            .collect();
        let mut reasons: Vec<String> = self
            .boots
            .iter()
            .filter(|b| !b.passed)
            .map(|b| format!("boot {} ({}) failed", b.number, b.kind))
            .collect();
        reasons.extend(failed_checks.iter().take(5).cloned());
        if failed_checks.len() > 5 {
            reasons.push(format!("{} more failed checks", failed_checks.len() - 5));
        }
        if reasons.is_empty() && !self.header.passed {
            reasons.push("the run did not pass".to_owned());
        }
        if reasons.is_empty() && self.checks.is_empty() {
            reasons.push(format!(
                "the run recorded {} boot(s) and no check, so it proves nothing",
                self.boots.len()
            ));
        }
        (!reasons.is_empty()).then(|| reasons.join("; "))
    }
    fn summary(&self, _: &Observed) -> String {
        format!(
            "{} boot(s), {} in-VM check(s) passed on a {}-byte disk ({} backend, {}, kernel {})",
            self.boots.len(),
            self.checks.len(),
            self.disk_bytes,
            self.backend,
            self.accelerator,
            self.kernel
        )
    }
}

pub(super) fn vm_test_gate(observed: &Observed) -> Gate {
    let rerun = format!("cargo xtask vm-test --host {}", observed.host);
    decide(
        gate(
            "vm-test",
            "the full `cargo xtask vm-test` passed (every boot kind, the host's disk size)",
            Status::NotRun,
            "",
        ),
        &observed.vm_test,
        observed,
        &rerun,
        never_run_here(observed, "result", &rerun),
    )
}
