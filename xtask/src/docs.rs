//! `cargo xtask docs`: docs/reference/ generated from the evaluated config.
//!
//! The pages (partitions, subvolumes, persisted paths, the rules catalogue)
//! and the SVG diagram are rendered from the same typed layout `check`
//! judges, so they cannot drift from the config. The output is deterministic
//! (no dates, no revisions) so that `--check` can compare it byte for byte.
//!
//! `--check` also reads the hand-written guides' shell blocks
//! (`checklist::guides`): every command must carry its place, use only
//! programs that place has, and have no hazard.
//!
//! Exit codes: 0 written (or, with `--check`, fresh); 1 `--check` found
//! differences or a guide's command is unclassified, missing or hazardous;
//! 2 could not run (Nix missing, layout does not evaluate, …).

use std::process::ExitCode;

use anyhow::Result;

use crate::hosts::DEFAULT_HOST;
use crate::reference::{compare, generate, write, REFERENCE_DIR};
use toolbox::context::Context;
use toolbox::project::project_root;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Do not write: regenerate in memory and exit 1 if docs/reference/ differs
    /// (a file changed, missing or extra), with a short diff, or if a command
    /// in a guide's shell block has no place, calls a program its place lacks,
    /// or has a hazard.
    #[arg(long)]
    pub check: bool,
    /// The host documented in docs/reference/ (a directory under hosts/ holding a disko.nix).
    #[arg(long, default_value = DEFAULT_HOST)]
    pub host: String,
    /// Print what was written (or, with --check, what is stale) as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn run(context: &Context, args: Args) -> Result<ExitCode> {
    let root = project_root();
    let generated = generate(context, &root, &args.host)?;
    let dir = root.join(REFERENCE_DIR);
    if args.check {
        let drift = compare(&dir, &generated)?;
        // The hand-written guides' commands: classified, available where
        // they run, without a hazard (checklist::guides).
        let guides = crate::deploy_checklist::guides::check_host(context, &root, &args.host)?;
        let guides_ok = guides.problems.is_empty();
        if args.json {
            let report = serde_json::json!({
                "directory": REFERENCE_DIR,
                "fresh": drift.is_empty(),
                "files": generated.keys().collect::<Vec<_>>(),
                "missing": drift.missing,
                "extra": drift.extra,
                "changed": drift.changed,
                "guides": {
                    "commands": guides.commands,
                    "from_checklist": guides.from_checklist,
                    "not_run": guides.not_run,
                    "problems": guides.problems.iter().map(ToString::to_string).collect::<Vec<_>>(),
                },
            });
            println!("{}", serde_json::to_string_pretty(&report)?);
            return Ok(if drift.is_empty() && guides_ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            });
        }
        let guides_text = guides.render();
        if guides_ok {
            print!("{guides_text}");
        } else {
            eprint!("{guides_text}");
            eprintln!("the guides above have commands that are unclassified, lack a program where they run, or have a hazard (xtask/src/deploy_checklist/guides.rs, hazards.rs)");
        }
        if drift.is_empty() {
            println!(
                "{REFERENCE_DIR}/ is fresh: {} files match the config of {}",
                generated.len(),
                args.host
            );
            return Ok(if guides_ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            });
        }
        eprint!("{}", drift.render(REFERENCE_DIR));
        eprintln!(
            "{REFERENCE_DIR}/ is stale; run `cargo xtask docs --host {}` and commit the result",
            args.host
        );
        return Ok(ExitCode::from(1));
    }
    let removed = write(&dir, &generated)?;
    if args.json {
        let report = serde_json::json!({
            "directory": REFERENCE_DIR,
            "written": generated.keys().collect::<Vec<_>>(),
            "removed": removed,
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    for path in generated.keys() {
        println!("wrote {REFERENCE_DIR}/{path}");
    }
    for path in removed {
        println!("removed {REFERENCE_DIR}/{path} (no longer generated)");
    }
    Ok(ExitCode::SUCCESS)
}
