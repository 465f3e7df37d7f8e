//! Results files under target/xtask/: what `check` and `vm-test` really
//! measured, with the git revision and a schema version, so that
//! `deploy-checklist` can tell fresh results from stale ones.

use anyhow::{Context as _, Result};
use camino::{Utf8Path, Utf8PathBuf};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::project::{revision, write_atomically, xtask_dir, Revision};

/// Bumped when a results file changes incompatibly.
pub const SCHEMA: u32 = 1;

/// What every results file starts with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub schema: u32,
    /// `check`, `vm-test`, …
    pub kind: String,
    pub host: String,
    pub revision: Revision,
    /// RFC 3339, UTC.
    pub finished_at: String,
    pub passed: bool,
}

impl Header {
    pub fn now(kind: &str, host: &str, passed: bool) -> Header {
        Header::at_revision(kind, host, passed, revision())
    }

    /// With a revision read earlier (e.g. in parallel with the work).
    pub fn at_revision(kind: &str, host: &str, passed: bool, revision: Revision) -> Header {
        Header {
            schema: SCHEMA,
            kind: kind.to_owned(),
            host: host.to_owned(),
            revision,
            finished_at: now_rfc3339(),
            passed,
        }
    }
}

pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// `target/xtask/vm-test.json`: what `cargo xtask vm-test` measured in the guest.
/// `deploy-checklist` reads it; `vm-test` writes it (schema `SCHEMA`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmTestResults {
    #[serde(flatten)]
    pub header: Header,
    /// `lab` (our initramfs under qemu) or `nixos` (the flake's NixOS test).
    pub backend: String,
    /// `kvm` or `tcg`.
    pub accelerator: String,
    /// The kernel the guest booted, e.g. `6.1.0-56-cloud-amd64`.
    pub kernel: String,
    /// The size of the virtual disk, in bytes.
    pub disk_bytes: u64,
    pub boots: Vec<BootRecord>,
    /// Every in-VM check, in the order they ran.
    pub checks: Vec<CheckRecord>,
    /// Named figures: `rotation_ms.boot2`, `compression.@nix.percent`, `trim.freed_bytes`, `vm.peak_rss_bytes`, …
    pub figures: std::collections::BTreeMap<String, f64>,
    pub wall_ms: u64,
    /// Checklist procedures run in the VM, by checklist step, each command with its result.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub procedures: Vec<ProcedureRecord>,
}

/// A checklist procedure as vm-test ran it (`vm-test --thorough` runs the
/// recovery procedures of §4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcedureRecord {
    /// The checklist step, e.g. `4.4`.
    pub step: String,
    pub title: String,
    /// The commands are vm-test's own stand-in for the checklist's, until
    /// the checklist and the VM read one source.
    pub provisional: bool,
    pub passed: bool,
    pub commands: Vec<CommandRecord>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandRecord {
    pub boot: u32,
    /// Parts of a procedure are separated by reboots.
    pub part: u32,
    /// `checklist`, `setup` (brings the VM into the situation) or `verify` (the test's own check).
    pub role: String,
    /// As the checklist prints it, and as it ran with the placeholders filled.
    pub line: String,
    pub ran: String,
    /// None when the lab does something else in its place (a reboot).
    pub exit: Option<i32>,
    pub ms: u64,
    pub stdout: String,
    pub stderr: String,
    pub expected: String,
    pub passed: bool,
    /// Why it failed, or why it did not run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BootRecord {
    /// 1 for the install boot, 2.. for rotation boots.
    pub number: u32,
    /// `install` or `rotate`.
    pub kind: String,
    pub wall_ms: u64,
    pub steps: Vec<StepRecord>,
    pub passed: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    pub name: String,
    pub ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckRecord {
    pub boot: u32,
    /// Stable, e.g. `partition-table`, `subvolumes`, `mount-options:/nix`.
    pub name: String,
    pub passed: bool,
    pub measured: String,
    pub expected: String,
}

/// `target/xtask/<kind>.json`.
pub fn path(kind: &str) -> Utf8PathBuf {
    xtask_dir().join(format!("{kind}.json"))
}

/// Writes a results document (a struct with a flattened `Header`) atomically.
pub fn write<T: Serialize>(kind: &str, results: &T) -> Result<Utf8PathBuf> {
    let path = path(kind);
    let json = serde_json::to_vec_pretty(results).context("serialising results")?;
    write_atomically(&path, &json)?;
    Ok(path)
}

/// Reads a results document; `Ok(None)` when there is none yet.
pub fn read<T: DeserializeOwned>(path: &Utf8Path) -> Result<Option<T>> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error).with_context(|| format!("reading {path}")),
    };
    serde_json::from_slice(&bytes).map(Some).with_context(|| {
        format!("{path} is not a results file of schema {SCHEMA}; run the command again")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Example {
        #[serde(flatten)]
        header: Header,
        figure: u64,
    }

    #[test]
    fn round_trips_with_a_header() {
        let dir = tempfile::tempdir().unwrap();
        let path = Utf8PathBuf::from_path_buf(dir.path().join("x.json")).unwrap();
        let example = Example {
            header: Header::now("example", "h", true),
            figure: 7,
        };
        write_atomically(&path, &serde_json::to_vec(&example).unwrap()).unwrap();
        let back: Example = read(&path).unwrap().unwrap();
        assert_eq!(back, example);
        assert!(read::<Example>(&path.with_file_name("missing.json"))
            .unwrap()
            .is_none());
        assert!(back.header.finished_at.ends_with('Z'));
    }
}
