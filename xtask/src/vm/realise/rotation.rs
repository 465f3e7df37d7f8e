//! The rollback as the initrd runs it, and what the guest must find after
//! it: the files of earlier boots gone, the old roots as retention keeps them.

use std::collections::BTreeMap;

use anyhow::{Context as _, Result};
use sha2::{Digest, Sha256};

use super::*;
use layout::impermanence::{MANAGEMENT_MOUNTPOINT, OLD_ROOTS_SUBVOLUME, PERSIST_MOUNTPOINT};

/// `boot.btrfsRollback` of the host (hosts/<host>/rollback.nix), which the
/// NixOS module turns into the script's environment; the module's defaults
/// when the host does not set them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollbackSettings {
    pub mount_point: String,
    pub root_subvolume: String,
    pub old_roots_subvolume: String,
    pub retention_days: u64,
    pub keep_at_least: u64,
    /// Where they were read from, for the report.
    pub source: String,
}

impl Default for RollbackSettings {
    /// nix/modules/btrfs-rollback/default.nix's option defaults.
    fn default() -> Self {
        RollbackSettings {
            mount_point: MANAGEMENT_MOUNTPOINT.to_owned(),
            root_subvolume: "@root".to_owned(),
            old_roots_subvolume: OLD_ROOTS_SUBVOLUME.to_owned(),
            retention_days: 30,
            keep_at_least: 5,
            source: "the module's defaults".to_owned(),
        }
    }
}

impl RollbackSettings {
    /// Reads `boot.btrfsRollback` from an evaluated rollback.nix; unset
    /// options keep the module's defaults.
    pub fn from_evaluation(value: &serde_json::Value, source: &str) -> anyhow::Result<Self> {
        let mut settings = RollbackSettings {
            source: source.to_owned(),
            ..RollbackSettings::default()
        };
        let Some(config) = value.pointer("/boot/btrfsRollback") else {
            return Ok(settings);
        };
        let text = |key: &str| -> anyhow::Result<Option<String>> {
            match config.get(key) {
                None => Ok(None),
                Some(v) => v
                    .as_str()
                    .map(|s| Some(s.to_owned()))
                    .with_context(|| format!("{source}: boot.btrfsRollback.{key} is not a string")),
            }
        };
        let number = |key: &str| -> anyhow::Result<Option<u64>> {
            match config.get(key) {
                None => Ok(None),
                Some(v) => v.as_u64().map(Some).with_context(|| {
                    format!("{source}: boot.btrfsRollback.{key} is not a whole number")
                }),
            }
        };
        if let Some(v) = text("mountPoint")? {
            settings.mount_point = v;
        }
        if let Some(v) = text("rootSubvolume")? {
            settings.root_subvolume = v;
        }
        if let Some(v) = text("oldRootsSubvolume")? {
            settings.old_roots_subvolume = v;
        }
        if let Some(v) = number("retentionDays")? {
            settings.retention_days = v;
        }
        if let Some(v) = number("keepAtLeast")? {
            settings.keep_at_least = v;
        }
        Ok(settings)
    }
}

impl<'a> Realisation<'a> {
    /// The rollback, as the initrd's postDeviceCommands run it: before any mount.
    pub(super) fn rollback(&self, steps: &mut Vec<Step>, spec: &BootSpec) -> Result<()> {
        let script = self
            .rollback
            .as_ref()
            .context("the rollback script is not in the image")?;
        let btrfs = self
            .root_btrfs()
            .context("/ is not on Btrfs; there is nothing to roll back")?;
        // The environment the NixOS module gives the script.
        let settings = &self.rollback_settings;
        let env: BTreeMap<String, String> = [
            ("PATH", GUEST_PATH.to_owned()),
            ("BTRFS_ROLLBACK_MOUNTPOINT", settings.mount_point.clone()),
            (
                "BTRFS_ROLLBACK_ROOT_SUBVOLUME",
                settings.root_subvolume.clone(),
            ),
            (
                "BTRFS_ROLLBACK_OLD_ROOTS_SUBVOLUME",
                settings.old_roots_subvolume.clone(),
            ),
            (
                "BTRFS_ROLLBACK_RETENTION_DAYS",
                settings.retention_days.to_string(),
            ),
            (
                "BTRFS_ROLLBACK_KEEP_AT_LEAST",
                settings.keep_at_least.to_string(),
            ),
            ("BTRFS_ROLLBACK_STATUS_DIR", ROLLBACK_STATUS_DIR.to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        steps.push(step(
            "rollback",
            OnFailure::Continue,
            Action::Rollback(RollbackStep {
                script: script.guest_path.clone(),
                script_sha256: script.sha256.clone(),
                argv: strings([&self.tools.busybox, "sh", &script.guest_path, &btrfs.device]),
                env,
                status_dir: ROLLBACK_STATUS_DIR.to_owned(),
                max_ms: MAX_ROTATION_MS,
                rotation_required: spec.history == History::Clean,
                extra_runs: spec.extra_runs.clone(),
                first_run_holds: self.relative_root_files(spec.first_run_holds),
                old_roots: OldRootsPlace {
                    device: btrfs.device.clone(),
                    directory: settings.old_roots_subvolume.clone(),
                },
            }),
        ));
        Ok(())
    }

    /// Files written into `/` at `boot`: on the root subvolume, never below another mount.
    pub fn root_files(&self, boot: u32) -> Vec<String> {
        [
            format!("/etc/xtask-boot-{boot}"),
            format!("/root/xtask/boot-{boot}.txt"),
            format!("/var/tmp/xtask-boot-{boot}"),
            format!("/xtask-boot-{boot}"),
        ]
        .into_iter()
        .filter(|path| {
            !self
                .context
                .mounts
                .iter()
                .any(|m| m.mountpoint != "/" && layout::paths::is_at_or_below(path, &m.mountpoint))
        })
        .collect()
    }

    /// What `root_files(boot)` hold.
    pub fn root_file_contents(&self, boot: u32) -> String {
        format!("written into / at boot {boot} of run {}\n", self.nonce)
    }

    pub(super) fn write_root_files(&self, steps: &mut Vec<Step>, boot: u32) {
        for path in self.root_files(boot) {
            let target = in_sysroot(&path);
            steps.push(step(
                &format!("write:{path}"),
                OnFailure::Continue,
                Action::WriteFile {
                    path: target,
                    contents: self.root_file_contents(boot),
                },
            ));
        }
    }

    /// `/` is a new, empty root: checked before anything writes into it.
    pub(super) fn fresh_root_checks(&self, steps: &mut Vec<Step>, boot: u32) {
        let mut allowed: Vec<String> = self
            .context
            .mounts
            .iter()
            .filter_map(|m| m.mountpoint.trim_start_matches('/').split('/').next())
            .filter(|first| !first.is_empty())
            .map(str::to_owned)
            .collect();
        allowed.extend(
            self.layout
                .nocow_paths
                .iter()
                .filter_map(|n| n.target.trim_start_matches('/').split('/').next())
                .map(str::to_owned),
        );
        allowed.sort();
        allowed.dedup();
        steps.push(check(
            "root-fresh",
            Expect::FreshRoot {
                path: in_sysroot("/"),
                allowed,
            },
        ));
        let previous: Vec<String> = (1..boot).flat_map(|b| self.root_files(b)).collect();
        steps.push(check(
            "root-wiped",
            Expect::Absent {
                paths: previous.iter().map(|p| in_sysroot(p)).collect(),
            },
        ));
    }

    /// What a rotation must leave: the markers, the old roots, the layout's
    /// subvolumes and mount options.
    pub(super) fn rotate_checks(&self, steps: &mut Vec<Step>, spec: &BootSpec) {
        for mount in self.persistent_mounts() {
            let name = if mount.mountpoint == PERSIST_MOUNTPOINT {
                "persist-marker".to_owned()
            } else {
                format!("marker:{}", mount.mountpoint)
            };
            steps.push(check(
                &name,
                Expect::Digest {
                    path: format!("{}/{MARKER_NAME}", in_sysroot(&mount.mountpoint)),
                    sha256: hex(&Sha256::digest(self.marker_contents(mount).as_bytes())),
                },
            ));
        }
        self.old_roots_check(steps, spec);
        self.subvolume_check(steps);
        self.mount_option_checks(steps);
    }

    /// `root_files(boot)` relative to the root, as an old root holds them.
    pub(super) fn relative_root_files(&self, boot: Option<u32>) -> Vec<String> {
        boot.map(|b| {
            self.root_files(b)
                .iter()
                .map(|p| p.trim_start_matches('/').to_owned())
                .collect()
        })
        .unwrap_or_default()
    }

    /// @old_roots: as many as the retention model says, well named, and
    /// holding the files earlier boots wrote into /.
    pub(super) fn old_roots_check(&self, steps: &mut Vec<Step>, spec: &BootSpec) {
        let relative = |boot: Option<u32>| self.relative_root_files(boot);
        let Some(btrfs) = self.root_btrfs() else {
            return;
        };
        let (min_count, max_count) = match (spec.old_roots_expected, spec.history) {
            (Some(range), _) => range,
            (None, History::Clean) => (spec.boot - 1, spec.boot - 1),
            // The cut boot may or may not have moved its root; this boot moves
            // one unless the cut fell between the move and the new root.
            (
                None,
                History::AfterPowerCut {
                    old_roots_before, ..
                },
            ) => (old_roots_before + 1, old_roots_before + 2),
        };
        steps.push(check(
            "old-roots",
            Expect::OldRoots {
                device: btrfs.device.clone(),
                directory: self.rollback_settings.old_roots_subvolume.clone(),
                min_count,
                max_count,
                newest_holds: relative(spec.newest_holds),
                some_holds: relative(spec.some_holds),
            },
        ));
    }
}
