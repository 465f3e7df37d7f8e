//! The pre-flight gates of the deployment checklist, decided from what was
//! really measured: target/xtask/check.json, target/xtask/vm-test.json, the
//! docs regenerated in memory, and the git checkout. Pure: everything it
//! looks at is passed in, so every case is tested without touching files.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::check::CheckResults;
use crate::project::Revision;
use crate::results::{Header, VmTestResults, SCHEMA};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    Pass,
    /// The result is missing, unreadable, or was not made at HEAD with a clean tree.
    Stale,
    Fail,
}

impl Status {
    pub fn label(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Stale => "STALE",
            Status::Fail => "FAIL",
        }
    }

    /// What the command exits with: 0 every gate passes, 1 a gate fails,
    /// 3 none fails but one is stale.
    pub fn exit_code(self) -> u8 {
        match self {
            Status::Pass => 0,
            Status::Fail => 1,
            Status::Stale => 3,
        }
    }
}

/// A results file as found on disk.
#[derive(Debug, Clone)]
pub enum Found<T> {
    Missing,
    /// There, but not readable as this schema (the message says why).
    Unreadable(String),
    Present(T),
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
    pub head: Revision,
    pub check: Found<CheckResults>,
    pub vm_test: Found<VmTestResults>,
    pub docs: DocsState,
    /// The size of the host's disk(s) from machine.nix, by disk key.
    pub disk_bytes: BTreeMap<String, u64>,
    /// Where the results were read from, for messages.
    pub results_dir: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Gate {
    /// Stable: `check`, `vm-test`, `docs`, `tree`.
    pub id: &'static str,
    pub title: &'static str,
    pub status: Status,
    /// Why, in one or two sentences, with the fix when it is not PASS.
    pub detail: String,
    /// The git revision the result was made at, if any.
    pub revision: Option<String>,
    /// When the result was made (RFC 3339), if any.
    pub finished_at: Option<String>,
}

/// `abc1234` from a full commit hash.
pub fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}

/// Why a result does not describe HEAD, or `None` when it does.
fn staleness(header: &Header, head: &Revision, host: &str) -> Option<String> {
    if header.schema != SCHEMA {
        return Some(format!(
            "written with results schema {}, this xtask reads schema {SCHEMA}",
            header.schema
        ));
    }
    let Some(head_commit) = &head.commit else {
        return Some("HEAD is unknown (not a git checkout, or no commit yet)".to_owned());
    };
    match &header.revision.commit {
        None => return Some("made outside a git checkout".to_owned()),
        Some(made) if made != head_commit => {
            return Some(format!(
                "made at {}, but HEAD is {}",
                short(made),
                short(head_commit)
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
    if !header.host.split(',').any(|h| h == host) {
        return Some(format!("made for host(s) {:?}, not {host}", header.host));
    }
    None
}

fn from_header(id: &'static str, title: &'static str, header: &Header) -> Gate {
    Gate {
        id,
        title,
        status: Status::Pass,
        detail: String::new(),
        revision: header.revision.commit.clone(),
        finished_at: Some(header.finished_at.clone()),
    }
}

fn absent(id: &'static str, title: &'static str, status: Status, detail: String) -> Gate {
    Gate {
        id,
        title,
        status,
        detail,
        revision: None,
        finished_at: None,
    }
}

/// The results and their gate when they are present and fresh; otherwise
/// the STALE gate that says why and how to refresh them.
fn fresh<'a, T>(
    id: &'static str,
    title: &'static str,
    found: &'a Found<T>,
    header: impl Fn(&T) -> &Header,
    file: &str,
    observed: &Observed,
    rerun: &str,
) -> Result<(&'a T, Gate), Gate> {
    let results = match found {
        Found::Missing => {
            return Err(absent(
                id,
                title,
                Status::Stale,
                format!("no {}/{file}: {rerun}", observed.results_dir),
            ))
        }
        Found::Unreadable(why) => {
            return Err(absent(id, title, Status::Stale, format!("{why}: {rerun}")))
        }
        Found::Present(results) => results,
    };
    let mut gate = from_header(id, title, header(results));
    if let Some(why) = staleness(header(results), &observed.head, &observed.host) {
        gate.status = Status::Stale;
        gate.detail = format!("{why}: {rerun}");
        return Err(gate);
    }
    Ok((results, gate))
}

fn check_gate(observed: &Observed) -> Gate {
    const ID: &str = "check";
    const TITLE: &str = "`cargo xtask check` is clean";
    let rerun = format!("run `cargo xtask check --host {}`", observed.host);
    let (results, mut gate) = match fresh(
        ID,
        TITLE,
        &observed.check,
        |r| &r.header,
        "check.json",
        observed,
        &rerun,
    ) {
        Ok(fresh) => fresh,
        Err(gate) => return gate,
    };
    if let Some(override_bytes) = results.disk_size_override {
        let mismatched: Vec<String> = observed
            .disk_bytes
            .iter()
            .filter(|(_, bytes)| **bytes != override_bytes)
            .map(|(key, bytes)| format!("{key} is {bytes} bytes"))
            .collect();
        if !mismatched.is_empty() {
            gate.status = Status::Stale;
            gate.detail = format!(
                "made with --disk-size {override_bytes} bytes, but machine.nix says disk {}: {rerun} without --disk-size",
                mismatched.join(", ")
            );
            return gate;
        }
    }
    let summary = results.hosts.iter().find(|h| h.host == observed.host);
    let (errors, warnings, findings) = match summary {
        Some(h) => (h.errors, h.warnings, h.findings.clone()),
        None if results.header.passed => (0, 0, Vec::new()),
        None => (1, 0, Vec::new()),
    };
    if errors > 0 {
        gate.status = Status::Fail;
        let shown: Vec<&str> = findings.iter().take(5).map(String::as_str).collect();
        gate.detail = format!(
            "{errors} error(s), {warnings} warning(s){}: fix them, then {rerun}",
            if shown.is_empty() {
                String::new()
            } else {
                format!(" ({})", shown.join("; "))
            }
        );
        return gate;
    }
    gate.detail = if warnings == 0 {
        "no findings".to_owned()
    } else {
        format!(
            "no errors; {warnings} warning(s): {}",
            findings
                .iter()
                .take(5)
                .cloned()
                .collect::<Vec<_>>()
                .join("; ")
        )
    };
    gate
}

fn vm_test_gate(observed: &Observed) -> Gate {
    const ID: &str = "vm-test";
    const TITLE: &str = "`cargo xtask vm-test` passed";
    let rerun = "run `cargo xtask vm-test`";
    let (results, mut gate) = match fresh(
        ID,
        TITLE,
        &observed.vm_test,
        |r| &r.header,
        "vm-test.json",
        observed,
        rerun,
    ) {
        Ok(fresh) => fresh,
        Err(gate) => return gate,
    };
    let failed_checks: Vec<String> = results
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
    let failed_boots: Vec<String> = results
        .boots
        .iter()
        .filter(|b| !b.passed)
        .map(|b| format!("boot {} ({})", b.number, b.kind))
        .collect();
    if !results.header.passed || !failed_checks.is_empty() || !failed_boots.is_empty() {
        gate.status = Status::Fail;
        let mut reasons: Vec<String> = failed_boots.iter().map(|b| format!("{b} failed")).collect();
        reasons.extend(failed_checks.iter().take(5).cloned());
        if failed_checks.len() > 5 {
            reasons.push(format!("{} more failed checks", failed_checks.len() - 5));
        }
        if reasons.is_empty() {
            reasons.push("the run did not pass".to_owned());
        }
        gate.detail = format!("{}: fix the cause, then {rerun}", reasons.join("; "));
        return gate;
    }
    if results.checks.is_empty() || results.boots.is_empty() {
        gate.status = Status::Fail;
        gate.detail = format!(
            "the run recorded {} boot(s) and {} check(s), so it proves nothing: {rerun}",
            results.boots.len(),
            results.checks.len()
        );
        return gate;
    }
    gate.detail = format!(
        "{} boot(s), {} in-VM check(s) passed ({} backend, {}, kernel {})",
        results.boots.len(),
        results.checks.len(),
        results.backend,
        results.accelerator,
        results.kernel
    );
    let server_disks: Vec<u64> = observed.disk_bytes.values().copied().collect();
    if !server_disks.is_empty() && !server_disks.contains(&results.disk_bytes) {
        gate.detail.push_str(&format!(
            "; note: the VM disk was {} bytes, the server's is {}",
            results.disk_bytes,
            server_disks
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(" and ")
        ));
    }
    gate
}

fn docs_gate(observed: &Observed) -> Gate {
    const ID: &str = "docs";
    const TITLE: &str = "docs/reference/ matches the config";
    match &observed.docs {
        DocsState::Fresh => absent(
            ID,
            TITLE,
            Status::Pass,
            "regenerated in memory: identical".to_owned(),
        ),
        DocsState::Drifted(summary) => absent(
            ID,
            TITLE,
            Status::Fail,
            format!(
                "differs ({summary}): run `cargo xtask docs --host {}` and commit",
                observed.host
            ),
        ),
        DocsState::Unknown(why) => absent(
            ID,
            TITLE,
            Status::Stale,
            format!("could not compare: {why}"),
        ),
    }
}

fn tree_gate(observed: &Observed) -> Gate {
    const ID: &str = "tree";
    const TITLE: &str = "the working tree is clean";
    match &observed.head.commit {
        None => absent(
            ID,
            TITLE,
            Status::Fail,
            "not a git checkout (or no commit yet): deploy from a commit".to_owned(),
        ),
        Some(commit) if observed.head.dirty => Gate {
            revision: Some(commit.clone()),
            ..absent(
                ID,
                TITLE,
                Status::Fail,
                "uncommitted or untracked changes (`git status`): commit or stash them, so that what you deploy is a commit the results name".to_owned(),
            )
        },
        Some(commit) => Gate {
            revision: Some(commit.clone()),
            ..absent(ID, TITLE, Status::Pass, "nothing to commit".to_owned())
        },
    }
}

/// The four gates, in the order the checklist shows them.
pub fn gates(observed: &Observed) -> Vec<Gate> {
    vec![
        check_gate(observed),
        vm_test_gate(observed),
        docs_gate(observed),
        tree_gate(observed),
    ]
}

/// FAIL if any gate fails, else STALE if any is stale, else PASS.
pub fn overall(gates: &[Gate]) -> Status {
    gates.iter().map(|g| g.status).max().unwrap_or(Status::Pass)
}

#[cfg(test)]
pub mod testing {
    //! Results as `check` and `vm-test` write them, for tests.
    use super::*;
    use crate::check::HostSummary;
    use crate::results::{BootRecord, CheckRecord, StepRecord};

    pub const HEAD: &str = "0123456789abcdef0123456789abcdef01234567";
    pub const OLD: &str = "fedcba9876543210fedcba9876543210fedcba98";

    pub fn revision(commit: &str, dirty: bool) -> Revision {
        Revision {
            commit: Some(commit.to_owned()),
            dirty,
        }
    }

    pub fn header(kind: &str, commit: &str, passed: bool) -> Header {
        Header {
            schema: SCHEMA,
            kind: kind.to_owned(),
            host: "hetzner-cloud".to_owned(),
            revision: revision(commit, false),
            finished_at: "2026-11-28T12:00:00Z".to_owned(),
            passed,
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

    pub fn vm_results(commit: &str, passed: bool) -> VmTestResults {
        VmTestResults {
            header: header("vm-test", commit, passed),
            backend: "lab".to_owned(),
            accelerator: "tcg".to_owned(),
            kernel: "6.1.0-56-cloud-amd64".to_owned(),
            disk_bytes: 480_000_000_000,
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

    pub fn passing() -> Observed {
        Observed {
            host: "hetzner-cloud".to_owned(),
            head: revision(HEAD, false),
            check: Found::Present(check_results(HEAD, 0)),
            vm_test: Found::Present(vm_results(HEAD, true)),
            docs: DocsState::Fresh,
            disk_bytes: BTreeMap::from([("main".to_owned(), 480_000_000_000)]),
            results_dir: "target/xtask".to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;

    fn statuses(observed: &Observed) -> Vec<(&'static str, Status)> {
        gates(observed).iter().map(|g| (g.id, g.status)).collect()
    }

    #[test]
    fn everything_fresh_and_clean_passes() {
        let observed = passing();
        let gates = gates(&observed);
        assert!(gates.iter().all(|g| g.status == Status::Pass), "{gates:#?}");
        assert_eq!(overall(&gates), Status::Pass);
        assert_eq!(overall(&gates).exit_code(), 0);
        assert_eq!(gates[0].revision.as_deref(), Some(HEAD));
        assert!(gates[1]
            .detail
            .contains("2 boot(s), 2 in-VM check(s) passed"));
    }

    #[test]
    fn missing_results_are_stale() {
        let mut observed = passing();
        observed.check = Found::Missing;
        observed.vm_test = Found::Missing;
        let gates = gates(&observed);
        assert_eq!(
            statuses(&observed),
            vec![
                ("check", Status::Stale),
                ("vm-test", Status::Stale),
                ("docs", Status::Pass),
                ("tree", Status::Pass)
            ]
        );
        assert!(gates[0].detail.contains("no target/xtask/check.json"));
        assert!(gates[0]
            .detail
            .contains("cargo xtask check --host hetzner-cloud"));
        assert_eq!(overall(&gates).exit_code(), 3);
    }

    #[test]
    fn results_from_another_revision_or_a_dirty_tree_are_stale() {
        let mut observed = passing();
        observed.check = Found::Present(check_results(OLD, 0));
        let mut dirty = vm_results(HEAD, true);
        dirty.header.revision.dirty = true;
        observed.vm_test = Found::Present(dirty);
        let gates = gates(&observed);
        assert_eq!(gates[0].status, Status::Stale);
        assert!(
            gates[0]
                .detail
                .contains("made at fedcba987654, but HEAD is 0123456789ab"),
            "{}",
            gates[0].detail
        );
        assert_eq!(gates[1].status, Status::Stale);
        assert!(gates[1].detail.contains("uncommitted changes"));
    }

    #[test]
    fn results_of_another_schema_host_or_disk_size_are_stale() {
        let mut observed = passing();
        let mut other_schema = check_results(HEAD, 0);
        other_schema.header.schema = SCHEMA + 1;
        observed.check = Found::Present(other_schema);
        assert_eq!(gates(&observed)[0].status, Status::Stale);

        let mut other_host = check_results(HEAD, 0);
        other_host.header.host = "elsewhere".to_owned();
        observed.check = Found::Present(other_host);
        assert!(gates(&observed)[0].detail.contains("not hetzner-cloud"));

        let mut all_hosts = check_results(HEAD, 0);
        all_hosts.header.host = "a,hetzner-cloud".to_owned();
        observed.check = Found::Present(all_hosts);
        assert_eq!(gates(&observed)[0].status, Status::Pass);

        let mut resized = check_results(HEAD, 0);
        resized.disk_size_override = Some(480 << 30);
        observed.check = Found::Present(resized);
        let gate = &gates(&observed)[0];
        assert_eq!(gate.status, Status::Stale);
        assert!(gate.detail.contains("--disk-size"), "{}", gate.detail);

        observed.check =
            Found::Unreadable("target/xtask/check.json is not a results file".to_owned());
        assert_eq!(gates(&observed)[0].status, Status::Stale);
    }

    #[test]
    fn failed_results_fail_and_say_why() {
        let mut observed = passing();
        observed.check = Found::Present(check_results(HEAD, 2));
        observed.vm_test = Found::Present(vm_results(HEAD, false));
        let gates = gates(&observed);
        assert_eq!(gates[0].status, Status::Fail);
        assert!(gates[0].detail.contains("2 error(s)") && gates[0].detail.contains("SWAP001"));
        assert_eq!(gates[1].status, Status::Fail);
        assert!(
            gates[1].detail.contains("boot 2 (rotate) failed"),
            "{}",
            gates[1].detail
        );
        assert!(gates[1]
            .detail
            .contains("rotation: measured \"kept\", expected \"moved\""));
        assert_eq!(overall(&gates), Status::Fail);
        assert_eq!(overall(&gates).exit_code(), 1);
    }

    #[test]
    fn a_passing_run_without_checks_proves_nothing() {
        let mut observed = passing();
        let mut empty = vm_results(HEAD, true);
        empty.checks.clear();
        observed.vm_test = Found::Present(empty);
        assert_eq!(gates(&observed)[1].status, Status::Fail);
    }

    #[test]
    fn stale_docs_and_a_dirty_tree_fail() {
        let mut observed = passing();
        observed.docs = DocsState::Drifted("changed: layout.md".to_owned());
        observed.head.dirty = true;
        let gates = gates(&observed);
        assert_eq!(gates[2].status, Status::Fail);
        assert!(gates[2].detail.contains("changed: layout.md"));
        assert_eq!(gates[3].status, Status::Fail);
        // Results made at HEAD before the edit still describe HEAD.
        assert_eq!(gates[0].status, Status::Pass);

        observed.docs = DocsState::Unknown("nix-instantiate is missing".to_owned());
        observed.head = Revision {
            commit: None,
            dirty: true,
        };
        let gates = super::gates(&observed);
        assert_eq!(gates[2].status, Status::Stale);
        assert_eq!(gates[3].status, Status::Fail);
        assert_eq!(gates[0].status, Status::Stale, "no HEAD: nothing is fresh");
    }

    #[test]
    fn fail_outranks_stale() {
        let mut observed = passing();
        observed.check = Found::Missing;
        observed.docs = DocsState::Drifted("x".to_owned());
        assert_eq!(overall(&gates(&observed)), Status::Fail);
    }

    #[test]
    fn a_different_vm_disk_is_noted_not_failed() {
        let mut observed = passing();
        let mut small = vm_results(HEAD, true);
        small.disk_bytes = 20 << 30;
        observed.vm_test = Found::Present(small);
        let gate = &gates(&observed)[1];
        assert_eq!(gate.status, Status::Pass);
        assert!(gate.detail.contains("the VM disk was 21474836480 bytes"));
    }
}
