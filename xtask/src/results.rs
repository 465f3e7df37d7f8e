//! Results files under target/xtask/: what `check` and `vm-test` really
//! measured, with the git revision and a schema version, so that
//! `deploy-checklist` can tell fresh results from stale ones.

use anyhow::{Context as _, Result};
use camino::{Utf8Path, Utf8PathBuf};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::project::{revision, write_atomically, xtask_dir, Revision};

/// Bumped when a results file changes incompatibly.
pub const SCHEMA: u32 = 1;

/// What every results file starts with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub schema: u32,
    /// `check`, `vm-test`, …
    pub kind: String,
    pub host: String,
    pub revision: Revision,
    /// RFC 3339, UTC.
    pub finished_at: String,
    pub passed: bool,
}

impl Header {
    pub fn now(kind: &str, host: &str, passed: bool) -> Header {
        Header {
            schema: SCHEMA,
            kind: kind.to_owned(),
            host: host.to_owned(),
            revision: revision(),
            finished_at: now_rfc3339(),
            passed,
        }
    }
}

pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// `target/xtask/<kind>.json`.
pub fn path(kind: &str) -> Utf8PathBuf {
    xtask_dir().join(format!("{kind}.json"))
}

/// Writes a results document (a struct with a flattened `Header`) atomically.
pub fn write<T: Serialize>(kind: &str, results: &T) -> Result<Utf8PathBuf> {
    let path = path(kind);
    let json = serde_json::to_vec_pretty(results).context("serialising results")?;
    write_atomically(&path, &json)?;
    Ok(path)
}

/// Reads a results document; `Ok(None)` when there is none yet.
pub fn read<T: DeserializeOwned>(path: &Utf8Path) -> Result<Option<T>> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error).with_context(|| format!("reading {path}")),
    };
    serde_json::from_slice(&bytes).map(Some).with_context(|| {
        format!("{path} is not a results file of schema {SCHEMA}; run the command again")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Example {
        #[serde(flatten)]
        header: Header,
        figure: u64,
    }

    #[test]
    fn round_trips_with_a_header() {
        let dir = tempfile::tempdir().unwrap();
        let path = Utf8PathBuf::from_path_buf(dir.path().join("x.json")).unwrap();
        let example = Example {
            header: Header::now("example", "h", true),
            figure: 7,
        };
        write_atomically(&path, &serde_json::to_vec(&example).unwrap()).unwrap();
        let back: Example = read(&path).unwrap().unwrap();
        assert_eq!(back, example);
        assert!(read::<Example>(&path.with_file_name("missing.json"))
            .unwrap()
            .is_none());
        assert!(back.header.finished_at.ends_with('Z'));
    }
}
