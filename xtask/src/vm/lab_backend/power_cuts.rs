//! `--power-cuts N`: the VM killed during the rollback, then a normal boot.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use super::*;
use crate::results::CheckRecord;
use crate::vm::month::{self};
use crate::vm::plan::BootKind;
use crate::vm::protocol::Event;
use crate::vm::qemu::Ending;
use crate::vm::realise::History;

/// `--power-cuts N`: SIGKILLs the VM at N instants spread over the rollback
/// of a rotation boot, then boots normally and checks that the boot
/// completes with a fresh root, /persist is intact, no old root is lost and
/// there is exactly one @root.
pub(super) fn power_cuts(run: &mut Run) -> Result<bool> {
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
            with_cut.push(crate::vm::retention::next_name(&base, now - 60));
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
            tally.checks.push(CheckRecord::new(
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
        tally.checks.push(CheckRecord::new(
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
