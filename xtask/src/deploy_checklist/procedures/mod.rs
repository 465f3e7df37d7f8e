//! The one source of the checklist's procedures: each step of the deployment
//! (§2), the post-deploy verification (§3) and the rollback plan (§4) as
//! typed data that the checklist renderer prints and that a VM can execute.
//!
//! # Running a procedure (what a runner must do)
//!
//! - A [`Procedure`] has a stable `id` (`verify.units`, `rollback.restore-persist`,
//!   …) tied to its checklist step; [`super::Checklist::step_of`] gives the
//!   step's number (`3.1`). Report failures with both.
//! - Its [`Command`]s run in order, each where its `where` says:
//!   - `server`: on the installed server, **as the admin user** of machine.nix
//!     (`ssh <admin>@<IP>`), in a real POSIX shell (`sh -c '<line>'`; lines use
//!     pipes and `$(…)`) with GNU coreutils (`cp --reflink`, `mv -T`). Every
//!     server line that needs root starts with `sudo` itself: never run the
//!     line as root, or a missing `sudo` goes unnoticed;
//!   - `rescue`: in the Hetzner rescue system or nixos-anywhere's installer, as root;
//!   - `local`: on the workstation, in the repository. `reaches` says which
//!     machine it logs in to (`ssh …`), if any.
//! - Parameters (`<old-root>`, `<path>`, …) are replaced in the line by values
//!   the runner chose, as listed in `parameters`; `<IP>`, `<server>` and
//!   `<key>` are the checklist's placeholders.
//! - Each [`Expect`] is checked against the exit status and the standard
//!   output (stderr is not compared): all must hold. A command without an
//!   [`Expect::Exit`] must exit 0. [`Expect::check`] does the comparison.
//! - `reboots`: the command reboots the server; wait for it to come back
//!   and log in again before the next command. `installs`: it installs the
//!   server afresh (the disk is erased); the next command runs on the new
//!   system.
//! - `needs` says what the procedure depends on beyond a shell (systemd, a
//!   reboot, the Hetzner console, …): a runner without it reports the
//!   procedure as not run, never as passed.
//! - `shows` is the human text of what the command prints; it may round or
//!   abbreviate, the expectations are what counts.
//!
//! A runner builds the same procedures the checklist prints:
//! `verification(&subject, &facts, None)` and `rollback(&subject, &facts)`
//! (numbered: [`super::server_procedures`]), with the host's
//! [`crate::hosts::Subject`] and
//! [`HostFacts::load`](super::facts::HostFacts::load). vm-test is one
//! (`crate::vm::procedure_runs`: what it runs, what it cannot and why); the
//! NixOS VM test runs the procedures that need systemd from
//! nix/tests/procedures.json, generated from here.

use serde::Serialize;

use crate::hosts::Subject;
use crate::report::{Lifecycle, Tables};
use layout::impermanence::{
    MANAGEMENT_MOUNTPOINT, OLD_ROOTS_SUBVOLUME, PERSIST_MOUNTPOINT, PERSIST_SUBVOLUME,
};
use layout::names::partition_node;
use layout::{Content, DiskContent};

use super::facts::Where;

use lab_protocol::expect;
mod rollback_plan;
mod verification;

pub use expect::{matches, pattern_regex, Expect};
pub use rollback_plan::{erased_by_reinstall, rollback};
pub use verification::verification;

const SNAPSHOTS_MOUNTPOINT: &str = "/.snapshots";
/// nix/modules/btrfs-rollback/default.nix: `statusDir` and the unit that
/// reports the initrd's rollback in the running system.
pub const ROLLBACK_STATUS_DIR: &str = "/run/btrfs-rollback";
pub const ROLLBACK_STATUS_UNIT: &str = "btrfs-rollback-status.service";
/// The roadmap's threshold: compression saves more than 30 % on the store,
/// so compsize's TOTAL Perc (stored / uncompressed) is at most 70 %.
pub const MAX_STORE_PERC: f64 = 70.0;

/// One step of the checklist.
#[derive(Debug, Clone, Serialize)]
pub struct Procedure {
    /// Stable: `deploy.install`, `verify.mounts`, `rollback.file-from-old-root`, ….
    pub id: String,
    pub title: String,
    /// Why, and what to watch for.
    pub notes: Vec<String>,
    /// Values the reader (or a runner) fills in, e.g. `<old-root>`.
    pub parameters: Vec<Parameter>,
    pub needs: Vec<Need>,
    pub commands: Vec<Command>,
    /// What to do next, or when the output differs.
    pub afterwards: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Parameter {
    pub name: String,
    pub meaning: String,
}

/// What a procedure depends on beyond a shell on the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Need {
    /// systemd as PID 1 (systemctl, journalctl).
    Systemd,
    /// A reboot of the server in the middle.
    Reboot,
    /// NixOS's own tools (nixos-rebuild, switch-to-configuration).
    NixosTooling,
    /// A person at the server's console (GRUB menu).
    Console,
    /// The Hetzner Cloud API (`hcloud`) or Cloud Console.
    Hetzner,
    /// A system that has been used for a while (data to measure).
    UsedSystem,
    /// Reinstalling the server.
    Reinstall,
    /// The Hetzner rescue system (it starts there).
    RescueSystem,
}

#[derive(Debug, Clone, Serialize)]
pub struct Command {
    #[serde(rename = "where")]
    pub at: Where,
    pub line: String,
    /// For a local command that logs in elsewhere: where.
    pub reaches: Option<Where>,
    /// All must hold; without an `exit` expectation the command must exit 0.
    pub expect: Vec<Expect>,
    /// What it prints when all is well, for the reader.
    pub shows: Vec<String>,
    /// It reboots the server.
    pub reboots: bool,
    /// It installs the server afresh (nixos-anywhere): the disk is erased,
    /// and the next command runs on the new system.
    pub installs: bool,
}

pub(super) fn procedure(id: &str, title: impl Into<String>) -> Procedure {
    Procedure {
        id: id.to_owned(),
        title: title.into(),
        notes: Vec::new(),
        parameters: Vec::new(),
        needs: Vec::new(),
        commands: Vec::new(),
        afterwards: Vec::new(),
    }
}

impl Procedure {
    pub(super) fn note(mut self, text: impl Into<String>) -> Procedure {
        self.notes.push(text.into());
        self
    }
    pub(super) fn then(mut self, text: impl Into<String>) -> Procedure {
        self.afterwards.push(text.into());
        self
    }
    pub(super) fn needs(mut self, need: Need) -> Procedure {
        if !self.needs.contains(&need) {
            self.needs.push(need);
        }
        self
    }
    pub(super) fn parameter(mut self, name: &str, meaning: impl Into<String>) -> Procedure {
        self.parameters.push(Parameter {
            name: name.to_owned(),
            meaning: meaning.into(),
        });
        self
    }
    pub(super) fn run(mut self, command: Command) -> Procedure {
        if command.reboots {
            self = self.needs(Need::Reboot);
        }
        let first = command.line.trim_start_matches("sudo ");
        if command.at == Where::Server
            && (first.starts_with("systemctl") || first.starts_with("journalctl"))
        {
            self = self.needs(Need::Systemd);
        }
        self.commands.push(command);
        self
    }
    /// Adds a human line to the last command's `shows`.
    pub(super) fn shows(mut self, text: impl Into<String>) -> Procedure {
        if let Some(last) = self.commands.last_mut() {
            last.shows.push(text.into());
        }
        self
    }
    /// Adds an expectation to the last command.
    pub(super) fn expect(mut self, expect: Expect) -> Procedure {
        if let Some(last) = self.commands.last_mut() {
            last.expect.push(expect);
        }
        self
    }
    /// The last command prints a line matching `pattern`, shown as is.
    pub(super) fn line(self, pattern: impl Into<String>) -> Procedure {
        let pattern = pattern.into();
        self.shows(pattern.clone()).expect(Expect::Line { pattern })
    }
}

fn command(at: Where, line: impl Into<String>) -> Command {
    Command {
        at,
        line: line.into(),
        reaches: None,
        expect: Vec::new(),
        shows: Vec::new(),
        reboots: false,
        installs: false,
    }
}

pub(super) fn local(line: impl Into<String>) -> Command {
    command(Where::Local, line)
}

/// A local command that logs in to `reaches` (ssh, nixos-anywhere).
pub(super) fn local_to(reaches: Where, line: impl Into<String>) -> Command {
    Command {
        reaches: Some(reaches),
        ..command(Where::Local, line)
    }
}

pub(super) fn rescue(line: impl Into<String>) -> Command {
    command(Where::Rescue, line)
}

/// A server command, run by the admin with `sudo`.
pub(super) fn sudo(line: impl AsRef<str>) -> Command {
    command(Where::Server, format!("sudo {}", line.as_ref()))
}

fn reboot() -> Command {
    Command {
        reboots: true,
        ..sudo("systemctl reboot")
    }
}

/// Names the steps need, found in the layout (with the usual ones as fallback).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    pub persist: String,
    pub snapshots: String,
    pub old_roots: String,
    pub top: String,
}

pub fn names(tables: &Tables) -> Names {
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
pub(super) fn kernel_node(subject: &Subject, device: &str) -> Option<String> {
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

impl Command {
    fn with_reaches(mut self, reaches: Where) -> Command {
        self.reaches = Some(reaches);
        self
    }

    fn installing(mut self) -> Command {
        self.installs = true;
        self
    }
}

#[cfg(test)]
mod tests;
