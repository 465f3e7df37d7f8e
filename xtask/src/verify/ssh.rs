//! The connection: the workstation's real OpenSSH client, as the admin,
//! with the user's keys and known_hosts (or `-F FILE`), never asking
//! anything (BatchMode) and never accepting a host key it does not know
//! (StrictHostKeyChecking=yes on the command line, which no config file
//! can weaken). One `ssh` per command; every line is held against the
//! read-only list right before it is handed over.

use std::fmt;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use camino::Utf8PathBuf;
use serde::Serialize;

use super::allowlist;
use toolbox::process::{Output, Supervised};

/// `ADMIN@ADDRESS[:PORT]` (an IPv6 address in brackets: `admin@[2a01::1]:22`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Target {
    pub user: String,
    pub address: String,
    pub port: Option<u16>,
}

impl std::str::FromStr for Target {
    type Err = String;
    fn from_str(text: &str) -> Result<Target, String> {
        let usage = || {
            format!("{text:?}: expected ADMIN@ADDRESS[:PORT], e.g. hbohlen@203.0.113.7 or hbohlen@[2a01:4f8::1]:22")
        };
        let (user, rest) = text.split_once('@').ok_or_else(usage)?;
        if user.is_empty() || user.starts_with('-') || rest.is_empty() {
            return Err(usage());
        }
        let (address, port) = if let Some(inner) = rest.strip_prefix('[') {
            let (address, after) = inner.split_once(']').ok_or_else(usage)?;
            match after {
                "" => (address, None),
                _ => (address, Some(after.strip_prefix(':').ok_or_else(usage)?)),
            }
        } else if rest.matches(':').count() == 1 {
            let (address, port) = rest.split_once(':').ok_or_else(usage)?;
            (address, Some(port))
        } else {
            (rest, None)
        };
        if address.is_empty() || address.starts_with('-') || address.contains(char::is_whitespace) {
            return Err(usage());
        }
        let port = match port {
            None => None,
            Some(p) => Some(
                p.parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| format!("{text:?}: {p:?} is not a port (1-65535)"))?,
            ),
        };
        Ok(Target {
            user: user.to_owned(),
            address: address.to_owned(),
            port,
        })
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let address = if self.address.contains(':') {
            format!("[{}]", self.address)
        } else {
            self.address.clone()
        };
        match self.port {
            Some(port) => write!(f, "{}@{address}:{port}", self.user),
            None => write!(f, "{}@{address}", self.user),
        }
    }
}

/// Why verify could not run (exit 2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    HostKey(String),
    Unreachable(String),
    Login(String),
    NoSudo(String),
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refused::HostKey(text) => write!(f, "the server's host key is not the one known_hosts has for it, or known_hosts has none: {text}\n  if the server was reinstalled, remove the old key (`ssh-keygen -R ADDRESS`) and log in once by hand to compare the new fingerprint with the one the Hetzner console shows"),
            Refused::Unreachable(text) => write!(f, "the server cannot be reached: {text}"),
            Refused::Login(text) => write!(f, "the admin cannot log in: {text}\n  verify uses your ssh keys (ssh-agent, ~/.ssh) and BatchMode; `ssh ADMIN@ADDRESS true` must work without a prompt"),
            Refused::NoSudo(text) => write!(f, "the admin cannot use sudo without a password: {text}\n  the host's users.nix puts the admin in wheel with wheelNeedsPassword = false"),
        }
    }
}

/// What ssh's stderr says went wrong (exit 255).
pub fn classify(stderr: &str) -> Refused {
    let last = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("debug"))
        .collect::<Vec<_>>();
    let text = last.last().copied().unwrap_or("ssh exited 255").to_owned();
    if stderr.contains("Host key verification failed")
        || stderr.contains("REMOTE HOST IDENTIFICATION HAS CHANGED")
        || stderr.contains("No ED25519 host key is known")
        || stderr.contains("host key is known")
    {
        Refused::HostKey(text)
    } else if stderr.contains("Permission denied") || stderr.contains("Too many authentication") {
        Refused::Login(text)
    } else {
        Refused::Unreachable(text)
    }
}

/// What one command did on the server.
#[derive(Debug, Clone, Serialize)]
pub struct Ran {
    pub line: String,
    pub exit: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// The time one command may take (compsize over a large store takes a while).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(300);
/// What a record keeps of an output.
const KEEP: u64 = 256 * 1024;

/// One login for the whole run: a master connection (`ssh -M -N`, owned
/// and ended by this process) that every command reuses through its
/// control socket in a private directory, so that a run costs one key
/// exchange, not one per command.
pub struct Session {
    ssh: Utf8PathBuf,
    target: Target,
    config: Option<Utf8PathBuf>,
    control: tempfile::TempDir,
    master: Option<toolbox::process::Running>,
    master_log: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

/// How long the login may take.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(60);

impl Session {
    pub fn new(ssh: Utf8PathBuf, target: Target, config: Option<Utf8PathBuf>) -> Result<Session> {
        let control = tempfile::Builder::new()
            .prefix("xtask-verify-")
            .tempdir()
            .context("creating a directory for ssh's control socket")?;
        Ok(Session {
            ssh,
            target,
            config,
            control,
            master: None,
            master_log: Default::default(),
        })
    }

    fn socket(&self) -> std::path::PathBuf {
        self.control.path().join("master")
    }

    fn command(&self) -> Supervised {
        let mut ssh = Supervised::new(&self.ssh)
            .args([
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                "ConnectTimeout=15",
                "-o",
                "ServerAliveInterval=15",
                "-o",
                "ServerAliveCountMax=4",
                "-o",
                "RequestTTY=no",
                "-o",
                "ForwardAgent=no",
                "-o",
                "ClearAllForwardings=yes",
                "-o",
                "ControlPersist=no",
            ])
            .arg("-o")
            .arg(format!("ControlPath={}", self.socket().display()));
        if let Some(config) = &self.config {
            ssh = ssh.arg("-F").arg(config);
        }
        if let Some(port) = self.target.port {
            ssh = ssh.arg("-p").arg(port.to_string());
        }
        ssh.arg("-l").arg(&self.target.user)
    }

    /// Logs in (the master connection), then asks sudo, without a
    /// password, who it is: the host key's fingerprint as ssh saw it, or
    /// why verify cannot run.
    pub fn probe(&mut self) -> Result<std::result::Result<String, Refused>> {
        let log = self.master_log.clone();
        let master = self
            .command()
            .args(["-M", "-N", "-v", "-o", "ControlMaster=yes", "--"])
            .arg(&self.target.address)
            .stdout(Output::Null)
            .stderr(Output::Each(Box::new(move |chunk: &[u8]| {
                if let Ok(mut log) = log.lock() {
                    log.extend_from_slice(chunk);
                }
            })))
            .spawn()
            .with_context(|| format!("running {}", self.ssh))?;
        self.master = Some(master);
        let started = std::time::Instant::now();
        let logged = |log: &std::sync::Arc<std::sync::Mutex<Vec<u8>>>| {
            log.lock()
                .map(|l| String::from_utf8_lossy(&l).into_owned())
                .unwrap_or_default()
        };
        loop {
            if self.socket().exists() {
                break;
            }
            let exited = match self.master.as_mut() {
                Some(master) => master.try_wait()?.is_some(),
                None => true,
            };
            if exited {
                // Let the reading thread hand over ssh's last words.
                std::thread::sleep(Duration::from_millis(200));
                return Ok(Err(classify(&logged(&self.master_log))));
            }
            if started.elapsed() > LOGIN_TIMEOUT {
                return Ok(Err(Refused::Unreachable(format!(
                    "no login within {} s",
                    LOGIN_TIMEOUT.as_secs()
                ))));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let Some(key) = logged(&self.master_log).lines().find_map(|l| {
            l.trim()
                .strip_prefix("debug1: Server host key: ")
                .map(str::to_owned)
        }) else {
            bail!("ssh -v did not print the server's host key (debug1: Server host key: …); is {} OpenSSH?", self.ssh);
        };
        let line = "sudo -n id -u";
        let ran = match self.run(line)? {
            Ok(ran) => ran,
            Err(refused) => return Ok(Err(refused)),
        };
        match ran.exit {
            Some(0) if ran.stdout.trim() == "0" => Ok(Ok(key)),
            Some(0) => Ok(Err(Refused::NoSudo(format!(
                "`{line}` printed {:?}, not 0 (root)",
                ran.stdout.trim()
            )))),
            _ => Ok(Err(Refused::NoSudo(
                ran.stderr
                    .lines()
                    .map(str::trim)
                    .rfind(|l| !l.is_empty())
                    .unwrap_or("sudo printed nothing")
                    .to_owned(),
            ))),
        }
    }

    /// Runs one read-only line as the admin; `Err(Refused)` when ssh itself failed.
    pub fn run(&self, line: &str) -> Result<std::result::Result<Ran, Refused>> {
        if let Err(refused) = allowlist::check(line) {
            bail!("refusing to send {line:?}: {refused} (a bug: verify plans only read-only commands)");
        }
        let finished = self
            .command()
            .args(["-o", "ControlMaster=no", "--"])
            .arg(&self.target.address)
            .arg(line)
            .stdout(Output::keep(KEEP))
            .stderr(Output::keep(KEEP))
            .timeout(COMMAND_TIMEOUT)
            .run()
            .with_context(|| format!("running {}", self.ssh))?;
        if finished.stopped() {
            return Ok(Err(Refused::Unreachable(format!(
                "`{line}` did not finish within {} s",
                COMMAND_TIMEOUT.as_secs()
            ))));
        }
        let exit = finished.status.and_then(|s| s.code());
        if exit == Some(255) {
            return Ok(Err(classify(&finished.stderr_text())));
        }
        Ok(Ok(Ran {
            line: line.to_owned(),
            exit,
            stdout: finished.stdout_text(),
            stderr: finished.stderr_text(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_with_and_without_port() {
        let t: Target = "admin@203.0.113.7".parse().unwrap();
        assert_eq!(
            (t.user.as_str(), t.address.as_str(), t.port),
            ("admin", "203.0.113.7", None)
        );
        let t: Target = "admin@127.0.0.1:2222".parse().unwrap();
        assert_eq!(t.port, Some(2222));
        let t: Target = "admin@[2a01:4f8::1]:22".parse().unwrap();
        assert_eq!((t.address.as_str(), t.port), ("2a01:4f8::1", Some(22)));
        assert_eq!(t.to_string(), "admin@[2a01:4f8::1]:22");
        let t: Target = "admin@2a01:4f8::1".parse().unwrap();
        assert_eq!((t.address.as_str(), t.port), ("2a01:4f8::1", None));
        for bad in [
            "203.0.113.7",
            "@x",
            "admin@",
            "admin@x:0",
            "admin@x:99999",
            "-oProxyCommand=x@y",
            "admin@-oFoo",
        ] {
            assert!(bad.parse::<Target>().is_err(), "{bad}");
        }
    }

    #[test]
    fn ssh_failures_are_told_apart() {
        assert!(matches!(
            classify("Host key verification failed.\n"),
            Refused::HostKey(_)
        ));
        assert!(matches!(
            classify("@@@\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\nHost key verification failed.\n"),
            Refused::HostKey(_)
        ));
        assert!(matches!(
            classify("admin@127.0.0.1: Permission denied (publickey).\n"),
            Refused::Login(_)
        ));
        assert!(matches!(
            classify("ssh: connect to host 127.0.0.1 port 9: Connection refused\n"),
            Refused::Unreachable(_)
        ));
    }
}
