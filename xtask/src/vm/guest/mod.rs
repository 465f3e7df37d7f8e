//! `xtask guest`: the lab VM's /init. It mounts the kernel's filesystems,
//! loads the modules listed in the image, reads its plan from fw_cfg and
//! runs it step by step: programs by absolute path with argument vectors,
//! never a shell, except the checklist's own command lines, which bash runs
//! as the admin would (`admin`). Every step and check is reported on ttyS1 (see
//! `super::protocol`); the console (ttyS0) gets a human-readable log. At the
//! end it unmounts, syncs and powers off, also after a failure or a panic.

mod admin;
mod checks;
mod discard;
pub mod parse;
pub mod sudo;

pub use admin::ADMIN_PATH;
/// `ssh` in the image: the lab's transport, the VM being both machines.
pub const SSH_SHIM: &str = include_str!("ssh.sh");

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs::File;
use std::io::{Read as _, Write as _};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

use super::initramfs::MODULES_LIST;
use super::plan::{Action, OnFailure, Plan, SCHEMA, SYSROOT, TOP_LEVEL_MOUNT};
use super::protocol::{self, Event};

/// The protocol port; the console is ttyS0.
const PROTOCOL_PORT: &str = "/dev/ttyS1";
const PLAN_FILE: &str = "/sys/firmware/qemu_fw_cfg/by_name/opt/xtask/plan.json/raw";
/// How long a `measure` waits for the host.
const MEASURE_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, clap::Args)]
pub struct Args {}

/// The protocol port, shared with the panic hook.
static PORT: Mutex<Option<File>> = Mutex::new(None);

pub fn send(event: &Event) {
    let line = protocol::encode(event);
    if let Ok(mut port) = PORT.lock() {
        if let Some(port) = port.as_mut() {
            // One write per line, so a line is never split by another writer.
            let _ = port.write_all(line.as_bytes());
            let _ = port.flush();
        }
    }
}

/// A line on the console log.
pub fn say(text: &str) {
    println!("[xtask] {text}");
}

pub fn run(_args: Args) -> Result<ExitCode> {
    if std::process::id() != 1 {
        bail!("`xtask guest` is the vm-test VM's /init and runs only as PID 1 inside it");
    }
    let started = Instant::now();
    std::panic::set_hook(Box::new(|info| {
        let message = format!("the guest agent panicked: {info}");
        eprintln!("[xtask] {message}");
        send(&Event::Fatal { message });
    }));
    let outcome = std::panic::catch_unwind(|| {
        let mut agent = Agent::default();
        let result = agent.main(started);
        if let Err(error) = &result {
            let message = format!("{error:#}");
            say(&format!("fatal: {message}"));
            send(&Event::Fatal { message });
        }
        agent.teardown();
        result.is_ok() && agent.all_ok
    });
    let ok = outcome.unwrap_or(false);
    send(&Event::Done {
        ok,
        uptime_ms: uptime_ms(),
    });
    power_off()
}

#[derive(Default)]
struct Agent {
    plan: Option<Plan>,
    all_ok: bool,
}

impl Agent {
    fn main(&mut self, started: Instant) -> Result<()> {
        early_mounts()?;
        // /proc is there now; this is still within a millisecond of /init starting.
        let kernel_to_init = uptime_ms().saturating_sub(started.elapsed().as_millis() as u64);
        open_port()?;
        let modules_started = Instant::now();
        let module_failures = load_modules()?;
        let modules_ms = modules_started.elapsed().as_millis() as u64;
        let plan = read_plan()?;
        send(&Event::Hello {
            boot: plan.boot,
            uptime_ms: kernel_to_init,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_owned(),
        });
        say(&format!(
            "boot {} of {} ({}), kernel to /init {kernel_to_init} ms",
            plan.boot,
            plan.boots,
            plan.kind.as_str()
        ));
        send(&Event::StepFinished {
            name: "init:modules".to_owned(),
            ms: modules_ms,
            ok: true,
            detail: (!module_failures.is_empty())
                .then(|| format!("not loaded: {}", module_failures.join(", "))),
        });
        send(&Event::Figure {
            name: format!("boot_ms.kernel_to_init.boot{}", plan.boot),
            value: kernel_to_init as f64,
        });
        send(&Event::Figure {
            name: format!("boot_ms.modules.boot{}", plan.boot),
            value: modules_ms as f64,
        });
        let _ = started;
        self.all_ok = true;
        let mut stopped_by: Option<String> = None;
        for step in &plan.steps {
            if let Some(by) = &stopped_by {
                say(&format!("skip {} (after {by} failed)", step.name));
                continue;
            }
            send(&Event::StepStarted {
                name: step.name.clone(),
            });
            let step_started = Instant::now();
            let result = execute(&plan, &step.action);
            let ms = step_started.elapsed().as_millis() as u64;
            match result {
                Ok(detail) => {
                    say(&format!("ok   {} ({ms} ms)", step.name));
                    send(&Event::StepFinished {
                        name: step.name.clone(),
                        ms,
                        ok: true,
                        detail,
                    });
                }
                Err(error) => {
                    let detail = format!("{error:#}");
                    say(&format!("FAIL {} ({ms} ms): {detail}", step.name));
                    send(&Event::StepFinished {
                        name: step.name.clone(),
                        ms,
                        ok: false,
                        detail: Some(detail),
                    });
                    self.all_ok = false;
                    if step.on_failure == OnFailure::Stop {
                        stopped_by = Some(step.name.clone());
                    }
                }
            }
        }
        self.plan = Some(plan);
        Ok(())
    }

    /// Unmounts everything it mounted (deepest first), turns swap off,
    /// closes the mappings and syncs: `poweroff -f` does none of that.
    fn teardown(&mut self) {
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let mut ours: Vec<String> = parse::proc_mounts(&mounts)
            .into_iter()
            .map(|m| m.mountpoint)
            .filter(|m| {
                m.starts_with(SYSROOT)
                    || m.starts_with("/run/xtask")
                    || m.starts_with("/btrfs_tmp")
                    || m.starts_with(TOP_LEVEL_MOUNT)
            })
            .collect();
        ours.sort_by_key(|m| std::cmp::Reverse(m.len()));
        let swaps = std::fs::read_to_string("/proc/swaps").unwrap_or_default();
        for (swap, _) in parse::proc_swaps(&swaps) {
            if let Ok(path) = CString::new(swap.as_bytes()) {
                // SAFETY: a valid NUL-terminated path.
                unsafe { libc::swapoff(path.as_ptr()) };
            }
        }
        for mountpoint in ours {
            if let Ok(path) = CString::new(mountpoint.as_bytes()) {
                // SAFETY: a valid NUL-terminated path.
                if unsafe { libc::umount2(path.as_ptr(), 0) } != 0 {
                    say(&format!(
                        "umount {mountpoint}: {}",
                        std::io::Error::last_os_error()
                    ));
                }
            }
        }
        if let Some(plan) = &self.plan {
            if let Ok(entries) = std::fs::read_dir("/dev/mapper") {
                for entry in entries.flatten() {
                    let name = entry.file_name();
                    if name != "control" {
                        let _ = Command::new(&plan.tools.cryptsetup)
                            .arg("close")
                            .arg(&name)
                            .output();
                    }
                }
            }
        }
        // SAFETY: sync(2) has no preconditions.
        unsafe { libc::sync() };
    }
}

fn power_off() -> ! {
    // SAFETY: sync(2) has no preconditions; reboot(2) ends the VM (PID 1 may call it).
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_POWER_OFF);
    }
    // Should reboot fail, PID 1 exiting panics the kernel, and qemu
    // (-no-reboot, panic=-1) exits too.
    std::process::exit(1)
}

pub fn uptime_ms() -> u64 {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0, |s| (s * 1000.0) as u64)
}

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

fn early_mounts() -> Result<()> {
    mount_pseudo("proc", "/proc", "proc", "")?;
    mount_pseudo("sysfs", "/sys", "sysfs", "")?;
    mount_pseudo("devtmpfs", "/dev", "devtmpfs", "mode=0755")?;
    mount_pseudo("tmpfs", "/run", "tmpfs", "mode=0755")?;
    // The console node of the image is now hidden; keep using the open one.
    Ok(())
}

fn open_port() -> Result<()> {
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
fn load_modules() -> Result<Vec<String>> {
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

fn read_plan() -> Result<Plan> {
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

/// Output of a finished program.
pub struct Ran {
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    pub fn ok(&self) -> bool {
        self.status.success()
    }

    /// The status and the last lines of output, for a failure message.
    pub fn describe(&self) -> String {
        let tail = |text: &str| -> String {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(6)..].join(" | ")
        };
        format!(
            "{}; stderr: {}; stdout: {}",
            self.status,
            tail(&self.stderr),
            tail(&self.stdout)
        )
    }
}

/// Runs a program (absolute path) with a clean environment.
pub fn run_program(argv: &[String], env: &BTreeMap<String, String>) -> Result<Ran> {
    let (program, args) = argv.split_first().context("an empty command")?;
    if !program.starts_with('/') {
        bail!("{program}: programs are called by absolute path");
    }
    let mut command = Command::new(program);
    command
        .args(args)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .envs(env)
        .stdin(Stdio::null());
    let output = command
        .output()
        .with_context(|| format!("starting {program}"))?;
    let ran = Ran {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };
    for line in ran.stderr.lines().take(20) {
        say(&format!(
            "  {}: {line}",
            program.rsplit('/').next().unwrap_or(program)
        ));
    }
    Ok(ran)
}

/// Runs a program and requires exit status 0.
pub fn run_ok(argv: &[String]) -> Result<Ran> {
    let ran = run_program(argv, &BTreeMap::new())?;
    if !ran.ok() {
        bail!("{} failed: {}", argv.join(" "), ran.describe());
    }
    Ok(ran)
}

fn execute(plan: &Plan, action: &Action) -> Result<Option<String>> {
    match action {
        Action::Run { argv, env } => {
            let ran = run_program(argv, env)?;
            if !ran.ok() {
                bail!("{}", ran.describe());
            }
            Ok(None)
        }
        Action::WaitForDevice { path, timeout_ms } => {
            let deadline = Instant::now() + Duration::from_millis(*timeout_ms);
            while !Path::new(path).exists() {
                if Instant::now() > deadline {
                    bail!("{path} did not appear in {timeout_ms} ms");
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok(None)
        }
        Action::LinkPartitions { disk, links } => link_partitions(disk, links),
        Action::LinkMapper { name } => link_mapper(name),
        Action::MakeDirectories { paths } => {
            for path in paths {
                std::fs::create_dir_all(path).with_context(|| format!("creating {path}"))?;
            }
            Ok(None)
        }
        Action::WriteFile { path, contents } => {
            if let Some(parent) = Path::new(path).parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(path, contents).with_context(|| format!("writing {path}"))?;
            Ok(None)
        }
        Action::WriteRandom { path, bytes } => {
            write_generated(path, *bytes, kernel_random)?;
            Ok(Some(format!("{bytes} bytes")))
        }
        Action::WriteLogText { path, bytes, seed } => {
            write_repeated_log(path, *bytes, *seed)?;
            Ok(Some(format!("{bytes} bytes")))
        }
        Action::CopyTree {
            sources,
            destination,
        } => {
            let mut copied = (0u64, 0u64);
            for source in sources {
                let name = source.trim_matches('/').replace('/', "-");
                let target = format!("{destination}/xtask-corpus-{name}");
                copy_tree(Path::new(source), Path::new(&target), &mut copied)?;
            }
            send(&Event::Figure {
                name: "corpus.bytes".to_owned(),
                value: copied.1 as f64,
            });
            Ok(Some(format!("{} files, {} bytes", copied.0, copied.1)))
        }
        Action::Remove { path } => {
            let p = Path::new(path);
            if p.is_dir() {
                std::fs::remove_dir_all(p)
            } else {
                std::fs::remove_file(p)
            }
            .with_context(|| format!("removing {path}"))?;
            Ok(None)
        }
        Action::Sync => {
            // SAFETY: sync(2) has no preconditions.
            unsafe { libc::sync() };
            Ok(None)
        }
        Action::Rollback(rollback) => checks::rollback(plan, rollback),
        Action::Measure { point, device } => {
            // SAFETY: sync(2) has no preconditions.
            unsafe { libc::sync() };
            File::open(device)
                .and_then(|disk| disk.sync_all())
                .with_context(|| format!("flushing {device}"))?;
            send(&Event::Measure {
                point: point.clone(),
            });
            wait_for_host(MEASURE_TIMEOUT)?;
            Ok(None)
        }
        Action::Check(check) => {
            checks::run(plan, check);
            Ok(None)
        }
        Action::EnterSystem { binds, login } => admin::enter_system(plan, binds, login.as_ref()),
        Action::Persistence { directories, files } => admin::persistence(directories, files),
        Action::Admin(step) => admin::run(plan, step),
        Action::DiscardProbe(probe) => discard::start(probe),
    }
}

/// Blocks until the host writes `continue` on the protocol port.
fn wait_for_host(timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut port = {
        let shared = PORT
            .lock()
            .map_err(|_| anyhow::anyhow!("port lock poisoned"))?;
        shared
            .as_ref()
            .context("no protocol port")?
            .try_clone()
            .context("cloning the protocol port")?
    };
    let mut received = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!("the host did not answer within {} s", timeout.as_secs());
        }
        let mut poll = libc::pollfd {
            fd: port.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let ready = unsafe { libc::poll(&mut poll, 1, left.as_millis().min(1000) as i32) };
        if ready <= 0 {
            continue;
        }
        let mut buffer = [0u8; 256];
        let n = port
            .read(&mut buffer)
            .context("reading the protocol port")?;
        received.extend_from_slice(&buffer[..n]);
        if String::from_utf8_lossy(&received).contains(protocol::CONTINUE) {
            return Ok(());
        }
    }
}

fn link_partitions(disk: &str, links: &[super::plan::PartitionLink]) -> Result<Option<String>> {
    let disk_name = disk.rsplit('/').next().unwrap_or(disk);
    for link in links {
        let separator = if disk_name.ends_with(|c: char| c.is_ascii_digit()) {
            "p"
        } else {
            ""
        };
        let partition = format!("{disk_name}{separator}{}", link.number);
        let uevent = format!("/sys/class/block/{partition}/uevent");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !Path::new(&uevent).exists() {
            if Instant::now() > deadline {
                bail!("the kernel shows no partition {partition}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let fields = parse::key_values(&std::fs::read_to_string(&uevent)?);
        let name = fields.get("PARTNAME").map(String::as_str).unwrap_or("");
        if name != link.label {
            bail!(
                "partition {partition} is named {name:?}, not {:?}",
                link.label
            );
        }
        let target = format!("/dev/{partition}");
        if let Some(parent) = Path::new(&link.link).parent() {
            std::fs::create_dir_all(parent)?;
        }
        let _ = std::fs::remove_file(&link.link);
        std::os::unix::fs::symlink(&target, &link.link)
            .with_context(|| format!("linking {} to {target}", link.link))?;
    }
    Ok(None)
}

/// What udev's device-mapper rules do (lvm2's 10-dm.rules): the mapping's
/// /dev/mapper/<name> is a link to its /dev/dm-<n> node. Without udev,
/// cryptsetup made a node of its own there; swapon then names the node
/// /proc/swaps shows (`/dev/dm-<n>` on the server).
fn link_mapper(name: &str) -> Result<Option<String>> {
    for entry in std::fs::read_dir("/sys/block").context("reading /sys/block")? {
        let node = entry?.file_name().to_string_lossy().into_owned();
        if !node.starts_with("dm-") {
            continue;
        }
        let named =
            std::fs::read_to_string(format!("/sys/block/{node}/dm/name")).unwrap_or_default();
        if named.trim() != name {
            continue;
        }
        anyhow::ensure!(
            Path::new(&format!("/dev/{node}")).exists(),
            "/dev/{node} (devtmpfs) is missing"
        );
        let link = format!("/dev/mapper/{name}");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(format!("../{node}"), &link)
            .with_context(|| format!("linking {link} to ../{node}"))?;
        return Ok(Some(format!("{link} -> ../{node}")));
    }
    bail!("no device-mapper device is named {name}")
}

fn copy_tree(source: &Path, target: &Path, copied: &mut (u64, u64)) -> Result<()> {
    let metadata = std::fs::symlink_metadata(source)?;
    if metadata.is_symlink() {
        let _ = std::fs::remove_file(target);
        std::os::unix::fs::symlink(std::fs::read_link(source)?, target)?;
    } else if metadata.is_dir() {
        std::fs::create_dir_all(target)?;
        for entry in std::fs::read_dir(source)? {
            let entry = entry?;
            copy_tree(&entry.path(), &target.join(entry.file_name()), copied)?;
        }
    } else if metadata.is_file() {
        std::fs::copy(source, target).with_context(|| format!("copying {}", source.display()))?;
        std::fs::set_permissions(
            target,
            std::fs::Permissions::from_mode(metadata.permissions().mode()),
        )?;
        copied.0 += 1;
        copied.1 += metadata.len();
    }
    Ok(())
}

/// Appends `len` bytes from getrandom(2): the kernel's ChaCha20 is compiled
/// with optimisation, this agent (a debug build under TCG) is not.
fn kernel_random(buffer: &mut Vec<u8>, len: usize) -> Result<()> {
    let start = buffer.len();
    buffer.resize(start + len, 0);
    let mut filled = start;
    while filled < buffer.len() {
        let rest = &mut buffer[filled..];
        // SAFETY: a writable buffer of rest.len() bytes.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let error = std::io::Error::last_os_error();
            if error.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(error).context("getrandom");
        }
        filled += n as usize;
    }
    Ok(())
}

fn write_generated(
    path: &str,
    bytes: u64,
    mut fill: impl FnMut(&mut Vec<u8>, usize) -> Result<()>,
) -> Result<()> {
    if let Some(parent) = Path::new(path).parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut file = File::create(path).with_context(|| format!("creating {path}"))?;
    let mut left = bytes as usize;
    let mut buffer = Vec::with_capacity(1 << 20);
    while left > 0 {
        buffer.clear();
        let chunk = left.min(1 << 20);
        fill(&mut buffer, chunk)?;
        buffer.truncate(chunk);
        file.write_all(&buffer)
            .with_context(|| format!("writing {path}"))?;
        left -= chunk;
    }
    file.sync_all().with_context(|| format!("syncing {path}"))?;
    Ok(())
}

/// Btrfs compresses each 128 KiB of a file on its own, so a 256 KiB block of
/// unique journal text written over and over compresses exactly as much as
/// all-unique text, at a sixteenth of the cost of generating it (the agent
/// is a debug build running under TCG).
const LOG_BLOCK: usize = 256 << 10;

fn write_repeated_log(path: &str, bytes: u64, seed: u64) -> Result<()> {
    if let Some(parent) = Path::new(path).parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut block = Vec::with_capacity(LOG_BLOCK + 256);
    Random::new(seed).fill_log(&mut block, LOG_BLOCK);
    block.truncate(LOG_BLOCK);
    let mut file = File::create(path).with_context(|| format!("creating {path}"))?;
    let mut left = bytes as usize;
    while left > 0 {
        let chunk = left.min(block.len());
        file.write_all(&block[..chunk])
            .with_context(|| format!("writing {path}"))?;
        left -= chunk;
    }
    file.sync_all().with_context(|| format!("syncing {path}"))?;
    Ok(())
}

/// xorshift64*: fast, seeded, and incompressible enough for zstd.
pub struct Random(u64);

impl Random {
    pub fn new(seed: u64) -> Self {
        Random(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Lines like a server's journal: timestamps, units, PIDs, messages.
    pub fn fill_log(&mut self, buffer: &mut Vec<u8>, len: usize) {
        const UNITS: &[&str] = &[
            "systemd",
            "sshd",
            "caddy",
            "podman",
            "tailscaled",
            "kernel",
            "nix-daemon",
            "systemd-journald",
        ];
        const MESSAGES: &[&str] = &[
            "Started Session {} of User root.",
            "Accepted publickey for root from 100.64.0.{} port 52{} ssh2: ED25519 SHA256:k3y",
            "handled request {} GET /api/v1/items status=200 duration=0.00{}s",
            "container {} health check passed",
            "Received disconnect from 100.64.0.{}: 11: disconnected by user",
            "building '/nix/store/{}-source.drv'...",
            "Finished Cleanup of Temporary Directories ({} ms).",
            "BTRFS info (device vda4): scrub: finished on devid 1 with status: {}",
        ];
        while buffer.len() < len {
            let r = self.next_u64();
            let unit = UNITS[(r % UNITS.len() as u64) as usize];
            let message = MESSAGES[((r >> 8) % MESSAGES.len() as u64) as usize];
            let mut text = message.to_owned();
            while let Some(at) = text.find("{}") {
                text.replace_range(at..at + 2, &format!("{}", self.next_u64() % 10_000));
            }
            let line = format!(
                "2025-11-{:02}T{:02}:{:02}:{:02}.{:06}+0000 hetzner-vps {unit}[{}]: {text}\n",
                1 + (r >> 16) % 28,
                (r >> 24) % 24,
                (r >> 32) % 60,
                (r >> 40) % 60,
                (r >> 20) % 1_000_000,
                (r >> 44) % 65536,
            );
            buffer.extend_from_slice(line.as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_data_is_deterministic() {
        let mut a = Vec::new();
        let mut b = Vec::new();
        Random::new(7).fill_log(&mut a, 10_000);
        Random::new(7).fill_log(&mut b, 10_000);
        assert_eq!(a, b);
        assert!(a.starts_with(b"2025-11-"));
        let mut r = Vec::new();
        kernel_random(&mut r, 64).unwrap();
        assert_eq!(r.len(), 64);
        assert_ne!(r[..8], r[8..16]);
    }

    #[test]
    fn refuses_to_run_outside_the_vm() {
        assert!(run(Args {}).is_err());
    }
}
