//! What the mount rules (`btrfs`, `mount`) both ask of a mount: which mount
//! of a filesystem decides its options, and what a mount that fails means.

use super::Model;
use layout::Mount;

/// Whether `mount` is the one whose filesystem-wide options take effect.
pub(super) fn decides(model: &Model, mount: &Mount) -> bool {
    model
        .effective
        .get(&mount.mountpoint)
        .is_some_and(|e| e.decided_by == mount.mountpoint)
}

/// What a mount that fails means for the machine.
pub(super) fn consequence(mount: &Mount) -> String {
    let boot = if mount.mountpoint == "/" {
        "the initrd cannot mount the root, so the machine does not boot".to_owned()
    } else if mount.needed_for_boot {
        format!(
            "the initrd cannot mount {} (neededForBoot), so the machine does not boot",
            mount.mountpoint
        )
    } else if mount.options.iter().any(|o| o == "nofail") {
        format!("{} is not mounted at boot (nofail)", mount.mountpoint)
    } else {
        format!(
            "{} is not mounted at boot, local-fs.target fails and systemd enters emergency mode",
            mount.mountpoint
        )
    };
    format!("disko's mount step fails during the install first, and once installed {boot}")
}
