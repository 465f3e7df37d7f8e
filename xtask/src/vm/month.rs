//! A month of boots: the guest's clock jumps between boots (qemu's `-rtc
//! base=`, which the kernel's RTC driver sets the clock from), so that old
//! roots age past the retention in real rotations, and every rotation is
//! held against the retention model (`super::retention`) by the host.
//!
//! The default run needs one boot for it, its second: it starts
//! `retentionDays + 10` days after the install, so its first rotation moves
//! the root the install boot used all that time (a long uptime) to a name
//! of that day. Then `keepAtLeast` more rotations within that second push
//! the long-uptime root out of the newest `keepAtLeast`, where it is kept
//! by its name's age though its contents are older. Then the month holds old
//! roots on both sides of every boundary, so that a script with any of them
//! wrong disagrees with the model: roots one day less one second, one day
//! and two days after the first, and `keepAtLeast` more three days after
//! it; a rotation `retentionDays + 1` days after the first finds one of them
//! one second past the retention (deleted), one exactly at it and one a day
//! within it (both kept, outside the newest), and the first second's roots
//! past it (deleted); one more, `retentionDays` days and a second after that
//! rotation, finds every root past the retention, and keeps exactly the
//! newest `keepAtLeast` (counting its own). (A retention under 4 days keeps
//! the simpler month: one rotation `retentionDays + 1` days on.) Then the
//! clock checks: a run with the clock one second behind the newest old root
//! (implausible: deletes nothing, names after the newest), one 20 years back
//! (a dead RTC, before 2026), and one exactly at the newest's second
//! (plausible: the roots past retention outside the newest go), each with the
//! clock state the status must show.
//! `--thorough` adds a calendar of short boots (rollback only) spread over
//! more than three retention periods.

use std::collections::BTreeMap;

use super::collect::Collected;
use super::retention::{self, Fate, Rules, Stamp, DAY};
use crate::results::CheckRecord;

/// How far past the retention the long uptime goes.
pub const UPTIME_BEYOND_RETENTION_DAYS: u64 = 10;
/// The boot of the default run that carries the month.
pub const MONTH_BOOT: u32 = 2;
/// The script's `-NN` suffixes end at 99 within one second.
const MAX_SAME_SECOND_RUNS: u64 = 99;
/// How far behind the month a run sets the clock, as a dead RTC battery
/// would: 20 years, before 2026 whatever the lab's calendar.
const DEAD_RTC_BEHIND_S: i64 = 20 * 365 * DAY;

/// The default run's month, in boot `MONTH_BOOT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Month {
    /// Seconds the clock jumps before the month's boot.
    pub jump_s: i64,
    /// The rollback runs after the first: seconds after the first run's
    /// second (`RollbackStep::extra_runs`).
    pub extra_runs: Vec<i64>,
}

impl Month {
    /// How far the last run set the clock past the first run.
    pub fn stepped_s(&self) -> i64 {
        self.extra_runs.iter().copied().max().unwrap_or(0)
    }
}

pub fn month(rules: Rules) -> Month {
    let same_second = rules.keep_at_least.clamp(1, MAX_SAME_SECOND_RUNS) as usize;
    let retention = rules.retention_days as i64 * DAY;
    let mut extra_runs = vec![0; same_second];
    let last = if rules.retention_days >= 4 {
        extra_runs.extend([DAY - 1, DAY, 2 * DAY]);
        extra_runs.extend(std::iter::repeat_n(3 * DAY, same_second));
        let boundary = retention + DAY;
        extra_runs.push(boundary);
        boundary + retention + 1
    } else {
        retention + DAY
    };
    extra_runs.push(last);
    // The clock checks: one second behind the newest old root (implausible:
    // nothing deleted, the name after the newest), a dead RTC's clock years
    // before 2026, then exactly the newest's second (plausible: retention
    // deletes), which also leaves the clock where the month ends.
    extra_runs.extend([last - 1, last - DEAD_RTC_BEHIND_S, last]);
    Month {
        jump_s: (rules.retention_days + UPTIME_BEYOND_RETENTION_DAYS) as i64 * DAY,
        extra_runs,
    }
}

/// `--thorough`'s calendar: days after its start at which a short boot
/// rotates, for retention 30 (scaled for others): weekly for five weeks,
/// then a long power-off.
pub fn calendar(rules: Rules) -> Vec<i64> {
    let mut days: Vec<i64> = [3u64, 10, 17, 24, 31, 38, 100]
        .iter()
        .map(|d| (d * rules.retention_days.max(1)).div_ceil(30).max(1) as i64)
        .collect();
    days.dedup();
    days
}

/// The old roots after a boot's rotations as the model expects them (the
/// first at `now`, the others at its second plus `extra_runs`): for the
/// plan's count.
pub fn predict(rules: Rules, before: &[String], now: i64, extra_runs: &[i64]) -> Vec<String> {
    let mut roots = before.to_vec();
    let mut first = None;
    for clock in std::iter::once(None).chain(extra_runs.iter().map(Some)) {
        let at = match (clock, first) {
            (Some(offset), Some(second)) => second + offset,
            _ => now,
        };
        let name = retention::next_name(&roots, at);
        let moved = Stamp::parse(&name).map_or(at, |s| s.epoch);
        first.get_or_insert(moved);
        roots.push(name);
        roots = retention::apply(rules, &roots, at).kept();
    }
    roots
}

/// One rollback run as the guest reported it (`rollback_run:<n>`).
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub run: u32,
    pub status: BTreeMap<String, String>,
    pub old_roots: Option<Vec<String>>,
    pub clock_set_to: Option<i64>,
}

/// The runs of a boot, in order.
pub fn runs(collected: &Collected) -> Vec<Run> {
    let mut runs: Vec<Run> = collected
        .data
        .iter()
        .filter(|(name, _)| name.starts_with("rollback_run:"))
        .filter_map(|(_, value)| {
            Some(Run {
                run: value.get("run")?.as_u64()? as u32,
                status: serde_json::from_value(value.get("status")?.clone()).ok()?,
                old_roots: value
                    .get("old_roots")
                    .and_then(|v| serde_json::from_value(v.clone()).ok()),
                clock_set_to: value.get("clock_set_to").and_then(|v| v.as_i64()),
            })
        })
        .collect();
    runs.sort_by_key(|r| r.run);
    runs
}

/// The model's verdict on one run, and whether the guest agreed.
#[derive(Debug, Clone, PartialEq)]
pub struct Judged {
    pub run: u32,
    pub moved: String,
    /// The clock the run was given (`None`: the boot's own), the newest old
    /// root before it, and whether the model trusts that clock.
    pub clock_set_to: Option<i64>,
    pub newest_before: Option<Stamp>,
    pub plausible: bool,
    pub verdict: retention::Verdict,
    pub agreed: bool,
    /// Old roots after the run, oldest first.
    pub after: Vec<String>,
}

/// Holds every run of a boot against the model: `before` is what the last
/// boot left in @old_roots, `last` what this boot found after its last run.
pub fn judge(
    rules: Rules,
    boot: u32,
    before: &[String],
    runs: &[Run],
    last: Option<&[String]>,
) -> (Vec<CheckRecord>, Vec<Judged>) {
    let mut checks = Vec::new();
    let mut judged = Vec::new();
    let mut before: Vec<String> = before.to_vec();
    let count = runs.len();
    for (index, run) in runs.iter().enumerate() {
        let name = format!("retention:run{}", run.run);
        let after = match (&run.old_roots, index + 1 == count) {
            (Some(list), _) => list.clone(),
            (None, true) => match last {
                Some(list) => list.to_vec(),
                None => break,
            },
            (None, false) => break,
        };
        let moved = run.status.get("rotated_to").cloned().unwrap_or_default();
        let Some(stamp) = Stamp::parse(&moved) else {
            checks.push(CheckRecord::new(
                boot,
                &name,
                false,
                format!("the run moved no root (rotated_to={moved:?})"),
                "a root moved to a name of the form YYYYMMDDTHHMMSSZ[-NN]".to_owned(),
            ));
            break;
        };
        let mut problems = Vec::new();
        if before
            .iter()
            .any(|b| Stamp::parse(b).is_some_and(|s| s >= stamp))
        {
            problems.push(format!("{moved} does not sort after every earlier name"));
        }
        if let Some(second) = run.clock_set_to {
            let wanted = retention::next_name(&before, second);
            if moved != wanted {
                problems.push(format!(
                    "with the clock at {} the name must be {wanted}, not {moved}",
                    Stamp {
                        epoch: second,
                        suffix: 0
                    }
                    .name()
                ));
            }
        }
        // The clock the script read: the one the guest set, else the first
        // run's, which named the root by it (or after the newest).
        let now = run.clock_set_to.unwrap_or(stamp.epoch);
        let newest_before = before.iter().filter_map(|n| Stamp::parse(n)).max();
        let plausible = retention::clock_plausible(now, newest_before);
        if let Some(clock) = run.status.get("clock") {
            let wanted = if plausible { "ok" } else { "implausible" };
            if clock != wanted {
                problems.push(format!(
                    "clock={clock}, but the clock at {} against the newest old root {} is {wanted}",
                    Stamp {
                        epoch: now,
                        suffix: 0
                    }
                    .name(),
                    newest_before.map_or("(none)".to_owned(), |s| s.name())
                ));
            }
        }
        let mut input = before.clone();
        input.push(moved.clone());
        let verdict = retention::apply(rules, &input, now);
        let expected = verdict.kept();
        let observed: Vec<String> = {
            let mut list: Vec<String> = after
                .iter()
                .filter(|n| Stamp::parse(n).is_some())
                .cloned()
                .collect();
            list.sort();
            list
        };
        let missing: Vec<&String> = expected.iter().filter(|n| !observed.contains(n)).collect();
        let extra: Vec<&String> = observed.iter().filter(|n| !expected.contains(n)).collect();
        if !missing.is_empty() {
            problems.push(format!("deleted but must be kept: {}", join(&missing)));
        }
        if !extra.is_empty() {
            problems.push(format!("kept but must be deleted: {}", join(&extra)));
        }
        let agreed = problems.is_empty();
        let deleted = verdict.deleted();
        checks.push(CheckRecord::new(
            boot,
            &name,
            agreed,
            format!(
                "moved to {moved}{}; {} old roots: {}{}",
                run.clock_set_to
                    .map(|c| format!(
                        " (clock set to {}{})",
                        Stamp {
                            epoch: c,
                            suffix: 0
                        }
                        .name(),
                        if plausible { "" } else { ", implausible" }
                    ))
                    .unwrap_or_default(),
                observed.len(),
                observed.join(" "),
                if agreed {
                    String::new()
                } else {
                    format!("; {}", problems.join("; "))
                }
            ),
            format!(
                "{} kept ({}), deleted: {} (age from the name; retention {} days, keep at least {})",
                expected.len(),
                describe_fates(&verdict),
                if deleted.is_empty() {
                    "none".to_owned()
                } else {
                    deleted.join(" ")
                },
                rules.retention_days,
                rules.keep_at_least
            ),
        ));
        judged.push(Judged {
            run: run.run,
            moved,
            clock_set_to: run.clock_set_to,
            newest_before,
            plausible,
            verdict,
            agreed,
            after: observed.clone(),
        });
        before = observed;
    }
    (checks, judged)
}

fn join(names: &[&String]) -> String {
    names
        .iter()
        .map(|n| n.as_str())
        .collect::<Vec<_>>()
        .join(" ")
}

fn describe_fates(verdict: &retention::Verdict) -> String {
    let count = |fate: Fate| verdict.roots.iter().filter(|(_, f)| *f == fate).count();
    let mut parts = vec![format!("{} within retention", count(Fate::Young))];
    let protected = count(Fate::KeptAmongNewest);
    if protected > 0 {
        parts.push(format!("{protected} past it but among the newest"));
    }
    let clock = count(Fate::ClockImplausible);
    if clock > 0 {
        parts.push(format!("{clock} kept for an implausible clock"));
    }
    parts.join(", ")
}

/// Whether the month's boot showed each rule at work, in runs the guest
/// agreed with the model on: without these a scenario that never reaches a
/// rule would pass a script that breaks it.
pub fn coverage(rules: Rules, boot: u32, judged: &[Judged], uptime_days: u64) -> Vec<CheckRecord> {
    let agreed: Vec<&Judged> = judged.iter().filter(|j| j.agreed).collect();
    vec![
        deletion(rules, boot, &agreed),
        keep_at_least(rules, boot, &agreed),
        long_uptime(rules, boot, judged, &agreed, uptime_days),
        retention_boundary(rules, boot, &agreed),
        clock_boundary(boot, &agreed),
        same_second(boot, judged),
    ]
}

/// The month deleted what retention says.
fn deletion(rules: Rules, boot: u32, agreed: &[&Judged]) -> CheckRecord {
    let deleted = agreed.iter().find(|j| !j.verdict.deleted().is_empty());
    CheckRecord::new(
        boot,
        "month:deletion",
        deleted.is_some(),
        deleted.map_or(
            "no run deleted an old root past retention as the model says".to_owned(),
            |j| {
                format!(
                    "run {} deleted {} (past {} days, not among the newest {})",
                    j.run,
                    j.verdict.deleted().join(" "),
                    rules.retention_days,
                    rules.keep_at_least
                )
            },
        ),
        "a run deletes the roots past retention that are not among the newest".to_owned(),
    )
}

/// keepAtLeast protected a root past retention.
fn keep_at_least(rules: Rules, boot: u32, agreed: &[&Judged]) -> CheckRecord {
    let protected = agreed
        .iter()
        .find(|j| !j.verdict.with(|f| f == Fate::KeptAmongNewest).is_empty());
    CheckRecord::new(
        boot,
        "month:keep-at-least",
        protected.is_some() || rules.keep_at_least == 0,
        match protected {
            Some(j) => format!(
                "run {} kept {} past retention among the newest {}",
                j.run,
                j.verdict.with(|f| f == Fate::KeptAmongNewest).join(" "),
                rules.keep_at_least
            ),
            None if rules.keep_at_least == 0 => "keepAtLeast is 0: nothing to protect".to_owned(),
            None => "no run kept a root past retention among the newest".to_owned(),
        },
        format!(
            "a root past retention is kept while it is among the newest {}",
            rules.keep_at_least
        ),
    )
}

/// The long-uptime root is kept by its name's age.
fn long_uptime(
    rules: Rules,
    boot: u32,
    judged: &[Judged],
    agreed: &[&Judged],
    uptime_days: u64,
) -> CheckRecord {
    // The root run 1 moved held the last boot's files, unchanged for the
    // whole uptime; it must be young by its name even outside the newest.
    let long = judged.first().map(|j| j.moved.clone()).unwrap_or_default();
    let outside = agreed.iter().find(|j| {
        let index = j.after.iter().position(|n| *n == long);
        index.is_some_and(|i| {
            (i as u64) < (j.after.len() as u64).saturating_sub(rules.keep_at_least)
        })
    });
    CheckRecord::new(
        boot,
        "month:long-uptime",
        outside.is_some() && judged.iter().all(|j| j.agreed),
        match outside {
            Some(j) => format!(
                "{long} (the root of a boot {uptime_days} days up) kept at run {} outside the newest {}: its age is its name's",
                j.run, rules.keep_at_least
            ),
            None => format!("{long} was never outside the newest {} in an agreed run", rules.keep_at_least),
        },
        format!(
            "the root left after {uptime_days} days of uptime is kept by its name's age, also when it is not among the newest"
        ),
    )
}

/// Both sides of the retention.
fn retention_boundary(rules: Rules, boot: u32, agreed: &[&Judged]) -> CheckRecord {
    // Both sides of the retention in one agreed run: a root exactly the
    // retention old kept, one a second older deleted.
    let retention = rules.retention_days as i64 * DAY;
    let fate_at = |j: &Judged, age: i64| {
        let now = Stamp::parse(&j.moved)?.epoch;
        j.verdict
            .roots
            .iter()
            .find(|(n, _)| Stamp::parse(n).is_some_and(|s| now - s.epoch == age))
            .map(|(_, f)| *f)
    };
    let boundary = agreed.iter().find(|j| {
        fate_at(j, retention) == Some(Fate::Young)
            && fate_at(j, retention + 1) == Some(Fate::Deleted)
    });
    CheckRecord::new(
        boot,
        "month:retention-boundary",
        boundary.is_some() || rules.retention_days < 4,
        match boundary {
            Some(j) => format!(
                "run {} kept the root exactly {} days old and deleted the one a second older",
                j.run, rules.retention_days
            ),
            None if rules.retention_days < 4 => "a retention under 4 days: the simpler month".to_owned(),
            None => "no agreed run held roots on both sides of the retention".to_owned(),
        },
        format!(
            "a root exactly {} days old is kept, one a second older is deleted (when not among the newest)",
            rules.retention_days
        ),
    )
}

/// Both sides of the clock check.
fn clock_boundary(boot: u32, agreed: &[&Judged]) -> CheckRecord {
    // Both sides of the check against the newest old root: a clock one
    // second behind it deletes nothing, one at its very second deletes what
    // retention says.
    let behind = |j: &&&Judged, by: i64| {
        j.clock_set_to
            .zip(j.newest_before)
            .is_some_and(|(c, n)| n.epoch - c == by)
    };
    let one_behind = agreed.iter().find(|j| behind(j, 1) && !j.plausible);
    let at_newest = agreed
        .iter()
        .find(|j| behind(j, 0) && j.plausible && !j.verdict.deleted().is_empty());
    CheckRecord::new(
        boot,
        "month:clock-boundary",
        one_behind.is_some() && at_newest.is_some(),
        match (one_behind, at_newest) {
            (Some(b), Some(a)) => format!(
                "run {} (clock a second behind {}) deleted nothing; run {} (clock at {}'s second) deleted {}",
                b.run,
                b.newest_before.map(|s| s.name()).unwrap_or_default(),
                a.run,
                a.newest_before.map(|s| s.name()).unwrap_or_default(),
                a.verdict.deleted().join(" ")
            ),
            (None, _) => "no agreed run with the clock a second behind the newest old root".to_owned(),
            (_, None) => "no agreed run with the clock at the newest old root's second that deleted".to_owned(),
        },
        "a clock a second behind the newest old root is implausible (deletes nothing); one at its second is not".to_owned(),
    )
}

/// Rotations within one second, named in order.
fn same_second(boot: u32, judged: &[Judged]) -> CheckRecord {
    let first = judged.first().and_then(|j| Stamp::parse(&j.moved));
    let burst: Vec<Option<Stamp>> = judged
        .iter()
        .skip(1)
        .map(|j| Stamp::parse(&j.moved))
        .take_while(|s| s.zip(first).is_some_and(|(s, f)| s.epoch == f.epoch))
        .collect();
    let same = first.is_some_and(|f| {
        !burst.is_empty()
            && burst
                .iter()
                .enumerate()
                .all(|(i, s)| s.is_some_and(|s| s.suffix as usize == i + 1 + f.suffix as usize))
    });
    CheckRecord::new(
        boot,
        "month:same-second",
        same && judged.iter().all(|j| j.agreed),
        judged
            .iter()
            .map(|j| j.moved.clone())
            .collect::<Vec<_>>()
            .join(" "),
        "rotations within one second get that second's name with -01, -02, … in order".to_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_796_133_039;
    const RULES: Rules = Rules {
        retention_days: 30,
        keep_at_least: 5,
    };

    fn name(epoch: i64, suffix: u8) -> String {
        Stamp { epoch, suffix }.name()
    }

    fn status(rotated_to: &str) -> BTreeMap<String, String> {
        [("rotated_to".to_owned(), rotated_to.to_owned())].into()
    }

    /// What a correct script does in the month's boot.
    fn correct_month(before: &[String], now: i64) -> Vec<Run> {
        script_month(before, now, |roots, at| {
            retention::apply(RULES, roots, at).kept()
        })
    }

    /// The month's boot under a script that keeps what `keeps` says of the
    /// old roots (with the moved one) at the time of each move.
    fn script_month(
        before: &[String],
        now: i64,
        keeps: impl Fn(&[String], i64) -> Vec<String>,
    ) -> Vec<Run> {
        script_month_clock(before, now, retention::clock_plausible, |roots, at, _| {
            keeps(roots, at)
        })
    }

    /// `script_month` under a script whose clock check is `plausible`;
    /// `keeps` learns what it said.
    fn script_month_clock(
        before: &[String],
        now: i64,
        plausible: impl Fn(i64, Option<Stamp>) -> bool,
        keeps: impl Fn(&[String], i64, bool) -> Vec<String>,
    ) -> Vec<Run> {
        let plan = month(RULES);
        let mut roots = before.to_vec();
        let mut runs = Vec::new();
        let offsets: Vec<Option<i64>> = std::iter::once(None)
            .chain(plan.extra_runs.iter().map(|o| Some(*o)))
            .collect();
        for (index, offset) in offsets.into_iter().enumerate() {
            let clock = offset.map(|o| now + o);
            let at = clock.unwrap_or(now);
            let trusted = plausible(at, roots.iter().filter_map(|n| Stamp::parse(n)).max());
            let moved = retention::next_name(&roots, at);
            roots.push(moved.clone());
            roots = keeps(&roots, at, trusted);
            let mut status = status(&moved);
            status.insert(
                "clock".to_owned(),
                if trusted { "ok" } else { "implausible" }.to_owned(),
            );
            runs.push(Run {
                run: index as u32 + 1,
                status,
                old_roots: Some(roots.clone()),
                clock_set_to: clock,
            });
        }
        runs
    }

    /// Retention as the rules say, with the clock trusted as the script did.
    fn trusting(roots: &[String], at: i64, trusted: bool) -> Vec<String> {
        retention::apply_trusting(RULES, roots, at, trusted).kept()
    }

    /// Whether the month fails a script: a check or a coverage check.
    fn month_fails(runs: &[Run]) -> bool {
        let (checks, judged) = judge(RULES, 2, &[], runs, None);
        checks.iter().any(|c| !c.passed)
            || coverage(RULES, 2, &judged, 40).iter().any(|c| !c.passed)
    }

    #[test]
    fn the_default_month_shows_every_rule_with_the_host_settings() {
        let plan = month(RULES);
        assert_eq!(plan.jump_s, 40 * DAY);
        assert_eq!(
            plan.extra_runs,
            [
                0,
                0,
                0,
                0,
                0,
                DAY - 1,
                DAY,
                2 * DAY,
                3 * DAY,
                3 * DAY,
                3 * DAY,
                3 * DAY,
                3 * DAY,
                31 * DAY,
                61 * DAY + 1,
                61 * DAY,
                61 * DAY + 1 - 20 * 365 * DAY,
                61 * DAY + 1
            ]
        );
        // The month's boot starts right after the install: no old roots.
        let now = T0 + plan.jump_s + 7;
        let runs = correct_month(&[], now);
        let (checks, judged) = judge(RULES, 2, &[], &runs, None);
        assert!(checks.iter().all(|c| c.passed), "{checks:#?}");
        assert_eq!(checks.len(), 19);
        let coverage = coverage(RULES, 2, &judged, 40);
        assert!(coverage.iter().all(|c| c.passed), "{coverage:#?}");
        assert_eq!(coverage.len(), 6);
        // Run 15: the first second's six roots and the one a second past
        // the retention go; the one exactly at it and the one a day within
        // it stay, outside the newest five.
        let mut gone: Vec<String> = (0..6).map(|s| name(now, s)).collect();
        gone.push(name(now + DAY - 1, 0));
        assert_eq!(judged[14].verdict.deleted(), gone);
        assert_eq!(
            judged[14].verdict.with(|f| f == Fate::Young)[..2],
            [name(now + DAY, 0), name(now + 2 * DAY, 0)]
        );
        // Run 16: everything is past retention but its own root; exactly
        // the newest five stay.
        assert_eq!(judged[15].after.len(), 5);
        assert_eq!(
            judged[15]
                .verdict
                .with(|f| f == Fate::KeptAmongNewest)
                .len(),
            4
        );
        // Runs 17 and 18: the clock a second behind the newest, then 20
        // years back: implausible, nothing deleted, named after the newest.
        // Run 19, at the newest's second: the three oldest go.
        let newest = now + 61 * DAY + 1;
        for (run, suffix) in [(16, 1), (17, 2)] {
            assert!(!judged[run].plausible);
            assert!(judged[run].verdict.deleted().is_empty());
            assert_eq!(judged[run].moved, name(newest, suffix));
            assert_eq!(runs[run].status["clock"], "implausible");
        }
        assert!(judged[18].plausible);
        assert_eq!(judged[18].moved, name(newest, 3));
        assert_eq!(judged[18].verdict.deleted().len(), 3);
        assert_eq!(judged[18].after.len(), 5);
        // The prediction for the plan agrees.
        assert_eq!(predict(RULES, &[], now, &plan.extra_runs), judged[18].after);
        assert_eq!(predict(RULES, &[], now, &[]).len(), 1);
    }

    #[test]
    fn a_wrong_boundary_fails_the_month() {
        let now = T0 + 40 * DAY;
        assert!(!month_fails(&correct_month(&[], now)));
        // Retention 3 days instead of 30, 29 or 31; keepAtLeast 4 or 6.
        for (retention_days, keep_at_least) in [(3, 5), (29, 5), (31, 5), (30, 4), (30, 6)] {
            let wrong = Rules {
                retention_days,
                keep_at_least,
            };
            let runs = script_month(&[], now, |roots, at| {
                retention::apply(wrong, roots, at).kept()
            });
            assert!(month_fails(&runs), "{wrong:?} passes the month");
        }
        // The runs xtask/tests/vm_test.rs's tampered scripts fail at.
        for (retention_days, keep_at_least, run, what) in [
            (3, 5, 15, "deleted but must be kept"),
            (999_999, 5, 15, "kept but must be deleted"),
            (30, 0, 16, "deleted but must be kept"),
        ] {
            let wrong = Rules {
                retention_days,
                keep_at_least,
            };
            let runs = script_month(&[], now, |roots, at| {
                retention::apply(wrong, roots, at).kept()
            });
            let (checks, _) = judge(RULES, 2, &[], &runs, None);
            let first = checks.iter().position(|c| !c.passed).unwrap();
            assert_eq!(first + 1, run, "{wrong:?}: {:?}", checks[first]);
            assert!(checks[first].measured.contains(what), "{:?}", checks[first]);
        }
        // The cutoff one second off either way: a root exactly the
        // retention old deleted, or one a second older kept.
        for shift in [-1, 1] {
            let runs = script_month(&[], now, |roots, at| {
                retention::apply(RULES, roots, at + shift).kept()
            });
            assert!(
                month_fails(&runs),
                "a cutoff shifted by {shift} s passes the month"
            );
        }
        // The clock check against the newest old root a second off either
        // way, or missing; the floor moved past the lab's calendar.
        let off_by = |shift: i64| {
            move |at: i64, newest: Option<Stamp>| retention::clock_plausible(at + shift, newest)
        };
        for (what, runs) in [
            (
                "a second lenient",
                script_month_clock(&[], now, off_by(1), trusting),
            ),
            (
                "a second strict",
                script_month_clock(&[], now, off_by(-1), trusting),
            ),
            (
                "no check against the newest",
                script_month_clock(
                    &[],
                    now,
                    |at, _| retention::clock_plausible(at, None),
                    trusting,
                ),
            ),
            (
                "a floor in 2028",
                script_month_clock(
                    &[],
                    now,
                    |at, n| at >= 1_830_297_600 && retention::clock_plausible(at, n),
                    trusting,
                ),
            ),
        ] {
            assert!(month_fails(&runs), "a clock check {what} passes the month");
        }
        // The one xtask/tests/vm_test.rs tampers the script with, with a
        // 3-day retention in the same boot: each fails its own run.
        let runs = script_month_clock(&[], now, off_by(1), |roots, at, trusted| {
            retention::apply_trusting(
                Rules {
                    retention_days: 3,
                    ..RULES
                },
                roots,
                at,
                trusted,
            )
            .kept()
        });
        let (checks, _) = judge(RULES, 2, &[], &runs, None);
        assert!(
            checks[14].measured.contains("deleted but must be kept"),
            "{:?}",
            checks[14]
        );
        assert!(
            checks[16].measured.contains("clock=ok, but"),
            "{:?}",
            checks[16]
        );
        assert!(
            checks[16].measured.contains("deleted but must be kept"),
            "{:?}",
            checks[16]
        );
        // keepAtLeast not counting the root moved at this boot.
        let runs = script_month(&[], now, |roots, at| {
            let before = &roots[..roots.len() - 1];
            let mut kept = retention::apply(RULES, before, at).kept();
            kept.push(roots[roots.len() - 1].clone());
            kept
        });
        assert!(
            month_fails(&runs),
            "keepAtLeast without the new root passes"
        );
    }

    #[test]
    fn a_script_that_never_deletes_or_deletes_the_newest_disagrees() {
        let now = T0 + 40 * DAY;
        let runs = script_month(&[], now, |roots, _| roots.to_vec());
        assert!(month_fails(&runs));
        let (_, judged) = judge(RULES, 2, &[], &runs, None);
        assert!(!coverage(RULES, 2, &judged, 40)[0].passed);
        let mut runs = correct_month(&[], now);
        runs[0].old_roots = Some(Vec::new());
        let (checks, _) = judge(RULES, 2, &[], &runs, None);
        assert!(!checks[0].passed, "{:?}", checks[0]);
        let mut runs = correct_month(&[], now);
        runs[1].status = status(&name(now + 1, 0));
        let (checks, _) = judge(RULES, 2, &[], &runs, None);
        assert!(
            checks[1].measured.contains("the name must be"),
            "{:?}",
            checks[1]
        );
        // A script that judges age by contents (the root made at the
        // install) would delete the long-uptime root at run 6.
        let mut runs = correct_month(&[], now);
        runs[5].old_roots.as_mut().unwrap().remove(0);
        let (checks, judged) = judge(RULES, 2, &[], &runs, None);
        assert!(!checks[5].passed);
        assert!(!coverage(RULES, 2, &judged, 40)[2].passed);
    }

    #[test]
    fn the_last_run_may_use_the_boots_own_listing() {
        let before = vec![name(T0, 0)];
        let runs = vec![Run {
            run: 1,
            status: status(&name(T0 + 60, 0)),
            old_roots: None,
            clock_set_to: None,
        }];
        let last = vec![name(T0, 0), name(T0 + 60, 0)];
        let (checks, _) = judge(RULES, 2, &before, &runs, Some(&last));
        assert!(checks[0].passed, "{:?}", checks[0]);
        let (checks, _) = judge(RULES, 2, &before, &runs, None);
        assert!(checks.is_empty());
    }

    #[test]
    fn the_calendar_scales_with_the_retention() {
        assert_eq!(calendar(RULES), [3, 10, 17, 24, 31, 38, 100]);
        let short = Rules {
            retention_days: 1,
            keep_at_least: 5,
        };
        assert_eq!(calendar(short), [1, 2, 4]);
    }
}
