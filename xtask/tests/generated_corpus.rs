//! `check` against real disko on layouts nobody wrote by hand:
//! tests/fixtures/disko-corpus/generated.json holds layouts of
//! layout::generator and what real disko 878ec37 and the real tools
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

use std::collections::BTreeMap;

use camino::Utf8Path;
use layout::build::Evaluated;
use layout::findings::Finding;
use layout::generator::{self, DISK_BYTES};
use serde::Deserialize;
use serde_json::Value;
use xtask::check::judge_evaluated;
use xtask::deep::verdict::{self, real_stop, Real};
use xtask::hosts::{firmware, Machine};
use xtask::rules::InstallStop;

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

/// The disagreements of check with one recorded case, as lines.
pub fn disagreement(name: &str, layout: &Value, real: &Real, host: &Value) -> Option<String> {
    verdict::disagreement(name, layout, real, &judge(layout, host))
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
