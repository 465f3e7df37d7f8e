//! The deploy checklist's server procedures (§3 post-deploy verification,
//! §4 rollback plan) as vm-test runs them: read from the checklist's one
//! source (`crate::checklist::server_procedures`), so the lines the VM runs
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
//! the rest with `--thorough`.

use std::collections::{BTreeMap, VecDeque};

use anyhow::{bail, Result};

use super::plan::{AdminCommand, AdminLogin, AdminStep, Binding, CommandRole, Expectation, NotRun};
use crate::checklist::facts::Where;
use crate::checklist::procedures::{Command, Expect, Names};
use crate::checklist::Numbered;
use crate::layout::impermanence::PERSIST_MOUNTPOINT;
use crate::results::{CommandRecord, CommandStatus, ProcedureRecord};

/// The second virtual disk of `--thorough`: the admin's workstation, where
/// §4.5 saves /persist before the reinstall.
pub const BACKUP_DISK: &str = "/dev/vdb";
/// Where the workstation's disk is mounted: `local$` commands run there.
pub const WORKSTATION: &str = "/mnt/workstation";
/// The backup disk's size (sparse).
pub const BACKUP_DISK_BYTES: u64 = 8 << 30;
/// `<IP>` in the VM: the lab's ssh runs the remote command here.
pub const LAB_IP: &str = "127.0.0.1";
/// The NixOS VM test, which runs the procedures that need systemd.
pub const NIXOS_VM_TEST: &str = "the NixOS VM test (nix/tests/vm-test.nix: `nix build -L .#checks.x86_64-linux.vm-test`, needs nixpkgs and KVM), which runs this procedure from nix/tests/procedures.json";
/// The procedures the NixOS VM test runs (those that need systemd).
pub const NIXOS_TEST_PROCEDURES: &[&str] = &["verify.units", "verify.reboot"];

/// What the lab knows about the run: the layout's names, the disk, the
/// admin, and the file a boot lost (for §4.3).
#[derive(Debug, Clone, PartialEq)]
pub struct Lab {
    pub names: Names,
    /// The server's disk and the VM's: `/dev/sda` → `/dev/vda`.
    pub disk: Option<(String, String)>,
    pub login: AdminLogin,
    pub lost: Option<LostFile>,
}

/// A file the last boot wrote into /, which is in the newest old root now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LostFile {
    /// Relative to the root, e.g. `root/xtask/boot-3.txt`.
    pub path: String,
    pub sha256: String,
}

/// Where a procedure runs in vm-test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// In the default run's last boot: quick, read-only, no reboot.
    Default,
    /// With `--thorough`: reboots, reinstalls, changes to /persist.
    Thorough,
    /// No command of it can run in the lab.
    NotInLab,
}

/// What the lab does with one checklist command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    Run,
    /// The procedure goes on after a reboot or a reinstall; the line is not run.
    Boundary(Then, NotRun),
    NotRun(NotRun),
}

/// What ends a part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Then {
    Done,
    /// The next part runs after a reboot (a rotation boot).
    Reboot,
    /// The next part runs after the disk was wiped and the system installed
    /// again (an install boot).
    Reinstall,
}

fn not_run(reason: &str, proven_by: Option<&str>) -> NotRun {
    NotRun {
        reason: reason.to_owned(),
        proven_by: proven_by.map(str::to_owned),
    }
}

/// The simple commands of a shell line, each as its words from the program
/// on (after `sudo` and its options, `!`, `exec`, `env` and variable
/// assignments): the pipeline's members, the lists', those in `$(…)`.
/// Quoted text stays one word's; it is not a command of this shell.
pub fn simple_commands(line: &str) -> Vec<Vec<String>> {
    fn push(segments: &mut [(String, bool)], c: char) {
        if let Some(last) = segments.last_mut() {
            last.0.push(c);
        }
    }
    // (text, whether it starts a command)
    let mut segments: Vec<(String, bool)> = vec![(String::new(), true)];
    let mut quote: Option<char> = None;
    let mut restore: Vec<Option<char>> = Vec::new();
    let mut previous = ' ';
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        let start = |segments: &mut Vec<(String, bool)>, command: bool| {
            segments.push((String::new(), command));
        };
        match quote {
            Some('\'') => {
                if c == '\'' {
                    quote = None;
                }
                push(&mut segments, c);
            }
            Some(q) => {
                if c == q {
                    quote = None;
                    push(&mut segments, c);
                } else if c == '$' && chars.peek() == Some(&'(') {
                    chars.next();
                    restore.push(Some(q));
                    quote = None;
                    start(&mut segments, true);
                } else {
                    push(&mut segments, c);
                }
            }
            None => match c {
                '\'' | '"' => {
                    quote = Some(c);
                    push(&mut segments, c);
                }
                '$' if chars.peek() == Some(&'(') => {
                    chars.next();
                    restore.push(None);
                    start(&mut segments, true);
                }
                '(' => {
                    restore.push(None);
                    start(&mut segments, true);
                }
                ')' => {
                    quote = restore.pop().flatten();
                    start(&mut segments, false);
                }
                '|' | ';' | '`' => start(&mut segments, true),
                '&' if previous != '>' => start(&mut segments, true),
                _ => {
                    push(&mut segments, c);
                }
            },
        }
        previous = c;
    }
    segments
        .into_iter()
        .filter(|(_, command)| *command)
        .filter_map(|(text, _)| {
            let words = words(&text);
            let mut rest = words.as_slice();
            loop {
                match rest.split_first() {
                    Some((word, more))
                        if word == "!"
                            || word == "exec"
                            || word == "env"
                            || is_assignment(word) =>
                    {
                        rest = more;
                    }
                    Some((word, more)) if word == "sudo" => {
                        rest = more;
                        while rest.first().is_some_and(|w| w.starts_with('-')) {
                            rest = &rest[1..];
                        }
                    }
                    _ => break,
                }
            }
            (!rest.is_empty()).then(|| rest.to_vec())
        })
        .collect()
}

/// Shell words: split at blanks outside quotes, the quotes removed.
fn words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut quote: Option<char> = None;
    for c in text.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.get_or_insert_with(String::new).push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                word.get_or_insert_with(String::new);
            }
            (None, c) if c.is_whitespace() => words.extend(word.take()),
            (None, c) => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    words
}

fn is_assignment(word: &str) -> bool {
    word.split_once('=').is_some_and(|(name, _)| {
        !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

/// `ssh [options] DESTINATION [COMMAND…]`: whether a command follows.
fn ssh_has_command(words: &[String]) -> bool {
    let mut rest = &words[1..];
    while let Some(first) = rest.first() {
        if !first.starts_with('-') {
            break;
        }
        let takes_value = matches!(
            first.as_str(),
            "-p" | "-o" | "-i" | "-F" | "-J" | "-l" | "-L" | "-R" | "-D" | "-b" | "-c" | "-E"
        );
        rest = &rest[if takes_value { 2.min(rest.len()) } else { 1 }..];
    }
    rest.len() > 1
}

/// What the lab does with `command` of procedure `id`.
pub fn disposition(id: &str, command: &Command) -> Disposition {
    let nixos = NIXOS_TEST_PROCEDURES.contains(&id).then_some(NIXOS_VM_TEST);
    if command.reboots {
        return Disposition::Boundary(
            Then::Reboot,
            not_run(
                "a reboot needs systemd; the VM powers off here and its next boot (the rollback in the initrd, the mounts) continues the procedure",
                None,
            ),
        );
    }
    if command.installs {
        return Disposition::Boundary(
            Then::Reinstall,
            not_run(
                "nixos-anywhere needs the rescue system and the network; the lab's install boot stands for it: the disk partitioned, formatted and mounted again as disko does",
                None,
            ),
        );
    }
    if command.at == Where::Rescue {
        return Disposition::NotRun(not_run(
            "runs in the Hetzner rescue system, before the install",
            None,
        ));
    }
    for words in simple_commands(&command.line) {
        let program = words[0].rsplit('/').next().unwrap_or(&words[0]);
        let missing = match program {
            "systemctl" | "journalctl" => Some(not_run(
                "needs systemd as PID 1 and its journal; the lab VM's /init is the test agent",
                nixos,
            )),
            "nixos-rebuild" | "switch-to-configuration" => Some(not_run(
                "needs NixOS's system profile and a previous generation; the lab VM boots no NixOS system",
                None,
            )),
            "hcloud" => Some(not_run(
                "the Hetzner Cloud API (hcloud) and its console exist only for the real server",
                None,
            )),
            "ssh-keygen" => Some(not_run(
                "edits the workstation's ~/.ssh/known_hosts; the lab VM has no SSH client state",
                None,
            )),
            "nix" => Some(not_run(
                "needs Nix with nixpkgs and the network on the workstation",
                None,
            )),
            "ssh" if !ssh_has_command(&words) => Some(not_run(
                "an interactive SSH login over the network; in the lab the VM is the server, and the next commands run there as the admin (the host keys it would check are compared by `sha256sum -c`)",
                None,
            )),
            _ => None,
        };
        if let Some(missing) = missing {
            return Disposition::NotRun(missing);
        }
    }
    Disposition::Run
}

/// Where `procedure` runs in vm-test.
pub fn tier(procedure: &crate::checklist::procedures::Procedure) -> Tier {
    let dispositions: Vec<Disposition> = procedure
        .commands
        .iter()
        .map(|c| disposition(&procedure.id, c))
        .collect();
    if !dispositions.contains(&Disposition::Run) {
        Tier::NotInLab
    } else if procedure.id.starts_with("verify.")
        && !dispositions
            .iter()
            .any(|d| matches!(d, Disposition::Boundary(..)))
    {
        Tier::Default
    } else {
        Tier::Thorough
    }
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

/// The lab's own commands around a procedure, and its placeholders' values.
#[derive(Debug, Clone, Default)]
struct Harness {
    bindings: Vec<Binding>,
    /// Before the first command.
    setup: Vec<AdminCommand>,
    /// At the start of every later part.
    each_part: Vec<AdminCommand>,
    /// After the last command.
    verify: Vec<AdminCommand>,
    /// `local$` commands run on the workstation's disk.
    workstation: bool,
}

fn lab_command(role: CommandRole, line: impl Into<String>) -> AdminCommand {
    AdminCommand {
        role,
        at: None,
        line: line.into(),
        as_admin: false,
        cwd: None,
        bindings: Vec::new(),
        exit: 0,
        expect: Vec::new(),
        checklist_expect: Vec::new(),
        capture: None,
        not_run: None,
    }
}

fn setup(line: impl Into<String>) -> AdminCommand {
    lab_command(CommandRole::Setup, line)
}

fn binding(placeholder: &str, shell: impl Into<String>) -> Binding {
    Binding {
        placeholder: placeholder.to_owned(),
        shell: shell.into(),
    }
}

/// One SHA-256 over every file of a tree (names and contents, in byte
/// order): the data that must come back, in one line.
fn manifest(dir: &str) -> String {
    format!(
        "cd {dir} && find . -xdev -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1"
    )
}

fn capture_manifest(dir: &str, name: &str) -> AdminCommand {
    AdminCommand {
        expect: vec![Expectation::Matches {
            pattern: "^[0-9a-f]{64}$".to_owned(),
        }],
        capture: Some(name.to_owned()),
        ..lab_command(CommandRole::Verify, manifest(dir))
    }
}

fn verify_manifest(dir: &str, name: &str) -> AdminCommand {
    AdminCommand {
        expect: vec![Expectation::EqualsCaptured {
            name: name.to_owned(),
        }],
        ..lab_command(CommandRole::Verify, manifest(dir))
    }
}

/// `bytes` random bytes in a new file below /persist.
fn write_data(relative: &str, bytes: u64) -> AdminCommand {
    let path = format!("{PERSIST_MOUNTPOINT}/{relative}");
    let dir = path.rsplit_once('/').map_or("/", |(dir, _)| dir);
    setup(format!(
        "mkdir -p {dir} && head -c {bytes} /dev/urandom > {path}"
    ))
}

fn harness(id: &str, lab: &Lab) -> Result<Harness> {
    let Names {
        top,
        old_roots: old,
        persist,
        snapshots,
    } = &lab.names;
    let p = PERSIST_MOUNTPOINT;
    let mut harness = Harness::default();
    // The procedures' ids, as checklist/procedures.rs names them.
    match id {
        "rollback.file-from-old-root" => {
            let Some(lost) = &lab.lost else {
                bail!("{id} needs a file an earlier boot wrote into /");
            };
            harness.bindings = vec![
                binding("<old-root>", format!("ls {top}/{old} | tail -n 1")),
                binding("<path>", format!("printf %s {}", lost.path)),
            ];
            harness.verify = vec![AdminCommand {
                expect: vec![Expectation::Equals {
                    text: lost.sha256.clone(),
                }],
                ..lab_command(
                    CommandRole::Verify,
                    format!("sha256sum {p}/{} | cut -d' ' -f1", lost.path),
                )
            }];
        }
        "rollback.restore-persist" => {
            let name = "restore-persist:persist";
            harness.setup = vec![
                write_data("xtask-restore/data.bin", 1 << 20),
                capture_manifest(p, name),
                // What btrbk does every hour, with its naming.
                setup(format!(
                    "btrfs subvolume snapshot -r {top}/{persist} {top}/{snapshots}/{persist}.$(date -u +%Y%m%dT%H%M)"
                )),
                // The damage.
                setup(format!("rm -rf {p}/xtask-restore")),
            ];
            harness.bindings = vec![
                binding(
                    "<snapshot>",
                    format!(
                        "ls {top}/{snapshots} | grep -E -x '{}\\.[0-9]{{8}}T[0-9]{{4}}' | tail -n 1",
                        persist.replace('.', "\\.")
                    ),
                ),
                binding("<path>", "printf %s xtask-restore/data.bin"),
            ];
            harness.verify = vec![verify_manifest(p, name)];
        }
        "rollback.reinstall" => {
            let name = "reinstall:persist";
            let mount = format!(
                "mkdir -p {WORKSTATION} && {{ findmnt {WORKSTATION} >/dev/null || mount {BACKUP_DISK} {WORKSTATION}; }}"
            );
            harness.workstation = true;
            harness.setup = vec![
                // The second disk stands for the admin's workstation.
                setup(format!(
                    "mkfs.btrfs -q -f -L xtask-workstation {BACKUP_DISK} && {mount} && chown {}:{} {WORKSTATION}",
                    lab.login.uid, lab.login.gid
                )),
                write_data("xtask-reinstall/data.bin", 1 << 20),
                capture_manifest(p, name),
            ];
            harness.each_part = vec![setup(mount)];
            harness.bindings = vec![binding("<path>", "printf %s xtask-reinstall/data.bin")];
            harness.verify = vec![verify_manifest(p, name)];
        }
        _ => {}
    }
    harness
        .bindings
        .push(binding("<IP>", format!("printf %s {LAB_IP}")));
    Ok(harness)
}

/// The `<placeholders>` of a line, in order, each once.
pub fn placeholders(line: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = line;
    while let Some(start) = rest.find('<') {
        let after = &rest[start + 1..];
        let end = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
            .unwrap_or(after.len());
        if end > 0 && after[end..].starts_with('>') {
            let name = format!("<{}>", &after[..end]);
            if !found.contains(&name) {
                found.push(name);
            }
            rest = &after[end + 1..];
        } else {
            rest = after;
        }
    }
    found
}

fn substitute(text: &str, substitutions: &[(String, String)]) -> String {
    substitutions
        .iter()
        .fold(text.to_owned(), |text, (from, to)| text.replace(from, to))
}

/// The checklist's expectation with the lab's substitutions.
fn substitute_expect(expect: &Expect, substitutions: &[(String, String)]) -> Expect {
    let s = |t: &String| substitute(t, substitutions);
    match expect {
        Expect::Line { pattern } => Expect::Line {
            pattern: s(pattern),
        },
        Expect::NoLine { pattern } => Expect::NoLine {
            pattern: s(pattern),
        },
        Expect::Fields { first, include } => Expect::Fields {
            first: s(first),
            include: include.iter().map(s).collect(),
        },
        Expect::AtMost {
            pattern,
            field,
            max,
        } => Expect::AtMost {
            pattern: s(pattern),
            field: *field,
            max: *max,
        },
        other => other.clone(),
    }
}

/// `numbered` as the lab runs it.
pub fn convert(numbered: &Numbered, lab: &Lab) -> Result<Procedure> {
    let procedure = &numbered.procedure;
    let id = procedure.id.as_str();
    let harness = harness(id, lab)?;
    let substitutions: Vec<(String, String)> = lab.disk.iter().cloned().collect();
    let mut parts = Vec::new();
    let mut current = harness.setup.clone();
    for command in &procedure.commands {
        let recorded = |not_run: NotRun| AdminCommand {
            at: Some(command.at),
            as_admin: true,
            not_run: Some(not_run),
            ..lab_command(CommandRole::Checklist, command.line.clone())
        };
        match disposition(id, command) {
            Disposition::Run => {
                let mut bindings = Vec::new();
                for placeholder in placeholders(&command.line) {
                    let Some(found) = harness
                        .bindings
                        .iter()
                        .find(|b| b.placeholder == placeholder)
                    else {
                        bail!(
                            "checklist step {} ({id}): the lab VM has no value for {placeholder} in `{}`; give it one in xtask/src/vm/procedures.rs (`harness`)",
                            numbered.step,
                            command.line
                        );
                    };
                    bindings.push(found.clone());
                }
                let cwd = (command.at == Where::Local).then(|| {
                    if harness.workstation {
                        WORKSTATION.to_owned()
                    } else {
                        lab.login.home.clone()
                    }
                });
                let exit = command
                    .expect
                    .iter()
                    .find_map(|e| match e {
                        Expect::Exit { status } => Some(*status),
                        _ => None,
                    })
                    .unwrap_or(0);
                current.push(AdminCommand {
                    at: Some(command.at),
                    as_admin: true,
                    cwd,
                    bindings,
                    exit,
                    checklist_expect: command
                        .expect
                        .iter()
                        .filter(|e| !matches!(e, Expect::Exit { .. }))
                        .map(|e| substitute_expect(e, &substitutions))
                        .collect(),
                    ..lab_command(CommandRole::Checklist, command.line.clone())
                });
            }
            Disposition::NotRun(why) => current.push(recorded(why)),
            Disposition::Boundary(then, why) => {
                current.push(recorded(why));
                parts.push(Part {
                    commands: std::mem::take(&mut current),
                    then,
                });
                current = harness.each_part.clone();
            }
        }
    }
    current.extend(harness.verify.iter().cloned());
    parts.push(Part {
        commands: current,
        then: Then::Done,
    });
    Ok(Procedure {
        id: id.to_owned(),
        step: numbered.step.clone(),
        title: procedure.title.clone(),
        substitutions,
        login: lab.login.clone(),
        parts,
    })
}

/// The procedures of `tier`, converted: those that need no reboot first
/// (§4.3 copies from the newest old root, which must be the root of the
/// boot before), then the rest in checklist order.
pub fn of_tier(all: &[Numbered], tier_wanted: Tier, lab: &Lab) -> Result<Vec<Procedure>> {
    let mut procedures = all
        .iter()
        .filter(|n| tier(&n.procedure) == tier_wanted)
        .map(|n| convert(n, lab))
        .collect::<Result<Vec<_>>>()?;
    procedures.sort_by_key(|p| p.parts.len() > 1);
    Ok(procedures)
}

/// The record of a procedure this run did not run: every command NOT RUN,
/// with the lab's reason, or `instead` (e.g. it runs with `--thorough`).
pub fn not_run_record(numbered: &Numbered, instead: Option<&str>) -> ProcedureRecord {
    let procedure = &numbered.procedure;
    let commands = procedure
        .commands
        .iter()
        .map(|command| {
            let why = match (instead, disposition(&procedure.id, command)) {
                (_, Disposition::NotRun(why)) | (_, Disposition::Boundary(_, why)) => why,
                (Some(instead), Disposition::Run) => not_run(instead, None),
                (None, Disposition::Run) => not_run("not run", None),
            };
            CommandRecord {
                boot: 0,
                part: 0,
                role: CommandRole::Checklist.as_str().to_owned(),
                at: Some(command.at),
                line: command.line.clone(),
                ran: String::new(),
                status: CommandStatus::NotRun,
                exit: None,
                ms: 0,
                stdout: String::new(),
                stderr: String::new(),
                expected: String::new(),
                passed: false,
                problem: Some(why.reason),
                proven_by: why.proven_by,
            }
        })
        .collect();
    let mut record = ProcedureRecord {
        id: procedure.id.clone(),
        step: numbered.step.clone(),
        title: procedure.title.clone(),
        status: crate::results::ProcedureStatus::NotRun,
        passed: false,
        commands,
    };
    record.settle();
    record
}

/// Where the NixOS VM test reads its procedures from (relative to the repository).
pub const NIXOS_TEST_FILE: &str = "nix/tests/procedures.json";

/// nix/tests/procedures.json: the procedures the NixOS VM test runs
/// (`NIXOS_TEST_PROCEDURES`, those that need systemd), as the checklist
/// prints them, each pattern also as a regular expression for Python's
/// `re.fullmatch`. A unit test keeps the file equal to this.
pub fn nixos_test_json(all: &[Numbered], admin: &str) -> String {
    use crate::checklist::procedures::pattern_regex;
    let procedures: Vec<serde_json::Value> = all
        .iter()
        .filter(|n| NIXOS_TEST_PROCEDURES.contains(&n.procedure.id.as_str()))
        .map(|n| {
            let commands: Vec<serde_json::Value> = n
                .procedure
                .commands
                .iter()
                .map(|c| {
                    let expect: Vec<serde_json::Value> = c
                        .expect
                        .iter()
                        .map(|e| {
                            let mut value = serde_json::to_value(e).unwrap_or_default();
                            let pattern = match e {
                                Expect::Line { pattern }
                                | Expect::NoLine { pattern }
                                | Expect::AtMost { pattern, .. } => Some(pattern),
                                _ => None,
                            };
                            if let (Some(pattern), Some(object)) = (pattern, value.as_object_mut())
                            {
                                object.insert("regex".to_owned(), pattern_regex(pattern).into());
                            }
                            value
                        })
                        .collect();
                    serde_json::json!({
                        "where": c.at,
                        "line": c.line,
                        "reboots": c.reboots,
                        "expect": expect,
                    })
                })
                .collect();
            serde_json::json!({
                "id": n.procedure.id,
                "step": n.step,
                "title": n.procedure.title,
                "commands": commands,
            })
        })
        .collect();
    let document = serde_json::json!({
        "comment": "Generated from xtask/src/checklist/procedures.rs (the deploy checklist's one source) for nix/tests/vm-test.nix; `UPDATE_GOLDEN=1 cargo test -p xtask --lib nixos_test_file` rewrites it.",
        "admin": admin,
        "procedures": procedures,
    });
    let mut text = serde_json::to_string_pretty(&document).unwrap_or_default();
    text.push('\n');
    text
}

/// What one boot runs of the procedures.
#[derive(Debug, Clone, PartialEq)]
pub struct BootProcedures {
    /// The last boot ended with a reinstall: this one is an install boot.
    pub install: bool,
    pub continued: Vec<AdminStep>,
    pub started: Vec<AdminStep>,
}

/// Spreads procedures over boots: each boot continues what the last one
/// began, then starts new procedures until one ends in a reboot (two
/// procedures never wait for different reboots at once).
#[derive(Debug, Clone, Default)]
pub struct Schedule {
    queue: VecDeque<Procedure>,
    /// Procedures waiting for the next boot, with the part to run there.
    pending: Vec<(Procedure, usize)>,
    /// Running in the current boot.
    running: Vec<(Procedure, usize)>,
}

/// The boot's part of a procedure, as the plan carries it.
pub fn step_of(
    procedure: &Procedure,
    part: usize,
    captured: &BTreeMap<String, String>,
) -> AdminStep {
    AdminStep {
        id: procedure.id.clone(),
        step: procedure.step.clone(),
        title: procedure.title.clone(),
        part: part as u32,
        login: procedure.login.clone(),
        substitutions: procedure.substitutions.clone(),
        commands: procedure.parts[part].commands.clone(),
        captured: captured.clone(),
    }
}

impl Schedule {
    pub fn new(procedures: Vec<Procedure>) -> Schedule {
        Schedule {
            queue: procedures.into(),
            ..Schedule::default()
        }
    }

    /// How many boots the schedule takes when every part passes.
    pub fn boots(&self) -> u32 {
        let mut copy = self.clone();
        let mut boots = 0;
        while copy.next_boot(&BTreeMap::new()).is_some() {
            copy.finished_boot(|_| true);
            boots += 1;
        }
        boots
    }

    pub fn is_done(&self) -> bool {
        self.queue.is_empty() && self.pending.is_empty()
    }

    pub fn next_boot(&mut self, captured: &BTreeMap<String, String>) -> Option<BootProcedures> {
        if self.is_done() {
            return None;
        }
        let install = self
            .pending
            .iter()
            .any(|(p, part)| p.parts[part - 1].then == Then::Reinstall);
        let continued_parts = std::mem::take(&mut self.pending);
        let mut waits = continued_parts
            .iter()
            .any(|(p, part)| p.parts[*part].then != Then::Done);
        let mut started_parts = Vec::new();
        while !waits {
            let Some(procedure) = self.queue.pop_front() else {
                break;
            };
            waits = procedure.parts[0].then != Then::Done;
            started_parts.push((procedure, 0));
        }
        let step = |(p, part): &(Procedure, usize)| step_of(p, *part, captured);
        let boot = BootProcedures {
            install,
            continued: continued_parts.iter().map(step).collect(),
            started: started_parts.iter().map(step).collect(),
        };
        self.running = continued_parts.into_iter().chain(started_parts).collect();
        Some(boot)
    }

    /// After the boot: procedures whose part passed go on at the next boot;
    /// a failed one ends there (its later parts build on it).
    pub fn finished_boot(&mut self, passed: impl Fn(&Procedure) -> bool) {
        for (procedure, part) in std::mem::take(&mut self.running) {
            if passed(&procedure) && part + 1 < procedure.parts.len() {
                self.pending.push((procedure, part + 1));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checklist::facts::testing::host_facts;
    use crate::checklist::server_procedures;
    use crate::hosts::testing::host_subject;

    fn lab() -> Lab {
        Lab {
            names: Names {
                top: "/btrfs_tmp".into(),
                old_roots: "@old_roots".into(),
                persist: "@persist".into(),
                snapshots: "@snapshots".into(),
            },
            disk: Some(("/dev/sda".into(), "/dev/vda".into())),
            login: AdminLogin {
                user: "hbohlen".into(),
                uid: 1000,
                gid: 100,
                groups: vec![100, 1],
                home: "/home/hbohlen".into(),
            },
            lost: Some(LostFile {
                path: "root/xtask/boot-3.txt".into(),
                sha256: "ab".repeat(32),
            }),
        }
    }

    fn programs(line: &str) -> Vec<String> {
        simple_commands(line)
            .into_iter()
            .map(|w| w[0].clone())
            .collect()
    }

    #[test]
    fn the_programs_of_a_line() {
        assert_eq!(
            programs("sudo journalctl -b -o cat | grep '^btrfs-rollback: '"),
            ["journalctl", "grep"]
        );
        assert_eq!(
            programs("sudo ls \"/btrfs_tmp/@old_roots/$(ls /btrfs_tmp/@old_roots | tail -n 1)/root/wiped-at-boot\""),
            ["ls", "ls", "tail"]
        );
        assert_eq!(
            programs("sudo sh -c 'sha256sum /etc/machine-id > /persist/identity.sha256'"),
            ["sh"]
        );
        assert_eq!(
            programs("NIX_SSHOPTS='-p 2' nixos-rebuild switch --flake .#x 2>&1 && echo done"),
            ["nixos-rebuild", "echo"]
        );
        assert_eq!(
            programs("sudo /run/current-system/bin/switch-to-configuration boot"),
            ["/run/current-system/bin/switch-to-configuration"]
        );
        let ssh = simple_commands("ssh -p 2222 hbohlen@<IP>");
        assert!(!ssh_has_command(&ssh[0]));
        let ssh = simple_commands("ssh hbohlen@<IP> 'sudo btrfs send /x' | zstd > f");
        assert!(ssh_has_command(&ssh[0]));
        assert_eq!(ssh[1][0], "zstd");
    }

    #[test]
    fn every_server_procedure_has_its_place_in_the_lab() {
        let all = server_procedures(&host_subject(), &host_facts());
        let tiers: Vec<(&str, Tier)> = all
            .iter()
            .map(|n| (n.procedure.id.as_str(), tier(&n.procedure)))
            .collect();
        assert_eq!(
            tiers,
            [
                ("verify.units", Tier::NotInLab),
                ("verify.mounts", Tier::Default),
                ("verify.subvolumes", Tier::Default),
                ("verify.swap", Tier::Default),
                ("verify.esp", Tier::Default),
                ("verify.space", Tier::Default),
                ("verify.compression", Tier::Default),
                ("verify.trim", Tier::Default),
                ("verify.reboot", Tier::Thorough),
                ("rollback.previous-generation", Tier::NotInLab),
                ("rollback.switch-back", Tier::NotInLab),
                ("rollback.file-from-old-root", Tier::Thorough),
                ("rollback.restore-persist", Tier::Thorough),
                ("rollback.reinstall", Tier::Thorough),
            ]
        );
        // What is not run, each with its reason: nothing else.
        let mut not_run = Vec::new();
        for n in &all {
            for c in &n.procedure.commands {
                match disposition(&n.procedure.id, c) {
                    Disposition::Run => {}
                    Disposition::NotRun(why) | Disposition::Boundary(_, why) => {
                        assert!(!why.reason.is_empty());
                        not_run.push(format!("{} {}", n.step, c.line));
                    }
                }
            }
        }
        assert_eq!(
            not_run,
            [
                "3.1 sudo systemctl --failed --no-legend --plain",
                "3.1 sudo systemctl is-active btrfs-rollback-status.service btrbk-persist.timer btrfs-scrub-btrfs_tmp.timer",
                "3.9 sudo systemctl reboot",
                "3.9 ssh hbohlen@<IP>",
                "3.9 sudo journalctl -b -o cat | grep '^btrfs-rollback: '",
                "4.1 hcloud server request-console <server>",
                "4.1 hcloud server reset <server>",
                "4.1 sudo /run/current-system/bin/switch-to-configuration boot",
                "4.2 sudo nixos-rebuild switch --rollback",
                "4.4 sudo systemctl reboot",
                "4.5 hcloud server enable-rescue --type linux64 --ssh-key <key> <server>",
                "4.5 hcloud server reboot <server>",
                "4.5 ssh-keygen -R <IP>",
                "4.5 nix run github:nix-community/nixos-anywhere -- --flake .#hetzner-vps --target-host root@<IP>",
                "4.5 ssh-keygen -R <IP>",
                "4.5 sudo systemctl reboot",
            ]
        );
    }

    #[test]
    fn the_conversion_keeps_the_printed_lines_and_their_expectations() {
        let all = server_procedures(&host_subject(), &host_facts());
        let lab = lab();
        let thorough = of_tier(&all, Tier::Thorough, &lab).unwrap();
        let ids: Vec<&str> = thorough.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "rollback.file-from-old-root",
                "verify.reboot",
                "rollback.restore-persist",
                "rollback.reinstall"
            ]
        );
        for (procedure, numbered) in thorough
            .iter()
            .map(|p| (p, all.iter().find(|n| n.procedure.id == p.id).unwrap()))
        {
            // Every checklist command is there, in order, as printed.
            let lines: Vec<&str> = procedure
                .parts
                .iter()
                .flat_map(|part| &part.commands)
                .filter(|c| c.role == CommandRole::Checklist)
                .map(|c| c.line.as_str())
                .collect();
            let printed: Vec<&str> = numbered
                .procedure
                .commands
                .iter()
                .map(|c| c.line.as_str())
                .collect();
            assert_eq!(lines, printed, "{}", procedure.id);
            for command in procedure.parts.iter().flat_map(|p| &p.commands) {
                if command.role == CommandRole::Checklist && command.not_run.is_none() {
                    assert!(command.as_admin);
                    // Every placeholder has a value.
                    for placeholder in placeholders(&command.line) {
                        assert!(
                            command
                                .bindings
                                .iter()
                                .any(|b| b.placeholder == placeholder),
                            "{placeholder} in {}",
                            command.line
                        );
                    }
                }
            }
        }
        let parts = |id: &str| -> Vec<Then> {
            thorough
                .iter()
                .find(|p| p.id == id)
                .unwrap()
                .parts
                .iter()
                .map(|p| p.then)
                .collect()
        };
        assert_eq!(parts("verify.reboot"), [Then::Reboot, Then::Done]);
        assert_eq!(parts("rollback.file-from-old-root"), [Then::Done]);
        assert_eq!(
            parts("rollback.restore-persist"),
            [Then::Reboot, Then::Done]
        );
        assert_eq!(
            parts("rollback.reinstall"),
            [Then::Reinstall, Then::Reboot, Then::Done]
        );
        // The server's disk is the VM's in the expectations.
        let default = of_tier(&all, Tier::Default, &lab).unwrap();
        let swap = default.iter().find(|p| p.id == "verify.swap").unwrap();
        let expects: Vec<&Expect> = swap.parts[0]
            .commands
            .iter()
            .flat_map(|c| &c.checklist_expect)
            .collect();
        assert!(expects.contains(&&Expect::Line {
            pattern: "device: /dev/vda3".into()
        }));
        // §4.5's local commands run on the workstation's disk.
        let reinstall = thorough
            .iter()
            .find(|p| p.id == "rollback.reinstall")
            .unwrap();
        let local: Vec<&AdminCommand> = reinstall
            .parts
            .iter()
            .flat_map(|p| &p.commands)
            .filter(|c| c.at == Some(Where::Local) && c.not_run.is_none())
            .collect();
        assert_eq!(local.len(), 3);
        assert!(local.iter().all(|c| c.cwd.as_deref() == Some(WORKSTATION)));
    }

    #[test]
    fn nixos_test_file_is_the_checklists() {
        let all = server_procedures(&host_subject(), &host_facts());
        let generated = nixos_test_json(&all, &host_facts().admin_user);
        let path = crate::project::project_root().join(NIXOS_TEST_FILE);
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(&path, &generated).unwrap();
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == generated,
            "{NIXOS_TEST_FILE} is stale: `UPDATE_GOLDEN=1 cargo test -p xtask --lib nixos_test_file` rewrites it"
        );
        let document: serde_json::Value = serde_json::from_str(&generated).unwrap();
        let ids: Vec<&str> = document["procedures"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, NIXOS_TEST_PROCEDURES);
        let status = document["procedures"][1]["commands"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["line"] == "sudo cat /run/btrfs-rollback/status")
            .unwrap();
        let regexes: Vec<&str> = status["expect"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["regex"].as_str().unwrap())
            .collect();
        assert_eq!(
            regexes,
            [
                "result=ok",
                "clock=ok",
                "rotated_to=[0-9]{8}T[0-9]{6}Z(?:-[0-9]{2})?"
            ]
        );
    }

    #[test]
    fn a_placeholder_without_a_value_stops_the_conversion() {
        let mut all = server_procedures(&host_subject(), &host_facts());
        let swap = all
            .iter_mut()
            .find(|n| n.procedure.id == "verify.swap")
            .unwrap();
        swap.procedure.commands[0].line.push_str(" <nothing>");
        let error = of_tier(&all, Tier::Default, &lab()).unwrap_err();
        assert!(
            error.to_string().contains("no value for <nothing>"),
            "{error}"
        );
    }

    #[test]
    fn the_schedule_waits_for_reboots_and_reinstalls() {
        let all = server_procedures(&host_subject(), &host_facts());
        let procedures = of_tier(&all, Tier::Thorough, &lab()).unwrap();
        let mut schedule = Schedule::new(procedures.clone());
        let captured = BTreeMap::new();
        let mut boots = Vec::new();
        while let Some(boot) = schedule.next_boot(&captured) {
            let describe = |steps: &[AdminStep]| -> Vec<String> {
                steps
                    .iter()
                    .map(|s| format!("{}/{}", s.step, s.part))
                    .collect()
            };
            boots.push((
                boot.install,
                describe(&boot.continued),
                describe(&boot.started),
            ));
            schedule.finished_boot(|_| true);
        }
        let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            boots,
            [
                (false, vec![], strings(&["4.3/0", "3.9/0"])),
                (false, strings(&["3.9/1"]), strings(&["4.4/0"])),
                (false, strings(&["4.4/1"]), strings(&["4.5/0"])),
                (true, strings(&["4.5/1"]), vec![]),
                (false, strings(&["4.5/2"]), vec![]),
            ]
        );
        // A failed part ends its procedure.
        let mut schedule = Schedule::new(procedures);
        schedule.next_boot(&captured);
        schedule.finished_boot(|p| p.id != "verify.reboot");
        let next = schedule.next_boot(&captured).unwrap();
        assert!(next.continued.is_empty());
        assert_eq!(next.started[0].step, "4.4");
    }
}
