//! `check` against real disko on layouts nobody wrote by hand:
//! tests/fixtures/disko-corpus/generated.json holds layouts of
//! xtask::layout::generator and what real disko 878ec37 and the real tools
//! did with each (record-generated.sh: disko's evaluation, its `_create`
//! under the real sgdisk on a sparse image, every mkfs/mkswap/btrfs for real
//! on a file of the partition's size, every mount on the kernel).
//!
//! Agreement: `check` reports an error that predicts a failed install
//! (`rules::install_stop`) exactly when the real install failed, and where the
//! real tools say where it stopped (evaluation, partitioning, mkfs, the swap
//! file, a mount), one of check's errors names that stop. A mount the kernel
//! here cannot do (vfat is not in every kernel) is not judged: the layouts
//! whose only predicted stop is such a mount are counted, not compared.

use std::collections::{BTreeMap, BTreeSet};

use camino::Utf8Path;
use serde::Deserialize;
use serde_json::Value;
use xtask::check::judge_evaluated;
use xtask::findings::{Finding, Severity};
use xtask::hosts::{firmware, Machine};
use xtask::layout::build::Evaluated;
use xtask::layout::generator::{self, DISK_BYTES};
use xtask::rules::{install_stop, InstallStop};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Corpus {
    disko: Revision,
    disk_bytes: u64,
    seed: u64,
    cases: BTreeMap<String, Case>,
}

#[derive(Deserialize)]
struct Revision {
    revision: String,
}

#[derive(Deserialize)]
struct Case {
    layout: Value,
    real: Real,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Real {
    evaluates: bool,
    #[serde(default)]
    error: String,
    #[serde(default)]
    create_exit: i32,
    #[serde(default)]
    create_tail: String,
    #[serde(default)]
    mounts: Vec<Mount>,
}

#[derive(Deserialize)]
struct Mount {
    mountpoint: String,
    status: String,
    message: String,
}

fn fixtures() -> String {
    format!("{}/tests/fixtures", env!("CARGO_MANIFEST_DIR"))
}

/// The host evaluation's persistence and machine facts: the generated layouts replace its layout only.
fn host() -> Value {
    let text = std::fs::read_to_string(format!("{}/hetzner-cloud.eval.json", fixtures()))
        .expect("reading the host's evaluation fixture");
    serde_json::from_str(&text).expect("the fixture is JSON")
}

/// What check finds in `layout`.
pub fn judge(layout: &Value, host: &Value) -> Vec<Finding> {
    let machine: Machine =
        serde_json::from_value(host["machine"].clone()).expect("the fixture's machine facts");
    judge_evaluated(
        &Evaluated {
            host: "hetzner-cloud",
            source: Utf8Path::new("generated.nix"),
            layout,
            persistence: &host["persistence"],
        },
        DISK_BYTES,
        firmware(&machine),
    )
}

/// Where the real install stopped, with the tool's words; `None` when it did not.
fn real_stop(real: &Real) -> Option<(InstallStop, String)> {
    if !real.evaluates {
        return Some((InstallStop::Evaluation, real.error.clone()));
    }
    if real.create_exit != 0 {
        let tail = &real.create_tail;
        // The last lines of the create script name the tool that stopped it.
        let stop = if tail.contains("swapfile") {
            InstallStop::SwapFile
        } else if [
            "Could not create partition",
            "Problem",
            "sgdisk",
            "Unable to",
        ]
        .iter()
        .any(|w| tail.contains(w))
        {
            InstallStop::Partitioning
        } else {
            InstallStop::Formatting
        };
        return Some((stop, tail.clone()));
    }
    real.mounts.iter().find(|m| m.status == "failed").map(|m| {
        // A fileSystems entry without a device: NixOS's own evaluation
        // throws "No device specified for mount point" before any mount.
        let stop = if m.message.contains("special device null does not exist") {
            InstallStop::Evaluation
        } else {
            InstallStop::Mount
        };
        (stop, format!("{}: {}", m.mountpoint, m.message))
    })
}

/// Paths (attribute-path prefixes) of filesystems whose mount the recorder could not run.
fn not_run_mounts(real: &Real) -> BTreeSet<String> {
    real.mounts
        .iter()
        .filter(|m| m.status == "notRun")
        .map(|m| m.mountpoint.clone())
        .collect()
}

/// The disagreements of check with one recorded case, as lines.
pub fn disagreement(name: &str, layout: &Value, real: &Real, host: &Value) -> Option<String> {
    let findings = judge(layout, host);
    let stops: BTreeMap<InstallStop, Vec<&Finding>> = findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .filter_map(|f| install_stop(f.code).map(|s| (s, f)))
        .fold(BTreeMap::new(), |mut map, (stop, f)| {
            map.entry(stop).or_default().push(f);
            map
        });
    let describe = |list: &[&Finding]| {
        list.iter()
            .map(|f| format!("{} {}: {}", f.code, f.path, f.message))
            .collect::<Vec<_>>()
            .join("; ")
    };
    match real_stop(real) {
        Some((stop, words)) => {
            // A feature only later mkfs.btrfs versions know: check warns
            // (PART014); the recorded mkfs.btrfs (6.2) is one that refuses it.
            let version = words.contains("unrecognized filesystem feature")
                && findings.iter().any(|f| f.code == "PART014");
            // disko's nodev devices are not modelled (MODEL007 says "not checked").
            let nodev = stop == InstallStop::Mount
                && findings.iter().any(|f| f.code == "MODEL007")
                && real
                    .mounts
                    .iter()
                    .filter(|m| m.status == "failed")
                    .all(|m| {
                        layout["disko"]["devices"]["nodev"]
                            .as_object()
                            .is_some_and(|n| {
                                n.iter().any(|(k, v)| {
                                    v["mountpoint"].as_str().unwrap_or(k) == m.mountpoint
                                })
                            })
                    });
            if stops.contains_key(&stop) || version || nodev {
                None
            } else {
                Some(format!(
                    "{name}: the real install stops at {stop:?} ({words}); check predicts {}",
                    if stops.is_empty() {
                        "no stop".to_owned()
                    } else {
                        stops
                            .iter()
                            .map(|(s, l)| format!("{s:?}: {}", describe(l)))
                            .collect::<Vec<_>>()
                            .join(" | ")
                    }
                ))
            }
        }
        None => {
            if stops.is_empty() {
                return None;
            }
            // A mount the kernel here could not try is not judged.
            let not_run = not_run_mounts(real);
            let judged: Vec<(&InstallStop, &Vec<&Finding>)> = stops
                .iter()
                .filter(|(stop, list)| {
                    !(**stop == InstallStop::Mount
                        && !not_run.is_empty()
                        && list.iter().all(|f| about_mounts(layout, f, &not_run)))
                })
                .collect();
            // The recorder's disks are image files: one named like a
            // partition still gets partitions there, which a real partition
            // does not (DEV004 is the kernel's rule, not judged here).
            let judged: Vec<_> = judged
                .into_iter()
                .filter(|(_, list)| !list.iter().all(|f| f.code == "DEV004"))
                .collect();
            if judged.is_empty() {
                return None;
            }
            Some(format!(
                "{name}: the real install succeeds; check predicts {}",
                judged
                    .iter()
                    .map(|(s, l)| format!("{s:?}: {}", describe(l)))
                    .collect::<Vec<_>>()
                    .join(" | ")
            ))
        }
    }
}

/// Whether a finding is about one of `mountpoints` (its attribute path leads to a content mounted there).
fn about_mounts(layout: &Value, finding: &Finding, mountpoints: &BTreeSet<String>) -> bool {
    let mut node = layout;
    for segment in finding.path.segments() {
        if let Some(mountpoint) = node.get("mountpoint").and_then(Value::as_str) {
            if mountpoints.contains(mountpoint) {
                return true;
            }
        }
        node = match node.get(segment) {
            Some(next) => next,
            None => return false,
        };
    }
    node.get("content")
        .and_then(|c| c.get("mountpoint"))
        .or_else(|| node.get("mountpoint"))
        .and_then(Value::as_str)
        .is_some_and(|m| mountpoints.contains(m))
}

fn corpus() -> Corpus {
    let text = std::fs::read_to_string(format!("{}/disko-corpus/generated.json", fixtures()))
        .expect("reading generated.json");
    serde_json::from_str(&text).expect("generated.json parses")
}

/// The recorded layouts are still what the generator makes: a change to the
/// generator that moves a draw shows here, not as a corpus that no longer
/// matches what record-generated.sh would record.
#[test]
fn the_generator_still_makes_the_recorded_layouts() {
    let corpus = corpus();
    let prefix = format!("g{}-", corpus.seed);
    for (name, case) in &corpus.cases {
        let index: u64 = name
            .strip_prefix(&prefix)
            .and_then(|i| i.parse().ok())
            .unwrap_or_else(|| panic!("{name} is not {prefix}<index>"));
        assert!(
            generator::layout(corpus.seed, index) == case.layout,
            "{name}: the generator no longer makes the recorded layout"
        );
    }
}

#[test]
fn check_agrees_with_real_disko_on_every_generated_layout() {
    let corpus = corpus();
    assert_eq!(
        corpus.disko.revision,
        "878ec37d6a8f52c6c801d0e2a2ad554c75b9353c"
    );
    assert_eq!(corpus.disk_bytes, DISK_BYTES);
    let host = host();
    let failures: Vec<String> = corpus
        .cases
        .iter()
        .filter_map(|(name, case)| disagreement(name, &case.layout, &case.real, &host))
        .collect();
    let failing = corpus
        .cases
        .values()
        .filter(|c| real_stop(&c.real).is_some())
        .count();
    eprintln!(
        "{} generated layouts: the real install fails on {failing}, succeeds on {}; {} disagreements",
        corpus.cases.len(),
        corpus.cases.len() - failing,
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{}\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(
        corpus.cases.len() >= 500,
        "only {} recorded layouts",
        corpus.cases.len()
    );
}

/// The corpus reaches every kind of stop and both verdicts, so agreement means something.
#[test]
fn the_generated_corpus_covers_every_stop() {
    let corpus = corpus();
    let mut seen: BTreeMap<InstallStop, usize> = BTreeMap::new();
    let mut succeeds = 0;
    for case in corpus.cases.values() {
        match real_stop(&case.real) {
            Some((stop, _)) => *seen.entry(stop).or_default() += 1,
            None => succeeds += 1,
        }
    }
    assert!(succeeds >= 100, "only {succeeds} layouts install: {seen:?}");
    for stop in [
        InstallStop::Evaluation,
        InstallStop::Partitioning,
        InstallStop::Formatting,
        InstallStop::SwapFile,
        InstallStop::Mount,
    ] {
        assert!(
            seen.get(&stop).copied().unwrap_or(0) >= 3,
            "{stop:?}: {seen:?}"
        );
    }
}
