//! Finding the system tools a subcommand needs, and installing them.
//!
//! Each tool is looked up with `which` (in PATH, then /usr/sbin and /sbin,
//! where Debian keeps mkfs and sgdisk for non-root users). When some are
//! missing on a Debian or Ubuntu machine and we run as root, every package
//! the command needs is installed in one apt transaction that never removes
//! anything (`apt`), saying so; then every program is looked up again.
//! Otherwise, or when installing is turned off (`--no-install` or
//! `XTASK_NO_INSTALL=1`), or when something is still missing, the command
//! stops with exit code 2 and names the exact apt command.

pub mod apt;

use std::collections::BTreeMap;
use std::fmt;

use anyhow::{Context as _, Result};
use camino::Utf8PathBuf;

use crate::context::{Context, Install};

pub use crate::context::NO_INSTALL_ENV;

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
pub const MKFS_EXT4: Tool = Tool {
    program: "mkfs.ext4",
    package: "e2fsprogs",
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

pub const UMOUNT: Tool = Tool {
    program: "umount",
    package: "mount",
};
pub const SWAPOFF: Tool = Tool {
    program: "swapoff",
    package: "mount",
};
pub const LDD: Tool = Tool {
    program: "ldd",
    package: "libc-bin",
};
/// `verify` logs in to the server with the workstation's OpenSSH client.
pub const SSH: Tool = Tool {
    program: "ssh",
    package: "openssh-client",
};
/// The verify tests run the distribution's real OpenSSH server.
pub const SSHD: Tool = Tool {
    program: "sshd",
    package: "openssh-server",
};
pub const SSH_KEYGEN: Tool = Tool {
    program: "ssh-keygen",
    package: "openssh-client",
};
/// `verify` reads the partition table with it; the lab image has it too.
pub const SFDISK: Tool = Tool {
    program: "sfdisk",
    package: "fdisk",
};
/// The verify tests make their own network and mount namespaces.
pub const UNSHARE: Tool = Tool {
    program: "unshare",
    package: "util-linux",
};
/// The verify tests' server: the admin's commands go through the real sudo.
pub const SUDO: Tool = Tool {
    program: "sudo",
    package: "sudo",
};
/// The tests and the gates ask git for the revision and the tree's state.
pub const GIT: Tool = Tool {
    program: "git",
    package: "git",
};
/// The loop-device tests load btrfs when the kernel has it as a module.
pub const MODPROBE: Tool = Tool {
    program: "modprobe",
    package: "kmod",
};
/// `fresh-machine` makes its Debian root with it.
pub const DEBOOTSTRAP: Tool = Tool {
    program: "debootstrap",
    package: "debootstrap",
};
/// Parses the NixOS VM tests' Python test scripts (tests/host_modules.rs).
pub const PYTHON3: Tool = Tool {
    program: "python3",
    package: "python3-minimal",
};
/// Optional: shrinks the guest agent in the VM image.
pub const STRIP: Tool = Tool {
    program: "strip",
    package: "binutils",
};
/// For kernels whose modules are xz-compressed (NixOS).
pub const XZ: Tool = Tool {
    program: "xz",
    package: "xz-utils",
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
pub fn ensure_kernel(context: &Context) -> Result<()> {
    provision(context, &[], true).map(|_| ())
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
    /// The programs not found (and the VM kernel, when it is missing).
    pub programs: Vec<&'static str>,
    /// Every package the command needs: apt resolves them together.
    pub packages: Vec<&'static str>,
    pub reason: String,
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "missing tools: {}", self.programs.join(", "))?;
        writeln!(f, "  {}", self.reason)?;
        writeln!(
            f,
            "  on Debian or Ubuntu, as root (one transaction with every package this command needs): {}",
            apt::command_for(&self.packages)
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

/// A program in PATH, or in the sbin directories Debian keeps for root.
pub(crate) fn find_program(program: &str) -> Option<Utf8PathBuf> {
    let found = which::which(program)
        .ok()
        .or_else(|| which::which_in(program, Some("/usr/local/sbin:/usr/sbin:/sbin"), "/").ok())?;
    Utf8PathBuf::from_path_buf(found).ok()
}

/// Where an optional tool is, without installing anything.
pub fn find(tool: Tool) -> Option<Utf8PathBuf> {
    find_program(tool.program)
}

/// Whether this process runs as root (its effective user id is 0).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// What is missing of `tools` (and the kernel, when `kernel`).
fn missing_of(tools: &[Tool], kernel: bool) -> Vec<&'static str> {
    let mut missing: Vec<&'static str> = tools
        .iter()
        .filter(|t| find_program(t.program).is_none())
        .map(|t| t.program)
        .collect();
    missing.dedup();
    if kernel && !kernel_installed() {
        missing.push("a VM kernel (/boot/vmlinuz-<version> with /lib/modules/<version>)");
    }
    missing
}

/// Every package of `tools` (and the kernel's, when `kernel`), sorted.
pub fn packages_of(tools: &[Tool], kernel: bool) -> Vec<&'static str> {
    let mut packages: Vec<&'static str> = tools.iter().map(|t| t.package).collect();
    if kernel {
        packages.push(KERNEL_PACKAGE);
    }
    packages.sort_unstable();
    packages.dedup();
    packages
}

fn describe(tools: &[Tool], kernel: bool, missing: Vec<&'static str>, reason: String) -> Missing {
    Missing {
        programs: missing,
        packages: packages_of(tools, kernel),
        reason,
    }
}

/// Finds every tool, installing missing ones when allowed. The error is a
/// `Missing` (downcast it to tell "not installed" from other failures).
pub fn ensure(context: &Context, tools: &[Tool]) -> Result<Found> {
    provision(context, tools, false)
}

/// Finds every tool without installing anything: for code below a command
/// that ensured its tools at its start, and for tests (a missing tool fails
/// them with the command that installs it). The error is a `Missing`.
pub fn require(tools: &[Tool]) -> Result<Found> {
    let missing = missing_of(tools, false);
    if !missing.is_empty() {
        return Err(describe(
            tools,
            false,
            missing,
            "not installed (the command installs what it needs when it starts, where it may)"
                .to_owned(),
        )
        .into());
    }
    look_up(tools, false)
}

/// Finds every tool and, when `kernel`, a kernel for the lab VM. When any
/// is missing and installing is possible, installs every package of
/// `tools` (and the kernel) in one apt transaction (see `apt`), then looks
/// again; what is still missing is a `Missing` naming the exact command.
pub fn provision(context: &Context, tools: &[Tool], kernel: bool) -> Result<Found> {
    let missing = missing_of(tools, kernel);
    if !missing.is_empty() {
        if let Some(reason) = cannot_install_because(context.install()) {
            return Err(describe(tools, kernel, missing, reason).into());
        }
        apt::install(&packages_of(tools, kernel))?;
        let still = missing_of(tools, kernel);
        if !still.is_empty() {
            return Err(describe(
                tools,
                kernel,
                still,
                "apt-get installed the packages, but these are still not found (in PATH, /usr/sbin or /sbin; the kernel in /boot and /lib/modules)".to_owned(),
            )
            .into());
        }
    }
    look_up(tools, kernel)
}

/// The path of every tool, which was found a moment ago.
fn look_up(tools: &[Tool], kernel: bool) -> Result<Found> {
    let mut found = Found::default();
    for tool in tools {
        let path = find_program(tool.program).with_context(|| {
            describe(
                tools,
                kernel,
                vec![tool.program],
                "it disappeared while looking".to_owned(),
            )
        })?;
        found.0.insert(tool.program, path);
    }
    Ok(found)
}

/// Why installing is not possible here, or `None` when it is.
fn cannot_install_because(install: Install) -> Option<String> {
    if install == Install::Forbidden {
        return Some(format!(
            "installing is turned off ({NO_INSTALL_ENV}=1 or --no-install)"
        ));
    }
    if !is_root() {
        return Some("not running as root, so nothing was installed".to_owned());
    }
    if find_program("apt-get").is_none() {
        return Some("this is not a Debian or Ubuntu machine (no apt-get)".to_owned());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_tools_name_every_package_of_the_command() {
        let missing = describe(
            &[NIX_INSTANTIATE, MKFS_BTRFS, BTRFS, QEMU_IMG],
            false,
            vec!["mkfs.btrfs", "btrfs"],
            "installing is turned off".to_owned(),
        );
        assert_eq!(
            missing.packages,
            vec!["btrfs-progs", "nix-bin", "qemu-utils"]
        );
        let text = missing.to_string();
        assert!(text.contains("missing tools: mkfs.btrfs, btrfs"), "{text}");
        assert!(
            text.contains("apt-get install --no-install-recommends --no-remove --no-upgrade btrfs-progs nix-bin qemu-utils"),
            "{text}"
        );
        assert!(text.contains("nix develop"), "{text}");
    }

    #[test]
    fn the_kernel_is_in_the_same_transaction() {
        assert_eq!(
            packages_of(&[GIT, QEMU], true),
            vec!["git", KERNEL_PACKAGE, "qemu-system-x86"]
        );
    }

    #[test]
    fn finds_a_tool_that_every_machine_has() {
        let found = ensure(
            &Context::default(),
            &[Tool {
                program: "sh",
                package: "dash",
            }],
        )
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
