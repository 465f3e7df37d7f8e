//! Swap is encrypted with a fresh random key at every boot, so nothing in it
//! outlives a reboot, and so it can never be resumed from.

use super::{Context, Issue};
use crate::findings::AttrPath;
use crate::layout::{Content, Swap};

fn swaps<'a>(context: &'a Context) -> impl Iterator<Item = &'a Swap> {
    context
        .layout
        .contents()
        .filter_map(|(_, _, content)| match content {
            Content::Swap(swap) => Some(swap),
            _ => None,
        })
}

pub fn encrypted(context: &Context) -> Vec<Issue> {
    swaps(context)
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

pub fn no_resume_flag(context: &Context) -> Vec<Issue> {
    swaps(context)
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

pub fn no_boot_resume(context: &Context) -> Vec<Issue> {
    let Some(resume) = &context.layout.resume_device else {
        return Vec::new();
    };
    if !swaps(context).any(|swap| swap.random_encryption) {
        return Vec::new();
    }
    vec![Issue::new(
        AttrPath::new(["boot", "resumeDevice"]),
        format!("boot.resumeDevice is {resume:?} while swap is randomly encrypted: resume can never work"),
        "Remove boot.resumeDevice.",
    )]
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
}
