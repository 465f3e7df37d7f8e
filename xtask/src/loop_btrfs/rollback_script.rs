//! Running nix/modules/btrfs-rollback/rollback.sh the way each initrd does:
//! under busybox sh with busybox applets (the scripted initrd), or under
//! dash or bash with GNU coreutils and util-linux (the systemd initrd).
//! PATH holds exactly the tools the script may use, so a run fails if the
//! script ever needs anything else.

use std::collections::BTreeMap;
use std::os::unix::fs::symlink;
use std::time::Instant;

use anyhow::{Context as _, Result};
use camino::{Utf8Path, Utf8PathBuf};

use super::loopback::UMOUNT;
use toolbox::process::{Output, Supervised};
use toolbox::project::project_root;
use toolbox::setup::{self, Tool};

/// The one rollback script; the NixOS module reads this same file.
pub fn script_path() -> Utf8PathBuf {
    project_root()
        .join("nix")
        .join("modules")
        .join("btrfs-rollback")
        .join("rollback.sh")
}

/// Every program the script may call.
pub const SCRIPT_PROGRAMS: &[&str] = &[
    "btrfs", "mount", "umount", "mkdir", "mv", "sort", "stat", "date", "cat", "sync", "sleep",
    "timeout",
];

const fn coreutil(program: &'static str) -> Tool {
    Tool {
        program,
        package: "coreutils",
    }
}

/// GNU tools of the systemd initrd (coreutils and util-linux's mount).
pub const GNU_TOOLS: &[Tool] = &[
    setup::BTRFS,
    setup::MOUNT,
    UMOUNT,
    coreutil("mkdir"),
    coreutil("mv"),
    coreutil("sort"),
    coreutil("stat"),
    coreutil("date"),
    coreutil("cat"),
    coreutil("sync"),
    coreutil("sleep"),
    coreutil("timeout"),
];

pub const BASH: Tool = Tool {
    program: "bash",
    package: "bash",
};

/// Everything the rollback tests and bench need beyond the fixtures.
pub fn required_tools() -> Vec<Tool> {
    let mut tools = GNU_TOOLS.to_vec();
    tools.extend([setup::BUSYBOX, setup::DASH, BASH]);
    tools
}

/// The shell a run uses, with its initrd's tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Interpreter {
    /// `busybox sh` with busybox applets: the scripted initrd.
    Busybox,
    /// dash with GNU tools.
    Dash,
    /// bash with GNU tools: the systemd initrd.
    Bash,
}

impl Interpreter {
    pub const ALL: [Interpreter; 3] = [Interpreter::Busybox, Interpreter::Dash, Interpreter::Bash];

    pub fn name(self) -> &'static str {
        match self {
            Interpreter::Busybox => "busybox sh",
            Interpreter::Dash => "dash",
            Interpreter::Bash => "bash",
        }
    }
}

/// The settings a run passes through the environment (None: the script's default).
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub mountpoint: Utf8PathBuf,
    pub status_dir: Utf8PathBuf,
    pub now: Option<i64>,
    pub retention_days: Option<u32>,
    pub keep_at_least: Option<u32>,
    pub root_subvolume: Option<String>,
    pub old_roots_subvolume: Option<String>,
    /// BTRFS_ROLLBACK_MOUNTED_SUBVOLUMES: what the system mounts, space-separated.
    pub mounted_subvolumes: Option<String>,
    /// BTRFS_ROLLBACK_WAIT_SECONDS.
    pub wait_seconds: Option<u32>,
}

impl Settings {
    /// Mountpoint and status directory below `scratch`.
    pub fn under(scratch: &Utf8Path) -> Settings {
        Settings {
            mountpoint: scratch.join("btrfs_tmp"),
            status_dir: scratch.join("status"),
            ..Settings::default()
        }
    }

    fn environment(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("BTRFS_ROLLBACK_MOUNTPOINT", self.mountpoint.to_string()),
            ("BTRFS_ROLLBACK_STATUS_DIR", self.status_dir.to_string()),
        ];
        let optional = [
            ("BTRFS_ROLLBACK_NOW", self.now.map(|v| v.to_string())),
            (
                "BTRFS_ROLLBACK_RETENTION_DAYS",
                self.retention_days.map(|v| v.to_string()),
            ),
            (
                "BTRFS_ROLLBACK_KEEP_AT_LEAST",
                self.keep_at_least.map(|v| v.to_string()),
            ),
            ("BTRFS_ROLLBACK_ROOT_SUBVOLUME", self.root_subvolume.clone()),
            (
                "BTRFS_ROLLBACK_OLD_ROOTS_SUBVOLUME",
                self.old_roots_subvolume.clone(),
            ),
            (
                "BTRFS_ROLLBACK_MOUNTED_SUBVOLUMES",
                self.mounted_subvolumes.clone(),
            ),
            (
                "BTRFS_ROLLBACK_WAIT_SECONDS",
                self.wait_seconds.map(|v| v.to_string()),
            ),
        ];
        env.extend(optional.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))));
        env
    }
}

/// Runs the script with one interpreter and a PATH of exactly its tools.
#[derive(Debug)]
pub struct Runner {
    pub interpreter: Interpreter,
    program: Utf8PathBuf,
    shell_args: Vec<String>,
    tool_dir: Utf8PathBuf,
    script: Utf8PathBuf,
    _dir: tempfile::TempDir,
}

impl Runner {
    pub fn new(interpreter: Interpreter) -> Result<Runner> {
        // `Lab::prepare` (or `cargo xtask test`) installed them.
        let found = setup::require(&required_tools())?;
        let dir = tempfile::Builder::new()
            .prefix("xtask-rollback-path-")
            .tempdir()
            .context("creating a PATH directory")?;
        let tool_dir = Utf8PathBuf::from_path_buf(dir.path().to_path_buf())
            .map_err(|p| anyhow::anyhow!("{} is not UTF-8", p.display()))?;
        let busybox = found.path(setup::BUSYBOX)?.clone();
        for tool in GNU_TOOLS {
            let target = match interpreter {
                Interpreter::Busybox if tool.program != "btrfs" => busybox.clone(),
                _ => found.path(*tool)?.clone(),
            };
            let link = tool_dir.join(tool.program);
            symlink(&target, &link).with_context(|| format!("linking {link} to {target}"))?;
        }
        let (program, shell_args) = match interpreter {
            Interpreter::Busybox => (busybox, vec!["sh".to_owned()]),
            Interpreter::Dash => (found.path(setup::DASH)?.clone(), vec![]),
            Interpreter::Bash => (found.path(BASH)?.clone(), vec![]),
        };
        Ok(Runner {
            interpreter,
            program,
            shell_args,
            tool_dir,
            script: script_path(),
            _dir: dir,
        })
    }

    /// The directory that is the script's whole PATH.
    pub fn tool_dir(&self) -> &Utf8Path {
        &self.tool_dir
    }

    /// The command for one run, with a clean environment. `trace` adds
    /// `-x` (each command traced on stderr before it runs); `path`
    /// replaces the tool directory (e.g. with wrappers that count calls).
    pub fn command(
        &self,
        device: &Utf8Path,
        settings: &Settings,
        trace: bool,
        path: Option<&Utf8Path>,
    ) -> Supervised {
        let mut command = Supervised::new(&self.program).args(&self.shell_args);
        if trace {
            command = command.arg("-x");
        }
        command
            .arg(&self.script)
            .arg(device)
            .env_clear()
            .env("PATH", path.unwrap_or(&self.tool_dir))
            .envs(settings.environment())
            // Far more than any run prints; a run that loops is cut there.
            .stdout(Output::keep(256 << 20))
            .stderr(Output::keep(256 << 20))
    }

    /// Runs the script to the end.
    pub fn run(&self, device: &Utf8Path, settings: &Settings) -> Result<Run> {
        self.run_command(self.command(device, settings, false, None), settings)
    }

    /// Runs a prepared command to the end and reads its status.
    pub fn run_command(&self, command: Supervised, settings: &Settings) -> Result<Run> {
        let started = Instant::now();
        let output = command
            .run()
            .with_context(|| format!("running {} {}", self.interpreter.name(), self.script))?;
        let wall_ms = started.elapsed().as_secs_f64() * 1000.0;
        Ok(Run {
            code: output.status.and_then(|status| status.code()),
            stdout: output.stdout_text(),
            stderr: output.stderr_text(),
            wall_ms,
            status: Status::read(&settings.status_dir)?,
        })
    }
}

/// What one run did.
#[derive(Debug, Clone)]
pub struct Run {
    /// None when killed by a signal.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub wall_ms: f64,
    pub status: Option<Status>,
}

impl Run {
    /// The status file, or an error showing what the run printed.
    pub fn status(&self) -> Result<&Status> {
        self.status.as_ref().with_context(|| {
            format!(
                "no status file; exit {:?}\nstdout:\n{}\nstderr:\n{}",
                self.code, self.stdout, self.stderr
            )
        })
    }

    /// The stdout summary's key=value fields (message last, with spaces).
    pub fn summary(&self) -> Option<BTreeMap<String, String>> {
        let line = self.stdout.strip_suffix('\n')?;
        if line.contains('\n') {
            return None;
        }
        let rest = line.strip_prefix("btrfs-rollback: ")?;
        let (head, message) = rest.split_once(" message=")?;
        let mut fields: BTreeMap<String, String> = head
            .split(' ')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        fields.insert("message".to_owned(), message.to_owned());
        Some(fields)
    }

    /// Everything printed, for assertion messages.
    pub fn transcript(&self) -> String {
        format!(
            "exit {:?}\nstdout:\n{}stderr:\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// `$BTRFS_ROLLBACK_STATUS_DIR/status` and the `failed` marker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub fields: BTreeMap<String, String>,
    pub failed_marker: bool,
}

impl Status {
    pub fn read(dir: &Utf8Path) -> Result<Option<Status>> {
        let path = dir.join("status");
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {path}")),
        };
        let fields = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        Ok(Some(Status {
            fields,
            failed_marker: dir.join("failed").exists(),
        }))
    }

    pub fn get(&self, key: &str) -> &str {
        self.fields.get(key).map(String::as_str).unwrap_or("")
    }

    pub fn number(&self, key: &str) -> Option<u64> {
        self.get(key).parse().ok()
    }
}

pub use lab_protocol::stamp::old_root_name;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_utc_basic_iso_8601() {
        assert_eq!(old_root_name(1_767_225_600, 0).unwrap(), "20260101T000000Z");
        assert_eq!(
            old_root_name(1_830_297_599, 7).unwrap(),
            "20271231T235959Z-07"
        );
    }

    #[test]
    fn the_script_is_where_the_module_reads_it() {
        assert!(script_path().is_file(), "{}", script_path());
    }

    #[test]
    fn summaries_parse() {
        let run = Run {
            code: Some(0),
            stdout: "btrfs-rollback: result=ok rotated_to=X deleted=1 kept=2 skipped=0 clock=ok ms=3 message=moved a to b\n".to_owned(),
            stderr: String::new(),
            wall_ms: 0.0,
            status: None,
        };
        let summary = run.summary().unwrap();
        assert_eq!(summary["rotated_to"], "X");
        assert_eq!(summary["message"], "moved a to b");
    }
}
