//! Where each partition starts and ends on a disk of a given size: the one
//! place that computes it, for `check`, `vm-test` and `docs`.
//!
//! It follows what disko asks of sgdisk (one `sgdisk --align-end
//! --new=N:<start>:<end>` per partition, in creation order) and what sgdisk
//! 1.0.9 does with it, checked against the real sgdisk in tests:
//! - GPT on 512-byte sectors with 128 entries: usable sectors 34 ..= total-34;
//! - start `0` is the start of the largest free block, rounded up to the
//!   alignment (2048 sectors = 1 MiB unless the partition sets one);
//! - end `+SIZE` is start + SIZE - 1, not aligned;
//! - end `-SIZE` counts back from the end of the free block, then
//!   `--align-end` rounds it down so that the next sector is aligned.

use serde::Serialize;

use super::model::{Gpt, Partition};
use super::size::{parse_partition_size, PartitionSize, SECTOR_BYTES};

/// sgdisk's default alignment, in sectors.
pub const DEFAULT_ALIGNMENT: u64 = 2048;
/// Entries in the partition table sgdisk creates (and disko never resizes).
pub const MAX_PARTITIONS: usize = 128;
/// Sectors GPT reserves at each end: protective MBR + header + 32 sectors
/// of partition entries in front, entries + header at the back.
const GPT_FRONT: u64 = 34;
const GPT_BACK: u64 = 33;

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
        self.start_sector * SECTOR_BYTES
    }
    pub fn size_bytes(&self) -> u64 {
        self.sectors() * SECTOR_BYTES
    }
    /// One past the last byte.
    pub fn end_bytes(&self) -> u64 {
        (self.end_sector + 1) * SECTOR_BYTES
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Problem {
    /// The size did not parse; the partition and those after it are unknown.
    UnparsedSize { key: String },
    /// A start or end form this model does not follow.
    Unsupported { key: String, what: String },
    /// Nothing is left where the partition would start.
    NoSpace { key: String },
    /// The partition would end past the free space it starts in.
    DoesNotFit {
        key: String,
        needed_bytes: u64,
        available_bytes: u64,
    },
    /// A size of zero.
    Empty { key: String },
    /// More partitions than the table has entries; `key` is the first that has none.
    TooMany { key: String, count: usize },
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
        self.disk_bytes - self.extents.iter().map(Extent::size_bytes).sum::<u64>()
    }
}

/// Computes the partition table disko would create on a disk of `disk_bytes`.
pub fn compute(gpt: &Gpt, disk_bytes: u64) -> DiskGeometry {
    let total_sectors = disk_bytes / SECTOR_BYTES;
    let first_usable = GPT_FRONT;
    let last_usable = total_sectors.saturating_sub(GPT_BACK + 1);
    let mut geometry = DiskGeometry {
        disk_bytes,
        total_sectors,
        first_usable_sector: first_usable,
        last_usable_sector: last_usable,
        extents: Vec::new(),
        problems: Vec::new(),
    };
    if last_usable <= first_usable {
        if let Some(first) = gpt.partitions.first() {
            geometry.problems.push(Problem::NoSpace {
                key: first.key.clone(),
            });
        }
        return geometry;
    }
    for (index, partition) in gpt.partitions.iter().enumerate() {
        if index == MAX_PARTITIONS {
            geometry.problems.push(Problem::TooMany {
                key: partition.key.clone(),
                count: gpt.partitions.len(),
            });
            break;
        }
        match place(partition, &geometry) {
            Ok(extent) => geometry.extents.push(extent),
            Err(problem) => {
                // Later partitions depend on where this one would have been.
                geometry.problems.push(problem);
                break;
            }
        }
    }
    geometry
}

/// Free blocks (first, last sector, inclusive) between the placed partitions.
fn free_blocks(geometry: &DiskGeometry) -> Vec<(u64, u64)> {
    let mut used: Vec<(u64, u64)> = geometry
        .extents
        .iter()
        .map(|e| (e.start_sector, e.end_sector))
        .collect();
    used.sort_unstable();
    let mut blocks = Vec::new();
    let mut next = geometry.first_usable_sector;
    for (start, end) in used {
        if start > next {
            blocks.push((next, start - 1));
        }
        next = next.max(end + 1);
    }
    if next <= geometry.last_usable_sector {
        blocks.push((next, geometry.last_usable_sector));
    }
    blocks
}

fn sectors_of(spec: &str, key: &str) -> Result<u64, Problem> {
    match parse_partition_size(spec) {
        Ok(PartitionSize::Bytes(bytes)) => Ok(bytes.div_ceil(SECTOR_BYTES)),
        Ok(PartitionSize::Rest) | Err(_) => Err(Problem::UnparsedSize {
            key: key.to_owned(),
        }),
    }
}

fn place(partition: &Partition, geometry: &DiskGeometry) -> Result<Extent, Problem> {
    let key = partition.key.clone();
    if partition.size.is_err() {
        return Err(Problem::UnparsedSize { key });
    }
    if partition.fixed_size() == Some(0) {
        return Err(Problem::Empty { key });
    }
    let alignment = if partition.alignment == 0 {
        DEFAULT_ALIGNMENT
    } else {
        partition.alignment
    };
    let blocks = free_blocks(geometry);

    let start = if partition.start == "0" {
        // The largest free block; sgdisk takes the first of equal ones.
        let mut largest: Option<(u64, u64)> = None;
        for block in &blocks {
            if largest.is_none_or(|(s, e)| block.1 - block.0 > e - s) {
                largest = Some(*block);
            }
        }
        let (block_start, _) = largest.ok_or(Problem::NoSpace { key: key.clone() })?;
        block_start.div_ceil(alignment) * alignment
    } else if partition.start.chars().all(|c| c.is_ascii_digit())
        || (!partition.start.starts_with(['+', '-'])
            && parse_partition_size(&partition.start).is_ok())
    {
        let sectors = sectors_of(&partition.start, &key)?;
        sectors.div_ceil(alignment) * alignment
    } else {
        return Err(Problem::Unsupported {
            key,
            what: format!("start {:?}", partition.start),
        });
    };

    let Some(&(_, block_end)) = blocks.iter().find(|(s, e)| *s <= start && start <= *e) else {
        return Err(Problem::NoSpace { key });
    };

    let end = if let Some(size) = partition.end.strip_prefix('+') {
        let sectors = sectors_of(size, &key)?;
        if sectors == 0 {
            return Err(Problem::Empty { key });
        }
        start + sectors - 1
    } else if let Some(back) = partition.end.strip_prefix('-') {
        let back = sectors_of(back, &key)?;
        let unaligned = block_end
            .checked_sub(back)
            .ok_or(Problem::NoSpace { key: key.clone() })?;
        let aligned = (unaligned + 1) / alignment * alignment;
        if aligned == 0 || aligned - 1 < start {
            return Err(Problem::NoSpace { key });
        }
        aligned - 1
    } else if parse_partition_size(&partition.end).is_ok() {
        sectors_of(&partition.end, &key)?
    } else {
        return Err(Problem::Unsupported {
            key,
            what: format!("end {:?}", partition.end),
        });
    };

    if end > block_end || end < start {
        let needed = end
            .saturating_sub(start)
            .saturating_add(1)
            .saturating_mul(SECTOR_BYTES);
        return Err(Problem::DoesNotFit {
            key,
            needed_bytes: needed,
            available_bytes: (block_end - start + 1) * SECTOR_BYTES,
        });
    }
    Ok(Extent {
        number: partition.number,
        key,
        start_sector: start,
        end_sector: end,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::findings::AttrPath;

    pub(crate) fn partition(number: u32, key: &str, size: &str) -> Partition {
        Partition {
            path: AttrPath::new(["p", key]),
            key: key.to_owned(),
            name: key.to_owned(),
            number,
            type_code: "8300".to_owned(),
            label: key.to_owned(),
            device: format!("/dev/disk/by-partlabel/{key}"),
            size: parse_partition_size(size),
            size_text: size.to_owned(),
            start: "0".to_owned(),
            end: if size == "100%" {
                "-0".to_owned()
            } else {
                format!("+{size}")
            },
            priority: 1000,
            alignment: 0,
            content: None,
        }
    }

    fn cpx52() -> Gpt {
        Gpt {
            path: AttrPath::root(),
            partitions: vec![
                partition(1, "boot", "1M"),
                partition(2, "ESP", "1G"),
                partition(3, "swap", "32G"),
                partition(4, "root", "100%"),
            ],
        }
    }

    #[test]
    fn cpx52_matches_sgdisk() {
        // sgdisk -p on a 480000000000-byte file after disko's four --new calls.
        let geometry = compute(&cpx52(), 480_000_000_000);
        assert!(geometry.problems.is_empty(), "{:?}", geometry.problems);
        let sectors: Vec<(u64, u64)> = geometry
            .extents
            .iter()
            .map(|e| (e.start_sector, e.end_sector))
            .collect();
        assert_eq!(
            sectors,
            vec![
                (2048, 4095),
                (4096, 2101247),
                (2101248, 69210111),
                (69210112, 937498623),
            ]
        );
        assert_eq!(geometry.last_usable_sector, 937499966);
        assert_eq!(geometry.extents[3].size_bytes(), 444_563_718_144);
    }

    #[test]
    fn unaligned_sizes_keep_their_end_and_push_the_next_start() {
        let gpt = Gpt {
            path: AttrPath::root(),
            partitions: vec![
                partition(1, "a", "1000K"),
                partition(2, "b", "777"),
                partition(3, "c", "100%"),
            ],
        };
        let geometry = compute(&gpt, 100 << 20);
        let sectors: Vec<(u64, u64)> = geometry
            .extents
            .iter()
            .map(|e| (e.start_sector, e.end_sector))
            .collect();
        // As sgdisk 1.0.9 placed them on a 100 MiB file.
        assert_eq!(sectors, vec![(2048, 4047), (4096, 4872), (6144, 202751)]);
    }

    #[test]
    fn too_big_is_a_problem_not_a_panic() {
        let gpt = Gpt {
            path: AttrPath::root(),
            partitions: vec![partition(1, "swap", "32G"), partition(2, "root", "100%")],
        };
        let geometry = compute(&gpt, 16 << 30);
        assert!(matches!(
            geometry.problems.as_slice(),
            [Problem::DoesNotFit { key, .. }] if key == "swap"
        ));
        let tiny = compute(&gpt, 4096);
        assert!(!tiny.problems.is_empty());
        let zero = compute(&gpt, 0);
        assert!(!zero.problems.is_empty());
    }

    #[test]
    fn a_gpt_table_holds_128_partitions() {
        let keys: Vec<String> = (0..200).map(|i| format!("p{i:03}")).collect();
        let gpt = Gpt {
            path: AttrPath::root(),
            partitions: keys
                .iter()
                .enumerate()
                .map(|(i, key)| partition(u32::try_from(i + 1).unwrap(), key, "1M"))
                .collect(),
        };
        let geometry = compute(&gpt, 480_000_000_000);
        assert_eq!(geometry.extents.len(), MAX_PARTITIONS);
        assert_eq!(
            geometry.problems,
            vec![Problem::TooMany {
                key: "p128".into(),
                count: 200
            }]
        );
    }

    #[test]
    fn unparsed_and_empty_sizes_stop_the_table() {
        let gpt = Gpt {
            path: AttrPath::root(),
            partitions: vec![partition(1, "a", "1X"), partition(2, "b", "100%")],
        };
        let geometry = compute(&gpt, 1 << 30);
        assert_eq!(
            geometry.problems,
            vec![Problem::UnparsedSize { key: "a".into() }]
        );
        let gpt = Gpt {
            path: AttrPath::root(),
            partitions: vec![partition(1, "a", "0")],
        };
        assert_eq!(
            compute(&gpt, 1 << 30).problems,
            vec![Problem::Empty { key: "a".into() }]
        );
    }
}
