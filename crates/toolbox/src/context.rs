//! What every command is handed: the global flags, parsed once in main and
//! passed down as one value (the way rust-analyzer's xtask passes its
//! `Shell`), never through the process environment.

use std::time::Duration;

use anyhow::Result;
use xshell::Shell;

use crate::progress::Progress;

/// Set to `1` to forbid installing packages (main reads it as `--no-install`).
pub const NO_INSTALL_ENV: &str = "XTASK_NO_INSTALL";
/// Seconds one nix-instantiate may run before `check` stops it.
pub const NIX_TIMEOUT_ENV: &str = "XTASK_NIX_TIMEOUT";
/// The repo's host evaluates in well under a second, 100 000 subvolumes in about one.
pub const DEFAULT_NIX_TIMEOUT: Duration = Duration::from_secs(120);

/// Whether missing system packages may be installed (`--no-install`,
/// `XTASK_NO_INSTALL=1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Install {
    /// As root on Debian or Ubuntu, in one apt transaction.
    Allowed,
    /// Name them, with the exact apt command, and stop (exit 2).
    Forbidden,
}

/// The context of one xtask run.
#[derive(Debug, Clone)]
pub struct Context {
    install: Install,
    nix_timeout: Duration,
}

impl Default for Context {
    /// The command line's defaults: installing allowed, Nix's default time limit.
    fn default() -> Context {
        Context {
            install: Install::Allowed,
            nix_timeout: DEFAULT_NIX_TIMEOUT,
        }
    }
}

impl Context {
    /// `nix_timeout` `None` keeps the default (`DEFAULT_NIX_TIMEOUT`).
    pub fn new(install: Install, nix_timeout: Option<Duration>) -> Context {
        Context {
            install,
            nix_timeout: nix_timeout.unwrap_or(DEFAULT_NIX_TIMEOUT),
        }
    }

    pub fn install(&self) -> Install {
        self.install
    }

    /// How long one nix-instantiate may run (`--nix-timeout`).
    pub fn nix_timeout(&self) -> Duration {
        self.nix_timeout
    }

    /// The variables that give child xtask processes (the tests' `cargo
    /// xtask …`, bench's timed checks) the same flags.
    pub fn child_env(&self) -> Vec<(&'static str, String)> {
        let mut env = Vec::new();
        if self.install == Install::Forbidden {
            env.push((NO_INSTALL_ENV, "1".to_owned()));
        }
        if self.nix_timeout != DEFAULT_NIX_TIMEOUT {
            env.push((NIX_TIMEOUT_ENV, self.nix_timeout.as_secs().to_string()));
        }
        env
    }

    /// A shell rooted at the project, for xshell's `cmd!`.
    pub fn shell(&self) -> Result<Shell> {
        crate::project::shell()
    }

    /// Progress of long work: a spinner in a terminal, lines in a log.
    pub fn progress(&self, what: &str) -> Progress {
        Progress::new(what)
    }
}
