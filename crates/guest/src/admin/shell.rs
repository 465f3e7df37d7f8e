//! The admin's shell in the booted system: `bash -c LINE` chrooted into
//! /sysroot with the PATH of the place the line runs in, as the admin or
//! as root.

use std::io::Read as _;
use std::os::unix::process::CommandExt as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, Result};
use wait_timeout::ChildExt as _;

use lab_protocol::command::Where;
use lab_protocol::plan::{AdminLogin, Plan, PLACE_LOCAL, PLACE_RESCUE, PLACE_SERVER, SYSROOT};

/// The lab's own PATH in the VM (its setup and verification, as root):
/// the shims first, then the image's programs.
pub const ADMIN_PATH: &str = "/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// The directories in the booted system that hold one link per command of
/// a place (`/run/xtask-path/server`, …): the admin's PATH there.
pub const PLACE_PATH: &str = "/run/xtask-path";
/// In the rescue boot: the file that tells the lab's `ssh` that
/// `root@` is the rescue system (`ssh.sh`).
pub const RESCUE_MARKER: &str = "/run/xtask-rescue";

/// The PATH of a line run as `login` at `at`: the place's own commands,
/// or the lab's PATH for its own lines (no login) and for a plan that
/// declares no places.
pub fn path_for(login: Option<&AdminLogin>, at: Option<Where>) -> String {
    // The rescue system's lines run as root, with its declared commands.
    if at == Some(Where::Rescue) {
        return format!("{PLACE_PATH}/{PLACE_RESCUE}");
    }
    match login {
        Some(login) if !login.commands.is_empty() => {
            let place = if at == Some(Where::Local) {
                PLACE_LOCAL
            } else {
                PLACE_SERVER
            };
            format!("{PLACE_PATH}/{place}")
        }
        _ => ADMIN_PATH.to_owned(),
    }
}

/// No admin command may take longer (a hung command must not hang the boot).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(300);

/// What a command printed and how it ended.
pub struct Output {
    pub exit: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub timed_out: bool,
}

/// `bash -c LINE` in the booted system with the admin's PATH: as `login`
/// (its uid, primary group and groups), else as root; in `cwd`, else in
/// the user's home.
pub fn bash(
    plan: &Plan,
    line: &str,
    login: Option<&AdminLogin>,
    at: Option<Where>,
    cwd: Option<&str>,
) -> Result<Output> {
    let (user, home, ids) = match login {
        Some(l) => (
            l.user.as_str(),
            l.home.as_str(),
            Some((l.uid, l.gid, l.groups.clone())),
        ),
        None => ("root", "/root", None),
    };
    let directory = std::ffi::CString::new(cwd.unwrap_or(home)).context("NUL in a directory")?;
    let mut command = Command::new(&plan.tools.bash);
    command
        .arg("-c")
        .arg(line)
        .env_clear()
        .env("PATH", path_for(login, at))
        .env("HOME", home)
        .env("USER", user)
        .env("LOGNAME", user)
        .env("SHELL", &plan.tools.bash)
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let groups: Vec<libc::gid_t> = ids.as_ref().map(|(_, _, g)| g.clone()).unwrap_or_default();
    // SAFETY: chroot, chdir, setgroups, setgid and setuid are
    // async-signal-safe; everything they read was allocated before the fork.
    unsafe {
        command.pre_exec(move || {
            let root = b"/sysroot\0";
            if libc::chroot(root.as_ptr().cast()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if let Some((uid, gid, _)) = ids {
                if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                    || libc::setgid(gid) != 0
                    || libc::setuid(uid) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if libc::chdir(directory.as_ptr()) != 0 {
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
    // wait-timeout, as the host's runner (xtask's `process`) waits; that
    // runner is not used here (the guest is its own binary, without the
    // host side): the command needs the chroot and the admin's ids before
    // exec, and a timed-out command's output is still reported.
    let mut timed_out = false;
    let status = match child.wait_timeout(COMMAND_TIMEOUT)? {
        Some(status) => status,
        None => {
            timed_out = true;
            let _ = child.kill();
            child.wait()?
        }
    };
    let text = |bytes: Vec<u8>| String::from_utf8_lossy(&bytes).into_owned();
    Ok(Output {
        exit: status.code(),
        stdout: text(out_thread.join().unwrap_or_default()),
        stderr: text(err_thread.join().unwrap_or_default()),
        timed_out,
    })
}
