//! What Btrfs makes of a `compress=` value (btrfs(5); fs/btrfs/super.c
//! and compression.c; each form mounted on kernel 6.18.44).

use super::key;

/// The value of a `compress=` or `compress-force=` option (`zstd:1`).
pub fn compress_value(option: &str) -> Option<&str> {
    let (_, value) = option.split_once('=')?;
    matches!(key(option), "compress" | "compress-force").then_some(value)
}

/// What the kernel does with a `compress=` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compression {
    /// Taken as written.
    Valid,
    /// The mount fails: "failed to parse compression option".
    Refused(String),
    /// Accepted, but the kernel uses another level than the one written.
    Changed(String),
}

pub fn judge_compression(value: &str) -> Compression {
    let (algorithm, level) = match value.split_once(':') {
        Some((a, l)) => (a, Some(l)),
        None => (value, None),
    };
    let parsed = level.map(|l| l.parse::<i64>().map_err(|_| l));
    let refused = |why: String| Compression::Refused(why);
    match (algorithm, parsed) {
        ("zstd" | "zlib" | "lzo" | "no" | "none", Some(Err(level))) => refused(format!(
            "level {level:?} is not a number: the kernel refuses the mount (\"failed to parse compression option\")"
        )),
        ("zstd", None) | ("zlib", None) | ("lzo", None) | ("no", None) | ("none", None) => {
            Compression::Valid
        }
        ("zstd", Some(Ok(n))) if (1..=15).contains(&n) || n == 0 => Compression::Valid,
        ("zstd", Some(Ok(n))) if (-15..=-1).contains(&n) => Compression::Changed(format!(
            "negative (fast) zstd levels exist since kernel 6.15; older kernels such as 6.12 cannot read {n} and use the default level 3"
        )),
        ("zstd", Some(Ok(n))) => Compression::Changed(format!(
            "the kernel clamps zstd:{n} to zstd:{} (kernels 5.1 to 6.18; seen on 6.18.44): the filesystem compresses at that level, not the one written",
            if n > 15 { 15 } else { -15 }
        )),
        ("zlib", Some(Ok(n))) if (0..=9).contains(&n) => Compression::Valid,
        ("zlib", Some(Ok(n))) => Compression::Changed(format!(
            "the kernel clamps zlib:{n} to zlib:{} (seen on 6.18.44)",
            if n > 9 { 9 } else { 1 }
        )),
        // lzo has no levels: the kernel ignores one.
        ("lzo", Some(Ok(_))) => Compression::Changed("lzo has no levels: the kernel ignores it and uses plain lzo".to_owned()),
        ("no" | "none", Some(Ok(_))) => Compression::Valid,
        (other, _) => refused(format!(
            "{other:?} is not an algorithm Btrfs knows (zstd, zlib, lzo, no): the kernel refuses the mount (\"failed to parse compression option\")"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compression_forms() {
        // As kernel 6.18.44 mounted them.
        for good in [
            "zstd", "zstd:0", "zstd:1", "zstd:15", "zlib:9", "lzo", "no", "none",
        ] {
            assert_eq!(judge_compression(good), Compression::Valid, "{good}");
        }
        for refused in ["brotli", "zstd:x", "zstd:", "zstd:1x", "ZSTD", ""] {
            assert!(
                matches!(judge_compression(refused), Compression::Refused(_)),
                "{refused}"
            );
        }
        for changed in [
            "zstd:16", "zstd:99", "zstd:-16", "zlib:10", "lzo:1", "zstd:-3",
        ] {
            assert!(
                matches!(judge_compression(changed), Compression::Changed(_)),
                "{changed}"
            );
        }
        let Compression::Changed(why) = judge_compression("zstd:99") else {
            unreachable!()
        };
        assert!(why.contains("clamps zstd:99 to zstd:15"), "{why}");
    }

    #[test]
    fn compress_values() {
        assert_eq!(compress_value("compress=zstd:1"), Some("zstd:1"));
        assert_eq!(compress_value("compress-force=lzo"), Some("lzo"));
        assert_eq!(compress_value("compress"), None);
        assert_eq!(compress_value("compressx=zstd"), None);
        assert_eq!(compress_value("noatime"), None);
    }
}
