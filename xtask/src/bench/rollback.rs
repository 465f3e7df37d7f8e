//! Rotation time of the rollback script on loop-device Btrfs with 30 to
//! 10 000 old roots, each holding one nested subvolume, most of them past
//! retention (targets on 2 cores: ≤ 100 ms at 120, ≤ 500 ms at 1000, and
//! linear cost: t(10 000) / t(1000) ≤ 12). Measured under bash with GNU
//! tools (the systemd initrd), dash with GNU tools, and busybox sh (the
//! scripted initrd). Needs root.
//!
//! The images live on tmpfs when /dev/shm is one: a loop device turns each
//! Btrfs flush into an fsync of its image file, and on a shared build
//! machine the host disk's latency would drown the script's own time. One
//! more figure, with the image on the temporary directory's disk, shows that
//! cost.

use anyhow::{ensure, Context as _, Result};
use camino::Utf8Path;

use super::{median, Figure, Section};
use crate::loop_btrfs::loopback::{BtrfsFixture, Lab};
use crate::loop_btrfs::rollback_script::{
    old_root_name, required_tools, Interpreter, Runner, Settings,
};
use toolbox::context::Context;

const DAY: i64 = 86_400;
/// The fake clock: 2026-05-28T20:26:40Z.
const NOW: i64 = 1_780_000_000;
const SIZES: [usize; 5] = [30, 120, 1000, 5000, 10_000];
/// Runs per figure at most for the large sizes (populating 10 000 old roots
/// takes seconds).
const LARGE: usize = 5000;
const LARGE_RUNS: u32 = 3;
/// Linear cost: ten times the old roots may take at most this many times as long.
const MAX_RATIO_10X: f64 = 12.0;

/// The target for `roots` old roots, in milliseconds.
fn target_ms(roots: usize) -> Option<f64> {
    match roots {
        120 => Some(100.0),
        1000 => Some(500.0),
        _ => None,
    }
}

/// Image size: room for the old roots' metadata (about 70 KiB each with a
/// nested subvolume, twice for DUP metadata).
fn image_bytes(roots: usize) -> u64 {
    (1u64 << 30).max(roots as u64 * (192 << 10))
}

/// A fresh filesystem with `roots` old roots (a tenth of them recent, the
/// rest past 30 days) each with a nested subvolume, and a current root.
fn populate(lab: &Lab, roots: usize, images: Option<&Utf8Path>) -> Result<BtrfsFixture> {
    let fs = BtrfsFixture::create_in(lab, image_bytes(roots), images)?;
    fs.create_subvolume("@persist")?;
    fs.create_subvolume("@old_roots")?;
    let recent = roots / 10;
    for i in 0..roots {
        let age = if i < recent {
            // Spread over the last 29 days.
            (i as i64 + 1) * 29 * DAY / (recent as i64 + 1)
        } else {
            31 * DAY + i as i64 * 3_600
        };
        let name = old_root_name(NOW - age, 0)?;
        let root = format!("@old_roots/{name}");
        fs.create_subvolume(&root)?;
        std::fs::create_dir_all(fs.top().join(&root).join("var/lib"))
            .with_context(|| format!("populating {root}"))?;
        fs.create_subvolume(&format!("{root}/var/lib/machines"))?;
    }
    fs.create_subvolume("@root")?;
    std::fs::write(fs.top().join("@root/marker"), "current").context("writing to @root")?;
    fs.sync()?;
    Ok(fs)
}

/// /dev/shm when it is a tmpfs this process can write to.
fn tmpfs_dir() -> Option<&'static Utf8Path> {
    let shm = Utf8Path::new("/dev/shm");
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    let is_tmpfs = mounts.lines().any(|l| {
        let mut fields = l.split(' ');
        let (_, at, kind) = (fields.next(), fields.next(), fields.next());
        at == Some("/dev/shm") && kind == Some("tmpfs")
    });
    (is_tmpfs && shm.is_dir()).then_some(shm)
}

/// One figure: the median wall time of `runs` rotations.
fn rotation(
    lab: &Lab,
    runner: &Runner,
    roots: usize,
    runs: u32,
    images: Option<&Utf8Path>,
    judged: bool,
) -> Result<Figure> {
    let mut wall = Vec::new();
    let mut own = Vec::new();
    let mut deleted = 0;
    let runs = if roots >= LARGE {
        runs.min(LARGE_RUNS)
    } else {
        runs
    };
    for _ in 0..runs {
        let fs = populate(lab, roots, images)?;
        let mut settings = Settings::under(fs.scratch());
        settings.now = Some(NOW);
        fs.forget_on_drop(&settings.mountpoint);
        let run = runner.run(fs.device(), &settings)?;
        let status = run.status()?;
        ensure!(
            status.get("result") == "ok",
            "the rollback failed with {roots} old roots under {}: {}",
            runner.interpreter.name(),
            run.transcript()
        );
        deleted = status.number("deleted").unwrap_or(0);
        ensure!(deleted > 0, "nothing was deleted: {}", run.transcript());
        wall.push(run.wall_ms);
        own.push(status.number("ms").unwrap_or(0) as f64);
    }
    let median_wall = median(&wall);
    let on = match images {
        Some(dir) => format!("image on tmpfs ({dir})"),
        None => "image on the temp dir's disk".to_owned(),
    };
    let verdict = match target_ms(roots) {
        None => "no target".to_owned(),
        Some(_) if !judged => "context for the target".to_owned(),
        Some(target) if median_wall <= target => format!("target ≤ {target:.0} ms: met"),
        Some(target) => format!("target ≤ {target:.0} ms: MISSED"),
    };
    Ok(Figure::new(
        Section::Rollback,
        format!("rotation, {roots} old roots, {}", runner.interpreter.name()),
        median_wall,
        "ms",
        runs,
        format!(
            "{deleted} deleted with their nested subvolumes; script's own ms {:.0}; {on}; {verdict}",
            median(&own)
        ),
    ))
}

/// t(10 000) / t(1000) for one interpreter, against `MAX_RATIO_10X`.
fn ratio(interpreter: Interpreter, at_1000: &Figure, at_10_000: &Figure) -> Figure {
    let value = at_10_000.value / at_1000.value;
    let verdict = if value <= MAX_RATIO_10X {
        "met"
    } else {
        "MISSED"
    };
    Figure::new(
        Section::Rollback,
        format!(
            "rotation time 10 000 / 1000 old roots, {}",
            interpreter.name()
        ),
        value,
        "×",
        at_10_000.runs.min(at_1000.runs),
        format!("ratio of the medians above; linear cost, target ≤ {MAX_RATIO_10X:.0}×: {verdict}"),
    )
}

pub fn measure(context: &Context, runs: u32) -> Result<Vec<Figure>> {
    let lab = Lab::prepare(context, &required_tools())?;
    let images = tmpfs_dir();
    let mut figures = Vec::new();
    for interpreter in [Interpreter::Bash, Interpreter::Dash, Interpreter::Busybox] {
        let runner = Runner::new(interpreter)?;
        let mut by_size = Vec::new();
        for roots in SIZES {
            let figure = rotation(&lab, &runner, roots, runs, images, true)?;
            eprintln!("bench: {}: {:.0} ms", figure.name, figure.value);
            by_size.push((roots, figure));
        }
        let find = |n: usize| by_size.iter().find(|(r, _)| *r == n).map(|(_, f)| f);
        if let (Some(small), Some(large)) = (find(1000), find(10_000)) {
            let ratio = ratio(interpreter, small, large);
            by_size.push((usize::MAX, ratio));
        }
        figures.extend(by_size.into_iter().map(|(_, f)| f));
    }
    if images.is_some() {
        let runner = Runner::new(Interpreter::Bash)?;
        figures.push(rotation(&lab, &runner, 1000, runs, None, false)?);
    }
    Ok(figures)
}

/// Nested subvolumes in one old root past retention, for `measure_nested`.
const NESTED: [usize; 2] = [2000, 20_000];
/// Linear cost: ten times the nested subvolumes may take at most this many times as long.
const MAX_NESTED_RATIO_10X: f64 = 12.0;

/// A fresh filesystem with one old root past retention holding `nested`
/// subvolumes named as a container engine names them (64 hex digits), one
/// recent old root, and a current root.
fn populate_nested(lab: &Lab, nested: usize, images: Option<&Utf8Path>) -> Result<BtrfsFixture> {
    let fs = BtrfsFixture::create_in(lab, (2u64 << 30) + nested as u64 * (64 << 10), images)?;
    fs.create_subvolume("@persist")?;
    fs.create_subvolume("@old_roots")?;
    let past = format!("@old_roots/{}", old_root_name(NOW - 40 * DAY, 0)?);
    fs.create_subvolume(&past)?;
    fs.create_subvolume(&format!("@old_roots/{}", old_root_name(NOW - DAY, 0)?))?;
    let engine = format!("{past}/var/lib/docker/btrfs/subvolumes");
    std::fs::create_dir_all(fs.top().join(&engine))
        .with_context(|| format!("creating {engine}"))?;
    for i in 0..nested {
        let id = format!("{:064x}", (i as u128 + 1) * 0x9e37_79b9_7f4a_7c15);
        fs.create_subvolume(&format!("{engine}/{id}"))?;
    }
    fs.create_subvolume("@root")?;
    fs.sync()?;
    Ok(fs)
}

/// One figure: the median wall time of rotations that delete one old root
/// with `nested` nested subvolumes.
fn nested_deletion(
    lab: &Lab,
    runner: &Runner,
    nested: usize,
    runs: u32,
    images: Option<&Utf8Path>,
) -> Result<Figure> {
    let runs = if nested >= 10_000 { runs.min(2) } else { runs };
    let mut wall = Vec::new();
    for _ in 0..runs {
        let fs = populate_nested(lab, nested, images)?;
        let mut settings = Settings::under(fs.scratch());
        settings.now = Some(NOW);
        settings.keep_at_least = Some(1);
        fs.forget_on_drop(&settings.mountpoint);
        let run = runner.run(fs.device(), &settings)?;
        let status = run.status()?;
        ensure!(
            status.get("result") == "ok" && status.number("deleted") == Some(1),
            "deleting {nested} nested subvolumes under {}: {}",
            runner.interpreter.name(),
            run.transcript()
        );
        ensure!(
            !run.stderr.contains("one by one"),
            "the batch delete left subvolumes: {}",
            run.transcript()
        );
        wall.push(run.wall_ms);
    }
    Ok(Figure::new(
        Section::RollbackNested,
        format!(
            "rotation deleting 1 old root with {nested} nested subvolumes, {}",
            runner.interpreter.name()
        ),
        median(&wall),
        "ms",
        runs,
        "batched `btrfs subvolume delete`; no E2BIG, no one-by-one fallback",
    ))
}

pub fn measure_nested(context: &Context, runs: u32) -> Result<Vec<Figure>> {
    let lab = Lab::prepare(context, &required_tools())?;
    let images = tmpfs_dir();
    let mut figures = Vec::new();
    for interpreter in [Interpreter::Bash, Interpreter::Busybox] {
        let runner = Runner::new(interpreter)?;
        let mut by_size = Vec::new();
        for nested in NESTED {
            let figure = nested_deletion(&lab, &runner, nested, runs, images)?;
            eprintln!("bench: {}: {:.0} ms", figure.name, figure.value);
            by_size.push(figure);
        }
        let value = by_size[1].value / by_size[0].value;
        let verdict = if value <= MAX_NESTED_RATIO_10X {
            "met"
        } else {
            "MISSED"
        };
        let ratio = Figure::new(
            Section::RollbackNested,
            format!("deletion time 20 000 / 2 000 nested subvolumes, {}", interpreter.name()),
            value,
            "×",
            by_size[1].runs.min(by_size[0].runs),
            format!("ratio of the medians above; linear cost, target ≤ {MAX_NESTED_RATIO_10X:.0}×: {verdict}"),
        );
        figures.extend(by_size);
        figures.push(ratio);
    }
    Ok(figures)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_follow_the_issue() {
        assert_eq!(target_ms(120), Some(100.0));
        assert_eq!(target_ms(1000), Some(500.0));
        assert_eq!(target_ms(30), None);
        assert_eq!(SIZES.last(), Some(&10_000));
    }

    #[test]
    fn ratios_are_judged() {
        let figure = |value| Figure::new(Section::Rollback, "x", value, "ms", 3, "");
        let met = ratio(Interpreter::Dash, &figure(400.0), &figure(4000.0));
        assert_eq!(met.value, 10.0);
        assert!(met.note.ends_with("met"), "{}", met.note);
        let missed = ratio(Interpreter::Dash, &figure(400.0), &figure(6000.0));
        assert!(missed.note.ends_with("MISSED"), "{}", missed.note);
    }

    #[test]
    fn images_hold_the_large_sizes() {
        assert_eq!(image_bytes(30), 1 << 30);
        assert!(image_bytes(10_000) > 1 << 30);
    }
}
