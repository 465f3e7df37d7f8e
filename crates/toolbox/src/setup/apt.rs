//! Installing Debian packages with apt-get, in one transaction.
//!
//! What it does, in order, and why:
//! 1. `apt-get update`: a fresh machine has no package lists, an old one
//!    stale lists (downloads then fail with 404).
//! 2. One `apt-get install -y --no-install-recommends --no-remove
//!    --no-upgrade` with every package the command needs, so that apt
//!    resolves them together. `--no-remove`: apt may never silently remove a
//!    package the user has (it would, to make room for one we ask for);
//!    `--no-upgrade`: what is installed stays at its version.
//! 3. When that fails and one of the requested packages is installed at a
//!    version that no configured apt source offers (a backport or a local
//!    build; e.g. qemu-utils 10.0 from bookworm-backports, which Breaks
//!    bookworm's qemu-system-x86), that package is downgraded to the version
//!    the configured sources offer, in the same transaction
//!    (`--allow-downgrades PKG=VERSION`), saying so. Nothing else is ever
//!    downgraded or removed.
//! 4. The caller then looks for every program again; what is still missing
//!    is named with the exact command (exit 2).

use anyhow::{bail, Context as _, Result};
use camino::Utf8Path;
use std::collections::BTreeMap;

use crate::process::{Output, Supervised};
use crate::progress::Progress;

/// The lines apt printed, for the error when it fails.
struct Ran {
    success: bool,
    lines: Vec<String>,
}

impl Ran {
    fn tail(&self, count: usize) -> String {
        let start = self.lines.len().saturating_sub(count);
        self.lines[start..]
            .iter()
            .map(|l| format!("  | {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// The options of every install, also those shown to the user.
pub const INSTALL_OPTIONS: &[&str] = &["--no-install-recommends", "--no-remove", "--no-upgrade"];

/// The command a user runs to install `packages` by hand.
pub fn command_for(packages: &[&str]) -> String {
    format!(
        "sudo apt-get update && sudo apt-get install {} {}",
        INSTALL_OPTIONS.join(" "),
        packages.join(" ")
    )
}

/// Runs apt-get (or apt-cache) with the given arguments, non-interactively,
/// showing its latest line in a terminal; returns what it printed.
fn run(apt_get: &Utf8Path, args: &[String], progress: &Progress) -> Result<Ran> {
    let (sender, receiver) = std::sync::mpsc::channel::<String>();
    let each_line = |sender: std::sync::mpsc::Sender<String>| {
        Output::lines(move |line| {
            let line = String::from_utf8_lossy(line);
            let _ = sender.send(line.trim_end_matches(['\n', '\r']).to_owned());
        })
    };
    let running = Supervised::new(apt_get)
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .env("LC_ALL", "C.UTF-8")
        .stdout(each_line(sender.clone()))
        .stderr(each_line(sender))
        .spawn()?;
    // Ends when both readers have ended (they hold the senders).
    let mut lines = Vec::new();
    for line in receiver {
        progress.set_detail(format!("apt-get: {}", shorten(&line, 100)));
        lines.push(line);
    }
    let finished = running.wait()?;
    Ok(Ran {
        success: finished.success(),
        lines,
    })
}

fn shorten(line: &str, chars: usize) -> String {
    if line.chars().count() <= chars {
        return line.to_owned();
    }
    let mut cut: String = line.chars().take(chars).collect();
    cut.push('…');
    cut
}

fn install_args(packages: &[String], downgrades: bool) -> Vec<String> {
    let mut args: Vec<String> = [
        "install",
        "-y",
        "-q",
        "-o",
        "DPkg::Lock::Timeout=300",
        "-o",
        "Dpkg::Use-Pty=0",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    args.extend(INSTALL_OPTIONS.iter().map(|s| (*s).to_owned()));
    if downgrades {
        args.push("--allow-downgrades".to_owned());
    }
    args.extend(packages.iter().cloned());
    args
}

/// Installs `packages` as described in the module documentation.
pub fn install(packages: &[&str]) -> Result<()> {
    let apt_get = super::find_program("apt-get").context("apt-get is not installed")?;
    let apt_cache = super::find_program("apt-cache").context("apt-cache is not installed")?;
    let progress = Progress::new("apt-get");
    progress.println(format!(
        "installing with apt-get, in one transaction: {}",
        packages.join(" ")
    ));
    let update = progress.step("apt-get update", || {
        run(
            &apt_get,
            &["update", "-q", "-o", "DPkg::Lock::Timeout=300"].map(str::to_owned),
            &progress,
        )
    })?;
    if !update.success {
        // A source that cannot be reached need not hold the packages: go on
        // with the lists there are, and say so.
        progress.println(format!(
            "warning: `apt-get update` failed (is the network or the apt archive reachable?); trying with the package lists there are:\n{}",
            update.tail(10)
        ));
    }
    let requested: Vec<String> = packages.iter().map(|p| (*p).to_owned()).collect();
    let first = progress.step(
        &format!("apt-get install ({} packages)", packages.len()),
        || run(&apt_get, &install_args(&requested, false), &progress),
    )?;
    if first.success {
        progress.finish_and_clear();
        return Ok(());
    }
    let policy = run(
        &apt_cache,
        &std::iter::once("policy".to_owned())
            .chain(requested.iter().cloned())
            .collect::<Vec<_>>(),
        &Progress::hidden(),
    )?;
    let orphans = orphaned(&parse_policy(&policy.lines.join("\n")));
    if orphans.is_empty() {
        progress.finish_and_clear();
        bail!(
            "apt-get could not install the packages (it would have to remove or upgrade something, or a package is not in the configured sources{}); nothing was changed. Its last lines:\n{}\n  fix what apt reports, then run: {}",
            if update.success { "" } else { ", or `apt-get update` failed" },
            first.tail(25),
            command_for(packages)
        );
    }
    let mut pinned = requested.clone();
    for orphan in &orphans {
        progress.println(format!(
            "{} {} is installed, but no configured apt source offers that version, and apt cannot install the rest beside it; downgrading it to {} from {} (--allow-downgrades) in the same transaction",
            orphan.package, orphan.installed, orphan.offered, orphan.source
        ));
        for entry in pinned.iter_mut().filter(|p| **p == orphan.package) {
            *entry = format!("{}={}", orphan.package, orphan.offered);
        }
    }
    let second = progress.step(
        &format!(
            "apt-get install ({} packages, downgrading {})",
            packages.len(),
            orphans
                .iter()
                .map(|o| o.package.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        || run(&apt_get, &install_args(&pinned, true), &progress),
    )?;
    progress.finish_and_clear();
    if !second.success {
        let pinned: Vec<&str> = pinned.iter().map(String::as_str).collect();
        bail!(
            "apt-get could not install the packages, not even with the downgrade; nothing was removed. Its last lines:\n{}\n  fix what apt reports, then run: {} --allow-downgrades",
            second.tail(25),
            command_for(&pinned)
        );
    }
    Ok(())
}

/// One package of `apt-cache policy`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    pub installed: Option<String>,
    /// Versions in apt's order (newest first), each with its (priority, source) lines.
    pub versions: Vec<(String, Vec<(i32, String)>)>,
}

/// Reads `apt-cache policy PKG...` (with LC_ALL=C).
pub fn parse_policy(text: &str) -> BTreeMap<String, Policy> {
    let mut policies = BTreeMap::new();
    let mut current: Option<(String, Policy)> = None;
    for line in text.lines() {
        if !line.starts_with(' ') && line.ends_with(':') {
            if let Some((name, policy)) = current.take() {
                policies.insert(name, policy);
            }
            current = Some((line.trim_end_matches(':').to_owned(), Policy::default()));
            continue;
        }
        let Some((_, policy)) = current.as_mut() else {
            continue;
        };
        let trimmed = line.trim();
        if let Some(version) = trimmed.strip_prefix("Installed:") {
            let version = version.trim();
            policy.installed = (version != "(none)").then(|| version.to_owned());
        } else if trimmed.starts_with("Candidate:") || trimmed.starts_with("Version table:") {
        } else if let Some(version_line) = trimmed.strip_prefix("***") {
            if let Some(version) = version_line.split_whitespace().next() {
                policy.versions.push((version.to_owned(), Vec::new()));
            }
        } else {
            let mut words = trimmed.split_whitespace();
            let (Some(first), Some(second)) = (words.next(), words.next()) else {
                continue;
            };
            // "     1:7.2+dfsg-7 500" is a version; "        500 http://…" a source of it.
            match first.parse::<i32>() {
                Ok(priority) if !policy.versions.is_empty() && line.starts_with("        ") => {
                    let source = std::iter::once(second)
                        .chain(words)
                        .collect::<Vec<_>>()
                        .join(" ");
                    if let Some((_, sources)) = policy.versions.last_mut() {
                        sources.push((priority, source));
                    }
                }
                _ => {
                    if second.parse::<i32>().is_ok() {
                        policy.versions.push((first.to_owned(), Vec::new()));
                    }
                }
            }
        }
    }
    if let Some((name, policy)) = current {
        policies.insert(name, policy);
    }
    policies
}

/// A requested package installed at a version no configured source offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Orphan {
    pub package: String,
    pub installed: String,
    /// What the configured sources offer (highest priority, then newest).
    pub offered: String,
    pub source: String,
}

const DPKG_STATUS: &str = "/var/lib/dpkg/status";

/// The requested packages whose installed version only dpkg knows, with the
/// version the configured sources would install instead.
pub fn orphaned(policies: &BTreeMap<String, Policy>) -> Vec<Orphan> {
    let mut orphans = Vec::new();
    for (package, policy) in policies {
        let Some(installed) = &policy.installed else {
            continue;
        };
        let only_dpkg_knows_it = policy
            .versions
            .iter()
            .filter(|(version, _)| version == installed)
            .all(|(_, sources)| sources.iter().all(|(_, source)| source == DPKG_STATUS));
        if !only_dpkg_knows_it {
            continue;
        }
        let offered = policy
            .versions
            .iter()
            .filter(|(version, _)| version != installed)
            .filter_map(|(version, sources)| {
                sources
                    .iter()
                    .filter(|(_, source)| source != DPKG_STATUS)
                    .max_by_key(|(priority, _)| *priority)
                    .map(|(priority, source)| (*priority, version, source))
            })
            // Highest priority wins; among equals, the first listed is the newest.
            .fold(None::<(i32, &String, &String)>, |best, next| match best {
                Some(best) if best.0 >= next.0 => Some(best),
                _ => Some(next),
            });
        if let Some((_, version, source)) = offered {
            orphans.push(Orphan {
                package: package.clone(),
                installed: installed.clone(),
                offered: version.clone(),
                source: source.clone(),
            });
        }
    }
    orphans
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `apt-cache policy` in a Debian 12 root where qemu-utils came from
    /// bookworm-backports (a source the root does not have).
    const SKEWED: &str = "qemu-utils:
  Installed: 1:10.0.2+ds-2+deb13u1~bpo12+1
  Candidate: 1:10.0.2+ds-2+deb13u1~bpo12+1
  Version table:
 *** 1:10.0.2+ds-2+deb13u1~bpo12+1 100
        100 /var/lib/dpkg/status
     1:7.2+dfsg-7+deb12u18+b3 500
        500 http://deb.debian.org/debian bookworm/main amd64 Packages
qemu-system-x86:
  Installed: (none)
  Candidate: 1:7.2+dfsg-7+deb12u18+b3
  Version table:
     1:7.2+dfsg-7+deb12u18+b3 500
        500 http://deb.debian.org/debian bookworm/main amd64 Packages
btrfs-progs:
  Installed: 6.2-1+deb12u2
  Candidate: 6.2-1+deb12u2
  Version table:
 *** 6.2-1+deb12u2 500
        500 http://deb.debian.org/debian bookworm/main amd64 Packages
        100 /var/lib/dpkg/status
";

    #[test]
    fn apt_runs_and_every_line_of_both_outputs_comes_back() {
        // apt-cache reads only; a Debian or Ubuntu machine has it.
        let apt_cache = which::which("apt-cache")
            .expect("apt-cache is missing: this test runs on Debian or Ubuntu");
        let apt_cache = Utf8Path::from_path(&apt_cache).unwrap();
        let progress = Progress::lines("apt test");
        let ran = run(apt_cache, &["policy".into(), "bash".into()], &progress).unwrap();
        assert!(ran.success, "{}", ran.tail(20));
        assert!(ran.lines.iter().any(|l| l == "bash:"), "{}", ran.tail(20));
        assert!(ran.lines.iter().all(|l| !l.ends_with('\n')));
        let failed = run(apt_cache, &["--no-such-option".into()], &progress).unwrap();
        assert!(!failed.success);
        assert!(
            failed.lines.iter().any(|l| l.contains("no-such-option")),
            "apt's error on stderr comes back: {}",
            failed.tail(20)
        );
    }

    #[test]
    fn reads_apt_cache_policy() {
        let policies = parse_policy(SKEWED);
        assert_eq!(policies.len(), 3);
        let qemu_utils = &policies["qemu-utils"];
        assert_eq!(
            qemu_utils.installed.as_deref(),
            Some("1:10.0.2+ds-2+deb13u1~bpo12+1")
        );
        assert_eq!(qemu_utils.versions.len(), 2);
        assert_eq!(qemu_utils.versions[1].0, "1:7.2+dfsg-7+deb12u18+b3");
        assert_eq!(qemu_utils.versions[1].1[0].0, 500);
        assert_eq!(policies["qemu-system-x86"].installed, None);
    }

    #[test]
    fn a_version_only_dpkg_knows_is_downgraded_to_what_the_sources_offer() {
        let orphans = orphaned(&parse_policy(SKEWED));
        assert_eq!(
            orphans,
            vec![Orphan {
                package: "qemu-utils".to_owned(),
                installed: "1:10.0.2+ds-2+deb13u1~bpo12+1".to_owned(),
                offered: "1:7.2+dfsg-7+deb12u18+b3".to_owned(),
                source: "http://deb.debian.org/debian bookworm/main amd64 Packages".to_owned(),
            }]
        );
    }

    #[test]
    fn a_package_nothing_else_offers_is_left_alone() {
        let local_only = "mytool:
  Installed: 1.0
  Candidate: 1.0
  Version table:
 *** 1.0 100
        100 /var/lib/dpkg/status
";
        assert!(orphaned(&parse_policy(local_only)).is_empty());
    }

    #[test]
    fn the_manual_command_is_one_transaction_that_removes_nothing() {
        assert_eq!(
            command_for(&["git", "nix-bin"]),
            "sudo apt-get update && sudo apt-get install --no-install-recommends --no-remove --no-upgrade git nix-bin"
        );
    }
}
