//! From the JSON that Nix evaluated to the typed `Layout`, applying disko's
//! defaults (partition types, priorities, labels, devices, creation order)
//! the way disko's own types do. Anything that does not fit becomes a
//! finding with the attribute path it was found at; nothing panics.

use std::collections::BTreeMap;

use camino::Utf8Path;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::model::*;
use super::size::{parse_partition_size, PartitionSize};
use crate::findings::{AttrPath, Finding, Severity};
use crate::names;

mod btrfs;
mod disk;
mod filesystem;
mod gpt;
mod nixos;
mod swap;
#[cfg(test)]
mod tests;

pub use gpt::default_partition_label;

/// Content types disko knows but this tool does not model.
const UNMODELLED_CONTENT: &[&str] = &[
    "bcachefs", "zfs", "mdraid", "luks", "lvm_pv", "table", "gpt",
];

const HOOKS: &[&str] = &[
    "preCreateHook",
    "postCreateHook",
    "preMountHook",
    "postMountHook",
    "preUnmountHook",
    "postUnmountHook",
];

const DEVICE_KINDS: &[&str] = &[
    "disk",
    "mdadm",
    "zpool",
    "lvm_vg",
    "nodev",
    "bcachefs_filesystems",
];

/// How many unknown options of one attribute set are reported one by one.
const MAX_UNKNOWN_KEYS: usize = 20;

/// What a layout file evaluated to, split the way `nix/lib/eval-host.nix` returns it.
pub struct Evaluated<'a> {
    pub host: &'a str,
    pub source: &'a Utf8Path,
    /// The layout module (disko.devices, fileSystems, systemd.tmpfiles, boot).
    pub layout: &'a Value,
    /// `environment.persistence` of the persistence module.
    pub persistence: &'a Value,
}

/// Builds the layout; `None` when its structure is too broken to model.
pub fn build(input: &Evaluated<'_>) -> (Option<Layout>, Vec<Finding>) {
    let mut builder = Builder::default();
    let layout = builder.layout(input);
    (layout, builder.findings)
}

#[derive(Default)]
struct Builder {
    findings: Vec<Finding>,
    /// Set when part of the structure could not be read.
    broken: bool,
}

fn model_error(code: &'static str, path: AttrPath, message: String, hint: &str) -> Finding {
    Finding::new(code, Severity::Error, path, message, hint)
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an attribute set",
    }
}

fn default_mount_options() -> Vec<String> {
    vec!["defaults".to_owned()]
}

/// Mount options as the kernel gets them: NixOS joins the list with commas,
/// so one element `"noatime,subvol=@x"` is two options.
fn split_options(options: Vec<String>) -> Vec<String> {
    if !options.iter().any(|o| o.contains(',') || o.is_empty()) {
        return options;
    }
    options
        .iter()
        .flat_map(|option| option.split(','))
        .filter(|option| !option.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A content's `mountOptions`, disko's default when unset.
fn mount_options(given: Option<Vec<String>>) -> Vec<String> {
    given.map_or_else(default_mount_options, split_options)
}

impl Builder {
    fn push(&mut self, finding: Finding) {
        self.findings.push(finding);
    }

    /// disko hands a mounted content's `mountOptions` to NixOS as
    /// `fileSystems.<mountpoint>.options`, typed a non-empty list of
    /// non-empty strings: `[]` or `""` there fails the evaluation.
    fn mounted_options_not_empty(
        &mut self,
        options: Option<&Vec<String>>,
        mountpoint: Option<&String>,
        path: &AttrPath,
    ) {
        let (Some(options), Some(mountpoint)) = (options, mountpoint) else {
            return;
        };
        if options.is_empty() || options.iter().any(String::is_empty) {
            self.push(model_error(
                "MODEL001",
                path.join("mountOptions"),
                format!(
                    "mountOptions of the mount at {mountpoint} is {}: disko passes it to fileSystems.\"{mountpoint}\".options, whose type is a non-empty list of non-empty strings, so the evaluation fails",
                    if options.is_empty() { "an empty list" } else { "a list with an empty string" }
                ),
                "Remove `mountOptions` (disko's default is [ \"defaults\" ]), or list at least one option.",
            ));
        }
    }

    fn object<'v>(
        &mut self,
        value: &'v Value,
        path: &AttrPath,
        what: &str,
    ) -> Option<&'v Map<String, Value>> {
        match value {
            Value::Object(map) => Some(map),
            other => {
                self.broken = true;
                self.push(model_error(
                    "MODEL001",
                    path.clone(),
                    format!(
                        "{what} must be an attribute set, but it is {}",
                        json_kind(other)
                    ),
                    "Write it as `{ ... }`, as in disko's examples.",
                ));
                None
            }
        }
    }

    /// Reports attributes the type does not have (a typo, or an option from
    /// another type), the way the NixOS module system would refuse them.
    fn check_keys(
        &mut self,
        map: &Map<String, Value>,
        allowed: &[&str],
        path: &AttrPath,
        what: &str,
    ) {
        let unknown: Vec<&String> = map
            .keys()
            .filter(|key| !allowed.contains(&key.as_str()) && !HOOKS.contains(&key.as_str()))
            .collect();
        // A generated attribute set may hold thousands; name a few, count the rest.
        if unknown.len() > MAX_UNKNOWN_KEYS {
            let more = unknown.len() - MAX_UNKNOWN_KEYS;
            self.push(model_error(
                "MODEL003",
                path.clone(),
                format!(
                    "{what} has {} options disko does not know; {more} more besides the {MAX_UNKNOWN_KEYS} listed",
                    unknown.len()
                ),
                &format!("Remove them; known options: {}.", allowed.join(", ")),
            ));
        }
        for key in unknown.into_iter().take(MAX_UNKNOWN_KEYS) {
            let suggestion = closest(key, allowed)
                .map(|s| format!("Did you mean `{s}`? "))
                .unwrap_or_default();
            self.push(model_error(
                "MODEL003",
                path.join(key.clone()),
                format!("{what} has no option `{key}`"),
                &format!("{suggestion}Known options: {}.", allowed.join(", ")),
            ));
        }
    }

    fn fields<T: DeserializeOwned>(&mut self, value: &Value, path: &AttrPath) -> Option<T> {
        match serde_path_to_error::deserialize::<_, T>(value) {
            Ok(fields) => Some(fields),
            Err(error) => {
                self.broken = true;
                let mut at = path.clone();
                for segment in error.path().iter() {
                    at = match segment {
                        serde_path_to_error::Segment::Seq { index } => {
                            at.join(format!("[{index}]"))
                        }
                        serde_path_to_error::Segment::Map { key } => at.join(key.clone()),
                        serde_path_to_error::Segment::Enum { variant } => at.join(variant.clone()),
                        serde_path_to_error::Segment::Unknown => at,
                    };
                }
                self.push(model_error(
                    "MODEL001",
                    at,
                    format!("wrong type: {}", error.inner()),
                    "Give the value the type disko's option has (strings for sizes and paths, lists of strings for options, booleans for flags).",
                ));
                None
            }
        }
    }

    fn layout(&mut self, input: &Evaluated<'_>) -> Option<Layout> {
        let top = AttrPath::root();
        let root = self.object(input.layout, &top, "The layout file")?;
        let devices_path = AttrPath::new(["disko", "devices"]);
        let devices = root
            .get("disko")
            .and_then(|disko| disko.get("devices"))
            .filter(|devices| !devices.is_null());
        let Some(devices) = devices else {
            self.push(model_error(
                "MODEL004",
                devices_path,
                "the layout file sets no disko.devices".to_owned(),
                "Declare the disks under `disko.devices.disk.<name>`.",
            ));
            return None;
        };
        let devices = self.object(devices, &devices_path, "disko.devices")?;
        self.check_keys(devices, DEVICE_KINDS, &devices_path, "disko.devices");
        for kind in DEVICE_KINDS.iter().filter(|kind| **kind != "disk") {
            let Some(entries) = devices
                .get(*kind)
                .and_then(Value::as_object)
                .filter(|m| !m.is_empty())
            else {
                continue;
            };
            // Real disko builds these beside the disks; this tool does not
            // model them, and says so without failing the run.
            let names: Vec<&str> = entries.keys().map(String::as_str).collect();
            self.push(Finding::new(
                "MODEL007",
                Severity::Info,
                devices_path.join(*kind),
                format!(
                    "not checked: disko.devices.{kind} ({}) is not modelled by this tool; its mounts and options are not judged, nor whether they collide with the layout's",
                    names.join(", ")
                ),
                "Nothing to fix; check these devices by hand or in the lab VM.",
            ));
        }
        let mut unmodelled_mounts = Vec::new();
        if let Some(nodev) = devices.get("nodev").and_then(Value::as_object) {
            for (name, entry) in nodev {
                // disko's nodev `mountpoint` defaults to the attribute name.
                let mountpoint = entry
                    .get("mountpoint")
                    .and_then(Value::as_str)
                    .unwrap_or(name);
                let options: Option<Vec<String>> = entry
                    .get("mountOptions")
                    .and_then(|o| serde_json::from_value(o.clone()).ok());
                self.mounted_options_not_empty(
                    options.as_ref(),
                    Some(&mountpoint.to_owned()),
                    &devices_path.join("nodev").join(name.clone()),
                );
                unmodelled_mounts.push((
                    mountpoint.to_owned(),
                    devices_path.join("nodev").join(name.clone()),
                ));
            }
        }
        let mut disks = Vec::new();
        let disk_path = devices_path.join("disk");
        match devices.get("disk") {
            Some(Value::Object(map)) if !map.is_empty() => {
                for (key, value) in map {
                    if let Some(disk) = self.disk(key, value, disk_path.join(key.clone())) {
                        disks.push(disk);
                    }
                }
            }
            Some(Value::Object(_)) | None | Some(Value::Null) => {
                self.push(model_error(
                    "MODEL004",
                    disk_path,
                    "disko.devices.disk declares no disk".to_owned(),
                    "Declare at least one disk, e.g. `disko.devices.disk.main = { device = \"/dev/sda\"; ... }`.",
                ));
                return None;
            }
            Some(other) => {
                self.object(other, &disk_path, "disko.devices.disk");
                return None;
            }
        }

        let file_systems = self.file_systems(root.get("fileSystems"));
        let nocow_paths = self.nocow_paths(root.get("systemd"));
        let resume_device = self.resume_device(root.get("boot"));
        let persistence = self.persistence(input.persistence);

        if self.broken {
            return None;
        }
        Some(Layout {
            host: input.host.to_owned(),
            source: input.source.to_owned(),
            disks,
            file_systems,
            nocow_paths,
            resume_device,
            persistence,
            unmodelled_mounts,
        })
    }

    /// A filesystem, Btrfs or swap. `also_known` lists types the caller
    /// handles itself, so they are not reported as unknown.
    fn content(
        &mut self,
        value: &Value,
        path: AttrPath,
        device: &str,
        also_known: &[&str],
    ) -> Option<Content> {
        let map = self.object(value, &path, "A content")?;
        let type_path = path.join("type");
        let kind = match map.get("type") {
            Some(Value::String(kind)) => kind.as_str(),
            Some(other) => {
                self.broken = true;
                self.push(model_error(
                    "MODEL001",
                    type_path,
                    format!(
                        "a content's type must be a string, but it is {}",
                        json_kind(other)
                    ),
                    "Set `type` to \"filesystem\", \"btrfs\" or \"swap\".",
                ));
                return None;
            }
            None => {
                self.broken = true;
                self.push(model_error(
                    "MODEL002",
                    type_path,
                    "a content has no type".to_owned(),
                    "Set `type` to \"filesystem\", \"btrfs\" or \"swap\".",
                ));
                return None;
            }
        };
        match kind {
            "filesystem" => self.filesystem(map, value, path, device),
            "btrfs" => self.btrfs(map, value, path, device),
            "swap" => self.swap(map, value, path, device),
            other if also_known.contains(&other) => {
                self.broken = true;
                self.push(model_error(
                    "MODEL002",
                    type_path,
                    format!("content type {other:?} is not allowed here"),
                    "A partition holds a filesystem, btrfs or swap; a partition table belongs directly on a disk.",
                ));
                None
            }
            other if UNMODELLED_CONTENT.contains(&other) => {
                self.broken = true;
                self.push(model_error(
                    "MODEL002",
                    type_path,
                    format!("content type {other:?} is valid disko but not part of this layout, which this tool checks"),
                    "This layout uses \"filesystem\" (vfat ESP), \"swap\" and \"btrfs\" only.",
                ));
                None
            }
            other => {
                self.broken = true;
                let suggestion = closest(other, &["filesystem", "btrfs", "swap"])
                    .map(|s| format!("Did you mean {s:?}? "))
                    .unwrap_or_default();
                self.push(model_error(
                    "MODEL002",
                    type_path,
                    format!("unknown content type {other:?}"),
                    &format!("{suggestion}disko's content types are filesystem, btrfs, swap, luks, lvm_pv, zfs, mdraid and bcachefs."),
                ));
                None
            }
        }
    }
}

fn is_attribute_type(kind: &str) -> bool {
    matches!(
        kind.trim_end_matches(['!', '-', '+', '=', '~', '^']),
        "h" | "H"
    )
}

/// The allowed name closest to a typo, if any is close.
fn closest<'a>(given: &str, allowed: &[&'a str]) -> Option<&'a str> {
    let given = given.to_lowercase();
    allowed
        .iter()
        .map(|candidate| {
            (
                strsim::levenshtein(&given, &candidate.to_lowercase()),
                *candidate,
            )
        })
        .filter(|(distance, _)| *distance <= 2)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}
