//! The hosts of the flake: every directory under hosts/ that holds a
//! disko.nix, with its optional persistence.nix, machine.nix and rollback.nix,
//! and the view of one the generated pages and the checklist share
//! (`subject`). Loading one (evaluated, built, judged by the host rules) is
//! `rules::load`.

mod host_layout;
mod subject;

pub use host_layout::{firmware, Firmware, Model};
#[cfg(test)]
pub use subject::testing;
pub use subject::Subject;

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{bail, Context as _, Result};
use camino::{Utf8Path, Utf8PathBuf};
use serde::Deserialize;

use layout::size::parse_disk_size;
use toolbox::project::project_root;

pub const DEFAULT_HOST: &str = "hetzner-cloud";
pub const LAYOUT_FILE: &str = "disko.nix";
pub const PERSISTENCE_FILE: &str = "persistence.nix";
pub const MACHINE_FILE: &str = "machine.nix";
/// `boot.btrfsRollback` of the host: a plain attribute set that NixOS
/// imports as a module and vm-test reads.
pub const ROLLBACK_FILE: &str = "rollback.nix";
/// How deep below hosts/ host directories may sit.
const MAX_DEPTH: usize = 6;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub name: String,
    pub dir: Utf8PathBuf,
    pub layout_file: Utf8PathBuf,
    pub persistence_file: Option<Utf8PathBuf>,
    pub machine_file: Option<Utf8PathBuf>,
    pub rollback_file: Option<Utf8PathBuf>,
}

/// The facts of machine.nix that the xtask reads.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Machine {
    pub flake_attribute: Option<String>,
    pub provider: Option<String>,
    pub model: Option<String>,
    /// As sold, e.g. "480GB"; or one size per disk attribute name.
    pub disk_size: Option<DiskSizes>,
    #[serde(default)]
    pub firmware: Vec<String>,
    /// The one login of the server (`adminUser`).
    pub admin_user: Option<String>,
    /// The admin's SSH public keys; `None` when machine.nix does not say.
    pub admin_ssh_keys: Option<Vec<String>>,
    /// Where the admin reaches the installed server (`sshAddress`:
    /// ADDRESS[:PORT]), for `verify --all`.
    #[serde(default)]
    pub ssh_address: Option<String>,
    /// The partition sizes required of the host (disko sizes).
    pub partition_sizes: Option<PartitionSizes>,
    /// Deliberate departures from `partition_sizes`, with their reasons.
    pub partition_size_deviations: Option<PartitionSizeDeviations>,
    /// `publicIpv4`: whether the server has a public IPv4 address (false:
    /// an IPv6-only server); network.nix takes an absent one as true.
    pub public_ipv4: Option<bool>,
    /// `ipv6Address`: the server's static IPv6 address with its prefix
    /// length; None: no IPv6.
    pub ipv6_address: Option<String>,
}

/// machine.nix `partitionSizes`: one disko size per partition role.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PartitionSizes {
    /// The BIOS boot partition (type EF02).
    pub bios_boot: Option<String>,
    /// The EFI system partition (type EF00).
    pub esp: Option<String>,
    /// The partition holding swap.
    pub swap: Option<String>,
    /// The partition holding Btrfs.
    pub btrfs: Option<String>,
}

/// machine.nix `partitionSizeDeviations`: per role, the size the layout
/// has on purpose and why.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PartitionSizeDeviations {
    pub bios_boot: Option<Deviation>,
    pub esp: Option<Deviation>,
    pub swap: Option<Deviation>,
    pub btrfs: Option<Deviation>,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Deviation {
    pub size: String,
    pub reason: String,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum DiskSizes {
    All(String),
    PerDisk(BTreeMap<String, String>),
}

impl Machine {
    /// The size of disk `key` in bytes, from `diskSize`.
    pub fn disk_bytes(&self, key: &str) -> Result<Option<u64>> {
        let given = match &self.disk_size {
            None => return Ok(None),
            Some(DiskSizes::All(size)) => size,
            Some(DiskSizes::PerDisk(sizes)) => match sizes.get(key) {
                Some(size) => size,
                None => return Ok(None),
            },
        };
        parse_disk_size(given)
            .map(Some)
            .with_context(|| format!("machine.nix: diskSize {given:?} for disk {key:?}"))
    }
}

/// Every host under `<root>/hosts`, sorted by name. Directory symlinks are
/// followed once: a loop is visited once, not forever.
pub fn discover(root: &Utf8Path) -> Result<Vec<Host>> {
    let hosts_dir = root.join("hosts");
    let mut found = Vec::new();
    let mut visited = BTreeSet::new();
    walk(&hosts_dir, 0, &mut visited, &mut found)?;
    found.sort_by(|a, b| a.name.cmp(&b.name));
    for pair in found.windows(2) {
        if pair[0].name == pair[1].name {
            bail!(
                "two hosts are named {:?}: {} and {}; rename one directory",
                pair[0].name,
                pair[0].dir,
                pair[1].dir
            );
        }
    }
    Ok(found)
}

fn walk(
    dir: &Utf8Path,
    depth: usize,
    visited: &mut BTreeSet<Utf8PathBuf>,
    found: &mut Vec<Host>,
) -> Result<()> {
    if depth > MAX_DEPTH {
        return Ok(());
    }
    let Ok(canonical) = dir.canonicalize_utf8() else {
        // A dangling symlink: nothing to find there.
        return Ok(());
    };
    if !visited.insert(canonical) {
        return Ok(());
    }
    if dir.join(LAYOUT_FILE).is_file() {
        found.push(host_at(dir)?);
    }
    let entries = match dir.read_dir_utf8() {
        Ok(entries) => entries,
        Err(error) if depth == 0 && error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(error).with_context(|| format!("reading {dir}")),
    };
    let mut children: Vec<Utf8PathBuf> = entries
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.into_path())
        .filter(|path| path.is_dir())
        .collect();
    children.sort();
    for child in children {
        walk(&child, depth + 1, visited, found)?;
    }
    Ok(())
}

fn host_at(dir: &Utf8Path) -> Result<Host> {
    let name = dir
        .file_name()
        .with_context(|| format!("{dir} has no name"))?
        .to_owned();
    let optional = |file: &str| Some(dir.join(file)).filter(|p| p.is_file());
    Ok(Host {
        name,
        dir: dir.to_owned(),
        layout_file: dir.join(LAYOUT_FILE),
        persistence_file: optional(PERSISTENCE_FILE),
        machine_file: optional(MACHINE_FILE),
        rollback_file: optional(ROLLBACK_FILE),
    })
}

/// The host called `name`, with the names of all hosts in the error when it is unknown.
pub fn find(name: &str) -> Result<Host> {
    find_in(&project_root(), name)
}

/// `find` in the repository at `root`.
pub fn find_in(root: &Utf8Path, name: &str) -> Result<Host> {
    let hosts = discover(root)?;
    if let Some(host) = hosts.iter().find(|h| h.name == name) {
        return Ok(host.clone());
    }
    let known: Vec<&str> = hosts.iter().map(|h| h.name.as_str()).collect();
    let place = if root == project_root() {
        "hosts/".to_owned()
    } else {
        format!("{root}/hosts")
    };
    bail!(
        "no host {name:?} under {place} (a host is a directory with a {LAYOUT_FILE}); known hosts: {}",
        if known.is_empty() { "none".to_owned() } else { known.join(", ") }
    )
}

/// Every .nix file of the repository (not target/, .git/ or result links).
pub fn nix_files(root: &Utf8Path) -> Result<Vec<Utf8PathBuf>> {
    let walk = Walk {
        root,
        fuzz: root.join("fuzz"),
        // Fixtures under xtask/tests are broken on purpose.
        fixtures: root.join("xtask").join("tests"),
    };
    let mut files = Vec::new();
    let mut visited = BTreeSet::new();
    let canonical = root
        .canonicalize_utf8()
        .with_context(|| format!("reading {root}"))?;
    visited.insert(canonical.clone());
    walk.collect(root, &canonical, 0, &mut visited, &mut files)?;
    files.sort();
    Ok(files)
}

/// The walk for .nix files: what it leaves out, fixed once.
struct Walk<'a> {
    root: &'a Utf8Path,
    fuzz: Utf8PathBuf,
    fixtures: Utf8PathBuf,
}

impl Walk<'_> {
    /// Paths compare as strings: the walk builds every path from `root`, so
    /// the same place is always spelled the same (and component-wise
    /// comparison costs more than the rest of the walk).
    fn skips(&self, dir: &Utf8Path, path: &Utf8Path, name: &str) -> bool {
        (dir.as_str() == self.root.as_str() && matches!(name, "target" | ".git" | "result"))
            // cargo-fuzz's build, corpus and crash inputs: thousands of files, no Nix.
            || (dir.as_str() == self.fuzz.as_str()
                && matches!(name, "target" | "corpus" | "artifacts" | "coverage"))
            || name.starts_with("result-")
            || (name.starts_with('.') && name != ".ci")
            || path.as_str() == self.fixtures.as_str()
    }

    /// `canonical`: `dir` with every symlink resolved (a real directory's is
    /// its parent's and its name: no system call).
    fn collect(
        &self,
        dir: &Utf8Path,
        canonical: &Utf8Path,
        depth: usize,
        visited: &mut BTreeSet<Utf8PathBuf>,
        files: &mut Vec<Utf8PathBuf>,
    ) -> Result<()> {
        if depth > 12 {
            return Ok(());
        }
        let entries = dir
            .read_dir_utf8()
            .with_context(|| format!("reading {dir}"))?;
        for entry in entries.filter_map(|e| e.ok()) {
            // The directory entry's own type costs no stat; a symlink is followed.
            let kind = entry.file_type().ok().filter(|t| !t.is_symlink());
            let path = entry.into_path();
            let name = path.file_name().unwrap_or_default();
            if self.skips(dir, &path, name) {
                continue;
            }
            let (is_dir, is_file) = match kind {
                Some(kind) => (kind.is_dir(), kind.is_file()),
                None => (path.is_dir(), path.is_file()),
            };
            if is_dir {
                let target = match kind {
                    Some(_) => canonical.join(name),
                    None => match path.canonicalize_utf8() {
                        Ok(target) => target,
                        Err(_) => continue,
                    },
                };
                // Each directory once, however many symlinks lead to it.
                if visited.insert(target.clone()) {
                    self.collect(&path, &target, depth + 1, visited, files)?;
                }
            } else if name.ends_with(".nix") && is_file {
                files.push(path);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_repos_host() {
        let hosts = discover(&project_root()).unwrap();
        let host = hosts
            .iter()
            .find(|h| h.name == DEFAULT_HOST)
            .expect("the default host");
        assert!(host
            .layout_file
            .ends_with("hosts/servers/hetzner-cloud/disko.nix"));
        assert!(host.persistence_file.is_some());
        assert!(host.machine_file.is_some());
        assert!(host.rollback_file.is_some());
    }

    #[test]
    fn survives_symlink_loops() {
        let dir = tempfile::tempdir().unwrap();
        let root = Utf8Path::from_path(dir.path()).unwrap();
        let host = root.join("hosts").join("a");
        std::fs::create_dir_all(&host).unwrap();
        std::fs::write(host.join(LAYOUT_FILE), "{}").unwrap();
        std::os::unix::fs::symlink(root.join("hosts"), host.join("loop")).unwrap();
        std::os::unix::fs::symlink(host.join("nowhere"), root.join("hosts").join("dangling"))
            .unwrap();
        let hosts = discover(root).unwrap();
        assert_eq!(hosts.len(), 1);
        let files = nix_files(root).unwrap();
        assert_eq!(files.len(), 1);
    }

    #[test]
    fn fuzzing_output_is_not_searched() {
        let dir = tempfile::tempdir().unwrap();
        let root = Utf8Path::from_path(dir.path()).unwrap();
        for skipped in ["target", "corpus", "artifacts", "coverage"] {
            let inside = root.join("fuzz").join(skipped).join("x");
            std::fs::create_dir_all(&inside).unwrap();
            std::fs::write(inside.join("a.nix"), "{}").unwrap();
        }
        std::fs::create_dir_all(root.join("fuzz").join("seeds")).unwrap();
        std::fs::write(root.join("fuzz").join("seeds").join("kept.nix"), "{}").unwrap();
        let files = nix_files(root).unwrap();
        assert_eq!(
            files,
            vec![root.join("fuzz").join("seeds").join("kept.nix")]
        );
    }

    #[test]
    fn unknown_hosts_list_the_known_ones() {
        let error = find("no-such-host").unwrap_err().to_string();
        assert!(error.contains(DEFAULT_HOST), "{error}");
    }

    #[test]
    fn disk_sizes_per_disk_or_for_all() {
        let all = Machine {
            disk_size: Some(DiskSizes::All("480GB".into())),
            ..Machine::default()
        };
        assert_eq!(all.disk_bytes("main").unwrap(), Some(480_000_000_000));
        let per = Machine {
            disk_size: Some(DiskSizes::PerDisk(BTreeMap::from([(
                "data".into(),
                "1TB".into(),
            )]))),
            ..Machine::default()
        };
        assert_eq!(per.disk_bytes("main").unwrap(), None);
        assert_eq!(per.disk_bytes("data").unwrap(), Some(1_000_000_000_000));
        let bad = Machine {
            disk_size: Some(DiskSizes::All("lots".into())),
            ..Machine::default()
        };
        assert!(bad.disk_bytes("main").is_err());
    }
}
