//! What the NixOS configuration adds to the layout: `fileSystems` flags,
//! tmpfiles' No_COW paths, the resume device, and impermanence's persisted
//! paths.

use super::*;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FileSystemEntryFields {
    needed_for_boot: Option<bool>,
    options: Option<Vec<String>>,
    device: Option<String>,
    fs_type: Option<String>,
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

impl Builder {
    pub(super) fn file_systems(
        &mut self,
        value: Option<&Value>,
    ) -> BTreeMap<String, FileSystemFlags> {
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
    pub(super) fn nocow_paths(&mut self, systemd: Option<&Value>) -> Vec<NocowPath> {
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

    pub(super) fn resume_device(&mut self, boot: Option<&Value>) -> Option<String> {
        match boot.and_then(|b| b.get("resumeDevice")) {
            Some(Value::String(device)) if !device.is_empty() => Some(device.clone()),
            _ => None,
        }
    }

    pub(super) fn persistence(&mut self, value: &Value) -> Vec<PersistenceRoot> {
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

    pub(super) fn persisted_entries(
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
