//! Unit tests of `partitions`.

use serde_json::json;

use super::is_plain_position;
use crate::rules::testing::*;

fn partitions(e: &mut serde_json::Value) -> &mut serde_json::Map<String, serde_json::Value> {
    e["layout"]["disko"]["devices"]["disk"]["main"]["content"]["partitions"]
        .as_object_mut()
        .unwrap()
}

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
    assert!(
        fit.message.contains("Could not create partition 3"),
        "{fit:?}"
    );
    assert!(fit.message.contains("install stops"), "{fit:?}");
}

#[test]
fn two_rest_partitions_and_none() {
    // The second "100%" is created in the 1007 KiB in front of the first
    // partition (as sgdisk 1.0.9 does), where mkfs.btrfs fails.
    let findings = findings_after(|e| {
        partitions(e).insert(
            "zdata".into(),
            json!({ "size": "100%", "content": { "type": "btrfs", "extraArgs": ["-f"] } }),
        );
    });
    let rest = findings
        .iter()
        .find(|f| f.code == "PART003")
        .expect("PART003");
    assert!(rest.message.contains("sectors 34–2047"), "{rest:?}");
    assert!(!rest.message.contains("would get nothing"), "{rest:?}");
    let small = findings
        .iter()
        .find(|f| f.code == "PART011")
        .expect("PART011");
    assert!(
        small.message.contains("mkfs.btrfs needs at least"),
        "{small:?}"
    );
    let codes = codes_after(|e| partition(e, "root")["size"] = json!("400G"));
    assert!(codes.contains(&"PART003"), "{codes:?}");
}

#[test]
fn zero_size_takes_the_free_space_unless_last() {
    let findings = findings_after(|e| {
        partition(e, "swap").as_object_mut().unwrap().remove("size");
    });
    let zero = findings
        .iter()
        .find(|f| f.code == "PART004")
        .expect("PART004");
    assert!(zero.message.contains("takes all of it"), "{zero:?}");
    // root lands in the 1007 KiB in front of the first partition, too small for Btrfs.
    assert!(zero.message.contains("sectors 34–2047"), "{zero:?}");
    assert!(
        findings.iter().any(|f| f.code == "PART011"),
        "{findings:#?}"
    );
    // Created last, a partition without size takes the rest: fine.
    let codes = codes_after(|e| {
        partition(e, "root").as_object_mut().unwrap().remove("size");
        partition(e, "root")["priority"] = json!(9001);
    });
    assert!(codes.is_empty(), "{codes:?}");
}

#[test]
fn start_and_end_instead_of_size() {
    let codes = codes_after(|e| {
        for (key, start, end) in [
            ("boot", "1M", "+1M"),
            ("ESP", "2M", "+1G"),
            ("swap", "0", "+32G"),
            ("root", "0", "-0"),
        ] {
            let p = partition(e, key);
            p.as_object_mut().unwrap().remove("size");
            p["start"] = json!(start);
            p["end"] = json!(end);
        }
        partition(e, "root")["priority"] = json!(9001);
    });
    assert!(codes.is_empty(), "{codes:?}");
}

#[test]
fn a_start_in_the_gpt_itself() {
    let findings = findings_after(|e| partition(e, "boot")["start"] = json!("10s"));
    let refused = findings
        .iter()
        .find(|f| f.code == "PART010")
        .expect("PART010");
    assert!(refused.message.contains("GPT's own sectors"), "{refused:?}");
}

#[test]
fn overlapping_partitions_are_refused_with_the_reason() {
    let findings = findings_after(|e| {
        partition(e, "swap")["start"] = json!("1M");
    });
    let overlap = findings
        .iter()
        .find(|f| f.code == "PART010")
        .expect("PART010");
    assert!(
        overlap.message.contains("inside partition \"boot\""),
        "{overlap:?}"
    );
    assert!(!overlap.message.contains("size zero"), "{overlap:?}");
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
        partitions(e).remove("boot");
    });
    assert!(codes.contains(&"PART006"), "{codes:?}");
}

#[test]
fn more_partitions_than_gpt_entries() {
    let findings = findings_after(|e| {
        for i in 0..200 {
            partitions(e).insert(format!("extra{i:03}"), json!({ "size": "1M" }));
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
        for i in 0..124 {
            partitions(e).insert(format!("extra{i:03}"), json!({ "size": "1M" }));
        }
    });
    assert!(codes.is_empty(), "{codes:?}");
}

#[test]
fn hybrid_mbr_with_the_default_gets_no_device() {
    let findings = findings_after(|e| {
        partition(e, "ESP")["hybrid"] = json!({ "mbrPartitionType": "EF" });
    });
    let hybrid = findings
        .iter()
        .find(|f| f.code == "PART009")
        .expect("PART009");
    assert!(
        hybrid.message.contains("sgdisk -h 2\"/dev/sda\""),
        "{hybrid:?}"
    );
    assert!(hybrid.message.contains("partition is unused"), "{hybrid:?}");
    // With the 0xEE entry last, sfdisk gets the GPT number 2 as the MBR
    // slot, which is the 0xEE entry: the GPT disappears.
    let findings = findings_after(|e| {
        partition(e, "ESP")["hybrid"] = json!({ "mbrPartitionType": "EF" });
        e["layout"]["disko"]["devices"]["disk"]["main"]["content"]["efiGptPartitionFirst"] =
            json!(false);
    });
    let hybrid = findings
        .iter()
        .find(|f| f.code == "PART009")
        .expect("PART009");
    assert!(
        hybrid
            .message
            .contains("rewrites the protective 0xEE entry"),
        "{hybrid:?}"
    );
    // Partition 1 in MBR entry 1: the numbers agree, and it works.
    let codes = codes_after(|e| {
        partition(e, "boot")["hybrid"] = json!({ "mbrBootableFlag": true });
        e["layout"]["disko"]["devices"]["disk"]["main"]["content"]["efiGptPartitionFirst"] =
            json!(false);
    });
    assert!(!codes.contains(&"PART009"), "{codes:?}");
}

#[test]
fn an_alignment_sgdisk_cannot_read() {
    let findings = findings_after(|e| partition(e, "swap")["alignment"] = json!(1u64 << 40));
    let ignored = findings
        .iter()
        .find(|f| f.code == "PART010")
        .expect("PART010");
    assert!(ignored.message.contains("never created"), "{ignored:?}");
}

#[test]
fn positions_sgdisk_reads_in_part() {
    for plain in ["0", "1M", "+1G", "-0", "2048s", "10g"] {
        assert!(is_plain_position(plain), "{plain}");
    }
    for odd in ["1.5G", "10GB", "0x10", "1e9", "G"] {
        assert!(!is_plain_position(odd), "{odd}");
    }
    let codes = codes_after(|e| partition(e, "swap")["end"] = json!("+32GB"));
    assert!(codes.contains(&"PART012"), "{codes:?}");
}

/// Found by the generated layouts against the real tools: mkfs.btrfs --mixed
/// formats 16 MiB, -d raid1 needs two devices, an unknown checksum is refused,
/// a feature only newer btrfs-progs know is a warning, mke2fs -b 65536 asks
/// "Proceed anyway?", mkfs.vfat -F 64 and -s 1 on 33 MiB are refused.
#[test]
fn mkfs_arguments_as_the_tools_read_them() {
    let data = |extra: serde_json::Value, size: &str| {
        codes_after(|e| {
            partitions(e).insert(
                "data".into(),
                json!({ "size": size, "content": { "type": "btrfs", "extraArgs": extra } }),
            );
        })
    };
    assert!(!data(json!(["-f", "--mixed"]), "100M").contains(&"PART011"));
    assert!(data(json!(["-f"]), "100M").contains(&"PART011"));
    assert!(data(json!(["-f", "--mixed"]), "8M").contains(&"PART011"));
    assert!(data(json!(["-f", "-d", "raid1"]), "10G").contains(&"PART013"));
    assert!(data(json!(["-f", "--csum", "blake3"]), "10G").contains(&"PART013"));
    assert!(data(json!(["-f", "--csum", "xxhash", "-n", "16k"]), "10G").is_empty());
    assert!(data(json!(["-f", "--nodesize", "3000"]), "10G").contains(&"PART013"));
    let codes = data(json!(["-f", "-O", "block-group-tree"]), "10G");
    assert_eq!(codes, vec!["PART014"]);
    let ext4 = |extra: serde_json::Value| {
        codes_after(|e| {
            partitions(e).insert(
                "data".into(),
                json!({ "size": "10G", "content": { "type": "filesystem", "format": "ext4", "extraArgs": extra } }),
            );
        })
    };
    assert!(ext4(json!(["-b", "65536"])).contains(&"PART013"));
    assert!(ext4(json!(["-b", "4096"])).is_empty());
    let esp = |extra: serde_json::Value, size: &str| {
        codes_after(|e| {
            partition(e, "ESP")["size"] = json!(size);
            partition(e, "ESP")["content"]["extraArgs"] = extra;
        })
    };
    assert!(esp(json!(["-F", "64"]), "1G").contains(&"PART011"));
    assert!(esp(json!(["-s", "1"]), "33M").contains(&"PART011"));
    assert!(!esp(json!(["-s", "1"]), "8M").contains(&"PART011"));
}
