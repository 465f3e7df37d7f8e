//! `cargo xtask verify --host NAME ADMIN@ADDRESS[:PORT]`: proves, over real
//! SSH and read-only, that the installed server matches the proven layout.
//!
//! The checks (`checks`) are the checklist's §3 procedures, the commands
//! vm-test runs in the lab, limited to those that only read (`allowlist`),
//! plus the partition table and the old roots against the retention rules
//! from the same model. The connection (`ssh`) is the workstation's
//! OpenSSH client as the admin. Every run is recorded in
//! target/xtask/verify-<host>.json (`record`), which deploy-checklist reads.
//!
//! `--all` verifies every host whose machine.nix gives `sshAddress`, each
//! on its own thread, and prints one summary table.
//!
//! Exit codes: 0 every check that ran passed; 1 a check failed; 2 could not
//! run (unknown host, no ssh, the server unreachable, its host key not the
//! known one, the admin cannot log in or has no sudo). With `--all`, the
//! worst over the hosts.

pub mod allowlist;
pub mod checks;
pub mod record;
pub mod ssh;

use std::process::ExitCode;

use anyhow::{Context as _, Result};
use camino::Utf8PathBuf;

use checks::{Check, Judge};
use record::{CheckResult, Record, Status};
use ssh::{Refused, Session, Target};
use toolbox::context::Context;
use toolbox::project::{display_path, project_root, revision};
use toolbox::setup;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The host (hosts/…/NAME) whose layout the server must have.
    #[arg(long, default_value = crate::hosts::DEFAULT_HOST, conflicts_with = "all")]
    pub host: String,
    /// Every host whose machine.nix gives an `sshAddress`, in parallel, as
    /// its adminUser; one summary table and one exit code (the worst).
    #[arg(long)]
    pub all: bool,
    /// The server, as the admin: ADMIN@ADDRESS[:PORT] (IPv6 in brackets).
    #[arg(
        value_name = "ADMIN@ADDRESS[:PORT]",
        required_unless_present = "all",
        conflicts_with = "all"
    )]
    pub target: Option<Target>,
    /// An ssh_config file for ssh's -F (keys, known_hosts); default: yours.
    #[arg(long, env = "XTASK_VERIFY_SSH_CONFIG", value_name = "FILE")]
    pub ssh_config: Option<Utf8PathBuf>,
    /// Print the result as JSON on stdout: the record (with --all, a list of them).
    #[arg(long)]
    pub json: bool,
    /// Where the record goes (default: target/xtask).
    #[arg(long, value_name = "DIR")]
    pub results_dir: Option<Utf8PathBuf>,
    /// For the lab VM, whose disk is /dev/vda where the server's is
    /// /dev/sda: FROM=TO renames the disk in every command and expectation
    /// (recorded in the record).
    #[arg(long, hide = true, value_name = "FROM=TO", value_parser = parse_device_map)]
    pub device_map: Option<(String, String)>,
}

fn parse_device_map(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((from, to)) if from.starts_with("/dev/") && to.starts_with("/dev/") => {
            Ok((from.to_owned(), to.to_owned()))
        }
        _ => Err(format!(
            "{text:?}: expected FROM=TO, e.g. /dev/sda=/dev/vda"
        )),
    }
}

/// The exit code a record stands for.
fn code_of(record: &Record) -> u8 {
    match record.status {
        Status::Pass => 0,
        Status::Fail => 1,
        Status::NotRun | Status::Error => 2,
    }
}

pub fn run(context: &Context, args: Args) -> Result<ExitCode> {
    let root = project_root();
    let found = setup::ensure(context, &[setup::SSH])?;
    let ssh = found.path(setup::SSH)?.clone();
    if !args.all {
        let target = args
            .target
            .clone()
            .context("give the server as ADMIN@ADDRESS[:PORT], or --all")?;
        let record = verify_host(context, &root, &ssh, &args, &args.host, Some(target))?
            .context("no target")?;
        let path = record::path(args.results_dir.as_deref(), &args.host);
        if args.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&record).context("serialising the record")?
            );
        } else {
            print!("{}", record::text(&record));
            eprintln!("recorded in {}", display_path(&path));
        }
        if let Some(error) = &record.error {
            eprintln!("error: {error}");
        }
        return Ok(ExitCode::from(code_of(&record)));
    }
    let names: Vec<String> = crate::hosts::discover(&root)?
        .into_iter()
        .map(|h| h.name)
        .collect();
    // Every host at once: each waits on its server, not on the others.
    let results: Vec<(String, Result<Option<Record>>)> = std::thread::scope(|scope| {
        let running: Vec<_> = names
            .iter()
            .map(|name| {
                let (root, ssh, args) = (&root, &ssh, &args);
                (
                    name.clone(),
                    scope.spawn(move || verify_host(context, root, ssh, args, name, None)),
                )
            })
            .collect();
        running
            .into_iter()
            .map(|(name, handle)| {
                let result = handle
                    .join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("verifying {name} panicked (a bug)")));
                (name, result)
            })
            .collect()
    });
    let mut records = Vec::new();
    let mut rows = Vec::new();
    let mut worst = 0u8;
    for (name, result) in results {
        match result {
            Ok(Some(record)) => {
                worst = worst.max(code_of(&record));
                rows.push(record::summary_row(&record));
                records.push(record);
            }
            Ok(None) => rows.push([
                name,
                "-".to_owned(),
                "SKIPPED".to_owned(),
                "no sshAddress in its machine.nix".to_owned(),
            ]),
            Err(error) => {
                worst = 2;
                rows.push([
                    name,
                    "-".to_owned(),
                    "ERROR".to_owned(),
                    format!("{error:#}"),
                ]);
            }
        }
    }
    if records.is_empty() && worst == 0 {
        eprintln!("error: no host's machine.nix gives an sshAddress: set `sshAddress = \"ADDRESS\";` (hosts/<host>/machine.nix) or give one host: --host NAME ADMIN@ADDRESS");
        return Ok(ExitCode::from(2));
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&records).context("serialising the records")?
        );
    } else {
        print!("{}", record::table(&rows));
        for record in &records {
            for check in record.checks.iter().filter(|c| c.status == Status::Fail) {
                println!(
                    "{}: FAIL {}: {}",
                    record.host,
                    check.id,
                    check.problem.as_deref().unwrap_or("")
                );
            }
        }
    }
    Ok(ExitCode::from(worst))
}

/// Verifies one host: `target`, or with `None` its machine.nix's
/// `sshAddress` as its adminUser (`Ok(None)` when it has none). Writes
/// the record.
fn verify_host(
    context: &Context,
    root: &camino::Utf8Path,
    ssh: &Utf8PathBuf,
    args: &Args,
    name: &str,
    target: Option<Target>,
) -> Result<Option<Record>> {
    let loaded = crate::deploy_checklist::load(context, root, name)?;
    let target = match target {
        Some(target) => target,
        None => {
            let Some(address) = loaded.subject.machine.ssh_address.as_deref() else {
                return Ok(None);
            };
            format!("{}@{address}", loaded.facts.admin_user)
                .parse::<Target>()
                .map_err(|e| anyhow::anyhow!("{name}'s machine.nix sshAddress: {e}"))?
        }
    };
    let rules = rollback_rules(context, root, name)?;
    let mut plan = checks::plan(&loaded.subject, &loaded.facts, rules);
    if let Some((from, to)) = &args.device_map {
        checks::rename_device(&mut plan, from, to);
    }
    let mut session = Session::new(ssh.clone(), target.clone(), args.ssh_config.clone())?;
    let mut record = Record::new(name, &target, revision());
    record.device_map = args
        .device_map
        .as_ref()
        .map(|(from, to)| format!("{from}={to}"));
    let outcome = verify(&mut session, &plan, &mut record);
    // Ends the master connection (dropping it kills and reaps it).
    drop(session);
    match outcome? {
        Ok(()) => record.settle(),
        Err(refused) => {
            record.status = Status::Error;
            record.error = Some(refused.to_string());
        }
    }
    record::write(&record::path(args.results_dir.as_deref(), name), &record)?;
    Ok(Some(record))
}

/// Runs the probe and every check, filling `record`; `Err(Refused)` when
/// the connection failed.
fn verify(
    session: &mut Session,
    plan: &[Check],
    record: &mut Record,
) -> Result<std::result::Result<(), Refused>> {
    match session.probe()? {
        Ok(key) => record.host_key = Some(key),
        Err(refused) => return Ok(Err(refused)),
    }
    for check in plan {
        let mut ran = Vec::new();
        let mut result = CheckResult::new(check);
        let mut missing = Vec::new();
        for probe in &check.commands {
            let output = match session.run(&probe.line)? {
                Ok(output) => output,
                Err(refused) => return Ok(Err(refused)),
            };
            // A program the server does not have: this command cannot
            // tell; the others still run.
            if let Some(program) = missing_program(&output) {
                missing.push(program);
                ran.push(output);
                continue;
            }
            let status = output.exit.unwrap_or(-1);
            let mut expectations = probe.expect.clone();
            if !expectations
                .iter()
                .any(|e| matches!(e, crate::deploy_checklist::procedures::Expect::Exit { .. }))
            {
                expectations.push(crate::deploy_checklist::procedures::Expect::Exit { status: 0 });
            }
            let problem = expectations
                .iter()
                .find_map(|e| e.check(status, &output.stdout).err());
            ran.push(output);
            if let Some(problem) = problem {
                let stderr = ran
                    .last()
                    .map(|r| r.stderr.trim().to_owned())
                    .unwrap_or_default();
                result.status = Status::Fail;
                result.problem = Some(match stderr.lines().next() {
                    Some(first) if status != 0 => format!("`{}`: {problem} ({first})", probe.line),
                    _ => format!("`{}`: {problem}", probe.line),
                });
                break;
            }
        }
        if result.status == Status::Pass && !missing.is_empty() {
            // Never PASS for what did not run.
            result.status = Status::NotRun;
            let others = ran.len() > missing.len();
            missing.dedup();
            result.problem = Some(format!(
                "not installed on the server: {}{}",
                missing.join(", "),
                if others {
                    " (the other commands passed)"
                } else {
                    ""
                }
            ));
        }
        if result.status == Status::Pass {
            if let Judge::Retention(rules) = &check.judge {
                let text = |i: usize| ran.get(i).map(|r| r.stdout.clone()).unwrap_or_default();
                match checks::retention(*rules, &text(0), &text(1)) {
                    Ok(summary) => result.value = summary,
                    Err(problem) => {
                        result.status = Status::Fail;
                        result.problem = Some(problem);
                    }
                }
            }
        }
        result.commands = ran.iter().map(record::RanCommand::from).collect();
        if result.value.is_empty() {
            result.value = record::seen(&result.commands);
        }
        record.checks.push(result);
    }
    Ok(Ok(()))
}

/// The program a command could not find on the server: sudo's or the
/// shell's "command not found" for the program the line runs.
fn missing_program(ran: &ssh::Ran) -> Option<String> {
    if ran.exit == Some(0) {
        return None;
    }
    let programs: Vec<&str> = ran
        .line
        .split('|')
        .filter_map(|segment| {
            let mut words = segment.split_whitespace();
            let first = words.next()?;
            if first == "sudo" {
                words.find(|w| !w.starts_with('-'))
            } else {
                Some(first)
            }
        })
        .collect();
    ran.stderr.lines().find_map(|line| {
        let line = line.trim();
        programs
            .iter()
            .find(|p| {
                line.ends_with(&format!("{p}: command not found"))
                    || line.starts_with(&format!("sudo: {p}: No such file or directory"))
            })
            .map(|p| (*p).to_owned())
    })
}

/// The host's `boot.btrfsRollback` retention, as vm-test reads it.
fn rollback_rules(
    context: &Context,
    root: &camino::Utf8Path,
    name: &str,
) -> Result<crate::vm::retention::Rules> {
    let host = crate::hosts::find_in(root, name)?;
    let nix = crate::nix_eval::Nix::locate(context)?;
    let loaded = crate::rules::load(&nix, &host, &host.layout_file)?;
    let settings = crate::vm::lab_backend::rollback_settings(&host, &loaded)?;
    Ok(crate::vm::retention::Rules {
        retention_days: settings.retention_days,
        keep_at_least: settings.keep_at_least,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ran(line: &str, exit: i32, stderr: &str) -> ssh::Ran {
        ssh::Ran {
            line: line.to_owned(),
            exit: Some(exit),
            stdout: String::new(),
            stderr: stderr.to_owned(),
        }
    }

    #[test]
    fn a_missing_program_is_told_from_a_failing_one() {
        let missing = |line, exit, stderr| missing_program(&ran(line, exit, stderr));
        assert_eq!(
            missing(
                "sudo compsize -x /nix",
                1,
                "sudo: compsize: command not found\n"
            ),
            Some("compsize".to_owned())
        );
        assert_eq!(
            missing(
                "sudo journalctl -b -o cat | grep x",
                1,
                "sudo: journalctl: No such file or directory (os error 2)\n"
            ),
            Some("journalctl".to_owned())
        );
        assert_eq!(
            missing(
                "sudo lsattr -d /x",
                1,
                "lsattr: No such file or directory while trying to stat /x\n"
            ),
            None
        );
        assert_eq!(
            missing(
                "sudo cat /run/x/status",
                1,
                "cat: /run/x/status: No such file or directory\n"
            ),
            None
        );
        assert_eq!(
            missing(
                "sudo compsize -x /nix",
                0,
                "sudo: compsize: command not found\n"
            ),
            None
        );
    }
}
