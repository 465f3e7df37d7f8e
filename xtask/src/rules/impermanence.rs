//! The root is wiped at every boot: `/` must be a subvolume the rollback can
//! move away, everything that must survive must sit outside it and be
//! mounted before impermanence needs it, and the management mount must
//! reach the top level where @root and @old_roots live.

use super::{Issue, Model};
use layout::findings::AttrPath;
use layout::impermanence::{
    MANAGEMENT_MOUNTPOINT, NEEDED_FOR_BOOT, OLD_ROOTS_SUBVOLUME, PERSIST_MOUNTPOINT,
    PERSIST_SUBVOLUME, ROOT_SUBVOLUME,
};
use layout::kernel_options::{read, Filesystem};
use layout::paths::{is_at_or_below, is_normalised_absolute};
use layout::{Btrfs, Layout, Mount, MountSource};

fn mount_at<'a>(model: &'a Model, mountpoint: &str) -> Option<&'a Mount> {
    model.mounts.iter().find(|m| m.mountpoint == mountpoint)
}

/// The Btrfs filesystem that holds `/`, if `/` is on Btrfs.
fn root_filesystem<'a>(layout: &'a Layout, model: &Model) -> Option<&'a Btrfs> {
    let root = mount_at(model, "/")?;
    layout
        .btrfs_filesystems()
        .find(|btrfs| btrfs.device == root.device && root.fs_type == "btrfs")
}

fn disko_path(model: &Model) -> AttrPath {
    model
        .layout
        .disks
        .first()
        .map(|d| d.path.clone())
        .unwrap_or_else(|| AttrPath::new(["disko", "devices"]))
}

pub fn root_is_subvolume(model: &Model) -> Vec<Issue> {
    let hint = format!("Mount the subvolume {ROOT_SUBVOLUME:?} at \"/\": `\"{ROOT_SUBVOLUME}\" = {{ mountpoint = \"/\"; ... }};`");
    match mount_at(model, "/") {
        None => vec![Issue::new(
            disko_path(model),
            "nothing is mounted at /",
            hint,
        )],
        Some(mount) => match &mount.source {
            MountSource::Subvolume { name } if name == ROOT_SUBVOLUME => Vec::new(),
            MountSource::Subvolume { name } => vec![Issue::new(
                mount.path.clone(),
                format!("/ is the subvolume {name:?}, but the rollback rotates {ROOT_SUBVOLUME:?}: the root would never be wiped"),
                hint,
            )],
            _ => vec![Issue::new(
                mount.path.join("mountpoint"),
                format!("/ is a {} mount, not a Btrfs subvolume the rollback can move away", mount.fs_type),
                hint,
            )],
        },
    }
}

/// IMP011: the subvolumes rollback.nix gives boot.btrfsRollback. The root
/// subvolume must be the one mounted at `/` (otherwise the rollback wipes
/// another one at every boot, e.g. @persist), and the old-roots subvolume
/// must be mounted nowhere (old roots past retention are deleted from it: a
/// mounted one is someone's data). Emitted by the host rules, which read
/// rollback.nix; `path` is where the settings are written.
pub fn rollback_subvolumes(
    layout: &Layout,
    root_subvolume: &str,
    old_roots_subvolume: &str,
    path: &AttrPath,
) -> Vec<Issue> {
    let mut issues = Vec::new();
    let subvolumes = || layout.btrfs_filesystems().flat_map(|b| b.subvolumes.iter());
    let at_root = subvolumes().find(|s| s.mountpoint.as_deref() == Some("/"));
    if let Some(at_root) = at_root {
        if at_root.name != root_subvolume {
            issues.push(Issue::new(
                path.join("rootSubvolume"),
                format!(
                    "boot.btrfsRollback.rootSubvolume is {root_subvolume:?}, but / is the subvolume {:?}: the rollback would wipe {root_subvolume:?} at every boot and never /",
                    at_root.name
                ),
                format!("Set boot.btrfsRollback.rootSubvolume = {:?};", at_root.name),
            ));
        }
    }
    for mounted in subvolumes().filter(|s| s.name == old_roots_subvolume) {
        if let Some(mountpoint) = &mounted.mountpoint {
            issues.push(Issue::new(
                path.join("oldRootsSubvolume"),
                format!(
                    "boot.btrfsRollback.oldRootsSubvolume is {old_roots_subvolume:?}, which is mounted at {mountpoint}: old roots past retention are deleted from it, so whatever lives there with a root's name is lost"
                ),
                format!("Use an unmounted subvolume: boot.btrfsRollback.oldRootsSubvolume = {OLD_ROOTS_SUBVOLUME:?}; with `\"{OLD_ROOTS_SUBVOLUME}\" = {{ }};` in the layout."),
            ));
        }
    }
    issues
}

pub fn persist_survives(model: &Model) -> Vec<Issue> {
    let mut issues = Vec::new();
    let Some(btrfs) = root_filesystem(model.layout, model) else {
        return issues;
    };
    let persist = btrfs
        .subvolumes
        .iter()
        .find(|s| s.name == PERSIST_SUBVOLUME);
    match persist {
        None => issues.push(Issue::new(
            btrfs.path.join("subvolumes"),
            format!("the root's filesystem has no {PERSIST_SUBVOLUME:?} subvolume: nothing would survive a reboot"),
            format!("Add `\"{PERSIST_SUBVOLUME}\" = {{ mountpoint = \"{PERSIST_MOUNTPOINT}\"; mountOptions = ...; }};`"),
        )),
        Some(subvolume) if subvolume.mountpoint.as_deref() != Some(PERSIST_MOUNTPOINT) => {
            issues.push(Issue::new(
                subvolume.path.join("mountpoint"),
                format!(
                    "{PERSIST_SUBVOLUME:?} is mounted at {:?}, not {PERSIST_MOUNTPOINT}",
                    subvolume.mountpoint
                ),
                format!("Set mountpoint = \"{PERSIST_MOUNTPOINT}\"."),
            ))
        }
        Some(_) => {}
    }
    let nested_prefix = format!("{ROOT_SUBVOLUME}/");
    for subvolume in &btrfs.subvolumes {
        // Names with `..` are BTRFS003's; this is about real nesting.
        if subvolume.name.starts_with(&nested_prefix)
            && !subvolume.name.split('/').any(|part| part == "..")
        {
            issues.push(Issue::new(
                subvolume.path.join("name"),
                format!(
                    "subvolume {:?} is nested inside {ROOT_SUBVOLUME}: the rollback moves it away with the old root at every boot",
                    subvolume.name
                ),
                "Make it a top-level subvolume (\"@name\").",
            ));
        }
    }
    issues
}

pub fn old_roots_exist(model: &Model) -> Vec<Issue> {
    let Some(btrfs) = root_filesystem(model.layout, model) else {
        return Vec::new();
    };
    if btrfs
        .subvolumes
        .iter()
        .any(|s| s.name == OLD_ROOTS_SUBVOLUME)
    {
        return Vec::new();
    }
    vec![Issue::new(
        btrfs.path.join("subvolumes"),
        format!("the root's filesystem has no {OLD_ROOTS_SUBVOLUME:?} subvolume for the rollback to move old roots into"),
        format!("Add `\"{OLD_ROOTS_SUBVOLUME}\" = {{ }};` (unmounted; reached through {MANAGEMENT_MOUNTPOINT})."),
    )]
}

pub fn needed_for_boot(model: &Model) -> Vec<Issue> {
    let mut issues = Vec::new();
    for mountpoint in NEEDED_FOR_BOOT {
        match mount_at(model, mountpoint) {
            None => issues.push(Issue::new(
                AttrPath::new(["fileSystems", mountpoint]),
                format!("{mountpoint} is not a mount of its own, so it sits on the root and is wiped at every boot"),
                format!("Mount a subvolume at {mountpoint} and set fileSystems.\"{mountpoint}\".neededForBoot = true."),
            )),
            Some(mount) if !mount.needed_for_boot_explicit => issues.push(Issue::new(
                AttrPath::new(["fileSystems", mountpoint, "neededForBoot"]),
                format!("{mountpoint} does not set neededForBoot, so it may be mounted after impermanence and the journal need it"),
                format!("Set fileSystems.\"{mountpoint}\".neededForBoot = true beside the layout."),
            )),
            Some(_) => {}
        }
    }
    issues
}

pub fn management_mount(model: &Model) -> Vec<Issue> {
    let hint = format!("Set the Btrfs content's mountpoint = \"{MANAGEMENT_MOUNTPOINT}\" with mountOptions [ ... \"subvolid=5\" ].");
    let root_device = mount_at(model, "/").map(|m| m.device.clone());
    match mount_at(model, MANAGEMENT_MOUNTPOINT) {
        None => vec![Issue::new(
            disko_path(model),
            format!("nothing is mounted at {MANAGEMENT_MOUNTPOINT}; old roots and snapshots are unreachable"),
            hint,
        )],
        Some(mount) => {
            // As the kernel reads them: the last selector wins, and a pair it refuses mounts nothing.
            let reading = read(Filesystem::Btrfs, &mount.options);
            let selects_other = reading.refused.is_some()
                || reading.subvol.as_deref().is_some_and(|s| !s.is_empty())
                || reading.subvolid.is_some_and(|id| id != 5);
            if mount.source != MountSource::BtrfsTopLevel || selects_other {
                vec![Issue::new(
                    mount.path.clone(),
                    format!("{MANAGEMENT_MOUNTPOINT} does not mount the top level (subvolid=5)"),
                    hint,
                )]
            } else if root_device.as_deref().is_some_and(|d| d != mount.device) {
                vec![Issue::new(
                    mount.path.clone(),
                    format!("{MANAGEMENT_MOUNTPOINT} mounts {}, not the root's filesystem", mount.device),
                    hint,
                )]
            } else {
                Vec::new()
            }
        }
    }
}

pub fn explicit_top_level(model: &Model) -> Vec<Issue> {
    model
        .mounts
        .iter()
        .filter(|m| m.source == MountSource::BtrfsTopLevel)
        .filter(|m| read(Filesystem::Btrfs, &m.options).subvolid != Some(5))
        .map(|mount| {
            Issue::new(
                mount.path.join("mountOptions"),
                format!("{} mounts the default subvolume, which is the top level only until someone runs `btrfs subvolume set-default`", mount.mountpoint),
                "Add \"subvolid=5\" to its mountOptions.",
            )
        })
        .collect()
}

pub fn storage_mounted_early(model: &Model) -> Vec<Issue> {
    model
        .layout
        .persistence
        .iter()
        .filter_map(|root| match mount_at(model, &root.storage_path) {
            Some(mount) if mount.needed_for_boot => None,
            Some(_) => Some(Issue::new(
                AttrPath::new(["fileSystems", root.storage_path.as_str(), "neededForBoot"]),
                format!("persistence root {} is mounted too late: impermanence binds from it during activation", root.storage_path),
                format!("Set fileSystems.\"{}\".neededForBoot = true.", root.storage_path),
            )),
            None => Some(Issue::new(
                root.path.clone(),
                format!("persistence root {} is not a mount, so it is part of the wiped root", root.storage_path),
                "Point environment.persistence at the mountpoint of @persist.",
            )),
        })
        .collect()
}

pub fn old_roots_unmounted(model: &Model) -> Vec<Issue> {
    model
        .mounts
        .iter()
        .filter(|m| matches!(&m.source, MountSource::Subvolume { name } if name == OLD_ROOTS_SUBVOLUME))
        .map(|mount| {
            Issue::new(
                mount.path.join("mountpoint"),
                format!("{OLD_ROOTS_SUBVOLUME} is mounted at {}", mount.mountpoint),
                format!("Remove its mountpoint; reach old roots at {MANAGEMENT_MOUNTPOINT}/{OLD_ROOTS_SUBVOLUME}."),
            )
        })
        .collect()
}

/// The deepest mount at or above `path`.
fn containing_mount<'a>(model: &'a Model, path: &str) -> Option<&'a Mount> {
    model
        .mounts
        .iter()
        .filter(|m| is_at_or_below(path, &m.mountpoint))
        .max_by_key(|m| m.mountpoint.len())
}

pub fn persisted_on_wiped_root(model: &Model) -> Vec<Issue> {
    let mut issues = Vec::new();
    for root in &model.layout.persistence {
        for entry in &root.entries {
            if !is_normalised_absolute(&entry.target)
                || is_at_or_below(&entry.target, &root.storage_path)
            {
                continue;
            }
            let Some(mount) = containing_mount(model, &entry.target) else {
                continue;
            };
            if mount.mountpoint != "/" {
                issues.push(Issue::new(
                    entry.path.clone(),
                    format!(
                        "{} is on the mount {}, which is not wiped; binding it from {} would hide what is there",
                        entry.target, mount.mountpoint, root.storage_path
                    ),
                    "Remove it from environment.persistence: its own subvolume already keeps it.",
                ));
            }
        }
    }
    issues
}

pub fn persisted_paths_valid(model: &Model) -> Vec<Issue> {
    let mut issues = Vec::new();
    for root in &model.layout.persistence {
        if !is_normalised_absolute(&root.storage_path) || root.storage_path == "/" {
            issues.push(Issue::new(
                root.path.clone(),
                format!(
                    "persistence root {:?} is not a normalised absolute path below /",
                    root.storage_path
                ),
                "Use the mountpoint of @persist, \"/persist\".",
            ));
            continue;
        }
        for entry in &root.entries {
            if !is_normalised_absolute(&entry.target) || entry.target == "/" {
                issues.push(Issue::new(
                    entry.path.clone(),
                    format!(
                        "persisted path {:?} is not a normalised absolute path",
                        entry.target
                    ),
                    "Write it as /a/b (user entries relative to the home, without `..`).",
                ));
            } else if is_at_or_below(&entry.target, &root.storage_path) {
                issues.push(Issue::new(
                    entry.path.clone(),
                    format!(
                        "persisted path {} is inside the storage path {}",
                        entry.target, root.storage_path
                    ),
                    "List the path as it appears in the running system, e.g. /var/lib/foo.",
                ));
            }
        }
    }
    issues
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::rules::testing::*;

    #[test]
    fn root_must_be_the_rotated_subvolume() {
        let codes = codes_after(|e| {
            let root = subvolume(e, "@root").clone();
            let subvolumes = btrfs(e)["subvolumes"].as_object_mut().unwrap();
            subvolumes.remove("@root");
            subvolumes.insert("@".into(), root);
        });
        assert!(codes.contains(&"IMP001"), "{codes:?}");
    }

    #[test]
    fn persist_missing_or_nested() {
        let codes = codes_after(|e| {
            btrfs(e)["subvolumes"]
                .as_object_mut()
                .unwrap()
                .remove("@persist");
        });
        assert!(codes.contains(&"IMP002"), "{codes:?}");
        let codes = codes_after(|e| subvolume(e, "@persist")["name"] = json!("@root/persist"));
        assert!(codes.contains(&"IMP002"), "{codes:?}");
    }

    #[test]
    fn missing_old_roots() {
        let codes = codes_after(|e| {
            btrfs(e)["subvolumes"]
                .as_object_mut()
                .unwrap()
                .remove("@old_roots");
        });
        assert_eq!(codes, vec!["IMP003"]);
    }

    #[test]
    fn missing_needed_for_boot() {
        let findings = findings_after(|e| {
            e["layout"]["fileSystems"]
                .as_object_mut()
                .unwrap()
                .remove("/var/log");
        });
        let codes: Vec<_> = findings.iter().map(|f| f.code).collect();
        assert_eq!(codes, vec!["IMP004"]);
        assert_eq!(
            findings[0].path.to_string(),
            r#"fileSystems."/var/log".neededForBoot"#
        );
        let codes = codes_after(|e| {
            e["layout"]["fileSystems"]
                .as_object_mut()
                .unwrap()
                .remove("/persist");
        });
        assert!(
            codes.contains(&"IMP004") && codes.contains(&"IMP007"),
            "{codes:?}"
        );
    }

    #[test]
    fn management_mount() {
        let codes = codes_after(|e| btrfs(e)["mountpoint"] = json!("/mnt/top"));
        assert!(codes.contains(&"IMP005"), "{codes:?}");
        let codes = codes_after(|e| {
            btrfs(e)["mountOptions"] = json!([
                "compress=zstd:1",
                "noatime",
                "ssd",
                "space_cache=v2",
                "discard=async"
            ])
        });
        assert_eq!(codes, vec!["IMP006"]);
        let codes = codes_after(|e| {
            btrfs(e)["mountOptions"]
                .as_array_mut()
                .unwrap()
                .push(json!("subvolid=256"))
        });
        assert!(codes.contains(&"IMP005"), "{codes:?}");
    }

    #[test]
    fn old_roots_mounted() {
        let codes = codes_after(|e| {
            subvolume(e, "@old_roots")["mountpoint"] = json!("/old");
            subvolume(e, "@old_roots")["mountOptions"] =
                subvolume(e, "@nix")["mountOptions"].clone();
        });
        assert_eq!(codes, vec!["IMP008"]);
    }

    #[test]
    fn persisting_what_a_subvolume_keeps() {
        let codes = codes_after(|e| {
            e["persistence"]["/persist"]["directories"]
                .as_array_mut()
                .unwrap()
                .push(json!("/var/lib/caddy"))
        });
        assert_eq!(codes, vec!["IMP009"]);
    }

    #[test]
    fn persisted_paths() {
        let codes = codes_after(|e| {
            e["persistence"]["/persist"]["directories"]
                .as_array_mut()
                .unwrap()
                .push(json!("/var/lib/../etc"))
        });
        assert_eq!(codes, vec!["IMP010"]);
        let codes = codes_after(|e| {
            e["persistence"]["/persist"]["files"]
                .as_array_mut()
                .unwrap()
                .push(json!("/persist/foo"))
        });
        assert_eq!(codes, vec!["IMP010"]);
        let codes = codes_after(|e| {
            let root = e["persistence"]["/persist"].clone();
            e["persistence"] = json!({ "/data": root });
        });
        assert!(codes.contains(&"IMP007"), "{codes:?}");
    }
}
