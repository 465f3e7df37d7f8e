//! From the evaluated layout to the plans of each boot: what disko does to
//! create it, what NixOS does to mount it at every boot (the rollback first,
//! then `/`, the neededForBoot mounts, the rest, the +C tmpfiles rules and
//! randomly encrypted swap), and what the guest must find afterwards.
//!
//! Everything here comes from the model that `check` judged: the partition
//! geometry (`geometry::compute`), the options that take effect
//! (`mount_options::effective`) and the mounts in NixOS order (`Layout::mounts`).
//!
//! The boot's plan is put together here (`plan_for`), in the order the
//! steps run; each part lives in its own file:
//! - `disko`: partition, link and format the empty disk (install boot);
//! - `rollback`: the initrd's rollback, its settings and what the guest must
//!   find after it (earlier boots' files gone, old roots as retention keeps them);
//! - `mounts`: NixOS's mounts in order, the options as the kernel shows them, swap;
//! - `system`: stage 2 (the system's binds, persistence, identity, admin, discard);
//! - `expectations`: markers, data and the checks of the install and every boot;
//! - `tamper`: deliberate differences that prove vm-test fails on them.

use std::collections::BTreeMap;

use anyhow::{bail, Context as _, Result};

use super::initramfs::{hex, EmbeddedScript};
use super::plan::*;
use crate::hosts::Model;
use layout::geometry::DiskGeometry;
use layout::{Btrfs, Content, Disk, DiskContent, Layout, Partition};

/// The layout's disk is the VM's first virtio disk.
pub const GUEST_DISK: &str = "/dev/vda";
/// Incompressible data written, deleted and trimmed to see the host image shrink.
pub const TRIM_PROBE_BYTES: u64 = 32 << 20;
/// Incompressible data the install boot leaves in its root, for the month's
/// rollback to delete with it (`RollbackTrim`).
pub const ROLLBACK_TRIM_BYTES: u64 = 32 << 20;
/// Where in `/` it lies (on the root subvolume).
pub const ROLLBACK_TRIM_FILE: &str = "/var/tmp/xtask-rollback-trim";
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

mod disko;
mod expectations;
mod mounts;
mod rotation;
mod system;
mod tamper;
#[cfg(test)]
mod tests;

pub use layout::kernel_options::{kernel_forms, vfat_modes};
pub use mounts::systemd_device_name;
pub use rotation::RollbackSettings;
pub use tamper::Tamper;

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
    /// TRIM of what the rollback deletes: the install boot leaves
    /// `ROLLBACK_TRIM_BYTES` in its root; a rotation boot that deletes that
    /// root measures the image before its rollback, after the deletion
    /// and after the host's fstrim.service (when its timer starts it).
    pub rollback_trim: Option<RollbackTrim>,
    /// `vm-test --serve-ssh`: at the end of the boot, sshd serves the
    /// booted system until the host says `continue`.
    pub serve_ssh: Option<ServeSsh>,
}

/// The host's fstrim.service as a rotation boot runs it after the rollback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollbackTrim {
    /// The timer's settings that start fstrim.service after this boot's
    /// rollback (`checklist::facts::Fstrim::triggers`); empty: it does not
    /// run, and the freed space stays allocated in the image.
    pub triggers: Vec<String>,
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
            rollback_trim: None,
            serve_ssh: None,
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
                if spec.rollback_trim.is_some() {
                    self.rollback_trim_file(&mut steps);
                }
            }
            BootKind::Rotate => {
                self.link_partitions(&mut steps);
                if spec.rollback_trim.is_some() {
                    steps.push(measure(ROLLBACK_TRIM_BEFORE));
                }
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
                // Before the checklist's procedures: §3.8's fstrim would
                // trim what async discard is to release.
                self.discard_latency(&mut steps, spec);
                // After the discard probe (fstrim would trim what async
                // discard is to release), before the checklist's
                // procedures (their writes would blur the measurement).
                if let Some(trim) = &spec.rollback_trim {
                    self.rollback_trim(&mut steps, trim);
                }
                self.admin(&mut steps, &spec.procedures);
                self.write_root_files(&mut steps, boot);
            }
            BootKind::RotateOnly => {
                self.link_partitions(&mut steps);
                self.rollback(&mut steps, spec)?;
                self.old_roots_check(&mut steps, spec);
            }
            // §4.6's rescue system: no rollback, no mount of the installed
            // system; the admin's commands run in the RAM root (/sysroot
            // of the initramfs) with the image's programs bound in.
            BootKind::Rescue => {
                self.link_partitions(&mut steps);
                self.enter_system(&mut steps, spec);
                self.admin(&mut steps, &spec.continued);
                self.admin(&mut steps, &spec.procedures);
            }
        }
        if let Some(serve) = &spec.serve_ssh {
            // Last: everything the boot checks is done; the host's verify
            // sees the system as the boot left it.
            steps.push(step(
                "serve:ssh",
                OnFailure::Continue,
                Action::ServeSsh(serve.clone()),
            ));
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

    fn run(&self, argv: Vec<String>) -> Action {
        Action::Run {
            argv,
            env: BTreeMap::new(),
        }
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

/// The host's measurement points of `RollbackTrim`: before the rollback,
/// after its deletions were cleaned up, after fstrim.service.
pub const ROLLBACK_TRIM_BEFORE: &str = "rollback-trim.before";
pub const ROLLBACK_TRIM_DELETED: &str = "rollback-trim.deleted";
pub const ROLLBACK_TRIM_AFTER: &str = "rollback-trim.after";

fn measure(point: &str) -> Step {
    step(
        &format!("measure:{point}"),
        OnFailure::Continue,
        Action::Measure {
            point: point.to_owned(),
            device: GUEST_DISK.to_owned(),
        },
    )
}

fn strings<const N: usize>(items: [&str; N]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}
