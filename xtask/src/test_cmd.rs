//! `cargo xtask test`: everything the product must prove, with its set-up.
//! Installs the system packages the tests use (as root on Debian/Ubuntu,
//! saying so; otherwise it names them and exits 2), then runs
//! `cargo test --workspace`, whose suites include the real nix-instantiate,
//! Btrfs on loop devices, sgdisk on sparse files and the lab VM boots.

use std::process::ExitCode;

use anyhow::Result;
use xshell::cmd;

use crate::project::shell;
use crate::setup::{self, Tool};

/// Every program some test runs. `.ci/run` installs the same packages
/// (a test keeps the two lists together).
pub const TEST_TOOLS: &[Tool] = &[
    setup::NIX_INSTANTIATE,
    setup::MKFS_BTRFS,
    setup::BTRFS,
    setup::SGDISK,
    setup::COMPSIZE,
    setup::MKFS_VFAT,
    setup::CRYPTSETUP,
    setup::BUSYBOX,
    setup::DASH,
    setup::QEMU,
    setup::QEMU_IMG,
    setup::FSTRIM,
    setup::FINDMNT,
    setup::BLKID,
    setup::LOSETUP,
    setup::MOUNT,
    setup::SWAPON,
    setup::MKSWAP,
    setup::LSATTR,
    setup::CHATTR,
    setup::DEPMOD,
    setup::ZSTD,
    setup::UMOUNT,
    setup::SWAPOFF,
    setup::LDD,
];

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Extra arguments for `cargo test` (after `--`), e.g. a test name filter.
    #[arg(last = true)]
    pub cargo_test_args: Vec<String>,
}

pub fn run(args: Args) -> Result<ExitCode> {
    setup::ensure(TEST_TOOLS)?;
    setup::ensure_kernel()?;
    let sh = shell()?;
    let extra = &args.cargo_test_args;
    let status = cmd!(sh, "cargo test --workspace {extra...}").quiet().run();
    Ok(if status.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::project::project_root;

    #[test]
    fn ci_installs_every_package_the_tests_need() {
        let ci = std::fs::read_to_string(project_root().join(".ci").join("run")).unwrap();
        for tool in TEST_TOOLS {
            assert!(
                ci.split_whitespace().any(|word| word == tool.package),
                ".ci/run does not install {} (for {})",
                tool.package,
                tool.program
            );
        }
        assert!(
            ci.contains(setup::KERNEL_PACKAGE),
            ".ci/run does not install the VM kernel"
        );
        assert!(
            ci.lines().any(|l| l.trim() == "cargo xtask test"),
            ".ci/run must run the README's test command"
        );
    }
}
