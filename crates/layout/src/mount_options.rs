//! Which mount options really take effect.
//!
//! A Btrfs filesystem is one superblock however many subvolumes are mounted:
//! compress, ssd, discard, space_cache, datacow and the rest are filesystem
//! options that the first mount sets; later mounts of other subvolumes
//! cannot change them (btrfs(5), MOUNT OPTIONS; seen on kernels 6.1 and 6.18).
//! Only the VFS flags (noatime, nodev, nosuid, noexec, ro, …) and the
//! subvolume selection belong to each mount. An option the filesystem does
//! not accept (`kernel_options`) is in effect nowhere: the kernel refuses
//! the mount.
//!
//! This module sits above `kernel_options`, which alone reads option
//! strings; it adds which mount of a filesystem decides.

use std::collections::BTreeMap;

use serde::Serialize;

use super::kernel_options::{self, btrfs_scope, btrfs_setting, Filesystem, Scope, Verdict};
use super::model::{Layout, Mount};

/// What one mount ends up with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Effective {
    pub mountpoint: String,
    /// The mountpoint of the mount that decides the filesystem options.
    pub decided_by: String,
    /// Options in effect, per-mount ones first, as `key[=value]`.
    pub options: Vec<String>,
    /// Filesystem options written on this mount that another mount overrides.
    pub ignored: Vec<Ignored>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ignored {
    pub option: String,
    /// What the filesystem has instead (`compress=zstd:1`, or `(unset)`).
    pub in_effect: String,
}

/// The options that take effect on every Btrfs mount of the layout, keyed by
/// mountpoint (the first mount of a mountpoint declared twice); other
/// filesystems keep the options they are given.
pub fn effective(layout: &Layout) -> BTreeMap<String, Effective> {
    effective_for(&layout.mounts())
}

/// `effective` for the mounts of a layout (`Layout::mounts`), when they are at hand.
pub fn effective_for(mounts: &[Mount]) -> BTreeMap<String, Effective> {
    let mut result = BTreeMap::new();
    for effective in effective_per_mount(mounts) {
        result
            .entry(effective.mountpoint.clone())
            .or_insert(effective);
    }
    result
}

/// What each mount ends up with, in the order of `mounts`: a mountpoint
/// declared twice gets one entry per declaration, each with its own options.
pub fn effective_per_mount(mounts: &[Mount]) -> Vec<Effective> {
    // The first mount of each Btrfs device in mount order decides.
    let mut first_by_device: BTreeMap<&str, &Mount> = BTreeMap::new();
    for mount in mounts.iter().filter(|m| m.fs_type == "btrfs") {
        first_by_device
            .entry(mount.device.as_str())
            .or_insert(mount);
    }
    // What each decider sets, worked out once per filesystem.
    let decided: BTreeMap<&str, BTreeMap<String, String>> = first_by_device
        .iter()
        .map(|(device, decider)| (*device, filesystem_settings(decider)))
        .collect();
    let mut result = Vec::with_capacity(mounts.len());
    for mount in mounts {
        let filesystem = Filesystem::of(&mount.fs_type);
        // Options the kernel refuses take effect nowhere: the mount fails (MOUNT001/002).
        let given: Vec<&str> = mount
            .options
            .iter()
            .map(String::as_str)
            .filter(|o| !o.is_empty())
            .filter(|o| {
                !matches!(
                    kernel_options::judge(filesystem, o, &mount.options),
                    Verdict::Unknown { .. } | Verdict::BadValue { .. } | Verdict::Refused { .. }
                )
            })
            .collect();
        if mount.fs_type != "btrfs" {
            result.push(Effective {
                mountpoint: mount.mountpoint.clone(),
                decided_by: mount.mountpoint.clone(),
                options: unique(
                    given
                        .iter()
                        .filter(|o| **o != "defaults")
                        .map(|o| (*o).to_owned()),
                ),
                ignored: Vec::new(),
            });
            continue;
        }
        let decider = first_by_device[mount.device.as_str()];
        let own_per_mount = given
            .iter()
            .filter(|o| matches!(btrfs_scope(o), Scope::PerMount | Scope::Selector))
            .map(|o| (*o).to_owned());
        let fs_wide = &decided[mount.device.as_str()];
        let options = unique(own_per_mount.chain(fs_wide.values().cloned()));
        let mut ignored = Vec::new();
        if !std::ptr::eq(decider, mount) {
            let mine = filesystem_settings(mount);
            for (setting, option) in &mine {
                match fs_wide.get(setting) {
                    Some(in_effect) if in_effect == option => {}
                    Some(in_effect) => ignored.push(Ignored {
                        option: option.clone(),
                        in_effect: in_effect.clone(),
                    }),
                    None => ignored.push(Ignored {
                        option: option.clone(),
                        in_effect: "(unset)".to_owned(),
                    }),
                }
            }
        }
        result.push(Effective {
            mountpoint: mount.mountpoint.clone(),
            decided_by: decider.mountpoint.clone(),
            options,
            ignored,
        });
    }
    result
}

/// The options in order, each once (`subvol=@nix` written by hand and added by disko is one).
fn unique(options: impl Iterator<Item = String>) -> Vec<String> {
    let mut seen = std::collections::BTreeSet::new();
    options.filter(|o| seen.insert(o.clone())).collect()
}

/// The filesystem-wide settings a mount asks for; the last of repeated ones wins.
fn filesystem_settings(mount: &Mount) -> BTreeMap<String, String> {
    mount
        .options
        .iter()
        .filter(|o| !o.is_empty() && btrfs_scope(o) == Scope::FilesystemWide)
        .map(|o| (btrfs_setting(o), o.clone()))
        .collect()
}
