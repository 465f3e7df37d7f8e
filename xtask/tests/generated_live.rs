//! Fresh generated layouts (layout::generator, a new seed each run,
//! printed) judged by `check` and, live, by the parts of the real install
//! that need only mkfs, mount and loop devices (as root; CI is root):
//!
//! - every Btrfs and ext4 mount of the layout, parents first, with the
//!   options NixOS passes, on a real filesystem on a loop device whose
//!   subvolumes are the ones disko creates (in disko's order): the kernel
//!   refuses a mount exactly when check predicts a failed mount;
//! - every mkfs.vfat and mkfs.btrfs with the layout's extraArgs, on a sparse
//!   file of the partition's size as check places it: mkfs refuses exactly
//!   when check predicts a failed mkfs.
//!
//! Replay a failure with `GENERATED_SEED=<seed> cargo test -p xtask --test generated_live`.
//! The recorded corpus (tests/generated_corpus.rs) holds what needs real
//! disko and Nix: evaluation, sgdisk under disko's own script.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use camino::{Utf8Path, Utf8PathBuf};
use layout::build::{build, Evaluated};
use layout::findings::{Finding, Severity};
use layout::generator::{self, DISK_BYTES};
use layout::Content;
use serde_json::Value;
use xtask::check::judge_evaluated;
use xtask::hosts::{firmware, Machine, Model};
use xtask::rules::{install_stop, InstallStop};

/// How many fresh layouts one run judges (GENERATED_LAYOUTS changes it).
const LAYOUTS: u64 = 300;
/// The kernel and mkfs are asked only this long; the rest is judged from
/// what was already asked (the count is printed).
const LIVE_BUDGET: Duration = Duration::from_secs(25);

fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} does not run ({e}); install it (cargo xtask test installs the test tools)"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if output.status.success() {
        Ok(text)
    } else {
        Err(text
            .trim()
            .lines()
            .rev()
            .take(3)
            .collect::<Vec<_>>()
            .join(" / "))
    }
}

/// Loop devices over image files, one per filesystem a layout mounts: the
/// i-th Btrfs of a layout is image "btrfs<i>", made again whenever it must
/// hold other subvolumes.
struct Scratch {
    dir: Utf8PathBuf,
    /// By slot name: the loop device, and the subvolumes its Btrfs holds.
    images: BTreeMap<String, (String, Option<Vec<String>>)>,
    /// Images made so far (each gets its own file).
    made: u32,
}

impl Scratch {
    fn new() -> Scratch {
        let base = if Utf8Path::new("/dev/shm").is_dir() {
            "/dev/shm"
        } else {
            "/tmp"
        };
        let dir = Utf8PathBuf::from(format!(
            "{base}/xtask-generated-live-{}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("a scratch directory");
        Scratch {
            dir,
            images: BTreeMap::new(),
            made: 0,
        }
    }

    /// The loop device of `slot`, holding a fresh filesystem of `fs_type`
    /// with `subvolumes` (created in disko's order, by name) when it did not already.
    fn device(&mut self, slot: &str, fs_type: &str, subvolumes: &[String]) -> String {
        if let Some((device, held)) = self.images.get(slot) {
            if fs_type != "btrfs" || held.as_deref() == Some(subvolumes) {
                return device.clone();
            }
        }
        // A fresh image on a fresh loop device each time: a loop device a
        // Btrfs was just unmounted from can stay busy for mkfs' exclusive open.
        if let Some((old, _)) = self.images.remove(slot) {
            let _ = run("losetup", &["--detach", &old]);
        }
        self.made += 1;
        let image = self.dir.join(format!("{slot}-{}.img", self.made));
        let bytes: u64 = if fs_type == "btrfs" {
            1 << 30
        } else {
            256 << 20
        };
        std::fs::File::create(&image)
            .and_then(|f| f.set_len(bytes))
            .expect("a sparse image");
        match fs_type {
            "btrfs" => run("mkfs.btrfs", &["-q", "-f", image.as_str()])
                .expect("mkfs.btrfs on a scratch image"),
            _ => run("mkfs.ext4", &["-q", "-F", image.as_str()])
                .expect("mkfs.ext4 on a scratch image"),
        };
        let device = run("losetup", &["--find", "--show", image.as_str()])
            .expect("losetup (loop devices, as root)")
            .trim()
            .to_owned();
        if fs_type == "btrfs" && !subvolumes.is_empty() {
            let top = self.dir.join("top");
            std::fs::create_dir_all(&top).expect("a mountpoint");
            run("mount", &["-t", "btrfs", &device, top.as_str()])
                .expect("mounting a scratch Btrfs");
            let mut sorted = subvolumes.to_vec();
            sorted.sort();
            for name in &sorted {
                // disko makes the parent directory first (lib/types/btrfs.nix
                // at 878ec37: mkdir -p "$(dirname "$SUBVOL_ABS_PATH")").
                let path = top.join(name);
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).expect("a subvolume's parent directory");
                }
                let _ = run("btrfs", &["subvolume", "create", path.as_str()]);
            }
            run("umount", &[top.as_str()]).expect("unmounting a scratch Btrfs");
        }
        self.images
            .insert(slot.to_owned(), (device.clone(), Some(subvolumes.to_vec())));
        device
    }

    /// Mounts in order (fs type, options, mountpoint, device); the first refusal, with the kernel's words.
    fn mount_all(&self, mounts: &[(String, String, String, String)]) -> Option<String> {
        let mut mounted = Vec::new();
        let mut refused = None;
        for (index, (fs_type, options, mountpoint, device)) in mounts.iter().enumerate() {
            let target = self.dir.join(format!("m{index}"));
            std::fs::create_dir_all(&target).expect("a mountpoint");
            match run(
                "mount",
                &["-t", fs_type, "-o", options, device, target.as_str()],
            ) {
                Ok(_) => mounted.push(target),
                Err(message) => {
                    refused = Some(format!("{mountpoint} ({options}): {message}"));
                    break;
                }
            }
        }
        for target in mounted.iter().rev() {
            run("umount", &[target.as_str()]).expect("unmounting");
        }
        refused
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for (device, _) in self.images.values() {
            let _ = run("losetup", &["--detach", device]);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn host() -> Value {
    let path = format!(
        "{}/tests/fixtures/hetzner-cloud.eval.json",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(path).expect("the host fixture")).expect("JSON")
}

fn stops(findings: &[Finding], stop: InstallStop) -> Vec<&Finding> {
    findings
        .iter()
        .filter(|f| f.severity == Severity::Error && install_stop(f.code) == Some(stop))
        .collect()
}

#[test]
fn fresh_generated_layouts_agree_with_the_real_tools() {
    assert!(
        unsafe { libc::geteuid() } == 0,
        "needs root for loop devices and mounts (CI runs as root): sudo -E cargo test -p xtask --test generated_live"
    );
    let seed: u64 = std::env::var("GENERATED_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_secs())
        });
    let layouts: u64 = std::env::var("GENERATED_LAYOUTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(LAYOUTS);
    eprintln!(
        "seed {seed}: replay with GENERATED_SEED={seed} cargo test -p xtask --test generated_live"
    );
    let host = host();
    let machine: Machine = serde_json::from_value(host["machine"].clone()).expect("machine facts");
    let mut scratch = Scratch::new();
    let started = Instant::now();
    let mut mount_verdicts: BTreeMap<String, Option<String>> = BTreeMap::new();
    let mut mkfs_verdicts: BTreeMap<String, Option<String>> = BTreeMap::new();
    let (mut not_asked, mut mounts_judged, mut mkfs_judged) = (0, 0, 0);
    let mut failures = Vec::new();
    for index in 0..layouts {
        let layout = generator::layout(seed, index);
        let evaluated = Evaluated {
            host: "hetzner-cloud",
            source: Utf8Path::new("generated.nix"),
            layout: &layout,
            persistence: &host["persistence"],
        };
        let findings = judge_evaluated(&evaluated, DISK_BYTES, firmware(&machine));
        // A layout that does not evaluate never reaches a mount or mkfs.
        if findings.iter().any(|f| {
            f.severity == Severity::Error && install_stop(f.code) == Some(InstallStop::Evaluation)
        }) {
            continue;
        }
        let (Some(model_layout), _) = build(&evaluated) else {
            continue;
        };
        let sizes: BTreeMap<String, u64> = model_layout
            .disks
            .iter()
            .map(|d| (d.key.clone(), DISK_BYTES))
            .collect();
        let model = Model::new(&model_layout, &sizes, firmware(&machine));
        let name = format!("seed {seed} layout {index}");

        // mkfs with the layout's extraArgs, where check places the partition.
        // DEV003/DEV004 (udev's links, whole disks) need disko's own script: the recorded corpus holds them.
        let formatting: Vec<&Finding> = stops(&findings, InstallStop::Formatting)
            .into_iter()
            .filter(|f| f.code.starts_with("PART"))
            .collect();
        for disk in &model_layout.disks {
            let Some(layout::DiskContent::Gpt(gpt)) = &disk.content else {
                continue;
            };
            for partition in &gpt.partitions {
                let (tool, args, path) = match &partition.content {
                    Some(Content::Filesystem(fs)) if fs.format == "vfat" => {
                        ("mkfs.vfat", &fs.extra_args, &fs.path)
                    }
                    Some(Content::Btrfs(b)) => ("mkfs.btrfs", &b.extra_args, &b.path),
                    _ => continue,
                };
                let Some(bytes) = model.partition_bytes(disk, partition) else {
                    continue;
                };
                let key = format!("{tool} {args:?} {bytes}");
                if !mkfs_verdicts.contains_key(&key) {
                    if started.elapsed() > LIVE_BUDGET {
                        not_asked += 1;
                        continue;
                    }
                    let file = scratch.dir.join("mkfs.img");
                    let _ = std::fs::remove_file(&file);
                    std::fs::File::create(&file)
                        .and_then(|f| f.set_len(bytes))
                        .expect("a sparse file");
                    let mut argv: Vec<&str> = args.iter().map(String::as_str).collect();
                    argv.push(file.as_str());
                    mkfs_verdicts.insert(key.clone(), run(tool, &argv).err());
                }
                mkfs_judged += 1;
                let real = &mkfs_verdicts[&key];
                let here = |f: &&Finding| {
                    f.path.segments().starts_with(partition.path.segments())
                        || f.path.segments().starts_with(path.segments())
                };
                // A feature only later mkfs.btrfs versions know: check warns
                // (PART014), and this mkfs.btrfs is one that refuses it.
                let version_dependent = findings
                    .iter()
                    .filter(|f| f.code == "PART014")
                    .any(|f| here(&f));
                let predicted = formatting.iter().any(here)
                    || (version_dependent
                        && real
                            .as_deref()
                            .is_some_and(|m| m.contains("unrecognized filesystem feature")));
                if real.is_some() != predicted {
                    failures.push(format!(
                        "{name}: {tool} {args:?} on {bytes} B: real {}, check {}",
                        real.as_deref()
                            .map_or("formats".to_owned(), |m| format!("refuses ({m})")),
                        if predicted {
                            "predicts a refusal"
                        } else {
                            "predicts none"
                        }
                    ));
                }
            }
        }

        // An install that stops at sgdisk or mkfs never mounts: nothing to compare.
        if findings.iter().any(|f| {
            f.severity == Severity::Error
                && matches!(
                    install_stop(f.code),
                    Some(
                        InstallStop::Partitioning | InstallStop::Formatting | InstallStop::SwapFile
                    )
                )
        }) {
            continue;
        }
        // The Btrfs and ext4 mounts, parents first.
        let mut mounts: Vec<&layout::Mount> = model
            .mounts
            .iter()
            .filter(|m| m.fs_type == "btrfs" || m.fs_type == "ext4")
            .collect();
        if mounts.is_empty() {
            continue;
        }
        mounts.sort_by_key(|m| m.mountpoint.len());
        // Each filesystem of the layout: its slot and the subvolumes disko creates in it.
        let mut filesystems: Vec<(String, String, Vec<String>)> = Vec::new();
        for mount in &mounts {
            if filesystems
                .iter()
                .any(|(device, _, _)| *device == mount.device)
            {
                continue;
            }
            let subvolumes: Vec<String> = model_layout
                .contents()
                .filter_map(|(_, _, c)| match c {
                    Content::Btrfs(b) if b.device == mount.device => Some(
                        b.subvolumes
                            .iter()
                            .map(|s| s.name.clone())
                            .collect::<Vec<_>>(),
                    ),
                    _ => None,
                })
                .flatten()
                .collect();
            let ordinal = filesystems.len();
            filesystems.push((
                mount.device.clone(),
                format!("{}{ordinal}", mount.fs_type),
                subvolumes,
            ));
        }
        let key = format!(
            "{filesystems:?} {:?}",
            mounts
                .iter()
                .map(|m| (&m.device, &m.fs_type, &m.options))
                .collect::<Vec<_>>()
        );
        if !mount_verdicts.contains_key(&key) {
            if started.elapsed() > LIVE_BUDGET {
                not_asked += 1;
                continue;
            }
            let mut devices = BTreeMap::new();
            for (device, slot, subvolumes) in &filesystems {
                let fs_type = if slot.starts_with("btrfs") {
                    "btrfs"
                } else {
                    "ext4"
                };
                devices.insert(device.clone(), scratch.device(slot, fs_type, subvolumes));
            }
            let sequence: Vec<(String, String, String, String)> = mounts
                .iter()
                .map(|m| {
                    let options: Vec<&str> = m
                        .options
                        .iter()
                        .map(String::as_str)
                        // mount(8) passes x-* options to no filesystem.
                        .filter(|o| !o.starts_with("x-"))
                        .collect();
                    (
                        m.fs_type.clone(),
                        options.join(","),
                        m.mountpoint.clone(),
                        devices[&m.device].clone(),
                    )
                })
                .collect();
            mount_verdicts.insert(key.clone(), scratch.mount_all(&sequence));
        }
        mounts_judged += 1;
        let real = &mount_verdicts[&key];
        let predicted: Vec<&Finding> = stops(&findings, InstallStop::Mount)
            .into_iter()
            .filter(|f| {
                let at = f.path.segments();
                mounts.iter().any(|m| {
                    at.starts_with(m.path.segments())
                        || m.path.segments().starts_with(at)
                        || at.starts_with(&["fileSystems".to_owned(), m.mountpoint.clone()])
                })
            })
            .collect();
        // Subvolumes the generator never created on this image (a layout's own
        // names are all created) cannot explain a refusal: compare.
        if real.is_some() == predicted.is_empty() {
            failures.push(format!(
                "{name}: the kernel {}; check predicts {}",
                real.as_deref()
                    .map_or("mounts every filesystem".to_owned(), |m| format!(
                        "refuses {m}"
                    )),
                if predicted.is_empty() {
                    "no failed mount".to_owned()
                } else {
                    predicted
                        .iter()
                        .map(|f| format!("{} {}: {}", f.code, f.path, f.message))
                        .collect::<Vec<_>>()
                        .join("; ")
                }
            ));
        }
    }
    eprintln!(
        "{layouts} fresh layouts in {:.1} s: {mounts_judged} mount sequences ({} asked of the kernel), {mkfs_judged} mkfs runs ({} run); {not_asked} not asked (time budget); {} disagreements",
        started.elapsed().as_secs_f64(),
        mount_verdicts.len(),
        mkfs_verdicts.len(),
        failures.len()
    );
    assert!(failures.is_empty(), "seed {seed}:\n{}", failures.join("\n"));
}
