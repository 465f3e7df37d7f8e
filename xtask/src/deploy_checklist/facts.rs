//! Who logs in to the installed server and how, read from the host's files
//! (nix/lib/eval-facts.nix): the admin user of machine.nix, its groups and
//! keys (users.nix), sshd's port and PermitRootLogin (services.nix), sudo,
//! and the timers the host schedules. Every printed command takes its login,
//! `sudo` and port from here, never from text.

use anyhow::{Context as _, Result};
use camino::Utf8Path;
use serde::{Deserialize, Serialize};

use crate::nix_eval::Nix;

/// The host's login facts, as nix/lib/eval-facts.nix evaluates them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostFacts {
    /// machine.nix's `adminUser`: the one login.
    pub admin_user: String,
    pub admin_home: String,
    /// `users.users.<admin>.uid`; None when NixOS allocates it.
    pub admin_uid: Option<u32>,
    pub admin_groups: Vec<String>,
    /// How many SSH keys may log in as the admin.
    pub admin_keys: usize,
    /// How many SSH keys may log in as root.
    pub root_keys: usize,
    pub ssh_enabled: bool,
    pub ssh_ports: Vec<u16>,
    /// sshd's `PermitRootLogin`.
    pub permit_root_login: String,
    pub sudo_enabled: bool,
    pub wheel_needs_password: bool,
    /// `services.btrbk.instances` names.
    pub btrbk_instances: Vec<String>,
    /// `services.btrfs.autoScrub.fileSystems`, when it is enabled.
    pub scrub_file_systems: Vec<String>,
    /// `services.fstrim` and what the host adds to its timer.
    pub fstrim: Fstrim,
}

/// The periodic TRIM of the host: util-linux's fstrim.service, started by
/// fstrim.timer (nixpkgs' nixos/modules/services/misc/fstrim.nix).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Fstrim {
    pub enable: bool,
    /// The timer's OnCalendar (`services.fstrim.interval`).
    pub interval: String,
    /// The timer's OnBootSec: a run after every boot.
    pub on_boot_sec: Option<String>,
    /// The timer's Persistent: a run missed while the machine was off
    /// happens at the next boot.
    pub persistent: bool,
}

/// What util-linux's fstrim.service runs (sys-utils/fstrim.service.in since
/// util-linux 2.36; Debian 12's /lib/systemd/system/fstrim.service has the
/// same line): every mounted filesystem of /etc/fstab, else of
/// /proc/self/mountinfo, trimmed once per device.
pub const FSTRIM_SERVICE_ARGS: [&str; 4] = [
    "--listed-in",
    "/etc/fstab:/proc/self/mountinfo",
    "--verbose",
    "--quiet-unsupported",
];

/// Seconds of a calendar keyword of systemd.time(7) that names a fixed
/// period; None for other calendar specifications.
pub fn calendar_period_s(interval: &str) -> Option<i64> {
    const DAY: i64 = 86_400;
    match interval {
        "hourly" => Some(3_600),
        "daily" => Some(DAY),
        "weekly" => Some(7 * DAY),
        "monthly" => Some(28 * DAY),
        _ => None,
    }
}

impl Fstrim {
    /// The timer's settings that start fstrim.service after a boot, and so
    /// trim what the boot's rollback freed: OnBootSec after every boot, and
    /// the calendar (`interval`) within one period of it, also when the
    /// server stays up (empty: nothing trims it).
    pub fn triggers(&self) -> Vec<String> {
        let mut triggers = Vec::new();
        if !self.enable {
            return triggers;
        }
        if let Some(on_boot) = &self.on_boot_sec {
            triggers.push(format!("OnBootSec={on_boot}"));
        }
        let within = match calendar_period_s(&self.interval) {
            Some(period) => format!("within {} days", period / 86_400),
            None => "at its next time".to_owned(),
        };
        let persistent = if self.persistent {
            ", caught up at boot after a power-off (Persistent=true)"
        } else {
            ""
        };
        triggers.push(format!(
            "OnCalendar={}: {within}{persistent}",
            self.interval
        ));
        triggers
    }
}

pub use lab_protocol::command::Where;

impl HostFacts {
    /// Evaluates the facts of the host in `host_dir`.
    pub fn load(nix: &Nix, root: &Utf8Path, host_dir: &Utf8Path) -> Result<HostFacts> {
        let evaluator = root.join("nix").join("lib").join("eval-facts.nix");
        let value = nix
            .evaluate_file(&evaluator, &[("hostDir", host_dir.as_str())])?
            .map_err(|error| anyhow::anyhow!("{}", error.message))
            .with_context(|| {
                format!(
                    "reading who logs in to the server from {host_dir} (nix/lib/eval-facts.nix)"
                )
            })?;
        serde_json::from_value(value).context("reading nix/lib/eval-facts.nix's output")
    }

    /// Whether anyone could log in to the server as root over SSH.
    pub fn root_can_log_in(&self) -> bool {
        self.ssh_enabled
            && self.root_keys > 0
            && matches!(
                self.permit_root_login.as_str(),
                "yes" | "prohibit-password" | "without-password"
            )
    }

    /// Whether the admin gets root with `sudo`, without a password prompt
    /// that a script or a pipe could not answer.
    pub fn admin_has_sudo(&self) -> bool {
        self.sudo_enabled && self.admin_groups.iter().any(|g| g == "wheel")
    }

    /// Why the admin could not log in and become root; empty when every
    /// printed server command can work.
    pub fn login_problems(&self, machine_file: &str) -> Vec<String> {
        let mut problems = Vec::new();
        if !self.ssh_enabled {
            problems.push("services.openssh is not enabled: nobody can log in over SSH".to_owned());
        }
        if self.admin_keys == 0 {
            problems.push(format!(
                "{machine_file} has no SSH key for {} (adminSshKeys, HOST001): the server has no passwords, so the build refuses it and nobody could log in",
                self.admin_user
            ));
        }
        if !self.admin_has_sudo() {
            problems.push(format!(
                "{} is not in wheel or sudo is off: the server commands need `sudo`",
                self.admin_user
            ));
        } else if self.wheel_needs_password {
            problems.push(format!(
                "sudo asks {} for a password, but the account has none (security.sudo.wheelNeedsPassword)",
                self.admin_user
            ));
        }
        problems
    }

    /// `-p <port> ` when sshd does not listen on 22.
    fn port_flag(&self) -> String {
        match self.ssh_ports.first() {
            Some(22) | None => String::new(),
            Some(port) => format!("-p {port} "),
        }
    }

    /// `ssh hbohlen@<IP>`: an interactive login to the installed server.
    pub fn ssh_server(&self) -> String {
        format!("ssh {}{}@<IP>", self.port_flag(), self.admin_user)
    }

    /// `ssh hbohlen@<IP> 'sudo …'`: one root command on the installed server.
    pub fn ssh_server_sudo(&self, command: &str) -> String {
        format!("{} 'sudo {command}'", self.ssh_server())
    }

    /// `ssh root@<IP>`: the rescue system, where root logs in with the key
    /// given to Hetzner (port 22: the rescue system's own sshd).
    pub fn ssh_rescue(&self) -> String {
        "ssh root@<IP>".to_owned()
    }

    /// nixos-rebuild against the installed server, as the admin with sudo.
    pub fn rebuild_remote(&self, attribute: &str, action: &str) -> String {
        let port = match self.ssh_ports.first() {
            Some(22) | None => String::new(),
            Some(port) => format!("NIX_SSHOPTS='-p {port}' "),
        };
        format!(
            "{port}nixos-rebuild {action} --flake .#{attribute} --target-host {}@<IP> --sudo",
            self.admin_user
        )
    }
}

#[cfg(test)]
pub mod testing {
    //! The repo's host's facts from the fixture that
    //! tests/checklist_cli.rs proves is the real evaluation.
    use super::HostFacts;

    pub fn host_facts() -> HostFacts {
        serde_json::from_str(include_str!(
            "../../tests/fixtures/hetzner-cloud.facts.json"
        ))
        .expect("the facts fixture")
    }

    /// The host as deployed: with the admin's key filled in.
    pub fn with_key() -> HostFacts {
        HostFacts {
            admin_keys: 1,
            ..host_facts()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;

    #[test]
    fn the_hosts_login_is_the_admin_with_sudo() {
        let facts = host_facts();
        assert_eq!(facts.admin_user, "hbohlen");
        assert!(!facts.root_can_log_in());
        assert!(facts.admin_has_sudo());
        assert_eq!(facts.ssh_server(), "ssh hbohlen@<IP>");
        assert_eq!(
            facts.ssh_server_sudo("btrfs send /x"),
            "ssh hbohlen@<IP> 'sudo btrfs send /x'"
        );
        assert_eq!(
            facts.rebuild_remote("hetzner-vps", "switch"),
            "nixos-rebuild switch --flake .#hetzner-vps --target-host hbohlen@<IP> --sudo"
        );
        let problems = facts.login_problems("machine.nix");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("no SSH key for hbohlen"));
        assert!(with_key().login_problems("machine.nix").is_empty());
    }

    #[test]
    fn fstrim_runs_after_boot_only_when_its_timer_starts_it() {
        let host = host_facts().fstrim;
        assert_eq!(
            host.triggers(),
            [
                "OnBootSec=15min",
                "OnCalendar=weekly: within 7 days, caught up at boot after a power-off (Persistent=true)"
            ]
        );
        // The weekly run alone still reaches what a boot freed.
        let weekly = Fstrim {
            on_boot_sec: None,
            persistent: false,
            ..host.clone()
        };
        assert_eq!(weekly.triggers(), ["OnCalendar=weekly: within 7 days"]);
        // The path removed: nothing trims the space the rollback frees.
        let off = Fstrim {
            enable: false,
            ..host
        };
        assert!(off.triggers().is_empty());
    }

    #[test]
    fn another_port_and_other_settings_show_in_the_commands() {
        let facts = HostFacts {
            ssh_ports: vec![2222],
            permit_root_login: "prohibit-password".to_owned(),
            root_keys: 1,
            wheel_needs_password: true,
            ..with_key()
        };
        assert_eq!(facts.ssh_server(), "ssh -p 2222 hbohlen@<IP>");
        assert!(facts
            .rebuild_remote("x", "switch")
            .starts_with("NIX_SSHOPTS='-p 2222' "));
        assert!(facts.root_can_log_in());
        assert!(facts.login_problems("m")[0].contains("asks hbohlen for a password"));
        let no_wheel = HostFacts {
            admin_groups: vec![],
            ..with_key()
        };
        assert!(no_wheel.login_problems("m")[0].contains("not in wheel"));
    }
}
