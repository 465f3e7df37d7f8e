//! KVM or TCG. /dev/kvm can exist and still not work (nested virtualisation
//! that hangs, no permission), so the probe boots a 64 KiB firmware that
//! runs one `out` instruction to qemu's isa-debug-exit port: if qemu exits
//! with that code in time, KVM runs guest code here.

use std::fmt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use camino::Utf8Path;
use serde::Serialize;

/// `auto`, `kvm` or `tcg`: overrides the probe (also `--accel`).
pub const ACCEL_ENV: &str = "XTASK_VM_ACCEL";
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// isa-debug-exit turns the value v written to its port into exit status 2v+1.
const PROBE_VALUE: u8 = 0x31;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
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

/// The accelerator to use, and why.
pub fn choose(qemu: &Utf8Path, choice: Option<Choice>) -> Result<(Accel, String)> {
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
            probe(qemu, Accel::Kvm).context("KVM was asked for but does not work here")?;
            Ok((Accel::Kvm, "asked for".to_owned()))
        }
        Choice::Auto => {
            if !Utf8Path::new("/dev/kvm").exists() {
                return Ok((Accel::Tcg, "no /dev/kvm".to_owned()));
            }
            match probe(qemu, Accel::Kvm) {
                Ok(elapsed) => Ok((
                    Accel::Kvm,
                    format!("probe ran in {} ms", elapsed.as_millis()),
                )),
                Err(error) => Ok((Accel::Tcg, format!("KVM probe failed: {error:#}"))),
            }
        }
    }
}

/// The probe firmware: zeros, and at the reset vector (the last 16 bytes)
/// `mov al, 0x31; out 0xf4, al; hlt; jmp $`.
pub fn probe_firmware() -> Vec<u8> {
    let mut image = vec![0u8; 64 * 1024];
    let code = [0xB0, PROBE_VALUE, 0xE6, 0xF4, 0xF4, 0xEB, 0xFE];
    image[0xFFF0..0xFFF0 + code.len()].copy_from_slice(&code);
    image
}

/// Boots the probe firmware under `accel`; how long it took.
pub fn probe(qemu: &Utf8Path, accel: Accel) -> Result<Duration> {
    let mut firmware = tempfile::Builder::new()
        .prefix("xtask-accel-probe-")
        .suffix(".bin")
        .tempfile()
        .context("creating the probe firmware")?;
    std::io::Write::write_all(&mut firmware, &probe_firmware())?;
    let mut command = Command::new(qemu);
    command
        .args([
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-machine",
            "pc",
            "-m",
            "16",
        ])
        .args(accel.qemu_args())
        .arg("-bios")
        .arg(firmware.path())
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = command
        .spawn()
        .with_context(|| format!("starting {qemu}"))?;
    loop {
        if let Some(status) = child.try_wait()? {
            let expected = i32::from(PROBE_VALUE) * 2 + 1;
            if status.code() == Some(expected) {
                return Ok(started.elapsed());
            }
            let mut stderr = String::new();
            if let Some(mut pipe) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
            }
            anyhow::bail!(
                "qemu -accel {accel} exited with {status}: {}",
                stderr.trim()
            );
        }
        if started.elapsed() > PROBE_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!(
                "qemu -accel {accel} did not run 2 instructions in {} s (a hanging /dev/kvm)",
                PROBE_TIMEOUT.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn firmware_jumps_to_the_exit_port() {
        let image = probe_firmware();
        assert_eq!(image.len(), 65536);
        assert_eq!(&image[0xFFF0..0xFFF4], &[0xB0, 0x31, 0xE6, 0xF4]);
    }

    #[test]
    fn tcg_always_runs_the_probe() {
        let Ok(found) = crate::setup::ensure(&[crate::setup::QEMU]) else {
            return; // the integration test fails loudly without qemu
        };
        probe(found.path(crate::setup::QEMU).unwrap(), Accel::Tcg).unwrap();
        let (accel, _) =
            choose(found.path(crate::setup::QEMU).unwrap(), Some(Choice::Tcg)).unwrap();
        assert_eq!(accel, Accel::Tcg);
    }
}
