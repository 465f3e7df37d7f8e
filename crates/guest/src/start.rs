//! What /init does before the plan: the kernel's filesystems, the
//! protocol port, the image's modules and the plan from fw_cfg.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

use crate::port::{say, PORT, PROTOCOL_PORT};
use lab_protocol::plan::{Plan, SCHEMA};
use lab_protocol::MODULES_LIST;

/// Where qemu's fw_cfg shows the plan (`lab_protocol::plan::FW_CFG_NAME`).
const PLAN_FILE: &str = "/sys/firmware/qemu_fw_cfg/by_name/opt/xtask/plan.json/raw";

fn mount_pseudo(source: &str, target: &str, fs_type: &str, options: &str) -> Result<()> {
    std::fs::create_dir_all(target).with_context(|| format!("creating {target}"))?;
    let c = |s: &str| CString::new(s).context("NUL in a mount argument");
    let (source_c, target_c, type_c, data_c) = (c(source)?, c(target)?, c(fs_type)?, c(options)?);
    // SAFETY: valid NUL-terminated strings that outlive the call.
    let result = unsafe {
        libc::mount(
            source_c.as_ptr(),
            target_c.as_ptr(),
            type_c.as_ptr(),
            0,
            data_c.as_ptr().cast(),
        )
    };
    if result != 0 {
        bail!(
            "mounting {fs_type} on {target}: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

pub(super) fn early_mounts() -> Result<()> {
    mount_pseudo("proc", "/proc", "proc", "")?;
    mount_pseudo("sysfs", "/sys", "sysfs", "")?;
    mount_pseudo("devtmpfs", "/dev", "devtmpfs", "mode=0755")?;
    mount_pseudo("tmpfs", "/run", "tmpfs", "mode=0755")?;
    // The console node of the image is now hidden; keep using the open one.
    Ok(())
}

pub(super) fn open_port() -> Result<()> {
    let port = File::options()
        .read(true)
        .write(true)
        .open(PROTOCOL_PORT)
        .with_context(|| format!("opening {PROTOCOL_PORT}"))?;
    // Raw: no echo of the host's answers, no line editing, no CR/LF mangling.
    // SAFETY: a valid open tty descriptor and a termios owned by this frame.
    unsafe {
        let mut termios: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(port.as_raw_fd(), &mut termios) == 0 {
            libc::cfmakeraw(&mut termios);
            libc::tcsetattr(port.as_raw_fd(), libc::TCSANOW, &termios);
        }
    }
    if let Ok(mut shared) = PORT.lock() {
        *shared = Some(port);
    }
    Ok(())
}

/// Loads the image's modules in order; the names of those that failed.
/// (In parallel they take longer: the kernel serialises most of a load, and
/// under TCG the threads only compete for the two vCPUs.)
pub(super) fn load_modules() -> Result<Vec<String>> {
    let list = std::fs::read(MODULES_LIST).with_context(|| format!("reading {MODULES_LIST}"))?;
    let modules: Vec<String> = serde_json::from_slice(&list).context("reading the module list")?;
    let mut failed = Vec::new();
    let empty = CString::default();
    for module in modules {
        let file = File::open(&module).with_context(|| format!("opening {module}"))?;
        let started = Instant::now();
        // SAFETY: finit_module with an open descriptor and empty parameters.
        let result =
            unsafe { libc::syscall(libc::SYS_finit_module, file.as_raw_fd(), empty.as_ptr(), 0) };
        let ms = started.elapsed().as_millis();
        if ms >= 200 {
            say(&format!("module {module}: {ms} ms"));
        }
        if result != 0 {
            let error = std::io::Error::last_os_error();
            if error.raw_os_error() != Some(libc::EEXIST) {
                say(&format!("module {module}: {error}"));
                failed.push(format!("{module} ({error})"));
            }
        }
    }
    Ok(failed)
}

pub(super) fn read_plan() -> Result<Plan> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !Path::new(PLAN_FILE).exists() {
        if Instant::now() > deadline {
            bail!("no plan at {PLAN_FILE} (qemu's -fw_cfg name=opt/xtask/plan.json)");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let bytes = std::fs::read(PLAN_FILE).with_context(|| format!("reading {PLAN_FILE}"))?;
    let plan: Plan = serde_json::from_slice(&bytes).context("the plan does not parse")?;
    if plan.schema != SCHEMA {
        bail!(
            "the plan has schema {} but this agent reads {SCHEMA}",
            plan.schema
        );
    }
    Ok(plan)
}
