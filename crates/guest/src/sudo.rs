//! `sudo` in the lab VM. The image's `/usr/local/bin/sudo` is a link to
//! the agent, which is setuid root there, so the admin's commands get root
//! only through `sudo`, as on the server. Like sudo for a member of wheel
//! with `security.sudo.wheelNeedsPassword = false` (the host's users.nix),
//! it runs COMMAND as root with a reset environment (PATH, the locale and
//! SHELL kept; HOME, USER and LOGNAME root's; SUDO_USER, SUDO_UID and
//! SUDO_GID set). Options that change only how sudo asks or which
//! environment it keeps are accepted; any other (another user, a login
//! shell) is refused, so that a procedure never relies on something the lab
//! cannot show.

use std::os::unix::process::CommandExt as _;
use std::process::ExitCode;

use anyhow::Result;

use lab_protocol::plan::WHEEL_GID;

/// Whether this process was started as `sudo` (the image's link).
pub fn called_as_sudo() -> bool {
    std::env::args_os()
        .next()
        .map(std::path::PathBuf::from)
        .and_then(|p| p.file_name().map(|n| n == "sudo"))
        .unwrap_or(false)
}

/// `sudo ARGS…`: runs the command as root, or exits 1 saying why not.
pub fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    match run(&argv) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("sudo (vm-test lab): {error:#}");
            ExitCode::from(1)
        }
    }
}

/// The command `sudo ARGS` runs, or why it refuses.
pub fn parse(argv: &[String]) -> std::result::Result<&[String], String> {
    let mut rest = argv;
    while let Some((first, more)) = rest.split_first() {
        match first.as_str() {
            "-E" | "-H" | "-n" | "--preserve-env" | "--non-interactive" => rest = more,
            "--" => {
                rest = more;
                break;
            }
            option if option.starts_with('-') => {
                return Err(format!("option {option} is not supported"))
            }
            _ => break,
        }
    }
    if rest.is_empty() {
        return Err("usage: sudo COMMAND [ARG...]".to_owned());
    }
    Ok(rest)
}

fn refuse(message: &str) -> Result<ExitCode> {
    eprintln!("sudo (vm-test lab): {message}");
    Ok(ExitCode::from(1))
}

fn run(argv: &[String]) -> Result<ExitCode> {
    let command = match parse(argv) {
        Ok(command) => command,
        Err(message) => return refuse(&message),
    };
    // SAFETY: plain queries of the process's own credentials.
    let (uid, gid, euid) = unsafe { (libc::getuid(), libc::getgid(), libc::geteuid()) };
    let groups = {
        // SAFETY: the first call asks for the count, the second fills a
        // buffer of that size.
        let count = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
        let mut groups = vec![0 as libc::gid_t; count.max(0) as usize];
        let filled = unsafe { libc::getgroups(count, groups.as_mut_ptr()) };
        groups.truncate(filled.max(0) as usize);
        groups
    };
    if uid != 0 && gid != WHEEL_GID && !groups.contains(&WHEEL_GID) {
        return refuse(&format!("uid {uid} is not in wheel"));
    }
    if euid != 0 {
        return refuse("the agent is not setuid root in this image");
    }
    let root: [libc::gid_t; 1] = [0];
    // SAFETY: as root (effective), dropping to root entirely.
    let switched = unsafe {
        libc::setgroups(1, root.as_ptr()) == 0 && libc::setgid(0) == 0 && libc::setuid(0) == 0
    };
    if !switched {
        return refuse(&format!(
            "could not become root: {}",
            std::io::Error::last_os_error()
        ));
    }
    let kept: Vec<(String, String)> = std::env::vars()
        .filter(|(name, _)| {
            matches!(name.as_str(), "PATH" | "LANG" | "LC_ALL" | "TERM" | "SHELL")
                || name.starts_with("LC_")
        })
        .collect();
    let user = std::env::var("USER").unwrap_or_else(|_| uid.to_string());
    let error = std::process::Command::new(&command[0])
        .args(&command[1..])
        .env_clear()
        .envs(kept)
        .env("HOME", "/root")
        .env("USER", "root")
        .env("LOGNAME", "root")
        .env("SUDO_USER", user)
        .env("SUDO_UID", uid.to_string())
        .env("SUDO_GID", gid.to_string())
        .exec();
    // As sudo says it when PATH has no such program.
    if error.kind() == std::io::ErrorKind::NotFound {
        eprintln!("sudo: {}: command not found", command[0]);
    } else {
        eprintln!("sudo: {}: {error}", command[0]);
    }
    Ok(ExitCode::from(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| (*w).to_owned()).collect()
    }

    #[test]
    fn sudo_takes_the_options_that_change_nothing_and_refuses_the_rest() {
        let given = args(&["-n", "id", "-u"]);
        assert_eq!(parse(&given).unwrap(), &args(&["id", "-u"])[..]);
        let given = args(&["--", "-weird"]);
        assert_eq!(parse(&given).unwrap(), &args(&["-weird"])[..]);
        assert!(parse(&args(&["-u", "nobody", "id"]))
            .unwrap_err()
            .contains("option -u is not supported"));
        assert!(parse(&args(&["-i"])).is_err());
        assert!(parse(&args(&["-E"])).unwrap_err().contains("usage"));
    }
}
