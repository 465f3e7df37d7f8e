//! docs/reference/: the pages (partitions, subvolumes, persisted paths, the
//! rules catalogue) and the SVG diagram, rendered from the same typed layout
//! `check` judges, so that they cannot drift from the config. The output is
//! deterministic (no dates, no revisions) so that it can be compared byte
//! for byte: `cargo xtask docs` writes it, `docs --check` and the deploy
//! checklist's docs gate compare it.

pub mod compare;
pub mod pages;
pub mod schema;
pub mod svg;

use std::collections::BTreeMap;

use anyhow::{Context as _, Result};
use camino::{Utf8Path, Utf8PathBuf};

use crate::rules::load_subject;
use toolbox::context::Context;
use toolbox::project::write_readable;

pub use compare::{compare, Drift};
pub use pages::pages;

/// Where the generated pages live, relative to the repository root.
pub const REFERENCE_DIR: &str = "docs/reference";

/// Generated files by path relative to `REFERENCE_DIR`, with their contents.
pub type Generated = BTreeMap<String, String>;

/// Everything docs/reference/ should hold for host `name` of the repository at `root`.
pub fn generate(context: &Context, root: &Utf8Path, name: &str) -> Result<Generated> {
    let subject = load_subject(context, root, name)?;
    Ok(pages::pages(&subject))
}

/// Writes the generated files into `dir` and removes files that are no
/// longer generated; returns the removed paths.
pub fn write(dir: &Utf8Path, generated: &Generated) -> Result<Vec<String>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {dir}"))?;
    for (path, contents) in generated {
        write_readable(&dir.join(path), contents.as_bytes())?;
    }
    let mut removed = Vec::new();
    for path in compare::files_below(dir)? {
        if !generated.contains_key(&path) {
            let full: Utf8PathBuf = dir.join(&path);
            std::fs::remove_file(&full).with_context(|| format!("removing {full}"))?;
            removed.push(path);
        }
    }
    Ok(removed)
}
