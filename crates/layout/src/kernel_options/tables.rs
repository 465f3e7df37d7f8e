//! The options each filesystem accepts, as the kernels this tool follows
//! accept them (the sources are named in the module above).

use super::{Filesystem, Form, Scope, Spec, Value};

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
pub(super) const GENERIC: &[Spec] = &[
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

pub(super) const RESCUE: &[&str] = &[
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

pub(super) fn specific(fs: Filesystem) -> &'static [Spec] {
    match fs {
        Filesystem::Btrfs => BTRFS,
        Filesystem::Vfat => VFAT,
        Filesystem::Ext4 => EXT4,
        Filesystem::Swap => SWAP,
        Filesystem::Other => &[],
    }
}
