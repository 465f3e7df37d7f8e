//! A swap partition (disko's `swap` type).

use super::*;

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

impl Builder {
    pub(super) fn swap(
        &mut self,
        map: &Map<String, Value>,
        value: &Value,
        path: AttrPath,
        device: &str,
    ) -> Option<Content> {
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
}
