//! `check` latency next to a bare `nix-instantiate --eval` of the same
//! disko.nix, run side by side (one of each in turn, so that the load of a
//! shared machine falls on both alike). Target: warm check ≤ 1.5× the bare
//! eval, median of at least 15 pairs.

use anyhow::{ensure, Context as _, Result};
use camino::Utf8PathBuf;

use super::{median, time_ms, Figure, Section};
use crate::hosts::{self, DEFAULT_HOST};
use crate::nix_eval::Nix;
use toolbox::context::Context;
use toolbox::process::Supervised;

/// The target of check ÷ bare eval (issue 19).
pub const TARGET_RATIO: f64 = 1.5;
/// Pairs run at least: fewer say little on a shared machine.
pub const MIN_PAIRS: u32 = 15;

/// Runs `command` (check exits 1 on findings: that counts as a run).
fn run_quietly(command: Supervised) -> Result<()> {
    let name = command.name().to_owned();
    let output = command.run().with_context(|| format!("running {name}"))?;
    ensure!(
        output.status.and_then(|s| s.code()).is_some_and(|c| c <= 1),
        "{name} failed: {}",
        output.stderr_text()
    );
    Ok(())
}

/// Drops the page cache (root only); whether it did.
fn drop_page_cache() -> bool {
    if !toolbox::setup::is_root() {
        return false;
    }
    let _ = Supervised::new("sync").status();
    std::fs::write("/proc/sys/vm/drop_caches", "3\n").is_ok()
}

pub fn measure(context: &Context, runs: u32) -> Result<Vec<Figure>> {
    let nix = Nix::locate(context)?;
    let host = hosts::find(DEFAULT_HOST)?;
    let xtask = Utf8PathBuf::try_from(std::env::current_exe()?)?;
    let check = || {
        Supervised::new(&xtask)
            .args(["check", "--mode", "standalone", "--json"])
            .envs(context.child_env())
    };
    // Cold: with the page cache dropped (as root), so Nix and the files come from disk.
    let dropped = drop_page_cache();
    let cold = time_ms(1, || run_quietly(check()))?;
    // Side by side: check, then the bare eval, `pairs` times.
    let pairs = runs.max(MIN_PAIRS);
    let (mut warm, mut bare) = (Vec::new(), Vec::new());
    for _ in 0..pairs {
        warm.extend(time_ms(1, || run_quietly(check()))?);
        bare.extend(time_ms(1, || {
            run_quietly(
                Supervised::new(&nix.instantiate)
                    .args(["--eval", "--strict", "--json"])
                    .arg(host.layout_file.as_str()),
            )
        })?);
    }
    let warm_median = median(&warm);
    let bare_median = median(&bare);
    // Pair by pair: a load that drifts during the runs moves both of a pair.
    let ratios: Vec<f64> = warm.iter().zip(&bare).map(|(w, b)| w / b).collect();
    let ratio = median(&ratios);
    Ok(vec![
        Figure::new(
            Section::Check,
            "bare nix-instantiate --eval --strict --json disko.nix",
            bare_median,
            "ms",
            pairs,
            "",
        ),
        Figure::new(
            Section::Check,
            "check, cold",
            cold[0],
            "ms",
            1,
            if dropped {
                "page cache dropped first"
            } else {
                "page cache NOT dropped (not root)"
            },
        ),
        Figure::new(
            Section::Check,
            "check, warm",
            warm_median,
            "ms",
            pairs,
            "parse all .nix (cached while unchanged) + eval + rules",
        ),
        Figure::new(
            Section::Check,
            "check ÷ bare eval",
            ratio,
            "×",
            pairs,
            if ratio <= TARGET_RATIO {
                "median of the pairs' ratios, side by side; target ≤ 1.5: met"
            } else {
                "median of the pairs' ratios, side by side; target ≤ 1.5: NOT met"
            },
        ),
    ])
}
