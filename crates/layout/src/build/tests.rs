//! The builder against hand-written layouts: disko's defaults, and a
//! finding (never a panic) for anything that does not fit.

use super::gpt::{is_guid, is_type_code};
use super::*;
use serde_json::json;

fn build_json(layout: Value) -> (Option<Layout>, Vec<Finding>) {
    build(&Evaluated {
        host: "test",
        source: Utf8Path::new("/test/disko.nix"),
        layout: &layout,
        persistence: &Value::Null,
    })
}

fn codes(findings: &[Finding]) -> Vec<&'static str> {
    findings.iter().map(|f| f.code).collect()
}

#[test]
fn applies_diskos_defaults_and_order() {
    let (layout, findings) = build_json(json!({
        "disko": { "devices": { "disk": { "main": { "device": "/dev/sda", "content": {
            "type": "gpt",
            "partitions": {
                "root": { "size": "100%", "content": { "type": "btrfs" } },
                "swap": { "size": "32G", "content": { "type": "swap", "randomEncryption": true } },
                "ESP": { "size": "1G", "type": "EF00", "content": { "type": "filesystem", "format": "vfat" } },
                "boot": { "size": "1M", "type": "EF02" }
            }
        }}}}}
    }));
    assert!(findings.is_empty(), "{findings:?}");
    let layout = layout.unwrap();
    let Some(DiskContent::Gpt(gpt)) = &layout.disks[0].content else {
        panic!("expected a gpt table")
    };
    let order: Vec<(&str, u32, &str, &str)> = gpt
        .partitions
        .iter()
        .map(|p| {
            (
                p.key.as_str(),
                p.number,
                p.type_code.as_str(),
                p.label.as_str(),
            )
        })
        .collect();
    assert_eq!(
        order,
        vec![
            ("boot", 1, "EF02", "disk-main-boot"),
            ("ESP", 2, "EF00", "disk-main-ESP"),
            ("swap", 3, "8200", "disk-main-swap"),
            ("root", 4, "8300", "disk-main-root"),
        ]
    );
    assert_eq!(gpt.partitions[3].end, "-0");
    assert_eq!(gpt.partitions[1].end, "+1G");
    assert_eq!(
        gpt.partitions[3].device,
        "/dev/disk/by-partlabel/disk-main-root"
    );
}

#[test]
fn long_labels_become_a_hash_like_disko() {
    let label = default_partition_label("a-very-long-disk-name", "and-a-long-partition");
    assert_eq!(label.len(), 36);
    assert!(label.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(default_partition_label("main", "ESP"), "disk-main-ESP");
}

#[test]
fn non_ascii_names_are_hashed_by_bytes() {
    // 32 characters but 37 bytes: disko hashes it (nix-instantiate of
    // lib/types/gpt.nix at disko 878ec37 gave the same label).
    let name = "données-persistées-ééé";
    assert_eq!(format!("disk-main-{name}").chars().count(), 32);
    assert_eq!(format!("disk-main-{name}").len(), 37);
    let label = default_partition_label("main", name);
    assert_eq!(label, "edee11f9e459da2174c7b8265cc774a0f23d");
}

#[test]
fn wrong_types_unknown_options_and_contents_are_findings() {
    let (layout, findings) = build_json(json!({
        "disko": { "devices": { "disk": { "main": { "device": "/dev/sda", "content": {
            "type": "gpt",
            "partitions": {
                "a": { "size": 1 },
                "b": { "sise": "1G" },
                "c": { "size": "1G", "content": { "type": "lvm" } }
            }
        }}}}}
    }));
    assert!(layout.is_none());
    let codes = codes(&findings);
    assert!(codes.contains(&"MODEL001"), "{findings:?}");
    assert!(codes.contains(&"MODEL002"), "{findings:?}");
    assert!(codes.contains(&"MODEL003"), "{findings:?}");
    let typo = findings.iter().find(|f| f.code == "MODEL003").unwrap();
    assert!(typo.hint.contains("`size`"), "{typo:?}");
    assert_eq!(
        typo.path.to_string(),
        "disko.devices.disk.main.content.partitions.b.sise"
    );
    let wrong = findings.iter().find(|f| f.code == "MODEL001").unwrap();
    assert_eq!(
        wrong.path.to_string(),
        "disko.devices.disk.main.content.partitions.a.size"
    );
}

#[test]
fn comma_joined_options_are_separate_options() {
    assert_eq!(
        split_options(vec!["noatime,subvol=@x".into(), "".into(), "ssd,".into()]),
        vec!["noatime", "subvol=@x", "ssd"]
    );
    let plain = vec!["noatime".to_owned(), "ssd".to_owned()];
    assert_eq!(split_options(plain.clone()), plain);
    assert_eq!(mount_options(None), vec!["defaults"]);
}

#[test]
fn type_codes_and_uuids_as_disko_types_them() {
    for good in [
        "EF00",
        "ef02",
        "8300",
        "0FC63DAF-8483-4772-8E79-3D69D8477DE4",
    ] {
        assert!(is_type_code(good), "{good}");
    }
    for bad in [
        "",
        "EF0",
        "EF000",
        "EF02; reboot",
        "GGGG",
        "0FC63DAF-8483-4772-8E79-3D69D8477DE",
    ] {
        assert!(!is_type_code(bad), "{bad}");
    }
    assert!(is_guid("e4fbd4b2-3b50-4a9b-9d1f-0c4f6c2f7a10"));
    for bad in [
        "garbage",
        "e4fbd4b2-3b50-4a9b-9d1f",
        "e4fbd4b2-3b50-4a9b-9d1f-0c4f6c2f7a1x",
        "-----",
    ] {
        assert!(!is_guid(bad), "{bad}");
    }
    let (layout, findings) = build_json(json!({
        "disko": { "devices": { "disk": { "main": { "device": "/dev/sda", "content": {
            "type": "gpt",
            "partitions": {
                "a": { "size": "1G", "type": "EF02;reboot" },
                "b": { "size": "100%", "uuid": "not-a-guid" }
            }
        }}}}}
    }));
    assert!(layout.is_none());
    let paths: Vec<String> = findings
        .iter()
        .map(|f| format!("{} {}", f.code, f.path))
        .collect();
    assert_eq!(
        paths,
        vec![
            "MODEL001 disko.devices.disk.main.content.partitions.a.type",
            "MODEL001 disko.devices.disk.main.content.partitions.b.uuid"
        ]
    );
}

#[test]
fn thousands_of_unknown_options_are_counted_not_listed() {
    let junk: Map<String, Value> = (0..5000)
        .map(|i| (format!("option{i}"), json!(i)))
        .collect();
    let (_, findings) = build_json(json!({
        "disko": { "devices": { "disk": { "main": { "device": "/dev/sda", "content": {
            "type": "gpt", "partitions": { "root": junk }
        }}}}}
    }));
    assert_eq!(findings.len(), MAX_UNKNOWN_KEYS + 1, "{findings:?}");
    assert!(findings.iter().all(|f| f.code == "MODEL003"));
    let summary = findings
        .iter()
        .find(|f| f.message.contains("4980 more"))
        .expect("a summary");
    assert_eq!(
        summary.path.to_string(),
        "disko.devices.disk.main.content.partitions.root"
    );
}

#[test]
fn a_missing_layout_is_a_finding() {
    let (layout, findings) = build_json(json!({ "fileSystems": {} }));
    assert!(layout.is_none());
    assert_eq!(codes(&findings), vec!["MODEL004"]);
    let (_, findings) = build_json(json!(42));
    assert_eq!(codes(&findings), vec!["MODEL001"]);
}

#[test]
fn reads_neededforboot_tmpfiles_and_persistence() {
    let layout_json = json!({
        "disko": { "devices": { "disk": { "main": { "device": "/dev/sda" } } } },
        "fileSystems": { "/persist": { "neededForBoot": true, "options": ["x"] } },
        "systemd": { "tmpfiles": {
            "settings": { "10": { "/var/lib/containers": { "h": { "argument": "+C" } } } },
            "rules": [ "h /srv/db - - - - +C", "d /tmp 1777 root root -" ]
        } }
    });
    let persistence = json!({ "/persist": {
        "directories": [ "/var/lib/nixos", { "directory": "/var/lib/tailscale", "mode": "0700" } ],
        "files": [ "/etc/machine-id" ],
        "users": { "hbohlen": { "files": [ ".ssh/authorized_keys" ] } }
    }});
    let (layout, findings) = build(&Evaluated {
        host: "t",
        source: Utf8Path::new("/t/disko.nix"),
        layout: &layout_json,
        persistence: &persistence,
    });
    assert!(findings.is_empty(), "{findings:?}");
    let layout = layout.unwrap();
    assert_eq!(layout.file_systems["/persist"].needed_for_boot, Some(true));
    let nocow: Vec<&str> = layout
        .nocow_paths
        .iter()
        .map(|n| n.target.as_str())
        .collect();
    assert_eq!(nocow, vec!["/var/lib/containers", "/srv/db"]);
    let targets: Vec<&str> = layout.persistence[0]
        .entries
        .iter()
        .map(|e| e.target.as_str())
        .collect();
    assert_eq!(
        targets,
        vec![
            "/var/lib/nixos",
            "/var/lib/tailscale",
            "/etc/machine-id",
            "/home/hbohlen/.ssh/authorized_keys"
        ]
    );
}
