//! One command of a checklist procedure as the lab ran it: where it runs
//! and what became of it.

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

