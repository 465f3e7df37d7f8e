//! Results files under target/xtask/: what `check`, the NixOS evaluation and
//! `vm-test` really measured, with the git revision, the hashes of the files
//! they rest on and a schema version, so that `deploy-checklist` can tell
//! fresh results from stale ones.
//!
//! Every command keeps two files per kind apart:
//! - `<kind>.json`: the last run, whatever it was (failed, partial, passed);
//! - `<kind>.pass.json`: the last run that passed and counts as proof (for
//!   vm-test: the full default run on the host's own disk size).
//!
//! A failed or partial run is visible in the first and never replaces the
//! second, so one bad run does not lose the last good proof.

use std::collections::BTreeMap;

use anyhow::{Context as _, Result};
use camino::{Utf8Path, Utf8PathBuf};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use toolbox::project::{project_root, revision, write_atomically, xtask_dir, Revision};

/// Bumped when a results file changes incompatibly (2: `inputs` in the header,
/// `requested` in vm-test results; 3: procedures by checklist id, each
/// command with its status).
pub const SCHEMA: u32 = 3;

/// The files a result rests on, by path relative to the repository root, with
/// the SHA-256 of their contents when the result was made.
pub type Inputs = BTreeMap<String, String>;

/// The boots of the default `vm-test` run: the install boot and the month's
/// boot (a 40-day jump, then seven rotations held against the retention
/// rules). A run with fewer is partial and proves no rotation.
pub const FULL_VM_TEST_BOOTS: u32 = 2;

/// The kinds of boot the default `vm-test` run goes through; a passing run
/// missing one of them is not the full test.
pub const VM_TEST_BOOT_KINDS: &[&str] = &["install", "rotate"];

/// The results of the last `vm-test --thorough` (`vm-test-thorough.json`,
/// and `.pass.json` for the last one that passed in full): the deploy
/// checklist's `procedures` gate reads them.
pub const THOROUGH_KIND: Kind = Kind::VmTestThorough;

/// What made a results file: it is written as `<kind>.json` (and
/// `<kind>.pass.json`), and the header names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// `cargo xtask check`.
    Check,
    /// The NixOS system's evaluation (`check --mode flake`).
    FlakeEval,
    /// The default lab vm-test (or the NixOS VM test's record).
    VmTest,
    /// `vm-test --thorough`'s procedures and calendar.
    VmTestThorough,
    /// A run with `--tamper` or another rollback script: never the proof.
    VmTestTampered,
    /// A what-if layout (`--compression`).
    VmTestWhatIf,
    /// A run that serves the booted system over sshd on this port.
    VmTestSsh(u16),
    /// `cargo xtask fresh-machine`.
    FreshMachine,
}

impl Kind {
    /// Whether the result is a vm-test's, of any variant.
    pub fn is_vm_test(self) -> bool {
        matches!(
            self,
            Kind::VmTest
                | Kind::VmTestThorough
                | Kind::VmTestTampered
                | Kind::VmTestWhatIf
                | Kind::VmTestSsh(_)
        )
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Kind::Check => f.write_str("check"),
            Kind::FlakeEval => f.write_str("flake-eval"),
            Kind::VmTest => f.write_str("vm-test"),
            Kind::VmTestThorough => f.write_str("vm-test-thorough"),
            Kind::VmTestTampered => f.write_str("vm-test-tampered"),
            Kind::VmTestWhatIf => f.write_str("vm-test-what-if"),
            Kind::VmTestSsh(port) => write!(f, "vm-test-ssh-{port}"),
            Kind::FreshMachine => f.write_str("fresh-machine"),
        }
    }
}

/// What every results file starts with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub schema: u32,
    /// `check`, `vm-test`, `flake-eval`, …
    pub kind: String,
    pub host: String,
    pub revision: Revision,
    /// RFC 3339, UTC.
    pub finished_at: String,
    pub passed: bool,
    /// The files the result rests on (`input_files`), hashed: a change to
    /// any of them, committed or not, makes the result stale.
    pub inputs: Inputs,
}

impl Header {
    pub fn now(kind: Kind, host: &str, passed: bool) -> Header {
        Header::at_revision(kind, host, passed, revision())
    }

    /// With a revision read earlier (e.g. in parallel with the work).
    pub fn at_revision(kind: Kind, host: &str, passed: bool, revision: Revision) -> Header {
        let inputs = current_inputs(&project_root(), kind, host);
        Header::with_inputs(kind, host, passed, revision, inputs)
    }

    /// As `at_revision`, with the inputs the caller hashed already (check
    /// hashes the files it parses once, for its record and its parse cache).
    pub fn with_inputs(
        kind: Kind,
        host: &str,
        passed: bool,
        revision: Revision,
        inputs: Inputs,
    ) -> Header {
        Header {
            schema: SCHEMA,
            kind: kind.to_string(),
            host: host.to_owned(),
            revision,
            finished_at: now_rfc3339(),
            passed,
            inputs,
        }
    }
}

pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// The files that feed a result of `kind` for `host` (`a,b` for several):
/// - `check`: every .nix file it parses (any of them can break it);
/// - `vm-test` (and its variants): the host's directory, the rollback module
///   with its script, and nix/lib, which evaluates the host;
/// - `flake-eval`: flake.nix, flake.lock, hosts/ and nix/, everything the
///   NixOS system is evaluated from.
///
/// The xtask's own code is covered by the revision: results made with
/// uncommitted changes are never fresh.
pub fn input_files(root: &Utf8Path, kind: Kind, host: &str) -> Result<Vec<Utf8PathBuf>> {
    let mut files = Vec::new();
    match kind {
        Kind::Check => files = crate::hosts::nix_files(root)?,
        Kind::FlakeEval => {
            for file in ["flake.nix", "flake.lock"] {
                if root.join(file).is_file() {
                    files.push(root.join(file));
                }
            }
            files_below(&root.join("hosts"), &mut files)?;
            files_below(&root.join("nix"), &mut files)?;
        }
        kind if kind.is_vm_test() => {
            for name in host.split(',') {
                let dir = crate::hosts::discover(root)?
                    .into_iter()
                    .find(|h| h.name == name)
                    .map(|h| h.dir)
                    .with_context(|| format!("no host {name:?} under {root}/hosts"))?;
                files_below(&dir, &mut files)?;
            }
            files_below(&root.join("nix").join("modules"), &mut files)?;
            files_below(&root.join("nix").join("lib"), &mut files)?;
        }
        other => anyhow::bail!(
            "no input files are defined for results of kind {:?}",
            other.to_string()
        ),
    }
    files.sort();
    files.dedup();
    Ok(files)
}

/// Regular files below `dir` (following symlinks, skipping hidden entries), in any order.
fn files_below(dir: &Utf8Path, files: &mut Vec<Utf8PathBuf>) -> Result<()> {
    fn walk(dir: &Utf8Path, depth: usize, files: &mut Vec<Utf8PathBuf>) -> Result<()> {
        if depth > 16 {
            return Ok(());
        }
        let entries = match dir.read_dir_utf8() {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(error) => return Err(error).with_context(|| format!("reading {dir}")),
        };
        for entry in entries {
            let path = entry.with_context(|| format!("reading {dir}"))?.into_path();
            if path.file_name().is_some_and(|n| n.starts_with('.')) {
                continue;
            }
            if path.is_dir() {
                walk(&path, depth + 1, files)?;
            } else if path.is_file() {
                files.push(path);
            }
        }
        Ok(())
    }
    walk(dir, 0, files)
}

/// Each readable file's SHA-256 (hex), by its path.
pub fn digests(files: &[Utf8PathBuf]) -> BTreeMap<Utf8PathBuf, String> {
    files
        .iter()
        .filter_map(|file| {
            let bytes = std::fs::read(file).ok()?;
            let hex = Sha256::digest(&bytes)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            Some((file.clone(), hex))
        })
        .collect()
}

/// `files` as `hash_files` records them, from digests made already; `None`
/// when one is missing (unreadable: `hash_files` then names the error).
pub fn inputs_of(
    root: &Utf8Path,
    files: &[Utf8PathBuf],
    digests: &BTreeMap<Utf8PathBuf, String>,
) -> Option<Inputs> {
    files
        .iter()
        .map(|file| {
            let relative = file.strip_prefix(root).unwrap_or(file);
            Some((relative.to_string(), digests.get(file)?.clone()))
        })
        .collect()
}

/// `files` hashed, by path relative to `root`.
pub fn hash_files(root: &Utf8Path, files: &[Utf8PathBuf]) -> Result<Inputs> {
    let mut inputs = Inputs::new();
    for file in files {
        let bytes = std::fs::read(file).with_context(|| format!("reading {file}"))?;
        let digest = Sha256::digest(&bytes);
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        let relative = file.strip_prefix(root).unwrap_or(file);
        inputs.insert(relative.to_string(), hex);
    }
    Ok(inputs)
}

/// The inputs of a `kind` result for `host` as the files are now. When they
/// cannot be read, one entry names the error: such a result never matches the
/// files and so is never fresh.
pub fn current_inputs(root: &Utf8Path, kind: Kind, host: &str) -> Inputs {
    input_files(root, kind, host)
        .and_then(|files| hash_files(root, &files))
        .unwrap_or_else(|error| Inputs::from([("<unreadable>".to_owned(), format!("{error:#}"))]))
}

/// How `recorded` differs from `current`, one phrase per file; empty when equal.
pub fn changed_inputs(recorded: &Inputs, current: &Inputs) -> Vec<String> {
    let mut changes = Vec::new();
    for (path, hash) in current {
        match recorded.get(path) {
            None => changes.push(format!("{path} is new")),
            Some(old) if old != hash => changes.push(format!("{path} changed")),
            Some(_) => {}
        }
    }
    for path in recorded.keys() {
        if !current.contains_key(path) {
            changes.push(format!("{path} is gone"));
        }
    }
    changes
}

/// `target/xtask/check.json`: the last full check of the repository's hosts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckResults {
    #[serde(flatten)]
    pub header: Header,
    /// `--disk-size`, when it replaced the sizes in machine.nix.
    pub disk_size_override: Option<u64>,
    pub hosts: Vec<HostSummary>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostSummary {
    pub host: String,
    pub errors: usize,
    pub warnings: usize,
    /// `code path` of every finding.
    pub findings: Vec<String>,
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
    /// What the run was asked to do.
    pub requested: VmTestRequest,
    pub boots: Vec<BootRecord>,
    /// Every in-VM check, in the order they ran.
    pub checks: Vec<CheckRecord>,
    /// Named figures: `rotation_ms.boot2`, `compression.@nix.percent`, `trim.freed_bytes`, `vm.peak_rss_bytes`, …
    pub figures: BTreeMap<String, f64>,
    pub wall_ms: u64,
    /// Checklist procedures run in the VM, by checklist step, each command with its result.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub procedures: Vec<ProcedureRecord>,
}

/// A checklist procedure (§3, §4) as vm-test ran it: the lines of
/// xtask/src/deploy_checklist/procedures/, run in the lab VM as the admin would.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcedureRecord {
    /// The procedure's stable id (`rollback.restore-persist`) and its checklist step (`4.4`).
    pub id: String,
    pub step: String,
    pub title: String,
    /// PASS: every command the lab can run ran as expected (commands it
    /// cannot run are NOT RUN, listed, and not counted); FAIL: one did not;
    /// NOT RUN: no command ran.
    pub status: ProcedureStatus,
    /// `status` is PASS.
    pub passed: bool,
    pub commands: Vec<CommandRecord>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProcedureStatus {
    #[serde(rename = "PASS")]
    Pass,
    #[serde(rename = "FAIL")]
    Fail,
    #[serde(rename = "NOT RUN")]
    NotRun,
}

impl ProcedureStatus {
    pub fn label(self) -> &'static str {
        match self {
            ProcedureStatus::Pass => "PASS",
            ProcedureStatus::Fail => "FAIL",
            ProcedureStatus::NotRun => "NOT RUN",
        }
    }
}

impl ProcedureRecord {
    /// Sets `status` and `passed` from the commands.
    pub fn settle(&mut self) {
        let ran = self
            .commands
            .iter()
            .any(|c| matches!(c.outcome.status, CommandStatus::Pass | CommandStatus::Fail));
        let failed = self.commands.iter().any(|c| {
            matches!(
                c.outcome.status,
                CommandStatus::Fail | CommandStatus::Skipped
            )
        });
        self.status = if failed {
            ProcedureStatus::Fail
        } else if ran {
            ProcedureStatus::Pass
        } else {
            ProcedureStatus::NotRun
        };
        self.passed = self.status == ProcedureStatus::Pass;
    }

    /// How many of the checklist's commands and of the lab's own ran and
    /// passed, and how many commands did not run.
    pub fn counts(&self) -> (usize, usize, usize) {
        let passed = |checklist: bool| {
            self.commands
                .iter()
                .filter(|c| {
                    c.outcome.status == CommandStatus::Pass
                        && (c.outcome.role == "checklist") == checklist
                })
                .count()
        };
        let not_run = self
            .commands
            .iter()
            .filter(|c| c.outcome.status == CommandStatus::NotRun)
            .count();
        (passed(true), passed(false), not_run)
    }

    /// The first command that failed, for messages.
    pub fn first_failure(&self) -> Option<&CommandRecord> {
        self.commands
            .iter()
            .find(|c| c.outcome.status == CommandStatus::Fail)
    }
}

pub use lab_protocol::command::{CommandOutcome, CommandStatus};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandRecord {
    /// The boot it ran in (0: not in a boot).
    pub boot: u32,
    /// Parts of a procedure are separated by reboots and reinstalls.
    pub part: u32,
    /// What became of it, as the guest reported it (`CommandEvent`).
    #[serde(flatten)]
    pub outcome: CommandOutcome,
}

/// The options of a vm-test run that decide what it can prove.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmTestRequest {
    /// `--boots`: normal boots asked for (the power-cut boots come on top).
    pub boots: u32,
    /// `--disk-size`, when it replaced the size in machine.nix.
    pub disk_size: Option<String>,
    /// `--power-cuts`.
    pub power_cuts: u32,
    /// `--boot-timeout`, in seconds, when given.
    pub boot_timeout_s: Option<u64>,
    /// `--thorough`: the checklist's procedures that need reboots and a reinstall.
    #[serde(default)]
    pub thorough: bool,
    /// `--drills`: the drills from the lab's rescue boot (§4.6).
    #[serde(default)]
    pub drills: bool,
}

/// Why a vm-test run, even a passing one, is not the full test of the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shortfall {
    /// Fewer boots than the default run (`--boots 1`).
    Partial { boots: u32 },
    /// A boot kind of the default run never happened.
    MissingBootKinds(Vec<String>),
    /// The virtual disk was not the size of the host's disk.
    OtherDiskSize { vm: u64, host: Vec<u64> },
    /// Not the lab backend's boots (e.g. the NixOS backend, which records none).
    NoBoots,
}

impl Shortfall {
    pub fn describe(&self) -> String {
        match self {
            Shortfall::Partial { boots } => format!(
                "a partial run (--boots {boots}; the full test boots {FULL_VM_TEST_BOOTS} times, through every rotation)"
            ),
            Shortfall::MissingBootKinds(kinds) => {
                format!("a run without a boot of kind {}", kinds.join(", "))
            }
            Shortfall::OtherDiskSize { vm, host } => format!(
                "a run on a {vm}-byte disk, not the host's {} bytes (--disk-size)",
                host.iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(" or ")
            ),
            Shortfall::NoBoots => "a run that recorded no boots".to_owned(),
        }
    }
}

impl VmTestResults {
    /// Why this run is not the full default test of a host whose disks have
    /// `host_disk_bytes`; `None` when it is. Says nothing about pass or fail.
    pub fn shortfall(&self, host_disk_bytes: &BTreeMap<String, u64>) -> Option<Shortfall> {
        if self.requested.boots < FULL_VM_TEST_BOOTS {
            return Some(Shortfall::Partial {
                boots: self.requested.boots,
            });
        }
        let sizes: Vec<u64> = host_disk_bytes.values().copied().collect();
        if !sizes.is_empty() && !sizes.contains(&self.disk_bytes) {
            return Some(Shortfall::OtherDiskSize {
                vm: self.disk_bytes,
                host: sizes,
            });
        }
        if self.boots.is_empty() {
            return Some(Shortfall::NoBoots);
        }
        // A failed run may stop before a kind of boot; only a pass must have them all.
        if self.header.passed {
            let missing: Vec<String> = VM_TEST_BOOT_KINDS
                .iter()
                .filter(|kind| !self.boots.iter().any(|b| b.kind == **kind))
                .map(|kind| (*kind).to_owned())
                .collect();
            if !missing.is_empty() {
                return Some(Shortfall::MissingBootKinds(missing));
            }
        }
        None
    }
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

impl CheckRecord {
    pub fn new(boot: u32, name: &str, passed: bool, measured: String, expected: String) -> Self {
        CheckRecord {
            boot,
            name: name.to_owned(),
            passed,
            measured,
            expected,
        }
    }
}

/// `target/xtask/<kind>.json`: the last run.
pub fn path(kind: Kind) -> Utf8PathBuf {
    xtask_dir().join(file_name(kind))
}

/// `target/xtask/<kind>.pass.json`: the last run that passed and counts as proof.
pub fn pass_path(kind: Kind) -> Utf8PathBuf {
    xtask_dir().join(pass_file_name(kind))
}

pub fn file_name(kind: Kind) -> String {
    format!("{kind}.json")
}

pub fn pass_file_name(kind: Kind) -> String {
    format!("{kind}.pass.json")
}

/// Where a run's results were written.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The last-run file.
    pub run: Utf8PathBuf,
    /// The proof file, when this run became the proof.
    pub pass: Option<Utf8PathBuf>,
}

/// Writes a run's results (a struct with a flattened `Header`) atomically as
/// the last run of `kind`, and also as its proof when `proof` (the run passed
/// and is the full test; the caller decides, since only it knows its kind).
pub fn record<T: Serialize>(kind: Kind, results: &T, proof: bool) -> Result<Recorded> {
    record_in(&xtask_dir(), kind, results, proof)
}

fn record_in<T: Serialize>(
    dir: &Utf8Path,
    kind: Kind,
    results: &T,
    proof: bool,
) -> Result<Recorded> {
    let json = serde_json::to_vec_pretty(results).context("serialising results")?;
    let run = dir.join(file_name(kind));
    write_atomically(&run, &json)?;
    let pass = if proof {
        let pass = dir.join(pass_file_name(kind));
        write_atomically(&pass, &json)?;
        Some(pass)
    } else {
        None
    };
    Ok(Recorded { run, pass })
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

    /// The record flattens the outcome it shares with the guest's event:
    /// vm-test.json keeps every field, in the order it always had.
    #[test]
    fn a_command_record_keeps_its_fields_and_their_order() {
        let record = CommandRecord {
            boot: 3,
            part: 1,
            outcome: CommandOutcome {
                role: "verify".into(),
                at: None,
                line: "sha256sum /persist/x".into(),
                ran: "sha256sum /persist/x".into(),
                status: CommandStatus::Pass,
                exit: Some(0),
                ms: 12,
                stdout: "abc  /persist/x\n".into(),
                stderr: String::new(),
                expected: "exit 0".into(),
                passed: true,
                problem: None,
                proven_by: Some("the NixOS VM test".into()),
            },
        };
        let json = serde_json::to_string(&record).unwrap();
        assert_eq!(
            json,
            concat!(
                r#"{"boot":3,"part":1,"role":"verify","line":"sha256sum /persist/x","#,
                r#""ran":"sha256sum /persist/x","status":"pass","exit":0,"ms":12,"#,
                r#""stdout":"abc  /persist/x\n","stderr":"","expected":"exit 0","passed":true,"#,
                r#""proven_by":"the NixOS VM test"}"#
            )
        );
        assert_eq!(
            serde_json::from_str::<CommandRecord>(&json).unwrap(),
            record
        );
    }

    #[test]
    fn round_trips_with_a_header() {
        let dir = tempfile::tempdir().unwrap();
        let path = Utf8PathBuf::from_path_buf(dir.path().join("x.json")).unwrap();
        let example = Example {
            header: Header::now(Kind::Check, "h", true),
            figure: 7,
        };
        write_atomically(&path, &serde_json::to_vec(&example).unwrap()).unwrap();
        let back: Example = read(&path).unwrap().unwrap();
        assert_eq!(back, example);
        assert!(read::<Example>(&path.with_file_name("missing.json"))
            .unwrap()
            .is_none());
        assert!(back.header.finished_at.ends_with('Z'));
        assert!(
            back.header
                .inputs
                .contains_key("hosts/servers/hetzner-cloud/disko.nix"),
            "{:?}",
            back.header.inputs.keys()
        );
    }

    #[test]
    fn each_kind_rests_on_its_own_files() {
        let root = project_root();
        let names = |kind: Kind| -> Vec<String> {
            input_files(&root, kind, "hetzner-cloud")
                .unwrap()
                .iter()
                .map(|p| p.strip_prefix(&root).unwrap().to_string())
                .collect()
        };
        let check = names(Kind::Check);
        assert!(check.contains(&"hosts/servers/hetzner-cloud/disko.nix".to_owned()));
        assert!(check.contains(&"flake.nix".to_owned()));
        assert!(check.iter().all(|p| p.ends_with(".nix")), "{check:?}");
        let vm = names(Kind::VmTest);
        assert!(vm.contains(&"hosts/servers/hetzner-cloud/disko.nix".to_owned()));
        assert!(vm.contains(&"nix/modules/btrfs-rollback/rollback.sh".to_owned()));
        assert!(vm.contains(&"nix/lib/eval-host.nix".to_owned()));
        assert!(!vm.contains(&"flake.nix".to_owned()));
        let flake = names(Kind::FlakeEval);
        assert!(flake.contains(&"flake.nix".to_owned()));
        assert!(flake.contains(&"nix/modules/btrfs-rollback/rollback.sh".to_owned()));
        // Every variant of vm-test rests on the same files as vm-test.
        assert_eq!(names(Kind::VmTestSsh(2222)), vm);
        assert_eq!(names(Kind::VmTestTampered), vm);
        let fresh = input_files(&root, Kind::FreshMachine, "-").unwrap_err();
        assert_eq!(
            fresh.to_string(),
            "no input files are defined for results of kind \"fresh-machine\""
        );
    }

    #[test]
    fn kinds_are_named_as_their_files() {
        let named = [
            (Kind::Check, "check"),
            (Kind::FlakeEval, "flake-eval"),
            (Kind::VmTest, "vm-test"),
            (Kind::VmTestThorough, "vm-test-thorough"),
            (Kind::VmTestTampered, "vm-test-tampered"),
            (Kind::VmTestWhatIf, "vm-test-what-if"),
            (Kind::VmTestSsh(2201), "vm-test-ssh-2201"),
            (Kind::FreshMachine, "fresh-machine"),
        ];
        for (kind, name) in named {
            assert_eq!(kind.to_string(), name);
            assert_eq!(file_name(kind), format!("{name}.json"));
            assert_eq!(pass_file_name(kind), format!("{name}.pass.json"));
            assert_eq!(kind.is_vm_test(), name.starts_with("vm-test"), "{name}");
        }
    }

    #[test]
    fn changes_name_the_file() {
        let recorded = Inputs::from([
            ("a.nix".to_owned(), "1".to_owned()),
            ("b.nix".to_owned(), "2".to_owned()),
        ]);
        let current = Inputs::from([
            ("a.nix".to_owned(), "1".to_owned()),
            ("b.nix".to_owned(), "3".to_owned()),
            ("c.nix".to_owned(), "4".to_owned()),
        ]);
        assert_eq!(
            changed_inputs(&recorded, &current),
            vec!["b.nix changed", "c.nix is new"]
        );
        assert_eq!(
            changed_inputs(&current, &recorded),
            vec!["b.nix changed", "c.nix is gone"]
        );
        assert!(changed_inputs(&recorded, &recorded).is_empty());
    }

    #[test]
    fn a_run_records_its_proof_only_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let dir = Utf8Path::from_path(dir.path()).unwrap();
        let example = |figure| Example {
            header: Header::at_revision(
                Kind::Check,
                "h",
                true,
                Revision {
                    commit: None,
                    dirty: true,
                },
            ),
            figure,
        };
        let first = record_in(dir, Kind::Check, &example(1), true).unwrap();
        assert!(first.pass.is_some());
        let second = record_in(dir, Kind::Check, &example(2), false).unwrap();
        assert!(second.pass.is_none());
        let run: Example = read(&first.run).unwrap().unwrap();
        let pass: Example = read(first.pass.as_ref().unwrap()).unwrap().unwrap();
        assert_eq!((run.figure, pass.figure), (2, 1));
    }
}
