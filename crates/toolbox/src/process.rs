//! Supervised child processes: the one runner for every program the host
//! side starts, from `git rev-parse` to qemu. Build a command with
//! `Supervised::new`, or with xshell's `cmd!` or std's `Command` and hand it
//! to `Supervised::from_command`; then `read` (its stdout, exit 0 required),
//! `checked` (exit 0 required), `status`, `run` (everything it printed) or
//! `spawn` (drive it yourself). xtask/tests/one_runner.rs fails when a file
//! of the host side starts a process any other way.
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
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
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

    /// Every line, with its newline (the last one may have none), handed
    /// to `each` on the reading thread as it comes.
    pub fn lines(mut each: impl FnMut(&[u8]) + Send + 'static) -> Output {
        let mut pending = Vec::new();
        Output::Each(Box::new(move |chunk: &[u8]| {
            if chunk.is_empty() {
                if !pending.is_empty() {
                    each(&pending);
                    pending.clear();
                }
                return;
            }
            pending.extend_from_slice(chunk);
            while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                let rest = pending.split_off(end + 1);
                each(&pending);
                pending = rest;
            }
        }))
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
    interrupt: Option<&'static Interrupt>,
}

/// An interruption a signal handler asks for: the flag it sets and the
/// process group of the child that runs, which the handler signals. The
/// runner publishes the group while the child runs, refuses to start a
/// child once interrupted, and after an interrupted child waits for the
/// rest of its group (a build, the tests) to end, killing it after 10 s.
pub struct Interrupt {
    requested: AtomicBool,
    group: AtomicI32,
}

impl Interrupt {
    pub const fn new() -> Interrupt {
        Interrupt {
            requested: AtomicBool::new(false),
            group: AtomicI32::new(0),
        }
    }

    /// Whether an interruption was asked for.
    pub fn requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }

    /// For the signal handler: marks the interruption and sends SIGTERM to
    /// the running child's process group (async-signal-safe: two atomics
    /// and kill(2)).
    pub fn interrupt(&self) {
        self.requested.store(true, Ordering::SeqCst);
        let group = self.group.load(Ordering::SeqCst);
        if group > 0 {
            // SAFETY: signalling a process group this process started.
            unsafe { libc::kill(-group, libc::SIGTERM) };
        }
    }
}

impl Default for Interrupt {
    fn default() -> Interrupt {
        Interrupt::new()
    }
}

/// Waits up to 10 s for a process group to end (after SIGTERM), then kills it.
fn stop_group(group: i32) {
    let alive = || {
        // SAFETY: signal 0 only asks whether the group still exists.
        unsafe { libc::kill(-group, 0) == 0 }
    };
    let wait = || {
        let deadline = Instant::now() + Duration::from_secs(10);
        while alive() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait();
    if alive() {
        // SAFETY: as above, a group this process started.
        unsafe { libc::kill(-group, libc::SIGKILL) };
        wait();
    }
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
        Supervised::from_command(Command::new(program)).named(name)
    }

    /// A command built elsewhere: std's `Command`, or xshell's `cmd!` (its
    /// `Cmd` converts into a `Command` with the shell's directory and
    /// variables). Stdin is /dev/null and both outputs are kept up to 1 MiB,
    /// as with `new`: the runner sets the three streams, not the command.
    pub fn from_command(command: impl Into<Command>) -> Supervised {
        let command = command.into();
        let program = command.get_program();
        let name = std::path::Path::new(program)
            .file_name()
            .unwrap_or(program)
            .to_string_lossy()
            .into_owned();
        Supervised {
            command,
            name,
            timeout: None,
            stdin: false,
            stdout: Output::keep(1 << 20),
            stderr: Output::keep(1 << 20),
            interrupt: None,
        }
    }

    /// The name messages give the program (its file name by default).
    pub fn named(mut self, name: impl Into<String>) -> Supervised {
        self.name = name.into();
        self
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

    pub fn envs<I, K, V>(mut self, vars: I) -> Supervised
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        self.command.envs(vars);
        self
    }

    /// The child starts with no variables but those given with `env`.
    pub fn env_clear(mut self) -> Supervised {
        self.command.env_clear();
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

    /// Both outputs go where the xtask's go (a long build the user
    /// watches, cargo test's report).
    pub fn inherit_output(self) -> Supervised {
        self.stdout(Output::Inherit).stderr(Output::Inherit)
    }

    /// Runs the child in a process group of its own that `interrupt`'s
    /// signal handler stops; see `Interrupt`.
    pub fn interruptible(mut self, interrupt: &'static Interrupt) -> Supervised {
        self.interrupt = Some(interrupt);
        self.own_process_group()
    }

    /// Runs `hook` in the child between fork and exec (a resource limit,
    /// a namespace).
    ///
    /// # Safety
    /// As `std::os::unix::process::CommandExt::pre_exec`: `hook` runs in a
    /// forked copy of a threaded process and may only make
    /// async-signal-safe calls.
    pub unsafe fn pre_exec(
        mut self,
        hook: impl FnMut() -> std::io::Result<()> + Send + Sync + 'static,
    ) -> Supervised {
        // SAFETY: the caller's promise, above.
        unsafe { self.command.pre_exec(hook) };
        self
    }

    /// Runs the child in a private mount namespace whose root is `root`
    /// (bound onto itself, made the root with pivot_root, the old root
    /// detached), as on a machine booted from it. Not chroot(2): a program
    /// that re-enters its mount namespace with setns(2), as Nix does before
    /// it runs git for a flake, would escape a chroot to the host.
    pub fn in_root(mut self, root: &Utf8Path) -> Supervised {
        let new_root = std::ffi::CString::new(root.as_str());
        // SAFETY: the closure runs in the child between fork and exec and
        // makes only async-signal-safe system calls on memory prepared
        // before the fork.
        unsafe {
            self.command.pre_exec(move || {
                let new_root = new_root
                    .as_ref()
                    .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
                enter_root(new_root)
            });
        }
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
        if self.interrupt.is_some_and(Interrupt::requested) {
            bail!("interrupted");
        }
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
        if let Some(interrupt) = self.interrupt {
            let group = i32::try_from(child.id()).unwrap_or(0);
            interrupt.group.store(group, Ordering::SeqCst);
        }
        let stdout = read(child.stdout.take(), self.stdout, &self.name, "output");
        let stderr = read(child.stderr.take(), self.stderr, &self.name, "errors");
        Ok(Running {
            child: Some(child),
            name: self.name,
            started,
            deadline: self.timeout.map(|timeout| (started + timeout, timeout)),
            stdout,
            stderr,
            interrupt: self.interrupt,
        })
    }

    /// Runs the child to its end, or stops it at the time limit.
    pub fn run(self) -> Result<Finished> {
        let interrupt = self.interrupt;
        let finished = self.spawn()?.wait();
        if interrupt.is_some_and(Interrupt::requested) {
            bail!("interrupted");
        }
        finished
    }

    /// Runs the child and returns how it exited; an error when it could not
    /// start or was stopped at its time limit.
    pub fn status(self) -> Result<ExitStatus> {
        let finished = self.run()?;
        finished.status.ok_or_else(|| finished.stopped_error())
    }

    /// Runs the child and fails unless it exited 0, with an error that
    /// names the program, how it ended and what it printed on stderr.
    pub fn checked(self) -> Result<Finished> {
        self.run()?.check()
    }

    /// The stdout of a run that must exit 0 (`checked`), as text without
    /// its last newline.
    pub fn read(self) -> Result<String> {
        let mut text = self.checked()?.stdout_text();
        if text.ends_with('\n') {
            text.pop();
        }
        Ok(text)
    }
}

/// In a child: a private mount namespace, `root` bound onto itself
/// (pivot_root needs a mount point), made the namespace's root, the old
/// root detached.
fn enter_root(root: &std::ffi::CStr) -> std::io::Result<()> {
    fn check(result: libc::c_int) -> std::io::Result<()> {
        if result == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }
    let dot = c".";
    let slash = c"/";
    // SAFETY: plain system calls on NUL-terminated strings that outlive them.
    unsafe {
        check(libc::unshare(libc::CLONE_NEWNS))?;
        check(libc::mount(
            std::ptr::null(),
            slash.as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ))?;
        check(libc::mount(
            root.as_ptr(),
            root.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND | libc::MS_REC,
            std::ptr::null(),
        ))?;
        check(libc::chdir(root.as_ptr()))?;
        // pivot_root(".", ".") stacks the old root on the new one; detaching
        // the top of "." then leaves only the new root.
        check(libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), dot.as_ptr()) as libc::c_int)?;
        check(libc::umount2(dot.as_ptr(), libc::MNT_DETACH))?;
        check(libc::chdir(slash.as_ptr()))?;
    }
    Ok(())
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
    interrupt: Option<&'static Interrupt>,
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

    /// Itself when it exited 0; otherwise an error naming the program, how
    /// it ended and its stderr.
    pub fn check(self) -> Result<Finished> {
        let Some(status) = self.status else {
            return Err(self.stopped_error());
        };
        if status.success() {
            return Ok(self);
        }
        let stderr = self.stderr_text();
        let stderr = stderr.trim();
        if stderr.is_empty() {
            bail!("{} failed ({status})", self.name);
        }
        let more = if self.stderr_truncated { "\n…" } else { "" };
        bail!("{} failed ({status}): {stderr}{more}", self.name)
    }

    fn stopped_error(&self) -> anyhow::Error {
        match self.timeout {
            Some(timeout) => anyhow::anyhow!(
                "{} did not finish within {} s and was stopped",
                self.name,
                timeout.as_secs_f64()
            ),
            None => anyhow::anyhow!("{} was stopped", self.name),
        }
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
        self.release_group();
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

impl Running {
    /// After an interruptible child was reaped: once interrupted, the rest
    /// of its group (which got the signal too) must end before the caller
    /// goes on (fresh-machine then unmounts what they may still use).
    fn release_group(&mut self) {
        let Some(interrupt) = self.interrupt.take() else {
            return;
        };
        let group = interrupt.group.load(Ordering::SeqCst);
        if interrupt.requested() && group > 0 {
            stop_group(group);
        }
        interrupt.group.store(0, Ordering::SeqCst);
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.release_group();
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
    fn a_command_from_xshell_keeps_its_directory_and_variables() {
        let dir = tempfile::tempdir().unwrap();
        let sh = xshell::Shell::new().unwrap();
        sh.change_dir(dir.path());
        sh.set_var("XTASK_RUNNER_TEST", "from the shell");
        let script = "pwd; printf '%s\\n' \"$XTASK_RUNNER_TEST\"";
        let text = Supervised::from_command(xshell::cmd!(sh, "sh -c {script}"))
            .read()
            .unwrap();
        let here = std::fs::canonicalize(dir.path()).unwrap();
        assert_eq!(text, format!("{}\nfrom the shell", here.display()));
        // A std Command as well, named by its program's file name.
        let mut command = Command::new("/bin/sh");
        command.args(["-c", "exit 0"]);
        assert_eq!(Supervised::from_command(command).name(), "sh");
    }

    #[test]
    fn a_failed_run_names_the_program_its_exit_and_its_stderr() {
        let error = sh("echo the disk is gone >&2; exit 3")
            .checked()
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("sh failed"), "{error}");
        assert!(error.contains("exit status: 3"), "{error}");
        assert!(error.contains("the disk is gone"), "{error}");
        let error = Supervised::new("xtask-no-such-program")
            .status()
            .unwrap_err();
        assert!(
            format!("{error:#}").contains("running xtask-no-such-program"),
            "{error:#}"
        );
        // Not an error: a status the caller reads.
        let status = sh("exit 5").status().unwrap();
        assert_eq!(status.code(), Some(5));
    }

    #[test]
    fn a_run_stopped_at_its_time_limit_is_an_error_that_says_so() {
        let error = sh("sleep 30")
            .timeout(Duration::from_millis(200))
            .status()
            .unwrap_err()
            .to_string();
        assert!(error.contains("did not finish within 0.2 s"), "{error}");
        let error = sh("sleep 30")
            .timeout(Duration::from_millis(200))
            .read()
            .unwrap_err()
            .to_string();
        assert!(error.contains("sh did not finish"), "{error}");
    }

    #[test]
    fn read_drops_one_final_newline_only() {
        assert_eq!(sh("printf 'a\\n\\n'").read().unwrap(), "a\n");
        assert_eq!(sh("printf 'a'").read().unwrap(), "a");
    }

    #[test]
    fn lines_come_whole_across_reads_and_the_last_one_without_newline() {
        let (lines, received) = std::sync::mpsc::channel();
        // A line longer than one read (8 KiB), then one with no newline.
        sh("head -c 20000 /dev/zero | tr '\\0' x; echo; printf 'short\\nlast'")
            .stdout(Output::lines(move |line| {
                let _ = lines.send(line.to_vec());
            }))
            .checked()
            .unwrap();
        let lines: Vec<Vec<u8>> = received.iter().collect();
        assert_eq!(
            lines.len(),
            3,
            "{:?}",
            lines.iter().map(Vec::len).collect::<Vec<_>>()
        );
        assert_eq!(lines[0], [vec![b'x'; 20000], vec![b'\n']].concat());
        assert_eq!(lines[1], b"short\n");
        assert_eq!(lines[2], b"last");
    }

    #[test]
    fn an_interruption_stops_the_whole_group_and_nothing_starts_after_it() {
        static INTERRUPT: Interrupt = Interrupt::new();
        let marker = tempfile::tempdir().unwrap();
        let pids = marker.path().join("pids");
        // A child that leaves a grandchild behind in its group, as a build does.
        let script = format!("sleep 60 & echo $! > {}; wait", pids.display());
        let interrupter = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(30);
            while INTERRUPT.group.load(Ordering::SeqCst) == 0 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            std::thread::sleep(Duration::from_millis(200));
            INTERRUPT.interrupt();
        });
        let started = Instant::now();
        let error = sh(&script)
            .interruptible(&INTERRUPT)
            .status()
            .unwrap_err()
            .to_string();
        interrupter.join().unwrap();
        assert_eq!(error, "interrupted");
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(
            INTERRUPT.group.load(Ordering::SeqCst),
            0,
            "the group is forgotten"
        );
        let grandchild: i32 = std::fs::read_to_string(&pids)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // SAFETY: signal 0 only asks whether the process exists.
        let alive = unsafe { libc::kill(grandchild, 0) } == 0;
        assert!(!alive, "the group's sleep {grandchild} still runs");
        let never = marker.path().join("never");
        let error = sh(&format!("touch {}", never.display()))
            .interruptible(&INTERRUPT)
            .status()
            .unwrap_err();
        assert_eq!(error.to_string(), "interrupted");
        assert!(!never.exists(), "a child started after the interruption");
    }

    #[test]
    fn a_child_in_a_new_root_sees_only_that_root() {
        // Needs root (a mount namespace) and a static busybox as the
        // root's only program.
        assert_eq!(
            unsafe { libc::geteuid() },
            0,
            "run as root: the runner's in_root needs a mount namespace"
        );
        let busybox =
            which::which("busybox").expect("busybox is missing: apt-get install busybox-static");
        let root = tempfile::tempdir().unwrap();
        let bin = root.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        std::fs::copy(&busybox, bin.join("busybox")).unwrap();
        std::fs::write(root.path().join("only-here"), "").unwrap();
        let root = Utf8Path::from_path(root.path()).unwrap();
        let finished = Supervised::new("/bin/busybox")
            .args(["sh", "-c", "/bin/busybox ls /"])
            .in_root(root)
            .checked()
            .unwrap();
        let mut listing: Vec<String> = finished.stdout_text().lines().map(str::to_owned).collect();
        listing.sort();
        assert_eq!(listing, ["bin", "only-here"]);
        // The host's mounts are untouched: nothing below the new root shows.
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(!mountinfo.contains(root.as_str()), "{mountinfo}");
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
