//! `xtask guest`: the lab VM's /init. It mounts the kernel's filesystems,
//! loads the modules listed in the image, reads its plan from fw_cfg and
//! runs it step by step: programs by absolute path with argument vectors,
//! never a shell, except the checklist's own command lines, which bash runs
//! as the admin would (`admin`). Every step and check is reported on ttyS1 (see
//! `super::protocol`); the console (ttyS0) gets a human-readable log. At the
//! end it unmounts, syncs and powers off, also after a failure or a panic.

pub mod admin;
mod checks;
mod discard;
mod generate;
pub mod parse;
mod rollback;
mod serve;
mod start;
mod steps;
pub mod sudo;

pub use admin::ADMIN_PATH;
pub use generate::Random;

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs::File;
use std::io::Write as _;
use std::process::{Command, ExitCode, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

use lab_protocol::plan::{OnFailure, Plan, SYSROOT, TOP_LEVEL_MOUNT};
use lab_protocol::protocol::{self, Event};
use start::{early_mounts, load_modules, open_port, read_plan};
use steps::execute;

/// The protocol port; the console is ttyS0.
const PROTOCOL_PORT: &str = "/dev/ttyS1";
const PLAN_FILE: &str = "/sys/firmware/qemu_fw_cfg/by_name/opt/xtask/plan.json/raw";
/// How long a `measure` waits for the host.
const MEASURE_TIMEOUT: Duration = Duration::from_secs(120);

/// The protocol port, shared with the panic hook.
static PORT: Mutex<Option<File>> = Mutex::new(None);

pub fn send(event: &Event) {
    let line = protocol::encode(event);
    if let Ok(mut port) = PORT.lock() {
        if let Some(port) = port.as_mut() {
            // One write per line, so a line is never split by another writer.
            let _ = port.write_all(line.as_bytes());
            let _ = port.flush();
        }
    }
}

/// A line on the console log.
pub fn say(text: &str) {
    println!("[xtask] {text}");
}

fn main() -> ExitCode {
    // The image's `sudo` is a link to this binary (a multi-call binary,
    // like busybox): sudo.rs.
    if sudo::called_as_sudo() {
        return sudo::main();
    }
    match run() {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}

pub fn run() -> Result<ExitCode> {
    if std::process::id() != 1 {
        bail!("`xtask guest` is the vm-test VM's /init and runs only as PID 1 inside it");
    }
    let started = Instant::now();
    std::panic::set_hook(Box::new(|info| {
        let message = format!("the guest agent panicked: {info}");
        eprintln!("[xtask] {message}");
        send(&Event::Fatal { message });
    }));
    let outcome = std::panic::catch_unwind(|| {
        let mut agent = Agent::default();
        let result = agent.main(started);
        if let Err(error) = &result {
            let message = format!("{error:#}");
            say(&format!("fatal: {message}"));
            send(&Event::Fatal { message });
        }
        agent.teardown();
        result.is_ok() && agent.all_ok
    });
    let ok = outcome.unwrap_or(false);
    send(&Event::Done {
        ok,
        uptime_ms: uptime_ms(),
    });
    power_off()
}

#[derive(Default)]
struct Agent {
    plan: Option<Plan>,
    all_ok: bool,
}

impl Agent {
    fn main(&mut self, started: Instant) -> Result<()> {
        early_mounts()?;
        // /proc is there now; this is still within a millisecond of /init starting.
        let kernel_to_init = uptime_ms().saturating_sub(started.elapsed().as_millis() as u64);
        open_port()?;
        let modules_started = Instant::now();
        let module_failures = load_modules()?;
        let modules_ms = modules_started.elapsed().as_millis() as u64;
        let plan = read_plan()?;
        send(&Event::Hello {
            boot: plan.boot,
            uptime_ms: kernel_to_init,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_owned(),
        });
        say(&format!(
            "boot {} of {} ({}), kernel to /init {kernel_to_init} ms",
            plan.boot,
            plan.boots,
            plan.kind.as_str()
        ));
        send(&Event::StepFinished {
            name: "init:modules".to_owned(),
            ms: modules_ms,
            ok: true,
            detail: (!module_failures.is_empty())
                .then(|| format!("not loaded: {}", module_failures.join(", "))),
        });
        send(&Event::Figure {
            name: format!("boot_ms.kernel_to_init.boot{}", plan.boot),
            value: kernel_to_init as f64,
        });
        send(&Event::Figure {
            name: format!("boot_ms.modules.boot{}", plan.boot),
            value: modules_ms as f64,
        });
        let _ = started;
        self.all_ok = true;
        let mut stopped_by: Option<String> = None;
        for step in &plan.steps {
            if let Some(by) = &stopped_by {
                say(&format!("skip {} (after {by} failed)", step.name));
                continue;
            }
            send(&Event::StepStarted {
                name: step.name.clone(),
            });
            let step_started = Instant::now();
            let result = execute(&plan, &step.action);
            let ms = step_started.elapsed().as_millis() as u64;
            match result {
                Ok(detail) => {
                    say(&format!("ok   {} ({ms} ms)", step.name));
                    send(&Event::StepFinished {
                        name: step.name.clone(),
                        ms,
                        ok: true,
                        detail,
                    });
                }
                Err(error) => {
                    let detail = format!("{error:#}");
                    say(&format!("FAIL {} ({ms} ms): {detail}", step.name));
                    send(&Event::StepFinished {
                        name: step.name.clone(),
                        ms,
                        ok: false,
                        detail: Some(detail),
                    });
                    self.all_ok = false;
                    if step.on_failure == OnFailure::Stop {
                        stopped_by = Some(step.name.clone());
                    }
                }
            }
        }
        self.plan = Some(plan);
        Ok(())
    }

    /// Unmounts everything it mounted (deepest first), turns swap off,
    /// closes the mappings and syncs: `poweroff -f` does none of that.
    fn teardown(&mut self) {
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let mut ours: Vec<String> = parse::proc_mounts(&mounts)
            .into_iter()
            .map(|m| m.mountpoint)
            .filter(|m| {
                m.starts_with(SYSROOT)
                    || m.starts_with("/run/xtask")
                    || m.starts_with("/btrfs_tmp")
                    || m.starts_with(TOP_LEVEL_MOUNT)
            })
            .collect();
        ours.sort_by_key(|m| std::cmp::Reverse(m.len()));
        let swaps = std::fs::read_to_string("/proc/swaps").unwrap_or_default();
        for (swap, _) in parse::proc_swaps(&swaps) {
            if let Ok(path) = CString::new(swap.as_bytes()) {
                // SAFETY: a valid NUL-terminated path.
                unsafe { libc::swapoff(path.as_ptr()) };
            }
        }
        for mountpoint in ours {
            if let Ok(path) = CString::new(mountpoint.as_bytes()) {
                // SAFETY: a valid NUL-terminated path.
                if unsafe { libc::umount2(path.as_ptr(), 0) } != 0 {
                    say(&format!(
                        "umount {mountpoint}: {}",
                        std::io::Error::last_os_error()
                    ));
                }
            }
        }
        if let Some(plan) = &self.plan {
            if let Ok(entries) = std::fs::read_dir("/dev/mapper") {
                for entry in entries.flatten() {
                    let name = entry.file_name();
                    if name != "control" {
                        let _ = Command::new(&plan.tools.cryptsetup)
                            .arg("close")
                            .arg(&name)
                            .output();
                    }
                }
            }
        }
        // SAFETY: sync(2) has no preconditions.
        unsafe { libc::sync() };
    }
}

fn power_off() -> ! {
    // SAFETY: sync(2) has no preconditions; reboot(2) ends the VM (PID 1 may call it).
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_POWER_OFF);
    }
    // Should reboot fail, PID 1 exiting panics the kernel, and qemu
    // (-no-reboot, panic=-1) exits too.
    std::process::exit(1)
}

pub fn uptime_ms() -> u64 {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0, |s| (s * 1000.0) as u64)
}

/// Output of a finished program.
pub struct Ran {
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    pub fn ok(&self) -> bool {
        self.status.success()
    }

    /// The status and the last lines of output, for a failure message.
    pub fn describe(&self) -> String {
        let tail = |text: &str| -> String {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(6)..].join(" | ")
        };
        format!(
            "{}; stderr: {}; stdout: {}",
            self.status,
            tail(&self.stderr),
            tail(&self.stdout)
        )
    }
}

/// Runs a program (absolute path) with a clean environment.
pub fn run_program(argv: &[String], env: &BTreeMap<String, String>) -> Result<Ran> {
    let (program, args) = argv.split_first().context("an empty command")?;
    if !program.starts_with('/') {
        bail!("{program}: programs are called by absolute path");
    }
    let mut command = Command::new(program);
    command
        .args(args)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .envs(env)
        .stdin(Stdio::null());
    let output = command
        .output()
        .with_context(|| format!("starting {program}"))?;
    let ran = Ran {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };
    for line in ran.stderr.lines().take(20) {
        say(&format!(
            "  {}: {line}",
            program.rsplit('/').next().unwrap_or(program)
        ));
    }
    Ok(ran)
}

/// Runs a program and requires exit status 0.
pub fn run_ok(argv: &[String]) -> Result<Ran> {
    let ran = run_program(argv, &BTreeMap::new())?;
    if !ran.ok() {
        bail!("{} failed: {}", argv.join(" "), ran.describe());
    }
    Ok(ran)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_to_run_outside_the_vm() {
        assert!(run().is_err());
    }
}
