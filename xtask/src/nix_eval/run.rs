//! Running a Nix program within its limits: a time limit, a heap limit for
//! its garbage collector and a cap on the output read, on the supervised
//! runner; what a failed run means (the tool, or the files).

use std::process::ExitStatus;
use std::time::Duration;

use anyhow::Result;
use camino::Utf8Path;

use super::{store, NixError, MAX_ERROR_BYTES, TIMEOUT_ENV};
use toolbox::process::{Output, Supervised};
use toolbox::project::project_root;

/// The limits of one run of a Nix program.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    pub(super) timeout: Duration,
    /// `GC_MAXIMUM_HEAP_SIZE`; `None` leaves the evaluator unbounded (flake
    /// mode evaluates all of NixOS).
    pub(super) max_heap_bytes: Option<u64>,
    pub(super) max_output_bytes: u64,
}

/// What one run of a Nix program left behind.
pub(super) struct Ran {
    pub(super) program: String,
    /// `None` when it was stopped after `limits.timeout`.
    pub(super) status: Option<ExitStatus>,
    pub(super) stdout: Vec<u8>,
    /// It printed more than `limits.max_output_bytes` (the rest was not read).
    pub(super) output_too_large: bool,
    pub(super) stderr: String,
    pub(super) limits: Limits,
}

impl Ran {
    pub(super) fn output_too_large(&self) -> bool {
        self.output_too_large
    }

    pub(super) fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success()) && !self.output_too_large()
    }

    /// Whether it failed because of the tool rather than the files: the
    /// store, a crash (a signal), or the time limit.
    pub(super) fn tool_failure(&self) -> Option<store::StoreFailure> {
        match self.status {
            None => Some(store::StoreFailure::Unusable),
            Some(status) if status.code().is_none() => Some(store::StoreFailure::Unusable),
            Some(status) if status.success() => None,
            Some(_) => store::classify(&self.stderr),
        }
    }

    /// `Err` for a failure of the tool, with its own message and the command.
    pub(super) fn into_result(self) -> Result<Ran> {
        if self.tool_failure().is_none() {
            return Ok(self);
        }
        let said = self.error().message;
        if self.status.is_none() {
            // Says what to do already; whether the config loops or the
            // machine is slow cannot be told apart, so it is no finding.
            anyhow::bail!("{said}");
        }
        anyhow::bail!(
            "{} failed: {said}\n  (a failure of Nix itself, not a finding about the files it read: run the command again; if it persists, repair the Nix installation)",
            self.program
        )
    }

    /// Why it failed: Nix's own message, or how the process ended.
    pub(super) fn error(&self) -> NixError {
        let ended = |message: String| NixError {
            message,
            location: None,
        };
        if self.output_too_large() {
            return ended(format!(
                "the evaluated config is larger than {} MiB of JSON; check reads no more",
                self.limits.max_output_bytes >> 20
            ));
        }
        match self.status {
            None => ended(format!(
                "{} did not finish within {} s and was stopped (a config that loops or computes without end; set {TIMEOUT_ENV}=<seconds> to allow longer)",
                self.program,
                self.limits.timeout.as_secs()
            )),
            Some(status) if status.code().is_none() => {
                let said = NixError::parse(&self.stderr);
                ended(format!(
                    "{} was killed ({status}){}",
                    self.program,
                    if self.stderr.trim().is_empty() {
                        String::new()
                    } else {
                        format!(": {}", said.message)
                    }
                ))
            }
            Some(_) => NixError::parse(&self.stderr),
        }
    }
}

/// `run_limited`, tried again while Nix fails for a transient store reason
/// (another process initialising it, a busy database).
pub(super) fn run_retrying(
    program: &Utf8Path,
    args: &[&str],
    env: &[(&str, &str)],
    limits: Limits,
) -> Result<Ran> {
    let mut attempt = 0;
    loop {
        let ran = run_limited(program, args, env, limits)?;
        attempt += 1;
        if attempt >= store::ATTEMPTS || ran.tool_failure() != Some(store::StoreFailure::Transient)
        {
            return Ok(ran);
        }
        std::thread::sleep(store::backoff(attempt - 1));
    }
}

/// Runs a Nix program within `limits` (the supervised runner reads its
/// output while it runs).
pub(super) fn run_limited(
    program: &Utf8Path,
    args: &[&str],
    env: &[(&str, &str)],
    limits: Limits,
) -> Result<Ran> {
    let mut supervised = Supervised::new(program)
        .args(args)
        .current_dir(project_root())
        .timeout(limits.timeout)
        // Past the limit the pipe is closed, which ends a child that keeps writing.
        .stdout(Output::at_most(limits.max_output_bytes))
        .stderr(Output::keep(MAX_ERROR_BYTES));
    for (key, value) in env {
        supervised = supervised.env(key, value);
    }
    if let Some(bytes) = limits.max_heap_bytes {
        supervised = supervised.gc_heap_limit(bytes);
    }
    let finished = supervised.run()?;
    Ok(Ran {
        program: finished.name.clone(),
        status: finished.status,
        output_too_large: finished.stdout_truncated,
        stderr: finished.stderr_text(),
        stdout: finished.stdout,
        limits,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(seconds: u64, max_output_bytes: u64) -> Limits {
        Limits {
            timeout: Duration::from_secs(seconds),
            max_heap_bytes: None,
            max_output_bytes,
        }
    }

    #[test]
    fn output_larger_than_a_pipe_is_read_while_it_runs() {
        let sh = Utf8Path::new("/bin/sh");
        let ran = run_limited(
            sh,
            &["-c", "head -c 1000000 /dev/zero; echo oops >&2; exit 3"],
            &[],
            limits(60, 1 << 20),
        )
        .unwrap();
        assert_eq!(ran.stdout.len(), 1_000_000);
        assert_eq!(ran.status.and_then(|s| s.code()), Some(3));
        assert!(!ran.success());
        assert_eq!(ran.error().message, "oops");
    }

    #[test]
    fn output_past_the_limit_is_not_read() {
        let ran = run_limited(
            Utf8Path::new("/bin/sh"),
            &["-c", "cat /dev/zero"],
            &[],
            limits(60, 4096),
        )
        .unwrap();
        assert!(ran.output_too_large());
        assert!(!ran.success());
        assert!(
            ran.error().message.contains("larger than"),
            "{}",
            ran.error().message
        );
    }

    #[test]
    fn runs_past_the_time_limit_are_stopped() {
        let started = std::time::Instant::now();
        let ran = run_limited(
            Utf8Path::new("/bin/sh"),
            &["-c", "sleep 30"],
            &[],
            limits(1, 4096),
        )
        .unwrap();
        assert!(started.elapsed() < Duration::from_secs(20));
        assert!(ran.status.is_none());
        let message = ran.error().message;
        assert!(message.contains("did not finish within 1 s"), "{message}");
        assert!(message.contains(TIMEOUT_ENV), "{message}");
    }

    #[test]
    fn a_crash_or_the_time_limit_is_a_failure_of_the_tool_not_a_finding() {
        let sh = Utf8Path::new("/bin/sh");
        let crashed = run_limited(sh, &["-c", "kill -SEGV $$"], &[], limits(60, 4096)).unwrap();
        let error = crashed
            .into_result()
            .err()
            .expect("a failure of the tool")
            .to_string();
        assert!(error.contains("was killed"), "{error}");
        assert!(error.contains("not a finding"), "{error}");
        let stopped = run_limited(sh, &["-c", "sleep 30"], &[], limits(1, 4096)).unwrap();
        let error = stopped
            .into_result()
            .err()
            .expect("a failure of the tool")
            .to_string();
        assert!(error.contains("did not finish within 1 s"), "{error}");
        let store = run_limited(
            sh,
            &[
                "-c",
                "echo \"error: SQLite database '/nix/var/nix/db/db.sqlite' is busy\" >&2; exit 1",
            ],
            &[],
            limits(60, 4096),
        )
        .unwrap();
        assert_eq!(store.tool_failure(), Some(store::StoreFailure::Transient));
        let config = run_limited(
            sh,
            &["-c", "echo \"error: undefined variable 'y'\" >&2; exit 1"],
            &[],
            limits(60, 4096),
        )
        .unwrap();
        assert_eq!(config.tool_failure(), None);
        assert!(config.into_result().is_ok());
    }

    #[test]
    fn transient_store_failures_are_retried_then_reported() {
        let dir = tempfile::tempdir().unwrap();
        let count = dir.path().join("count");
        let script = format!(
            "echo x >> {0}; [ $(wc -l < {0}) -ge 3 ] && {{ echo ok; exit 0; }}; echo \"error: SQLite database '/nix/var/nix/db/db.sqlite' is busy\" >&2; exit 1",
            count.display()
        );
        let ran = run_retrying(
            Utf8Path::new("/bin/sh"),
            &["-c", &script],
            &[],
            limits(60, 4096),
        )
        .unwrap();
        assert!(ran.success(), "{}", ran.stderr);
        assert_eq!(std::fs::read_to_string(&count).unwrap().lines().count(), 3);
        let always =
            "echo \"error: SQLite database '/nix/var/nix/db/db.sqlite' is busy\" >&2; exit 1";
        let ran = run_retrying(
            Utf8Path::new("/bin/sh"),
            &["-c", always],
            &[],
            limits(60, 4096),
        )
        .unwrap();
        let error = ran
            .into_result()
            .err()
            .expect("a failure of the tool")
            .to_string();
        assert!(
            error.contains("is busy") && error.contains("not a finding"),
            "{error}"
        );
    }
}
