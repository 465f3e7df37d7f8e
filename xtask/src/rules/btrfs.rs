//! Btrfs subvolumes and mount options: flat @names, unique mountpoints, the
//! universal options everywhere, and nothing written that would silently not
//! apply because the filesystem's first mount already decided it.

use std::collections::BTreeMap;

use super::{is_normalised_absolute, Context, Issue};
use crate::layout::mount_options::{btrfs_scope, compression, key, Scope};
use crate::layout::{Content, MountSource};

/// Options every Btrfs mount of this layout carries.
pub const UNIVERSAL_OPTIONS: &[&str] = &["noatime", "ssd", "space_cache=v2", "discard=async"];

pub fn unique_mountpoints(context: &Context) -> Vec<Issue> {
    let mut seen: BTreeMap<&str, &crate::layout::Mount> = BTreeMap::new();
    let mut issues = Vec::new();
    for mount in &context.mounts {
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
    issues
}

pub fn absolute_mountpoints(context: &Context) -> Vec<Issue> {
    context
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

pub fn flat_names(context: &Context) -> Vec<Issue> {
    context
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

/// The selectors that keep a top-level mount on the top level.
fn selects_top_level(option: &str) -> bool {
    matches!(option, "subvolid=5" | "subvol=/")
}

pub fn no_selector_options(context: &Context) -> Vec<Issue> {
    let mut issues = Vec::new();
    fn selectors(options: &[String]) -> impl Iterator<Item = &String> {
        options.iter().filter(|o| btrfs_scope(o) == Scope::Selector)
    }
    for btrfs in context.layout.btrfs_filesystems() {
        // The top-level mount: anything but subvolid=5 mounts a subvolume instead.
        for option in selectors(&btrfs.mount_options) {
            if !selects_top_level(option) {
                issues.push(Issue::new(
                    btrfs.path.join("mountOptions"),
                    format!(
                        "the top-level mount{} has {option:?}, so it mounts a subvolume instead of the top level where @root and @old_roots live",
                        btrfs.mountpoint.as_deref().map(|m| format!(" at {m}")).unwrap_or_default()
                    ),
                    "Use \"subvolid=5\" as the top-level mount's only selector; mount subvolumes through `subvolumes`.",
                ));
            }
        }
        for subvolume in &btrfs.subvolumes {
            for option in selectors(&subvolume.mount_options) {
                issues.push(Issue::new(
                    subvolume.path.join("mountOptions"),
                    format!(
                        "subvolume {:?} has {option:?} in its mountOptions; disko adds subvol={} itself, and a second selector mounts something else",
                        subvolume.name, subvolume.name
                    ),
                    "Remove subvol=/subvolid= from mountOptions; the attribute name picks the subvolume.",
                ));
            }
        }
    }
    // fileSystems.<mountpoint>.options are added to the options disko generates.
    for mount in context.mounts.iter().filter(|m| m.fs_type == "btrfs") {
        let Some(flags) = context.layout.file_systems.get(&mount.mountpoint) else {
            continue;
        };
        for option in selectors(&flags.options) {
            if mount.source == MountSource::BtrfsTopLevel && selects_top_level(option) {
                continue;
            }
            issues.push(Issue::new(
                flags.path.join("options"),
                format!(
                    "fileSystems.{:?}.options has {option:?}, which is added to what disko mounts at {} and selects another subvolume",
                    mount.mountpoint, mount.mountpoint
                ),
                "Remove subvol=/subvolid= from fileSystems options; the layout's subvolumes pick what is mounted where.",
            ));
        }
    }
    issues
}

pub fn universal_options(context: &Context) -> Vec<Issue> {
    let mut issues = Vec::new();
    for mount in context.mounts.iter().filter(|m| m.fs_type == "btrfs") {
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

pub fn consistent_filesystem_options(context: &Context) -> Vec<Issue> {
    let mut issues = Vec::new();
    for mount in &context.mounts {
        let Some(effective) = context.effective.get(&mount.mountpoint) else {
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

pub fn nocow_with_compress(context: &Context) -> Vec<Issue> {
    context
        .mounts
        .iter()
        .filter(|mount| mount.fs_type == "btrfs")
        .filter(|mount| {
            let nocow = mount.options.iter().any(|o| o == "nodatacow" || o == "nodatasum");
            nocow && compression(&mount.options).is_some()
        })
        .map(|mount| {
            Issue::new(
                mount.path.join("mountOptions"),
                format!(
                    "{} asks for nodatacow and compress together; Btrfs never compresses no-COW data",
                    mount.mountpoint
                ),
                "Keep compress, drop nodatacow, and give the directory +C with tmpfiles where no-COW is wanted.",
            )
        })
        .collect()
}

pub fn nocow_option(context: &Context) -> Vec<Issue> {
    context
        .mounts
        .iter()
        .filter(|mount| mount.fs_type == "btrfs")
        .filter(|mount| mount.options.iter().any(|o| o == "nodatacow" || o == "nodatasum"))
        .map(|mount| {
            let reach = match &mount.source {
                MountSource::Subvolume { .. } if mount.mountpoint != "/" => "does nothing unless this is the filesystem's first mount, and then turns off checksums and compression everywhere",
                _ => "turns off checksums and compression for the whole filesystem",
            };
            Issue::new(
                mount.path.join("mountOptions"),
                format!("nodatacow on {} {reach}", mount.mountpoint),
                format!(
                    "Use systemd.tmpfiles.settings.\"10-btrfs-nocow\".\"{}\".h.argument = \"+C\" instead.",
                    mount.mountpoint
                ),
            )
        })
        .collect()
}

fn compression_is_valid(value: &str) -> bool {
    let (algorithm, level) = match value.split_once(':') {
        Some((a, l)) => (a, Some(l)),
        None => (value, None),
    };
    let level_in = |range: std::ops::RangeInclusive<u32>| match level {
        None => true,
        Some(l) => l.parse::<u32>().is_ok_and(|n| range.contains(&n)),
    };
    match algorithm {
        "zstd" => level_in(1..=15),
        "zlib" => level_in(1..=9),
        "lzo" | "no" | "none" => level.is_none(),
        _ => false,
    }
}

pub fn compression_valid(context: &Context) -> Vec<Issue> {
    let mut issues = Vec::new();
    for (_, _, content) in context.layout.contents() {
        let Content::Btrfs(btrfs) = content else {
            continue;
        };
        let declared = std::iter::once((&btrfs.path, &btrfs.mount_options))
            .chain(btrfs.subvolumes.iter().map(|s| (&s.path, &s.mount_options)));
        for (path, options) in declared {
            for option in options {
                let value = match option.split_once('=') {
                    Some(("compress" | "compress-force", value)) => value,
                    _ => continue,
                };
                if !compression_is_valid(value) {
                    issues.push(Issue::new(
                        path.join("mountOptions"),
                        format!(
                            "{option:?} is not a compression Btrfs accepts; the mount would fail"
                        ),
                        "Use zstd:1 to zstd:15, zlib:1 to zlib:9, lzo, or leave compression out.",
                    ));
                }
            }
        }
    }
    issues
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{compression_is_valid, is_flat_name};
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
    fn compression_forms() {
        for good in ["zstd", "zstd:1", "zstd:15", "zlib:9", "lzo", "no"] {
            assert!(compression_is_valid(good), "{good}");
        }
        for bad in ["zstd:0", "zstd:16", "lzo:1", "brotli", "zstd:x", ""] {
            assert!(!compression_is_valid(bad), "{bad}");
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
        assert!(codes.contains(&"BTRFS004"), "{codes:?}");
    }

    #[test]
    fn smuggled_subvol_elsewhere() {
        // The top-level mount, through fileSystems, and hidden behind a comma.
        let codes = codes_after(|e| {
            let options = btrfs(e)["mountOptions"].as_array_mut().unwrap();
            options.retain(|o| o != "subvolid=5");
            options.push(json!("subvol=@root"));
        });
        assert!(codes.contains(&"BTRFS004"), "{codes:?}");
        let codes = codes_after(|e| {
            e["layout"]["fileSystems"]["/nix"]["options"] = json!(["subvol=@persist"]);
        });
        assert_eq!(codes, vec!["BTRFS004"]);
        let codes = codes_after(|e| {
            subvolume(e, "@nix")["mountOptions"][1] = json!("noatime,subvolid=258");
        });
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
        assert!(codes.contains(&"BTRFS007"), "{codes:?}");
        assert!(codes.contains(&"BTRFS006"), "{codes:?}");
        assert!(codes.contains(&"BTRFS008"), "{codes:?}");
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
    }
}
