//! The rollback's retention rules as docs/rollback.md states them, as a
//! model the host holds each rotation against: an old root's age comes from
//! its name (the time it was moved), never from its contents; one is deleted
//! when it is older than `retentionDays` and not among the newest
//! `keepAtLeast` (the root moved by this run counts among them); exactly
//! `retentionDays` old is not past retention; an implausible clock deletes
//! nothing. The script (nix/modules/btrfs-rollback/rollback.sh) is what runs;
//! this model is what it must agree with.

use std::fmt;

pub use lab_protocol::stamp::{clock_plausible, CLOCK_CEILING, CLOCK_FLOOR};
pub const DAY: i64 = 86_400;

pub use lab_protocol::stamp::Stamp;

/// `boot.btrfsRollback.retentionDays` and `keepAtLeast`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    pub retention_days: u64,
    pub keep_at_least: u64,
}

/// Why a root was kept, or that it was deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Within retention (by its name).
    Young,
    /// Past retention, but among the newest `keepAtLeast`.
    KeptAmongNewest,
    /// Past retention and not among the newest: deleted.
    Deleted,
    /// The clock is implausible: nothing is deleted.
    ClockImplausible,
}

impl fmt::Display for Fate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Fate::Young => "within retention",
            Fate::KeptAmongNewest => "past retention, kept among the newest",
            Fate::Deleted => "deleted",
            Fate::ClockImplausible => "kept (clock implausible)",
        })
    }
}

/// The model's verdict on each old root, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub roots: Vec<(String, Fate)>,
}

impl Verdict {
    pub fn kept(&self) -> Vec<String> {
        self.with(|fate| fate != Fate::Deleted)
    }

    pub fn deleted(&self) -> Vec<String> {
        self.with(|fate| fate == Fate::Deleted)
    }

    pub fn with(&self, wanted: impl Fn(Fate) -> bool) -> Vec<String> {
        self.roots
            .iter()
            .filter(|(_, fate)| wanted(*fate))
            .map(|(name, _)| name.clone())
            .collect()
    }
}

/// The fate of every old root after a rotation at `now`. `roots` are the
/// names in @old_roots after the move (this run's root included); names
/// that are not old roots are not the model's business and are left out.
pub fn apply(rules: Rules, roots: &[String], now: i64) -> Verdict {
    // The clock check looks at the old roots before this run's move: all
    // but the newest, which is the moved one.
    let newest_before = roots
        .iter()
        .filter_map(|name| Stamp::parse(name))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .rev()
        .nth(1);
    apply_trusting(rules, roots, now, clock_plausible(now, newest_before))
}

/// `apply` with the clock trusted or not as `plausible` says (what a script
/// with another clock check would do).
pub fn apply_trusting(rules: Rules, roots: &[String], now: i64, plausible: bool) -> Verdict {
    let mut parsed: Vec<(Stamp, &String)> = roots
        .iter()
        .filter_map(|name| Some((Stamp::parse(name)?, name)))
        .collect();
    parsed.sort();
    let count = parsed.len() as u64;
    let oldest_kept_index = count.saturating_sub(rules.keep_at_least);
    let cutoff = now.saturating_sub(rules.retention_days as i64 * DAY);
    let roots = parsed
        .into_iter()
        .enumerate()
        .map(|(index, (stamp, name))| {
            let past = stamp.epoch < cutoff;
            let fate = if !plausible {
                Fate::ClockImplausible
            } else if !past {
                Fate::Young
            } else if (index as u64) < oldest_kept_index {
                Fate::Deleted
            } else {
                Fate::KeptAmongNewest
            };
            (name.clone(), fate)
        })
        .collect();
    Verdict { roots }
}

/// The name the script gives a root moved at `now` when `existing` are
/// there: `now`'s second, or the next free suffix of the newest name.
pub fn next_name(existing: &[String], now: i64) -> String {
    let newest = existing.iter().filter_map(|n| Stamp::parse(n)).max();
    let stamp = match newest {
        Some(newest) if newest.epoch >= now || !clock_plausible(now, Some(newest)) => {
            if newest.suffix < 99 {
                Stamp {
                    epoch: newest.epoch,
                    suffix: newest.suffix + 1,
                }
            } else {
                Stamp {
                    epoch: newest.epoch + 1,
                    suffix: 0,
                }
            }
        }
        None if !clock_plausible(now, None) => Stamp {
            epoch: CLOCK_FLOOR,
            suffix: 0,
        },
        _ => Stamp {
            epoch: now,
            suffix: 0,
        },
    };
    stamp.name()
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_796_133_039; // 2026-12-01T13:50:39Z

    fn name(epoch: i64, suffix: u8) -> String {
        Stamp { epoch, suffix }.name()
    }

    #[test]
    fn names_parse_as_the_script_reads_them() {
        let stamp = Stamp::parse("20261201T135039Z").unwrap();
        assert_eq!(
            stamp,
            Stamp {
                epoch: T0,
                suffix: 0
            }
        );
        assert_eq!(Stamp::parse("20261201T135039Z-07").unwrap().suffix, 7);
        assert_eq!(stamp.name(), "20261201T135039Z");
        for bad in [
            "20261201T135039Z-00",
            "20261201T135039Z-7",
            "20260230T000000Z",
            "19691231T235959Z",
            "20261201T245039Z",
            "manual-backup",
            "20261201T135039",
        ] {
            assert_eq!(Stamp::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn past_retention_and_not_among_the_newest_is_deleted() {
        let rules = Rules {
            retention_days: 30,
            keep_at_least: 2,
        };
        let now = T0 + 40 * DAY;
        let roots = vec![
            name(T0, 0),
            name(T0 + 5, 0),
            name(T0 + 20 * DAY, 0),
            name(now, 0),
        ];
        let verdict = apply(rules, &roots, now);
        assert_eq!(verdict.deleted(), [name(T0, 0), name(T0 + 5, 0)]);
        assert_eq!(verdict.roots[2].1, Fate::Young);
        // keepAtLeast protects roots past retention.
        let rules = Rules {
            keep_at_least: 5,
            ..rules
        };
        let verdict = apply(rules, &roots, now);
        assert!(verdict.deleted().is_empty());
        assert_eq!(verdict.roots[0].1, Fate::KeptAmongNewest);
    }

    #[test]
    fn exactly_the_retention_is_not_past_it() {
        let rules = Rules {
            retention_days: 30,
            keep_at_least: 0,
        };
        let now = T0 + 30 * DAY;
        let verdict = apply(rules, &[name(T0, 0), name(T0 - 1, 0), name(now, 0)], now);
        assert_eq!(verdict.deleted(), [name(T0 - 1, 0)]);
    }

    #[test]
    fn the_age_comes_from_the_name_so_a_long_uptime_root_is_young() {
        // Created 40 days ago, moved now: named now, so within retention even
        // when it is not among the newest.
        let rules = Rules {
            retention_days: 30,
            keep_at_least: 1,
        };
        let now = T0 + 40 * DAY;
        let roots = vec![name(T0, 0), name(now, 0), name(now, 1)];
        let verdict = apply(rules, &roots, now);
        assert_eq!(verdict.deleted(), [name(T0, 0)]);
        assert_eq!(verdict.roots[1].1, Fate::Young);
    }

    #[test]
    fn an_implausible_clock_deletes_nothing() {
        let rules = Rules {
            retention_days: 1,
            keep_at_least: 0,
        };
        let verdict = apply(rules, &[name(T0, 0), name(T0 + 9 * DAY, 0)], 1_000);
        assert!(verdict.deleted().is_empty());
    }

    #[test]
    fn names_in_the_same_second_get_suffixes() {
        assert_eq!(next_name(&[], T0), name(T0, 0));
        assert_eq!(next_name(&[name(T0, 0)], T0), name(T0, 1));
        assert_eq!(next_name(&[name(T0, 0), name(T0, 1)], T0), name(T0, 2));
        assert_eq!(next_name(&[name(T0, 99)], T0), name(T0 + 1, 0));
        assert_eq!(next_name(&[name(T0, 3)], T0 + 1), name(T0 + 1, 0));
        // A clock behind the newest name continues after it.
        assert_eq!(next_name(&[name(T0, 0)], T0 - 60), name(T0, 1));
        assert_eq!(next_name(&[], 5), name(CLOCK_FLOOR, 0));
    }
}
