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

/// The symlink name udev gives a GPT partition name under /dev/disk/by-partlabel/.
///
/// udev's builtin `blkid` stores the name as `ID_PART_ENTRY_NAME` through
/// libblkid's `blkid_encode_string` (util-linux libblkid/src/encode.c), and
/// 60-persistent-storage.rules links `disk/by-partlabel/$env{ID_PART_ENTRY_NAME}`.
/// The encoding keeps ASCII letters, digits and `#+-.:=@_`, keeps every valid
/// multi-byte UTF-8 sequence as it is, and writes every other byte as a
/// lowercase `\xNN` (`,` `/` space `\` included). A sequence libblkid calls
/// invalid (a noncharacter such as U+FDD0..U+FDEF or U+xFFFF) is escaped byte
/// by byte. Checked against `blkid -p -o udev` on a loop device in
/// tests/geometry_sgdisk.rs, and against `udevadm test-builtin blkid` when
/// tests/fixtures/disko-corpus was recorded.
pub fn udev_encode(name: &str) -> String {
    let mut encoded = String::with_capacity(name.len());
    for c in name.chars() {
        let code = u32::from(c);
        let kept = if c.is_ascii() {
            c.is_ascii_alphanumeric() || "#+-.:=@_".contains(c)
        } else {
            // utf8_unichar_valid_range in libblkid's encode.c.
            !((0xfdd0..=0xfdef).contains(&code) || code & 0xffff == 0xffff)
        };
        if kept {
            encoded.push(c);
        } else {
            let mut buf = [0u8; 4];
            for byte in c.encode_utf8(&mut buf).bytes() {
                encoded.push_str(&format!("\\x{byte:02x}"));
            }
        }
    }
    encoded
}

/// The by-partlabel path udev creates for a GPT partition named `name`.
pub fn udev_partlabel_path(name: &str) -> String {
    format!("/dev/disk/by-partlabel/{}", udev_encode(name))
}

/// disko's `hexEscapeUdevSymlink` (lib/default.nix at disko 878ec37): Nix's
/// `stringAsChars` walks the label byte by byte, keeps what matches
/// `[0-9A-Za-z#+-.:=@_/]` (where `+-.` is a range, so `,` is kept too, and `/`
/// is kept), and writes the rest as `\x` with nixpkgs' `toHexString`: upper
/// case and without padding (`\x9` for a tab). `charToInt` knows only ASCII,
/// so a label with a byte above 0x7F fails the evaluation: `Err(byte)`.
pub fn disko_hex_escape(label: &str) -> Result<String, u8> {
    let mut escaped = String::with_capacity(label.len());
    for byte in label.bytes() {
        if !byte.is_ascii() {
            return Err(byte);
        }
        let c = char::from(byte);
        if c.is_ascii_alphanumeric()
            || matches!(c, '#' | '+' | ',' | '-' | '.' | ':' | '=' | '@' | '_' | '/')
        {
            escaped.push(c);
        } else {
            escaped.push_str(&format!("\\x{byte:X}"));
        }
    }
    Ok(escaped)
}

/// GPT partition names hold 36 UTF-16 code units.
pub const GPT_NAME_UNITS: usize = 36;

/// The name sgdisk 1.0.9 stores for `--change-name=N:<label>`: it takes the
/// text up to the next `:` (gptcl.cc `GetString(partName, 2)`), then converts
/// UTF-8 to UTF-16 and keeps at most 36 code units, never half a surrogate
/// pair (gptpart.cc `GPTPart::SetName`).
pub fn sgdisk_stored_name(label: &str) -> String {
    let taken = label.split(':').next().unwrap_or_default();
    let mut units = 0;
    let mut stored = String::new();
    for c in taken.chars() {
        let needed = c.len_utf16();
        if units + needed > GPT_NAME_UNITS {
            break;
        }
        units += needed;
        stored.push(c);
    }
    stored
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

    #[test]
    fn udev_encodes_like_libblkid() {
        // What `blkid -p -o udev` printed for names sgdisk 1.0.9 wrote (tests/geometry_sgdisk.rs).
        for (name, encoded) in [
            ("disk-main-root", "disk-main-root"),
            ("a,b", "a\\x2cb"),
            ("a/b", "a\\x2fb"),
            ("a b", "a\\x20b"),
            ("données", "données"),
            ("x\\y", "x\\x5cy"),
            ("tab\tx", "tab\\x09x"),
            ("emoji😀", "emoji😀"),
            ("caret^q", "caret\\x5eq"),
            ("q\"uo", "q\\x22uo"),
            ("#+-.:=@_", "#+-.:=@_"),
            ("\u{fdf0}", "\u{fdf0}"),
            ("\u{fdd0}", "\\xef\\xb7\\x90"),
        ] {
            assert_eq!(udev_encode(name), encoded, "{name:?}");
        }
        assert_eq!(udev_partlabel_path("a b"), "/dev/disk/by-partlabel/a\\x20b");
    }

    #[test]
    fn disko_escapes_differently() {
        // nix-instantiate of disko 878ec37's hexEscapeUdevSymlink "a,b/c d^\t".
        assert_eq!(
            disko_hex_escape("a,b/c d^\t").as_deref(),
            Ok("a,b/c\\x20d\\x5E\\x9")
        );
        assert_eq!(
            disko_hex_escape("disk-main-root").as_deref(),
            Ok("disk-main-root")
        );
        assert_eq!(disko_hex_escape("données"), Err(0xc3));
    }

    #[test]
    fn sgdisk_cuts_names() {
        assert_eq!(sgdisk_stored_name("a:b"), "a");
        assert_eq!(sgdisk_stored_name("#+-.:=@_"), "#+-.");
        assert_eq!(sgdisk_stored_name(&"a".repeat(40)), "a".repeat(36));
        // Two UTF-16 units each: 18 fill the 36 units; a pair is never split.
        assert_eq!(sgdisk_stored_name(&"😀".repeat(20)), "😀".repeat(18));
        assert_eq!(
            sgdisk_stored_name(&format!("{}😀", "a".repeat(35))),
            "a".repeat(35)
        );
    }
}
