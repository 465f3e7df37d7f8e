//! The proof's child processes: each in a process group of its own, so that
//! Ctrl-C or SIGTERM stops all of it before anything is unmounted.

use std::os::unix::process::CommandExt as _;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::Instant;

use anyhow::{bail, Context as _, Result};

/// Set by Ctrl-C / SIGTERM; the running step's process group is told to stop.
pub(super) static INTERRUPTED: AtomicBool = AtomicBool::new(false);

pub(super) static RUNNING_GROUP: AtomicI32 = AtomicI32::new(0);

pub(super) fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Runs a command in its own process group (so that an interruption can
/// stop all of it), inheriting our output.
pub(super) fn run_process(command: &mut Command) -> Result<ExitStatus> {
    if interrupted() {
        bail!("interrupted");
    }
    let mut child = command
        .stdin(Stdio::null())
        .process_group(0)
        .spawn()
        .with_context(|| format!("running {:?}", command.get_program()))?;
    let group = i32::try_from(child.id()).unwrap_or(0);
    RUNNING_GROUP.store(group, Ordering::SeqCst);
    let status = child.wait();
    if interrupted() {
        // The group's other processes (a build, the tests) got the signal
        // too; nothing may still run in the root when it is unmounted.
        stop_group(group);
    }
    RUNNING_GROUP.store(0, Ordering::SeqCst);
    let status = status.context("waiting for a child process")?;
    if interrupted() {
        bail!("interrupted");
    }
    Ok(status)
}

/// Waits up to 10 s for a process group to end after SIGTERM, then kills it.
pub(super) fn stop_group(group: i32) {
    let alive = || {
        // SAFETY: signal 0 only asks whether the group still exists.
        unsafe { libc::kill(-group, 0) == 0 }
    };
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    while alive() && Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    if alive() {
        // SAFETY: as above, a group this process started.
        unsafe { libc::kill(-group, libc::SIGKILL) };
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        while alive() && Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

/// Runs a command that must succeed.
pub(super) fn run_ok(command: &mut Command, what: &str) -> Result<()> {
    let status = run_process(command)?;
    anyhow::ensure!(status.success(), "{what} failed ({status})");
    Ok(())
}
