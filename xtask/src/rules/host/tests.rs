//! Unit tests of `host`.

use super::*;
use crate::hosts::{PartitionSizeDeviations, PartitionSizes};
use camino::Utf8PathBuf;
use layout::testing::{host_evaluation, layout_of};
use serde_json::json;

fn host() -> Host {
    Host {
        name: "test".into(),
        dir: Utf8PathBuf::from("/h"),
        layout_file: Utf8PathBuf::from("/h/disko.nix"),
        persistence_file: None,
        machine_file: Some(Utf8PathBuf::from("/h/machine.nix")),
        rollback_file: Some(Utf8PathBuf::from("/h/rollback.nix")),
    }
}

fn roadmap() -> Machine {
    Machine {
        partition_sizes: Some(PartitionSizes {
            bios_boot: Some("1M".into()),
            esp: Some("1G".into()),
            swap: Some("32G".into()),
            btrfs: Some("100%".into()),
        }),
        ..Machine::default()
    }
}

/// Host findings for the repo's layout with the swap partition's size set to `swap`.
fn run(machine: &Machine, swap: &str, rollback: Option<Value>) -> Vec<Finding> {
    let mut evaluation = host_evaluation();
    evaluation["layout"]["disko"]["devices"]["disk"]["main"]["content"]["partitions"]["swap"]
        ["size"] = json!(swap);
    let (layout, built) = layout_of(&evaluation);
    assert!(built.is_empty(), "{built:#?}");
    let host = host();
    let none = Positions::default();
    findings(
        layout.as_ref(),
        &HostFiles {
            host: &host,
            machine,
            machine_positions: &none,
            rollback: rollback.as_ref(),
            rollback_positions: &none,
        },
    )
}

fn codes(findings: &[Finding]) -> Vec<(&'static str, Severity)> {
    findings.iter().map(|f| (f.code, f.severity)).collect()
}

#[test]
fn the_roadmaps_sizes_pass() {
    assert!(run(&roadmap(), "32G", None).is_empty());
    // The same size written differently is the same size.
    assert!(run(&roadmap(), "32768M", None).is_empty());
    // Without requirements there is nothing to compare.
    assert!(run(&Machine::default(), "1G", None).is_empty());
}

/// Host findings for the repo's layout with partitions placed by start
/// and end (`(key, start, end)`) on a 480 GB disk.
fn run_placed(placements: &[(&str, &str, &str)]) -> Vec<Finding> {
    let mut evaluation = host_evaluation();
    let partitions =
        &mut evaluation["layout"]["disko"]["devices"]["disk"]["main"]["content"]["partitions"];
    for (priority, (key, start, end)) in placements.iter().enumerate() {
        let partition = partitions[*key].as_object_mut().unwrap();
        partition.remove("size");
        partition.insert("start".into(), json!(start));
        partition.insert("end".into(), json!(end));
        partition.insert("priority".into(), json!(priority + 1));
    }
    let (layout, built) = layout_of(&evaluation);
    assert!(built.is_empty(), "{built:#?}");
    let host = host();
    let machine = Machine {
        disk_size: Some(crate::hosts::DiskSizes::All("480GB".into())),
        ..roadmap()
    };
    let none = Positions::default();
    findings(
        layout.as_ref(),
        &HostFiles {
            host: &host,
            machine: &machine,
            machine_positions: &none,
            rollback: None,
            rollback_positions: &none,
        },
    )
}

#[test]
fn sizes_given_by_start_and_end_are_judged_where_sgdisk_puts_them() {
    let roadmap_sizes = [
        ("boot", "1M", "+1M"),
        ("ESP", "2M", "+1G"),
        ("swap", "0", "+32G"),
        ("root", "0", "-0"),
    ];
    assert!(run_placed(&roadmap_sizes).is_empty());
    let small_swap = [
        ("boot", "1M", "+1M"),
        ("ESP", "2M", "+1G"),
        ("swap", "0", "+1G"),
        ("root", "0", "-0"),
    ];
    let found = run_placed(&small_swap);
    assert_eq!(codes(&found), [("HOST002", Severity::Error)]);
    assert!(
        found[0].message.contains("is 1048576K"),
        "{}",
        found[0].message
    );
    assert!(found[0].path.to_string().ends_with("partitions.swap.end"));
    // Btrfs that stops short of the disk's end is not "100%".
    let short_root = [
        ("boot", "1M", "+1M"),
        ("ESP", "2M", "+1G"),
        ("swap", "0", "+32G"),
        ("root", "0", "+100G"),
    ];
    let found = run_placed(&short_root);
    assert_eq!(codes(&found), [("HOST002", Severity::Error)]);
    assert!(
        found[0].message.contains("requires 100%"),
        "{}",
        found[0].message
    );
}

#[test]
fn a_smaller_swap_is_an_error() {
    let found = run(&roadmap(), "1G", None);
    assert_eq!(codes(&found), [("HOST002", Severity::Error)]);
    let finding = &found[0];
    assert!(finding.message.contains("is 1G"), "{}", finding.message);
    assert!(
        finding.message.contains("requires 32G"),
        "{}",
        finding.message
    );
    assert!(
        finding.path.to_string().ends_with("partitions.swap.size"),
        "{}",
        finding.path
    );
    assert!(
        finding.hint.contains("partitionSizeDeviations.swap"),
        "{}",
        finding.hint
    );
}

#[test]
fn a_deliberate_deviation_warns_with_its_reason() {
    let mut machine = roadmap();
    machine.partition_size_deviations = Some(PartitionSizeDeviations {
        swap: Some(Deviation {
            size: "16G".into(),
            reason: "a test machine with less disk".into(),
        }),
        ..PartitionSizeDeviations::default()
    });
    let found = run(&machine, "16G", None);
    assert_eq!(codes(&found), [("HOST003", Severity::Warning)]);
    assert!(found[0].message.contains("a test machine with less disk"));
    // A deviation covers its own size only.
    let found = run(&machine, "1G", None);
    assert_eq!(codes(&found), [("HOST002", Severity::Error)]);
    assert!(
        found[0].message.contains("allows 16G only"),
        "{}",
        found[0].message
    );
    // And one that no longer deviates is stale.
    let found = run(&machine, "32G", None);
    assert_eq!(codes(&found), [("HOST003", Severity::Warning)]);
    assert!(found[0].hint.contains("Remove"), "{}", found[0].hint);
}

#[test]
fn a_required_partition_that_is_missing_or_unreadable_is_an_error() {
    let mut machine = roadmap();
    machine.partition_sizes.as_mut().unwrap().swap = Some("lots".into());
    let found = run(&machine, "32G", None);
    assert_eq!(codes(&found), [("HOST002", Severity::Error)]);
    assert!(found[0].message.contains("not a disko size"));

    let mut evaluation = host_evaluation();
    evaluation["layout"]["disko"]["devices"]["disk"]["main"]["content"]["partitions"]
        .as_object_mut()
        .unwrap()
        .remove("swap");
    let (layout, _) = layout_of(&evaluation);
    let host = host();
    let none = Positions::default();
    let found = findings(
        layout.as_ref(),
        &HostFiles {
            host: &host,
            machine: &roadmap(),
            machine_positions: &none,
            rollback: None,
            rollback_positions: &none,
        },
    );
    assert_eq!(codes(&found), [("HOST002", Severity::Error)]);
    assert!(
        found[0].message.contains("no swap partition"),
        "{}",
        found[0].message
    );
}

#[test]
fn rollback_settings_of_the_wrong_type_or_name_are_errors() {
    let good = json!({ "boot": { "btrfsRollback": {
            "enable": true, "rootSubvolume": "@root", "oldRootsSubvolume": "@old_roots",
            "mountPoint": "/btrfs_tmp", "retentionDays": 30, "keepAtLeast": 5, "device": null
        } } });
    assert!(run(&roadmap(), "32G", Some(good)).is_empty());
    for (name, value) in [
        ("keepAtLeast", json!("5")),
        ("keepAtLeast", json!(-1)),
        ("retentionDays", json!(1.5)),
        ("rootSubvolume", json!("@root/x")),
        ("rootSubvolume", json!("")),
        ("mountPoint", json!("/")),
        ("mountPoint", json!("btrfs_tmp")),
        ("enable", json!("yes")),
        ("mountsNeededForBoot", json!(["/persist", 1])),
        ("keepAtleast", json!(5)),
    ] {
        let mut settings = serde_json::Map::new();
        settings.insert(name.to_owned(), value.clone());
        let rollback = json!({ "boot": { "btrfsRollback": settings } });
        let found = run(&roadmap(), "32G", Some(rollback));
        assert_eq!(
            codes(&found),
            [("HOST004", Severity::Error)],
            "{name} = {value}"
        );
        assert!(
            found[0].path.to_string().ends_with(name),
            "{}",
            found[0].path
        );
    }
}

/// The option list above is the module's: every `<name> = lib.mkOption`
/// or `lib.mkEnableOption` under options.boot.btrfsRollback.
#[test]
fn the_rollback_options_are_the_modules() {
    let module = std::fs::read_to_string(
        toolbox::project::project_root().join("nix/modules/btrfs-rollback/default.nix"),
    )
    .unwrap();
    let start = module.find("options.boot.btrfsRollback = {").unwrap();
    let end = start + module[start..].find("\n  };").unwrap();
    let declared: Vec<&str> = module[start..end]
        .lines()
        .filter(|line| line.starts_with("    ") && !line.starts_with("     "))
        .filter(|line| line.contains("= lib.mkOption") || line.contains("= lib.mkEnableOption"))
        .filter_map(|line| line.trim().split(' ').next())
        .collect();
    let ours: Vec<&str> = ROLLBACK_OPTIONS.iter().map(|(name, _)| *name).collect();
    assert_eq!(declared, ours);
}

/// HOST005: each kind of Hetzner Cloud server, and the one that would be
/// unreachable.
#[test]
fn an_ipv6_only_server_needs_its_address() {
    let with = |public_ipv4: Option<bool>, ipv6: Option<&str>| {
        let machine = Machine {
            public_ipv4,
            ipv6_address: ipv6.map(str::to_owned),
            ..roadmap()
        };
        codes(&run(&machine, "32G", None))
    };
    let address = Some("2a01:4f8:c012:3456::1/64");
    // IPv4 only, dual stack, IPv6 only with its address, an older machine.nix.
    assert!(with(Some(true), None).is_empty());
    assert!(with(Some(true), address).is_empty());
    assert!(with(Some(false), address).is_empty());
    assert!(with(None, None).is_empty());
    assert_eq!(with(Some(false), None), [("HOST005", Severity::Error)]);
}

#[test]
fn rollback_subvolumes_must_be_the_root_and_an_unmounted_one() {
    let with = |root: &str, old: &str| {
        json!({ "boot": { "btrfsRollback": {
            "enable": true, "rootSubvolume": root, "oldRootsSubvolume": old
        } } })
    };
    assert!(run(&roadmap(), "32G", Some(with("@root", "@old_roots"))).is_empty());
    for (root, old, wrong) in [
        ("@persist", "@old_roots", "rootSubvolume"),
        ("@root", "@persist", "oldRootsSubvolume"),
        ("@root", "@nix", "oldRootsSubvolume"),
        ("@root", "@root", "oldRootsSubvolume"),
    ] {
        let found = run(&roadmap(), "32G", Some(with(root, old)));
        assert_eq!(
            codes(&found),
            [("IMP011", Severity::Error)],
            "{root} {old}: {found:#?}"
        );
        assert!(
            found[0].path.to_string().ends_with(wrong),
            "{}",
            found[0].path
        );
    }
    // The module's defaults apply when rollback.nix does not name them.
    let defaults = json!({ "boot": { "btrfsRollback": { "enable": true } } });
    assert!(run(&roadmap(), "32G", Some(defaults)).is_empty());
}
