//! The VM's disk: a sparse qcow2 of the host's real size, and what of it
//! is really allocated (to see TRIM reach the host).

use std::os::unix::fs::MetadataExt as _;

use anyhow::{Context as _, Result};
use camino::Utf8Path;
use serde::Deserialize;
use xshell::cmd;

use toolbox::process::{Output, Supervised};

/// Creates a sparse qcow2 image of `bytes`.
pub fn create(qemu_img: &Utf8Path, path: &Utf8Path, bytes: u64) -> Result<()> {
    let sh = toolbox::project::shell()?;
    let size = bytes.to_string();
    Supervised::from_command(cmd!(sh, "{qemu_img} create -q -f qcow2 {path} {size}"))
        .checked()
        .with_context(|| format!("creating the {bytes}-byte disk image {path}"))?;
    Ok(())
}

/// How much of the image holds data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allocation {
    /// Guest-visible bytes backed by clusters (`qemu-img map`: data=true).
    pub data_bytes: u64,
    /// Bytes the image file occupies on the host's filesystem.
    pub file_bytes: u64,
}

#[derive(Debug, Deserialize)]
struct MapEntry {
    length: u64,
    data: bool,
}

/// Measures the image; `-U` because qemu has it open (the guest flushed first).
pub fn allocation(qemu_img: &Utf8Path, path: &Utf8Path) -> Result<Allocation> {
    let sh = toolbox::project::shell()?;
    // One entry per run of clusters: a fragmented image maps long.
    let output = Supervised::from_command(cmd!(sh, "{qemu_img} map -U --output=json {path}"))
        .stdout(Output::keep(256 << 20))
        .read()
        .with_context(|| format!("qemu-img map {path}"))?;
    let data_bytes = data_bytes(&output)?;
    let file_bytes = std::fs::metadata(path)
        .with_context(|| format!("reading {path}"))?
        .blocks()
        * 512;
    Ok(Allocation {
        data_bytes,
        file_bytes,
    })
}

fn data_bytes(map_json: &str) -> Result<u64> {
    let entries: Vec<MapEntry> =
        serde_json::from_str(map_json).context("reading qemu-img map's JSON")?;
    Ok(entries.iter().filter(|e| e.data).map(|e| e.length).sum())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_data_extents() {
        let json = r#"[{ "start": 0, "length": 65536, "depth": 0, "present": true, "zero": false, "data": true, "offset": 327680},
{ "start": 65536, "length": 479999934464, "depth": 0, "present": false, "zero": true, "data": false}]"#;
        assert_eq!(data_bytes(json).unwrap(), 65536);
    }

    #[test]
    fn a_real_sparse_image() {
        let found = toolbox::setup::require(&[toolbox::setup::QEMU_IMG])
            .expect("qemu-img is needed: apt-get install qemu-utils");
        let dir = tempfile::tempdir().unwrap();
        let path = camino::Utf8PathBuf::from_path_buf(dir.path().join("d.qcow2")).unwrap();
        create(
            found.path(toolbox::setup::QEMU_IMG).unwrap(),
            &path,
            480_000_000_000,
        )
        .unwrap();
        let allocation = allocation(found.path(toolbox::setup::QEMU_IMG).unwrap(), &path).unwrap();
        assert_eq!(allocation.data_bytes, 0);
        assert!(allocation.file_bytes < 1 << 20, "{allocation:?}");
    }
}
