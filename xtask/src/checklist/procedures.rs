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
//! (`crate::vm::procedures`: what it runs, what it cannot and why); the
//! NixOS VM test runs the procedures that need systemd from
//! nix/tests/procedures.json, generated from here.

use serde::{Deserialize, Serialize};

use crate::hosts::Subject;
use crate::layout::impermanence::{
    MANAGEMENT_MOUNTPOINT, OLD_ROOTS_SUBVOLUME, PERSIST_MOUNTPOINT, PERSIST_SUBVOLUME,
};
use crate::layout::size::SECTOR_BYTES;
use crate::layout::{Content, DiskContent, EntryKind};
use crate::names::{escape_systemd_path, partition_node, swap_mapper_name};
use crate::report::{Lifecycle, Tables};

use super::facts::{HostFacts, Where};
use super::plan::Measured;

/// x86-64 Linux pages: mkswap keeps the first for its header, so swapon
/// shows a swap area one page smaller than the device.
const PAGE_BYTES: u64 = 4096;
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

/// A machine-checkable expectation on a command's exit status and stdout.
///
/// Patterns match a whole line (trimmed): `<n>` is one or more digits,
/// `<old-root>` an old root's name (`20260101T120000Z`, maybe `-NN`), `<*>`
/// any text, a run of spaces one or more blanks; everything else is literal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Expect {
    Exit {
        status: i32,
    },
    /// Stdout is empty (blank lines aside).
    Empty,
    /// Some line matches the pattern.
    Line {
        pattern: String,
    },
    /// No line matches the pattern.
    NoLine {
        pattern: String,
    },
    /// A line whose first field is `first` has every one of `include` among
    /// its fields (split at blanks and commas): mount options, in any order.
    Fields {
        first: String,
        include: Vec<String>,
    },
    /// The line matching `pattern` has a number at most `max` in field
    /// `field` (1-based, split at blanks; `37%` reads as 37).
    AtMost {
        pattern: String,
        field: usize,
        max: f64,
    },
}

impl Expect {
    /// `Ok` when the expectation holds for a command that exited with
    /// `status` and printed `stdout`; `Err` says what differed.
    pub fn check(&self, status: i32, stdout: &str) -> Result<(), String> {
        let lines = || stdout.lines().map(str::trim).filter(|l| !l.is_empty());
        match self {
            Expect::Exit { status: wanted } => (status == *wanted)
                .then_some(())
                .ok_or_else(|| format!("exit status {status}, expected {wanted}")),
            Expect::Empty => match lines().next() {
                None => Ok(()),
                Some(line) => Err(format!("expected no output, got {line:?}")),
            },
            Expect::Line { pattern } => lines()
                .any(|l| matches(pattern, l))
                .then_some(())
                .ok_or_else(|| format!("no line matches {pattern:?}")),
            Expect::NoLine { pattern } => match lines().find(|l| matches(pattern, l)) {
                None => Ok(()),
                Some(line) => Err(format!("{line:?} matches {pattern:?}")),
            },
            Expect::Fields { first, include } => {
                let fields = |l: &str| -> Vec<String> {
                    l.split(|c: char| c.is_whitespace() || c == ',')
                        .filter(|f| !f.is_empty())
                        .map(str::to_owned)
                        .collect()
                };
                let Some(line) = lines().find(|l| fields(l).first() == Some(first)) else {
                    return Err(format!("no line starts with {first:?}"));
                };
                let have = fields(line);
                let missing: Vec<&str> = include
                    .iter()
                    .filter(|i| !have.contains(i))
                    .map(String::as_str)
                    .collect();
                if missing.is_empty() {
                    Ok(())
                } else {
                    Err(format!("{first}: missing {}", missing.join(",")))
                }
            }
            Expect::AtMost {
                pattern,
                field,
                max,
            } => {
                let Some(line) = lines().find(|l| matches(pattern, l)) else {
                    return Err(format!("no line matches {pattern:?}"));
                };
                let value = line
                    .split_whitespace()
                    .nth(field.saturating_sub(1))
                    .map(|f| f.trim_end_matches('%'))
                    .and_then(|f| f.parse::<f64>().ok())
                    .ok_or_else(|| format!("field {field} of {line:?} is not a number"))?;
                (value <= *max)
                    .then_some(())
                    .ok_or_else(|| format!("{value} in {line:?} is above {max}"))
            }
        }
    }
}

/// Whether `line` (trimmed) matches `pattern` (see [`Expect`]).
pub fn matches(pattern: &str, line: &str) -> bool {
    #[derive(Debug)]
    enum Token<'a> {
        Literal(&'a str),
        Number,
        OldRoot,
        Any,
        Blank,
    }
    let mut tokens = Vec::new();
    let mut rest = pattern.trim();
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("<n>") {
            tokens.push(Token::Number);
            rest = after;
        } else if let Some(after) = rest.strip_prefix("<old-root>") {
            tokens.push(Token::OldRoot);
            rest = after;
        } else if let Some(after) = rest.strip_prefix("<*>") {
            tokens.push(Token::Any);
            rest = after;
        } else if rest.starts_with(' ') {
            tokens.push(Token::Blank);
            rest = rest.trim_start_matches(' ');
        } else {
            let end = rest
                .char_indices()
                .skip(1)
                .find(|(i, c)| *c == ' ' || rest[*i..].starts_with('<'))
                .map_or(rest.len(), |(i, _)| i);
            tokens.push(Token::Literal(&rest[..end]));
            rest = &rest[end..];
        }
    }
    fn old_root_len(s: &str) -> Option<usize> {
        let b = s.as_bytes();
        let stamp = b.len() >= 16
            && b[..8].iter().all(u8::is_ascii_digit)
            && b[8] == b'T'
            && b[9..15].iter().all(u8::is_ascii_digit)
            && b[15] == b'Z';
        if !stamp {
            return None;
        }
        let suffix = b.len() >= 19 && b[16] == b'-' && b[17..19].iter().all(u8::is_ascii_digit);
        Some(if suffix { 19 } else { 16 })
    }
    fn go(tokens: &[Token<'_>], s: &str) -> bool {
        let Some((token, more)) = tokens.split_first() else {
            return s.is_empty();
        };
        match token {
            Token::Literal(text) => s.strip_prefix(text).is_some_and(|r| go(more, r)),
            Token::Number => {
                let digits = s.bytes().take_while(u8::is_ascii_digit).count();
                (1..=digits).rev().any(|n| go(more, &s[n..]))
            }
            Token::OldRoot => {
                let Some(len) = old_root_len(s) else {
                    return false;
                };
                // Without the suffix too: `<old-root>-x` stays possible.
                go(more, &s[len..]) || (len == 19 && go(more, &s[16..]))
            }
            Token::Any => s
                .char_indices()
                .map(|(i, _)| i)
                .chain([s.len()])
                .any(|i| go(more, &s[i..])),
            Token::Blank => {
                let blanks = s.len() - s.trim_start().len();
                blanks > 0 && go(more, &s[blanks..])
            }
        }
    }
    go(&tokens, line.trim())
}

/// `pattern` (see [`Expect`]) as a regular expression that matches a whole
/// trimmed line the way [`matches`] does, in the syntax Python's `re` and
/// Rust's `regex` share (for runners in other languages, e.g. the NixOS VM
/// test's Python, which uses `re.fullmatch`).
pub fn pattern_regex(pattern: &str) -> String {
    let mut regex = String::new();
    let mut rest = pattern.trim();
    while let Some(c) = rest.chars().next() {
        if let Some(after) = rest.strip_prefix("<n>") {
            regex.push_str("[0-9]+");
            rest = after;
        } else if let Some(after) = rest.strip_prefix("<old-root>") {
            regex.push_str("[0-9]{8}T[0-9]{6}Z(?:-[0-9]{2})?");
            rest = after;
        } else if let Some(after) = rest.strip_prefix("<*>") {
            regex.push_str(".*");
            rest = after;
        } else if c == ' ' {
            regex.push_str("\\s+");
            rest = rest.trim_start_matches(' ');
        } else {
            if "\\.^$*+?{}[]|()-&~#".contains(c) {
                regex.push('\\');
            }
            regex.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    regex
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

fn node_or_placeholder(subject: &Subject, device: &str) -> String {
    kernel_node(subject, device).unwrap_or_else(|| format!("<the kernel's name of {device}>"))
}

/// The files persistence keeps that identify the machine: its machine-id and
/// SSH host keys (the public halves: hashing them proves the private ones).
fn identity_files(subject: &Subject) -> Vec<String> {
    let mut files: Vec<String> = subject
        .layout
        .persistence
        .iter()
        .flat_map(|root| root.entries.iter())
        .filter(|e| e.kind == EntryKind::File && e.user.is_none())
        .map(|e| e.target.clone())
        .filter(|t| {
            t == "/etc/machine-id" || (t.starts_with("/etc/ssh/ssh_host_") && t.ends_with(".pub"))
        })
        .collect();
    files.sort();
    files
}

/// §3: what to check on the installed server, each with its expected result.
pub fn verification(
    subject: &Subject,
    facts: &HostFacts,
    measured: Option<&Measured>,
) -> Vec<Procedure> {
    let tables = subject.tables();
    let n = names(&tables);
    let mut steps = Vec::new();

    // Units and timers.
    let mut units = vec![ROLLBACK_STATUS_UNIT.to_owned()];
    units.extend(
        facts
            .btrbk_instances
            .iter()
            .map(|i| format!("btrbk-{i}.timer")),
    );
    units.extend(
        facts
            .scrub_file_systems
            .iter()
            .map(|fs| format!("btrfs-scrub-{}.timer", escape_systemd_path(fs))),
    );
    let mut boot = procedure("verify.units", "The system came up clean")
        .note("No unit failed at boot, and the units this host relies on are active: the report of the root rollback (it fails when the initrd's rollback failed), the btrbk snapshots of /persist and the monthly scrub.")
        .run(sudo("systemctl --failed --no-legend --plain"))
        .shows("(nothing: no unit failed)")
        .expect(Expect::Empty)
        .run(sudo(format!("systemctl is-active {}", units.join(" "))));
    for _ in &units {
        boot = boot.shows("active");
    }
    boot = boot
        .expect(Expect::NoLine {
            pattern: "<*>inactive<*>".to_owned(),
        })
        .expect(Expect::NoLine {
            pattern: "failed".to_owned(),
        })
        .then(format!(
            "A failed unit: `sudo systemctl status <unit>` and `sudo journalctl -b -u <unit>` say why; {ROLLBACK_STATUS_UNIT} failing means the rollback did not run or failed (docs/troubleshooting.md)."
        ));
    steps.push(boot);

    // Mounts.
    for fs in &tables.filesystems {
        let node = node_or_placeholder(subject, &fs.device);
        let mut mounts = procedure("verify.mounts", format!("Btrfs mounts of {}", fs.device))
            .note("Every filesystem-wide option is the same on every line: the first mount decided them. The kernel adds rw and subvolid=<n>, and may list the options in another order.")
            .run(sudo("findmnt -t btrfs -l -n -o TARGET,SOURCE,OPTIONS"));
        for s in &fs.subvolumes {
            let Some(mountpoint) = &s.mountpoint else {
                continue;
            };
            let (source, selector) = if s.name == "(top level)" {
                (node.clone(), "subvol=/".to_owned())
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
            let mut include = vec![source.clone()];
            include.extend(options.iter().cloned());
            mounts = mounts
                .shows(format!("{mountpoint}  {source}  {}", options.join(",")))
                .expect(Expect::Fields {
                    first: mountpoint.clone(),
                    include,
                });
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
                    let source = format!("{node}[/{subvolume}{}]", entry.target);
                    mounts = mounts
                        .shows(format!(
                            "{}  {source}  (impermanence's bind mount)",
                            entry.target
                        ))
                        .expect(Expect::Fields {
                            first: entry.target.clone(),
                            include: vec![source],
                        });
                }
            }
        }
        mounts = mounts.then(
            "For example, kernel 6.18 prints `rw,noatime,compress=zstd:1,ssd,discard=async,space_cache=v2,subvolid=256,subvol=/@root`. Persisted files may show up as bind mounts too.",
        );
        steps.push(mounts);

        // Subvolumes.
        if let Some(top) = fs
            .subvolumes
            .iter()
            .find(|s| s.name == "(top level)")
            .and_then(|s| s.mountpoint.clone())
        {
            let mut list = procedure("verify.subvolumes", format!("Subvolumes of {}", fs.device))
                .note("systemd-tmpfiles may add nested subvolumes inside the root (e.g. `@root/var/lib/machines`): they go with the root at the next boot.")
                .run(sudo(format!("btrfs subvolume list {top}")));
            for s in fs.subvolumes.iter().filter(|s| s.name != "(top level)") {
                list = list.line(format!("ID <n> gen <n> top level 5 path {}", s.name));
            }
            list = list.then(format!(
                "After the first reboot there is also one `ID <n> gen <n> top level <n> path {}/<old-root>` per boot.",
                n.old_roots
            ));
            steps.push(list);
        }
    }

    // Swap.
    for swap in &tables.swaps {
        let node = node_or_placeholder(subject, &swap.device);
        let shown = swap
            .size_bytes
            .map(|b| b.saturating_sub(PAGE_BYTES).to_string())
            .unwrap_or_else(|| "<n>".to_owned());
        let mut s = procedure("verify.swap", format!("Swap on {}", swap.device))
            .run(sudo("swapon --show=NAME,TYPE,SIZE --bytes --noheadings"));
        if swap.random_encryption {
            let mapper = swap_mapper_name(&swap.device);
            s = s
                .line(format!("/dev/dm-<n> partition {shown}"))
                .expect(Expect::NoLine {
                    pattern: format!("{node} <*>"),
                })
                .shows("(the device-mapper device; the size is the partition less mkswap's 4 KiB header page)")
                .run(sudo(format!("cryptsetup status {mapper}")))
                .line(format!("/dev/mapper/{mapper} is active and is in use."))
                .line("type: PLAIN")
                .line("cipher: aes-xts-plain64")
                .line("keysize: 256 bits")
                .line(format!("device: {node}"));
            if let Some(bytes) = swap.size_bytes {
                s = s.line(format!("size: {} sectors", bytes / SECTOR_BYTES));
            }
            s = s.note(format!(
                "NixOS names the mapping after the device path ({}), escaped like a systemd unit name without backslashes; aes-xts-plain64 with a 256-bit key is nixpkgs' default for randomEncryption. If swapon shows {node} itself, swap is NOT encrypted: see docs/troubleshooting.md.",
                swap.device
            ));
        } else {
            s = s.line(format!("{node} partition {shown}"));
        }
        steps.push(s);
    }

    // ESP.
    for m in tables.other_mounts.iter().filter(|m| m.fs_type == "vfat") {
        let node = node_or_placeholder(subject, &m.device);
        let umask = m
            .options_in_effect
            .iter()
            .find_map(|o| o.strip_prefix("umask="));
        let include: Vec<String> = match umask {
            Some(mask) => vec![format!("fmask={mask:0>4}"), format!("dmask={mask:0>4}")],
            None => m.options_in_effect.clone(),
        };
        let mut all = vec![node.clone()];
        all.extend(include.iter().cloned());
        steps.push(
            procedure("verify.esp", format!("The ESP at {}", m.mountpoint))
                .run(sudo(format!(
                    "findmnt -n -o TARGET,SOURCE,OPTIONS {}",
                    m.mountpoint
                )))
                .shows(format!(
                    "{}  {node}  with OPTIONS including {}",
                    m.mountpoint,
                    include.join(",")
                ))
                .expect(Expect::Fields {
                    first: m.mountpoint.clone(),
                    include: all,
                }),
        );
    }

    // Space.
    for fs in &tables.filesystems {
        let Some(top) = fs
            .subvolumes
            .iter()
            .find(|s| s.name == "(top level)")
            .and_then(|s| s.mountpoint.clone())
        else {
            continue;
        };
        let size = tables
            .disks
            .iter()
            .flat_map(|d| d.partitions.iter())
            .find(|p| p.device == fs.device)
            .and_then(|p| p.size_bytes);
        let mut space = procedure("verify.space", format!("Space on {}", fs.device))
            .note("Btrfs's own accounting (`df` only estimates): data single, metadata DUP (two copies, mkfs.btrfs's default on one device). docs/maintenance.md explains every line.")
            .run(sudo(format!("btrfs filesystem usage -b {top}")))
            .line("Data,single: <*>")
            .line("Metadata,DUP: <*>");
        if let Some(bytes) = size {
            space = space.shows(format!(
                "Device size: about {bytes} (the partition; Btrfs rounds it down to its 4 KiB sectors)"
            ));
        }
        steps.push(space);
    }

    // Compression and No_COW.
    let mut compression = procedure("verify.compression", "Compression")
        .needs(Need::UsedSystem)
        .note("compsize needs data: run it once the system has been used for a while (after a `nixos-rebuild` at the latest). Perc is the stored size as a share of the uncompressed size: the roadmap asks for savings above 30 %, so TOTAL Perc at most 70 %.");
    for fs in &tables.filesystems {
        for s in &fs.subvolumes {
            let Some(mp) = &s.mountpoint else { continue };
            if s.nocow {
                compression = compression
                    .run(sudo(format!("lsattr -d {mp}")))
                    .line(format!("<*>C<*> {mp}"))
                    .shows("(the C attribute: new files are No_COW, so never compressed)");
            } else if s.name == "@nix" || mp == "/nix" {
                if let Some(c) = &s.compression {
                    compression = compression
                        .run(sudo(format!("compsize -x {mp}")))
                        .expect(Expect::AtMost {
                            pattern: "TOTAL <*>".to_owned(),
                            field: 2,
                            max: MAX_STORE_PERC,
                        })
                        .line("zstd <*>")
                        .shows(format!(
                            "TOTAL with Perc at most {MAX_STORE_PERC:.0}% ({c} is in effect)"
                        ));
                }
            }
        }
    }
    if let Some(measured) = measured {
        if let Some(saved) = measured.figures.get("compression.@nix.percent") {
            compression = compression.note(format!(
                "vm-test measured {}% saved on a store written in the VM.",
                super::plan::figure_text(*saved)
            ));
        }
    }
    steps.push(compression);

    // TRIM.
    let mut trim = procedure("verify.trim", "TRIM reaches the disk")
        .note("discard=async sends TRIM in the background as space is freed; fstrim trims all free space at once. DISC-GRAN or DISC-MAX of 0B on the disk or a partition means TRIM cannot reach the disk: see docs/troubleshooting.md. The encrypted swap's mapping (TYPE crypt) shows 0B: NixOS opens it without allow-discards, so freed swap pages are not trimmed, which is expected.");
    for disk in &subject.layout.disks {
        trim = trim
            .run(sudo(format!(
                "lsblk --discard -n -o NAME,TYPE,DISC-GRAN,DISC-MAX {}",
                disk.device
            )))
            .shows(format!(
                "{} (disk) and its partitions (part), each with non-zero DISC-GRAN and DISC-MAX",
                disk.device.trim_start_matches("/dev/")
            ))
            .expect(Expect::Line {
                pattern: "<*> disk <*>".to_owned(),
            })
            .expect(Expect::NoLine {
                pattern: "<*> disk <*> 0B<*>".to_owned(),
            })
            .expect(Expect::NoLine {
                pattern: "<*> part <*> 0B<*>".to_owned(),
            });
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
                .run(sudo(format!("fstrim -v {mp}")))
                .line(format!("{mp}: <*> (<n> bytes) trimmed"))
                .expect(Expect::NoLine {
                    pattern: "<*>(0 bytes)<*>".to_owned(),
                })
                .shows("(N > 0: Btrfs trims the free space of the whole filesystem)");
        }
    }
    if let Some(measured) = measured {
        if let Some(freed) = measured.figures.get("trim.freed_bytes") {
            trim = trim.note(format!(
                "vm-test saw TRIM give {} back to the VM's disk image.",
                super::plan::bytes(*freed as u64)
            ));
        }
    }
    steps.push(trim);

    // The root wipe and the machine's identity, across a reboot.
    let has_wiped_root = tables
        .filesystems
        .iter()
        .flat_map(|f| f.subvolumes.iter())
        .any(|s| s.lifecycle == Lifecycle::WipedAtBoot);
    if has_wiped_root {
        let top = &n.top;
        let old = &n.old_roots;
        let identity = identity_files(subject);
        let saved = format!("{PERSIST_MOUNTPOINT}/identity.sha256");
        let mut wipe = procedure(
            "verify.reboot",
            "Across a reboot: the root is wiped, /persist and the machine's identity are kept",
        )
        .note("Mark the root and /persist, record the machine-id and SSH host keys, reboot, and look again. Each boot moves the previous root to the old roots under its UTC time; the newest holds the marker.")
        .run(sudo(format!(
            "touch /root/wiped-at-boot {PERSIST_MOUNTPOINT}/kept-at-boot"
        )));
        if !identity.is_empty() {
            wipe = wipe.run(sudo(format!(
                "sh -c 'sha256sum {} > {saved}'",
                identity.join(" ")
            )));
        }
        wipe = wipe
            .run(reboot())
            .run(local(facts.ssh_server()).with_reaches(Where::Server))
            .shows("no warning about a changed host key: the host keys came back from /persist")
            .run(sudo("test ! -e /root/wiped-at-boot"))
            .run(sudo(format!("test -e {PERSIST_MOUNTPOINT}/kept-at-boot")));
        if !identity.is_empty() {
            wipe = wipe.run(sudo(format!("sha256sum -c {saved}")));
            for file in &identity {
                wipe = wipe.line(format!("{file}: OK"));
            }
        }
        wipe = wipe
            .run(sudo(format!("ls {top}/{old}")))
            .line("<old-root>")
            .shows("(one per boot since the install, named YYYYMMDDTHHMMSSZ in UTC)")
            .run(sudo(format!(
                "ls \"{top}/{old}/$(ls {top}/{old} | tail -n 1)/root/wiped-at-boot\""
            )))
            .line(format!("{top}/{old}/<old-root>/root/wiped-at-boot"))
            .run(sudo(format!("cat {ROLLBACK_STATUS_DIR}/status")))
            .line("result=ok")
            .line("clock=ok")
            .line("rotated_to=<old-root>")
            .shows("(and the other keys of docs/rollback.md)")
            .run(sudo(format!("test ! -e {ROLLBACK_STATUS_DIR}/failed")))
            .run(sudo("journalctl -b -o cat | grep '^btrfs-rollback: '"))
            .line("btrfs-rollback: result=ok <*>")
            .run(sudo(format!(
                "rm {PERSIST_MOUNTPOINT}/kept-at-boot{}",
                if identity.is_empty() {
                    String::new()
                } else {
                    format!(" {saved}")
                }
            )))
            .then("If ssh warned about a changed host key, the host keys are not persisted (docs/persistence.md); if the marker in /root survived, the root was not wiped (docs/troubleshooting.md).");
        steps.push(wipe);
    }
    unique_ids(&mut steps);
    steps
}

/// `verify.mounts`, `verify.mounts-2`, …: one id per step when a host has
/// several filesystems.
fn unique_ids(steps: &mut [Procedure]) {
    let mut seen = std::collections::BTreeMap::<String, usize>::new();
    for step in steps {
        let count = seen.entry(step.id.clone()).or_insert(0);
        *count += 1;
        if *count > 1 {
            step.id = format!("{}-{count}", step.id);
        }
    }
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

/// §4: the ways back, from the mildest to the most drastic.
pub fn rollback(subject: &Subject, facts: &HostFacts) -> Vec<Procedure> {
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
    let attribute = subject.flake_attribute();
    vec![
        procedure("rollback.previous-generation", "The new generation does not boot: pick the previous one in GRUB")
            .needs(Need::Console)
            .needs(Need::Hetzner)
            .needs(Need::NixosTooling)
            .note("Open the server's console (Cloud Console: the server, Console; `hcloud server request-console` prints a VNC address), then reset the server and, in the GRUB menu, choose `NixOS - All configurations` and the previous generation. The root is wiped at that boot too: generations live in /nix and state in /persist, both untouched.")
            .run(local("hcloud server request-console <server>"))
            .run(local("hcloud server reset <server>"))
            .run(sudo("/run/current-system/bin/switch-to-configuration boot"))
            .then("The last command, run once the previous generation is up, makes it the default for later boots."),
        procedure("rollback.switch-back", "The new generation boots but misbehaves: switch back")
            .needs(Need::NixosTooling)
            .note("Activates the previous generation of the system profile now and makes it the boot default.")
            .run(sudo("nixos-rebuild switch --rollback"))
            .then(format!(
                "Deploying a fixed configuration later: `{}`.",
                facts.rebuild_remote(attribute, "switch")
            )),
        procedure("rollback.file-from-old-root", "A file that was not persisted is gone: copy it from an old root")
            .parameter("<old-root>", format!("an old root in {top}/{old}, e.g. 20260101T120000Z (the first command lists them; the last is the previous boot)"))
            .parameter("<path>", "the file's path without the leading /, e.g. root/notes.txt")
            .note(format!(
                "Every boot keeps the previous root below {top}/{old}/<old-root>/ ({retention}). Copy what you need into {PERSIST_MOUNTPOINT}, and persist the path (docs/persistence.md) if it must survive."
            ))
            .run(sudo(format!("ls {top}/{old}")))
            .line("<old-root>")
            .run(sudo(format!("mkdir -p \"$(dirname {PERSIST_MOUNTPOINT}/<path>)\"")))
            .run(sudo(format!(
                "cp -a --reflink=auto {top}/{old}/<old-root>/<path> {PERSIST_MOUNTPOINT}/<path>"
            )))
            .run(sudo(format!(
                "cmp {top}/{old}/<old-root>/<path> {PERSIST_MOUNTPOINT}/<path>"
            )))
            .shows("(nothing: the copy is the same, byte for byte)")
            .expect(Expect::Empty),
        procedure("rollback.restore-persist", format!("{PERSIST_MOUNTPOINT} is damaged: restore it from a snapshot"))
            .parameter("<snapshot>", format!("a snapshot of {persist} in {top}/{snapshots}, e.g. {persist}.20260101T1200 (btrbk's, hourly) or one taken by hand"))
            .parameter("<path>", format!("a file below {PERSIST_MOUNTPOINT} to verify the restore with, without the leading /"))
            .note(format!(
                "Snapshots of {persist} live in {top}/{snapshots}/ (mounted at {SNAPSHOTS_MOUNTPOINT}). A single file: copy it back as in the previous step, from {SNAPSHOTS_MOUNTPOINT}/<snapshot>/<path>. The whole subvolume: make a writable snapshot of the snapshot, swap it in by renaming (the running system keeps the old one mounted until the reboot), reboot. `mv -T` refuses to move into an existing directory, so a leftover {persist}.replaced stops it instead of swallowing {persist}."
            ))
            .run(sudo(format!("ls {top}/{snapshots}")))
            .run(sudo(format!(
                "btrfs subvolume snapshot {top}/{snapshots}/<snapshot> {top}/{persist}.restored"
            )))
            .line(format!("Create a snapshot of '{top}/{snapshots}/<*>' in '{top}/{persist}.restored'"))
            .run(sudo(format!("mv -T {top}/{persist} {top}/{persist}.replaced")))
            .run(sudo(format!("mv -T {top}/{persist}.restored {top}/{persist}")))
            .run(reboot())
            .run(sudo(format!(
                "cmp {top}/{snapshots}/<snapshot>/<path> {PERSIST_MOUNTPOINT}/<path>"
            )))
            .shows("(nothing: /persist is the snapshot again)")
            .expect(Expect::Empty)
            .run(sudo(format!("btrfs subvolume delete {top}/{persist}.replaced")))
            .then(format!(
                "Delete {persist}.replaced (the last command) only once the restored {PERSIST_MOUNTPOINT} is right. docs/snapshots.md has the details, and the same from the rescue system when the server no longer boots."
            )),
        procedure("rollback.reinstall", format!("Nothing else works: reinstall and restore {PERSIST_MOUNTPOINT}"))
            .needs(Need::Reinstall)
            .needs(Need::Hetzner)
            .parameter("<path>", format!("a file below {PERSIST_MOUNTPOINT} to verify the restore with, without the leading /"))
            .note(format!(
                "Save {PERSIST_MOUNTPOINT} off the server while it still runs (as in deployment step 2.2), install again (deployment steps 2.3 to 2.7), then receive the saved copy and swap it in. The restored {PERSIST_MOUNTPOINT} brings the old SSH host keys back, so ssh warns once more: `ssh-keygen -R <IP>`."
            ))
            .run(sudo(format!(
                "btrfs subvolume snapshot -r {top}/{persist} {top}/{snapshots}/{persist}.pre-install"
            )))
            .run(local_to(Where::Server, format!(
                "{} | zstd > persist.pre-install.btrfs.zst",
                facts.ssh_server_sudo(&format!("btrfs send {top}/{snapshots}/{persist}.pre-install"))
            )))
            .run(local("zstd -t persist.pre-install.btrfs.zst"))
            .run(local("hcloud server enable-rescue --type linux64 --ssh-key <key> <server>"))
            .run(local("hcloud server reboot <server>"))
            .run(local("ssh-keygen -R <IP>"))
            .run(local_to(Where::Rescue, format!(
                "nix run github:nix-community/nixos-anywhere -- --flake .#{attribute} --target-host root@<IP>"
            )).installing())
            .shows("the server installed afresh and rebooted (deployment steps 2.3 to 2.7)")
            .run(local("ssh-keygen -R <IP>"))
            .run(local_to(Where::Server, format!(
                "zstd -dc persist.pre-install.btrfs.zst | {}",
                facts.ssh_server_sudo(&format!("btrfs receive {top}/{snapshots}"))
            )))
            .shows(format!("At subvol {persist}.pre-install"))
            .run(sudo(format!(
                "btrfs subvolume snapshot {top}/{snapshots}/{persist}.pre-install {top}/{persist}.restored"
            )))
            .run(sudo(format!("mv -T {top}/{persist} {top}/{persist}.fresh-install")))
            .run(sudo(format!("mv -T {top}/{persist}.restored {top}/{persist}")))
            .run(reboot())
            .run(sudo(format!(
                "cmp {top}/{snapshots}/{persist}.pre-install/<path> {PERSIST_MOUNTPOINT}/<path>"
            )))
            .shows(format!("(nothing: {PERSIST_MOUNTPOINT} is the saved one again)"))
            .expect(Expect::Empty)
            .run(sudo(format!("btrfs subvolume delete {top}/{persist}.fresh-install")))
            .then(format!(
                "Delete {persist}.fresh-install (the last command) only once the restored {PERSIST_MOUNTPOINT} is right. The received {snapshots}/{persist}.pre-install stays as a read-only copy until you delete it the same way."
            )),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_whole_lines() {
        assert!(matches(
            "ID <n> gen <n> top level 5 path @nix",
            "ID 256 gen 12 top level 5 path @nix"
        ));
        assert!(!matches(
            "ID <n> gen <n> top level 5 path @nix",
            "ID 256 gen 12 top level 5 path @nix2"
        ));
        assert!(matches(
            "/dev/dm-<n> partition 34359734272",
            "/dev/dm-0   partition 34359734272"
        ));
        assert!(!matches("/dev/dm-<n> partition 1", "/dev/dm- partition 1"));
        assert!(matches("<old-root>", "20260101T120000Z"));
        assert!(matches("<old-root>", "20260101T120000Z-01"));
        assert!(!matches("<old-root>", "20260101T1200Z"));
        assert!(matches(
            "/btrfs_tmp/@old_roots/<old-root>/root/wiped-at-boot",
            "/btrfs_tmp/@old_roots/20260101T120000Z-02/root/wiped-at-boot"
        ));
        assert!(matches(
            "<*>C<*> /var/lib/containers",
            "---------------C------ /var/lib/containers"
        ));
        assert!(!matches(
            "<*>C<*> /var/lib/containers",
            "---------------------- /var/lib/containers"
        ));
        assert!(matches("type: PLAIN", "  type:    PLAIN"));
        assert!(!matches("type: PLAIN", "type:PLAIN"));
        assert!(matches(
            "/btrfs_tmp: <*> (<n> bytes) trimmed",
            "/btrfs_tmp: 398.2 GiB (427565010944 bytes) trimmed"
        ));
    }

    #[test]
    fn the_regex_of_a_pattern_matches_what_the_pattern_matches() {
        let cases = [
            (
                "ID <n> gen <n> top level 5 path @nix",
                "ID 256 gen 12 top level 5 path @nix",
            ),
            (
                "ID <n> gen <n> top level 5 path @nix",
                "ID 256 gen 12 top level 5 path @nix2",
            ),
            (
                "/dev/dm-<n> partition 34359734272",
                "/dev/dm-0   partition 34359734272",
            ),
            ("/dev/dm-<n> partition 1", "/dev/dm- partition 1"),
            ("<old-root>", "20260101T120000Z"),
            ("<old-root>", "20260101T120000Z-01"),
            ("<old-root>", "20260101T1200Z"),
            ("rotated_to=<old-root>", "rotated_to=20260101T120000Z-02"),
            (
                "<*>C<*> /var/lib/containers",
                "---------------C------ /var/lib/containers",
            ),
            (
                "<*>C<*> /var/lib/containers",
                "---------------------- /var/lib/containers",
            ),
            ("type: PLAIN", "type:    PLAIN"),
            ("type: PLAIN", "type:PLAIN"),
            (
                "btrfs-rollback: result=ok <*>",
                "btrfs-rollback: result=ok rotated_to=x (1 ms)",
            ),
            ("<*> part <*> 0B<*>", "|-vda3 part 512B 2G"),
            ("<*> part <*> 0B<*>", "|-vda3 part 0B 0B"),
            (
                "Data,single: <*>",
                "Data,single: Size:1.00GiB, Used:2.00MiB (0.20%)",
            ),
            ("/x.y+[z] (a|b)", "/x.y+[z] (a|b)"),
            ("/x.y+[z] (a|b)", "/xxy+[z] (a|b)"),
        ];
        for (pattern, line) in cases {
            let regex = regex::Regex::new(&format!("^(?:{})$", pattern_regex(pattern))).unwrap();
            assert_eq!(
                regex.is_match(line.trim()),
                matches(pattern, line),
                "{pattern:?} as {:?} on {line:?}",
                pattern_regex(pattern)
            );
        }
    }

    #[test]
    fn expectations_say_what_differed() {
        let fields = Expect::Fields {
            first: "/nix".to_owned(),
            include: vec!["compress=zstd:1".to_owned(), "subvol=/@nix".to_owned()],
        };
        let out = "/  /dev/sda4[/@root] rw,noatime\n/nix /dev/sda4[/@nix] rw,noatime,compress=zstd:1,subvolid=257,subvol=/@nix\n";
        assert_eq!(fields.check(0, out), Ok(()));
        let err = fields
            .check(0, "/nix /dev/sda4[/@nix] rw,compress=zstd:3,subvol=/@nix")
            .unwrap_err();
        assert_eq!(err, "/nix: missing compress=zstd:1");
        assert!(Expect::Empty.check(0, "\n\n").is_ok());
        assert!(Expect::Empty
            .check(0, "x.service loaded failed failed X\n")
            .is_err());
        assert!(Expect::Exit { status: 0 }.check(1, "").is_err());
        let perc = Expect::AtMost {
            pattern: "TOTAL <*>".to_owned(),
            field: 2,
            max: 70.0,
        };
        let compsize = "Processed 10 files\nType       Perc     Disk Usage   Uncompressed Referenced\nTOTAL       37%      1.0G         2.8G         2.8G\nzstd        30%      800M         2.6G         2.6G\n";
        assert!(perc.check(0, compsize).is_ok());
        assert!(perc
            .check(0, &compsize.replace("TOTAL       37%", "TOTAL       85%"))
            .unwrap_err()
            .contains("85 in"));
    }
}
