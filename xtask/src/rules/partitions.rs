//! Partition sizes, labels, the BIOS boot partition and what sgdisk really
//! does with each partition's start and end (`layout::geometry`).

use std::collections::BTreeMap;

use super::{Issue, Model};
use layout::findings::AttrPath;
use layout::geometry::{DiskGeometry, Extent, Problem, Refusal, MAX_PARTITIONS};
use layout::size::{human, MIB, SECTOR_BYTES};
use layout::{Content, Disk, DiskContent, Filesystem, Gpt, Partition};

/// The smallest device each mkfs accepts, in bytes. mkfs.btrfs (btrfs-progs
/// 6.2, Debian 12) refuses less than 114294784 bytes ("minimum size for each
/// btrfs device"); mkswap (util-linux 2.38) less than 40 KiB.
const MKFS_BTRFS_MIN: u64 = 114_294_784;
/// With mixed block groups (`--mixed`, `-M`) it takes 16 MiB (btrfs-progs
/// 6.2 on sparse files: 16128 KiB refused, 16384 KiB formatted; found by
/// tests/generated_live.rs).
const MKFS_BTRFS_MIXED_MIN: u64 = 16 << 20;
const MKSWAP_MIN: u64 = 40 << 10;

pub fn size_parses(model: &Model) -> Vec<Issue> {
    model
        .layout
        .partitions()
        .filter_map(|(_, partition)| {
            let error = partition.size.as_ref().err()?;
            Some(Issue::new(
                partition.path.join("size"),
                format!("partition {:?}: {error}; disko's size type refuses it, so its evaluation fails before anything is installed", partition.key),
                "Write sizes as disko does: \"512M\", \"32G\", or \"100%\" for the rest.",
            ))
        })
        .collect()
}

fn gpt_of(disk: &Disk) -> Option<&Gpt> {
    match &disk.content {
        Some(DiskContent::Gpt(gpt)) => Some(gpt),
        _ => None,
    }
}

fn by_key<'a>(gpt: &'a Gpt, key: &str) -> Option<&'a Partition> {
    gpt.partitions.iter().find(|p| p.key == key)
}

/// The attribute that decides where a partition goes: `start`/`end` when
/// written, else `size`.
fn placement_path(partition: &Partition) -> AttrPath {
    let default_end = partition.end == format!("+{}", partition.size_text)
        || (partition.size_text == "100%" && partition.end == "-0");
    if partition.start != "0" {
        partition.path.join("start")
    } else if !default_end {
        partition.path.join("end")
    } else {
        partition.path.join("size")
    }
}

const STOPS: &str = "disko's fallback sgdisk then fails on the missing partition and, under `set -e`, the install stops with the disk half partitioned";

pub fn fits_disk(model: &Model) -> Vec<Issue> {
    let mut issues = Vec::new();
    for disk in &model.layout.disks {
        let (Some(geometry), Some(gpt)) = (model.geometry.get(&disk.key), gpt_of(disk)) else {
            continue;
        };
        for problem in &geometry.problems {
            let Problem::Refused {
                key,
                number,
                start_sector,
                end_sector,
                refusal,
            } = problem
            else {
                continue;
            };
            let free_end = match refusal {
                Refusal::RunsInto {
                    other: None,
                    free_end,
                } => *free_end,
                // Past the end of the disk, or no free sector left at all (start 0).
                Refusal::StartTaken { other: None }
                    if *start_sector > geometry.last_usable_sector || *start_sector == 0 =>
                {
                    geometry.last_usable_sector
                }
                _ => continue,
            };
            let Some(partition) = by_key(gpt, key) else {
                continue;
            };
            let needed = end_sector.saturating_sub(*start_sector).saturating_add(1);
            let left = (free_end + 1).saturating_sub(*start_sector);
            issues.push(Issue::new(
                placement_path(partition),
                format!(
                    "partition {key:?} needs {} but only {} is left on the {} disk {:?}: sgdisk prints \"Could not create partition {number} from {start_sector} to {end_sector}\" and {STOPS}",
                    human(needed.saturating_mul(SECTOR_BYTES)),
                    human(left.saturating_mul(SECTOR_BYTES)),
                    human(geometry.disk_bytes),
                    disk.device
                ),
                "Shrink the fixed-size partitions, or check the disk size (--disk-size, or diskSize in the host's machine.nix).",
            ));
        }
    }
    issues
}

/// Whether a partition reaches the end of the usable space (what `100%` does).
fn reaches_the_end(extent: &Extent, geometry: &DiskGeometry, gpt: &Gpt) -> bool {
    let alignment = gpt
        .partitions
        .iter()
        .find(|p| p.number == extent.number)
        .map_or(0, |p| p.alignment)
        .max(layout::geometry::DEFAULT_ALIGNMENT);
    extent.end_sector.saturating_add(alignment) > geometry.last_usable_sector
}

pub fn one_rest_partition(model: &Model) -> Vec<Issue> {
    let mut issues = Vec::new();
    // The template's disk is the one holding /: its Btrfs takes the rest.
    // Another disk may leave space free (real disko builds it), and an
    // empty GPT is a valid disk too.
    let root_device = model
        .mounts
        .iter()
        .find(|m| m.mountpoint == "/")
        .map(|m| m.device.as_str());
    for disk in &model.layout.disks {
        let Some(gpt) = gpt_of(disk) else {
            continue;
        };
        let holds_root =
            root_device.is_none_or(|device| gpt.partitions.iter().any(|p| p.device == device));
        let geometry = model.geometry.get(&disk.key);
        let rest: Vec<_> = gpt.partitions.iter().filter(|p| p.is_rest()).collect();
        match rest.as_slice() {
            [_] => {}
            [] if !holds_root => {}
            [] => {
                // Without size = "100%", an explicit end can still reach the end.
                let reached = match geometry {
                    Some(geometry) if geometry.problems.is_empty() => geometry
                        .extents
                        .iter()
                        .any(|e| reaches_the_end(e, geometry, gpt)),
                    Some(_) => true,
                    None => gpt.partitions.iter().any(|p| p.end.starts_with('-')),
                };
                if !reached {
                    let unused = geometry
                        .and_then(|g| {
                            let last = g.extents.iter().map(|e| e.end_sector).max()?;
                            Some(format!(
                                ": {} after the last partition stay unused",
                                human((g.last_usable_sector - last).saturating_mul(SECTOR_BYTES))
                            ))
                        })
                        .unwrap_or_default();
                    issues.push(Issue::new(
                        gpt.path.join("partitions"),
                        format!(
                            "disk {:?} has no partition of size \"100%\" and none that ends at the end of the disk{unused}",
                            disk.key
                        ),
                        "Give the Btrfs partition size = \"100%\".",
                    ));
                }
            }
            [first, more @ ..] => {
                for partition in more {
                    let placed = geometry.and_then(|g| g.extent(partition.number));
                    let what = match placed {
                        Some(extent) => format!(
                            "sgdisk creates it where the largest free space is left by then, sectors {}–{} ({}), not at the end",
                            extent.start_sector,
                            extent.end_sector,
                            human(extent.size_bytes())
                        ),
                        None => "sgdisk finds no space left for it".to_owned(),
                    };
                    issues.push(Issue::new(
                        partition.path.join("size"),
                        format!(
                            "disk {:?} has {} partitions of size \"100%\": {:?} takes the rest of the disk, and for {:?} {what}",
                            disk.key,
                            rest.len(),
                            first.key,
                            partition.key
                        ),
                        "Only the last partition takes the rest; give the others a fixed size.",
                    ));
                }
            }
        }
    }
    issues
}

pub fn nonzero_size(model: &Model) -> Vec<Issue> {
    let mut issues = Vec::new();
    for disk in &model.layout.disks {
        let Some(gpt) = gpt_of(disk) else {
            continue;
        };
        let geometry = model.geometry.get(&disk.key);
        for (index, partition) in gpt.partitions.iter().enumerate() {
            // `end` defaults to "+0", which sgdisk reads as "to the end of the free block".
            if partition.fixed_size() != Some(0) || partition.end != "+0" {
                continue;
            }
            let Some(next) = gpt.partitions.get(index + 1) else {
                continue; // created last, it just takes the rest
            };
            let then = match geometry.and_then(|g| g.extent(next.number)) {
                Some(extent) => format!(
                    "is squeezed into what is left, sectors {}–{} ({})",
                    extent.start_sector,
                    extent.end_sector,
                    human(extent.size_bytes())
                ),
                None => format!("finds no space: sgdisk refuses it and {STOPS}"),
            };
            issues.push(Issue::new(
                partition.path.join("size"),
                format!(
                    "partition {:?} has no size (disko's default \"0\"): sgdisk reads `--new={}:0:+0` as \"to the end of the free space\", so {:?} takes all of it, and {:?}, created next, {then}",
                    partition.key, partition.number, partition.key, next.key
                ),
                "Set `size` (e.g. \"32G\"), or size = \"100%\" on the one partition that takes the rest.",
            ));
        }
    }
    issues
}

pub fn unique_labels(model: &Model) -> Vec<Issue> {
    let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
    let mut issues = Vec::new();
    for (disk, partition) in model.layout.partitions() {
        if let Some(first) = seen.insert(&partition.label, &disk.key) {
            issues.push(Issue::new(
                partition.path.join("label"),
                format!(
                    "label {:?} is used on disk {first:?} and again on disk {:?}",
                    partition.label, disk.key
                ),
                "Give each disk a different attribute name, or set distinct `label`s.",
            ));
        }
    }
    issues
}

pub fn bios_boot(model: &Model) -> Vec<Issue> {
    let mut issues = Vec::new();
    let mut any = false;
    for disk in &model.layout.disks {
        let Some(gpt) = gpt_of(disk) else {
            continue;
        };
        for partition in gpt
            .partitions
            .iter()
            .filter(|p| p.type_code.eq_ignore_ascii_case("EF02"))
        {
            any = true;
            if partition.number != 1 {
                issues.push(Issue::new(
                    partition.path.clone(),
                    format!(
                        "the BIOS boot partition {:?} is partition {}, not the first",
                        partition.key, partition.number
                    ),
                    "Remove its `priority` so disko creates it first (priority 100).",
                ));
            }
            if model
                .partition_bytes(disk, partition)
                .is_some_and(|bytes| bytes < MIB)
            {
                issues.push(Issue::new(
                    placement_path(partition),
                    format!(
                        "the BIOS boot partition {:?} is smaller than 1 MiB",
                        partition.key
                    ),
                    "Make it size = \"1M\": GRUB's core image must fit.",
                ));
            }
        }
    }
    if !any && model.firmware.bios {
        let path = model
            .layout
            .disks
            .first()
            .map(|d| d.path.clone())
            .unwrap_or_default();
        issues.push(Issue::new(
            path,
            "the machine boots with BIOS but no disk has a BIOS boot (EF02) partition",
            "Add `boot = { size = \"1M\"; type = \"EF02\"; };` to the partitions.",
        ));
    }
    issues
}

/// `[+-]?digits[unit]`: what sgdisk reads without surprise (`s` for sectors is
/// disko's convention; sgdisk ignores it).
fn is_plain_position(text: &str) -> bool {
    let body = text.strip_prefix(['+', '-']).unwrap_or(text);
    let digits = body.trim_end_matches(|c: char| "KMGTPEkmgtpeSs".contains(c));
    !digits.is_empty()
        && digits.chars().all(|c| c.is_ascii_digit())
        && body.len() - digits.len() <= 1
}

pub fn geometry_predicted(model: &Model) -> Vec<Issue> {
    let mut issues = Vec::new();
    for (_, partition) in model.layout.partitions() {
        for (field, text) in [("start", &partition.start), ("end", &partition.end)] {
            if text.is_empty() || is_plain_position(text) || partition.size.is_err() {
                continue;
            }
            let number: String = text
                .trim_start_matches(['+', '-', ' '])
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            issues.push(Issue::new(
                partition.path.join(field),
                format!(
                    "sgdisk reads {field} {text:?} only up to the first character that is not a digit or a unit ({}), so the partition may not be where the text suggests",
                    if number.is_empty() { "nothing: the default, or no partition at all".to_owned() } else { format!("{number} and a unit if one follows") }
                ),
                "Write positions as sgdisk reads them: a number with an optional K, M, G, T or P (\"512M\"), `+` for a size after the start, `-` for a distance before the end.",
            ));
        }
    }
    issues
}

pub fn table_entries(model: &Model) -> Vec<Issue> {
    let mut issues = Vec::new();
    for disk in &model.layout.disks {
        let Some(gpt) = gpt_of(disk) else {
            continue;
        };
        if let Some(first_without) = gpt.partitions.get(MAX_PARTITIONS) {
            issues.push(Issue::new(
                gpt.path.join("partitions"),
                format!(
                    "disk {:?} declares {} partitions, but its GPT table holds {MAX_PARTITIONS}: sgdisk fails at {:?}, the first in creation order without an entry",
                    disk.key,
                    gpt.partitions.len(),
                    first_without.key
                ),
                format!("Declare at most {MAX_PARTITIONS} partitions; use Btrfs subvolumes for more separate trees."),
            ));
        }
    }
    issues
}

/// disko 878ec37 (lib/types/gpt.nix) runs `sgdisk -h <numbers>[:EE ]"<disk>"`
/// and then, per hybrid partition, `sfdisk --label-nested dos --part-type
/// <disk> <GPT number> <type>` and `sfdisk … --activate <disk> <GPT number>`.
/// With efiGptPartitionFirst (the default) the space before the disk is
/// missing, so sgdisk gets no device and does nothing; without it, sgdisk
/// puts the hybrid entries in MBR slots 1, 2, … and 0xEE after them, while
/// sfdisk is given the GPT number as the slot. Both seen with sgdisk 1.0.9
/// and sfdisk 2.38.1 on a sparse image.
pub fn hybrid_mbr(model: &Model) -> Vec<Issue> {
    let mut issues = Vec::new();
    for disk in &model.layout.disks {
        let Some(gpt) = gpt_of(disk) else {
            continue;
        };
        let hybrids: Vec<&Partition> = gpt
            .partitions
            .iter()
            .filter(|p| p.hybrid.is_some())
            .collect();
        if hybrids.is_empty() {
            continue;
        }
        let numbers: Vec<String> = hybrids.iter().map(|p| p.number.to_string()).collect();
        let list = numbers.join(":");
        let device = &disk.device;
        let protective_slot = if gpt.efi_gpt_partition_first {
            1
        } else {
            hybrids.len() + 1
        };
        for (position, partition) in hybrids.iter().enumerate() {
            let Some(hybrid) = &partition.hybrid else {
                continue;
            };
            let slot = partition.number as usize;
            // What sfdisk does with the GPT number as the MBR slot.
            let target = if slot == protective_slot {
                Some("the protective 0xEE entry".to_owned())
            } else if !gpt.efi_gpt_partition_first && slot <= hybrids.len() {
                (slot != position + 1)
                    .then(|| format!("the MBR entry of partition {:?}", hybrids[slot - 1].key))
            } else {
                None // an unused slot
            };
            let mut effects = Vec::new();
            if let Some(code) = &hybrid.mbr_partition_type {
                effects.push(match (&target, slot == protective_slot) {
                    (Some(_), true) => format!(
                        "`sfdisk --label-nested dos --part-type {device} {slot} {code}` rewrites the protective 0xEE entry, so blkid and the kernel read the disk as a plain MBR disk (\"Invalid partition data!\"): the GPT partitions disappear and the install stops at the first mkfs"
                    ),
                    (Some(other), false) => format!(
                        "`sfdisk --label-nested dos --part-type {device} {slot} {code}` changes {other} instead"
                    ),
                    (None, _) if !gpt.efi_gpt_partition_first && slot == position + 1 => continue,
                    (None, _) => format!(
                        "`sfdisk --label-nested dos --part-type {device} {slot} {code}` fails (\"partition {slot}: partition is unused\") and, under `set -e`, the install stops after partitioning"
                    ),
                });
            }
            if hybrid.mbr_bootable_flag {
                effects.push(match &target {
                    Some(other) => format!(
                        "`sfdisk --activate {device} {slot}` marks {other} bootable instead"
                    ),
                    None if !gpt.efi_gpt_partition_first && slot == position + 1 => continue,
                    None => format!(
                        "`sfdisk --activate {device} {slot}` marks an unused MBR entry bootable"
                    ),
                });
            }
            let message = if gpt.efi_gpt_partition_first {
                let then = if effects.is_empty() {
                    "the install goes on, and the disk has no hybrid MBR: firmware and systems that read only the MBR do not see the partition".to_owned()
                } else {
                    format!("then {}", effects.join("; "))
                };
                format!(
                    "partition {:?} asks for a hybrid MBR, but disko writes `sgdisk -h {list}\"{device}\"` (no space before the device, because efiGptPartitionFirst is true): sgdisk reads \"{list}{device}\" as the partition list, gets no device, does nothing and exits 0; {then}",
                    partition.key
                )
            } else if effects.is_empty() {
                continue;
            } else {
                format!(
                    "partition {:?} is MBR entry {} of the hybrid MBR (`sgdisk -h {list}:EE {device}` puts 0xEE in entry {protective_slot}), but disko passes its GPT number {slot} to sfdisk: {}",
                    partition.key,
                    position + 1,
                    effects.join("; ")
                )
            };
            issues.push(Issue::new(
                hybrid.path.clone(),
                message,
                "Drop `hybrid` (GPT with a protective MBR boots on BIOS through the EF02 partition and on UEFI through the ESP), or set the MBR entry with sgdisk/sfdisk in a postCreateHook, checking the slots with `sgdisk -O`.",
            ));
        }
    }
    issues
}

pub fn sgdisk_refuses(model: &Model) -> Vec<Issue> {
    let mut issues = Vec::new();
    for disk in &model.layout.disks {
        let (Some(geometry), Some(gpt)) = (model.geometry.get(&disk.key), gpt_of(disk)) else {
            continue;
        };
        for problem in &geometry.problems {
            let Some(partition) = by_key(gpt, problem.key()) else {
                continue;
            };
            let (path, message) = match problem {
                Problem::Refused {
                    number,
                    start_sector,
                    end_sector,
                    refusal,
                    ..
                } => {
                    let why = match refusal {
                        Refusal::Unreadable { field, text } => format!(
                            "sgdisk reads {field} {text:?} as sector 0, which is never free"
                        ),
                        Refusal::StartTaken { other: Some(other) } => format!(
                            "its start, sector {start_sector}, lies inside partition {other:?}"
                        ),
                        Refusal::RunsInto { other: Some(other), .. } => format!(
                            "sectors {start_sector}–{end_sector} overlap partition {other:?}"
                        ),
                        Refusal::EndBeforeStart => format!(
                            "its end, sector {end_sector}, comes before its start, sector {start_sector}"
                        ),
                        Refusal::StartTaken { other: None }
                            if *start_sector > 0 && *start_sector < geometry.first_usable_sector =>
                        {
                            format!(
                                "its start, sector {start_sector}, lies in the GPT's own sectors (0–{})",
                                geometry.first_usable_sector - 1
                            )
                        }
                        // Past the end of the disk, or nothing free: PART002.
                        Refusal::StartTaken { other: None } | Refusal::RunsInto { other: None, .. } => {
                            continue
                        }
                    };
                    (
                        placement_path(partition),
                        format!(
                            "sgdisk cannot create partition {:?}: {why}; it prints \"Could not create partition {number} from {start_sector} to {end_sector}\" and {STOPS}",
                            partition.key
                        ),
                    )
                }
                Problem::Ignored { reason, .. } => (
                    partition.path.join("alignment"),
                    format!(
                        "partition {:?} is never created: {reason}. disko goes on, the next partitions take its space, and nothing appears at {}",
                        partition.key, partition.device
                    ),
                ),
                _ => continue,
            };
            issues.push(Issue::new(
                path,
                message,
                "Give the partitions start and end positions that do not overlap (or use `size` and let sgdisk place them one after the other).",
            ));
        }
    }
    issues
}

pub fn content_fits(model: &Model) -> Vec<Issue> {
    let mut issues = Vec::new();
    for disk in &model.layout.disks {
        let Some(gpt) = gpt_of(disk) else {
            continue;
        };
        for partition in &gpt.partitions {
            let (Some(content), Some(bytes)) =
                (&partition.content, model.partition_bytes(disk, partition))
            else {
                continue;
            };
            let (minimum, tool, consequence) = match content {
                Content::Btrfs(btrfs) if btrfs.extra_args.iter().any(|a| a == "--mixed" || a == "-M") => {
                    (MKFS_BTRFS_MIXED_MIN, "mkfs.btrfs --mixed", "it refuses the partition and the install stops")
                }
                Content::Btrfs(_) => (MKFS_BTRFS_MIN, "mkfs.btrfs", "it refuses the partition and the install stops"),
                Content::Swap(swap) if swap.random_encryption => (
                    MKSWAP_MIN,
                    "mkswap",
                    "NixOS's mkswap on the encrypted device fails at every boot, and the machine runs without swap",
                ),
                Content::Swap(_) => (MKSWAP_MIN, "mkswap", "it refuses the partition and the install stops"),
                Content::Filesystem(fs) => {
                issues.extend(fat_size_refused(partition, fs, bytes));
                continue;
            }
            };
            if bytes >= minimum {
                continue;
            }
            issues.push(Issue::new(
                placement_path(partition),
                format!(
                    "partition {:?} is {} ({bytes} B), but {tool} needs at least {} ({minimum} B): {consequence}",
                    partition.key,
                    human(bytes),
                    human(minimum)
                ),
                "Give the partition a size its content fits in.",
            ));
        }
    }
    issues
}

/// `mkfs.vfat -s N` (sectors per cluster) without -F on a partition below
/// 512 MiB: mkfs.fat 4.2 picks FAT16 there, and FAT16 addresses at most
/// 65524 clusters; more, and it says "Not enough or too many clusters for
/// filesystem" (seen on a 33 MiB ESP with -s 1 by the generated corpus).
/// The count subtracts what FAT16 reserves: 4 sectors, a 512-entry root
/// directory (32 sectors) and two FATs of 2 bytes per cluster.
fn fat16_clusters_refused(partition: &Partition, fs: &Filesystem, bytes: u64) -> Option<Issue> {
    let args = &fs.extra_args;
    if args.iter().any(|a| {
        ["-S", "-R", "-f", "-r", "-F"]
            .iter()
            .any(|f| a.starts_with(f))
    }) {
        return None;
    }
    let per_cluster: u64 = flag_values(args, "-s", "--sectors-per-cluster")
        .last()?
        .parse()
        .ok()
        .filter(|n| *n > 0)?;
    let sectors = bytes / 512;
    // From 512 MiB mkfs.fat makes FAT32, which addresses at most 0x0FFFFFF5
    // clusters (-s 1 on 480 GB: refused, seen by tests/generated_live.rs).
    if bytes >= 512 * MIB {
        let clusters = sectors / per_cluster;
        if clusters <= 268_435_445 {
            return None;
        }
        return Some(Issue::new(
            fs.path.join("extraArgs"),
            format!(
                "partition {:?} is {} ({bytes} B): with -s {per_cluster} mkfs.vfat makes FAT32 of about {clusters} clusters, more than the 268435445 FAT32 addresses: it refuses (\"Not enough or too many clusters for filesystem\") and the install stops",
                partition.key,
                human(bytes)
            ),
            "Leave -s out (mkfs.vfat picks the cluster size), or give larger clusters.",
        ));
    }
    let raw_clusters = sectors / per_cluster;
    let fat_sectors = (raw_clusters * 2).div_ceil(512);
    let clusters = sectors.saturating_sub(4 + 32 + 2 * fat_sectors) / per_cluster;
    if clusters <= 65_524 {
        return None;
    }
    Some(Issue::new(
        fs.path.join("extraArgs"),
        format!(
            "partition {:?} is {} ({bytes} B): with -s {per_cluster} mkfs.vfat makes FAT16 there, which addresses at most 65524 clusters, and this gives about {clusters}: it refuses (\"Not enough or too many clusters for filesystem\") and the install stops",
            partition.key,
            human(bytes)
        ),
        "Leave -s out (mkfs.vfat picks the cluster size), or give larger clusters.",
    ))
}

/// The sizes mkfs.fat (dosfstools 4.2) accepts for `-F 12`, `-F 16` and
/// `-F 32` with its default sector and cluster sizes, in KiB, measured by
/// running it on sparse files (the first and last size it formats).
const FAT_SIZES_KIB: [(&str, u64, u64); 3] = [
    ("12", 64, 261_695),
    ("16", 8_208, 4_194_004),
    ("32", 64, u64::MAX),
];

/// `mkfs.vfat -F N` on a partition of a size that FAT type cannot address:
/// mkfs.fat says "Attempting to create a too small or a too large
/// filesystem" and disko's install stops.
fn fat_size_refused(partition: &Partition, fs: &Filesystem, bytes: u64) -> Option<Issue> {
    if !matches!(fs.format.as_str(), "vfat" | "fat") {
        return None;
    }
    let args = &fs.extra_args;
    let fat = args
        .iter()
        .enumerate()
        .rev()
        .find_map(|(i, a)| match a.strip_prefix("-F") {
            Some("") => args.get(i + 1).cloned(),
            Some(n) => Some(n.to_owned()),
            None => None,
        });
    let Some(fat) = fat else {
        return fat16_clusters_refused(partition, fs, bytes);
    };
    // mkfs.fat knows FAT12, 16 and 32 only; anything else is its usage error.
    if !FAT_SIZES_KIB.iter().any(|(n, _, _)| *n == fat) {
        return Some(Issue::new(
            fs.path.join("extraArgs"),
            format!(
                "partition {:?}: mkfs.vfat -F {fat} is not a FAT type (12, 16 or 32): it refuses with its usage text and the install stops",
                partition.key
            ),
            "Write -F 32 (or leave -F out: mkfs.vfat picks the type from the size).",
        ));
    }
    // Sector or cluster sizes change the limits; those are not modelled.
    if args.iter().any(|a| {
        ["-s", "-S", "-R", "-f", "-r"]
            .iter()
            .any(|f| a.starts_with(f))
    }) {
        return None;
    }
    let &(_, min, max) = FAT_SIZES_KIB.iter().find(|(n, _, _)| *n == fat)?;
    let kib = bytes / 1024;
    if (min..=max).contains(&kib) {
        return None;
    }
    Some(Issue::new(
        fs.path.join("extraArgs"),
        format!(
            "partition {:?} is {} ({bytes} B), but mkfs.vfat -F {fat} formats only {} to {}: it refuses (\"Attempting to create a too small or a too large filesystem\") and the install stops",
            partition.key,
            human(bytes),
            human(min * 1024),
            if max == u64::MAX { "any size".to_owned() } else { human(max * 1024) }
        ),
        "Remove -F from extraArgs (mkfs.vfat picks the FAT type for the size) or use -F 32.",
    ))
}

#[cfg(test)]
mod tests;

/// Btrfs block-group profiles and the devices each needs (btrfs-progs'
/// `btrfs_raid_array`, devs_min; the same in every release since raid1c34).
const BTRFS_PROFILE_DEVICES: &[(&str, usize)] = &[
    ("raid1", 2),
    ("raid1c3", 3),
    ("raid1c4", 4),
    ("raid10", 2),
    ("raid5", 2),
    ("raid6", 3),
];

/// Checksums every mkfs.btrfs since 5.5 knows; nothing else.
const BTRFS_CHECKSUMS: &[&str] = &[
    "crc32c", "xxhash", "xxhash64", "sha256", "blake2", "blake2b",
];

/// `-O` features mkfs.btrfs 6.2 (Debian 12, the recorded judge) knows.
const BTRFS_FEATURES_6_2: &[&str] = &[
    "mixed-bg",
    "extref",
    "raid56",
    "skinny-metadata",
    "no-holes",
    "raid1c34",
    "zoned",
    "list-all",
];

/// `-O` features later btrfs-progs added (6.3 moved free-space-tree from
/// `-R` to `-O`; block-group-tree, squota and raid-stripe-tree came after).
const BTRFS_FEATURES_LATER: &[&str] = &[
    "free-space-tree",
    "block-group-tree",
    "quota",
    "squota",
    "raid-stripe-tree",
];

/// The value of `flag` (either `-x value`, `-xvalue` or `--flag=value`), last one.
fn flag_values<'a>(args: &'a [String], short: &str, long: &str) -> Vec<&'a str> {
    let mut values = Vec::new();
    let mut iter = args.iter().peekable();
    while let Some(arg) = iter.next() {
        if arg == short || arg == long {
            if let Some(value) = iter.next() {
                values.push(value.as_str());
            }
        } else if let Some(value) = arg.strip_prefix(&format!("{long}=")) {
            values.push(value);
        } else if short.len() == 2
            && arg.len() > 2
            && arg.starts_with(short)
            && !arg.starts_with("--")
        {
            values.push(&arg[2..]);
        }
    }
    values
}

/// What mkfs.btrfs refuses in extraArgs, whatever its version; and the
/// features only some versions know.
fn btrfs_argument_problems(args: &[String]) -> (Vec<String>, Vec<String>) {
    let (mut refused, mut version) = (Vec::new(), Vec::new());
    let devices = 1 + args.iter().filter(|a| a.starts_with("/dev/")).count();
    for (short, long, what) in [("-d", "--data", "data"), ("-m", "--metadata", "metadata")] {
        for profile in flag_values(args, short, long) {
            let profile = profile.to_ascii_lowercase();
            if let Some((_, needed)) = BTRFS_PROFILE_DEVICES.iter().find(|(p, _)| *p == profile) {
                if devices < *needed {
                    refused.push(format!(
                        "{short} {profile}: a {what} profile {profile} needs {needed} devices, and mkfs.btrfs gets {devices} (\"unable to create FS with {what} profile\")"
                    ));
                }
            }
        }
    }
    for csum in flag_values(args, "--csum", "--checksum")
        .into_iter()
        .chain(flag_values(args, "-K", "--checksum"))
    {
        if !BTRFS_CHECKSUMS.contains(&csum.to_ascii_lowercase().as_str()) {
            refused.push(format!(
                "--csum {csum}: not a checksum mkfs.btrfs knows ({}): \"unknown csum type\"",
                BTRFS_CHECKSUMS.join(", ")
            ));
        }
    }
    for size in flag_values(args, "-n", "--nodesize") {
        // mkfs.btrfs reads a number with an optional k/m/g suffix (binary).
        let digits = size.trim_end_matches(|c: char| c.is_ascii_alphabetic());
        let unit: u64 = match &size[digits.len()..] {
            "" => 1,
            "k" | "K" | "KiB" => 1 << 10,
            "m" | "M" | "MiB" => 1 << 20,
            "g" | "G" | "GiB" => 1 << 30,
            _ => 0,
        };
        let bytes = digits
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(unit))
            .filter(|b| *b > 0);
        match bytes {
            Some(b) if b.is_power_of_two() && (4096..=65536).contains(&b) => {}
            _ => refused.push(format!(
                "--nodesize {size}: mkfs.btrfs takes a power of two from the sector size (4 KiB) to 64 KiB"
            )),
        }
    }
    for list in flag_values(args, "-O", "--features") {
        for feature in list.split(',').filter(|f| !f.is_empty()) {
            let name = feature.trim_start_matches('^');
            if BTRFS_FEATURES_6_2.contains(&name) {
                continue;
            }
            if BTRFS_FEATURES_LATER.contains(&name) {
                version.push(format!(
                    "-O {feature}: mkfs.btrfs 6.2 and older refuse it (\"unrecognized filesystem feature\"); later ones take it"
                ));
            } else {
                refused.push(format!("-O {feature}: not a filesystem feature of any mkfs.btrfs (\"unrecognized filesystem feature\")"));
            }
        }
    }
    (refused, version)
}

fn btrfs_contents<'a>(model: &'a Model<'a>) -> impl Iterator<Item = &'a layout::Btrfs> {
    model
        .layout
        .contents()
        .filter_map(|(_, _, content)| match content {
            Content::Btrfs(btrfs) => Some(btrfs),
            _ => None,
        })
}

/// The page size of the machines this tool checks (x86_64).
const PAGE_BYTES: u64 = 4096;

/// extraArgs mkfs.btrfs or mkfs.ext4 refuse in every version: the install stops.
pub fn mkfs_arguments(model: &Model) -> Vec<Issue> {
    let ext4 = model
        .layout
        .contents()
        .filter_map(|(_, _, content)| match content {
            Content::Filesystem(fs) if fs.format == "ext4" => Some(fs),
            _ => None,
        });
    // mke2fs asks "Proceed anyway? (y,N)" for blocks above the page size;
    // disko's script has no terminal to answer, so it stops (mke2fs 1.47.0).
    let ext4_issues = ext4.flat_map(|fs| {
        flag_values(&fs.extra_args, "-b", "--block-size")
            .into_iter()
            .filter(|size| size.parse::<u64>().map_or(true, |b| b > PAGE_BYTES || !b.is_power_of_two() || b < 1024))
            .map(|size| {
                Issue::new(
                    fs.path.join("extraArgs"),
                    format!("mkfs.ext4 -b {size}: blocks of 1024 to {PAGE_BYTES} bytes (a power of two, at most the page size) only; for larger ones mke2fs asks \"Proceed anyway?\", nobody answers, and the install stops"),
                    "Leave -b out (4096 is the default) or give 1024, 2048 or 4096.",
                )
            })
            .collect::<Vec<_>>()
    });
    let mut issues: Vec<Issue> = ext4_issues.collect();
    issues.extend(btrfs_contents(model).flat_map(|btrfs| {
        btrfs_argument_problems(&btrfs.extra_args)
            .0
            .into_iter()
            .map(|problem| {
                Issue::new(
                    btrfs.path.join("extraArgs"),
                    format!("mkfs.btrfs refuses its extraArgs, so the install stops: {problem}"),
                    "Remove the argument or give a value mkfs.btrfs takes (see mkfs.btrfs(8)).",
                )
            })
    }));
    issues
}

/// extraArgs only some mkfs.btrfs versions take.
pub fn mkfs_arguments_version(model: &Model) -> Vec<Issue> {
    btrfs_contents(model)
        .flat_map(|btrfs| {
            btrfs_argument_problems(&btrfs.extra_args).1.into_iter().map(|problem| {
                Issue::new(
                    btrfs.path.join("extraArgs"),
                    format!("mkfs.btrfs may refuse its extraArgs, depending on the btrfs-progs of the installer: {problem}"),
                    "Use the feature only with an installer whose btrfs-progs knows it (`mkfs.btrfs -O list-all` lists them).",
                )
            })
        })
        .collect()
}
