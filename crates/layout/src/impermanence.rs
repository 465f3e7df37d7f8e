//! The names the impermanence design gives the layout: the subvolume wiped
//! at every boot, where old roots go, what persists, and what the initrd
//! must mount. `rules::impermanence` holds layouts to them; vm-test and the
//! checklist use them.

/// The rollback module's defaults (nix/modules/btrfs-rollback).
pub const ROOT_SUBVOLUME: &str = "@root";
pub const OLD_ROOTS_SUBVOLUME: &str = "@old_roots";
pub const PERSIST_SUBVOLUME: &str = "@persist";
pub const PERSIST_MOUNTPOINT: &str = "/persist";
pub const MANAGEMENT_MOUNTPOINT: &str = "/btrfs_tmp";
/// Mounts that must be up in the initrd: impermanence's storage, the journal, the store.
pub const NEEDED_FOR_BOOT: &[&str] = &["/persist", "/var/log", "/nix"];
