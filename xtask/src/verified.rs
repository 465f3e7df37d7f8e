//! target/xtask/verify-<host>.json: what the last `verify` of a host saw,
//! which deploy-checklist's post-deploy section reads. The record lives
//! below both: `verify` writes it, the checklist reads it.

use camino::{Utf8Path, Utf8PathBuf};
use serde::{Deserialize, Serialize};

use toolbox::project::{xtask_dir, Revision};

/// Version of the record.
pub const SCHEMA: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    #[serde(rename = "PASS")]
    Pass,
    #[serde(rename = "FAIL")]
    Fail,
    /// The check could not run on this server (a program it needs is missing).
    #[serde(rename = "NOT RUN")]
    NotRun,
    /// verify could not run at all (exit 2).
    #[serde(rename = "ERROR")]
    Error,
}

impl Status {
    pub fn label(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Fail => "FAIL",
            Status::NotRun => "NOT RUN",
            Status::Error => "ERROR",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub schema: u32,
    pub kind: String,
    pub host: String,
    /// ADMIN@ADDRESS[:PORT] as given.
    pub target: String,
    pub address: String,
    /// The server's host key as ssh saw it at this run: `ssh-ed25519 SHA256:…`.
    pub host_key: Option<String>,
    /// The repository's revision verify ran from (its layout and checks).
    pub revision: Revision,
    /// RFC 3339, UTC.
    pub finished_at: String,
    /// PASS: every check that ran passed; FAIL: one failed; ERROR: could not run.
    pub status: Status,
    pub error: Option<String>,
    /// `--device-map FROM=TO` (the lab VM's disk), if given.
    #[serde(default)]
    pub device_map: Option<String>,
    pub checks: Vec<CheckResult>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckResult {
    pub id: String,
    pub step: Option<String>,
    pub title: String,
    pub status: Status,
    /// The value seen (the first line of each command's output), or a summary.
    pub value: String,
    /// What differed from the expectations (FAIL), or why it did not run.
    pub problem: Option<String>,
    #[serde(default)]
    pub commands: Vec<RanCommand>,
    /// The procedure's commands verify does not send (they write), and why.
    #[serde(default)]
    pub left_out: Vec<(String, String)>,
}

/// A command as run, in the record (outputs clipped).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RanCommand {
    pub line: String,
    pub exit: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Record {
    /// The overall status from the checks: FAIL when one failed.
    pub fn settle(&mut self) {
        self.finished_at = crate::results::now_rfc3339();
        self.status = if self.checks.iter().any(|c| c.status == Status::Fail) {
            Status::Fail
        } else {
            Status::Pass
        };
    }
}

const CLIP: usize = 4000;

pub(crate) fn clip(text: &str) -> String {
    if text.len() <= CLIP {
        return text.to_owned();
    }
    let mut end = CLIP;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes in all)", &text[..end], text.len())
}

/// The value seen: the first output line of each command, joined.
pub fn seen(ran: &[RanCommand]) -> String {
    let parts: Vec<String> = ran
        .iter()
        .map(|r| {
            r.stdout
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty())
                .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
                .unwrap_or_else(|| format!("(exit {}, no output)", r.exit.unwrap_or(-1)))
        })
        .collect();
    let joined = parts.join(" | ");
    let mut shown: String = joined.chars().take(140).collect();
    if shown.len() < joined.len() {
        shown.push('…');
    }
    shown
}

/// `DIR/verify-<host>.json`, in target/xtask unless `dir` is given.
pub fn path(dir: Option<&Utf8Path>, host: &str) -> Utf8PathBuf {
    let name = format!("verify-{host}.json");
    match dir {
        Some(dir) => dir.join(name),
        None => xtask_dir().join(name),
    }
}

pub fn write(path: &Utf8Path, record: &Record) -> anyhow::Result<()> {
    let mut json = serde_json::to_string_pretty(record)?;
    json.push('\n');
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    toolbox::project::write_readable(path, json.as_bytes())
}

/// Reads a record; `None` when there is none.
pub fn read(path: &Utf8Path) -> anyhow::Result<Option<Record>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(serde_json::from_str(&text).map_err(|e| {
            anyhow::anyhow!("{path}: not a verify record ({e}); run `cargo xtask verify` again")
        })?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(anyhow::anyhow!("reading {path}: {e}")),
    }
}

/// `--all`'s row of a host: host, target, status, what it saw.
pub fn summary_row(record: &Record) -> [String; 4] {
    let count = |s: Status| record.checks.iter().filter(|c| c.status == s).count();
    let detail = match &record.error {
        Some(error) => error.lines().next().unwrap_or_default().to_owned(),
        None => format!(
            "{} passed, {} failed, {} not run; host key {}",
            count(Status::Pass),
            count(Status::Fail),
            count(Status::NotRun),
            record.host_key.as_deref().unwrap_or("not seen")
        ),
    };
    [
        record.host.clone(),
        record.target.clone(),
        record.status.label().to_owned(),
        detail,
    ]
}

/// The summary table of `--all`.
pub fn table(rows: &[[String; 4]]) -> String {
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::ASCII_MARKDOWN);
    table.set_header(["host", "server", "status", "checks"]);
    for row in rows {
        table.add_row(row.iter().cloned());
    }
    format!("{table}\n")
}

/// One line per check, then the verdict.
pub fn text(record: &Record) -> String {
    let mut out = format!(
        "verify {} at {} (host key {})\n",
        record.host,
        record.target,
        record.host_key.as_deref().unwrap_or("not seen")
    );
    for c in &record.checks {
        let step = c
            .step
            .as_deref()
            .map(|s| format!(" ({s})"))
            .unwrap_or_default();
        out.push_str(&format!(
            "{:<8} {}{step}: {}\n",
            c.status.label(),
            c.id,
            c.value
        ));
        if let Some(problem) = &c.problem {
            out.push_str(&format!("         {problem}\n"));
        }
    }
    let count = |s: Status| record.checks.iter().filter(|c| c.status == s).count();
    out.push_str(&format!(
        "{}: {} passed, {} failed, {} not run\n",
        record.status.label(),
        count(Status::Pass),
        count(Status::Fail),
        count(Status::NotRun)
    ));
    out
}
