//! `check` latency next to a bare `nix-instantiate --eval` of the same
//! disko.nix (target: warm check ≤ 3× the bare eval).

use anyhow::{ensure, Context as _, Result};
use camino::Utf8PathBuf;

use super::{median, time_ms, Figure, Section};
use crate::context::Context;
use crate::hosts::{self, DEFAULT_HOST};
use crate::nix_eval::Nix;
use crate::process::Supervised;

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
    if !crate::setup::is_root() {
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
    let warm = time_ms(runs, || run_quietly(check()))?;
    let bare = time_ms(runs, || {
        run_quietly(
            Supervised::new(&nix.instantiate)
                .args(["--eval", "--strict", "--json"])
                .arg(host.layout_file.as_str()),
        )
    })?;
    let warm_median = median(&warm);
    let bare_median = median(&bare);
    Ok(vec![
        Figure::new(
            Section::Check,
            "bare nix-instantiate --eval --strict --json disko.nix",
            bare_median,
            "ms",
            runs,
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
            runs,
            "parse all .nix + eval + rules",
        ),
        Figure::new(
            Section::Check,
            "check ÷ bare eval",
            warm_median / bare_median,
            "×",
            runs,
            "target ≤ 3",
        ),
    ])
}
