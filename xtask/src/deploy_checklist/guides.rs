//! The commands of the hand-written guides in docs/, held to the checklist's
//! standard: every line of a shell block (```sh, ```bash, ```shell,
//! ```console) is a command with its place (`server$`, `local$`, `rescue#`)
//! or a comment; each command is classified like the checklist's lines
//! (the checklist's own line, with what the lab does with it, or NOT RUN
//! with the reason), its programs are commands of its place
//! (`super::places`), and no block has a hazard (`super::hazards`).
//! `cargo xtask docs --check` fails on an unclassified command, a missing
//! program or a hazard. Blocks without a shell info string show output or
//! configuration and are not read.

use std::fmt;

use anyhow::{Context as _, Result};
use camino::Utf8Path;

use super::disposition::{disposition, Disposition};
use super::facts::Where;
use super::hazards::{hazards, Line};
use super::places::{place_name, Places};
use super::procedures::{Command, Procedure};

/// The hand-written guides whose commands an operator types.
pub const GUIDES: &[&str] = &[
    "docs/install-hetzner.md",
    "docs/rollback.md",
    "docs/snapshots.md",
    "docs/recovering-files.md",
    "docs/maintenance.md",
    "docs/troubleshooting.md",
];

const PROMPTS: &[(&str, Where)] = &[
    ("server$", Where::Server),
    ("local$", Where::Local),
    ("rescue#", Where::Rescue),
];

/// One command of a guide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocCommand {
    pub file: String,
    /// 1-based.
    pub line_no: usize,
    /// The shell block it is in (0-based, per file).
    pub block: usize,
    pub at: Where,
    pub line: String,
}

/// What a problem of a guide is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: String,
    pub line_no: usize,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line_no, self.message)
    }
}

/// How a guide's command is covered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Class {
    /// The checklist's own line: what the lab does with it is the
    /// procedure's (`lab`: run, a boundary, or NOT RUN and why).
    Checklist { step: String, lab: String },
    /// Not drilled: why.
    NotRun(String),
}

/// The text after the prompt without a trailing `# comment` (outside quotes).
fn strip_comment(text: &str) -> &str {
    let mut quote: Option<char> = None;
    let mut previous = ' ';
    for (i, c) in text.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '\'' || c == '"' => quote = Some(c),
            None if c == '#' && previous.is_whitespace() => return text[..i].trim_end(),
            None => {}
        }
        previous = c;
    }
    text.trim_end()
}

/// The commands of a guide, and its lines that are commands without a place.
pub fn extract(file: &str, text: &str) -> (Vec<DocCommand>, Vec<Problem>) {
    let mut commands = Vec::new();
    let mut problems = Vec::new();
    let mut in_block: Option<bool> = None;
    let mut block = 0usize;
    let mut pending: Option<DocCommand> = None;
    for (index, raw) in text.lines().enumerate() {
        let line_no = index + 1;
        let trimmed = raw.trim();
        if let Some(info) = trimmed.strip_prefix("```") {
            match in_block {
                None => {
                    let shell = matches!(info.trim(), "sh" | "bash" | "shell" | "console");
                    in_block = Some(shell);
                }
                Some(shell) => {
                    if shell {
                        block += 1;
                    }
                    in_block = None;
                }
            }
            continue;
        }
        if in_block != Some(true) {
            continue;
        }
        if let Some(mut command) = pending.take() {
            let more = strip_comment(trimmed);
            command.line = format!(
                "{} {}",
                command.line.trim_end_matches('\\').trim_end(),
                more
            );
            if more.ends_with('\\') {
                pending = Some(command);
            } else {
                commands.push(command);
            }
            continue;
        }
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let Some((prompt, at)) = PROMPTS.iter().find(|(p, _)| trimmed.starts_with(p)) else {
            problems.push(Problem {
                file: file.to_owned(),
                line_no,
                message: format!(
                    "`{trimmed}`: a command without its place; start it with `server$` (the installed server, as the admin), `local$` (the workstation) or `rescue#` (the rescue system, as root)"
                ),
            });
            continue;
        };
        let line = strip_comment(trimmed[prompt.len()..].trim()).to_owned();
        let command = DocCommand {
            file: file.to_owned(),
            line_no,
            block,
            at: *at,
            line,
        };
        if command.line.ends_with('\\') {
            pending = Some(command);
        } else {
            commands.push(command);
        }
    }
    (commands, problems)
}

fn lab_text(d: &Disposition) -> String {
    match d {
        Disposition::Run => "run in the lab".to_owned(),
        Disposition::Boundary(_, why) => format!("a boundary in the lab ({})", why.reason),
        Disposition::NotRun(why) => format!("NOT RUN in the lab: {}", why.reason),
    }
}

/// How `command` is covered: the checklist line it is, else NOT RUN.
pub fn classify(command: &DocCommand, checklist: &[(String, &Procedure)]) -> Class {
    for (step, procedure) in checklist {
        for c in &procedure.commands {
            if c.at == command.at && c.line == command.line {
                return Class::Checklist {
                    step: step.clone(),
                    lab: lab_text(&disposition(&procedure.id, c)),
                };
            }
        }
    }
    let as_command = Command {
        at: command.at,
        line: command.line.clone(),
        reaches: None,
        expect: Vec::new(),
        shows: Vec::new(),
        reboots: command.line.contains("systemctl reboot"),
        installs: command.line.contains("nixos-anywhere"),
    };
    match disposition("", &as_command) {
        Disposition::NotRun(why) | Disposition::Boundary(_, why) => Class::NotRun(why.reason),
        Disposition::Run => Class::NotRun(format!(
            "a command of this guide only, not drilled in the lab; held against the commands of {} and the hazard rules",
            place_name(command.at)
        )),
    }
}

/// What `docs --check` reports of the guides.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub commands: usize,
    pub from_checklist: usize,
    pub not_run: usize,
    pub problems: Vec<Problem>,
}

/// Reads the guides at `root` and holds their commands.
pub fn check(
    root: &Utf8Path,
    places: &Places,
    checklist: &[(String, &Procedure)],
) -> Result<Report> {
    let mut report = Report::default();
    for file in GUIDES {
        let text =
            std::fs::read_to_string(root.join(file)).with_context(|| format!("reading {file}"))?;
        let (commands, problems) = extract(file, &text);
        report.problems.extend(problems);
        for command in &commands {
            report.commands += 1;
            match classify(command, checklist) {
                Class::Checklist { .. } => report.from_checklist += 1,
                Class::NotRun(_) => report.not_run += 1,
            }
        }
        report.problems.extend(problems_of(places, &commands));
    }
    Ok(report)
}

/// [`check`] for host `name` of the repository at `root`: its places, and
/// the checklist's §2 to §4 as the guides' commands are compared with.
pub fn check_host(
    context: &toolbox::context::Context,
    root: &Utf8Path,
    name: &str,
) -> Result<Report> {
    let loaded = super::load(context, root, name)?;
    let places = Places::for_host(&loaded.dir)?;
    let subject = &loaded.subject;
    let facts = &loaded.facts;
    let sections = [
        (2, super::plan::deployment(subject, facts)),
        (3, super::procedures::verification(subject, facts, None)),
        (4, super::procedures::rollback(subject, facts)),
    ];
    let numbered: Vec<(String, Procedure)> = sections
        .into_iter()
        .flat_map(|(section, steps)| {
            steps
                .into_iter()
                .enumerate()
                .map(move |(i, p)| (format!("{section}.{}", i + 1), p))
        })
        .collect();
    let checklist: Vec<(String, &Procedure)> =
        numbered.iter().map(|(step, p)| (step.clone(), p)).collect();
    check(root, &places, &checklist)
}

impl Report {
    /// One line per guide problem, then the summary.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for problem in &self.problems {
            out.push_str(&format!("{problem}\n"));
        }
        out.push_str(&format!(
            "guides: {} commands in shell blocks: {} are the checklist's own lines (run in the lab, a boundary, or NOT RUN with the procedure's reason), {} NOT RUN (a guide's own command: held against its place's commands and the hazard rules); {} problem(s)\n",
            self.commands,
            self.from_checklist,
            self.not_run,
            self.problems.len()
        ));
        out
    }
}

/// The hazards and missing programs of a guide's commands, block by block.
pub fn problems_of(places: &Places, commands: &[DocCommand]) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut blocks: Vec<usize> = commands.iter().map(|c| c.block).collect();
    blocks.dedup();
    for block in blocks {
        let in_block: Vec<&DocCommand> = commands.iter().filter(|c| c.block == block).collect();
        let lines: Vec<Line> = in_block
            .iter()
            .map(|c| Line {
                at: c.at,
                line: c.line.clone(),
            })
            .collect();
        for hazard in hazards(places, &lines) {
            let command = in_block[hazard.index];
            problems.push(Problem {
                file: command.file.clone(),
                line_no: command.line_no,
                message: format!("{} ({}): {}", command.line, hazard.rule, hazard.message),
            });
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deploy_checklist::facts::testing::host_facts;
    use crate::deploy_checklist::plan::deployment;
    use crate::deploy_checklist::procedures::{rollback, verification};
    use crate::hosts::testing::host_subject;
    use toolbox::project::project_root;

    fn places() -> Places {
        Places::for_host(&project_root().join("hosts/servers/hetzner-cloud")).unwrap()
    }

    #[test]
    fn shell_blocks_give_commands_with_their_place_and_unprompted_lines_fail() {
        let text = "x\n```sh\nserver$ sudo ls /x   # a comment\n# only a comment\nlocal$ ssh a@b 'echo # not a comment' \\\n  | zstd > f\n```\n```\nbtrfs output, not read\n```\n```sh\nbtrfs subvolume list /btrfs_tmp\n```\n";
        let (commands, problems) = extract("g.md", text);
        assert_eq!(commands.len(), 2);
        assert_eq!(commands[0].line, "sudo ls /x");
        assert_eq!(commands[0].at, Where::Server);
        assert_eq!(
            commands[1].line,
            "ssh a@b 'echo # not a comment' | zstd > f"
        );
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].line_no, 12);
        assert!(problems[0].message.contains("without its place"));
    }

    /// The whole checklist (§2 as one sequence, as the operator goes
    /// through it; each §3 and §4 procedure on its own) and every guide:
    /// no hazard, no program its place lacks, no command without a place.
    #[test]
    fn every_procedure_and_guide_command_is_safe_where_it_runs() {
        let places = places();
        let subject = host_subject();
        let facts = crate::deploy_checklist::facts::testing::with_key();
        let lines = |steps: &[Procedure]| -> Vec<Line> {
            steps
                .iter()
                .flat_map(|p| &p.commands)
                .map(|c| Line {
                    at: c.at,
                    line: c.line.clone(),
                })
                .collect()
        };
        let mut problems = Vec::new();
        let deploy = deployment(&subject, &facts);
        for hazard in hazards(&places, &lines(&deploy)) {
            problems.push(format!(
                "§2: {} ({})",
                hazard.message,
                lines(&deploy)[hazard.index].line
            ));
        }
        for procedure in verification(&subject, &host_facts(), None)
            .into_iter()
            .chain(rollback(&subject, &facts))
        {
            let l = lines(std::slice::from_ref(&procedure));
            for hazard in hazards(&places, &l) {
                problems.push(format!(
                    "{}: {} ({})",
                    procedure.id, hazard.message, l[hazard.index].line
                ));
            }
        }
        let report = check(&project_root(), &places, &[]).unwrap();
        problems.extend(report.problems.iter().map(ToString::to_string));
        assert!(problems.is_empty(), "{}", problems.join("\n"));
        assert!(report.commands > 50, "{report:?}");
    }
}
