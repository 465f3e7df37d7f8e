//! What every stage reports about a config: a stable code, a severity, where
//! in the config (attribute path, and file:line:col when Nix knows it), what is
//! wrong and how to fix it.

use std::fmt;

use camino::Utf8PathBuf;
use schemars::JsonSchema;
use serde::Serialize;

/// How bad a finding is: errors make `check` exit 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Error,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        })
    }
}

/// A place in a Nix file: where Nix says the attribute (or its nearest
/// ancestor) is written; line and column 0 when only the file is known.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Location {
    /// The absolute path of the file.
    #[schemars(with = "String")]
    pub file: Utf8PathBuf,
    pub line: u32,
    pub column: u32,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// An attribute path such as `disko.devices.disk.main.content.partitions.ESP`,
/// kept as segments and printed the way Nix would accept it.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AttrPath(Vec<String>);

impl AttrPath {
    pub fn root() -> Self {
        AttrPath(Vec::new())
    }

    pub fn new<I, S>(segments: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        AttrPath(segments.into_iter().map(Into::into).collect())
    }

    /// This path with one more segment.
    pub fn join(&self, segment: impl Into<String>) -> Self {
        let mut segments = self.0.clone();
        segments.push(segment.into());
        AttrPath(segments)
    }

    pub fn segments(&self) -> &[String] {
        &self.0
    }
}

/// The longest attribute name a printed path shows in full.
const MAX_SEGMENT_CHARS: usize = 200;

/// Whether `segment` can be written bare in a Nix attribute path.
fn is_bare_identifier(segment: &str) -> bool {
    let mut chars = segment.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '\'' | '-'))
}

impl fmt::Display for AttrPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.0.iter().enumerate() {
            if i > 0 && !segment.starts_with('[') {
                f.write_str(".")?;
            }
            if segment.starts_with('[') || is_bare_identifier(segment) {
                f.write_str(segment)?;
            } else {
                // serde_json's string escaping is a valid Nix string literal
                // for everything but `${`, which Nix would interpolate. A
                // huge name is cut (the path then no longer reads back).
                let segment = elide(segment.clone(), MAX_SEGMENT_CHARS);
                let quoted = serde_json::to_string(&segment).map_err(|_| fmt::Error)?;
                f.write_str(&quoted.replace("${", "\\${"))?;
            }
        }
        Ok(())
    }
}

impl Serialize for AttrPath {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Something wrong (or worth knowing) about a config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Finding {
    /// A stable code, e.g. `BTRFS006`; the catalogue is docs/reference/rules.md.
    pub code: &'static str,
    pub severity: Severity,
    /// The attribute path in the evaluated config, as Nix writes it
    /// (`…subvolumes."@nix".mountOptions`); empty for file-level findings.
    #[schemars(with = "String")]
    pub path: AttrPath,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub hint: String,
    /// Left out when Nix names no place.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
}

/// The longest message a finding keeps: one that quotes a huge value from
/// the config is cut, so that reports stay readable and small.
pub const MAX_MESSAGE_CHARS: usize = 2000;

/// `text` cut to `max` characters, saying how much was left out.
pub fn elide(text: String, max: usize) -> String {
    let count = text.chars().count();
    if count <= max {
        return text;
    }
    let kept: String = text.chars().take(max).collect();
    format!("{kept}… ({} more characters)", count - max)
}

impl Finding {
    pub fn new(
        code: &'static str,
        severity: Severity,
        path: AttrPath,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) -> Self {
        Finding {
            code,
            severity,
            path,
            message: elide(message.into(), MAX_MESSAGE_CHARS),
            hint: hint.into(),
            location: None,
        }
    }

    pub fn at(mut self, location: Option<Location>) -> Self {
        self.location = location;
        self
    }
}

/// Findings sorted the way reports show them: errors first, then by code and path.
pub fn sort(findings: &mut [Finding]) {
    findings.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then_with(|| a.code.cmp(b.code))
            .then_with(|| a.path.cmp(&b.path))
            .then_with(|| a.message.cmp(&b.message))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attr_paths_quote_what_nix_would_quote() {
        let path = AttrPath::new(["disko", "devices", "disk", "main"])
            .join("content")
            .join("subvolumes")
            .join("@root");
        assert_eq!(
            path.to_string(),
            r#"disko.devices.disk.main.content.subvolumes."@root""#
        );
        assert_eq!(
            AttrPath::new(["fileSystems", "/persist", "neededForBoot"]).to_string(),
            r#"fileSystems."/persist".neededForBoot"#
        );
        assert_eq!(
            AttrPath::new(["a", "${x}\"y"]).to_string(),
            r#"a."\${x}\"y""#
        );
        assert_eq!(
            AttrPath::new(["mountOptions", "[2]"]).to_string(),
            "mountOptions[2]"
        );
    }

    #[test]
    fn huge_messages_and_names_are_cut() {
        let huge = "x".repeat(100_000);
        let finding = Finding::new("A1", Severity::Error, AttrPath::root(), huge.clone(), "");
        assert!(finding.message.len() < MAX_MESSAGE_CHARS + 100);
        assert!(finding.message.ends_with("(98000 more characters)"));
        let path = AttrPath::new(["a", &format!("/{huge}")]).to_string();
        assert!(path.len() < 300, "{}", path.len());
        assert_eq!(elide("short".to_owned(), 10), "short");
    }

    #[test]
    fn errors_sort_first() {
        let mut findings = vec![
            Finding::new("B1", Severity::Warning, AttrPath::root(), "w", ""),
            Finding::new("A1", Severity::Error, AttrPath::root(), "e", ""),
        ];
        sort(&mut findings);
        assert_eq!(findings[0].code, "A1");
    }
}
