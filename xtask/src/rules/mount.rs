//! Mount options the filesystem accepts (`layout::kernel_options`): an
//! unknown option, a bad value or a rescue option on a read-write mount
//! makes the kernel refuse the mount; an option swapon does not read does
//! nothing.

use std::collections::BTreeMap;

use super::mount_facts::{consequence, decides};
use super::{Issue, Model};
use layout::findings::AttrPath;
use layout::kernel_options::{self, Filesystem, Verdict};
use layout::{Content, Mount};

/// One list of mount options as written, with the mount it belongs to.
struct Written<'a> {
    /// Where the list is written: `base.field`, joined only when reported.
    base: &'a AttrPath,
    field: &'static str,
    options: &'a [String],
    mount: &'a Mount,
}

impl Written<'_> {
    fn path(&self) -> AttrPath {
        self.base.join(self.field)
    }
}

/// Every option list written for a mount: the content's or subvolume's
/// `mountOptions`, and `fileSystems.<mountpoint>.options` beside the layout.
fn written<'a>(model: &'a Model) -> Vec<Written<'a>> {
    let by_path: BTreeMap<&AttrPath, &Mount> = model.mounts.iter().map(|m| (&m.path, m)).collect();
    let mut lists = Vec::new();
    let mut add = |path: &'a AttrPath, options: &'a [String]| {
        if let Some(mount) = by_path.get(path) {
            lists.push(Written {
                base: path,
                field: "mountOptions",
                options,
                mount,
            });
        }
    };
    for (_, _, content) in model.layout.contents() {
        match content {
            Content::Filesystem(fs) => add(&fs.path, &fs.mount_options),
            Content::Btrfs(btrfs) => {
                add(&btrfs.path, &btrfs.mount_options);
                for subvolume in &btrfs.subvolumes {
                    add(&subvolume.path, &subvolume.mount_options);
                }
            }
            Content::Swap(_) => {}
        }
    }
    for mount in &model.mounts {
        if let Some(flags) = model.layout.file_systems.get(&mount.mountpoint) {
            lists.push(Written {
                base: &flags.path,
                field: "options",
                options: &flags.options,
                mount,
            });
        }
    }
    lists
}

fn each_verdict<'a>(model: &'a Model, mut report: impl FnMut(&Written<'a>, &'a str, Verdict)) {
    for list in written(model) {
        let filesystem = Filesystem::of(&list.mount.fs_type);
        if filesystem == Filesystem::Other {
            continue;
        }
        for option in list.options.iter().filter(|o| !o.is_empty()) {
            let verdict = kernel_options::judge(filesystem, option, &list.mount.options);
            report(&list, option, verdict);
        }
    }
}

pub fn known_options(model: &Model) -> Vec<Issue> {
    let mut issues = Vec::new();
    each_verdict(model, |list, option, verdict| {
        let filesystem = Filesystem::of(&list.mount.fs_type);
        let key = kernel_options::key(option);
        let (why, hint) = match verdict {
            Verdict::Unknown { suggestion } => (
                format!("{option:?} is not a {} mount option", filesystem.name()),
                match suggestion {
                    Some(s) => format!(
                        "Did you mean `{s}`? The options are listed in {}.",
                        filesystem.documentation()
                    ),
                    None => format!(
                        "Remove it; the options are listed in {}.",
                        filesystem.documentation()
                    ),
                },
            ),
            Verdict::Refused { reason } => (
                format!(
                    "{option:?} is no longer a {} mount option: {reason}",
                    filesystem.name()
                ),
                "Remove it.".to_owned(),
            ),
            _ => return,
        };
        // What kernel 6.18.44 printed for Btrfs and ext4; vfat was not measured.
        let said = match filesystem {
            Filesystem::Btrfs | Filesystem::Ext4 => {
                format!("\"{}: Unknown parameter '{key}'\"", filesystem.name())
            }
            _ => "EINVAL".to_owned(),
        };
        issues.push(Issue::new(
            list.path(),
            format!(
                "{why}: the kernel refuses to mount {} with it ({said}), so {}",
                list.mount.mountpoint,
                consequence(list.mount)
            ),
            hint,
        ));
    });
    issues
}

pub fn option_values(model: &Model) -> Vec<Issue> {
    let mut issues = Vec::new();
    each_verdict(model, |list, option, verdict| {
        let (why, hint) = match verdict {
            Verdict::BadValue { reason } => (
                format!("{option:?}: {reason}"),
                format!(
                    "Write a value {} accepts (see {}).",
                    Filesystem::of(&list.mount.fs_type).name(),
                    Filesystem::of(&list.mount.fs_type).documentation()
                ),
            ),
            // The kernel checks this when the filesystem is first mounted
            // (the superblock is set up); a later mount of the same Btrfs
            // takes the superblock as it is and mounts (kernel 6.18, seen
            // by tests/generated_live.rs).
            Verdict::NeedsReadOnly
                if list.mount.fs_type == "btrfs" && !decides(model, list.mount) =>
            {
                return
            }
            Verdict::NeedsReadOnly => (
                format!("{option:?} is accepted on a read-only mount only"),
                "Remove it (it is for rescuing a damaged filesystem), or add \"ro\".".to_owned(),
            ),
            _ => return,
        };
        issues.push(Issue::new(
            list.path(),
            format!(
                "{why}: the kernel refuses to mount {} with it, so {}",
                list.mount.mountpoint,
                consequence(list.mount)
            ),
            hint,
        ));
    });
    issues
}

pub fn swap_options(model: &Model) -> Vec<Issue> {
    let mut issues = Vec::new();
    let mut check = |path: AttrPath, options: &[String]| {
        for option in options {
            let (message, hint) = match kernel_options::judge(Filesystem::Swap, option, options) {
                Verdict::Unknown { suggestion } => (
                    format!("swap option {option:?} is not one swapon or systemd reads: swapon ignores it, so it does nothing"),
                    match suggestion {
                        Some(s) => format!("Did you mean `{s}`? Swap entries take pri=, discard, nofail, noauto and x-systemd.* ({}).", Filesystem::Swap.documentation()),
                        None => format!("Remove it; swap entries take pri=, discard, nofail, noauto and x-systemd.* ({}).", Filesystem::Swap.documentation()),
                    },
                ),
                Verdict::BadValue { reason } => (
                    format!("swap option {option:?}: {reason}; swapon ignores what it cannot read"),
                    "Write pri=<0..32767> or discard=once|pages.".to_owned(),
                ),
                _ => continue,
            };
            issues.push(Issue::new(path.clone(), message, hint));
        }
    };
    for (_, _, content) in model.layout.contents() {
        match content {
            Content::Swap(swap) => check(swap.path.join("mountOptions"), &swap.mount_options),
            Content::Btrfs(btrfs) => {
                let files = btrfs
                    .swapfiles
                    .iter()
                    .chain(btrfs.subvolumes.iter().flat_map(|s| &s.swapfiles));
                for file in files {
                    check(file.path.join("options"), &file.options);
                }
            }
            Content::Filesystem(_) => {}
        }
    }
    issues
}

/// `fileSystems.<mountpoint>` that no disk content or nodev device of the
/// layout mounts and that names no device: NixOS's fstab and mount units
/// need one (nixos/modules/tasks/filesystems.nix throws "No device specified
/// for mount point"), so the system does not evaluate.
pub fn file_systems_without_device(model: &Model) -> Vec<Issue> {
    let layout = &model.layout;
    let mounted: std::collections::BTreeSet<&str> = model
        .mounts
        .iter()
        .map(|m| m.mountpoint.as_str())
        .chain(layout.unmodelled_mounts.iter().map(|(m, _)| m.as_str()))
        .collect();
    layout
        .file_systems
        .iter()
        .filter(|(mountpoint, flags)| flags.device.is_none() && !mounted.contains(mountpoint.as_str()))
        .map(|(mountpoint, flags)| {
            Issue::new(
                flags.path.clone(),
                format!(
                    "fileSystems.\"{mountpoint}\" is set, but nothing in the layout mounts {mountpoint} and the entry names no device: NixOS cannot write its fstab line (\"No device specified for mount point\")"
                ),
                "Mount a subvolume or filesystem there (its `mountpoint`), or remove the fileSystems entry.",
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::rules::testing::*;

    #[test]
    fn an_unknown_option_on_the_root_is_refused_not_filesystem_wide() {
        let findings = findings_after(|e| {
            subvolume(e, "@root")["mountOptions"]
                .as_array_mut()
                .unwrap()
                .push(json!("noatimex"));
        });
        let codes: Vec<&str> = findings.iter().map(|f| f.code).collect();
        // Not BTRFS006 ("would silently not apply"): the kernel refuses it.
        assert_eq!(codes, vec!["MOUNT001"], "{findings:#?}");
        let finding = &findings[0];
        assert!(
            finding.message.contains("refuses to mount /"),
            "{finding:?}"
        );
        assert!(finding.message.contains("does not boot"), "{finding:?}");
        assert!(finding.hint.contains("`noatime`"), "{finding:?}");
    }

    #[test]
    fn a_vfat_typo_gets_a_suggestion() {
        let findings = findings_after(|e| {
            partition(e, "ESP")["content"]["mountOptions"] = json!(["fmsk=0177", "dmask=0077"]);
        });
        let mount = findings
            .iter()
            .find(|f| f.code == "MOUNT001")
            .expect("MOUNT001");
        assert!(mount.hint.contains("`fmask=`"), "{mount:?}");
        assert!(mount.message.contains("/boot"), "{mount:?}");
    }

    #[test]
    fn bad_values_and_rescue_options() {
        let codes = codes_after(|e| {
            subvolume(e, "@caddy")["mountOptions"]
                .as_array_mut()
                .unwrap()
                .push(json!("commit=soon"));
        });
        assert!(codes.contains(&"MOUNT002"), "{codes:?}");
        // On the mount that sets the filesystem up ("/", mounted first) the kernel refuses it;
        // a later mount of the same Btrfs takes the superblock as it is (kernel 6.18, tests/generated_live.rs).
        let codes = codes_after(|e| {
            e["layout"]["fileSystems"]["/"] = json!({ "options": ["rescue=all"] });
        });
        assert!(codes.contains(&"MOUNT002"), "{codes:?}");
        let codes = codes_after(|e| {
            e["layout"]["fileSystems"]["/var/lib/caddy"] = json!({ "options": ["rescue=all"] });
        });
        assert!(!codes.contains(&"MOUNT002"), "{codes:?}");
        let codes = codes_after(|e| {
            subvolume(e, "@caddy")["mountOptions"]
                .as_array_mut()
                .unwrap()
                .push(json!("inode_cache"));
        });
        assert!(codes.contains(&"MOUNT001"), "{codes:?}");
    }

    #[test]
    fn nixos_and_systemd_options_are_fine() {
        let codes = codes_after(|e| {
            e["layout"]["fileSystems"]["/var/lib/caddy"] = json!({ "options": ["x-systemd.automount", "nofail", "x-initrd.mount", "noexec", "nodev"] });
        });
        assert!(codes.is_empty(), "{codes:?}");
    }

    #[test]
    fn swap_options_swapon_ignores() {
        let findings = findings_after(|e| {
            partition(e, "swap")["content"]["mountOptions"] = json!(["defaults", "prio=5"]);
        });
        let codes: Vec<&str> = findings.iter().map(|f| f.code).collect();
        assert_eq!(codes, vec!["MOUNT003"], "{findings:#?}");
        assert!(findings[0].hint.contains("`pri=`"), "{findings:?}");
    }
}
