//! The booted system the admin's commands run in: stage 2's mounts inside
//! /sysroot, the admin's home, and impermanence's bind mounts and links.

use std::path::Path;

use anyhow::{bail, Context as _, Result};

use super::shell::{bash, PLACE_PATH, RESCUE_MARKER};
use lab_protocol::plan::{AdminLogin, PersistedPath, Plan, SYSROOT};

/// Stage 2's mounts inside /sysroot: the kernel's filesystems, and the
/// image's program directories read-only; the admin's home; then a check
/// that the admin is not root and that `sudo` makes it root.
pub fn enter_system(
    plan: &Plan,
    binds: &[String],
    login: Option<&AdminLogin>,
) -> Result<Option<String>> {
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
    use std::os::unix::fs::PermissionsExt as _;
    for (dir, mode) in [("/tmp", 0o1777), ("/root", 0o700), ("/mnt", 0o755)] {
        let path = format!("{SYSROOT}{dir}");
        std::fs::create_dir_all(&path).with_context(|| format!("creating {path}"))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
    }
    if plan.kind == lab_protocol::plan::BootKind::Rescue {
        let marker = format!("{SYSROOT}{}", RESCUE_MARKER);
        std::fs::write(&marker, "rescue\n").with_context(|| format!("writing {marker}"))?;
    }
    let Some(login) = login else {
        return Ok(Some(format!("bound {}", done.join(" "))));
    };
    // NixOS's activation creates the home (users.users.<name>.createHome).
    let home = format!("{SYSROOT}{}", login.home);
    std::fs::create_dir_all(&home).with_context(|| format!("creating {home}"))?;
    std::os::unix::fs::chown(&home, Some(login.uid), Some(login.gid))
        .with_context(|| format!("chown {home}"))?;
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700))?;
    let (linked, absent) = place_paths(login)?;
    let who = bash(plan, "id -u; sudo -n id -u", Some(login), None, None)?;
    let expected = format!("{}\n0", login.uid);
    if who.exit != Some(0) || who.stdout.trim() != expected {
        bail!(
            "the admin's login in the lab: `id -u; sudo -n id -u` as {} printed {:?} (exit {:?}; {}), expected {expected:?}",
            login.user,
            who.stdout.trim(),
            who.exit,
            who.stderr.trim()
        );
    }
    Ok(Some(format!(
        "bound {}; {} (uid {}) with sudo; PATH per place: {linked} commands linked{}",
        done.join(" "),
        login.user,
        login.uid,
        if absent.is_empty() {
            String::new()
        } else {
            format!(
                ", not in the image (command not found here): {}",
                absent.join(" ")
            )
        }
    )))
}

/// Where the image has the programs (the lab's PATH order).
const IMAGE_DIRS: &[&str] = &["/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"];

/// One directory per place in the booted system, with a link to the
/// image's program for each of the place's commands: the admin's PATH
/// there (`super::path_for`). How many were linked, and the declared
/// commands the image lacks.
fn place_paths(login: &AdminLogin) -> Result<(usize, Vec<String>)> {
    use std::os::unix::fs::PermissionsExt as _;
    let mut linked = 0;
    let mut absent = Vec::new();
    for (place, commands) in &login.commands {
        let dir = format!("{SYSROOT}{}/{place}", PLACE_PATH);
        if Path::new(&dir).exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("emptying {dir}"))?;
        }
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {dir}"))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
        for command in commands {
            let found = IMAGE_DIRS
                .iter()
                .map(|d| format!("{d}/{command}"))
                .find(|p| {
                    std::fs::metadata(format!("{SYSROOT}{p}"))
                        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                });
            match found {
                Some(target) => {
                    let link = format!("{dir}/{command}");
                    std::os::unix::fs::symlink(&target, &link)
                        .with_context(|| format!("linking {link} to {target}"))?;
                    linked += 1;
                }
                None => {
                    if !absent.contains(command) {
                        absent.push(command.clone());
                    }
                }
            }
        }
    }
    Ok((linked, absent))
}

/// impermanence at boot (nix-community/impermanence: nixos.nix bind-mounts
/// each directory; mount-file.bash bind-mounts a file whose persistent copy
/// exists, else links to where it will be).
pub fn persistence(
    directories: &[PersistedPath],
    files: &[PersistedPath],
) -> Result<Option<String>> {
    let mut done = Vec::new();
    for directory in directories {
        for path in [&directory.storage, &directory.target] {
            std::fs::create_dir_all(path).with_context(|| format!("creating {path}"))?;
        }
        if !is_mountpoint(&directory.target) {
            bind(&directory.storage, &directory.target)?;
            done.push(format!("{} (bind)", directory.link));
        }
    }
    for file in files {
        let target = Path::new(&file.target);
        if is_mountpoint(&file.target) || target.is_symlink() {
            continue;
        }
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        if Path::new(&file.storage).is_file() {
            if !target.exists() {
                std::fs::File::create(target)
                    .with_context(|| format!("creating {}", file.target))?;
            }
            bind(&file.storage, &file.target)?;
            done.push(format!("{} (bind)", file.link));
        } else {
            std::os::unix::fs::symlink(&file.link, target)
                .with_context(|| format!("linking {} to {}", file.target, file.link))?;
            done.push(format!("{} (link)", file.link));
        }
    }
    Ok(Some(done.join(" ")))
}

fn is_mountpoint(path: &str) -> bool {
    std::fs::read_to_string("/proc/self/mounts")
        .map(|m| {
            crate::parse::proc_mounts(&m)
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
