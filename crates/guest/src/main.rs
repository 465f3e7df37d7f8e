//! The lab VM's /init for `cargo xtask vm-test` (crates/guest, a binary of
//! its own that the host builds and packs into the initramfs). It mounts
//! the kernel's filesystems, loads the modules listed in the image, reads
//! its plan from fw_cfg and runs it step by step: programs by absolute path
//! with argument vectors, never a shell, except the checklist's own command
//! lines, which bash runs as the admin would (`admin`). Every step and check
//! is reported on ttyS1 (see `lab_protocol::protocol`); the console (ttyS0)
//! gets a human-readable log. At the end it unmounts, syncs and powers off,
//! also after a failure or a panic. Called as `sudo` (the image's link), it
//! is the admin's sudo instead (`sudo`).

mod admin;
mod checks;
mod discard;
mod generate;
mod parse;
mod port;
mod program;
mod report;
mod rollback;
mod serve;
mod start;
mod steps;
mod sudo;

use std::ffi::CString;
use std::process::{Command, ExitCode};
use std::time::Instant;

use anyhow::{bail, Result};

use lab_protocol::plan::{OnFailure, Plan, SYSROOT, TOP_LEVEL_MOUNT};
use lab_protocol::protocol::Event;
use port::{say, send, uptime_ms};
use start::{early_mounts, load_modules, open_port, read_plan};
use steps::execute;

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

fn run() -> Result<ExitCode> {
    if std::process::id() != 1 {
        bail!("the guest agent is the vm-test VM's /init and runs only as PID 1 inside it");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_to_run_outside_the_vm() {
        assert!(run().is_err());
    }
}
