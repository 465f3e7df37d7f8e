//! §4 of the checklist: the ways back, from the mildest to the most drastic.

use crate::hosts::Subject;
use crate::layout::impermanence::PERSIST_MOUNTPOINT;
use crate::report::Lifecycle;

use super::{
    local, local_to, names, procedure, reboot, sudo, Expect, Need, Procedure, SNAPSHOTS_MOUNTPOINT,
};
use crate::checklist::facts::{HostFacts, Where};

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
