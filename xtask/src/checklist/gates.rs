//! The pre-flight gates of the deployment checklist, decided from what was
//! really measured: the results files of `check`, the NixOS evaluation and
//! `vm-test` (each the last run and the last proof), the host's login facts,
//! the docs regenerated in memory, and the git checkout. Pure: everything it
//! looks at is passed in, so every case is tested without touching files.
//!
//! A gate is PASS only when a result that can prove it (the full test, the
//! host's own disk size, …) passed at HEAD, from a clean tree, and none of
//! the files it rests on changed since. A result whose files changed is
//! STALE; no result that could prove the gate is NOT RUN (with what to run);
//! a proof that failed is FAIL. The checklist is READY only when every gate
//! is PASS.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::flake_eval::FlakeEvalResults;
use crate::project::Revision;
use crate::results::{
    changed_inputs, CheckResults, Header, Inputs, ProcedureStatus, VmTestResults, SCHEMA,
};

use super::facts::HostFacts;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Status {
    #[serde(rename = "PASS")]
    Pass,
    /// Nothing that could prove the gate ran (here, or at this revision).
    #[serde(rename = "NOT RUN")]
    NotRun,
    /// It ran, but a file it rests on changed since (or HEAD moved on).
    #[serde(rename = "STALE")]
    Stale,
    #[serde(rename = "FAIL")]
    Fail,
}

impl Status {
    pub fn label(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::NotRun => "NOT RUN",
            Status::Stale => "STALE",
            Status::Fail => "FAIL",
        }
    }
}

/// Warnings of `check` that still make the build or the first login fail:
/// they block the gate although `check` itself exits 0 for them (a fresh
/// clone has no key by design, and `check` judges the layout, which is fine).
pub const BLOCKING_WARNINGS: &[&str] = &["HOST001"];

/// A results file as found on disk.
#[derive(Debug, Clone)]
pub enum Found<T> {
    Missing,
    /// There, but not readable as this schema (the message says why).
    Unreadable(String),
    Present(T),
}

impl<T> Found<T> {
    fn present(&self) -> Option<&T> {
        match self {
            Found::Present(results) => Some(results),
            _ => None,
        }
    }
}

/// A command's two results files: the last run and the last proof.
#[derive(Debug, Clone)]
pub struct Evidence<T> {
    /// `<kind>.pass.json`.
    pub pass: Found<T>,
    /// `<kind>.json`.
    pub last: Found<T>,
}

impl<T> Evidence<T> {
    pub fn none() -> Evidence<T> {
        Evidence {
            pass: Found::Missing,
            last: Found::Missing,
        }
    }
}

/// Whether docs/reference/ matches the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DocsState {
    Fresh,
    /// Differs; a one-line summary of which files.
    Drifted(String),
    /// Could not be compared (the reason).
    Unknown(String),
}

/// Everything the gates look at.
#[derive(Debug, Clone)]
pub struct Observed {
    pub host: String,
    /// `nixosConfigurations.<this>`.
    pub flake_attribute: String,
    /// The host's machine.nix, relative to the repository, for messages.
    pub machine_file: String,
    pub head: Revision,
    pub facts: HostFacts,
    pub check: Evidence<CheckResults>,
    pub nixos: Evidence<FlakeEvalResults>,
    pub vm_test: Evidence<VmTestResults>,
    /// `vm-test --thorough`'s own results (vm-test-thorough.json and .pass.json).
    pub thorough: Evidence<ThoroughResults>,
    /// The procedures of §3 and §4 the lab VM runs (step, id): every one
    /// must have run and passed for the `procedures` gate.
    pub lab_procedures: Vec<(String, String)>,
    pub docs: DocsState,
    /// The size of the host's disk(s) from machine.nix, by disk key.
    pub disk_bytes: BTreeMap<String, u64>,
    /// The files each kind of result rests on, hashed as they are now.
    pub current: BTreeMap<String, Inputs>,
    /// Why the NixOS evaluation cannot run in this checkout, if it cannot.
    pub nixos_blocked: Option<String>,
    /// What runs the NixOS evaluation where it can run.
    pub nixos_how: String,
    /// Where the results were read from, for messages.
    pub results_dir: String,
}

/// A `vm-test --thorough` run as the `procedures` gate reads it.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct ThoroughResults(pub VmTestResults);

#[derive(Debug, Clone, Serialize)]
pub struct Gate {
    /// Stable: `login`, `check`, `nixos`, `vm-test`, `procedures`, `docs`, `tree`.
    pub id: &'static str,
    pub title: String,
    pub status: Status,
    /// Why, in one or two sentences.
    pub detail: String,
    /// What to run to make it pass, when it does not.
    pub command: Option<String>,
    /// The results file the status rests on, if any.
    pub file: Option<String>,
    /// The git revision the result was made at, if any.
    pub revision: Option<String>,
    /// When the result was made (RFC 3339), if any.
    pub finished_at: Option<String>,
}

/// `abc1234` from a full commit hash.
pub fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}

fn gate(
    id: &'static str,
    title: impl Into<String>,
    status: Status,
    detail: impl Into<String>,
) -> Gate {
    Gate {
        id,
        title: title.into(),
        status,
        detail: detail.into(),
        command: None,
        file: None,
        revision: None,
        finished_at: None,
    }
}

impl Gate {
    fn run(mut self, command: impl Into<String>) -> Gate {
        self.command = Some(command.into());
        self
    }
    fn from(mut self, file: &str, header: &Header) -> Gate {
        self.file = Some(file.to_owned());
        self.revision = header.revision.commit.clone();
        self.finished_at = Some(header.finished_at.clone());
        self
    }
}

/// Why a result does not describe HEAD and the files as they are now, or
/// `None` when it does.
fn staleness(header: &Header, observed: &Observed, kind: &str) -> Option<String> {
    if header.schema != SCHEMA {
        return Some(format!(
            "written with results schema {}, this xtask reads schema {SCHEMA}",
            header.schema
        ));
    }
    if !header.host.split(',').any(|h| h == observed.host) {
        return Some(format!(
            "made for host(s) {:?}, not {}",
            header.host, observed.host
        ));
    }
    let Some(head_commit) = &observed.head.commit else {
        return Some("HEAD is unknown (not a git checkout, or no commit yet)".to_owned());
    };
    let changed = observed
        .current
        .get(kind)
        .map(|current| changed_inputs(&header.inputs, current))
        .unwrap_or_default();
    let files = |changed: &[String]| {
        let mut shown: Vec<&str> = changed.iter().take(3).map(String::as_str).collect();
        let more = changed.len().saturating_sub(3);
        let more = if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        };
        if shown.is_empty() {
            shown.push("nothing it rests on changed");
        }
        format!("{}{more}", shown.join(", "))
    };
    match &header.revision.commit {
        None => return Some("made outside a git checkout".to_owned()),
        Some(made) if made != head_commit => {
            return Some(format!(
                "made at {}, but HEAD is {} ({})",
                short(made),
                short(head_commit),
                files(&changed)
            ))
        }
        Some(_) => {}
    }
    if header.revision.dirty {
        return Some(format!(
            "made at {} with uncommitted changes, so it may not describe that commit",
            short(head_commit)
        ));
    }
    if !changed.is_empty() {
        return Some(format!(
            "made at {}, but since then {} (not committed)",
            short(head_commit),
            files(&changed)
        ));
    }
    None
}

/// What a kind of result says about its gate.
trait Proof {
    const KIND: &'static str;
    fn header(&self) -> &Header;
    /// Why this result cannot prove the gate even when it passed (a partial
    /// run, another disk size); `None` when it can.
    fn shortfall(&self, observed: &Observed) -> Option<String>;
    /// Why it did not pass; `None` when it passed.
    fn failure(&self, observed: &Observed) -> Option<String>;
    /// One line about a result that proves the gate.
    fn summary(&self, observed: &Observed) -> String;
}

/// Decides a results-backed gate from the proof and the last run.
fn decide<T: Proof>(
    template: Gate,
    evidence: &Evidence<T>,
    observed: &Observed,
    rerun: &str,
    never_run: impl FnOnce(Gate) -> Gate,
) -> Gate {
    let kind = T::KIND;
    let pass_file = crate::results::pass_file_name(kind);
    let last_file = crate::results::file_name(kind);
    let fresh = |r: &T| staleness(r.header(), observed, kind).is_none();
    let candidates: Vec<(&str, &T)> = [
        (pass_file.as_str(), evidence.pass.present()),
        (last_file.as_str(), evidence.last.present()),
    ]
    .into_iter()
    .filter_map(|(file, r)| r.map(|r| (file, r)))
    .collect();

    // The proof: a fresh result that can prove the gate and passed.
    if let Some((file, proof)) = candidates
        .iter()
        .find(|(_, r)| fresh(r) && r.shortfall(observed).is_none() && r.failure(observed).is_none())
    {
        let mut detail = proof.summary(observed);
        if let Some(last) = evidence.last.present() {
            if last.header().finished_at != proof.header().finished_at {
                let what = last.shortfall(observed).or_else(|| {
                    last.failure(observed)
                        .map(|f| format!("a run that did not pass ({f})"))
                });
                if let Some(what) = what {
                    detail.push_str(&format!(
                        "; the last run ({}, {last_file}) was {what}: it does not replace this proof",
                        last.header().finished_at
                    ));
                }
            }
        }
        return Gate {
            status: Status::Pass,
            detail,
            ..template
        }
        .from(file, proof.header());
    }
    // A fresh result that cannot prove the gate, or that failed.
    if let Some((file, result)) = candidates.iter().find(|(_, r)| fresh(r)) {
        let gate = template.clone().from(file, result.header());
        if let Some(shortfall) = result.shortfall(observed) {
            return Gate {
                status: Status::NotRun,
                detail: format!(
                    "only {shortfall} ran at this revision ({}); it does not satisfy the gate",
                    if result.header().passed {
                        "passed"
                    } else {
                        "did not pass"
                    }
                ),
                ..gate
            }
            .run(rerun);
        }
        if let Some(failure) = result.failure(observed) {
            return Gate {
                status: Status::Fail,
                detail: format!("{failure}; fix the cause, then run it again"),
                ..gate
            }
            .run(rerun);
        }
    }
    // Results that no longer describe this checkout.
    if let Some((file, result)) = candidates.first() {
        let why = staleness(result.header(), observed, kind).unwrap_or_default();
        return Gate {
            status: Status::Stale,
            detail: format!("{file}: {why}"),
            ..template
        }
        .from(file, result.header())
        .run(rerun);
    }
    for found in [&evidence.pass, &evidence.last] {
        if let Found::Unreadable(why) = found {
            return Gate {
                status: Status::Stale,
                detail: why.clone(),
                ..template
            }
            .run(rerun);
        }
    }
    never_run(template)
}

impl Proof for CheckResults {
    const KIND: &'static str = "check";
    fn header(&self) -> &Header {
        &self.header
    }
    fn shortfall(&self, observed: &Observed) -> Option<String> {
        let bytes = self.disk_size_override?;
        let mismatched: Vec<String> = observed
            .disk_bytes
            .iter()
            .filter(|(_, size)| **size != bytes)
            .map(|(key, size)| format!("disk {key} is {size} bytes"))
            .collect();
        (!mismatched.is_empty()).then(|| {
            format!(
                "a check with --disk-size {bytes} bytes (machine.nix: {})",
                mismatched.join(", ")
            )
        })
    }
    fn failure(&self, observed: &Observed) -> Option<String> {
        let summary = self.hosts.iter().find(|h| h.host == observed.host);
        let Some(summary) = summary else {
            return (!self.header.passed).then(|| "the check failed".to_owned());
        };
        let blocking: Vec<&str> = summary
            .findings
            .iter()
            .filter(|f| BLOCKING_WARNINGS.iter().any(|code| f.starts_with(code)))
            .map(String::as_str)
            .collect();
        if summary.errors > 0 {
            let shown: Vec<&str> = summary
                .findings
                .iter()
                .take(5)
                .map(String::as_str)
                .collect();
            return Some(format!(
                "{} error(s), {} warning(s) ({})",
                summary.errors,
                summary.warnings,
                shown.join("; ")
            ));
        }
        if !blocking.is_empty() {
            return Some(format!(
                "{}: a warning for `check`, but the build refuses it and nobody could log in",
                blocking.join("; ")
            ));
        }
        None
    }
    fn summary(&self, observed: &Observed) -> String {
        let summary = self.hosts.iter().find(|h| h.host == observed.host);
        match summary {
            Some(h) if h.warnings > 0 => format!(
                "no errors; {} warning(s): {}",
                h.warnings,
                h.findings
                    .iter()
                    .take(5)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            _ => "no findings".to_owned(),
        }
    }
}

impl Proof for FlakeEvalResults {
    const KIND: &'static str = crate::flake_eval::KIND;
    fn header(&self) -> &Header {
        &self.header
    }
    fn shortfall(&self, observed: &Observed) -> Option<String> {
        (self.attribute != observed.flake_attribute).then(|| {
            format!(
                "an evaluation of nixosConfigurations.{}, not .{}",
                self.attribute, observed.flake_attribute
            )
        })
    }
    fn failure(&self, _: &Observed) -> Option<String> {
        match (&self.drv_path, &self.error) {
            (Some(_), None) if self.header.passed => None,
            (_, Some(error)) => Some(format!("the NixOS system does not evaluate: {error}")),
            _ => Some("the evaluation did not pass".to_owned()),
        }
    }
    fn summary(&self, _: &Observed) -> String {
        let inputs: Vec<String> = self
            .locked_inputs
            .iter()
            .map(|(name, input)| format!("{name} {}", input.locked))
            .collect();
        format!(
            "{} evaluates to {}{}",
            self.installable,
            self.drv_path.as_deref().unwrap_or("?"),
            if inputs.is_empty() {
                String::new()
            } else {
                format!(" with {}", inputs.join(", "))
            }
        )
    }
}

impl Proof for VmTestResults {
    const KIND: &'static str = "vm-test";
    fn header(&self) -> &Header {
        &self.header
    }
    fn shortfall(&self, observed: &Observed) -> Option<String> {
        self.shortfall(&observed.disk_bytes).map(|s| s.describe())
    }
    fn failure(&self, _: &Observed) -> Option<String> {
        let failed_checks: Vec<String> = self
            .checks
            .iter()
            .filter(|c| !c.passed)
            .map(|c| {
                format!(
                    "boot {} {}: measured {:?}, expected {:?}",
                    c.boot, c.name, c.measured, c.expected
                )
            })
            .collect();
        let mut reasons: Vec<String> = self
            .boots
            .iter()
            .filter(|b| !b.passed)
            .map(|b| format!("boot {} ({}) failed", b.number, b.kind))
            .collect();
        reasons.extend(failed_checks.iter().take(5).cloned());
        if failed_checks.len() > 5 {
            reasons.push(format!("{} more failed checks", failed_checks.len() - 5));
        }
        if reasons.is_empty() && !self.header.passed {
            reasons.push("the run did not pass".to_owned());
        }
        if reasons.is_empty() && self.checks.is_empty() {
            reasons.push(format!(
                "the run recorded {} boot(s) and no check, so it proves nothing",
                self.boots.len()
            ));
        }
        (!reasons.is_empty()).then(|| reasons.join("; "))
    }
    fn summary(&self, _: &Observed) -> String {
        format!(
            "{} boot(s), {} in-VM check(s) passed on a {}-byte disk ({} backend, {}, kernel {})",
            self.boots.len(),
            self.checks.len(),
            self.disk_bytes,
            self.backend,
            self.accelerator,
            self.kernel
        )
    }
}

impl Proof for ThoroughResults {
    const KIND: &'static str = crate::results::THOROUGH_KIND;
    fn header(&self) -> &Header {
        &self.0.header
    }
    fn shortfall(&self, observed: &Observed) -> Option<String> {
        if !self.0.requested.thorough {
            return Some("a run without --thorough".to_owned());
        }
        if let Some(shortfall) = self.0.shortfall(&observed.disk_bytes) {
            return Some(shortfall.describe());
        }
        let missing: Vec<String> = observed
            .lab_procedures
            .iter()
            .filter(|(_, id)| {
                !self
                    .0
                    .procedures
                    .iter()
                    .any(|p| p.id == *id && p.status != ProcedureStatus::NotRun)
            })
            .map(|(step, id)| format!("{step} {id}"))
            .collect();
        (!missing.is_empty())
            .then(|| format!("a thorough run that did not run {}", missing.join(", ")))
    }
    fn failure(&self, observed: &Observed) -> Option<String> {
        let failed: Vec<String> = self
            .0
            .procedures
            .iter()
            .filter(|p| p.status == ProcedureStatus::Fail)
            .map(|p| match p.first_failure() {
                Some(c) => format!(
                    "checklist {} ({}) failed at `{}`: {}",
                    p.step,
                    p.id,
                    if c.ran.is_empty() { &c.line } else { &c.ran },
                    c.problem.as_deref().unwrap_or("not as expected")
                ),
                None => format!("checklist {} ({}) failed", p.step, p.id),
            })
            .collect();
        if !failed.is_empty() {
            return Some(failed.join("; "));
        }
        <VmTestResults as Proof>::failure(&self.0, observed)
    }
    fn summary(&self, _: &Observed) -> String {
        let ran: Vec<&crate::results::ProcedureRecord> = self
            .0
            .procedures
            .iter()
            .filter(|p| p.status == ProcedureStatus::Pass)
            .collect();
        let checklist_commands = |status: crate::results::CommandStatus| {
            self.0
                .procedures
                .iter()
                .flat_map(|p| &p.commands)
                .filter(|c| c.role == "checklist" && c.status == status)
                .count()
        };
        let not_run: Vec<&crate::results::CommandRecord> = self
            .0
            .procedures
            .iter()
            .flat_map(|p| &p.commands)
            .filter(|c| c.status == crate::results::CommandStatus::NotRun)
            .collect();
        let elsewhere = not_run.iter().filter(|c| c.proven_by.is_some()).count();
        format!(
            "{} procedures of §3 and §4 ran in the lab VM as the admin ({} of the checklist's commands as expected); {} commands cannot run there and are NOT RUN, not counted ({elsewhere} of them run in the NixOS VM test, which needs nixpkgs and KVM and did not run here; the rest only on the server)",
            ran.len(),
            checklist_commands(crate::results::CommandStatus::Pass),
            not_run.len()
        )
    }
}

fn login_gate(observed: &Observed) -> Gate {
    let facts = &observed.facts;
    let title = format!(
        "{} can log in and use sudo (machine.nix, users.nix, services.nix)",
        facts.admin_user
    );
    let problems = facts.login_problems(&observed.machine_file);
    if problems.is_empty() {
        return gate(
            "login",
            title,
            Status::Pass,
            format!(
                "{} SSH key(s) for {}, in wheel with sudo; root login over SSH: {}",
                facts.admin_keys,
                facts.admin_user,
                if facts.root_can_log_in() {
                    "possible"
                } else {
                    "off"
                }
            ),
        );
    }
    let key_missing = facts.admin_keys == 0;
    let g = gate(
        "login",
        title,
        Status::Fail,
        format!("{}; fix the host files and commit, then run the gates again (they are stale after the edit)", problems.join("; ")),
    );
    if key_missing {
        g.run(format!(
            "add your public key to adminSshKeys in {}, then `git commit`",
            observed.machine_file
        ))
    } else {
        g
    }
}

fn check_gate(observed: &Observed) -> Gate {
    let rerun = format!("cargo xtask check --host {}", observed.host);
    decide(
        gate("check", "`cargo xtask check` is clean", Status::NotRun, ""),
        &observed.check,
        observed,
        &rerun,
        |g| {
            Gate {
                detail: format!("no result in {}: never run here", observed.results_dir),
                ..g
            }
            .run(rerun.clone())
        },
    )
}

fn nixos_gate(observed: &Observed) -> Gate {
    let title = format!(
        "the NixOS system evaluates (`nixosConfigurations.{}.config.system.build.toplevel`, pinned inputs)",
        observed.flake_attribute
    );
    decide(
        gate("nixos", title, Status::NotRun, ""),
        &observed.nixos,
        observed,
        &observed.nixos_how,
        |g| {
            Gate {
                detail: match &observed.nixos_blocked {
                    Some(why) => format!("cannot run here ({why}); never evaluated"),
                    None => format!("no result in {}: never evaluated", observed.results_dir),
                },
                ..g
            }
            .run(observed.nixos_how.clone())
        },
    )
}

fn vm_test_gate(observed: &Observed) -> Gate {
    let rerun = format!("cargo xtask vm-test --host {}", observed.host);
    decide(
        gate(
            "vm-test",
            "the full `cargo xtask vm-test` passed (every boot kind, the host's disk size)",
            Status::NotRun,
            "",
        ),
        &observed.vm_test,
        observed,
        &rerun,
        |g| {
            Gate {
                detail: format!("no result in {}: never run here", observed.results_dir),
                ..g
            }
            .run(rerun.clone())
        },
    )
}

fn procedures_gate(observed: &Observed) -> Gate {
    let rerun = format!("cargo xtask vm-test --thorough --host {}", observed.host);
    decide(
        gate(
            "procedures",
            "the checklist's procedures ran in the lab VM (`vm-test --thorough`): every §3 and §4 command it can run, as expected",
            Status::NotRun,
            "",
        ),
        &observed.thorough,
        observed,
        &rerun,
        |g| {
            Gate {
                detail: format!(
                    "no `vm-test --thorough` result in {}: never run here",
                    observed.results_dir
                ),
                ..g
            }
            .run(rerun.clone())
        },
    )
}

fn docs_gate(observed: &Observed) -> Gate {
    const TITLE: &str = "docs/reference/ matches the config";
    match &observed.docs {
        DocsState::Fresh => gate(
            "docs",
            TITLE,
            Status::Pass,
            "regenerated in memory: identical",
        ),
        DocsState::Drifted(summary) => {
            gate("docs", TITLE, Status::Fail, format!("differs ({summary})")).run(format!(
                "cargo xtask docs --host {}, then `git commit`",
                observed.host
            ))
        }
        DocsState::Unknown(why) => gate(
            "docs",
            TITLE,
            Status::NotRun,
            format!("could not compare: {why}"),
        )
        .run(format!("cargo xtask docs --check --host {}", observed.host)),
    }
}

fn tree_gate(observed: &Observed) -> Gate {
    const TITLE: &str = "the working tree is clean";
    match &observed.head.commit {
        None => gate(
            "tree",
            TITLE,
            Status::Fail,
            "not a git checkout (or no commit yet): deploy from a commit",
        ),
        Some(commit) if observed.head.dirty => Gate {
            revision: Some(commit.clone()),
            ..gate(
                "tree",
                TITLE,
                Status::Fail,
                "uncommitted or untracked changes: what you deploy must be the commit the results name",
            )
            .run("git status; commit or stash the changes, then run the gates again")
        },
        Some(commit) => Gate {
            revision: Some(commit.clone()),
            ..gate("tree", TITLE, Status::Pass, "nothing to commit")
        },
    }
}

/// Every gate, in the order the checklist shows them.
pub fn gates(observed: &Observed) -> Vec<Gate> {
    vec![
        login_gate(observed),
        check_gate(observed),
        nixos_gate(observed),
        vm_test_gate(observed),
        procedures_gate(observed),
        docs_gate(observed),
        tree_gate(observed),
    ]
}

/// The worst status: FAIL, then STALE, then NOT RUN; PASS when all pass.
pub fn overall(gates: &[Gate]) -> Status {
    gates.iter().map(|g| g.status).max().unwrap_or(Status::Pass)
}

#[cfg(test)]
pub mod testing {
    //! Results as `check`, the NixOS evaluation and `vm-test` write them, for tests.
    use super::*;
    use crate::checklist::facts::testing::with_key;
    use crate::flake_eval::LockedInput;
    use crate::results::HostSummary;
    use crate::results::{
        BootRecord, CheckRecord, CommandRecord, CommandStatus, ProcedureRecord, StepRecord,
        VmTestRequest,
    };

    pub const HEAD: &str = "0123456789abcdef0123456789abcdef01234567";
    pub const OLD: &str = "fedcba9876543210fedcba9876543210fedcba98";

    pub fn revision(commit: &str, dirty: bool) -> Revision {
        Revision {
            commit: Some(commit.to_owned()),
            dirty,
        }
    }

    /// The files each kind rests on, as the tests pretend they are now.
    pub fn inputs(kind: &str) -> Inputs {
        Inputs::from([
            (
                "hosts/servers/hetzner-cloud/disko.nix".to_owned(),
                "d1".to_owned(),
            ),
            (format!("{kind}-only.nix"), "k1".to_owned()),
        ])
    }

    pub fn header(kind: &str, commit: &str, passed: bool) -> Header {
        Header {
            schema: SCHEMA,
            kind: kind.to_owned(),
            host: "hetzner-cloud".to_owned(),
            revision: revision(commit, false),
            finished_at: "2026-11-28T12:00:00Z".to_owned(),
            passed,
            inputs: inputs(kind),
        }
    }

    pub fn check_results(commit: &str, errors: usize) -> CheckResults {
        CheckResults {
            header: header("check", commit, errors == 0),
            disk_size_override: None,
            hosts: vec![HostSummary {
                host: "hetzner-cloud".to_owned(),
                errors,
                warnings: 0,
                findings: (0..errors)
                    .map(|_| "SWAP001 disko.devices.disk.main".to_owned())
                    .collect(),
            }],
        }
    }

    pub fn nixos_results(commit: &str, passed: bool) -> FlakeEvalResults {
        FlakeEvalResults {
            header: header(crate::flake_eval::KIND, commit, passed),
            attribute: "hetzner-vps".to_owned(),
            installable: crate::flake_eval::installable("hetzner-vps"),
            drv_path: passed.then(|| "/nix/store/0000-nixos-system-hetzner-vps.drv".to_owned()),
            error: (!passed).then(|| "Failed assertions:\n- hbohlen has no SSH key".to_owned()),
            locked_inputs: BTreeMap::from([(
                "nixpkgs".to_owned(),
                LockedInput {
                    locked: "github:NixOS/nixpkgs/abc".to_owned(),
                    nar_hash: Some("sha256-x".to_owned()),
                },
            )]),
        }
    }

    pub fn vm_results(commit: &str, passed: bool) -> VmTestResults {
        VmTestResults {
            header: header("vm-test", commit, passed),
            backend: "lab".to_owned(),
            accelerator: "tcg".to_owned(),
            kernel: "6.1.0-56-cloud-amd64".to_owned(),
            disk_bytes: 480_000_000_000,
            requested: VmTestRequest {
                boots: 3,
                disk_size: None,
                power_cuts: 0,
                boot_timeout_s: None,
                thorough: false,
            },
            boots: vec![
                BootRecord {
                    number: 1,
                    kind: "install".to_owned(),
                    wall_ms: 41_000,
                    steps: vec![StepRecord {
                        name: "disko".to_owned(),
                        ms: 9_000,
                    }],
                    passed: true,
                },
                BootRecord {
                    number: 2,
                    kind: "rotate".to_owned(),
                    wall_ms: 12_000,
                    steps: Vec::new(),
                    passed,
                },
            ],
            checks: vec![
                CheckRecord {
                    boot: 1,
                    name: "subvolumes".to_owned(),
                    passed: true,
                    measured: "8".to_owned(),
                    expected: "8".to_owned(),
                },
                CheckRecord {
                    boot: 2,
                    name: "rotation".to_owned(),
                    passed,
                    measured: if passed { "moved" } else { "kept" }.to_owned(),
                    expected: "moved".to_owned(),
                },
            ],
            figures: BTreeMap::from([
                ("compression.@nix.percent".to_owned(), 47.0),
                ("rotation_ms.boot2".to_owned(), 310.0),
                ("trim.freed_bytes".to_owned(), 1_073_741_824.0),
            ]),
            wall_ms: 60_000,
            procedures: Vec::new(),
        }
    }

    /// The procedures the lab runs, as `observe` lists them for the host.
    pub fn lab_procedures() -> Vec<(String, String)> {
        [
            ("3.2", "verify.mounts"),
            ("3.9", "verify.reboot"),
            ("4.3", "rollback.file-from-old-root"),
        ]
        .iter()
        .map(|(step, id)| (step.to_string(), id.to_string()))
        .collect()
    }

    fn command(status: CommandStatus, role: &str, line: &str) -> CommandRecord {
        CommandRecord {
            boot: 3,
            part: 0,
            role: role.to_owned(),
            at: None,
            line: line.to_owned(),
            ran: line.to_owned(),
            status,
            exit: (status != CommandStatus::NotRun).then_some(0),
            ms: 100,
            stdout: String::new(),
            stderr: String::new(),
            expected: "exit 0".to_owned(),
            passed: status == CommandStatus::Pass,
            problem: match status {
                CommandStatus::NotRun => Some("needs systemd".to_owned()),
                CommandStatus::Fail => Some("exit 1 instead of 0".to_owned()),
                _ => None,
            },
            proven_by: (status == CommandStatus::NotRun).then(|| "the NixOS VM test".to_owned()),
        }
    }

    /// A `vm-test --thorough` run: the lab's procedures passed (or the last
    /// one failed), and one the lab cannot run.
    pub fn thorough_results(commit: &str, passed: bool) -> ThoroughResults {
        thorough_results_of(commit, passed, &lab_procedures())
    }

    /// The same, for the procedures `all` (step, id).
    pub fn thorough_results_of(
        commit: &str,
        passed: bool,
        all: &[(String, String)],
    ) -> ThoroughResults {
        let mut results = vm_results(commit, passed);
        results.header = header(crate::results::THOROUGH_KIND, commit, passed);
        results.requested.thorough = true;
        let mut records = vec![ProcedureRecord {
            id: "verify.units".to_owned(),
            step: "3.1".to_owned(),
            title: "The system came up clean".to_owned(),
            status: ProcedureStatus::NotRun,
            passed: false,
            commands: vec![command(
                CommandStatus::NotRun,
                "checklist",
                "sudo systemctl --failed",
            )],
        }];
        for (index, (step, id)) in all.iter().enumerate() {
            let last = index + 1 == all.len();
            let mut commands = vec![
                command(
                    CommandStatus::Pass,
                    "checklist",
                    "sudo ls /btrfs_tmp/@old_roots",
                ),
                command(CommandStatus::Pass, "verify", "sha256sum /persist/x"),
            ];
            if !passed && last {
                commands[0] = command(CommandStatus::Fail, "checklist", "sudo cp -a x /persist/x");
            }
            let mut record = ProcedureRecord {
                id: id.clone(),
                step: step.clone(),
                title: "t".to_owned(),
                status: ProcedureStatus::NotRun,
                passed: false,
                commands,
            };
            record.settle();
            records.push(record);
        }
        results.procedures = records;
        ThoroughResults(results)
    }

    pub fn proof<T>(results: T) -> Evidence<T> {
        Evidence {
            pass: Found::Present(results),
            last: Found::Missing,
        }
    }

    /// Every gate passes: the key is in, everything ran at HEAD.
    pub fn passing() -> Observed {
        Observed {
            host: "hetzner-cloud".to_owned(),
            flake_attribute: "hetzner-vps".to_owned(),
            machine_file: "hosts/servers/hetzner-cloud/machine.nix".to_owned(),
            head: revision(HEAD, false),
            facts: with_key(),
            check: proof(check_results(HEAD, 0)),
            nixos: proof(nixos_results(HEAD, true)),
            vm_test: proof(vm_results(HEAD, true)),
            thorough: proof(thorough_results(HEAD, true)),
            lab_procedures: lab_procedures(),
            docs: DocsState::Fresh,
            disk_bytes: BTreeMap::from([("main".to_owned(), 480_000_000_000)]),
            current: [
                "check",
                crate::flake_eval::KIND,
                "vm-test",
                crate::results::THOROUGH_KIND,
            ]
            .iter()
            .map(|kind| (kind.to_string(), inputs(kind)))
            .collect(),
            nixos_blocked: None,
            nixos_how:
                "on a machine with Nix, run `cargo xtask check --mode flake --host hetzner-cloud`"
                    .to_owned(),
            results_dir: "target/xtask".to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;
    use crate::checklist::facts::testing::host_facts;

    fn statuses(observed: &Observed) -> Vec<(&'static str, Status)> {
        gates(observed).iter().map(|g| (g.id, g.status)).collect()
    }

    fn by_id<'a>(gates: &'a [Gate], id: &str) -> &'a Gate {
        gates.iter().find(|g| g.id == id).unwrap()
    }

    #[test]
    fn everything_fresh_and_clean_passes() {
        let observed = passing();
        let gates = gates(&observed);
        assert!(gates.iter().all(|g| g.status == Status::Pass), "{gates:#?}");
        assert_eq!(overall(&gates), Status::Pass);
        assert_eq!(by_id(&gates, "check").revision.as_deref(), Some(HEAD));
        assert_eq!(
            by_id(&gates, "check").file.as_deref(),
            Some("check.pass.json")
        );
        assert!(by_id(&gates, "vm-test")
            .detail
            .contains("2 boot(s), 2 in-VM check(s) passed"));
        assert!(by_id(&gates, "nixos")
            .detail
            .contains("evaluates to /nix/store/0000-nixos-system-hetzner-vps.drv with nixpkgs github:NixOS/nixpkgs/abc"));
    }

    #[test]
    fn the_procedures_gate_needs_a_thorough_pass_of_every_procedure_the_lab_runs() {
        // Passed: the summary counts what ran and what could not.
        let gates = gates(&passing());
        let procedures = by_id(&gates, "procedures");
        assert_eq!(procedures.status, Status::Pass);
        assert_eq!(
            procedures.file.as_deref(),
            Some("vm-test-thorough.pass.json")
        );
        assert!(
            procedures
                .detail
                .contains("3 procedures of §3 and §4 ran in the lab VM")
                && procedures
                    .detail
                    .contains("1 commands cannot run there and are NOT RUN, not counted"),
            "{}",
            procedures.detail
        );

        // A procedure failed: FAIL, naming the checklist step and the command.
        let mut observed = passing();
        observed.thorough = proof(thorough_results(HEAD, false));
        let failed = by_id(&gates_of(&observed), "procedures").clone();
        assert_eq!(failed.status, Status::Fail);
        assert!(
            failed
                .detail
                .contains("checklist 4.3 (rollback.file-from-old-root) failed at `sudo cp -a x /persist/x`: exit 1 instead of 0"),
            "{}",
            failed.detail
        );

        // A failed later run stays beside the proof.
        let mut observed = passing();
        observed.thorough = Evidence {
            pass: Found::Present(thorough_results(HEAD, true)),
            last: Found::Present({
                let mut last = thorough_results(HEAD, false);
                last.0.header.finished_at = "2026-11-29T00:00:00Z".to_owned();
                last
            }),
        };
        let kept = by_id(&gates_of(&observed), "procedures").clone();
        assert_eq!(kept.status, Status::Pass);
        assert!(
            kept.detail.contains("does not replace this proof"),
            "{}",
            kept.detail
        );

        // A procedure the lab runs is missing (NOT RUN in the results).
        let mut observed = passing();
        let mut results = thorough_results(HEAD, true);
        results.0.procedures.retain(|p| p.id != "verify.reboot");
        observed.thorough = proof(results);
        let missing = by_id(&gates_of(&observed), "procedures").clone();
        assert_eq!(missing.status, Status::NotRun);
        assert!(
            missing.detail.contains("did not run 3.9 verify.reboot"),
            "{}",
            missing.detail
        );

        // A default run (no --thorough) proves nothing about the procedures.
        let mut observed = passing();
        let mut default = thorough_results(HEAD, true);
        default.0.requested.thorough = false;
        observed.thorough = proof(default);
        assert_eq!(
            by_id(&gates_of(&observed), "procedures").status,
            Status::NotRun
        );

        // Another revision: STALE, with the command to run.
        let mut observed = passing();
        observed.thorough = proof(thorough_results(OLD, true));
        let stale = by_id(&gates_of(&observed), "procedures").clone();
        assert_eq!(stale.status, Status::Stale);
        assert_eq!(
            stale.command.as_deref(),
            Some("cargo xtask vm-test --thorough --host hetzner-cloud")
        );
    }

    fn gates_of(observed: &Observed) -> Vec<Gate> {
        gates(observed)
    }

    #[test]
    fn nothing_run_is_not_run_and_says_what_to_run() {
        let mut observed = passing();
        observed.check = Evidence::none();
        observed.vm_test = Evidence::none();
        observed.thorough = Evidence::none();
        observed.nixos = Evidence::none();
        observed.nixos_blocked = Some("no flake.lock: the inputs are not pinned".to_owned());
        observed.nixos_how =
            crate::flake_eval::how_to_run(camino::Utf8Path::new("/nonexistent"), "hetzner-cloud");
        let gates = gates(&observed);
        assert_eq!(
            statuses(&observed),
            vec![
                ("login", Status::Pass),
                ("check", Status::NotRun),
                ("nixos", Status::NotRun),
                ("vm-test", Status::NotRun),
                ("procedures", Status::NotRun),
                ("docs", Status::Pass),
                ("tree", Status::Pass)
            ]
        );
        assert_eq!(
            by_id(&gates, "check").command.as_deref(),
            Some("cargo xtask check --host hetzner-cloud")
        );
        assert_eq!(
            by_id(&gates, "procedures").command.as_deref(),
            Some("cargo xtask vm-test --thorough --host hetzner-cloud")
        );
        let nixos = by_id(&gates, "nixos");
        assert!(
            nixos.detail.contains("cannot run here (no flake.lock"),
            "{}",
            nixos.detail
        );
        assert!(nixos.command.as_deref().unwrap().contains("nix flake lock"));
        assert!(nixos
            .command
            .as_deref()
            .unwrap()
            .contains("cargo xtask check --mode flake --host hetzner-cloud"));
        assert_eq!(overall(&gates), Status::NotRun);
    }

    #[test]
    fn the_missing_key_fails_login_and_blocks_check() {
        let mut observed = passing();
        observed.facts = host_facts();
        let mut check = check_results(HEAD, 0);
        check.hosts[0].warnings = 1;
        check.hosts[0].findings = vec!["HOST001 adminSshKeys".to_owned()];
        observed.check = proof(check);
        let gates = gates(&observed);
        let login = by_id(&gates, "login");
        assert_eq!(login.status, Status::Fail);
        assert!(
            login.detail.contains("no SSH key for hbohlen"),
            "{}",
            login.detail
        );
        assert!(login
            .command
            .as_deref()
            .unwrap()
            .contains("adminSshKeys in hosts/servers/hetzner-cloud/machine.nix"));
        let check = by_id(&gates, "check");
        assert_eq!(check.status, Status::Fail);
        assert!(check.detail.contains("HOST001"), "{}", check.detail);
        assert_eq!(overall(&gates), Status::Fail);
    }

    #[test]
    fn results_of_another_revision_a_dirty_tree_or_another_schema_are_stale() {
        let mut observed = passing();
        observed.check = proof(check_results(OLD, 0));
        let mut dirty = vm_results(HEAD, true);
        dirty.header.revision.dirty = true;
        observed.vm_test = proof(dirty);
        let mut other_schema = nixos_results(HEAD, true);
        other_schema.header.schema = SCHEMA - 1;
        observed.nixos = proof(other_schema);
        let gates = gates(&observed);
        let check = by_id(&gates, "check");
        assert_eq!(check.status, Status::Stale);
        assert!(
            check
                .detail
                .contains("made at fedcba987654, but HEAD is 0123456789ab"),
            "{}",
            check.detail
        );
        assert_eq!(
            check.command.as_deref(),
            Some("cargo xtask check --host hetzner-cloud")
        );
        assert_eq!(by_id(&gates, "vm-test").status, Status::Stale);
        assert!(by_id(&gates, "vm-test")
            .detail
            .contains("uncommitted changes"));
        assert_eq!(by_id(&gates, "nixos").status, Status::Stale);
        assert!(by_id(&gates, "nixos").detail.contains("schema"));
    }

    #[test]
    fn an_uncommitted_edit_to_an_input_makes_its_gates_stale() {
        let mut observed = passing();
        observed.head.dirty = true;
        for kind in ["check", "vm-test", crate::flake_eval::KIND] {
            observed.current.get_mut(kind).unwrap().insert(
                "hosts/servers/hetzner-cloud/disko.nix".to_owned(),
                "d2".to_owned(),
            );
        }
        // Only vm-test's own file changed for this one.
        observed
            .current
            .get_mut("vm-test")
            .unwrap()
            .insert("vm-test-only.nix".to_owned(), "k2".to_owned());
        let gates = gates(&observed);
        for id in ["check", "nixos", "vm-test"] {
            let g = by_id(&gates, id);
            assert_eq!(g.status, Status::Stale, "{g:?}");
            assert!(
                g.detail
                    .contains("hosts/servers/hetzner-cloud/disko.nix changed (not committed)")
                    || g.detail
                        .contains("disko.nix changed, vm-test-only.nix changed (not committed)"),
                "{}",
                g.detail
            );
        }
        assert_eq!(by_id(&gates, "tree").status, Status::Fail);
        // A file that feeds nothing leaves the results fresh (the tree gate still fails).
        let mut observed = passing();
        observed.head.dirty = true;
        assert_eq!(
            by_id(&super::gates(&observed), "check").status,
            Status::Pass
        );
    }

    #[test]
    fn results_for_another_host_are_stale() {
        let mut observed = passing();
        let mut other_host = check_results(HEAD, 0);
        other_host.header.host = "elsewhere".to_owned();
        observed.check = proof(other_host);
        assert!(by_id(&gates(&observed), "check")
            .detail
            .contains("not hetzner-cloud"));
        let mut all_hosts = check_results(HEAD, 0);
        all_hosts.header.host = "a,hetzner-cloud".to_owned();
        observed.check = proof(all_hosts);
        assert_eq!(by_id(&gates(&observed), "check").status, Status::Pass);
        observed.check = Evidence {
            pass: Found::Unreadable(
                "target/xtask/check.pass.json is not a results file".to_owned(),
            ),
            last: Found::Missing,
        };
        assert_eq!(by_id(&gates(&observed), "check").status, Status::Stale);
    }

    #[test]
    fn failed_results_fail_and_say_why() {
        let mut observed = passing();
        observed.check = Evidence {
            pass: Found::Missing,
            last: Found::Present(check_results(HEAD, 2)),
        };
        observed.vm_test = Evidence {
            pass: Found::Missing,
            last: Found::Present(vm_results(HEAD, false)),
        };
        observed.nixos = Evidence {
            pass: Found::Missing,
            last: Found::Present(nixos_results(HEAD, false)),
        };
        let gates = gates(&observed);
        let check = by_id(&gates, "check");
        assert_eq!(check.status, Status::Fail);
        assert!(check.detail.contains("2 error(s)") && check.detail.contains("SWAP001"));
        assert_eq!(check.file.as_deref(), Some("check.json"));
        let vm = by_id(&gates, "vm-test");
        assert_eq!(vm.status, Status::Fail);
        assert!(
            vm.detail.contains("boot 2 (rotate) failed"),
            "{}",
            vm.detail
        );
        assert!(vm
            .detail
            .contains("rotation: measured \"kept\", expected \"moved\""));
        let nixos = by_id(&gates, "nixos");
        assert_eq!(nixos.status, Status::Fail);
        assert!(
            nixos.detail.contains("hbohlen has no SSH key"),
            "{}",
            nixos.detail
        );
        assert_eq!(overall(&gates), Status::Fail);
    }

    #[test]
    fn a_failed_run_is_shown_but_does_not_replace_the_proof() {
        let mut observed = passing();
        let mut failed = vm_results(HEAD, false);
        failed.header.finished_at = "2026-11-28T13:00:00Z".to_owned();
        observed.vm_test.last = Found::Present(failed);
        let vm = by_id(&gates(&observed), "vm-test").clone();
        assert_eq!(vm.status, Status::Pass);
        assert_eq!(vm.file.as_deref(), Some("vm-test.pass.json"));
        assert!(
            vm.detail.contains("the last run (2026-11-28T13:00:00Z, vm-test.json) was a run that did not pass (boot 2 (rotate) failed"),
            "{}",
            vm.detail
        );
    }

    #[test]
    fn a_partial_or_differently_sized_vm_test_does_not_satisfy_the_gate() {
        let mut observed = passing();
        let mut partial = vm_results(HEAD, true);
        partial.requested.boots = 1;
        partial.boots.truncate(1);
        observed.vm_test = Evidence {
            pass: Found::Missing,
            last: Found::Present(partial.clone()),
        };
        let vm = by_id(&gates(&observed), "vm-test").clone();
        assert_eq!(vm.status, Status::NotRun);
        assert!(
            vm.detail.contains("only a partial run (--boots 1"),
            "{}",
            vm.detail
        );
        assert_eq!(
            vm.command.as_deref(),
            Some("cargo xtask vm-test --host hetzner-cloud")
        );

        let mut small = vm_results(HEAD, true);
        small.disk_bytes = 40 << 30;
        small.requested.disk_size = Some("40GiB".to_owned());
        observed.vm_test = Evidence {
            pass: Found::Missing,
            last: Found::Present(small),
        };
        let vm = by_id(&gates(&observed), "vm-test").clone();
        assert_eq!(vm.status, Status::NotRun);
        assert!(
            vm.detail
                .contains("a run on a 42949672960-byte disk, not the host's 480000000000 bytes"),
            "{}",
            vm.detail
        );

        // A proof on file stays the proof; the partial run is shown beside it.
        observed.vm_test = Evidence {
            pass: Found::Present(vm_results(HEAD, true)),
            last: Found::Present(VmTestResults {
                header: Header {
                    finished_at: "2026-11-29T08:00:00Z".to_owned(),
                    ..partial.header.clone()
                },
                ..partial
            }),
        };
        let vm = by_id(&gates(&observed), "vm-test").clone();
        assert_eq!(vm.status, Status::Pass);
        assert!(vm.detail.contains("was a partial run"), "{}", vm.detail);

        // A passing run that never rotated is not the full test either.
        let mut no_rotation = vm_results(HEAD, true);
        no_rotation.boots.retain(|b| b.kind == "install");
        observed.vm_test = proof(no_rotation);
        let vm = by_id(&gates(&observed), "vm-test").clone();
        assert_eq!(vm.status, Status::NotRun);
        assert!(
            vm.detail.contains("without a boot of kind rotate"),
            "{}",
            vm.detail
        );
    }

    #[test]
    fn a_check_with_another_disk_size_does_not_satisfy_the_gate() {
        let mut observed = passing();
        let mut resized = check_results(HEAD, 0);
        resized.disk_size_override = Some(480 << 30);
        observed.check = proof(resized);
        let gate = by_id(&gates(&observed), "check").clone();
        assert_eq!(gate.status, Status::NotRun);
        assert!(gate.detail.contains("--disk-size"), "{}", gate.detail);
    }

    #[test]
    fn a_passing_run_without_checks_proves_nothing() {
        let mut observed = passing();
        let mut empty = vm_results(HEAD, true);
        empty.checks.clear();
        observed.vm_test = proof(empty);
        assert_eq!(by_id(&gates(&observed), "vm-test").status, Status::Fail);
    }

    #[test]
    fn stale_docs_and_a_dirty_tree_fail() {
        let mut observed = passing();
        observed.docs = DocsState::Drifted("changed: layout.md".to_owned());
        observed.head.dirty = true;
        let gates = gates(&observed);
        assert_eq!(by_id(&gates, "docs").status, Status::Fail);
        assert!(by_id(&gates, "docs").detail.contains("changed: layout.md"));
        assert_eq!(by_id(&gates, "tree").status, Status::Fail);

        observed.docs = DocsState::Unknown("nix-instantiate is missing".to_owned());
        observed.head = Revision {
            commit: None,
            dirty: true,
        };
        let gates = super::gates(&observed);
        assert_eq!(by_id(&gates, "docs").status, Status::NotRun);
        assert_eq!(by_id(&gates, "tree").status, Status::Fail);
        assert_eq!(
            by_id(&gates, "check").status,
            Status::Stale,
            "no HEAD: nothing is fresh"
        );
    }

    #[test]
    fn fail_outranks_stale_outranks_not_run() {
        let mut observed = passing();
        observed.check = Evidence::none();
        assert_eq!(overall(&gates(&observed)), Status::NotRun);
        observed.vm_test = proof(vm_results(OLD, true));
        assert_eq!(overall(&gates(&observed)), Status::Stale);
        observed.docs = DocsState::Drifted("x".to_owned());
        assert_eq!(overall(&gates(&observed)), Status::Fail);
    }
}
