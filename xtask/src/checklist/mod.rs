//! `cargo xtask deploy-checklist`: the deployment and rollback checklist of
//! a host, gated on results that were really measured.
//!
//! Gates: `check` clean, `vm-test` passed (both at HEAD, made from a clean
//! tree), docs/reference/ fresh, the working tree clean. Each is PASS, FAIL or
//! STALE (missing, unreadable, or not made at HEAD from a clean tree).
//!
//! Exit codes (the same with or without `--allow-stale`):
//! - 0: every gate passes; the checklist is printed (or written to `--out`);
//! - 1: a gate fails;
//! - 3: no gate fails but one is stale;
//! - 2: could not run (unknown host, layout does not build, `--out` not writable).
//!
//! When a gate does not pass, only the gates are printed (on stderr), unless
//! `--allow-stale` asks for the whole checklist anyway, marked NOT READY.

pub mod gates;
pub mod plan;
pub mod render;

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use camino::{Utf8Path, Utf8PathBuf};
use serde::Serialize;

use crate::check::CheckResults;
use crate::docs::{self, Subject, REFERENCE_DIR};
use crate::hosts::DEFAULT_HOST;
use crate::project::{display_path, project_root, revision, xtask_dir, Revision};
use crate::results::{self, VmTestResults};

use gates::{DocsState, Found, Gate, Observed, Status};
use plan::{Measured, Step};

/// Version of the `--format json` document.
pub const SCHEMA: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Markdown, to read or to paste into a ticket.
    Md,
    /// One JSON document (schema in docs/deploy-checklist.md).
    Json,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The host to deploy.
    #[arg(long, default_value = DEFAULT_HOST)]
    pub host: String,
    #[arg(long, value_enum, default_value_t = Format::Md)]
    pub format: Format,
    /// Write the checklist to this file instead of stdout.
    #[arg(long)]
    pub out: Option<Utf8PathBuf>,
    /// Print the checklist even when a gate is STALE or FAILs (marked NOT
    /// READY); the exit code still says so (1 a gate fails, 3 one is stale).
    #[arg(long)]
    pub allow_stale: bool,
    /// Where check.json and vm-test.json are read from (default: target/xtask).
    #[arg(long)]
    pub results_dir: Option<Utf8PathBuf>,
}

/// The whole checklist, as `--format json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct Checklist {
    pub schema: u32,
    pub host: String,
    pub flake_attribute: String,
    pub head: Revision,
    /// PASS only when every gate passes.
    pub status: Status,
    pub gates: Vec<Gate>,
    /// What vm-test measured (when vm-test.json is readable), whatever its gate says.
    pub measured: Option<Measured>,
    /// Values to fill in: `<IP>` and the like.
    pub placeholders: BTreeMap<&'static str, &'static str>,
    pub deployment: Vec<Step>,
    pub verification: Vec<Step>,
    pub rollback: Vec<Step>,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let root = project_root();
    let results_dir = match &args.results_dir {
        Some(dir) if dir.is_relative() => Utf8PathBuf::try_from(std::env::current_dir()?)
            .context("the current directory is not UTF-8")?
            .join(dir),
        Some(dir) => dir.clone(),
        None => xtask_dir(),
    };
    let subject = docs::load_subject(&root, &args.host)?;
    let observed = observe(&root, &subject, &results_dir, revision());
    let checklist = build(&subject, &observed);
    let code = checklist.status.exit_code();

    if checklist.status != Status::Pass && !args.allow_stale {
        eprint!("{}", render::gates_text(&checklist));
        eprintln!(
            "NOT READY ({}): fix the gates above, or pass --allow-stale to print the checklist anyway.",
            checklist.status.label()
        );
        return Ok(ExitCode::from(code));
    }
    let text = match args.format {
        Format::Md => render::markdown(&checklist),
        Format::Json => {
            let mut json =
                serde_json::to_string_pretty(&checklist).context("serialising the checklist")?;
            json.push('\n');
            json
        }
    };
    match &args.out {
        Some(path) => {
            docs::write_readable(path, text.as_bytes())?;
            eprintln!(
                "wrote {} ({}); gates: {}",
                display_path(path),
                match args.format {
                    Format::Md => "markdown",
                    Format::Json => "json",
                },
                checklist.status.label()
            );
        }
        None => print!("{text}"),
    }
    Ok(ExitCode::from(code))
}

/// Reads a results file without failing: a broken file is a stale gate.
fn read_results<T: serde::de::DeserializeOwned>(path: &Utf8Path) -> Found<T> {
    match results::read::<T>(path) {
        Ok(Some(results)) => Found::Present(results),
        Ok(None) => Found::Missing,
        Err(error) => Found::Unreadable(format!("{error:#}")),
    }
}

/// Gathers what the gates look at: the results files in `results_dir`, the
/// docs regenerated in memory against `root`/docs/reference, and `head`.
pub fn observe(
    root: &Utf8Path,
    subject: &Subject,
    results_dir: &Utf8Path,
    head: Revision,
) -> Observed {
    let generated = docs::render::pages(subject);
    let docs = match docs::compare(&root.join(REFERENCE_DIR), &generated) {
        Ok(drift) if drift.is_empty() => DocsState::Fresh,
        Ok(drift) => DocsState::Drifted(drift.summary()),
        Err(error) => DocsState::Unknown(format!("{error:#}")),
    };
    Observed {
        host: subject.host.clone(),
        head,
        check: read_results::<CheckResults>(&results_dir.join("check.json")),
        vm_test: read_results::<VmTestResults>(&results_dir.join("vm-test.json")),
        docs,
        disk_bytes: subject.disk_sizes.clone(),
        results_dir: display_path(results_dir),
    }
}

/// The checklist for `subject` given what was observed.
pub fn build(subject: &Subject, observed: &Observed) -> Checklist {
    let gates = gates::gates(observed);
    let measured = match &observed.vm_test {
        Found::Present(results) => Some(Measured::new(results)),
        _ => None,
    };
    Checklist {
        schema: SCHEMA,
        host: subject.host.clone(),
        flake_attribute: subject.flake_attribute().to_owned(),
        head: observed.head.clone(),
        status: gates::overall(&gates),
        gates,
        deployment: plan::deployment(subject),
        verification: plan::verification(subject, measured.as_ref()),
        rollback: plan::rollback(subject),
        measured,
        placeholders: plan::PLACEHOLDERS.iter().copied().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::gates::testing::revision as at;
    use super::gates::testing::{check_results, passing, vm_results, HEAD, OLD};
    use super::*;
    use crate::docs::testing::host_subject;
    use crate::project::write_atomically;

    fn temp() -> (tempfile::TempDir, Utf8PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = Utf8PathBuf::from_path_buf(dir.path().to_owned()).unwrap();
        (dir, path)
    }

    /// A repository root whose docs/reference/ is what the subject generates.
    fn root_with_fresh_docs(subject: &Subject) -> (tempfile::TempDir, Utf8PathBuf) {
        let (dir, root) = temp();
        docs::write(&root.join(REFERENCE_DIR), &docs::render::pages(subject)).unwrap();
        (dir, root)
    }

    fn put<T: Serialize>(dir: &Utf8Path, name: &str, value: &T) {
        write_atomically(&dir.join(name), &serde_json::to_vec(value).unwrap()).unwrap();
    }

    #[test]
    fn gates_read_real_files_in_an_injected_results_dir() {
        let subject = host_subject();
        let (_keep_root, root) = root_with_fresh_docs(&subject);
        let (_keep_results, results) = temp();
        let head = at(HEAD, false);

        // Missing.
        let checklist = build(&subject, &observe(&root, &subject, &results, head.clone()));
        assert_eq!(checklist.status, Status::Stale);
        assert_eq!(
            checklist.gates[2].status,
            Status::Pass,
            "{:?}",
            checklist.gates[2]
        );

        // Passing.
        put(&results, "check.json", &check_results(HEAD, 0));
        put(&results, "vm-test.json", &vm_results(HEAD, true));
        let checklist = build(&subject, &observe(&root, &subject, &results, head.clone()));
        assert_eq!(checklist.status, Status::Pass, "{:#?}", checklist.gates);
        assert!(checklist.measured.is_some());

        // Stale: HEAD moved on.
        let moved = build(
            &subject,
            &observe(&root, &subject, &results, at(OLD, false)),
        );
        assert_eq!(moved.status, Status::Stale);

        // Failed.
        put(&results, "vm-test.json", &vm_results(HEAD, false));
        let failed = build(&subject, &observe(&root, &subject, &results, head.clone()));
        assert_eq!(failed.status, Status::Fail);

        // Unreadable.
        std::fs::write(results.join("check.json"), "{ not json").unwrap();
        let broken = build(&subject, &observe(&root, &subject, &results, head));
        assert_eq!(broken.gates[0].status, Status::Stale);
        assert!(
            broken.gates[0].detail.contains("check.json"),
            "{}",
            broken.gates[0].detail
        );
    }

    #[test]
    fn edited_docs_fail_the_docs_gate() {
        let subject = host_subject();
        let (_keep, root) = root_with_fresh_docs(&subject);
        std::fs::write(
            root.join(REFERENCE_DIR).join("layout.md"),
            "edited by hand\n",
        )
        .unwrap();
        std::fs::write(root.join(REFERENCE_DIR).join("notes.md"), "extra\n").unwrap();
        let observed = observe(&root, &subject, &root.join("none"), at(HEAD, false));
        match &observed.docs {
            DocsState::Drifted(summary) => {
                assert_eq!(summary, "changed: layout.md; extra: notes.md")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_json_document_is_complete() {
        let subject = host_subject();
        let checklist = build(&subject, &passing());
        let json = serde_json::to_value(&checklist).unwrap();
        assert_eq!(json["schema"], 1);
        assert_eq!(json["status"], "PASS");
        assert_eq!(json["flake_attribute"], "hetzner-vps");
        assert_eq!(json["gates"][1]["id"], "vm-test");
        assert_eq!(json["gates"][1]["status"], "PASS");
        assert_eq!(
            json["measured"]["figures"]["compression.@nix.percent"],
            47.0
        );
        assert_eq!(json["deployment"][3]["commands"][0]["where"], "local");
        assert!(json["verification"].as_array().unwrap().len() >= 6);
        assert!(json["rollback"].as_array().unwrap().len() == 5);
        assert!(json["placeholders"]["<IP>"].is_string());
    }
}
