//! The fresh Debian root: its mounts (in a private mount namespace, undone
//! in reverse order), its removal, the lock on its cache, and what goes into
//! it (the host's Rust, the CA bundle, Debian's apt sources, a clean
//! environment for chroot).

use anyhow::{bail, Context as _, Result};
use camino::{Utf8Path, Utf8PathBuf};

use super::{run_ok, CA_IN_ROOT, RUST_IN_ROOT, SUITE};
use toolbox::process::{Output, Supervised};

/// Mount points at or below `dir`, from /proc/self/mountinfo.
pub fn mounts_below(mountinfo: &str, dir: &Utf8Path) -> Vec<String> {
    let dir = dir.as_str().trim_end_matches('/');
    mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(unescape_mountinfo)
        .filter(|point| point == dir || point.starts_with(&format!("{dir}/")))
        .collect()
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
pub(super) fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let octal = bytes
            .get(index + 1..index + 4)
            .filter(|_| bytes[index] == b'\\')
            .and_then(|digits| std::str::from_utf8(digits).ok())
            .and_then(|digits| u8::from_str_radix(digits, 8).ok());
        match octal {
            Some(value) => {
                out.push(value);
                index += 4;
            }
            None => {
                out.push(bytes[index]);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mounts of the proof, undone in reverse order when dropped.
pub(super) struct Mounts {
    pub(super) points: Vec<Utf8PathBuf>,
}

impl Mounts {
    pub(super) fn mount(&mut self, args: &[&str], target: &Utf8Path) -> Result<()> {
        std::fs::create_dir_all(target).with_context(|| format!("creating {target}"))?;
        run_ok(
            Supervised::new("mount").args(args).arg(target.as_str()),
            &format!("mount {} {target}", args.join(" ")),
        )?;
        self.points.push(target.to_owned());
        Ok(())
    }

    pub(super) fn bind(
        &mut self,
        source: &Utf8Path,
        target: &Utf8Path,
        read_only: bool,
    ) -> Result<()> {
        self.mount(&["--rbind", source.as_str()], target)?;
        if read_only {
            run_ok(
                Supervised::new("mount").args(["-o", "remount,bind,ro", target.as_str()]),
                &format!("making {target} read-only"),
            )?;
        }
        Ok(())
    }

    /// Unmounts everything, newest first; a busy mount is detached lazily.
    pub(super) fn unmount_all(&mut self) -> Result<()> {
        let mut failed = Vec::new();
        while let Some(point) = self.points.pop() {
            // Not `run_ok`: unmounting goes on after an interruption.
            let plain = Supervised::new("umount")
                .args(["--recursive", point.as_str()])
                .inherit_output()
                .stderr(Output::Null)
                .status();
            if plain.is_ok_and(|s| s.success()) {
                continue;
            }
            let lazy = Supervised::new("umount")
                .args(["--recursive", "--lazy", point.as_str()])
                .inherit_output()
                .status();
            if !lazy.is_ok_and(|s| s.success()) {
                failed.push(point);
            }
        }
        anyhow::ensure!(failed.is_empty(), "could not unmount {failed:?}");
        Ok(())
    }
}

impl Drop for Mounts {
    fn drop(&mut self) {
        if let Err(error) = self.unmount_all() {
            eprintln!("fresh-machine: {error:#}");
        }
    }
}

/// Moves this process into a private mount namespace: what it mounts is
/// never seen by the host and goes away with the process, whatever happens.
pub(super) fn private_mount_namespace() -> Result<()> {
    // SAFETY: unshare has no memory effects; it needs a single-threaded
    // process, which this is this early (checked by the error it returns).
    if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
        return Err(std::io::Error::last_os_error()).context(
            "unshare(CLONE_NEWNS) (a private mount namespace needs root, and no threads yet)",
        );
    }
    run_ok(
        Supervised::new("mount").args(["--make-rprivate", "/"]),
        "mount --make-rprivate /",
    )
}

/// Removes `dir` when nothing is mounted at or below it, never crossing
/// into another file system.
pub(super) fn remove_root(dir: &Utf8Path) -> Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    let mountinfo =
        std::fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    let mounted = mounts_below(&mountinfo, dir);
    anyhow::ensure!(
        mounted.is_empty(),
        "{dir} still has mounts below it ({}); not removing it. Unmount them (umount -R) and run again",
        mounted.join(", ")
    );
    // Not `run_ok`: cleaning up goes on after an interruption.
    let status = Supervised::new("rm")
        .args(["-rf", "--one-file-system", dir.as_str()])
        .inherit_output()
        .status()
        .context("running rm")?;
    anyhow::ensure!(status.success(), "removing {dir} failed ({status})");
    Ok(())
}

/// An exclusive lock on a file, held until dropped.
pub(super) struct Lock(#[allow(dead_code)] std::fs::File);

pub(super) fn lock(path: &Utf8Path) -> Result<Lock> {
    use std::os::fd::AsRawFd as _;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("opening {path}"))?;
    // SAFETY: the descriptor is open while `file` lives.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        bail!("another fresh-machine run holds {path}; wait for it to finish");
    }
    Ok(Lock(file))
}

/// The host's CA bundle: the file SSL_CERT_FILE names, else Debian's.
pub(super) fn ca_bundle() -> Option<Utf8PathBuf> {
    std::env::var("SSL_CERT_FILE")
        .ok()
        .filter(|f| !f.is_empty())
        .map(Utf8PathBuf::from)
        .or_else(|| Some(Utf8PathBuf::from("/etc/ssl/certs/ca-certificates.crt")))
        .filter(|f| f.is_file())
}

/// The host's Rust toolchain (its sysroot, with bin/cargo and bin/rustc).
pub(super) fn rust_sysroot() -> Result<Utf8PathBuf> {
    let output = Supervised::new("rustc")
        .args(["--print", "sysroot"])
        .run()
        .context("running rustc --print sysroot (Rust must be installed on the host)")?;
    anyhow::ensure!(output.success(), "rustc --print sysroot failed");
    let sysroot = Utf8PathBuf::from(String::from_utf8(output.stdout)?.trim());
    anyhow::ensure!(
        sysroot.join("bin").join("cargo").is_file(),
        "{sysroot}/bin/cargo is missing: install the toolchain with cargo (rustup default stable)"
    );
    Ok(sysroot)
}

/// The apt sources of a fresh Debian 12 install (deb822).
pub(super) fn debian_sources(mirror: &str, security: &str) -> String {
    format!(
        "Types: deb\nURIs: {mirror}\nSuites: {SUITE} {SUITE}-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n\
         Types: deb\nURIs: {security}\nSuites: {SUITE}-security\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
    )
}

/// The clean environment the README's commands run with inside the root.
pub(super) fn root_environment() -> Vec<(&'static str, String)> {
    vec![
        (
            "PATH",
            format!(
                "{RUST_IN_ROOT}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
            ),
        ),
        ("HOME", "/root".to_owned()),
        ("CARGO_HOME", "/root/.cargo".to_owned()),
        ("LANG", "C.UTF-8".to_owned()),
        ("SSL_CERT_FILE", CA_IN_ROOT.to_owned()),
        ("CARGO_HTTP_CAINFO", CA_IN_ROOT.to_owned()),
        (
            "TERM",
            std::env::var("TERM").unwrap_or_else(|_| "dumb".to_owned()),
        ),
    ]
}

/// A command that runs `script` with the fresh root as its whole world.
///
/// Not chroot(2): Nix re-enters its mount namespace with setns(2) before it
/// runs git for a flake, and setns resets the root directory to the
/// namespace's root, so under a chroot `nix eval` of a Git flake escapes to
/// the host and fails ("cannot change to '…': No such file or directory").
/// The child gets a mount namespace of its own whose root *is* the fresh
/// root (the runner's `in_root`: pivot_root), as on a real machine.
pub(super) fn in_root(root: &Utf8Path, script: &str) -> Supervised {
    Supervised::new("/bin/sh")
        .args(["-c", script])
        .env_clear()
        .envs(root_environment())
        .in_root(root)
}
