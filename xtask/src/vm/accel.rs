//! KVM or TCG. /dev/kvm can exist and still not work: nested
//! virtualisation that runs a few real-mode instructions but hangs once a
//! Linux kernel switches to long mode (seen on our CI machines), or no
//! permission. So the probe boots the very kernel the VM will boot, without
//! an initramfs: a working accelerator reaches the kernel's "no root" panic
//! and, with `panic=-1 -no-reboot`, qemu exits. Anything else within the
//! timeout means TCG. The verdict is cached per host boot, qemu and kernel.

use std::fmt;
use std::time::Duration;

use anyhow::{Context as _, Result};
use camino::Utf8Path;
use serde::{Deserialize, Serialize};

use toolbox::process::{Output, Supervised};

/// `auto`, `kvm` or `tcg`: overrides the probe (also `--accel`).
pub const ACCEL_ENV: &str = "XTASK_VM_ACCEL";
/// A KVM boot reaches the panic in about a second; TCG in about four.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// What the kernel prints when it has run far enough to look for a root.
const PROBE_MARKER: &str = "Kernel panic";
/// What is kept of the probe's console (a `quiet` boot prints a few KiB);
/// the rest is read and dropped.
const PROBE_CONSOLE_BYTES: u64 = 16 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Tcg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Choice {
    /// KVM when the probe shows it works, else TCG.
    Auto,
    Kvm,
    Tcg,
}

impl fmt::Display for Accel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Accel {
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }

    /// qemu's `-accel` and `-cpu` for this accelerator. `-cpu max` under TCG
    /// gives RDRAND and AES-NI, so the guest has entropy and fast dm-crypt.
    pub fn qemu_args(self) -> Vec<&'static str> {
        match self {
            Accel::Kvm => vec!["-accel", "kvm", "-cpu", "host"],
            Accel::Tcg => vec!["-accel", "tcg,thread=multi,tb-size=128", "-cpu", "max"],
        }
    }
}

/// The accelerator to use for booting `kernel`, and why.
pub fn choose(
    qemu: &Utf8Path,
    kernel: &Utf8Path,
    choice: Option<Choice>,
) -> Result<(Accel, String)> {
    let choice = match choice {
        Some(choice) => choice,
        None => match std::env::var(ACCEL_ENV).ok().as_deref() {
            None | Some("") | Some("auto") => Choice::Auto,
            Some("kvm") => Choice::Kvm,
            Some("tcg") => Choice::Tcg,
            Some(other) => anyhow::bail!("{ACCEL_ENV}={other:?}: expected auto, kvm or tcg"),
        },
    };
    match choice {
        Choice::Tcg => Ok((Accel::Tcg, "asked for".to_owned())),
        Choice::Kvm => {
            probe(qemu, kernel, Accel::Kvm).context("KVM was asked for but does not work here")?;
            Ok((Accel::Kvm, "asked for".to_owned()))
        }
        Choice::Auto => {
            if !Utf8Path::new("/dev/kvm").exists() {
                return Ok((Accel::Tcg, "no /dev/kvm".to_owned()));
            }
            let cache = ProbeCache::key(qemu, kernel);
            if let Some(verdict) = cache.as_ref().and_then(ProbeCache::read) {
                return Ok(verdict);
            }
            let verdict = match probe(qemu, kernel, Accel::Kvm) {
                Ok(elapsed) => (
                    Accel::Kvm,
                    format!("the kernel booted under KVM in {} ms", elapsed.as_millis()),
                ),
                Err(error) => (Accel::Tcg, format!("KVM probe failed: {error:#}")),
            };
            if let Some(cache) = cache {
                cache.write(&verdict);
            }
            Ok(verdict)
        }
    }
}

/// The probe's verdict, valid for one boot of this host, one qemu and one
/// kernel image (a kernel or qemu upgrade, or a reboot, probes again).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ProbeCache {
    boot_id: String,
    qemu: String,
    kernel: String,
    #[serde(default)]
    accel: Option<Accel>,
    #[serde(default)]
    reason: String,
}

impl ProbeCache {
    fn key(qemu: &Utf8Path, kernel: &Utf8Path) -> Option<ProbeCache> {
        let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
        let identity = |path: &Utf8Path| -> Option<String> {
            let meta = std::fs::metadata(path).ok()?;
            let modified = meta
                .modified()
                .ok()?
                .duration_since(std::time::UNIX_EPOCH)
                .ok()?;
            Some(format!("{path} {} {}", meta.len(), modified.as_nanos()))
        };
        Some(ProbeCache {
            boot_id: boot_id.trim().to_owned(),
            qemu: identity(qemu)?,
            kernel: identity(kernel)?,
            accel: None,
            reason: String::new(),
        })
    }

    fn path() -> camino::Utf8PathBuf {
        toolbox::project::xtask_dir().join("accel-probe.json")
    }

    fn read(&self) -> Option<(Accel, String)> {
        let text = std::fs::read_to_string(Self::path()).ok()?;
        let cached: ProbeCache = serde_json::from_str(&text).ok()?;
        let same = cached.boot_id == self.boot_id
            && cached.qemu == self.qemu
            && cached.kernel == self.kernel;
        let accel = cached.accel.filter(|_| same)?;
        Some((
            accel,
            format!("{} (probed earlier in this boot)", cached.reason),
        ))
    }

    /// Best effort: without a cache the next run probes again.
    fn write(&self, (accel, reason): &(Accel, String)) {
        let entry = ProbeCache {
            accel: Some(*accel),
            reason: reason.clone(),
            ..self.clone()
        };
        if let Ok(json) = serde_json::to_string_pretty(&entry) {
            let path = Self::path();
            if let Some(dir) = path.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            let _ = std::fs::write(path, json);
        }
    }
}

/// Boots `kernel` without an initramfs under `accel` until it panics for
/// want of a root; how long it took.
pub fn probe(qemu: &Utf8Path, kernel: &Utf8Path, accel: Accel) -> Result<Duration> {
    probe_within(qemu, kernel, accel, PROBE_TIMEOUT)
}

fn probe_within(
    qemu: &Utf8Path,
    kernel: &Utf8Path,
    accel: Accel,
    timeout: Duration,
) -> Result<Duration> {
    // On the supervised runner: the time limit, and the console and qemu's
    // messages read while it runs, so a chatty kernel never blocks on a full pipe.
    let finished = Supervised::new(qemu)
        .args([
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-machine",
            "pc",
            "-m",
            "256",
            "-no-reboot",
            "-serial",
            "stdio",
        ])
        .args(accel.qemu_args())
        .arg("-kernel")
        .arg(kernel)
        .args(["-append", "console=ttyS0 panic=-1 quiet"])
        .timeout(timeout)
        .stdout(Output::keep(PROBE_CONSOLE_BYTES))
        .stderr(Output::keep(PROBE_CONSOLE_BYTES))
        .run()?;
    let elapsed = finished.elapsed;
    let console = finished.stdout_text();
    let errors = finished.stderr_text();
    match finished.status {
        Some(_) if console.contains(PROBE_MARKER) => Ok(elapsed),
        Some(status) => anyhow::bail!(
            "qemu -accel {accel} exited with {status} before {kernel} reached its panic: {}",
            errors.trim()
        ),
        None => anyhow::bail!(
            "{kernel} did not boot to its panic under qemu -accel {accel} within {} s (a /dev/kvm that hangs real kernels)",
            timeout.as_secs()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcg_boots_the_vm_kernel_to_its_panic() {
        let found = toolbox::setup::require(&[toolbox::setup::QEMU])
            .expect("qemu-system-x86_64 is needed: apt-get install qemu-system-x86");
        let kernel = crate::vm::kernel::discover(None, None)
            .expect("a VM kernel is needed: apt-get install linux-image-cloud-amd64");
        let qemu = found.path(toolbox::setup::QEMU).unwrap();
        // TCG takes about 4 s on an idle machine; the margin is for a loaded one.
        probe_within(qemu, &kernel.image, Accel::Tcg, Duration::from_secs(120)).unwrap();
        let (accel, _) = choose(qemu, &kernel.image, Some(Choice::Tcg)).unwrap();
        assert_eq!(accel, Accel::Tcg);
    }

    #[test]
    fn a_file_that_is_not_a_kernel_fails_the_probe() {
        let found = toolbox::setup::require(&[toolbox::setup::QEMU])
            .expect("qemu-system-x86_64 is needed: apt-get install qemu-system-x86");
        let qemu = found.path(toolbox::setup::QEMU).unwrap();
        let not_a_kernel = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(not_a_kernel.path(), vec![0u8; 4096]).unwrap();
        let path = Utf8Path::from_path(not_a_kernel.path()).unwrap();
        assert!(probe_within(qemu, path, Accel::Tcg, Duration::from_secs(2)).is_err());
    }
}
