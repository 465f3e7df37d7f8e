//! What NixOS mounts at every boot, in its order, and the options as the
//! kernel shows them; randomly encrypted swap.

use super::*;
use layout::{Content, Mount, MountSource};

impl<'a> Realisation<'a> {
    pub(super) fn mount_argv(&self, mount: &Mount) -> Vec<String> {
        let options: Vec<&str> = mount
            .options
            .iter()
            .map(String::as_str)
            .filter(|o| !o.is_empty())
            .filter(|o| {
                !self.tamper.iter().any(|t| {
                    matches!(t, Tamper::DropMountOption { mountpoint, option }
                        if *mountpoint == mount.mountpoint && option == o)
                })
            })
            .collect();
        let mut argv = strings([&self.tools.mount, "-t", &mount.fs_type]);
        if !options.is_empty() {
            argv.push("-o".to_owned());
            argv.push(options.join(","));
        }
        argv.push(mount.device.clone());
        argv.push(in_sysroot(&mount.mountpoint));
        argv
    }

    /// Stage 1 and 2 of NixOS: the mounts in order, then tmpfiles' +C (swap follows).
    pub(super) fn mount_filesystems(&self, steps: &mut Vec<Step>) {
        for mount in &self.context.mounts {
            let stop = if mount.mountpoint == "/" {
                OnFailure::Stop
            } else {
                OnFailure::Continue
            };
            steps.push(step(
                &format!("mkdir:{}", mount.mountpoint),
                stop,
                Action::MakeDirectories {
                    paths: vec![in_sysroot(&mount.mountpoint)],
                },
            ));
            steps.push(step(
                &format!("mount:{}", mount.mountpoint),
                stop,
                self.run(self.mount_argv(mount)),
            ));
        }
        for nocow in &self.layout.nocow_paths {
            // tmpfiles' `h` only sets attributes; a mountpoint already exists.
            if !self
                .context
                .mounts
                .iter()
                .any(|m| m.mountpoint == nocow.target)
            {
                steps.push(step(
                    &format!("mkdir:{}", nocow.target),
                    OnFailure::Continue,
                    Action::MakeDirectories {
                        paths: vec![in_sysroot(&nocow.target)],
                    },
                ));
            }
            steps.push(step(
                &format!("tmpfiles:+C {}", nocow.target),
                OnFailure::Continue,
                self.run(strings([
                    &self.tools.chattr,
                    "+C",
                    &in_sysroot(&nocow.target),
                ])),
            ));
        }
    }

    /// Swap as nixos/modules/config/swap.nix sets it up.
    pub(super) fn swap_on(&self, steps: &mut Vec<Step>) {
        for (_, partition, content) in self.layout.contents() {
            let Content::Swap(swap) = content else {
                continue;
            };
            let key = partition.map_or("swap", |p| p.key.as_str());
            let mut swapon = vec![self.tools.swapon.clone()];
            if let Some(priority) = swap.priority {
                swapon.push(format!("--priority={priority}"));
            }
            match swap.discard_policy.as_deref() {
                Some("both") => swapon.push("--discard".to_owned()),
                Some(policy) => swapon.push(format!("--discard={policy}")),
                None => {}
            }
            if swap.random_encryption {
                // nixos/modules/config/swap.nix: a plain mapping keyed from
                // /dev/urandom at every boot, then mkswap on it.
                let name = systemd_device_name(&swap.device);
                let mapper = format!("/dev/mapper/{name}");
                steps.push(step(
                    &format!("swap:open {key}"),
                    OnFailure::Continue,
                    self.run(strings([
                        &self.tools.cryptsetup,
                        "plainOpen",
                        "-c",
                        "aes-xts-plain64",
                        "-d",
                        "/dev/urandom",
                        &swap.device,
                        &name,
                    ])),
                ));
                steps.push(step(
                    &format!("udev:mapper {key}"),
                    OnFailure::Continue,
                    Action::LinkMapper { name: name.clone() },
                ));
                steps.push(check(
                    "swap-fresh-key",
                    Expect::SwapFreshKey {
                        mapper: mapper.clone(),
                    },
                ));
                steps.push(step(
                    &format!("swap:mkswap {key}"),
                    OnFailure::Continue,
                    self.run(strings([&self.tools.mkswap, &mapper])),
                ));
                swapon.push(mapper.clone());
                steps.push(step(
                    &format!("swap:on {key}"),
                    OnFailure::Continue,
                    self.run(swapon),
                ));
                let sectors = partition
                    .and_then(|p| self.geometry.extent(p.number))
                    .map_or(0, |e| e.sectors());
                steps.push(check(
                    "swap-encrypted",
                    Expect::SwapEncrypted {
                        mapper,
                        device: swap.device.clone(),
                        cipher: "aes-xts-plain64".to_owned(),
                        sectors,
                    },
                ));
            } else {
                swapon.push(swap.device.clone());
                steps.push(step(
                    &format!("swap:on {key}"),
                    OnFailure::Continue,
                    self.run(swapon),
                ));
            }
        }
    }

    /// Mounts that persist across boots and get a marker: all but `/` and
    /// the management mount of the top level.
    pub(super) fn persistent_mounts(&self) -> Vec<&'a Mount> {
        self.context
            .mounts
            .iter()
            .filter(|m| m.mountpoint != "/" && m.source != MountSource::BtrfsTopLevel)
            .collect()
    }

    /// Btrfs subvolume mounts that get data: all but the snapshots' and the top level.
    pub(super) fn data_mounts(&self) -> Vec<&'a Mount> {
        self.context
            .mounts
            .iter()
            .filter(|m| matches!(m.source, MountSource::Subvolume { .. }))
            .filter(|m| m.mountpoint != "/.snapshots")
            .collect()
    }

    pub(super) fn is_nocow(&self, mountpoint: &str) -> bool {
        self.layout
            .nocow_paths
            .iter()
            .any(|n| n.target == mountpoint)
    }
}

/// NixOS's name for a randomly encrypted swap device's mapping:
/// `utils.escapeSystemdPath device` without the backslashes
/// (/dev/disk/by-partlabel/disk-main-swap → dev-disk-byx2dpartlabel-diskx2dmainx2dswap).
pub fn systemd_device_name(device: &str) -> String {
    let trimmed = device.trim_matches('/');
    let mut out = String::new();
    for (index, c) in trimmed.chars().enumerate() {
        match c {
            '/' => out.push('-'),
            '.' if index == 0 => out.push_str("x2e"),
            c if " !\"#$%&'()*+,;<=>@[\\]^`{|}~-".contains(c) => {
                out.push_str(&format!("x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out
}
