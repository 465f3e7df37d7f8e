//! A checklist procedure in the lab's terms: its placeholders substituted,
//! its commands split into parts at reboots and reinstalls; and the record of
//! a procedure a run does not run.

use anyhow::{bail, Result};

use super::harness::{harness, lab_command};
use super::{
    disposition, tier, Disposition, Lab, Part, Procedure, Then, Tier, RESCUE_CONTINUES,
    RESCUE_DRILLS, TWICE, WORKSTATION,
};
use crate::deploy_checklist::disposition::not_run;
use crate::deploy_checklist::facts::Where;
use crate::deploy_checklist::procedures::Expect;
use crate::deploy_checklist::Numbered;
use crate::results::{CommandOutcome, CommandRecord, CommandStatus, ProcedureRecord};
use crate::vm::plan::{AdminCommand, CommandRole, NotRun};

/// The `<placeholders>` of a line, in order, each once.
pub fn placeholders(line: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = line;
    while let Some(start) = rest.find('<') {
        let after = &rest[start + 1..];
        let end = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
            .unwrap_or(after.len());
        if end > 0 && after[end..].starts_with('>') {
            let name = format!("<{}>", &after[..end]);
            if !found.contains(&name) {
                found.push(name);
            }
            rest = &after[end + 1..];
        } else {
            rest = after;
        }
    }
    found
}

fn substitute(text: &str, substitutions: &[(String, String)]) -> String {
    substitutions
        .iter()
        .fold(text.to_owned(), |text, (from, to)| text.replace(from, to))
}

/// The checklist's expectation with the lab's substitutions.
fn substitute_expect(expect: &Expect, substitutions: &[(String, String)]) -> Expect {
    let s = |t: &String| substitute(t, substitutions);
    match expect {
        Expect::Line { pattern } => Expect::Line {
            pattern: s(pattern),
        },
        Expect::NoLine { pattern } => Expect::NoLine {
            pattern: s(pattern),
        },
        Expect::Fields { first, include } => Expect::Fields {
            first: s(first),
            include: include.iter().map(s).collect(),
        },
        Expect::AtMost {
            pattern,
            field,
            max,
        } => Expect::AtMost {
            pattern: s(pattern),
            field: *field,
            max: *max,
        },
        other => other.clone(),
    }
}

/// `numbered` as the lab runs it.
pub fn convert(numbered: &Numbered, lab: &Lab) -> Result<Procedure> {
    convert_run(numbered, lab, 1)
}

/// Run `run` of `numbered`: a second run is step `4.4#2`, with its own
/// captures (`super::harness`).
pub fn convert_run(numbered: &Numbered, lab: &Lab, run: u32) -> Result<Procedure> {
    let procedure = &numbered.procedure;
    let id = procedure.id.as_str();
    let harness = harness(id, lab, run)?;
    let substitutions: Vec<(String, String)> = lab.disk.iter().cloned().collect();
    let mut parts = Vec::new();
    let mut current = harness.setup.clone();
    // A rescue drill: the first `hcloud server reset` starts the rescue
    // system (the lab's rescue boot); a later one only restarts it.
    let mut rescue_pending = RESCUE_DRILLS.contains(&id);
    for command in &procedure.commands {
        if rescue_pending && command.line.starts_with("hcloud server reset") {
            rescue_pending = false;
            current.push(AdminCommand {
                at: Some(command.at),
                as_admin: true,
                not_run: Some(not_run(
                    "the Hetzner API; the lab's rescue boot stands for it: the VM powers off and boots the rescue system, which mounts nothing of the installed system",
                    None,
                )),
                ..lab_command(CommandRole::Checklist, command.line.clone())
            });
            parts.push(Part {
                commands: std::mem::take(&mut current),
                then: Then::Rescue,
            });
            current = harness.each_part.clone();
            current.extend(harness.broken.iter().cloned());
            continue;
        }
        let recorded = |not_run: NotRun| AdminCommand {
            at: Some(command.at),
            as_admin: true,
            not_run: Some(not_run),
            ..lab_command(CommandRole::Checklist, command.line.clone())
        };
        match disposition(id, command) {
            Disposition::Run => {
                let mut bindings = Vec::new();
                for placeholder in placeholders(&command.line) {
                    let Some(found) = harness
                        .bindings
                        .iter()
                        .find(|b| b.placeholder == placeholder)
                    else {
                        bail!(
                            "checklist step {} ({id}): the lab VM has no value for {placeholder} in `{}`; give it one in xtask/src/vm/procedure_runs/harness.rs",
                            numbered.step,
                            command.line
                        );
                    };
                    bindings.push(found.clone());
                }
                let cwd = (command.at == Where::Local).then(|| {
                    if harness.workstation {
                        WORKSTATION.to_owned()
                    } else {
                        lab.login.home.clone()
                    }
                });
                let exit = command
                    .expect
                    .iter()
                    .find_map(|e| match e {
                        Expect::Exit { status } => Some(*status),
                        _ => None,
                    })
                    .unwrap_or(0);
                current.push(AdminCommand {
                    at: Some(command.at),
                    as_admin: true,
                    cwd,
                    bindings,
                    exit,
                    checklist_expect: command
                        .expect
                        .iter()
                        .filter(|e| !matches!(e, Expect::Exit { .. }))
                        .map(|e| substitute_expect(e, &substitutions))
                        .collect(),
                    ..lab_command(CommandRole::Checklist, command.line.clone())
                });
            }
            Disposition::NotRun(why) => current.push(recorded(why)),
            Disposition::Boundary(then, why) => {
                current.push(recorded(why));
                parts.push(Part {
                    commands: std::mem::take(&mut current),
                    then,
                });
                current = harness.each_part.clone();
            }
        }
    }
    current.extend(harness.verify.iter().cloned());
    parts.push(Part {
        commands: current,
        then: Then::Done,
    });
    Ok(Procedure {
        id: id.to_owned(),
        step: if run > 1 {
            format!("{}#{run}", numbered.step)
        } else {
            numbered.step.clone()
        },
        title: procedure.title.clone(),
        substitutions,
        login: lab.login.clone(),
        parts,
    })
}

/// The procedures of `tier`, converted: those that need no reboot first
/// (§4.3 copies from the newest old root, which must be the root of the
/// boot before), then the rest in checklist order.
pub fn of_tier(all: &[Numbered], tier_wanted: Tier, lab: &Lab) -> Result<Vec<Procedure>> {
    // §4.6 goes on with §4.5 from `hcloud server enable-rescue`: the lab
    // runs them as one drill.
    let all: Vec<Numbered> = all.iter().map(|n| with_continuation(n, all)).collect();
    let mut procedures = all
        .iter()
        .filter(|n| tier(&n.procedure) == tier_wanted)
        .map(|n| convert(n, lab))
        .collect::<Result<Vec<_>>>()?;
    procedures.sort_by_key(|p| p.parts.len() > 1);
    // The drills that restore /persist run twice, /persist changed in
    // between: after every first run, so that the second finds its
    // leftovers.
    for id in TWICE {
        if let Some(n) = all
            .iter()
            .find(|n| n.procedure.id == *id && tier(&n.procedure) == tier_wanted)
        {
            procedures.push(convert_run(n, lab, 2)?);
        }
    }
    Ok(procedures)
}

/// A rescue drill with the lines of the procedure it goes on with
/// (`RESCUE_CONTINUES`), as the checklist's last sentence says.
fn with_continuation(numbered: &Numbered, all: &[Numbered]) -> Numbered {
    let mut numbered = numbered.clone();
    if !RESCUE_DRILLS.contains(&numbered.procedure.id.as_str()) {
        return numbered;
    }
    let (then_id, from) = RESCUE_CONTINUES;
    if let Some(next) = all.iter().find(|n| n.procedure.id == then_id) {
        if let Some(start) = next
            .procedure
            .commands
            .iter()
            .position(|c| c.line.starts_with(from))
        {
            numbered
                .procedure
                .commands
                .extend(next.procedure.commands[start..].iter().cloned());
        }
    }
    numbered
}

/// The record of a procedure this run did not run: every command NOT RUN,
/// with the lab's reason, or `instead` (e.g. it runs with `--thorough`).
pub fn not_run_record(numbered: &Numbered, instead: Option<&str>) -> ProcedureRecord {
    let procedure = &numbered.procedure;
    let commands = procedure
        .commands
        .iter()
        .map(|command| {
            let why = match (instead, disposition(&procedure.id, command)) {
                (_, Disposition::NotRun(why)) | (_, Disposition::Boundary(_, why)) => why,
                (Some(instead), Disposition::Run) => not_run(instead, None),
                (None, Disposition::Run)
                    if procedure
                        .needs
                        .contains(&crate::deploy_checklist::procedures::Need::RescueSystem) =>
                {
                    not_run(
                        "the procedure starts in the Hetzner rescue system, which the lab boots only for its rescue drills (`vm-test --drills`); this command works on what it saved",
                        None,
                    )
                }
                (None, Disposition::Run) => not_run("not run", None),
            };
            CommandRecord {
                boot: 0,
                part: 0,
                outcome: CommandOutcome {
                    role: CommandRole::Checklist.as_str().to_owned(),
                    at: Some(command.at),
                    line: command.line.clone(),
                    ran: String::new(),
                    status: CommandStatus::NotRun,
                    exit: None,
                    ms: 0,
                    stdout: String::new(),
                    stderr: String::new(),
                    expected: String::new(),
                    passed: false,
                    problem: Some(why.reason),
                    proven_by: why.proven_by,
                },
            }
        })
        .collect();
    let mut record = ProcedureRecord {
        id: procedure.id.clone(),
        step: numbered.step.clone(),
        title: procedure.title.clone(),
        status: crate::results::ProcedureStatus::NotRun,
        passed: false,
        commands,
    };
    record.settle();
    record
}
