//! `cargo xtask deploy-checklist`: the deployment and rollback checklist of
//! a host, gated on results that were really measured.
//!
//! Gates (`gates`): the admin can log in (the host's own files), `check`
//! clean with nothing that fails the build, the NixOS system evaluates with
//! the pinned inputs, the full vm-test passed, the checklist's procedures
//! passed in `vm-test --thorough`, docs/reference/ fresh, the working tree
//! clean. Each is PASS, FAIL, STALE or NOT RUN; READY only when
//! all are PASS.
//!
//! Exit codes (the same with or without `--allow-stale`):
//! - 0: READY, every gate passes; the checklist is printed (or written to `--out`);
//! - 1: NOT READY, a gate is not PASS;
//! - 2: could not run (unknown host, the layout does not build, `--out` not writable).
//!
//! When NOT READY, only the gates are printed (on stderr), unless
//! `--allow-stale` asks for the whole checklist anyway, marked NOT READY.
//!
//! Every command it prints takes the login, `sudo`, the port and the paths
//! from the host (`facts`, the layout); `procedures` is the one source of
//! the steps, which vm-test executes (`crate::vm::procedure_runs`); under each
//! step the checklist shows what the last thorough run did with it.

pub mod consistency;
pub mod disposition;
pub mod facts;
pub mod gates;
pub mod guides;
pub mod hazards;
pub mod places;
pub mod plan;
pub mod procedures;
pub mod render;

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use camino::{Utf8Path, Utf8PathBuf};
use serde::Serialize;

use crate::flake_eval::{self, FlakeEvalResults};
use crate::hosts::Subject;
use crate::hosts::DEFAULT_HOST;
use crate::reference::{self, REFERENCE_DIR};
use crate::results::CheckResults;
use crate::results::{self, Kind, VmTestResults};
use toolbox::context::Context;
use toolbox::project::{display_path, project_root, revision, xtask_dir, Revision};

use facts::HostFacts;
use gates::{DocsState, Evidence, Found, Gate, Observed, Status};
use plan::Measured;
use procedures::Procedure;

/// Version of the `--json` document (2: `ready`, NOT RUN, procedures with expectations).
pub const SCHEMA: u32 = 2;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The host to deploy.
    #[arg(long, default_value = DEFAULT_HOST)]
    pub host: String,
    /// Print one JSON document (schema in docs/deploy-checklist.md) instead of Markdown.
    #[arg(long)]
    pub json: bool,
    /// Write the checklist to this file instead of stdout.
    #[arg(long)]
    pub out: Option<Utf8PathBuf>,
    /// Print the checklist even when it is NOT READY (marked so); the exit
    /// code is still 1.
    #[arg(long)]
    pub allow_stale: bool,
    /// Where the results files are read from (default: target/xtask).
    #[arg(long)]
    pub results_dir: Option<Utf8PathBuf>,
}

/// The whole checklist, as `--json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct Checklist {
    pub schema: u32,
    pub host: String,
    pub flake_attribute: String,
    pub head: Revision,
    /// Every gate passes.
    pub ready: bool,
    /// The worst gate status (FAIL, then STALE, then NOT RUN); PASS when ready.
    pub status: Status,
    pub gates: Vec<Gate>,
    /// Who logs in and how: what every printed command is derived from.
    pub facts: HostFacts,
    /// What vm-test measured (the proof, else the last run), whatever its gate says.
    pub measured: Option<Measured>,
    /// Values to fill in: `<IP>` and the like.
    pub placeholders: BTreeMap<&'static str, &'static str>,
    /// What the `vm-test --thorough` run the `procedures` gate rests on did
    /// with each procedure of §3 and §4, by id.
    pub tested: BTreeMap<String, Tested>,
    pub deployment: Vec<Procedure>,
    pub verification: Vec<Procedure>,
    pub rollback: Vec<Procedure>,
    /// The flake's NixOS VM tests: no gate rests on them and nothing here
    /// runs or records them, so each is NOT RUN, with the command that runs it.
    pub nixos_vm_tests: Vec<NotRunHere>,
    /// What the last `cargo xtask verify` of the server saw, for HEAD.
    pub post_deploy: PostDeploy,
}

/// A test this checklist cannot run or read a result of.
#[derive(Debug, Clone, Serialize)]
pub struct NotRunHere {
    pub name: String,
    pub proves: String,
    pub status: Status,
    pub reason: String,
    pub command: String,
}

/// `disposition::VM_TESTS`, each NOT RUN.
fn nixos_vm_tests() -> Vec<NotRunHere> {
    disposition::VM_TESTS
        .iter()
        .map(|(name, proves)| NotRunHere {
            name: (*name).to_owned(),
            proves: (*proves).to_owned(),
            status: Status::NotRun,
            reason: "needs nixpkgs and KVM (the NixOS test driver); deploy-checklist records no result of it".to_owned(),
            command: disposition::check_command(name),
        })
        .collect()
}

/// The post-deploy section: the last `verify` record, judged for HEAD
/// (the revision being deployed). It is no gate: it can only exist after
/// the deployment.
#[derive(Debug, Clone, Serialize)]
pub struct PostDeploy {
    /// `PASS`, `FAIL` or `NOT RUN` (no record, one for another revision,
    /// or a verify that could not run).
    pub status: &'static str,
    pub detail: String,
    /// The command that makes the record.
    pub command: String,
    /// The record it reads.
    pub file: String,
}

/// Judges the verify record against HEAD.
pub fn post_deploy(observed: &Observed) -> PostDeploy {
    use crate::verified::Status as Verified;
    let file = format!("{}/verify-{}.json", observed.results_dir, observed.host);
    let command = format!(
        "cargo xtask verify --host {} {}@<IP>",
        observed.host, observed.facts.admin_user
    );
    let not_run = |detail: String| PostDeploy {
        status: "NOT RUN",
        detail,
        command: command.clone(),
        file: file.clone(),
    };
    let record = match &observed.verify {
        Found::Missing => {
            return not_run("no verify has run against the server yet (run it after the install and after every deploy)".to_owned())
        }
        Found::Unreadable(error) => return not_run(format!("the record cannot be read: {error}")),
        Found::Present(record) => record,
    };
    let head = observed.head.commit.as_deref();
    if head.is_none() || record.revision.commit.as_deref() != head || record.revision.dirty {
        return not_run(format!(
            "the last verify ({}, {}) was made at revision {}{}, not at HEAD {}: run it again for the revision you deployed",
            record.finished_at,
            record.status.label(),
            record.revision.commit.as_deref().map(|c| &c[..c.len().min(12)]).unwrap_or("unknown"),
            if record.revision.dirty { " with uncommitted changes" } else { "" },
            head.map(|c| &c[..c.len().min(12)]).unwrap_or("unknown"),
        ));
    }
    let at = format!(
        "{} at {} (host key {})",
        record.target,
        record.finished_at,
        record.host_key.as_deref().unwrap_or("not seen")
    );
    match record.status {
        Verified::Pass => {
            let not_run: Vec<&str> = record
                .checks
                .iter()
                .filter(|c| c.status == Verified::NotRun)
                .map(|c| c.id.as_str())
                .collect();
            PostDeploy {
                status: "PASS",
                detail: format!(
                    "{} checks passed on {at}{}",
                    record.checks.len() - not_run.len(),
                    if not_run.is_empty() {
                        String::new()
                    } else {
                        format!("; not run there: {}", not_run.join(", "))
                    }
                ),
                command,
                file,
            }
        }
        Verified::Fail => PostDeploy {
            status: "FAIL",
            detail: format!(
                "failed on {at}: {}",
                record
                    .checks
                    .iter()
                    .filter(|c| c.status == Verified::Fail)
                    .map(|c| c.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            command,
            file,
        },
        Verified::NotRun | Verified::Error => not_run(format!(
            "the last verify could not run: {}",
            record.error.as_deref().unwrap_or("no reason recorded")
        )),
    }
}

impl Checklist {
    /// The checklist step of procedure `id`: `3.1` for `verify.units`.
    pub fn step_of(&self, id: &str) -> Option<String> {
        [
            (2, &self.deployment),
            (3, &self.verification),
            (4, &self.rollback),
        ]
        .iter()
        .find_map(|(section, steps)| {
            steps
                .iter()
                .position(|p| p.id == id)
                .map(|i| format!("{section}.{}", i + 1))
        })
    }

    /// Every procedure, in checklist order.
    pub fn procedures(&self) -> impl Iterator<Item = &Procedure> {
        self.deployment
            .iter()
            .chain(&self.verification)
            .chain(&self.rollback)
    }
}

/// A procedure as vm-test ran it in the lab VM.
#[derive(Debug, Clone, Serialize)]
pub struct Tested {
    /// `PASS`, `FAIL` or `NOT RUN`.
    pub status: results::ProcedureStatus,
    /// The results file it comes from.
    pub file: String,
    /// The checklist's commands that ran as expected.
    pub passed: usize,
    /// Commands the lab cannot run, and why (the first reason).
    pub not_run: usize,
    pub why_not: Option<String>,
}

/// A procedure of the checklist with its step number (`3.2`).
#[derive(Debug, Clone)]
pub struct Numbered {
    pub step: String,
    pub procedure: Procedure,
}

/// §3 (post-deploy verification) and §4 (rollback plan): the procedures
/// that run on the server, numbered as the checklist prints them. vm-test
/// runs them from here, so what is printed is what is tested.
pub fn server_procedures(subject: &Subject, facts: &HostFacts) -> Vec<Numbered> {
    let number = |section: usize, steps: Vec<Procedure>| -> Vec<Numbered> {
        steps
            .into_iter()
            .enumerate()
            .map(|(index, procedure)| Numbered {
                step: format!("{section}.{}", index + 1),
                procedure,
            })
            .collect()
    };
    let mut all = number(3, procedures::verification(subject, facts, None));
    all.extend(number(4, procedures::rollback(subject, facts)));
    all
}

pub fn run(context: &Context, args: Args) -> Result<ExitCode> {
    let root = project_root();
    let results_dir = match &args.results_dir {
        Some(dir) if dir.is_relative() => Utf8PathBuf::try_from(std::env::current_dir()?)
            .context("the current directory is not UTF-8")?
            .join(dir),
        Some(dir) => dir.clone(),
        None => xtask_dir(),
    };
    let loaded = load(context, &root, &args.host)?;
    let observed = observe(&root, &loaded, &results_dir, revision());
    let checklist = build(&loaded.subject, &observed);
    let code = if checklist.ready { 0 } else { 1 };

    if !checklist.ready && !args.allow_stale {
        eprint!("{}", render::gates_text(&checklist));
        eprintln!(
            "NOT READY ({}): fix the gates above, or pass --allow-stale to print the checklist anyway.",
            checklist.status.label()
        );
        return Ok(ExitCode::from(code));
    }
    let text = if args.json {
        let mut json =
            serde_json::to_string_pretty(&checklist).context("serialising the checklist")?;
        json.push('\n');
        json
    } else {
        render::markdown(&checklist)
    };
    match &args.out {
        Some(path) => {
            toolbox::project::write_readable(path, text.as_bytes())?;
            eprintln!(
                "wrote {} ({}); {}",
                display_path(path),
                if args.json { "json" } else { "markdown" },
                if checklist.ready {
                    "READY".to_owned()
                } else {
                    format!("NOT READY ({})", checklist.status.label())
                }
            );
        }
        None => print!("{text}"),
    }
    Ok(ExitCode::from(code))
}

/// A host as the checklist needs it: its layout and its login facts.
pub struct Loaded {
    pub subject: Subject,
    pub facts: HostFacts,
    /// The host's directory.
    pub dir: Utf8PathBuf,
}

/// Evaluates host `name` of the repository at `root` (exit 2 when it cannot).
pub fn load(context: &Context, root: &Utf8Path, name: &str) -> Result<Loaded> {
    let subject = crate::rules::load_subject(context, root, name)?;
    let host = crate::hosts::discover(root)?
        .into_iter()
        .find(|h| h.name == name)
        .with_context(|| format!("no host {name:?} under {root}/hosts"))?;
    let nix = crate::nix_eval::Nix::locate(context)?;
    let facts = HostFacts::load(&nix, root, &host.dir)?;
    Ok(Loaded {
        subject,
        facts,
        dir: host.dir,
    })
}

/// Reads a results file without failing: a broken file is a stale gate.
fn read_results<T: serde::de::DeserializeOwned>(path: &Utf8Path) -> Found<T> {
    match results::read::<T>(path) {
        Ok(Some(results)) => Found::Present(results),
        Ok(None) => Found::Missing,
        Err(error) => Found::Unreadable(format!("{error:#}")),
    }
}

fn evidence<T: serde::de::DeserializeOwned>(dir: &Utf8Path, kind: Kind) -> Evidence<T> {
    Evidence {
        pass: read_results(&dir.join(results::pass_file_name(kind))),
        last: read_results(&dir.join(results::file_name(kind))),
    }
}

/// Gathers what the gates look at: the results files in `results_dir`, the
/// files they rest on as they are now, the docs regenerated in memory
/// against `root`/docs/reference, and `head`.
pub fn observe(
    root: &Utf8Path,
    loaded: &Loaded,
    results_dir: &Utf8Path,
    head: Revision,
) -> Observed {
    let subject = &loaded.subject;
    let generated = reference::pages(subject);
    let docs = match reference::compare(&root.join(REFERENCE_DIR), &generated) {
        Ok(drift) if drift.is_empty() => DocsState::Fresh,
        Ok(drift) => DocsState::Drifted(drift.summary()),
        Err(error) => DocsState::Unknown(format!("{error:#}")),
    };
    let current = [
        Kind::Check,
        flake_eval::KIND,
        Kind::VmTest,
        results::THOROUGH_KIND,
    ]
    .into_iter()
    .map(|kind| (kind, results::current_inputs(root, kind, &subject.host)))
    .collect();
    let machine_file = subject
        .sources
        .iter()
        .find(|s| s.ends_with("machine.nix"))
        .cloned()
        .unwrap_or_else(|| format!("{}/machine.nix", display_path(&loaded.dir)));
    Observed {
        host: subject.host.clone(),
        flake_attribute: subject.flake_attribute().to_owned(),
        machine_file,
        head,
        facts: loaded.facts.clone(),
        check: evidence::<CheckResults>(results_dir, Kind::Check),
        nixos: evidence::<FlakeEvalResults>(results_dir, flake_eval::KIND),
        vm_test: evidence::<VmTestResults>(results_dir, Kind::VmTest),
        thorough: evidence::<gates::ThoroughResults>(results_dir, results::THOROUGH_KIND),
        lab_procedures: server_procedures(subject, &loaded.facts)
            .into_iter()
            .filter(|n| disposition::tier(&n.procedure) != disposition::Tier::NotInLab)
            .map(|n| (n.step, n.procedure.id))
            .collect(),
        docs,
        disk_bytes: subject.disk_sizes.clone(),
        current,
        nixos_blocked: flake_eval::cannot_run_here(root),
        nixos_how: flake_eval::how_to_run(root, &subject.host),
        results_dir: display_path(results_dir),
        verify: match crate::verified::read(&crate::verified::path(
            Some(results_dir),
            &subject.host,
        )) {
            Ok(Some(record)) => Found::Present(record),
            Ok(None) => Found::Missing,
            Err(error) => Found::Unreadable(format!("{error:#}")),
        },
    }
}

/// The checklist for `subject` given what was observed.
pub fn build(subject: &Subject, observed: &Observed) -> Checklist {
    let gates = gates::gates(observed);
    let measured = [
        (
            results::pass_file_name(Kind::VmTest),
            &observed.vm_test.pass,
        ),
        (results::file_name(Kind::VmTest), &observed.vm_test.last),
    ]
    .into_iter()
    .find_map(|(file, found)| match found {
        Found::Present(results) => Some(Measured::new(&file, results)),
        _ => None,
    });
    let status = gates::overall(&gates);
    let tested = tested(&gates, observed);
    Checklist {
        schema: SCHEMA,
        host: subject.host.clone(),
        flake_attribute: subject.flake_attribute().to_owned(),
        head: observed.head.clone(),
        ready: status == Status::Pass,
        status,
        gates,
        facts: observed.facts.clone(),
        deployment: plan::deployment(subject, &observed.facts),
        verification: procedures::verification(subject, &observed.facts, measured.as_ref()),
        rollback: procedures::rollback(subject, &observed.facts),
        measured,
        placeholders: plan::PLACEHOLDERS.iter().copied().collect(),
        tested,
        nixos_vm_tests: nixos_vm_tests(),
        post_deploy: post_deploy(observed),
    }
}

/// Each procedure's result in the thorough run the `procedures` gate rests on.
fn tested(gates: &[Gate], observed: &Observed) -> BTreeMap<String, Tested> {
    let Some(file) = gates
        .iter()
        .find(|g| g.id == "procedures")
        .and_then(|g| g.file.clone())
    else {
        return BTreeMap::new();
    };
    let found = if file == results::pass_file_name(results::THOROUGH_KIND) {
        &observed.thorough.pass
    } else {
        &observed.thorough.last
    };
    let Found::Present(results) = found else {
        return BTreeMap::new();
    };
    results
        .0
        .procedures
        .iter()
        .map(|p| {
            let passed = p
                .commands
                .iter()
                .filter(|c| {
                    c.outcome.role == "checklist"
                        && c.outcome.status == results::CommandStatus::Pass
                })
                .count();
            let skipped: Vec<&results::CommandRecord> = p
                .commands
                .iter()
                .filter(|c| c.outcome.status == results::CommandStatus::NotRun)
                .collect();
            (
                p.id.clone(),
                Tested {
                    status: p.status,
                    file: file.clone(),
                    passed,
                    not_run: skipped.len(),
                    why_not: skipped.first().and_then(|c| {
                        let reason = c.outcome.problem.clone()?;
                        Some(match &c.outcome.proven_by {
                            Some(by) => format!("{reason}; run instead by {by}"),
                            None => reason,
                        })
                    }),
                },
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::facts::testing::{host_facts, with_key};
    use super::gates::testing::revision as at;
    use super::gates::testing::{check_results, passing, vm_results, HEAD, OLD};
    use super::*;
    use crate::hosts::testing::host_subject;
    use toolbox::project::write_atomically;

    fn temp() -> (tempfile::TempDir, Utf8PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = Utf8PathBuf::from_path_buf(dir.path().to_owned()).unwrap();
        (dir, path)
    }

    fn loaded(facts: HostFacts) -> Loaded {
        Loaded {
            subject: host_subject(),
            facts,
            dir: project_root().join("hosts/servers/hetzner-cloud"),
        }
    }

    /// A repository root whose docs/reference/ is what the subject generates.
    fn root_with_fresh_docs(subject: &Subject) -> (tempfile::TempDir, Utf8PathBuf) {
        let (dir, root) = temp();
        reference::write(&root.join(REFERENCE_DIR), &reference::pages(subject)).unwrap();
        (dir, root)
    }

    fn put<T: Serialize>(dir: &Utf8Path, name: &str, value: &T) {
        write_atomically(&dir.join(name), &serde_json::to_vec(value).unwrap()).unwrap();
    }

    #[test]
    fn gates_read_real_files_in_an_injected_results_dir() {
        let loaded = loaded(with_key());
        let (_keep_root, root) = root_with_fresh_docs(&loaded.subject);
        let (_keep_results, results) = temp();
        let head = at(HEAD, false);
        let id = |c: &Checklist, id: &str| c.gates.iter().find(|g| g.id == id).unwrap().clone();

        // Missing.
        let observed = observe(&root, &loaded, &results, head.clone());
        let checklist = build(&loaded.subject, &observed);
        assert_eq!(checklist.status, Status::NotRun);
        assert!(!checklist.ready);
        assert_eq!(id(&checklist, "docs").status, Status::Pass);
        assert_eq!(id(&checklist, "login").status, Status::Pass);
        // The temporary root has no flake.lock: the NixOS gate cannot run there.
        let nixos = id(&checklist, "nixos");
        assert!(nixos.detail.contains("no flake.lock"), "{}", nixos.detail);

        // Files written as the commands write them, with the inputs of `root` now.
        let stamp = |mut header: crate::results::Header, kind: Kind| {
            header.inputs = observed.current[&kind].clone();
            header
        };
        let mut check = check_results(HEAD, 0);
        check.header = stamp(check.header, Kind::Check);
        let mut vm = vm_results(HEAD, true);
        vm.header = stamp(vm.header, Kind::VmTest);
        let mut nixos = gates::testing::nixos_results(HEAD, true);
        nixos.header = stamp(nixos.header, flake_eval::KIND);
        // Every procedure the lab runs for this host, as observe lists them.
        assert!(
            observed.lab_procedures.len() >= 10,
            "{:?}",
            observed.lab_procedures
        );
        let mut thorough =
            gates::testing::thorough_results_of(HEAD, true, &observed.lab_procedures);
        thorough.0.header = stamp(thorough.0.header, results::THOROUGH_KIND);
        put(&results, "check.pass.json", &check);
        put(&results, "vm-test.pass.json", &vm);
        put(&results, "flake-eval.pass.json", &nixos);
        put(&results, "vm-test-thorough.pass.json", &thorough);
        let checklist = build(
            &loaded.subject,
            &observe(&root, &loaded, &results, head.clone()),
        );
        assert!(checklist.ready, "{:#?}", checklist.gates);
        assert_eq!(
            checklist.measured.as_ref().unwrap().file,
            "vm-test.pass.json"
        );

        // Stale: HEAD moved on.
        let moved = build(
            &loaded.subject,
            &observe(&root, &loaded, &results, at(OLD, false)),
        );
        assert_eq!(moved.status, Status::Stale);

        // Stale: a file the results rest on changed.
        std::fs::create_dir_all(root.join("hosts")).unwrap();
        std::fs::write(root.join("hosts/new.nix"), "{ }").unwrap();
        let edited = build(
            &loaded.subject,
            &observe(&root, &loaded, &results, head.clone()),
        );
        assert_eq!(id(&edited, "check").status, Status::Stale);
        assert!(
            id(&edited, "check").detail.contains("hosts/new.nix is new"),
            "{}",
            id(&edited, "check").detail
        );
        std::fs::remove_file(root.join("hosts/new.nix")).unwrap();

        // A failed last run stays visible beside the proof.
        let mut failed = vm_results(HEAD, false);
        failed.header = stamp(failed.header, Kind::VmTest);
        failed.header.finished_at = "2026-11-29T00:00:00Z".to_owned();
        put(&results, "vm-test.json", &failed);
        let shown = build(
            &loaded.subject,
            &observe(&root, &loaded, &results, head.clone()),
        );
        assert!(shown.ready);
        assert!(id(&shown, "vm-test").detail.contains("did not pass"));

        // Unreadable.
        std::fs::write(results.join("check.pass.json"), "{ not json").unwrap();
        let broken = build(&loaded.subject, &observe(&root, &loaded, &results, head));
        assert_eq!(id(&broken, "check").status, Status::Stale);
        assert!(
            id(&broken, "check").detail.contains("check.pass.json"),
            "{}",
            id(&broken, "check").detail
        );
    }

    #[test]
    fn edited_docs_fail_the_docs_gate() {
        let loaded = loaded(host_facts());
        let (_keep, root) = root_with_fresh_docs(&loaded.subject);
        std::fs::write(
            root.join(REFERENCE_DIR).join("layout.md"),
            "edited by hand\n",
        )
        .unwrap();
        std::fs::write(root.join(REFERENCE_DIR).join("notes.md"), "extra\n").unwrap();
        let observed = observe(&root, &loaded, &root.join("none"), at(HEAD, false));
        match &observed.docs {
            DocsState::Drifted(summary) => {
                assert_eq!(summary, "changed: layout.md; extra: notes.md")
            }
            other => panic!("{other:?}"),
        }
    }

    /// The record verify writes is the one the checklist reads.
    #[test]
    fn the_checklist_reads_the_record_verify_writes() {
        use crate::verified::{self as verified, Record, Status as Verified};
        let loaded = loaded(host_facts());
        let (_keep, root) = root_with_fresh_docs(&loaded.subject);
        let results = root.join("results");
        let target: crate::verify::ssh::Target = "hbohlen@203.0.113.7".parse().unwrap();
        let mut record = Record::new(&loaded.subject.host, &target, at(HEAD, false));
        record.status = Verified::Pass;
        verified::write(
            &verified::path(Some(&results), &loaded.subject.host),
            &record,
        )
        .unwrap();
        let observed = observe(&root, &loaded, &results, at(HEAD, false));
        let checklist = build(&loaded.subject, &observed);
        assert_eq!(
            checklist.post_deploy.status, "PASS",
            "{:?}",
            checklist.post_deploy
        );
        assert!(checklist
            .post_deploy
            .file
            .ends_with("verify-hetzner-cloud.json"));
        let elsewhere = observe(&root, &loaded, &root.join("none"), at(HEAD, false));
        assert_eq!(
            build(&loaded.subject, &elsewhere).post_deploy.status,
            "NOT RUN"
        );
        std::fs::write(verified::path(Some(&results), &loaded.subject.host), "{").unwrap();
        let broken = build(
            &loaded.subject,
            &observe(&root, &loaded, &results, at(HEAD, false)),
        );
        assert_eq!(broken.post_deploy.status, "NOT RUN");
        assert!(
            broken.post_deploy.detail.contains("cannot be read"),
            "{:?}",
            broken.post_deploy
        );
    }

    #[test]
    fn the_nixos_vm_tests_are_listed_not_run_with_their_commands() {
        let checklist = build(&host_subject(), &passing());
        // Not gates: a READY checklist still says they never ran here.
        assert!(checklist.ready);
        let json = serde_json::to_value(&checklist).unwrap();
        let tests = json["nixos_vm_tests"].as_array().unwrap();
        let names: Vec<&str> = tests.iter().map(|t| t["name"].as_str().unwrap()).collect();
        assert_eq!(
            names,
            [
                "vm-test",
                "vm-test-uefi",
                "vm-test-deletion",
                "vm-test-scripted-initrd"
            ]
        );
        for test in tests {
            assert_eq!(test["status"], "NOT RUN", "{test}");
            assert_eq!(
                test["command"],
                format!(
                    "nix build -L .#checks.x86_64-linux.{}",
                    test["name"].as_str().unwrap()
                )
            );
        }
        let markdown = render::markdown(&checklist);
        assert!(
            markdown.contains("| vm-test-deletion | four boots under test-only retention"),
            "{markdown}"
        );
        assert!(markdown.contains("`nix build -L .#checks.x86_64-linux.vm-test-scripted-initrd`"));
        let text = render::gates_text(&checklist);
        assert!(text.contains(
            "NOT RUN  vm-test-scripted-initrd  run: nix build -L .#checks.x86_64-linux.vm-test-scripted-initrd"
        ), "{text}");
    }

    #[test]
    fn the_json_document_is_complete() {
        let subject = host_subject();
        let checklist = build(&subject, &passing());
        let json = serde_json::to_value(&checklist).unwrap();
        assert_eq!(json["schema"], 2);
        assert_eq!(json["ready"], true);
        assert_eq!(json["status"], "PASS");
        assert_eq!(json["flake_attribute"], "hetzner-vps");
        let ids: Vec<&str> = json["gates"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["id"].as_str().unwrap())
            .collect();
        assert_eq!(
            ids,
            [
                "login",
                "check",
                "nixos",
                "vm-test",
                "procedures",
                "docs",
                "tree"
            ]
        );
        assert_eq!(json["gates"][3]["status"], "PASS");
        assert_eq!(json["facts"]["adminUser"], "hbohlen");
        assert_eq!(
            json["measured"]["figures"]["compression.@nix.percent"],
            47.0
        );
        assert_eq!(json["measured"]["thresholds"][0]["met"], true);
        assert_eq!(json["deployment"][0]["id"], "deploy.facts");
        assert_eq!(json["verification"][0]["id"], "verify.units");
        assert_eq!(json["verification"][0]["commands"][0]["where"], "server");
        assert_eq!(
            json["verification"][0]["commands"][0]["expect"][0]["kind"],
            "empty"
        );
        assert!(json["verification"].as_array().unwrap().len() >= 9);
        assert_eq!(json["rollback"].as_array().unwrap().len(), 6);
        assert!(json["placeholders"]["<IP>"].is_string());
        assert_eq!(checklist.step_of("verify.units").as_deref(), Some("3.1"));
        assert_eq!(
            checklist.step_of("rollback.file-from-old-root").as_deref(),
            Some("4.3")
        );
        assert_eq!(
            checklist.step_of("rollback.restore-persist").as_deref(),
            Some("4.4")
        );
        assert_eq!(
            checklist.step_of("rollback.reinstall").as_deref(),
            Some("4.5")
        );
        let ids: Vec<&str> = checklist.procedures().map(|p| p.id.as_str()).collect();
        let mut unique = ids.clone();
        unique.sort();
        unique.dedup();
        // One filesystem: every id appears once.
        assert_eq!(unique.len(), ids.len(), "{ids:?}");
    }

    /// The post-deploy section: NOT RUN until a verify passed for HEAD.
    #[test]
    fn the_post_deploy_section_shows_not_run_until_a_verify_passed_at_head() {
        use crate::verified::{CheckResult, Record, Status as Verified};
        let target: crate::verify::ssh::Target = "hbohlen@203.0.113.7".parse().unwrap();
        let record = |commit: &str, dirty: bool, status: Verified| {
            let mut r = Record::new("hetzner-cloud", &target, at(commit, dirty));
            r.host_key = Some("ssh-ed25519 SHA256:abc".to_owned());
            r.checks.push(CheckResult {
                id: "verify.swap".to_owned(),
                step: Some("3.4".to_owned()),
                title: "Swap".to_owned(),
                status: if status == Verified::Fail {
                    Verified::Fail
                } else {
                    Verified::Pass
                },
                value: String::new(),
                problem: None,
                commands: Vec::new(),
                left_out: Vec::new(),
            });
            r.status = status;
            r
        };
        let judged = |found: Found<Record>| {
            let mut observed = passing();
            observed.verify = found;
            let checklist = build(&host_subject(), &observed);
            assert!(checklist.ready, "the record is no gate");
            let text = render::markdown(&checklist);
            assert!(
                text.contains(&format!(
                    "**Post-deploy verify: {}**",
                    checklist.post_deploy.status
                )),
                "{text}"
            );
            assert!(
                text.contains("cargo xtask verify --host hetzner-cloud hbohlen@<IP>"),
                "{text}"
            );
            checklist.post_deploy
        };
        assert_eq!(judged(Found::Missing).status, "NOT RUN");
        let old = judged(Found::Present(record(OLD, false, Verified::Pass)));
        assert_eq!(old.status, "NOT RUN", "{old:?}");
        assert!(old.detail.contains("fedcba987654"), "{old:?}");
        assert_eq!(
            judged(Found::Present(record(HEAD, true, Verified::Pass))).status,
            "NOT RUN"
        );
        let mut error = record(HEAD, false, Verified::Error);
        error.error = Some("the server cannot be reached".to_owned());
        assert_eq!(judged(Found::Present(error)).status, "NOT RUN");
        let failed = judged(Found::Present(record(HEAD, false, Verified::Fail)));
        assert_eq!(failed.status, "FAIL");
        assert!(failed.detail.contains("verify.swap"), "{failed:?}");
        let passed = judged(Found::Present(record(HEAD, false, Verified::Pass)));
        assert_eq!(passed.status, "PASS", "{passed:?}");
        assert!(passed.detail.contains("SHA256:abc"), "{passed:?}");
    }
}
