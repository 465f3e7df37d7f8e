//! Locating and running Nix, and turning its errors into findings that name
//! the file, line and column.
//!
//! A config is a program: it may loop, allocate without end or print values
//! JSON cannot hold. Every nix-instantiate therefore runs with a time limit
//! (`XTASK_NIX_TIMEOUT`), a heap limit for its garbage collector and a limit
//! on the output read, and what it prints is checked before it is trusted.

use std::process::ExitStatus;
use std::time::Duration;

use anyhow::{Context as _, Result};
use camino::{Utf8Path, Utf8PathBuf};
use serde_json::Value;

use crate::findings::{AttrPath, Finding, Location, Severity};
use crate::hosts::Host;
use crate::process::{Output, Supervised};
use crate::project::project_root;
use crate::setup;

pub mod store;

/// Seconds one nix-instantiate may run before `check` stops it.
pub const TIMEOUT_ENV: &str = "XTASK_NIX_TIMEOUT";
/// The repo's host evaluates in well under a second, 100 000 subvolumes in about one.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
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

/// The limits of one run of a Nix program.
#[derive(Debug, Clone, Copy)]
struct Limits {
    timeout: Duration,
    /// `GC_MAXIMUM_HEAP_SIZE`; `None` leaves the evaluator unbounded (flake
    /// mode evaluates all of NixOS).
    max_heap_bytes: Option<u64>,
    max_output_bytes: u64,
}

/// What one run of a Nix program left behind.
struct Ran {
    program: String,
    /// `None` when it was stopped after `limits.timeout`.
    status: Option<ExitStatus>,
    stdout: Vec<u8>,
    /// It printed more than `limits.max_output_bytes` (the rest was not read).
    output_too_large: bool,
    stderr: String,
    limits: Limits,
}

impl Ran {
    fn output_too_large(&self) -> bool {
        self.output_too_large
    }

    fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success()) && !self.output_too_large()
    }

    /// Whether it failed because of the tool rather than the files: the
    /// store, a crash (a signal), or the time limit.
    fn tool_failure(&self) -> Option<store::StoreFailure> {
        match self.status {
            None => Some(store::StoreFailure::Unusable),
            Some(status) if status.code().is_none() => Some(store::StoreFailure::Unusable),
            Some(status) if status.success() => None,
            Some(_) => store::classify(&self.stderr),
        }
    }

    /// `Err` for a failure of the tool, with its own message and the command.
    fn into_result(self) -> Result<Ran> {
        if self.tool_failure().is_none() {
            return Ok(self);
        }
        let said = self.error().message;
        if self.status.is_none() {
            // Says what to do already; whether the config loops or the
            // machine is slow cannot be told apart, so it is no finding.
            anyhow::bail!("{said}");
        }
        anyhow::bail!(
            "{} failed: {said}\n  (a failure of Nix itself, not a finding about the files it read: run the command again; if it persists, repair the Nix installation)",
            self.program
        )
    }

    /// Why it failed: Nix's own message, or how the process ended.
    fn error(&self) -> NixError {
        let ended = |message: String| NixError {
            message,
            location: None,
        };
        if self.output_too_large() {
            return ended(format!(
                "the evaluated config is larger than {} MiB of JSON; check reads no more",
                self.limits.max_output_bytes >> 20
            ));
        }
        match self.status {
            None => ended(format!(
                "{} did not finish within {} s and was stopped (a config that loops or computes without end; set {TIMEOUT_ENV}=<seconds> to allow longer)",
                self.program,
                self.limits.timeout.as_secs()
            )),
            Some(status) if status.code().is_none() => {
                let said = NixError::parse(&self.stderr);
                ended(format!(
                    "{} was killed ({status}){}",
                    self.program,
                    if self.stderr.trim().is_empty() {
                        String::new()
                    } else {
                        format!(": {}", said.message)
                    }
                ))
            }
            Some(_) => NixError::parse(&self.stderr),
        }
    }
}

/// The time limit from `XTASK_NIX_TIMEOUT`, or the default.
fn timeout() -> Result<Duration> {
    match std::env::var(TIMEOUT_ENV) {
        Err(_) => Ok(DEFAULT_TIMEOUT),
        Ok(value) => value
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|seconds| *seconds > 0)
            .map(Duration::from_secs)
            .with_context(|| {
                format!("{TIMEOUT_ENV}={value:?}: give a whole number of seconds, e.g. {TIMEOUT_ENV}=300")
            }),
    }
}

/// The Nix tools `check` runs.
#[derive(Debug, Clone)]
pub struct Nix {
    pub instantiate: Utf8PathBuf,
}

impl Nix {
    /// Finds nix-instantiate (installing nix-bin when allowed) and makes
    /// sure its store is initialised, so that runs in parallel are safe.
    pub fn locate() -> Result<Nix> {
        let found = setup::ensure(&[setup::NIX_INSTANTIATE])?;
        let instantiate = found.path(setup::NIX_INSTANTIATE)?.clone();
        store::prepare(&instantiate)?;
        Ok(Nix { instantiate })
    }

    /// Runs nix-instantiate within the limits above. A failure of the tool
    /// itself (its store busy or unusable, a crash, the time limit) is an
    /// `Err` with Nix's own message, after retrying what is transient: it
    /// says nothing about the files, so it never becomes a finding.
    fn run(&self, args: &[&str]) -> Result<Ran> {
        let limits = Limits {
            timeout: timeout()?,
            max_heap_bytes: Some(MAX_HEAP_BYTES),
            max_output_bytes: MAX_OUTPUT_BYTES,
        };
        run_retrying(&self.instantiate, args, &[], limits)?.into_result()
    }

    /// Parses the files (`nix-instantiate --parse`) and reports every syntax
    /// error: one process for all files, and one more per broken file.
    pub fn parse_files(&self, files: &[Utf8PathBuf]) -> Result<Vec<Finding>> {
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
                        .map(|f| crate::project::display_path(f))
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
                    crate::project::display_path(&file)
                )
            } else {
                format!(
                    "{} does not parse: {}",
                    crate::project::display_path(&file),
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
    pub fn evaluate_host(
        &self,
        host: &Host,
        layout_file: &Utf8Path,
    ) -> Result<Result<Value, Vec<Finding>>> {
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
        if let Some(persistence) = &host.persistence_file {
            args.extend(["--argstr", "persistenceFile", persistence.as_str()]);
        }
        if let Some(machine) = &host.machine_file {
            args.extend(["--argstr", "machineFile", machine.as_str()]);
        }
        if let Some(rollback) = &host.rollback_file {
            args.extend(["--argstr", "rollbackFile", rollback.as_str()]);
        }
        let ran = self
            .run(&args)
            .with_context(|| format!("evaluating {}", crate::project::display_path(layout_file)))?;
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
                crate::project::display_path(layout_file)
            )
        })
    }
}

/// `run_limited`, tried again while Nix fails for a transient store reason
/// (another process initialising it, a busy database).
fn run_retrying(
    program: &Utf8Path,
    args: &[&str],
    env: &[(&str, &str)],
    limits: Limits,
) -> Result<Ran> {
    let mut attempt = 0;
    loop {
        let ran = run_limited(program, args, env, limits)?;
        attempt += 1;
        if attempt >= store::ATTEMPTS || ran.tool_failure() != Some(store::StoreFailure::Transient)
        {
            return Ok(ran);
        }
        std::thread::sleep(store::backoff(attempt - 1));
    }
}

/// Runs a Nix program within `limits` (the supervised runner reads its
/// output while it runs).
fn run_limited(
    program: &Utf8Path,
    args: &[&str],
    env: &[(&str, &str)],
    limits: Limits,
) -> Result<Ran> {
    let mut supervised = Supervised::new(program)
        .args(args)
        .current_dir(project_root())
        .timeout(limits.timeout)
        // Past the limit the pipe is closed, which ends a child that keeps writing.
        .stdout(Output::at_most(limits.max_output_bytes))
        .stderr(Output::keep(MAX_ERROR_BYTES));
    for (key, value) in env {
        supervised = supervised.env(key, value);
    }
    if let Some(bytes) = limits.max_heap_bytes {
        supervised = supervised.gc_heap_limit(bytes);
    }
    let finished = supervised.run()?;
    Ok(Ran {
        program: finished.name.clone(),
        status: finished.status,
        output_too_large: finished.stdout_truncated,
        stderr: finished.stderr_text(),
        stdout: finished.stdout,
        limits,
    })
}

/// Where our Nix wrappers live (nix/lib).
fn wrapper_dir() -> Utf8PathBuf {
    project_root().join("nix").join("lib")
}

/// The finding for an evaluation that failed.
fn evaluation_finding(error: NixError) -> Finding {
    if let Some(rest) = error.message.strip_prefix(CANNOT_CALL) {
        let file = rest.split_once(": ").map(|(file, _)| file).unwrap_or(rest);
        let location = Some(Location {
            file: Utf8PathBuf::from(file),
            line: 0,
            column: 0,
        })
        .filter(|l| l.file.is_absolute());
        return Finding::new(
            "NIX004",
            Severity::Error,
            AttrPath::root(),
            error.message.clone(),
            "Run `cargo xtask check --mode flake` where the flake's inputs can be evaluated (after `nix flake lock`), or write the file as a plain attribute set without `{ lib, ... }:` (as hosts/servers/hetzner-cloud/disko.nix is), so that it evaluates without nixpkgs.",
        )
        .at(location);
    }
    let hint = if error.message.contains("out of memory") {
        format!("The config allocates without end (a huge builtins.genList, a string doubled again and again); check stops Nix at {} GiB of heap.", MAX_HEAP_BYTES >> 30)
    } else if error.message.contains("stack overflow")
        || error.message.contains("infinite recursion")
    {
        "Look for a value defined in terms of itself, or a recursion without a base case, at the position shown.".to_owned()
    } else if error.message.contains(TIMEOUT_ENV) {
        "Look for a recursion or a computation that never ends; a layout evaluates in well under a second.".to_owned()
    } else {
        "Fix the expression at the position shown; `nix-instantiate --eval --strict <file> --show-trace` tells more.".to_owned()
    };
    // Name the host file that fails (disko.nix, persistence.nix,
    // machine.nix, rollback.nix), as Nix's position shows it.
    let what = match &error.location {
        Some(location) => format!("{} does", crate::project::display_path(&location.file)),
        None => "the host's files do".to_owned(),
    };
    Finding::new(
        "NIX002",
        Severity::Error,
        AttrPath::root(),
        format!("{what} not evaluate: {}", error.message),
        hint,
    )
    .at(error.location)
}

/// Whether a file holds nothing but whitespace and comments (or cannot be read).
fn is_blank(file: &Utf8Path) -> bool {
    match std::fs::read(file) {
        Ok(bytes) => is_blank_nix(&String::from_utf8_lossy(&bytes)),
        Err(_) => false,
    }
}

/// Whether Nix source is nothing but whitespace, `# …` and `/* … */` comments.
fn is_blank_nix(text: &str) -> bool {
    let mut rest = text.trim_start();
    loop {
        if rest.is_empty() {
            return true;
        }
        if let Some(comment) = rest.strip_prefix('#') {
            rest = comment.split_once('\n').map_or("", |(_, after)| after);
        } else if let Some(comment) = rest.strip_prefix("/*") {
            match comment.split_once("*/") {
                Some((_, after)) => rest = after,
                // An unclosed comment is a syntax error, not an empty file.
                None => return false,
            }
        } else {
            return false;
        }
        rest = rest.trim_start();
    }
}

/// The evaluation as JSON, or findings for what JSON could not carry: bytes
/// that are not UTF-8, values nested deeper than `MAX_DEPTH`, and the
/// values nix/lib/eval-host.nix marked (path literals, infinite floats).
/// `Err` only for output that is not JSON at all.
pub fn read_evaluation(stdout: &[u8]) -> Result<Result<Value, Vec<Finding>>> {
    let (text, utf8) = match std::str::from_utf8(stdout) {
        Ok(text) => (std::borrow::Cow::Borrowed(text), true),
        Err(_) => (String::from_utf8_lossy(stdout), false),
    };
    let value: Value = match serde_json::from_str(&text) {
        Ok(value) => value,
        Err(error) => {
            // serde_json stops at 128 levels; say where, in the config's terms.
            if let Some(path) = too_deep(text.as_bytes(), MAX_DEPTH) {
                return Ok(Err(vec![too_deep_finding(&path)]));
            }
            return Err(error.into());
        }
    };
    let mut findings = Vec::new();
    let positions_of = |key: &str| {
        crate::layout::positions::Positions::new(
            value
                .get(key)
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
        )
    };
    for (key, base, positions) in [
        ("layout", AttrPath::root(), "positions"),
        (
            "persistence",
            AttrPath::new(["environment", "persistence"]),
            "positions",
        ),
        ("machine", AttrPath::new(["machine"]), "machinePositions"),
        ("rollback", AttrPath::root(), "rollbackPositions"),
    ] {
        let Some(part) = value.get(key) else { continue };
        let mut found = Vec::new();
        unreadable_values(part, &base, !utf8, &mut found);
        if found.is_empty() {
            continue;
        }
        let positions = positions_of(positions);
        for finding in &mut found {
            // machine.nix's own trees start below `machine`.
            let path = match finding.path.segments().split_first() {
                Some((first, rest)) if key == "machine" && first == "machine" => {
                    AttrPath::new(rest.iter().cloned())
                }
                _ => finding.path.clone(),
            };
            finding.location = positions.locate(&path);
        }
        findings.extend(found);
    }
    if findings.is_empty() {
        return Ok(Ok(value));
    }
    Ok(Err(findings))
}

fn too_deep_finding(path: &[String]) -> Finding {
    let at = evaluated_path(path);
    Finding::new(
        "MODEL006",
        Severity::Error,
        at.clone(),
        format!(
            "the value at {at} nests more than {MAX_DEPTH} attribute sets or lists deep; a disko layout needs about 12"
        ),
        "Look for a recursive function or a generated value at this place; write the layout as a few levels of plain attribute sets.",
    )
}

/// The attribute path of the config for a path in eval-host.nix's output.
fn evaluated_path(path: &[String]) -> AttrPath {
    let (base, rest) = match path.split_first() {
        Some((first, rest)) if first == "layout" => (AttrPath::root(), rest),
        Some((first, rest)) if first == "persistence" => {
            (AttrPath::new(["environment", "persistence"]), rest)
        }
        _ => (AttrPath::root(), path),
    };
    rest.iter()
        .fold(base, |path, segment| path.join(segment.clone()))
}

/// Walks the evaluation for marked values and, when the output was not
/// UTF-8, for the strings and names that held the bad bytes.
fn unreadable_values(value: &Value, path: &AttrPath, lossy: bool, findings: &mut Vec<Finding>) {
    const REPLACED: char = char::REPLACEMENT_CHARACTER;
    match value {
        Value::Object(map) => {
            if let Some(Value::String(what)) = map.get(INVALID_MARKER) {
                findings.push(Finding::new(
                    "MODEL001",
                    Severity::Error,
                    path.clone(),
                    format!("{path} is {what}"),
                    "Give the value the type disko's option has: a string in quotes for paths and sizes, an integer or a boolean where those are expected.",
                ));
                return;
            }
            for (key, item) in map {
                let item_path = path.join(key.clone());
                if lossy && key.contains(REPLACED) {
                    findings.push(not_utf8(&item_path, "the attribute name"));
                }
                unreadable_values(item, &item_path, lossy, findings);
            }
        }
        Value::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                unreadable_values(item, &path.join(format!("[{index}]")), lossy, findings);
            }
        }
        Value::String(text) if lossy && text.contains(REPLACED) => {
            findings.push(not_utf8(path, &format!("the string {text:?}")));
        }
        _ => {}
    }
}

fn not_utf8(path: &AttrPath, what: &str) -> Finding {
    Finding::new(
        "MODEL005",
        Severity::Error,
        path.clone(),
        format!("{what} at {path} is not valid UTF-8 (the bytes that are not are shown as U+FFFD); devices, names and mountpoints must be text"),
        "Remove the bytes: they usually come from builtins.substring cutting a character in two, or from a file saved in Latin-1 rather than UTF-8.",
    )
}

/// The path (keys and `[index]`es) to the first place where `json` nests
/// more than `limit` deep, without parsing it (serde_json would stop there).
pub fn too_deep(json: &[u8], limit: usize) -> Option<Vec<String>> {
    // One entry per open container: the key or index of the value being read.
    let mut stack: Vec<Option<String>> = Vec::new();
    let mut in_object: Vec<bool> = Vec::new();
    let mut index = 0;
    while index < json.len() {
        match json[index] {
            b'"' => {
                let start = index;
                index += 1;
                while index < json.len() && json[index] != b'"' {
                    index += if json[index] == b'\\' { 2 } else { 1 };
                }
                let end = index.min(json.len());
                // A string right after `{` or `,` in an object is a key.
                let is_key = in_object.last().copied().unwrap_or(false)
                    && stack.last().is_some_and(Option::is_none);
                if is_key {
                    let raw = &json[start..=end.min(json.len() - 1)];
                    let key = serde_json::from_slice::<String>(raw).unwrap_or_else(|_| {
                        String::from_utf8_lossy(&json[start + 1..end]).into_owned()
                    });
                    if let Some(top) = stack.last_mut() {
                        *top = Some(key);
                    }
                }
            }
            open @ (b'{' | b'[') => {
                if stack.len() >= limit {
                    return Some(stack.into_iter().map(Option::unwrap_or_default).collect());
                }
                in_object.push(open == b'{');
                stack.push(if open == b'[' {
                    Some("[0]".to_owned())
                } else {
                    None
                });
            }
            b'}' | b']' => {
                stack.pop();
                in_object.pop();
            }
            b',' => {
                if let (Some(top), Some(object)) = (stack.last_mut(), in_object.last()) {
                    *top = if *object {
                        None
                    } else {
                        let next = top
                            .as_deref()
                            .and_then(|t| t.trim_matches(['[', ']']).parse::<usize>().ok())
                            .map_or(0, |i| i + 1);
                        Some(format!("[{next}]"))
                    };
                }
            }
            _ => {}
        }
        index += 1;
    }
    None
}

fn same_file(a: &Utf8Path, b: &Utf8Path) -> bool {
    a == b
        || match (a.canonicalize_utf8(), b.canonicalize_utf8()) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        }
}

/// Nix's own message and the first position it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NixError {
    pub message: String,
    pub location: Option<Location>,
}

impl NixError {
    /// Reads an error as Nix 2.8 and later print it:
    /// `error: <message>` … `at /path/file.nix:LINE:COL:`.
    pub fn parse(stderr: &str) -> NixError {
        NixError::parse_skipping(stderr, |_| false)
    }

    /// Like `parse`, but ignores positions in files `skip` names; without a
    /// position, the file of `… while evaluating the file '<file>'` (from
    /// `--show-trace`), with line 0.
    pub fn parse_skipping(stderr: &str, skip: impl Fn(&Utf8Path) -> bool) -> NixError {
        let lines: Vec<&str> = stderr.lines().map(str::trim).collect();
        // Newer Nix prints a trace first and the cause as the last `error:`.
        let cause = lines.iter().enumerate().rev().find_map(|(index, line)| {
            let message = line.strip_prefix("error:")?.trim();
            (!message.is_empty()).then_some((index, message))
        });
        let (after, message) = match cause {
            Some((index, message)) => (index, message.to_owned()),
            None => (
                0,
                lines
                    .iter()
                    .find(|l| !l.is_empty() && **l != "error:")
                    .copied()
                    .unwrap_or("(no message)")
                    .to_owned(),
            ),
        };
        let ordered = || lines[after..].iter().chain(lines[..after].iter());
        let location = ordered()
            .filter_map(|line| parse_position(line))
            .find(|location| !skip(&location.file))
            .or_else(|| {
                ordered()
                    .filter_map(|line| evaluated_file(line))
                    .find(|location| !skip(&location.file))
            });
        NixError { message, location }
    }
}

/// `at /path/file.nix:LINE:COL:` → a location; other positions (`«string»`) are skipped.
fn parse_position(line: &str) -> Option<Location> {
    let rest = line.strip_prefix("at ")?;
    let rest = rest.strip_suffix(':').unwrap_or(rest);
    let mut parts = rest.rsplitn(3, ':');
    let column = parts.next()?.parse().ok()?;
    let line = parts.next()?.parse().ok()?;
    let file = parts.next()?;
    file.starts_with('/').then(|| Location {
        file: Utf8PathBuf::from(file),
        line,
        column,
    })
}

/// `… while evaluating the file '/path/file.nix':` → that file, line 0.
fn evaluated_file(line: &str) -> Option<Location> {
    let rest = line
        .trim_start_matches(['…', '.', ' '])
        .strip_prefix("while evaluating the file '")?;
    let file = rest
        .strip_suffix("':")
        .or_else(|| rest.strip_suffix('\''))?;
    file.starts_with('/').then(|| Location {
        file: Utf8PathBuf::from(file),
        line: 0,
        column: 0,
    })
}

/// Flake mode: the merged NixOS configuration, where Nix and the flake's inputs are available.
pub enum FlakeEvaluation {
    Evaluated(Value),
    /// Could not run here; the reason, for the report.
    NotRun(String),
}

/// Evaluates what `check` needs from `nixosConfigurations.<attribute>` of
/// the repo's flake, in the same shape as nix/lib/eval-host.nix.
pub fn evaluate_flake(attribute: &str, timeout: Duration) -> Result<FlakeEvaluation> {
    let root = project_root();
    if !root.join("flake.lock").is_file() {
        return Ok(FlakeEvaluation::NotRun(
            "no flake.lock yet: run `nix flake lock` once to pin the inputs".to_owned(),
        ));
    }
    let nix = match setup::ensure(&[setup::NIX]) {
        Ok(found) => found.path(setup::NIX)?.clone(),
        Err(error) => return Ok(FlakeEvaluation::NotRun(format!("{error:#}"))),
    };
    let evaluator = project_root()
        .join("nix")
        .join("lib")
        .join("eval-flake.nix");
    // `nix eval --file` does not call a function with --argstr; the
    // arguments go through the environment so that no path is quoted into Nix.
    let args = [
        "--extra-experimental-features",
        "nix-command flakes",
        "eval",
        "--json",
        "--impure",
        "--offline",
        "--expr",
        "import (builtins.getEnv \"XTASK_FLAKE_EVALUATOR\") { flake = builtins.getEnv \"XTASK_FLAKE\"; host = builtins.getEnv \"XTASK_FLAKE_HOST\"; }",
    ];
    let env = [
        ("XTASK_FLAKE_EVALUATOR", evaluator.as_str()),
        ("XTASK_FLAKE", root.as_str()),
        ("XTASK_FLAKE_HOST", attribute),
    ];
    // Read while it runs: a fleet's configuration is more than a pipe holds.
    let limits = Limits {
        timeout,
        max_heap_bytes: None,
        max_output_bytes: MAX_OUTPUT_BYTES,
    };
    let ran = run_retrying(&nix, &args, &env, limits)?;
    if ran.status.is_none() {
        return Ok(FlakeEvaluation::NotRun(format!(
            "nix eval took longer than {} s",
            timeout.as_secs()
        )));
    }
    if !ran.success() {
        return Ok(FlakeEvaluation::NotRun(format!(
            "the flake does not evaluate here: {}",
            ran.error().message
        )));
    }
    match read_evaluation(&ran.stdout).context("reading nix eval's JSON")? {
        Ok(value) => Ok(FlakeEvaluation::Evaluated(value)),
        Err(findings) => Ok(FlakeEvaluation::NotRun(format!(
            "the merged configuration holds values check cannot read: {}",
            findings
                .iter()
                .map(|f| f.message.as_str())
                .collect::<Vec<_>>()
                .join("; ")
        ))),
    }
}

/// How one `nix eval --raw <installable>` ended (the NixOS evaluation gate).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawEvaluation {
    /// It printed this (trimmed).
    Printed(String),
    /// Nix exited with an error: its message.
    Failed(String),
    /// It could not run to the end here: Nix is missing, it was stopped
    /// after the time limit or killed. The reason.
    NotRun(String),
}

/// Runs `nix eval --raw <installable>` in the repository, within `timeout`,
/// with the flake's inputs as flake.lock pins them.
pub fn eval_raw(installable: &str, timeout: Duration) -> Result<RawEvaluation> {
    let nix = match setup::ensure(&[setup::NIX]) {
        Ok(found) => found.path(setup::NIX)?.clone(),
        Err(error) => return Ok(RawEvaluation::NotRun(format!("{error:#}"))),
    };
    let args = [
        "--extra-experimental-features",
        "nix-command flakes",
        "eval",
        // The inputs as flake.lock pins them, or an error: never a fresh lock.
        "--no-update-lock-file",
        "--raw",
        installable,
    ];
    let limits = Limits {
        timeout,
        max_heap_bytes: None,
        max_output_bytes: 1 << 20,
    };
    let ran = run_limited(&nix, &args, &[], limits)?;
    Ok(match ran.status {
        Some(status) if status.success() && !ran.output_too_large() => {
            RawEvaluation::Printed(String::from_utf8_lossy(&ran.stdout).trim().to_owned())
        }
        Some(status) if status.code().is_some() && !ran.output_too_large() => {
            RawEvaluation::Failed(whole_message(&ran.stderr))
        }
        _ => RawEvaluation::NotRun(ran.error().message),
    })
}

/// The last `error:` of `stderr` with the lines that continue it (NixOS
/// lists failed assertions one per line below `error:`).
fn whole_message(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.lines().map(str::trim).collect();
    let Some(start) = lines.iter().rposition(|l| l.starts_with("error:")) else {
        return NixError::parse(stderr).message;
    };
    let first = lines[start].trim_start_matches("error:").trim();
    let mut message: Vec<&str> = Vec::new();
    if !first.is_empty() {
        message.push(first);
    }
    for line in &lines[start + 1..] {
        if line.is_empty() {
            if message.is_empty() {
                continue;
            }
            break;
        }
        message.push(line);
    }
    let mut text = message.join("\n");
    if text.len() > 4000 {
        let cut = (0..=4000)
            .rev()
            .find(|i| text.is_char_boundary(*i))
            .unwrap_or(0);
        text.truncate(cut);
        text.push_str(" …");
    }
    if text.is_empty() {
        NixError::parse(stderr).message
    } else {
        text
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_every_failed_assertion() {
        let stderr = "warning: x\nerror:\n       … while evaluating\n\n       error:\n       Failed assertions:\n       - a\n       - b\n";
        assert_eq!(whole_message(stderr), "Failed assertions:\n- a\n- b");
        assert_eq!(
            whole_message("error: Failed assertions:\n       - hbohlen has no SSH key\n"),
            "Failed assertions:\n- hbohlen has no SSH key"
        );
    }

    #[test]
    fn reads_nix_2_8_errors() {
        let stderr = "error: undefined variable 'y'\n\n       at /tmp/u.nix:1:7:\n\n            1| { x = y; }\n             |       ^\n";
        let error = NixError::parse(stderr);
        assert_eq!(error.message, "undefined variable 'y'");
        let location = error.location.unwrap();
        assert_eq!(location.file, "/tmp/u.nix");
        assert_eq!((location.line, location.column), (1, 7));
    }

    #[test]
    fn reads_errors_without_a_position() {
        let error =
            NixError::parse("error: getting status of '/nope.nix': No such file or directory\n");
        assert_eq!(
            error.message,
            "getting status of '/nope.nix': No such file or directory"
        );
        assert!(error.location.is_none());
        let error = NixError::parse("something odd\n");
        assert_eq!(error.message, "something odd");
    }

    #[test]
    fn positions_in_skipped_files_give_way_to_the_evaluated_file() {
        let stderr = "error: nope\n\n       … while evaluating the file '/x/throw.nix':\n\n       … while evaluating 'load'\n\n       at /repo/nix/lib/eval-host.nix:14:5:\n";
        let error = NixError::parse_skipping(stderr, |f| f.starts_with("/repo/nix/lib"));
        assert_eq!(error.message, "nope");
        let location = error.location.unwrap();
        assert_eq!((location.file.as_str(), location.line), ("/x/throw.nix", 0));
        // Without skipping, the first position wins as before.
        assert_eq!(NixError::parse(stderr).location.unwrap().line, 14);
    }

    #[test]
    fn blank_files() {
        for blank in [
            "",
            "  \n",
            "# only a comment\n",
            "/* a */ # b\n/* c\n d */\n",
        ] {
            assert!(is_blank_nix(blank), "{blank:?}");
        }
        for code in ["{ }", "# x\n{ }", "/* unclosed", "x # y"] {
            assert!(!is_blank_nix(code), "{code:?}");
        }
    }

    #[test]
    fn deep_json_is_found_with_its_path() {
        let deep = format!(
            "{{\"layout\":{{\"a\":[1,\"x]\",{}{}]}}}}",
            "{\"k\\\"\":".repeat(200),
            "}".repeat(200)
        );
        let path = too_deep(deep.as_bytes(), MAX_DEPTH).unwrap();
        assert_eq!(path.len(), MAX_DEPTH);
        assert_eq!(&path[..4], ["layout", "a", "[2]", "k\""]);
        assert_eq!(evaluated_path(&path[..3]).to_string(), "a[2]");
        assert!(too_deep(br#"{"layout":{"a":[[["x"]]]}}"#, MAX_DEPTH).is_none());
        assert!(too_deep(b"[[[[", 3).is_some());
    }

    #[test]
    fn bytes_that_are_not_utf8_are_findings_at_their_path() {
        let stdout = b"{\"layout\":{\"disk\":{\"main\":{\"device\":\"/dev/sd\xff\",\"ok\":\"x\"},\"k\xc3\":1}},\"positions\":[]}";
        let findings = read_evaluation(stdout).unwrap().unwrap_err();
        let found = codes_and_paths(&findings);
        assert_eq!(
            found,
            vec![
                ("MODEL005", "disk.\"k\u{fffd}\"".to_owned()),
                ("MODEL005", "disk.main.device".to_owned())
            ]
        );
        assert!(findings[1].message.contains("/dev/sd\u{fffd}"));
    }

    #[test]
    fn marked_values_are_type_findings() {
        let stdout = br#"{"layout":{"d":{"device":{"__xtaskInvalid":"the path literal /dev/sda"}}},"persistence":{"/p":{"files":[{"__xtaskInvalid":"the float inf"}]}},"positions":[]}"#;
        let findings = read_evaluation(stdout).unwrap().unwrap_err();
        let found = codes_and_paths(&findings);
        assert_eq!(
            found,
            vec![
                ("MODEL001", "d.device".to_owned()),
                (
                    "MODEL001",
                    "environment.persistence.\"/p\".files[0]".to_owned()
                )
            ]
        );
        assert!(read_evaluation(br#"{"layout":{"a":"b"}}"#).unwrap().is_ok());
        assert!(read_evaluation(b"{\"layout\":inf}").is_err());
    }

    fn codes_and_paths(findings: &[Finding]) -> Vec<(&'static str, String)> {
        findings
            .iter()
            .map(|f| (f.code, f.path.to_string()))
            .collect()
    }

    fn limits(seconds: u64, max_output_bytes: u64) -> Limits {
        Limits {
            timeout: Duration::from_secs(seconds),
            max_heap_bytes: None,
            max_output_bytes,
        }
    }

    #[test]
    fn output_larger_than_a_pipe_is_read_while_it_runs() {
        let sh = Utf8Path::new("/bin/sh");
        let ran = run_limited(
            sh,
            &["-c", "head -c 1000000 /dev/zero; echo oops >&2; exit 3"],
            &[],
            limits(60, 1 << 20),
        )
        .unwrap();
        assert_eq!(ran.stdout.len(), 1_000_000);
        assert_eq!(ran.status.and_then(|s| s.code()), Some(3));
        assert!(!ran.success());
        assert_eq!(ran.error().message, "oops");
    }

    #[test]
    fn output_past_the_limit_is_not_read() {
        let ran = run_limited(
            Utf8Path::new("/bin/sh"),
            &["-c", "cat /dev/zero"],
            &[],
            limits(60, 4096),
        )
        .unwrap();
        assert!(ran.output_too_large());
        assert!(!ran.success());
        assert!(
            ran.error().message.contains("larger than"),
            "{}",
            ran.error().message
        );
    }

    #[test]
    fn runs_past_the_time_limit_are_stopped() {
        let started = std::time::Instant::now();
        let ran = run_limited(
            Utf8Path::new("/bin/sh"),
            &["-c", "sleep 30"],
            &[],
            limits(1, 4096),
        )
        .unwrap();
        assert!(started.elapsed() < Duration::from_secs(20));
        assert!(ran.status.is_none());
        let message = ran.error().message;
        assert!(message.contains("did not finish within 1 s"), "{message}");
        assert!(message.contains(TIMEOUT_ENV), "{message}");
    }

    #[test]
    fn a_crash_or_the_time_limit_is_a_failure_of_the_tool_not_a_finding() {
        let sh = Utf8Path::new("/bin/sh");
        let crashed = run_limited(sh, &["-c", "kill -SEGV $$"], &[], limits(60, 4096)).unwrap();
        let error = crashed
            .into_result()
            .err()
            .expect("a failure of the tool")
            .to_string();
        assert!(error.contains("was killed"), "{error}");
        assert!(error.contains("not a finding"), "{error}");
        let stopped = run_limited(sh, &["-c", "sleep 30"], &[], limits(1, 4096)).unwrap();
        let error = stopped
            .into_result()
            .err()
            .expect("a failure of the tool")
            .to_string();
        assert!(error.contains("did not finish within 1 s"), "{error}");
        let store = run_limited(
            sh,
            &[
                "-c",
                "echo \"error: SQLite database '/nix/var/nix/db/db.sqlite' is busy\" >&2; exit 1",
            ],
            &[],
            limits(60, 4096),
        )
        .unwrap();
        assert_eq!(store.tool_failure(), Some(store::StoreFailure::Transient));
        let config = run_limited(
            sh,
            &["-c", "echo \"error: undefined variable 'y'\" >&2; exit 1"],
            &[],
            limits(60, 4096),
        )
        .unwrap();
        assert_eq!(config.tool_failure(), None);
        assert!(config.into_result().is_ok());
    }

    #[test]
    fn transient_store_failures_are_retried_then_reported() {
        let dir = tempfile::tempdir().unwrap();
        let count = dir.path().join("count");
        let script = format!(
            "echo x >> {0}; [ $(wc -l < {0}) -ge 3 ] && {{ echo ok; exit 0; }}; echo \"error: SQLite database '/nix/var/nix/db/db.sqlite' is busy\" >&2; exit 1",
            count.display()
        );
        let ran = run_retrying(
            Utf8Path::new("/bin/sh"),
            &["-c", &script],
            &[],
            limits(60, 4096),
        )
        .unwrap();
        assert!(ran.success(), "{}", ran.stderr);
        assert_eq!(std::fs::read_to_string(&count).unwrap().lines().count(), 3);
        let always =
            "echo \"error: SQLite database '/nix/var/nix/db/db.sqlite' is busy\" >&2; exit 1";
        let ran = run_retrying(
            Utf8Path::new("/bin/sh"),
            &["-c", always],
            &[],
            limits(60, 4096),
        )
        .unwrap();
        let error = ran
            .into_result()
            .err()
            .expect("a failure of the tool")
            .to_string();
        assert!(
            error.contains("is busy") && error.contains("not a finding"),
            "{error}"
        );
    }

    #[test]
    fn reads_newer_multi_line_errors() {
        let stderr = "error:\n       … while calling the 'import' builtin\n         at «string»:1:1:\n\n       error: value is a string while a set was expected\n       at /x/disko.nix:3:5:\n";
        let error = NixError::parse(stderr);
        assert_eq!(error.message, "value is a string while a set was expected");
        assert_eq!(error.location.unwrap().line, 3);
    }
}
