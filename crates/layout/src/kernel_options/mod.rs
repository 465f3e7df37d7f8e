//! Which mount options the kernel, mount(8) and systemd accept, per
//! filesystem, and what happens to the others.
//!
//! mount(8) (libmount) turns the VFS flags (`ro`, `noatime`, `nodev`, …) into
//! mount flags, drops what only userspace reads (`nofail`, `noauto`, `x-*`,
//! `X-*`, `_netdev`, `comment=`), and hands every other option to the
//! filesystem. The filesystem refuses what it does not know, and the mount
//! fails with EINVAL: for `/` and the other initrd mounts the machine does
//! not boot; for a later mount, local-fs.target fails and systemd drops to
//! emergency mode. disko mounts with the same options during the install,
//! so the install stops there first.
//!
//! The tables follow the kernels a NixOS 25.11–26.05 host boots (6.12 and
//! 6.18, the long-term kernels of those releases) and the lab VM's Debian
//! 6.1; where an option came or went in that range, the spec says which
//! kernel refuses it. Sources:
//! - Btrfs: btrfs(5) (btrfs-progs Documentation/ch-mount-options.rst) and
//!   fs/btrfs/super.c; every option was mounted on a real Btrfs on kernel
//!   6.18.44 (`mount -o loop,<option>`), which refuses unknown options on
//!   every mount since the new mount API (6.8); older kernels refuse them on
//!   the filesystem's first mount.
//! - vfat: Documentation/filesystems/vfat.rst and fs/fat/inode.c
//!   (`fat_param_spec`, `vfat_param_spec`; the same set as the match tables
//!   of 6.1). vfat is not in this machine's kernel, so these are read, not
//!   measured.
//! - ext4: Documentation/filesystems/ext4.rst, mounted on kernel 6.18.44.
//! - swap: swapon(8) (util-linux sys-utils/swapon.c `parse_options` reads
//!   `nofail`, `discard[=…]` and `pri=`, and ignores the rest) and
//!   systemd.swap(5).

use std::collections::HashMap;
use std::sync::OnceLock;

use serde::Serialize;

/// Whom a mount option belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Belongs to each mount (VFS flags).
    PerMount,
    /// Belongs to the filesystem: the first mount decides.
    FilesystemWide,
    /// Picks the subvolume (`subvol=`, `subvolid=`).
    Selector,
    /// Read by mount(8) or systemd, never by the kernel (`nofail`, `x-systemd.*`).
    Userspace,
    /// Not an option the filesystem accepts: the mount fails (MOUNT001), so
    /// it is in effect nowhere.
    Unknown,
}

/// A filesystem whose options this module knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filesystem {
    Btrfs,
    Vfat,
    Ext4,
    Swap,
    /// Anything else: its options are not judged.
    Other,
}

impl Filesystem {
    pub fn of(fs_type: &str) -> Filesystem {
        match fs_type {
            "btrfs" => Filesystem::Btrfs,
            "vfat" => Filesystem::Vfat,
            "ext4" => Filesystem::Ext4,
            "swap" => Filesystem::Swap,
            _ => Filesystem::Other,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Filesystem::Btrfs => "btrfs",
            Filesystem::Vfat => "vfat",
            Filesystem::Ext4 => "ext4",
            Filesystem::Swap => "swap",
            Filesystem::Other => "this filesystem",
        }
    }

    /// Where the list of its options is documented, for hints.
    pub fn documentation(self) -> &'static str {
        match self {
            Filesystem::Btrfs => "btrfs(5), MOUNT OPTIONS",
            Filesystem::Vfat => "the kernel's Documentation/filesystems/vfat.rst",
            Filesystem::Ext4 => "the kernel's Documentation/filesystems/ext4.rst",
            Filesystem::Swap => "swapon(8) and systemd.swap(5)",
            Filesystem::Other => "mount(8)",
        }
    }
}

/// What an option's value must look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value {
    /// Any non-empty text.
    Text,
    /// A decimal number.
    Unsigned,
    /// A decimal number in a range.
    Range(i64, i64),
    /// An octal number (`0177`).
    Octal,
    /// `0`/`1`, `no`/`yes`, `false`/`true`.
    Bool,
    OneOf(&'static [&'static str]),
    /// A byte count with an optional K, M or G (the kernel's `memparse`).
    Size,
    /// A power of two, or 0 (ext4's inode_readahead_blks).
    PowerOfTwo,
    /// `alg[:level]`: BTRFS009 judges it.
    Compression,
    /// btrfs `rescue=a:b:…`.
    Rescue,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// `name` only.
    Flag,
    /// `name` or `name=value`.
    Optional(Value),
    /// `name=value` only.
    Required(Value),
}

#[derive(Debug, Clone, Copy)]
pub struct Spec {
    pub name: &'static str,
    pub form: Form,
    pub scope: Scope,
    /// Why the kernels this tool follows refuse the option, if they do.
    pub refused: Option<&'static str>,
    /// The kernel refuses it on a read-write mount.
    pub needs_read_only: bool,
}

mod compression;
mod mountinfo;
mod reading;
mod tables;

pub use compression::{compress_value, judge_compression, Compression};
pub use mountinfo::{kernel_forms, vfat_modes};
pub use reading::{read, Reading};

use tables::{specific, GENERIC, RESCUE};

/// `x-systemd.automount`, `x-initrd.mount`, `X-mount.mkdir`: read by
/// systemd, NixOS or mount(8) and never passed to the kernel.
pub fn is_userspace_extension(name: &str) -> bool {
    name.starts_with("x-") || name.starts_with("X-")
}

/// The option's name: `compress` for `compress=zstd:1`.
pub fn key(option: &str) -> &str {
    option.split_once('=').map_or(option, |(k, _)| k)
}

/// What happens to one mount option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The kernel, mount(8) or systemd takes it.
    Accepted(Scope),
    /// Nothing knows it: the kernel refuses the mount (for swap: swapon ignores it).
    Unknown { suggestion: Option<String> },
    /// Known, but the value is refused.
    BadValue { reason: String },
    /// Known to older kernels only, or only to special builds.
    Refused { reason: &'static str },
    /// Accepted on a read-only mount only.
    NeedsReadOnly,
    /// The filesystem is not one this module knows.
    NotJudged,
}

/// The spec of `name` for `fs`: the filesystem's own first, then the generic
/// ones (swap has none). Looked up in a table built once: `check` judges every
/// option of every mount, and layouts may have 100 000 mounts.
fn find(fs: Filesystem, name: &str) -> Option<&'static Spec> {
    static TABLE: OnceLock<HashMap<(u8, &'static str), &'static Spec>> = OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut table = HashMap::new();
        for fs in [
            Filesystem::Btrfs,
            Filesystem::Vfat,
            Filesystem::Ext4,
            Filesystem::Swap,
        ] {
            let generic = if fs == Filesystem::Swap {
                &[][..]
            } else {
                GENERIC
            };
            for spec in specific(fs).iter().chain(generic) {
                table.entry((fs as u8, spec.name)).or_insert(spec);
            }
        }
        table
    });
    table.get(&(fs as u8, name)).copied()
}

/// Judges `option` on a mount of `fs` whose whole option list is `all`.
pub fn judge(fs: Filesystem, option: &str, all: &[String]) -> Verdict {
    if fs == Filesystem::Other {
        return Verdict::NotJudged;
    }
    let (name, value) = match option.split_once('=') {
        Some((name, value)) => (name, Some(value)),
        None => (option, None),
    };
    if is_userspace_extension(name) {
        return Verdict::Accepted(Scope::Userspace);
    }
    let Some(spec) = find(fs, name) else {
        return Verdict::Unknown {
            suggestion: suggestion(fs, name),
        };
    };
    if let Some(reason) = spec.refused {
        return Verdict::Refused { reason };
    }
    if let Err(reason) = check_form(spec, value) {
        return Verdict::BadValue { reason };
    }
    let read_only = all.iter().rev().find_map(|o| match o.as_str() {
        "ro" => Some(true),
        "rw" => Some(false),
        _ => None,
    }) == Some(true);
    let needs_ro = spec.needs_read_only
        || (spec.name == "rescue"
            && value.is_some_and(|v| v.split(':').any(|mode| mode != "usebackuproot")));
    if needs_ro && !read_only {
        return Verdict::NeedsReadOnly;
    }
    Verdict::Accepted(spec.scope)
}

fn check_form(spec: &Spec, value: Option<&str>) -> Result<(), String> {
    match (spec.form, value) {
        (Form::Flag, None) | (Form::Optional(_), None) => Ok(()),
        (Form::Flag, Some(_)) => Err(format!("`{}` takes no value", spec.name)),
        (Form::Required(_), None) => Err(format!("`{}` needs a value", spec.name)),
        (Form::Optional(kind) | Form::Required(kind), Some(value)) => check_value(kind, value),
    }
}

fn check_value(kind: Value, value: &str) -> Result<(), String> {
    let digits = |v: &str| !v.is_empty() && v.chars().all(|c| c.is_ascii_digit());
    match kind {
        Value::Text if !value.is_empty() => Ok(()),
        Value::Text => Err("the value is empty".to_owned()),
        Value::Unsigned if digits(value) => Ok(()),
        Value::Unsigned => Err(format!("{value:?} is not a decimal number")),
        Value::Range(min, max) => match value.parse::<i64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(()),
            _ => Err(format!("{value:?} is not a number from {min} to {max}")),
        },
        Value::Octal if !value.is_empty() && value.chars().all(|c| ('0'..='7').contains(&c)) => {
            Ok(())
        }
        Value::Octal => Err(format!("{value:?} is not an octal number such as 0077")),
        Value::Bool if matches!(value, "0" | "1" | "no" | "yes" | "false" | "true") => Ok(()),
        Value::Bool => Err(format!(
            "{value:?} is not one of 0, 1, no, yes, false, true"
        )),
        Value::OneOf(choices) if choices.contains(&value) => Ok(()),
        Value::OneOf(choices) => Err(format!("{value:?} is not one of {}", choices.join(", "))),
        Value::Size => {
            let number = value.trim_end_matches(['k', 'K', 'm', 'M', 'g', 'G']);
            if digits(number) && value.len() - number.len() <= 1 {
                Ok(())
            } else {
                Err(format!("{value:?} is not a size such as 2048 or 4K"))
            }
        }
        Value::PowerOfTwo => match value.parse::<u64>() {
            Ok(n) if n == 0 || (n.is_power_of_two() && n < 1 << 31) => Ok(()),
            _ => Err(format!("{value:?} is not 0 or a power of two below 2^31")),
        },
        // The algorithm before the level; an unknown one is -EINVAL (the
        // kernel refuses the mount). A level out of range is clamped, not
        // refused: BTRFS009 says so.
        Value::Compression => {
            let algorithm = value.split(':').next().unwrap_or("");
            if ["zlib", "lzo", "zstd", "no", "none"].contains(&algorithm) {
                Ok(())
            } else {
                Err(format!(
                    "{algorithm:?} is not a compression Btrfs knows (zlib, lzo, zstd, no)"
                ))
            }
        }
        Value::Rescue => {
            let bad: Vec<&str> = value
                .split(':')
                .filter(|mode| !RESCUE.contains(mode))
                .collect();
            if bad.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "{} {} not a rescue mode ({})",
                    bad.join(", "),
                    if bad.len() == 1 { "is" } else { "are" },
                    RESCUE.join(", ")
                ))
            }
        }
    }
}

/// The known option closest to a typo, written as it would be used.
fn suggestion(fs: Filesystem, name: &str) -> Option<String> {
    let generic = if fs == Filesystem::Swap {
        &[][..]
    } else {
        GENERIC
    };
    let lowered = name.to_ascii_lowercase();
    specific(fs)
        .iter()
        .chain(generic)
        .filter(|spec| spec.refused.is_none())
        .map(|spec| (strsim::levenshtein(&lowered, spec.name), spec))
        .filter(|(distance, spec)| *distance <= 2 && *distance < spec.name.len().max(2) - 1)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, spec)| match spec.form {
            Form::Required(_) => format!("{}=", spec.name),
            _ => spec.name.to_owned(),
        })
}

/// The scope of a known option of `fs`, `None` when the filesystem refuses it.
pub fn scope(fs: Filesystem, option: &str) -> Option<Scope> {
    match judge(fs, option, &[]) {
        Verdict::Accepted(scope) => Some(scope),
        // rescue= and norecovery are known; that they need ro is judged elsewhere.
        Verdict::NeedsReadOnly => Some(Scope::FilesystemWide),
        _ => None,
    }
}

/// The scope of a Btrfs mount option; `Unknown` for one Btrfs refuses.
pub fn btrfs_scope(option: &str) -> Scope {
    scope(Filesystem::Btrfs, option).unwrap_or(Scope::Unknown)
}

/// The Btrfs setting a filesystem-wide option decides, so that `ssd` and
/// `nossd`, `datacow` and `nodatacow`, `compress` and `compress-force`
/// compare as one setting; other options are their own setting.
pub fn btrfs_setting(option: &str) -> String {
    let name = key(option);
    match name {
        "nodatacow" | "datacow" => "datacow",
        "nodatasum" | "datasum" => "datasum",
        "clear_cache" => "space_cache",
        "compress" | "compress-force" => "compress",
        other => reading::setting(Filesystem::Btrfs, other).unwrap_or(other),
    }
    .to_owned()
}

/// Whether Btrfs options (in effect) leave data copy-on-write off, so compression cannot apply.
pub fn has_nodatacow(options: &[String]) -> bool {
    read(Filesystem::Btrfs, options).nocow_option().is_some()
}

/// The compression in effect, `zstd:1`, if any: the first `compress=` or
/// `compress-force=` of options in effect (which hold one of each setting).
pub fn compression(options: &[String]) -> Option<String> {
    options
        .iter()
        .find_map(|o| compress_value(o).map(str::to_owned))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_and_settings() {
        assert_eq!(btrfs_scope("noatime"), Scope::PerMount);
        assert_eq!(btrfs_scope("compress=zstd:3"), Scope::FilesystemWide);
        assert_eq!(btrfs_scope("nodatacow"), Scope::FilesystemWide);
        assert_eq!(btrfs_scope("discard=async"), Scope::FilesystemWide);
        assert_eq!(btrfs_scope("subvol=@nix"), Scope::Selector);
        assert_eq!(btrfs_scope("x-systemd.automount"), Scope::Userspace);
        assert_eq!(btrfs_scope("nofail"), Scope::Userspace);
        // An unknown option is not a filesystem-wide setting: the kernel refuses it.
        assert_eq!(btrfs_scope("noatimex"), Scope::Unknown);
        assert_eq!(btrfs_scope("fmask=0177"), Scope::Unknown);
        assert_eq!(btrfs_scope("inode_cache"), Scope::Unknown);
        assert_eq!(btrfs_setting("nossd"), btrfs_setting("ssd"));
        assert_eq!(btrfs_setting("ssd_spread"), "ssd");
        assert_eq!(btrfs_setting("compress-force=zstd"), "compress");
        assert_eq!(btrfs_setting("nodatacow"), btrfs_setting("datacow"));
        assert_eq!(btrfs_setting("clear_cache"), "space_cache");
        assert_eq!(btrfs_setting("nospace_cache"), "space_cache");
        assert_eq!(btrfs_setting("commit=30"), "commit");
        assert_eq!(btrfs_setting("max_inline=2048"), "max_inline");
    }

    #[test]
    fn compression_and_nocow_in_effect() {
        let options: Vec<String> = ["noatime", "compress=zstd:1"].map(String::from).to_vec();
        assert_eq!(compression(&options).as_deref(), Some("zstd:1"));
        assert!(!has_nodatacow(&options));
        assert!(has_nodatacow(&["nodatacow".to_owned()]));
        assert!(has_nodatacow(&["nodatasum".to_owned()]));
        let forced: Vec<String> = ["compress-force=lzo".to_owned()].to_vec();
        assert_eq!(compression(&forced).as_deref(), Some("lzo"));
    }

    fn verdict(fs: Filesystem, option: &str) -> Verdict {
        judge(fs, option, &[])
    }

    #[test]
    fn the_hosts_options_are_accepted() {
        for option in [
            "compress=zstd:1",
            "noatime",
            "ssd",
            "space_cache=v2",
            "discard=async",
            "subvolid=5",
            "subvol=@nix",
            "x-initrd.mount",
            "x-systemd.automount",
            "X-mount.mkdir",
            "nofail",
            "defaults",
        ] {
            assert!(
                matches!(verdict(Filesystem::Btrfs, option), Verdict::Accepted(_)),
                "{option}"
            );
        }
        for option in ["fmask=0177", "dmask=0077", "umask=077", "utf8", "utf8=1"] {
            assert!(
                matches!(verdict(Filesystem::Vfat, option), Verdict::Accepted(_)),
                "{option}"
            );
        }
    }

    #[test]
    fn typos_get_a_suggestion() {
        assert_eq!(
            verdict(Filesystem::Vfat, "fmsk=0177"),
            Verdict::Unknown {
                suggestion: Some("fmask=".to_owned())
            }
        );
        assert_eq!(
            verdict(Filesystem::Btrfs, "noatimex"),
            Verdict::Unknown {
                suggestion: Some("noatime".to_owned())
            }
        );
        assert_eq!(
            verdict(Filesystem::Btrfs, "completely-different"),
            Verdict::Unknown { suggestion: None }
        );
        // A Btrfs option on vfat is unknown there.
        assert!(matches!(
            verdict(Filesystem::Vfat, "compress=zstd:1"),
            Verdict::Unknown { .. }
        ));
    }

    #[test]
    fn values_are_checked() {
        for (fs, option) in [
            (Filesystem::Btrfs, "discard=bogus"),
            (Filesystem::Btrfs, "commit=abc"),
            (Filesystem::Btrfs, "ssd=1"),
            (Filesystem::Btrfs, "space_cache=v3"),
            (Filesystem::Btrfs, "thread_pool=0"),
            (Filesystem::Btrfs, "subvolid=abc"),
            (Filesystem::Btrfs, "noatime=1"),
            (Filesystem::Vfat, "fmask=0x7f"),
            (Filesystem::Vfat, "umask=0999"),
            (Filesystem::Vfat, "errors=bogus"),
            (Filesystem::Ext4, "data=bogus"),
            (Filesystem::Ext4, "journal_ioprio=9"),
            (Filesystem::Ext4, "inode_readahead_blks=3"),
        ] {
            assert!(
                matches!(verdict(fs, option), Verdict::BadValue { .. }),
                "{option}: {:?}",
                verdict(fs, option)
            );
        }
    }

    #[test]
    fn removed_and_read_only_options() {
        for option in [
            "inode_cache",
            "nologreplay",
            "recovery",
            "check_int",
            "fragment=data",
        ] {
            assert!(
                matches!(verdict(Filesystem::Btrfs, option), Verdict::Refused { .. }),
                "{option}"
            );
        }
        assert_eq!(
            verdict(Filesystem::Btrfs, "norecovery"),
            Verdict::NeedsReadOnly
        );
        assert_eq!(
            verdict(Filesystem::Btrfs, "rescue=all"),
            Verdict::NeedsReadOnly
        );
        assert!(matches!(
            judge(
                Filesystem::Btrfs,
                "rescue=all",
                &["ro".into(), "rescue=all".into()]
            ),
            Verdict::Accepted(_)
        ));
        assert!(matches!(
            verdict(Filesystem::Btrfs, "rescue=usebackuproot"),
            Verdict::Accepted(_)
        ));
    }

    #[test]
    fn swap_options() {
        assert!(matches!(
            verdict(Filesystem::Swap, "pri=5"),
            Verdict::Accepted(_)
        ));
        assert!(matches!(
            verdict(Filesystem::Swap, "discard=pages"),
            Verdict::Accepted(_)
        ));
        assert!(matches!(
            verdict(Filesystem::Swap, "noatime"),
            Verdict::Unknown { .. }
        ));
        assert_eq!(verdict(Filesystem::Other, "anything"), Verdict::NotJudged);
    }
}
