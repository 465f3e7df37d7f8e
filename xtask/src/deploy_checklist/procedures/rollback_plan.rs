//! §4 of the checklist: the ways back, from the mildest to the most drastic.

use crate::hosts::Subject;
use crate::report::Lifecycle;
use layout::impermanence::PERSIST_MOUNTPOINT;

use super::{
    kernel_node, local, local_to, names, procedure, reboot, rescue, sudo, Expect, Need, Procedure,
    SNAPSHOTS_MOUNTPOINT,
};
use crate::deploy_checklist::facts::{HostFacts, Where};

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
            .then("The last command, run once the previous generation is up, makes it the default for later boots.")
            .then("If stage 1 stops instead (the console shows emergency mode and \"Cannot open access to console, the root account is locked\", or the root rollback timed out after 3 minutes): there is no shell to use, on purpose. Reset once: the next boot's rollback creates a @root that a stopped run left missing. If it stops again, the Hetzner rescue system is the way in (§4.5's first two commands boot it; docs/troubleshooting.md, \"The rollback hangs or times out\")."),
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
            .parameter("<snapshot>", format!("a snapshot of {persist} in {top}/{snapshots}, e.g. {persist}.20260101T1200 (btrbk's, hourly; the newest is listed last) or one taken by hand"))
            .parameter("<path>", format!("a file below {PERSIST_MOUNTPOINT} to verify the restore with, without the leading /"))
            .note(format!(
                "Snapshots of {persist} live in {top}/{snapshots}/ (mounted at {SNAPSHOTS_MOUNTPOINT}). A single file: copy it back as in the previous step, from {SNAPSHOTS_MOUNTPOINT}/<snapshot>/<path>. The whole subvolume: make a writable snapshot of the snapshot, swap it in by renaming (the running system keeps the old one mounted until the reboot), reboot."
            ))
            .note(format!(
                "The `test ! -e` lines stop the procedure when a name is taken (a leftover of an earlier attempt): `btrfs subvolume snapshot` would put the new snapshot inside an existing {persist}.restored, and the swap would bring back the stale one. Look at the leftover, delete it with `sudo btrfs subvolume delete`, and start again. `mv -T` refuses to move into an existing directory for the same reason."
            ))
            .run(sudo(format!("ls {top}/{snapshots}")))
            .run(sudo(format!("test ! -e {top}/{persist}.restored")))
            .run(sudo(format!("test ! -e {top}/{persist}.replaced")))
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
                "Delete {persist}.replaced (the last command) only once the restored {PERSIST_MOUNTPOINT} is right. docs/snapshots.md has the details; when the server no longer boots, step 4.6 saves {persist} from the rescue system."
            )),
        reinstall(subject, facts),
        rescue_save(subject, facts),
    ]
}

/// `<stamp>`: what makes the names of one save new.
const STAMP: &str = "<stamp>";
const STAMP_MEANING: &str = "the time of this save, as `date -u +%Y%m%dT%H%M%SZ` prints it on your machine (e.g. 20260101T120000Z): the names below carry it, so they cannot exist from an earlier save or attempt";

/// The subvolumes the layout mounts besides the root, /nix, /persist and
/// the snapshots, with their mountpoints: what a reinstall erases and
/// nothing brings back (@caddy, @containers, @log). vm-test's reinstall
/// drill checks that they come back empty.
pub fn erased_by_reinstall(subject: &Subject) -> Vec<(String, String)> {
    let tables = subject.tables();
    let n = names(&tables);
    tables
        .filesystems
        .iter()
        .flat_map(|f| f.subvolumes.iter())
        .filter(|s| s.name != "(top level)")
        .filter_map(|s| s.mountpoint.clone().map(|mp| (s.name.clone(), mp)))
        .filter(|(name, mp)| {
            ![n.persist.as_str(), n.snapshots.as_str()].contains(&name.as_str())
                && !matches!(mp.as_str(), "/" | "/nix")
        })
        .collect()
}

fn also_erased(subject: &Subject) -> Vec<String> {
    erased_by_reinstall(subject)
        .iter()
        .map(|(name, mp)| format!("{name} ({mp})"))
        .collect()
}

/// The files that make the machine's identity, below /persist: they go
/// into the new system with nixos-anywhere's `--extra-files`.
const IDENTITY: &str = "etc/machine-id etc/ssh";

fn reinstall(subject: &Subject, facts: &HostFacts) -> Procedure {
    let tables = subject.tables();
    let n = names(&tables);
    let (top, persist, snapshots) = (&n.top, &n.persist, &n.snapshots);
    let attribute = subject.flake_attribute();
    let saved = format!("{top}/{snapshots}/{persist}.saved-{STAMP}");
    let file = format!("persist-{STAMP}.btrfs.zst");
    let extra = format!("extra-{STAMP}");
    procedure("rollback.reinstall", format!("Nothing else works: reinstall, keeping {PERSIST_MOUNTPOINT} and the machine's identity"))
        .needs(Need::Reinstall)
        .needs(Need::Hetzner)
        .parameter(STAMP, STAMP_MEANING)
        .parameter("<path>", format!("a file below {PERSIST_MOUNTPOINT} to verify the restore with, without the leading /"))
        .note(format!(
            "Save {PERSIST_MOUNTPOINT} off the server while it still runs (a read-only snapshot under a new name, streamed to your machine and checked), and the machine's identity ({PERSIST_MOUNTPOINT}/etc/machine-id and the SSH host keys) into {extra}/{}: nixos-anywhere's `--extra-files {extra}` puts them into the new system, so it answers with the same host keys and machine-id from its first boot. Then install again, receive the saved copy and swap it in. When the server no longer boots, step 4.6 saves the same from the rescue system; go on here from `hcloud server enable-rescue`.",
            PERSIST_MOUNTPOINT.trim_start_matches('/')
        ))
        .note(format!(
            "The reinstall erases the whole disk: besides {persist}, also {} and every snapshot in {snapshots}. They come back empty: Caddy requests its certificates again (mind Let's Encrypt's rate limits), container images are pulled again, the old journal is gone. To keep one of them, save it like {persist}: a read-only snapshot of it under a new name, `btrfs send` it to your machine, and receive it after the install.",
            also_erased(subject).join(", ")
        ))
        .run(sudo(format!("test ! -e {saved}")))
        .run(sudo(format!("btrfs subvolume snapshot -r {top}/{persist} {saved}")))
        .run(local_to(Where::Server, format!(
            "{} | zstd > {file}",
            facts.ssh_server_sudo(&format!("btrfs send {saved}"))
        )))
        .run(local(format!("zstd -t {file}")))
        .run(local(format!("zstd -dc {file} | head -c 12")))
        .shows("btrfs-stream   (a send stream: an empty or broken stream passes `zstd -t` but not this)")
        .expect(Expect::Line { pattern: "btrfs-stream".to_owned() })
        .run(local(format!("mkdir -p {extra}/persist")))
        .run(local_to(Where::Server, format!(
            "{} | tar -x -C {extra}/persist",
            facts.ssh_server_sudo(&format!("tar -C {PERSIST_MOUNTPOINT} -c {IDENTITY}"))
        )))
        .run(local("hcloud server enable-rescue --type linux64 --ssh-key <key> <server>"))
        .run(local("hcloud server reset <server>"))
        .run(local("ssh-keygen -R <IP>"))
        .run(local_to(Where::Rescue, format!(
            "nix run github:nix-community/nixos-anywhere -- --flake .#{attribute} --extra-files {extra} --target-host root@<IP>"
        )).installing())
        .shows("the server installed afresh and rebooted (deployment steps 2.3 to 2.7), with the old host keys")
        .run(local("ssh-keygen -R <IP>"))
        .run(sudo(format!("test ! -e {saved}")))
        .run(local_to(Where::Server, format!(
            "zstd -dc {file} | {}",
            facts.ssh_server_sudo(&format!("btrfs receive {top}/{snapshots}"))
        )))
        .shows(format!("At subvol {persist}.saved-{STAMP}"))
        .run(sudo(format!("test ! -e {top}/{persist}.restored")))
        .run(sudo(format!("test ! -e {top}/{persist}.fresh-install")))
        .run(sudo(format!("btrfs subvolume snapshot {saved} {top}/{persist}.restored")))
        .run(sudo(format!("mv -T {top}/{persist} {top}/{persist}.fresh-install")))
        .run(sudo(format!("mv -T {top}/{persist}.restored {top}/{persist}")))
        .run(reboot())
        .run(sudo(format!("cmp {saved}/<path> {PERSIST_MOUNTPOINT}/<path>")))
        .shows(format!("(nothing: {PERSIST_MOUNTPOINT} is the saved one again)"))
        .expect(Expect::Empty)
        .run(sudo(format!("btrfs subvolume delete {top}/{persist}.fresh-install")))
        .then(format!(
            "Delete {persist}.fresh-install (the last command) only once the restored {PERSIST_MOUNTPOINT} is right. The received {snapshots}/{persist}.saved-{STAMP} stays as a read-only copy until you delete it the same way; keep {file} and {extra} (it holds the host's private keys: keep it as safe as the server) until then."
        ))
}

fn rescue_save(subject: &Subject, facts: &HostFacts) -> Procedure {
    let tables = subject.tables();
    let n = names(&tables);
    let (persist, snapshots) = (&n.persist, &n.snapshots);
    let device = tables
        .filesystems
        .first()
        .and_then(|f| kernel_node(subject, &f.device))
        .unwrap_or_else(|| "<the Btrfs partition, e.g. /dev/sda4>".to_owned());
    let saved = format!("/mnt/{snapshots}/{persist}.saved-{STAMP}");
    let file = format!("persist-{STAMP}.btrfs.zst");
    let extra = format!("extra-{STAMP}");
    let _ = facts;
    procedure("rollback.rescue-save", format!("The server does not boot: save {PERSIST_MOUNTPOINT} from the rescue system, then reinstall"))
        .needs(Need::Hetzner)
        .needs(Need::RescueSystem)
        .parameter(STAMP, STAMP_MEANING)
        .note(format!(
            "A broken bootloader or root does not touch the data: the rescue system mounts the Btrfs top level at /mnt ({device}, `subvolid=5`), snapshots {persist} read-only under a new name and streams it to your machine, with the machine's identity. Then step 4.5 from `hcloud server enable-rescue` on, with the same <stamp> and {file}."
        ))
        .note(format!(
            "When {persist} itself is damaged, save the newest btrbk snapshot instead: `ls /mnt/{snapshots}` lists them (the newest last); snapshot that one instead of /mnt/{persist} (`btrfs subvolume snapshot -r /mnt/{snapshots}/<snapshot> {saved}`) and take the identity from it (`tar -C /mnt/{snapshots}/<snapshot> …`): the names stay those step 4.5 uses."
        ))
        .run(local("hcloud server enable-rescue --type linux64 --ssh-key <key> <server>"))
        .run(local("hcloud server reset <server>"))
        .run(local("ssh-keygen -R <IP>"))
        .run(local_to(Where::Rescue, facts.ssh_rescue()))
        .run(rescue(format!("mount -o subvolid=5 {device} /mnt")))
        .run(rescue(format!("ls /mnt/{snapshots}")))
        .run(rescue(format!("test ! -e {saved}")))
        .run(rescue(format!("btrfs subvolume snapshot -r /mnt/{persist} {saved}")))
        .run(local_to(Where::Rescue, format!("ssh root@<IP> 'btrfs send {saved}' | zstd > {file}")))
        .run(local(format!("zstd -t {file}")))
        .run(local(format!("zstd -dc {file} | head -c 12")))
        .shows("btrfs-stream")
        .expect(Expect::Line { pattern: "btrfs-stream".to_owned() })
        .run(local(format!("mkdir -p {extra}/persist")))
        .run(local_to(Where::Rescue, format!(
            "ssh root@<IP> 'tar -C /mnt/{persist} -c {IDENTITY}' | tar -x -C {extra}/persist"
        )))
        .then(format!(
            "Go on with step 4.5 from `hcloud server enable-rescue` (`hcloud server reset` starts the rescue system again, which does no harm), with the same <stamp>: the stream holds {persist}.saved-<stamp>, the name 4.5 receives."
        ))
}
