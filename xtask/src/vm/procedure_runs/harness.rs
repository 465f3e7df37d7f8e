//! The lab's own commands around a procedure (the situation it is for, the
//! data that must come back) and the shell expressions that give its
//! placeholders values in the VM.

use anyhow::{bail, Result};

use super::{Lab, BACKUP_DISK, LAB_IP, WORKSTATION};
use crate::deploy_checklist::procedures::Names;
use crate::vm::plan::{AdminCommand, Binding, CommandRole, Expectation};
use layout::impermanence::PERSIST_MOUNTPOINT;

/// The lab's own commands around a procedure, and its placeholders' values.
#[derive(Debug, Clone, Default)]
pub(super) struct Harness {
    pub(super) bindings: Vec<Binding>,
    /// Before the first command.
    pub(super) setup: Vec<AdminCommand>,
    /// At the start of every later part.
    pub(super) each_part: Vec<AdminCommand>,
    /// After the last command.
    pub(super) verify: Vec<AdminCommand>,
    /// At the start of the rescue boot's part: the installed system broken.
    pub(super) broken: Vec<AdminCommand>,
    /// `local$` commands run on the workstation's disk.
    pub(super) workstation: bool,
}

pub(super) fn lab_command(role: CommandRole, line: impl Into<String>) -> AdminCommand {
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

/// `#2` for a second run: its captures are its own.
fn run_suffix(run: u32) -> String {
    if run > 1 {
        format!("#{run}")
    } else {
        String::new()
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

/// The lab's own commands around run `run` (1, 2) of procedure `id`. A
/// second run finds the first one's leftovers (snapshots, received copies,
/// the workstation's files) and /persist changed since: it must restore
/// the newer data, which is what catches a reused name or a stale save.
pub(super) fn harness(id: &str, lab: &Lab, run: u32) -> Result<Harness> {
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
            let name = format!("restore-persist:persist{}", run_suffix(run));
            harness.setup = vec![
                write_data("xtask-restore/data.bin", 1 << 20),
                capture_manifest(p, &name),
                // What btrbk does every hour, with its naming (a second
                // snapshot in the same minute gets `_N`, as btrbk's do).
                setup(format!(
                    "d={top}/{snapshots}/{persist}.$(date -u +%Y%m%dT%H%M); n=$d; i=1; while [ -e \"$n\" ]; do n=${{d}}_$i; i=$((i + 1)); done; btrfs subvolume snapshot -r {top}/{persist} \"$n\""
                )),
                // The damage.
                setup(format!("rm -rf {p}/xtask-restore")),
            ];
            harness.bindings = vec![
                binding(
                    "<snapshot>",
                    format!(
                        "ls {top}/{snapshots} | grep -E -x '{}\\.[0-9]{{8}}T[0-9]{{4}}(_[0-9]+)?' | tail -n 1",
                        persist.replace('.', "\\.")
                    ),
                ),
                binding("<path>", "printf %s xtask-restore/data.bin"),
            ];
            harness.verify = vec![verify_manifest(p, &name)];
        }
        "rollback.reinstall" | "rollback.rescue-save" => {
            let rescue = id == "rollback.rescue-save";
            let drill = if rescue { "rescue" } else { "reinstall" };
            let name = format!("{drill}:persist{}", run_suffix(run));
            let mount = format!(
                "mkdir -p {WORKSTATION} && {{ findmnt {WORKSTATION} >/dev/null || mount {BACKUP_DISK} {WORKSTATION}; }}"
            );
            harness.workstation = true;
            // The second disk stands for the admin's workstation; a second
            // run finds the first one's files there.
            let workstation = if run == 1 {
                // The rescue drill keeps what §4.5's drill saved there, if it ran.
                let format = if rescue {
                    format!("{{ blkid {BACKUP_DISK} >/dev/null || mkfs.btrfs -q -f -L xtask-workstation {BACKUP_DISK}; }}")
                } else {
                    format!("mkfs.btrfs -q -f -L xtask-workstation {BACKUP_DISK}")
                };
                setup(format!(
                    "{format} && {mount} && chown {}:{} {WORKSTATION}",
                    lab.login.uid, lab.login.gid
                ))
            } else {
                setup(mount.clone())
            };
            harness.setup = vec![
                workstation,
                write_data(&format!("xtask-{drill}/data.bin"), 1 << 20),
                capture_manifest(p, &name),
            ];
            // What the procedure says the reinstall erases (@caddy,
            // @containers, @log): a file in each before, none after.
            let before = "xtask-before-reinstall";
            if !lab.erased.is_empty() {
                harness.setup.push(setup(
                    lab.erased
                        .iter()
                        .map(|mp| format!("echo {run} > {mp}/{before}"))
                        .collect::<Vec<_>>()
                        .join(" && "),
                ));
            }
            harness.each_part = vec![setup(mount)];
            harness.bindings = vec![
                binding("<path>", format!("printf %s xtask-{drill}/data.bin")),
                // As the reader takes it: the time of the save.
                binding("<stamp>", "date -u +%Y%m%dT%H%M%SZ"),
            ];
            if rescue {
                // The server does not boot: its root subvolume is gone
                // (deleted from the top level, nothing else touched). The
                // lab boots no GRUB, so it stands for every state in which
                // the installed system cannot come up (a broken bootloader,
                // a broken or missing root) while the rest of the disk is
                // intact; the drill never boots it again.
                let root = &lab.root_subvolume;
                let broken = "/run/xtask-broken";
                harness.broken = vec![
                    setup(format!(
                        "d=$(blkid -o device -t TYPE=btrfs /dev/vda[0-9]* | head -n 1) && mkdir -p {broken} && mount -o subvolid=5 \"$d\" {broken} && btrfs subvolume delete {broken}/{root} && test ! -e {broken}/{root} && test -d {broken}/{persist} && umount {broken}"
                    )),
                ];
            }
            harness.verify = vec![verify_manifest(p, &name)];
            if !lab.erased.is_empty() {
                harness.verify.push(lab_command(
                    CommandRole::Verify,
                    lab.erased
                        .iter()
                        .map(|mp| format!("test ! -e {mp}/{before}"))
                        .collect::<Vec<_>>()
                        .join(" && "),
                ));
            }
        }
        _ => {}
    }
    harness
        .bindings
        .push(binding("<IP>", format!("printf %s {LAB_IP}")));
    Ok(harness)
}
