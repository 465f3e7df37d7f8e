//! The checks the host makes itself, outside the guest: after each boot
//! (retention, the month, mount times) and on the image (trim).

use super::*;
use crate::results::CheckRecord;
use crate::vm::collect::Collected;
use crate::vm::month::{self};
use crate::vm::plan::{BootKind, Plan};
use crate::vm::realise::{
    BootSpec, History, Realisation, RollbackTrim, ROLLBACK_TRIM_AFTER, ROLLBACK_TRIM_BEFORE,
    ROLLBACK_TRIM_BYTES, ROLLBACK_TRIM_DELETED,
};

impl Run<'_> {
    /// The host's checks of a boot that ran: retention, the month, mounts, procedures.
    pub(super) fn after_boot(&mut self, plan: &Plan, spec: &BootSpec, collected: &Collected) {
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
                if let Some(trim) = &spec.rollback_trim {
                    rollback_trim_reached_the_host(&self.session, trim, &mut self.tally, boot);
                }
                self.session.measurements.clear();
            }
            // Nothing of the installed system is mounted: no retention, no mounts.
            BootKind::Rescue => {}
        }
        if !matches!(spec.kind, BootKind::RotateOnly | BootKind::Rescue) && collected.finished {
            mount_time(&mut self.tally, boot, collected, self.budgets.mount_all_ms);
        }
    }
}

/// Roadmap 7.3: every mount of a boot against the budget (host check).
pub(super) fn mount_time(tally: &mut Tally, boot: u32, collected: &Collected, budget_ms: u64) {
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
    tally.checks.push(CheckRecord::new(
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

/// Host check: the space of the root the rollback deleted (the install's,
/// holding `ROLLBACK_TRIM_BYTES`) left the qcow2 once the host's
/// fstrim.service ran after the boot. Async discard alone does not return
/// it: the rollback deletes from a short mount in the initrd, whose pending
/// discards are dropped at unmount, and the next mount counts that free
/// space as trimmed already.
pub(super) fn rollback_trim_reached_the_host(
    session: &Session,
    trim: &RollbackTrim,
    tally: &mut Tally,
    boot: u32,
) {
    let point = |name: &str| session.measurements.get(name).map(|a| a.data_bytes);
    let (Some(before), Some(deleted), Some(after)) = (
        point(ROLLBACK_TRIM_BEFORE),
        point(ROLLBACK_TRIM_DELETED),
        point(ROLLBACK_TRIM_AFTER),
    ) else {
        tally.checks.push(CheckRecord::new(
            boot,
            "trim:rollback-freed",
            false,
            "the image was not measured before and after (the boot stopped early)".to_owned(),
            "the image measured before the rollback and after fstrim.service".to_owned(),
        ));
        return;
    };
    let freed = before.saturating_sub(after);
    // What the boot writes meanwhile (new roots: the month rotates 19 times,
    // logs) grows the image before fstrim.service runs; counted from the
    // larger of the two points before it, the boot's own writes do not hide
    // what fstrim gave back. Without fstrim the image never shrinks below
    // either, and this stays near 0.
    let given_back = before.max(deleted).saturating_sub(after);
    let without_fstrim = before.saturating_sub(deleted);
    let figures = &mut tally.figures;
    figures.insert("trim.rollback_image_before_bytes".into(), before as f64);
    figures.insert("trim.rollback_image_deleted_bytes".into(), deleted as f64);
    figures.insert("trim.rollback_image_after_bytes".into(), after as f64);
    figures.insert("trim.rollback_freed_bytes".into(), freed as f64);
    figures.insert("trim.rollback_given_back_bytes".into(), given_back as f64);
    figures.insert(
        "trim.rollback_freed_without_fstrim_bytes".into(),
        without_fstrim as f64,
    );
    let minimum = ROLLBACK_TRIM_BYTES / 10 * 9;
    let how = if trim.triggers.is_empty() {
        "the host starts no fstrim.service after the boot (services.fstrim off, no OnBootSec)"
            .to_owned()
    } else {
        format!("fstrim.service ({})", trim.triggers.join("; "))
    };
    tally.checks.push(CheckRecord::new(
        boot,
        "trim:rollback-freed",
        given_back >= minimum,
        format!(
            "qcow2 data {before} bytes before the rollback, {deleted} once its deletions were cleaned up ({without_fstrim} returned without fstrim), {after} after {how}: {freed} bytes fewer than before the rollback, {given_back} given back from the larger of the two"
        ),
        format!(
            "at least {minimum} of the {ROLLBACK_TRIM_BYTES} bytes in the root the rollback deleted given back to the host"
        ),
    ));
}

/// Host check: the qcow2 gave the deleted and trimmed probe's space back.
pub(super) fn trim_reached_the_host(
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
    tally.checks.push(CheckRecord::new(
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
