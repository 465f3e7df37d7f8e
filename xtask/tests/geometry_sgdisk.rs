//! The geometry model against the real sgdisk: for each layout, run the
//! commands disko runs (one `sgdisk --align-end --new=N:start:end` per
//! partition, in creation order) on a sparse file of the disk's size and
//! compare the sectors sgdisk chose with what `geometry::compute` predicts.

use std::process::Command;

use camino::Utf8Path;
use serde_json::{json, Value};
use xtask::layout::build::{build, Evaluated};
use xtask::layout::geometry::compute;
use xtask::layout::DiskContent;

fn sgdisk() -> String {
    for candidate in ["/usr/sbin/sgdisk", "/sbin/sgdisk", "/usr/bin/sgdisk"] {
        if Utf8Path::new(candidate).exists() {
            return candidate.to_owned();
        }
    }
    panic!("sgdisk is missing: install it with `apt-get install gdisk`");
}

/// (start, end) sectors of each partition as sgdisk created them.
fn sgdisk_table(layout: &Value, disk_bytes: u64) -> Vec<(u32, u64, u64)> {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("disk.img");
    let file = std::fs::File::create(&image).unwrap();
    file.set_len(disk_bytes).unwrap();
    let (built, findings) = build(&Evaluated {
        host: "t",
        source: Utf8Path::new("/t/disko.nix"),
        layout,
        persistence: &Value::Null,
    });
    assert!(findings.is_empty(), "{findings:?}");
    let built = built.unwrap();
    let Some(DiskContent::Gpt(gpt)) = &built.disks[0].content else {
        panic!("gpt")
    };
    for p in &gpt.partitions {
        let status = Command::new(sgdisk())
            .arg("--align-end")
            .arg(format!("--new={}:{}:{}", p.number, p.start, p.end))
            .arg(format!("--typecode={}:{}", p.number, p.type_code))
            .arg(&image)
            .output()
            .unwrap();
        assert!(
            status.status.success(),
            "sgdisk failed: {}",
            String::from_utf8_lossy(&status.stderr)
        );
    }
    let printed = Command::new(sgdisk())
        .arg("--print")
        .arg(&image)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&printed.stdout);
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            Some((
                fields.first()?.parse().ok()?,
                fields.get(1)?.parse().ok()?,
                fields.get(2)?.parse().ok()?,
            ))
        })
        .collect()
}

fn predicted(layout: &Value, disk_bytes: u64) -> Vec<(u32, u64, u64)> {
    let (built, _) = build(&Evaluated {
        host: "t",
        source: Utf8Path::new("/t/disko.nix"),
        layout,
        persistence: &Value::Null,
    });
    let built = built.unwrap();
    let Some(DiskContent::Gpt(gpt)) = &built.disks[0].content else {
        panic!("gpt")
    };
    let geometry = compute(gpt, disk_bytes);
    assert!(geometry.problems.is_empty(), "{:?}", geometry.problems);
    geometry
        .extents
        .iter()
        .map(|e| (e.number, e.start_sector, e.end_sector))
        .collect()
}

fn layout_with(partitions: Value) -> Value {
    json!({ "disko": { "devices": { "disk": { "main": {
        "device": "/dev/sda",
        "content": { "type": "gpt", "partitions": partitions }
    }}}}})
}

#[test]
fn the_repos_host_on_480_gb() {
    let evaluation: Value =
        serde_json::from_str(include_str!("fixtures/hetzner-cloud.eval.json")).unwrap();
    let layout = &evaluation["layout"];
    let real = sgdisk_table(layout, 480_000_000_000);
    assert_eq!(real.len(), 4);
    assert_eq!(predicted(layout, 480_000_000_000), real);
}

#[test]
fn odd_sizes_and_disks() {
    let layouts = [
        (
            layout_with(json!({
                "a": { "size": "1000K" },
                "b": { "size": "777" },
                "c": { "size": "3M", "type": "8200" },
                "z": { "size": "100%" }
            })),
            100 * 1024 * 1024 + 512 * 7,
        ),
        (
            layout_with(json!({
                "boot": { "size": "1M", "type": "EF02" },
                "ESP": { "size": "512M", "type": "EF00" },
                "root": { "size": "100%" }
            })),
            20_000_000_000,
        ),
        (
            layout_with(json!({
                "boot": { "size": "1M", "type": "EF02" },
                "swap": { "size": "1G", "end": "-5M" },
                "root": { "size": "100%" }
            })),
            4_000_000_000,
        ),
    ];
    for (layout, bytes) in layouts {
        assert_eq!(
            predicted(&layout, bytes),
            sgdisk_table(&layout, bytes),
            "{layout}"
        );
    }
}
