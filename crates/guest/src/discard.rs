//! Roadmap 7.2, "no I/O stalls from discard=async": a large file is
//! fallocated and deleted, and while Btrfs's async discard worker releases
//! its extents a thread writes a 4 KiB block and fdatasyncs it every
//! `interval_ms`. Btrfs discards a block group that a deletion left empty
//! 10 s after it became empty (BTRFS_DISCARD_UNUSED_DELAY in
//! fs/btrfs/discard.c; partly used ones wait 120 s), so the probe starts
//! early in the boot and is finished by a later check; the other steps run
//! meanwhile, as a server's services would.

use std::fs::File;
use std::io::Write as _;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

use crate::report::{figure, report};
use lab_protocol::plan::DiscardProbe;

/// The probe between `start` and `finish`.
static RUNNING: Mutex<Option<Running>> = Mutex::new(None);

struct Running {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Vec<Sample>>,
    counters: PathBuf,
    /// Bytes the filesystem had discarded before the deletion.
    before: u64,
    deleted_at: Instant,
    interval: Duration,
    sample_file: String,
}

#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// When the write started, relative to the deletion (negative before it).
    pub at_ms: f64,
    pub latency_ms: f64,
    /// The filesystem's discarded bytes after the write.
    pub discarded: u64,
}

/// /sys/fs/btrfs/<fsid>/discard of the filesystem on `device`.
fn discard_dir(device: &str) -> Result<PathBuf> {
    let real = std::fs::canonicalize(device).with_context(|| format!("resolving {device}"))?;
    let name = real
        .file_name()
        .context("a device without a name")?
        .to_owned();
    for entry in std::fs::read_dir("/sys/fs/btrfs")?.flatten() {
        if entry.path().join("devices").join(&name).exists() {
            let dir = entry.path().join("discard");
            if dir.is_dir() {
                return Ok(dir);
            }
            bail!("{} has no discard directory", entry.path().display());
        }
    }
    bail!("no mounted Btrfs filesystem on {device} in /sys/fs/btrfs")
}

/// What the async discard worker has sent to the device so far.
fn discarded(dir: &Path) -> Option<u64> {
    let read = |name: &str| -> Option<u64> {
        std::fs::read_to_string(dir.join(name))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    Some(read("discard_extent_bytes")? + read("discard_bitmap_bytes")?)
}

pub fn start(probe: &DiscardProbe) -> Result<Option<String>> {
    let counters = discard_dir(&probe.device)?;
    let before = discarded(&counters).with_context(|| {
        format!(
            "no discard_extent_bytes/discard_bitmap_bytes in {}",
            counters.display()
        )
    })?;
    for path in [&probe.big_file, &probe.sample_file] {
        if let Some(parent) = Path::new(path).parent() {
            std::fs::create_dir_all(parent)?;
        }
    }
    let big =
        File::create(&probe.big_file).with_context(|| format!("creating {}", probe.big_file))?;
    // SAFETY: an open descriptor and a length that fits in off_t.
    if unsafe { libc::fallocate(big.as_raw_fd(), 0, 0, probe.big_bytes as libc::off_t) } != 0 {
        bail!(
            "fallocate {} bytes: {}",
            probe.big_bytes,
            std::io::Error::last_os_error()
        );
    }
    big.sync_all()?;
    drop(big);
    // SAFETY: sync(2) has no preconditions.
    unsafe { libc::sync() };

    let mut sample = File::create(&probe.sample_file)
        .with_context(|| format!("creating {}", probe.sample_file))?;
    sample.write_all(&[0u8; 4096])?;
    sample.sync_all()?;
    let stop = Arc::new(AtomicBool::new(false));
    let interval = Duration::from_millis(probe.interval_ms.max(1));
    let origin = Instant::now();
    let deleted_at = Arc::new(Mutex::new(None::<Instant>));
    let thread = {
        let stop = stop.clone();
        let counters = counters.clone();
        let deleted_at = deleted_at.clone();
        std::thread::spawn(move || sampler(sample, &stop, &counters, interval, origin, &deleted_at))
    };
    std::fs::remove_file(&probe.big_file)
        .with_context(|| format!("deleting {}", probe.big_file))?;
    // The transaction commit frees the extents and queues them for discard.
    // SAFETY: sync(2) has no preconditions.
    unsafe { libc::sync() };
    let now = Instant::now();
    if let Ok(mut at) = deleted_at.lock() {
        *at = Some(now);
    }
    let queued = std::fs::read_to_string(counters.join("discardable_bytes")).unwrap_or_default();
    if let Ok(mut running) = RUNNING.lock() {
        *running = Some(Running {
            stop,
            thread,
            counters,
            before,
            deleted_at: now,
            interval,
            sample_file: probe.sample_file.clone(),
        });
    }
    Ok(Some(format!(
        "{} bytes fallocated and deleted; {} bytes wait for discard",
        probe.big_bytes,
        queued.trim()
    )))
}

fn sampler(
    file: File,
    stop: &AtomicBool,
    counters: &Path,
    interval: Duration,
    origin: Instant,
    deleted_at: &Mutex<Option<Instant>>,
) -> Vec<Sample> {
    let block = [0x5au8; 4096];
    let mut samples = Vec::new();
    let mut index = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let started = Instant::now();
        let _ = file.write_all_at(&block, (index % 256) * 4096);
        let _ = file.sync_data();
        let latency = started.elapsed();
        let reference = deleted_at.lock().ok().and_then(|a| *a).unwrap_or(origin);
        let at_ms = if started >= reference {
            started.duration_since(reference).as_secs_f64() * 1000.0
        } else {
            -(reference.duration_since(started).as_secs_f64() * 1000.0)
        };
        samples.push(Sample {
            at_ms,
            latency_ms: latency.as_secs_f64() * 1000.0,
            discarded: discarded(counters).unwrap_or(0),
        });
        index += 1;
        std::thread::sleep(interval.saturating_sub(latency));
    }
    samples
}

/// The `p`-th percentile (nearest rank) of `values`.
pub fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The samples that overlapped the release (from the first discarded byte
/// to the goal, one interval either side), and those before it.
pub fn split(samples: &[Sample], before: u64, goal: u64, interval_ms: f64) -> Window {
    let first = samples.iter().find(|s| s.discarded > before);
    let last = samples
        .iter()
        .find(|s| s.discarded >= before + goal)
        .or_else(|| samples.iter().rev().find(|s| s.discarded > before));
    let (Some(first), Some(last)) = (first, last) else {
        return Window {
            during: Vec::new(),
            baseline: samples.iter().map(|s| s.latency_ms).collect(),
            start_ms: None,
            end_ms: None,
        };
    };
    // A sample's counter is read after its write: the release began during
    // or before the first sample that sees it.
    let start = first.at_ms - interval_ms;
    let end = last.at_ms + last.latency_ms + interval_ms;
    let during = samples
        .iter()
        .filter(|s| s.at_ms + s.latency_ms >= start && s.at_ms <= end)
        .map(|s| s.latency_ms)
        .collect();
    let baseline = samples
        .iter()
        .filter(|s| s.at_ms + s.latency_ms < start)
        .map(|s| s.latency_ms)
        .collect();
    Window {
        during,
        baseline,
        start_ms: Some(start.max(0.0)),
        end_ms: Some(end),
    }
}

pub struct Window {
    pub during: Vec<f64>,
    pub baseline: Vec<f64>,
    pub start_ms: Option<f64>,
    pub end_ms: Option<f64>,
}

pub fn finish(
    name: &str,
    min_released_bytes: u64,
    max_wait_ms: u64,
    p99_budget_ms: f64,
    max_budget_ms: f64,
) -> Result<()> {
    let running = RUNNING
        .lock()
        .map_err(|_| anyhow::anyhow!("probe lock poisoned"))?
        .take()
        .context("the discard probe was not started (its step failed)")?;
    let deadline = running.deleted_at + Duration::from_millis(max_wait_ms);
    loop {
        let released = discarded(&running.counters)
            .unwrap_or(0)
            .saturating_sub(running.before);
        if released >= min_released_bytes || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // A few more samples after the release.
    std::thread::sleep(running.interval * 5);
    running.stop.store(true, Ordering::SeqCst);
    let samples = running
        .thread
        .join()
        .map_err(|_| anyhow::anyhow!("the latency probe panicked"))?;
    let _ = std::fs::remove_file(&running.sample_file);
    let released = samples
        .iter()
        .map(|s| s.discarded)
        .max()
        .unwrap_or(0)
        .saturating_sub(running.before);
    let interval_ms = running.interval.as_secs_f64() * 1000.0;
    let window = split(&samples, running.before, min_released_bytes, interval_ms);
    let p99 = percentile(&window.during, 99.0);
    let max = window.during.iter().copied().fold(0.0, f64::max);
    let base_p99 = percentile(&window.baseline, 99.0);
    let base_max = window.baseline.iter().copied().fold(0.0, f64::max);
    let round = |v: f64| (v * 10.0).round() / 10.0;
    figure("discard.released_bytes".into(), released as f64);
    figure("discard.samples".into(), samples.len() as f64);
    figure("discard.samples_during".into(), window.during.len() as f64);
    if !window.during.is_empty() {
        figure("discard.latency_p99_ms".into(), round(p99));
        figure("discard.latency_max_ms".into(), round(max));
    }
    if !window.baseline.is_empty() {
        figure("discard.baseline_p99_ms".into(), round(base_p99));
        figure("discard.baseline_max_ms".into(), round(base_max));
    }
    if let (Some(start), Some(end)) = (window.start_ms, window.end_ms) {
        figure("discard.release_after_ms".into(), round(start));
        figure("discard.release_ms".into(), round(end - start));
    }
    let passed = released >= min_released_bytes
        && !window.during.is_empty()
        && p99 <= p99_budget_ms
        && max <= max_budget_ms;
    let measured = if window.during.is_empty() {
        format!(
            "{released} bytes discarded within {max_wait_ms} ms of the deletion; no write overlapped a release ({} samples, p99 {base_p99:.1} ms, max {base_max:.1} ms)",
            samples.len()
        )
    } else {
        format!(
            "{released} bytes discarded {:.1}-{:.1} s after the deletion; {} writes+fdatasync meanwhile: p99 {p99:.1} ms, max {max:.1} ms (before: p99 {base_p99:.1} ms, max {base_max:.1} ms)",
            window.start_ms.unwrap_or(0.0) / 1000.0,
            window.end_ms.unwrap_or(0.0) / 1000.0,
            window.during.len()
        )
    };
    report(
        name,
        passed,
        measured,
        format!(
            "at least {min_released_bytes} bytes discarded within {max_wait_ms} ms; a 4 KiB write+fdatasync meanwhile: p99 <= {p99_budget_ms} ms, max <= {max_budget_ms} ms"
        ),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&values, 99.0), 99.0);
        assert_eq!(percentile(&values, 100.0), 100.0);
        assert_eq!(percentile(&[5.0], 99.0), 5.0);
        assert_eq!(percentile(&[], 99.0), 0.0);
    }

    #[test]
    fn the_window_covers_the_release() {
        let sample = |at_ms: f64, latency_ms: f64, discarded: u64| Sample {
            at_ms,
            latency_ms,
            discarded,
        };
        let samples = [
            sample(0.0, 1.0, 0),
            sample(20.0, 2.0, 0),
            sample(40.0, 30.0, 10),
            sample(80.0, 3.0, 100),
            sample(100.0, 1.0, 100),
            sample(200.0, 1.0, 100),
        ];
        let window = split(&samples, 0, 100, 20.0);
        // From 20 ms (the interval before the first sample that saw bytes) to 103 ms.
        assert_eq!(window.during, [2.0, 30.0, 3.0, 1.0]);
        assert_eq!(window.baseline, [1.0]);
        let none = split(&samples[..2], 0, 100, 20.0);
        assert!(none.during.is_empty());
        assert_eq!(none.baseline.len(), 2);
    }
}
