//! Checklist procedures in the VM, run as the admin would run them: each
//! command line by bash (the admin's login shell on NixOS), in a chroot of
//! the booted system (/sysroot with /proc, /sys, /dev and /run, as stage 2
//! leaves them), with GNU coreutils, findutils, grep, btrfs-progs and the
//! rest of the image's programs bind-mounted read-only at their own paths.
//!
//! The agent runs as root, so `sudo` is a shim (`/usr/local/bin/sudo`,
//! vm/guest/sudo.sh) that runs its command as root. That is what `sudo CMD`
//! does on the server for the admin (a wheel member): the command runs with
//! uid 0; what the lab leaves out is the authentication, which changes no
//! command's effect.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

use super::checks::report;
use super::{say, send};
use crate::vm::plan::{AdminCommand, AdminStep, Expectation, Plan, SYSROOT};
use crate::vm::protocol::{CommandEvent, Event};

/// The admin's PATH in the VM: the sudo shim first, then the image's programs.
pub const ADMIN_PATH: &str = "/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// No admin command may take longer (a hung command must not hang the boot).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(300);
/// What a record keeps of each output.
const OUTPUT_LIMIT: usize = 4000;

/// Stage 2's mounts inside /sysroot: the kernel's filesystems, and the
/// image's program directories read-only.
pub fn enter_system(binds: &[String]) -> Result<Option<String>> {
    let mut done = Vec::new();
    for source in binds {
        if !Path::new(source).exists() {
            continue;
        }
        let target = format!("{SYSROOT}{source}");
        if is_mountpoint(&target) {
            continue;
        }
        std::fs::create_dir_all(&target).with_context(|| format!("creating {target}"))?;
        bind(source, &target)?;
        let writable = ["/proc", "/sys", "/dev", "/run"].contains(&source.as_str());
        if !writable {
            remount_read_only(&target)?;
        }
        done.push(source.as_str());
    }
    for (dir, mode) in [("/tmp", 0o1777), ("/root", 0o700), ("/mnt", 0o755)] {
        let path = format!("{SYSROOT}{dir}");
        std::fs::create_dir_all(&path).with_context(|| format!("creating {path}"))?;
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(Some(format!("bound {}", done.join(" "))))
}

fn is_mountpoint(path: &str) -> bool {
    std::fs::read_to_string("/proc/self/mounts")
        .map(|m| {
            super::parse::proc_mounts(&m)
                .iter()
                .any(|e| e.mountpoint == path)
        })
        .unwrap_or(false)
}

fn c_string(text: &str) -> Result<std::ffi::CString> {
    std::ffi::CString::new(text).context("NUL in a path")
}

fn bind(source: &str, target: &str) -> Result<()> {
    let (s, t) = (c_string(source)?, c_string(target)?);
    // SAFETY: valid NUL-terminated strings that outlive the call.
    let result = unsafe {
        libc::mount(
            s.as_ptr(),
            t.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND,
            std::ptr::null(),
        )
    };
    if result != 0 {
        bail!(
            "bind-mounting {source} on {target}: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

fn remount_read_only(target: &str) -> Result<()> {
    let t = c_string(target)?;
    // SAFETY: as above; a bind remount changes only this mount's flags.
    let result = unsafe {
        libc::mount(
            std::ptr::null(),
            t.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
            std::ptr::null(),
        )
    };
    if result != 0 {
        bail!(
            "making {target} read-only: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// What a command printed and how it ended.
pub struct Output {
    pub exit: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub timed_out: bool,
}

/// `bash -c LINE` in the booted system, as root, with the admin's PATH.
pub fn bash(plan: &Plan, line: &str) -> Result<Output> {
    let mut command = Command::new(&plan.tools.bash);
    command
        .arg("-c")
        .arg(line)
        .env_clear()
        .env("PATH", ADMIN_PATH)
        .env("HOME", "/root")
        .env("USER", "root")
        .env("LOGNAME", "root")
        .env("SHELL", &plan.tools.bash)
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: chroot and chdir are async-signal-safe; the paths are static.
    unsafe {
        command.pre_exec(|| {
            let root = b"/sysroot\0";
            let slash = b"/\0";
            if libc::chroot(root.as_ptr().cast()) != 0 || libc::chdir(slash.as_ptr().cast()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command
        .spawn()
        .with_context(|| format!("starting {} in {SYSROOT}", plan.tools.bash))?;
    let mut stdout = child.stdout.take().context("bash's stdout")?;
    let mut stderr = child.stderr.take().context("bash's stderr")?;
    let out_thread = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stdout.read_to_end(&mut bytes);
        bytes
    });
    let err_thread = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stderr.read_to_end(&mut bytes);
        bytes
    });
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    let mut timed_out = false;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            timed_out = true;
            let _ = child.kill();
            break child.wait()?;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let text = |bytes: Vec<u8>| String::from_utf8_lossy(&bytes).into_owned();
    Ok(Output {
        exit: status.code(),
        stdout: text(out_thread.join().unwrap_or_default()),
        stderr: text(err_thread.join().unwrap_or_default()),
        timed_out,
    })
}

/// Whether a line of `text` matches the ERE, by GNU grep (`grep`).
fn matches(grep: &str, pattern: &str, text: &str) -> Result<bool> {
    let mut child = Command::new(grep)
        .args(["-qE", "--", pattern])
        .env_clear()
        .env("LC_ALL", "C")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {grep}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(text.as_bytes());
    }
    let output = child.wait_with_output()?;
    match output.status.code() {
        Some(0) => Ok(true),
        Some(1) => Ok(false),
        _ => bail!(
            "grep -E {pattern:?}: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ),
    }
}

/// Checks an output against the command's expectations; the first problem.
fn judge(
    grep: &str,
    command: &AdminCommand,
    output: &Output,
    captured: &BTreeMap<String, String>,
) -> Option<String> {
    if output.timed_out {
        return Some(format!(
            "killed after {} s without finishing",
            COMMAND_TIMEOUT.as_secs()
        ));
    }
    if output.exit != Some(command.exit) {
        return Some(format!(
            "exit {} instead of {}",
            output
                .exit
                .map_or("by a signal".to_owned(), |c| c.to_string()),
            command.exit
        ));
    }
    let trimmed = output.stdout.trim();
    for expectation in &command.expect {
        let holds = match expectation {
            Expectation::Contains { text } => output.stdout.contains(text.as_str()),
            Expectation::Equals { text } => trimmed == text.trim(),
            Expectation::EqualsCaptured { name } => match captured.get(name) {
                Some(value) => trimmed == value,
                None => return Some(format!("nothing was captured as {name:?}")),
            },
            Expectation::Matches { pattern } => match matches(grep, pattern, &output.stdout) {
                Ok(found) => found,
                Err(error) => return Some(format!("{error:#}")),
            },
        };
        if !holds {
            let want = match expectation {
                Expectation::EqualsCaptured { name } => format!(
                    "output equals {:?} (captured as {name:?})",
                    captured.get(name).map(String::as_str).unwrap_or("")
                ),
                other => other.to_string(),
            };
            return Some(format!("expected: {want}"));
        }
    }
    None
}

fn describe(command: &AdminCommand) -> String {
    let mut parts = vec![format!("exit {}", command.exit)];
    parts.extend(command.expect.iter().map(ToString::to_string));
    if let Some(name) = &command.capture {
        parts.push(format!("output captured as {name:?}"));
    }
    parts.join("; ")
}

fn clip(text: &str) -> String {
    if text.len() <= OUTPUT_LIMIT {
        return text.to_owned();
    }
    let mut end = OUTPUT_LIMIT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes in all)", &text[..end], text.len())
}

/// Runs one part of a procedure; a failed command ends the part (later
/// commands build on it) and fails the check `procedure:<step>`.
pub fn run(plan: &Plan, step: &AdminStep) -> Result<Option<String>> {
    let mut captured = step.captured.clone();
    let mut failure: Option<String> = None;
    let total = step.commands.len();
    for (index, command) in step.commands.iter().enumerate() {
        let mut event = CommandEvent {
            step: step.step.clone(),
            part: step.part,
            index: index as u32,
            role: command.role.as_str().to_owned(),
            line: command.line.clone(),
            ran: command.line.clone(),
            exit: None,
            ms: 0,
            stdout: String::new(),
            stderr: String::new(),
            expected: describe(command),
            passed: false,
            problem: None,
        };
        if let Some(reason) = &failure {
            event.problem = Some(format!("not run: {reason}"));
            send(&Event::Command(event));
            continue;
        }
        if let Some(instead) = &command.stands_for {
            event.expected = format!("not run in the lab: {instead}");
            event.passed = true;
            say(&format!(
                "  {} [{}] {} → {instead}",
                step.step,
                index + 1,
                command.line
            ));
            send(&Event::Command(event));
            continue;
        }
        let started = Instant::now();
        let mut problem = None;
        for binding in &command.bindings {
            let output = bash(plan, &binding.shell)?;
            let value = output.stdout.trim();
            if output.exit != Some(0) || value.is_empty() || value.contains('\n') {
                problem = Some(format!(
                    "{} could not be filled in: `{}` printed {value:?} (exit {:?}; {})",
                    binding.placeholder,
                    binding.shell,
                    output.exit,
                    output.stderr.trim()
                ));
                break;
            }
            event.ran = event.ran.replace(&binding.placeholder, value);
        }
        if problem.is_none() {
            let output = bash(plan, &event.ran)?;
            problem = judge(&plan.tools.grep, command, &output, &captured);
            if problem.is_none() {
                if let Some(name) = &command.capture {
                    let value = output.stdout.trim().to_owned();
                    captured.insert(name.clone(), value.clone());
                    send(&Event::Data {
                        name: format!("capture:{name}"),
                        value: serde_json::json!(value),
                    });
                }
            }
            event.exit = output.exit;
            event.stdout = clip(&output.stdout);
            event.stderr = clip(&output.stderr);
        }
        event.ms = started.elapsed().as_millis() as u64;
        event.passed = problem.is_none();
        event.problem = problem.clone();
        say(&format!(
            "  {} [{}/{total}] {} {}: {}",
            step.step,
            index + 1,
            if event.passed { "ok  " } else { "FAIL" },
            event.ran,
            problem.as_deref().unwrap_or("as expected")
        ));
        send(&Event::Command(event));
        if let Some(problem) = problem {
            failure = Some(format!("command {} failed ({problem})", index + 1));
        }
    }
    let run_count = step.commands.len();
    report(
        &format!("procedure:{}", step.step),
        failure.is_none(),
        match &failure {
            None => format!("part {}: {run_count} commands as expected", step.part + 1),
            Some(reason) => format!("part {}: {reason}", step.part + 1),
        },
        format!(
            "checklist step {} ({}){}: every command as expected",
            step.step,
            step.title,
            if step.provisional {
                ", provisional commands"
            } else {
                ""
            }
        ),
    );
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::plan::CommandRole;

    fn command(exit: i32, expect: Vec<Expectation>) -> AdminCommand {
        AdminCommand {
            role: CommandRole::Checklist,
            line: "ls".into(),
            bindings: Vec::new(),
            exit,
            expect,
            capture: None,
            stands_for: None,
        }
    }

    fn output(exit: i32, stdout: &str) -> Output {
        Output {
            exit: Some(exit),
            stdout: stdout.into(),
            stderr: String::new(),
            timed_out: false,
        }
    }

    fn grep() -> String {
        which::which("grep")
            .expect("grep (GNU grep, apt-get install grep)")
            .display()
            .to_string()
    }

    #[test]
    fn a_command_passes_only_as_expected() {
        let captured: BTreeMap<String, String> = [("sum".to_owned(), "abc".to_owned())].into();
        let grep = grep();
        let judged = |command: &AdminCommand, out: &Output| judge(&grep, command, out, &captured);
        let plain = command(0, vec![]);
        assert_eq!(judged(&plain, &output(0, "")), None);
        assert!(judged(&plain, &output(1, ""))
            .unwrap()
            .contains("exit 1 instead of 0"));
        let expecting = command(
            0,
            vec![
                Expectation::Contains {
                    text: "@persist.".into(),
                },
                Expectation::Matches {
                    pattern: "^[0-9]{8}T[0-9]{6}Z$".into(),
                },
            ],
        );
        assert_eq!(
            judged(
                &expecting,
                &output(0, "@persist.20270110T1417\n20270110T141651Z\n")
            ),
            None
        );
        assert!(judged(&expecting, &output(0, "@persist.x\n2027\n"))
            .unwrap()
            .contains("a line matches"));
        let equal = command(0, vec![Expectation::EqualsCaptured { name: "sum".into() }]);
        assert_eq!(judged(&equal, &output(0, "abc\n")), None);
        assert!(judged(&equal, &output(0, "abd\n"))
            .unwrap()
            .contains("\"abc\""));
        let unknown = command(
            0,
            vec![Expectation::EqualsCaptured {
                name: "none".into(),
            }],
        );
        assert!(judged(&unknown, &output(0, "x"))
            .unwrap()
            .contains("nothing was captured"));
        let bad = command(
            0,
            vec![Expectation::Matches {
                pattern: "(".into(),
            }],
        );
        assert!(judged(&bad, &output(0, "x")).unwrap().contains("grep -E"));
        let mut slow = output(0, "");
        slow.timed_out = true;
        assert!(judged(&plain, &slow).unwrap().contains("killed after"));
    }

    #[test]
    fn long_output_is_clipped_on_a_character_boundary() {
        let text = "é".repeat(OUTPUT_LIMIT);
        let clipped = clip(&text);
        assert!(clipped.len() < text.len() && clipped.ends_with("bytes in all)"));
        assert_eq!(clip("short"), "short");
    }

    #[test]
    fn the_sudo_shim_runs_its_command_and_refuses_other_users() {
        let shim = super::super::SUDO_SHIM;
        let run = |args: &[&str]| {
            std::process::Command::new("sh")
                .arg("-c")
                .arg(shim)
                .arg("sudo")
                .args(args)
                .output()
                .expect("sh runs")
        };
        let ran = run(&["-n", "echo", "as root"]);
        assert!(ran.status.success());
        assert_eq!(String::from_utf8_lossy(&ran.stdout), "as root\n");
        let refused = run(&["-u", "nobody", "id"]);
        assert!(!refused.status.success());
        assert!(String::from_utf8_lossy(&refused.stderr).contains("not supported"));
        assert!(!run(&[]).status.success());
    }
}
