//! The names the rollback script gives old roots (`YYYYMMDDTHHMMSSZ[-NN]`,
//! the UTC second a root was moved): read by the guest as it checks a
//! rotation and by the host's retention model.

use anyhow::{Context as _, Result};

/// An old root's name, parsed: the UTC second it was moved and its `-NN` suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Stamp {
    pub epoch: i64,
    pub suffix: u8,
}

impl Stamp {
    /// `YYYYMMDDTHHMMSSZ` or `YYYYMMDDTHHMMSSZ-NN` (NN 01..99) naming a real UTC second.
    pub fn parse(name: &str) -> Option<Stamp> {
        let (base, suffix) = match name.split_once('-') {
            Some((base, suffix)) => {
                if suffix.len() != 2 || !suffix.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                let n: u8 = suffix.parse().ok()?;
                if n == 0 {
                    return None;
                }
                (base, n)
            }
            None => (name, 0),
        };
        let b = base.as_bytes();
        if b.len() != 16
            || b[8] != b'T'
            || b[15] != b'Z'
            || !b[..8].iter().chain(&b[9..15]).all(u8::is_ascii_digit)
        {
            return None;
        }
        let number = |range: std::ops::Range<usize>| -> Option<u32> { base[range].parse().ok() };
        let year = number(0..4)? as i32;
        let month = time::Month::try_from(number(4..6)? as u8).ok()?;
        let date = time::Date::from_calendar_date(year, month, number(6..8)? as u8).ok()?;
        let clock = time::Time::from_hms(
            number(9..11)? as u8,
            number(11..13)? as u8,
            number(13..15)? as u8,
        )
        .ok()?;
        if year < 1970 {
            return None;
        }
        let epoch = date.with_time(clock).assume_utc().unix_timestamp();
        Some(Stamp { epoch, suffix })
    }

    pub fn name(self) -> String {
        old_root_name(self.epoch, self.suffix).unwrap_or_else(|_| format!("@{}", self.epoch))
    }
}

/// The name the script gives a root moved at `epoch` (UTC), with the
/// collision suffix `-NN` when `suffix` > 0.
pub fn old_root_name(epoch: i64, suffix: u8) -> Result<String> {
    let at = time::OffsetDateTime::from_unix_timestamp(epoch)
        .with_context(|| format!("{epoch} is not a representable time"))?;
    let base = at
        .format(time::macros::format_description!(
            "[year][month][day]T[hour][minute][second]Z"
        ))
        .context("formatting an old root's name")?;
    Ok(if suffix == 0 {
        base
    } else {
        format!("{base}-{suffix:02}")
    })
}

/// 2026-01-01T00:00:00Z and 2100-01-01T00:00:00Z: the script's plausible clock range.
pub const CLOCK_FLOOR: i64 = 1_767_225_600;
pub const CLOCK_CEILING: i64 = 4_102_444_800;

/// Whether the script trusts `now`: in the plausible range and not earlier
/// than the newest old root's name.
pub fn clock_plausible(now: i64, newest: Option<Stamp>) -> bool {
    (CLOCK_FLOOR..CLOCK_CEILING).contains(&now) && newest.is_none_or(|n| now >= n.epoch)
}
