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

const DISK_KEYS: &[&str] = &[
    "type",
    "name",
    "device",
    "destroy",
    "imageName",
    "imageSize",
    "content",
];
const GPT_KEYS: &[&str] = &["type", "device", "partitions", "efiGptPartitionFirst"];
const PARTITION_KEYS: &[&str] = &[
    "type",
    "attributes",
    "device",
    "priority",
    "name",
    "uuid",
    "label",
    "size",
    "alignment",
    "start",
    "end",
    "content",
    "hybrid",
];
const FILESYSTEM_KEYS: &[&str] = &[
    "type",
    "device",
    "extraArgs",
    "mountOptions",
    "mountpoint",
    "format",
];
const BTRFS_KEYS: &[&str] = &[
    "type",
    "device",
    "extraArgs",
    "mountOptions",
    "subvolumes",
    "mountpoint",
    "swap",
];
const SUBVOLUME_KEYS: &[&str] = &[
    "name",
    "type",
    "extraArgs",
    "mountOptions",
    "mountpoint",
    "swap",
];
const HYBRID_KEYS: &[&str] = &["mbrPartitionType", "mbrBootableFlag"];
const SWAPFILE_KEYS: &[&str] = &["size", "path", "priority", "options"];
const SWAP_KEYS: &[&str] = &[
    "type",
    "device",
    "discardPolicy",
    "extraArgs",
    "mountOptions",
    "priority",
    "randomEncryption",
    "resumeDevice",
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

/// Fields read through serde, with disko's defaults applied later.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DiskFields {
    #[serde(rename = "type")]
    kind: Option<String>,
    name: Option<String>,
    device: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PartitionFields {
    #[serde(rename = "type")]
    type_code: Option<String>,
    device: Option<String>,
    priority: Option<i64>,
    name: Option<String>,
    uuid: Option<String>,
    label: Option<String>,
    size: Option<String>,
    alignment: Option<u64>,
    start: Option<String>,
    end: Option<String>,
    #[allow(dead_code)]
    attributes: Option<Vec<u32>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GptFields {
    efi_gpt_partition_first: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct HybridFields {
    mbr_partition_type: Option<String>,
    mbr_bootable_flag: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SwapfileFields {
    size: Option<String>,
    path: Option<String>,
    priority: Option<i64>,
    options: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FilesystemFields {
    device: Option<String>,
    format: Option<String>,
    mountpoint: Option<String>,
    mount_options: Option<Vec<String>>,
    extra_args: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BtrfsFields {
    device: Option<String>,
    mountpoint: Option<String>,
    mount_options: Option<Vec<String>>,
    extra_args: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SubvolumeFields {
    name: Option<String>,
    mountpoint: Option<String>,
    mount_options: Option<Vec<String>>,
    extra_args: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SwapFields {
    device: Option<String>,
    discard_policy: Option<String>,
    priority: Option<i64>,
    random_encryption: Option<bool>,
    resume_device: Option<bool>,
    mount_options: Option<Vec<String>>,
    extra_args: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FileSystemEntryFields {
    needed_for_boot: Option<bool>,
    options: Option<Vec<String>>,
    device: Option<String>,
    fs_type: Option<String>,
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

/// `8-4-4-4-12` hex digits, as sgdisk takes a GUID.
fn is_guid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(group, len)| group.len() == len && group.chars().all(|c| c.is_ascii_hexdigit()))
}

/// disko's partition `type`: an sgdisk code of 4 hex digits, or a GUID.
fn is_type_code(text: &str) -> bool {
    (text.len() == 4 && text.chars().all(|c| c.is_ascii_hexdigit())) || is_guid(text)
}

impl Builder {
    fn push(&mut self, finding: Finding) {
        self.findings.push(finding);
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
            if devices
                .get(*kind)
                .is_some_and(|v| v.as_object().is_some_and(|m| !m.is_empty()))
            {
                self.push(model_error(
                    "MODEL002",
                    devices_path.join(*kind),
                    format!("disko.devices.{kind} is not modelled by this tool"),
                    "This layout needs GPT disks with vfat, swap and Btrfs; move other devices to a separate host.",
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
        })
    }

    fn disk(&mut self, key: &str, value: &Value, path: AttrPath) -> Option<Disk> {
        let map = self.object(value, &path, "A disk")?;
        self.check_keys(map, DISK_KEYS, &path, "A disk");
        let fields: DiskFields = self.fields(value, &path)?;
        if let Some(kind) = fields.kind.as_deref().filter(|kind| *kind != "disk") {
            self.push(model_error(
                "MODEL001",
                path.join("type"),
                format!("a disk's type must be \"disk\", not {kind:?}"),
                "Remove `type` or set it to \"disk\".",
            ));
        }
        let Some(device) = fields.device else {
            self.broken = true;
            self.push(model_error(
                "MODEL001",
                path.join("device"),
                format!("disk {key:?} has no device"),
                "Set `device`, e.g. \"/dev/sda\".",
            ));
            return None;
        };
        let name = fields.name.unwrap_or_else(|| key.replace('/', "_"));
        let content = match map.get("content") {
            None | Some(Value::Null) => None,
            Some(content) => {
                let content_path = path.join("content");
                match content.get("type").and_then(Value::as_str) {
                    Some("gpt") => self
                        .gpt(content, content_path, &name, &device)
                        .map(DiskContent::Gpt),
                    _ => self
                        .content(content, content_path, &device, &["gpt"])
                        .map(DiskContent::Whole),
                }
            }
        };
        Some(Disk {
            path,
            key: key.to_owned(),
            name,
            device,
            content,
        })
    }

    fn gpt(
        &mut self,
        value: &Value,
        path: AttrPath,
        disk_name: &str,
        disk_device: &str,
    ) -> Option<Gpt> {
        let map = self.object(value, &path, "A GPT table")?;
        self.check_keys(map, GPT_KEYS, &path, "A gpt table");
        let fields: GptFields = self.fields(value, &path)?;
        let partitions_path = path.join("partitions");
        let mut partitions = Vec::new();
        match map.get("partitions") {
            None | Some(Value::Null) => {}
            Some(value) => {
                let entries = self.object(value, &partitions_path, "partitions")?;
                for (key, value) in entries {
                    if let Some(partition) = self.partition(
                        key,
                        value,
                        partitions_path.join(key.clone()),
                        disk_name,
                        disk_device,
                    ) {
                        partitions.push(partition);
                    }
                }
            }
        }
        // disko: lib.sort by priority over attrValues (attribute-name order);
        // the sort is stable, so equal priorities keep name order.
        partitions.sort_by_key(|p| p.priority);
        for (index, partition) in partitions.iter_mut().enumerate() {
            partition.number = u32::try_from(index + 1).unwrap_or(u32::MAX);
        }
        Some(Gpt {
            path,
            partitions,
            efi_gpt_partition_first: fields.efi_gpt_partition_first.unwrap_or(true),
        })
    }

    fn partition(
        &mut self,
        key: &str,
        value: &Value,
        path: AttrPath,
        disk_name: &str,
        _disk_device: &str,
    ) -> Option<Partition> {
        let map = self.object(value, &path, "A partition")?;
        self.check_keys(map, PARTITION_KEYS, &path, "A gpt partition");
        let fields: PartitionFields = self.fields(value, &path)?;
        let content_value = map.get("content").filter(|v| !v.is_null());
        let content_type = content_value
            .and_then(|c| c.get("type"))
            .and_then(Value::as_str);
        // disko's types refuse these, and sgdisk would get them as arguments.
        if let Some(code) = fields.type_code.as_deref().filter(|c| !is_type_code(c)) {
            self.broken = true;
            self.push(model_error(
                "MODEL001",
                path.join("type"),
                format!("partition type {code:?} is neither 4 hex digits nor a GUID"),
                "Use an sgdisk type code such as \"EF00\", \"EF02\", \"8200\" or \"8300\" (sgdisk -L lists them), or a type GUID.",
            ));
        }
        if let Some(uuid) = fields.uuid.as_deref().filter(|u| !is_guid(u)) {
            self.broken = true;
            self.push(model_error(
                "MODEL001",
                path.join("uuid"),
                format!("partition uuid {uuid:?} is not a GUID"),
                "Write it as 8-4-4-4-12 hex digits (e.g. from `uuidgen`), or leave uuid out.",
            ));
        }
        let name = fields.name.unwrap_or_else(|| key.to_owned());
        let size_text = fields.size.unwrap_or_else(|| "0".to_owned());
        let type_code = fields.type_code.unwrap_or_else(|| {
            if content_type == Some("swap") {
                "8200"
            } else {
                "8300"
            }
            .to_owned()
        });
        let priority = fields.priority.unwrap_or(if size_text == "100%" {
            9001
        } else if type_code == "EF02" {
            100
        } else {
            1000
        });
        let label = fields
            .label
            .unwrap_or_else(|| default_partition_label(disk_name, &name));
        let (device, partlabel) = match (fields.device, &fields.uuid) {
            (Some(device), _) => (device, None),
            (None, Some(uuid)) => (format!("/dev/disk/by-partuuid/{uuid}"), None),
            (None, None) => {
                let stored_name = names::sgdisk_stored_name(&label);
                let partlabel = Partlabel {
                    disko: names::disko_hex_escape(&label),
                    udev_device: names::udev_partlabel_path(&stored_name),
                    stored_name,
                };
                let device = match &partlabel.disko {
                    Ok(escaped) => format!("/dev/disk/by-partlabel/{escaped}"),
                    // disko's evaluation fails (DEV003 says so); what udev
                    // makes keeps the rest of the model sane.
                    Err(_) => partlabel.udev_device.clone(),
                };
                (device, Some(partlabel))
            }
        };
        let start = fields.start.unwrap_or_else(|| "0".to_owned());
        let end = fields.end.unwrap_or_else(|| {
            if size_text == "100%" {
                "-0".to_owned()
            } else {
                format!("+{size_text}")
            }
        });
        let alignment = fields
            .alignment
            .unwrap_or(if start.ends_with('s') || end.ends_with('s') {
                1
            } else {
                0
            });
        let content = match content_value {
            None => None,
            Some(content) => Some(self.content(content, path.join("content"), &device, &[])?),
        };
        let hybrid = match map.get("hybrid").filter(|v| !v.is_null()) {
            None => None,
            Some(value) => {
                let hybrid_path = path.join("hybrid");
                let hybrid_map = self.object(value, &hybrid_path, "hybrid")?;
                self.check_keys(hybrid_map, HYBRID_KEYS, &hybrid_path, "A hybrid MBR entry");
                let hybrid: HybridFields = self.fields(value, &hybrid_path)?;
                Some(Hybrid {
                    path: hybrid_path,
                    mbr_partition_type: hybrid.mbr_partition_type,
                    mbr_bootable_flag: hybrid.mbr_bootable_flag.unwrap_or(false),
                })
            }
        };
        Some(Partition {
            path,
            key: key.to_owned(),
            name,
            number: 0,
            type_code,
            label,
            device,
            size: parse_partition_size(&size_text),
            size_text,
            start,
            end,
            priority,
            alignment,
            content,
            hybrid,
            partlabel,
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
            "filesystem" => {
                self.check_keys(map, FILESYSTEM_KEYS, &path, "A filesystem");
                let fields: FilesystemFields = self.fields(value, &path)?;
                let Some(format) = fields.format else {
                    self.broken = true;
                    self.push(model_error(
                        "MODEL001",
                        path.join("format"),
                        "a filesystem needs a format".to_owned(),
                        "Set `format`, e.g. \"vfat\" or \"ext4\".",
                    ));
                    return None;
                };
                Some(Content::Filesystem(Filesystem {
                    device: fields.device.unwrap_or_else(|| device.to_owned()),
                    format,
                    mountpoint: fields.mountpoint,
                    mount_options: mount_options(fields.mount_options),
                    extra_args: fields.extra_args.unwrap_or_default(),
                    path,
                }))
            }
            "btrfs" => {
                self.check_keys(map, BTRFS_KEYS, &path, "A btrfs filesystem");
                let fields: BtrfsFields = self.fields(value, &path)?;
                let subvolumes_path = path.join("subvolumes");
                let mut subvolumes = Vec::new();
                if let Some(value) = map.get("subvolumes").filter(|v| !v.is_null()) {
                    let entries = self.object(value, &subvolumes_path, "subvolumes")?;
                    for (key, value) in entries {
                        if let Some(subvolume) =
                            self.subvolume(key, value, subvolumes_path.join(key.clone()))
                        {
                            subvolumes.push(subvolume);
                        }
                    }
                }
                let swapfiles = self.swapfiles(map, &path)?;
                Some(Content::Btrfs(Btrfs {
                    device: fields.device.unwrap_or_else(|| device.to_owned()),
                    extra_args: fields.extra_args.unwrap_or_default(),
                    swapfiles,
                    mountpoint: fields.mountpoint,
                    mount_options: mount_options(fields.mount_options),
                    subvolumes,
                    path,
                }))
            }
            "swap" => {
                self.check_keys(map, SWAP_KEYS, &path, "A swap");
                let fields: SwapFields = self.fields(value, &path)?;
                Some(Content::Swap(Swap {
                    device: fields.device.unwrap_or_else(|| device.to_owned()),
                    random_encryption: fields.random_encryption.unwrap_or(false),
                    resume_device: fields.resume_device.unwrap_or(false),
                    discard_policy: fields.discard_policy,
                    priority: fields.priority,
                    mount_options: mount_options(fields.mount_options),
                    extra_args: fields.extra_args.unwrap_or_default(),
                    path,
                }))
            }
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

    fn subvolume(&mut self, key: &str, value: &Value, path: AttrPath) -> Option<Subvolume> {
        let map = self.object(value, &path, "A subvolume")?;
        self.check_keys(map, SUBVOLUME_KEYS, &path, "A btrfs subvolume");
        let fields: SubvolumeFields = self.fields(value, &path)?;
        let swapfiles = self.swapfiles(map, &path)?;
        Some(Subvolume {
            key: key.to_owned(),
            name: fields.name.unwrap_or_else(|| key.to_owned()),
            mountpoint: fields.mountpoint,
            mount_options: mount_options(fields.mount_options),
            extra_args: fields.extra_args.unwrap_or_default(),
            swapfiles,
            path,
        })
    }

    /// `swap.<name>` of a Btrfs filesystem or subvolume (disko's `swapType`).
    fn swapfiles(&mut self, map: &Map<String, Value>, path: &AttrPath) -> Option<Vec<Swapfile>> {
        let mut swapfiles = Vec::new();
        let Some(value) = map.get("swap").filter(|v| !v.is_null()) else {
            return Some(swapfiles);
        };
        let swap_path = path.join("swap");
        let entries = self.object(value, &swap_path, "swap")?;
        for (key, value) in entries {
            let entry_path = swap_path.join(key.clone());
            let entry = self.object(value, &entry_path, "A swap file")?;
            self.check_keys(entry, SWAPFILE_KEYS, &entry_path, "A btrfs swap file");
            let fields: SwapfileFields = self.fields(value, &entry_path)?;
            let Some(size) = fields.size else {
                self.broken = true;
                self.push(model_error(
                    "MODEL001",
                    entry_path.join("size"),
                    format!("swap file {key:?} has no size"),
                    "Set `size`, e.g. \"8G\" (disko's option has no default).",
                ));
                continue;
            };
            swapfiles.push(Swapfile {
                key: key.clone(),
                file: fields.path.unwrap_or_else(|| key.clone()),
                size,
                priority: fields.priority,
                options: fields
                    .options
                    .map_or_else(default_mount_options, split_options),
                path: entry_path,
            });
        }
        Some(swapfiles)
    }

    fn file_systems(&mut self, value: Option<&Value>) -> BTreeMap<String, FileSystemFlags> {
        let mut result = BTreeMap::new();
        let path = AttrPath::new(["fileSystems"]);
        let Some(value) = value.filter(|v| !v.is_null()) else {
            return result;
        };
        let Some(map) = self.object(value, &path, "fileSystems") else {
            return result;
        };
        for (mountpoint, entry) in map {
            let entry_path = path.join(mountpoint.clone());
            if self
                .object(entry, &entry_path, "A fileSystems entry")
                .is_none()
            {
                continue;
            }
            if let Some(fields) = self.fields::<FileSystemEntryFields>(entry, &entry_path) {
                result.insert(
                    mountpoint.clone(),
                    FileSystemFlags {
                        path: entry_path,
                        needed_for_boot: fields.needed_for_boot,
                        options: split_options(fields.options.unwrap_or_default()),
                        device: fields.device,
                        fs_type: fields.fs_type,
                    },
                );
            }
        }
        result
    }

    /// `h`/`H` tmpfiles lines that add the C attribute, from both
    /// `systemd.tmpfiles.settings` and `systemd.tmpfiles.rules`.
    fn nocow_paths(&mut self, systemd: Option<&Value>) -> Vec<NocowPath> {
        let mut result = Vec::new();
        let Some(tmpfiles) = systemd.and_then(|s| s.get("tmpfiles")) else {
            return result;
        };
        let base = AttrPath::new(["systemd", "tmpfiles"]);
        if let Some(settings) = tmpfiles.get("settings").and_then(Value::as_object) {
            for (group, paths) in settings {
                let Some(paths) = paths.as_object() else {
                    continue;
                };
                for (target, types) in paths {
                    let Some(types) = types.as_object() else {
                        continue;
                    };
                    for (kind, entry) in types {
                        let argument = entry.get("argument").and_then(Value::as_str).unwrap_or("");
                        if is_attribute_type(kind) && adds_no_cow(argument) {
                            result.push(NocowPath {
                                path: base
                                    .join("settings")
                                    .join(group.clone())
                                    .join(target.clone())
                                    .join(kind.clone()),
                                target: target.clone(),
                            });
                        }
                    }
                }
            }
        }
        if let Some(rules) = tmpfiles.get("rules").and_then(Value::as_array) {
            for (index, rule) in rules.iter().enumerate() {
                let Some(rule) = rule.as_str() else { continue };
                let fields: Vec<&str> = rule.split_whitespace().collect();
                if let (Some(kind), Some(target)) = (fields.first(), fields.get(1)) {
                    let argument = fields.get(6).copied().unwrap_or("");
                    if is_attribute_type(kind) && adds_no_cow(argument) {
                        result.push(NocowPath {
                            path: base.join("rules").join(format!("[{index}]")),
                            target: (*target).to_owned(),
                        });
                    }
                }
            }
        }
        result
    }

    fn resume_device(&mut self, boot: Option<&Value>) -> Option<String> {
        match boot.and_then(|b| b.get("resumeDevice")) {
            Some(Value::String(device)) if !device.is_empty() => Some(device.clone()),
            _ => None,
        }
    }

    fn persistence(&mut self, value: &Value) -> Vec<PersistenceRoot> {
        let mut roots = Vec::new();
        let base = AttrPath::new(["environment", "persistence"]);
        if value.is_null() {
            return roots;
        }
        let Some(map) = self.object(value, &base, "environment.persistence") else {
            return roots;
        };
        for (name, root) in map {
            let path = base.join(name.clone());
            let Some(root_map) = self.object(root, &path, "A persistence root") else {
                continue;
            };
            let storage_path = match root_map.get("persistentStoragePath") {
                Some(Value::String(storage)) => storage.clone(),
                _ => name.clone(),
            };
            let mut entries = Vec::new();
            self.persisted_entries(root_map, &path, None, "/", &mut entries);
            if let Some(users) = root_map.get("users") {
                let users_path = path.join("users");
                if let Some(users) = self.object(users, &users_path, "users") {
                    for (user, user_root) in users {
                        let user_path = users_path.join(user.clone());
                        let Some(user_map) =
                            self.object(user_root, &user_path, "A user's persistence")
                        else {
                            continue;
                        };
                        let home = user_map
                            .get("home")
                            .and_then(Value::as_str)
                            .map(str::to_owned)
                            .unwrap_or_else(|| format!("/home/{user}"));
                        self.persisted_entries(
                            user_map,
                            &user_path,
                            Some(user),
                            &home,
                            &mut entries,
                        );
                    }
                }
            }
            roots.push(PersistenceRoot {
                path,
                storage_path,
                entries,
            });
        }
        roots
    }

    fn persisted_entries(
        &mut self,
        map: &Map<String, Value>,
        path: &AttrPath,
        user: Option<&str>,
        base: &str,
        entries: &mut Vec<PersistedEntry>,
    ) {
        for (list_name, kind, field) in [
            ("directories", EntryKind::Directory, "directory"),
            ("files", EntryKind::File, "file"),
        ] {
            let Some(list) = map.get(list_name) else {
                continue;
            };
            let list_path = path.join(list_name);
            let Some(items) = list.as_array() else {
                self.broken = true;
                self.push(model_error(
                    "MODEL001",
                    list_path,
                    format!("{list_name} must be a list, but it is {}", json_kind(list)),
                    "Write it as `[ \"/path\" ... ]`.",
                ));
                continue;
            };
            for (index, item) in items.iter().enumerate() {
                let item_path = list_path.join(format!("[{index}]"));
                let given = match item {
                    Value::String(s) => Some(s.as_str()),
                    Value::Object(o) => o.get(field).and_then(Value::as_str),
                    _ => None,
                };
                let Some(given) = given else {
                    self.broken = true;
                    self.push(model_error(
                        "MODEL001",
                        item_path,
                        format!(
                            "a persisted {field} must be a path string or {{ {field} = \"...\"; }}"
                        ),
                        "Write the path as a string.",
                    ));
                    continue;
                };
                entries.push(PersistedEntry {
                    path: item_path,
                    kind,
                    target: join_absolute(base, given),
                    user: user.map(str::to_owned),
                });
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

/// chattr-style arguments: `+C`, `=C`, `+CA`.
fn adds_no_cow(argument: &str) -> bool {
    (argument.starts_with('+') || argument.starts_with('=')) && argument[1..].contains('C')
}

fn join_absolute(base: &str, given: &str) -> String {
    if given.starts_with('/') {
        given.to_owned()
    } else {
        format!("{}/{}", base.trim_end_matches('/'), given)
    }
}

/// disko's default GPT partition name: `disk-<disk>-<partition>`, or the
/// first 36 hex digits of its SHA-256 when it is longer than 36 *bytes*:
/// Nix's `stringLength` counts bytes (lib/types/gpt.nix at disko 878ec37).
pub fn default_partition_label(disk_name: &str, partition_name: &str) -> String {
    let label = format!("disk-{disk_name}-{partition_name}");
    if label.len() > names::GPT_NAME_UNITS {
        let digest = Sha256::digest(label.as_bytes());
        let hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
        hex[..names::GPT_NAME_UNITS].to_owned()
    } else {
        label
    }
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

impl Partition {
    /// The size in bytes, when it parsed and is not `100%`.
    pub fn fixed_size(&self) -> Option<u64> {
        match self.size {
            Ok(PartitionSize::Bytes(bytes)) => Some(bytes),
            _ => None,
        }
    }

    pub fn is_rest(&self) -> bool {
        matches!(self.size, Ok(PartitionSize::Rest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn build_json(layout: Value) -> (Option<Layout>, Vec<Finding>) {
        build(&Evaluated {
            host: "test",
            source: Utf8Path::new("/test/disko.nix"),
            layout: &layout,
            persistence: &Value::Null,
        })
    }

    fn codes(findings: &[Finding]) -> Vec<&'static str> {
        findings.iter().map(|f| f.code).collect()
    }

    #[test]
    fn applies_diskos_defaults_and_order() {
        let (layout, findings) = build_json(json!({
            "disko": { "devices": { "disk": { "main": { "device": "/dev/sda", "content": {
                "type": "gpt",
                "partitions": {
                    "root": { "size": "100%", "content": { "type": "btrfs" } },
                    "swap": { "size": "32G", "content": { "type": "swap", "randomEncryption": true } },
                    "ESP": { "size": "1G", "type": "EF00", "content": { "type": "filesystem", "format": "vfat" } },
                    "boot": { "size": "1M", "type": "EF02" }
                }
            }}}}}
        }));
        assert!(findings.is_empty(), "{findings:?}");
        let layout = layout.unwrap();
        let Some(DiskContent::Gpt(gpt)) = &layout.disks[0].content else {
            panic!("expected a gpt table")
        };
        let order: Vec<(&str, u32, &str, &str)> = gpt
            .partitions
            .iter()
            .map(|p| {
                (
                    p.key.as_str(),
                    p.number,
                    p.type_code.as_str(),
                    p.label.as_str(),
                )
            })
            .collect();
        assert_eq!(
            order,
            vec![
                ("boot", 1, "EF02", "disk-main-boot"),
                ("ESP", 2, "EF00", "disk-main-ESP"),
                ("swap", 3, "8200", "disk-main-swap"),
                ("root", 4, "8300", "disk-main-root"),
            ]
        );
        assert_eq!(gpt.partitions[3].end, "-0");
        assert_eq!(gpt.partitions[1].end, "+1G");
        assert_eq!(
            gpt.partitions[3].device,
            "/dev/disk/by-partlabel/disk-main-root"
        );
    }

    #[test]
    fn long_labels_become_a_hash_like_disko() {
        let label = default_partition_label("a-very-long-disk-name", "and-a-long-partition");
        assert_eq!(label.len(), 36);
        assert!(label.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(default_partition_label("main", "ESP"), "disk-main-ESP");
    }

    #[test]
    fn non_ascii_names_are_hashed_by_bytes() {
        // 32 characters but 37 bytes: disko hashes it (nix-instantiate of
        // lib/types/gpt.nix at disko 878ec37 gave the same label).
        let name = "données-persistées-ééé";
        assert_eq!(format!("disk-main-{name}").chars().count(), 32);
        assert_eq!(format!("disk-main-{name}").len(), 37);
        let label = default_partition_label("main", name);
        assert_eq!(label, "edee11f9e459da2174c7b8265cc774a0f23d");
    }

    #[test]
    fn wrong_types_unknown_options_and_contents_are_findings() {
        let (layout, findings) = build_json(json!({
            "disko": { "devices": { "disk": { "main": { "device": "/dev/sda", "content": {
                "type": "gpt",
                "partitions": {
                    "a": { "size": 1 },
                    "b": { "sise": "1G" },
                    "c": { "size": "1G", "content": { "type": "lvm" } }
                }
            }}}}}
        }));
        assert!(layout.is_none());
        let codes = codes(&findings);
        assert!(codes.contains(&"MODEL001"), "{findings:?}");
        assert!(codes.contains(&"MODEL002"), "{findings:?}");
        assert!(codes.contains(&"MODEL003"), "{findings:?}");
        let typo = findings.iter().find(|f| f.code == "MODEL003").unwrap();
        assert!(typo.hint.contains("`size`"), "{typo:?}");
        assert_eq!(
            typo.path.to_string(),
            "disko.devices.disk.main.content.partitions.b.sise"
        );
        let wrong = findings.iter().find(|f| f.code == "MODEL001").unwrap();
        assert_eq!(
            wrong.path.to_string(),
            "disko.devices.disk.main.content.partitions.a.size"
        );
    }

    #[test]
    fn comma_joined_options_are_separate_options() {
        assert_eq!(
            split_options(vec!["noatime,subvol=@x".into(), "".into(), "ssd,".into()]),
            vec!["noatime", "subvol=@x", "ssd"]
        );
        let plain = vec!["noatime".to_owned(), "ssd".to_owned()];
        assert_eq!(split_options(plain.clone()), plain);
        assert_eq!(mount_options(None), vec!["defaults"]);
    }

    #[test]
    fn type_codes_and_uuids_as_disko_types_them() {
        for good in [
            "EF00",
            "ef02",
            "8300",
            "0FC63DAF-8483-4772-8E79-3D69D8477DE4",
        ] {
            assert!(is_type_code(good), "{good}");
        }
        for bad in [
            "",
            "EF0",
            "EF000",
            "EF02; reboot",
            "GGGG",
            "0FC63DAF-8483-4772-8E79-3D69D8477DE",
        ] {
            assert!(!is_type_code(bad), "{bad}");
        }
        assert!(is_guid("e4fbd4b2-3b50-4a9b-9d1f-0c4f6c2f7a10"));
        for bad in [
            "garbage",
            "e4fbd4b2-3b50-4a9b-9d1f",
            "e4fbd4b2-3b50-4a9b-9d1f-0c4f6c2f7a1x",
            "-----",
        ] {
            assert!(!is_guid(bad), "{bad}");
        }
        let (layout, findings) = build_json(json!({
            "disko": { "devices": { "disk": { "main": { "device": "/dev/sda", "content": {
                "type": "gpt",
                "partitions": {
                    "a": { "size": "1G", "type": "EF02;reboot" },
                    "b": { "size": "100%", "uuid": "not-a-guid" }
                }
            }}}}}
        }));
        assert!(layout.is_none());
        let paths: Vec<String> = findings
            .iter()
            .map(|f| format!("{} {}", f.code, f.path))
            .collect();
        assert_eq!(
            paths,
            vec![
                "MODEL001 disko.devices.disk.main.content.partitions.a.type",
                "MODEL001 disko.devices.disk.main.content.partitions.b.uuid"
            ]
        );
    }

    #[test]
    fn thousands_of_unknown_options_are_counted_not_listed() {
        let junk: Map<String, Value> = (0..5000)
            .map(|i| (format!("option{i}"), json!(i)))
            .collect();
        let (_, findings) = build_json(json!({
            "disko": { "devices": { "disk": { "main": { "device": "/dev/sda", "content": {
                "type": "gpt", "partitions": { "root": junk }
            }}}}}
        }));
        assert_eq!(findings.len(), MAX_UNKNOWN_KEYS + 1, "{findings:?}");
        assert!(findings.iter().all(|f| f.code == "MODEL003"));
        let summary = findings
            .iter()
            .find(|f| f.message.contains("4980 more"))
            .expect("a summary");
        assert_eq!(
            summary.path.to_string(),
            "disko.devices.disk.main.content.partitions.root"
        );
    }

    #[test]
    fn a_missing_layout_is_a_finding() {
        let (layout, findings) = build_json(json!({ "fileSystems": {} }));
        assert!(layout.is_none());
        assert_eq!(codes(&findings), vec!["MODEL004"]);
        let (_, findings) = build_json(json!(42));
        assert_eq!(codes(&findings), vec!["MODEL001"]);
    }

    #[test]
    fn reads_neededforboot_tmpfiles_and_persistence() {
        let layout_json = json!({
            "disko": { "devices": { "disk": { "main": { "device": "/dev/sda" } } } },
            "fileSystems": { "/persist": { "neededForBoot": true, "options": ["x"] } },
            "systemd": { "tmpfiles": {
                "settings": { "10": { "/var/lib/containers": { "h": { "argument": "+C" } } } },
                "rules": [ "h /srv/db - - - - +C", "d /tmp 1777 root root -" ]
            } }
        });
        let persistence = json!({ "/persist": {
            "directories": [ "/var/lib/nixos", { "directory": "/var/lib/tailscale", "mode": "0700" } ],
            "files": [ "/etc/machine-id" ],
            "users": { "hbohlen": { "files": [ ".ssh/authorized_keys" ] } }
        }});
        let (layout, findings) = build(&Evaluated {
            host: "t",
            source: Utf8Path::new("/t/disko.nix"),
            layout: &layout_json,
            persistence: &persistence,
        });
        assert!(findings.is_empty(), "{findings:?}");
        let layout = layout.unwrap();
        assert_eq!(layout.file_systems["/persist"].needed_for_boot, Some(true));
        let nocow: Vec<&str> = layout
            .nocow_paths
            .iter()
            .map(|n| n.target.as_str())
            .collect();
        assert_eq!(nocow, vec!["/var/lib/containers", "/srv/db"]);
        let targets: Vec<&str> = layout.persistence[0]
            .entries
            .iter()
            .map(|e| e.target.as_str())
            .collect();
        assert_eq!(
            targets,
            vec![
                "/var/lib/nixos",
                "/var/lib/tailscale",
                "/etc/machine-id",
                "/home/hbohlen/.ssh/authorized_keys"
            ]
        );
    }
}
