//! The deployment steps (§2), and what vm-test measured, summed up for the
//! checklist. The verification and the rollback plan are in `procedures`.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::hosts::Subject;
use crate::results::{VmTestRequest, VmTestResults};
use layout::impermanence::PERSIST_MOUNTPOINT;
use layout::size::human;

use super::facts::{HostFacts, Where};
use super::procedures::{local, local_to, names, procedure, rescue, sudo, Expect, Need, Procedure};

/// The values the user fills in.
pub const PLACEHOLDERS: &[(&str, &str)] = &[
    ("<IP>", "the server's public IPv4 address"),
    (
        "<server>",
        "the server's name or ID in Hetzner Cloud (for `hcloud`)",
    ),
    ("<key>", "the name of your SSH key in Hetzner Cloud"),
];

/// The roadmap's rotation budget: "Impermanence rotation: <10 seconds per boot".
const MAX_ROTATION_MS: f64 = 10_000.0;
/// The roadmap's compression threshold: "Compression ratios > 30%".
const MIN_STORE_SAVING_PERCENT: f64 = 30.0;

/// What vm-test measured, as the checklist shows it: per boot, and the
/// figures the roadmap sets thresholds for. Every figure stays in `figures`
/// (the JSON document); the Markdown shows the summary.
#[derive(Debug, Clone, Serialize)]
pub struct Measured {
    /// `vm-test.pass.json` (the proof) or `vm-test.json` (the last run).
    pub file: String,
    pub revision: Option<String>,
    pub finished_at: String,
    pub passed: bool,
    pub backend: String,
    pub accelerator: String,
    pub kernel: String,
    pub disk_bytes: u64,
    pub wall_ms: u64,
    pub requested: VmTestRequest,
    pub boots: Vec<BootSummary>,
    pub thresholds: Vec<Threshold>,
    pub figures: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BootSummary {
    pub number: u32,
    pub kind: String,
    pub wall_ms: u64,
    pub passed: bool,
    pub checks_passed: usize,
    pub checks: usize,
    /// The rollback's time at this boot, when it ran.
    pub rotation_ms: Option<f64>,
}

/// A roadmap threshold and what vm-test measured for it.
#[derive(Debug, Clone, Serialize)]
pub struct Threshold {
    pub roadmap: &'static str,
    pub measured: String,
    pub met: bool,
}

impl Measured {
    pub fn new(file: &str, results: &VmTestResults) -> Measured {
        let figure = |name: &str| results.figures.get(name).copied();
        let boots: Vec<BootSummary> = results
            .boots
            .iter()
            .map(|b| {
                let checks: Vec<_> = results
                    .checks
                    .iter()
                    .filter(|c| c.boot == b.number)
                    .collect();
                BootSummary {
                    number: b.number,
                    kind: b.kind.clone(),
                    wall_ms: b.wall_ms,
                    passed: b.passed,
                    checks_passed: checks.iter().filter(|c| c.passed).count(),
                    checks: checks.len(),
                    rotation_ms: figure(&format!("rotation_ms.boot{}", b.number)),
                }
            })
            .collect();
        let mut thresholds = Vec::new();
        if let Some(saved) = figure("compression.@nix.percent") {
            thresholds.push(Threshold {
                roadmap: "compression saves > 30 % on /nix",
                measured: format!("{}% saved", figure_text(saved)),
                met: saved > MIN_STORE_SAVING_PERCENT,
            });
        }
        let rotations: Vec<f64> = boots.iter().filter_map(|b| b.rotation_ms).collect();
        if let Some(slowest) = rotations.iter().copied().reduce(f64::max) {
            thresholds.push(Threshold {
                roadmap: "impermanence rotation < 10 s per boot",
                measured: format!(
                    "slowest {} ms over {} rotation(s)",
                    figure_text(slowest),
                    rotations.len()
                ),
                met: slowest < MAX_ROTATION_MS,
            });
        }
        if let Some(freed) = figure("trim.freed_bytes") {
            thresholds.push(Threshold {
                roadmap: "TRIM reaches the disk",
                measured: format!("{} given back to the disk image", bytes(freed as u64)),
                met: freed > 0.0,
            });
        }
        if let (Some(survived), Some(total)) =
            (figure("power_cuts.survived"), figure("power_cuts.total"))
        {
            thresholds.push(Threshold {
                roadmap: "the rollback survives a power cut",
                measured: format!(
                    "{}/{} power cuts survived",
                    figure_text(survived),
                    figure_text(total)
                ),
                met: survived == total && total > 0.0,
            });
        }
        Measured {
            file: file.to_owned(),
            revision: results.header.revision.commit.clone(),
            finished_at: results.header.finished_at.clone(),
            passed: results.header.passed,
            backend: results.backend.clone(),
            accelerator: results.accelerator.clone(),
            kernel: results.kernel.clone(),
            disk_bytes: results.disk_bytes,
            wall_ms: results.wall_ms,
            requested: results.requested.clone(),
            boots,
            thresholds,
            figures: results.figures.clone(),
        }
    }
}

/// `47`, `0.31`, `1073741824`: figures without float noise.
pub fn figure_text(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{}", value as i64)
    } else {
        format!("{value:.1}")
    }
}

/// `41.0 s` for durations.
pub fn seconds(ms: u64) -> String {
    format!("{:.1} s", ms as f64 / 1000.0)
}

/// Bytes as the checklist prints them.
pub fn bytes(value: u64) -> String {
    format!("{value} B ({})", human(value))
}

/// What machine.nix says about the server's addresses, in words.
fn server_kind(machine: &crate::hosts::Machine) -> String {
    let ipv6 = match &machine.ipv6_address {
        Some(address) => format!("IPv6 {address}"),
        None => "no IPv6 (ipv6Address = null)".to_owned(),
    };
    match machine.public_ipv4 {
        Some(false) => format!("IPv6 only (publicIpv4 = false), {ipv6}"),
        Some(true) => format!("a public IPv4 (publicIpv4 = true) and {ipv6}"),
        None => format!("publicIpv4 not set (taken as true) and {ipv6}"),
    }
}

/// §2: from the facts in machine.nix to the first login.
pub fn deployment(subject: &Subject, facts: &HostFacts) -> Vec<Procedure> {
    let tables = subject.tables();
    let n = names(&tables);
    let attribute = subject.flake_attribute();
    let admin = &facts.admin_user;
    let disks = disks(subject);
    let anywhere = format!(
        "nix run github:nix-community/nixos-anywhere -- --flake .#{attribute} --target-host root@<IP>"
    );
    let mut steps = Vec::new();

    // The repository cannot know the admin's key or the server's IPv6 address.
    steps.extend(own_facts(subject, facts));

    steps.push(backup(subject, facts));

    steps.push(
        procedure("deploy.rescue", "Boot the Hetzner rescue system")
            .needs(Need::Hetzner)
            .note("Rescue mode applies at the next boot and switches itself off once used (or after 60 minutes unused). The Cloud Console does the same: the server, Rescue, Enable rescue & power cycle.")
            .note("`hcloud server reset` cuts the power and starts the server again, which works whatever state it is in; `hcloud server reboot` only asks the running system (ACPI), which a hung or half-installed one ignores.")
            .note("The rescue system has its own SSH host key, so ssh would refuse it as a changed key: forget the old one first.")
            .run(local("hcloud server enable-rescue --type linux64 --ssh-key <key> <server>"))
            .run(local("hcloud server reset <server>"))
            .run(local("ssh-keygen -R <IP>")),
    );

    steps.push(machine(subject, facts));

    steps.push(
        procedure("deploy.install", "Install with nixos-anywhere (this erases the disk)")
            .note("nixos-anywhere kexecs the rescue system into a NixOS installer, runs disko (unmount, wipe, partition, format, mount), installs the system and reboots.")
            .note(format!(
                "`--target-host root@<IP>` is the rescue system (and then the installer), where root logs in with your Hetzner key. The installed system lets nobody in as root (PermitRootLogin {:?}, {} root key(s)): afterwards you log in as {admin}.",
                facts.permit_root_login, facts.root_keys
            ))
            .note("Add `--build-on remote` when this machine cannot build x86_64-linux (macOS, aarch64): the closure is then built on the server.")
            .note(format!(
                "Files to seed go through `--extra-files <dir>`, and must sit below `<dir>{PERSIST_MOUNTPOINT}/`: anything else lands in the root, which the first boot moves to {}.",
                n.old_roots
            ))
            .run(local_to(Where::Rescue, anywhere.clone()))
            .shows("nixos-anywhere ends with the installation done and the server rebooting"),
    );

    steps.push(
        procedure("deploy.install-failed", "If nixos-anywhere stops midway")
            .needs(Need::Hetzner)
            .note("Where it stopped decides the state of the disk; its last lines say which phase ran (kexec, disko, install, reboot). Add `--debug` to see every command.")
            .note("- Before disko (building, copying, kexec): the disk is untouched. The server may now run the installer from RAM, with its own host key.")
            .note(format!(
                "- During or after disko: {} is wiped and partly or wholly formatted. Nothing on it can be recovered: only what step 2.2 saved (the Hetzner snapshot, persist-<stamp>.btrfs.zst) brings data back.",
                disks.join(" and ")
            ))
            .note("- During install or reboot: the disk holds the new layout, maybe an incomplete system; the server may not boot.")
            .note("Either way, go back to the rescue system and run the same command again: nixos-anywhere starts over, and disko destroys whatever is on the disk before it partitions again.")
            .run(local("hcloud server enable-rescue --type linux64 --ssh-key <key> <server>"))
            .run(local("hcloud server reset <server>"))
            .run(local("ssh-keygen -R <IP>"))
            .run(local_to(Where::Rescue, anywhere))
            .then("When it fails again at the same place, fix the cause first (the build, the disk size, the network) rather than retrying: each attempt wipes the disk again."),
    );

    steps.push(
        procedure("deploy.login", format!("Log in to the new system as {admin}"))
            .note(format!(
                "The new system has new SSH host keys (kept in {PERSIST_MOUNTPOINT} from now on), and root cannot log in: {admin} can, with the key from machine.nix."
            ))
            .run(local("ssh-keygen -R <IP>"))
            .run(local_to(Where::Server, facts.ssh_server()))
            .run(sudo("-n true"))
            .shows(format!("(nothing: {admin} is in wheel and sudo asks no password)"))
            .expect(Expect::Empty)
            .then(format!(
                "Commands marked `server$` below run there as {admin}; each one that needs root says `sudo` itself."
            )),
    );
    steps
}

/// The devices of the host's disks.
fn disks(subject: &Subject) -> Vec<String> {
    subject
        .layout
        .disks
        .iter()
        .map(|d| d.device.clone())
        .collect()
}

/// deploy.facts: what only the admin knows, in machine.nix.
fn own_facts(subject: &Subject, facts: &HostFacts) -> Option<Procedure> {
    let host = &subject.host;
    let admin = &facts.admin_user;
    let machine_file = subject
        .sources
        .iter()
        .find(|s| s.ends_with("machine.nix"))?;
    Some(
        procedure("deploy.facts", format!("Give the server its own facts in {machine_file}"))
            .note(format!("adminSshKeys: the SSH public key of {admin}, the one login. The server has no passwords, so the build refuses an empty list (check reports HOST001)."))
            .note(format!("Which kind of server is it? The Cloud Console shows it (the server, Networking). With a public IPv4 (Hetzner's default): publicIpv4 = true; the IPv4 comes by DHCP. IPv6 only (created without a public IPv4): publicIpv4 = false, and ipv6Address must be set, or the server comes up with no address at all (check refuses it: HOST005; the build too). {machine_file} now says: {}.", server_kind(&subject.machine)))
            .note("ipv6Address: the address of the server's /64 from the Cloud Console (Networking), with its prefix, e.g. \"2a01:4f8:c012:3456::1/64\"; null keeps the server on IPv4.")
            .run(local(format!(
                "nix-instantiate --eval --strict --json -E '(import ./{machine_file}).adminSshKeys'"
            )))
            .shows("[\"ssh-ed25519 AAAA… you@laptop\"]   (at least one key)")
            .expect(Expect::NoLine { pattern: "[]".to_owned() })
            .note(format!("Then commit, and run the gates again: {machine_file} feeds `check`, the NixOS evaluation and `vm-test`, so the edit made their results STALE."))
            .run(local(format!("git commit -m '{host}: the admin key and the IPv6 address' {machine_file}")))
            .run(local(format!("cargo xtask check --host {host}")))
            .run(local(format!("cargo xtask check --mode flake --host {host}")))
            .run(local(format!("cargo xtask vm-test --host {host}")))
            .run(local(format!("cargo xtask deploy-checklist --host {host}")))
            .shows("the gates, all PASS, and READY (exit code 0)"),
    )
}

/// deploy.backup: what must outlive the install, saved first.
fn backup(subject: &Subject, facts: &HostFacts) -> Procedure {
    let n = names(&subject.tables());
    let disks = disks(subject);
    let saved = format!("{}/{}/{}.saved-<stamp>", n.top, n.snapshots, n.persist);
    procedure("deploy.backup", "Save what must outlive the install (an existing server)")
        .needs(Need::Hetzner)
        .note(format!(
            "Installing erases {} completely: the partition table, every filesystem, {PERSIST_MOUNTPOINT} and every snapshot on the disk. Skip this step on a new, empty server.",
            disks.join(" and ")
        ))
        .note("First a Hetzner snapshot of the whole server: it keeps everything, whatever the server runs, and `hcloud server rebuild --image <id> <server>` brings it back (snapshots are billed by size; delete it once the new system is settled).")
        .run(local("hcloud server create-image --type snapshot --description pre-install <server>"))
        .note(format!(
            "If the server already runs this configuration, also copy {PERSIST_MOUNTPOINT} off it (a read-only snapshot under a name no earlier save used, streamed to your machine and checked): the rollback plan (§4.5) restores it into the new system."
        ))
        .parameter("<stamp>", "the time of this save, as `date -u +%Y%m%dT%H%M%SZ` prints it (e.g. 20260101T120000Z): the snapshot's and the file's names carry it, so they cannot exist from an earlier save")
        .run(local_to(Where::Server, facts.ssh_server_sudo(&format!("test ! -e {saved}"))))
        .run(local_to(Where::Server, facts.ssh_server_sudo(&format!(
            "btrfs subvolume snapshot -r {top}/{persist} {saved}",
            top = n.top,
            persist = n.persist,
        ))))
        .run(local_to(Where::Server, format!(
            "{} | zstd > persist-<stamp>.btrfs.zst",
            facts.ssh_server_sudo(&format!("btrfs send {saved}"))
        )))
        .run(local("zstd -t persist-<stamp>.btrfs.zst"))
        .shows("no error: the file is a complete zstd frame")
        .run(local("zstd -dc persist-<stamp>.btrfs.zst | head -c 12"))
        .shows("btrfs-stream   (a send stream: a failed ssh leaves an empty stream that passes `zstd -t`, not this)")
        .expect(Expect::Line { pattern: "btrfs-stream".to_owned() })
}

/// deploy.machine: the firmware and the disk sizes, seen from the rescue system.
fn machine(subject: &Subject, facts: &HostFacts) -> Procedure {
    let firmware: Vec<String> = subject
        .machine
        .firmware
        .iter()
        .map(|f| f.to_ascii_uppercase())
        .collect();
    let firmware_text = if firmware.is_empty() {
        "BIOS or UEFI".to_owned()
    } else {
        firmware.join(" or ")
    };
    let mut check_machine = procedure(
        "deploy.machine",
        "Check the firmware and the disk in the rescue system",
    )
    .note(format!(
        "Log in to the rescue system as root (the only place root logs in), with the key you gave Hetzner. The layout boots with {firmware_text}: it has a BIOS boot partition for GRUB on BIOS and an ESP for UEFI."
    ))
    .run(local_to(Where::Rescue, facts.ssh_rescue()))
    .run(rescue("[ -d /sys/firmware/efi ] && echo UEFI || echo BIOS"));
    check_machine = if firmware.is_empty() {
        check_machine.shows("BIOS or UEFI")
    } else {
        let mut step = check_machine.shows(firmware_text.clone());
        if firmware.len() == 1 {
            step = step.expect(Expect::Line {
                pattern: firmware[0].clone(),
            });
        }
        step
    };
    for disk in &subject.layout.disks {
        check_machine = check_machine.run(rescue(format!(
            "lsblk -b -d -n -o NAME,SIZE {}",
            disk.device
        )));
        match subject.disk_sizes.get(&disk.key) {
            Some(bytes) => {
                let line = format!("{} {bytes}", disk.device.trim_start_matches("/dev/"));
                check_machine = check_machine
                    .shows(line.clone())
                    .expect(Expect::Line { pattern: line })
            }
            None => {
                check_machine = check_machine.shows(format!(
                    "{}: any size (machine.nix gives none, so no geometry was checked)",
                    disk.device
                ))
            }
        }
    }
    check_machine = check_machine.then(
        "If a size differs, stop: run `cargo xtask check --disk-size <bytes>` with the size shown and review the partition table before going on.",
    );
    check_machine
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deploy_checklist::facts::testing::host_facts;
    use crate::deploy_checklist::gates::testing::{vm_results, HEAD};
    use crate::deploy_checklist::procedures::{rollback, verification};
    use crate::hosts::testing::host_subject;

    pub fn all_text(steps: &[Procedure]) -> String {
        let mut out = String::new();
        for s in steps {
            out.push_str(&s.title);
            out.push('\n');
            for c in &s.commands {
                out.push_str(&c.line);
                out.push('\n');
                for e in &c.shows {
                    out.push_str(e);
                    out.push('\n');
                }
            }
            for note in s.notes.iter().chain(&s.afterwards) {
                out.push_str(note);
                out.push('\n');
            }
        }
        out
    }

    #[test]
    fn deployment_uses_the_flake_attribute_the_admin_and_the_real_disk_size() {
        let steps = deployment(&host_subject(), &host_facts());
        let text = all_text(&steps);
        assert!(text.contains(
            "nix run github:nix-community/nixos-anywhere -- --flake .#hetzner-vps --target-host root@<IP>"
        ));
        assert!(text.contains("lsblk -b -d -n -o NAME,SIZE /dev/sda\n"));
        assert!(text.contains("sda 480000000000\n"));
        assert!(text.contains("[ -d /sys/firmware/efi ] && echo UEFI || echo BIOS"));
        assert!(text.contains(
            "ssh hbohlen@<IP> 'sudo btrfs send /btrfs_tmp/@snapshots/@persist.saved-<stamp>' | zstd"
        ));
        assert!(text.contains("hcloud server create-image --type snapshot"));
        // It asks which kind of server it is, and says what machine.nix says.
        assert!(text.contains("Which kind of server is it?"), "{text}");
        assert!(
            text.contains(
                "now says: a public IPv4 (publicIpv4 = true) and no IPv6 (ipv6Address = null)"
            ),
            "{text}"
        );
        assert!(text.contains("cargo xtask check --mode flake --host hetzner-cloud"));
        assert!(text.contains(
            "nix-instantiate --eval --strict --json -E '(import ./hosts/servers/hetzner-cloud/machine.nix).adminSshKeys'"
        ), "{text}");
        assert!(
            !text.contains("ssh root@<IP> '"),
            "no root command on the installed server: {text}"
        );
        let ids: Vec<&str> = steps.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "deploy.facts",
                "deploy.backup",
                "deploy.rescue",
                "deploy.machine",
                "deploy.install",
                "deploy.install-failed",
                "deploy.login"
            ]
        );
    }

    #[test]
    fn verification_expects_what_the_model_says() {
        let measured = Measured::new("vm-test.pass.json", &vm_results(HEAD, true));
        let steps = verification(&host_subject(), &host_facts(), Some(&measured));
        let text = all_text(&steps);
        assert!(text.contains(
            "/nix  /dev/sda4[/@nix]  noatime,compress=zstd:1,discard=async,space_cache=v2,ssd,subvol=/@nix"
        ), "{text}");
        assert!(text.contains("/btrfs_tmp  /dev/sda4  noatime,compress=zstd:1,discard=async,space_cache=v2,ssd,subvol=/"), "{text}");
        assert!(text.contains("/var/lib/tailscale  /dev/sda4[/@persist/var/lib/tailscale]"));
        assert!(text.contains("ID <n> gen <n> top level 5 path @old_roots\n"));
        assert!(
            text.contains("sudo cryptsetup status dev-disk-byx2dpartlabel-diskx2dmainx2dswap\n")
        );
        assert!(text.contains("device: /dev/sda3\n"));
        assert!(text.contains("size: 67108864 sectors\n"));
        assert!(text.contains("/dev/dm-<n> partition 34359734272\n"));
        assert!(text.contains("/dev/sda2  with OPTIONS including fmask=0177,dmask=0077"));
        assert!(text.contains("sudo lsattr -d /var/lib/containers\n"));
        assert!(text.contains("sudo compsize -x /nix\n"));
        assert!(text.contains("TOTAL with Perc at most 70%"));
        assert!(text.contains("vm-test measured 47% saved"));
        assert!(text.contains("sudo fstrim -v /btrfs_tmp\n"));
        assert!(text.contains("sudo systemctl --failed --no-legend --plain\n"));
        assert!(
            text.contains(
                "sudo systemctl is-active btrfs-rollback-status.service btrbk-persist.timer\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "sudo systemctl show -p Id -p ActiveState 'btrfs-scrub[-@]btrfs_tmp.timer'\n"
            ),
            "{text}"
        );
        assert!(text.contains("sudo btrfs filesystem usage -b /btrfs_tmp\n"));
        assert!(text.contains("sudo sh -c 'sha256sum /etc/machine-id /etc/ssh/ssh_host_ed25519_key.pub /etc/ssh/ssh_host_rsa_key.pub > /persist/identity.sha256'\n"), "{text}");
        assert!(text.contains("/etc/ssh/ssh_host_ed25519_key.pub: OK\n"));
        assert!(text.contains("sudo cat /run/btrfs-rollback/status\n"));
        for step in &steps {
            for command in &step.commands {
                if command.at == Where::Server {
                    assert!(command.line.starts_with("sudo "), "{}", command.line);
                }
            }
        }
    }

    #[test]
    fn the_rollback_plan_covers_every_way_back() {
        let steps = rollback(&host_subject(), &host_facts());
        let text = all_text(&steps);
        assert!(text.contains("NixOS - All configurations"));
        assert!(text.contains("sudo nixos-rebuild switch --rollback\n"));
        assert!(text.contains(
            "sudo cp -a --reflink=auto /btrfs_tmp/@old_roots/<old-root>/<path> /persist/<path>"
        ));
        assert!(text.contains("sudo btrfs subvolume snapshot /btrfs_tmp/@snapshots/<snapshot> /btrfs_tmp/@persist.restored"));
        assert!(text.contains("sudo mv -T /btrfs_tmp/@persist /btrfs_tmp/@persist.replaced\n"));
        assert!(text.contains("| ssh hbohlen@<IP> 'sudo btrfs receive /btrfs_tmp/@snapshots'"));
        assert!(text.contains("old roots, deleted after 30 days"));
        assert!(text.contains("--target-host hbohlen@<IP> --sudo"));
        let ids: Vec<&str> = steps.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "rollback.previous-generation",
                "rollback.switch-back",
                "rollback.file-from-old-root",
                "rollback.restore-persist",
                "rollback.reinstall",
                "rollback.rescue-save"
            ]
        );
        // Names that cannot exist yet, checked before they are used; the
        // identity carried into the new system; a reset, never a reboot.
        assert!(text.contains("sudo test ! -e /btrfs_tmp/@persist.restored\n"));
        assert!(text.contains("sudo test ! -e /btrfs_tmp/@snapshots/@persist.saved-<stamp>\n"));
        assert!(text.contains("sudo btrfs subvolume snapshot -r /btrfs_tmp/@persist /btrfs_tmp/@snapshots/@persist.saved-<stamp>\n"));
        assert!(text.contains("zstd -dc persist-<stamp>.btrfs.zst | head -c 12\n"));
        assert!(text.contains("--extra-files extra-<stamp> --target-host root@<IP>"));
        assert!(text.contains("ssh hbohlen@<IP> 'sudo tar -C /persist -c etc/machine-id etc/ssh' | tar -x -C extra-<stamp>/persist"));
        assert!(text.contains("hcloud server reset <server>\n"));
        assert!(!text.contains("hcloud server reboot <server>\n"));
        assert!(text.contains("@caddy (/var/lib/caddy)"), "{text}");
        assert!(text.contains("mount -o subvolid=5 /dev/sda4 /mnt\n"));
        assert!(text.contains("ssh root@<IP> 'btrfs send /mnt/@snapshots/@persist.saved-<stamp>' | zstd > persist-<stamp>.btrfs.zst"));
    }

    #[test]
    fn the_summary_holds_the_roadmaps_figures() {
        let measured = Measured::new("vm-test.pass.json", &vm_results(HEAD, true));
        assert_eq!(measured.boots.len(), 2);
        assert_eq!(measured.boots[1].rotation_ms, Some(310.0));
        assert_eq!(
            (measured.boots[0].checks_passed, measured.boots[0].checks),
            (1, 1)
        );
        let roadmap: Vec<(&str, bool)> = measured
            .thresholds
            .iter()
            .map(|t| (t.roadmap, t.met))
            .collect();
        assert_eq!(
            roadmap,
            [
                ("compression saves > 30 % on /nix", true),
                ("impermanence rotation < 10 s per boot", true),
                ("TRIM reaches the disk", true)
            ]
        );
        assert_eq!(measured.thresholds[0].measured, "47% saved");
    }

    #[test]
    fn figures_print_without_noise() {
        assert_eq!(figure_text(47.0), "47");
        assert_eq!(figure_text(0.3125), "0.3");
        assert_eq!(seconds(41_000), "41.0 s");
    }
}
