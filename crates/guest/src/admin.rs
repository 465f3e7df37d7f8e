//! Checklist procedures in the VM, run as the admin would run them: each
//! command line by bash (the admin's login shell on NixOS), in a chroot of
//! the booted system (/sysroot with /proc, /sys, /dev and /run, as stage 2
//! leaves them), with GNU coreutils, findutils, grep, btrfs-progs and the
//! rest of the image's programs bind-mounted read-only at their own paths.
//! The admin's PATH holds exactly the commands of the place the line runs
//! in (`crate::deploy_checklist::places`: the server's as its NixOS configuration
//! makes them, or the workstation's), one link each in
//! `/run/xtask-path/<place>`: any other program is "command not found",
//! as on the server.
//!
//! The checklist's commands run as the admin (the uid and groups of
//! machine.nix's user, not root), so a line that needs root and lacks
//! `sudo` fails here as it would on the server. `sudo` is the image's
//! `/usr/local/bin/sudo`, a link to the agent, which is setuid root there
//! (`super::sudo`): the command runs as root for a member of wheel, without
//! a password, as on the server (wheelNeedsPassword is false). The lab's
//! own setup and verification run as root.

mod shell;
mod system;

pub use shell::{bash, Output, ADMIN_PATH};
pub use system::{enter_system, persistence};

use std::collections::BTreeMap;
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context as _, Result};

use crate::port::{say, send};
use crate::report::report;
use lab_protocol::command::Where;
use lab_protocol::command::{CommandOutcome, CommandStatus};
use lab_protocol::plan::{AdminCommand, AdminStep, Expectation, Plan};
use lab_protocol::protocol::{CommandEvent, Event};
use shell::COMMAND_TIMEOUT;

/// What a record keeps of each output.
const OUTPUT_LIMIT: usize = 4000;

/// Whether a line of `text` matches the ERE, by GNU grep (`grep`).
fn matches(grep: &str, pattern: &str, text: &str) -> Result<bool> {
    let mut child = Command::new(grep)
        .args(["-qE", "--", pattern])
        .env_clear()
        .env("LC_ALL", "C")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {grep}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(text.as_bytes());
    }
    let output = child.wait_with_output()?;
    match output.status.code() {
        Some(0) => Ok(true),
        Some(1) => Ok(false),
        _ => bail!(
            "grep -E {pattern:?}: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ),
    }
}

/// Checks an output against the command's expectations (the lab's, then
/// the checklist's own); the first problem.
fn judge(
    grep: &str,
    command: &AdminCommand,
    output: &Output,
    captured: &BTreeMap<String, String>,
) -> Option<String> {
    if output.timed_out {
        return Some(format!(
            "killed after {} s without finishing",
            COMMAND_TIMEOUT.as_secs()
        ));
    }
    if output.exit != Some(command.exit) {
        return Some(format!(
            "exit {} instead of {}{}",
            output
                .exit
                .map_or("by a signal".to_owned(), |c| c.to_string()),
            command.exit,
            match output.stderr.trim() {
                "" => String::new(),
                stderr => format!(" (stderr: {})", clip_line(stderr)),
            }
        ));
    }
    let trimmed = output.stdout.trim();
    for expectation in &command.expect {
        let holds = match expectation {
            Expectation::Contains { text } => output.stdout.contains(text.as_str()),
            Expectation::Equals { text } => trimmed == text.trim(),
            Expectation::EqualsCaptured { name } => match captured.get(name) {
                Some(value) => trimmed == value,
                None => return Some(format!("nothing was captured as {name:?}")),
            },
            Expectation::Matches { pattern } => match matches(grep, pattern, &output.stdout) {
                Ok(found) => found,
                Err(error) => return Some(format!("{error:#}")),
            },
        };
        if !holds {
            let want = match expectation {
                Expectation::EqualsCaptured { name } => format!(
                    "output equals {:?} (captured as {name:?})",
                    captured.get(name).map(String::as_str).unwrap_or("")
                ),
                other => other.to_string(),
            };
            return Some(format!("expected: {want}"));
        }
    }
    let status = output.exit.unwrap_or(-1);
    for expect in &command.checklist_expect {
        if let Err(problem) = expect.check(status, &output.stdout) {
            return Some(format!("not as the checklist expects: {problem}"));
        }
    }
    None
}

fn clip_line(text: &str) -> String {
    let line = text.lines().last().unwrap_or("");
    clip(line)
}

fn describe(command: &AdminCommand) -> String {
    let mut parts = vec![format!("exit {}", command.exit)];
    parts.extend(command.expect.iter().map(ToString::to_string));
    parts.extend(
        command
            .checklist_expect
            .iter()
            .map(|e| serde_json::to_string(e).unwrap_or_default()),
    );
    if let Some(name) = &command.capture {
        parts.push(format!("output captured as {name:?}"));
    }
    parts.join("; ")
}

fn clip(text: &str) -> String {
    if text.len() <= OUTPUT_LIMIT {
        return text.to_owned();
    }
    let mut end = OUTPUT_LIMIT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes in all)", &text[..end], text.len())
}

/// Fills a command's placeholders: each from the values the procedure
/// kept (`<id>:<placeholder>`), else by its shell expression, run as root
/// (the value is kept and reported, for later commands and parts).
fn fill(
    plan: &Plan,
    step: &AdminStep,
    command: &AdminCommand,
    line: String,
    captured: &mut BTreeMap<String, String>,
) -> Result<std::result::Result<String, String>> {
    let mut line = line;
    // A second run (`4.4#2`) keeps its own values.
    let owner = match step.step.split_once('#') {
        Some((_, run)) => format!("{}#{run}", step.id),
        None => step.id.clone(),
    };
    for binding in &command.bindings {
        let key = format!("{owner}:{}", binding.placeholder);
        let value = match captured.get(&key) {
            Some(value) => value.clone(),
            None => {
                let output = bash(plan, &binding.shell, None, None, None)?;
                let value = output.stdout.trim().to_owned();
                if output.exit != Some(0) || value.is_empty() || value.contains('\n') {
                    return Ok(Err(format!(
                        "{} could not be filled in: `{}` printed {value:?} (exit {:?}; {})",
                        binding.placeholder,
                        binding.shell,
                        output.exit,
                        output.stderr.trim()
                    )));
                }
                captured.insert(key.clone(), value.clone());
                send(&Event::Data {
                    name: format!("capture:{key}"),
                    value: serde_json::json!(value),
                });
                value
            }
        };
        line = line.replace(&binding.placeholder, &value);
    }
    Ok(Ok(line))
}

/// Runs one part of a procedure; a failed command ends the part (later
/// commands build on it) and fails the check `procedure:<step>`. Commands
/// the lab cannot run are reported NOT RUN and do not end it.
pub fn run(plan: &Plan, step: &AdminStep) -> Result<Option<String>> {
    let mut captured = step.captured.clone();
    let mut failure: Option<String> = None;
    let total = step.commands.len();
    let mut ran = 0usize;
    let mut not_run = 0usize;
    for (index, command) in step.commands.iter().enumerate() {
        let line = step
            .substitutions
            .iter()
            .fold(command.line.clone(), |line, (from, to)| {
                line.replace(from, to)
            });
        let mut event = CommandEvent {
            id: step.id.clone(),
            step: step.step.clone(),
            part: step.part,
            index: index as u32,
            outcome: CommandOutcome {
                role: command.role.as_str().to_owned(),
                at: command.at,
                line: command.line.clone(),
                ran: String::new(),
                status: CommandStatus::Skipped,
                exit: None,
                ms: 0,
                stdout: String::new(),
                stderr: String::new(),
                expected: describe(command),
                passed: false,
                problem: None,
                proven_by: None,
            },
        };
        if let Some(why) = &command.not_run {
            event.outcome.status = CommandStatus::NotRun;
            event.outcome.problem = Some(why.reason.clone());
            event.outcome.proven_by = why.proven_by.clone();
            event.outcome.expected = String::new();
            not_run += 1;
            say(&format!(
                "  {} [{}/{total}] NOT RUN {}: {}",
                step.step,
                index + 1,
                command.line,
                why.reason
            ));
            send(&Event::Command(Box::new(event)));
            continue;
        }
        if let Some(reason) = &failure {
            event.outcome.problem = Some(format!("not run: {reason}"));
            send(&Event::Command(Box::new(event)));
            continue;
        }
        let started = Instant::now();
        // The rescue system's lines run as root (the only login there).
        let login = (command.as_admin && command.at != Some(Where::Rescue)).then_some(&step.login);
        let problem = match fill(plan, step, command, line, &mut captured)? {
            Err(problem) => Some(problem),
            Ok(filled) => {
                event.outcome.ran = filled;
                let output = bash(
                    plan,
                    &event.outcome.ran,
                    login,
                    command.at,
                    command.cwd.as_deref(),
                )?;
                let problem = judge(&plan.tools.grep, command, &output, &captured);
                if problem.is_none() {
                    if let Some(name) = &command.capture {
                        let value = output.stdout.trim().to_owned();
                        captured.insert(name.clone(), value.clone());
                        send(&Event::Data {
                            name: format!("capture:{name}"),
                            value: serde_json::json!(value),
                        });
                    }
                }
                event.outcome.exit = output.exit;
                event.outcome.stdout = clip(&output.stdout);
                event.outcome.stderr = clip(&output.stderr);
                problem
            }
        };
        ran += 1;
        event.outcome.ms = started.elapsed().as_millis() as u64;
        event.outcome.passed = problem.is_none();
        event.outcome.status = if event.outcome.passed {
            CommandStatus::Pass
        } else {
            CommandStatus::Fail
        };
        event.outcome.problem = problem.clone();
        say(&format!(
            "  {} [{}/{total}] {} {}{}: {}",
            step.step,
            index + 1,
            if event.outcome.passed { "ok  " } else { "FAIL" },
            if login.is_some() { "$ " } else { "# " },
            event.outcome.ran,
            problem.as_deref().unwrap_or("as expected")
        ));
        send(&Event::Command(Box::new(event)));
        if let Some(problem) = problem {
            failure = Some(format!("command {} failed ({problem})", index + 1));
        }
    }
    report(
        &format!("procedure:{}", step.step),
        failure.is_none(),
        match &failure {
            None => format!(
                "{} part {}: {ran} commands as expected, {not_run} not run in the lab",
                step.id,
                step.part + 1
            ),
            Some(reason) => format!("{} part {}: {reason}", step.id, step.part + 1),
        },
        format!(
            "checklist step {} ({}, {}): every command as expected",
            step.step, step.id, step.title
        ),
    );
    Ok(None)
}

#[cfg(test)]
mod tests;
