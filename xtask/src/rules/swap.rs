//! Swap is encrypted with a fresh random key at every boot, so nothing in it
//! outlives a reboot, and so it can never be resumed from.

use super::{Issue, Model};
use layout::findings::AttrPath;
use layout::{Content, Swap, Swapfile};

fn swaps<'a>(model: &'a Model) -> impl Iterator<Item = &'a Swap> {
    model
        .layout
        .contents()
        .filter_map(|(_, _, content)| match content {
            Content::Swap(swap) => Some(swap),
            _ => None,
        })
}

pub fn encrypted(model: &Model) -> Vec<Issue> {
    swaps(model)
        .filter(|swap| !swap.random_encryption)
        .map(|swap| {
            Issue::new(
                swap.path.join("randomEncryption"),
                "swap is not encrypted: memory of the running system (keys, secrets) reaches the disk in clear",
                "Set randomEncryption = true.",
            )
        })
        .collect()
}

pub fn no_resume_flag(model: &Model) -> Vec<Issue> {
    swaps(model)
        .filter(|swap| swap.random_encryption && swap.resume_device)
        .map(|swap| {
            Issue::new(
                swap.path.join("resumeDevice"),
                "swap is randomly encrypted and also a resume device: its key is gone at boot, so a hibernated image cannot be read",
                "Remove resumeDevice = true; hibernation needs swap with a persistent key (LUKS).",
            )
        })
        .collect()
}

pub fn no_boot_resume(model: &Model) -> Vec<Issue> {
    let Some(resume) = &model.layout.resume_device else {
        return Vec::new();
    };
    if !swaps(model).any(|swap| swap.random_encryption) {
        return Vec::new();
    }
    vec![Issue::new(
        AttrPath::new(["boot", "resumeDevice"]),
        format!("boot.resumeDevice is {resume:?} while swap is randomly encrypted: resume can never work"),
        "Remove boot.resumeDevice.",
    )]
}

/// Every Btrfs swap file, with the mountpoint of what holds it (`None`: not mounted).
fn swapfiles<'a>(model: &'a Model) -> Vec<(&'a Swapfile, Option<&'a str>)> {
    let mut files = Vec::new();
    for btrfs in model.layout.btrfs_filesystems() {
        for file in &btrfs.swapfiles {
            files.push((file, btrfs.mountpoint.as_deref()));
        }
        for subvolume in &btrfs.subvolumes {
            for file in &subvolume.swapfiles {
                files.push((file, subvolume.mountpoint.as_deref()));
            }
        }
    }
    files
}

pub fn swapfiles_encrypted(model: &Model) -> Vec<Issue> {
    swapfiles(model)
        .into_iter()
        .map(|(file, mountpoint)| {
            let device = format!("{}/{}", mountpoint.unwrap_or("<no mountpoint>").trim_end_matches('/'), file.file);
            Issue::new(
                file.path.clone(),
                format!(
                    "swap file {device} is not encrypted: disko hands it to NixOS as swapDevices = [ {{ device = \"{device}\"; }} ] without randomEncryption, so memory of the running system (keys, secrets) reaches the disk in clear"
                ),
                "Use a swap partition with randomEncryption = true (content = { type = \"swap\"; randomEncryption = true; }) instead of swap.<name> on Btrfs.",
            )
        })
        .collect()
}

pub fn swapfiles_mounted(model: &Model) -> Vec<Issue> {
    swapfiles(model)
        .into_iter()
        .filter(|(_, mountpoint)| mountpoint.is_none())
        .map(|(file, _)| {
            Issue::new(
                file.path.clone(),
                format!(
                    "swap file {:?} is on a subvolume (or top level) without a mountpoint: disko builds its swapDevices entry as \"${{mountpoint}}/{}\" and the evaluation fails (\"cannot coerce null to a string\"), so nothing is installed",
                    file.key, file.file
                ),
                "Give the subvolume that holds the swap file a mountpoint.",
            )
        })
        .collect()
}

/// disko creates a swap file with `btrfs filesystem mkswapfile` at
/// `<subvolume or top level>/<path>` and creates no directory for it: a path
/// with a directory in it fails ("ERROR: cannot create new swapfile: No such
/// file or directory", btrfs-progs 6.2 and 6.17) and the install stops.
pub fn swapfile_directories(model: &Model) -> Vec<Issue> {
    swapfiles(model)
        .into_iter()
        .filter_map(|(file, _)| {
            let relative = file.file.trim_start_matches('/');
            let (directory, _) = relative.rsplit_once('/')?;
            Some(Issue::new(
                file.path.clone(),
                format!(
                    "swap file {:?} is at {relative:?}, in directory {directory:?} that disko never creates: `btrfs filesystem mkswapfile` fails (\"cannot create new swapfile: No such file or directory\") and the install stops",
                    file.key
                ),
                "Put the swap file directly in its subvolume (path without `/`), e.g. a subvolume \"@swap\" mounted at /swap with swap.swapfile.",
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::rules::testing::*;

    #[test]
    fn unencrypted_swap() {
        let codes =
            codes_after(|e| partition(e, "swap")["content"]["randomEncryption"] = json!(false));
        assert_eq!(codes, vec!["SWAP001"]);
    }

    #[test]
    fn hibernation() {
        let codes = codes_after(|e| partition(e, "swap")["content"]["resumeDevice"] = json!(true));
        assert_eq!(codes, vec!["SWAP002"]);
        let codes = codes_after(|e| {
            e["layout"]["boot"] = json!({ "resumeDevice": "/dev/disk/by-partlabel/disk-main-swap" })
        });
        assert_eq!(codes, vec!["SWAP003"]);
    }

    #[test]
    fn btrfs_swapfiles_are_not_encrypted() {
        let findings = findings_after(|e| {
            btrfs(e)["subvolumes"]["@swap"] = json!({
                "mountpoint": "/.swapvol",
                "swap": { "swapfile": { "size": "8G" } }
            });
        });
        let codes: Vec<&str> = findings.iter().map(|f| f.code).collect();
        assert!(codes.contains(&"SWAP004"), "{findings:#?}");
        let swap = findings.iter().find(|f| f.code == "SWAP004").unwrap();
        assert!(swap.message.contains("/.swapvol/swapfile"), "{swap:?}");
        let codes = codes_after(|e| {
            btrfs(e)["subvolumes"]["@swap"] = json!({ "swap": { "swapfile": { "size": "8G" } } });
        });
        assert!(codes.contains(&"SWAP005"), "{codes:?}");
    }
}
