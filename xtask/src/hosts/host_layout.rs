//! A host's layout on its machine, with what is derived from it once.

use std::collections::BTreeMap;

use serde::Serialize;

use super::Machine;
use layout::geometry::{self, DiskGeometry};
use layout::mount_options::{self, effective_per_mount, Effective};
use layout::{Disk, DiskContent, Layout, Mount, Partition};

/// A host's layout on its machine: the layout, the machine's firmware and
/// disk sizes, and what is derived from them once (mounts, the options in
/// effect, the geometry sgdisk computes). The rules judge it, the tables show
/// it, vm-test realises it.
pub struct Model<'a> {
    pub layout: &'a Layout,
    pub mounts: Vec<Mount>,
    /// The options in effect by mountpoint (the first mount of a mountpoint declared twice).
    pub effective: BTreeMap<String, Effective>,
    /// The options in effect on each of `mounts`, in the same order.
    pub effective_per_mount: Vec<Effective>,
    /// By disk key, for GPT disks.
    pub geometry: BTreeMap<String, DiskGeometry>,
    /// Whether the machine boots with BIOS, UEFI or both.
    pub firmware: Firmware,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Firmware {
    pub bios: bool,
    pub uefi: bool,
}

impl Default for Firmware {
    fn default() -> Self {
        Firmware {
            bios: true,
            uefi: true,
        }
    }
}

impl<'a> Model<'a> {
    /// The options in effect on the mount at `mountpoint` (none if nothing is mounted there).
    pub fn options_in_effect(&self, mountpoint: &str) -> Vec<String> {
        self.effective
            .get(mountpoint)
            .map(|e| e.options.clone())
            .unwrap_or_default()
    }

    /// Each mount with the options in effect on it.
    pub fn mounts_in_effect(&self) -> impl Iterator<Item = (&Mount, &Effective)> {
        self.mounts.iter().zip(&self.effective_per_mount)
    }

    /// A partition's size in bytes: where sgdisk puts it when the geometry
    /// is known, else its `size` when the end is the default `+<size>`.
    pub fn partition_bytes(&self, disk: &Disk, partition: &Partition) -> Option<u64> {
        match self.geometry.get(&disk.key) {
            Some(geometry) => geometry.extent(partition.number).map(|e| e.size_bytes()),
            None if partition.start == "0"
                && partition.end == format!("+{}", partition.size_text) =>
            {
                partition.fixed_size()
            }
            None => None,
        }
    }

    /// Derives mounts, effective options and geometry; `disk_bytes` gives each
    /// disk's size by key (disks without a size get no geometry).
    pub fn new(layout: &'a Layout, disk_bytes: &BTreeMap<String, u64>, firmware: Firmware) -> Self {
        let geometry = layout
            .disks
            .iter()
            .filter_map(|disk| match (&disk.content, disk_bytes.get(&disk.key)) {
                (Some(DiskContent::Gpt(gpt)), Some(bytes)) => {
                    Some((disk.key.clone(), geometry::compute(gpt, *bytes)))
                }
                _ => None,
            })
            .collect();
        let mounts = layout.mounts();
        Model {
            layout,
            effective: mount_options::effective_for(&mounts),
            effective_per_mount: effective_per_mount(&mounts),
            mounts,
            geometry,
            firmware,
        }
    }
}

/// The firmware a machine boots with; both when machine.nix does not say.
pub fn firmware(machine: &Machine) -> Firmware {
    if machine.firmware.is_empty() {
        return Firmware::default();
    }
    Firmware {
        bios: machine.firmware.iter().any(|f| f == "bios"),
        uefi: machine.firmware.iter().any(|f| f == "uefi"),
    }
}
