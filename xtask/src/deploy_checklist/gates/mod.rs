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
use crate::results::{CheckResults, Header, Inputs, VmTestResults};
use toolbox::project::Revision;

use super::facts::HostFacts;

mod check;
mod docs;
mod login;
mod nixos;
mod procedures;
mod proof;
mod tree;
mod vm_test;

use check::check_gate;
use docs::docs_gate;
use login::login_gate;
use nixos::nixos_gate;
use procedures::procedures_gate;
use tree::tree_gate;
use vm_test::vm_test_gate;

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
    pub current: BTreeMap<crate::results::Kind, Inputs>,
    /// Why the NixOS evaluation cannot run in this checkout, if it cannot.
    pub nixos_blocked: Option<String>,
    /// What runs the NixOS evaluation where it can run.
    pub nixos_how: String,
    /// Where the results were read from, for messages.
    pub results_dir: String,
    /// The last `cargo xtask verify` of the host (verify-<host>.json).
    pub verify: Found<crate::verified::Record>,
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
pub mod testing;

#[cfg(test)]
mod tests;
