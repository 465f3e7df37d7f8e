//! What the checks share: a named check or a figure reported to the host,
//! and the Btrfs top level mounted for a look.

use lab_protocol::plan::{Plan, TOP_LEVEL_MOUNT};
use lab_protocol::protocol::Event;

use anyhow::Result;

use crate::port::{say, send};
use crate::program::run_ok;

/// A check: passed or not, with what was measured and what was expected.
pub fn report(name: &str, passed: bool, measured: impl Into<String>, expected: impl Into<String>) {
    let (measured, expected) = (measured.into(), expected.into());
    say(&format!(
        "{} {name}: measured {measured}; expected {expected}",
        if passed { "PASS" } else { "FAIL" }
    ));
    send(&Event::Check {
        name: name.to_owned(),
        passed,
        measured,
        expected,
    });
}

pub fn figure(name: String, value: f64) {
    send(&Event::Figure { name, value });
}

/// Mounts the top level (subvolid=5) of `device` at a private place for `f`.
pub fn with_top_level<T>(
    plan: &Plan,
    device: &str,
    f: impl FnOnce(&str) -> Result<T>,
) -> Result<T> {
    std::fs::create_dir_all(TOP_LEVEL_MOUNT)?;
    run_ok(&[
        plan.tools.mount.clone(),
        "-t".into(),
        "btrfs".into(),
        "-o".into(),
        "subvolid=5".into(),
        device.into(),
        TOP_LEVEL_MOUNT.into(),
    ])?;
    let result = f(TOP_LEVEL_MOUNT);
    let unmounted = run_ok(&[plan.tools.umount.clone(), TOP_LEVEL_MOUNT.into()]);
    let value = result?;
    unmounted?;
    Ok(value)
}
