//! Commands that lose data or cannot run where they are typed, found in a
//! sequence of commands (a procedure, or a shell block of a guide). Every
//! rule names the class of mistake, not one line:
//!
//! - `snapshot-name`: `btrfs subvolume snapshot SRC DEST` where DEST may
//!   exist: btrfs then fails (DEST read-only) or puts the snapshot *inside*
//!   DEST (writable), and DEST keeps its old contents: a later `btrfs send
//!   DEST` streams the stale one, a swap brings it back (xtask/tests/
//!   recovery.rs shows both with the real tools). DEST must carry
//!   `$(date …)` or be checked first with `test ! -e DEST`.
//! - `mv-into`: `mv` without `-T` moves the source *into* a target that
//!   exists as a directory instead of renaming it.
//! - `soft-reboot`: `hcloud server reboot` is an ACPI request a hung or
//!   half-installed server ignores; `hcloud server reset` cuts the power.
//! - `missing-command`: a program the place lacks (`super::places`).
//! - `needs-root`: on the server as the admin, a program or a path only
//!   root may use, without `sudo`.
//! - `rescue-paths`: /btrfs_tmp in the rescue system, which mounts nothing
//!   there (the top level goes to /mnt).
//! - `etc-link`: copying a file of an old root's /etc without checking
//!   that it is no link: NixOS's files there are links
//!   into /etc/static, which `cp -a` copies as links (to the running
//!   generation's file, not the old one).
//! - `host-key`: an SSH login to `<IP>` after its host key changed (the
//!   rescue system, a fresh install, a restored /persist) without
//!   `ssh-keygen -R <IP>` since: ssh refuses to connect.

use super::disposition::simple_commands_sudo;
use super::facts::Where;
use super::places::Places;

/// One command of a sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub at: Where,
    pub line: String,
}

/// A hazard at the command `index` of the sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hazard {
    pub index: usize,
    pub rule: &'static str,
    pub message: String,
}

/// A program call with the place it runs in and whether as root.
#[derive(Debug, Clone)]
struct Call {
    at: Where,
    root: bool,
    words: Vec<String>,
}

/// The calls of `line` at `at`: through `sh -c '…'` and `ssh … '…'`.
fn calls(at: Where, line: &str, root: bool) -> Vec<Call> {
    let mut found = Vec::new();
    for (sudo, words) in simple_commands_sudo(line) {
        let root = root || sudo || at == Where::Rescue;
        let program = words[0].rsplit('/').next().unwrap_or("").to_owned();
        if matches!(program.as_str(), "sh" | "bash")
            && words.get(1).map(String::as_str) == Some("-c")
        {
            if let Some(inner) = words.get(2) {
                found.extend(calls(at, inner, root));
            }
            found.push(Call { at, root, words });
            continue;
        }
        if program == "ssh" {
            if let Some((destination, remote)) = ssh_remote(&words) {
                let to = if destination.starts_with("root@") {
                    Where::Rescue
                } else {
                    Where::Server
                };
                found.extend(calls(to, &remote, to == Where::Rescue));
            }
        }
        found.push(Call { at, root, words });
    }
    found
}

/// `ssh [options] DEST COMMAND…`: DEST and the remote command line.
fn ssh_remote(words: &[String]) -> Option<(String, String)> {
    let mut rest = &words[1..];
    while let Some(first) = rest.first() {
        if !first.starts_with('-') {
            break;
        }
        let takes_value = matches!(first.as_str(), "-p" | "-o" | "-i" | "-F" | "-J" | "-l");
        rest = &rest[if takes_value { 2.min(rest.len()) } else { 1 }..];
    }
    let (destination, command) = rest.split_first()?;
    (!command.is_empty()).then(|| (destination.clone(), command.join(" ")))
}

/// Paths only root may write (or, for the top level, read below).
const ROOT_PATHS: &[&str] = &[
    "/persist",
    "/btrfs_tmp",
    "/.snapshots",
    "/etc",
    "/nix",
    "/var/lib",
    "/var/log",
    "/mnt",
    "/boot",
];
/// Programs that change files.
const WRITERS: &[&str] = &[
    "cp", "mv", "mkdir", "rm", "rmdir", "tee", "touch", "ln", "chmod", "chown", "install",
    "truncate", "rsync",
];
/// Programs that need root for what the guides use them for.
const ROOT_PROGRAMS: &[&str] = &[
    "btrfs",
    "btrbk",
    "mount",
    "umount",
    "cryptsetup",
    "compsize",
    "fstrim",
    "mkswap",
    "wipefs",
    "switch-to-configuration",
];

fn under_root_path(word: &str) -> bool {
    let path = word.trim_start_matches('>').trim_matches('"');
    ROOT_PATHS
        .iter()
        .any(|p| path == *p || path.starts_with(&format!("{p}/")))
}

/// `btrfs subvolume snapshot [-r] [-i Q] SRC DEST`: DEST.
fn snapshot_destination(words: &[String]) -> Option<String> {
    if words.len() < 3 || words[0].rsplit('/').next() != Some("btrfs") {
        return None;
    }
    let sub = words[1].as_str();
    let verb = words[2].as_str();
    if !("subvolume".starts_with(sub) && sub.len() >= 3 && verb == "snapshot") {
        return None;
    }
    let mut operands = Vec::new();
    let mut rest = words[3..].iter();
    while let Some(word) = rest.next() {
        if word == "-i" {
            rest.next();
        } else if !word.starts_with('-') {
            operands.push(word.clone());
        }
    }
    (operands.len() >= 2).then(|| operands[operands.len() - 1].clone())
}

/// `test ! -e PATH` / `[ ! -e PATH ]` in `words`: PATH.
fn absence_checked(words: &[String]) -> Option<String> {
    let program = words[0].as_str();
    if !(program == "test" || program == "[") {
        return None;
    }
    let w: Vec<&str> = words.iter().map(String::as_str).collect();
    match w.as_slice() {
        [_, "!", "-e", path, ..] => Some((*path).to_owned()),
        _ => None,
    }
}

/// `test ! -L PATH` in `words`: PATH.
fn no_link_checked(words: &[String]) -> Option<String> {
    let w: Vec<&str> = words.iter().map(String::as_str).collect();
    match w.as_slice() {
        ["test" | "[", "!", "-L" | "-h", path, ..] => Some((*path).to_owned()),
        _ => None,
    }
}

/// Who answers at `<IP>`, as far as its SSH host key goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Identity {
    /// The server's own keys (those in /persist).
    Own,
    Rescue,
    /// A fresh install's new keys.
    FreshInstall,
}

/// The hazards of a sequence of commands.
pub fn hazards(places: &Places, lines: &[Line]) -> Vec<Hazard> {
    let mut found = Vec::new();
    let mut absent_checked: Vec<String> = Vec::new();
    let mut no_link: Vec<String> = Vec::new();
    let mut identity = Identity::Own;
    let mut known: Option<Identity> = Some(Identity::Own);
    let mut rescue_enabled = false;
    let mut persist_swapped = false;
    for (index, Line { at, line }) in lines.iter().enumerate() {
        let mut hazard = |rule: &'static str, message: String| {
            if !found
                .iter()
                .any(|h: &Hazard| h.index == index && h.rule == rule)
            {
                found.push(Hazard {
                    index,
                    rule,
                    message,
                });
            }
        };
        let calls = calls(*at, line, false);
        // Checks first, so that `test ! -e X && btrfs … X` counts.
        for call in &calls {
            absent_checked.extend(absence_checked(&call.words));
            no_link.extend(no_link_checked(&call.words));
        }
        let mut connects = matches!(at, Where::Server | Where::Rescue);
        for call in &calls {
            let words = &call.words;
            let program = words[0].rsplit('/').next().unwrap_or("");
            call_hazards(places, call, line, &absent_checked, &no_link, &mut hazard);
            // Who answers at <IP>.
            if call.at == Where::Local {
                match program {
                    "ssh-keygen" if words.iter().any(|w| w == "-R") => known = None,
                    "hcloud" if words.get(1).map(String::as_str) == Some("server") => {
                        match words.get(2).map(String::as_str) {
                            Some("enable-rescue") => rescue_enabled = true,
                            Some("reset" | "reboot") if rescue_enabled => {
                                identity = Identity::Rescue;
                                rescue_enabled = false;
                            }
                            _ => {}
                        }
                    }
                    "ssh" => connects = true,
                    "nix" if words.iter().any(|w| w.contains("nixos-anywhere")) => {
                        connects = true;
                    }
                    _ => {}
                }
            }
            if call.at == Where::Server && program == "mv" {
                let last = words.last().map(String::as_str).unwrap_or("");
                if last.ends_with("/@persist") {
                    persist_swapped = true;
                }
            }
        }
        if connects {
            if let Some(k) = known {
                if k != identity {
                    hazard("host-key", "ssh refuses <IP>: its host key changed (the rescue system, a fresh install or a restored /persist answers now) since known_hosts learned it; run `ssh-keygen -R <IP>` first".to_owned());
                }
            }
            known = Some(identity);
        }
        // What answers after this command.
        if line.contains("nixos-anywhere") {
            identity = if line.contains("--extra-files") {
                Identity::Own
            } else {
                Identity::FreshInstall
            };
        }
        if calls.iter().any(|c| {
            c.at == Where::Server
                && c.words.first().map(String::as_str) == Some("systemctl")
                && c.words.get(1).map(String::as_str) == Some("reboot")
        }) && persist_swapped
        {
            identity = Identity::Own;
            persist_swapped = false;
        }
    }
    found
}

/// The hazards of one call on its own, given what the commands so far
/// checked (`absent_checked`, `no_link`).
fn call_hazards(
    places: &Places,
    call: &Call,
    line: &str,
    absent_checked: &[String],
    no_link: &[String],
    hazard: &mut dyn FnMut(&'static str, String),
) {
    let words = &call.words;
    let program = words[0].rsplit('/').next().unwrap_or("");
    for missing in places.missing(call.at, &words.join(" ")) {
        if missing == words[0] {
            hazard(
                "missing-command",
                format!(
                    "`{missing}` is not a command of {}",
                    super::places::place_name(call.at)
                ),
            );
        }
    }
    if let Some(destination) = snapshot_destination(words) {
        let stamped =
            destination.contains("$(date") || line.contains(&format!("{destination}$(date"));
        if !stamped && !absent_checked.contains(&destination) {
            hazard("snapshot-name", format!(
                "{destination} may exist already (a retry, an earlier save): btrfs then fails or snapshots into it, and the name keeps its old contents for the next command; name it with `$(date -u +%Y%m%dT%H%M%SZ)` or check first with `test ! -e {destination}`"
            ));
        }
    }
    if program == "mv"
        && !words[1..].iter().any(|w| {
            w == "--no-target-directory"
                || (w.starts_with('-') && !w.starts_with("--") && w.contains('T'))
        })
    {
        hazard("mv-into", "`mv` without `-T` moves into a target that exists as a directory instead of renaming onto it: use `mv -T`".to_owned());
    }
    if program == "hcloud" && words.get(1..3) == Some(&["server".into(), "reboot".into()]) {
        hazard("soft-reboot", "`hcloud server reboot` asks the OS to reboot (ACPI), which a hung or half-installed server ignores: use `hcloud server reset`".to_owned());
    }
    if call.at == Where::Server && !call.root {
        let writes = WRITERS.contains(&program) && words[1..].iter().any(|w| under_root_path(w));
        let redirect = words
            .windows(2)
            .any(|w| w[0] == ">" && under_root_path(&w[1]))
            || words
                .iter()
                .any(|w| w.starts_with('>') && w.len() > 1 && under_root_path(w));
        if ROOT_PROGRAMS.contains(&program) || writes || redirect {
            hazard(
                "needs-root",
                format!(
                    "`{}` needs root on the server: the admin runs it with `sudo`",
                    words.join(" ")
                ),
            );
        }
        if program == "nix-collect-garbage" {
            hazard("needs-root", "`nix-collect-garbage` as the admin collects only the admin's own profiles; the system's generations need `sudo`".to_owned());
        }
    }
    if call.at == Where::Rescue && words.iter().any(|w| w.contains("/btrfs_tmp")) {
        hazard("rescue-paths", "the rescue system has no /btrfs_tmp: mount the top level there at /mnt (`mount -o subvolid=5 <partition> /mnt`) and use /mnt/@…".to_owned());
    }
    if program == "cp" {
        let operands: Vec<&String> = words[1..].iter().filter(|w| !w.starts_with('-')).collect();
        if let Some((_, sources)) = operands.split_last() {
            for source in sources {
                // An old root's /etc is NixOS's (links); a
                // snapshot of /persist holds real files.
                if source.contains("@old_roots/")
                    && source.contains("/etc/")
                    && !no_link.contains(source)
                {
                    hazard("etc-link", format!("{source}: NixOS's files in /etc are links into /etc/static, and `cp` copies the link (the running generation's file, not the old one); check with `test ! -L {source}` first"));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use toolbox::project::project_root;

    fn places() -> Places {
        Places::for_host(&project_root().join("hosts/servers/hetzner-cloud")).unwrap()
    }

    fn rules(lines: &[(Where, &str)]) -> Vec<&'static str> {
        let lines: Vec<Line> = lines
            .iter()
            .map(|(at, l)| Line {
                at: *at,
                line: (*l).to_owned(),
            })
            .collect();
        hazards(&places(), &lines).iter().map(|h| h.rule).collect()
    }

    use Where::{Local, Rescue, Server};

    #[test]
    fn a_snapshot_to_a_name_that_may_exist_is_a_hazard() {
        // The old §2.2 / §4.5 line.
        assert_eq!(
            rules(&[(Server, "sudo btrfs subvolume snapshot -r /btrfs_tmp/@persist /btrfs_tmp/@snapshots/@persist.pre-install")]),
            ["snapshot-name"]
        );
        // The old §4.4 restore: a leftover @persist.restored swallows it too.
        assert_eq!(
            rules(&[(Server, "sudo btrfs subvolume snapshot /btrfs_tmp/@snapshots/<snapshot> /btrfs_tmp/@persist.restored")]),
            ["snapshot-name"]
        );
        assert!(rules(&[(Server, "sudo btrfs subvolume snapshot -r /btrfs_tmp/@persist /btrfs_tmp/@snapshots/@persist.manual-$(date -u +%Y%m%dT%H%M%SZ)")]).is_empty());
        assert!(rules(&[
            (Server, "sudo test ! -e /btrfs_tmp/@persist.restored"),
            (Server, "sudo btrfs subvolume snapshot /btrfs_tmp/@snapshots/<snapshot> /btrfs_tmp/@persist.restored"),
        ])
        .is_empty());
        assert!(rules(&[(Rescue, "test ! -e /mnt/@persist.restored && btrfs subvolume snapshot /mnt/@snapshots/x /mnt/@persist.restored")]).is_empty());
    }

    #[test]
    fn mv_without_t_reboot_instead_of_reset_and_rescue_paths_are_hazards() {
        // The old snapshots.md rescue restore.
        assert_eq!(
            rules(&[(Rescue, "mv /mnt/@persist /mnt/@persist.replaced")]),
            ["mv-into"]
        );
        assert!(rules(&[(Rescue, "mv -T /mnt/@persist /mnt/@persist.replaced")]).is_empty());
        assert_eq!(
            rules(&[(Local, "hcloud server reboot <server>")]),
            ["soft-reboot"]
        );
        assert!(rules(&[(Local, "hcloud server reset <server>")]).is_empty());
        // The old troubleshooting.md, typed in the rescue system.
        assert_eq!(
            rules(&[(Rescue, "btrfs subvolume list /btrfs_tmp")]),
            ["rescue-paths"]
        );
    }

    #[test]
    fn what_the_server_lacks_and_what_needs_sudo_are_hazards() {
        assert_eq!(
            rules(&[(Server, "sudo podman image prune")]),
            ["missing-command"]
        );
        assert_eq!(
            rules(&[(Local, "ssh hbohlen@<IP> 'sudo podman ps'")]),
            ["missing-command"]
        );
        // The old rollback.md and maintenance.md lines.
        assert_eq!(
            rules(&[(
                Server,
                "cp -a /btrfs_tmp/@old_roots/x/var/some.conf /persist/var/some.conf"
            )]),
            ["needs-root"]
        );
        assert_eq!(
            rules(&[(
                Server,
                "mv -T /btrfs_tmp/@old_roots/a /btrfs_tmp/@old_roots/b"
            )]),
            ["needs-root"]
        );
        assert_eq!(
            rules(&[(Server, "nix-collect-garbage --delete-older-than 30d")]),
            ["needs-root"]
        );
        assert_eq!(rules(&[(Server, "echo x > /persist/x")]), ["needs-root"]);
        assert!(rules(&[(Server, "sudo nix-collect-garbage --delete-older-than 30d")]).is_empty());
        assert!(rules(&[(
            Server,
            "sudo sh -c 'btrfs filesystem du -s /btrfs_tmp/@old_roots/*'"
        )])
        .is_empty());
        assert!(rules(&[(Server, "ls /btrfs_tmp/@old_roots")]).is_empty());
    }

    #[test]
    fn copying_from_an_old_roots_etc_needs_a_link_check() {
        assert_eq!(
            rules(&[(
                Server,
                "sudo cp -a /btrfs_tmp/@old_roots/x/etc/some.conf /persist/etc/some.conf"
            )]),
            ["etc-link"]
        );
        assert!(rules(&[
            (
                Server,
                "sudo test ! -L /btrfs_tmp/@old_roots/x/etc/some.conf"
            ),
            (
                Server,
                "sudo cp -a /btrfs_tmp/@old_roots/x/etc/some.conf /persist/etc/some.conf"
            ),
        ])
        .is_empty());
    }

    #[test]
    fn a_login_after_the_host_key_changed_needs_ssh_keygen() {
        let anywhere =
            "nix run github:nix-community/nixos-anywhere -- --flake .#h --target-host root@<IP>";
        // The old §4.5: the fresh install's keys, then the restored ones.
        let old = [
            (
                Local,
                "hcloud server enable-rescue --type linux64 --ssh-key <key> <server>",
            ),
            (Local, "hcloud server reset <server>"),
            (Local, "ssh-keygen -R <IP>"),
            (Local, anywhere),
            (Local, "ssh-keygen -R <IP>"),
            (
                Local,
                "zstd -dc p.zst | ssh hbohlen@<IP> 'sudo btrfs receive /btrfs_tmp/@snapshots'",
            ),
            (
                Server,
                "sudo mv -T /btrfs_tmp/@persist.restored /btrfs_tmp/@persist",
            ),
            (Server, "sudo systemctl reboot"),
            (Server, "sudo cmp /a /b"),
        ];
        assert_eq!(rules(&old), ["host-key"]);
        // The rescue system answers: known_hosts must forget the server.
        assert_eq!(rules(&[old[0], old[1], old[3]]), ["host-key"]);
        assert!(rules(&old[..4]).is_empty());
        // With the host keys carried over, the identity never changes.
        let anywhere_kept = format!("{anywhere} --extra-files extra");
        let mut kept = old.to_vec();
        kept[3] = (Local, anywhere_kept.as_str());
        assert!(rules(&kept).is_empty(), "{:?}", rules(&kept));
    }
}
