//! One command of a checklist procedure as the lab ran it: where it runs
//! and what became of it. The guest reports it (`protocol::CommandEvent`)
//! and the host keeps it in vm-test.json (xtask's `results::CommandRecord`):
//! both carry the one `CommandOutcome`.

use serde::{Deserialize, Serialize};

/// Where a command runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Where {
    /// On your workstation, in this repository.
    Local,
    /// On the installed server, logged in as the admin; `sudo` in the line
    /// where root is needed.
    Server,
    /// In the Hetzner rescue system (or the installer nixos-anywhere kexecs
    /// into), as root: the only place root logs in.
    Rescue,
}

impl Where {
    /// The prompt the checklist prints in front of the command.
    pub fn prompt(self) -> &'static str {
        match self {
            Where::Local => "local$",
            Where::Server => "server$",
            Where::Rescue => "rescue#",
        }
    }
}

/// What became of one command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CommandStatus {
    /// It ran and everything it was expected to do held.
    Pass,
    /// It ran, and its exit status or output was not as expected.
    Fail,
    /// Not run because an earlier command of its part failed.
    Skipped,
    /// The lab cannot run it (`problem` says why, `proven_by` where it runs instead).
    NotRun,
}

/// What the guest's event and the host's record of a command share, field
/// for field, in this order (both flatten it after their own fields, so the
/// JSON of each is as before).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandOutcome {
    /// `checklist` (the checklist's own line), `setup` (brings the VM into
    /// the situation) or `verify` (the test's own check).
    pub role: String,
    /// Where the checklist runs it; none for the lab's own commands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<Where>,
    /// As the checklist prints it, and as it ran with the placeholders filled.
    pub line: String,
    pub ran: String,
    pub status: CommandStatus,
    /// None when it did not run.
    pub exit: Option<i32>,
    pub ms: u64,
    pub stdout: String,
    pub stderr: String,
    pub expected: String,
    /// `status` is pass.
    pub passed: bool,
    /// Why it failed, or why the lab does not run it, in one line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// For a command the lab cannot run: where it runs instead, if anywhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proven_by: Option<String>,
}
