//! A Btrfs filesystem (disko's `btrfs` type): its subvolumes and swap files.

use super::*;

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

const SWAPFILE_KEYS: &[&str] = &["size", "path", "priority", "options"];

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

impl Builder {
    pub(super) fn subvolume(
        &mut self,
        key: &str,
        value: &Value,
        path: AttrPath,
    ) -> Option<Subvolume> {
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
    pub(super) fn swapfiles(
        &mut self,
        map: &Map<String, Value>,
        path: &AttrPath,
    ) -> Option<Vec<Swapfile>> {
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

    pub(super) fn btrfs(
        &mut self,
        map: &Map<String, Value>,
        value: &Value,
        path: AttrPath,
        device: &str,
    ) -> Option<Content> {
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
        self.mounted_options_not_empty(
            fields.mount_options.as_ref(),
            fields.mountpoint.as_ref(),
            &path,
        );
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
}
