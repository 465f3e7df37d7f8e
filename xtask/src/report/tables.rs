//! The tables every subcommand shows about a layout: partitions with their
//! real geometry, subvolumes with the options that really take effect, other
//! mounts and swap. `check` prints them, `docs` writes them, `vm-test`
//! compares the guest against them.

use std::collections::{BTreeMap, BTreeSet};

use schemars::JsonSchema;
use serde::Serialize;

use crate::hosts::Model;
use layout::geometry::DiskGeometry;
use layout::impermanence::{OLD_ROOTS_SUBVOLUME, ROOT_SUBVOLUME};
use layout::kernel_options::{compression, has_nodatacow};
use layout::size::{human, parse_partition_size, PartitionSize};
use layout::{Content, DiskContent, Layout, Mount, MountSource};

impl crate::hosts::Subject {
    /// The tables of the host (the report's view of it, derived once).
    pub fn tables(&self) -> Tables {
        Tables::new(&self.model())
    }
}

/// The tables of one host's layout.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Tables {
    /// One per disk.
    pub disks: Vec<DiskTable>,
    /// One per Btrfs filesystem.
    pub filesystems: Vec<BtrfsTable>,
    /// Mounts that are not Btrfs subvolumes (the ESP, …).
    pub other_mounts: Vec<MountRow>,
    /// Swap partitions, then Btrfs swap files.
    pub swaps: Vec<SwapRow>,
}

/// One disk and its GPT partitions.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct DiskTable {
    /// The attribute name under `disko.devices.disk`.
    pub key: String,
    /// E.g. `/dev/sda`.
    pub device: String,
    /// The disk size the geometry was computed for; `null` when unknown.
    pub size_bytes: Option<u64>,
    /// In creation order (disko: by priority, then name).
    pub partitions: Vec<PartitionRow>,
    /// Bytes no partition uses (GPT structures, alignment).
    pub unallocated_bytes: Option<u64>,
}

/// One GPT partition, where sgdisk puts it.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct PartitionRow {
    /// The GPT partition number.
    pub number: u32,
    /// The attribute name.
    pub key: String,
    /// The GPT name, e.g. `disk-main-ESP`.
    pub label: String,
    /// E.g. `EF00`.
    pub type_code: String,
    /// E.g. `EFI system`.
    pub type_name: &'static str,
    /// As written (`1G`, `100%`).
    pub size_text: String,
    /// Inclusive, in 512-byte sectors, as `sgdisk -p` prints it; `null` when
    /// the partition cannot be placed.
    pub start_sector: Option<u64>,
    /// Inclusive, in 512-byte sectors; `null` when the partition cannot be placed.
    pub end_sector: Option<u64>,
    pub start_bytes: Option<u64>,
    /// One past the last byte.
    pub end_bytes: Option<u64>,
    pub size_bytes: Option<u64>,
    /// A summary, e.g. `vfat at /boot`.
    pub content: String,
    /// The path NixOS uses, e.g. `/dev/disk/by-partlabel/disk-main-ESP`.
    pub device: String,
}

/// One Btrfs filesystem and its subvolumes.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct BtrfsTable {
    /// Its block device.
    pub device: String,
    /// The mountpoint whose filesystem-wide options take effect (the first mount).
    pub options_decided_by: Option<String>,
    pub subvolumes: Vec<SubvolumeRow>,
}

/// One subvolume (or the top level) and how it is mounted.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct SubvolumeRow {
    /// `@nix`, or `(top level)` for subvolid 5.
    pub name: String,
    /// `null` when not mounted (e.g. `@old_roots`).
    pub mountpoint: Option<String>,
    /// The per-mount options of this mount, then the filesystem-wide options
    /// in effect (options the kernel refuses are in effect nowhere; a
    /// mountpoint declared twice shows each declaration's own).
    pub options_in_effect: Vec<String>,
    /// E.g. `zstd:1`; `null` for no compression or No_COW.
    pub compression: Option<String>,
    /// New files get No_COW (`chattr +C` through a tmpfiles rule on the mountpoint).
    pub nocow: bool,
    /// Mounted in the initrd (explicitly, or a path NixOS always mounts there).
    pub needed_for_boot: bool,
    pub lifecycle: Lifecycle,
    /// What usually lives there (empty when unknown).
    pub purpose: &'static str,
}

/// What a reboot does to a subvolume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Lifecycle {
    /// Moved to @old_roots and replaced at every boot.
    WipedAtBoot,
    /// Old roots, deleted after the retention period.
    Retained,
    /// Kept across boots.
    Persistent,
}

impl Lifecycle {
    pub fn describe(self) -> &'static str {
        match self {
            Lifecycle::WipedAtBoot => "wiped at every boot",
            Lifecycle::Retained => "old roots, deleted after 30 days",
            Lifecycle::Persistent => "persistent",
        }
    }
}

/// A mount that is not a Btrfs subvolume.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct MountRow {
    pub mountpoint: String,
    /// E.g. `vfat`.
    pub fs_type: String,
    pub device: String,
    pub options_in_effect: Vec<String>,
    pub needed_for_boot: bool,
}

/// A swap partition or a Btrfs swap file.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct SwapRow {
    /// The partition's device, or the swap file's path.
    pub device: String,
    pub size_bytes: Option<u64>,
    /// Encrypted with a fresh random key at every boot.
    pub random_encryption: bool,
}

/// What a mountpoint usually holds on this kind of server.
pub fn purpose(name: &str, mountpoint: Option<&str>) -> &'static str {
    if name == OLD_ROOTS_SUBVOLUME {
        return "previous roots, one per boot, for recovering files";
    }
    match mountpoint {
        Some("/") => "the root filesystem: fresh and empty at every boot",
        Some("/nix") => "the Nix store and database",
        Some("/persist") => "state kept across boots (impermanence binds it into /)",
        Some("/var/log") => "logs and the systemd journal",
        Some("/var/lib/containers") => "container images, layers and volumes (podman)",
        Some("/var/lib/caddy") => "caddy's certificates, keys and state",
        Some("/.snapshots") => "read-only snapshots of @persist",
        Some("/btrfs_tmp") => "the top level, for managing subvolumes",
        Some("/boot") => "GRUB, kernels and initrds",
        _ => "",
    }
}

pub fn type_name(code: &str) -> &'static str {
    match code.to_ascii_uppercase().as_str() {
        "EF02" => "BIOS boot",
        "EF00" => "EFI system",
        "8200" => "Linux swap",
        "8300" => "Linux filesystem",
        "8304" => "Linux x86-64 root",
        "FD00" => "Linux RAID",
        "8E00" => "Linux LVM",
        _ => "other",
    }
}

fn content_summary(content: Option<&Content>) -> String {
    match content {
        None => "(none)".to_owned(),
        Some(Content::Filesystem(fs)) => match &fs.mountpoint {
            Some(mp) => format!("{} at {mp}", fs.format),
            None => fs.format.clone(),
        },
        Some(Content::Btrfs(btrfs)) => format!("btrfs, {} subvolumes", btrfs.subvolumes.len()),
        Some(Content::Swap(swap)) => {
            if swap.random_encryption {
                "swap, random encryption".to_owned()
            } else {
                "swap, unencrypted".to_owned()
            }
        }
    }
}

impl Tables {
    pub fn new(model: &Model) -> Tables {
        let layout = model.layout;
        let disks = layout
            .disks
            .iter()
            .map(|disk| disk_table(disk, model.geometry.get(&disk.key)))
            .collect();
        Tables {
            disks,
            filesystems: btrfs_tables(layout, model),
            other_mounts: model
                .mounts_in_effect()
                .filter(|(m, _)| m.fs_type != "btrfs")
                .map(|(m, effective)| MountRow {
                    mountpoint: m.mountpoint.clone(),
                    fs_type: m.fs_type.clone(),
                    device: m.device.clone(),
                    // Each mount's own: a mountpoint declared twice has two rows.
                    options_in_effect: effective.options.clone(),
                    needed_for_boot: m.needed_for_boot,
                })
                .collect(),
            swaps: swap_rows(model),
        }
    }
}

fn disk_table(disk: &layout::Disk, geometry: Option<&DiskGeometry>) -> DiskTable {
    let partitions = match &disk.content {
        Some(DiskContent::Gpt(gpt)) => gpt
            .partitions
            .iter()
            .map(|p| {
                let extent = geometry.and_then(|g| g.extent(p.number));
                PartitionRow {
                    number: p.number,
                    key: p.key.clone(),
                    label: p.label.clone(),
                    type_code: p.type_code.clone(),
                    type_name: type_name(&p.type_code),
                    size_text: p.size_text.clone(),
                    start_sector: extent.map(|e| e.start_sector),
                    end_sector: extent.map(|e| e.end_sector),
                    start_bytes: extent.map(|e| e.start_bytes()),
                    end_bytes: extent.map(|e| e.end_bytes()),
                    size_bytes: extent.map(|e| e.size_bytes()),
                    content: content_summary(p.content.as_ref()),
                    device: p.device.clone(),
                }
            })
            .collect(),
        _ => Vec::new(),
    };
    DiskTable {
        key: disk.key.clone(),
        device: disk.device.clone(),
        size_bytes: geometry.map(|g| g.disk_bytes),
        partitions,
        unallocated_bytes: geometry
            .filter(|g| g.problems.is_empty())
            .map(|g| g.unallocated_bytes()),
    }
}

fn btrfs_tables(layout: &Layout, model: &Model) -> Vec<BtrfsTable> {
    // Each declaration's own mount, found once by its attribute path: layouts
    // may have thousands of subvolumes, and a mountpoint may be declared twice.
    let by_path: BTreeMap<&layout::findings::AttrPath, (&Mount, &[String])> = model
        .mounts_in_effect()
        .map(|(m, effective)| (&m.path, (m, effective.options.as_slice())))
        .collect();
    let nocow_targets: BTreeSet<&str> = layout
        .nocow_paths
        .iter()
        .map(|n| n.target.as_str())
        .collect();
    layout
        .btrfs_filesystems()
        .map(|btrfs| {
            let nocow =
                |mountpoint: Option<&str>| mountpoint.is_some_and(|mp| nocow_targets.contains(mp));
            let row =
                |name: String, path: &layout::findings::AttrPath, mountpoint: Option<&str>| {
                    let found = mountpoint.and_then(|_| by_path.get(path).copied());
                    let mount = found.map(|(m, _)| m);
                    let options = found.map(|(_, o)| o.to_vec()).unwrap_or_default();
                    let lifecycle = if name == ROOT_SUBVOLUME {
                        Lifecycle::WipedAtBoot
                    } else if name == OLD_ROOTS_SUBVOLUME {
                        Lifecycle::Retained
                    } else {
                        Lifecycle::Persistent
                    };
                    SubvolumeRow {
                        purpose: purpose(&name, mountpoint),
                        compression: if has_nodatacow(&options) || nocow(mountpoint) {
                            None
                        } else {
                            compression(&options)
                        },
                        nocow: nocow(mountpoint) || has_nodatacow(&options),
                        needed_for_boot: mount.is_some_and(|m| m.needed_for_boot),
                        options_in_effect: options,
                        mountpoint: mountpoint.map(str::to_owned),
                        lifecycle,
                        name,
                    }
                };
            let mut subvolumes = Vec::new();
            if btrfs.mountpoint.is_some() {
                subvolumes.push(row(
                    "(top level)".to_owned(),
                    &btrfs.path,
                    btrfs.mountpoint.as_deref(),
                ));
            }
            for subvolume in &btrfs.subvolumes {
                subvolumes.push(row(
                    subvolume.name.clone(),
                    &subvolume.path,
                    subvolume.mountpoint.as_deref(),
                ));
            }
            let decided_by = model
                .mounts
                .iter()
                .find(|m| m.device == btrfs.device && m.fs_type == "btrfs")
                .map(|m| m.mountpoint.clone());
            BtrfsTable {
                device: btrfs.device.clone(),
                options_decided_by: decided_by,
                subvolumes,
            }
        })
        .collect()
}

fn swap_rows(model: &Model) -> Vec<SwapRow> {
    let mut rows = Vec::new();
    for (disk, partition, content) in model.layout.contents() {
        if let Content::Swap(swap) = content {
            let size = partition.and_then(|p| {
                model
                    .geometry
                    .get(&disk.key)
                    .and_then(|g| g.extent(p.number))
                    .map(|e| e.size_bytes())
            });
            rows.push(SwapRow {
                device: swap.device.clone(),
                size_bytes: size,
                random_encryption: swap.random_encryption,
            });
        }
    }
    // Btrfs swap files: disko never encrypts them.
    for btrfs in model.layout.btrfs_filesystems() {
        let holders = std::iter::once((btrfs.mountpoint.as_deref(), &btrfs.swapfiles)).chain(
            btrfs
                .subvolumes
                .iter()
                .map(|s| (s.mountpoint.as_deref(), &s.swapfiles)),
        );
        for (mountpoint, files) in holders {
            for file in files {
                rows.push(SwapRow {
                    device: format!(
                        "{}/{}",
                        mountpoint.unwrap_or("?").trim_end_matches('/'),
                        file.file
                    ),
                    size_bytes: match parse_partition_size(&file.size) {
                        Ok(PartitionSize::Bytes(bytes)) => Some(bytes),
                        _ => None,
                    },
                    random_encryption: false,
                });
            }
        }
    }
    rows
}

/// `414.0 GiB (444563718144 B)`, or `?` when unknown.
pub fn bytes_cell(bytes: Option<u64>) -> String {
    bytes.map_or_else(|| "?".to_owned(), |b| format!("{} ({b} B)", human(b)))
}

/// Whether the mount comes from a subvolume (for tables that group by it).
pub fn is_subvolume(source: &MountSource) -> bool {
    matches!(source, MountSource::Subvolume { .. })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::hosts::{Firmware, Model};
    use layout::testing::host_layout;

    #[test]
    fn the_hosts_tables() {
        let layout = host_layout();
        let sizes = BTreeMap::from([("main".to_owned(), 480_000_000_000)]);
        let model = Model::new(&layout, &sizes, Firmware::default());
        let tables = Tables::new(&model);
        let root = &tables.disks[0].partitions[3];
        assert_eq!(root.key, "root");
        assert_eq!(root.size_bytes, Some(444_563_718_144));
        let btrfs = &tables.filesystems[0];
        assert_eq!(btrfs.options_decided_by.as_deref(), Some("/"));
        let containers = btrfs
            .subvolumes
            .iter()
            .find(|s| s.name == "@containers")
            .unwrap();
        assert!(containers.nocow);
        assert_eq!(containers.compression, None);
        let nix = btrfs.subvolumes.iter().find(|s| s.name == "@nix").unwrap();
        assert_eq!(nix.compression.as_deref(), Some("zstd:1"));
        assert!(nix.needed_for_boot);
        let root_row = btrfs.subvolumes.iter().find(|s| s.name == "@root").unwrap();
        assert_eq!(root_row.lifecycle, Lifecycle::WipedAtBoot);
        assert_eq!(tables.swaps[0].size_bytes, Some(32 << 30));
        assert_eq!(tables.other_mounts[0].mountpoint, "/boot");
    }

    #[test]
    fn a_mountpoint_declared_twice_shows_each_mounts_own_options() {
        use layout::testing::{host_evaluation, layout_of};
        let mut evaluation = host_evaluation();
        let subvolumes = &mut evaluation["layout"]["disko"]["devices"]["disk"]["main"]["content"]
            ["partitions"]["root"]["content"]["subvolumes"];
        subvolumes["@caddy"]["mountpoint"] = serde_json::json!("/srv");
        subvolumes["@caddy"]["mountOptions"] = serde_json::json!(["noatime", "nodev"]);
        subvolumes["@snapshots"]["mountpoint"] = serde_json::json!("/srv");
        subvolumes["@snapshots"]["mountOptions"] = serde_json::json!(["noatime", "noexec"]);
        let (layout, _) = layout_of(&evaluation);
        let layout = layout.expect("the layout builds");
        let sizes = BTreeMap::from([("main".to_owned(), 480_000_000_000)]);
        let model = Model::new(&layout, &sizes, Firmware::default());
        let tables = Tables::new(&model);
        let row = |name: &str| {
            tables.filesystems[0]
                .subvolumes
                .iter()
                .find(|s| s.name == name)
                .unwrap()
                .options_in_effect
                .clone()
        };
        assert!(
            row("@caddy").contains(&"nodev".to_owned()),
            "{:?}",
            row("@caddy")
        );
        assert!(
            !row("@caddy").contains(&"noexec".to_owned()),
            "{:?}",
            row("@caddy")
        );
        assert!(
            row("@snapshots").contains(&"noexec".to_owned()),
            "{:?}",
            row("@snapshots")
        );
        assert!(row("@snapshots").contains(&"subvol=@snapshots".to_owned()));
    }
}
