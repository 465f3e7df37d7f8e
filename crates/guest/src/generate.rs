//! The data the plan has the agent write: random bytes from the kernel and
//! journal-like text, both cheap for a debug build running under TCG.

use std::fs::File;
use std::io::Write as _;
use std::path::Path;

use anyhow::{Context as _, Result};

/// Appends `len` bytes from getrandom(2): the kernel's ChaCha20 is compiled
/// with optimisation, this agent (a debug build under TCG) is not.
pub(super) fn kernel_random(buffer: &mut Vec<u8>, len: usize) -> Result<()> {
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

pub(super) fn write_generated(
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

pub(super) fn write_repeated_log(path: &str, bytes: u64, seed: u64) -> Result<()> {
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
}
