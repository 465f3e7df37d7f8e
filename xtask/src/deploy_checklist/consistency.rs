//! Whether what the checklist and the docs tell the admin to type agrees
//! with the configuration: who may log in where (root only in the rescue
//! system unless the host lets root in), `sudo` on the installed server, the
//! SSH port. The tests run it over the checklist and every page of docs/,
//! so a `ssh root@<IP>` to a server whose root cannot log in fails the build.

use super::facts::{HostFacts, Where};
use super::Checklist;

/// One place where the text contradicts the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contradiction {
    /// `docs/snapshots.md:127` or `checklist 4.5 (rollback.reinstall)`.
    pub place: String,
    pub line: String,
    pub why: String,
}

impl std::fmt::Display for Contradiction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}\n    {}", self.place, self.why, self.line)
    }
}

/// The `user` of every `user@<IP>` in `line`.
fn logins(line: &str) -> Vec<&str> {
    let mut users = Vec::new();
    let mut rest = line;
    let mut offset = 0;
    while let Some(at) = rest.find("@<IP>") {
        let absolute = offset + at;
        let start = line[..absolute]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || "_.-<>".contains(c)))
            .map_or(0, |i| i + 1);
        users.push(&line[start..absolute]);
        offset = absolute + 5;
        rest = &line[offset..];
    }
    users
}

/// Why a login of `user` from `line` contradicts `facts`, when it does.
/// `target` is the machine the line reaches when it is known.
fn login_problem(
    user: &str,
    line: &str,
    target: Option<Where>,
    facts: &HostFacts,
) -> Option<String> {
    if user.is_empty() || (user.starts_with('<') && user.ends_with('>')) {
        return None;
    }
    let to_rescue = match target {
        Some(target) => target == Where::Rescue,
        // Free text: the line says where it goes.
        None => line.contains("nixos-anywhere") || line.contains("rescue"),
    };
    if user == "root" {
        if to_rescue || facts.root_can_log_in() {
            return None;
        }
        return Some(format!(
            "root cannot log in to the installed server (PermitRootLogin {:?}, {} root key(s)): log in as {} and use sudo",
            facts.permit_root_login, facts.root_keys, facts.admin_user
        ));
    }
    if to_rescue && target.is_some() {
        return Some(format!("the rescue system's login is root, not {user}"));
    }
    if user != facts.admin_user {
        return Some(format!(
            "the server's login is {}, not {user}",
            facts.admin_user
        ));
    }
    if line.contains("--target-host")
        && !line.contains("--sudo")
        && !line.contains("--use-remote-sudo")
    {
        return Some(format!(
            "nixos-rebuild as {user} needs --sudo to activate the system"
        ));
    }
    let port = facts.ssh_ports.first().copied().unwrap_or(22);
    if port != 22 && line.contains("ssh ") && !line.contains(&format!("-p {port}")) {
        return Some(format!("sshd listens on port {port}: ssh needs -p {port}"));
    }
    None
}

/// The checklist's commands, checked with what each says about itself.
pub fn commands(checklist: &Checklist) -> Vec<Contradiction> {
    let facts = &checklist.facts;
    let mut found = Vec::new();
    for procedure in checklist.procedures() {
        let place = format!(
            "checklist {} ({})",
            checklist.step_of(&procedure.id).unwrap_or_default(),
            procedure.id
        );
        for command in &procedure.commands {
            let mut problem = |why: String| {
                found.push(Contradiction {
                    place: place.clone(),
                    line: format!("{} {}", command.at.prompt(), command.line),
                    why,
                })
            };
            let target = match command.at {
                Where::Local => command.reaches,
                at => Some(at),
            };
            if command.at == Where::Server && !command.line.starts_with("sudo ") {
                problem(format!(
                    "a server command runs as {}, not root: it must start with sudo",
                    facts.admin_user
                ));
            }
            let users = logins(&command.line);
            if command.at == Where::Local && command.reaches.is_none() && !users.is_empty() {
                problem("logs in to the server without saying which system (`reaches`)".to_owned());
            }
            for user in users {
                if let Some(why) = login_problem(user, &command.line, target, facts) {
                    problem(why);
                }
            }
        }
    }
    found
}

/// A page of prose and command blocks (`name` for messages): every login it
/// shows, and every `server` prompt.
pub fn text(name: &str, text: &str, facts: &HostFacts) -> Vec<Contradiction> {
    let mut found = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let place = format!("{name}:{}", index + 1);
        let mut problem = |why: String| {
            found.push(Contradiction {
                place: place.clone(),
                line: line.trim().to_owned(),
                why,
            })
        };
        let command = line.trim_start();
        if command.starts_with("server#") && !facts.root_can_log_in() {
            problem(format!(
                "`server#` is a root shell, which the installed server does not offer: write `server$ sudo …` (as {})",
                facts.admin_user
            ));
        }
        let lower = line.to_ascii_lowercase();
        if !facts.root_can_log_in()
            && [
                "run as root on the server",
                "as root on the installed",
                "log in as root",
            ]
            .iter()
            .any(|phrase| lower.contains(phrase))
        {
            problem(format!(
                "the installed server has no root login: commands run as {} with sudo",
                facts.admin_user
            ));
        }
        if let Some(rest) = command.strip_prefix("server$") {
            if !rest.trim_start().starts_with("sudo ") {
                problem(format!(
                    "a server command runs as {}, not root: it must start with sudo",
                    facts.admin_user
                ));
            }
        }
        for user in logins(line) {
            if let Some(why) = login_problem(user, line, None, facts) {
                problem(why);
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deploy_checklist::facts::testing::host_facts;
    use crate::deploy_checklist::gates::testing::passing;
    use crate::deploy_checklist::{build, render};
    use crate::hosts::testing::host_subject;
    use toolbox::project::project_root;

    fn show(found: &[Contradiction]) -> String {
        found.iter().map(|c| format!("{c}\n")).collect()
    }

    #[test]
    fn the_checklist_agrees_with_the_configuration() {
        let checklist = build(&host_subject(), &passing());
        let found = commands(&checklist);
        assert!(found.is_empty(), "{}", show(&found));
        let markdown = render::markdown(&checklist);
        let found = text("checklist.md", &markdown, &checklist.facts);
        assert!(found.is_empty(), "{}", show(&found));
        // It does print logins, so the check above looked at something.
        assert!(markdown.contains("ssh hbohlen@<IP>"));
        assert!(markdown.contains("--target-host root@<IP>"));
    }

    #[test]
    fn every_doc_agrees_with_the_configuration() {
        let facts = host_facts();
        let docs = project_root().join("docs");
        let mut pages = vec![project_root().join("README.md")];
        for entry in docs.read_dir_utf8().unwrap() {
            let path = entry.unwrap().into_path();
            if path.extension() == Some("md") {
                pages.push(path);
            }
        }
        assert!(pages.len() > 10, "{pages:?}");
        let mut found = Vec::new();
        for page in &pages {
            let name = page.strip_prefix(project_root()).unwrap().to_string();
            found.extend(text(&name, &std::fs::read_to_string(page).unwrap(), &facts));
        }
        assert!(found.is_empty(), "{}", show(&found));
    }

    #[test]
    fn a_root_login_to_the_installed_server_is_caught() {
        let facts = host_facts();
        assert!(!facts.root_can_log_in());
        // What the checklist and the docs said before.
        for line in [
            "local$ ssh root@<IP>",
            "local$ ssh root@<IP> 'btrfs send /btrfs_tmp/@snapshots/@persist.pre-install' | zstd > x",
            "local$ nixos-rebuild switch --flake .#hetzner-vps --target-host root@<IP>",
            "  zstd -dc persist.btrfs.zst | ssh root@<IP> 'btrfs receive /btrfs_tmp/@snapshots'",
        ] {
            let found = text("page.md", line, &facts);
            assert_eq!(found.len(), 1, "{line}: {found:?}");
            assert!(found[0].why.contains("root cannot log in"), "{}", found[0]);
        }
        for line in [
            "Commands run as root on the server.",
            "server# btrfs subvolume list /btrfs_tmp",
            "server$ btrfs subvolume list /btrfs_tmp",
            "local$ ssh admin@<IP>",
            "local$ nixos-rebuild switch --flake .#x --target-host hbohlen@<IP>",
        ] {
            assert_eq!(text("page.md", line, &facts).len(), 1, "{line}");
        }
        // The rescue system and nixos-anywhere are root's, as the config says.
        for line in [
            "local$ ssh root@<IP> 'lsblk -b -d -o NAME,SIZE,MODEL'   # the rescue system",
            "local$ nix run github:nix-community/nixos-anywhere -- --flake .#hetzner-vps --target-host root@<IP>",
            "local$ ssh hbohlen@<IP> 'sudo btrfs send /x' | zstd > y",
            "server$ sudo btrfs subvolume list /btrfs_tmp",
        ] {
            assert!(text("page.md", line, &facts).is_empty(), "{line}");
        }
    }

    #[test]
    fn what_is_allowed_follows_the_configuration() {
        // A host that lets root in by key: the same line is then right.
        let open = HostFacts {
            permit_root_login: "prohibit-password".to_owned(),
            root_keys: 1,
            ..host_facts()
        };
        assert!(text("page.md", "local$ ssh root@<IP>", &open).is_empty());
        let moved = HostFacts {
            ssh_ports: vec![2222],
            ..host_facts()
        };
        assert_eq!(text("page.md", "local$ ssh hbohlen@<IP>", &moved).len(), 1);
        assert!(text("page.md", "local$ ssh -p 2222 hbohlen@<IP>", &moved).is_empty());
    }

    #[test]
    fn a_checklist_command_that_logs_in_as_root_is_caught() {
        let mut checklist = build(&host_subject(), &passing());
        let step = checklist
            .rollback
            .iter_mut()
            .find(|p| p.id == "rollback.reinstall")
            .unwrap();
        let send = step
            .commands
            .iter_mut()
            .find(|c| c.line.contains("btrfs send"))
            .unwrap();
        send.line = send.line.replace("hbohlen@", "root@");
        let server = step
            .commands
            .iter_mut()
            .find(|c| c.at == Where::Server)
            .unwrap();
        server.line = server.line.trim_start_matches("sudo ").to_owned();
        let found = commands(&checklist);
        assert_eq!(found.len(), 2, "{}", show(&found));
        assert!(found
            .iter()
            .all(|c| c.place == "checklist 4.5 (rollback.reinstall)"));
        assert!(found.iter().any(|c| c.why.contains("root cannot log in")));
        assert!(found.iter().any(|c| c.why.contains("must start with sudo")));
    }
}
