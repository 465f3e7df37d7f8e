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

use std::collections::BTreeMap;

use serde::Serialize;

use super::kernel_options::{self, Filesystem};
use super::model::{Layout, Mount};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Belongs to each mount (VFS flags).
    PerMount,
    /// Belongs to the filesystem: the first mount decides.
    FilesystemWide,
    /// Picks the subvolume (`subvol=`, `subvolid=`).
    Selector,
    /// Read by mount(8) or systemd, never by the kernel (`nofail`, `x-systemd.*`).
    Userspace,
    /// Not an option the filesystem accepts: the mount fails (MOUNT001), so
    /// it is in effect nowhere.
    Unknown,
}

/// The option's name: `compress` for `compress=zstd:1`.
pub fn key(option: &str) -> &str {
    kernel_options::key(option)
}

/// The scope of a Btrfs mount option (kernel_options knows which exist).
pub fn btrfs_scope(option: &str) -> Scope {
    kernel_options::scope(Filesystem::Btrfs, option).unwrap_or(Scope::Unknown)
}

/// Filesystem options whose `no…` form switches the same setting, so that
/// `ssd` and `nossd` compare as one setting.
fn setting_of(option: &str) -> String {
    let name = key(option);
    let base = match name {
        "nodatacow" | "datacow" => "datacow",
        "nodatasum" | "datasum" => "datasum",
        "nossd" | "ssd" | "ssd_spread" | "nossd_spread" => "ssd",
        "nodiscard" | "discard" => "discard",
        "nospace_cache" | "space_cache" | "clear_cache" => "space_cache",
        "compress" | "compress-force" => "compress",
        "nobarrier" | "barrier" => "barrier",
        "noautodefrag" | "autodefrag" => "autodefrag",
        "noflushoncommit" | "flushoncommit" => "flushoncommit",
        "notreelog" | "treelog" => "treelog",
        other => other,
    };
    base.to_owned()
}

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
                    kernel_options::Verdict::Unknown { .. }
                        | kernel_options::Verdict::BadValue { .. }
                        | kernel_options::Verdict::Refused { .. }
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
        .map(|o| (setting_of(o), o.clone()))
        .collect()
}

/// Whether `options` (in effect) leave data copy-on-write off, so compression cannot apply.
pub fn has_nodatacow(options: &[String]) -> bool {
    kernel_options::read(Filesystem::Btrfs, options)
        .nocow_option()
        .is_some()
}

/// The compression in effect, `zstd:1`, if any.
pub fn compression(options: &[String]) -> Option<String> {
    options.iter().find_map(|o| {
        let (k, v) = o.split_once('=')?;
        (k == "compress" || k == "compress-force").then(|| v.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes() {
        assert_eq!(btrfs_scope("noatime"), Scope::PerMount);
        assert_eq!(btrfs_scope("compress=zstd:3"), Scope::FilesystemWide);
        assert_eq!(btrfs_scope("nodatacow"), Scope::FilesystemWide);
        assert_eq!(btrfs_scope("discard=async"), Scope::FilesystemWide);
        assert_eq!(btrfs_scope("subvol=@nix"), Scope::Selector);
        assert_eq!(btrfs_scope("x-systemd.automount"), Scope::Userspace);
        assert_eq!(btrfs_scope("nofail"), Scope::Userspace);
        // An unknown option is not a filesystem-wide setting: the kernel refuses it.
        assert_eq!(btrfs_scope("noatimex"), Scope::Unknown);
        assert_eq!(btrfs_scope("fmask=0177"), Scope::Unknown);
        assert_eq!(setting_of("nossd"), setting_of("ssd"));
        assert_eq!(setting_of("compress-force=zstd"), "compress");
    }

    #[test]
    fn compression_and_nocow_in_effect() {
        let options: Vec<String> = ["noatime", "compress=zstd:1"].map(String::from).to_vec();
        assert_eq!(compression(&options).as_deref(), Some("zstd:1"));
        assert!(!has_nodatacow(&options));
        assert!(has_nodatacow(&["nodatacow".to_owned()]));
    }
}
