//! Btrfs subvolumes and mount options: flat @names, unique mountpoints, the
//! universal options everywhere, and nothing written that would silently not
//! apply because the filesystem's first mount already decided it.

use std::collections::BTreeMap;

use super::mount_facts::{consequence, decides};
use super::{Issue, Model};
use layout::findings::AttrPath;
use layout::kernel_options::{
    btrfs_scope, compress_value, judge_compression, key, read, Compression, Filesystem, Scope,
};
use layout::paths::is_normalised_absolute;
use layout::{Content, MountSource};

/// Options every Btrfs mount of this layout carries.
pub const UNIVERSAL_OPTIONS: &[&str] = &["noatime", "ssd", "space_cache=v2", "discard=async"];

pub fn unique_mountpoints(model: &Model) -> Vec<Issue> {
    let mut seen: BTreeMap<&str, &layout::Mount> = BTreeMap::new();
    let mut issues = Vec::new();
    for mount in &model.mounts {
        if let Some(first) = seen.insert(&mount.mountpoint, mount) {
            issues.push(Issue::new(
                mount.path.join("mountpoint"),
                format!(
                    "{} is mounted twice: by {} and by {}",
                    mount.mountpoint, first.path, mount.path
                ),
                "Give each subvolume or filesystem its own mountpoint.",
            ));
        }
    }
    // A nodev device defines fileSystems.<mountpoint> too: two devices
    // there are two definitions of its device, and disko's evaluation fails.
    for (mountpoint, path) in &model.layout.unmodelled_mounts {
        if let Some(first) = seen.get(mountpoint.as_str()) {
            issues.push(Issue::new(
                path.clone(),
                format!(
                    "{mountpoint} is mounted twice: by {} and by {path} (fileSystems.\"{mountpoint}\".device has conflicting definitions, so the evaluation fails)",
                    first.path
                ),
                "Give each subvolume, filesystem or nodev device its own mountpoint.",
            ));
        }
    }
    issues
}

pub fn absolute_mountpoints(model: &Model) -> Vec<Issue> {
    model
        .mounts
        .iter()
        .filter(|mount| !is_normalised_absolute(&mount.mountpoint))
        .map(|mount| {
            Issue::new(
                mount.path.join("mountpoint"),
                format!(
                    "mountpoint {:?} is not a normalised absolute path",
                    mount.mountpoint
                ),
                "Write it as /a/b: absolute, without `.`, `..`, `//` or a trailing `/`.",
            )
        })
        .collect()
}

/// `@name`: one path component, not `.`/`..`, and characters a shell,
/// fstab and systemd unit names all take without escaping.
pub fn is_flat_name(name: &str) -> bool {
    name.strip_prefix('@').is_some_and(|rest| {
        !rest.is_empty()
            && name.len() <= super::devices::NAME_MAX
            && rest != "."
            && rest != ".."
            && rest
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    })
}

pub fn flat_names(model: &Model) -> Vec<Issue> {
    model
        .layout
        .btrfs_filesystems()
        .flat_map(|btrfs| &btrfs.subvolumes)
        .filter(|subvolume| !is_flat_name(&subvolume.name))
        .map(|subvolume| {
            Issue::new(
                subvolume.path.join("name"),
                format!(
                    "subvolume name {:?} is not a flat @name: it must be one path component below the top level",
                    subvolume.name
                ),
                "Name it like \"@nix\": an @ then letters, digits, `_`, `-` or `.`, with no `/` and no `..`.",
            )
        })
        .collect()
}

/// (refused mounts, mounts of another existing subvolume).
fn selector_issues(model: &Model) -> (Vec<Issue>, Vec<Issue>) {
    let mut issues = Vec::new();
    let mut elsewhere = Vec::new();
    // By device: its subvolume names and how many (ids 256.. in name order), built once.
    let subvolumes: BTreeMap<&str, (std::collections::BTreeSet<&str>, u64)> = model
        .layout
        .btrfs_filesystems()
        .map(|b| {
            let names = b
                .subvolumes
                .iter()
                .map(|s| s.name.trim_matches('/'))
                .collect();
            (
                b.device.as_str(),
                (names, u64::try_from(b.subvolumes.len()).unwrap_or(0)),
            )
        })
        .collect();
    // Each Btrfs mount's whole option list (disko's, its `subvol=`, then
    // fileSystems' own) as the kernel reads it: the last selector wins, and
    // subvol= with a subvolid= of another subvolume is refused.
    for mount in model.mounts.iter().filter(|m| m.fs_type == "btrfs") {
        let mut reading = read(Filesystem::Btrfs, &mount.options);
        reading.check_ids(|name| subvolume_id(model, &mount.device, name));
        let wanted = match &mount.source {
            MountSource::Subvolume { name } => Some(name.trim_matches('/')),
            MountSource::BtrfsTopLevel => None,
            _ => continue,
        };
        let place = selector_place(model, mount);
        if let Some(said) = &reading.refused {
            issues.push(Issue::new(
                place,
                format!(
                    "the kernel refuses to mount {} ({said}): its options select two different subvolumes, so {}",
                    mount.mountpoint,
                    consequence(mount)
                ),
                "Remove subvol=/subvolid= from the options; the layout's subvolumes pick what is mounted where.",
            ));
            continue;
        }
        let mounted = match (&reading.subvol, reading.subvolid) {
            (Some(subvol), _) => Some(subvol.as_str()),
            (None, Some(5)) | (None, None) => Some(""),
            (None, Some(_)) => None,
        };
        let wrong = match (wanted, mounted) {
            (Some(name), Some(got)) => (got != name).then(|| format!("subvolume {got:?}")),
            (None, Some(got)) if !got.is_empty() => Some(format!("subvolume {got:?}")),
            (_, None) => Some(format!("subvolid={}", reading.subvolid.unwrap_or_default())),
            _ => None,
        };
        // A selector naming what the filesystem does not hold is refused
        // ("No such file or directory", kernel 6.18.44).
        let exists = match (&reading.subvol, reading.subvolid) {
            (Some(subvol), _) => {
                let subvol = subvol.trim_matches('/');
                subvol.is_empty()
                    || subvolumes
                        .get(mount.device.as_str())
                        .is_some_and(|(names, _)| names.contains(subvol))
            }
            (None, Some(5)) | (None, None) => true,
            (None, Some(id)) => subvolumes
                .get(mount.device.as_str())
                .is_some_and(|(_, count)| id >= 256 && id < 256 + count),
        };
        if let (Some(wrong), false) = (&wrong, exists) {
            issues.push(Issue::new(
                place,
                format!(
                    "{} selects {wrong}, which its filesystem does not have (Btrfs takes the last subvol=/subvolid= of the options it is given): the kernel refuses the mount, so {}",
                    mount.mountpoint,
                    consequence(mount)
                ),
                "Remove subvol=/subvolid= from mountOptions and fileSystems options; the layout's subvolumes pick what is mounted where (subvolid=5 alone for the top level).",
            ));
            continue;
        }
        if let Some(wrong) = wrong {
            let meant = wanted.map_or(
                "the top level where @root and @old_roots live".to_owned(),
                |n| format!("{n:?}"),
            );
            elsewhere.push(Issue::new(
                place,
                format!(
                    "{} mounts {wrong} instead of {meant}: Btrfs takes the last subvol=/subvolid= of the options it is given",
                    mount.mountpoint
                ),
                "Remove subvol=/subvolid= from mountOptions and fileSystems options; the layout's subvolumes pick what is mounted where (subvolid=5 alone for the top level).",
            ));
        }
    }
    (issues, elsewhere)
}

/// Selectors the kernel refuses (two that disagree, or one naming what the filesystem lacks).
pub fn no_selector_options(model: &Model) -> Vec<Issue> {
    selector_issues(model).0
}

/// Selectors that mount another existing subvolume: the install succeeds, wrongly.
pub fn selector_mounts_elsewhere(model: &Model) -> Vec<Issue> {
    selector_issues(model).1
}

/// Two different devices at one mountpoint (a nodev beside a disk's
/// content, two filesystems): disko defines fileSystems.<mountpoint>.device
/// twice with different values, and the evaluation fails. Two subvolumes of
/// one filesystem give the same device: their options merge (BTRFS001).
pub fn mountpoint_devices_conflict(model: &Model) -> Vec<Issue> {
    let mut devices: BTreeMap<&str, (&str, &AttrPath)> = BTreeMap::new();
    let mut issues = Vec::new();
    let all = model
        .mounts
        .iter()
        .map(|m| (m.mountpoint.as_str(), m.device.as_str(), &m.path))
        .chain(
            model
                .layout
                .unmodelled_mounts
                .iter()
                .map(|(m, path)| (m.as_str(), "(nodev)", path)),
        );
    for (mountpoint, device, path) in all {
        match devices.get(mountpoint) {
            Some((first, first_path)) if *first != device || device == "(nodev)" => issues.push(Issue::new(
                path.clone(),
                format!(
                    "{mountpoint} is the mountpoint of {first_path} ({first}) and of {path} ({device}): disko defines fileSystems.\"{mountpoint}\".device twice with different values, so the evaluation fails (\"conflicting definition values\")"
                ),
                "Give each filesystem or nodev device its own mountpoint.",
            )),
            Some(_) => {}
            None => {
                devices.insert(mountpoint, (device, path));
            }
        }
    }
    issues
}

/// A mountpoint that is not an absolute path: disko's type (null or an
/// absolute path) refuses it and the evaluation fails.
pub fn mountpoints_absolute(model: &Model) -> Vec<Issue> {
    model
        .mounts
        .iter()
        .filter(|m| !m.mountpoint.starts_with('/'))
        .map(|m| {
            Issue::new(
                m.path.join("mountpoint"),
                format!("mountpoint {:?} is not an absolute path: disko's option type refuses it, so the evaluation fails", m.mountpoint),
                "Write the mountpoint as an absolute path, e.g. /srv.",
            )
        })
        .collect()
}

/// The id a fresh filesystem gives a subvolume: disko creates them in
/// attribute-name order and Btrfs numbers them from 256 (kernel 6.18.44:
/// @caddy 256, @containers 257, @log 258, @nix 259 for this host).
fn subvolume_id(model: &Model, device: &str, name: &str) -> Option<u64> {
    let btrfs = model
        .layout
        .btrfs_filesystems()
        .find(|b| b.device == device)?;
    let index = btrfs
        .subvolumes
        .iter()
        .position(|s| s.name.trim_matches('/') == name)?;
    Some(256 + u64::try_from(index).ok()?)
}

/// Where a mount's own selectors are written: fileSystems' options when
/// they carry one, else the mountOptions.
fn selector_place(model: &Model, mount: &layout::Mount) -> AttrPath {
    match model.layout.file_systems.get(&mount.mountpoint) {
        Some(flags)
            if flags
                .options
                .iter()
                .any(|o| btrfs_scope(o) == Scope::Selector) =>
        {
            flags.path.join("options")
        }
        _ => mount.path.join("mountOptions"),
    }
}

/// A selector a later one overrides (disko appends `subvol=<name>` after
/// the mountOptions): it does nothing, whatever it names.
pub fn overridden_selectors(model: &Model) -> Vec<Issue> {
    let mut issues = Vec::new();
    for mount in model.mounts.iter().filter(|m| m.fs_type == "btrfs") {
        let reading = read(Filesystem::Btrfs, &mount.options);
        // A mount that ends on the wrong subvolume is BTRFS004's.
        let wanted = match &mount.source {
            MountSource::Subvolume { name } => name.trim_matches('/'),
            _ => "",
        };
        if reading.refused.is_some() || reading.subvol.as_deref().is_some_and(|s| s != wanted) {
            continue;
        }
        for (written, by) in &reading.overridden {
            if btrfs_scope(written) != Scope::Selector {
                continue;
            }
            issues.push(Issue::new(
                selector_place(model, mount),
                format!(
                    "{written:?} on {} does nothing: {by:?} comes after it (disko appends subvol=<name>) and Btrfs takes the last one",
                    mount.mountpoint
                ),
                "Remove it; the attribute name picks the subvolume.",
            ));
        }
    }
    issues
}

pub fn universal_options(model: &Model) -> Vec<Issue> {
    let mut issues = Vec::new();
    for mount in model.mounts.iter().filter(|m| m.fs_type == "btrfs") {
        let missing: Vec<&str> = UNIVERSAL_OPTIONS
            .iter()
            .copied()
            .filter(|wanted| !mount.options.iter().any(|o| o == wanted))
            .collect();
        if !missing.is_empty() {
            issues.push(Issue::new(
                mount.path.join("mountOptions"),
                format!(
                    "the Btrfs mount at {} lacks {}",
                    mount.mountpoint,
                    missing.join(", ")
                ),
                format!(
                    "Add {} to its mountOptions (every Btrfs mount carries the same options).",
                    missing.join(", ")
                ),
            ));
        }
    }
    issues
}

pub fn consistent_filesystem_options(model: &Model) -> Vec<Issue> {
    let mut issues = Vec::new();
    for mount in &model.mounts {
        let Some(effective) = model.effective.get(&mount.mountpoint) else {
            continue;
        };
        for ignored in &effective.ignored {
            issues.push(Issue::new(
                mount.path.join("mountOptions"),
                format!(
                    "{:?} on {} would silently not apply: Btrfs takes filesystem-wide options from the first mount ({}), which has {}",
                    ignored.option, mount.mountpoint, effective.decided_by, ignored.in_effect
                ),
                match key(&ignored.option) {
                    "compress" | "compress-force" => "Use one compress= on every mount; for another algorithm on one subvolume, `btrfs property set <path> compression <alg>` (docs/subvolumes.md).".to_owned(),
                    "nodatacow" | "nodatasum" => "Remove it and give the directory No_COW instead: systemd.tmpfiles.settings.<name>.<path>.h.argument = \"+C\".".to_owned(),
                    _ => format!("Write the same {} on every mount of the filesystem, or leave it out everywhere.", key(&ignored.option)),
                },
            ));
        }
    }
    issues
}

pub fn nocow_with_compress(model: &Model) -> Vec<Issue> {
    // Only the mount that decides the filesystem's options (BTRFS006 reports
    // the others): there, nodatacow or nodatasum after compress= leaves data
    // uncompressed (no compression without checksums).
    model
        .mounts
        .iter()
        .filter(|mount| mount.fs_type == "btrfs")
        .filter(|mount| decides(model, mount))
        .filter_map(|mount| {
            let reading = read(Filesystem::Btrfs, &mount.options);
            let nocow = reading.nocow_option()?;
            let cleared = reading
                .overridden
                .iter()
                .find(|(written, by)| key(written).starts_with("compress") && by == "nodatacow");
            let message = if reading.compression_blocked() {
                format!(
                    "{} asks for {nocow} after compress=: Btrfs keeps both, and never compresses data without checksums",
                    mount.mountpoint
                )
            } else if let Some((written, _)) = cleared {
                format!(
                    "{} asks for nodatacow after {written}: nodatacow clears compress, so the filesystem is mounted without compression",
                    mount.mountpoint
                )
            } else {
                return None;
            };
            Some(Issue::new(
                mount.path.join("mountOptions"),
                message,
                format!("Keep compress, drop {nocow}, and give the directory +C with tmpfiles where no-COW is wanted."),
            ))
        })
        .collect()
}

pub fn nocow_option(model: &Model) -> Vec<Issue> {
    model
        .mounts
        .iter()
        .filter(|mount| mount.fs_type == "btrfs")
        .filter_map(|mount| {
            let nocow = read(Filesystem::Btrfs, &mount.options).nocow_option()?;
            let reach = if !decides(model, mount) {
                "does nothing: it is not the filesystem's first mount"
            } else if nocow == "nodatasum" {
                "turns off data checksums (and with them compression) for the whole filesystem"
            } else {
                "turns off copy-on-write, checksums and compression for the whole filesystem"
            };
            Some(Issue::new(
                mount.path.join("mountOptions"),
                format!("{nocow} on {} {reach}", mount.mountpoint),
                format!(
                    "Use systemd.tmpfiles.settings.\"10-btrfs-nocow\".\"{}\".h.argument = \"+C\" instead.",
                    mount.mountpoint
                ),
            ))
        })
        .collect()
}

pub fn compression_valid(model: &Model) -> Vec<Issue> {
    let mut issues = Vec::new();
    for (_, _, content) in model.layout.contents() {
        let Content::Btrfs(btrfs) = content else {
            continue;
        };
        let declared = std::iter::once((&btrfs.path, &btrfs.mount_options))
            .chain(btrfs.subvolumes.iter().map(|s| (&s.path, &s.mount_options)));
        for (path, options) in declared {
            for option in options {
                let Some(value) = compress_value(option) else {
                    continue;
                };
                let why = match judge_compression(value) {
                    Compression::Valid => continue,
                    // lzo with a level works as lzo: nothing to report.
                    Compression::Changed(_) if value.starts_with("lzo") => continue,
                    Compression::Refused(why) | Compression::Changed(why) => why,
                };
                issues.push(Issue::new(
                    path.join("mountOptions"),
                    format!("{option:?}: {why}"),
                    "Use zstd:1 to zstd:15, zlib:1 to zlib:9, lzo, or leave compression out.",
                ));
            }
        }
    }
    issues
}

pub fn space_cache_v1(model: &Model) -> Vec<Issue> {
    let mut issues = Vec::new();
    for (mount, effective) in model.mounts.iter().zip(&model.effective_per_mount) {
        // The first mount of the filesystem decides; later ones are BTRFS006's.
        if mount.fs_type != "btrfs" || effective.decided_by != mount.mountpoint {
            continue;
        }
        let reading = read(Filesystem::Btrfs, &mount.options);
        let Some(option) = reading.setting("space_cache") else {
            continue;
        };
        // A bare space_cache means v1 to the kernel (seen refused on 6.18.44 by tests/generated_live.rs).
        if reading.clear_cache
            || !matches!(option, "space_cache=v1" | "space_cache" | "nospace_cache")
        {
            continue;
        }
        issues.push(Issue::new(
            mount.path.join("mountOptions"),
            format!(
                "{option:?} on {}: mkfs.btrfs (btrfs-progs 5.15 and later, as disko runs it) creates the free-space tree (space_cache=v2), and the kernel refuses to mount such a filesystem with {option} (\"cannot disable free-space-tree\", seen on 6.18.44): {} cannot be mounted, so the install stops and the machine would not boot",
                mount.mountpoint, mount.mountpoint
            ),
            "Use space_cache=v2 (the default) on every mount.",
        ));
    }
    issues
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::is_flat_name;
    use crate::rules::testing::*;

    #[test]
    fn flat_names() {
        for good in ["@root", "@old_roots", "@var-lib.1"] {
            assert!(is_flat_name(good), "{good}");
        }
        for bad in [
            "root",
            "@",
            "@..",
            "@.",
            "@a/b",
            "@root/../persist",
            "@a b",
            "@x;rm",
            "",
        ] {
            assert!(!is_flat_name(bad), "{bad}");
        }
    }

    #[test]
    fn duplicate_mountpoints() {
        let codes = codes_after(|e| subvolume(e, "@caddy")["mountpoint"] = json!("/nix"));
        assert!(codes.contains(&"BTRFS001"), "{codes:?}");
    }

    #[test]
    fn relative_mountpoint() {
        let codes =
            codes_after(|e| subvolume(e, "@caddy")["mountpoint"] = json!("/var/lib/caddy/"));
        assert!(codes.contains(&"BTRFS002"), "{codes:?}");
    }

    #[test]
    fn dotdot_names() {
        let findings = findings_after(|e| {
            let caddy = subvolume(e, "@caddy").clone();
            btrfs(e)["subvolumes"]["@root/../@caddy2"] = caddy;
            btrfs(e)["subvolumes"]["@root/../@caddy2"]["mountpoint"] = json!("/srv");
        });
        let finding = findings
            .iter()
            .find(|f| f.code == "BTRFS003")
            .expect("BTRFS003");
        assert!(
            finding.path.to_string().contains(r#""@root/../@caddy2""#),
            "{finding:?}"
        );
    }

    #[test]
    fn smuggled_subvol() {
        let codes = codes_after(|e| {
            subvolume(e, "@nix")["mountOptions"]
                .as_array_mut()
                .unwrap()
                .push(json!("subvol=@persist"))
        });
        // disko appends subvol=@nix after it, and the kernel takes the last
        // one (6.18.44 mounted /@nix): it does nothing.
        assert_eq!(codes, vec!["BTRFS011"]);
        // subvolid=5 with disko's subvol=@nix: the kernel refuses the mount.
        let findings = findings_after(|e| {
            subvolume(e, "@nix")["mountOptions"]
                .as_array_mut()
                .unwrap()
                .push(json!("subvolid=5"))
        });
        assert_eq!(findings.len(), 1, "{findings:?}");
        assert!(
            findings[0].message.contains("does not match subvolid 5"),
            "{findings:?}"
        );
    }

    #[test]
    fn smuggled_subvol_elsewhere() {
        // The top-level mount, through fileSystems, and hidden behind a comma.
        let codes = codes_after(|e| {
            let options = btrfs(e)["mountOptions"].as_array_mut().unwrap();
            options.retain(|o| o != "subvolid=5");
            options.push(json!("subvol=@root"));
        });
        assert!(codes.contains(&"BTRFS012"), "{codes:?}");
        let codes = codes_after(|e| {
            e["layout"]["fileSystems"]["/nix"]["options"] = json!(["subvol=@persist"]);
        });
        assert_eq!(codes, vec!["BTRFS012"]);
        let codes = codes_after(|e| {
            subvolume(e, "@nix")["mountOptions"][1] = json!("noatime,subvolid=258");
        });
        // subvolid=258 (@log) with disko's subvol=@nix: the kernel refuses the pair.
        assert_eq!(codes, vec!["BTRFS004"]);
        // subvolid=5 on the top level, also through fileSystems, is what it should say.
        let codes = codes_after(|e| {
            e["layout"]["fileSystems"]["/btrfs_tmp"] = json!({ "options": ["subvolid=5"] });
        });
        assert!(codes.is_empty(), "{codes:?}");
    }

    #[test]
    fn names_within_linux_limits() {
        assert!(is_flat_name(&format!("@{}", "a".repeat(254))));
        assert!(!is_flat_name(&format!("@{}", "a".repeat(255))));
    }

    #[test]
    fn missing_universal_option() {
        let codes = codes_after(|e| {
            subvolume(e, "@log")["mountOptions"] =
                json!(["compress=zstd:1", "ssd", "space_cache=v2", "discard=async"])
        });
        assert_eq!(codes, vec!["BTRFS005"]);
    }

    #[test]
    fn per_subvolume_compress_levels_do_not_apply() {
        let findings = findings_after(|e| {
            subvolume(e, "@nix")["mountOptions"][0] = json!("compress=zstd:3");
        });
        let finding = findings
            .iter()
            .find(|f| f.code == "BTRFS006")
            .expect("BTRFS006");
        assert!(finding.message.contains("compress=zstd:3"), "{finding:?}");
        assert!(finding.message.contains("compress=zstd:1"), "{finding:?}");
        assert!(finding.message.contains("first mount (/)"), "{finding:?}");
    }

    #[test]
    fn nodatacow_with_compress() {
        let codes = codes_after(|e| {
            subvolume(e, "@containers")["mountOptions"]
                .as_array_mut()
                .unwrap()
                .push(json!("nodatacow"))
        });
        // Not the first mount: the kernel ignores it there (BTRFS006).
        assert!(!codes.contains(&"BTRFS007"), "{codes:?}");
        assert!(codes.contains(&"BTRFS006"), "{codes:?}");
        assert!(codes.contains(&"BTRFS008"), "{codes:?}");
        // On the first mount, after compress=: nodatasum keeps both (and
        // blocks compression), nodatacow clears compress (kernel 6.18.44).
        for (option, says) in [
            ("nodatasum", "keeps both"),
            ("nodatacow", "clears compress"),
        ] {
            let findings = findings_after(|e| {
                subvolume(e, "@root")["mountOptions"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!(option))
            });
            let finding = findings
                .iter()
                .find(|f| f.code == "BTRFS007")
                .expect("BTRFS007");
            assert!(
                finding.message.contains(says) && finding.message.contains(option),
                "{finding:?}"
            );
        }
    }

    #[test]
    fn bad_compression() {
        let codes = codes_after(|e| {
            for name in [
                "@root",
                "@nix",
                "@persist",
                "@log",
                "@containers",
                "@caddy",
                "@snapshots",
            ] {
                subvolume(e, name)["mountOptions"][0] = json!("compress=zstd:99");
            }
            btrfs(e)["mountOptions"][0] = json!("compress=zstd:99");
        });
        assert!(codes.contains(&"BTRFS009"), "{codes:?}");
        assert!(!codes.contains(&"BTRFS006"), "{codes:?}");
        let findings = findings_after(|e| {
            subvolume(e, "@root")["mountOptions"][0] = json!("compress=zstd:99")
        });
        let finding = findings
            .iter()
            .find(|f| f.code == "BTRFS009")
            .expect("BTRFS009");
        assert!(finding.message.contains("clamps"), "{finding:?}");
        assert!(!finding.message.contains("mount would fail"), "{finding:?}");
    }

    #[test]
    fn subvol_written_by_hand_as_disko_adds_it() {
        let codes = codes_after(|e| {
            subvolume(e, "@nix")["mountOptions"]
                .as_array_mut()
                .unwrap()
                .push(json!("subvol=@nix"))
        });
        assert!(codes.is_empty(), "{codes:?}");
        let codes = codes_after(|e| {
            e["layout"]["fileSystems"]["/nix"]["options"] = json!(["subvol=/@nix"]);
        });
        assert!(codes.is_empty(), "{codes:?}");
    }

    #[test]
    fn space_cache_v1_on_a_new_filesystem() {
        let codes = codes_after(|e| {
            for name in [
                "@root",
                "@nix",
                "@persist",
                "@log",
                "@containers",
                "@caddy",
                "@snapshots",
            ] {
                subvolume(e, name)["mountOptions"][3] = json!("space_cache=v1");
            }
            btrfs(e)["mountOptions"][3] = json!("space_cache=v1");
        });
        assert!(codes.contains(&"BTRFS010"), "{codes:?}");
        assert_eq!(
            codes.iter().filter(|c| **c == "BTRFS010").count(),
            1,
            "{codes:?}"
        );
    }
}
