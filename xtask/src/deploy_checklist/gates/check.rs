//! The `check` gate: the last `check` of the host, at HEAD.

use crate::results::{CheckResults, Header};

use super::proof::{decide, never_run_here, Proof};
use super::{gate, Gate, Observed, Status, BLOCKING_WARNINGS};

impl Proof for CheckResults {
    const KIND: crate::results::Kind = crate::results::Kind::Check;
    fn header(&self) -> &Header {
        &self.header
    }
    fn shortfall(&self, observed: &Observed) -> Option<String> {
        let bytes = self.disk_size_override?;
        let mismatched: Vec<String> = observed
            .disk_bytes
            .iter()
            .filter(|(_, size)| **size != bytes)
            .map(|(key, size)| format!("disk {key} is {size} bytes"))
            .collect();
        (!mismatched.is_empty()).then(|| {
            format!(
                "a check with --disk-size {bytes} bytes (machine.nix: {})",
                mismatched.join(", ")
            )
        })
    }
    fn failure(&self, observed: &Observed) -> Option<String> {
        let summary = self.hosts.iter().find(|h| h.host == observed.host);
        let Some(summary) = summary else {
            return (!self.header.passed).then(|| "the check failed".to_owned());
        };
        let blocking: Vec<&str> = summary
            .findings
            .iter()
            .filter(|f| BLOCKING_WARNINGS.iter().any(|code| f.starts_with(code)))
            .map(String::as_str)
            .collect();
        if summary.errors > 0 {
            let shown: Vec<&str> = summary
                .findings
                .iter()
                .take(5)
                .map(String::as_str)
                .collect();
            return Some(format!(
                "{} error(s), {} warning(s) ({})",
                summary.errors,
                summary.warnings,
                shown.join("; ")
            ));
        }
        if !blocking.is_empty() {
            return Some(format!(
                "{}: a warning for `check`, but the build refuses it and nobody could log in",
                blocking.join("; ")
            ));
        }
        None
    }
    fn summary(&self, observed: &Observed) -> String {
        let summary = self.hosts.iter().find(|h| h.host == observed.host);
        match summary {
            Some(h) if h.warnings > 0 => format!(
                "no errors; {} warning(s): {}",
                h.warnings,
                h.findings
                    .iter()
                    .take(5)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            _ => "no findings".to_owned(),
        }
    }
}

pub(super) fn check_gate(observed: &Observed) -> Gate {
    let rerun = format!("cargo xtask check --host {}", observed.host);
    decide(
        gate("check", "`cargo xtask check` is clean", Status::NotRun, ""),
        &observed.check,
        observed,
        &rerun,
        never_run_here(observed, "result", &rerun),
    )
}
