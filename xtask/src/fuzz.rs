//! `cargo xtask fuzz`: runs the cargo-fuzz targets in fuzz/ for a while each
//! (docs/fuzzing.md), and the checks those targets apply. The checks live
//! here, not in fuzz/, so that the normal test suite replays every input a
//! fuzzer ever crashed on (tests/fuzz_regressions.rs, inputs in
//! tests/fixtures/fuzz/<target>/) without cargo-fuzz or a nightly compiler.
//!
//! A check returns normally for any input and panics when an invariant
//! breaks: a panic is what a fuzzer reports.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::{bail, Context as _, Result};
use camino::{Utf8Path, Utf8PathBuf};
use serde_json::Value;

use crate::nix_eval::{read_evaluation, too_deep, MAX_DEPTH};
use crate::report::{render, CheckReport, FlakeStatus, HostReport, Mode, Tables, SCHEMA};
use layout::build::{build, Evaluated};
use layout::findings::{AttrPath, Severity};
use layout::geometry::{self, DiskGeometry};
use layout::size::{human, human_decimal, parse_disk_size, parse_partition_size, PartitionSize};
use layout::{DiskContent, Gpt, Partition};
use toolbox::process::{Output, Supervised};
use toolbox::project::project_root;

use crate::hosts::{Firmware, Model};
use crate::rules;
use toolbox::context::{Context, Install};
use toolbox::setup::NO_INSTALL_ENV;

/// The fuzz targets, each a file fuzz/fuzz_targets/<name>.rs calling the check of the same name.
pub const TARGETS: &[&str] = &["size", "model", "geometry", "evaluation"];

#[derive(Debug, clap::Args)]
pub struct Args {
    /// How long to fuzz each target, in seconds (at least 1).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub seconds: u64,
    /// Fuzz only this target.
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(TARGETS))]
    pub target: Option<String>,
    /// Print the outcome per target as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// How fuzzing one target ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Ran for the whole time without a crash.
    Survived,
    /// libFuzzer found an input that breaks an invariant (saved in fuzz/artifacts/).
    Crashed,
    /// cargo fuzz did not get to fuzz (a build error, a missing toolchain).
    CouldNotRun,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct TargetReport {
    pub target: String,
    pub seconds: u64,
    pub outcome: Outcome,
    /// New files in fuzz/artifacts/<target>/.
    pub artifacts: Vec<String>,
}

fn artifacts(dir: &Utf8Path) -> Vec<String> {
    let mut names: Vec<String> = dir
        .read_dir_utf8()
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

pub fn run(context: &Context, args: Args) -> Result<ExitCode> {
    let targets: Vec<&str> = match &args.target {
        Some(target) => TARGETS.iter().copied().filter(|t| t == target).collect(),
        None => TARGETS.to_vec(),
    };
    ensure_cargo_fuzz(context)?;
    let dir = project_root().join("fuzz");
    let progress = toolbox::progress::Progress::lines("fuzz");
    let mut reports = Vec::new();
    for (index, target) in targets.iter().copied().enumerate() {
        let corpus = dir.join("corpus").join(target);
        std::fs::create_dir_all(&corpus).with_context(|| format!("creating {corpus}"))?;
        let artifact_dir = dir.join("artifacts").join(target);
        let before = artifacts(&artifact_dir);
        let mut command = Supervised::new("cargo")
            .current_dir(&dir)
            // cargo-fuzz passes -Z flags; this lets a stable rustc take them.
            .env("RUSTC_BOOTSTRAP", "1")
            .args(["fuzz", "run", "-O", "--debug-assertions", target])
            .arg(corpus.as_str());
        let seeds = dir.join("seeds").join(target);
        if seeds.is_dir() {
            command = command.arg(seeds.as_str());
        }
        command = command.args([
            "--",
            &format!("-max_total_time={}", args.seconds),
            "-rss_limit_mb=2048",
            "-max_len=65536",
            "-print_final_stats=1",
        ]);
        // Tokens that make up the target's inputs (fuzz/<target>.dict).
        let dict = dir.join(format!("{target}.dict"));
        if dict.is_file() {
            command = command.arg(format!("-dict={dict}"));
        }
        command = command.inherit_output();
        if args.json {
            // stdout carries the JSON document only.
            command = command.stdout(Output::Null);
        }
        let status = progress
            .step(
                &format!(
                    "target {}/{} {target}: {} s of fuzzing (after the build)",
                    index + 1,
                    targets.len(),
                    args.seconds
                ),
                || command.status(),
            )
            .context("running cargo fuzz (cargo install cargo-fuzz)")?;
        let new: Vec<String> = artifacts(&artifact_dir)
            .into_iter()
            .filter(|a| !before.contains(a))
            .collect();
        let outcome = if !new.is_empty() {
            Outcome::Crashed
        } else if status.success() {
            Outcome::Survived
        } else {
            Outcome::CouldNotRun
        };
        reports.push(TargetReport {
            target: target.to_owned(),
            seconds: args.seconds,
            outcome,
            artifacts: new,
        });
    }
    for report in &reports {
        match report.outcome {
            Outcome::Survived => eprintln!("{}: no crash in {} s", report.target, report.seconds),
            Outcome::Crashed => eprintln!(
                "{}: crashed; the input is in fuzz/artifacts/{}/ ({}). Copy it to xtask/tests/fixtures/fuzz/{}/ (a regression test replays it), then fix the code.",
                report.target,
                report.target,
                report.artifacts.join(", "),
                report.target
            ),
            Outcome::CouldNotRun => eprintln!(
                "{}: cargo fuzz failed before it found anything (its message is above)",
                report.target
            ),
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    }
    Ok(if reports.iter().any(|r| r.outcome == Outcome::Crashed) {
        ExitCode::from(1)
    } else if reports.iter().any(|r| r.outcome == Outcome::CouldNotRun) {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

/// cargo-fuzz, installed with `cargo install` when missing and allowed.
fn ensure_cargo_fuzz(context: &Context) -> Result<()> {
    let installed = Supervised::new("cargo")
        .args(["fuzz", "--version"])
        .run()
        .is_ok_and(|finished| finished.success());
    if installed {
        return Ok(());
    }
    if context.install() == Install::Forbidden {
        bail!("cargo-fuzz is missing and installing is turned off ({NO_INSTALL_ENV}=1 or --no-install): run `cargo install cargo-fuzz`");
    }
    eprintln!("installing cargo-fuzz: cargo install cargo-fuzz");
    let status = Supervised::new("cargo")
        .args(["install", "cargo-fuzz"])
        .inherit_output()
        .status()
        .context("running cargo install cargo-fuzz")?;
    anyhow::ensure!(status.success(), "cargo install cargo-fuzz failed");
    Ok(())
}

/// The replayable inputs of a target: tests/fixtures/fuzz/<target>/*.
pub fn regression_inputs(target: &str) -> Result<Vec<Utf8PathBuf>> {
    let dir = project_root()
        .join("xtask")
        .join("tests")
        .join("fixtures")
        .join("fuzz")
        .join(target);
    let mut files = Vec::new();
    for entry in dir
        .read_dir_utf8()
        .with_context(|| format!("reading {dir}"))?
    {
        let path = entry.with_context(|| format!("reading {dir}"))?.into_path();
        if path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Runs the check of `target` on `data`.
pub fn check(target: &str, data: &[u8]) {
    match target {
        "size" => check_size(data),
        "model" => check_model(data),
        "geometry" => check_geometry(data),
        "evaluation" => check_evaluation(data),
        other => panic!("no fuzz target {other:?}"),
    }
}

/// The value of `digits` (ASCII digits) times `unit`, if it fits in u64.
fn expected_bytes(digits: &str, unit: u128) -> Option<u64> {
    let mut value: u128 = 0;
    for digit in digits.bytes() {
        value = value
            .checked_mul(10)?
            .checked_add(u128::from(digit.checked_sub(b'0')?))?;
        if value > u128::from(u64::MAX) {
            return None;
        }
    }
    u64::try_from(value.checked_mul(unit)?).ok()
}

fn leading_digits(text: &str) -> (&str, &str) {
    let end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    text.split_at(end)
}

/// The size parsers accept exactly disko's forms, with exactly their value.
pub fn check_size(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse_partition_size(text) {
        Ok(PartitionSize::Rest) => assert_eq!(text, "100%"),
        Ok(PartitionSize::Bytes(bytes)) => {
            let (digits, unit) = leading_digits(text);
            assert!(!digits.is_empty(), "{text:?} accepted without digits");
            let multiplier: u128 = match unit {
                "" => 512,
                "K" => 1 << 10,
                "M" => 1 << 20,
                "G" => 1 << 30,
                "T" => 1 << 40,
                "P" => 1 << 50,
                other => panic!("{text:?} accepted with unit {other:?}"),
            };
            assert_eq!(Some(bytes), expected_bytes(digits, multiplier), "{text:?}");
            let _ = (human(bytes), human_decimal(bytes));
        }
        Err(error) => {
            let _ = error.to_string();
        }
    }
    if let Ok(bytes) = parse_disk_size(text) {
        assert!(bytes > 0, "{text:?} is a disk of zero bytes");
        let (digits, _) = leading_digits(text.trim());
        assert!(!digits.is_empty(), "{text:?} accepted without digits");
        let _ = (human(bytes), human_decimal(bytes));
    }
}

/// Placed partitions lie in the usable sectors, in order, without overlap.
fn assert_sound(geometry: &DiskGeometry) {
    let mut extents: Vec<_> = geometry.extents.iter().collect();
    extents.sort_by_key(|e| e.start_sector);
    for extent in &extents {
        assert!(
            extent.start_sector >= geometry.first_usable_sector
                && extent.end_sector <= geometry.last_usable_sector
                && extent.start_sector <= extent.end_sector,
            "an extent outside the usable sectors: {geometry:?}"
        );
        let _ = (
            extent.size_bytes(),
            extent.end_bytes(),
            extent.start_bytes(),
        );
    }
    for pair in extents.windows(2) {
        assert!(
            pair[0].end_sector < pair[1].start_sector,
            "overlapping extents: {geometry:?}"
        );
    }
    assert!(geometry.extents.len() <= geometry::MAX_PARTITIONS);
    if geometry.problems.is_empty() {
        let _ = geometry.unallocated_bytes();
    }
}

/// Disk sizes the model check tries: nothing fits, almost nothing, the CPX52, the largest.
const DISK_SIZES: [u64; 5] = [0, 17 * 1024, 1 << 20, 480_000_000_000, u64::MAX];

/// JSON as nix-instantiate prints it (`{ "layout": …, "persistence": … }`, or a
/// bare layout) through the model, the geometry, every rule, the tables and
/// both reports.
pub fn check_model(data: &[u8]) {
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let (layout, persistence) = match value.get("layout") {
        Some(layout) => (layout, value.get("persistence").unwrap_or(&Value::Null)),
        None => (&value, &Value::Null),
    };
    let (built, mut findings) = build(&Evaluated {
        host: "fuzz",
        source: Utf8Path::new("/fuzz/disko.nix"),
        layout,
        persistence,
    });
    let Some(layout) = built else {
        assert!(
            findings.iter().any(|f| f.severity == Severity::Error),
            "no layout and no error: {findings:?}"
        );
        return;
    };
    for size in DISK_SIZES {
        for disk in &layout.disks {
            if let Some(DiskContent::Gpt(gpt)) = &disk.content {
                assert_sound(&geometry::compute(gpt, size));
            }
        }
    }
    let sizes: BTreeMap<String, u64> = layout
        .disks
        .iter()
        .map(|disk| (disk.key.clone(), 480_000_000_000))
        .collect();
    for firmware in [
        Firmware::default(),
        Firmware {
            bios: false,
            uefi: false,
        },
    ] {
        let model = Model::new(&layout, &sizes, firmware);
        findings.extend(rules::run(&model));
        let report = CheckReport {
            schema: SCHEMA,
            mode: Mode::Standalone,
            hosts: vec![HostReport {
                host: "fuzz".into(),
                source: "/fuzz/disko.nix".into(),
                flake: FlakeStatus::NotRequested,
                disk_sizes: sizes.clone(),
                tables: Some(Tables::new(&model)),
                findings: findings.clone(),
                notes: Vec::new(),
            }],
            errors: 0,
            warnings: 0,
            duration_ms: 0,
            deep: None,
        };
        let _ = render(&report);
        if let Err(error) = serde_json::to_string(&report) {
            panic!("the report does not serialise: {error}");
        }
    }
}

/// Partitions as text, one a line, on a disk of the first line's size:
/// ```text
/// 480000000000
/// 1M 0 +1M 0
/// 100%
/// ```
/// Each line is `size [start [end [alignment]]]`; missing fields take
/// disko's defaults. Any bytes give some table; the geometry must be sound.
pub fn check_geometry(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.lines();
    let first = lines.next().unwrap_or("").trim();
    let disk_bytes = first
        .parse::<u64>()
        .ok()
        .or_else(|| parse_disk_size(first).ok())
        .unwrap_or(480_000_000_000);
    let partitions: Vec<Partition> = lines
        .take(300)
        .enumerate()
        .map(|(index, line)| {
            let mut fields = line.split_whitespace();
            let size_text = fields.next().unwrap_or("0").to_owned();
            let start = fields.next().unwrap_or("0").to_owned();
            let end = fields.next().map(str::to_owned).unwrap_or_else(|| {
                if size_text == "100%" {
                    "-0".to_owned()
                } else {
                    format!("+{size_text}")
                }
            });
            let alignment = fields.next().and_then(|a| a.parse().ok()).unwrap_or(0);
            let key = format!("p{index}");
            Partition {
                path: AttrPath::new(["p", key.as_str()]),
                key: key.clone(),
                name: key.clone(),
                number: u32::try_from(index + 1).unwrap_or(u32::MAX),
                type_code: "8300".to_owned(),
                label: key.clone(),
                device: format!("/dev/disk/by-partlabel/{key}"),
                size: parse_partition_size(&size_text),
                size_text,
                start,
                end,
                priority: 1000,
                alignment,
                content: None,
                hybrid: None,
                partlabel: None,
            }
        })
        .collect();
    let gpt = Gpt {
        path: AttrPath::root(),
        partitions,
        efi_gpt_partition_first: true,
    };
    assert_sound(&geometry::compute(&gpt, disk_bytes));
}

/// What nix-instantiate printed, as any bytes: a value, findings or an
/// error, never a panic; JSON too deep for serde_json is always a finding.
pub fn check_evaluation(data: &[u8]) {
    let _ = too_deep(data, MAX_DEPTH);
    let _ = too_deep(data, 3);
    match read_evaluation(data) {
        Ok(Ok(_)) => {}
        Ok(Err(findings)) => assert!(!findings.is_empty()),
        Err(error) => {
            let message = format!("{error:#}");
            assert!(
                !message.contains("recursion limit exceeded"),
                "deep JSON must be a finding: {message}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_bytes_counts_like_the_parser() {
        assert_eq!(expected_bytes("1", 1 << 20), Some(1 << 20));
        assert_eq!(expected_bytes("18446744073709551616", 1), None);
        assert_eq!(expected_bytes("16384", 1 << 50), None);
    }

    #[test]
    fn checks_pass_on_plain_inputs() {
        check_size(b"32G");
        check_size(b"100%");
        check_geometry(b"480000000000\n1M\n1G\n32G\n100%\n");
        check_evaluation(br#"{"layout":{}}"#);
        check_model(layout::testing::HOST_EVALUATION.as_bytes());
    }

    #[test]
    #[should_panic(expected = "overlapping")]
    fn an_unsound_geometry_is_caught() {
        let mut geometry = DiskGeometry {
            disk_bytes: 1 << 30,
            total_sectors: 1 << 21,
            first_usable_sector: 34,
            last_usable_sector: (1 << 21) - 34,
            extents: Vec::new(),
            problems: Vec::new(),
        };
        for (number, start) in [(1, 2048), (2, 3000)] {
            geometry.extents.push(geometry::Extent {
                number,
                key: format!("p{number}"),
                start_sector: start,
                end_sector: start + 2047,
            });
        }
        assert_sound(&geometry);
    }
}
