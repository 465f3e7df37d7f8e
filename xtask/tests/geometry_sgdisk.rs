//! The geometry model against the real sgdisk: for each layout, run the
//! commands disko runs (one `sgdisk --align-end [--set-alignment=A]
//! --new=N:start:end` per partition, in creation order) on a sparse file of
//! the disk's size and compare the sectors sgdisk chose, and where it
//! refused, with what `geometry::compute` predicts. Also: udev's names for
//! GPT partition names (on a loop device, as root) and disko's hybrid MBR
//! command.

use std::process::Command;

use camino::Utf8Path;
use layout::build::{build, Evaluated};
use layout::geometry::{compute, DiskGeometry, Problem};
use layout::names;
use layout::{DiskContent, Gpt};
use serde_json::{json, Value};

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

/// What sgdisk does with the partitions of `gpt` on a sparse file of
/// `disk_bytes`, run as disko runs it: stop at the first refusal.
fn sgdisk_run(gpt: &Gpt, disk_bytes: u64) -> (Vec<(u32, u64, u64)>, Option<u32>) {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("disk.img");
    std::fs::File::create(&image)
        .unwrap()
        .set_len(disk_bytes)
        .unwrap();
    let mut refused = None;
    for p in &gpt.partitions {
        let mut command = Command::new(sgdisk());
        command.arg("--align-end");
        if p.alignment != 0 {
            command.arg(format!("--set-alignment={}", p.alignment));
        }
        let output = command
            .arg(format!("--new={}:{}:{}", p.number, p.start, p.end))
            .arg(&image)
            .output()
            .unwrap();
        if !output.status.success() {
            refused = Some(p.number);
            break;
        }
    }
    let printed = Command::new(sgdisk())
        .arg("--print")
        .arg(&image)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&printed.stdout)
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            Some((
                fields.first()?.parse().ok()?,
                fields.get(1)?.parse().ok()?,
                fields.get(2)?.parse().ok()?,
            ))
        })
        .collect();
    (table, refused)
}

/// The model's answer in the same shape.
fn model_run(geometry: &DiskGeometry) -> (Vec<(u32, u64, u64)>, Option<u32>) {
    let mut table: Vec<(u32, u64, u64)> = geometry
        .extents
        .iter()
        .map(|e| (e.number, e.start_sector, e.end_sector))
        .collect();
    table.sort_unstable();
    let refused = geometry.problems.iter().find_map(|p| match p {
        Problem::Refused { number, .. } => Some(*number),
        _ => None,
    });
    (table, refused)
}

fn gpt_of(layout: &Value) -> Gpt {
    let (built, findings) = build(&Evaluated {
        host: "t",
        source: Utf8Path::new("/t/disko.nix"),
        layout,
        persistence: &Value::Null,
    });
    let built = built.unwrap_or_else(|| panic!("{findings:?}"));
    match &built.disks[0].content {
        Some(DiskContent::Gpt(gpt)) => gpt.clone(),
        _ => panic!("gpt"),
    }
}

/// Runs `job` on every item, many at a time: each sgdisk that writes a table
/// sleeps a second (gptfdisk's diskio-unix.cc `DiskSync`), so one after the
/// other the tests would take minutes.
fn in_parallel<T: Sync, R: Send>(items: &[T], job: impl Fn(&T) -> R + Sync) -> Vec<R> {
    const THREADS: usize = 16;
    let chunk = items.len().div_ceil(THREADS).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|part| scope.spawn(|| part.iter().map(&job).collect::<Vec<R>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a worker"))
            .collect()
    })
}

/// Every case of tests/fixtures/disko-corpus through the real sgdisk again.
#[test]
fn the_corpus_places_as_sgdisk_does() {
    let dir = format!("{}/tests/fixtures/disko-corpus", env!("CARGO_MANIFEST_DIR"));
    let mut cases = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "nix") || path.ends_with("with-change.nix") {
            continue;
        }
        let output = Command::new("nix-instantiate")
            .args(["--eval", "--strict", "--json"])
            .arg(&path)
            .output()
            .expect("nix-instantiate runs (apt-get install nix-bin)");
        assert!(
            output.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        let layout: Value = serde_json::from_slice(&output.stdout).unwrap();
        let (built, _) = build(&Evaluated {
            host: "t",
            source: Utf8Path::new("/t/disko.nix"),
            layout: &layout,
            persistence: &Value::Null,
        });
        // A layout disko cannot evaluate has nothing to place.
        if let Some(Some(DiskContent::Gpt(gpt))) = built.map(|b| b.disks[0].content.clone()) {
            cases.push((path.display().to_string(), gpt));
        }
    }
    assert!(
        cases.len() >= 20,
        "only {} corpus cases to compare",
        cases.len()
    );
    let bytes = 480_000_000_000;
    let mismatches: Vec<String> = in_parallel(&cases, |(name, gpt)| {
        let (model, real) = (model_run(&compute(gpt, bytes)), sgdisk_run(gpt, bytes));
        (model != real).then(|| format!("{name}:\n  model {model:?}\n  sgdisk {real:?}"))
    })
    .into_iter()
    .flatten()
    .collect();
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

/// A small deterministic generator (no dependency for one test).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % below
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.next(items.len() as u64) as usize]
    }
}

/// Random starts, ends, sizes and alignments in every form disko passes to
/// sgdisk, against the real sgdisk: the same sectors, and the same refusals.
#[test]
fn random_layouts_place_as_sgdisk_does() {
    let mut random = Lcg(0x13);
    let mut layouts = Vec::new();
    for _ in 0..120 {
        let disk_mib = 16 + random.next(2000);
        let count = 1 + random.next(6);
        let mut partitions = serde_json::Map::new();
        for i in 0..count {
            let number = |r: &mut Lcg| (1 + r.next(300)).to_string();
            let mut p = serde_json::Map::new();
            match random.next(4) {
                0 => {
                    let size = format!(
                        "{}{}",
                        number(&mut random),
                        random.pick(&["K", "M", "", "M"])
                    );
                    p.insert("size".into(), json!(size));
                }
                1 => {
                    p.insert("size".into(), json!("100%"));
                }
                _ => {
                    let start = match random.next(5) {
                        0 => "0".to_owned(),
                        1 => format!("+{}M", number(&mut random)),
                        2 => format!("{}M", number(&mut random)),
                        3 => format!("{}s", 34 + random.next(600_000)),
                        _ => format!("-{}M", number(&mut random)),
                    };
                    let end = match random.next(6) {
                        0 => "-0".to_owned(),
                        1 => "+0".to_owned(),
                        2 => format!("-{}M", number(&mut random)),
                        3 => format!("{}M", number(&mut random)),
                        4 => format!("+{}s", number(&mut random)),
                        _ => format!("+{}M", number(&mut random)),
                    };
                    p.insert("start".into(), json!(start));
                    p.insert("end".into(), json!(end));
                }
            }
            if random.next(5) == 0 {
                p.insert(
                    "alignment".into(),
                    json!([1, 8, 64, 4096][random.next(4) as usize]),
                );
            }
            p.insert("priority".into(), json!(random.next(3) * 100 + i));
            partitions.insert(format!("p{i}"), Value::Object(p));
        }
        layouts.push((disk_mib << 20, layout_with(Value::Object(partitions))));
    }
    let results = in_parallel(&layouts, |(bytes, layout)| {
        let gpt = gpt_of(layout);
        let (model, real) = (model_run(&compute(&gpt, *bytes)), sgdisk_run(&gpt, *bytes));
        let mismatch = (model != real)
            .then(|| format!("{bytes} bytes, {layout}:\n  model {model:?}\n  sgdisk {real:?}"));
        (mismatch, real.1.is_some())
    });
    let refused = results.iter().filter(|(_, refused)| *refused).count();
    let mismatches: Vec<&String> = results.iter().filter_map(|(m, _)| m.as_ref()).collect();
    assert!(
        mismatches.is_empty(),
        "{}",
        mismatches
            .iter()
            .map(|m| m.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
    // The generator reaches both outcomes: tables sgdisk creates and ones it refuses.
    assert!(
        (10..=110).contains(&refused),
        "{refused} of 120 layouts refused"
    );
}

/// disko's hybrid MBR command with efiGptPartitionFirst (its default) has no
/// space before the device: sgdisk gets no device, does nothing, exits 0.
#[test]
fn diskos_default_hybrid_command_does_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("disk.img");
    std::fs::File::create(&image)
        .unwrap()
        .set_len(100 << 20)
        .unwrap();
    for (number, size) in [(1, "+1M"), (2, "+10M")] {
        let status = Command::new(sgdisk())
            .args(["--align-end", &format!("--new={number}:0:{size}")])
            .arg(&image)
            .status()
            .unwrap();
        assert!(status.success());
    }
    let mbr = |image: &std::path::Path| {
        let output = Command::new(sgdisk())
            .arg("-O")
            .arg(image)
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit()))
            .count()
    };
    // What bash makes of `sgdisk -h 2"<disk>"`: one word, "2<disk>".
    let broken = Command::new(sgdisk())
        .arg("-h")
        .arg(format!("2{}", image.display()))
        .output()
        .unwrap();
    assert!(broken.status.success(), "{broken:?}");
    assert_eq!(mbr(&image), 1, "only the protective 0xEE entry");
    // With efiGptPartitionFirst = false disko writes `sgdisk -h 2:EE "<disk>"`.
    let working = Command::new(sgdisk())
        .args(["-h", "2:EE"])
        .arg(&image)
        .output()
        .unwrap();
    assert!(working.status.success(), "{working:?}");
    assert_eq!(mbr(&image), 2, "the ESP and the 0xEE entry");
}

fn tool(name: &str, package: &str) -> String {
    which::which(name)
        .unwrap_or_else(|_| {
            panic!("{name} is missing: install it with `apt-get install {package}`")
        })
        .to_string_lossy()
        .into_owned()
}

/// The names udev gives /dev/disk/by-partlabel/ links: udev's builtin blkid
/// (systemd src/udev/udev-builtin-blkid.c) stores a GPT partition's name as
/// ID_PART_ENTRY_NAME through libblkid's `blkid_encode_string`, and
/// 60-persistent-storage.rules links `disk/by-partlabel/$env{ID_PART_ENTRY_NAME}`.
/// `blkid -p -o udev` prints the same encoding from the same libblkid, so this
/// reads it on a loop device and compares it with `names::udev_partlabel_path`
/// of the name sgdisk stores (`names::sgdisk_stored_name`). (`udevadm
/// test-builtin blkid` gave the same names when the corpus was recorded; it is
/// not run here, because the test machines need not have udev.) Needs root.
#[test]
fn udev_names_partitions_as_modelled() {
    assert!(
        std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0")),
        "this test attaches a loop device: run it as root (CI does)"
    );
    let (losetup, partx, blkid) = (
        tool("losetup", "mount"),
        tool("partx", "util-linux"),
        tool("blkid", "util-linux"),
    );
    let labels = [
        "disk-main-root",
        "a,b",
        "a/b",
        "a b",
        "données",
        "main:root",
        "x\\y",
        "tab\tx",
        "emoji😀",
        "caret^q",
        "q\"uo",
        "#+-.:=@_",
        "\u{fdd0}",
        "edee11f9e459da2174c7b8265cc774a0f23d",
    ];
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("labels.img");
    std::fs::File::create(&image)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    for (i, label) in labels.iter().enumerate() {
        let number = i + 1;
        let status = Command::new(sgdisk())
            .args(["--align-end", &format!("--new={number}:0:+1M")])
            .arg(format!("--change-name={number}:{label}"))
            .arg(&image)
            .output()
            .unwrap();
        assert!(status.status.success(), "{label:?}: {status:?}");
    }
    let attached = Command::new(&losetup)
        .args(["-f", "--show"])
        .arg(&image)
        .output()
        .unwrap();
    assert!(attached.status.success(), "losetup: {attached:?}");
    let loop_device = String::from_utf8_lossy(&attached.stdout).trim().to_owned();
    let detach = || {
        let _ = Command::new(&partx).args(["-d", &loop_device]).status();
        let _ = Command::new(&losetup).args(["-d", &loop_device]).status();
    };
    let added = Command::new(&partx)
        .args(["-a", &loop_device])
        .output()
        .unwrap();
    let mut failures = Vec::new();
    if !added.status.success() {
        failures.push(format!("partx -a: {added:?}"));
    }
    for (i, label) in labels.iter().enumerate() {
        if !failures.is_empty() {
            break;
        }
        let partition = format!("{loop_device}p{}", i + 1);
        let expected = names::udev_partlabel_path(&names::sgdisk_stored_name(label));
        let probed = Command::new(&blkid)
            .args(["-p", "-o", "udev", &partition])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&probed.stdout).into_owned();
        let name = text
            .lines()
            .find_map(|l| l.strip_prefix("ID_PART_ENTRY_NAME="))
            .map(|n| format!("/dev/disk/by-partlabel/{n}"));
        if name.as_deref() != Some(expected.as_str()) {
            failures.push(format!(
                "{label:?}: blkid gives {name:?}, the model {expected:?}"
            ));
        }
    }
    detach();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
