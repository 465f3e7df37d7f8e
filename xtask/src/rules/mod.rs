//! The rules `check` applies to a layout. A rule is a small function from the
//! layout (with what is derived from it once: mounts, effective options,
//! geometry) to issues; it is registered in `RULES` with one code that never
//! changes meaning. Codes emitted while loading (Nix, model) are listed too,
//! so the catalogue in docs/reference/rules.md is complete.

pub mod btrfs;
pub mod devices;
pub mod esp;
pub mod host;
pub mod impermanence;
pub mod load;
pub mod mount;
mod mount_facts;
pub mod partitions;
pub mod shell;
pub mod swap;

use serde::Serialize;

pub use load::{load, load_subject, Loaded};

pub use crate::hosts::Model;
use layout::findings::{AttrPath, Finding, Severity};

/// What a rule found: the registry adds its code and severity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    pub path: AttrPath,
    pub message: String,
    pub hint: String,
}

impl Issue {
    pub fn new(path: AttrPath, message: impl Into<String>, hint: impl Into<String>) -> Self {
        Issue {
            path,
            message: message.into(),
            hint: hint.into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Nix,
    Model,
    Partitions,
    Esp,
    Swap,
    Btrfs,
    Impermanence,
    Devices,
    Mount,
    Shell,
    Host,
}

impl Family {
    pub fn title(self) -> &'static str {
        match self {
            Family::Nix => "Nix",
            Family::Model => "Model",
            Family::Partitions => "Partitions",
            Family::Esp => "EFI system partition",
            Family::Swap => "Swap",
            Family::Btrfs => "Btrfs",
            Family::Impermanence => "Impermanence",
            Family::Devices => "Devices",
            Family::Mount => "Mount options",
            Family::Shell => "disko's install script",
            Family::Host => "Host",
        }
    }
}

pub type Check = fn(&Model) -> Vec<Issue>;

pub struct Rule {
    pub code: &'static str,
    pub severity: Severity,
    pub family: Family,
    pub summary: &'static str,
    /// `None` for codes that loading emits (syntax, evaluation, model).
    pub check: Option<Check>,
    /// No longer reported; the code stays so that it never means anything else.
    pub retired: bool,
}

macro_rules! rule {
    ($code:literal, $severity:ident, $family:ident, $summary:literal) => {
        Rule {
            code: $code,
            severity: Severity::$severity,
            family: Family::$family,
            summary: $summary,
            check: None,
            retired: false,
        }
    };
    ($code:literal, $severity:ident, $family:ident, $summary:literal, retired) => {
        Rule {
            code: $code,
            severity: Severity::$severity,
            family: Family::$family,
            summary: $summary,
            check: None,
            retired: true,
        }
    };
    ($code:literal, $severity:ident, $family:ident, $summary:literal, $check:path) => {
        Rule {
            code: $code,
            severity: Severity::$severity,
            family: Family::$family,
            summary: $summary,
            check: Some($check),
            retired: false,
        }
    };
}

/// Every code, in the order the catalogue lists them.
pub const RULES: &[Rule] = &[
    rule!("NIX001", Error, Nix, "A .nix file of the repository does not parse."),
    rule!("NIX002", Error, Nix, "A host file check reads (disko.nix, persistence.nix, machine.nix, rollback.nix) does not evaluate (type error, infinite recursion, missing file, …)."),
    rule!("NIX003", Error, Nix, "A .nix file uses a variable that is not defined."),
    rule!("NIX004", Error, Nix, "The layout is a function of module arguments (lib, pkgs, config, …), which standalone mode cannot supply."),
    rule!("NIX005", Error, Nix, "The NixOS system (`nixosConfigurations.<attr>.config.system.build.toplevel`) does not evaluate with the flake's pinned inputs: a failed assertion, a type error, … (`--mode flake` only)."),
    rule!("MODEL001", Error, Model, "A value has the wrong type for disko's option, or a required option is missing."),
    rule!("MODEL002", Error, Model, "A content type is unknown, or is disko but not part of this layout."),
    rule!("MODEL003", Error, Model, "An attribute is not an option of its disko type (usually a typo)."),
    rule!("MODEL004", Error, Model, "The layout declares no disko.devices.disk."),
    rule!("MODEL005", Error, Model, "A string or attribute name of the evaluated config is not valid UTF-8."),
    rule!("MODEL007", Info, Model, "Not checked: a disko device kind beside the disks (nodev, lvm_vg, zpool, mdadm, …) that this tool does not model; reported, not failed."),
    rule!("MODEL006", Error, Model, "The evaluated config nests deeper than any disko option (more than 100 levels)."),
    rule!("PART001", Error, Partitions, "A partition size does not parse as a disko size.", partitions::size_parses),
    rule!("PART002", Error, Partitions, "The partitions do not fit on the disk.", partitions::fits_disk),
    rule!("PART003", Error, Partitions, "The disk holding / needs one partition of size \"100%\" (or one that ends at the disk's end), and no GPT disk may have two.", partitions::one_rest_partition),
    rule!("PART004", Error, Partitions, "A partition has size zero (disko's default when size is missing) and is not the last: it takes all the free space.", partitions::nonzero_size),
    rule!("PART005", Error, Partitions, "Two partitions share a GPT label, so /dev/disk/by-partlabel is ambiguous.", partitions::unique_labels),
    rule!("PART006", Error, Partitions, "BIOS boot needs an EF02 partition, first on the disk and at least 1 MiB.", partitions::bios_boot),
    rule!("PART007", Warning, Partitions, "A start or end form this tool does not place; the geometry is not predicted. The geometry now follows every form sgdisk reads; see PART012.", retired),
    rule!("PART008", Error, Partitions, "A disk declares more partitions than its GPT table holds (128).", partitions::table_entries),
    rule!("PART009", Error, Partitions, "A hybrid MBR entry that disko's commands get wrong: `sgdisk -h` without a device (efiGptPartitionFirst), or sfdisk given the GPT number as the MBR slot.", partitions::hybrid_mbr),
    rule!("PART010", Error, Partitions, "sgdisk cannot create a partition where its start and end put it (overlap, unreadable position, ignored command): the install stops.", partitions::sgdisk_refuses),
    rule!("PART011", Error, Partitions, "A partition is smaller than the smallest device its mkfs accepts, or outside the sizes the FAT type its extraArgs force (-F 12/16/32) can address.", partitions::content_fits),
    rule!("PART013", Error, Partitions, "extraArgs that mkfs.btrfs or mkfs.ext4 refuse in every version (a profile needing more devices, an unknown checksum or feature, a node or block size they cannot use): the install stops.", partitions::mkfs_arguments),
    rule!("PART014", Warning, Partitions, "A Btrfs -O feature only some mkfs.btrfs versions know: the install stops where the installer's btrfs-progs is older.", partitions::mkfs_arguments_version),
    rule!("PART012", Warning, Partitions, "A start or end that sgdisk reads only in part (it stops at the first character that is not a digit or unit).", partitions::geometry_predicted),
    rule!("ESP001", Error, Esp, "UEFI boot needs an EF00 partition.", esp::present),
    rule!("ESP002", Error, Esp, "The ESP must hold a vfat filesystem.", esp::vfat),
    rule!("ESP003", Error, Esp, "The ESP must be mounted at /boot (or /boot/efi).", esp::mounted),
    rule!("ESP004", Error, Esp, "The ESP must be mounted with restrictive permissions (fmask=0177 and dmask=0077, or umask=0077).", esp::permissions),
    rule!("ESP005", Warning, Esp, "The ESP is small for kernels and initrds of several generations.", esp::size),
    rule!("ESP006", Error, Esp, "The ESP cannot hold GRUB's files and two generations' kernels and initrds: the install or the first kernel update fails.", esp::minimum),
    rule!("SWAP001", Error, Swap, "Swap must use randomEncryption.", swap::encrypted),
    rule!("SWAP002", Error, Swap, "Randomly encrypted swap cannot be a resume device (no hibernation).", swap::no_resume_flag),
    rule!("SWAP003", Error, Swap, "boot.resumeDevice is set while swap is randomly encrypted.", swap::no_boot_resume),
    rule!("SWAP004", Error, Swap, "A Btrfs swap file (swap.<name>) is never encrypted: disko hands it to NixOS without randomEncryption.", swap::swapfiles_encrypted),
    rule!("SWAP005", Error, Swap, "A Btrfs swap file on a subvolume (or top level) without a mountpoint: disko's evaluation fails.", swap::swapfiles_mounted),
    rule!("SWAP006", Error, Swap, "A Btrfs swap file's path has a directory disko never creates: mkswapfile fails and the install stops.", swap::swapfile_directories),
    rule!("BTRFS001", Error, Btrfs, "Two filesystems or subvolumes share a mountpoint.", btrfs::unique_mountpoints),
    rule!("BTRFS002", Error, Btrfs, "A mountpoint is not a normalised absolute path.", btrfs::absolute_mountpoints),
    rule!("BTRFS003", Error, Btrfs, "Subvolume names are flat @names: no `/`, no `..`.", btrfs::flat_names),
    rule!("BTRFS004", Error, Btrfs, "A Btrfs mount's options (disko's subvol=, mountOptions, fileSystems options, read in order: the last selector wins) select two subvolumes the kernel refuses together, or one the filesystem does not have: the mount fails.", btrfs::no_selector_options),
    rule!("BTRFS012", Error, Btrfs, "A Btrfs mount's options (read in order: the last selector wins) mount another existing subvolume than the layout's: the install succeeds and mounts the wrong data.", btrfs::selector_mounts_elsewhere),
    rule!("BTRFS013", Error, Btrfs, "Two different devices (filesystems, nodev) share a mountpoint: disko defines its fileSystems device twice and the evaluation fails.", btrfs::mountpoint_devices_conflict),
    rule!("BTRFS014", Error, Btrfs, "A mountpoint is not an absolute path: disko's option type refuses it and the evaluation fails.", btrfs::mountpoints_absolute),
    rule!("BTRFS005", Error, Btrfs, "A Btrfs mount lacks a universal option (noatime, ssd, space_cache=v2, discard=async).", btrfs::universal_options),
    rule!("BTRFS006", Error, Btrfs, "A filesystem-wide option differs from the first mount's and would silently not apply.", btrfs::consistent_filesystem_options),
    rule!("BTRFS007", Error, Btrfs, "nodatacow or nodatasum after compress= on the mount that decides: data without checksums is never compressed.", btrfs::nocow_with_compress),
    rule!("BTRFS008", Warning, Btrfs, "nodatacow or nodatasum as a mount option applies to the whole filesystem or to nothing; use chattr +C.", btrfs::nocow_option),
    rule!("BTRFS009", Error, Btrfs, "A compress option names an unknown algorithm or level.", btrfs::compression_valid),
    rule!("BTRFS011", Warning, Btrfs, "A subvol=/subvolid= that a later one overrides (disko appends subvol=<name>): it does nothing.", btrfs::overridden_selectors),
    rule!("BTRFS010", Error, Btrfs, "space_cache=v1 (or a bare space_cache) or nospace_cache: mkfs.btrfs creates the free-space tree (v2), so the kernel refuses the mount.", btrfs::space_cache_v1),
    rule!("IMP001", Error, Impermanence, "/ must be the root subvolume (@root) of a Btrfs filesystem.", impermanence::root_is_subvolume),
    rule!("IMP002", Error, Impermanence, "@persist must be a top-level subvolume at /persist; nothing that must survive may be nested in @root.", impermanence::persist_survives),
    rule!("IMP003", Error, Impermanence, "@old_roots must exist as a top-level subvolume on the root's filesystem.", impermanence::old_roots_exist),
    rule!("IMP004", Error, Impermanence, "/persist, /var/log and /nix must set neededForBoot.", impermanence::needed_for_boot),
    rule!("IMP005", Error, Impermanence, "/btrfs_tmp must mount the top level (subvolid=5) of the root's filesystem.", impermanence::management_mount),
    rule!("IMP006", Warning, Impermanence, "The top-level mount should say subvolid=5: the default subvolume can be changed.", impermanence::explicit_top_level),
    rule!("IMP007", Error, Impermanence, "A persistence root must be a mount with neededForBoot.", impermanence::storage_mounted_early),
    rule!("IMP008", Warning, Impermanence, "@old_roots is mounted; it is meant to be reached through /btrfs_tmp only.", impermanence::old_roots_unmounted),
    rule!("IMP009", Warning, Impermanence, "A persisted path is already on a persistent subvolume; the bind mount would hide it.", impermanence::persisted_on_wiped_root),
    rule!("IMP010", Error, Impermanence, "A persisted path is not a normalised absolute path outside the storage path.", impermanence::persisted_paths_valid),
    rule!("IMP011", Error, Impermanence, "rollback.nix names a root subvolume that is not the one mounted at /, or an old-roots subvolume that is mounted: the rollback would wipe or delete from the wrong subvolume."),
    rule!("DEV001", Error, Devices, "A device is not a plain /dev path, or a partition label is not a plain GPT name.", devices::plain_dev_paths),
    rule!("HOST001", Warning, Host, "machine.nix lists no SSH key for the admin user: the build refuses it, and nobody could log in. A warning, so that `check` passes on a fresh clone; the deploy checklist's `login` and `check` gates fail on it."),
    rule!("HOST002", Error, Host, "A partition's size differs from what machine.nix requires of the host (partitionSizes), or a required partition is missing."),
    rule!("HOST003", Warning, Host, "A partition deviates from partitionSizes on purpose (partitionSizeDeviations gives its reason), or a listed deviation no longer applies."),
    rule!("HOST004", Error, Host, "rollback.nix gives boot.btrfsRollback an option it does not have or a value of the wrong type."),
    rule!("HOST005", Error, Host, "machine.nix describes an IPv6-only server (publicIpv4 = false) without its ipv6Address: it would come up with no address, unreachable."),
    rule!("DEV002", Error, Devices, "A mountpoint or mount option has characters that fstab, systemd or a shell would interpret, or is longer than Linux allows.", devices::plain_mounts),
    rule!("DEV003", Error, Devices, "disko's /dev/disk/by-partlabel or by-partuuid path for a partition is not the link udev creates for its GPT name or GUID: mkfs fails at install.", devices::partlabel_links),
    rule!("DEV005", Error, Devices, "A partition label disko cannot escape for its /dev/disk/by-partlabel path (a byte nixpkgs' charToInt does not know) on a partition with content: the evaluation fails.", devices::labels_disko_escapes),
    rule!("DEV006", Error, Devices, "disko's /dev/disk/by-partlabel or by-partuuid path for a randomly encrypted swap partition is not the link udev creates: the install succeeds, and every boot waits for the device and runs without swap.", devices::partlabel_links_at_boot),
    rule!("DEV004", Error, Devices, "A disk with a partition table is a partition or mapped device itself: the kernel creates no partitions inside it, mkfs fails at install.", devices::whole_disks),
    rule!("MOUNT001", Error, Mount, "A mount option the filesystem does not know (or no longer accepts): the kernel refuses the mount.", mount::known_options),
    rule!("MOUNT002", Error, Mount, "A mount option with a value the filesystem refuses, or one it accepts only read-only: the kernel refuses the mount.", mount::option_values),
    rule!("MOUNT004", Error, Mount, "A fileSystems entry that nothing in the layout mounts names no device: NixOS cannot write its fstab line, and the system does not evaluate.", mount::file_systems_without_device),
    rule!("MOUNT003", Warning, Mount, "A swap option that swapon and systemd do not read: it does nothing.", mount::swap_options),
    rule!("SHELL001", Error, Shell, "A string disko pastes into its install script has shell metacharacters: it runs arbitrary commands during the install, or changes the command's arguments.", shell::metacharacters),
];

/// Where a real install stops: disko's evaluation, its create script (sgdisk,
/// mkfs, the swap file) or the mounts NixOS makes. The real-tool judge
/// (tests/fixtures/disko-corpus/record.sh) names one; check's prediction is
/// the error codes that [`install_stop`] places there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum InstallStop {
    Evaluation,
    Partitioning,
    Formatting,
    SwapFile,
    Mount,
}

/// Where an error of `code` says the real install stops; `None` for the codes
/// that judge this host's requirements (encryption, impermanence, the ESP's
/// permissions, the HOST family, shell safety): a layout can break them and
/// still install.
pub fn install_stop(code: &str) -> Option<InstallStop> {
    use InstallStop::*;
    Some(match code {
        "NIX001" | "NIX002" | "NIX003" | "NIX004" | "MODEL001" | "MODEL002" | "MODEL003"
        | "MODEL005" | "MODEL006" | "PART001" | "SWAP005" | "BTRFS013" | "BTRFS014"
        | "MOUNT004" | "DEV005" => Evaluation,
        "PART002" | "PART004" | "PART008" | "PART009" | "PART010" => Partitioning,
        "PART011" | "PART013" | "DEV003" | "DEV004" => Formatting,
        "SWAP006" => SwapFile,
        // Two partitions behind one by-partlabel link: both mkfs run on one of
        // them, and the other's mount finds the wrong filesystem.
        "PART005" | "BTRFS004" | "BTRFS010" | "MOUNT001" | "MOUNT002" => Mount,
        _ => return None,
    })
}

pub fn find(code: &str) -> Option<&'static Rule> {
    RULES.iter().find(|rule| rule.code == code)
}

/// Runs every rule on the layout.
pub fn run(model: &Model) -> Vec<Finding> {
    let mut findings = Vec::new();
    for rule in RULES {
        let Some(check) = rule.check else { continue };
        for issue in check(model) {
            findings.push(Finding::new(
                rule.code,
                rule.severity,
                issue.path,
                issue.message,
                issue.hint,
            ));
        }
    }
    findings
}

#[cfg(test)]
pub mod testing {
    use std::collections::BTreeMap;

    use serde_json::Value;

    use super::*;
    use crate::hosts::Firmware;
    use layout::testing::{host_evaluation, layout_of};

    pub const CPX52_BYTES: u64 = 480_000_000_000;

    /// Runs one rule on the repo's host after `edit` changed its evaluation.
    pub fn codes_after(edit: impl FnOnce(&mut Value)) -> Vec<&'static str> {
        findings_after(edit).iter().map(|f| f.code).collect()
    }

    pub fn findings_after(edit: impl FnOnce(&mut Value)) -> Vec<Finding> {
        let mut evaluation = host_evaluation();
        edit(&mut evaluation);
        let (layout, mut findings) = layout_of(&evaluation);
        if let Some(layout) = layout {
            let sizes = BTreeMap::from([("main".to_owned(), CPX52_BYTES)]);
            let model = Model::new(&layout, &sizes, Firmware::default());
            findings.extend(run(&model));
        }
        findings
    }

    /// The JSON of the root partition's Btrfs content.
    pub fn btrfs(evaluation: &mut Value) -> &mut Value {
        &mut evaluation["layout"]["disko"]["devices"]["disk"]["main"]["content"]["partitions"]
            ["root"]["content"]
    }

    pub fn subvolume<'a>(evaluation: &'a mut Value, name: &str) -> &'a mut Value {
        &mut btrfs(evaluation)["subvolumes"][name]
    }

    pub fn partition<'a>(evaluation: &'a mut Value, key: &str) -> &'a mut Value {
        &mut evaluation["layout"]["disko"]["devices"]["disk"]["main"]["content"]["partitions"][key]
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;

    #[test]
    fn the_repos_host_is_clean() {
        let findings = findings_after(|_| {});
        assert!(findings.is_empty(), "{findings:#?}");
    }

    #[test]
    fn codes_are_unique_and_well_formed() {
        let mut seen = std::collections::BTreeSet::new();
        for rule in RULES {
            assert!(seen.insert(rule.code), "duplicate code {}", rule.code);
            let digits = rule
                .code
                .trim_start_matches(|c: char| c.is_ascii_uppercase());
            assert_eq!(digits.len(), 3, "{}", rule.code);
            assert!(rule.summary.ends_with('.'), "{}", rule.code);
        }
    }
}
