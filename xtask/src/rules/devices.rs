//! Device paths end up in fstab, systemd unit names, disko's shell scripts
//! and our VM plans: they must be plain /dev paths, and partition labels
//! must fit a GPT name. Mountpoints and mount options go the same ways:
//! fstab separates entries with newlines and takes `\` as an escape, so they
//! must be plain too (NixOS writes spaces and tabs as `\040` and `\011`,
//! nixos/modules/tasks/filesystems.nix `escape`, so those are fine).
//! A partition's default device is the by-partlabel link udev makes for its
//! GPT name, and it must be the path disko waits for; a disk that gets a
//! partition table must be a whole disk.

use super::{Issue, Model};
use layout::findings::AttrPath;
use layout::{Content, DiskContent};

/// Linux's limits: a name (one path component) and a whole path, in bytes.
pub const NAME_MAX: usize = 255;
pub const PATH_MAX: usize = 4095;
/// A GPT partition name holds 36 UTF-16 code units.
pub const GPT_LABEL_MAX: usize = 36;

/// `/dev/...` made of path components of `[A-Za-z0-9._+:@=,-]`, with the
/// `\xNN` escapes udev writes into by-partlabel names, within Linux's lengths.
pub fn is_plain_dev_path(path: &str) -> bool {
    let Some(rest) = path.strip_prefix("/dev/") else {
        return false;
    };
    !rest.is_empty()
        && path.len() <= PATH_MAX
        && rest.split('/').all(|part| {
            !part.is_empty()
                && part.len() <= NAME_MAX
                && part != "."
                && part != ".."
                && unescaped(part).all(is_safe_char)
        })
}

/// A mountpoint fstab, systemd unit names and shell scripts take as it is:
/// components of `[A-Za-z0-9._+:@=,-]` and spaces (NixOS escapes them in
/// fstab, systemd in unit names, disko quotes them), within Linux's lengths.
/// Whether it is absolute and normalised is BTRFS002's question.
pub fn is_plain_mountpoint(path: &str) -> bool {
    path.len() <= PATH_MAX
        && path
            .split('/')
            .all(|part| part.len() <= NAME_MAX && part.chars().all(|c| c == ' ' || is_safe_char(c)))
}

/// A mount option as fstab and mount(8) take it: no whitespace, quotes or
/// shell characters; `/` for paths in values such as `x-systemd.requires=`.
pub fn is_plain_mount_option(option: &str) -> bool {
    option.len() <= PATH_MAX && option.chars().all(|c| c == '/' || is_safe_char(c))
}

fn is_safe_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | ':' | '@' | '=' | ',' | '-')
}

/// The characters of a component with udev's `\xNN` escapes taken as one safe character.
fn unescaped(part: &str) -> impl Iterator<Item = char> + '_ {
    let bytes = part.as_bytes();
    let mut i = 0;
    std::iter::from_fn(move || {
        if i >= bytes.len() {
            return None;
        }
        if bytes[i] == b'\\'
            && bytes.get(i + 1) == Some(&b'x')
            && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit)
            && bytes.get(i + 3).is_some_and(u8::is_ascii_hexdigit)
        {
            i += 4;
            return Some('_');
        }
        let c = part[i..].chars().next()?;
        i += c.len_utf8();
        Some(c)
    })
}

fn check(path: AttrPath, device: &str, issues: &mut Vec<Issue>) {
    if !is_plain_dev_path(device) {
        issues.push(Issue::new(
            path,
            format!("device {device:?} is not a plain /dev path"),
            "Use a path such as /dev/sda or /dev/disk/by-id/<id>, without spaces, quotes or shell characters.",
        ));
    }
}

pub fn plain_dev_paths(model: &Model) -> Vec<Issue> {
    let mut issues = Vec::new();
    for disk in &model.layout.disks {
        check(disk.path.join("device"), &disk.device, &mut issues);
        if let Some(DiskContent::Gpt(gpt)) = &disk.content {
            for partition in &gpt.partitions {
                if partition.label.encode_utf16().count() > GPT_LABEL_MAX {
                    issues.push(Issue::new(
                        partition.path.join("label"),
                        format!(
                            "label {:?} is longer than the {GPT_LABEL_MAX} characters a GPT partition name holds: sgdisk would cut it, and /dev/disk/by-partlabel/ would not have the name the config mounts",
                            partition.label
                        ),
                        format!("Use a label of at most {GPT_LABEL_MAX} characters, or leave `label` out (disko then hashes long names)."),
                    ));
                    continue;
                }
                // disko cannot even compute it: DEV003 says so.
                if partition
                    .partlabel
                    .as_ref()
                    .is_some_and(|p| p.disko.is_err())
                {
                    continue;
                }
                let before = issues.len();
                check(
                    partition.path.join("device"),
                    &partition.device,
                    &mut issues,
                );
                if issues.len() > before {
                    continue;
                }
                // Contents inherit the partition's device unless they set their own.
                if let Some(content) = &partition.content {
                    let device = match content {
                        Content::Filesystem(fs) => &fs.device,
                        Content::Btrfs(btrfs) => &btrfs.device,
                        Content::Swap(swap) => &swap.device,
                    };
                    if device != &partition.device {
                        check(content.path().join("device"), device, &mut issues);
                    }
                }
            }
        }
    }
    issues
}

/// Mountpoints and mount options as written, with where they are written.
fn declared_mounts<'a>(model: &Model<'a>) -> Vec<(AttrPath, Option<&'a str>, &'a [String])> {
    let mut declared = Vec::new();
    for (_, _, content) in model.layout.contents() {
        match content {
            Content::Filesystem(fs) => declared.push((
                fs.path.clone(),
                fs.mountpoint.as_deref(),
                fs.mount_options.as_slice(),
            )),
            Content::Btrfs(btrfs) => {
                declared.push((
                    btrfs.path.clone(),
                    btrfs.mountpoint.as_deref(),
                    btrfs.mount_options.as_slice(),
                ));
                for subvolume in &btrfs.subvolumes {
                    declared.push((
                        subvolume.path.clone(),
                        subvolume.mountpoint.as_deref(),
                        subvolume.mount_options.as_slice(),
                    ));
                }
            }
            Content::Swap(swap) => {
                declared.push((swap.path.clone(), None, swap.mount_options.as_slice()))
            }
        }
    }
    declared
}

pub fn plain_mounts(model: &Model) -> Vec<Issue> {
    let mut issues = Vec::new();
    let check_options = |path: AttrPath, options: &[String], issues: &mut Vec<Issue>| {
        for option in options.iter().filter(|o| !is_plain_mount_option(o)) {
            issues.push(Issue::new(
                path.clone(),
                format!(
                    "mount option {option:?} has characters that fstab or a shell would interpret (whitespace separates fstab's fields, a newline starts a new entry), or is too long"
                ),
                "Write options from letters, digits and . _ + : @ = , / - only, e.g. \"noatime\" or \"compress=zstd:1\".",
            ));
        }
    };
    for (path, mountpoint, options) in declared_mounts(model) {
        if let Some(mountpoint) = mountpoint.filter(|m| !is_plain_mountpoint(m)) {
            issues.push(Issue::new(
                path.join("mountpoint"),
                format!(
                    "mountpoint {mountpoint:?} has characters that fstab, systemd unit names or a shell would interpret, or a name longer than Linux allows ({NAME_MAX} bytes per name, {PATH_MAX} per path)"
                ),
                "Use a path such as /var/lib/app: letters, digits, spaces and . _ + : @ = , - between the slashes, no quotes, backslashes or newlines.",
            ));
        }
        check_options(path.join("mountOptions"), options, &mut issues);
    }
    for flags in model.layout.file_systems.values() {
        check_options(flags.path.join("options"), &flags.options, &mut issues);
    }
    issues
}

/// What uses a partition's device during the install and at boot.
fn device_user(content: Option<&Content>) -> Option<&'static str> {
    match content? {
        Content::Filesystem(_) => Some("mkfs fails on the missing device and the install stops"),
        Content::Btrfs(_) => Some("mkfs.btrfs fails on the missing device and the install stops"),
        Content::Swap(swap) if swap.random_encryption => Some(
            "disko does not touch it, but at every boot the swap unit waits 90 s for the device and fails: the machine runs without swap",
        ),
        Content::Swap(_) => Some("mkswap fails on the missing device and the install stops"),
    }
}

/// Links disko's install needs and udev does not create: mkfs or mkswap fails.
pub fn partlabel_links(model: &Model) -> Vec<Issue> {
    link_issues(model, false)
}

/// The same for randomly encrypted swap, which disko does not touch: the
/// install succeeds and every boot waits for the device, then runs without swap.
pub fn partlabel_links_at_boot(model: &Model) -> Vec<Issue> {
    link_issues(model, true)
}

fn link_issues(model: &Model, at_boot: bool) -> Vec<Issue> {
    let mut issues = Vec::new();
    for (_, partition) in model.layout.partitions() {
        let boot_only =
            matches!(&partition.content, Some(Content::Swap(swap)) if swap.random_encryption);
        if boot_only != at_boot {
            continue;
        }
        // blkid reports a partition's GUID in lower case (ID_PART_ENTRY_UUID),
        // and udev names the by-partuuid link after it; disko pastes the uuid as written.
        if let Some(uuid) = partition.device.strip_prefix("/dev/disk/by-partuuid/") {
            if uuid.chars().any(|c| c.is_ascii_uppercase()) {
                if let Some(then) = device_user(partition.content.as_ref()) {
                    issues.push(Issue::new(
                        partition.path.join("uuid"),
                        format!(
                            "disko uses {} for partition {:?}, but udev names the link /dev/disk/by-partuuid/{} (blkid reports GUIDs in lower case): {then}",
                            partition.device,
                            partition.key,
                            uuid.to_ascii_lowercase()
                        ),
                        format!("Write the uuid in lower case: {:?}.", uuid.to_ascii_lowercase()),
                    ));
                }
            }
        }
        let Some(partlabel) = &partition.partlabel else {
            continue;
        };
        // Longer than a GPT name: DEV001 says so; sgdisk keeps the first
        // 36 characters, so the link udev makes is not disko's either.
        let label = &partition.label;
        let fix = "Use a label (or partition and disk names) of ASCII letters, digits and - _ . only, or set `uuid` so that disko uses /dev/disk/by-partuuid.";
        match &partlabel.disko {
            // DEV005.
            Err(_) => {}
            Ok(escaped) => {
                let disko_path = format!("/dev/disk/by-partlabel/{escaped}");
                if disko_path == partlabel.udev_device {
                    continue;
                }
                let Some(then) = device_user(partition.content.as_ref()) else {
                    continue;
                };
                let stored = if partlabel.stored_name == *label {
                    String::new()
                } else {
                    format!(" (sgdisk stores the name as {:?})", partlabel.stored_name)
                };
                issues.push(Issue::new(
                    partition.path.join("label"),
                    format!(
                        "disko uses {disko_path} for partition {:?}, but udev names the link of GPT name {label:?}{stored} {}: {then}",
                        partition.key, partlabel.udev_device
                    ),
                    fix,
                ));
            }
        }
    }
    issues
}

/// Why a device cannot hold partitions of its own, if it cannot.
fn partition_like(device: &str) -> Option<&'static str> {
    let name = device.strip_prefix("/dev/")?;
    let ends_in_part_number = |stem: &str| {
        let digits = stem.trim_end_matches(|c: char| c.is_ascii_digit());
        digits.len() < stem.len()
    };
    if let Some(rest) = name.strip_prefix("disk/") {
        if rest.starts_with("by-partlabel/") || rest.starts_with("by-partuuid/") {
            return Some("a link to a partition");
        }
        if let Some((_, tail)) = rest.rsplit_once("-part") {
            if !tail.is_empty() && tail.chars().all(|c| c.is_ascii_digit()) {
                return Some("a link to a partition");
            }
        }
        return None;
    }
    if name.starts_with("mapper/")
        || name
            .strip_prefix("dm-")
            .is_some_and(|n| n.chars().all(|c| c.is_ascii_digit()))
    {
        return Some("a device-mapper device, whose partition tables the kernel never reads");
    }
    for prefix in ["sd", "vd", "xvd", "hd"] {
        if let Some(rest) = name.strip_prefix(prefix) {
            let letters = rest.trim_end_matches(|c: char| c.is_ascii_digit());
            if !letters.is_empty()
                && letters.chars().all(|c| c.is_ascii_lowercase())
                && ends_in_part_number(rest)
            {
                return Some("a partition");
            }
        }
    }
    for prefix in ["nvme", "mmcblk", "loop", "nbd", "md"] {
        if let Some(rest) = name.strip_prefix(prefix) {
            if let Some((_, number)) = rest.rsplit_once('p') {
                if !number.is_empty() && number.chars().all(|c| c.is_ascii_digit()) {
                    return Some("a partition");
                }
            }
        }
    }
    None
}

pub fn whole_disks(model: &Model) -> Vec<Issue> {
    model
        .layout
        .disks
        .iter()
        .filter(|disk| matches!(disk.content, Some(DiskContent::Gpt(_))))
        .filter_map(|disk| {
            let what = partition_like(&disk.device)?;
            Some(Issue::new(
                disk.path.join("device"),
                format!(
                    "disk {:?} is {} ({what}), but it gets a GPT partition table: sgdisk writes one into it (destroying what it held), the kernel creates no partitions inside it, so no /dev/disk/by-partlabel link appears and the first mkfs fails: the install stops",
                    disk.key, disk.device
                ),
                "Give the whole disk (e.g. /dev/sda or /dev/disk/by-id/<disk>), or put the filesystem directly on the partition (content = { type = \"btrfs\"; … } without a gpt table).",
            ))
        })
        .collect()
}

/// A label disko's hexEscapeUdevSymlink cannot escape (a byte nixpkgs'
/// charToInt does not know), on a partition whose device disko computes
/// (one with content): the evaluation fails. An empty partition's device is
/// never asked for (real disko 878ec37 installs it).
pub fn labels_disko_escapes(model: &Model) -> Vec<Issue> {
    let mut issues = Vec::new();
    for disk in &model.layout.disks {
        let Some(layout::DiskContent::Gpt(gpt)) = &disk.content else {
            continue;
        };
        for partition in gpt.partitions.iter().filter(|p| p.content.is_some()) {
            let Some(Err(byte)) = partition.partlabel.as_ref().map(|l| &l.disko) else {
                continue;
            };
            issues.push(Issue::new(
                partition.path.join("label"),
                format!(
                    "disko cannot compute the device of partition {:?}: its hexEscapeUdevSymlink takes label {:?} byte by byte and nixpkgs' charToInt knows no byte 0x{byte:02X}, so the evaluation fails (\"attribute missing\") and nothing is installed",
                    partition.key, partition.label
                ),
                "Use a label (or partition and disk names) of ASCII letters, digits and - _ . only, or set `uuid` so that disko uses /dev/disk/by-partuuid.",
            ));
        }
    }
    issues
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{is_plain_dev_path, is_plain_mount_option, is_plain_mountpoint};
    use crate::rules::testing::*;

    #[test]
    fn plain_paths() {
        for good in [
            "/dev/sda",
            "/dev/nvme0n1",
            "/dev/disk/by-partlabel/disk-main-root",
            "/dev/disk/by-id/scsi-0QEMU_QEMU_HARDDISK_123",
            "/dev/disk/by-partlabel/a\\x20b",
        ] {
            assert!(is_plain_dev_path(good), "{good}");
        }
        for bad in [
            "sda",
            "/dev/",
            "/dev/sda; rm -rf /",
            "/dev/$(reboot)",
            "/dev/../etc/passwd",
            "/tmp/disk.img",
            "/dev/sd a",
            "/dev/sda\n",
            "/dev//sda",
            "/dev/`id`",
        ] {
            assert!(!is_plain_dev_path(bad), "{bad:?}");
        }
    }

    #[test]
    fn linux_lengths() {
        let long_name = "a".repeat(256);
        assert!(is_plain_dev_path(&format!("/dev/{}", "a".repeat(255))));
        assert!(!is_plain_dev_path(&format!("/dev/{long_name}")));
        assert!(!is_plain_dev_path(&format!("/dev{}", "/a".repeat(3000))));
        assert!(!is_plain_mountpoint(&format!("/srv/{long_name}")));
        assert!(!is_plain_mount_option(&"a".repeat(5000)));
    }

    #[test]
    fn plain_mountpoints_and_options() {
        for good in [
            "/",
            "/var/lib/containers",
            "/.snapshots",
            "relative/is/btrfs002s",
        ] {
            assert!(is_plain_mountpoint(good), "{good:?}");
        }
        for bad in [
            "/srv/$(reboot)",
            "/srv/`id`",
            "/srv/a\nb",
            "/srv/a;b",
            "/srv/\"q\"",
            "/srv/*",
            "/srv/a\tb",
        ] {
            assert!(!is_plain_mountpoint(bad), "{bad:?}");
        }
        for good in [
            "noatime",
            "compress=zstd:1",
            "subvol=@nix",
            "umask=0077",
            "x-systemd.requires=/dev/disk/by-partlabel/disk-main-root",
        ] {
            assert!(is_plain_mount_option(good), "{good:?}");
        }
        for bad in [
            "noatime\n/dev/sdb /etc btrfs defaults 0 0",
            "a b",
            "$(reboot)",
            "'x'",
        ] {
            assert!(!is_plain_mount_option(bad), "{bad:?}");
        }
    }

    #[test]
    fn metacharacters_in_mountpoints_and_options() {
        let codes = codes_after(|e| {
            subvolume(e, "@caddy")["mountpoint"] = json!("/var/lib/caddy$(reboot)");
        });
        assert_eq!(codes, vec!["DEV002", "SHELL001"]);
        let codes = codes_after(|e| {
            subvolume(e, "@caddy")["mountOptions"]
                .as_array_mut()
                .unwrap()
                .push(json!("noatime\n/dev/sdb /etc btrfs defaults 0 0"));
        });
        assert!(codes.contains(&"DEV002"), "{codes:?}");
        let codes = codes_after(|e| {
            e["layout"]["fileSystems"]["/nix"]["options"] = json!(["x-mount.mkdir;reboot"]);
        });
        assert!(codes.contains(&"DEV002"), "{codes:?}");
    }

    #[test]
    fn long_labels() {
        // sgdisk keeps 36 characters: udev's link is not disko's path
        // (generated corpus g19-96: mkfs.ext4 found no such file).
        let codes = codes_after(|e| partition(e, "swap")["label"] = json!("a".repeat(37)));
        assert_eq!(codes, vec!["DEV001", "DEV006"]);
        let codes = codes_after(|e| partition(e, "root")["label"] = json!("a".repeat(37)));
        assert_eq!(codes, vec!["DEV001", "DEV003"]);
        let codes = codes_after(|e| partition(e, "swap")["label"] = json!("a".repeat(36)));
        assert!(codes.is_empty(), "{codes:?}");
    }

    #[test]
    fn metacharacters_in_the_disk_device() {
        let codes = codes_after(|e| {
            e["layout"]["disko"]["devices"]["disk"]["main"]["device"] = json!("/dev/sda$(reboot)")
        });
        assert_eq!(codes, vec!["DEV001", "SHELL001"]);
    }

    #[test]
    fn labels_udev_escapes_differently() {
        // udev writes `,` as \x2c; disko keeps it: mkfs would wait for a link that never appears.
        let findings = findings_after(|e| partition(e, "root")["label"] = json!("disk,main,root"));
        let codes: Vec<&str> = findings.iter().map(|f| f.code).collect();
        assert_eq!(codes, vec!["DEV003"], "{findings:#?}");
        assert!(
            findings[0]
                .message
                .contains("/dev/disk/by-partlabel/disk\\x2cmain\\x2croot"),
            "{findings:?}"
        );
        assert!(
            findings[0].message.contains("install stops"),
            "{findings:?}"
        );
        // sgdisk stops the name at a colon.
        let findings = findings_after(|e| partition(e, "root")["label"] = json!("main:root"));
        assert!(
            findings
                .iter()
                .any(|f| f.code == "DEV003" && f.message.contains("\"main\"")),
            "{findings:#?}"
        );
        // udev writes `;` as \x3b, disko as \x3B.
        // On randomly encrypted swap disko never opens the link: the boot does (DEV006).
        let codes = codes_after(|e| partition(e, "swap")["label"] = json!("swap;reboot"));
        assert_eq!(codes, vec!["DEV006"]);
        // With a uuid disko uses by-partuuid: any label is fine.
        let codes = codes_after(|e| {
            partition(e, "root")["label"] = json!("données, à la racine");
            partition(e, "root")["uuid"] = json!("e4fbd4b2-3b50-4a9b-9d1f-0c4f6c2f7a10");
        });
        assert!(codes.is_empty(), "{codes:?}");
        // Non-ASCII labels fail disko's evaluation.
        let findings = findings_after(|e| partition(e, "root")["label"] = json!("données"));
        assert!(
            findings
                .iter()
                .any(|f| f.code == "DEV005" && f.message.contains("0xC3")),
            "{findings:#?}"
        );
    }

    #[test]
    fn a_partition_as_the_disk() {
        for device in [
            "/dev/sda1",
            "/dev/nvme0n1p2",
            "/dev/disk/by-partlabel/x",
            "/dev/disk/by-id/ata-X-part3",
            "/dev/mapper/root",
        ] {
            let codes = codes_after(|e| {
                e["layout"]["disko"]["devices"]["disk"]["main"]["device"] = json!(device)
            });
            assert!(codes.contains(&"DEV004"), "{device}: {codes:?}");
        }
        for device in [
            "/dev/sda",
            "/dev/nvme0n1",
            "/dev/vdb",
            "/dev/disk/by-id/scsi-0QEMU_QEMU_HARDDISK_1",
            "/dev/md0",
        ] {
            let codes = codes_after(|e| {
                e["layout"]["disko"]["devices"]["disk"]["main"]["device"] = json!(device)
            });
            assert!(!codes.contains(&"DEV004"), "{device}: {codes:?}");
        }
    }

    #[test]
    fn spaces_in_mountpoints_are_fine() {
        let codes = codes_after(|e| subvolume(e, "@caddy")["mountpoint"] = json!("/srv/my data"));
        assert!(codes.is_empty(), "{codes:?}");
    }
}
