//! What disko does to the empty disk: partition, link and format.

use super::*;
use layout::Content;

impl<'a> Realisation<'a> {
    /// disko's gpt `_create`: `sgdisk --clear` on a disk without a table,
    /// then one sgdisk call per partition, in creation order (disko's
    /// lib/types/gpt.nix, with the arguments in its order).
    pub(super) fn create(&self, steps: &mut Vec<Step>) {
        let sgdisk = &self.tools.sgdisk;
        steps.push(step(
            "sgdisk:clear",
            OnFailure::Stop,
            self.run(strings([sgdisk, "--clear", GUEST_DISK])),
        ));
        for partition in self.partitions() {
            let n = partition.number;
            let mut argv = strings([sgdisk, "--align-end"]);
            if partition.alignment != 0 {
                argv.push(format!("--set-alignment={}", partition.alignment));
            }
            argv.push(format!("--new={n}:{}:{}", partition.start, partition.end));
            // The model keeps no `uuid` or `attributes`: disko's defaults.
            argv.push(format!("--partition-guid={n}:R"));
            argv.push(format!("--change-name={n}:{}", partition.label));
            argv.push(format!("--typecode={n}:{}", partition.type_code));
            argv.push(format!("--attributes={n}:=:0"));
            argv.push(GUEST_DISK.to_owned());
            steps.push(step(
                &format!("sgdisk:{n}"),
                OnFailure::Stop,
                self.run(argv),
            ));
        }
    }

    /// What udev does: /dev/disk/by-partlabel/<label> for each partition.
    pub(super) fn link_partitions(&self, steps: &mut Vec<Step>) {
        let links = self
            .partitions()
            .iter()
            .map(|p| PartitionLink {
                number: p.number,
                label: p.label.clone(),
                link: p.device.clone(),
            })
            .collect();
        steps.push(step(
            "udev:partlabels",
            OnFailure::Stop,
            Action::LinkPartitions {
                disk: GUEST_DISK.to_owned(),
                links,
            },
        ));
    }

    /// The contents' `_create`, in partition order, after every partition
    /// exists: mkfs.vfat, mkswap (not for randomly encrypted swap), mkfs.btrfs
    /// and the subvolumes (sorted by name, as disko creates them; disko mounts
    /// the top level once per subvolume, here once for all, to the same effect).
    pub(super) fn format(&self, steps: &mut Vec<Step>) {
        for partition in self.partitions() {
            let Some(content) = &partition.content else {
                continue;
            };
            let key = &partition.key;
            match content {
                Content::Filesystem(fs) => {
                    let mut argv = vec![self.tools.mkfs_vfat.clone()];
                    argv.extend(fs.extra_args.iter().cloned());
                    argv.push(fs.device.clone());
                    steps.push(step(
                        &format!("mkfs:{key}"),
                        OnFailure::Stop,
                        self.run(argv),
                    ));
                }
                // disko leaves randomly encrypted swap to NixOS, which sets it up at every boot.
                Content::Swap(swap) if !swap.random_encryption => {
                    steps.push(step(
                        &format!("mkswap:{key}"),
                        OnFailure::Stop,
                        self.run(strings([&self.tools.mkswap, &swap.device])),
                    ));
                }
                Content::Swap(_) => {}
                Content::Btrfs(btrfs) => {
                    let mut argv = strings([&self.tools.mkfs_btrfs, &btrfs.device]);
                    argv.extend(btrfs.extra_args.iter().cloned());
                    // disko lets mkfs discard the whole device; on a fresh
                    // sparse image that only costs time (the prototype's trap).
                    argv.push("--nodiscard".to_owned());
                    steps.push(step(
                        &format!("mkfs:{key}"),
                        OnFailure::Stop,
                        self.run(argv),
                    ));
                    steps.push(step(
                        "disko:mount-top-level",
                        OnFailure::Stop,
                        Action::MakeDirectories {
                            paths: vec![DISKO_MOUNT.to_owned()],
                        },
                    ));
                    steps.push(step(
                        "disko:mount",
                        OnFailure::Stop,
                        self.run(strings([
                            &self.tools.mount,
                            "-t",
                            "btrfs",
                            "-o",
                            "subvol=/",
                            &btrfs.device,
                            DISKO_MOUNT,
                        ])),
                    ));
                    for subvolume in &btrfs.subvolumes {
                        if self
                            .tamper
                            .contains(&Tamper::DropSubvolume(subvolume.name.clone()))
                        {
                            continue;
                        }
                        let mut argv = strings([
                            &self.tools.btrfs,
                            "subvolume",
                            "create",
                            &format!("{DISKO_MOUNT}/{}", subvolume.name),
                        ]);
                        argv.extend(subvolume.extra_args.iter().cloned());
                        steps.push(step(
                            &format!("subvolume:{}", subvolume.name),
                            OnFailure::Stop,
                            self.run(argv),
                        ));
                    }
                    steps.push(step(
                        "disko:umount",
                        OnFailure::Stop,
                        self.run(strings([&self.tools.umount, DISKO_MOUNT])),
                    ));
                }
            }
        }
    }
}
