//! A mount's whole option list read the way the filesystem parses it: in
//! order, the last of a setting wins, some options imply or clear others,
//! and some the kernel refuses together. The rules ask this, and nothing
//! else interprets option strings.
//!
//! Btrfs follows fs/btrfs/super.c (`btrfs_parse_param`); each combination
//! the tests below name was mounted on a real Btrfs on kernel 6.18.44
//! (`mount -o loop,<options>`, then /proc/self/mountinfo):
//! - `compress`/`compress-force` clear nodatacow and nodatasum;
//! - `nodatacow` sets nodatasum too and clears compress;
//! - `datacow` clears nodatacow only; `datasum` clears both;
//! - `subvol=` and `subvolid=`: the last of each wins; when both are given
//!   and name different subvolumes the kernel refuses the mount
//!   ("BTRFS error: subvol '@nix' does not match subvolid 5").
//!
//! vfat follows fs/fat/inode.c (`fat_parse_param`): `umask=` sets the file
//! and the directory mask, `fmask=`/`dmask=` one each, in order. vfat is not
//! in this machine's kernel: read from the source, not mounted here.

use std::collections::BTreeMap;

use super::{key, Filesystem};

/// What the filesystem makes of one mount's options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reading {
    /// Each setting's final option (`datacow` → `nodatacow`), for settings
    /// that are on/off or take one value; the last one written wins.
    settings: BTreeMap<&'static str, String>,
    /// Btrfs data flags after every option in order.
    pub nodatacow: bool,
    pub nodatasum: bool,
    /// Btrfs: the compression in effect (`zstd:1`), if any.
    pub compress: Option<String>,
    /// Btrfs: the subvolume selectors that win.
    pub subvol: Option<String>,
    pub subvolid: Option<u64>,
    /// Btrfs: `clear_cache` is written (the space cache is rebuilt).
    pub clear_cache: bool,
    /// vfat: the file and directory masks in effect.
    pub fmask: Option<u32>,
    pub dmask: Option<u32>,
    /// vfat: files lose the execute bits (`showexec`).
    pub showexec: bool,
    /// Options a later one replaced or cleared: (written, replaced by).
    pub overridden: Vec<(String, String)>,
    /// Why the kernel refuses the whole list, in its own words.
    pub refused: Option<String>,
}

/// The setting an option switches: `ssd` and `nossd` are one setting.
pub(super) fn setting(fs: Filesystem, name: &str) -> Option<&'static str> {
    Some(match (fs, name) {
        (Filesystem::Btrfs, "ssd" | "nossd" | "ssd_spread" | "nossd_spread") => "ssd",
        (Filesystem::Btrfs, "discard" | "nodiscard") => "discard",
        (Filesystem::Btrfs, "space_cache" | "nospace_cache") => "space_cache",
        (Filesystem::Btrfs, "barrier" | "nobarrier") => "barrier",
        (Filesystem::Btrfs, "autodefrag" | "noautodefrag") => "autodefrag",
        (Filesystem::Btrfs, "flushoncommit" | "noflushoncommit") => "flushoncommit",
        (Filesystem::Btrfs, "treelog" | "notreelog") => "treelog",
        (Filesystem::Btrfs, "commit") => "commit",
        (_, "atime" | "noatime" | "relatime" | "strictatime") => "atime",
        (_, "ro" | "rw") => "ro",
        (_, "dev" | "nodev") => "dev",
        (_, "exec" | "noexec") => "exec",
        (_, "suid" | "nosuid") => "suid",
        _ => return None,
    })
}

/// Reads `options` (in the order the mount gets them) as `fs` parses them.
pub fn read(fs: Filesystem, options: &[String]) -> Reading {
    let mut reading = Reading::default();
    let mut subvol_written: Option<String> = None;
    let mut subvolid_written: Option<String> = None;
    let mut compress_written: Option<String> = None;
    let mut umask_written: Option<String> = None;
    // mount(8) splits each -o on commas: "noatime,subvolid=258" is two options.
    let options: Vec<String> = options
        .iter()
        .flat_map(|o| o.split(','))
        .filter(|o| !o.is_empty())
        .map(str::to_owned)
        .collect();
    for option in &options {
        let name = key(option);
        let value = option.split_once('=').map(|(_, v)| v);
        if let Some(setting) = setting(fs, name) {
            if let Some(previous) = reading.settings.insert(setting, option.clone()) {
                if previous != *option {
                    reading.overridden.push((previous, option.clone()));
                }
            }
        }
        match (fs, name) {
            (Filesystem::Btrfs, "compress" | "compress-force") => {
                let algorithm = value.unwrap_or("zlib").to_owned();
                if let Some(off) = reading.checksums_off() {
                    reading.overridden.push((off.to_owned(), option.clone()));
                }
                if let Some(previous) = compress_written.replace(option.clone()) {
                    if previous != *option {
                        reading.overridden.push((previous, option.clone()));
                    }
                }
                reading.nodatacow = false;
                reading.nodatasum = false;
                reading.compress = Some(algorithm);
            }
            (Filesystem::Btrfs, "nodatacow") => {
                if let Some(previous) = compress_written.take() {
                    reading.overridden.push((previous, option.clone()));
                }
                reading.compress = None;
                reading.nodatacow = true;
                reading.nodatasum = true;
            }
            (Filesystem::Btrfs, "datacow") => {
                if reading.nodatacow {
                    reading
                        .overridden
                        .push(("nodatacow".to_owned(), option.clone()));
                }
                reading.nodatacow = false;
            }
            (Filesystem::Btrfs, "nodatasum") => reading.nodatasum = true,
            (Filesystem::Btrfs, "clear_cache") => reading.clear_cache = true,
            (Filesystem::Btrfs, "datasum") => {
                if let Some(off) = reading.checksums_off() {
                    reading.overridden.push((off.to_owned(), option.clone()));
                }
                reading.nodatacow = false;
                reading.nodatasum = false;
            }
            (Filesystem::Btrfs, "subvol") => {
                if let Some(previous) = subvol_written.replace(option.clone()) {
                    if same_subvolume(&previous, option) {
                        continue;
                    }
                    reading.overridden.push((previous, option.clone()));
                }
                reading.subvol = value.map(|v| v.trim_matches('/').to_owned());
            }
            (Filesystem::Btrfs, "subvolid") => {
                if let Some(previous) = subvolid_written.replace(option.clone()) {
                    if previous != *option {
                        reading.overridden.push((previous, option.clone()));
                    }
                }
                reading.subvolid = value.and_then(|v| v.parse().ok());
            }
            (Filesystem::Vfat, "umask") => {
                let mask = value.and_then(octal);
                if let Some(previous) = umask_written.replace(option.clone()) {
                    reading.overridden.push((previous, option.clone()));
                }
                reading.fmask = mask;
                reading.dmask = mask;
            }
            (Filesystem::Vfat, "fmask") => {
                if let Some(umask) = &umask_written {
                    reading
                        .overridden
                        .push((format!("the file mask of {umask}"), option.clone()));
                }
                reading.fmask = value.and_then(octal);
            }
            (Filesystem::Vfat, "showexec") => reading.showexec = true,
            (Filesystem::Vfat, "dmask") => {
                if let Some(umask) = &umask_written {
                    reading
                        .overridden
                        .push((format!("the directory mask of {umask}"), option.clone()));
                }
                reading.dmask = value.and_then(octal);
            }
            _ => {}
        }
    }
    // subvolid=5 is the top level, which subvol= names only as "/" (or "").
    if let (Some(5), Some(subvol)) = (reading.subvolid, &reading.subvol) {
        if !subvol.is_empty() {
            reading.refused = Some(format!(
                "BTRFS error: subvol '{}' does not match subvolid 5",
                subvol_written
                    .as_deref()
                    .and_then(|o| o.strip_prefix("subvol="))
                    .unwrap_or(subvol)
            ));
        }
    }
    reading
}

impl Reading {
    /// The option in effect that turns data checksums off (`nodatacow`
    /// implies `nodatasum`), which `compress` and `datasum` override.
    fn checksums_off(&self) -> Option<&'static str> {
        if self.nodatacow {
            Some("nodatacow")
        } else if self.nodatasum {
            Some("nodatasum")
        } else {
            None
        }
    }

    /// The kernel refuses subvol= with a subvolid= of another subvolume;
    /// `id_of` gives a subvolume's id where the layout fixes it.
    pub fn check_ids(&mut self, id_of: impl Fn(&str) -> Option<u64>) {
        if self.refused.is_some() {
            return;
        }
        if let (Some(id), Some(subvol)) = (self.subvolid, &self.subvol) {
            if id != 5 && id_of(subvol).is_some_and(|real| real != id) {
                self.refused = Some(format!(
                    "BTRFS error: subvol '{subvol}' does not match subvolid {id}"
                ));
            }
        }
    }
}

fn same_subvolume(a: &str, b: &str) -> bool {
    let name = |o: &str| {
        o.strip_prefix("subvol=")
            .unwrap_or(o)
            .trim_matches('/')
            .to_owned()
    };
    name(a) == name(b)
}

pub(super) fn octal(value: &str) -> Option<u32> {
    u32::from_str_radix(value, 8).ok()
}

impl Reading {
    /// The option that decides `setting` (`ssd`, `discard`, `atime`, …), if written.
    pub fn setting(&self, setting: &str) -> Option<&str> {
        self.settings.get(setting).map(String::as_str)
    }

    /// Whether data written under these options is left uncompressed
    /// (btrfs_inode_can_compress: no compression without data checksums).
    pub fn compression_blocked(&self) -> bool {
        self.compress.is_some() && (self.nodatacow || self.nodatasum)
    }

    /// The option, of those written, that turns data checksums or COW off
    /// and is still in effect: `nodatacow` over `nodatasum`.
    pub fn nocow_option(&self) -> Option<&'static str> {
        if self.nodatacow {
            Some("nodatacow")
        } else if self.nodatasum {
            Some("nodatasum")
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn btrfs(options: &[&str]) -> Reading {
        read(
            Filesystem::Btrfs,
            &options.iter().map(|o| (*o).to_owned()).collect::<Vec<_>>(),
        )
    }

    fn vfat(options: &[&str]) -> Reading {
        read(
            Filesystem::Vfat,
            &options.iter().map(|o| (*o).to_owned()).collect::<Vec<_>>(),
        )
    }

    // Each expectation is what kernel 6.18.44 showed in /proc/self/mountinfo.
    #[test]
    fn btrfs_data_flags_in_order() {
        let r = btrfs(&["compress=zstd:1", "nodatasum"]);
        assert_eq!(
            (r.nodatasum, r.nodatacow, r.compress.as_deref()),
            (true, false, Some("zstd:1"))
        );
        assert!(r.compression_blocked());
        assert_eq!(r.nocow_option(), Some("nodatasum"));
        let r = btrfs(&["nodatasum", "compress=zstd:1"]);
        assert_eq!(
            (r.nodatasum, r.nodatacow, r.compress.as_deref()),
            (false, false, Some("zstd:1"))
        );
        assert_eq!(
            r.overridden,
            vec![("nodatasum".to_owned(), "compress=zstd:1".to_owned())]
        );
        let r = btrfs(&["compress=zstd:1", "nodatacow"]);
        assert_eq!((r.nodatasum, r.nodatacow, r.compress), (true, true, None));
        let r = btrfs(&["nodatacow", "compress=zstd:1"]);
        assert_eq!((r.nodatasum, r.nodatacow), (false, false));
        let r = btrfs(&["nodatacow", "datacow"]);
        assert_eq!((r.nodatasum, r.nodatacow), (true, false));
        let r = btrfs(&["nodatacow", "datasum"]);
        assert_eq!((r.nodatasum, r.nodatacow), (false, false));
        let r = btrfs(&["compress=zstd:3", "compress=lzo"]);
        assert_eq!(r.compress.as_deref(), Some("lzo"));
    }

    #[test]
    fn btrfs_last_setting_wins() {
        assert_eq!(btrfs(&["ssd", "nossd"]).setting("ssd"), Some("nossd"));
        assert_eq!(btrfs(&["nossd", "ssd"]).setting("ssd"), Some("ssd"));
        assert_eq!(
            btrfs(&["discard=async", "nodiscard"]).setting("discard"),
            Some("nodiscard")
        );
        let r = btrfs(&["space_cache=v2", "clear_cache", "nospace_cache"]);
        assert_eq!(
            (r.setting("space_cache"), r.clear_cache),
            (Some("nospace_cache"), true)
        );
        assert_eq!(
            btrfs(&["noatime,space_cache"]).setting("space_cache"),
            Some("space_cache")
        );
    }

    #[test]
    fn btrfs_selectors() {
        let r = btrfs(&["subvol=@persist", "subvol=@nix"]);
        assert_eq!(r.subvol.as_deref(), Some("@nix"));
        assert_eq!(r.refused, None);
        assert_eq!(
            r.overridden,
            vec![("subvol=@persist".to_owned(), "subvol=@nix".to_owned())]
        );
        // The same subvolume twice is no override.
        assert!(btrfs(&["subvol=/@nix", "subvol=@nix"])
            .overridden
            .is_empty());
        for options in [
            &["subvolid=5", "subvol=@nix"][..],
            &["subvol=@nix", "subvolid=5"],
        ] {
            assert_eq!(
                btrfs(options).refused.as_deref(),
                Some("BTRFS error: subvol '@nix' does not match subvolid 5")
            );
        }
        assert_eq!(btrfs(&["subvolid=5", "subvol=/"]).refused, None);
    }

    #[test]
    fn vfat_masks_in_order() {
        let r = vfat(&["umask=0077", "fmask=0022"]);
        assert_eq!((r.fmask, r.dmask), (Some(0o022), Some(0o077)));
        let r = vfat(&["fmask=0022", "umask=0077"]);
        assert_eq!((r.fmask, r.dmask), (Some(0o077), Some(0o077)));
        let r = vfat(&["fmask=0177", "dmask=0077"]);
        assert_eq!((r.fmask, r.dmask), (Some(0o177), Some(0o077)));
    }
}
