//! Finding the system tools a subcommand needs, and installing them.
//!
//! Each tool is looked up with `which` (in PATH, then /usr/sbin and /sbin,
//! where Debian keeps mkfs and sgdisk for non-root users). When some are
//! missing on a Debian or Ubuntu machine and we run as root, their packages
//! are installed with apt-get, saying so. Otherwise, or when installing is
//! turned off (`--no-install` or `XTASK_NO_INSTALL=1`), the command stops with
//! exit code 2 and names the exact packages.

use std::collections::BTreeMap;
use std::fmt;
use std::os::unix::fs::MetadataExt;

use anyhow::{bail, Context as _, Result};
use camino::Utf8PathBuf;
use xshell::cmd;

/// Set to `1` to forbid installing packages.
pub const NO_INSTALL_ENV: &str = "XTASK_NO_INSTALL";

/// A program and the Debian package that provides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tool {
    pub program: &'static str,
    pub package: &'static str,
}

pub const NIX_INSTANTIATE: Tool = Tool {
    program: "nix-instantiate",
    package: "nix-bin",
};
pub const NIX: Tool = Tool {
    program: "nix",
    package: "nix-bin",
};
pub const MKFS_BTRFS: Tool = Tool {
    program: "mkfs.btrfs",
    package: "btrfs-progs",
};
pub const BTRFS: Tool = Tool {
    program: "btrfs",
    package: "btrfs-progs",
};
pub const SGDISK: Tool = Tool {
    program: "sgdisk",
    package: "gdisk",
};
pub const COMPSIZE: Tool = Tool {
    program: "compsize",
    package: "btrfs-compsize",
};
pub const MKFS_VFAT: Tool = Tool {
    program: "mkfs.vfat",
    package: "dosfstools",
};
pub const CRYPTSETUP: Tool = Tool {
    program: "cryptsetup",
    package: "cryptsetup-bin",
};
pub const BUSYBOX: Tool = Tool {
    program: "busybox",
    package: "busybox-static",
};
pub const DASH: Tool = Tool {
    program: "dash",
    package: "dash",
};
pub const QEMU: Tool = Tool {
    program: "qemu-system-x86_64",
    package: "qemu-system-x86",
};
pub const QEMU_IMG: Tool = Tool {
    program: "qemu-img",
    package: "qemu-utils",
};
pub const FSTRIM: Tool = Tool {
    program: "fstrim",
    package: "util-linux",
};
pub const FINDMNT: Tool = Tool {
    program: "findmnt",
    package: "util-linux",
};
pub const BLKID: Tool = Tool {
    program: "blkid",
    package: "util-linux",
};
pub const LOSETUP: Tool = Tool {
    program: "losetup",
    package: "mount",
};
pub const MOUNT: Tool = Tool {
    program: "mount",
    package: "mount",
};
pub const SWAPON: Tool = Tool {
    program: "swapon",
    package: "mount",
};
pub const MKSWAP: Tool = Tool {
    program: "mkswap",
    package: "util-linux",
};
pub const LSATTR: Tool = Tool {
    program: "lsattr",
    package: "e2fsprogs",
};
pub const CHATTR: Tool = Tool {
    program: "chattr",
    package: "e2fsprogs",
};
pub const DEPMOD: Tool = Tool {
    program: "depmod",
    package: "kmod",
};
pub const ZSTD: Tool = Tool {
    program: "zstd",
    package: "zstd",
};

/// Debian's kernel for VMs; the lab VM boots it under qemu.
pub const KERNEL_PACKAGE: &str = "linux-image-cloud-amd64";

/// Whether a kernel with its modules is installed where the lab VM looks
/// (/boot/vmlinuz-<ver> and /lib/modules/<ver>).
pub fn kernel_installed() -> bool {
    let Ok(entries) = std::fs::read_dir("/boot") else {
        return false;
    };
    entries.filter_map(|e| e.ok()).any(|entry| {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        name.strip_prefix("vmlinuz-")
            .is_some_and(|version| std::path::Path::new("/lib/modules").join(version).is_dir())
    })
}

/// Makes sure a kernel for the lab VM is installed (installing Debian's cloud kernel when allowed).
pub fn ensure_kernel() -> Result<()> {
    if kernel_installed() {
        return Ok(());
    }
    if let Some(reason) = cannot_install_because() {
        bail!(
            "no kernel for the lab VM (/boot/vmlinuz-<version> with /lib/modules/<version>): {reason}\n  on Debian or Ubuntu: sudo apt-get install {KERNEL_PACKAGE}\n  or pass --kernel and --modules to vm-test"
        );
    }
    install_packages(&[KERNEL_PACKAGE])
}

/// Tools found, by program name.
#[derive(Debug, Clone, Default)]
pub struct Found(BTreeMap<&'static str, Utf8PathBuf>);

impl Found {
    /// The absolute path of a tool that `ensure` was asked for.
    pub fn path(&self, tool: Tool) -> Result<&Utf8PathBuf> {
        self.0
            .get(tool.program)
            .with_context(|| format!("{} was not among the tools looked up", tool.program))
    }
}

/// Tools that are missing, and how to get them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    pub programs: Vec<&'static str>,
    pub packages: Vec<&'static str>,
    pub reason: String,
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "missing tools: {}", self.programs.join(", "))?;
        writeln!(f, "  {}", self.reason)?;
        writeln!(
            f,
            "  on Debian or Ubuntu: sudo apt-get install {}",
            self.packages.join(" ")
        )?;
        if self.packages.contains(&"nix-bin") {
            writeln!(
                f,
                "  elsewhere, install Nix (https://nixos.org/download) and run `nix develop` in this repository"
            )?;
        }
        write!(
            f,
            "  on NixOS or with Nix: `nix develop` provides every tool"
        )
    }
}

impl std::error::Error for Missing {}

fn locate(program: &str) -> Option<Utf8PathBuf> {
    let found = which::which(program)
        .ok()
        .or_else(|| which::which_in(program, Some("/usr/local/sbin:/usr/sbin:/sbin"), "/").ok())?;
    Utf8PathBuf::from_path_buf(found).ok()
}

fn installing_allowed() -> bool {
    !matches!(
        std::env::var(NO_INSTALL_ENV).as_deref(),
        Ok("1") | Ok("true") | Ok("yes")
    )
}

/// Whether this process runs as root (the owner of /proc/self is the effective uid).
pub fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn missing_of(tools: &[Tool]) -> Vec<Tool> {
    tools
        .iter()
        .copied()
        .filter(|t| locate(t.program).is_none())
        .collect()
}

fn describe(missing: &[Tool], reason: String) -> Missing {
    let mut packages: Vec<&'static str> = missing.iter().map(|t| t.package).collect();
    packages.sort_unstable();
    packages.dedup();
    Missing {
        programs: missing.iter().map(|t| t.program).collect(),
        packages,
        reason,
    }
}

/// Finds every tool, installing missing ones when allowed. The error is a
/// `Missing` (downcast it to tell "not installed" from other failures).
pub fn ensure(tools: &[Tool]) -> Result<Found> {
    let missing = missing_of(tools);
    if !missing.is_empty() {
        let Some(reason) = cannot_install_because() else {
            install(&missing)?;
            return ensure_found(tools);
        };
        return Err(describe(&missing, reason).into());
    }
    ensure_found(tools)
}

fn ensure_found(tools: &[Tool]) -> Result<Found> {
    let mut found = Found::default();
    let mut still_missing = Vec::new();
    for tool in tools {
        match locate(tool.program) {
            Some(path) => {
                found.0.insert(tool.program, path);
            }
            None => still_missing.push(*tool),
        }
    }
    if !still_missing.is_empty() {
        return Err(describe(
            &still_missing,
            "apt-get ran but the programs are still not in PATH".to_owned(),
        )
        .into());
    }
    Ok(found)
}

/// Why installing is not possible here, or `None` when it is.
fn cannot_install_because() -> Option<String> {
    if !installing_allowed() {
        return Some(format!(
            "installing is turned off ({NO_INSTALL_ENV}=1 or --no-install)"
        ));
    }
    if !is_root() {
        return Some("not running as root, so nothing was installed".to_owned());
    }
    if locate("apt-get").is_none() {
        return Some("this is not a Debian or Ubuntu machine (no apt-get)".to_owned());
    }
    None
}

/// Installs Debian packages (as root, with apt-get), saying what it does.
pub fn install_packages(packages: &[&str]) -> Result<()> {
    if let Some(reason) = cannot_install_because() {
        bail!(
            "cannot install {}: {reason}\n  on Debian or Ubuntu: sudo apt-get install {}",
            packages.join(" "),
            packages.join(" ")
        );
    }
    let sh = xshell::Shell::new()?;
    let _frontend = sh.push_env("DEBIAN_FRONTEND", "noninteractive");
    eprintln!("installing with apt-get: {}", packages.join(" "));
    let first = cmd!(
        sh,
        "apt-get install -y -q --no-install-recommends {packages...}"
    )
    .quiet()
    .run();
    if first.is_err() {
        // Fresh machines have no package lists yet.
        eprintln!("apt-get install failed; running apt-get update and trying again");
        cmd!(sh, "apt-get update -q")
            .quiet()
            .run()
            .context("apt-get update")?;
        cmd!(
            sh,
            "apt-get install -y -q --no-install-recommends {packages...}"
        )
        .quiet()
        .run()
        .with_context(|| format!("apt-get install {}", packages.join(" ")))?;
    }
    Ok(())
}

fn install(missing: &[Tool]) -> Result<()> {
    let description = describe(missing, String::new());
    install_packages(&description.packages)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_tools_name_their_packages() {
        let missing = describe(
            &[NIX_INSTANTIATE, MKFS_BTRFS, BTRFS],
            "installing is turned off".to_owned(),
        );
        assert_eq!(missing.packages, vec!["btrfs-progs", "nix-bin"]);
        let text = missing.to_string();
        assert!(
            text.contains("apt-get install btrfs-progs nix-bin"),
            "{text}"
        );
        assert!(text.contains("nix develop"), "{text}");
    }

    #[test]
    fn finds_a_tool_that_every_machine_has() {
        let found = ensure(&[Tool {
            program: "sh",
            package: "dash",
        }])
        .unwrap();
        assert!(found
            .path(Tool {
                program: "sh",
                package: "dash"
            })
            .unwrap()
            .is_absolute());
    }
}
