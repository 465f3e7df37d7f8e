//! The EFI system partition: present for UEFI, vfat, mounted at /boot, and
//! readable by root only (kernels, initrds and GRUB's config live there).

use super::{Issue, Model};
use layout::findings::AttrPath;
use layout::kernel_options::{read, Filesystem};
use layout::size::{human, MIB};
use layout::{Content, Disk, Partition};

/// What GRUB keeps on the ESP when it is /boot, as NixOS installs it for
/// BIOS and UEFI with efiInstallAsRemovable: its modules for i386-pc and
/// x86_64-efi (Debian 12 packages them in 3.1 MB and 18.2 MB, grub-pc-bin
/// and grub-efi-amd64-bin, Installed-Size), its font and grub.cfg, and the
/// EFI image \EFI\BOOT\BOOTX64.EFI. A generous estimate.
pub const GRUB_FILES: u64 = 24 * MIB;
/// One NixOS generation's kernel and initrd, copied to /boot/kernels because
/// /boot is not on the filesystem of the Nix store (nixos/modules/system/
/// boot/loader/grub/install-grub.pl): a bzImage of ~13 MiB and a systemd
/// stage-1 initrd with Btrfs of ~30–45 MiB. Debian 12's cloud kernel and
/// initrd, the smallest in reach, take 14.2 MB and 14.8 MB.
pub const GENERATION: u64 = 64 * MIB;
/// boot.loader.grub.configurationLimit in hosts/servers/hetzner-cloud/boot.nix
/// (standalone mode cannot evaluate that file; a test keeps the two equal).
pub const CONFIGURATION_LIMIT: u64 = 10;

/// The least an ESP must hold: GRUB's files, the running generation and the
/// next one, which install-grub.pl copies before it deletes the old.
pub const ESP_MINIMUM: u64 = GRUB_FILES + 2 * GENERATION;
/// What the generations GRUB's menu keeps need: configurationLimit of them
/// plus the new one being installed.
pub const ESP_COMFORTABLE: u64 = GRUB_FILES + (CONFIGURATION_LIMIT + 1) * GENERATION;

fn esps<'a>(model: &'a Model) -> Vec<(&'a Disk, &'a Partition)> {
    model
        .layout
        .partitions()
        .filter(|(_, p)| p.type_code.eq_ignore_ascii_case("EF00"))
        .collect()
}

pub fn present(model: &Model) -> Vec<Issue> {
    if !model.firmware.uefi || !esps(model).is_empty() {
        return Vec::new();
    }
    let path = model
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

pub fn vfat(model: &Model) -> Vec<Issue> {
    esps(model)
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

pub fn mounted(model: &Model) -> Vec<Issue> {
    esps(model)
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

/// Group and others get nothing on directories and files, with the masks
/// vfat ends up with after reading the options in order.
pub fn restrictive(options: &[String]) -> bool {
    let reading = read(Filesystem::Vfat, options);
    let closed = |m: Option<u32>| m.is_some_and(|m| m & 0o077 == 0o077);
    closed(reading.fmask) && closed(reading.dmask)
}

/// The modes vfat gives files and directories under these options (no
/// showexec: files get execute bits like directories; the default mask is
/// the mounting process's umask, 0022 under mount(8) as root).
fn modes(options: &[String]) -> String {
    let reading = read(Filesystem::Vfat, options);
    let file = 0o777 & !reading.fmask.unwrap_or(0o022);
    let dir = 0o777 & !reading.dmask.unwrap_or(0o022);
    format!("files {file:04o}, directories {dir:04o}")
}

pub fn permissions(model: &Model) -> Vec<Issue> {
    esps(model)
        .into_iter()
        .filter_map(|(_, partition)| {
            let Some(Content::Filesystem(fs)) = &partition.content else {
                return None;
            };
            let mountpoint = fs.mountpoint.as_deref()?;
            let options = model
                .mounts
                .iter()
                .find(|m| m.mountpoint == mountpoint)
                .map(|m| m.options.clone())
                .unwrap_or_default();
            (!restrictive(&options)).then(|| {
                Issue::new(
                    fs.path.join("mountOptions"),
                    format!(
                        "the ESP at {mountpoint} is mounted with {:?}, which vfat reads in order as {}: other users could read kernels, initrd secrets and the random seed",
                        options,
                        modes(&options)
                    ),
                    "Add \"fmask=0177\" and \"dmask=0077\" to mountOptions (files 0600, directories 0700), or at least \"umask=0077\".",
                )
            })
        })
        .collect()
}

/// Every ESP with its size where it is known.
fn esp_sizes<'a>(model: &'a Model) -> Vec<(&'a Partition, u64)> {
    esps(model)
        .into_iter()
        .filter_map(|(disk, partition)| Some((partition, model.partition_bytes(disk, partition)?)))
        .collect()
}

fn size_path(partition: &Partition) -> AttrPath {
    if partition.start != "0" || partition.end != format!("+{}", partition.size_text) {
        partition.path.join("end")
    } else {
        partition.path.join("size")
    }
}

pub fn size(model: &Model) -> Vec<Issue> {
    esp_sizes(model)
        .into_iter()
        .filter(|(_, bytes)| (ESP_MINIMUM..ESP_COMFORTABLE).contains(bytes))
        .map(|(partition, bytes)| {
            Issue::new(
                size_path(partition),
                format!(
                    "the ESP is {}; GRUB's files ({}) and the {} generations of boot.loader.grub.configurationLimit plus the one being installed, each a kernel and an initrd (~{}), need {}: once it is full, `nixos-rebuild switch` fails to install the boot loader",
                    human(bytes),
                    human(GRUB_FILES),
                    CONFIGURATION_LIMIT,
                    human(GENERATION),
                    human(ESP_COMFORTABLE)
                ),
                "Use 1G, or lower boot.loader.grub.configurationLimit.",
            )
        })
        .collect()
}

pub fn minimum(model: &Model) -> Vec<Issue> {
    esp_sizes(model)
        .into_iter()
        .filter(|(_, bytes)| *bytes < ESP_MINIMUM)
        .map(|(partition, bytes)| {
            let when = if bytes < GRUB_FILES + GENERATION {
                "the install fails when the boot loader is installed (no space left on the ESP for the first kernel and initrd), and the server does not boot"
            } else {
                "the first update that brings a new kernel fails to install the boot loader, because the new kernel and initrd are copied before the old ones are removed"
            };
            Issue::new(
                size_path(partition),
                format!(
                    "the ESP is {}, but GRUB's files ({}) and two generations' kernels and initrds (~{} each) need {}: {when}",
                    human(bytes),
                    human(GRUB_FILES),
                    human(GENERATION),
                    human(ESP_MINIMUM)
                ),
                "Use size = \"1G\".",
            )
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
        // fmask= and dmask= are vfat's: ext4 refuses the mount too.
        assert_eq!(codes, vec!["ESP002", "MOUNT001", "MOUNT001"]);
        let codes = codes_after(|e| esp_content(e)["mountpoint"] = json!("/efi"));
        assert_eq!(codes, vec!["ESP003"]);
    }

    #[test]
    fn missing_and_small() {
        let codes = codes_after(|e| partition(e, "ESP")["type"] = json!("8300"));
        assert!(codes.contains(&"ESP001"), "{codes:?}");
        let codes = codes_after(|e| partition(e, "ESP")["size"] = json!("256M"));
        assert_eq!(codes, vec!["ESP005"]);
        let findings = findings_after(|e| partition(e, "ESP")["size"] = json!("8M"));
        let codes: Vec<&str> = findings.iter().map(|f| f.code).collect();
        assert_eq!(codes, vec!["ESP006"], "{findings:#?}");
        assert!(
            findings[0].message.contains("the install fails"),
            "{findings:?}"
        );
        let codes = codes_after(|e| partition(e, "ESP")["size"] = json!("100M"));
        assert_eq!(codes, vec!["ESP006"]);
    }

    #[test]
    fn the_limit_is_the_hosts() {
        let boot = include_str!("../../../hosts/servers/hetzner-cloud/boot.nix");
        assert!(
            boot.contains(&format!(
                "configurationLimit = {};",
                super::CONFIGURATION_LIMIT
            )),
            "boot.nix changed configurationLimit; update esp::CONFIGURATION_LIMIT"
        );
        // The host's 1 GiB ESP holds what the limit keeps.
        const { assert!(super::ESP_COMFORTABLE <= 1 << 30) };
    }

    #[test]
    fn start_and_end_give_the_size() {
        // 1 GiB from 2 MiB on: no "0 B" ESP.
        let codes = codes_after(|e| {
            let esp = partition(e, "ESP");
            esp.as_object_mut().unwrap().remove("size");
            esp["start"] = json!("2M");
            esp["end"] = json!("+1G");
            esp["priority"] = json!(500);
        });
        assert!(codes.is_empty(), "{codes:?}");
    }
}
