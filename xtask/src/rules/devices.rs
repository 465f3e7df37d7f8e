//! Device paths end up in fstab, systemd unit names, disko's shell scripts
//! and our VM plans: they must be plain /dev paths, and partition labels
//! (which become by-partlabel names and sgdisk arguments) plain names.
//! Mountpoints and mount options go the same ways: fstab separates fields
//! with whitespace and entries with newlines, so they must be plain too.

use super::{Context, Issue};
use crate::findings::AttrPath;
use crate::layout::{Content, DiskContent};

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
/// components of `[A-Za-z0-9._+:@=,-]` within Linux's lengths. Whether it is
/// absolute and normalised is BTRFS002's question.
pub fn is_plain_mountpoint(path: &str) -> bool {
    path.len() <= PATH_MAX
        && path
            .split('/')
            .all(|part| part.len() <= NAME_MAX && part.chars().all(is_safe_char))
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

pub fn plain_dev_paths(context: &Context) -> Vec<Issue> {
    let mut issues = Vec::new();
    for disk in &context.layout.disks {
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
                if !partition.label.chars().all(is_safe_char) {
                    issues.push(Issue::new(
                        partition.path.join("label"),
                        format!(
                            "label {:?} has characters that disko's scripts would interpret and udev escapes",
                            partition.label
                        ),
                        "Use letters, digits and . _ + : @ = , - in partition labels and names.",
                    ));
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
fn declared_mounts<'a>(context: &Context<'a>) -> Vec<(AttrPath, Option<&'a str>, &'a [String])> {
    let mut declared = Vec::new();
    for (_, _, content) in context.layout.contents() {
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

pub fn plain_mounts(context: &Context) -> Vec<Issue> {
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
    for (path, mountpoint, options) in declared_mounts(context) {
        if let Some(mountpoint) = mountpoint.filter(|m| !is_plain_mountpoint(m)) {
            issues.push(Issue::new(
                path.join("mountpoint"),
                format!(
                    "mountpoint {mountpoint:?} has characters that fstab, systemd unit names or a shell would interpret, or a name longer than Linux allows ({NAME_MAX} bytes per name, {PATH_MAX} per path)"
                ),
                "Use a path such as /var/lib/app: letters, digits and . _ + : @ = , - between the slashes, no spaces, quotes or newlines.",
            ));
        }
        check_options(path.join("mountOptions"), options, &mut issues);
    }
    for flags in context.layout.file_systems.values() {
        check_options(flags.path.join("options"), &flags.options, &mut issues);
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
            "/srv/a b",
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
        assert_eq!(codes, vec!["DEV002"]);
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
        let codes = codes_after(|e| partition(e, "swap")["label"] = json!("a".repeat(37)));
        assert_eq!(codes, vec!["DEV001"]);
        let codes = codes_after(|e| partition(e, "swap")["label"] = json!("a".repeat(36)));
        assert!(codes.is_empty(), "{codes:?}");
    }

    #[test]
    fn metacharacters_in_the_disk_device() {
        let codes = codes_after(|e| {
            e["layout"]["disko"]["devices"]["disk"]["main"]["device"] = json!("/dev/sda$(reboot)")
        });
        assert_eq!(codes, vec!["DEV001"]);
    }

    #[test]
    fn metacharacters_in_a_label() {
        let codes = codes_after(|e| partition(e, "swap")["label"] = json!("swap;reboot"));
        assert_eq!(codes, vec!["DEV001"]);
    }
}
