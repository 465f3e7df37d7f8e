//! What the guest must find after the install and in every boot: markers,
//! data, subvolumes, mount options, the trim probe.

use super::*;
use layout::kernel_options::{compression, has_nodatacow};
use layout::{Mount, MountSource};

impl<'a> Realisation<'a> {
    pub(super) fn marker_contents(&self, mount: &Mount) -> String {
        format!(
            "xtask vm-test marker\nhost: {}\nmountpoint: {}\nrun: {}\n",
            self.layout.host, mount.mountpoint, self.nonce
        )
    }

    /// Boot 1's data: markers, files in /, a store-like /nix and text where logs and state go.
    pub(super) fn fill(&self, steps: &mut Vec<Step>, boot: u32) {
        for mount in self.persistent_mounts() {
            steps.push(step(
                &format!("marker:{}", mount.mountpoint),
                OnFailure::Continue,
                Action::WriteFile {
                    path: format!("{}/{MARKER_NAME}", in_sysroot(&mount.mountpoint)),
                    contents: self.marker_contents(mount),
                },
            ));
        }
        self.write_root_files(steps, boot);
        for mount in self.data_mounts() {
            let dir = format!("{}/xtask-data", in_sysroot(&mount.mountpoint));
            // Each action creates the directories it writes into.
            let action = if mount.mountpoint == "/nix" {
                Action::CopyTree {
                    sources: strings(["/usr", "/bin", "/lib", "/lib64", "/etc/xtask"]),
                    destination: format!("{}/store", in_sysroot("/nix")),
                }
            } else {
                Action::WriteLogText {
                    path: format!("{dir}/journal.txt"),
                    bytes: 4 << 20,
                    seed: u64::from(mount.mountpoint.len() as u32) * 7919 + 17,
                }
            };
            steps.push(step(
                &format!("fill:{}", mount.mountpoint),
                OnFailure::Continue,
                action,
            ));
        }
        steps.push(step("sync", OnFailure::Continue, Action::Sync));
    }

    pub(super) fn install_checks(&self, steps: &mut Vec<Step>) {
        let partitions = self
            .partitions()
            .iter()
            .filter_map(|p| {
                let extent = self.geometry.extent(p.number)?;
                Some(ExpectedPartition {
                    number: p.number,
                    start_sector: extent.start_sector,
                    end_sector: extent.end_sector,
                    type_code: p.type_code.clone(),
                    label: p.label.clone(),
                })
            })
            .collect();
        steps.push(check(
            "partition-table",
            Expect::PartitionTable {
                disk: GUEST_DISK.to_owned(),
                partitions,
            },
        ));
        self.subvolume_check(steps);
        self.mount_option_checks(steps);
        for mount in &self.context.mounts {
            if mount.fs_type != "vfat" {
                continue;
            }
            let options = self.context.options_in_effect(&mount.mountpoint);
            let (directory_mode, file_mode) = vfat_modes(&options);
            steps.push(check(
                &format!("esp-permissions:{}", mount.mountpoint),
                Expect::Permissions {
                    directory: in_sysroot(&mount.mountpoint),
                    directory_mode,
                    file_mode,
                },
            ));
        }
        for mount in self.data_mounts() {
            let MountSource::Subvolume { name } = &mount.source else {
                continue;
            };
            let options = self.context.options_in_effect(&mount.mountpoint);
            // No_COW data is never compressed, whatever the mount says.
            let algorithm = if self.is_nocow(&mount.mountpoint) || has_nodatacow(&options) {
                None
            } else {
                compression(&options).map(|c| c.split(':').next().unwrap_or(&c).to_owned())
            };
            let min_saving_percent = (mount.mountpoint == "/nix" && algorithm.is_some())
                .then_some(MIN_STORE_SAVING_PERCENT);
            steps.push(check(
                &format!("compression:{name}"),
                Expect::Compression {
                    path: in_sysroot(&mount.mountpoint),
                    subvolume: name.clone(),
                    algorithm,
                    min_saving_percent,
                },
            ));
        }
        for nocow in &self.layout.nocow_paths {
            steps.push(check(
                &format!("nocow:{}", nocow.target),
                Expect::NoCow {
                    directory: in_sysroot(&nocow.target),
                },
            ));
        }
    }

    pub(super) fn subvolume_check(&self, steps: &mut Vec<Step>) {
        for btrfs in self.layout.btrfs_filesystems() {
            steps.push(check(
                "subvolumes",
                Expect::Subvolumes {
                    device: btrfs.device.clone(),
                    names: btrfs.subvolumes.iter().map(|s| s.name.clone()).collect(),
                },
            ));
        }
    }

    pub(super) fn mount_option_checks(&self, steps: &mut Vec<Step>) {
        for mount in &self.context.mounts {
            let Some(effective) = self.context.effective.get(&mount.mountpoint) else {
                continue;
            };
            steps.push(check(
                &format!("mount-options:{}", mount.mountpoint),
                Expect::MountOptions {
                    mountpoint: in_sysroot(&mount.mountpoint),
                    fs_type: mount.fs_type.clone(),
                    options: kernel_forms(&mount.fs_type, &effective.options),
                },
            ));
        }
    }

    /// The install's root takes `ROLLBACK_TRIM_BYTES` of incompressible
    /// data into the month, whose rollback deletes it.
    pub(super) fn rollback_trim_file(&self, steps: &mut Vec<Step>) {
        steps.push(step(
            "rollback-trim:write",
            OnFailure::Continue,
            Action::WriteRandom {
                path: in_sysroot(ROLLBACK_TRIM_FILE),
                bytes: ROLLBACK_TRIM_BYTES,
            },
        ));
    }

    /// After the rollback's deletions: wait until Btrfs has freed the
    /// deleted roots' extents (its cleaner works in the background, also
    /// after the next mount; the server's fstrim.service runs minutes
    /// after boot), measure, run the host's fstrim.service command when
    /// its timer starts it, measure again. The host compares the points
    /// (`trim:rollback-freed`).
    pub(super) fn rollback_trim(&self, steps: &mut Vec<Step>, trim: &RollbackTrim) {
        let Some(top) = self
            .context
            .mounts
            .iter()
            .find(|m| m.mountpoint == self.rollback_settings.mount_point)
        else {
            return;
        };
        steps.push(step(
            "rollback-trim:cleaned",
            OnFailure::Continue,
            self.run(vec![
                self.tools.btrfs.clone(),
                "subvolume".into(),
                "sync".into(),
                in_sysroot(&top.mountpoint),
            ]),
        ));
        steps.push(step(
            "rollback-trim:sync",
            OnFailure::Continue,
            Action::Sync,
        ));
        steps.push(measure(ROLLBACK_TRIM_DELETED));
        if !trim.triggers.is_empty() {
            steps.push(check(
                "trim:fstrim-service",
                Expect::FstrimService {
                    args: crate::deploy_checklist::facts::FSTRIM_SERVICE_ARGS
                        .iter()
                        .map(|a| (*a).to_owned())
                        .collect(),
                    mountpoint: in_sysroot("/"),
                    triggers: trim.triggers.clone(),
                },
            ));
        }
        steps.push(measure(ROLLBACK_TRIM_AFTER));
    }

    /// Delete-and-trim on the root: fstrim works, async discard queues the
    /// freed extents, and the host image gives the space back.
    pub(super) fn trim_probe(&self, steps: &mut Vec<Step>) {
        let root = in_sysroot("/");
        let probe = in_sysroot("/var/tmp/xtask-trim-probe");
        steps.push(check(
            "trim:fstrim",
            Expect::Fstrim {
                mountpoint: root.clone(),
                min_bytes: 1,
            },
        ));
        steps.push(step(
            "trim:write",
            OnFailure::Continue,
            Action::WriteRandom {
                path: probe.clone(),
                bytes: TRIM_PROBE_BYTES,
            },
        ));
        steps.push(step(
            "trim:measure-before",
            OnFailure::Continue,
            Action::Measure {
                point: "trim.before".to_owned(),
                device: GUEST_DISK.to_owned(),
            },
        ));
        steps.push(step(
            "trim:delete",
            OnFailure::Continue,
            Action::Remove { path: probe },
        ));
        steps.push(step("trim:sync", OnFailure::Continue, Action::Sync));
        steps.push(check(
            "trim:discard-async",
            Expect::AsyncDiscard {
                mountpoint: root.clone(),
            },
        ));
        steps.push(check(
            "trim:fstrim-after-delete",
            Expect::Fstrim {
                mountpoint: root,
                min_bytes: 0,
            },
        ));
        steps.push(step(
            "trim:measure-after",
            OnFailure::Continue,
            Action::Measure {
                point: "trim.after".to_owned(),
                device: GUEST_DISK.to_owned(),
            },
        ));
    }
}
