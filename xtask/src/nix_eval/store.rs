//! The Nix store as a tool, not as part of the user's files: making its first
//! use safe, and telling its failures from errors in the config.
//!
//! On an empty Nix database (right after `apt-get install nix-bin`) the first
//! Nix processes create the database, its schema and the gcroots symlinks.
//! Nix 2.8 does that without locking, so processes started at once fail with
//! "SQLite database … is busy", "'…/db/schema' is corrupt" or "creating
//! symlink from '…/gcroots/profiles' …: File exists". `prepare` therefore
//! runs one Nix process alone, under a lock, before any run in parallel; and
//! such messages are retried, never reported as a finding.

use std::os::fd::AsRawFd as _;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context as _, Result};
use camino::{Utf8Path, Utf8PathBuf};

/// How often a run that failed for a transient store reason is tried in all.
pub const ATTEMPTS: u32 = 6;

/// The wait before attempt `attempt + 1` (50 ms, doubling, at most 1.6 s).
pub fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(50 << attempt.min(5))
}

/// Why a Nix run failed, when it was not the evaluated files' fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreFailure {
    /// A race while the store initialises, or a busy database: try again.
    Transient,
    /// The store cannot be used here (permissions, a broken installation).
    Unusable,
}

/// Nix's state directory (`NIX_STATE_DIR`, else /nix/var/nix).
pub fn state_dir() -> Utf8PathBuf {
    std::env::var("NIX_STATE_DIR")
        .ok()
        .filter(|dir| !dir.is_empty())
        .map_or_else(|| Utf8PathBuf::from("/nix/var/nix"), Utf8PathBuf::from)
}

/// Whether Nix's error output is about its store rather than about the
/// files it read. Errors in a config never name the state directory, the
/// database or the daemon.
pub fn classify(stderr: &str) -> Option<StoreFailure> {
    classify_in(stderr, state_dir().as_str())
}

fn classify_in(stderr: &str, state_dir: &str) -> Option<StoreFailure> {
    let transient = stderr.lines().any(|line| {
        let line = line.trim();
        (line.contains("SQLite database") && line.contains("is busy"))
            || line.contains("database is locked")
            || (line.contains("creating symlink from") && line.ends_with("File exists"))
            || (line.contains("/db/schema'") && line.contains("is corrupt"))
    });
    if transient {
        return Some(StoreFailure::Transient);
    }
    let unusable = stderr.lines().any(|line| {
        let Some(message) = line.trim().strip_prefix("error:") else {
            return false;
        };
        names_the_state_dir(message, state_dir)
            || message.contains("SQLite")
            || message.contains("daemon-socket")
            || message.contains("nix-daemon")
            || message.contains("cannot open connection to remote store")
            || message.contains("big-lock")
    });
    unusable.then_some(StoreFailure::Unusable)
}

/// Whether a quoted path of the message is the state directory, inside it,
/// or one of its parents (Nix creates those too: "creating directory '/nix/var'").
fn names_the_state_dir(message: &str, state_dir: &str) -> bool {
    let state = Utf8Path::new(state_dir);
    message
        .split('\'')
        .skip(1)
        .step_by(2)
        .map(Utf8Path::new)
        .filter(|path| path.is_absolute() && *path != Utf8Path::new("/"))
        .any(|path| path.starts_with(state) || state.starts_with(path))
        || message.contains(state_dir)
}

/// Whether the local store has been initialised: its database, schema and
/// the gcroots link that the first Nix process creates last.
fn initialised(state: &Utf8Path) -> bool {
    let schema_written =
        std::fs::metadata(state.join("db").join("schema")).is_ok_and(|m| m.len() > 0);
    schema_written
        && state.join("db").join("db.sqlite").is_file()
        && std::fs::symlink_metadata(state.join("gcroots").join("profiles")).is_ok()
}

/// Where a successful preparation of `state` is remembered: Nix 2.8 as
/// Debian ships it never creates gcroots/profiles, so without this every
/// `check` ran one more Nix process, alone, before its evaluation.
fn prepared_marker() -> std::path::PathBuf {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    std::env::temp_dir().join(format!("xtask-nix-store-{uid}.prepared"))
}

/// This store's identity: its state directory and its database file (a
/// store deleted and made again has a new database inode).
fn store_identity(state: &Utf8Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt as _;
    let schema_written =
        std::fs::metadata(state.join("db").join("schema")).is_ok_and(|m| m.len() > 0);
    let database = std::fs::metadata(state.join("db").join("db.sqlite")).ok()?;
    (schema_written && database.is_file())
        .then(|| format!("{state}\n{}:{}\n", database.dev(), database.ino()))
}

/// Whether a Nix process of ours already ran to success on this very store.
fn prepared_before(state: &Utf8Path) -> bool {
    store_identity(state).is_some_and(|identity| {
        std::fs::read_to_string(prepared_marker()).is_ok_and(|marker| marker == identity)
    })
}

fn remember_prepared(state: &Utf8Path) {
    if let Some(identity) = store_identity(state) {
        // Not written: the next run prepares again, nothing worse.
        let _ = std::fs::write(prepared_marker(), identity);
    }
}

/// An exclusive lock held until dropped (flock on a file in the temp dir,
/// shared by every xtask of this user on this machine).
struct Lock(std::fs::File);

impl Lock {
    fn take() -> Result<Lock> {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let uid = unsafe { libc::geteuid() };
        let path = std::env::temp_dir().join(format!("xtask-nix-store-{uid}.lock"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening the lock file {}", path.display()))?;
        loop {
            // SAFETY: the descriptor is open for as long as `file` lives.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
                return Ok(Lock(file));
            }
            let error = std::io::Error::last_os_error();
            if error.kind() != std::io::ErrorKind::Interrupted {
                return Err(error).with_context(|| format!("locking {}", path.display()));
            }
        }
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        // SAFETY: as above; closing the file would release it too.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

/// Makes sure the store is initialised before Nix runs in parallel: when it
/// is not, one `nix-instantiate --eval --expr 1` runs alone, under a lock
/// that other xtask processes respect, retried while the store is busy.
/// Runs once per process. `Err` carries Nix's own message.
pub fn prepare(instantiate: &Utf8Path, timeout: Duration) -> Result<()> {
    static PREPARED: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    PREPARED
        .get_or_init(|| prepare_now(instantiate, timeout).map_err(|error| format!("{error:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

fn prepare_now(instantiate: &Utf8Path, timeout: Duration) -> Result<()> {
    // A daemon owns its store; asking it is safe in parallel.
    if std::env::var("NIX_REMOTE").is_ok_and(|remote| !remote.is_empty() && remote != "local") {
        return Ok(());
    }
    let state = state_dir();
    if initialised(&state) || prepared_before(&state) {
        return Ok(());
    }
    let _lock = Lock::take()?;
    if initialised(&state) || prepared_before(&state) {
        return Ok(());
    }
    let mut last = String::new();
    for attempt in 0..ATTEMPTS {
        let ran = toolbox::process::Supervised::new(instantiate)
            .args(["--eval", "--expr", "1"])
            .timeout(timeout)
            .run()?;
        if ran.success() {
            remember_prepared(&state);
            return Ok(());
        }
        if ran.stopped() {
            last = format!(
                "error: it did not finish within {} s and was stopped",
                timeout.as_secs()
            );
            break;
        }
        last = ran.stderr_text().trim().to_owned();
        if classify(&last) != Some(StoreFailure::Transient) {
            break;
        }
        std::thread::sleep(backoff(attempt));
    }
    anyhow::bail!(
        "the Nix store ({state}) could not be initialised: `{instantiate} --eval --expr 1` failed ({}); this is a problem of the Nix installation, not of the files checked",
        last.lines()
            .filter(|l| l.trim_start().starts_with("error:"))
            .collect::<Vec<_>>()
            .join("; ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATE: &str = "/nix/var/nix";

    #[test]
    fn races_of_a_first_run_are_transient() {
        for stderr in [
            "error: SQLite database '/nix/var/nix/db/db.sqlite' is busy",
            "error: creating symlink from '/nix/var/nix/gcroots/profiles' to '/nix/var/nix/profiles': File exists",
            "error: '/nix/var/nix/db/schema' is corrupt",
            "warning: x\nerror: executing SQLite statement: database is locked",
        ] {
            assert_eq!(
                classify_in(stderr, STATE),
                Some(StoreFailure::Transient),
                "{stderr}"
            );
        }
    }

    #[test]
    fn an_unusable_store_is_no_finding() {
        for stderr in [
            "error: creating directory '/nix/var': Permission denied",
            "error: opening lock file '/nix/var/nix/db/big-lock': Permission denied",
            "error: cannot open connection to remote store 'daemon': error: reading from file: Connection reset by peer",
        ] {
            assert_eq!(
                classify_in(stderr, STATE),
                Some(StoreFailure::Unusable),
                "{stderr}"
            );
        }
    }

    #[test]
    fn errors_in_a_config_are_the_configs() {
        for stderr in [
            "error: undefined variable 'y'\n\n       at /tmp/u.nix:1:7:",
            "error: syntax error, unexpected '}'\n       at /work/repo/disko.nix:3:1:",
            "error: creating symlink in a string: File exists is not a Nix error",
            "error: out of memory",
            "error: opening file '/': Is a directory",
            "error: stack overflow (possible infinite recursion)",
            "warning: the group 'nixbld' specified in 'build-users-group' does not exist\nerror: attribute 'x' missing",
        ] {
            assert_eq!(classify_in(stderr, STATE), None, "{stderr}");
        }
    }

    #[test]
    fn waits_grow_and_stay_bounded() {
        assert_eq!(backoff(0), Duration::from_millis(50));
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(40), Duration::from_millis(1600));
    }
}
