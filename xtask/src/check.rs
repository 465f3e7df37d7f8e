//! `cargo xtask check`: is the layout right, before anything touches a disk?
//!
//! Parses every .nix file of the repository, evaluates the host's layout
//! (standalone: nix-instantiate on the plain files; flake mode: the merged
//! NixOS configuration, where the flake's inputs are available), builds the
//! typed layout and runs the rules. Exit codes: 0 clean (warnings allowed),
//! 1 error findings, 2 could not run.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use camino::{Utf8Path, Utf8PathBuf};
use serde::Serialize;
use serde_json::Value;

use crate::findings::{self, Finding, Severity};
use crate::hosts::{self, Host, Machine, DEFAULT_HOST};
use crate::layout::build::{build, Evaluated};
use crate::layout::positions::Positions;
use crate::layout::size::{human, human_decimal, parse_disk_size};
use crate::layout::Layout;
use crate::nix::{self, FlakeEvaluation, Nix};
use crate::project::{display_path, project_root};
use crate::report::{bytes_cell, Tables};
use crate::rules::{self, Context, Firmware};

/// Version of the `--json` document (docs/check-json.md).
pub const SCHEMA: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Flake mode when flake.lock exists and Nix can evaluate it, else standalone.
    Auto,
    /// Only the host's plain files, with nix-instantiate; needs no nixpkgs.
    Standalone,
    /// Also the merged NixOS configuration; fails when it cannot run.
    Flake,
}

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
}

/// How the flake evaluation went.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case", tag = "status")]
pub enum FlakeStatus {
    NotRequested,
    Ran {
        attribute: String,
        /// `--mode flake` only: the whole system's evaluation (the NixOS gate).
        system: Option<crate::flake_eval::SystemEvaluation>,
    },
    NotRun {
        reason: String,
    },
}

/// Everything `check` found about one host.
#[derive(Debug, Clone, Serialize)]
pub struct HostReport {
    pub host: String,
    pub source: String,
    pub flake: FlakeStatus,
    /// Disk sizes used for the geometry, by disk.
    pub disk_sizes: BTreeMap<String, u64>,
    pub tables: Option<Tables>,
    pub findings: Vec<Finding>,
    /// Things the reader should know that are not findings.
    pub notes: Vec<String>,
}

impl HostReport {
    pub fn count(&self, severity: Severity) -> usize {
        self.findings
            .iter()
            .filter(|f| f.severity == severity)
            .count()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub schema: u32,
    pub mode: Mode,
    pub hosts: Vec<HostReport>,
    pub errors: usize,
    pub warnings: usize,
    pub duration_ms: u64,
}

impl CheckReport {
    pub fn exit_code(&self) -> ExitCode {
        if self.errors > 0 {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        }
    }
}

/// `target/xtask/check.json`: the last full check of the repository's hosts.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct CheckResults {
    #[serde(flatten)]
    pub header: crate::results::Header,
    /// `--disk-size`, when it replaced the sizes in machine.nix.
    pub disk_size_override: Option<u64>,
    pub hosts: Vec<HostSummary>,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct HostSummary {
    pub host: String,
    pub errors: usize,
    pub warnings: usize,
    /// `code path` of every finding.
    pub findings: Vec<String>,
}

fn write_results(
    args: &Args,
    report: &CheckReport,
    revision: crate::project::Revision,
) -> Result<()> {
    // A check of another file says nothing about the repository's hosts.
    if args.disko.is_some() {
        return Ok(());
    }
    let names: Vec<&str> = report.hosts.iter().map(|h| h.host.as_str()).collect();
    let results = CheckResults {
        header: crate::results::Header::at_revision(
            "check",
            &names.join(","),
            report.errors == 0,
            revision,
        ),
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
    crate::results::record("check", &results, proof)?;
    Ok(())
}

pub fn run(args: Args) -> Result<ExitCode> {
    // git takes as long as the check itself: ask it meanwhile.
    let revision = std::thread::spawn(crate::project::revision);
    let report = check(&args)?;
    let revision = revision
        .join()
        .map_err(|_| anyhow::anyhow!("reading the git revision panicked"))?;
    write_results(&args, &report, revision.clone())?;
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
    Ok(report.exit_code())
}

/// Runs the whole check; `Err` only when it could not run.
pub fn check(args: &Args) -> Result<CheckReport> {
    let started = Instant::now();
    let nix = Nix::locate()?;
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

    let mut files = hosts::nix_files(&root)?;
    if let Some(path) = &disko_override {
        if !files.contains(path) {
            files.push(path.clone());
        }
    }

    // Parsing every file and evaluating each host are independent: run them at once.
    let (parse_findings, reports) = std::thread::scope(|scope| {
        let parsing = scope.spawn(|| nix.parse_files(&files));
        let checks: Vec<_> = hosts
            .iter()
            .map(|host| {
                let nix = &nix;
                let layout_file = disko_override
                    .clone()
                    .unwrap_or_else(|| host.layout_file.clone());
                scope.spawn(move || check_host(nix, host, &layout_file, disk_size, args.mode))
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
    let parse_findings = parse_findings??;
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
    Ok(CheckReport {
        schema: SCHEMA,
        mode: args.mode,
        hosts: reports,
        errors,
        warnings,
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    })
}

/// The firmware a machine boots with; both when machine.nix does not say.
pub fn firmware(machine: &Machine) -> Firmware {
    if machine.firmware.is_empty() {
        return Firmware::default();
    }
    Firmware {
        bios: machine.firmware.iter().any(|f| f == "bios"),
        uefi: machine.firmware.iter().any(|f| f == "uefi"),
    }
}

/// The evaluated layout, its findings (the host rules' included), and
/// where its attributes are written.
pub struct Loaded {
    pub layout: Option<Layout>,
    pub findings: Vec<Finding>,
    pub machine: Machine,
    pub positions: Positions,
    /// rollback.nix, evaluated: `None` when the host has none, or when the
    /// evaluation failed (then `findings` say why).
    pub rollback: Option<Value>,
}

/// Evaluates and builds a host's layout (standalone mode).
pub fn load(nix: &Nix, host: &Host, layout_file: &Utf8Path) -> Result<Loaded> {
    let mut evaluation = match nix.evaluate_host(host, layout_file)? {
        Ok(value) => value,
        Err(findings) => {
            return Ok(Loaded {
                layout: None,
                findings,
                machine: Machine::default(),
                positions: Positions::default(),
                rollback: None,
            })
        }
    };
    let mut findings = Vec::new();
    let machine = match serde_json::from_value::<Option<Machine>>(evaluation["machine"].clone()) {
        Ok(machine) => machine.unwrap_or_default(),
        Err(error) => {
            findings.push(Finding::new(
                "MODEL001",
                Severity::Error,
                crate::findings::AttrPath::new(["machine"]),
                format!("{}: {error}", host.machine_file.as_deref().map(display_path).unwrap_or_default()),
                "machine.nix holds plain data: strings for flakeAttribute and diskSize, a list of strings for firmware, partitionSizes with strings for biosBoot, esp, swap and btrfs, partitionSizeDeviations with { size; reason; } for those.",
            ));
            Machine::default()
        }
    };
    let mut trees = |key: &str| match evaluation.get_mut(key).map(Value::take) {
        Some(Value::Array(trees)) => Positions::new(trees),
        _ => Positions::default(),
    };
    let machine_positions = trees("machinePositions");
    let rollback_positions = trees("rollbackPositions");
    let rollback = match evaluation.get_mut("rollback").map(Value::take) {
        None | Some(Value::Null) => None,
        Some(value) => Some(value),
    };
    // Taken, not cloned: for huge layouts the position trees are most of the evaluation.
    let positions = Positions::new(match evaluation.get_mut("positions").map(Value::take) {
        Some(Value::Array(trees)) => trees,
        _ => Vec::new(),
    });
    let (layout, built) = build(&Evaluated {
        host: &host.name,
        source: layout_file,
        layout: &evaluation["layout"],
        persistence: &evaluation["persistence"],
    });
    findings.extend(built);
    findings.extend(rules::host::findings(
        layout.as_ref(),
        &rules::host::HostFiles {
            host,
            machine: &machine,
            machine_positions: &machine_positions,
            rollback: rollback.as_ref(),
            rollback_positions: &rollback_positions,
        },
    ));
    Ok(Loaded {
        layout,
        findings,
        machine,
        positions,
        rollback,
    })
}

fn check_host(
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
        let context = Context::new(layout, &disk_sizes, firmware(&machine));
        findings.extend(rules::run(&context));
        tables = Some(Tables::new(&context));
    }

    let flake = match mode {
        Mode::Standalone => FlakeStatus::NotRequested,
        Mode::Auto | Mode::Flake => {
            let attribute = machine
                .flake_attribute
                .clone()
                .unwrap_or_else(|| host.name.clone());
            match nix::evaluate_flake(&attribute, Duration::from_secs(300))? {
                FlakeEvaluation::Evaluated(value) => {
                    let (flake_layout, flake_findings) = build(&Evaluated {
                        host: &host.name,
                        source: layout_file,
                        layout: &value["layout"],
                        persistence: &value["persistence"],
                    });
                    findings.extend(flake_findings);
                    if let Some(flake_layout) = &flake_layout {
                        let context = Context::new(flake_layout, &disk_sizes, firmware(&machine));
                        findings.extend(rules::run(&context));
                    }
                    let system = match mode {
                        Mode::Flake => Some(system_evaluation(host, &attribute, &mut findings)?),
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

/// `--mode flake`: evaluates the whole system (`toplevel.drvPath`), as the
/// NixOS gate of the deploy checklist needs; a failure is finding NIX005.
fn system_evaluation(
    host: &Host,
    attribute: &str,
    findings: &mut Vec<Finding>,
) -> Result<crate::flake_eval::SystemEvaluation> {
    use crate::flake_eval::{self, SystemEvaluation};
    let evaluation = flake_eval::evaluate(&project_root(), attribute)?;
    match &evaluation {
        SystemEvaluation::Evaluated { .. } => {}
        SystemEvaluation::Failed { message } => findings.push(
            Finding::new(
                "NIX005",
                Severity::Error,
                crate::findings::AttrPath::new(["nixosConfigurations", attribute]),
                format!(
                    "the NixOS system of {} does not evaluate, so it cannot be built or installed: {message}",
                    host.name
                ),
                format!(
                    "Fix what Nix names; `{}` shows the same error with --show-trace for the trace.",
                    flake_eval::nix_command(attribute)
                ),
            )
            .at(Some(crate::findings::Location {
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

/// The human-readable report.
pub fn render(report: &CheckReport) -> String {
    let mut out = String::new();
    for host in &report.hosts {
        render_host(&mut out, host);
    }
    let _ = writeln!(
        out,
        "{}: {} error(s), {} warning(s) in {} host(s), {} ms",
        if report.errors > 0 { "FAILED" } else { "ok" },
        report.errors,
        report.warnings,
        report.hosts.len(),
        report.duration_ms
    );
    out
}

fn render_host(out: &mut String, host: &HostReport) {
    let mode = match &host.flake {
        FlakeStatus::NotRequested => "standalone mode".to_owned(),
        FlakeStatus::Ran { attribute, system } => format!(
            "standalone and flake mode (nixosConfigurations.{attribute}){}",
            match system {
                Some(crate::flake_eval::SystemEvaluation::Evaluated { drv_path }) =>
                    format!("; the system evaluates: {drv_path}"),
                Some(crate::flake_eval::SystemEvaluation::Failed { .. }) =>
                    "; the system does NOT evaluate (NIX005)".to_owned(),
                _ => String::new(),
            }
        ),
        FlakeStatus::NotRun { reason } => format!("standalone mode; flake mode not run: {reason}"),
    };
    let _ = writeln!(out, "== {} ({}), {mode}", host.host, host.source);
    for note in &host.notes {
        let _ = writeln!(out, "note: {note}");
    }
    if let Some(tables) = &host.tables {
        render_tables(out, tables);
    }
    if host.findings.is_empty() {
        let _ = writeln!(out, "\nfindings: none\n");
    } else {
        let _ = writeln!(out, "\nfindings:");
        for finding in &host.findings {
            render_finding(out, finding);
        }
        let _ = writeln!(out);
    }
}

pub fn render_finding(out: &mut String, finding: &Finding) {
    let place = match &finding.location {
        Some(location) if location.line > 0 => format!(
            " ({}:{}:{})",
            display_path(&location.file),
            location.line,
            location.column
        ),
        Some(location) => format!(" ({})", display_path(&location.file)),
        None => String::new(),
    };
    let path = if finding.path.segments().is_empty() {
        String::new()
    } else {
        format!(" {}", finding.path)
    };
    let _ = writeln!(out, "{}[{}]{path}{place}", finding.severity, finding.code);
    let _ = writeln!(out, "    {}", finding.message);
    if !finding.hint.is_empty() {
        let _ = writeln!(out, "    fix: {}", finding.hint);
    }
}

/// The widest a table cell is printed; the JSON report keeps the whole value.
const MAX_CELL_CHARS: usize = 120;

/// `cell`, cut to `MAX_CELL_CHARS` characters with the rest counted.
fn fit_cell(cell: &str) -> std::borrow::Cow<'_, str> {
    if cell.chars().any(char::is_control) {
        // A newline in a mountpoint must not break the table.
        let escaped: String = cell.chars().flat_map(char::escape_debug).collect();
        return std::borrow::Cow::Owned(fit_cell(&escaped).into_owned());
    }
    let count = cell.chars().count();
    if count <= MAX_CELL_CHARS {
        return std::borrow::Cow::Borrowed(cell);
    }
    let kept: String = cell.chars().take(MAX_CELL_CHARS - 20).collect();
    std::borrow::Cow::Owned(format!(
        "{kept}… (+{} chars)",
        count - (MAX_CELL_CHARS - 20)
    ))
}

/// Left-aligned columns; a long cell is cut, so that one long value cannot
/// widen every row of a table with thousands of rows.
pub fn table(rows: &[Vec<String>]) -> String {
    let rows: Vec<Vec<std::borrow::Cow<'_, str>>> = rows
        .iter()
        .map(|row| row.iter().map(|cell| fit_cell(cell)).collect())
        .collect();
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::from("  ");
        for (c, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if c + 1 < row.len() {
                line.push_str(&" ".repeat(widths[c] - cell.chars().count() + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn render_tables(out: &mut String, tables: &Tables) {
    for disk in &tables.disks {
        let size = disk.size_bytes.map_or_else(
            || "size unknown".to_owned(),
            |b| format!("{} = {}", human_decimal(b), human(b)),
        );
        let _ = writeln!(
            out,
            "\ndisk {} {} ({size}), GPT:",
            fit_cell(&disk.key),
            fit_cell(&disk.device)
        );
        let mut rows = vec![[
            "#",
            "partition",
            "type",
            "start sector",
            "end sector",
            "size",
            "content",
        ]
        .map(String::from)
        .to_vec()];
        for p in &disk.partitions {
            rows.push(vec![
                p.number.to_string(),
                p.key.clone(),
                format!("{} {}", p.type_code, p.type_name),
                p.start_sector.map_or("?".into(), |s| s.to_string()),
                p.end_sector.map_or("?".into(), |s| s.to_string()),
                bytes_cell(p.size_bytes),
                p.content.clone(),
            ]);
        }
        out.push_str(&table(&rows));
        if let Some(free) = disk.unallocated_bytes {
            let _ = writeln!(
                out,
                "  unallocated (GPT, alignment): {}",
                bytes_cell(Some(free))
            );
        }
    }
    for fs in &tables.filesystems {
        let _ = writeln!(
            out,
            "\nbtrfs on {} (filesystem-wide options decided by the mount at {}):",
            fit_cell(&fs.device),
            fit_cell(
                fs.options_decided_by
                    .as_deref()
                    .unwrap_or("(nothing mounted)")
            )
        );
        let mut rows = vec![[
            "subvolume",
            "mountpoint",
            "options in effect",
            "boot",
            "at boot",
        ]
        .map(String::from)
        .to_vec()];
        for s in &fs.subvolumes {
            let mut options = s.options_in_effect.join(",");
            if s.nocow {
                options.push_str(" +C (No_COW)");
            }
            rows.push(vec![
                s.name.clone(),
                s.mountpoint
                    .clone()
                    .unwrap_or_else(|| "(not mounted)".into()),
                if options.is_empty() {
                    "-".into()
                } else {
                    options
                },
                if s.needed_for_boot {
                    "initrd".into()
                } else {
                    "".into()
                },
                s.lifecycle.describe().to_owned(),
            ]);
        }
        out.push_str(&table(&rows));
    }
    if !tables.other_mounts.is_empty() || !tables.swaps.is_empty() {
        let _ = writeln!(out, "\nother mounts and swap:");
        let mut rows = Vec::new();
        for m in &tables.other_mounts {
            rows.push(vec![
                m.mountpoint.clone(),
                m.fs_type.clone(),
                m.options_in_effect.join(","),
                m.device.clone(),
            ]);
        }
        for s in &tables.swaps {
            rows.push(vec![
                "(swap)".into(),
                bytes_cell(s.size_bytes),
                if s.random_encryption {
                    "random encryption".into()
                } else {
                    "UNENCRYPTED".into()
                },
                s.device.clone(),
            ]);
        }
        out.push_str(&table(&rows));
    }
}

/// The JSON value of a report (for tests and other subcommands).
pub fn to_json(report: &CheckReport) -> Result<Value> {
    Ok(serde_json::to_value(report)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align() {
        let rows = vec![
            vec!["a".to_owned(), "bb".to_owned(), "c".to_owned()],
            vec!["aaa".to_owned(), "b".to_owned(), "".to_owned()],
        ];
        assert_eq!(table(&rows), "  a    bb  c\n  aaa  b\n");
    }

    #[test]
    fn long_cells_are_cut() {
        let long = "x".repeat(1 << 20);
        let rows = vec![
            vec![long, "end".to_owned()],
            vec!["a".to_owned(), "b".to_owned()],
        ];
        let printed = table(&rows);
        assert!(printed.len() < 400, "{} bytes", printed.len());
        assert!(
            printed.contains(&format!("(+{} chars)", (1 << 20) - 100)),
            "{printed}"
        );
        assert!(printed.contains("end"), "{printed}");
        let rows = vec![vec!["/srv/a\nb".to_owned(), "x".to_owned()]];
        assert_eq!(table(&rows), "  /srv/a\\nb  x\n");
    }
}
