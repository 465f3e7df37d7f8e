//! `cargo xtask check --deep`: the layout judged by the real tools.
//!
//! disko's own module (from a local checkout: `--disko-src`) evaluates the
//! layout; its generated `_create` scripts run against sparse image files with
//! the real sgdisk, every mkfs runs for real on a scratch file of its
//! partition's size, and every filesystem is mounted with its options on a
//! loop device (replay.sh, shared with the corpus recorders). What reality
//! did is then set beside check's findings and model: a disagreement is
//! reported with the tool's own words. Needs root; nothing is written to a
//! block device but the loop devices replay.sh attaches to its own files.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::{Context as _, Result};
use camino::{Utf8Path, Utf8PathBuf};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::hosts::{self, firmware, Host, Model};
use crate::nix_eval::Nix;
use layout::build::{build, Evaluated};
use layout::findings::Finding;
use layout::kernel_options::{self, Filesystem};
use toolbox::context::Context;
use toolbox::process::{Output, Supervised};
use toolbox::setup::{self, Tool};

pub mod verdict;

use verdict::{Real, CREATE_NOT_RUN};

/// The sandbox and replay (bash), embedded so that the binary needs no checkout.
pub const REPLAY_SCRIPT: &str = include_str!("replay.sh");
/// A local checkout of nix-community/disko, when `--disko-src` is not given.
pub const DISKO_SRC_ENV: &str = "XTASK_DISKO_SRC";
/// A local checkout of nix-community/nixpkgs.lib, when `--nixpkgs-lib` is not given.
pub const NIXPKGS_LIB_ENV: &str = "XTASK_NIXPKGS_LIB";
/// The disko revision flake.nix pins (and the corpus was recorded with).
pub const PINNED_DISKO: &str = "878ec37d6a8f52c6c801d0e2a2ad554c75b9353c";
pub const PINNED_NIXPKGS_LIB: &str = "de42d44212d207476489bce163375d8306a26d59";

const JQ: Tool = Tool {
    program: "jq",
    package: "jq",
};
const PARTX: Tool = Tool {
    program: "partx",
    package: "util-linux",
};
const STAT: Tool = Tool {
    program: "stat",
    package: "coreutils",
};

/// The checkouts `--deep` evaluates with.
#[derive(Debug, Clone)]
pub struct Sources {
    pub disko: Utf8PathBuf,
    pub nixpkgs_lib: Utf8PathBuf,
}

fn how_to_get(what: &str, repository: &str, revision: &str, flag: &str, env: &str) -> String {
    format!(
        "check --deep needs {what}: give a local checkout with {flag} DIR or {env}=DIR \
         (git clone https://github.com/{repository} DIR && git -C DIR checkout {revision})"
    )
}

/// Everything `--deep` needs, before anything runs; `Err` (exit 2) says what to give.
pub fn prepare(
    context: &Context,
    disko_src: Option<&Utf8Path>,
    nixpkgs_lib: Option<&Utf8Path>,
) -> Result<Sources> {
    anyhow::ensure!(
        setup::is_root(),
        "check --deep needs root (loop devices and mounts in a private mount namespace): run it as root, e.g. sudo -E cargo xtask check --deep"
    );
    let disko = disko_src.map(Utf8Path::to_owned).with_context(|| {
        format!(
            "{}. NOT RUN: the flake's pinned disko input (disko {PINNED_DISKO}) cannot be fetched here (`nix flake archive --json` needs the network and the nix command)",
            how_to_get("disko's source", "nix-community/disko", PINNED_DISKO, "--disko-src", DISKO_SRC_ENV)
        )
    })?;
    let nixpkgs_lib = nixpkgs_lib.map(Utf8Path::to_owned).with_context(|| {
        how_to_get(
            "nixpkgs' lib (disko's module is evaluated with lib.evalModules)",
            "nix-community/nixpkgs.lib",
            PINNED_NIXPKGS_LIB,
            "--nixpkgs-lib",
            NIXPKGS_LIB_ENV,
        )
    })?;
    anyhow::ensure!(
        disko.join("module.nix").is_file() && disko.join("lib").join("types").is_dir(),
        "--disko-src {disko}: not a disko checkout (no module.nix and lib/types/); {}",
        how_to_get(
            "disko's source",
            "nix-community/disko",
            PINNED_DISKO,
            "--disko-src",
            DISKO_SRC_ENV
        )
    );
    anyhow::ensure!(
        nixpkgs_lib.join("lib").join("default.nix").is_file(),
        "--nixpkgs-lib {nixpkgs_lib}: not a nixpkgs.lib checkout (no lib/default.nix); {}",
        how_to_get(
            "nixpkgs' lib",
            "nix-community/nixpkgs.lib",
            PINNED_NIXPKGS_LIB,
            "--nixpkgs-lib",
            NIXPKGS_LIB_ENV
        )
    );
    setup::ensure(
        context,
        &[
            setup::NIX_INSTANTIATE,
            setup::SGDISK,
            setup::MKFS_VFAT,
            setup::MKFS_BTRFS,
            setup::BTRFS,
            setup::MKSWAP,
            setup::BLKID,
            setup::LOSETUP,
            setup::MOUNT,
            setup::LSATTR,
            setup::UNSHARE,
            PARTX,
            JQ,
            STAT,
        ],
    )
    .context("check --deep runs these tools for real")?;
    Ok(Sources {
        disko: disko
            .canonicalize_utf8()
            .with_context(|| format!("--disko-src {disko}"))?,
        nixpkgs_lib: nixpkgs_lib
            .canonicalize_utf8()
            .with_context(|| format!("--nixpkgs-lib {nixpkgs_lib}"))?,
    })
}

/// What the real tools did with one host's layout, beside check.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeepReport {
    /// The host whose machine.nix and persistence.nix went with the layout.
    pub host: String,
    /// The disko checkout that evaluated the layout.
    #[schemars(with = "String")]
    pub disko: Utf8PathBuf,
    /// What the real tools did.
    pub real: Real,
    /// Where check's verdict and reality differ (exit 1), with the tool's words.
    pub disagreements: Vec<String>,
    /// What could not run here, with the reason: never counted as a pass.
    pub not_run: Vec<String>,
    /// What was run and agreed (mounts read back from /proc/self/mountinfo).
    pub ran: Vec<String>,
}

/// Runs disko's create script and the mounts of `layout_file` for real and
/// compares them with `findings` (check's findings for that layout).
pub fn judge(
    nix: &Nix,
    sources: &Sources,
    host: &Host,
    layout_file: &Utf8Path,
    disk_bytes: u64,
    findings: &[Finding],
) -> Result<DeepReport> {
    let real = replay(sources, layout_file, disk_bytes)?;

    // The evaluated layout, for placing findings, and check's model of the mounts.
    let evaluation = match nix.evaluate_host(&crate::nix_eval::HostSources {
        layout: layout_file,
        persistence: host.persistence_file.as_deref(),
        machine: host.machine_file.as_deref(),
        rollback: host.rollback_file.as_deref(),
    })? {
        Ok(value) => value,
        Err(_) => Value::Null,
    };
    let layout_value = &evaluation["layout"];
    let mut report = DeepReport {
        host: host.name.clone(),
        disko: sources.disko.clone(),
        real: real.clone(),
        disagreements: Vec::new(),
        not_run: Vec::new(),
        ran: Vec::new(),
    };
    if let Some(line) = verdict::disagreement(layout_file.as_str(), layout_value, &real, findings) {
        report.disagreements.push(line);
    }
    if !real.evaluates {
        report.ran.push(format!(
            "disko's evaluation (nix-instantiate): {}",
            real.error
        ));
        return Ok(report);
    }
    note_create(&real, &mut report);

    let machine: hosts::Machine =
        serde_json::from_value(evaluation["machine"].clone()).unwrap_or_default();
    let (layout, _) = build(&Evaluated {
        host: &host.name,
        source: layout_file,
        layout: layout_value,
        persistence: &evaluation["persistence"],
    });
    let sizes: BTreeMap<String, u64> = layout
        .iter()
        .flat_map(|l| l.disks.iter())
        .map(|d| (d.key.clone(), disk_bytes))
        .collect();
    let model = layout
        .as_ref()
        .map(|l| Model::new(l, &sizes, firmware(&machine)));
    note_mounts(&real, model.as_ref(), &mut report);
    Ok(report)
}

/// disko's evaluation and create script, every mkfs and mount, run by
/// replay.sh in a private mount namespace on image files; its record.
fn replay(sources: &Sources, layout_file: &Utf8Path, disk_bytes: u64) -> Result<Real> {
    let scratch = tempfile::Builder::new()
        .prefix("xtask-deep-")
        .tempdir()
        .context("creating a scratch directory")?;
    let scratch_dir = Utf8Path::from_path(scratch.path())
        .context("the temp directory is not UTF-8")?
        .to_owned();
    let script = scratch_dir.join("replay.sh");
    std::fs::write(&script, REPLAY_SCRIPT).with_context(|| format!("writing {script}"))?;
    let errors = scratch_dir.join("evaluation.err");
    // Images on a tmpfs when there is one: they are sparse, and a disk is spared.
    let images = if Utf8Path::new("/dev/shm").is_dir() {
        Utf8PathBuf::from("/dev/shm")
    } else {
        scratch_dir.clone()
    };
    let program = r#"set -euo pipefail
DISKO=$1 NIXPKGS_LIB=$2
source "$3"
if ! json=$(evaluate "$4" 2>"$5"); then
  jq -n --arg err "$(grep -m1 -o 'error:.*' "$5" || tail -n3 "$5")" '{layout: {evaluates: false, error: $err}}'
else
  replay layout "$json"
fi"#;
    let output = Supervised::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "bash",
            "-c",
            program,
            "deep",
        ])
        .args([
            sources.disko.as_str(),
            sources.nixpkgs_lib.as_str(),
            script.as_str(),
            layout_file.as_str(),
            errors.as_str(),
        ])
        .env("DISK_BYTES", disk_bytes.to_string())
        .env("RECORD_SCRATCH", images.as_str())
        // The replay prints one JSON record; its logs can be long.
        .stdout(Output::keep(64 << 20))
        .stderr(Output::keep(4 << 20))
        .run()
        .context("running unshare (util-linux) for disko's create script")?;
    anyhow::ensure!(
        output.success(),
        "check --deep: the sandbox did not run ({}): {}",
        output
            .status
            .map_or_else(|| "stopped".to_owned(), |s| s.to_string()),
        output.stderr_text().trim()
    );
    let record: BTreeMap<String, Real> =
        serde_json::from_slice(&output.stdout).with_context(|| {
            format!(
                "reading the replay's JSON: {}",
                String::from_utf8_lossy(&output.stdout)
            )
        })?;
    record
        .into_values()
        .next()
        .context("the replay printed no record")
}

/// What became of disko's create script.
fn note_create(real: &Real, report: &mut DeepReport) {
    if real.create_exit == CREATE_NOT_RUN {
        let step = real
            .create_tail
            .lines()
            .find_map(|line| line.strip_prefix("NOT RUN: "))
            .unwrap_or(real.create_tail.trim());
        report.not_run.push(format!(
            "disko's create script reached a step this sandbox never runs, so it and everything after it (mkfs, mounts) is not run: {step}"
        ));
    } else if real.create_exit != 0 {
        report.ran.push(format!(
            "disko's create script (sgdisk, mkfs) failed: {}",
            real.create_tail.trim()
        ));
    } else {
        report
            .ran
            .push("disko's create script: sgdisk and every mkfs ran and succeeded".to_owned());
    }
}

/// Each mount as the kernel made it, and where it differs from check's model.
fn note_mounts(real: &Real, model: Option<&Model>, report: &mut DeepReport) {
    for mount in &real.mounts {
        match mount.status.as_str() {
            "notRun" => report.not_run.push(format!(
                "mount {}: {}",
                mount.mountpoint,
                first_line(&mount.message)
            )),
            "failed" => report.ran.push(format!(
                "mount {}: the kernel refused: {}",
                mount.mountpoint,
                mount.message.trim()
            )),
            _ => {
                let info = &mount.mountinfo;
                report.ran.push(format!(
                    "mount {}: ok; mountinfo root {} options {} super {}; mode {} attributes {}",
                    mount.mountpoint,
                    info["root"].as_str().unwrap_or("?"),
                    info["mountOptions"].as_str().unwrap_or("?"),
                    info["superOptions"].as_str().unwrap_or("?"),
                    info["mode"].as_str().unwrap_or("?"),
                    info["attributes"].as_str().unwrap_or("?"),
                ));
                if let Some(model) = model {
                    report.disagreements.extend(mount_differences(model, mount));
                }
            }
        }
    }
}

/// Where a mount the kernel made differs from what check's model of its
/// options says (the subvolume mounted, the compression in effect).
fn mount_differences(model: &Model, mount: &verdict::Mount) -> Vec<String> {
    let mut differences = Vec::new();
    let Some(modelled) = model
        .mounts
        .iter()
        .find(|m| m.mountpoint == mount.mountpoint)
    else {
        return vec![format!(
            "mount {}: the kernel mounted it; check's model has no such mount",
            mount.mountpoint
        )];
    };
    if Filesystem::of(&modelled.fs_type) != Filesystem::Btrfs {
        return differences;
    }
    let reading = kernel_options::read(Filesystem::Btrfs, &modelled.options);
    let info = &mount.mountinfo;
    let root = info["root"].as_str().unwrap_or_default();
    let super_options: Vec<&str> = info["superOptions"]
        .as_str()
        .unwrap_or_default()
        .split(',')
        .collect();
    let expected_root = match (&reading.subvol, reading.subvolid) {
        (Some(subvol), _) => Some(format!("/{}", subvol.trim_start_matches('/'))),
        (None, Some(5)) | (None, None) => Some("/".to_owned()),
        (None, Some(_)) => None,
    };
    if let Some(expected) = expected_root {
        if expected != root {
            differences.push(format!(
                "mount {}: check's model mounts subvolume {expected} (options {}); the kernel mounted {root} (/proc/self/mountinfo)",
                mount.mountpoint,
                modelled.options.join(",")
            ));
        }
    }
    let real_compress = super_options.iter().find_map(|o| {
        o.strip_prefix("compress=")
            .or_else(|| o.strip_prefix("compress-force="))
    });
    let model_compress = reading
        .compress
        .as_deref()
        .filter(|c| *c != "no" && *c != "none");
    let same = match (model_compress, real_compress) {
        (None, None) => true,
        // The kernel prints a level only when one was given (zstd = zstd:3).
        (Some(m), Some(r)) => {
            m == r || m.split(':').next() == Some(r) || r.split(':').next() == Some(m)
        }
        _ => false,
    };
    if !same {
        differences.push(format!(
            "mount {}: check's model has compression {}; the kernel has {} (/proc/self/mountinfo: {})",
            mount.mountpoint,
            model_compress.unwrap_or("none"),
            real_compress.unwrap_or("none"),
            info["superOptions"].as_str().unwrap_or_default()
        ));
    }
    differences
}

/// A tool's message without mount(8)'s "dmesg(1) may have more" line.
fn first_line(message: &str) -> &str {
    message.trim().lines().next().unwrap_or_default()
}

/// The report of `--deep`, after check's own.
pub fn render(reports: &[DeepReport]) -> String {
    let mut out = String::new();
    for report in reports {
        let _ = writeln!(
            out,
            "== deep: {} judged by the real tools (disko {}, sgdisk, mkfs, mount as root)",
            report.host, report.disko
        );
        for line in &report.ran {
            let _ = writeln!(out, "ran: {line}");
        }
        for line in &report.not_run {
            let _ = writeln!(out, "NOT RUN: {line}");
        }
        for line in &report.disagreements {
            let _ = writeln!(out, "DISAGREES: {line}");
        }
    }
    let disagreements: usize = reports.iter().map(|r| r.disagreements.len()).sum();
    let not_run: usize = reports.iter().map(|r| r.not_run.len()).sum();
    let _ = writeln!(
        out,
        "deep: {} ({disagreements} disagreement(s) between check and the real tools, {not_run} step(s) NOT RUN)",
        if disagreements > 0 { "FAILED" } else { "agrees" }
    );
    out
}
