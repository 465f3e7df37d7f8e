//! Rules about the host's own files beside the layout: machine.nix (the
//! machine's facts, among them the partition sizes required of the host) and
//! rollback.nix (the settings of the root rollback). `rules::load` runs them
//! with the layout, so `check` reports them and `vm-test` refuses what they
//! reject; they are not in the registry's per-layout pass because a layout
//! alone (`--disko`, the fuzzers) has no machine.nix.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::hosts::{Deviation, Host, Machine};
use crate::hosts::{Firmware, Model};
use layout::findings::{AttrPath, Finding, Location, Severity};
use layout::impermanence::{OLD_ROOTS_SUBVOLUME, ROOT_SUBVOLUME};
use layout::positions::Positions;
use layout::size::parse_partition_size;
use layout::{Content, Disk, Layout, Partition};
use toolbox::project::display_path;

/// What the host rules read besides the layout.
pub struct HostFiles<'a> {
    pub host: &'a Host,
    pub machine: &'a Machine,
    /// Where machine.nix writes each attribute.
    pub machine_positions: &'a Positions,
    /// rollback.nix, evaluated; `None` when the host has none.
    pub rollback: Option<&'a Value>,
    pub rollback_positions: &'a Positions,
}

/// Every host finding for the layout (`None` when it did not build: then
/// only the layout-independent rules run).
pub fn findings(layout: Option<&Layout>, files: &HostFiles) -> Vec<Finding> {
    let mut found = admin_keys(files);
    if let Some(layout) = layout {
        found.extend(partition_sizes(layout, files));
    }
    let settings = rollback_settings(files);
    // Which subvolumes they name is only asked of settings NixOS accepts.
    if let (Some(layout), true) = (layout, settings.is_empty()) {
        found.extend(rollback_subvolumes(layout, files));
    }
    found.extend(settings);
    found.extend(reachable(files));
    found
}

/// HOST005: an IPv6-only server (publicIpv4 = false) without its IPv6
/// address comes up with no address at all; it has no passwords, so only
/// the rescue system reaches it. network.nix asserts the same at build.
fn reachable(files: &HostFiles) -> Vec<Finding> {
    let machine = files.machine;
    if machine.public_ipv4 != Some(false) || machine.ipv6_address.is_some() {
        return Vec::new();
    }
    vec![Finding::new(
        "HOST005",
        Severity::Error,
        AttrPath::new(["ipv6Address"]),
        format!(
            "{}: publicIpv4 = false (an IPv6-only server) and ipv6Address = null: the server would come up with no address, and nobody could log in",
            machine_name(files)
        ),
        "Set ipv6Address to an address of the server's /64 from the Hetzner Cloud Console (Networking), e.g. \"2a01:4f8:c012:3456::1/64\"; or, if the server has a public IPv4, set publicIpv4 = true.",
    )
    .at(machine_location(files, &["ipv6Address"]))]
}

/// IMP011 (rules::impermanence::rollback_subvolumes) for the subvolumes
/// rollback.nix sets, or the module's defaults.
fn rollback_subvolumes(layout: &Layout, files: &HostFiles) -> Vec<Finding> {
    let Some(Value::Object(settings)) = files
        .rollback
        .and_then(|r| r.pointer("/boot/btrfsRollback"))
    else {
        return Vec::new();
    };
    let text = |name: &str, default: &'static str| match settings.get(name) {
        Some(Value::String(value)) => value.clone(),
        _ => default.to_owned(),
    };
    let base = AttrPath::new(["boot", "btrfsRollback"]);
    let issues = crate::rules::impermanence::rollback_subvolumes(
        layout,
        &text("rootSubvolume", ROOT_SUBVOLUME),
        &text("oldRootsSubvolume", OLD_ROOTS_SUBVOLUME),
        &base,
    );
    let file = files
        .host
        .rollback_file
        .as_deref()
        .map(display_path)
        .unwrap_or_else(|| "rollback.nix".to_owned());
    issues
        .into_iter()
        .map(|issue| {
            let at = files.rollback_positions.locate(&issue.path).or_else(|| {
                files.host.rollback_file.clone().map(|file| Location {
                    file,
                    line: 0,
                    column: 0,
                })
            });
            Finding::new(
                "IMP011",
                Severity::Error,
                issue.path,
                format!("{file}: {}", issue.message),
                issue.hint,
            )
            .at(at)
        })
        .collect()
}

fn machine_location(files: &HostFiles, path: &[&str]) -> Option<Location> {
    let located = files
        .machine_positions
        .locate(&AttrPath::new(path.iter().copied()));
    located.or_else(|| {
        files.host.machine_file.clone().map(|file| Location {
            file,
            line: 0,
            column: 0,
        })
    })
}

fn machine_name(files: &HostFiles) -> String {
    files
        .host
        .machine_file
        .as_deref()
        .map(display_path)
        .unwrap_or_else(|| "machine.nix".to_owned())
}

/// HOST001: nobody could log in.
fn admin_keys(files: &HostFiles) -> Vec<Finding> {
    if !files
        .machine
        .admin_ssh_keys
        .as_ref()
        .is_some_and(Vec::is_empty)
    {
        return Vec::new();
    }
    vec![Finding::new(
        "HOST001",
        Severity::Warning,
        AttrPath::new(["adminSshKeys"]),
        format!(
            "{} has no SSH key for {}, the one login: the server has no passwords, so the build refuses it",
            machine_name(files),
            files.machine.admin_user.as_deref().unwrap_or("the admin user")
        ),
        "Add your public key to adminSshKeys in machine.nix before deploying (e.g. \"ssh-ed25519 AAAA… you@laptop\").",
    )
    .at(machine_location(files, &["adminSshKeys"]))]
}

/// The partitions machine.nix can require a size of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    BiosBoot,
    Esp,
    Swap,
    Btrfs,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::BiosBoot, Role::Esp, Role::Swap, Role::Btrfs];

    /// The attribute of `partitionSizes` and `partitionSizeDeviations`.
    pub fn key(self) -> &'static str {
        match self {
            Role::BiosBoot => "biosBoot",
            Role::Esp => "esp",
            Role::Swap => "swap",
            Role::Btrfs => "btrfs",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Role::BiosBoot => "BIOS boot partition (EF02)",
            Role::Esp => "EFI system partition (EF00)",
            Role::Swap => "swap partition",
            Role::Btrfs => "Btrfs partition",
        }
    }

    /// What the size is for, so that a deviation is judged with it in view.
    fn why(self) -> &'static str {
        match self {
            Role::BiosBoot => "GRUB embeds its core image there when the server boots with BIOS",
            Role::Esp => "it holds the kernels and initrds of every generation GRUB offers",
            Role::Swap => "the machine has no other swap and no zram",
            Role::Btrfs => "everything else lives on it; \"100%\" gives it the rest of the disk",
        }
    }

    fn matches(self, partition: &Partition) -> bool {
        match self {
            Role::BiosBoot => partition.type_code.eq_ignore_ascii_case("EF02"),
            Role::Esp => partition.type_code.eq_ignore_ascii_case("EF00"),
            Role::Swap => matches!(partition.content, Some(Content::Swap(_))),
            Role::Btrfs => matches!(partition.content, Some(Content::Btrfs(_))),
        }
    }

    fn required(self, machine: &Machine) -> Option<&String> {
        let sizes = machine.partition_sizes.as_ref()?;
        match self {
            Role::BiosBoot => sizes.bios_boot.as_ref(),
            Role::Esp => sizes.esp.as_ref(),
            Role::Swap => sizes.swap.as_ref(),
            Role::Btrfs => sizes.btrfs.as_ref(),
        }
    }

    fn deviation(self, machine: &Machine) -> Option<&Deviation> {
        let deviations = machine.partition_size_deviations.as_ref()?;
        match self {
            Role::BiosBoot => deviations.bios_boot.as_ref(),
            Role::Esp => deviations.esp.as_ref(),
            Role::Swap => deviations.swap.as_ref(),
            Role::Btrfs => deviations.btrfs.as_ref(),
        }
    }
}

/// The partition's size in disko's words: its `size` when sgdisk places it
/// by size (start 0, end +size); otherwise what sgdisk makes of its start
/// and end, in bytes ("100%" when it runs to the end of the disk).
fn placed_size(context: Option<&Model<'_>>, disk: &Disk, partition: &Partition) -> Option<String> {
    if partition.start == "0" && partition.end == format!("+{}", partition.size_text) {
        return Some(partition.size_text.clone());
    }
    let context = context?;
    let geometry = context.geometry.get(&disk.key)?;
    let extent = geometry.extent(partition.number)?;
    // sgdisk aligns to 2048 sectors: an end within one alignment of the last
    // usable sector is the whole rest of the disk.
    if extent.end_sector + ALIGNMENT_SECTORS > geometry.last_usable_sector {
        return Some("100%".to_owned());
    }
    Some(format!("{}K", extent.size_bytes() / 1024))
}

/// sgdisk's default alignment (1 MiB in 512-byte sectors).
const ALIGNMENT_SECTORS: u64 = 2048;

/// A size as disko reads it, for comparing `1G` with `1024M`.
fn same_size(a: &str, b: &str) -> bool {
    match (parse_partition_size(a), parse_partition_size(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// HOST002 (the layout differs from what machine.nix requires) and HOST003
/// (it differs on purpose, with the reason; or a listed deviation is stale).
fn partition_sizes(layout: &Layout, files: &HostFiles) -> Vec<Finding> {
    let machine = files.machine;
    // Where sgdisk really puts partitions given by start and end.
    let disk_bytes: BTreeMap<String, u64> = layout
        .disks
        .iter()
        .filter_map(|disk| Some((disk.key.clone(), machine.disk_bytes(&disk.key).ok()??)))
        .collect();
    let context =
        (!disk_bytes.is_empty()).then(|| Model::new(layout, &disk_bytes, Firmware::default()));
    let mut found = Vec::new();
    for role in Role::ALL {
        let Some(required) = role.required(machine) else {
            continue;
        };
        let key = role.key();
        let required_path = ["partitionSizes", key];
        if parse_partition_size(required).is_err() {
            found.push(
                Finding::new(
                    "HOST002",
                    Severity::Error,
                    AttrPath::new(required_path),
                    format!(
                        "{}: partitionSizes.{key} = {required:?} is not a disko size",
                        machine_name(files)
                    ),
                    "Write a size as disko.nix does: a number with K, M, G or T (\"32G\"), or \"100%\" for the rest of the disk.",
                )
                .at(machine_location(files, &required_path)),
            );
            continue;
        }
        let deviation = role.deviation(machine);
        let deviation_path = ["partitionSizeDeviations", key];
        let partitions: Vec<(&Disk, &Partition)> = layout
            .partitions()
            .filter(|(_, partition)| role.matches(partition))
            .collect();
        if partitions.is_empty() {
            found.push(Finding::new(
                "HOST002",
                Severity::Error,
                AttrPath::new(["disko", "devices"]),
                format!(
                    "the layout has no {} but {} requires one of {required} ({})",
                    role.describe(),
                    machine_name(files),
                    role.why()
                ),
                format!(
                    "Add the partition to disko.nix, or remove partitionSizes.{key} from machine.nix if this host does without it."
                ),
            ));
            continue;
        }
        let mut any_deviates = false;
        for (disk, partition) in partitions {
            // A size disko cannot read is PART001's finding.
            if partition.size.is_err() {
                continue;
            }
            let Some(actual) = placed_size(context.as_ref(), disk, partition) else {
                // Placed by start and end on a disk of unknown size, or not
                // placed at all (PART010): nothing to compare.
                continue;
            };
            let actual = &actual;
            if same_size(actual, required) {
                continue;
            }
            any_deviates = true;
            let by_size =
                partition.start == "0" && partition.end == format!("+{}", partition.size_text);
            let path = partition.path.join(if by_size { "size" } else { "end" });
            match deviation {
                Some(deviation) if same_size(actual, &deviation.size) => found.push(
                    Finding::new(
                        "HOST003",
                        Severity::Warning,
                        path,
                        format!(
                            "the {} {:?} is {actual}, not the {required} the host requires ({}); deliberate, says {}: {}",
                            role.describe(),
                            partition.key,
                            role.why(),
                            machine_name(files),
                            deviation.reason
                        ),
                        format!(
                            "Nothing to do if the reason still holds; to go back to the requirement, set size = \"{required}\" and remove partitionSizeDeviations.{key}."
                        ),
                    )
                    .at(machine_location(files, &deviation_path)),
                ),
                _ => found.push(Finding::new(
                    "HOST002",
                    Severity::Error,
                    path,
                    format!(
                        "the {} {:?} is {actual}, but {} requires {required} of this host ({}){}",
                        role.describe(),
                        partition.key,
                        machine_name(files),
                        role.why(),
                        match deviation {
                            Some(deviation) => format!(
                                "; partitionSizeDeviations.{key} allows {} only",
                                deviation.size
                            ),
                            None => String::new(),
                        }
                    ),
                    format!(
                        "Set size = \"{required}\" on the partition in disko.nix; if {actual} is deliberate, add partitionSizeDeviations.{key} = {{ size = \"{actual}\"; reason = \"…\"; }}; to machine.nix."
                    ),
                )),
            }
        }
        if let (Some(deviation), false) = (deviation, any_deviates) {
            found.push(
                Finding::new(
                    "HOST003",
                    Severity::Warning,
                    AttrPath::new(deviation_path),
                    format!(
                        "{} lists partitionSizeDeviations.{key} ({}: {}), but the layout has the required {required}",
                        machine_name(files),
                        deviation.size,
                        deviation.reason
                    ),
                    format!("Remove partitionSizeDeviations.{key} from machine.nix."),
                )
                .at(machine_location(files, &deviation_path)),
            );
        }
    }
    found
}

/// The options of boot.btrfsRollback (nix/modules/btrfs-rollback/default.nix)
/// and what each accepts; a test keeps the list equal to the module's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptionType {
    Bool,
    /// `nullOr str`
    NullOrString,
    /// `strMatching "[^/[:space:]]+"`
    SubvolumeName,
    /// `ints.unsigned`
    Unsigned,
    /// `strMatching "/.+"`
    AbsolutePath,
    /// `listOf str`
    Strings,
}

pub const ROLLBACK_OPTIONS: &[(&str, OptionType)] = &[
    ("enable", OptionType::Bool),
    ("device", OptionType::NullOrString),
    ("rootSubvolume", OptionType::SubvolumeName),
    ("oldRootsSubvolume", OptionType::SubvolumeName),
    ("retentionDays", OptionType::Unsigned),
    ("keepAtLeast", OptionType::Unsigned),
    ("mountPoint", OptionType::AbsolutePath),
    ("mountsNeededForBoot", OptionType::Strings),
];

impl OptionType {
    fn accepts(self, value: &Value) -> bool {
        match self {
            OptionType::Bool => value.is_boolean(),
            OptionType::NullOrString => value.is_null() || value.is_string(),
            OptionType::SubvolumeName => value.as_str().is_some_and(|name| {
                !name.is_empty() && !name.chars().any(|c| c == '/' || c.is_whitespace())
            }),
            OptionType::Unsigned => value.is_u64(),
            OptionType::AbsolutePath => value.as_str().is_some_and(|path| {
                path.starts_with('/') && path.chars().count() > 1 && !path.contains('\n')
            }),
            OptionType::Strings => value
                .as_array()
                .is_some_and(|items| items.iter().all(Value::is_string)),
        }
    }

    fn describe(self) -> &'static str {
        match self {
            OptionType::Bool => "true or false",
            OptionType::NullOrString => "a string (a device path) or null",
            OptionType::SubvolumeName => "a subvolume name: a string without `/` or spaces",
            OptionType::Unsigned => "a whole number, 0 or more",
            OptionType::AbsolutePath => "an absolute path other than `/`, as a string",
            OptionType::Strings => "a list of strings",
        }
    }
}

/// HOST004: rollback.nix gives boot.btrfsRollback something its NixOS
/// option would refuse (the build fails), or something vm-test would boot
/// with instead of what the server gets.
fn rollback_settings(files: &HostFiles) -> Vec<Finding> {
    let Some(rollback) = files.rollback else {
        return Vec::new();
    };
    let file = files
        .host
        .rollback_file
        .as_deref()
        .map(display_path)
        .unwrap_or_else(|| "rollback.nix".to_owned());
    let locate = |path: &AttrPath| {
        files.rollback_positions.locate(path).or_else(|| {
            files.host.rollback_file.clone().map(|file| Location {
                file,
                line: 0,
                column: 0,
            })
        })
    };
    let base = AttrPath::new(["boot", "btrfsRollback"]);
    let settings = match rollback.pointer("/boot/btrfsRollback") {
        None => return Vec::new(),
        Some(Value::Object(settings)) => settings,
        Some(_) => {
            return vec![Finding::new(
                "HOST004",
                Severity::Error,
                base.clone(),
                format!("{file}: boot.btrfsRollback is not an attribute set"),
                "Write boot.btrfsRollback = { enable = true; … }; (nix/modules/btrfs-rollback/default.nix lists the options).",
            )
            .at(locate(&base))]
        }
    };
    let mut found = Vec::new();
    for (name, value) in settings {
        let path = base.join(name.clone());
        match ROLLBACK_OPTIONS.iter().find(|(option, _)| option == name) {
            None => {
                let known: Vec<&str> = ROLLBACK_OPTIONS.iter().map(|(option, _)| *option).collect();
                found.push(
                    Finding::new(
                        "HOST004",
                        Severity::Error,
                        path.clone(),
                        format!("{file}: boot.btrfsRollback has no option {name:?}: NixOS refuses to build"),
                        format!("Use one of: {}.", known.join(", ")),
                    )
                    .at(locate(&path)),
                );
            }
            Some((_, kind)) if !kind.accepts(value) => found.push(
                Finding::new(
                    "HOST004",
                    Severity::Error,
                    path.clone(),
                    format!(
                        "{file}: boot.btrfsRollback.{name} is {value}, but the option takes {}: NixOS refuses to build",
                        kind.describe()
                    ),
                    format!("Give boot.btrfsRollback.{name} {}.", kind.describe()),
                )
                .at(locate(&path)),
            ),
            Some(_) => {}
        }
    }
    found
}

#[cfg(test)]
mod tests;
