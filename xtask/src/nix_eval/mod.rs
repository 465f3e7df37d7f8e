//! Locating and running Nix, and turning its errors into findings that name
//! the file, line and column.
//!
//! A config is a program: it may loop, allocate without end or print values
//! JSON cannot hold. Every nix-instantiate therefore runs with a time limit
//! (`XTASK_NIX_TIMEOUT`), a heap limit for its garbage collector and a limit
//! on the output read, and what it prints is checked before it is trusted.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context as _, Result};
use camino::{Utf8Path, Utf8PathBuf};
use serde_json::Value;

use layout::findings::{AttrPath, Finding, Location, Severity};
use toolbox::context::Context;
use toolbox::project::project_root;
use toolbox::setup;

mod errors;
mod evaluation;
mod flake;
mod run;
pub mod store;

pub use errors::NixError;
use evaluation::{evaluation_finding, is_blank};
pub use evaluation::{read_evaluation, too_deep};
pub use flake::{eval_raw, evaluate_flake, FlakeEvaluation, RawEvaluation};
use run::{run_retrying, Limits, Ran};

/// The time limit's variable and default belong to the context (which
/// commands are handed); kept here under their old names.
pub use toolbox::context::{
    DEFAULT_NIX_TIMEOUT as DEFAULT_TIMEOUT, NIX_TIMEOUT_ENV as TIMEOUT_ENV,
};
/// Boehm GC's heap limit for the evaluator (`GC_MAXIMUM_HEAP_SIZE`): a config
/// that allocates without end stops with Nix's "out of memory" instead of
/// taking the machine's memory. 100 000 subvolumes need about 300 MiB.
const MAX_HEAP_BYTES: u64 = 2 << 30;
/// The most JSON read from one evaluation; the repo's host prints about 10 KiB,
/// 100 000 subvolumes about 40 MiB.
pub const MAX_OUTPUT_BYTES: u64 = 256 << 20;
/// Nix's messages are cut here (a `throw` may carry a huge string).
const MAX_ERROR_BYTES: u64 = 1 << 20;
/// serde_json stops reading JSON nested 128 deep; then the place is looked
/// for, and reported from this depth on. A disko layout needs about 12 levels,
/// and nix/lib/eval-host.nix keeps its own position trees shallower than this.
pub const MAX_DEPTH: usize = 100;
/// What nix/lib/eval-host.nix puts in place of a value JSON cannot carry
/// faithfully (a path literal, a float that is not finite).
pub const INVALID_MARKER: &str = "__xtaskInvalid";
/// How nix/lib/eval-host.nix starts the error for a layout that is a function
/// of module arguments (`{ lib, ... }:`), which standalone mode cannot call.
const CANNOT_CALL: &str = "standalone mode cannot call ";
/// The Nix tools `check` runs.
#[derive(Debug, Clone)]
pub struct Nix {
    pub instantiate: Utf8PathBuf,
    /// How long one nix-instantiate may run (`--nix-timeout`).
    pub timeout: Duration,
}

impl Nix {
    /// Finds nix-instantiate (installing nix-bin when allowed) and makes
    /// sure its store is initialised, so that runs in parallel are safe.
    pub fn locate(context: &Context) -> Result<Nix> {
        let found = setup::ensure(context, &[setup::NIX_INSTANTIATE])?;
        let instantiate = found.path(setup::NIX_INSTANTIATE)?.clone();
        store::prepare(&instantiate, context.nix_timeout())?;
        Ok(Nix {
            instantiate,
            timeout: context.nix_timeout(),
        })
    }

    /// Runs nix-instantiate within the limits above. A failure of the tool
    /// itself (its store busy or unusable, a crash, the time limit) is an
    /// `Err` with Nix's own message, after retrying what is transient: it
    /// says nothing about the files, so it never becomes a finding.
    fn run(&self, args: &[&str]) -> Result<Ran> {
        let limits = Limits {
            timeout: self.timeout,
            max_heap_bytes: Some(MAX_HEAP_BYTES),
            max_output_bytes: MAX_OUTPUT_BYTES,
        };
        run_retrying(&self.instantiate, args, &[], limits)?.into_result()
    }

    /// Parses the files (`nix-instantiate --parse`) and reports every syntax
    /// error. A set of files that parsed cleanly before, byte for byte, with
    /// the same nix-instantiate, is not parsed again: a parse depends on
    /// nothing else, and the cache under target/xtask/parse-cache spares
    /// `check` a process (docs/benchmarks.md, check ÷ bare eval).
    /// `digests`: each file's SHA-256 (hex) by path, as the caller hashed
    /// them; a file without one is never taken from the cache.
    pub fn parse_files(
        &self,
        files: &[Utf8PathBuf],
        digests: &BTreeMap<Utf8PathBuf, String>,
    ) -> Result<Vec<Finding>> {
        let marker = parse_cache_key(&self.instantiate, files, digests)
            .map(|key| toolbox::project::xtask_dir().join("parse-cache").join(key));
        if marker.as_ref().is_some_and(|m| m.is_file()) {
            return Ok(Vec::new());
        }
        let findings = self.parse_files_uncached(files)?;
        if let (true, Some(marker)) = (findings.is_empty(), marker) {
            // Only a clean parse is remembered; a failure to write it costs a process next time, nothing more.
            remember_clean_parse(&marker);
        }
        Ok(findings)
    }

    /// One process for all files, and one more per broken file.
    fn parse_files_uncached(&self, files: &[Utf8PathBuf]) -> Result<Vec<Finding>> {
        let mut findings = Vec::new();
        let mut remaining: &[Utf8PathBuf] = files;
        while !remaining.is_empty() {
            let mut args = vec!["--parse"];
            args.extend(remaining.iter().map(|f| f.as_str()));
            let ran = self.run(&args).context("parsing the .nix files")?;
            if ran.success() {
                break;
            }
            if ran.status.is_none_or(|s| s.code().is_none()) {
                // Stopped or killed: no file to blame.
                anyhow::bail!(
                    "nix-instantiate --parse {}: {}",
                    remaining
                        .iter()
                        .map(|f| toolbox::project::display_path(f))
                        .collect::<Vec<_>>()
                        .join(" "),
                    ran.error().message
                );
            }
            let error = ran.error();
            // Nix stops at the first broken file; continue after it.
            let broken = error
                .location
                .as_ref()
                .and_then(|loc| remaining.iter().position(|f| same_file(f, &loc.file)));
            let (file, rest) = match broken {
                Some(index) => (remaining[index].clone(), &remaining[index + 1..]),
                // No location: it is about the first file Nix could not read.
                None => (remaining[0].clone(), &remaining[1..]),
            };
            // Nix resolves names while parsing, so an unknown name fails here too.
            let (code, hint) = if error.message.starts_with("undefined variable") {
                (
                    "NIX003",
                    "Define the name (in a `let`, or as a function argument) or fix its spelling.",
                )
            } else if is_blank(&file) {
                ("NIX001", "Write the layout as an attribute set, e.g. `{ disko.devices.disk.main = { device = \"/dev/sda\"; ... }; }`, or delete the file.")
            } else {
                ("NIX001", "Fix the syntax at the position shown (`nix-instantiate --parse <file>` shows it too).")
            };
            let message = if is_blank(&file) {
                format!(
                    "{} is empty (nothing but whitespace and comments), so it is no Nix expression",
                    toolbox::project::display_path(&file)
                )
            } else {
                format!(
                    "{} does not parse: {}",
                    toolbox::project::display_path(&file),
                    error.message
                )
            };
            findings.push(
                Finding::new(code, Severity::Error, AttrPath::root(), message, hint).at(error
                    .location
                    .or(Some(Location {
                        file,
                        line: 0,
                        column: 0,
                    }))),
            );
            remaining = rest;
        }
        Ok(findings)
    }

    /// Evaluates a host's standalone files to JSON through nix/lib/eval-host.nix.
    /// An evaluation error, or a value JSON cannot carry, is a finding, not a
    /// failure to run.
    pub fn evaluate_host(&self, files: &HostSources<'_>) -> Result<Result<Value, Vec<Finding>>> {
        let layout_file = files.layout;
        let wrapper = project_root().join("nix").join("lib").join("eval-host.nix");
        let mut args: Vec<&str> = vec![
            "--eval",
            "--strict",
            "--json",
            // Names the file being evaluated when an error has no position (throw, abort).
            "--show-trace",
            wrapper.as_str(),
            "--argstr",
            "layoutFile",
            layout_file.as_str(),
        ];
        if let Some(persistence) = files.persistence {
            args.extend(["--argstr", "persistenceFile", persistence.as_str()]);
        }
        if let Some(machine) = files.machine {
            args.extend(["--argstr", "machineFile", machine.as_str()]);
        }
        if let Some(rollback) = files.rollback {
            args.extend(["--argstr", "rollbackFile", rollback.as_str()]);
        }
        let ran = self.run(&args).with_context(|| {
            format!("evaluating {}", toolbox::project::display_path(layout_file))
        })?;
        if !ran.success() {
            let error = match ran.status {
                // Positions in our own wrapper are never where the config is wrong.
                Some(status) if status.code().is_some() => {
                    NixError::parse_skipping(&ran.stderr, |file| file.starts_with(wrapper_dir()))
                }
                _ => ran.error(),
            };
            return Ok(Err(vec![evaluation_finding(error)]));
        }
        read_evaluation(&ran.stdout).with_context(|| {
            format!(
                "reading the JSON nix-instantiate printed for {}",
                toolbox::project::display_path(layout_file)
            )
        })
    }
}

/// The files of one host that nix/lib/eval-host.nix reads: what Nix needs
/// of a host, as plain paths (the host itself is a layer above).
#[derive(Debug, Clone, Copy)]
pub struct HostSources<'a> {
    /// disko.nix (or the file given in its place).
    pub layout: &'a Utf8Path,
    pub persistence: Option<&'a Utf8Path>,
    pub machine: Option<&'a Utf8Path>,
    pub rollback: Option<&'a Utf8Path>,
}

/// How many clean parses the cache keeps before it starts over.
const PARSE_CACHE_ENTRIES: usize = 64;

/// The cache key of a clean parse: the parser (nix-instantiate's path, size
/// and mtime) and every file's path and contents (by their SHA-256). `None`
/// when a file has no digest: then the files are parsed.
fn parse_cache_key(
    instantiate: &Utf8Path,
    files: &[Utf8PathBuf],
    digests: &BTreeMap<Utf8PathBuf, String>,
) -> Option<String> {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    let binary = std::fs::metadata(instantiate.canonicalize_utf8().ok()?).ok()?;
    let mtime = binary
        .modified()
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?;
    hasher.update(format!("{instantiate}\0{}\0{}\0", binary.len(), mtime.as_nanos()).as_bytes());
    for file in files {
        hasher.update(format!("{file}\0{}\0", digests.get(file)?).as_bytes());
    }
    Some(
        hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
    )
}

fn remember_clean_parse(marker: &Utf8Path) {
    let Some(dir) = marker.parent() else {
        return;
    };
    if std::fs::read_dir(dir).is_ok_and(|entries| entries.count() >= PARSE_CACHE_ENTRIES) {
        let _ = std::fs::remove_dir_all(dir);
    }
    let _ = std::fs::create_dir_all(dir).and_then(|()| std::fs::write(marker, b""));
}

/// Where our Nix wrappers live (nix/lib).
fn wrapper_dir() -> Utf8PathBuf {
    project_root().join("nix").join("lib")
}

fn same_file(a: &Utf8Path, b: &Utf8Path) -> bool {
    a == b
        || match (a.canonicalize_utf8(), b.canonicalize_utf8()) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        }
}

impl Nix {
    /// Evaluates a Nix file of ours (`nix-instantiate --eval --strict --json`)
    /// with string arguments, within the limits above. `Ok(Err)` is Nix's error.
    pub fn evaluate_file(
        &self,
        file: &Utf8Path,
        args: &[(&str, &str)],
    ) -> Result<Result<Value, NixError>> {
        let mut argv: Vec<&str> = vec!["--eval", "--strict", "--json", file.as_str()];
        for (name, value) in args {
            argv.extend(["--argstr", name, value]);
        }
        let ran = self.run(&argv)?;
        if !ran.success() {
            return Ok(Err(ran.error()));
        }
        Ok(Ok(serde_json::from_slice(&ran.stdout).with_context(
            || format!("reading the JSON nix-instantiate printed for {file}"),
        )?))
    }
}
