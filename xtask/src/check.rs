//! `cargo xtask check`: is the layout right, before anything touches a disk?
//!
//! Parses every .nix file of the repository, evaluates the host's layout
//! (standalone: nix-instantiate on the plain files; flake mode: the merged
//! NixOS configuration, where the flake's inputs are available), builds the
//! typed layout and runs the rules. Exit codes: 0 clean (warnings allowed),
//! 1 error findings, 2 could not run.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use camino::{Utf8Path, Utf8PathBuf};

use crate::hosts::Model;
use crate::hosts::{self, firmware, Host, DEFAULT_HOST};
use crate::nix_eval::{self, FlakeEvaluation, Nix};
use crate::report::{render, CheckReport, FlakeStatus, HostReport, Mode, Tables, SCHEMA};
use crate::results::{CheckResults, HostSummary};
use crate::rules;
use crate::rules::{load, Loaded};
use layout::build::{build, Evaluated};
use layout::findings::{self, Finding, Severity};
use layout::size::parse_disk_size;
use toolbox::context::Context;
use toolbox::project::{display_path, project_root};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The host to check: a directory under hosts/ holding a disko.nix.
    #[arg(long, default_value = DEFAULT_HOST, conflicts_with = "all")]
    pub host: String,
    /// Check every host under hosts/, in parallel.
    #[arg(long)]
    pub all: bool,
    /// Check this layout file instead of the host's disko.nix (the host still gives machine.nix and persistence.nix).
    #[arg(long, conflicts_with = "all")]
    pub disko: Option<Utf8PathBuf>,
    /// Size of every disk: as sold (480GB, decimal), or binary (447GiB, 447G). Default: diskSize in the host's machine.nix.
    #[arg(long)]
    pub disk_size: Option<String>,
    /// Print one JSON document (schema in docs/check-json.md) instead of the report.
    #[arg(long)]
    pub json: bool,
    /// Which evaluation to run.
    #[arg(long, value_enum, default_value_t = Mode::Auto)]
    pub mode: Mode,
    /// Also judge the layout with the real tools, as root: disko's own create script against sparse
    /// images with the real sgdisk and mkfs, and every mount on a loop device, read back from
    /// /proc/self/mountinfo. Exit 1 when reality and check disagree, 2 when it cannot run.
    #[arg(long)]
    pub deep: bool,
    /// --deep: a local checkout of nix-community/disko (the flake pins 878ec37).
    #[arg(long, env = crate::deep::DISKO_SRC_ENV)]
    pub disko_src: Option<Utf8PathBuf>,
    /// --deep: a local checkout of nix-community/nixpkgs.lib, whose lib evaluates disko's module.
    #[arg(long, env = crate::deep::NIXPKGS_LIB_ENV)]
    pub nixpkgs_lib: Option<Utf8PathBuf>,
}

fn write_results(
    args: &Args,
    report: &CheckReport,
    revision: toolbox::project::Revision,
    inputs: Option<crate::results::Inputs>,
) -> Result<()> {
    // A check of another file says nothing about the repository's hosts.
    if args.disko.is_some() {
        return Ok(());
    }
    let names: Vec<&str> = report.hosts.iter().map(|h| h.host.as_str()).collect();
    let results = CheckResults {
        header: match inputs {
            Some(inputs) => crate::results::Header::with_inputs(
                crate::results::Kind::Check,
                &names.join(","),
                report.errors == 0,
                revision,
                inputs,
            ),
            None => crate::results::Header::at_revision(
                crate::results::Kind::Check,
                &names.join(","),
                report.errors == 0,
                revision,
            ),
        },
        disk_size_override: args
            .disk_size
            .as_deref()
            .and_then(|s| parse_disk_size(s).ok()),
        hosts: report
            .hosts
            .iter()
            .map(|h| HostSummary {
                host: h.host.clone(),
                errors: h.count(Severity::Error),
                warnings: h.count(Severity::Warning),
                findings: h
                    .findings
                    .iter()
                    .map(|f| format!("{} {}", f.code, f.path))
                    .collect(),
            })
            .collect(),
    };
    // The proof the deploy gate reads: a clean check of the sizes in machine.nix.
    let proof = report.errors == 0 && args.disk_size.is_none();
    crate::results::record(crate::results::Kind::Check, &results, proof)?;
    Ok(())
}

pub fn run(context: &Context, args: Args) -> Result<ExitCode> {
    // What --deep needs is known before anything runs (exit 2 says what to give).
    let sources = if args.deep {
        Some(crate::deep::prepare(
            context,
            args.disko_src.as_deref(),
            args.nixpkgs_lib.as_deref(),
        )?)
    } else {
        None
    };
    // git takes as long as the check itself: ask it meanwhile.
    let revision = std::thread::spawn(toolbox::project::revision);
    let (mut report, inputs) = check(context, &args)?;
    if let Some(sources) = &sources {
        report.deep = Some(deep(context, &args, sources, &report)?);
    }
    let revision = revision
        .join()
        .map_err(|_| anyhow::anyhow!("reading the git revision panicked"))?;
    write_results(&args, &report, revision.clone(), inputs)?;
    if args.disko.is_none() {
        for host in &report.hosts {
            if let FlakeStatus::Ran {
                attribute,
                system: Some(system),
            } = &host.flake
            {
                crate::flake_eval::record(
                    &project_root(),
                    &host.host,
                    attribute,
                    system,
                    revision.clone(),
                )?;
            }
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report));
    }
    if let Some(deep) = &report.deep {
        if !args.json {
            print!("{}", crate::deep::render(deep));
        }
    }
    Ok(report.exit_code())
}

/// `--deep`: each checked host's layout judged by the real tools.
fn deep(
    context: &Context,
    args: &Args,
    sources: &crate::deep::Sources,
    report: &CheckReport,
) -> Result<Vec<crate::deep::DeepReport>> {
    let nix = Nix::locate(context)?;
    let mut deep = Vec::new();
    for host_report in &report.hosts {
        let host = hosts::find(&host_report.host)?;
        let layout_file = match &args.disko {
            Some(path) => Utf8PathBuf::try_from(std::env::current_dir()?)
                .context("the current directory is not UTF-8")?
                .join(path),
            None => host.layout_file.clone(),
        };
        // The disks as check sized them; disko's images get the same size.
        let disk_bytes = host_report
            .disk_sizes
            .values()
            .copied()
            .max()
            .unwrap_or(layout::generator::DISK_BYTES);
        deep.push(crate::deep::judge(
            &nix,
            sources,
            &host,
            &layout_file,
            disk_bytes,
            &host_report.findings,
        )?);
    }
    Ok(deep)
}

/// Runs the whole check; `Err` only when it could not run.
/// The report, and the record's inputs: every .nix file of the repository
/// hashed once, for the record and the parse cache (`None` when one could not
/// be read; the record then hashes them itself, naming the error).
pub fn check(
    context: &Context,
    args: &Args,
) -> Result<(CheckReport, Option<crate::results::Inputs>)> {
    let started = Instant::now();
    let nix = Nix::locate(context)?;
    let root = project_root();
    let hosts = if args.all {
        let hosts = hosts::discover(&root)?;
        anyhow::ensure!(
            !hosts.is_empty(),
            "no hosts under {}/hosts (a host is a directory with a disko.nix)",
            root
        );
        hosts
    } else {
        vec![hosts::find(&args.host)?]
    };
    let disko_override = match &args.disko {
        Some(path) => {
            let absolute = if path.is_absolute() {
                path.clone()
            } else {
                Utf8PathBuf::try_from(std::env::current_dir()?)
                    .context("the current directory is not UTF-8")?
                    .join(path)
            };
            anyhow::ensure!(
                absolute.exists(),
                "--disko {path}: no such file; give the path of a layout .nix file"
            );
            anyhow::ensure!(
                absolute.is_file(),
                "--disko {path}: not a regular file (a directory, device or pipe); give the path of a layout .nix file"
            );
            Some(absolute)
        }
        None => None,
    };
    let disk_size = args
        .disk_size
        .as_deref()
        .map(|given| parse_disk_size(given).with_context(|| format!("--disk-size {given:?}")))
        .transpose()?;

    // Parsing every file and evaluating each host are independent: run them
    // at once (the walk for the files too: the evaluation does not wait for it).
    let (parse_findings, reports) = std::thread::scope(|scope| {
        let parsing = scope.spawn(|| {
            let mut files = hosts::nix_files(&root)?;
            if let Some(path) = &disko_override {
                if !files.contains(path) {
                    files.push(path.clone());
                }
            }
            let digests = crate::results::digests(&files);
            let inputs = crate::results::inputs_of(&root, &files, &digests);
            Ok::<_, anyhow::Error>((nix.parse_files(&files, &digests)?, inputs))
        });
        let checks: Vec<_> = hosts
            .iter()
            .map(|host| {
                let nix = &nix;
                let layout_file = disko_override
                    .clone()
                    .unwrap_or_else(|| host.layout_file.clone());
                scope.spawn(move || {
                    check_host(context, nix, host, &layout_file, disk_size, args.mode)
                })
            })
            .collect();
        let parse_findings = parsing
            .join()
            .map_err(|_| anyhow::anyhow!("the parse thread panicked"));
        let reports: Vec<Result<HostReport>> = checks
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| anyhow::anyhow!("a host check panicked"))
                    .and_then(|r| r)
            })
            .collect();
        (parse_findings, reports)
    });
    let (parse_findings, inputs) = parse_findings??;
    let mut reports = reports.into_iter().collect::<Result<Vec<_>>>()?;

    // Syntax errors belong to every host's report: any file may be imported.
    for report in &mut reports {
        let broken: Vec<&Utf8Path> = parse_findings
            .iter()
            .filter_map(|f| f.location.as_ref().map(|l| l.file.as_path()))
            .collect();
        // An evaluation error caused by a syntax error says nothing new.
        report.findings.retain(|f| {
            !(f.code == "NIX002"
                && f.location
                    .as_ref()
                    .is_some_and(|l| broken.contains(&l.file.as_path())))
        });
        report.findings.extend(parse_findings.iter().cloned());
        findings::sort(&mut report.findings);
    }
    let errors = reports.iter().map(|r| r.count(Severity::Error)).sum();
    let warnings = reports.iter().map(|r| r.count(Severity::Warning)).sum();
    let report = CheckReport {
        schema: SCHEMA,
        mode: args.mode,
        hosts: reports,
        errors,
        warnings,
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        deep: None,
    };
    Ok((report, inputs))
}

fn check_host(
    context: &Context,
    nix: &Nix,
    host: &Host,
    layout_file: &Utf8Path,
    disk_size: Option<u64>,
    mode: Mode,
) -> Result<HostReport> {
    let Loaded {
        layout,
        mut findings,
        machine,
        positions,
        ..
    } = load(nix, host, layout_file)?;
    let mut notes = Vec::new();
    let mut disk_sizes = BTreeMap::new();
    let mut tables = None;
    if let Some(layout) = &layout {
        for disk in &layout.disks {
            let bytes = match disk_size {
                Some(bytes) => Some(bytes),
                None => machine.disk_bytes(&disk.key)?,
            };
            match bytes {
                Some(bytes) => {
                    disk_sizes.insert(disk.key.clone(), bytes);
                }
                None => notes.push(format!(
                    "disk {:?}: no size known, so partition geometry is not checked (pass --disk-size or set diskSize in machine.nix)",
                    disk.key
                )),
            }
        }
        let model = Model::new(layout, &disk_sizes, firmware(&machine));
        findings.extend(rules::run(&model));
        tables = Some(Tables::new(&model));
    }

    let flake = match mode {
        Mode::Standalone => FlakeStatus::NotRequested,
        Mode::Auto | Mode::Flake => {
            let attribute = machine
                .flake_attribute
                .clone()
                .unwrap_or_else(|| host.name.clone());
            match nix_eval::evaluate_flake(context, &attribute, Duration::from_secs(300))? {
                FlakeEvaluation::Evaluated(value) => {
                    let (flake_layout, flake_findings) = build(&Evaluated {
                        host: &host.name,
                        source: layout_file,
                        layout: &value["layout"],
                        persistence: &value["persistence"],
                    });
                    findings.extend(flake_findings);
                    if let Some(flake_layout) = &flake_layout {
                        let model = Model::new(flake_layout, &disk_sizes, firmware(&machine));
                        findings.extend(rules::run(&model));
                    }
                    let system = match mode {
                        Mode::Flake => {
                            Some(system_evaluation(context, host, &attribute, &mut findings)?)
                        }
                        _ => None,
                    };
                    FlakeStatus::Ran { attribute, system }
                }
                FlakeEvaluation::NotRun(reason) if mode == Mode::Flake => {
                    anyhow::bail!("flake mode for {attribute} could not run: {reason}");
                }
                FlakeEvaluation::NotRun(reason) => FlakeStatus::NotRun { reason },
            }
        }
    };

    // The same finding from both modes is one finding.
    findings.sort_by(|a, b| (a.code, &a.path, &a.message).cmp(&(b.code, &b.path, &b.message)));
    findings.dedup_by(|a, b| a.code == b.code && a.path == b.path && a.message == b.message);
    for finding in &mut findings {
        if finding.location.is_none() {
            finding.location = positions.locate(&finding.path);
        }
    }
    findings::sort(&mut findings);
    Ok(HostReport {
        host: host.name.clone(),
        source: display_path(layout_file),
        flake,
        disk_sizes,
        tables,
        findings,
        notes,
    })
}

/// What `check` finds in one evaluated layout (the standalone evaluation's
/// `layout` and `persistence`) with every disk `disk_bytes` long: the typed
/// layout's findings, then the rules. `check_host` runs the same two steps;
/// tests/generated_corpus.rs runs this on hundreds of layouts without a
/// Nix process each (HOST rules, which read machine.nix, are not run).
pub fn judge_evaluated(
    evaluated: &Evaluated,
    disk_bytes: u64,
    firmware: crate::hosts::Firmware,
) -> Vec<Finding> {
    let (layout, mut findings) = build(evaluated);
    if let Some(layout) = &layout {
        let disk_sizes: BTreeMap<String, u64> = layout
            .disks
            .iter()
            .map(|disk| (disk.key.clone(), disk_bytes))
            .collect();
        findings.extend(rules::run(&Model::new(layout, &disk_sizes, firmware)));
    }
    findings
}

/// `--mode flake`: evaluates the whole system (`toplevel.drvPath`), as the
/// NixOS gate of the deploy checklist needs; a failure is finding NIX005.
fn system_evaluation(
    context: &Context,
    host: &Host,
    attribute: &str,
    findings: &mut Vec<Finding>,
) -> Result<crate::flake_eval::SystemEvaluation> {
    use crate::flake_eval::{self, SystemEvaluation};
    let evaluation = flake_eval::evaluate(context, &project_root(), attribute)?;
    match &evaluation {
        SystemEvaluation::Evaluated { .. } => {}
        SystemEvaluation::Failed { message } => findings.push(
            Finding::new(
                "NIX005",
                Severity::Error,
                layout::findings::AttrPath::new(["nixosConfigurations", attribute]),
                format!(
                    "the NixOS system of {} does not evaluate, so it cannot be built or installed: {message}",
                    host.name
                ),
                format!(
                    "Fix what Nix names; `{}` shows the same error with --show-trace for the trace.",
                    flake_eval::nix_command(attribute)
                ),
            )
            .at(Some(layout::findings::Location {
                file: project_root().join("flake.nix"),
                line: 0,
                column: 0,
            })),
        ),
        SystemEvaluation::NotRun { reason } => anyhow::bail!(
            "flake mode for {attribute} could not evaluate the NixOS system: {reason}"
        ),
    }
    Ok(evaluation)
}
