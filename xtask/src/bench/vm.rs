//! vm-test's time per boot and per phase of a boot, qemu's peak memory and
//! CPU time, the write latency while async discard runs (roadmap 7.2) and
//! the time to mount every filesystem (7.3), under TCG as CI runs it
//! (targets: the default run in ≤ 45 s, ≤ 1 GiB).

use anyhow::{bail, Result};

use super::{median, Figure, Section};
use crate::results::VmTestResults;
use crate::vm::accel::Choice;
use crate::vm::budgets::Budgets;
use crate::vm::lab_backend::{self, Verdict};
use toolbox::context::Context;

/// The phase a step belongs to, for a table that stays readable.
pub fn phase(step: &str) -> &'static str {
    // The check that waits for the release of the discard probe.
    if step.starts_with("check:discard-latency") {
        return "discard probe (7.2)";
    }
    let prefix = step.split([':', '#']).next().unwrap_or(step);
    match prefix {
        "init" => "load modules",
        "wait" | "udev" => "find the disk",
        "sgdisk" => "partition (sgdisk)",
        "mkfs" | "mkswap" | "subvolume" | "disko" => "format + subvolumes",
        "rollback" => "rollback script",
        "discard" => "discard probe (7.2)",
        "procedure" | "system" => "procedures",
        "mkdir" | "mount" | "tmpfiles" => "mount",
        "swap" => "swap (dm-crypt)",
        "marker" | "write" | "fill" => "write data",
        "trim" => "trim probe",
        "check" => "checks",
        "sync" => "sync",
        _ => "other",
    }
}

/// Runs the lab vm-test `runs` times under TCG and reports medians.
pub fn measure(context: &Context, runs: u32) -> Result<Vec<Figure>> {
    // The default run, as timed, and roadmap 7.2's probe in its month's
    // boot (it waits about 10 s for the release: measured, but not timed
    // with the default run).
    let options = lab_backend::Options {
        accel: Some(Choice::Tcg),
        progress: true,
        // The bench prints its own lines; the boots' report is vm-test's.
        reporter: lab_backend::Reporter::Quiet,
        ..lab_backend::Options::defaults()?
    };
    let with_probe = lab_backend::Options {
        discard_probe: true,
        ..options.clone()
    };
    // In the order they happen: a boot, then its phases.
    let mut samples: Vec<(String, Vec<f64>)> = Vec::new();
    let mut last: Option<VmTestResults> = None;
    for run in 1..=runs {
        eprintln!("bench vm: run {run}/{runs} (the default boots under TCG)");
        let outcome = lab_backend::run(context, &options)?;
        if outcome.verdict != Verdict::Passed {
            bail!(
                "vm-test did not pass ({:?}); `cargo xtask vm-test` shows why",
                outcome.verdict
            );
        }
        let mut results = outcome.results;
        eprintln!("bench vm: run {run}/{runs} with the discard probe (roadmap 7.2)");
        let probed = lab_backend::run(context, &with_probe)?;
        if probed.verdict != Verdict::Passed {
            bail!(
                "vm-test with the discard probe did not pass ({:?})",
                probed.verdict
            );
        }
        for (name, value) in probed.results.figures {
            if name.starts_with("discard.") {
                results.figures.insert(name, value);
            }
        }
        sample(&mut samples, &results);
        last = Some(results);
    }
    let budgets = Budgets::for_accel(crate::vm::accel::Accel::Tcg);
    let mut figures = Vec::new();
    for (name, values) in &samples {
        let (unit, note) = unit_and_note(name, &budgets);
        figures.push(Figure::new(
            Section::Vm,
            name.clone(),
            median(values),
            unit,
            values.len() as u32,
            note,
        ));
    }
    figures.extend(compression_settings(context)?);
    if let Some(results) = last {
        let figure = |name: &str| results.figures.get(name).copied();
        if let (Some(before), Some(after)) = (
            figure("trim.image_data_before_bytes"),
            figure("trim.image_data_after_bytes"),
        ) {
            figures.push(Figure::new(
                Section::Vm,
                "TRIM: qcow2 data before → after delete + fstrim",
                (before - after) / 1048576.0,
                "MiB freed",
                1,
                format!(
                    "{:.1} → {:.1} MiB allocated; a 32 MiB file deleted",
                    before / 1048576.0,
                    after / 1048576.0
                ),
            ));
        }
    }
    Ok(figures)
}

/// One run's figures, added to the samples of the runs before (in the
/// order they happen: a boot, then its phases).
fn sample(samples: &mut Vec<(String, Vec<f64>)>, results: &VmTestResults) {
    let mut add = |name: String, value: f64| match samples.iter_mut().find(|(n, _)| *n == name) {
        Some((_, values)) => values.push(value),
        None => samples.push((name, vec![value])),
    };
    add("total".into(), results.wall_ms as f64);
    for boot in &results.boots {
        let label = format!("boot {} ({})", boot.number, boot.kind);
        add(format!("{label}: wall"), boot.wall_ms as f64);
        if let Some(ms) = results
            .figures
            .get(&format!("boot_ms.kernel_to_init.boot{}", boot.number))
        {
            add(format!("{label}: kernel to /init"), *ms);
        }
        let mut phases: Vec<(&str, f64)> = Vec::new();
        for step in &boot.steps {
            let name = phase(&step.name);
            match phases.iter_mut().find(|(p, _)| *p == name) {
                Some((_, ms)) => *ms += step.ms as f64,
                None => phases.push((name, step.ms as f64)),
            }
        }
        for (phase, ms) in phases {
            add(format!("{label}: {phase}"), ms);
        }
    }
    if let Some(peak) = results.figures.get("vm.peak_rss_bytes") {
        add("qemu peak RSS".into(), peak / 1048576.0);
    }
    // Roadmap 7.2 and 7.3, as vm-test asserts them.
    for (figure, name) in [
        (
            "discard.latency_p99_ms",
            "7.2: write+fdatasync p99 while async discard runs",
        ),
        (
            "discard.latency_max_ms",
            "7.2: write+fdatasync max while async discard runs",
        ),
        (
            "discard.baseline_p99_ms",
            "7.2: write+fdatasync p99 before the discard",
        ),
    ] {
        if let Some(ms) = results.figures.get(figure) {
            add(name.into(), *ms);
        }
    }
    for boot in &results.boots {
        if let Some(ms) = results
            .figures
            .get(&format!("mount_ms.boot{}", boot.number))
        {
            add(
                format!(
                    "7.3: mount every filesystem, boot {} ({})",
                    boot.number, boot.kind
                ),
                *ms,
            );
        }
    }
    if let Some(ms) = results.figures.get("vm.cpu_ms") {
        add("qemu CPU time".into(), *ms);
    }
}

/// The unit of a figure and what it is held against.
fn unit_and_note(name: &str, budgets: &Budgets) -> (&'static str, String) {
    match name {
        "total" => (
            "ms",
            "target ≤ 45 000 ms for the default boots (TCG, 2 cores)".to_owned(),
        ),
        "qemu CPU time" => (
            "ms",
            "all boots; what the wall time approaches on an idle machine".to_owned(),
        ),
        n if n.starts_with("7.2") && n.contains("p99 while") => (
            "ms",
            format!(
                "budget ≤ {} ms under TCG (vm-test fails past it)",
                budgets.discard_p99_ms
            ),
        ),
        n if n.starts_with("7.2") && n.contains("max") => (
            "ms",
            format!("budget ≤ {} ms under TCG", budgets.discard_max_ms),
        ),
        n if n.starts_with("7.3") => (
            "ms",
            format!("budget ≤ {} ms under TCG", budgets.mount_all_ms),
        ),
        "qemu peak RSS" => ("MiB", "VmHWM; target ≤ 1024 MiB".to_owned()),
        n if n.ends_with("rollback script") => {
            ("ms", "target < 10 000 ms; expect far under 1 s".to_owned())
        }
        _ => ("ms", String::new()),
    }
}

/// The same /nix corpus under each setting that really takes effect: the
/// install boot of a what-if layout per setting (zstd:1 is the layout's own).
fn compression_settings(context: &Context) -> Result<Vec<Figure>> {
    let mut figures = Vec::new();
    for setting in ["zstd:1", "zstd:3", "none"] {
        eprintln!("bench vm: install boot with compress={setting}");
        let options = lab_backend::Options {
            accel: Some(Choice::Tcg),
            progress: true,
            boots: 1,
            compression: Some(setting.to_owned()),
            reporter: lab_backend::Reporter::Quiet,
            ..lab_backend::Options::defaults()?
        };
        let outcome = lab_backend::run(context, &options)?;
        if outcome.verdict != Verdict::Passed {
            bail!(
                "the install boot with compress={setting} did not pass ({:?})",
                outcome.verdict
            );
        }
        let get = |name: &str| {
            outcome
                .results
                .figures
                .get(name)
                .copied()
                .unwrap_or(f64::NAN)
        };
        let note = format!(
            "{:.1} of {:.1} MiB on disk",
            get("compression.@nix.disk_bytes") / 1048576.0,
            get("compression.@nix.uncompressed_bytes") / 1048576.0
        );
        figures.push(Figure::new(
            Section::Vm,
            format!("@nix saved with {setting}"),
            get("compression.@nix.percent"),
            "%",
            1,
            if setting == "zstd:1" {
                format!("{note}; the layout's setting, roadmap > 30%")
            } else {
                note
            },
        ));
    }
    Ok(figures)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_fall_into_phases() {
        assert_eq!(phase("sgdisk:3"), "partition (sgdisk)");
        assert_eq!(phase("check:mount-options:/nix"), "checks");
        assert_eq!(phase("write:/etc/xtask-boot-1#2"), "write data");
        assert_eq!(phase("rollback"), "rollback script");
        assert_eq!(phase("init:modules"), "load modules");
        assert_eq!(phase("something-new"), "other");
        assert_eq!(phase("discard:probe"), "discard probe (7.2)");
        assert_eq!(phase("check:discard-latency"), "discard probe (7.2)");
        assert_eq!(phase("procedure:4.3"), "procedures");
    }
}
