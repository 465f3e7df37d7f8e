//! A disk (disko's `disk` type): its device, its content, its image size.

use super::*;

const DISK_KEYS: &[&str] = &[
    "type",
    "name",
    "device",
    "destroy",
    "imageName",
    "imageSize",
    "content",
];

/// Fields read through serde, with disko's defaults applied later.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DiskFields {
    #[serde(rename = "type")]
    kind: Option<String>,
    name: Option<String>,
    device: Option<String>,
}

impl Builder {
    pub(super) fn disk(&mut self, key: &str, value: &Value, path: AttrPath) -> Option<Disk> {
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
}
