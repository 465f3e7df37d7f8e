//! Checklist procedures that vm-test runs in the VM, as data, and the
//! schedule that spreads them over boots (a procedure's parts are separated
//! by reboots, or by a reinstall).
//!
//! PROVISIONAL: the recovery procedures below are vm-test's own copies of
//! the deploy checklist's §4.3, §4.4 and §4.5 (xtask/src/checklist/plan.rs,
//! `rollback`), in the shape the checklist's one source of procedures is
//! expected to have: per command the line as printed (placeholders
//! included), shell expressions that fill the placeholders in the VM, the
//! exit status and output it must give, and what must come back (by
//! checksum, captured before and compared after). Once the checklist reads
//! that source, `recovery` is replaced by a conversion from it, and the
//! printed lines are what runs. Every record carries `provisional: true`
//! until then.

use std::collections::{BTreeMap, VecDeque};

use super::plan::{AdminCommand, AdminStep, Binding, CommandRole, Expectation};
use super::realise::Realisation;
use crate::layout::MountSource;
use crate::rules::impermanence::{MANAGEMENT_MOUNTPOINT, PERSIST_MOUNTPOINT, PERSIST_SUBVOLUME};

/// The second virtual disk: the admin's own machine, where /persist is saved.
pub const BACKUP_DISK: &str = "/dev/vdb";
pub const BACKUP_MOUNT: &str = "/mnt/backup";
/// The backup disk's size (sparse).
pub const BACKUP_DISK_BYTES: u64 = 8 << 30;
const SNAPSHOTS_MOUNTPOINT: &str = "/.snapshots";

#[derive(Debug, Clone, PartialEq)]
pub struct Procedure {
    /// The checklist step, e.g. `4.4`.
    pub step: String,
    pub title: String,
    pub provisional: bool,
    pub parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    pub commands: Vec<AdminCommand>,
    pub then: Then,
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

/// The names the procedures use, from the layout as the checklist takes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// Where the top level is mounted (/btrfs_tmp).
    pub top: String,
    pub old_roots: String,
    pub persist: String,
    pub snapshots: String,
}

impl Names {
    pub fn of(realisation: &Realisation) -> Names {
        let mut names = Names {
            top: MANAGEMENT_MOUNTPOINT.to_owned(),
            old_roots: realisation.rollback_settings.old_roots_subvolume.clone(),
            persist: PERSIST_SUBVOLUME.to_owned(),
            snapshots: "@snapshots".to_owned(),
        };
        for mount in &realisation.context.mounts {
            match (&mount.source, mount.mountpoint.as_str()) {
                (MountSource::BtrfsTopLevel, mountpoint) => names.top = mountpoint.to_owned(),
                (MountSource::Subvolume { name }, PERSIST_MOUNTPOINT) => {
                    names.persist = name.clone()
                }
                (MountSource::Subvolume { name }, SNAPSHOTS_MOUNTPOINT) => {
                    names.snapshots = name.clone()
                }
                _ => {}
            }
        }
        names
    }
}

fn command(role: CommandRole, line: impl Into<String>) -> AdminCommand {
    AdminCommand {
        role,
        line: line.into(),
        bindings: Vec::new(),
        exit: 0,
        expect: Vec::new(),
        capture: None,
        stands_for: None,
    }
}

fn checklist(line: impl Into<String>) -> AdminCommand {
    command(CommandRole::Checklist, line)
}

fn setup(line: impl Into<String>) -> AdminCommand {
    command(CommandRole::Setup, line)
}

impl AdminCommand {
    fn bind(mut self, placeholder: &str, shell: impl Into<String>) -> Self {
        self.bindings.push(Binding {
            placeholder: placeholder.to_owned(),
            shell: shell.into(),
        });
        self
    }

    fn expect(mut self, expectation: Expectation) -> Self {
        self.expect.push(expectation);
        self
    }

    fn capture(mut self, name: &str) -> Self {
        self.capture = Some(name.to_owned());
        self
    }
}

/// One SHA-256 over every file of a tree (names and contents, in byte
/// order): the data that must come back, in one line.
fn manifest(dir: &str) -> String {
    format!(
        "cd {dir} && find . -xdev -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1"
    )
}

fn verify_manifest(dir: &str, name: &str) -> AdminCommand {
    command(CommandRole::Verify, manifest(dir)).expect(Expectation::EqualsCaptured {
        name: name.to_owned(),
    })
}

fn capture_manifest(dir: &str, name: &str) -> AdminCommand {
    command(CommandRole::Verify, manifest(dir))
        .expect(Expectation::Matches {
            pattern: "^[0-9a-f]{64}$".to_owned(),
        })
        .capture(name)
}

fn stands_for(line: &str, instead: &str) -> AdminCommand {
    AdminCommand {
        stands_for: Some(instead.to_owned()),
        ..checklist(line)
    }
}

/// A file the last boot wrote into /, which is in the newest old root now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LostFile {
    /// Relative to the root, e.g. `etc/xtask-boot-3`.
    pub path: String,
    pub sha256: String,
}

/// §4.3, §4.4 and §4.5 of the deploy checklist (PROVISIONAL, see above).
pub fn recovery(names: &Names, lost: &LostFile) -> Vec<Procedure> {
    let Names {
        top,
        old_roots: old,
        persist,
        snapshots,
    } = names;
    let p = PERSIST_MOUNTPOINT;
    let path_dir = lost.path.rsplit_once('/').map_or("", |(dir, _)| dir);
    let copy_file = Procedure {
        step: "4.3".to_owned(),
        title: "A file that was not persisted is gone: copy it from an old root".to_owned(),
        provisional: true,
        parts: vec![Part {
            commands: vec![
                checklist(format!("sudo ls {top}/{old}/")).expect(Expectation::Matches {
                    pattern: "^[0-9]{8}T[0-9]{6}Z(-[0-9]{2})?$".to_owned(),
                }),
                // The checklist's cp needs the directory in /persist to exist.
                setup(format!("sudo mkdir -p {p}/{path_dir}")),
                checklist(format!(
                    "sudo cp -a --reflink=auto {top}/{old}/<YYYYMMDDTHHMMSSZ>/<path> {p}/<path>"
                ))
                .bind(
                    "<YYYYMMDDTHHMMSSZ>",
                    format!("sudo ls {top}/{old}/ | tail -n 1"),
                )
                .bind("<path>", format!("printf %s {}", lost.path)),
                command(
                    CommandRole::Verify,
                    format!("sha256sum {p}/{} | cut -d' ' -f1", lost.path),
                )
                .expect(Expectation::Equals {
                    text: lost.sha256.clone(),
                }),
            ],
            then: Then::Done,
        }],
    };
    let latest_snapshot = format!("sudo ls {top}/{snapshots}/ | sed -n 's/^{persist}\\.//p' | grep -v -e pre-install | tail -n 1");
    let restore_snapshot = Procedure {
        step: "4.4".to_owned(),
        title: format!("{p} is damaged: restore it from a snapshot"),
        provisional: true,
        parts: vec![
            Part {
                commands: vec![
                    setup(format!(
                        "sudo mkdir -p {p}/xtask-4.4 && sudo sh -c 'head -c 4194304 /dev/urandom > {p}/xtask-4.4/data.bin'"
                    )),
                    capture_manifest(p, "4.4:persist"),
                    // What btrbk does hourly, with its naming.
                    setup(format!(
                        "sudo btrfs subvolume snapshot -r {top}/{persist} {top}/{snapshots}/{persist}.$(date -u +%Y%m%dT%H%M)"
                    )),
                    // The damage.
                    setup(format!("sudo rm -rf {p}/xtask-4.4")),
                    checklist(format!("sudo ls {top}/{snapshots}/")).expect(Expectation::Contains {
                        text: format!("{persist}."),
                    }),
                    checklist(format!(
                        "sudo cp -a --reflink=auto {SNAPSHOTS_MOUNTPOINT}/{persist}.<time>/<path> {p}/<path>"
                    ))
                    .bind("<time>", latest_snapshot.clone())
                    .bind("<path>", "printf %s xtask-4.4"),
                    verify_manifest(p, "4.4:persist"),
                    checklist(format!(
                        "sudo btrfs subvolume snapshot {top}/{snapshots}/{persist}.<time> {top}/{persist}.restored"
                    ))
                    .bind("<time>", latest_snapshot),
                    checklist(format!(
                        "sudo mv {top}/{persist} {top}/{persist}.replaced-$(date -u +%Y%m%dT%H%M%SZ)"
                    )),
                    checklist(format!("sudo mv {top}/{persist}.restored {top}/{persist}")),
                    stands_for(
                        "sudo systemctl reboot",
                        "the VM powers off; the next boot continues",
                    ),
                ],
                then: Then::Reboot,
            },
            Part {
                commands: vec![
                    verify_manifest(p, "4.4:persist"),
                    checklist(format!(
                        "sudo btrfs subvolume delete {top}/{persist}.replaced-<time>"
                    ))
                    .bind(
                        "<time>",
                        format!("sudo ls {top}/ | sed -n 's/^{persist}\\.replaced-//p' | tail -n 1"),
                    ),
                ],
                then: Then::Done,
            },
        ],
    };
    let backup = BACKUP_MOUNT;
    let reinstall = Procedure {
        step: "4.5".to_owned(),
        title: format!("Nothing else works: reinstall and restore {p}"),
        provisional: true,
        parts: vec![
            Part {
                commands: vec![
                    // The second disk stands for the admin's machine.
                    setup(format!(
                        "sudo mkfs.btrfs -q -f -L xtask-backup {BACKUP_DISK} && sudo mkdir -p {backup} && sudo mount {BACKUP_DISK} {backup}"
                    )),
                    capture_manifest(p, "4.5:persist"),
                    // Deployment step 1, "Save what must outlive the install".
                    checklist(format!(
                        "sudo btrfs subvolume snapshot -r {top}/{persist} {top}/{snapshots}/{persist}.pre-install"
                    )),
                    checklist(format!(
                        "sudo btrfs send {top}/{snapshots}/{persist}.pre-install | zstd -q > {backup}/persist.pre-install.btrfs.zst"
                    )),
                    checklist(format!("zstd -t {backup}/persist.pre-install.btrfs.zst")),
                    setup(format!("sudo umount {backup}")),
                    stands_for(
                        "deployment steps 2 to 5: rescue system, nixos-anywhere",
                        "the lab's install boot: the disk partitioned, formatted and mounted again as disko does",
                    ),
                ],
                then: Then::Reinstall,
            },
            Part {
                commands: vec![
                    setup(format!("sudo mkdir -p {backup} && sudo mount {BACKUP_DISK} {backup}")),
                    checklist(format!(
                        "zstd -dc {backup}/persist.pre-install.btrfs.zst | sudo btrfs receive {top}/{snapshots}"
                    )),
                    checklist(format!(
                        "sudo btrfs subvolume snapshot {top}/{snapshots}/{persist}.pre-install {top}/{persist}.restored"
                    )),
                    checklist(format!("sudo mv {top}/{persist} {top}/{persist}.fresh-install")),
                    checklist(format!("sudo mv {top}/{persist}.restored {top}/{persist}")),
                    setup(format!("sudo umount {backup}")),
                    stands_for(
                        "sudo systemctl reboot",
                        "the VM powers off; the next boot continues",
                    ),
                ],
                then: Then::Reboot,
            },
            Part {
                commands: vec![
                    verify_manifest(p, "4.5:persist"),
                    // Not printed by the checklist yet: the fresh install's /persist stays behind.
                    checklist(format!("sudo btrfs subvolume delete {top}/{persist}.fresh-install")),
                ],
                then: Then::Done,
            },
        ],
    };
    vec![copy_file, restore_snapshot, reinstall]
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

impl Schedule {
    pub fn new(procedures: Vec<Procedure>) -> Schedule {
        Schedule {
            queue: procedures.into(),
            ..Schedule::default()
        }
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
        let step = |(p, part): &(Procedure, usize)| AdminStep {
            step: p.step.clone(),
            title: p.title.clone(),
            part: *part as u32,
            provisional: p.provisional,
            commands: p.parts[*part].commands.clone(),
            captured: captured.clone(),
        };
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
    pub fn finished_boot(&mut self, passed: impl Fn(&str) -> bool) {
        for (procedure, part) in std::mem::take(&mut self.running) {
            if passed(&procedure.step) && part + 1 < procedure.parts.len() {
                self.pending.push((procedure, part + 1));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Names {
        Names {
            top: "/btrfs_tmp".into(),
            old_roots: "@old_roots".into(),
            persist: "@persist".into(),
            snapshots: "@snapshots".into(),
        }
    }

    fn lost() -> LostFile {
        LostFile {
            path: "etc/xtask-boot-3".into(),
            sha256: "ab".repeat(32),
        }
    }

    #[test]
    fn the_procedures_are_the_checklists_steps_with_their_placeholders() {
        let procedures = recovery(&names(), &lost());
        let steps: Vec<&str> = procedures.iter().map(|p| p.step.as_str()).collect();
        assert_eq!(steps, ["4.3", "4.4", "4.5"]);
        assert!(procedures.iter().all(|p| p.provisional));
        let copy = &procedures[0].parts[0].commands[2];
        assert_eq!(
            copy.line,
            "sudo cp -a --reflink=auto /btrfs_tmp/@old_roots/<YYYYMMDDTHHMMSSZ>/<path> /persist/<path>"
        );
        assert_eq!(copy.bindings.len(), 2);
        // Every placeholder in a line has a binding.
        for procedure in &procedures {
            for part in &procedure.parts {
                for command in &part.commands {
                    let mut line = command.line.clone();
                    for binding in &command.bindings {
                        line = line.replace(&binding.placeholder, "x");
                    }
                    assert!(
                        !line.contains("<YYYY")
                            && !line.contains("<path>")
                            && !line.contains("<time>"),
                        "{}",
                        command.line
                    );
                }
            }
        }
        // What must come back is captured before and compared after, by name.
        let captured: Vec<&str> = procedures
            .iter()
            .flat_map(|p| &p.parts)
            .flat_map(|part| &part.commands)
            .filter_map(|c| c.capture.as_deref())
            .collect();
        assert_eq!(captured, ["4.4:persist", "4.5:persist"]);
    }

    #[test]
    fn the_schedule_waits_for_reboots_and_reinstalls() {
        let mut schedule = Schedule::new(recovery(&names(), &lost()));
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
        assert_eq!(
            boots,
            [
                (false, vec![], vec!["4.3/0".to_owned(), "4.4/0".to_owned()]),
                (false, vec!["4.4/1".to_owned()], vec!["4.5/0".to_owned()]),
                (true, vec!["4.5/1".to_owned()], vec![]),
                (false, vec!["4.5/2".to_owned()], vec![]),
            ]
        );
        // A failed part ends its procedure.
        let mut schedule = Schedule::new(recovery(&names(), &lost()));
        schedule.next_boot(&captured);
        schedule.finished_boot(|step| step != "4.4");
        let next = schedule.next_boot(&captured).unwrap();
        assert!(next.continued.is_empty());
        assert_eq!(next.started[0].step, "4.5");
    }
}
