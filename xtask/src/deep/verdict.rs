//! What the real tools did with a layout (xtask/src/deep/replay.sh's record)
//! next to what `check` predicted: shared by `check --deep` and the recorded
//! corpus test (tests/generated_corpus.rs).
//!
//! Agreement: `check` reports an error that predicts a failed install
//! (`rules::install_stop`) exactly when the real install failed, and where the
//! real tools say where it stopped (evaluation, partitioning, mkfs, the swap
//! file, a mount), one of check's errors names that stop. A step the sandbox
//! could not run (a vfat mount on a kernel without vfat, dm-crypt) is not
//! judged: it is NOT RUN, with the tool's words.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::rules::{install_stop, InstallStop};
use layout::findings::{Finding, Severity};

/// replay.sh's record of one layout.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Real {
    /// Whether disko's module evaluated the layout.
    pub evaluates: bool,
    /// Nix's error when it did not.
    #[serde(default)]
    pub error: String,
    /// The create scripts' exit status: 0 ran to the end, 97 stopped at a step the sandbox never runs.
    #[serde(default)]
    pub create_exit: i32,
    /// The create scripts' last lines when they did not run to the end (the tool's own words).
    #[serde(default)]
    pub create_tail: String,
    /// Every fileSystems entry, parents first, as the kernel mounted it.
    #[serde(default)]
    pub mounts: Vec<Mount>,
}

/// The create script's exit status when a step was not run (replay.sh's not_run).
pub const CREATE_NOT_RUN: i32 = 97;

#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Mount {
    /// The fileSystems entry's mountpoint.
    pub mountpoint: String,
    /// "ok", "failed" or "notRun".
    pub status: String,
    /// mount(8)'s words when it did not mount (and the kernel log's, for a refusal).
    pub message: String,
    /// What /proc/self/mountinfo says of a mount that succeeded (a string
    /// when it is not there).
    #[serde(default)]
    pub mountinfo: Value,
}

/// Where the real install stopped, with the tool's words; `None` when it did not.
pub fn real_stop(real: &Real) -> Option<(InstallStop, String)> {
    if !real.evaluates {
        return Some((InstallStop::Evaluation, real.error.clone()));
    }
    if real.create_exit == CREATE_NOT_RUN {
        return None;
    }
    if real.create_exit != 0 {
        let tail = &real.create_tail;
        // The last lines of the create script name the tool that stopped it.
        let stop = if tail.contains("swapfile") {
            InstallStop::SwapFile
        } else if [
            "Could not create partition",
            "Problem",
            "sgdisk",
            "Unable to",
        ]
        .iter()
        .any(|w| tail.contains(w))
        {
            InstallStop::Partitioning
        } else {
            InstallStop::Formatting
        };
        return Some((stop, tail.clone()));
    }
    real.mounts.iter().find(|m| m.status == "failed").map(|m| {
        // A fileSystems entry without a device: NixOS's own evaluation
        // throws "No device specified for mount point" before any mount.
        let stop = if m.message.contains("special device null does not exist") {
            InstallStop::Evaluation
        } else {
            InstallStop::Mount
        };
        (stop, format!("{}: {}", m.mountpoint, m.message))
    })
}

/// Mountpoints whose mount the sandbox could not run.
pub fn not_run_mounts(real: &Real) -> BTreeSet<String> {
    real.mounts
        .iter()
        .filter(|m| m.status == "notRun")
        .map(|m| m.mountpoint.clone())
        .collect()
}

/// check's disagreement with what the real tools did, as one line; `None`
/// when they agree. `layout` is the evaluated layout (`disko.devices` …),
/// `findings` what check found in it.
pub fn disagreement(
    name: &str,
    layout: &Value,
    real: &Real,
    findings: &[Finding],
) -> Option<String> {
    let stops: BTreeMap<InstallStop, Vec<&Finding>> = findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .filter_map(|f| install_stop(f.code).map(|s| (s, f)))
        .fold(BTreeMap::new(), |mut map, (stop, f)| {
            map.entry(stop).or_default().push(f);
            map
        });
    let describe = |list: &[&Finding]| {
        list.iter()
            .map(|f| format!("{} {}: {}", f.code, f.path, f.message))
            .collect::<Vec<_>>()
            .join("; ")
    };
    if real.create_exit == CREATE_NOT_RUN {
        // The install was not run to its end: nothing after the step is judged.
        return None;
    }
    match real_stop(real) {
        Some((stop, words)) => {
            // A feature only later mkfs.btrfs versions know: check warns
            // (PART014); the recorded mkfs.btrfs (6.2) is one that refuses it.
            let version = words.contains("unrecognized filesystem feature")
                && findings.iter().any(|f| f.code == "PART014");
            // disko's nodev devices are not modelled (MODEL007 says "not checked").
            let nodev = stop == InstallStop::Mount
                && findings.iter().any(|f| f.code == "MODEL007")
                && real
                    .mounts
                    .iter()
                    .filter(|m| m.status == "failed")
                    .all(|m| {
                        layout["disko"]["devices"]["nodev"]
                            .as_object()
                            .is_some_and(|n| {
                                n.iter().any(|(k, v)| {
                                    v["mountpoint"].as_str().unwrap_or(k) == m.mountpoint
                                })
                            })
                    });
            if stops.contains_key(&stop) || version || nodev {
                None
            } else {
                Some(format!(
                    "{name}: the real install stops at {stop:?} ({words}); check predicts {}",
                    if stops.is_empty() {
                        "no stop".to_owned()
                    } else {
                        stops
                            .iter()
                            .map(|(s, l)| format!("{s:?}: {}", describe(l)))
                            .collect::<Vec<_>>()
                            .join(" | ")
                    }
                ))
            }
        }
        None => {
            if stops.is_empty() {
                return None;
            }
            // A mount the kernel here could not try is not judged.
            let not_run = not_run_mounts(real);
            let judged: Vec<(&InstallStop, &Vec<&Finding>)> = stops
                .iter()
                .filter(|(stop, list)| {
                    !(**stop == InstallStop::Mount
                        && !not_run.is_empty()
                        && list.iter().all(|f| about_mounts(layout, f, &not_run)))
                })
                // The recorder's disks are image files: one named like a
                // partition still gets partitions there, which a real partition
                // does not (DEV004 is the kernel's rule, not judged here).
                .filter(|(_, list)| !list.iter().all(|f| f.code == "DEV004"))
                .collect();
            if judged.is_empty() {
                return None;
            }
            Some(format!(
                "{name}: the real install succeeds; check predicts {}",
                judged
                    .iter()
                    .map(|(s, l)| format!("{s:?}: {}", describe(l)))
                    .collect::<Vec<_>>()
                    .join(" | ")
            ))
        }
    }
}

/// Whether a finding is about one of `mountpoints` (its attribute path leads to a content mounted there).
fn about_mounts(layout: &Value, finding: &Finding, mountpoints: &BTreeSet<String>) -> bool {
    let mut node = layout;
    for segment in finding.path.segments() {
        if let Some(mountpoint) = node.get("mountpoint").and_then(Value::as_str) {
            if mountpoints.contains(mountpoint) {
                return true;
            }
        }
        node = match node.get(segment) {
            Some(next) => next,
            None => return false,
        };
    }
    node.get("content")
        .and_then(|c| c.get("mountpoint"))
        .or_else(|| node.get("mountpoint"))
        .and_then(Value::as_str)
        .is_some_and(|m| mountpoints.contains(m))
}

#[cfg(test)]
mod tests {
    use super::*;
    use layout::findings::AttrPath;

    fn mkfs_failed() -> Real {
        Real {
            evaluates: true,
            error: String::new(),
            create_exit: 1,
            create_tail: "mkfs.vfat: Attempting to create a too small or a too large filesystem"
                .to_owned(),
            mounts: Vec::new(),
        }
    }

    fn part011() -> Finding {
        Finding::new(
            "PART011",
            Severity::Error,
            AttrPath::new([
                "disko",
                "devices",
                "disk",
                "main",
                "content",
                "partitions",
                "ESP",
            ]),
            "mkfs.vfat refuses",
            "Remove -F",
        )
    }

    #[test]
    fn a_stop_check_did_not_predict_is_a_disagreement_in_the_tools_words() {
        let line =
            disagreement("esp.nix", &Value::Null, &mkfs_failed(), &[]).expect("a disagreement");
        assert!(line.contains("stops at Formatting"), "{line}");
        assert!(line.contains("Attempting to create a too small"), "{line}");
        assert!(line.contains("check predicts no stop"), "{line}");
    }

    #[test]
    fn the_predicted_stop_agrees() {
        assert_eq!(
            disagreement("esp.nix", &Value::Null, &mkfs_failed(), &[part011()]),
            None
        );
    }

    #[test]
    fn a_predicted_stop_that_reality_passes_is_a_disagreement_naming_the_place() {
        let real = Real {
            create_exit: 0,
            create_tail: String::new(),
            ..mkfs_failed()
        };
        let line =
            disagreement("esp.nix", &Value::Null, &real, &[part011()]).expect("a disagreement");
        assert!(line.contains("the real install succeeds"), "{line}");
        assert!(line.contains("partitions.ESP"), "{line}");
    }

    #[test]
    fn a_step_not_run_is_never_judged() {
        let real = Real {
            create_exit: CREATE_NOT_RUN,
            create_tail: "NOT RUN: cryptsetup luksFormat".to_owned(),
            ..mkfs_failed()
        };
        assert_eq!(real_stop(&real), None);
        assert_eq!(
            disagreement("luks.nix", &Value::Null, &real, &[part011()]),
            None
        );
    }
}
