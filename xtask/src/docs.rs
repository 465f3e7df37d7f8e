//! `cargo xtask docs`: docs/reference/ generated from the evaluated config.
//!
//! The pages (partitions, subvolumes, persisted paths, the rules catalogue)
//! and the SVG diagram are rendered from the same typed layout `check`
//! judges, so they cannot drift from the config. The output is deterministic
//! (no dates, no revisions) so that `--check` can compare it byte for byte.
//!
//! Exit codes: 0 written (or, with `--check`, fresh); 1 `--check` found
//! differences; 2 could not run (Nix missing, layout does not evaluate, …).

pub mod compare;
pub mod render;
pub mod svg;

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::{bail, Context as _, Result};
use camino::{Utf8Path, Utf8PathBuf};

use crate::check::{load, render_finding, Loaded};
use crate::findings::Severity;
use crate::hosts::{self, Host, Machine, DEFAULT_HOST};
use crate::layout::Layout;
use crate::nix::Nix;
use crate::project::{project_root, write_atomically};
use crate::report::Tables;
use crate::rules::{Context, Firmware};

pub use compare::{compare, Drift};

/// Where the generated pages live, relative to the repository root.
pub const REFERENCE_DIR: &str = "docs/reference";

/// Generated files by path relative to `REFERENCE_DIR`, with their contents.
pub type Generated = BTreeMap<String, String>;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Do not write: regenerate in memory and exit 1 if docs/reference/ differs
    /// (a file changed, missing or extra), with a short diff.
    #[arg(long)]
    pub check: bool,
    /// The host documented in docs/reference/ (a directory under hosts/ holding a disko.nix).
    #[arg(long, default_value = DEFAULT_HOST)]
    pub host: String,
    /// Print what was written (or, with --check, what is stale) as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let root = project_root();
    let generated = generate(&root, &args.host)?;
    let dir = root.join(REFERENCE_DIR);
    if args.check {
        let drift = compare(&dir, &generated)?;
        if args.json {
            let report = serde_json::json!({
                "directory": REFERENCE_DIR,
                "fresh": drift.is_empty(),
                "files": generated.keys().collect::<Vec<_>>(),
                "missing": drift.missing,
                "extra": drift.extra,
                "changed": drift.changed,
            });
            println!("{}", serde_json::to_string_pretty(&report)?);
            return Ok(if drift.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            });
        }
        if drift.is_empty() {
            println!(
                "{REFERENCE_DIR}/ is fresh: {} files match the config of {}",
                generated.len(),
                args.host
            );
            return Ok(ExitCode::SUCCESS);
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

/// What the reference is generated from: one host's evaluated files.
#[derive(Debug, Clone)]
pub struct Subject {
    pub host: String,
    /// The files read, relative to the repository root.
    pub sources: Vec<String>,
    pub layout: Layout,
    pub machine: Machine,
    /// Disk sizes by disk key, from machine.nix; disks without one get no geometry.
    pub disk_sizes: BTreeMap<String, u64>,
}

impl Subject {
    /// Builds the subject from a layout and machine facts (no Nix involved).
    pub fn new(
        host: &str,
        sources: Vec<String>,
        layout: Layout,
        machine: Machine,
    ) -> Result<Subject> {
        let mut disk_sizes = BTreeMap::new();
        for disk in &layout.disks {
            if let Some(bytes) = machine.disk_bytes(&disk.key)? {
                disk_sizes.insert(disk.key.clone(), bytes);
            }
        }
        Ok(Subject {
            host: host.to_owned(),
            sources,
            layout,
            machine,
            disk_sizes,
        })
    }

    /// Mounts, effective options and geometry, derived once.
    pub fn context(&self) -> Context<'_> {
        // The tables do not depend on the firmware; only rules do.
        Context::new(&self.layout, &self.disk_sizes, Firmware::default())
    }

    pub fn tables(&self) -> Tables {
        Tables::new(&self.context())
    }

    /// The flake attribute that builds the host (`nixosConfigurations.<this>`).
    pub fn flake_attribute(&self) -> &str {
        self.machine
            .flake_attribute
            .as_deref()
            .unwrap_or(self.host.as_str())
    }
}

/// Evaluates host `name` of the repository at `root` with nix-instantiate.
/// Fails (exit 2) when the layout does not build: the docs would be fiction.
pub fn load_subject(root: &Utf8Path, name: &str) -> Result<Subject> {
    let host = find_host(root, name)?;
    let nix = Nix::locate()?;
    let Loaded {
        layout,
        findings,
        machine,
        ..
    } = load(&nix, &host, &host.layout_file)?;
    let Some(layout) = layout else {
        let mut shown = String::new();
        for finding in findings.iter().filter(|f| f.severity == Severity::Error) {
            render_finding(&mut shown, finding);
        }
        bail!(
            "the layout of {name} does not build, so there is nothing true to document:\n{shown}run `cargo xtask check --host {name}` and fix it first"
        );
    };
    let relative = |path: &Utf8Path| {
        path.strip_prefix(root)
            .map(Utf8Path::to_string)
            .unwrap_or_else(|_| path.to_string())
    };
    let mut sources = vec![relative(&host.layout_file)];
    sources.extend(host.persistence_file.as_deref().map(relative));
    sources.extend(host.machine_file.as_deref().map(relative));
    Subject::new(name, sources, layout, machine)
        .with_context(|| format!("reading the machine facts of {name}"))
}

fn find_host(root: &Utf8Path, name: &str) -> Result<Host> {
    let all = hosts::discover(root)?;
    if let Some(host) = all.iter().find(|h| h.name == name) {
        return Ok(host.clone());
    }
    let known: Vec<&str> = all.iter().map(|h| h.name.as_str()).collect();
    bail!(
        "no host {name:?} under {root}/hosts (a host is a directory with a {}); known hosts: {}",
        hosts::LAYOUT_FILE,
        if known.is_empty() {
            "none".to_owned()
        } else {
            known.join(", ")
        }
    )
}

/// Everything docs/reference/ should hold for host `name` of the repository at `root`.
pub fn generate(root: &Utf8Path, name: &str) -> Result<Generated> {
    let subject = load_subject(root, name)?;
    Ok(render::pages(&subject))
}

/// Writes `contents` atomically and leaves the file readable by everyone
/// (0644), like a file git checks out; the temporary file starts as 0600.
pub fn write_readable(path: &Utf8Path, contents: &[u8]) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    write_atomically(path, contents)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
        .with_context(|| format!("making {path} readable"))
}

/// Writes the generated files into `dir` and removes files that are no
/// longer generated; returns the removed paths.
pub fn write(dir: &Utf8Path, generated: &Generated) -> Result<Vec<String>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {dir}"))?;
    for (path, contents) in generated {
        write_readable(&dir.join(path), contents.as_bytes())?;
    }
    let mut removed = Vec::new();
    for path in compare::files_below(dir)? {
        if !generated.contains_key(&path) {
            let full: Utf8PathBuf = dir.join(&path);
            std::fs::remove_file(&full).with_context(|| format!("removing {full}"))?;
            removed.push(path);
        }
    }
    Ok(removed)
}

#[cfg(test)]
pub mod testing {
    //! The repo's host as a `Subject`, from the evaluation fixture (no Nix).
    use super::Subject;
    use crate::hosts::Machine;
    use crate::layout::testing::{host_evaluation, host_layout};

    pub fn host_subject() -> Subject {
        let machine: Machine =
            serde_json::from_value(host_evaluation()["machine"].clone()).expect("machine facts");
        Subject::new(
            "hetzner-cloud",
            vec![
                "hosts/servers/hetzner-cloud/disko.nix".to_owned(),
                "hosts/servers/hetzner-cloud/persistence.nix".to_owned(),
                "hosts/servers/hetzner-cloud/machine.nix".to_owned(),
            ],
            host_layout(),
            machine,
        )
        .expect("the host's subject")
    }
}
