//! Where the project is and what revision it is at.

use anyhow::{Context as _, Result};
use camino::{Utf8Path, Utf8PathBuf};
use xshell::{cmd, Shell};

use crate::process::Supervised;

/// Makes the xtask work on another copy of the repository (a directory with
/// hosts/ and nix/), e.g. a temporary tree in tests.
pub const ROOT_ENV: &str = "XTASK_PROJECT_ROOT";

/// The repository root: the workspace root two levels above this crate
/// (crates/toolbox), or `XTASK_PROJECT_ROOT`.
pub fn project_root() -> Utf8PathBuf {
    if let Some(root) = std::env::var_os(ROOT_ENV).filter(|root| !root.is_empty()) {
        // An override that is not UTF-8 cannot name our paths; keep the checkout.
        if let Ok(root) = Utf8PathBuf::try_from(std::path::PathBuf::from(root)) {
            return root;
        }
    }
    let manifest = Utf8Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .and_then(Utf8Path::parent)
        .unwrap_or(manifest)
        .to_owned()
}

/// `target/xtask`, where results, caches and logs go.
pub fn xtask_dir() -> Utf8PathBuf {
    project_root().join("target").join("xtask")
}

/// A shell rooted at the project.
pub fn shell() -> Result<Shell> {
    let sh = Shell::new().context("creating a shell for child processes")?;
    sh.change_dir(project_root());
    Ok(sh)
}

/// The state of the git checkout, recorded with every result.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Revision {
    /// `git rev-parse HEAD`, or `None` outside git or before the first commit.
    pub commit: Option<String>,
    /// Whether tracked or untracked files differ from HEAD.
    pub dirty: bool,
}

/// Reads HEAD and whether the working tree is clean. Outside git, both are unknown.
pub fn revision() -> Revision {
    let Ok(sh) = shell() else {
        return Revision {
            commit: None,
            dirty: true,
        };
    };
    // One git process for both (check's latency counts every process):
    // porcelain v2 names HEAD's commit in its "# branch.oid" header.
    let Ok(status) = Supervised::from_command(cmd!(
        sh,
        "git status --porcelain=v2 --branch --untracked-files=normal"
    ))
    .read() else {
        return Revision {
            commit: None,
            dirty: true,
        };
    };
    let commit = status
        .lines()
        .find_map(|line| line.strip_prefix("# branch.oid "))
        .map(str::trim)
        .filter(|oid| !oid.is_empty() && *oid != "(initial)")
        .map(str::to_owned);
    let dirty = status.lines().any(|line| !line.starts_with('#'));
    Revision { commit, dirty }
}

/// `path` relative to the project root when it is inside it, for messages.
pub fn display_path(path: &Utf8Path) -> String {
    let root = project_root();
    path.strip_prefix(&root)
        .map(|p| p.to_string())
        .unwrap_or_else(|_| path.to_string())
}

/// Writes `contents` to `path` through a temporary file and a rename, so
/// that readers never see half a file.
pub fn write_atomically(path: &Utf8Path, contents: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .with_context(|| format!("{path} has no parent directory"))?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {dir}"))?;
    let mut temporary = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("creating a temporary file in {dir}"))?;
    std::io::Write::write_all(&mut temporary, contents)
        .with_context(|| format!("writing {path}"))?;
    temporary
        .persist(path)
        .with_context(|| format!("replacing {path}"))?;
    Ok(())
}

/// Writes `contents` atomically and leaves the file readable by everyone
/// (0644), like a file git checks out; the temporary file starts as 0600.
pub fn write_readable(path: &Utf8Path, contents: &[u8]) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    write_atomically(path, contents)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
        .with_context(|| format!("making {path} readable"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_holds_the_workspace() {
        // Built from crates/toolbox, the root is two levels up: the
        // workspace's manifest, with the xtask and this crate below it.
        let root = project_root();
        let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
        assert!(manifest.contains("[workspace]"), "{root}");
        assert!(root.join("xtask").join("Cargo.toml").is_file(), "{root}");
        assert!(
            root.join("crates/toolbox/src/project.rs").is_file(),
            "{root}"
        );
    }

    #[test]
    fn the_revision_is_read_through_the_runner() {
        let revision = revision();
        let commit = revision.commit.expect("this checkout has a HEAD");
        assert_eq!(commit.len(), 40, "{commit}");
        assert!(commit.bytes().all(|b| b.is_ascii_hexdigit()), "{commit}");
    }

    #[test]
    fn paths_inside_the_project_are_shown_relative() {
        let inside = project_root().join("hosts").join("x.nix");
        assert_eq!(display_path(&inside), "hosts/x.nix");
        assert_eq!(display_path(Utf8Path::new("/elsewhere/x")), "/elsewhere/x");
    }
}
