//! What a run tells as it goes: each boot's times as it ends. Collecting
//! (`Tally`) never prints; the run hands each recorded boot to the
//! `Reporter` its caller chose, so a caller that reports the results itself
//! (bench) can run quietly.

use crate::results::BootRecord;
use crate::vm::collect::Collected;

/// Who hears of each boot as it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Reporter {
    /// A line per boot and its steps' times on stderr (`cargo xtask vm-test`).
    #[default]
    Stderr,
    /// Nothing: the caller reports from the results.
    Quiet,
}

impl Reporter {
    /// A boot whose agent ran, as recorded (its checks from `collected`).
    pub fn boot(self, record: &BootRecord, collected: &Collected, boots: u32) {
        match self {
            Reporter::Stderr => print_boot(record, collected, boots),
            Reporter::Quiet => {}
        }
    }
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
