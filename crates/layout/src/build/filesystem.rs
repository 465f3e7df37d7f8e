//! A plain filesystem (disko's `filesystem` type): format, mountpoint, options.

use super::*;

const FILESYSTEM_KEYS: &[&str] = &[
    "type",
    "device",
    "extraArgs",
    "mountOptions",
    "mountpoint",
    "format",
];

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FilesystemFields {
    device: Option<String>,
    format: Option<String>,
    mountpoint: Option<String>,
    mount_options: Option<Vec<String>>,
    extra_args: Option<Vec<String>>,
}

impl Builder {
    pub(super) fn filesystem(
        &mut self,
        map: &Map<String, Value>,
        value: &Value,
        path: AttrPath,
        device: &str,
    ) -> Option<Content> {
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
        self.mounted_options_not_empty(
            fields.mount_options.as_ref(),
            fields.mountpoint.as_ref(),
            &path,
        );
        Some(Content::Filesystem(Filesystem {
            device: fields.device.unwrap_or_else(|| device.to_owned()),
            format,
            mountpoint: fields.mountpoint,
            mount_options: mount_options(fields.mount_options),
            extra_args: fields.extra_args.unwrap_or_default(),
            path,
        }))
    }
}
