//! Where each partition starts and ends on a disk of a given size: the one
//! place that computes it, for `check`, `vm-test` and `docs`.
//!
//! disko runs one `sgdisk --align-end [--set-alignment=A]
//! --new=N:<start>:<end> … <disk>` per partition, in creation order, each a
//! new sgdisk process that loads the table the previous one wrote. This
//! module does what sgdisk 1.0.9 (gptfdisk, as Debian 12 and nixpkgs ship it)
//! does with those arguments, function by function (gptcl.cc `case 'n'`,
//! support.cc `IeeeToInt`, gpt.cc `ComputeAlignment`, `FindFirstInLargest`,
//! `FindLastInFree`, `Align`, `CreatePartition`), written anew from their
//! behaviour and compared with the real sgdisk on sparse images in
//! tests/geometry_sgdisk.rs:
//! - GPT on 512-byte sectors with 128 entries: usable sectors 34 ..= total-34;
//! - the alignment is 2048 sectors, or the largest power of two dividing
//!   every existing partition's start (at least 8 on disks of 300 GB and
//!   more), unless `--set-alignment` gives one;
//! - `low` is the first sector of the largest free block, aligned when an
//!   aligned sector is free nearby; `high` is the end of the free block
//!   holding `low`, rounded down so that the next sector is aligned;
//! - start and end are read relative to them: `0` (or anything that reads as
//!   0) is the default, `+X` is X after the default start (for the end: X
//!   sectors from the start), `-X` is X before `high`, a bare number is a
//!   sector and K, M, G, T, P, E are binary units;
//! - the partition is created only if its (re-aligned) start is free and
//!   nothing lies between start and end. Otherwise sgdisk prints "Could not
//!   create partition", exits 4, disko's fallback sgdisk fails on the missing
//!   partition and, under `set -e`, the install stops.

use serde::Serialize;

use super::model::{Gpt, Partition};
use super::size::SECTOR_BYTES;

/// sgdisk's default alignment, in sectors (`DEFAULT_ALIGNMENT` in gpt.h).
pub const DEFAULT_ALIGNMENT: u64 = 2048;
/// gpt.h `MIN_AF_ALIGNMENT` and `SMALLEST_ADVANCED_FORMAT`: on disks of at
/// least this many sectors a computed alignment is never below 8.
const MIN_AF_ALIGNMENT: u64 = 8;
const SMALLEST_ADVANCED_FORMAT: u64 = 585_937_500;
/// Entries in the partition table sgdisk creates (and disko never resizes).
pub const MAX_PARTITIONS: usize = 128;
/// Sectors GPT reserves at each end: protective MBR + header + 32 sectors
/// of partition entries in front, entries + header at the back.
const GPT_FRONT: u64 = 34;
const GPT_BACK: u64 = 33;
/// popt reads `--set-alignment` as a C int: larger values make sgdisk stop
/// reading its arguments, do nothing and exit 0.
const MAX_SET_ALIGNMENT: u64 = i32::MAX as u64;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Extent {
    pub number: u32,
    pub key: String,
    /// First and last sector, inclusive, as sgdisk prints them.
    pub start_sector: u64,
    pub end_sector: u64,
}

impl Extent {
    pub fn sectors(&self) -> u64 {
        self.end_sector - self.start_sector + 1
    }
    pub fn start_bytes(&self) -> u64 {
        self.start_sector.saturating_mul(SECTOR_BYTES)
    }
    pub fn size_bytes(&self) -> u64 {
        self.sectors().saturating_mul(SECTOR_BYTES)
    }
    /// One past the last byte.
    pub fn end_bytes(&self) -> u64 {
        (self.end_sector + 1).saturating_mul(SECTOR_BYTES)
    }
}

/// Why sgdisk refused to create a partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Refusal {
    /// The start or end is text sgdisk reads as sector 0.
    Unreadable { field: &'static str, text: String },
    /// The start lies inside another partition (`other`), or outside the
    /// usable sectors (`other` is `None`).
    StartTaken { other: Option<String> },
    /// The end comes before the start.
    EndBeforeStart,
    /// The range runs into another partition (`other`), or past the last
    /// usable sector (`other` is `None`).
    RunsInto {
        other: Option<String>,
        free_end: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Problem {
    /// The size is not one disko's type accepts: its evaluation fails before
    /// anything runs. The partitions after it are not placed.
    UnparsedSize { key: String },
    /// sgdisk printed "Could not create partition N from S to E": the install
    /// stops there, and no later partition is created.
    Refused {
        key: String,
        number: u32,
        start_sector: u64,
        end_sector: u64,
        refusal: Refusal,
    },
    /// sgdisk stopped reading its arguments and exited 0 without creating
    /// the partition; the install goes on without it.
    Ignored {
        key: String,
        number: u32,
        reason: String,
    },
    /// More partitions than the table has entries; `key` is the first that has none.
    TooMany { key: String, count: usize },
}

impl Problem {
    pub fn key(&self) -> &str {
        match self {
            Problem::UnparsedSize { key }
            | Problem::Refused { key, .. }
            | Problem::Ignored { key, .. }
            | Problem::TooMany { key, .. } => key,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiskGeometry {
    pub disk_bytes: u64,
    pub total_sectors: u64,
    pub first_usable_sector: u64,
    pub last_usable_sector: u64,
    /// Partitions that could be placed, in creation order.
    pub extents: Vec<Extent>,
    /// Why the rest could not; empty when every partition fits.
    pub problems: Vec<Problem>,
}

impl DiskGeometry {
    pub fn extent(&self, number: u32) -> Option<&Extent> {
        self.extents.iter().find(|e| e.number == number)
    }

    /// Bytes no partition uses (GPT structures, alignment gaps, the tail).
    pub fn unallocated_bytes(&self) -> u64 {
        self.disk_bytes.saturating_sub(
            self.extents
                .iter()
                .map(Extent::size_bytes)
                .fold(0u64, u64::saturating_add),
        )
    }

    /// The extent holding `sector`, if any.
    fn holder(&self, sector: u64) -> Option<&Extent> {
        self.extents
            .iter()
            .find(|e| e.start_sector <= sector && sector <= e.end_sector)
    }

    /// Whether `sector` is usable and in no partition (gpt.cc `IsFree`).
    fn is_free(&self, sector: u64) -> bool {
        (self.first_usable_sector..=self.last_usable_sector).contains(&sector)
            && self.holder(sector).is_none()
    }

    /// Whether every sector of `first..=last` is free, without visiting them.
    fn range_free(&self, first: u64, last: u64) -> bool {
        first >= self.first_usable_sector
            && last <= self.last_usable_sector
            && !self
                .extents
                .iter()
                .any(|e| e.start_sector <= last && first <= e.end_sector)
    }

    /// gpt.cc `Align`: moves `sector` down to the alignment when every sector
    /// in between is free, else up when every sector up to there is free;
    /// returns whether it moved.
    fn align(&self, sector: &mut u64, alignment: u64) -> bool {
        if *sector % alignment == 0 {
            return false;
        }
        let earlier = *sector / alignment * alignment;
        if earlier >= self.first_usable_sector && self.range_free(earlier, *sector - 1) {
            *sector = earlier;
            return true;
        }
        let Some(later) = earlier.checked_add(alignment) else {
            return false;
        };
        if later <= self.last_usable_sector
            && self.is_free(later)
            && (later == *sector + 1 || self.range_free(*sector + 1, later))
        {
            *sector = later;
            return true;
        }
        false
    }

    /// gpt.cc `FindLastInFree`: the sector before the next partition that
    /// starts after `start`, or the last usable one; with `align`, rounded
    /// down so that the following sector is aligned, if that stays after `start`.
    fn last_in_free(&self, start: u64, align: Option<u64>) -> u64 {
        let mut nearest_end = self.last_usable_sector;
        for e in &self.extents {
            if nearest_end > e.start_sector && e.start_sector > start {
                nearest_end = e.start_sector - 1;
            }
        }
        if let Some(alignment) = align {
            let mut end_plus = nearest_end + 1;
            if self.align(&mut end_plus, alignment)
                && self.is_free(end_plus - 1)
                && end_plus > start
            {
                nearest_end = end_plus - 1;
            }
        }
        nearest_end
    }

    /// gpt.cc `FindFirstAvailable`: the first free sector at or after
    /// `start`, or 0 when there is none.
    fn first_available(&self, start: u64) -> u64 {
        let mut first = start.max(self.first_usable_sector);
        while let Some(e) = self.holder(first) {
            first = e.end_sector + 1;
        }
        if first > self.last_usable_sector {
            0
        } else {
            first
        }
    }

    /// gpt.cc `FindFirstInLargest`: the first sector of the largest free
    /// block (the first of equal ones), or 0.
    fn first_in_largest(&self) -> u64 {
        let (mut start, mut selected, mut selected_size) = (0, 0, 0);
        loop {
            let first = self.first_available(start);
            if first == 0 {
                return selected;
            }
            let last = self.last_in_free(first, None);
            let size = last - first + 1;
            if size > selected_size {
                selected_size = size;
                selected = first;
            }
            start = last + 1;
        }
    }

    /// gpt.cc `ComputeAlignment`, run when sgdisk loads the table.
    fn computed_alignment(&self) -> u64 {
        let mut alignment = DEFAULT_ALIGNMENT;
        for e in &self.extents {
            while e.start_sector % alignment != 0 {
                alignment /= 2;
            }
        }
        if alignment < MIN_AF_ALIGNMENT && self.total_sectors >= SMALLEST_ADVANCED_FORMAT {
            alignment = MIN_AF_ALIGNMENT;
        }
        alignment
    }
}

/// support.cc `IeeeToInt`: how sgdisk reads a start or end. `None` when it
/// reads the text as sector 0 (bad input), which no partition can start at.
fn ieee_to_int(text: &str, low: u64, high: u64, alignment: u64, default: u64) -> Option<u64> {
    let text = text.trim_start_matches(' ');
    let (sign, rest) = match text.chars().next() {
        Some(c @ ('+' | '-')) => (Some(c), &text[1..]),
        _ => (None, text),
    };
    let mut bad = rest.chars().next().is_some_and(|c| !c.is_ascii_digit());
    // `istringstream >> uint64_t` skips blanks, reads digits (0 when there
    // are none, the maximum on overflow, and then no suffix is read).
    let number_text = rest.trim_start();
    let digits_end = number_text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(number_text.len());
    let digits = &number_text[..digits_end];
    let (mut response, suffix) = if digits.is_empty() {
        (0, None)
    } else {
        match digits.parse::<u64>() {
            Ok(n) => (n, number_text[digits_end..].trim_start().chars().next()),
            Err(_) => (u64::MAX, None),
        }
    };
    let mut suffix = suffix.map(|c| c.to_ascii_uppercase());
    let mut sign = sign;
    if rest.is_empty() || response == 0 {
        response = default;
        suffix = None;
        sign = None;
    }
    if let Some(power) = suffix.and_then(|c| "KMGTPE".find(c)) {
        // Units of 1024^(power+1) bytes in 512-byte sectors.
        let multiplier = 1u64 << (10 * (power + 1) - 9);
        match response.checked_mul(multiplier) {
            Some(n) => response = n,
            None => bad = true,
        }
    }
    match sign {
        Some('+') if high.wrapping_sub(default) < alignment => {
            response = response.saturating_sub(1);
            match response.checked_add(low) {
                Some(n) => response = n,
                None => bad = true,
            }
        }
        Some('+') => match response.checked_add(default) {
            Some(n) => response = n,
            None => bad = true,
        },
        Some(_) if response > high => bad = true,
        Some(_) => response = high - response,
        None => {}
    }
    (!bad).then_some(response)
}

/// Computes the partition table disko would create on a disk of `disk_bytes`.
pub fn compute(gpt: &Gpt, disk_bytes: u64) -> DiskGeometry {
    let total_sectors = disk_bytes / SECTOR_BYTES;
    let mut geometry = DiskGeometry {
        disk_bytes,
        total_sectors,
        first_usable_sector: GPT_FRONT,
        last_usable_sector: total_sectors.saturating_sub(GPT_BACK + 1),
        extents: Vec::new(),
        problems: Vec::new(),
    };
    for (index, partition) in gpt.partitions.iter().enumerate() {
        if index == MAX_PARTITIONS {
            geometry.problems.push(Problem::TooMany {
                key: partition.key.clone(),
                count: gpt.partitions.len(),
            });
            break;
        }
        match place(partition, &geometry) {
            Placement::Created(extent) => geometry.extents.push(extent),
            Placement::Ignored(problem) => geometry.problems.push(problem),
            Placement::Stop(problem) => {
                // The install stops here: nothing after it is created.
                geometry.problems.push(problem);
                break;
            }
        }
    }
    geometry
}

enum Placement {
    Created(Extent),
    Ignored(Problem),
    Stop(Problem),
}

/// gptcl.cc `case 'n'` and gpt.cc `CreatePartition` for one partition.
fn place(partition: &Partition, geometry: &DiskGeometry) -> Placement {
    let key = partition.key.clone();
    let number = partition.number;
    if partition.size.is_err() {
        return Placement::Stop(Problem::UnparsedSize { key });
    }
    let alignment = match partition.alignment {
        0 => geometry.computed_alignment(),
        a if a > MAX_SET_ALIGNMENT => {
            return Placement::Ignored(Problem::Ignored {
                key,
                number,
                reason: format!(
                    "popt cannot read --set-alignment={a} as an int, so sgdisk stops reading its arguments, does nothing and exits 0"
                ),
            })
        }
        a => a,
    };
    let refused = |start_sector: u64, end_sector: u64, refusal: Refusal| {
        Placement::Stop(Problem::Refused {
            key: key.clone(),
            number,
            start_sector,
            end_sector,
            refusal,
        })
    };
    if geometry.last_usable_sector <= geometry.first_usable_sector {
        return refused(
            0,
            0,
            Refusal::RunsInto {
                other: None,
                free_end: geometry.last_usable_sector,
            },
        );
    }
    let mut low = geometry.first_in_largest();
    geometry.align(&mut low, alignment);
    let high = geometry.last_in_free(low, Some(alignment));
    let Some(start) = ieee_to_int(&partition.start, low, high, alignment, low) else {
        return refused(
            0,
            0,
            Refusal::Unreadable {
                field: "start",
                text: partition.start.clone(),
            },
        );
    };
    let Some(end) = ieee_to_int(&partition.end, start, high, alignment, high) else {
        return refused(
            start,
            0,
            Refusal::Unreadable {
                field: "end",
                text: partition.end.clone(),
            },
        );
    };
    let mut first = start;
    geometry.align(&mut first, alignment);
    if !geometry.is_free(first) {
        let other = geometry.holder(first).map(|e| e.key.clone());
        return refused(first, end, Refusal::StartTaken { other });
    }
    if first > end {
        return refused(first, end, Refusal::EndBeforeStart);
    }
    let free_end = geometry.last_in_free(first, None);
    if free_end < end {
        let other = geometry
            .extents
            .iter()
            .filter(|e| e.start_sector > first && e.start_sector <= end)
            .min_by_key(|e| e.start_sector)
            .map(|e| e.key.clone());
        return refused(first, end, Refusal::RunsInto { other, free_end });
    }
    Placement::Created(Extent {
        number,
        key,
        start_sector: first,
        end_sector: end,
    })
}

#[cfg(test)]
mod tests;
