//! Progress of long work (VM boots, apt-get, benchmarks, fuzzing, the fresh
//! machine): an indicatif spinner when stderr is a terminal; otherwise (CI
//! logs, pipes) one plain line per step, with the time since the start, so
//! that a log shows what runs and for how long without any redraws.

use std::io::IsTerminal as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Where progress goes. Cheap to clone; clones report to the same place.
#[derive(Debug, Clone)]
pub struct Progress {
    inner: Inner,
}

#[derive(Debug, Clone)]
enum Inner {
    Bar(ProgressBar),
    Lines(Arc<Lines>),
    Hidden,
}

#[derive(Debug)]
struct Lines {
    what: String,
    started: Instant,
    last: Mutex<String>,
}

impl Progress {
    /// A spinner in a terminal, one line per step elsewhere. `what` names
    /// the command in the plain lines (`vm-test`, `apt-get`).
    pub fn new(what: &str) -> Progress {
        if std::io::stderr().is_terminal() {
            Progress::spinner()
        } else {
            Progress::lines(what)
        }
    }

    /// `new` when `show`, else `hidden`.
    pub fn shown_if(show: bool, what: &str) -> Progress {
        if show {
            Progress::new(what)
        } else {
            Progress::hidden()
        }
    }

    /// Plain lines on stderr, whatever stderr is.
    pub fn lines(what: &str) -> Progress {
        Progress {
            inner: Inner::Lines(Arc::new(Lines {
                what: what.to_owned(),
                started: Instant::now(),
                last: Mutex::new(String::new()),
            })),
        }
    }

    /// Reports nothing.
    pub fn hidden() -> Progress {
        Progress {
            inner: Inner::Hidden,
        }
    }

    fn spinner() -> Progress {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        Progress {
            inner: Inner::Bar(bar),
        }
    }

    /// The step now running. As plain lines, a line only when it changes.
    pub fn set_message(&self, message: impl Into<String>) {
        let message = message.into();
        match &self.inner {
            Inner::Bar(bar) => bar.set_message(message),
            Inner::Lines(lines) => {
                let mut last = lines.last.lock().unwrap_or_else(|e| e.into_inner());
                if *last != message {
                    eprintln!("{}", lines.line(&message));
                    *last = message;
                }
            }
            Inner::Hidden => {}
        }
    }

    /// Detail of the running step (e.g. apt-get's latest line): shown by the
    /// spinner, left out of plain lines, which stay one per step.
    pub fn set_detail(&self, detail: impl Into<String>) {
        if let Inner::Bar(bar) = &self.inner {
            bar.set_message(detail.into());
        }
    }

    /// A line that stays (a result), printed above the spinner.
    pub fn println(&self, line: impl AsRef<str>) {
        match &self.inner {
            Inner::Bar(bar) => bar.suspend(|| eprintln!("{}", line.as_ref())),
            Inner::Lines(_) => eprintln!("{}", line.as_ref()),
            Inner::Hidden => {}
        }
    }

    /// Runs `f` with the spinner out of the way (for output of its own).
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.inner {
            Inner::Bar(bar) => bar.suspend(f),
            _ => f(),
        }
    }

    /// Removes the spinner.
    pub fn finish_and_clear(&self) {
        if let Inner::Bar(bar) = &self.inner {
            bar.finish_and_clear();
        }
    }

    /// Runs one step: shows it while it runs and prints its time after.
    pub fn step<R>(&self, name: &str, f: impl FnOnce() -> R) -> R {
        let started = Instant::now();
        self.set_message(name.to_owned());
        let result = f();
        self.println(format!("{name}: {}", seconds(started.elapsed())));
        result
    }
}

impl Lines {
    fn line(&self, message: &str) -> String {
        format!(
            "[{:>7}] {}: {message}",
            seconds(self.started.elapsed()),
            self.what
        )
    }
}

/// `12.3 s`.
pub fn seconds(duration: Duration) -> String {
    format!("{:.1} s", duration.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_lines_name_the_command_and_the_time() {
        let lines = Lines {
            what: "vm-test".to_owned(),
            started: Instant::now(),
            last: Mutex::new(String::new()),
        };
        let line = lines.line("boot 1/3 install: rollback");
        assert!(
            line.starts_with("[  0.0 s] vm-test: boot 1/3 install: rollback"),
            "{line}"
        );
    }

    #[test]
    fn seconds_have_one_decimal() {
        assert_eq!(seconds(Duration::from_millis(23_456)), "23.5 s");
    }
}
