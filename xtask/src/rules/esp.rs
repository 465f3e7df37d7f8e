//! The EFI system partition: present for UEFI, vfat, mounted at /boot, and
//! readable by root only (kernels, initrds and GRUB's config live there).

use super::{Context, Issue};
use crate::findings::AttrPath;
use crate::layout::size::{human, MIB};
use crate::layout::{Content, Disk, Partition};

fn esps<'a>(context: &'a Context) -> Vec<(&'a Disk, &'a Partition)> {
    context
        .layout
        .partitions()
        .filter(|(_, p)| p.type_code.eq_ignore_ascii_case("EF00"))
        .collect()
}

pub fn present(context: &Context) -> Vec<Issue> {
    if !context.firmware.uefi || !esps(context).is_empty() {
        return Vec::new();
    }
    let path = context
        .layout
        .disks
        .first()
        .map(|d| d.path.clone())
        .unwrap_or_else(AttrPath::root);
    vec![Issue::new(
        path,
        "the machine can boot with UEFI but no disk has an EFI system partition (EF00)",
        "Add an ESP: `ESP = { size = \"1G\"; type = \"EF00\"; content = { type = \"filesystem\"; format = \"vfat\"; mountpoint = \"/boot\"; mountOptions = [ \"fmask=0177\" \"dmask=0077\" ]; }; };`",
    )]
}

pub fn vfat(context: &Context) -> Vec<Issue> {
    esps(context)
        .into_iter()
        .filter_map(|(_, partition)| match &partition.content {
            Some(Content::Filesystem(fs)) if fs.format == "vfat" => None,
            Some(Content::Filesystem(fs)) => Some(Issue::new(
                fs.path.join("format"),
                format!("the ESP {:?} is formatted {:?}; firmware reads only FAT", partition.key, fs.format),
                "Set format = \"vfat\".",
            )),
            other => Some(Issue::new(
                partition.path.join("content"),
                format!(
                    "the ESP {:?} holds {}, not a vfat filesystem",
                    partition.key,
                    other.as_ref().map_or("nothing", |c| c.type_name())
                ),
                "Give it content = { type = \"filesystem\"; format = \"vfat\"; mountpoint = \"/boot\"; };",
            )),
        })
        .collect()
}

pub fn mounted(context: &Context) -> Vec<Issue> {
    esps(context)
        .into_iter()
        .filter_map(|(_, partition)| {
            let Some(Content::Filesystem(fs)) = &partition.content else {
                return None;
            };
            match fs.mountpoint.as_deref() {
                Some("/boot") | Some("/boot/efi") => None,
                Some(other) => Some(Issue::new(
                    fs.path.join("mountpoint"),
                    format!("the ESP is mounted at {other:?}; GRUB's efiSysMountPoint is /boot"),
                    "Mount it at \"/boot\".",
                )),
                None => Some(Issue::new(
                    fs.path.join("mountpoint"),
                    "the ESP is not mounted, so GRUB cannot install to it",
                    "Set mountpoint = \"/boot\".",
                )),
            }
        })
        .collect()
}

/// The mask an option sets, `umask=0077` → 0o077.
fn mask(options: &[String], name: &str) -> Option<u32> {
    options.iter().rev().find_map(|option| {
        let value = option.strip_prefix(name)?.strip_prefix('=')?;
        u32::from_str_radix(value, 8).ok()
    })
}

/// Group and others get nothing on directories and files.
pub fn restrictive(options: &[String]) -> bool {
    let closed = |m: Option<u32>| m.is_some_and(|m| m & 0o077 == 0o077);
    let umask = mask(options, "umask");
    (closed(mask(options, "fmask")) || closed(umask))
        && (closed(mask(options, "dmask")) || closed(umask))
}

pub fn permissions(context: &Context) -> Vec<Issue> {
    esps(context)
        .into_iter()
        .filter_map(|(_, partition)| {
            let Some(Content::Filesystem(fs)) = &partition.content else {
                return None;
            };
            let mountpoint = fs.mountpoint.as_deref()?;
            let options = context
                .mounts
                .iter()
                .find(|m| m.mountpoint == mountpoint)
                .map(|m| m.options.clone())
                .unwrap_or_default();
            (!restrictive(&options)).then(|| {
                Issue::new(
                    fs.path.join("mountOptions"),
                    format!(
                        "the ESP at {mountpoint} is mounted with {:?}: other users could read kernels, initrd secrets and the random seed",
                        options
                    ),
                    "Add \"fmask=0177\" and \"dmask=0077\" to mountOptions (files 0600, directories 0700), or at least \"umask=0077\".",
                )
            })
        })
        .collect()
}

pub fn size(context: &Context) -> Vec<Issue> {
    esps(context)
        .into_iter()
        .filter_map(|(_, partition)| {
            let bytes = partition.fixed_size()?;
            (bytes < 512 * MIB).then(|| {
                Issue::new(
                    partition.path.join("size"),
                    format!(
                        "the ESP is {}; each NixOS generation puts a kernel and an initrd (~60 MiB) on it",
                        human(bytes)
                    ),
                    "Use 1G, or limit generations with boot.loader.grub.configurationLimit.",
                )
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::restrictive;
    use crate::rules::testing::*;

    fn esp_content(e: &mut serde_json::Value) -> &mut serde_json::Value {
        &mut partition(e, "ESP")["content"]
    }

    #[test]
    fn permission_forms() {
        let opts = |o: &[&str]| o.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(restrictive(&opts(&["umask=0077"])));
        assert!(restrictive(&opts(&["umask=077"])));
        assert!(restrictive(&opts(&["fmask=0177", "dmask=0077"])));
        assert!(!restrictive(&opts(&["fmask=0077"])));
        assert!(!restrictive(&opts(&["umask=0022"])));
        assert!(!restrictive(&opts(&["defaults"])));
        assert!(!restrictive(&opts(&["umask=0077", "umask=0022"])));
    }

    #[test]
    fn open_permissions() {
        let codes = codes_after(|e| esp_content(e)["mountOptions"] = json!(["defaults"]));
        assert_eq!(codes, vec!["ESP004"]);
    }

    #[test]
    fn wrong_format_and_mount() {
        let codes = codes_after(|e| esp_content(e)["format"] = json!("ext4"));
        assert_eq!(codes, vec!["ESP002"]);
        let codes = codes_after(|e| esp_content(e)["mountpoint"] = json!("/efi"));
        assert_eq!(codes, vec!["ESP003"]);
    }

    #[test]
    fn missing_and_small() {
        let codes = codes_after(|e| partition(e, "ESP")["type"] = json!("8300"));
        assert!(codes.contains(&"ESP001"), "{codes:?}");
        let codes = codes_after(|e| partition(e, "ESP")["size"] = json!("256M"));
        assert_eq!(codes, vec!["ESP005"]);
    }
}
