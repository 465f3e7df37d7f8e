//! `cargo xtask bench`: figures anyone can re-run. Each figure is the median
//! of several runs; the table is printed and, on a full run, written to
//! docs/benchmarks.md with the machine it was measured on.

mod check;
mod rollback;
pub mod vm;

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use serde::Serialize;

use toolbox::context::Context;
use toolbox::project::{project_root, revision, write_atomically};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Section {
    /// `check` latency, cold and warm, next to a bare nix-instantiate eval.
    Check,
    /// Root rotation time with 30 to 10 000 old roots on loop-device Btrfs under bash, dash and busybox sh, and its growth from 1000 to 10 000 (root only).
    Rollback,
    /// Deleting one old root with 2 000 and 20 000 nested subvolumes (what a container engine leaves) under bash and busybox sh, and the growth ratio (root only).
    #[serde(rename = "rollback-nested")]
    RollbackNested,
    /// vm-test under TCG: time per boot and per phase, qemu's peak memory.
    Vm,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Run only these sections (repeatable). Partial runs print but do not rewrite docs/benchmarks.md.
    #[arg(long, value_enum)]
    pub only: Vec<Section>,
    /// Runs per figure; the median is reported.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub runs: u32,
    /// Print the table without rewriting docs/benchmarks.md.
    #[arg(long)]
    pub no_write: bool,
    /// Print the figures as JSON on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// What `bench --json` prints.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub machine: String,
    pub revision: toolbox::project::Revision,
    pub figures: Vec<Figure>,
}

/// One measured figure.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Figure {
    pub section: Section,
    pub name: String,
    /// The median of the runs.
    pub value: f64,
    pub unit: &'static str,
    pub runs: u32,
    /// Target or context, e.g. "target ≤ 3× bare eval".
    pub note: String,
}

impl Figure {
    pub fn new(
        section: Section,
        name: impl Into<String>,
        value: f64,
        unit: &'static str,
        runs: u32,
        note: impl Into<String>,
    ) -> Self {
        Figure {
            section,
            name: name.into(),
            value,
            unit,
            runs,
            note: note.into(),
        }
    }
}

/// The median of the samples (the mean of the middle two for an even count).
pub fn median(samples: &[f64]) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let middle = sorted.len() / 2;
    if sorted.len() % 2 == 0 {
        (sorted[middle - 1] + sorted[middle]) / 2.0
    } else {
        sorted[middle]
    }
}

/// Runs `f` `runs` times and returns the wall times in milliseconds.
pub fn time_ms(runs: u32, mut f: impl FnMut() -> Result<()>) -> Result<Vec<f64>> {
    let mut samples = Vec::with_capacity(runs as usize);
    for _ in 0..runs {
        let started = Instant::now();
        f()?;
        samples.push(duration_ms(started.elapsed()));
    }
    Ok(samples)
}

pub fn duration_ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// What the figures were measured on.
pub fn machine_description() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            let kib: u64 = info
                .lines()
                .find(|l| l.starts_with("MemTotal:"))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            Some(format!("{:.0} GiB RAM", kib as f64 / 1024.0 / 1024.0))
        })
        .unwrap_or_else(|| "unknown RAM".to_owned());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|k| k.trim().to_owned())
        .unwrap_or_else(|_| "unknown kernel".to_owned());
    format!("{cores} cores ({cpu}), {memory}, Linux {kernel}")
}

fn format_value(value: f64) -> String {
    if value.is_nan() {
        "n/a".to_owned()
    } else if value.abs() >= 100.0 {
        format!("{value:.0}")
    } else if value.abs() >= 1.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.3}")
    }
}

/// The Markdown table of the figures.
pub fn render(figures: &[Figure]) -> String {
    let mut out = String::from(
        "| section | figure | median | unit | runs | note |\n|---|---|---:|---|---:|---|\n",
    );
    for f in figures {
        let section = serde_json::to_value(f.section)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "| {section} | {} | {} | {} | {} | {} |",
            f.name,
            format_value(f.value),
            f.unit,
            f.runs,
            f.note
        );
    }
    out
}

pub fn run(context: &Context, args: Args) -> Result<ExitCode> {
    let sections: Vec<Section> = if args.only.is_empty() {
        <Section as clap::ValueEnum>::value_variants().to_vec()
    } else {
        args.only.clone()
    };
    let mut figures = Vec::new();
    let progress = toolbox::progress::Progress::lines("bench");
    for (index, section) in sections.iter().enumerate() {
        let name = format!(
            "section {}/{} {section:?} ({} runs per figure)",
            index + 1,
            sections.len(),
            args.runs
        );
        let measured = progress
            .step(&name, || match section {
                Section::Check => check::measure(context, args.runs),
                Section::Rollback => rollback::measure(context, args.runs),
                Section::RollbackNested => rollback::measure_nested(context, args.runs),
                Section::Vm => vm::measure(context, args.runs),
            })
            .with_context(|| format!("measuring {section:?}"))?;
        figures.extend(measured);
    }
    let table = render(&figures);
    if args.json {
        let report = BenchReport {
            machine: machine_description(),
            revision: revision(),
            figures: figures.clone(),
        };
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{table}");
    }
    if args.only.is_empty() && !args.no_write {
        let rev = revision();
        let document = format!(
            "# Benchmarks\n\nGenerated by `cargo xtask bench` (medians over the runs shown). Re-run it to refresh.\n\n\
             - Machine: {}\n- Revision: {}{}\n- Date: {}\n\n{table}",
            machine_description(),
            rev.commit.as_deref().unwrap_or("(no commit)"),
            if rev.dirty { " (working tree modified)" } else { "" },
            crate::results::now_rfc3339(),
        );
        let path = project_root().join("docs").join("benchmarks.md");
        write_atomically(&path, document.as_bytes())?;
        eprintln!("wrote {path}");
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn table_rows() {
        let table = render(&[Figure::new(
            Section::Check,
            "warm check",
            19.04,
            "ms",
            5,
            "target ≤ 3× bare",
        )]);
        assert!(
            table.contains("| check | warm check | 19.0 | ms | 5 | target ≤ 3× bare |"),
            "{table}"
        );
    }
}
