//! What each step of the plan does (`lab_protocol::plan::Action`): programs,
//! devices, files, the host's measurements, checks and the admin's procedures.

use std::fs::File;
use std::io::Read as _;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

use crate::generate::{kernel_random, write_generated, write_repeated_log};
use crate::port::{send, PORT};
use crate::program::run_program;
use crate::{admin, checks, discard, parse, rollback, serve};
use lab_protocol::plan::{Action, Plan};
use lab_protocol::protocol::{self, Event};

/// How long a `measure` waits for the host.
const MEASURE_TIMEOUT: Duration = Duration::from_secs(120);

pub(super) fn execute(plan: &Plan, action: &Action) -> Result<Option<String>> {
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
        Action::Rollback(step) => rollback::run(plan, step),
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
        Action::ServeSsh(serve) => serve::serve(plan, serve, wait_for_host),
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

fn link_partitions(
    disk: &str,
    links: &[lab_protocol::plan::PartitionLink],
) -> Result<Option<String>> {
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
