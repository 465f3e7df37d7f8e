//! Btrfs filesystems on loop devices over sparse files.
//!
//! Every loop device is attached here, to a file this module just created,
//! and detached when its guard drops. Before anything writes to a device,
//! the kernel's record of its backing file is checked against that file, so
//! a fixture can never format a device it did not create.

use std::fs;
use std::os::unix::fs::MetadataExt;

use anyhow::{bail, ensure, Context as _, Result};
use camino::{Utf8Path, Utf8PathBuf};
use xshell::{cmd, Shell};

use toolbox::context::Context;
use toolbox::process::Supervised;
use toolbox::setup::{self, Found, Tool};

pub const UMOUNT: Tool = Tool {
    program: "umount",
    package: "mount",
};

/// What every loop-device fixture needs.
pub const FIXTURE_TOOLS: &[Tool] = &[
    setup::BTRFS,
    setup::MKFS_BTRFS,
    setup::LOSETUP,
    setup::MOUNT,
    UMOUNT,
];

/// A checked environment for loop-device fixtures: root, the tools, and
/// the loop driver.
#[derive(Debug, Clone)]
pub struct Lab {
    pub tools: Found,
}

impl Lab {
    /// Checks that fixtures can run here, with `extra` tools on top of
    /// `FIXTURE_TOOLS` (installed when `setup` may install them). The error
    /// says what to install or change; it never turns into a skip.
    pub fn prepare(context: &Context, extra: &[Tool]) -> Result<Lab> {
        ensure!(
            setup::is_root(),
            "loop-device Btrfs fixtures need root (losetup, mkfs.btrfs, mount); run the tests as root, e.g. `sudo -E cargo test`"
        );
        let mut wanted = FIXTURE_TOOLS.to_vec();
        wanted.extend_from_slice(extra);
        let tools = setup::ensure(context, &wanted)?;
        ensure!(
            Utf8Path::new("/dev/loop-control").exists(),
            "/dev/loop-control is missing, so loop devices cannot be created: load the driver (`modprobe loop`) or give the container loop devices"
        );
        ensure!(
            kernel_has_btrfs()?,
            "this kernel cannot mount Btrfs: load the module (`modprobe btrfs`)"
        );
        Ok(Lab { tools })
    }

    pub fn tool(&self, tool: Tool) -> Result<&Utf8PathBuf> {
        self.tools.path(tool)
    }
}

/// Whether the kernel knows Btrfs, loading the module if needed.
fn kernel_has_btrfs() -> Result<bool> {
    let listed = || {
        fs::read_to_string("/proc/filesystems")
            .map(|f| {
                f.lines()
                    .any(|l| l.split_whitespace().last() == Some("btrfs"))
            })
            .unwrap_or(false)
    };
    if listed() {
        return Ok(true);
    }
    let sh = Shell::new()?;
    let _ = Supervised::from_command(cmd!(sh, "modprobe btrfs")).status();
    Ok(listed())
}

fn utf8(path: std::path::PathBuf) -> Result<Utf8PathBuf> {
    Utf8PathBuf::from_path_buf(path).map_err(|p| anyhow::anyhow!("{} is not UTF-8", p.display()))
}

/// A loop device over a sparse file in its own temporary directory.
#[derive(Debug)]
pub struct LoopDevice {
    device: Utf8PathBuf,
    image: Utf8PathBuf,
    losetup: Utf8PathBuf,
    // Removed (with the image) after the device is detached.
    _dir: tempfile::TempDir,
}

impl LoopDevice {
    /// Attaches a new sparse file of `bytes` bytes in the temporary directory.
    pub fn create(lab: &Lab, bytes: u64) -> Result<LoopDevice> {
        LoopDevice::create_in(lab, bytes, None)
    }

    /// Like `create`, with the image in a directory below `parent` when given.
    pub fn create_in(lab: &Lab, bytes: u64, parent: Option<&Utf8Path>) -> Result<LoopDevice> {
        let mut builder = tempfile::Builder::new();
        builder.prefix("xtask-loop-");
        let dir = match parent {
            Some(parent) => builder.tempdir_in(parent),
            None => builder.tempdir(),
        }
        .context("creating a directory for a disk image")?;
        let image = utf8(dir.path().join("disk.img"))?;
        let file = fs::File::create(&image).with_context(|| format!("creating {image}"))?;
        file.set_len(bytes)
            .with_context(|| format!("making {image} {bytes} bytes long"))?;
        drop(file);
        let losetup = lab.tool(setup::LOSETUP)?.clone();
        let sh = Shell::new()?;
        let attached = Supervised::from_command(cmd!(sh, "{losetup} --find --show {image}"))
            .read()
            .with_context(|| {
                format!("attaching {image} to a loop device (does this machine allow loop devices? try `modprobe loop`)")
            })?;
        let device = Utf8PathBuf::from(attached.trim());
        ensure!(
            device.as_str().starts_with("/dev/loop"),
            "losetup answered {device:?}, not a loop device"
        );
        let loop_device = LoopDevice {
            device,
            image,
            losetup,
            _dir: dir,
        };
        loop_device.check_ours()?;
        Ok(loop_device)
    }

    pub fn path(&self) -> &Utf8Path {
        &self.device
    }

    /// Fails unless the kernel says this device is backed by our image.
    pub fn check_ours(&self) -> Result<()> {
        let name = self
            .device
            .file_name()
            .with_context(|| format!("{} has no name", self.device))?;
        let record = format!("/sys/block/{name}/loop/backing_file");
        let backing = fs::read_to_string(&record).with_context(|| format!("reading {record}"))?;
        let ours =
            fs::canonicalize(&self.image).with_context(|| format!("resolving {}", self.image))?;
        ensure!(
            std::path::Path::new(backing.trim()) == ours,
            "{} is backed by {}, not by this fixture's {}; refusing to touch it",
            self.device,
            backing.trim(),
            self.image
        );
        Ok(())
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        // Only ever our own device; if the record changed, leave it alone.
        if self.check_ours().is_err() {
            return;
        }
        let Ok(sh) = Shell::new() else { return };
        let (losetup, device) = (&self.losetup, &self.device);
        if Supervised::from_command(cmd!(sh, "{losetup} --detach {device}"))
            .checked()
            .is_err()
        {
            eprintln!("warning: could not detach {device}");
        }
    }
}

/// Whether something is mounted exactly at `path` (from /proc/self/mountinfo).
pub fn is_mountpoint(path: &Utf8Path) -> bool {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    // Field 5 is the mount point, with spaces and the like octal-escaped.
    let escaped = path
        .as_str()
        .replace('\\', "\\134")
        .replace(' ', "\\040")
        .replace('\t', "\\011")
        .replace('\n', "\\012");
    info.lines()
        .any(|line| line.split(' ').nth(4) == Some(escaped.as_str()))
}

/// A fresh Btrfs on its own loop device, with the top level (subvolid=5)
/// mounted at `top()` for the test to arrange and inspect.
#[derive(Debug)]
pub struct BtrfsFixture {
    top: Utf8PathBuf,
    scratch: Utf8PathBuf,
    mounts: std::cell::RefCell<Vec<Utf8PathBuf>>,
    btrfs: Utf8PathBuf,
    mount: Utf8PathBuf,
    umount: Utf8PathBuf,
    // Dropped after the unmounts in `Drop`, in this order.
    device: LoopDevice,
    _dirs: tempfile::TempDir,
}

impl BtrfsFixture {
    /// Formats a new sparse file of `bytes` bytes (at least 128 MiB for
    /// mkfs.btrfs) and mounts its top level.
    pub fn create(lab: &Lab, bytes: u64) -> Result<BtrfsFixture> {
        BtrfsFixture::create_in(lab, bytes, None)
    }

    /// Like `create`, with the image file below `parent` when given.
    pub fn create_in(lab: &Lab, bytes: u64, parent: Option<&Utf8Path>) -> Result<BtrfsFixture> {
        let device = LoopDevice::create_in(lab, bytes, parent)?;
        let dirs = tempfile::Builder::new()
            .prefix("xtask-btrfs-")
            .tempdir()
            .context("creating fixture directories")?;
        let base = utf8(dirs.path().to_path_buf())?;
        let top = base.join("top");
        let scratch = base.join("scratch");
        fs::create_dir(&top).with_context(|| format!("creating {top}"))?;
        fs::create_dir(&scratch).with_context(|| format!("creating {scratch}"))?;
        let fixture = BtrfsFixture {
            top,
            scratch,
            mounts: Default::default(),
            btrfs: lab.tool(setup::BTRFS)?.clone(),
            mount: lab.tool(setup::MOUNT)?.clone(),
            umount: lab.tool(UMOUNT)?.clone(),
            device,
            _dirs: dirs,
        };
        // Checked again right before the only write to the raw device.
        fixture.device.check_ours()?;
        let sh = Shell::new()?;
        let (mkfs, dev) = (lab.tool(setup::MKFS_BTRFS)?, fixture.device.path());
        let output = Supervised::from_command(cmd!(sh, "{mkfs} --quiet --force --nodiscard {dev}"))
            .run()
            .with_context(|| format!("formatting {dev}"))?;
        ensure!(
            output.success(),
            "mkfs.btrfs {dev} failed: {}",
            output.stderr_text()
        );
        fixture.mount_top_level(&fixture.top)?;
        Ok(fixture)
    }

    pub fn device(&self) -> &Utf8Path {
        self.device.path()
    }

    /// Where the top level is mounted for the test.
    pub fn top(&self) -> &Utf8Path {
        &self.top
    }

    /// A directory outside the filesystem for the test's own files
    /// (mountpoints for the script, status directories).
    pub fn scratch(&self) -> &Utf8Path {
        &self.scratch
    }

    /// Mounts the top level at `at` too; unmounted on drop.
    pub fn mount_top_level(&self, at: &Utf8Path) -> Result<()> {
        fs::create_dir_all(at).with_context(|| format!("creating {at}"))?;
        let sh = Shell::new()?;
        let (mount, dev) = (&self.mount, self.device.path());
        Supervised::from_command(cmd!(sh, "{mount} -t btrfs -o subvolid=5 {dev} {at}"))
            .checked()
            .with_context(|| format!("mounting {dev} at {at}"))?;
        self.forget_on_drop(at);
        Ok(())
    }

    /// Unmounts everything stacked at `at` on drop (for mountpoints the
    /// script uses, which a killed script leaves mounted).
    pub fn forget_on_drop(&self, at: &Utf8Path) {
        let mut mounts = self.mounts.borrow_mut();
        if !mounts.iter().any(|m| m == at) {
            mounts.push(at.to_owned());
        }
    }

    /// Unmounts every mount stacked at `at`, as a reboot would.
    pub fn unmount_all(&self, at: &Utf8Path) -> Result<()> {
        let sh = Shell::new()?;
        let umount = &self.umount;
        // A process killed with the run may still be leaving the mount
        // (one in a process group of its own, e.g. under GNU timeout):
        // a busy unmount is tried again for up to 5 s.
        let mut busy = 0;
        for _ in 0..16 {
            if !is_mountpoint(at) {
                return Ok(());
            }
            while busy < 50 {
                let probe = Supervised::from_command(cmd!(sh, "{umount} {at}"))
                    .run()
                    .with_context(|| format!("unmounting {at}"))?;
                if probe.success() || !is_mountpoint(at) {
                    break;
                }
                busy += 1;
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            if !is_mountpoint(at) {
                return Ok(());
            }
            let output = Supervised::from_command(cmd!(sh, "{umount} {at}"))
                .run()
                .with_context(|| format!("unmounting {at}"))?;
            ensure!(
                output.success() || !is_mountpoint(at),
                "umount {at} failed: {}",
                output.stderr_text().trim()
            );
        }
        bail!("{at} is still mounted after 16 unmounts")
    }

    /// Creates the subvolume top/<relative> (its parent directory must
    /// exist), with the kernel's own call, as `btrfs subvolume create` does,
    /// without a process: benchmarks create tens of thousands.
    pub fn create_subvolume(&self, relative: &str) -> Result<Utf8PathBuf> {
        let path = self.top.join(relative);
        let (parent, name) = match relative.rsplit_once('/') {
            Some((parent, name)) => (self.top.join(parent), name),
            None => (self.top.clone(), relative),
        };
        create_subvolume_in(&parent, name).with_context(|| format!("creating subvolume {path}"))?;
        Ok(path)
    }

    /// `btrfs property set -ts top/<relative> ro <value>`.
    pub fn set_read_only(&self, relative: &str, read_only: bool) -> Result<()> {
        let path = self.top.join(relative);
        let sh = Shell::new()?;
        let (btrfs, value) = (&self.btrfs, if read_only { "true" } else { "false" });
        Supervised::from_command(cmd!(sh, "{btrfs} property set -ts {path} ro {value}"))
            .checked()
            .map(drop)
            .with_context(|| format!("setting ro={value} on {path}"))
    }

    /// Every subvolume's path relative to the top level, sorted.
    pub fn subvolumes(&self) -> Result<Vec<String>> {
        let sh = Shell::new()?;
        let (btrfs, top) = (&self.btrfs, &self.top);
        let listing = Supervised::from_command(cmd!(sh, "{btrfs} subvolume list {top}"))
            .read()
            .with_context(|| format!("listing the subvolumes of {}", self.device.path()))?;
        let mut paths: Vec<String> = listing
            .lines()
            .filter_map(|l| l.split_once(" path ").map(|(_, p)| p.to_owned()))
            .collect();
        paths.sort();
        Ok(paths)
    }

    /// Commits the filesystem, so that a listing sees every change.
    pub fn sync(&self) -> Result<()> {
        let sh = Shell::new()?;
        let (btrfs, top) = (&self.btrfs, &self.top);
        Supervised::from_command(cmd!(sh, "{btrfs} filesystem sync {top}"))
            .checked()
            .map(drop)
            .context("btrfs filesystem sync")
    }
}

/// `BTRFS_IOC_SUBVOL_CREATE`: `_IOW(0x94, 14, struct btrfs_ioctl_vol_args)`,
/// from linux/include/uapi/linux/btrfs.h.
const BTRFS_IOC_SUBVOL_CREATE: u32 = 0x5000_940e;

/// `struct btrfs_ioctl_vol_args` (linux/include/uapi/linux/btrfs.h).
#[repr(C)]
struct VolArgs {
    fd: i64,
    name: [u8; 4088],
}

/// Creates the subvolume `name` in the directory `parent`, as
/// `btrfs subvolume create parent/name` does (btrfs-progs'
/// cmds/subvolume.c makes the same call). Any name a directory entry may
/// have works, newlines included.
pub fn create_subvolume_in(parent: &Utf8Path, name: &str) -> Result<()> {
    use std::os::fd::AsRawFd as _;
    ensure!(
        !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\0']),
        "{name:?} is not a name for a subvolume"
    );
    ensure!(name.len() < 4088, "the name {name:?} is too long");
    let dir = fs::File::open(parent).with_context(|| format!("opening {parent}"))?;
    let mut args = VolArgs {
        fd: 0,
        name: [0; 4088],
    };
    args.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: a valid directory descriptor and a struct of the size and
    // layout the ioctl number encodes, alive for the call.
    let rc = unsafe {
        libc::ioctl(
            dir.as_raw_fd(),
            BTRFS_IOC_SUBVOL_CREATE as _,
            &mut args as *mut VolArgs,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("BTRFS_IOC_SUBVOL_CREATE {name:?} in {parent}"));
    }
    Ok(())
}

/// Whether `path` is the top directory of a subvolume (inode 256).
pub fn is_subvolume(path: &Utf8Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.is_dir() && m.ino() == 256)
}

impl Drop for BtrfsFixture {
    fn drop(&mut self) {
        let mounts: Vec<Utf8PathBuf> = self.mounts.borrow().clone();
        for at in mounts.iter().rev() {
            if let Err(error) = self.unmount_all(at) {
                eprintln!("warning: {error:#}");
            }
        }
        // `device` drops next and detaches the loop device.
    }
}
