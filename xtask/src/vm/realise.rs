//! From the evaluated layout to the plans of each boot: what disko does to
//! create it, what NixOS does to mount it at every boot (the rollback first,
//! then `/`, the neededForBoot mounts, the rest, the +C tmpfiles rules and
//! randomly encrypted swap), and what the guest must find afterwards.
//!
//! Everything here comes from the model that `check` judged: the partition
//! geometry (`geometry::compute`), the options that take effect
//! (`mount_options::effective`) and the mounts in NixOS order (`Layout::mounts`).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use anyhow::{bail, Context as _, Result};
use sha2::{Digest, Sha256};

use super::initramfs::{hex, EmbeddedScript};
use super::plan::*;
use crate::hosts::Model;
use crate::layout::geometry::DiskGeometry;
use crate::layout::impermanence::{MANAGEMENT_MOUNTPOINT, OLD_ROOTS_SUBVOLUME, PERSIST_MOUNTPOINT};
use crate::layout::mount_options::{compression, has_nodatacow};
use crate::layout::{
    Btrfs, Content, Disk, DiskContent, EntryKind, Layout, Mount, MountSource, Partition,
};

/// The layout's disk is the VM's first virtio disk.
pub const GUEST_DISK: &str = "/dev/vda";
/// Incompressible data written, deleted and trimmed to see the host image shrink.
pub const TRIM_PROBE_BYTES: u64 = 32 << 20;
/// The roadmap: more than 30% saved on /nix-like data.
pub const MIN_STORE_SAVING_PERCENT: f64 = 30.0;
/// The roadmap: a rotation takes less than 10 s.
pub const MAX_ROTATION_MS: u64 = 10_000;
/// Where disko mounts the top level to create subvolumes.
const DISKO_MOUNT: &str = "/run/xtask/disko";
const ROLLBACK_STATUS_DIR: &str = "/run/btrfs-rollback";
/// Searched by the rollback script; busybox's applets come first in its shell anyway.
const GUEST_PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";
const MARKER_NAME: &str = ".xtask-marker";

/// A deliberate difference between what is created and what is expected,
/// to prove the in-VM checks catch it (`vm-test --tamper`, tests only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tamper {
    /// Do not create this subvolume.
    DropSubvolume(String),
    /// Mount `mountpoint` without `option`.
    DropMountOption { mountpoint: String, option: String },
    /// Checklist procedure `id` with an expectation added to its first
    /// command that its output cannot meet (a wrong checklist line).
    ProcedureExpect(String),
    /// Checklist procedure `id` with `sudo ` taken off its first command.
    ProcedureDropSudo(String),
}

impl FromStr for Tamper {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text.split_once('=') {
            Some(("drop-subvolume", name)) if !name.is_empty() => {
                Ok(Tamper::DropSubvolume(name.to_owned()))
            }
            Some(("procedure-expect", id)) if !id.is_empty() => {
                Ok(Tamper::ProcedureExpect(id.to_owned()))
            }
            Some(("procedure-drop-sudo", id)) if !id.is_empty() => {
                Ok(Tamper::ProcedureDropSudo(id.to_owned()))
            }
            Some(("drop-mount-option", rest)) => match rest.split_once(':') {
                Some((mountpoint, option)) if !option.is_empty() => Ok(Tamper::DropMountOption {
                    mountpoint: mountpoint.to_owned(),
                    option: option.to_owned(),
                }),
                _ => Err(format!(
                    "{text:?}: expected drop-mount-option=/MOUNTPOINT:OPTION"
                )),
            },
            _ => Err(format!(
                "{text:?}: expected drop-subvolume=NAME, drop-mount-option=/MOUNTPOINT:OPTION, procedure-expect=ID or procedure-drop-sudo=ID"
            )),
        }
    }
}

impl fmt::Display for Tamper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tamper::DropSubvolume(name) => write!(f, "drop-subvolume={name}"),
            Tamper::DropMountOption { mountpoint, option } => {
                write!(f, "drop-mount-option={mountpoint}:{option}")
            }
            Tamper::ProcedureExpect(id) => write!(f, "procedure-expect={id}"),
            Tamper::ProcedureDropSudo(id) => write!(f, "procedure-drop-sudo={id}"),
        }
    }
}

/// What the plans are made from: the layout and what `check` derived from it.
pub struct Realisation<'a> {
    pub layout: &'a Layout,
    pub context: &'a Model<'a>,
    pub disk: &'a Disk,
    pub geometry: &'a DiskGeometry,
    pub tools: GuestTools,
    pub rollback: Option<EmbeddedScript>,
    pub rollback_settings: RollbackSettings,
    pub boots: u32,
    /// Makes this run's markers unique.
    pub nonce: String,
    pub tamper: Vec<Tamper>,
}

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

/// What a rotation boot may expect of the boots before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum History {
    /// Every earlier boot completed: boot N finds N-1 old roots.
    Clean,
    /// The boot before this one lost power somewhere in its rollback.
    AfterPowerCut {
        /// Old roots the last completed boot saw, plus the one it left.
        old_roots_before: u32,
        /// The last boot that completed and wrote its files into /.
        last_completed_boot: u32,
    },
}

/// Everything about one boot that is not the layout: what kind of boot,
/// what came before it, its clock, and what it does besides the layout's
/// own steps and checks.
#[derive(Debug, Clone, PartialEq)]
pub struct BootSpec {
    pub boot: u32,
    pub kind: BootKind,
    pub history: History,
    /// qemu's `-rtc base=` (epoch seconds); the guest's clock must follow it.
    pub rtc_base: Option<i64>,
    /// Rollback runs after the first, each at the first run's second plus
    /// this many seconds (`RollbackStep::extra_runs`).
    pub extra_runs: Vec<i64>,
    /// How many old roots the boot must find (at least, at most), from the
    /// retention model (None: as if every earlier boot rotated and nothing
    /// was deleted).
    pub old_roots_expected: Option<(u32, u32)>,
    /// The boot whose files in / the newest old root holds (None: it holds
    /// none, e.g. the root a burst of rotations left empty), and the boot
    /// whose files some old root holds.
    pub newest_holds: Option<u32>,
    pub some_holds: Option<u32>,
    /// With extra runs: the boot whose files the root the first run moves holds.
    pub first_run_holds: Option<u32>,
    /// Roadmap 7.2: create and delete a large file, and hold the write
    /// latency while async discard releases it against these budgets.
    pub discard_probe: Option<DiscardBudget>,
    /// Procedure parts that continue after the reboot that ended the last
    /// boot (run before the checks), and parts that start in this boot
    /// (after them).
    pub continued: Vec<AdminStep>,
    pub procedures: Vec<AdminStep>,
}

impl BootSpec {
    /// The default boot `boot` of a clean run: install, then rotations.
    pub fn new(boot: u32) -> BootSpec {
        BootSpec {
            boot,
            kind: if boot == 1 {
                BootKind::Install
            } else {
                BootKind::Rotate
            },
            history: History::Clean,
            rtc_base: None,
            extra_runs: Vec::new(),
            old_roots_expected: None,
            newest_holds: boot.checked_sub(1).filter(|b| *b > 0),
            some_holds: None,
            first_run_holds: None,
            discard_probe: None,
            continued: Vec::new(),
            procedures: Vec::new(),
        }
    }
}

/// Roadmap 7.2's budgets for one boot (see `super::budgets`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DiscardBudget {
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// Roadmap 7.2's probe: 4 GiB leave at least two 1 GiB data block groups
/// empty, which Btrfs discards 10 s later; partly used ones wait 120 s.
pub const DISCARD_PROBE_BYTES: u64 = 4 << 30;
pub const DISCARD_RELEASED_MIN_BYTES: u64 = 1 << 30;
/// The release must come within this time of the deletion.
pub const DISCARD_MAX_WAIT_MS: u64 = 40_000;
const DISCARD_INTERVAL_MS: u64 = 25;
/// The programs' directories of the image, which stage 2 gives the admin.
const SYSTEM_BINDS: [&str; 9] = [
    "/proc", "/sys", "/dev", "/run", "/usr", "/bin", "/sbin", "/lib", "/lib64",
];

/// What the host checks itself, outside the guest.
#[derive(Debug, Clone, PartialEq)]
pub struct HostExpectations {
    /// Bytes the image must give back after the trim probe is deleted and trimmed.
    pub trim_freed_min_bytes: u64,
}

/// What a run adds to the layout: the image's tools and script, the host's
/// rollback settings, how many boots, and any deliberate tampering.
pub struct RunInputs {
    pub tools: GuestTools,
    pub rollback: Option<EmbeddedScript>,
    pub rollback_settings: RollbackSettings,
    pub boots: u32,
    pub nonce: String,
    pub tamper: Vec<Tamper>,
}

impl<'a> Realisation<'a> {
    /// Checks that the lab backend can realise this layout.
    pub fn new(
        layout: &'a Layout,
        context: &'a Model<'a>,
        inputs: RunInputs,
    ) -> Result<Realisation<'a>> {
        let RunInputs {
            tools,
            rollback,
            rollback_settings,
            boots,
            nonce,
            tamper,
        } = inputs;
        let [disk] = layout.disks.as_slice() else {
            bail!(
                "the lab VM has one disk; the layout declares {} (use --backend nixos)",
                layout.disks.len()
            );
        };
        let Some(DiskContent::Gpt(_)) = &disk.content else {
            bail!(
                "the lab VM realises GPT disks; disk {:?} is not one",
                disk.key
            );
        };
        let geometry = context
            .geometry
            .get(&disk.key)
            .with_context(|| format!("no geometry for disk {:?}: its size is unknown", disk.key))?;
        if !geometry.problems.is_empty() {
            bail!(
                "the partitions of disk {:?} cannot be placed ({:?}); `cargo xtask check` explains",
                disk.key,
                geometry.problems
            );
        }
        for (_, _, content) in layout.contents() {
            if let Content::Filesystem(fs) = content {
                if fs.format != "vfat" {
                    bail!(
                        "the lab VM formats vfat, Btrfs and swap; {} is {}",
                        fs.device,
                        fs.format
                    );
                }
            }
        }
        if boots > 1 && rollback.is_none() {
            bail!("rotation boots need the rollback script (nix/modules/btrfs-rollback/rollback.sh), which is not in this checkout yet; run with --boots 1 or merge it");
        }
        Ok(Realisation {
            layout,
            context,
            disk,
            geometry,
            tools,
            rollback,
            rollback_settings,
            boots,
            nonce,
            tamper,
        })
    }

    pub fn host_expectations(&self) -> HostExpectations {
        HostExpectations {
            // Metadata and alignment may keep a little; 90% must come back.
            trim_freed_min_bytes: TRIM_PROBE_BYTES / 10 * 9,
        }
    }

    fn partitions(&self) -> &[Partition] {
        match &self.disk.content {
            Some(DiskContent::Gpt(gpt)) => &gpt.partitions,
            _ => &[],
        }
    }

    /// The Btrfs filesystem that holds `/`.
    fn root_btrfs(&self) -> Option<&'a Btrfs> {
        let root = self.context.mounts.iter().find(|m| m.mountpoint == "/")?;
        self.layout
            .btrfs_filesystems()
            .find(|b| b.device == root.device)
    }

    pub fn plan(&self, boot: u32) -> Result<Plan> {
        self.plan_for(&BootSpec::new(boot))
    }

    pub fn plan_with_history(&self, boot: u32, history: History) -> Result<Plan> {
        let mut spec = BootSpec::new(boot);
        spec.history = history;
        if let History::AfterPowerCut {
            last_completed_boot,
            ..
        } = history
        {
            spec.newest_holds = None;
            spec.some_holds = Some(last_completed_boot);
        }
        self.plan_for(&spec)
    }

    pub fn plan_for(&self, spec: &BootSpec) -> Result<Plan> {
        let boot = spec.boot;
        let mut steps = Vec::new();
        steps.push(step(
            "wait:disk",
            OnFailure::Stop,
            Action::WaitForDevice {
                path: GUEST_DISK.to_owned(),
                timeout_ms: 20_000,
            },
        ));
        if let Some(rtc_base) = spec.rtc_base {
            // The kernel has set its clock from the RTC by now (rtc_cmos,
            // CONFIG_RTC_HCTOSYS): qemu starting is the only slack.
            steps.push(check(
                "clock",
                Expect::Clock {
                    rtc_base,
                    slack_s: 60,
                },
            ));
        }
        let procedures = !spec.continued.is_empty() || !spec.procedures.is_empty();
        match spec.kind {
            BootKind::Install => {
                self.create(&mut steps);
                self.link_partitions(&mut steps);
                self.format(&mut steps);
                self.mount_filesystems(&mut steps);
                self.swap_on(&mut steps);
                self.fill(&mut steps, boot);
                // After the fill's flush, so that the writes measure the
                // release, not the install's own writeback.
                if spec.discard_probe.is_some() {
                    self.discard_probe(&mut steps);
                }
                self.install_checks(&mut steps);
                // Before the trim probe: its fstrim would trim what async
                // discard is to release.
                self.discard_latency(&mut steps, spec);
                self.trim_probe(&mut steps);
                self.persistence(&mut steps);
                self.first_boot_identity(&mut steps, boot);
                if procedures {
                    self.enter_system(&mut steps, spec);
                }
                self.admin(&mut steps, &spec.continued);
                self.admin(&mut steps, &spec.procedures);
            }
            BootKind::Rotate => {
                self.link_partitions(&mut steps);
                self.rollback(&mut steps, spec)?;
                self.mount_filesystems(&mut steps);
                self.fresh_root_checks(&mut steps, boot);
                self.persistence(&mut steps);
                if spec.discard_probe.is_some() {
                    self.discard_probe(&mut steps);
                }
                self.swap_on(&mut steps);
                if procedures {
                    self.enter_system(&mut steps, spec);
                }
                self.admin(&mut steps, &spec.continued);
                self.rotate_checks(&mut steps, spec);
                self.admin(&mut steps, &spec.procedures);
                self.discard_latency(&mut steps, spec);
                self.write_root_files(&mut steps, boot);
            }
            BootKind::RotateOnly => {
                self.link_partitions(&mut steps);
                self.rollback(&mut steps, spec)?;
                self.old_roots_check(&mut steps, spec);
            }
        }
        steps.push(step("sync", OnFailure::Continue, Action::Sync));
        unique_names(&mut steps);
        Ok(Plan {
            schema: SCHEMA,
            host: self.layout.host.clone(),
            boot,
            boots: self.boots,
            kind: spec.kind,
            tools: self.tools.clone(),
            rtc_base: spec.rtc_base,
            steps,
        })
    }

    /// Stage 2 for the admin's commands (see `Action::EnterSystem`).
    fn enter_system(&self, steps: &mut Vec<Step>, spec: &BootSpec) {
        let login = spec
            .continued
            .iter()
            .chain(&spec.procedures)
            .map(|part| part.login.clone())
            .next();
        steps.push(step(
            "system:enter",
            OnFailure::Continue,
            Action::EnterSystem {
                binds: SYSTEM_BINDS.iter().map(|s| (*s).to_owned()).collect(),
                login,
            },
        ));
    }

    /// The persisted paths of the layout's impermanence roots (the system's,
    /// not users': no procedure needs those).
    fn persisted(&self) -> (Vec<PersistedPath>, Vec<PersistedPath>) {
        let mut directories = Vec::new();
        let mut files = Vec::new();
        for root in &self.layout.persistence {
            let storage = root.storage_path.trim_end_matches('/');
            for entry in root.entries.iter().filter(|e| e.user.is_none()) {
                let link = format!("{storage}{}", entry.target);
                let path = PersistedPath {
                    storage: in_sysroot(&link),
                    target: in_sysroot(&entry.target),
                    link,
                };
                match entry.kind {
                    EntryKind::Directory => directories.push(path),
                    EntryKind::File => files.push(path),
                }
            }
        }
        (directories, files)
    }

    /// impermanence's bind mounts and links, after the mounts (stage 2).
    fn persistence(&self, steps: &mut Vec<Step>) {
        let (directories, files) = self.persisted();
        if directories.is_empty() && files.is_empty() {
            return;
        }
        steps.push(step(
            "impermanence",
            OnFailure::Continue,
            Action::Persistence { directories, files },
        ));
    }

    /// What the first boot of a new system writes through impermanence's
    /// links into the persistent storage: systemd the machine-id (32 hex
    /// digits), sshd its host keys. The lab writes stand-ins of the same
    /// names (it runs neither program); what the checklist does with them
    /// (hash them, check them after a reboot) is the same.
    fn first_boot_identity(&self, steps: &mut Vec<Step>, boot: u32) {
        let (_, files) = self.persisted();
        for file in files {
            let target = file.target.trim_start_matches(SYSROOT);
            let seed = hex(&Sha256::digest(
                format!("{}:{boot}:{target}", self.nonce).as_bytes(),
            ));
            let contents = if target == "/etc/machine-id" {
                format!("{}\n", &seed[..32])
            } else if target.starts_with("/etc/ssh/ssh_host_") {
                format!("xtask lab stand-in for the SSH host key {target} (sshd creates it at the first boot): {seed}\n")
            } else {
                continue;
            };
            steps.push(step(
                &format!("first-boot:{target}"),
                OnFailure::Continue,
                Action::WriteFile {
                    path: file.storage,
                    contents,
                },
            ));
        }
    }

    fn admin(&self, steps: &mut Vec<Step>, parts: &[AdminStep]) {
        for part in parts {
            steps.push(step(
                &format!("procedure:{}", part.step),
                OnFailure::Continue,
                Action::Admin(part.clone()),
            ));
        }
    }

    /// Ends roadmap 7.2's probe: waits for the release, holds the latencies against the budget.
    fn discard_latency(&self, steps: &mut Vec<Step>, spec: &BootSpec) {
        if let Some(budget) = spec.discard_probe {
            steps.push(check(
                "discard-latency",
                Expect::DiscardLatency {
                    min_released_bytes: DISCARD_RELEASED_MIN_BYTES,
                    max_wait_ms: DISCARD_MAX_WAIT_MS,
                    p99_budget_ms: budget.p99_ms,
                    max_budget_ms: budget.max_ms,
                },
            ));
        }
    }

    /// Roadmap 7.2's probe on the root's filesystem; `check:discard-latency` ends it.
    fn discard_probe(&self, steps: &mut Vec<Step>) {
        let Some(btrfs) = self.root_btrfs() else {
            return;
        };
        steps.push(step(
            "discard:probe",
            OnFailure::Continue,
            Action::DiscardProbe(DiscardProbe {
                device: btrfs.device.clone(),
                big_file: in_sysroot("/var/tmp/xtask-discard-probe"),
                big_bytes: DISCARD_PROBE_BYTES,
                sample_file: in_sysroot("/var/tmp/xtask-latency-probe"),
                interval_ms: DISCARD_INTERVAL_MS,
            }),
        ));
    }

    fn run(&self, argv: Vec<String>) -> Action {
        Action::Run {
            argv,
            env: BTreeMap::new(),
        }
    }

    /// disko's gpt `_create`: `sgdisk --clear` on a disk without a table,
    /// then one sgdisk call per partition, in creation order (disko's
    /// lib/types/gpt.nix, with the arguments in its order).
    fn create(&self, steps: &mut Vec<Step>) {
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
    fn link_partitions(&self, steps: &mut Vec<Step>) {
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
    fn format(&self, steps: &mut Vec<Step>) {
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

    /// The rollback, as the initrd's postDeviceCommands run it: before any mount.
    fn rollback(&self, steps: &mut Vec<Step>, spec: &BootSpec) -> Result<()> {
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

    fn mount_argv(&self, mount: &Mount) -> Vec<String> {
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
    fn mount_filesystems(&self, steps: &mut Vec<Step>) {
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
    fn swap_on(&self, steps: &mut Vec<Step>) {
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
    fn persistent_mounts(&self) -> Vec<&'a Mount> {
        self.context
            .mounts
            .iter()
            .filter(|m| m.mountpoint != "/" && m.source != MountSource::BtrfsTopLevel)
            .collect()
    }

    fn marker_contents(&self, mount: &Mount) -> String {
        format!(
            "xtask vm-test marker\nhost: {}\nmountpoint: {}\nrun: {}\n",
            self.layout.host, mount.mountpoint, self.nonce
        )
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
            !self.context.mounts.iter().any(|m| {
                m.mountpoint != "/" && crate::layout::paths::is_at_or_below(path, &m.mountpoint)
            })
        })
        .collect()
    }

    /// What `root_files(boot)` hold.
    pub fn root_file_contents(&self, boot: u32) -> String {
        format!("written into / at boot {boot} of run {}\n", self.nonce)
    }

    fn write_root_files(&self, steps: &mut Vec<Step>, boot: u32) {
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

    /// Boot 1's data: markers, files in /, a store-like /nix and text where logs and state go.
    fn fill(&self, steps: &mut Vec<Step>, boot: u32) {
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

    /// Btrfs subvolume mounts that get data: all but the snapshots' and the top level.
    fn data_mounts(&self) -> Vec<&'a Mount> {
        self.context
            .mounts
            .iter()
            .filter(|m| matches!(m.source, MountSource::Subvolume { .. }))
            .filter(|m| m.mountpoint != "/.snapshots")
            .collect()
    }

    fn is_nocow(&self, mountpoint: &str) -> bool {
        self.layout
            .nocow_paths
            .iter()
            .any(|n| n.target == mountpoint)
    }

    fn install_checks(&self, steps: &mut Vec<Step>) {
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

    fn subvolume_check(&self, steps: &mut Vec<Step>) {
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

    fn mount_option_checks(&self, steps: &mut Vec<Step>) {
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

    /// Delete-and-trim on the root: fstrim works, async discard queues the
    /// freed extents, and the host image gives the space back.
    fn trim_probe(&self, steps: &mut Vec<Step>) {
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

    /// `/` is a new, empty root: checked before anything writes into it.
    fn fresh_root_checks(&self, steps: &mut Vec<Step>, boot: u32) {
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
    fn rotate_checks(&self, steps: &mut Vec<Step>, spec: &BootSpec) {
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
    fn relative_root_files(&self, boot: Option<u32>) -> Vec<String> {
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
    fn old_roots_check(&self, steps: &mut Vec<Step>, spec: &BootSpec) {
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

/// Step names are unique within a boot: a repeated one gets `#2`, `#3`, ….
fn unique_names(steps: &mut [Step]) {
    let mut seen: BTreeMap<String, u32> = BTreeMap::new();
    for step in steps {
        let count = seen.entry(step.name.clone()).or_insert(0);
        *count += 1;
        if *count > 1 {
            step.name = format!("{}#{count}", step.name);
        }
    }
}

fn step(name: &str, on_failure: OnFailure, action: Action) -> Step {
    Step {
        name: name.to_owned(),
        on_failure,
        action,
    }
}

fn check(name: &str, expect: Expect) -> Step {
    step(
        &format!("check:{name}"),
        OnFailure::Continue,
        Action::Check(Check {
            name: name.to_owned(),
            expect,
        }),
    )
}

fn strings<const N: usize>(items: [&str; N]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// The options as /proc/self/mountinfo prints them: `subvol=/@nix` with its
/// slash, vfat's `umask` as `fmask` and `dmask`, zstd without a level as
/// level 3. Userspace-only options never reach the kernel.
pub fn kernel_forms(fs_type: &str, options: &[String]) -> Vec<String> {
    let mut forms = Vec::new();
    for option in options {
        let (key, value) = match option.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (option.as_str(), None),
        };
        if key == "defaults" || key == "nofail" || key.starts_with("x-") {
            continue;
        }
        match (fs_type, key, value) {
            ("btrfs", "subvol", Some(v)) if !v.starts_with('/') => {
                forms.push(format!("subvol=/{v}"))
            }
            ("btrfs", "compress" | "compress-force", Some("zstd")) => {
                forms.push(format!("{key}=zstd:3"))
            }
            ("btrfs", "compress" | "compress-force", None) => forms.push(format!("{key}=zlib:3")),
            ("btrfs", "compress" | "compress-force", Some("zlib")) => {
                forms.push(format!("{key}=zlib:3"))
            }
            ("vfat", "umask", Some(v)) => {
                let mask = parse_octal(v).map_or(v.to_owned(), |m| format!("{m:04o}"));
                forms.push(format!("fmask={mask}"));
                forms.push(format!("dmask={mask}"));
            }
            ("vfat", "fmask" | "dmask", Some(v)) => {
                let mask = parse_octal(v).map_or(v.to_owned(), |m| format!("{m:04o}"));
                forms.push(format!("{key}={mask}"));
            }
            _ => forms.push(option.clone()),
        }
    }
    forms.dedup();
    forms
}

fn parse_octal(text: &str) -> Option<u32> {
    u32::from_str_radix(text, 8).ok()
}

/// The modes vfat gives new directories and files: 0777 less dmask and
/// fmask (umask sets both; without either, the mounting process's umask,
/// 022). vfat has no execute bit, so files keep x unless `showexec`.
pub fn vfat_modes(options: &[String]) -> (u32, u32) {
    let mut umask = 0o022;
    let (mut fmask, mut dmask) = (None, None);
    let mut showexec = false;
    for option in options {
        match option.split_once('=') {
            Some(("umask", v)) => umask = parse_octal(v).unwrap_or(umask),
            Some(("fmask", v)) => fmask = parse_octal(v),
            Some(("dmask", v)) => dmask = parse_octal(v),
            None if option == "showexec" => showexec = true,
            _ => {}
        }
    }
    let directory = 0o777 & !dmask.unwrap_or(umask);
    let mut file = 0o777 & !fmask.unwrap_or(umask);
    if showexec {
        file &= !0o111;
    }
    (directory, file)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::testing::host_layout;

    fn realisation_of<'a>(
        layout: &'a Layout,
        context: &'a Model<'a>,
        tamper: Vec<Tamper>,
    ) -> Realisation<'a> {
        let at = |name: &str| format!("/usr/sbin/{name}");
        let tools = GuestTools {
            sgdisk: "/usr/sbin/sgdisk".into(),
            mount: "/usr/bin/mount".into(),
            busybox: "/usr/bin/busybox".into(),
            mkfs_btrfs: at("mkfs.btrfs"),
            btrfs: at("btrfs"),
            mkfs_vfat: at("mkfs.vfat"),
            cryptsetup: at("cryptsetup"),
            mkswap: at("mkswap"),
            swapon: at("swapon"),
            swapoff: at("swapoff"),
            umount: at("umount"),
            blkid: at("blkid"),
            findmnt: at("findmnt"),
            lsattr: at("lsattr"),
            chattr: at("chattr"),
            compsize: at("compsize"),
            fstrim: at("fstrim"),
            bash: "/usr/bin/bash".into(),
            grep: "/usr/bin/grep".into(),
        };
        let script = EmbeddedScript {
            guest_path: "/etc/xtask/btrfs-rollback.sh".into(),
            host_path: "nix/modules/btrfs-rollback/rollback.sh".into(),
            sha256: "00".into(),
        };
        let inputs = RunInputs {
            tools,
            rollback: Some(script),
            rollback_settings: RollbackSettings::default(),
            boots: 3,
            nonce: "n0nce".into(),
            tamper,
        };
        Realisation::new(layout, context, inputs).unwrap()
    }

    fn context_of(layout: &Layout) -> Model<'_> {
        let sizes = [("main".to_owned(), 480_000_000_000u64)]
            .into_iter()
            .collect();
        Model::new(layout, &sizes, crate::hosts::Firmware::default())
    }

    fn argv_of<'p>(plan: &'p Plan, name: &str) -> &'p [String] {
        plan.steps
            .iter()
            .find_map(|s| match (&s.action, s.name == name) {
                (Action::Run { argv, .. }, true) => Some(argv.as_slice()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no step {name}"))
    }

    fn expectation<'p>(plan: &'p Plan, name: &str) -> &'p Expect {
        plan.steps
            .iter()
            .find_map(|s| match &s.action {
                Action::Check(c) if c.name == name => Some(&c.expect),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no check {name}"))
    }

    #[test]
    fn install_runs_sgdisk_as_disko_and_expects_the_computed_geometry() {
        let layout = host_layout();
        let context = context_of(&layout);
        let plan = realisation_of(&layout, &context, vec![]).plan(1).unwrap();
        assert_eq!(plan.kind, BootKind::Install);
        assert_eq!(
            argv_of(&plan, "sgdisk:1"),
            [
                "/usr/sbin/sgdisk",
                "--align-end",
                "--new=1:0:+1M",
                "--partition-guid=1:R",
                "--change-name=1:disk-main-boot",
                "--typecode=1:EF02",
                "--attributes=1:=:0",
                "/dev/vda"
            ]
        );
        assert_eq!(argv_of(&plan, "sgdisk:4")[2], "--new=4:0:-0");
        // Randomly encrypted swap gets no mkswap from disko; NixOS makes it at each boot.
        assert!(!plan.steps.iter().any(|s| s.name.starts_with("mkswap:")));
        let Expect::PartitionTable { partitions, .. } = expectation(&plan, "partition-table")
        else {
            panic!()
        };
        let sectors: Vec<(u64, u64)> = partitions
            .iter()
            .map(|p| (p.start_sector, p.end_sector))
            .collect();
        assert_eq!(
            sectors,
            [
                (2048, 4095),
                (4096, 2101247),
                (2101248, 69210111),
                (69210112, 937498623)
            ]
        );
        // All 8 subvolumes, / mounted first with the model's options.
        let Expect::Subvolumes { names, .. } = expectation(&plan, "subvolumes") else {
            panic!()
        };
        assert_eq!(names.len(), 8);
        let first_mount = plan
            .steps
            .iter()
            .find(|s| s.name.starts_with("mount:"))
            .unwrap();
        assert_eq!(first_mount.name, "mount:/");
        assert_eq!(
            argv_of(&plan, "mount:/nix"),
            [
                "/usr/bin/mount",
                "-t",
                "btrfs",
                "-o",
                "compress=zstd:1,noatime,ssd,space_cache=v2,discard=async,subvol=@nix",
                "/dev/disk/by-partlabel/disk-main-root",
                "/sysroot/nix"
            ]
        );
        // What check predicts, in the kernel's words.
        let Expect::MountOptions { options, .. } = expectation(&plan, "mount-options:/nix") else {
            panic!()
        };
        for option in [
            "noatime",
            "subvol=/@nix",
            "compress=zstd:1",
            "ssd",
            "space_cache=v2",
            "discard=async",
        ] {
            assert!(
                options.contains(&option.to_owned()),
                "{option} not in {options:?}"
            );
        }
        let Expect::MountOptions { options, .. } = expectation(&plan, "mount-options:/boot") else {
            panic!()
        };
        assert_eq!(options, &["fmask=0177", "dmask=0077"]);
        let Expect::Compression {
            min_saving_percent,
            algorithm,
            ..
        } = expectation(&plan, "compression:@nix")
        else {
            panic!()
        };
        assert_eq!(
            (algorithm.as_deref(), *min_saving_percent),
            (Some("zstd"), Some(30.0))
        );
        let Expect::Compression { algorithm, .. } = expectation(&plan, "compression:@containers")
        else {
            panic!()
        };
        assert_eq!(*algorithm, None, "No_COW data is stored uncompressed");
        assert!(matches!(
            expectation(&plan, "nocow:/var/lib/containers"),
            Expect::NoCow { .. }
        ));
        let Expect::Permissions {
            directory_mode,
            file_mode,
            ..
        } = expectation(&plan, "esp-permissions:/boot")
        else {
            panic!()
        };
        assert_eq!((*directory_mode, *file_mode), (0o700, 0o600));
        let Expect::SwapEncrypted {
            sectors, mapper, ..
        } = expectation(&plan, "swap-encrypted")
        else {
            panic!()
        };
        assert_eq!(*sectors, 32 << 21);
        assert_eq!(
            mapper,
            "/dev/mapper/dev-disk-byx2dpartlabel-diskx2dmainx2dswap"
        );
        // No shell anywhere: every program is an absolute path.
        for s in &plan.steps {
            if let Action::Run { argv, .. } = &s.action {
                assert!(argv[0].starts_with('/') || argv[0].is_empty(), "{argv:?}");
            }
        }
    }

    #[test]
    fn rotation_runs_the_script_before_mounting_and_expects_the_old_roots() {
        let layout = host_layout();
        let context = context_of(&layout);
        let plan = realisation_of(&layout, &context, vec![]).plan(3).unwrap();
        assert_eq!(plan.kind, BootKind::Rotate);
        let position = |prefix: &str| {
            plan.steps
                .iter()
                .position(|s| s.name.starts_with(prefix))
                .unwrap()
        };
        assert!(position("rollback") < position("mount:"));
        assert!(!plan
            .steps
            .iter()
            .any(|s| s.name.starts_with("sgdisk") || s.name.starts_with("mkfs")));
        let Action::Rollback(rollback) = &plan.steps[position("rollback")].action else {
            panic!()
        };
        assert_eq!(
            rollback.argv,
            [
                "/usr/bin/busybox",
                "sh",
                "/etc/xtask/btrfs-rollback.sh",
                "/dev/disk/by-partlabel/disk-main-root"
            ]
        );
        assert_eq!(rollback.env["BTRFS_ROLLBACK_MOUNTPOINT"], "/btrfs_tmp");
        assert_eq!(rollback.env["BTRFS_ROLLBACK_ROOT_SUBVOLUME"], "@root");
        assert_eq!(rollback.env["BTRFS_ROLLBACK_RETENTION_DAYS"], "30");
        assert_eq!(rollback.env["BTRFS_ROLLBACK_KEEP_AT_LEAST"], "5");
        let Expect::OldRoots {
            min_count,
            max_count,
            newest_holds,
            ..
        } = expectation(&plan, "old-roots")
        else {
            panic!()
        };
        assert_eq!((*min_count, *max_count), (2, 2));
        assert!(newest_holds.contains(&"etc/xtask-boot-2".to_owned()));
        let Expect::Absent { paths } = expectation(&plan, "root-wiped") else {
            panic!()
        };
        assert!(paths.contains(&"/sysroot/etc/xtask-boot-1".to_owned()));
        assert!(paths.contains(&"/sysroot/etc/xtask-boot-2".to_owned()));
        assert!(matches!(
            expectation(&plan, "persist-marker"),
            Expect::Digest { .. }
        ));
        let Expect::FreshRoot { allowed, .. } = expectation(&plan, "root-fresh") else {
            panic!()
        };
        assert_eq!(
            allowed,
            &[".snapshots", "boot", "btrfs_tmp", "nix", "persist", "var"]
        );
        // Checked before this boot writes its own files.
        let position = |prefix: &str| {
            plan.steps
                .iter()
                .position(|s| s.name.starts_with(prefix))
                .unwrap()
        };
        assert!(position("check:root-fresh") < position("write:"));
    }

    #[test]
    fn after_a_power_cut_the_old_roots_may_be_one_or_two_more() {
        let layout = host_layout();
        let context = context_of(&layout);
        let history = History::AfterPowerCut {
            old_roots_before: 2,
            last_completed_boot: 3,
        };
        let plan = realisation_of(&layout, &context, vec![])
            .plan_with_history(5, history)
            .unwrap();
        let Expect::OldRoots {
            min_count,
            max_count,
            newest_holds,
            some_holds,
            ..
        } = expectation(&plan, "old-roots")
        else {
            panic!()
        };
        assert_eq!((*min_count, *max_count), (3, 4));
        assert!(newest_holds.is_empty());
        assert!(some_holds.contains(&"etc/xtask-boot-3".to_owned()));
        let rollback = plan
            .steps
            .iter()
            .find_map(|s| match &s.action {
                Action::Rollback(r) => Some(r),
                _ => None,
            })
            .unwrap();
        assert!(!rollback.rotation_required);
    }

    fn position(plan: &Plan, prefix: &str) -> usize {
        plan.steps
            .iter()
            .position(|s| s.name.starts_with(prefix))
            .unwrap_or_else(|| panic!("no step {prefix}"))
    }

    #[test]
    fn the_install_starts_the_discard_probe_after_its_writes_and_ends_it_before_fstrim() {
        let layout = host_layout();
        let context = context_of(&layout);
        let mut spec = BootSpec::new(1);
        spec.rtc_base = Some(1_799_589_600);
        spec.discard_probe = Some(DiscardBudget {
            p99_ms: 1000.0,
            max_ms: 3000.0,
        });
        let plan = realisation_of(&layout, &context, vec![])
            .plan_for(&spec)
            .unwrap();
        assert_eq!(plan.rtc_base, Some(1_799_589_600));
        assert_eq!(position(&plan, "check:clock"), 1);
        // With `--boots 1` the probe is in the install boot: after its
        // writes, before the trim probe.
        assert!(position(&plan, "fill:/var/lib/containers") < position(&plan, "discard:probe"));
        assert!(position(&plan, "discard:probe") < position(&plan, "check:partition-table"));
        assert!(position(&plan, "check:discard-latency") < position(&plan, "check:trim:fstrim"));
        let Expect::DiscardLatency {
            min_released_bytes,
            p99_budget_ms,
            ..
        } = expectation(&plan, "discard-latency")
        else {
            panic!()
        };
        assert_eq!((*min_released_bytes, *p99_budget_ms), (1 << 30, 1000.0));
    }

    #[test]
    fn the_months_boot_rotates_again_at_the_clocks_the_plan_sets() {
        let layout = host_layout();
        let context = context_of(&layout);
        let mut spec = BootSpec::new(2);
        spec.extra_runs = vec![0, 0, 86_400];
        spec.first_run_holds = spec.newest_holds.take();
        spec.old_roots_expected = Some((3, 3));
        let realisation = realisation_of(&layout, &context, vec![]);
        let plan = realisation.plan_for(&spec).unwrap();
        let Action::Rollback(rollback) = &plan.steps[position(&plan, "rollback")].action else {
            panic!()
        };
        assert_eq!(rollback.extra_runs, [0, 0, 86_400]);
        assert!(rollback
            .first_run_holds
            .contains(&"etc/xtask-boot-1".to_owned()));
        assert_eq!(rollback.old_roots.directory, "@old_roots");
        let Expect::OldRoots {
            min_count,
            max_count,
            newest_holds,
            some_holds,
            ..
        } = expectation(&plan, "old-roots")
        else {
            panic!()
        };
        assert_eq!((*min_count, *max_count), (3, 3));
        assert!(newest_holds.is_empty() && some_holds.is_empty());
    }

    #[test]
    fn procedures_run_in_the_system_continued_ones_before_the_checks() {
        let layout = host_layout();
        let context = context_of(&layout);
        let login = AdminLogin {
            user: "hbohlen".to_owned(),
            uid: 1000,
            gid: 100,
            groups: vec![100, 1],
            home: "/home/hbohlen".to_owned(),
        };
        let part = |step: &str| AdminStep {
            id: format!("id-{step}"),
            step: step.to_owned(),
            title: "t".to_owned(),
            part: 0,
            login: login.clone(),
            substitutions: Vec::new(),
            commands: Vec::new(),
            captured: BTreeMap::new(),
        };
        let mut spec = BootSpec::new(4);
        spec.continued = vec![part("4.4")];
        spec.procedures = vec![part("4.5")];
        let plan = realisation_of(&layout, &context, vec![])
            .plan_for(&spec)
            .unwrap();
        // / is checked before stage 2 puts directories into it, then
        // impermanence binds and links what /persist keeps.
        assert!(position(&plan, "check:root-fresh") < position(&plan, "impermanence"));
        assert!(position(&plan, "impermanence") < position(&plan, "system:enter"));
        let Action::Persistence { directories, files } =
            &plan.steps[position(&plan, "impermanence")].action
        else {
            panic!()
        };
        assert!(directories
            .iter()
            .any(|d| d.storage == "/sysroot/persist/var/lib/nixos"
                && d.target == "/sysroot/var/lib/nixos"));
        assert!(files.iter().any(|f| f.link == "/persist/etc/machine-id"));
        assert!(position(&plan, "system:enter") < position(&plan, "procedure:4.4"));
        assert!(position(&plan, "procedure:4.4") < position(&plan, "check:persist-marker"));
        assert!(position(&plan, "check:subvolumes") < position(&plan, "procedure:4.5"));
        assert!(position(&plan, "procedure:4.5") < position(&plan, "write:"));
        let Action::EnterSystem {
            binds,
            login: given,
        } = &plan.steps[position(&plan, "system:enter")].action
        else {
            panic!()
        };
        for dir in ["/proc", "/dev", "/run", "/usr", "/lib"] {
            assert!(binds.contains(&dir.to_owned()), "{dir}");
        }
        assert_eq!(given.as_ref(), Some(&login));
        // The install boot writes what systemd and sshd create at the first boot.
        let install = realisation_of(&layout, &context, vec![]).plan(1).unwrap();
        let Action::WriteFile { path, contents } =
            &install.steps[position(&install, "first-boot:/etc/machine-id")].action
        else {
            panic!()
        };
        assert_eq!(path, "/sysroot/persist/etc/machine-id");
        assert_eq!(contents.trim().len(), 32);
        // A short boot: the rollback and the old roots, nothing mounted.
        let mut short = BootSpec::new(5);
        short.kind = BootKind::RotateOnly;
        let plan = realisation_of(&layout, &context, vec![])
            .plan_for(&short)
            .unwrap();
        assert!(plan.steps.iter().any(|s| s.name == "check:old-roots"));
        assert!(!plan.steps.iter().any(|s| s.name.starts_with("mount:")));
    }

    #[test]
    fn root_files_stay_on_the_root_subvolume() {
        let layout = host_layout();
        let context = context_of(&layout);
        let files = realisation_of(&layout, &context, vec![]).root_files(1);
        assert!(!files.is_empty());
        for file in files {
            assert!(
                !file.starts_with("/nix")
                    && !file.starts_with("/var/log")
                    && !file.starts_with("/persist")
            );
        }
    }

    #[test]
    fn tampering_changes_the_steps_not_the_expectations() {
        let layout = host_layout();
        let context = context_of(&layout);
        let tamper = vec![
            "drop-subvolume=@caddy".parse().unwrap(),
            "drop-mount-option=/nix:noatime".parse().unwrap(),
        ];
        let plan = realisation_of(&layout, &context, tamper).plan(1).unwrap();
        assert!(!plan.steps.iter().any(|s| s.name == "subvolume:@caddy"));
        let Expect::Subvolumes { names, .. } = expectation(&plan, "subvolumes") else {
            panic!()
        };
        assert!(names.contains(&"@caddy".to_owned()));
        assert!(!argv_of(&plan, "mount:/nix")[4].contains("noatime"));
        let Expect::MountOptions { options, .. } = expectation(&plan, "mount-options:/nix") else {
            panic!()
        };
        assert!(options.contains(&"noatime".to_owned()));
        assert!("drop-everything".parse::<Tamper>().is_err());
        let wrong: Tamper = "procedure-expect=verify.swap".parse().unwrap();
        assert_eq!(wrong, Tamper::ProcedureExpect("verify.swap".to_owned()));
        assert_eq!(wrong.to_string(), "procedure-expect=verify.swap");
        assert!("procedure-drop-sudo=".parse::<Tamper>().is_err());
        assert!("drop-mount-option=/nix".parse::<Tamper>().is_err());
    }

    #[test]
    fn hostile_strings_stay_single_arguments_and_no_shell_runs_them() {
        // Shell metacharacters in names, labels and options reach the guest as
        // data: each one argument of an argument vector, never shell text.
        let mut evaluation = crate::layout::testing::host_evaluation();
        let hostile = "@x;$(reboot)`id` \"'|&>*";
        let btrfs = &mut evaluation["layout"]["disko"]["devices"]["disk"]["main"]["content"]
            ["partitions"]["root"]["content"];
        btrfs["subvolumes"][hostile] = serde_json::json!({ "mountpoint": "/srv/a b;c" });
        btrfs["mountOptions"]
            .as_array_mut()
            .unwrap()
            .push("x-note=$(halt)".into());
        let (layout, _) = crate::layout::testing::layout_of(&evaluation);
        let layout = layout.unwrap();
        let context = context_of(&layout);
        let plan = realisation_of(&layout, &context, vec![]).plan(1).unwrap();
        let mut seen_subvolume = false;
        for step in &plan.steps {
            if let Action::Run { argv, .. } = &step.action {
                let program = argv[0].rsplit('/').next().unwrap();
                assert!(argv[0].starts_with('/'), "{argv:?}");
                assert!(
                    !["sh", "bash", "dash", "busybox"].contains(&program),
                    "a shell runs {argv:?}"
                );
                if argv
                    .iter()
                    .any(|a| a == &format!("/run/xtask/disko/{hostile}"))
                {
                    seen_subvolume = true;
                }
                for argument in argv {
                    assert!(!argument.contains('\n'), "{argument:?}");
                }
            }
        }
        assert!(
            seen_subvolume,
            "the hostile subvolume is created from one argument"
        );
        assert_eq!(
            argv_of(&plan, "mount:/srv/a b;c").last().unwrap(),
            "/sysroot/srv/a b;c"
        );
        // The plan survives JSON unchanged, as the guest reads it.
        let back: Plan = serde_json::from_str(&plan.to_json()).unwrap();
        assert_eq!(back, plan);
    }

    #[test]
    fn kernel_forms_and_vfat_modes() {
        let given: Vec<String> = [
            "subvol=@nix",
            "compress=zstd",
            "noatime",
            "x-systemd.automount",
            "defaults",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            kernel_forms("btrfs", &given),
            ["subvol=/@nix", "compress=zstd:3", "noatime"]
        );
        assert_eq!(
            kernel_forms("vfat", &["umask=077".to_owned()]),
            ["fmask=0077", "dmask=0077"]
        );
        assert_eq!(vfat_modes(&["umask=0077".to_owned()]), (0o700, 0o700));
        assert_eq!(
            vfat_modes(&["fmask=0177".to_owned(), "dmask=0077".to_owned()]),
            (0o700, 0o600)
        );
        assert_eq!(vfat_modes(&[]), (0o755, 0o755));
    }

    #[test]
    fn rollback_settings_from_the_host_or_the_module_defaults() {
        let value = serde_json::json!({ "boot": { "btrfsRollback": {
            "enable": true, "mountPoint": "/mnt/top", "retentionDays": 7, "keepAtLeast": 2
        }}});
        let settings = RollbackSettings::from_evaluation(&value, "rollback.nix").unwrap();
        assert_eq!(settings.mount_point, "/mnt/top");
        assert_eq!((settings.retention_days, settings.keep_at_least), (7, 2));
        assert_eq!(settings.root_subvolume, "@root");
        let bad = serde_json::json!({ "boot": { "btrfsRollback": { "keepAtLeast": "five" } } });
        assert!(RollbackSettings::from_evaluation(&bad, "rollback.nix").is_err());
        let none = RollbackSettings::from_evaluation(&serde_json::json!({}), "x").unwrap();
        assert_eq!(none.mount_point, RollbackSettings::default().mount_point);
    }

    #[test]
    fn systemd_names_like_nixos() {
        assert_eq!(
            systemd_device_name("/dev/disk/by-partlabel/disk-main-swap"),
            "dev-disk-byx2dpartlabel-diskx2dmainx2dswap"
        );
        assert_eq!(systemd_device_name("/dev/sda3"), "dev-sda3");
    }
}
