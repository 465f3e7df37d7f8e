//! Comparing generated files with a directory on disk: which files changed,
//! are missing or are extra, with a short line diff of each change.

use std::fmt::Write as _;

use anyhow::{Context as _, Result};
use camino::{Utf8Path, Utf8PathBuf};
use similar::TextDiff;

use super::Generated;

/// Lines of diff shown per changed file; the rest is counted.
const DIFF_LINES: usize = 24;

/// How a directory differs from what should be generated into it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Drift {
    /// Generated but not on disk.
    pub missing: Vec<String>,
    /// On disk but not generated.
    pub extra: Vec<String>,
    pub changed: Vec<Changed>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Changed {
    pub path: String,
    /// A unified diff from the file on disk to the generated one, cut to `DIFF_LINES`.
    pub diff: String,
}

impl Drift {
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.extra.is_empty() && self.changed.is_empty()
    }

    /// One line per file (`changed`, `missing`, `extra`), then the diffs.
    pub fn render(&self, dir: &str) -> String {
        let mut out = String::new();
        for changed in &self.changed {
            let _ = writeln!(out, "changed: {dir}/{}", changed.path);
        }
        for path in &self.missing {
            let _ = writeln!(out, "missing: {dir}/{path}");
        }
        for path in &self.extra {
            let _ = writeln!(
                out,
                "extra:   {dir}/{path} (not generated; `docs` removes it)"
            );
        }
        for changed in &self.changed {
            let _ = writeln!(out);
            out.push_str(&changed.diff);
        }
        out
    }

    /// `2 changed, 1 missing` for one-line summaries.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if !self.changed.is_empty() {
            let names: Vec<&str> = self.changed.iter().map(|c| c.path.as_str()).collect();
            parts.push(format!("changed: {}", names.join(", ")));
        }
        if !self.missing.is_empty() {
            parts.push(format!("missing: {}", self.missing.join(", ")));
        }
        if !self.extra.is_empty() {
            parts.push(format!("extra: {}", self.extra.join(", ")));
        }
        parts.join("; ")
    }
}

/// Every regular file below `dir`, relative to it, sorted; none when `dir` does not exist.
pub fn files_below(dir: &Utf8Path) -> Result<Vec<String>> {
    let mut files = Vec::new();
    if dir.exists() {
        collect(dir, dir, &mut files)?;
    }
    files.sort();
    Ok(files)
}

fn collect(root: &Utf8Path, dir: &Utf8Path, files: &mut Vec<String>) -> Result<()> {
    for entry in dir
        .read_dir_utf8()
        .with_context(|| format!("reading {dir}"))?
    {
        let entry = entry.with_context(|| format!("reading {dir}"))?;
        let path: Utf8PathBuf = entry.path().to_owned();
        let kind = entry
            .file_type()
            .with_context(|| format!("reading the type of {path}"))?;
        if kind.is_dir() {
            collect(root, &path, files)?;
        } else if let Ok(relative) = path.strip_prefix(root) {
            files.push(relative.as_str().to_owned());
        }
    }
    Ok(())
}

/// Compares `generated` with the files in `dir`.
pub fn compare(dir: &Utf8Path, generated: &Generated) -> Result<Drift> {
    let on_disk = files_below(dir)?;
    let mut drift = Drift::default();
    for (path, wanted) in generated {
        let full = dir.join(path);
        if !on_disk.contains(path) {
            drift.missing.push(path.clone());
            continue;
        }
        let bytes = std::fs::read(&full).with_context(|| format!("reading {full}"))?;
        if bytes == wanted.as_bytes() {
            continue;
        }
        let old = String::from_utf8_lossy(&bytes);
        drift.changed.push(Changed {
            path: path.clone(),
            diff: short_diff(path, &old, wanted),
        });
    }
    drift.extra = on_disk
        .into_iter()
        .filter(|path| !generated.contains_key(path))
        .collect();
    Ok(drift)
}

/// A unified diff (one line of context) from `old` to `new`, at most `DIFF_LINES` lines.
fn short_diff(path: &str, old: &str, new: &str) -> String {
    let diff = TextDiff::from_lines(old, new);
    let text = diff
        .unified_diff()
        .context_radius(1)
        .header(
            &format!("{path} (on disk)"),
            &format!("{path} (from the config)"),
        )
        .to_string();
    let lines: Vec<&str> = text.lines().collect();
    let mut out = String::new();
    for line in lines.iter().take(DIFF_LINES) {
        out.push_str(line);
        out.push('\n');
    }
    if lines.len() > DIFF_LINES {
        let _ = writeln!(out, "… {} more diff lines", lines.len() - DIFF_LINES);
    }
    if text.is_empty() {
        // Same lines, different bytes (line endings, a final newline).
        let _ = writeln!(
            out,
            "{path}: differs only in line endings or the final newline"
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> (tempfile::TempDir, Utf8PathBuf) {
        let temp = tempfile::tempdir().unwrap();
        let path = Utf8PathBuf::from_path_buf(temp.path().to_owned()).unwrap();
        (temp, path)
    }

    #[test]
    fn reports_changed_missing_and_extra_files() {
        let (_temp, dir) = dir();
        std::fs::write(dir.join("same.md"), "a\n").unwrap();
        std::fs::write(dir.join("changed.md"), "one\ntwo\nthree\n").unwrap();
        std::fs::create_dir(dir.join("sub")).unwrap();
        std::fs::write(dir.join("sub/extra.md"), "x\n").unwrap();
        let generated = Generated::from([
            ("same.md".to_owned(), "a\n".to_owned()),
            ("changed.md".to_owned(), "one\n2\nthree\n".to_owned()),
            ("new.svg".to_owned(), "<svg/>\n".to_owned()),
        ]);
        let drift = compare(&dir, &generated).unwrap();
        assert_eq!(drift.missing, vec!["new.svg"]);
        assert_eq!(drift.extra, vec!["sub/extra.md"]);
        assert_eq!(drift.changed.len(), 1);
        let diff = &drift.changed[0].diff;
        assert!(diff.contains("-two\n") && diff.contains("+2\n"), "{diff}");
        let rendered = drift.render("docs/reference");
        assert!(rendered.contains("changed: docs/reference/changed.md"));
        assert!(rendered.contains("missing: docs/reference/new.svg"));
        assert!(rendered.contains("extra:   docs/reference/sub/extra.md"));
        assert_eq!(
            drift.summary(),
            "changed: changed.md; missing: new.svg; extra: sub/extra.md"
        );
    }

    #[test]
    fn a_missing_directory_misses_everything() {
        let (_temp, dir) = dir();
        let generated = Generated::from([("a.md".to_owned(), "a\n".to_owned())]);
        let drift = compare(&dir.join("nope"), &generated).unwrap();
        assert_eq!(drift.missing, vec!["a.md"]);
        assert!(!drift.is_empty());
    }

    #[test]
    fn long_diffs_are_cut() {
        let old: String = (0..100).map(|i| format!("{i}\n")).collect();
        let new: String = (0..100).map(|i| format!("x{i}\n")).collect();
        let diff = short_diff("f", &old, &new);
        assert_eq!(diff.lines().count(), DIFF_LINES + 1);
        assert!(diff.ends_with("more diff lines\n"));
        assert!(short_diff("f", "a\n", "a").contains("No newline"));
    }

    #[test]
    fn writing_replaces_and_prunes() {
        let (_temp, dir) = dir();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("old.md"), "gone\n").unwrap();
        let generated = Generated::from([("a.md".to_owned(), "a\n".to_owned())]);
        let removed = super::super::write(&dir, &generated).unwrap();
        assert_eq!(removed, vec!["old.md"]);
        assert!(compare(&dir, &generated).unwrap().is_empty());
    }
}
