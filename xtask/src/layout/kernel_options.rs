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

use super::mount_options::Scope;

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

const fn spec(name: &'static str, form: Form, scope: Scope) -> Spec {
    Spec {
        name,
        form,
        scope,
        refused: None,
        needs_read_only: false,
    }
}

const fn flag(name: &'static str, scope: Scope) -> Spec {
    spec(name, Form::Flag, scope)
}

const fn valued(name: &'static str, value: Value, scope: Scope) -> Spec {
    spec(name, Form::Required(value), scope)
}

const fn removed(name: &'static str, form: Form, why: &'static str) -> Spec {
    Spec {
        name,
        form,
        scope: Scope::FilesystemWide,
        refused: Some(why),
        needs_read_only: false,
    }
}

const fn read_only(spec: Spec) -> Spec {
    Spec {
        needs_read_only: true,
        ..spec
    }
}

use Scope::{FilesystemWide as Fs, PerMount as Vfs, Selector, Userspace as User};

/// Options mount(8) and systemd handle for every filesystem (mount(8),
/// FILESYSTEM-INDEPENDENT MOUNT OPTIONS; systemd.mount(5), FSTAB).
const GENERIC: &[Spec] = &[
    flag("defaults", User),
    flag("ro", Vfs),
    flag("rw", Vfs),
    flag("suid", Vfs),
    flag("nosuid", Vfs),
    flag("dev", Vfs),
    flag("nodev", Vfs),
    flag("exec", Vfs),
    flag("noexec", Vfs),
    flag("sync", Vfs),
    flag("async", Vfs),
    flag("dirsync", Vfs),
    flag("mand", Vfs),
    flag("nomand", Vfs),
    flag("atime", Vfs),
    flag("noatime", Vfs),
    flag("diratime", Vfs),
    flag("nodiratime", Vfs),
    flag("relatime", Vfs),
    flag("norelatime", Vfs),
    flag("strictatime", Vfs),
    flag("nostrictatime", Vfs),
    flag("lazytime", Vfs),
    flag("nolazytime", Vfs),
    flag("iversion", Vfs),
    flag("noiversion", Vfs),
    flag("symfollow", Vfs),
    flag("nosymfollow", Vfs),
    flag("silent", Vfs),
    flag("loud", Vfs),
    flag("auto", User),
    flag("noauto", User),
    flag("nofail", User),
    flag("_netdev", User),
    flag("user", User),
    flag("nouser", User),
    flag("users", User),
    flag("owner", User),
    flag("group", User),
    valued("comment", Value::Text, User),
    spec("loop", Form::Optional(Value::Text), User),
    valued("offset", Value::Unsigned, User),
    valued("sizelimit", Value::Unsigned, User),
    // Security-module labels; the kernel passes them to SELinux.
    valued("context", Value::Text, Vfs),
    valued("fscontext", Value::Text, Vfs),
    valued("defcontext", Value::Text, Vfs),
    valued("rootcontext", Value::Text, Vfs),
];

/// btrfs(5), MOUNT OPTIONS, as kernel 6.18.44 accepted them.
const BTRFS: &[Spec] = &[
    flag("acl", Fs),
    flag("noacl", Fs),
    flag("autodefrag", Fs),
    flag("noautodefrag", Fs),
    flag("barrier", Fs),
    flag("nobarrier", Fs),
    flag("clear_cache", Fs),
    valued("commit", Value::Unsigned, Fs),
    spec("compress", Form::Optional(Value::Compression), Fs),
    spec("compress-force", Form::Optional(Value::Compression), Fs),
    flag("datacow", Fs),
    flag("nodatacow", Fs),
    flag("datasum", Fs),
    flag("nodatasum", Fs),
    flag("degraded", Fs),
    valued("device", Value::Text, Fs),
    spec(
        "discard",
        Form::Optional(Value::OneOf(&["sync", "async"])),
        Fs,
    ),
    flag("nodiscard", Fs),
    flag("enospc_debug", Fs),
    flag("noenospc_debug", Fs),
    valued("fatal_errors", Value::OneOf(&["bug", "panic"]), Fs),
    flag("flushoncommit", Fs),
    flag("noflushoncommit", Fs),
    valued("max_inline", Value::Size, Fs),
    valued("metadata_ratio", Value::Unsigned, Fs),
    read_only(flag("norecovery", Fs)),
    valued("rescue", Value::Rescue, Fs),
    flag("rescan_uuid_tree", Fs),
    flag("skip_balance", Fs),
    spec(
        "space_cache",
        Form::Optional(Value::OneOf(&["v1", "v2"])),
        Fs,
    ),
    flag("nospace_cache", Fs),
    flag("ssd", Fs),
    flag("ssd_spread", Fs),
    flag("nossd", Fs),
    flag("nossd_spread", Fs),
    valued("subvol", Value::Text, Selector),
    valued("subvolid", Value::Unsigned, Selector),
    valued("thread_pool", Value::Range(1, u32::MAX as i64), Fs),
    flag("treelog", Fs),
    flag("notreelog", Fs),
    flag("usebackuproot", Fs),
    flag("user_subvol_rm_allowed", Fs),
    removed(
        "nologreplay",
        Form::Flag,
        "kernel 6.18 refuses it (\"Unknown parameter\"); use rescue=nologreplay with ro",
    ),
    removed(
        "recovery",
        Form::Flag,
        "deprecated since 4.5 and refused by kernel 6.18; use rescue=usebackuproot",
    ),
    removed(
        "inode_cache",
        Form::Flag,
        "the feature was removed in 5.11 and kernel 6.18 refuses the option",
    ),
    removed(
        "noinode_cache",
        Form::Flag,
        "the feature was removed in 5.11 and kernel 6.18 refuses the option",
    ),
    removed("check_int", Form::Flag, "removed in kernel 6.7"),
    removed("check_int_data", Form::Flag, "removed in kernel 6.7"),
    removed(
        "check_int_print_mask",
        Form::Required(Value::Unsigned),
        "removed in kernel 6.7",
    ),
    removed(
        "fragment",
        Form::Required(Value::OneOf(&["data", "metadata", "all"])),
        "only kernels built with CONFIG_BTRFS_DEBUG know it, and NixOS's and Debian's are not",
    ),
    removed(
        "alloc_start",
        Form::Required(Value::Text),
        "obsolete; kernel 6.18 refuses it",
    ),
    removed(
        "subvolrootid",
        Form::Required(Value::Text),
        "obsolete; kernel 6.18 refuses it",
    ),
];

const RESCUE: &[&str] = &[
    "usebackuproot",
    "nologreplay",
    "ignorebadroots",
    "ibadroots",
    "ignoredatacsums",
    "idatacsums",
    "ignoremetacsums",
    "imetacsums",
    "ignoresuperflags",
    "isuperflags",
    "all",
];

/// fs/fat/inode.c (`fat_param_spec` and `vfat_param_spec`).
const VFAT: &[Spec] = &[
    valued(
        "check",
        Value::OneOf(&["relaxed", "r", "strict", "s", "normal", "n"]),
        Fs,
    ),
    valued("uid", Value::Unsigned, Fs),
    valued("gid", Value::Unsigned, Fs),
    valued("umask", Value::Octal, Fs),
    valued("dmask", Value::Octal, Fs),
    valued("fmask", Value::Octal, Fs),
    valued("allow_utime", Value::Octal, Fs),
    valued("codepage", Value::Unsigned, Fs),
    flag("usefree", Fs),
    flag("nocase", Fs),
    flag("quiet", Fs),
    flag("showexec", Fs),
    flag("debug", Fs),
    flag("sys_immutable", Fs),
    flag("flush", Fs),
    valued("tz", Value::OneOf(&["UTC"]), Fs),
    valued("time_offset", Value::Range(-24 * 60, 24 * 60), Fs),
    valued(
        "errors",
        Value::OneOf(&["continue", "panic", "remount-ro"]),
        Fs,
    ),
    flag("discard", Fs),
    spec(
        "nfs",
        Form::Optional(Value::OneOf(&["stale_rw", "nostale_ro"])),
        Fs,
    ),
    flag("dos1xfloppy", Fs),
    // Obsolete, accepted and ignored.
    valued(
        "conv",
        Value::OneOf(&["binary", "text", "auto", "b", "t", "a"]),
        Fs,
    ),
    valued("fat", Value::Unsigned, Fs),
    valued("blocksize", Value::Unsigned, Fs),
    valued("cvf_format", Value::Text, Fs),
    valued("cvf_options", Value::Text, Fs),
    flag("posix", Fs),
    // vfat only.
    valued("iocharset", Value::Text, Fs),
    valued(
        "shortname",
        Value::OneOf(&["lower", "win95", "winnt", "mixed"]),
        Fs,
    ),
    spec("utf8", Form::Optional(Value::Bool), Fs),
    spec("uni_xlate", Form::Optional(Value::Bool), Fs),
    spec("nonumtail", Form::Optional(Value::Bool), Fs),
    flag("rodir", Fs),
];

/// Documentation/filesystems/ext4.rst, as kernel 6.18.44 accepted them.
const EXT4: &[Spec] = &[
    flag("journal_checksum", Fs),
    flag("nojournal_checksum", Fs),
    flag("journal_async_commit", Fs),
    valued("journal_path", Value::Text, Fs),
    valued("journal_dev", Value::Unsigned, Fs),
    read_only(flag("norecovery", Fs)),
    read_only(flag("noload", Fs)),
    valued(
        "data",
        Value::OneOf(&["journal", "ordered", "writeback"]),
        Fs,
    ),
    valued("commit", Value::Unsigned, Fs),
    spec("barrier", Form::Optional(Value::Range(0, 1)), Fs),
    flag("nobarrier", Fs),
    valued("inode_readahead_blks", Value::PowerOfTwo, Fs),
    valued("stripe", Value::Unsigned, Fs),
    flag("delalloc", Fs),
    flag("nodelalloc", Fs),
    valued("max_batch_time", Value::Unsigned, Fs),
    valued("min_batch_time", Value::Unsigned, Fs),
    valued("journal_ioprio", Value::Range(0, 7), Fs),
    flag("abort", Fs),
    spec("auto_da_alloc", Form::Optional(Value::Range(0, 1)), Fs),
    flag("noauto_da_alloc", Fs),
    flag("noinit_itable", Fs),
    spec("init_itable", Form::Optional(Value::Unsigned), Fs),
    flag("discard", Fs),
    flag("nodiscard", Fs),
    valued("resgid", Value::Unsigned, Fs),
    valued("resuid", Value::Unsigned, Fs),
    valued("sb", Value::Unsigned, Fs),
    flag("quota", Fs),
    flag("noquota", Fs),
    flag("grpquota", Fs),
    flag("usrquota", Fs),
    flag("prjquota", Fs),
    valued("usrjquota", Value::Text, Fs),
    valued("grpjquota", Value::Text, Fs),
    valued("jqfmt", Value::OneOf(&["vfsold", "vfsv0", "vfsv1"]), Fs),
    flag("bsddf", Fs),
    flag("minixdf", Fs),
    flag("grpid", Fs),
    flag("bsdgroups", Fs),
    flag("nogrpid", Fs),
    flag("sysvgroups", Fs),
    flag("user_xattr", Fs),
    flag("acl", Fs),
    valued(
        "errors",
        Value::OneOf(&["remount-ro", "continue", "panic"]),
        Fs,
    ),
    valued("data_err", Value::OneOf(&["ignore", "abort"]), Fs),
    flag("i_version", Fs),
    spec(
        "dax",
        Form::Optional(Value::OneOf(&["always", "never", "inode"])),
        Fs,
    ),
    flag("nombcache", Fs),
    flag("no_mbcache", Fs),
    flag("prefetch_block_bitmaps", Fs),
    flag("no_prefetch_block_bitmaps", Fs),
    valued("mb_optimize_scan", Value::Range(0, 1), Fs),
    spec("test_dummy_encryption", Form::Optional(Value::Text), Fs),
    flag("inlinecrypt", Fs),
    flag("debug", Fs),
    flag("dioread_lock", Fs),
    flag("dioread_nolock", Fs),
    flag("nodioread_nolock", Fs),
    flag("nouid32", Fs),
    flag("block_validity", Fs),
    flag("noblock_validity", Fs),
    valued("debug_want_extra_isize", Value::Unsigned, Fs),
    flag("fc_debug_force", Fs),
    valued("fc_debug_max_replay", Value::Unsigned, Fs),
    // Removed features the kernel still accepts and ignores.
    flag("oldalloc", Fs),
    flag("orlov", Fs),
    flag("mblk_io_submit", Fs),
    flag("nomblk_io_submit", Fs),
    flag("nobh", Fs),
    flag("bh", Fs),
    flag("reservation", Fs),
    flag("noreservation", Fs),
    removed(
        "noacl",
        Form::Flag,
        "kernel 6.18 refuses it (\"Unknown parameter\")",
    ),
    removed(
        "nouser_xattr",
        Form::Flag,
        "kernel 6.18 refuses it (\"Unknown parameter\")",
    ),
];

/// What swapon(8) and systemd read from a swap entry's options.
const SWAP: &[Spec] = &[
    flag("defaults", User),
    flag("sw", User),
    flag("noauto", User),
    flag("nofail", User),
    valued("pri", Value::Range(-1, 32767), User),
    spec(
        "discard",
        Form::Optional(Value::OneOf(&["once", "pages"])),
        User,
    ),
];

fn specific(fs: Filesystem) -> &'static [Spec] {
    match fs {
        Filesystem::Btrfs => BTRFS,
        Filesystem::Vfat => VFAT,
        Filesystem::Ext4 => EXT4,
        Filesystem::Swap => SWAP,
        Filesystem::Other => &[],
    }
}

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
        Value::Compression => Ok(()),
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

#[cfg(test)]
mod tests {
    use super::*;

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
