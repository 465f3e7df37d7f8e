//! Device paths end up in fstab, systemd unit names, disko's shell scripts
//! and our VM plans: they must be plain /dev paths, and partition labels
//! (which become by-partlabel names and sgdisk arguments) plain names.

use super::{Context, Issue};
use crate::findings::AttrPath;
use crate::layout::{Content, DiskContent};

/// `/dev/...` made of path components of `[A-Za-z0-9._+:@=,-]`, with the
/// `\xNN` escapes udev writes into by-partlabel names.
pub fn is_plain_dev_path(path: &str) -> bool {
    let Some(rest) = path.strip_prefix("/dev/") else {
        return false;
    };
    !rest.is_empty()
        && rest.split('/').all(|part| {
            !part.is_empty() && part != "." && part != ".." && unescaped(part).all(is_safe_char)
        })
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::is_plain_dev_path;
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
