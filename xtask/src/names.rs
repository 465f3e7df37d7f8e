//! Names that NixOS and the kernel give to parts of the layout, so that the
//! docs and the checklist can say exactly what a command will print.

/// Characters nixpkgs' `utils.escapeSystemdPath` escapes as `\xNN`
/// (nixos/lib/utils.nix: `escapeC (stringToCharacters " !\"#$%&'()*+,;<=>=@[\\]^`{|}~-")`).
const SYSTEMD_ESCAPED: &str = " !\"#$%&'()*+,;<=>@[\\]^`{|}~-";

/// A path escaped the way nixpkgs' `utils.escapeSystemdPath` does it (like
/// `systemd-escape --path`): `/dev/disk/by-partlabel/disk-main-swap` →
/// `dev-disk-by\x2dpartlabel-disk\x2dmain\x2dswap`.
pub fn escape_systemd_path(path: &str) -> String {
    let mut collapsed = String::with_capacity(path.len());
    for c in path.chars() {
        if !(c == '/' && collapsed.ends_with('/')) {
            collapsed.push(c);
        }
    }
    if collapsed == "/" {
        return "-".to_owned();
    }
    let trimmed = collapsed.trim_matches('/');
    let mut escaped = String::with_capacity(trimmed.len() * 2);
    for c in trimmed.chars() {
        if SYSTEMD_ESCAPED.contains(c) {
            escaped.push_str(&format!("\\x{:02x}", u32::from(c)));
        } else {
            escaped.push(c);
        }
    }
    if let Some(rest) = escaped.strip_prefix('.') {
        escaped = format!("\\x2e{rest}");
    }
    escaped.replace('/', "-")
}

/// The device-mapper name NixOS gives a swap device with `randomEncryption`:
/// `deviceName` in nixos/modules/config/swap.nix, which is
/// `replaceStrings ["\\"] [""] (utils.escapeSystemdPath device)`.
/// The swap service opens it with `cryptsetup plainOpen … <device> <name>`.
pub fn swap_mapper_name(device: &str) -> String {
    escape_systemd_path(device).replace('\\', "")
}

/// The kernel's node for partition `number` of the disk at `disk_device`:
/// `/dev/sda` → `/dev/sda4`, `/dev/nvme0n1` → `/dev/nvme0n1p4`. `None` when the
/// disk is named through a symlink (`/dev/disk/by-id/…`), whose target is
/// only known on the machine.
pub fn partition_node(disk_device: &str, number: u32) -> Option<String> {
    let name = disk_device.strip_prefix("/dev/")?;
    if name.is_empty() || name.contains('/') {
        return None;
    }
    let separator = if name.ends_with(|c: char| c.is_ascii_digit()) {
        "p"
    } else {
        ""
    };
    Some(format!("{disk_device}{separator}{number}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hosts_swap_mapper() {
        assert_eq!(
            escape_systemd_path("/dev/disk/by-partlabel/disk-main-swap"),
            "dev-disk-by\\x2dpartlabel-disk\\x2dmain\\x2dswap"
        );
        assert_eq!(
            swap_mapper_name("/dev/disk/by-partlabel/disk-main-swap"),
            "dev-disk-byx2dpartlabel-diskx2dmainx2dswap"
        );
    }

    #[test]
    fn escaping_follows_nixpkgs() {
        assert_eq!(escape_systemd_path("/"), "-");
        assert_eq!(escape_systemd_path("/dev/sda3"), "dev-sda3");
        assert_eq!(escape_systemd_path("//dev//sda3/"), "dev-sda3");
        assert_eq!(escape_systemd_path("/.swap"), "\\x2eswap");
        assert_eq!(escape_systemd_path("/a b@c"), "a\\x20b\\x40c");
        assert_eq!(escape_systemd_path("/a.b"), "a.b");
    }

    #[test]
    fn partition_nodes() {
        assert_eq!(partition_node("/dev/sda", 4).as_deref(), Some("/dev/sda4"));
        assert_eq!(
            partition_node("/dev/nvme0n1", 2).as_deref(),
            Some("/dev/nvme0n1p2")
        );
        assert_eq!(partition_node("/dev/vdb", 1).as_deref(), Some("/dev/vdb1"));
        assert_eq!(partition_node("/dev/disk/by-id/scsi-0QEMU", 1), None);
        assert_eq!(partition_node("sda", 1), None);
    }
}
