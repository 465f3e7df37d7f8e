//! Stage 2 of every boot: entering the system, the persisted paths, the
//! first boot's identity, the admin's procedures and the discard probe.

use sha2::{Digest, Sha256};

use super::*;
use layout::EntryKind;

impl<'a> Realisation<'a> {
    /// Stage 2 for the admin's commands (see `Action::EnterSystem`).
    pub(super) fn enter_system(&self, steps: &mut Vec<Step>, spec: &BootSpec) {
        let login = spec
            .continued
            .iter()
            .chain(&spec.procedures)
            .map(|part| part.login.clone())
            .next();
        steps.push(step(
            "system:enter",
            OnFailure::Continue,
            Action::EnterSystem {
                binds: SYSTEM_BINDS.iter().map(|s| (*s).to_owned()).collect(),
                login,
            },
        ));
    }

    /// The persisted paths of the layout's impermanence roots (the system's,
    /// not users': no procedure needs those).
    pub(super) fn persisted(&self) -> (Vec<PersistedPath>, Vec<PersistedPath>) {
        let mut directories = Vec::new();
        let mut files = Vec::new();
        for root in &self.layout.persistence {
            let storage = root.storage_path.trim_end_matches('/');
            for entry in root.entries.iter().filter(|e| e.user.is_none()) {
                let link = format!("{storage}{}", entry.target);
                let path = PersistedPath {
                    storage: in_sysroot(&link),
                    target: in_sysroot(&entry.target),
                    link,
                };
                match entry.kind {
                    EntryKind::Directory => directories.push(path),
                    EntryKind::File => files.push(path),
                }
            }
        }
        (directories, files)
    }

    /// impermanence's bind mounts and links, after the mounts (stage 2).
    pub(super) fn persistence(&self, steps: &mut Vec<Step>) {
        let (directories, files) = self.persisted();
        if directories.is_empty() && files.is_empty() {
            return;
        }
        steps.push(step(
            "impermanence",
            OnFailure::Continue,
            Action::Persistence { directories, files },
        ));
    }

    /// What the first boot of a new system writes through impermanence's
    /// links into the persistent storage: systemd the machine-id (32 hex
    /// digits), sshd its host keys. The lab writes stand-ins of the same
    /// names (it runs neither program); what the checklist does with them
    /// (hash them, check them after a reboot) is the same.
    pub(super) fn first_boot_identity(&self, steps: &mut Vec<Step>, boot: u32) {
        let (_, files) = self.persisted();
        for file in files {
            let target = file.target.trim_start_matches(SYSROOT);
            let seed = hex(&Sha256::digest(
                format!("{}:{boot}:{target}", self.nonce).as_bytes(),
            ));
            let contents = if target == "/etc/machine-id" {
                format!("{}\n", &seed[..32])
            } else if target.starts_with("/etc/ssh/ssh_host_") {
                format!("xtask lab stand-in for the SSH host key {target} (sshd creates it at the first boot): {seed}\n")
            } else {
                continue;
            };
            steps.push(step(
                &format!("first-boot:{target}"),
                OnFailure::Continue,
                Action::WriteFile {
                    path: file.storage,
                    contents,
                },
            ));
        }
    }

    pub(super) fn admin(&self, steps: &mut Vec<Step>, parts: &[AdminStep]) {
        for part in parts {
            steps.push(step(
                &format!("procedure:{}", part.step),
                OnFailure::Continue,
                Action::Admin(part.clone()),
            ));
        }
    }

    /// Ends roadmap 7.2's probe: waits for the release, holds the latencies against the budget.
    pub(super) fn discard_latency(&self, steps: &mut Vec<Step>, spec: &BootSpec) {
        if let Some(budget) = spec.discard_probe {
            steps.push(check(
                "discard-latency",
                Expect::DiscardLatency {
                    min_released_bytes: DISCARD_RELEASED_MIN_BYTES,
                    max_wait_ms: DISCARD_MAX_WAIT_MS,
                    p99_budget_ms: budget.p99_ms,
                    max_budget_ms: budget.max_ms,
                },
            ));
        }
    }

    /// Roadmap 7.2's probe on the root's filesystem; `check:discard-latency` ends it.
    pub(super) fn discard_probe(&self, steps: &mut Vec<Step>) {
        let Some(btrfs) = self.root_btrfs() else {
            return;
        };
        steps.push(step(
            "discard:probe",
            OnFailure::Continue,
            Action::DiscardProbe(DiscardProbe {
                device: btrfs.device.clone(),
                big_file: in_sysroot("/var/tmp/xtask-discard-probe"),
                big_bytes: DISCARD_PROBE_BYTES,
                sample_file: in_sysroot("/var/tmp/xtask-latency-probe"),
                interval_ms: DISCARD_INTERVAL_MS,
            }),
        ));
    }
}
