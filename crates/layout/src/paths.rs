//! Mountpoints and persisted paths as the rules and vm-test compare them.

/// A path is a normalised absolute path: `/`, or `/a/b` without empty, `.` or `..` parts.
pub fn is_normalised_absolute(path: &str) -> bool {
    path == "/"
        || (path.starts_with('/')
            && !path.ends_with('/')
            && path[1..]
                .split('/')
                .all(|part| !part.is_empty() && part != "." && part != ".."))
}

/// Whether `path` is `base` or below it.
pub fn is_at_or_below(path: &str, base: &str) -> bool {
    base == "/"
        || path == base
        || path
            .strip_prefix(base)
            .is_some_and(|rest| rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert!(is_normalised_absolute("/"));
        assert!(is_normalised_absolute("/var/lib"));
        for bad in ["", "var", "/var/", "//var", "/var/../etc", "/./x"] {
            assert!(!is_normalised_absolute(bad), "{bad:?}");
        }
        assert!(is_at_or_below("/var/lib/caddy/x", "/var/lib/caddy"));
        assert!(is_at_or_below("/var/lib/caddy", "/var/lib/caddy"));
        assert!(!is_at_or_below("/var/lib/caddyx", "/var/lib/caddy"));
        assert!(is_at_or_below("/anything", "/"));
    }
}
