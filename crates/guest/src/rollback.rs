//! The rollback step: the host's rollback script run as the initrd would
//! run it, what it did checked, and its runs with the clock set for the
//! retention model.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context as _, Result};
use sha2::{Digest, Sha256};

use crate::parse;
use crate::port::{say, send};
use crate::program::{run_program, Ran};
use crate::report::{figure, report, with_top_level};
use lab_protocol::plan::{Plan, RollbackStep};
use lab_protocol::protocol::Event;

/// Runs the rollback script as the initrd would and checks what it did;
/// then, if the plan asks, runs it again with the clock set (several times
/// within the first run's second, then days later), listing the old roots
/// after every run for the host's retention model (`crate::vm::month`).
pub fn run(plan: &Plan, step: &RollbackStep) -> Result<Option<String>> {
    let boot = plan.boot;
    let bytes = std::fs::read(&step.script).with_context(|| format!("reading {}", step.script))?;
    let sha256 = lab_protocol::hex(&Sha256::digest(&bytes));
    report(
        "rollback-script",
        sha256 == step.script_sha256,
        format!("sha256 {sha256}"),
        format!(
            "sha256 {} (the script the image was built with)",
            step.script_sha256
        ),
    );
    let first = run_script(step)?;
    figure(
        format!("rotation_ms.boot{boot}"),
        (first.ms * 10.0).round() / 10.0,
    );
    report_first_run(step, boot, &first);
    let get = |k: &str| first.fields.get(k).map(String::as_str).unwrap_or("");
    if !first.ran.ok() {
        bail!("the rollback script failed: {}", first.ran.describe());
    }
    if step.extra_runs.is_empty() {
        send_run(1, &first, None, None);
        return Ok(first.summary);
    }
    let second = lab_protocol::stamp::Stamp::parse(get("rotated_to"))
        .map(|s| s.epoch)
        .context("the first run named no old root; nothing to repeat in its second")?;
    // One top-level mount for the listings, held while the runs go on (the
    // script mounts the top level again itself, as a second mount).
    with_top_level(plan, &step.old_roots.device, |top| {
        let list = |top: &str| list_old_roots(top, &step.old_roots.directory);
        send_run(1, &first, Some(list(top)?), None);
        report_first_run_root(top, step, get("rotated_to"));
        let mut outcome = Ok(());
        let mut listed = list(top)?;
        for (index, offset) in step.extra_runs.iter().enumerate() {
            let run = index as u32 + 2;
            // Like `date -s`: the clock goes on from there.
            let clock = second + offset;
            // The script must trust the clock exactly when the retention
            // model does: in range and not behind the newest old root.
            let newest = listed
                .iter()
                .filter_map(|n| lab_protocol::stamp::Stamp::parse(n))
                .max();
            let wanted = if lab_protocol::stamp::clock_plausible(clock, newest) {
                "ok"
            } else {
                "implausible"
            };
            set_clock(clock)?;
            let ran = run_script(step)?;
            let get = |k: &str| ran.fields.get(k).map(String::as_str).unwrap_or("");
            let passed = ran.ran.ok()
                && get("result") == "ok"
                && get("clock") == wanted
                && !ran.failed_marker;
            report(
                &format!("rollback-run:{run}"),
                passed,
                format!(
                    "clock set to {}; {}; {}",
                    lab_protocol::stamp::Stamp {
                        epoch: clock,
                        suffix: 0
                    }
                    .name(),
                    ran.ran.status,
                    ran.summary
                        .clone()
                        .unwrap_or_else(|| "no summary line".into())
                ),
                format!("exit 0, result=ok clock={wanted}: one more rotation at the clock the plan sets"),
            );
            listed = list(top)?;
            send_run(run, &ran, Some(listed.clone()), Some(clock));
            if !ran.ran.ok() {
                outcome = Err(anyhow::anyhow!(
                    "run {run} of the rollback failed: {}",
                    ran.ran.describe()
                ));
                break;
            }
        }
        outcome
    })?;
    Ok(first.summary)
}

/// What the first run did: its exit, its status line, its time.
fn report_first_run(step: &RollbackStep, boot: u32, first: &ScriptRun) {
    let get = |k: &str| first.fields.get(k).map(String::as_str).unwrap_or("");
    report(
        "rollback-exit",
        first.ran.ok() && first.summary.is_some(),
        format!(
            "{}; {}",
            first.ran.status,
            first
                .summary
                .clone()
                .unwrap_or_else(|| "no summary line".to_owned())
        ),
        "exit 0 and one line starting `btrfs-rollback: `",
    );
    send(&Event::Data {
        name: "rollback_status".into(),
        value: serde_json::json!(first.fields),
    });
    if let Ok(script_ms) = get("ms").parse::<f64>() {
        figure(format!("rotation_script_ms.boot{boot}"), script_ms);
    }
    report(
        "rollback-status",
        get("result") == "ok"
            && get("clock") == "ok"
            && !first.failed_marker
            && parse::is_old_root_name(get("rotated_to")),
        if first.status_text.is_empty() {
            format!("no {}/status", step.status_dir)
        } else {
            first.status_text.lines().collect::<Vec<_>>().join(" ")
        },
        if step.rotation_required {
            "result=ok clock=ok rotated_to=YYYYMMDDTHHMMSSZ[-NN], no `failed` marker"
        } else {
            "result=ok clock=ok, rotated_to a name or empty (after a power cut), no `failed` marker"
        },
    );
    report(
        "rotation-time",
        first.ms < step.max_ms as f64,
        format!("{:.0} ms", first.ms),
        format!(
            "under {} ms (the roadmap's limit; expected far under 1 s)",
            step.max_ms
        ),
    );
}

/// The root the first run moved holds what the last boot wrote into /.
fn report_first_run_root(top: &str, step: &RollbackStep, rotated_to: &str) {
    if step.first_run_holds.is_empty() {
        return;
    }
    let moved = Path::new(top)
        .join(&step.old_roots.directory)
        .join(rotated_to);
    let missing: Vec<&String> = step
        .first_run_holds
        .iter()
        .filter(|f| !moved.join(f).exists())
        .collect();
    report(
        "first-run-root",
        missing.is_empty(),
        if missing.is_empty() {
            format!("{} holds {}", rotated_to, step.first_run_holds.join(" "))
        } else {
            format!(
                "{} lacks {}",
                rotated_to,
                missing
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            )
        },
        "the root the first run moved holds what the last boot wrote into / (the long-uptime root)",
    );
}

/// One run of the rollback script and what it left.
struct ScriptRun {
    ran: Ran,
    ms: f64,
    summary: Option<String>,
    fields: BTreeMap<String, String>,
    status_text: String,
    failed_marker: bool,
}

fn run_script(step: &RollbackStep) -> Result<ScriptRun> {
    let started = Instant::now();
    let ran = run_program(&step.argv, &step.env)?;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    for line in ran.stdout.lines() {
        say(&format!("  rollback: {line}"));
    }
    let summary = ran
        .stdout
        .lines()
        .find(|l| l.starts_with("btrfs-rollback: "))
        .map(str::to_owned);
    let status_dir = Path::new(&step.status_dir);
    let status_text = std::fs::read_to_string(status_dir.join("status")).unwrap_or_default();
    Ok(ScriptRun {
        fields: parse::key_values(&status_text),
        failed_marker: status_dir.join("failed").exists(),
        ran,
        ms,
        summary,
        status_text,
    })
}

/// `rollback_run:<n>`: the status of run n and the old roots after it.
fn send_run(run: u32, ran: &ScriptRun, old_roots: Option<Vec<String>>, clock_set_to: Option<i64>) {
    send(&Event::Data {
        name: format!("rollback_run:{run}"),
        value: serde_json::json!({
            "run": run,
            "exit": ran.ran.status.code(),
            "status": ran.fields,
            "old_roots": old_roots,
            "clock_set_to": clock_set_to,
        }),
    });
}

/// The names below the old roots' directory, sorted.
pub(super) fn list_old_roots(top: &str, directory: &str) -> Result<Vec<String>> {
    let dir = Path::new(top).join(directory);
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    Ok(names)
}

/// Sets the wall clock to `epoch` seconds exactly, as `date -s @EPOCH` would.
fn set_clock(epoch: i64) -> Result<()> {
    let time = libc::timespec {
        tv_sec: epoch as libc::time_t,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec; PID 1 has CAP_SYS_TIME.
    if unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &time) } != 0 {
        bail!("setting the clock: {}", std::io::Error::last_os_error());
    }
    Ok(())
}
