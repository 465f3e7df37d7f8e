//! `--thorough`: the checklist's procedures that reboot or reinstall, then
//! the calendar of short boots.

use anyhow::Result;

use super::*;
use crate::vm::initramfs::{self};
use crate::vm::plan::BootKind;
use crate::vm::procedure_runs::{self, LostFile, Schedule, Tier};
use crate::vm::realise::DiscardBudget;
use crate::vm::retention::DAY;

/// `--thorough`: the checklist's procedures that reboot, reinstall or
/// change /persist (their parts spread over reboots and a reinstall), then
/// the calendar of short boots.
pub(super) fn thorough(run: &mut Run, calendar_days: &[i64]) -> Result<bool> {
    if !procedures_of_tier(run, Tier::Thorough)? {
        return Ok(false);
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

/// `--drills`: the drills from the lab's rescue boot (§4.6, twice).
pub(super) fn drills(run: &mut Run) -> Result<bool> {
    procedures_of_tier(run, Tier::Drill)
}

/// The procedures of `tier`, spread over boots; whether every boot completed.
fn procedures_of_tier(run: &mut Run, tier: Tier) -> Result<bool> {
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
    let lab = procedure_runs::Lab {
        lost: Some(lost),
        ..prepared.lab.clone()
    };
    let mut schedule = Schedule::new(procedure_runs::of_tier(&prepared.procedures, tier, &lab)?);
    let mut first = true;
    while let Some(boot_procedures) = schedule.next_boot(&run.tally.captured) {
        let kind = if boot_procedures.install {
            BootKind::Install
        } else if boot_procedures.rescue {
            BootKind::Rescue
        } else {
            BootKind::Rotate
        };
        let mut spec = run.spec(kind, Vec::new());
        spec.continued = boot_procedures.continued;
        spec.procedures = boot_procedures.started;
        // Roadmap 7.2, unless the month's boot had it: the procedures'
        // commands fill most of the 10 s the release waits for.
        if first
            && tier == Tier::Thorough
            && kind == BootKind::Rotate
            && !run.session.options.discard_probe
        {
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
    Ok(true)
}
