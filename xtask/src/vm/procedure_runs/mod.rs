//! The deploy checklist's server procedures (§3 post-deploy verification,
//! §4 rollback plan) as vm-test runs them: read from the checklist's one
//! source (`crate::deploy_checklist::server_procedures`), so the lines the VM runs
//! are the lines the checklist prints, and the expectations it checks are
//! the checklist's own (`Expect::check`).
//!
//! Each command gets a disposition in the lab (`disposition`):
//! - it **runs**, as the admin (`sudo` in the line where root is needed;
//!   `local$` commands in the workstation's directory, with `ssh` to the
//!   server carried by the lab's transport: the VM is both machines);
//! - `systemctl reboot` and nixos-anywhere are **boundaries**: the VM
//!   powers off and the next boot (a rotation, or an install) continues the
//!   procedure; the line itself is NOT RUN;
//! - what the lab cannot provide (systemd, GRUB and the console, NixOS's
//!   tooling, the Hetzner API, a network login) is **NOT RUN**, with the
//!   reason and where it is proven instead, if anywhere.
//!
//! Placeholders get values in the VM from shell expressions (`harness`),
//! evaluated the first time a procedure needs them and kept for its later
//! parts: `<IP>` is 127.0.0.1 (the lab's ssh runs the remote command in the
//! VM itself), `<old-root>` the newest old root, `<path>` a file the lab
//! wrote, `<snapshot>` the snapshot the lab took as btrbk would. The
//! server's disk (`/dev/sda`) is the VM's (`/dev/vda`) in every line and
//! expectation. Around the checklist's commands the lab adds its own: setup
//! (the situation a procedure is for, e.g. a damaged /persist) and
//! verification (a SHA-256 over the data that must come back, captured
//! before and compared after, across reboots and a reinstall).
//!
//! Quick read-only procedures of §3 run in the default vm-test (`Tier`),
//! the rest with `--thorough`; §4.6, which starts in the rescue system,
//! with `--drills`: its first part ends at `hcloud server reset`, the next
//! boot is the lab's rescue boot (`Then::Rescue`: nothing of the installed
//! system mounted, its root deleted first), and it goes on with §4.5's
//! lines from `hcloud server enable-rescue`, as the checklist says.

use super::plan::{AdminCommand, AdminLogin};
use crate::deploy_checklist::procedures::Names;

mod convert;
mod harness;
mod nixos_test;
mod schedule;

/// What the lab does with each checklist command is the checklist's to say
/// (it prints it); the lab follows it.
pub use crate::deploy_checklist::disposition::{
    disposition, simple_commands, simple_commands_sudo, tier, Disposition, Then, Tier,
    NIXOS_TEST_PROCEDURES, NIXOS_VM_TEST, RESCUE_DRILLS,
};
pub use convert::{convert, convert_run, not_run_record, of_tier, placeholders};
pub use nixos_test::{nixos_test_json, NIXOS_TEST_FILE};
pub use schedule::{step_of, BootProcedures, Schedule};

/// The second virtual disk of `--thorough`: the admin's workstation, where
/// §4.5 saves /persist before the reinstall.
pub const BACKUP_DISK: &str = "/dev/vdb";
/// Where the workstation's disk is mounted: `local$` commands run there.
/// Not below /mnt: the rescue system mounts the server's top level there.
pub const WORKSTATION: &str = "/workstation";
/// The backup disk's size (sparse).
pub const BACKUP_DISK_BYTES: u64 = 8 << 30;
/// `<IP>` in the VM: the lab's ssh runs the remote command here.
pub const LAB_IP: &str = "127.0.0.1";
/// The drills `--thorough` runs twice, with /persist changed in between:
/// the second run must restore the newer data.
pub const TWICE: &[&str] = &[
    "rollback.restore-persist",
    "rollback.reinstall",
    "rollback.rescue-save",
];
/// Where §4.6 goes on: §4.5 from this line on.
pub const RESCUE_CONTINUES: (&str, &str) = ("rollback.reinstall", "hcloud server enable-rescue");

/// What the lab knows about the run: the layout's names, the disk, the
/// admin, and the file a boot lost (for §4.3).
#[derive(Debug, Clone, PartialEq)]
pub struct Lab {
    pub names: Names,
    /// The server's disk and the VM's: `/dev/sda` → `/dev/vda`.
    pub disk: Option<(String, String)>,
    pub login: AdminLogin,
    pub lost: Option<LostFile>,
    /// The mountpoints of the subvolumes a reinstall erases and nothing
    /// brings back (`checklist::procedures::erased_by_reinstall`).
    pub erased: Vec<String>,
    /// The subvolume mounted at `/` (`@root`): what the rescue drill breaks.
    pub root_subvolume: String,
}

/// A file the last boot wrote into /, which is in the newest old root now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LostFile {
    /// Relative to the root, e.g. `root/xtask/boot-3.txt`.
    pub path: String,
    pub sha256: String,
}

/// A checklist procedure in the lab's terms: its commands in parts.
#[derive(Debug, Clone, PartialEq)]
pub struct Procedure {
    pub id: String,
    pub step: String,
    pub title: String,
    pub substitutions: Vec<(String, String)>,
    pub login: AdminLogin,
    pub parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    pub commands: Vec<AdminCommand>,
    pub then: Then,
}

#[cfg(test)]
mod tests;
