//! Supervised child processes: the one runner for programs that may hang,
//! print without end or have to be stopped (nix-instantiate, nix eval and
//! build, qemu). xshell's `cmd!` stays for the simple calls.
//!
//! A supervised child runs with a time limit (waited for with the
//! wait-timeout crate, which wakes on SIGCHLD), its stdout and stderr read
//! by threads while it runs (so that more than a pipe's 64 KiB never blocks
//! it), and a cap on what is kept of each. A child that is dropped before it
//! was waited for is killed and reaped, whatever happens to the caller.

use std::ffi::OsStr;
use std::io::Read as _;
use std::os::unix::process::CommandExt as _;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use camino::Utf8Path;
use wait_timeout::ChildExt as _;

/// A function handed every chunk of a child's output, on the reading thread.
pub type Chunks = Box<dyn FnMut(&[u8]) + Send>;

/// What becomes of one output stream of the child.
pub enum Output {
    /// Read while the child runs; the first `keep` bytes are kept. With
    /// `close_after`, the pipe is closed after one byte more (a child that
    /// keeps writing then gets EPIPE); otherwise the rest is read and dropped.
    Capture { keep: u64, close_after: bool },
    /// Every chunk read is handed to this function, on the reading thread
    /// (qemu's protocol port, read line by line); an empty chunk last, when
    /// the stream ended.
    Each(Chunks),
    /// Goes where the xtask's own stream goes (`nix build -L`).
    Inherit,
    /// Thrown away by the kernel.
    Null,
}

impl Output {
    /// Keeps the first `bytes`, reads and drops the rest.
    pub fn keep(bytes: u64) -> Output {
        Output::Capture {
            keep: bytes,
            close_after: false,
        }
    }

    /// Keeps the first `bytes` and stops reading after one more.
    pub fn at_most(bytes: u64) -> Output {
        Output::Capture {
            keep: bytes,
            close_after: true,
        }
    }

    fn stdio(&self) -> Stdio {
        match self {
            Output::Capture { .. } | Output::Each(_) => Stdio::piped(),
            Output::Inherit => Stdio::inherit(),
            Output::Null => Stdio::null(),
        }
    }
}

/// A child process to run under supervision: build it, then `run` (wait
/// for it within the time limit) or `spawn` (drive it yourself).
pub struct Supervised {
    command: Command,
    name: String,
    timeout: Option<Duration>,
    stdin: bool,
    stdout: Output,
    stderr: Output,
}

impl Supervised {
    /// `program` with stdin from /dev/null and both outputs kept up to 1 MiB.
    pub fn new(program: impl AsRef<OsStr>) -> Supervised {
        let program = program.as_ref();
        let name = std::path::Path::new(program)
            .file_name()
            .unwrap_or(program)
            .to_string_lossy()
            .into_owned();
        Supervised {
            command: Command::new(program),
            name,
            timeout: None,
            stdin: false,
            stdout: Output::keep(1 << 20),
            stderr: Output::keep(1 << 20),
        }
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Supervised {
        self.command.arg(arg);
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Supervised
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.command.args(args);
        self
    }

    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Supervised {
        self.command.env(key, value);
        self
    }

    pub fn current_dir(mut self, dir: impl AsRef<Utf8Path>) -> Supervised {
        self.command.current_dir(dir.as_ref());
        self
    }

    /// Stops the child after `timeout` (`run`, `Running::wait`).
    pub fn timeout(mut self, timeout: Duration) -> Supervised {
        self.timeout = Some(timeout);
        self
    }

    /// Caps the heap of a program that allocates through the Boehm garbage
    /// collector (Nix's evaluator reads `GC_MAXIMUM_HEAP_SIZE`): past it, the
    /// program stops with its own "out of memory" instead of taking the
    /// machine's memory.
    pub fn gc_heap_limit(self, bytes: u64) -> Supervised {
        self.env("GC_MAXIMUM_HEAP_SIZE", bytes.to_string())
    }

    /// A pipe to the child's stdin (`Running::stdin`), instead of /dev/null.
    pub fn stdin_piped(mut self) -> Supervised {
        self.stdin = true;
        self
    }

    pub fn stdout(mut self, output: Output) -> Supervised {
        self.stdout = output;
        self
    }

    pub fn stderr(mut self, output: Output) -> Supervised {
        self.stderr = output;
        self
    }

    /// Runs the child in a process group of its own, so that Ctrl-C in the
    /// terminal reaches the xtask only (which then stops the child itself).
    pub fn own_process_group(mut self) -> Supervised {
        self.command.process_group(0);
        self
    }

    /// The kernel kills the child (SIGKILL) when the xtask dies, even by SIGKILL.
    pub fn die_with_parent(mut self) -> Supervised {
        // SAFETY: prctl is async-signal-safe; it only asks the kernel to kill
        // the child when its parent thread ends.
        unsafe {
            self.command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        self
    }

    /// The program's file name, for messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Starts the child; its outputs are read from now on.
    pub fn spawn(mut self) -> Result<Running> {
        self.command
            .stdin(if self.stdin {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(self.stdout.stdio())
            .stderr(self.stderr.stdio());
        let started = Instant::now();
        let program = self.command.get_program().to_string_lossy().into_owned();
        let mut child = self
            .command
            .spawn()
            .with_context(|| format!("running {program}"))?;
        let stdout = read(child.stdout.take(), self.stdout, &self.name, "output");
        let stderr = read(child.stderr.take(), self.stderr, &self.name, "errors");
        Ok(Running {
            child: Some(child),
            name: self.name,
            started,
            deadline: self.timeout.map(|timeout| (started + timeout, timeout)),
            stdout,
            stderr,
        })
    }

    /// Runs the child to its end, or stops it at the time limit.
    pub fn run(self) -> Result<Finished> {
        self.spawn()?.wait()
    }
}

/// What a reading thread kept: the bytes and whether there were more.
type Kept = (Vec<u8>, bool);

fn read(
    pipe: Option<impl std::io::Read + Send + 'static>,
    output: Output,
    name: &str,
    what: &str,
) -> Option<JoinHandle<std::io::Result<Kept>>> {
    let mut pipe = pipe?;
    let thread = format!("{name}'s {what}");
    let spawned = std::thread::Builder::new().name(thread).spawn(move || {
        match output {
            Output::Capture { keep, close_after } => {
                let mut bytes = Vec::new();
                // One byte past the limit tells that there was more.
                (&mut pipe).take(keep + 1).read_to_end(&mut bytes)?;
                let more = bytes.len() as u64 > keep;
                bytes.truncate(keep as usize);
                if more && !close_after {
                    std::io::copy(&mut pipe, &mut std::io::sink())?;
                }
                Ok((bytes, more))
            }
            Output::Each(mut each) => {
                let mut chunk = [0u8; 8192];
                loop {
                    match pipe.read(&mut chunk) {
                        Ok(0) => {
                            each(&[]);
                            break;
                        }
                        Ok(n) => each(&chunk[..n]),
                        Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(error) => return Err(error),
                    }
                }
                Ok((Vec::new(), false))
            }
            Output::Inherit | Output::Null => Ok((Vec::new(), false)),
        }
    });
    spawned.ok()
}

/// A supervised child that runs. Dropping it kills and reaps the child.
pub struct Running {
    child: Option<Child>,
    name: String,
    started: Instant,
    deadline: Option<(Instant, Duration)>,
    stdout: Option<JoinHandle<std::io::Result<Kept>>>,
    stderr: Option<JoinHandle<std::io::Result<Kept>>>,
}

/// How a supervised child ended and what it printed.
#[derive(Debug)]
pub struct Finished {
    /// The program's file name.
    pub name: String,
    /// `None` when it was stopped: at the time limit, or by `Running::stop`.
    pub status: Option<ExitStatus>,
    /// The time limit it ran under, if any.
    pub timeout: Option<Duration>,
    pub stdout: Vec<u8>,
    /// It printed more than was kept of its stdout.
    pub stdout_truncated: bool,
    pub stderr: Vec<u8>,
    pub stderr_truncated: bool,
    pub elapsed: Duration,
}

impl Finished {
    /// It ran to its end and exited 0.
    pub fn success(&self) -> bool {
        self.status.is_some_and(|status| status.success())
    }

    /// It was stopped at its time limit (or by the caller).
    pub fn stopped(&self) -> bool {
        self.status.is_none()
    }

    /// It ended by a signal rather than an exit (a crash, the OOM killer).
    pub fn killed(&self) -> bool {
        self.status.is_some_and(|status| status.code().is_none())
    }

    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

impl Running {
    fn child(&mut self) -> Result<&mut Child> {
        self.child
            .as_mut()
            .with_context(|| format!("{} was already reaped", self.name))
    }

    /// The child's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// When the child was started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// The pipe to the child's stdin (`Supervised::stdin_piped`), while open.
    pub fn stdin(&mut self) -> Option<&mut ChildStdin> {
        self.child.as_mut().and_then(|child| child.stdin.as_mut())
    }

    /// Closes the child's stdin (it reads end-of-file).
    pub fn close_stdin(&mut self) {
        if let Some(child) = self.child.as_mut() {
            drop(child.stdin.take());
        }
    }

    /// The child's exit status if it ended, without waiting; `None` while it runs.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        let name = self.name.clone();
        self.child()?
            .try_wait()
            .with_context(|| format!("waiting for {name}"))
    }

    /// Whether its time limit (`Supervised::timeout`) has passed: for a
    /// caller that drives the child in a loop of its own.
    pub fn past_time_limit(&self) -> bool {
        self.deadline
            .is_some_and(|(deadline, _)| Instant::now() > deadline)
    }

    /// Waits at most `wait` for the child to end; `None` while it runs.
    pub fn wait_timeout(&mut self, wait: Duration) -> Result<Option<ExitStatus>> {
        let name = self.name.clone();
        self.child()?
            .wait_timeout(wait)
            .with_context(|| format!("waiting for {name}"))
    }

    /// Kills the child (SIGKILL) and reaps it.
    pub fn kill(&mut self) -> Result<ExitStatus> {
        let name = self.name.clone();
        let child = self.child()?;
        // It may have ended meanwhile: then kill fails and wait reaps it.
        let _ = child.kill();
        child.wait().with_context(|| format!("reaping {name}"))
    }

    /// Waits for the child to end, stopping it at the time limit, and
    /// collects what it printed.
    pub fn wait(mut self) -> Result<Finished> {
        let status = match self.deadline {
            Some((deadline, _)) => {
                let left = deadline.saturating_duration_since(Instant::now());
                match self.wait_timeout(left)? {
                    Some(status) => Some(status),
                    None => {
                        self.kill()?;
                        None
                    }
                }
            }
            None => {
                let name = self.name.clone();
                Some(
                    self.child()?
                        .wait()
                        .with_context(|| format!("waiting for {name}"))?,
                )
            }
        };
        self.collect(status)
    }

    /// Ends a driven child whose end the caller decided or saw (it exited,
    /// or `kill` stopped it): kills it if it still runs, reaps it and
    /// collects all it printed, up to the end of its outputs. `status` is
    /// how it ended, never `None`: a caller that stopped it knows why.
    pub fn finish(mut self) -> Result<Finished> {
        // Harmless for a child that was reaped already: it is not signalled
        // again, and its status comes back.
        let status = self.kill()?;
        self.collect(Some(status))
    }

    /// Kills the child now and returns what it printed so far, as a stopped run.
    pub fn stop(mut self) -> Result<Finished> {
        self.kill()?;
        self.collect(None)
    }

    /// The run's outcome once the child was reaped with `status` (`None`:
    /// stopped). A stopped child's output is not waited for: a process it
    /// started may still hold the pipes open, so the readers finish alone.
    fn collect(mut self, status: Option<ExitStatus>) -> Result<Finished> {
        self.child = None;
        let elapsed = self.started.elapsed();
        let (stdout, stderr) = (self.stdout.take(), self.stderr.take());
        let ((stdout, stdout_truncated), (stderr, stderr_truncated)) = if status.is_none() {
            ((Vec::new(), false), (Vec::new(), false))
        } else {
            (
                join(stdout, &self.name, "output")?,
                join(stderr, &self.name, "errors")?,
            )
        };
        Ok(Finished {
            name: self.name.clone(),
            status,
            timeout: self.deadline.map(|(_, timeout)| timeout),
            stdout,
            stdout_truncated,
            stderr,
            stderr_truncated,
            elapsed,
        })
    }
}

fn join(reader: Option<JoinHandle<std::io::Result<Kept>>>, name: &str, what: &str) -> Result<Kept> {
    let Some(reader) = reader else {
        return Ok((Vec::new(), false));
    };
    reader
        .join()
        .map_err(|_| anyhow::anyhow!("the thread reading {name}'s {what} panicked"))?
        .with_context(|| format!("reading {name}'s {what}"))
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Supervised {
        Supervised::new("sh").args(["-c", script])
    }

    #[test]
    fn more_than_a_pipe_holds_on_both_streams_never_blocks_the_child() {
        // 1 MiB on stderr and on stdout: a runner that read neither while
        // waiting would wait for the time limit here.
        let finished = sh("head -c 1048576 /dev/zero >&2; head -c 1048576 /dev/zero")
            .timeout(Duration::from_secs(60))
            .stdout(Output::keep(4 << 20))
            .stderr(Output::keep(64))
            .run()
            .unwrap();
        assert!(finished.success(), "{finished:?}");
        assert_eq!(finished.stdout.len(), 1 << 20);
        assert!(!finished.stdout_truncated);
        assert_eq!(finished.stderr.len(), 64);
        assert!(finished.stderr_truncated);
    }

    #[test]
    fn a_child_past_its_time_limit_is_stopped() {
        let finished = sh("sleep 30")
            .timeout(Duration::from_millis(200))
            .run()
            .unwrap();
        assert!(finished.stopped());
        assert!(finished.elapsed < Duration::from_secs(10), "{finished:?}");
        assert_eq!(finished.timeout, Some(Duration::from_millis(200)));
    }

    #[test]
    fn output_past_its_cap_closes_the_pipe() {
        // `yes` never ends by itself: only the closed pipe ends it.
        let finished = Supervised::new("yes")
            .timeout(Duration::from_secs(60))
            .stdout(Output::at_most(1000))
            .run()
            .unwrap();
        assert!(finished.stdout_truncated);
        assert_eq!(finished.stdout.len(), 1000);
        assert!(!finished.stopped(), "ended by EPIPE, not the time limit");
    }

    #[test]
    fn exit_codes_signals_and_the_environment_come_through() {
        let finished = sh("printf %s \"$GC_MAXIMUM_HEAP_SIZE\"; exit 3")
            .gc_heap_limit(12345)
            .run()
            .unwrap();
        assert_eq!(finished.status.and_then(|s| s.code()), Some(3));
        assert_eq!(finished.stdout_text(), "12345");
        let killed = sh("kill -9 $$").run().unwrap();
        assert!(killed.killed(), "{killed:?}");
    }

    #[test]
    fn a_driven_child_streams_its_output_and_takes_input() {
        let (lines, received) = std::sync::mpsc::channel();
        let mut running = sh("read x; echo \"got $x\"; sleep 30")
            .stdin_piped()
            .stdout(Output::Each(Box::new(move |chunk| {
                let _ = lines.send(chunk.to_vec());
            })))
            .own_process_group()
            .die_with_parent()
            .spawn()
            .unwrap();
        std::io::Write::write_all(running.stdin().unwrap(), b"ping\n").unwrap();
        let chunk = received.recv_timeout(Duration::from_secs(30)).unwrap();
        assert_eq!(chunk, b"got ping\n");
        assert_eq!(
            running.wait_timeout(Duration::from_millis(10)).unwrap(),
            None
        );
        let stopped = running.stop().unwrap();
        assert!(stopped.stopped());
    }

    #[test]
    fn a_child_driven_in_a_loop_ends_at_its_time_limit_with_all_it_printed() {
        let (chunks, received) = std::sync::mpsc::channel();
        // `exec`: no shell lives on holding the pipes after the kill.
        let mut running = sh("head -c 100000 /dev/zero >&2; echo last; exec sleep 30")
            .timeout(Duration::from_millis(500))
            .stdout(Output::Each(Box::new(move |chunk| {
                let _ = chunks.send(chunk.to_vec());
            })))
            .stderr(Output::keep(1 << 20))
            .spawn()
            .unwrap();
        let first = received.recv_timeout(Duration::from_secs(30)).unwrap();
        assert_eq!(first, b"last\n");
        while !running.past_time_limit() {
            assert_eq!(running.try_wait().unwrap(), None);
            std::thread::sleep(Duration::from_millis(10));
        }
        let finished = running.finish().unwrap();
        assert!(finished.killed(), "{finished:?}");
        assert_eq!(finished.stderr.len(), 100000);
        // The reader has ended: the end of the stream came as an empty chunk.
        let rest: Vec<Vec<u8>> = received.iter().collect();
        assert_eq!(rest, [Vec::<u8>::new()]);

        let mut exited = sh("echo bye; exit 4").spawn().unwrap();
        let status = loop {
            if let Some(status) = exited.try_wait().unwrap() {
                break status;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        assert!(!exited.past_time_limit(), "it has no time limit");
        let finished = exited.finish().unwrap();
        assert_eq!(finished.status, Some(status));
        assert_eq!(status.code(), Some(4));
        assert_eq!(finished.stdout_text(), "bye\n");
    }

    #[test]
    fn a_dropped_child_is_killed() {
        let running = sh("sleep 30").spawn().unwrap();
        let pid = running.pid().unwrap();
        drop(running);
        // Reaped: the pid is gone (or, rarely, reused by another process).
        let status = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        assert!(!status.contains("sleep"), "{status}");
    }
}
