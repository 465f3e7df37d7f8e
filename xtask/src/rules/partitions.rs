//! Partition sizes, labels and the BIOS boot partition.

use std::collections::BTreeMap;

use super::{Context, Issue};
use crate::layout::geometry::{Problem, MAX_PARTITIONS};
use crate::layout::size::{human, MIB};
use crate::layout::DiskContent;

pub fn size_parses(context: &Context) -> Vec<Issue> {
    context
        .layout
        .partitions()
        .filter_map(|(_, partition)| {
            let error = partition.size.as_ref().err()?;
            Some(Issue::new(
                partition.path.join("size"),
                format!("partition {:?}: {error}", partition.key),
                "Write sizes as disko does: \"512M\", \"32G\", or \"100%\" for the rest.",
            ))
        })
        .collect()
}

pub fn fits_disk(context: &Context) -> Vec<Issue> {
    let mut issues = Vec::new();
    for disk in &context.layout.disks {
        let Some(geometry) = context.geometry.get(&disk.key) else {
            continue;
        };
        let Some(DiskContent::Gpt(gpt)) = &disk.content else {
            continue;
        };
        for problem in &geometry.problems {
            let (key, message) = match problem {
                Problem::DoesNotFit {
                    key,
                    needed_bytes,
                    available_bytes,
                } => (
                    key,
                    format!(
                        "partition {key:?} needs {} but only {} is left on the {} disk {:?}",
                        human(*needed_bytes),
                        human(*available_bytes),
                        human(geometry.disk_bytes),
                        disk.device
                    ),
                ),
                Problem::NoSpace { key } => (
                    key,
                    format!(
                        "no space is left for partition {key:?} on the {} disk {:?}",
                        human(geometry.disk_bytes),
                        disk.device
                    ),
                ),
                _ => continue,
            };
            let path = gpt
                .partitions
                .iter()
                .find(|p| &p.key == key)
                .map(|p| p.path.join("size"))
                .unwrap_or_else(|| gpt.path.clone());
            issues.push(Issue::new(
                path,
                message,
                "Shrink the fixed-size partitions, or check the disk size (--disk-size, or diskSize in the host's machine.nix).",
            ));
        }
    }
    issues
}

pub fn one_rest_partition(context: &Context) -> Vec<Issue> {
    let mut issues = Vec::new();
    for disk in &context.layout.disks {
        let Some(DiskContent::Gpt(gpt)) = &disk.content else {
            continue;
        };
        let rest: Vec<_> = gpt.partitions.iter().filter(|p| p.is_rest()).collect();
        match rest.as_slice() {
            [_] => {}
            [] => issues.push(Issue::new(
                gpt.path.join("partitions"),
                format!(
                    "disk {:?} has no partition of size \"100%\": the end of the disk stays unused",
                    disk.key
                ),
                "Give the Btrfs partition size = \"100%\".",
            )),
            [_, more @ ..] => {
                for partition in more {
                    issues.push(Issue::new(
                        partition.path.join("size"),
                        format!(
                            "disk {:?} has {} partitions of size \"100%\"; {:?} would get nothing",
                            disk.key,
                            rest.len(),
                            partition.key
                        ),
                        "Only the last partition takes the rest; give the others a fixed size.",
                    ));
                }
            }
        }
    }
    issues
}

pub fn nonzero_size(context: &Context) -> Vec<Issue> {
    context
        .layout
        .partitions()
        .filter(|(_, p)| p.fixed_size() == Some(0))
        .map(|(_, partition)| {
            Issue::new(
                partition.path.join("size"),
                format!("partition {:?} has size zero", partition.key),
                "Set `size` (disko's default is \"0\", which sgdisk cannot create).",
            )
        })
        .collect()
}

pub fn unique_labels(context: &Context) -> Vec<Issue> {
    let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
    let mut issues = Vec::new();
    for (disk, partition) in context.layout.partitions() {
        if let Some(first) = seen.insert(&partition.label, &disk.key) {
            issues.push(Issue::new(
                partition.path.join("label"),
                format!(
                    "label {:?} is used on disk {first:?} and again on disk {:?}",
                    partition.label, disk.key
                ),
                "Give each disk a different attribute name, or set distinct `label`s.",
            ));
        }
    }
    issues
}

pub fn bios_boot(context: &Context) -> Vec<Issue> {
    let mut issues = Vec::new();
    let mut any = false;
    for disk in &context.layout.disks {
        let Some(DiskContent::Gpt(gpt)) = &disk.content else {
            continue;
        };
        for partition in gpt
            .partitions
            .iter()
            .filter(|p| p.type_code.eq_ignore_ascii_case("EF02"))
        {
            any = true;
            if partition.number != 1 {
                issues.push(Issue::new(
                    partition.path.clone(),
                    format!(
                        "the BIOS boot partition {:?} is partition {}, not the first",
                        partition.key, partition.number
                    ),
                    "Remove its `priority` so disko creates it first (priority 100).",
                ));
            }
            if partition.fixed_size().is_some_and(|bytes| bytes < MIB) {
                issues.push(Issue::new(
                    partition.path.join("size"),
                    format!(
                        "the BIOS boot partition {:?} is smaller than 1 MiB",
                        partition.key
                    ),
                    "Make it size = \"1M\": GRUB's core image must fit.",
                ));
            }
        }
    }
    if !any && context.firmware.bios {
        let path = context
            .layout
            .disks
            .first()
            .map(|d| d.path.clone())
            .unwrap_or_default();
        issues.push(Issue::new(
            path,
            "the machine boots with BIOS but no disk has a BIOS boot (EF02) partition",
            "Add `boot = { size = \"1M\"; type = \"EF02\"; };` to the partitions.",
        ));
    }
    issues
}

pub fn geometry_predicted(context: &Context) -> Vec<Issue> {
    let mut issues = Vec::new();
    for geometry in context.geometry.values() {
        for problem in &geometry.problems {
            if let Problem::Unsupported { key, what } = problem {
                let path = context
                    .layout
                    .partitions()
                    .find(|(_, p)| &p.key == key)
                    .map(|(_, p)| p.path.clone())
                    .unwrap_or_default();
                issues.push(Issue::new(
                    path,
                    format!("partition {key:?}: {what} is not placed by this tool; its geometry is not checked"),
                    "Prefer `size` with disko's default start and end.",
                ));
            }
        }
    }
    issues
}

pub fn table_entries(context: &Context) -> Vec<Issue> {
    let mut issues = Vec::new();
    for disk in &context.layout.disks {
        let Some(DiskContent::Gpt(gpt)) = &disk.content else {
            continue;
        };
        if let Some(first_without) = gpt.partitions.get(MAX_PARTITIONS) {
            issues.push(Issue::new(
                gpt.path.join("partitions"),
                format!(
                    "disk {:?} declares {} partitions, but its GPT table holds {MAX_PARTITIONS}: sgdisk fails at {:?}, the first in creation order without an entry",
                    disk.key,
                    gpt.partitions.len(),
                    first_without.key
                ),
                format!("Declare at most {MAX_PARTITIONS} partitions; use Btrfs subvolumes for more separate trees."),
            ));
        }
    }
    issues
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::rules::testing::*;

    #[test]
    fn passes_on_the_host() {
        let codes = codes_after(|_| {});
        assert!(codes.is_empty(), "{codes:?}");
    }

    #[test]
    fn garbage_size() {
        let codes = codes_after(|e| partition(e, "swap")["size"] = json!("32 GB"));
        assert!(codes.contains(&"PART001"), "{codes:?}");
    }

    #[test]
    fn over_the_disk() {
        let findings = findings_after(|e| partition(e, "swap")["size"] = json!("500G"));
        let fit = findings
            .iter()
            .find(|f| f.code == "PART002")
            .expect("PART002");
        assert!(fit.message.contains("\"swap\""), "{fit:?}");
        assert!(fit.message.contains("500.0 GiB"), "{fit:?}");
    }

    #[test]
    fn two_rest_partitions_and_none() {
        let codes = codes_after(|e| partition(e, "swap")["size"] = json!("100%"));
        assert!(codes.contains(&"PART003"), "{codes:?}");
        let codes = codes_after(|e| partition(e, "root")["size"] = json!("400G"));
        assert!(codes.contains(&"PART003"), "{codes:?}");
    }

    #[test]
    fn zero_size() {
        let codes = codes_after(|e| {
            partition(e, "swap").as_object_mut().unwrap().remove("size");
        });
        assert!(codes.contains(&"PART004"), "{codes:?}");
    }

    #[test]
    fn duplicate_labels() {
        let codes = codes_after(|e| partition(e, "swap")["label"] = json!("disk-main-ESP"));
        assert!(codes.contains(&"PART005"), "{codes:?}");
    }

    #[test]
    fn bios_boot_first_big_enough_and_present() {
        let codes = codes_after(|e| partition(e, "boot")["priority"] = json!(2000));
        assert!(codes.contains(&"PART006"), "{codes:?}");
        let codes = codes_after(|e| partition(e, "boot")["size"] = json!("512K"));
        assert!(codes.contains(&"PART006"), "{codes:?}");
        let codes = codes_after(|e| {
            e["layout"]["disko"]["devices"]["disk"]["main"]["content"]["partitions"]
                .as_object_mut()
                .unwrap()
                .remove("boot");
        });
        assert!(codes.contains(&"PART006"), "{codes:?}");
    }

    #[test]
    fn more_partitions_than_gpt_entries() {
        let findings = findings_after(|e| {
            let partitions = e["layout"]["disko"]["devices"]["disk"]["main"]["content"]
                ["partitions"]
                .as_object_mut()
                .unwrap();
            for i in 0..200 {
                partitions.insert(format!("extra{i:03}"), json!({ "size": "1M" }));
            }
        });
        let entries = findings
            .iter()
            .find(|f| f.code == "PART008")
            .expect("PART008");
        assert!(entries.message.contains("204 partitions"), "{entries:?}");
        // 128 fit, so nothing else is wrong with the table.
        let codes: Vec<&str> = findings.iter().map(|f| f.code).collect();
        assert_eq!(codes, vec!["PART008"]);
        let codes = codes_after(|e| {
            let partitions = e["layout"]["disko"]["devices"]["disk"]["main"]["content"]
                ["partitions"]
                .as_object_mut()
                .unwrap();
            for i in 0..124 {
                partitions.insert(format!("extra{i:03}"), json!({ "size": "1M" }));
            }
        });
        assert!(codes.is_empty(), "{codes:?}");
    }

    #[test]
    fn unsupported_forms_warn() {
        let codes = codes_after(|e| partition(e, "swap")["start"] = json!("+5M"));
        assert!(codes.contains(&"PART007"), "{codes:?}");
    }
}
