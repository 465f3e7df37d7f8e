//! §3 of the checklist: what to check on the installed server.

use crate::deploy_checklist::facts::{HostFacts, Where};
use crate::deploy_checklist::plan::{self, Measured};
use crate::hosts::Subject;
use crate::report::{BtrfsTable, Lifecycle, MountRow, SwapRow, Tables};
use layout::impermanence::PERSIST_MOUNTPOINT;
use layout::names::{escape_systemd_path, swap_mapper_name};
use layout::size::SECTOR_BYTES;
use layout::EntryKind;

use super::{
    kernel_node, local, names, procedure, reboot, sudo, Expect, Names, Need, Procedure,
    MAX_STORE_PERC, ROLLBACK_STATUS_DIR, ROLLBACK_STATUS_UNIT,
};

/// x86-64 Linux pages: mkswap keeps the first for its header, so swapon
/// shows a swap area one page smaller than the device.
const PAGE_BYTES: u64 = 4096;

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
    let mut steps = vec![units(facts)];
    for fs in &tables.filesystems {
        steps.push(mounts(subject, &tables, fs));
        steps.extend(subvolumes(fs, &n));
    }
    steps.extend(tables.swaps.iter().map(|swap| swap_step(subject, swap)));
    steps.extend(
        tables
            .other_mounts
            .iter()
            .filter(|m| m.fs_type == "vfat")
            .map(|m| esp(subject, m)),
    );
    steps.extend(
        tables
            .filesystems
            .iter()
            .filter_map(|fs| space(&tables, fs)),
    );
    steps.push(compression(&tables, measured));
    steps.push(trim(subject, &tables, measured));
    // The root wipe and the machine's identity, across a reboot.
    let has_wiped_root = tables
        .filesystems
        .iter()
        .flat_map(|f| f.subvolumes.iter())
        .any(|s| s.lifecycle == Lifecycle::WipedAtBoot);
    if has_wiped_root {
        steps.push(wipe_across_reboot(subject, facts, &n));
    }
    unique_ids(&mut steps);
    steps
}

/// Units and timers: nothing failed, the host's own units active.
fn units(facts: &HostFacts) -> Procedure {
    let mut units = vec![ROLLBACK_STATUS_UNIT.to_owned()];
    units.extend(
        facts
            .btrbk_instances
            .iter()
            .map(|i| format!("btrbk-{i}.timer")),
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
        });
    // The monthly scrub's timer has one name per file system, which nixpkgs
    // changed: btrfs-scrub-<path>.timer (nixos/modules/tasks/filesystems/
    // btrfs.nix before NixOS/nixpkgs#559627), the template instance
    // btrfs-scrub@<path>.timer after it. The glob takes either, so a
    // nixpkgs update does not turn a healthy server red; `show` prints
    // nothing for a glob that fits no unit, so the Id line is required.
    for fs in &facts.scrub_file_systems {
        let escaped = escape_systemd_path(fs);
        boot = boot
            .run(sudo(format!(
                "systemctl show -p Id -p ActiveState 'btrfs-scrub[-@]{escaped}.timer'"
            )))
            .shows(format!(
                "Id=btrfs-scrub@{escaped}.timer   (btrfs-scrub-{escaped}.timer before nixpkgs PR #559627)"
            ))
            .shows("ActiveState=active")
            .expect(Expect::Line {
                pattern: format!("Id=btrfs-scrub<*>{escaped}.timer"),
            })
            .expect(Expect::Line {
                pattern: "ActiveState=active".to_owned(),
            })
            .expect(Expect::NoLine {
                pattern: "ActiveState=inactive".to_owned(),
            })
            .expect(Expect::NoLine {
                pattern: "ActiveState=failed".to_owned(),
            });
    }
    boot = boot
        .then(format!(
            "A failed unit: `sudo systemctl status <unit>` and `sudo journalctl -b -u <unit>` say why; {ROLLBACK_STATUS_UNIT} failing means the rollback did not run or failed (docs/troubleshooting.md)."
        ));
    boot
}

/// The Btrfs mounts of `fs`, and impermanence's bind mounts from it.
fn mounts(subject: &Subject, tables: &Tables, fs: &BtrfsTable) -> Procedure {
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
    mounts
}

/// The subvolumes of `fs`, when its top level is mounted.
fn subvolumes(fs: &BtrfsTable, n: &Names) -> Option<Procedure> {
    let top = fs
        .subvolumes
        .iter()
        .find(|s| s.name == "(top level)")
        .and_then(|s| s.mountpoint.clone())?;
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
    Some(list)
}

/// Swap on `swap`: its size, and the encryption when random.
fn swap_step(subject: &Subject, swap: &SwapRow) -> Procedure {
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
    s
}

/// The ESP mounted with its permissions.
fn esp(subject: &Subject, m: &MountRow) -> Procedure {
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
        })
}

/// Btrfs's own account of the space on `fs`, when its top level is mounted.
fn space(tables: &Tables, fs: &BtrfsTable) -> Option<Procedure> {
    let top = fs
        .subvolumes
        .iter()
        .find(|s| s.name == "(top level)")
        .and_then(|s| s.mountpoint.clone())?;
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
    Some(space)
}

/// Compression where it applies and No_COW where it is set.
fn compression(tables: &Tables, measured: Option<&Measured>) -> Procedure {
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
                plan::figure_text(*saved)
            ));
        }
    }
    compression
}

/// TRIM reaches the disk, and fstrim frees space.
fn trim(subject: &Subject, tables: &Tables, measured: Option<&Measured>) -> Procedure {
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
                plan::bytes(*freed as u64)
            ));
        }
    }
    trim
}

/// Across a reboot: the root is wiped, /persist and the identity are kept.
fn wipe_across_reboot(subject: &Subject, facts: &HostFacts, n: &Names) -> Procedure {
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
    wipe
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
