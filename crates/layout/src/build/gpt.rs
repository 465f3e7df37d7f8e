//! A GPT partition table (disko's `gpt` type) and its partitions: types,
//! labels, priorities and the creation order disko gives them.

use super::*;

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

const HYBRID_KEYS: &[&str] = &["mbrPartitionType", "mbrBootableFlag"];

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

/// `8-4-4-4-12` hex digits, as sgdisk takes a GUID.
pub(super) fn is_guid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(group, len)| group.len() == len && group.chars().all(|c| c.is_ascii_hexdigit()))
}

/// disko's partition `type`: an sgdisk code of 4 hex digits, or a GUID.
pub(super) fn is_type_code(text: &str) -> bool {
    (text.len() == 4 && text.chars().all(|c| c.is_ascii_hexdigit())) || is_guid(text)
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

impl Builder {
    pub(super) fn gpt(
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

    pub(super) fn partition(
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
}
