//! The typed layout of one host: disks, partitions, contents, subvolumes and
//! the NixOS flags written beside them. Built once from Nix's JSON (see
//! `build`), with disko's defaults applied, and read by every subcommand.

use std::collections::{BTreeMap, BTreeSet};

use camino::Utf8PathBuf;
use serde::Serialize;

use super::size::{PartitionSize, SizeError};
use crate::findings::AttrPath;

#[derive(Debug, Clone, Serialize)]
pub struct Layout {
    pub host: String,
    /// The file the layout was read from.
    pub source: Utf8PathBuf,
    pub disks: Vec<Disk>,
    /// `fileSystems.<mountpoint>` written beside the layout.
    pub file_systems: BTreeMap<String, FileSystemFlags>,
    /// Paths that get the No_COW attribute (`chattr +C`) from systemd-tmpfiles.
    pub nocow_paths: Vec<NocowPath>,
    /// `boot.resumeDevice`, if set.
    pub resume_device: Option<String>,
    /// impermanence's `environment.persistence`, from the host's persistence file.
    pub persistence: Vec<PersistenceRoot>,
    /// Mountpoints of devices this tool does not model (`disko.devices.nodev`,
    /// keyed by mountpoint): their options are not judged, but disko still
    /// defines `fileSystems.<mountpoint>` for them.
    pub unmodelled_mounts: Vec<(String, AttrPath)>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct FileSystemFlags {
    pub path: AttrPath,
    pub needed_for_boot: Option<bool>,
    /// Options NixOS adds to what disko generates for the same mountpoint.
    pub options: Vec<String>,
    pub device: Option<String>,
    pub fs_type: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct NocowPath {
    pub path: AttrPath,
    pub target: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Disk {
    pub path: AttrPath,
    /// The attribute name under `disko.devices.disk`.
    pub key: String,
    /// disko's `name` (the key with `/` replaced by `_`).
    pub name: String,
    pub device: String,
    pub content: Option<DiskContent>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DiskContent {
    Gpt(Gpt),
    /// A filesystem, Btrfs or swap directly on the whole disk.
    Whole(Content),
}

#[derive(Debug, Clone, Serialize)]
pub struct Gpt {
    pub path: AttrPath,
    /// In creation order: by priority, then by attribute name, as disko sorts them.
    pub partitions: Vec<Partition>,
    /// disko's `efiGptPartitionFirst` (default true): where the hybrid MBR
    /// puts its 0xEE entry.
    pub efi_gpt_partition_first: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Partition {
    pub path: AttrPath,
    /// The attribute name under `partitions`.
    pub key: String,
    pub name: String,
    /// The GPT partition number: the position in creation order, from 1.
    pub number: u32,
    /// The sgdisk type code, `EF02`, `EF00`, `8200`, `8300` or a GUID.
    pub type_code: String,
    /// The GPT partition name, `disk-<disk>-<partition>` by default.
    pub label: String,
    /// The device path disko and NixOS use, `/dev/disk/by-partlabel/<label>`
    /// (escaped as disko escapes it) by default.
    pub device: String,
    /// Set when `device` is disko's default by-partlabel path: what udev
    /// really creates for the label.
    pub partlabel: Option<Partlabel>,
    #[serde(skip)]
    pub size: Result<PartitionSize, SizeError>,
    /// The size as written, for reports.
    pub size_text: String,
    /// sgdisk's start and end (`0` and `+1M` by default).
    pub start: String,
    pub end: String,
    pub priority: i64,
    /// 0 means sgdisk's default alignment.
    pub alignment: u64,
    pub content: Option<Content>,
    /// An entry of the hybrid MBR, if the partition asks for one.
    pub hybrid: Option<Hybrid>,
}

/// The by-partlabel link of a partition as disko names it and as udev makes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Partlabel {
    /// disko's `hexEscapeUdevSymlink` of the label, or the first byte it
    /// cannot escape (the evaluation fails).
    pub disko: Result<String, u8>,
    /// The name sgdisk writes into the GPT for the label.
    pub stored_name: String,
    /// `/dev/disk/by-partlabel/<name>` as udev creates it for `stored_name`.
    pub udev_device: String,
}

/// A partition's `hybrid` settings.
#[derive(Debug, Clone, Serialize)]
pub struct Hybrid {
    pub path: AttrPath,
    pub mbr_partition_type: Option<String>,
    pub mbr_bootable_flag: bool,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Content {
    Filesystem(Filesystem),
    Btrfs(Btrfs),
    Swap(Swap),
}

impl Content {
    pub fn type_name(&self) -> &'static str {
        match self {
            Content::Filesystem(_) => "filesystem",
            Content::Btrfs(_) => "btrfs",
            Content::Swap(_) => "swap",
        }
    }

    pub fn path(&self) -> &AttrPath {
        match self {
            Content::Filesystem(fs) => &fs.path,
            Content::Btrfs(btrfs) => &btrfs.path,
            Content::Swap(swap) => &swap.path,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Filesystem {
    pub path: AttrPath,
    pub device: String,
    pub format: String,
    pub mountpoint: Option<String>,
    pub mount_options: Vec<String>,
    pub extra_args: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Btrfs {
    pub path: AttrPath,
    pub device: String,
    pub extra_args: Vec<String>,
    /// Swap files on the top level (`swap.<name>`).
    pub swapfiles: Vec<Swapfile>,
    /// Where the top level is mounted, if anywhere.
    pub mountpoint: Option<String>,
    pub mount_options: Vec<String>,
    /// Sorted by attribute name, as disko creates them.
    pub subvolumes: Vec<Subvolume>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Subvolume {
    pub path: AttrPath,
    /// The attribute name.
    pub key: String,
    /// The subvolume's path below the top level (disko's `name`).
    pub name: String,
    pub mountpoint: Option<String>,
    /// As written, without the `subvol=` disko appends.
    pub mount_options: Vec<String>,
    pub extra_args: Vec<String>,
    /// Swap files in the subvolume (`swap.<name>`).
    pub swapfiles: Vec<Swapfile>,
}

/// A Btrfs swap file disko creates with `btrfs filesystem mkswapfile` and
/// hands to NixOS as `swapDevices = [ { device = "<mountpoint>/<path>"; } ]`,
/// with no random encryption (disko 878ec37, lib/types/btrfs.nix).
#[derive(Debug, Clone, Serialize)]
pub struct Swapfile {
    pub path: AttrPath,
    /// The attribute name under `swap`.
    pub key: String,
    /// Below the subvolume (or top level): `path`, the key by default.
    pub file: String,
    pub size: String,
    pub priority: Option<i64>,
    pub options: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Swap {
    pub path: AttrPath,
    pub device: String,
    pub random_encryption: bool,
    pub resume_device: bool,
    pub discard_policy: Option<String>,
    pub priority: Option<i64>,
    pub mount_options: Vec<String>,
    pub extra_args: Vec<String>,
}

/// One `environment.persistence.<name>` entry of impermanence.
#[derive(Debug, Clone, Serialize)]
pub struct PersistenceRoot {
    pub path: AttrPath,
    /// Where the persistent copies live, e.g. `/persist`.
    pub storage_path: String,
    pub entries: Vec<PersistedEntry>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    Directory,
    File,
}

#[derive(Debug, Clone, Serialize)]
pub struct PersistedEntry {
    pub path: AttrPath,
    pub kind: EntryKind,
    /// The absolute path in the running system (user entries below the home).
    pub target: String,
    /// The user a `users.<name>` entry belongs to.
    pub user: Option<String>,
}

/// Where a mount comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MountSource {
    /// A Btrfs subvolume, mounted with `subvol=<name>`.
    Subvolume { name: String },
    /// The top level of a Btrfs filesystem (subvolid 5).
    BtrfsTopLevel,
    /// A filesystem such as vfat.
    Filesystem,
}

/// A mount as NixOS will perform it.
#[derive(Debug, Clone, Serialize)]
pub struct Mount {
    pub path: AttrPath,
    pub mountpoint: String,
    /// The block device, which for Btrfs also names the filesystem.
    pub device: String,
    pub fs_type: String,
    pub source: MountSource,
    /// The options NixOS passes to mount: disko's, then `fileSystems`' own.
    pub options: Vec<String>,
    /// Set explicitly, or implied by NixOS for paths such as `/` and `/nix`.
    pub needed_for_boot: bool,
    pub needed_for_boot_explicit: bool,
}

/// Paths NixOS mounts in the initrd whatever the flag says
/// (`pathsNeededForBoot` in nixpkgs' lib/utils.nix).
pub const PATHS_NEEDED_FOR_BOOT: &[&str] = &[
    "/",
    "/nix",
    "/nix/store",
    "/var",
    "/var/log",
    "/var/lib",
    "/var/lib/nixos",
    "/etc",
    "/usr",
];

impl Layout {
    /// Every content of every disk, with the partition it sits on (if any).
    pub fn contents(&self) -> impl Iterator<Item = (&Disk, Option<&Partition>, &Content)> {
        self.disks.iter().flat_map(|disk| {
            let items: Vec<(&Disk, Option<&Partition>, &Content)> = match &disk.content {
                Some(DiskContent::Gpt(gpt)) => gpt
                    .partitions
                    .iter()
                    .filter_map(|p| p.content.as_ref().map(|c| (disk, Some(p), c)))
                    .collect(),
                Some(DiskContent::Whole(content)) => vec![(disk, None, content)],
                None => Vec::new(),
            };
            items
        })
    }

    pub fn partitions(&self) -> impl Iterator<Item = (&Disk, &Partition)> {
        self.disks.iter().flat_map(|disk| match &disk.content {
            Some(DiskContent::Gpt(gpt)) => gpt.partitions.iter().map(|p| (disk, p)).collect(),
            _ => Vec::new(),
        })
    }

    pub fn btrfs_filesystems(&self) -> impl Iterator<Item = &Btrfs> {
        self.contents().filter_map(|(_, _, content)| match content {
            Content::Btrfs(btrfs) => Some(btrfs),
            _ => None,
        })
    }

    fn needed_for_boot(&self, mountpoint: &str) -> (bool, bool) {
        let explicit = self
            .file_systems
            .get(mountpoint)
            .and_then(|flags| flags.needed_for_boot)
            .unwrap_or(false);
        (
            explicit || PATHS_NEEDED_FOR_BOOT.contains(&mountpoint),
            explicit,
        )
    }

    fn extra_options(&self, mountpoint: &str) -> &[String] {
        self.file_systems
            .get(mountpoint)
            .map(|flags| flags.options.as_slice())
            .unwrap_or(&[])
    }

    /// Every mount the layout declares, in the order NixOS performs them:
    /// `/` first, then the initrd's (neededForBoot) mounts, then the rest,
    /// each group parents before children.
    pub fn mounts(&self) -> Vec<Mount> {
        let mut mounts = Vec::new();
        for (_, _, content) in self.contents() {
            match content {
                Content::Filesystem(fs) => {
                    if let Some(mountpoint) = &fs.mountpoint {
                        mounts.push(self.mount(
                            fs.path.clone(),
                            mountpoint,
                            &fs.device,
                            &fs.format,
                            MountSource::Filesystem,
                            fs.mount_options.clone(),
                        ));
                    }
                }
                Content::Btrfs(btrfs) => {
                    if let Some(mountpoint) = &btrfs.mountpoint {
                        mounts.push(self.mount(
                            btrfs.path.clone(),
                            mountpoint,
                            &btrfs.device,
                            "btrfs",
                            MountSource::BtrfsTopLevel,
                            btrfs.mount_options.clone(),
                        ));
                    }
                    for subvolume in &btrfs.subvolumes {
                        if let Some(mountpoint) = &subvolume.mountpoint {
                            let mut options = subvolume.mount_options.clone();
                            options.push(format!("subvol={}", subvolume.name));
                            mounts.push(self.mount(
                                subvolume.path.clone(),
                                mountpoint,
                                &btrfs.device,
                                "btrfs",
                                MountSource::Subvolume {
                                    name: subvolume.name.clone(),
                                },
                                options,
                            ));
                        }
                    }
                }
                Content::Swap(_) => {}
            }
        }
        // The key holds a copy of the mountpoint: compute it once per mount.
        mounts.sort_by_cached_key(mount_order_key);
        mounts
    }

    fn mount(
        &self,
        path: AttrPath,
        mountpoint: &str,
        device: &str,
        fs_type: &str,
        source: MountSource,
        mut options: Vec<String>,
    ) -> Mount {
        options.extend(self.extra_options(mountpoint).iter().cloned());
        let (needed_for_boot, needed_for_boot_explicit) = self.needed_for_boot(mountpoint);
        Mount {
            path,
            mountpoint: mountpoint.to_owned(),
            device: device.to_owned(),
            fs_type: fs_type.to_owned(),
            source,
            options,
            needed_for_boot,
            needed_for_boot_explicit,
        }
    }

    /// Subvolume names that exist on a Btrfs filesystem, mounted or not.
    pub fn subvolume_names(btrfs: &Btrfs) -> BTreeSet<&str> {
        btrfs.subvolumes.iter().map(|s| s.name.as_str()).collect()
    }
}

/// `/` first, then initrd mounts, then the rest; parents before children
/// (a path sorts before every path below it).
fn mount_order_key(mount: &Mount) -> (u8, usize, String) {
    let group = if mount.mountpoint == "/" {
        0
    } else if mount.needed_for_boot {
        1
    } else {
        2
    };
    let depth = mount
        .mountpoint
        .split('/')
        .filter(|part| !part.is_empty())
        .count();
    (group, depth, mount.mountpoint.clone())
}
