//! Reading what the guest's tools print. Pure functions, tested on the
//! host with the outputs of the versions in Debian bookworm.

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SgdiskRow {
    pub number: u32,
    pub start: u64,
    pub end: u64,
    pub code: String,
    pub name: String,
}

/// The partition rows of `sgdisk -p`.
pub fn sgdisk_print(text: &str) -> Vec<SgdiskRow> {
    let mut rows = Vec::new();
    let mut in_table = false;
    for line in text.lines() {
        if line.trim_start().starts_with("Number") {
            in_table = true;
            continue;
        }
        if !in_table {
            continue;
        }
        // number start end size unit code name…
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.len() < 6 {
            continue;
        }
        let (Ok(number), Ok(start), Ok(end)) =
            (words[0].parse(), words[1].parse(), words[2].parse())
        else {
            continue;
        };
        rows.push(SgdiskRow {
            number,
            start,
            end,
            code: words[5].to_owned(),
            name: words[6..].join(" "),
        });
    }
    rows
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Compsize {
    pub disk_bytes: u64,
    pub uncompressed_bytes: u64,
    pub referenced_bytes: u64,
    /// Per type (`none`, `zstd`, `prealloc`): disk and uncompressed bytes.
    pub types: BTreeMap<String, (u64, u64)>,
}

impl Compsize {
    /// Percent of the uncompressed size that compression saves.
    pub fn saving_percent(&self) -> f64 {
        if self.uncompressed_bytes == 0 {
            return 0.0;
        }
        100.0 * (1.0 - self.disk_bytes as f64 / self.uncompressed_bytes as f64)
    }

    pub fn compressed_types(&self) -> Vec<&str> {
        self.types
            .keys()
            .map(String::as_str)
            .filter(|t| *t != "none" && *t != "prealloc")
            .collect()
    }
}

/// `compsize -b` output; `None` when it found no data.
pub fn compsize(text: &str) -> Option<Compsize> {
    let mut result = Compsize::default();
    let mut found = false;
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.len() < 5 || !words[1].ends_with('%') {
            continue;
        }
        let numbers: Vec<u64> = words[2..5].iter().filter_map(|w| w.parse().ok()).collect();
        let [disk, uncompressed, referenced] = numbers.as_slice() else {
            continue;
        };
        if words[0] == "TOTAL" {
            found = true;
            result.disk_bytes = *disk;
            result.uncompressed_bytes = *uncompressed;
            result.referenced_bytes = *referenced;
        } else {
            result
                .types
                .insert(words[0].to_owned(), (*disk, *uncompressed));
        }
    }
    found.then_some(result)
}

/// `key: value` lines (cryptsetup status).
pub fn colon_fields(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| {
            let (key, value) = line.split_once(':')?;
            let key = key.trim();
            (!key.is_empty()).then(|| (key.to_owned(), value.trim().to_owned()))
        })
        .collect()
}

/// `key=value` lines (the rollback script's status file).
pub fn key_values(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| {
            let (key, value) = line.split_once('=')?;
            Some((key.trim().to_owned(), value.trim().to_owned()))
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub device: String,
    pub mountpoint: String,
    pub fs_type: String,
    pub options: Vec<String>,
}

/// /proc/mounts (octal escapes such as `\040` decoded).
pub fn proc_mounts(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            Some(MountEntry {
                device: unescape(words.next()?),
                mountpoint: unescape(words.next()?),
                fs_type: words.next()?.to_owned(),
                options: words.next()?.split(',').map(str::to_owned).collect(),
            })
        })
        .collect()
}

fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let digits = bytes.get(i + 1..i + 4);
        if bytes[i] == b'\\' {
            if let Some(digits) = digits.filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c))) {
                let value = digits.iter().fold(0u32, |v, d| v * 8 + u32::from(d - b'0'));
                if let Ok(byte) = u8::try_from(value) {
                    out.push(byte);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// /proc/swaps: (file name, size in KiB).
pub fn proc_swaps(text: &str) -> Vec<(String, u64)> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            Some((unescape(words.first()?), words.get(2)?.parse().ok()?))
        })
        .collect()
}

/// `fstrim -v`: `/mnt: 414 GiB (444596703232 bytes) trimmed`.
pub fn fstrim_bytes(text: &str) -> Option<u64> {
    let start = text.find('(')? + 1;
    let rest = &text[start..];
    let end = rest.find(" bytes")?;
    rest[..end].trim().parse().ok()
}

/// `fstrim --verbose` over several filesystems (`--listed-in`, `-A`): one
/// line each, `/mnt: 414 GiB (444596703232 bytes) trimmed on /dev/vda4`, as
/// (mountpoint, bytes).
pub fn fstrim_lines(text: &str) -> Vec<(String, u64)> {
    text.lines()
        .filter_map(|line| {
            let (mountpoint, rest) = line.split_once(": ")?;
            Some((mountpoint.to_owned(), fstrim_bytes(rest)?))
        })
        .collect()
}

/// `btrfs subvolume list`: (id, parent id, path).
pub fn subvolume_list(text: &str) -> Vec<(u64, u64, String)> {
    text.lines()
        .filter_map(|line| {
            // ID 256 gen 9 top level 5 path @caddy
            let words: Vec<&str> = line.split_whitespace().collect();
            let id = words.get(1)?.parse().ok()?;
            let level_at = words.iter().position(|w| *w == "level")?;
            let parent = words.get(level_at + 1)?.parse().ok()?;
            let path_at = words.iter().position(|w| *w == "path")?;
            Some((id, parent, words[path_at + 1..].join(" ")))
        })
        .collect()
}

/// The attribute field of `lsattr FILE`.
pub fn lsattr_flags(text: &str) -> Option<String> {
    text.split_whitespace().next().map(str::to_owned)
}

/// `YYYYMMDDTHHMMSSZ` or `YYYYMMDDTHHMMSSZ-NN`, the rollback's names for old roots.
pub fn is_old_root_name(name: &str) -> bool {
    let (stamp, suffix) = match name.split_once('-') {
        Some((stamp, suffix)) => (stamp, Some(suffix)),
        None => (name, None),
    };
    let b = stamp.as_bytes();
    let stamp_ok = b.len() == 16
        && b[..8].iter().all(u8::is_ascii_digit)
        && b[8] == b'T'
        && b[9..15].iter().all(u8::is_ascii_digit)
        && b[15] == b'Z';
    let suffix_ok = suffix.is_none_or(|s| s.len() == 2 && s.bytes().all(|c| c.is_ascii_digit()));
    stamp_ok && suffix_ok
}

#[cfg(test)]
mod tests {
    #[test]
    fn fstrim_service_output_lists_each_filesystem() {
        let text = "/sysroot/boot: 1022 MiB (1071616000 bytes) trimmed on /dev/vda2\n\
                    /sysroot: 412 GiB (442385379328 bytes) trimmed on /dev/vda4\n";
        assert_eq!(
            fstrim_lines(text),
            [
                ("/sysroot/boot".to_owned(), 1_071_616_000),
                ("/sysroot".to_owned(), 442_385_379_328)
            ]
        );
        assert!(fstrim_lines("fstrim: /x: the discard operation is not supported\n").is_empty());
    }

    use super::*;

    #[test]
    fn sgdisk_table() {
        let text = "Disk /dev/vda: 937500000 sectors, 447.0 GiB\nSector size (logical/physical): 512/512 bytes\nFirst usable sector is 34, last usable sector is 937499966\n\nNumber  Start (sector)    End (sector)  Size       Code  Name\n   1            2048            4095   1024.0 KiB  EF02  disk-main-boot\n   2            4096         2101247   1024.0 MiB  EF00  disk-main-ESP\n   4        69210112       937498623   414.0 GiB   8300  a name with spaces\n";
        let rows = sgdisk_print(text);
        assert_eq!(rows.len(), 3);
        assert_eq!(
            rows[0],
            SgdiskRow {
                number: 1,
                start: 2048,
                end: 4095,
                code: "EF02".into(),
                name: "disk-main-boot".into()
            }
        );
        assert_eq!(rows[2].name, "a name with spaces");
    }

    #[test]
    fn compsize_totals_and_types() {
        let text = "Processed 3356 files, 2404 regular extents (2409 refs), 1495 inline.\nType       Perc     Disk Usage   Uncompressed Referenced  \nTOTAL       47%       28745318     60424396     60633805       \nnone       100%        1234         1234         1234       \nzstd        47%       28744084     60423162     60632571       \n";
        let c = compsize(text).unwrap();
        assert_eq!(c.disk_bytes, 28745318);
        assert_eq!(c.uncompressed_bytes, 60424396);
        assert_eq!(c.compressed_types(), ["zstd"]);
        assert!((c.saving_percent() - 52.43).abs() < 0.01);
        assert_eq!(compsize("No files.\n"), None);
    }

    #[test]
    fn cryptsetup_status_fields() {
        let text = "/dev/mapper/swap is active and is in use.\n  type:    PLAIN\n  cipher:  aes-xts-plain64\n  keysize: 256 bits\n  key location: dm-crypt\n  device:  /dev/vda3\n  sector size:  512\n  offset:  0 sectors\n  size:    67108864 sectors\n  mode:    read/write\n";
        let f = colon_fields(text);
        assert_eq!(f["type"], "PLAIN");
        assert_eq!(f["cipher"], "aes-xts-plain64");
        assert_eq!(f["device"], "/dev/vda3");
        assert_eq!(f["size"], "67108864 sectors");
        assert_eq!(f["keysize"], "256 bits");
    }

    #[test]
    fn mounts_swaps_and_fstrim() {
        let mounts = proc_mounts("/dev/vda4 /sysroot/nix btrfs rw,noatime,compress=zstd:1,ssd,discard=async,space_cache=v2,subvolid=257,subvol=/@nix 0 0\n/dev/vda2 /sysroot/my\\040boot vfat rw,fmask=0077 0 0\n");
        assert_eq!(mounts[0].mountpoint, "/sysroot/nix");
        assert!(mounts[0].options.contains(&"subvol=/@nix".to_owned()));
        assert_eq!(mounts[1].mountpoint, "/sysroot/my boot");
        let swaps = proc_swaps("Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n/dev/dm-0                               partition\t33554428\t0\t\t-2\n");
        assert_eq!(swaps, [("/dev/dm-0".to_owned(), 33554428)]);
        assert_eq!(
            fstrim_bytes("/sysroot: 414 GiB (444596703232 bytes) trimmed\n"),
            Some(444596703232)
        );
        assert_eq!(fstrim_bytes("garbage"), None);
    }

    #[test]
    fn subvolumes_and_attributes() {
        let list = subvolume_list("ID 256 gen 9 top level 5 path @caddy\nID 263 gen 20 top level 262 path @old_roots/20250101T000000Z\n");
        assert_eq!(
            list,
            [
                (256, 5, "@caddy".to_owned()),
                (263, 262, "@old_roots/20250101T000000Z".to_owned())
            ]
        );
        assert_eq!(
            lsattr_flags("---------------C------ /sysroot/x\n").as_deref(),
            Some("---------------C------")
        );
        assert_eq!(key_values("result=ok\nmessage=a=b\n")["message"], "a=b");
    }

    #[test]
    fn old_root_names() {
        assert!(is_old_root_name("20251128T153000Z"));
        assert!(is_old_root_name("20251128T153000Z-01"));
        assert!(!is_old_root_name("20251128T153000Z-1"));
        assert!(!is_old_root_name("2025-11-28"));
        assert!(!is_old_root_name("@root"));
    }
}
