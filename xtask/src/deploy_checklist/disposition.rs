//! What the lab does with each checklist command (runs it, stops at a boundary,
//! or reports it NOT RUN with why), read from the programs a line calls; and
//! so which vm-test run a procedure belongs to (`Tier`).

use super::facts::Where;
use super::procedures::Command;
// The command record both sides of the lab declare (lab-protocol's plan).
use lab_protocol::plan::NotRun;

/// The NixOS VM test, which runs the procedures that need systemd.
pub const NIXOS_VM_TEST: &str = "the NixOS VM test (nix/tests/vm-test.nix: `nix build -L .#checks.x86_64-linux.vm-test`, needs nixpkgs and KVM), which runs this procedure from nix/tests/procedures.json";
/// The procedures that start in the rescue system and that the lab runs
/// from its rescue boot (`--drills`): §4.6, then §4.5 from where it says.
pub const RESCUE_DRILLS: &[&str] = &["rollback.rescue-save"];
/// The procedures the NixOS VM test runs (those that need systemd).
pub const NIXOS_TEST_PROCEDURES: &[&str] = &["verify.units", "verify.reboot"];

/// The flake's NixOS VM tests (nix/checks.nix, which tests/host_modules.rs
/// holds this list against): each check and what it proves. Only
/// `vm-test` runs through `vm-test --backend nixos`; none runs without
/// nixpkgs and KVM.
pub const VM_TESTS: &[(&str, &str)] = &[
    (
        "vm-test",
        "the host installed by disko and booted three times under SeaBIOS, then the checklist's procedures that need systemd",
    ),
    ("vm-test-uefi", "the same under OVMF (UEFI)"),
    (
        "vm-test-deletion",
        "four boots under test-only retention (nix/tests/deletion.json): the systemd initrd's rollback deletes old roots and keeps the newest",
    ),
    (
        "vm-test-scripted-initrd",
        "the same with the scripted initrd (boot.initrd.systemd.enable = false, postResumeCommands)",
    ),
];

/// The command that runs one of `VM_TESTS` where nixpkgs and KVM are.
pub fn check_command(check: &str) -> String {
    format!("nix build -L .#checks.x86_64-linux.{check}")
}

/// Where a procedure runs in vm-test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// In the default run's last boot: quick, read-only, no reboot.
    Default,
    /// With `--thorough`: reboots, reinstalls, changes to /persist.
    Thorough,
    /// With `--drills`: from the lab's rescue boot (§4.6).
    Drill,
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
    /// The next part runs in the lab's rescue boot (`BootKind::Rescue`):
    /// the installed system broken, nothing of it mounted.
    Rescue,
}

pub(crate) fn not_run(reason: &str, proven_by: Option<&str>) -> NotRun {
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
    simple_commands_sudo(line)
        .into_iter()
        .map(|(_, words)| words)
        .collect()
}

/// [`simple_commands`], each with whether `sudo` ran it.
pub fn simple_commands_sudo(line: &str) -> Vec<(bool, Vec<String>)> {
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
            let mut sudo = false;
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
                        sudo = true;
                        rest = more;
                        while rest.first().is_some_and(|w| w.starts_with('-')) {
                            rest = &rest[1..];
                        }
                    }
                    _ => break,
                }
            }
            (!rest.is_empty()).then(|| (sudo, rest.to_vec()))
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
pub(crate) fn ssh_has_command(words: &[String]) -> bool {
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
    let drill = RESCUE_DRILLS.contains(&id);
    if command.at == Where::Rescue && !drill {
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
            "ssh" if words.iter().any(|w| w.starts_with("root@"))
                && !(drill && ssh_has_command(&words)) =>
            {
                Some(not_run(
                    if drill {
                        "an interactive root login to the rescue system over the network; in the lab's rescue boot the next commands run there as root"
                    } else {
                        "logs in to the Hetzner rescue system as root; only `vm-test --drills` boots the lab's rescue system"
                    },
                    None,
                ))
            }
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
pub fn tier(procedure: &super::procedures::Procedure) -> Tier {
    let dispositions: Vec<Disposition> = procedure
        .commands
        .iter()
        .map(|c| disposition(&procedure.id, c))
        .collect();
    let rescue = procedure
        .needs
        .contains(&super::procedures::Need::RescueSystem);
    if rescue && RESCUE_DRILLS.contains(&procedure.id.as_str()) {
        // From the lab's rescue boot, with `--drills`.
        Tier::Drill
    } else if !dispositions.contains(&Disposition::Run) || rescue {
        // A procedure that starts in the rescue system: its later
        // commands build on what the rescue system did.
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
