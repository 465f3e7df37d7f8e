//! The deployment steps, the post-deploy verification (each command with its
//! expected output, computed from the layout) and the rollback plan.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::docs::Subject;
use crate::layout::size::{human, SECTOR_BYTES};
use crate::layout::{Content, DiskContent, EntryKind};
use crate::names::{partition_node, swap_mapper_name};
use crate::report::{Lifecycle, Tables};
use crate::results::{BootRecord, VmTestResults};
use crate::rules::impermanence::{
    MANAGEMENT_MOUNTPOINT, OLD_ROOTS_SUBVOLUME, PERSIST_MOUNTPOINT, PERSIST_SUBVOLUME,
};

/// x86-64 Linux pages: mkswap keeps the first for its header, so swapon
/// shows a swap area one page smaller than the device.
const PAGE_BYTES: u64 = 4096;
const SNAPSHOTS_MOUNTPOINT: &str = "/.snapshots";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Where {
    /// On your workstation, in this repository.
    Local,
    /// On the server, as root.
    Server,
}

impl Where {
    pub fn prompt(self) -> &'static str {
        match self {
            Where::Local => "local$",
            Where::Server => "server#",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Command {
    #[serde(rename = "where")]
    pub at: Where,
    pub line: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub title: String,
    /// Why and what to watch for.
    pub notes: Vec<String>,
    pub commands: Vec<Command>,
    /// What the commands print when all is well (empty when nothing in particular).
    pub expected: Vec<String>,
    /// What to do next, or when the output differs.
    pub afterwards: Vec<String>,
}

/// What vm-test measured, as the checklist shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Measured {
    pub revision: Option<String>,
    pub finished_at: String,
    pub passed: bool,
    pub backend: String,
    pub accelerator: String,
    pub kernel: String,
    pub disk_bytes: u64,
    pub wall_ms: u64,
    pub boots: Vec<BootRecord>,
    pub figures: BTreeMap<String, f64>,
}

impl Measured {
    pub fn new(results: &VmTestResults) -> Measured {
        Measured {
            revision: results.header.revision.commit.clone(),
            finished_at: results.header.finished_at.clone(),
            passed: results.header.passed,
            backend: results.backend.clone(),
            accelerator: results.accelerator.clone(),
            kernel: results.kernel.clone(),
            disk_bytes: results.disk_bytes,
            wall_ms: results.wall_ms,
            boots: results.boots.clone(),
            figures: results.figures.clone(),
        }
    }

    fn figures_with_prefix(&self, prefix: &str) -> Vec<String> {
        self.figures
            .iter()
            .filter(|(name, _)| name.starts_with(prefix))
            .map(|(name, value)| format!("{name} = {}", figure(*value)))
            .collect()
    }
}

/// `47`, `0.31`, `1073741824`: figures without float noise.
pub fn figure(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{}", value as i64)
    } else {
        format!("{value:.2}")
    }
}

/// The values the user fills in.
pub const PLACEHOLDERS: &[(&str, &str)] = &[
    ("<IP>", "the server's public IPv4 address"),
    (
        "<server>",
        "the server's name or ID in Hetzner Cloud (for `hcloud`)",
    ),
    ("<key>", "the name of your SSH key in Hetzner Cloud"),
];

fn local(line: impl Into<String>) -> Command {
    Command {
        at: Where::Local,
        line: line.into(),
    }
}

fn server(line: impl Into<String>) -> Command {
    Command {
        at: Where::Server,
        line: line.into(),
    }
}

fn step(title: impl Into<String>) -> Step {
    Step {
        title: title.into(),
        notes: Vec::new(),
        commands: Vec::new(),
        expected: Vec::new(),
        afterwards: Vec::new(),
    }
}

impl Step {
    fn note(mut self, text: impl Into<String>) -> Step {
        self.notes.push(text.into());
        self
    }
    fn run(mut self, command: Command) -> Step {
        self.commands.push(command);
        self
    }
    fn expect(mut self, text: impl Into<String>) -> Step {
        self.expected.push(text.into());
        self
    }
    fn then(mut self, text: impl Into<String>) -> Step {
        self.afterwards.push(text.into());
        self
    }
}

/// Names the steps need, found in the layout (with the usual ones as fallback).
struct Names {
    persist: String,
    snapshots: String,
    old_roots: String,
    top: String,
}

fn names(tables: &Tables) -> Names {
    let mut names = Names {
        persist: PERSIST_SUBVOLUME.to_owned(),
        snapshots: "@snapshots".to_owned(),
        old_roots: OLD_ROOTS_SUBVOLUME.to_owned(),
        top: MANAGEMENT_MOUNTPOINT.to_owned(),
    };
    for fs in &tables.filesystems {
        for s in &fs.subvolumes {
            match s.mountpoint.as_deref() {
                Some(PERSIST_MOUNTPOINT) => names.persist = s.name.clone(),
                Some(SNAPSHOTS_MOUNTPOINT) => names.snapshots = s.name.clone(),
                Some(mp) if s.name == "(top level)" => names.top = mp.to_owned(),
                _ => {}
            }
            if s.lifecycle == Lifecycle::Retained {
                names.old_roots = s.name.clone();
            }
        }
    }
    names
}

/// The kernel's name of the partition (or whole disk) behind `device`.
fn kernel_node(subject: &Subject, device: &str) -> Option<String> {
    for disk in &subject.layout.disks {
        match &disk.content {
            Some(DiskContent::Gpt(gpt)) => {
                for p in &gpt.partitions {
                    let inside = p.device == device
                        || match &p.content {
                            Some(Content::Btrfs(b)) => b.device == device,
                            Some(Content::Swap(s)) => s.device == device,
                            Some(Content::Filesystem(f)) => f.device == device,
                            None => false,
                        };
                    if inside {
                        return partition_node(&disk.device, p.number);
                    }
                }
            }
            Some(DiskContent::Whole(_)) if disk.device == device => {
                return Some(disk.device.clone())
            }
            _ => {}
        }
    }
    None
}

pub fn deployment(subject: &Subject) -> Vec<Step> {
    let tables = subject.tables();
    let n = names(&tables);
    let attribute = subject.flake_attribute();
    let disks: Vec<String> = subject
        .layout
        .disks
        .iter()
        .map(|d| d.device.clone())
        .collect();
    let firmware: Vec<String> = subject
        .machine
        .firmware
        .iter()
        .map(|f| f.to_ascii_uppercase())
        .collect();
    let mut steps = Vec::new();

    // The repository cannot know the admin's key or the server's IPv6 address.
    if let Some(machine_file) = subject.sources.iter().find(|s| s.ends_with("machine.nix")) {
        steps.push(
            step(format!("Give the server its own facts in {machine_file}"))
                .note("adminSshKeys: hbohlen's SSH public key. The server has no passwords, so the build refuses an empty list (check reports HOST001).")
                .note("ipv6Address: the address of the server's /64 from the Cloud Console (Networking), with its prefix, e.g. \"2a01:4f8:c012:3456::1/64\"; null keeps the server on IPv4.")
                .note("Commit the change: the gates above are for a clean tree at that commit.")
                .run(local(format!(
                    "nix-instantiate --eval --strict --json -E '(import ./{machine_file}).adminSshKeys'"
                )))
                .expect("[\"ssh-ed25519 AAAA… you@laptop\"]   (at least one key)"),
        );
    }

    steps.push(
        step("Save what must outlive the install")
            .note(format!(
                "Installing erases {} completely: the partition table, every filesystem, {PERSIST_MOUNTPOINT} and every snapshot on the disk.",
                disks.join(" and ")
            ))
            .note(format!(
                "If the server already runs this configuration, copy {PERSIST_MOUNTPOINT} off it first (a read-only snapshot, streamed to your machine). Skip this on a new server."
            ))
            .run(local(format!(
                "ssh root@<IP> 'btrfs subvolume snapshot -r {top}/{persist} {top}/{snapshots}/{persist}.pre-install'",
                top = n.top,
                persist = n.persist,
                snapshots = n.snapshots
            )))
            .run(local(format!(
                "ssh root@<IP> 'btrfs send {top}/{snapshots}/{persist}.pre-install' | zstd > persist.pre-install.btrfs.zst",
                top = n.top,
                persist = n.persist,
                snapshots = n.snapshots
            )))
            .expect("a non-empty persist.pre-install.btrfs.zst; `zstd -t persist.pre-install.btrfs.zst` says OK"),
    );

    steps.push(
        step("Boot the Hetzner rescue system")
            .note("Rescue mode applies at the next boot and switches itself off once used (or after 60 minutes unused). The Cloud Console does the same: the server, Rescue, Enable rescue & power cycle.")
            .note("The rescue system has its own SSH host key: if ssh refuses it, run `ssh-keygen -R <IP>` once.")
            .run(local("hcloud server enable-rescue --type linux64 --ssh-key <key> <server>"))
            .run(local("hcloud server reboot <server>")),
    );

    let mut check_machine = step("Check the firmware and the disk in the rescue system")
        .note(format!(
            "The layout boots with {}: it has a BIOS boot partition for GRUB on BIOS and an ESP for UEFI.",
            if firmware.is_empty() {
                "BIOS or UEFI".to_owned()
            } else {
                firmware.join(" or ")
            }
        ))
        .run(local("ssh root@<IP> '[ -d /sys/firmware/efi ] && echo UEFI || echo BIOS'"))
        .expect(if firmware.is_empty() {
            "BIOS or UEFI".to_owned()
        } else {
            firmware.join(" or ")
        });
    for disk in &subject.layout.disks {
        check_machine = check_machine.run(local(format!(
            "ssh root@<IP> 'lsblk -b -d -n -o NAME,SIZE {}'",
            disk.device
        )));
        match subject.disk_sizes.get(&disk.key) {
            Some(bytes) => {
                check_machine = check_machine.expect(format!(
                    "{} {bytes}",
                    disk.device.trim_start_matches("/dev/")
                ))
            }
            None => {
                check_machine = check_machine.expect(format!(
                    "{}: any size (machine.nix gives none, so no geometry was checked)",
                    disk.device
                ))
            }
        }
    }
    check_machine = check_machine.then(
        "If a size differs, stop: run `cargo xtask check --disk-size <bytes>` with the size shown and review the partition table before going on.",
    );
    steps.push(check_machine);

    steps.push(
        step("Install with nixos-anywhere (this erases the disk)")
            .note("nixos-anywhere kexecs the rescue system into a NixOS installer, runs disko (unmount, wipe, partition, format, mount), installs the system and reboots.")
            .note("Add `--build-on remote` when this machine cannot build x86_64-linux (macOS, aarch64): the closure is then built on the server.")
            .note(format!(
                "Files to seed go through `--extra-files <dir>`, and must sit below `<dir>{PERSIST_MOUNTPOINT}/`: anything else lands in the root, which the first boot moves to {}.",
                n.old_roots
            ))
            .run(local(format!(
                "nix run github:nix-community/nixos-anywhere -- --flake .#{attribute} --target-host root@<IP>"
            )))
            .expect("nixos-anywhere ends with the installation done and the server rebooting"),
    );

    steps.push(
        step("Log in to the new system")
            .note("The new system has new SSH host keys (kept in /persist from now on).")
            .run(local("ssh-keygen -R <IP>"))
            .run(local("ssh root@<IP>"))
            .then("Commands marked `server#` below run there as root. If root may not log in, log in as your user and run `sudo -i` first."),
    );
    steps
}

pub fn verification(subject: &Subject, measured: Option<&Measured>) -> Vec<Step> {
    let tables = subject.tables();
    let n = names(&tables);
    let mut steps = Vec::new();

    // Mounts.
    for fs in &tables.filesystems {
        let node = kernel_node(subject, &fs.device)
            .unwrap_or_else(|| format!("<the kernel's name of {}>", fs.device));
        let mut mounts = step(format!("Btrfs mounts of {}", fs.device))
            .note("Every filesystem-wide option is the same on every line: the first mount decided them.")
            .run(server("findmnt -t btrfs -l -o TARGET,SOURCE,OPTIONS"));
        for s in &fs.subvolumes {
            let Some(mountpoint) = &s.mountpoint else {
                continue;
            };
            let (source, selector) = if s.name == "(top level)" {
                (node.clone(), "subvolid=5,subvol=/".to_owned())
            } else {
                (
                    format!("{node}[/{}]", s.name),
                    format!("subvol=/{}", s.name),
                )
            };
            let mut options: Vec<String> = s
                .options_in_effect
                .iter()
                .filter(|o| !o.starts_with("subvol=") && !o.starts_with("subvolid="))
                .cloned()
                .collect();
            options.push(selector);
            mounts = mounts.expect(format!(
                "{mountpoint}  {source}  with OPTIONS including {}",
                options.join(",")
            ));
        }
        for root in &subject.layout.persistence {
            let storage = root.storage_path.trim_end_matches('/');
            let backing = tables
                .filesystems
                .iter()
                .flat_map(|f| f.subvolumes.iter())
                .find(|s| s.mountpoint.as_deref() == Some(storage))
                .map(|s| s.name.clone());
            if let Some(subvolume) = backing {
                for entry in root
                    .entries
                    .iter()
                    .filter(|e| e.kind == EntryKind::Directory)
                {
                    mounts = mounts.expect(format!(
                        "{}  {node}[/{subvolume}{}]  (impermanence's bind mount)",
                        entry.target, entry.target
                    ));
                }
            }
        }
        mounts = mounts.then(
            "SOURCE names the subvolume in brackets; the kernel adds rw and subvolid=<n>. Persisted files may show up as bind mounts too. For example, kernel 6.18 prints `rw,noatime,compress=zstd:1,ssd,discard=async,space_cache=v2,subvolid=256,subvol=/@root`.",
        );
        steps.push(mounts);

        // Subvolumes.
        let names_list: Vec<String> = fs
            .subvolumes
            .iter()
            .filter(|s| s.name != "(top level)")
            .map(|s| s.name.clone())
            .collect();
        let top = fs
            .subvolumes
            .iter()
            .find(|s| s.name == "(top level)")
            .and_then(|s| s.mountpoint.clone());
        if let Some(top) = top {
            let mut list = step(format!("Subvolumes of {}", fs.device))
                .run(server(format!("btrfs subvolume list {top}")));
            for name in &names_list {
                list = list.expect(format!("ID <n> gen <n> top level 5 path {name}"));
            }
            list = list
                .expect(format!(
                    "after the first reboot, also: ID <n> gen <n> top level <id of {old}> path {old}/<YYYYMMDDTHHMMSSZ>, one per boot",
                    old = n.old_roots
                ))
                .note("systemd-tmpfiles may add nested subvolumes inside the root (e.g. `@root/var/lib/machines`, `@root/var/lib/portables`): they are created when `/` is a subvolume and go with the root at the next boot.");
            steps.push(list);
        }
    }

    // Swap.
    for swap in &tables.swaps {
        let node = kernel_node(subject, &swap.device)
            .unwrap_or_else(|| format!("<the kernel's name of {}>", swap.device));
        let shown = swap
            .size_bytes
            .map(|b| format!("{}", b.saturating_sub(PAGE_BYTES)))
            .unwrap_or_else(|| "<size - 4096>".to_owned());
        let mut s = step(format!("Swap on {}", swap.device))
            .run(server("swapon --show=NAME,TYPE,SIZE --bytes"));
        if swap.random_encryption {
            let mapper = swap_mapper_name(&swap.device);
            s = s
                .expect(format!(
                    "/dev/dm-<N>  partition  {shown}   (the device-mapper device; the size is the partition less mkswap's 4 KiB header page)"
                ))
                .run(server(format!("cryptsetup status {mapper}")))
                .expect(format!("/dev/mapper/{mapper} is active and is in use."))
                .expect("type:    PLAIN")
                .expect("cipher:  aes-xts-plain64   (nixpkgs' default for randomEncryption)")
                .expect("keysize: 256 bits")
                .expect(format!("device:  {node}"))
                .expect(match swap.size_bytes {
                    Some(b) => format!("size:    {} sectors", b / SECTOR_BYTES),
                    None => "size:    <partition size / 512> sectors".to_owned(),
                })
                .note(format!(
                    "NixOS names the mapping after the device path ({}), escaped like a systemd unit name without backslashes. If swapon shows {node} itself, swap is NOT encrypted: see docs/troubleshooting.md.",
                    swap.device
                ));
        } else {
            s = s.expect(format!("{node}  partition  {shown}"));
        }
        steps.push(s);
    }

    // ESP.
    for m in tables.other_mounts.iter().filter(|m| m.fs_type == "vfat") {
        let node = kernel_node(subject, &m.device)
            .unwrap_or_else(|| format!("<the kernel's name of {}>", m.device));
        let mut s = step(format!("The ESP at {}", m.mountpoint)).run(server(format!(
            "findmnt -n -o SOURCE,OPTIONS {}",
            m.mountpoint
        )));
        let umask = m
            .options_in_effect
            .iter()
            .find_map(|o| o.strip_prefix("umask="));
        s = s.expect(match umask {
            Some(mask) => format!(
                "{node}  with OPTIONS including fmask={mask:0>4},dmask={mask:0>4}   (the kernel shows umask={mask} this way)"
            ),
            None => format!("{node}  with OPTIONS including {}", m.options_in_effect.join(",")),
        });
        steps.push(s);
    }

    // Compression and No_COW.
    let mut compression = step("Compression")
        .note("compsize needs data: run it once the system has been used for a while. Perc is the stored size as a share of the uncompressed size.");
    for fs in &tables.filesystems {
        for s in &fs.subvolumes {
            let Some(mp) = &s.mountpoint else { continue };
            if s.nocow {
                compression = compression
                    .run(server(format!("lsattr -d {mp}")))
                    .expect(format!(
                        "---------------C------ {mp}   (the C attribute: new files are No_COW)"
                    ))
                    .run(server(format!("compsize -x {mp}")))
                    .expect(format!(
                        "{mp}: files written since the attribute was set are all under `none`: No_COW data is never compressed"
                    ));
            } else if s.name == "@nix" || mp == "/nix" {
                if let Some(c) = &s.compression {
                    compression =
                        compression
                            .run(server(format!("compsize -x {mp}")))
                            .expect(format!(
                                "a `zstd` row and a TOTAL Perc below 100% ({c} is in effect)"
                            ));
                }
            }
        }
    }
    if let Some(measured) = measured {
        let figures = measured.figures_with_prefix("compression.");
        if !figures.is_empty() {
            compression = compression.expect(format!(
                "measured by vm-test at {}: {}",
                measured
                    .revision
                    .as_deref()
                    .map(super::gates::short)
                    .unwrap_or("?"),
                figures.join(", ")
            ));
        }
    }
    steps.push(compression);

    // TRIM.
    let mut trim = step("TRIM reaches the disk")
        .note("discard=async sends TRIM in the background as space is freed; fstrim trims all free space at once. DISC-GRAN or DISC-MAX of 0B means TRIM cannot reach the disk: see docs/troubleshooting.md.");
    for disk in &subject.layout.disks {
        trim = trim
            .run(server(format!(
                "lsblk --discard -o NAME,DISC-GRAN,DISC-MAX {}",
                disk.device
            )))
            .expect(format!(
                "{} and its partitions with non-zero DISC-GRAN and DISC-MAX",
                disk.device.trim_start_matches("/dev/")
            ));
    }
    for fs in &tables.filesystems {
        if let Some(mp) = fs
            .subvolumes
            .iter()
            .find(|s| s.name == "(top level)")
            .and_then(|s| s.mountpoint.clone())
            .or_else(|| fs.options_decided_by.clone())
        {
            trim = trim
                .run(server(format!("fstrim -v {mp}")))
                .expect(format!(
                    "{mp}: <size> (<N> bytes) trimmed, with N > 0 (Btrfs trims the free space of the whole filesystem)"
                ));
        }
    }
    if let Some(measured) = measured {
        let figures = measured.figures_with_prefix("trim.");
        if !figures.is_empty() {
            trim = trim.expect(format!("measured by vm-test: {}", figures.join(", ")));
        }
    }
    steps.push(trim);

    // The root wipe, across a reboot.
    let has_wiped_root = tables
        .filesystems
        .iter()
        .flat_map(|f| f.subvolumes.iter())
        .any(|s| s.lifecycle == Lifecycle::WipedAtBoot);
    if has_wiped_root {
        let top = &n.top;
        let old = &n.old_roots;
        steps.push(
            step("The root is wiped at boot and kept in the old roots (after the first reboot)")
                .note("Mark the root and /persist, reboot, and look again. Each boot moves the previous root to the old roots under its UTC time, so there is one entry per boot since the install; the newest holds the marker.")
                .run(server(format!("touch /root/wiped-at-boot {PERSIST_MOUNTPOINT}/kept-at-boot && systemctl reboot")))
                .run(server(format!("ls {top}/{old}")))
                .expect("one directory per boot since the install, named like 20260101T120000Z (YYYYMMDDTHHMMSSZ, UTC)")
                .run(server(format!("ls {top}/{old}/\"$(ls {top}/{old} | tail -n 1)\"/root/wiped-at-boot")))
                .expect(format!("{top}/{old}/<newest>/root/wiped-at-boot"))
                .run(server(format!(
                    "test ! -e /root/wiped-at-boot && test -e {PERSIST_MOUNTPOINT}/kept-at-boot && echo wiped-and-kept"
                )))
                .expect("wiped-and-kept")
                .run(server("cat /run/btrfs-rollback/status"))
                .expect("key=value lines describing this boot's rollback (docs/rollback.md explains each key)")
                .run(server("test -e /run/btrfs-rollback/failed && echo FAILED || echo ok"))
                .expect("ok")
                .run(server("journalctl -b | grep 'btrfs-rollback:'"))
                .expect("one summary line of this boot's rollback")
                .run(server(format!("rm {PERSIST_MOUNTPOINT}/kept-at-boot"))),
        );
    }
    steps
}

pub fn rollback(subject: &Subject) -> Vec<Step> {
    let tables = subject.tables();
    let n = names(&tables);
    let top = &n.top;
    let persist = &n.persist;
    let snapshots = &n.snapshots;
    let old = &n.old_roots;
    let retention = tables
        .filesystems
        .iter()
        .flat_map(|f| f.subvolumes.iter())
        .find(|s| s.lifecycle == Lifecycle::Retained)
        .map(|s| s.lifecycle.describe())
        .unwrap_or("old roots");
    vec![
        step("The new generation does not boot: pick the previous one in GRUB")
            .note("Open the server's console (Cloud Console: the server, Console; `hcloud server request-console` prints a VNC address), then reset the server and, in the GRUB menu, choose `NixOS - All configurations` and the previous generation. The root is wiped at that boot too: generations live in /nix and state in /persist, both untouched.")
            .run(local("hcloud server request-console <server>"))
            .run(local("hcloud server reset <server>"))
            .run(server("/run/current-system/bin/switch-to-configuration boot"))
            .then("The last command, run once the previous generation is up, makes it the default for later boots."),
        step("The new generation boots but misbehaves: switch back")
            .note("Activates the previous generation of the system profile now and makes it the boot default.")
            .run(server("nixos-rebuild switch --rollback")),
        step("A file that was not persisted is gone: copy it from an old root")
            .note(format!(
                "Every boot keeps the previous root below {top}/{old}/<YYYYMMDDTHHMMSSZ>/ ({retention}). Copy what you need into {PERSIST_MOUNTPOINT}, and persist the path (docs/persistence.md) if it must survive."
            ))
            .run(server(format!("ls {top}/{old}/")))
            .run(server(format!(
                "cp -a --reflink=auto {top}/{old}/<YYYYMMDDTHHMMSSZ>/<path> {PERSIST_MOUNTPOINT}/<path>"
            ))),
        step(format!("{PERSIST_MOUNTPOINT} is damaged: restore it from a snapshot"))
            .note(format!(
                "Snapshots of {persist} live in {top}/{snapshots}/ (mounted at {SNAPSHOTS_MOUNTPOINT}). A single file: copy it back. The whole subvolume: make a writable snapshot of the snapshot, swap it in by renaming (the running system keeps the old one mounted until the reboot), reboot."
            ))
            .run(server(format!("ls {top}/{snapshots}/")))
            .run(server(format!(
                "cp -a --reflink=auto {SNAPSHOTS_MOUNTPOINT}/{persist}.<time>/<path> {PERSIST_MOUNTPOINT}/<path>"
            )))
            .run(server(format!(
                "btrfs subvolume snapshot {top}/{snapshots}/{persist}.<time> {top}/{persist}.restored"
            )))
            .run(server(format!(
                "mv {top}/{persist} {top}/{persist}.replaced-$(date -u +%Y%m%dT%H%M%SZ)"
            )))
            .run(server(format!("mv {top}/{persist}.restored {top}/{persist}")))
            .run(server("systemctl reboot"))
            .then(format!(
                "Once the restored {PERSIST_MOUNTPOINT} is right: `btrfs subvolume delete {top}/{persist}.replaced-<time>`. docs/snapshots.md has the details."
            )),
        step("Nothing else works: reinstall and restore /persist")
            .note("Save /persist off the server if it still runs (deployment step 1), install again (deployment steps 2 to 5), then receive the saved copy and swap it in.")
            .run(local(format!(
                "zstd -dc persist.pre-install.btrfs.zst | ssh root@<IP> 'btrfs receive {top}/{snapshots}'"
            )))
            .run(server(format!(
                "btrfs subvolume snapshot {top}/{snapshots}/{persist}.pre-install {top}/{persist}.restored"
            )))
            .run(server(format!("mv {top}/{persist} {top}/{persist}.fresh-install")))
            .run(server(format!("mv {top}/{persist}.restored {top}/{persist}")))
            .run(server("systemctl reboot")),
    ]
}

/// `41.0 s` for step durations.
pub fn seconds(ms: u64) -> String {
    format!("{:.1} s", ms as f64 / 1000.0)
}

/// Bytes as the checklist prints them.
pub fn bytes(value: u64) -> String {
    format!("{value} B ({})", human(value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checklist::gates::testing::{vm_results, HEAD};
    use crate::docs::testing::host_subject;

    fn all_text(steps: &[Step]) -> String {
        let mut out = String::new();
        for s in steps {
            out.push_str(&s.title);
            out.push('\n');
            for c in &s.commands {
                out.push_str(&c.line);
                out.push('\n');
            }
            for e in &s.expected {
                out.push_str(e);
                out.push('\n');
            }
            for note in s.notes.iter().chain(&s.afterwards) {
                out.push_str(note);
                out.push('\n');
            }
        }
        out
    }

    #[test]
    fn deployment_uses_the_flake_attribute_and_the_real_disk_size() {
        let text = all_text(&deployment(&host_subject()));
        assert!(text.contains(
            "nix run github:nix-community/nixos-anywhere -- --flake .#hetzner-vps --target-host root@<IP>"
        ));
        assert!(text.contains("ssh root@<IP> 'lsblk -b -d -n -o NAME,SIZE /dev/sda'\n"));
        assert!(text.contains("sda 480000000000\n"));
        assert!(text.contains("[ -d /sys/firmware/efi ] && echo UEFI || echo BIOS"));
        assert!(text.contains("BIOS or UEFI"));
        assert!(text.contains("btrfs send /btrfs_tmp/@snapshots/@persist.pre-install"));
        assert!(text.contains(
            "nix-instantiate --eval --strict --json -E '(import ./hosts/servers/hetzner-cloud/machine.nix).adminSshKeys'"
        ), "{text}");
    }

    #[test]
    fn verification_expects_what_the_model_says() {
        let measured = Measured::new(&vm_results(HEAD, true));
        let text = all_text(&verification(&host_subject(), Some(&measured)));
        assert!(text.contains(
            "/nix  /dev/sda4[/@nix]  with OPTIONS including noatime,compress=zstd:1,discard=async,space_cache=v2,ssd,subvol=/@nix"
        ), "{text}");
        assert!(text.contains("/btrfs_tmp  /dev/sda4  with OPTIONS including noatime,compress=zstd:1,discard=async,space_cache=v2,ssd,subvolid=5,subvol=/"), "{text}");
        assert!(text.contains("/var/lib/tailscale  /dev/sda4[/@persist/var/lib/tailscale]"));
        assert!(text.contains("ID <n> gen <n> top level 5 path @old_roots\n"));
        assert!(text.contains("cryptsetup status dev-disk-byx2dpartlabel-diskx2dmainx2dswap\n"));
        assert!(text.contains("device:  /dev/sda3\n"));
        assert!(text.contains("size:    67108864 sectors\n"));
        assert!(text.contains("/dev/dm-<N>  partition  34359734272 "));
        assert!(text.contains("/dev/sda2  with OPTIONS including fmask=0177,dmask=0077"));
        assert!(text.contains("lsattr -d /var/lib/containers\n"));
        assert!(text.contains("compsize -x /nix\n"));
        assert!(text.contains("measured by vm-test at 0123456789ab: compression.@nix.percent = 47"));
        assert!(text.contains("fstrim -v /btrfs_tmp\n"));
        assert!(text.contains("trim.freed_bytes = 1073741824"));
        assert!(text.contains("lsblk --discard -o NAME,DISC-GRAN,DISC-MAX /dev/sda\n"));
        assert!(text.contains("ls /btrfs_tmp/@old_roots\n"));
        assert!(text.contains("cat /run/btrfs-rollback/status\n"));
    }

    #[test]
    fn the_rollback_plan_covers_every_way_back() {
        let text = all_text(&rollback(&host_subject()));
        assert!(text.contains("NixOS - All configurations"));
        assert!(text.contains("nixos-rebuild switch --rollback\n"));
        assert!(text.contains(
            "cp -a --reflink=auto /btrfs_tmp/@old_roots/<YYYYMMDDTHHMMSSZ>/<path> /persist/<path>"
        ));
        assert!(text.contains("btrfs subvolume snapshot /btrfs_tmp/@snapshots/@persist.<time> /btrfs_tmp/@persist.restored"));
        assert!(text.contains("btrfs receive /btrfs_tmp/@snapshots"));
        assert!(text.contains("old roots, deleted after 30 days"));
    }

    #[test]
    fn figures_print_without_noise() {
        assert_eq!(figure(47.0), "47");
        assert_eq!(figure(0.3125), "0.31");
        assert_eq!(seconds(41_000), "41.0 s");
    }
}
