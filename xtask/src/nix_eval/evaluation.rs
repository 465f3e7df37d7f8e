//! Reading what an evaluation printed: JSON that is too deep, not UTF-8 or
//! marked by nix/lib/eval-host.nix becomes findings at the config's paths;
//! a failed evaluation becomes NIX002 or NIX004.

use anyhow::Result;
use camino::{Utf8Path, Utf8PathBuf};
use serde_json::Value;

use super::{NixError, CANNOT_CALL, INVALID_MARKER, MAX_DEPTH, MAX_HEAP_BYTES, TIMEOUT_ENV};
use layout::findings::{AttrPath, Finding, Location, Severity};

/// The finding for an evaluation that failed.
pub(super) fn evaluation_finding(error: NixError) -> Finding {
    if let Some(rest) = error.message.strip_prefix(CANNOT_CALL) {
        let file = rest.split_once(": ").map(|(file, _)| file).unwrap_or(rest);
        let location = Some(Location {
            file: Utf8PathBuf::from(file),
            line: 0,
            column: 0,
        })
        .filter(|l| l.file.is_absolute());
        return Finding::new(
            "NIX004",
            Severity::Error,
            AttrPath::root(),
            error.message.clone(),
            "Run `cargo xtask check --mode flake` where the flake's inputs can be evaluated (after `nix flake lock`), or write the file as a plain attribute set without `{ lib, ... }:` (as hosts/servers/hetzner-cloud/disko.nix is), so that it evaluates without nixpkgs.",
        )
        .at(location);
    }
    let hint = if error.message.contains("out of memory") {
        format!("The config allocates without end (a huge builtins.genList, a string doubled again and again); check stops Nix at {} GiB of heap.", MAX_HEAP_BYTES >> 30)
    } else if error.message.contains("stack overflow")
        || error.message.contains("infinite recursion")
    {
        "Look for a value defined in terms of itself, or a recursion without a base case, at the position shown.".to_owned()
    } else if error.message.contains(TIMEOUT_ENV) {
        "Look for a recursion or a computation that never ends; a layout evaluates in well under a second.".to_owned()
    } else {
        "Fix the expression at the position shown; `nix-instantiate --eval --strict <file> --show-trace` tells more.".to_owned()
    };
    // Name the host file that fails (disko.nix, persistence.nix,
    // machine.nix, rollback.nix), as Nix's position shows it.
    let what = match &error.location {
        Some(location) => format!("{} does", toolbox::project::display_path(&location.file)),
        None => "the host's files do".to_owned(),
    };
    Finding::new(
        "NIX002",
        Severity::Error,
        AttrPath::root(),
        format!("{what} not evaluate: {}", error.message),
        hint,
    )
    .at(error.location)
}

/// Whether a file holds nothing but whitespace and comments (or cannot be read).
pub(super) fn is_blank(file: &Utf8Path) -> bool {
    match std::fs::read(file) {
        Ok(bytes) => is_blank_nix(&String::from_utf8_lossy(&bytes)),
        Err(_) => false,
    }
}

/// Whether Nix source is nothing but whitespace, `# …` and `/* … */` comments.
fn is_blank_nix(text: &str) -> bool {
    let mut rest = text.trim_start();
    loop {
        if rest.is_empty() {
            return true;
        }
        if let Some(comment) = rest.strip_prefix('#') {
            rest = comment.split_once('\n').map_or("", |(_, after)| after);
        } else if let Some(comment) = rest.strip_prefix("/*") {
            match comment.split_once("*/") {
                Some((_, after)) => rest = after,
                // An unclosed comment is a syntax error, not an empty file.
                None => return false,
            }
        } else {
            return false;
        }
        rest = rest.trim_start();
    }
}

/// The evaluation as JSON, or findings for what JSON could not carry: bytes
/// that are not UTF-8, values nested deeper than `MAX_DEPTH`, and the
/// values nix/lib/eval-host.nix marked (path literals, infinite floats).
/// `Err` only for output that is not JSON at all.
pub fn read_evaluation(stdout: &[u8]) -> Result<Result<Value, Vec<Finding>>> {
    let (text, utf8) = match std::str::from_utf8(stdout) {
        Ok(text) => (std::borrow::Cow::Borrowed(text), true),
        Err(_) => (String::from_utf8_lossy(stdout), false),
    };
    let value: Value = match serde_json::from_str(&text) {
        Ok(value) => value,
        Err(error) => {
            // serde_json stops at 128 levels; say where, in the config's terms.
            if let Some(path) = too_deep(text.as_bytes(), MAX_DEPTH) {
                return Ok(Err(vec![too_deep_finding(&path)]));
            }
            return Err(error.into());
        }
    };
    let mut findings = Vec::new();
    // Valid UTF-8 without a marker anywhere in the text: nothing to find (the
    // walk below is the costliest part of reading a clean evaluation).
    if utf8 && !text.contains(INVALID_MARKER) {
        return Ok(Ok(value));
    }
    let positions_of = |key: &str| {
        layout::positions::Positions::new(
            value
                .get(key)
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
        )
    };
    for (key, base, positions) in [
        ("layout", AttrPath::root(), "positions"),
        (
            "persistence",
            AttrPath::new(["environment", "persistence"]),
            "positions",
        ),
        ("machine", AttrPath::new(["machine"]), "machinePositions"),
        ("rollback", AttrPath::root(), "rollbackPositions"),
    ] {
        let Some(part) = value.get(key) else { continue };
        let mut found = Vec::new();
        unreadable_values(part, &base, !utf8, &mut found);
        if found.is_empty() {
            continue;
        }
        let positions = positions_of(positions);
        for finding in &mut found {
            // machine.nix's own trees start below `machine`.
            let path = match finding.path.segments().split_first() {
                Some((first, rest)) if key == "machine" && first == "machine" => {
                    AttrPath::new(rest.iter().cloned())
                }
                _ => finding.path.clone(),
            };
            finding.location = positions.locate(&path);
        }
        findings.extend(found);
    }
    if findings.is_empty() {
        return Ok(Ok(value));
    }
    Ok(Err(findings))
}

fn too_deep_finding(path: &[String]) -> Finding {
    let at = evaluated_path(path);
    Finding::new(
        "MODEL006",
        Severity::Error,
        at.clone(),
        format!(
            "the value at {at} nests more than {MAX_DEPTH} attribute sets or lists deep; a disko layout needs about 12"
        ),
        "Look for a recursive function or a generated value at this place; write the layout as a few levels of plain attribute sets.",
    )
}

/// The attribute path of the config for a path in eval-host.nix's output.
fn evaluated_path(path: &[String]) -> AttrPath {
    let (base, rest) = match path.split_first() {
        Some((first, rest)) if first == "layout" => (AttrPath::root(), rest),
        Some((first, rest)) if first == "persistence" => {
            (AttrPath::new(["environment", "persistence"]), rest)
        }
        _ => (AttrPath::root(), path),
    };
    rest.iter()
        .fold(base, |path, segment| path.join(segment.clone()))
}

/// Walks the evaluation for marked values and, when the output was not
/// UTF-8, for the strings and names that held the bad bytes.
fn unreadable_values(value: &Value, path: &AttrPath, lossy: bool, findings: &mut Vec<Finding>) {
    const REPLACED: char = char::REPLACEMENT_CHARACTER;
    match value {
        Value::Object(map) => {
            if let Some(Value::String(what)) = map.get(INVALID_MARKER) {
                findings.push(Finding::new(
                    "MODEL001",
                    Severity::Error,
                    path.clone(),
                    format!("{path} is {what}"),
                    "Give the value the type disko's option has: a string in quotes for paths and sizes, an integer or a boolean where those are expected.",
                ));
                return;
            }
            for (key, item) in map {
                let item_path = path.join(key.clone());
                if lossy && key.contains(REPLACED) {
                    findings.push(not_utf8(&item_path, "the attribute name"));
                }
                unreadable_values(item, &item_path, lossy, findings);
            }
        }
        Value::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                unreadable_values(item, &path.join(format!("[{index}]")), lossy, findings);
            }
        }
        Value::String(text) if lossy && text.contains(REPLACED) => {
            findings.push(not_utf8(path, &format!("the string {text:?}")));
        }
        _ => {}
    }
}

fn not_utf8(path: &AttrPath, what: &str) -> Finding {
    Finding::new(
        "MODEL005",
        Severity::Error,
        path.clone(),
        format!("{what} at {path} is not valid UTF-8 (the bytes that are not are shown as U+FFFD); devices, names and mountpoints must be text"),
        "Remove the bytes: they usually come from builtins.substring cutting a character in two, or from a file saved in Latin-1 rather than UTF-8.",
    )
}

/// The path (keys and `[index]`es) to the first place where `json` nests
/// more than `limit` deep, without parsing it (serde_json would stop there).
pub fn too_deep(json: &[u8], limit: usize) -> Option<Vec<String>> {
    // One entry per open container: the key or index of the value being read.
    let mut stack: Vec<Option<String>> = Vec::new();
    let mut in_object: Vec<bool> = Vec::new();
    let mut index = 0;
    while index < json.len() {
        match json[index] {
            b'"' => {
                let start = index;
                index += 1;
                while index < json.len() && json[index] != b'"' {
                    index += if json[index] == b'\\' { 2 } else { 1 };
                }
                let end = index.min(json.len());
                // A string right after `{` or `,` in an object is a key.
                let is_key = in_object.last().copied().unwrap_or(false)
                    && stack.last().is_some_and(Option::is_none);
                if is_key {
                    let raw = &json[start..=end.min(json.len() - 1)];
                    let key = serde_json::from_slice::<String>(raw).unwrap_or_else(|_| {
                        String::from_utf8_lossy(&json[start + 1..end]).into_owned()
                    });
                    if let Some(top) = stack.last_mut() {
                        *top = Some(key);
                    }
                }
            }
            open @ (b'{' | b'[') => {
                if stack.len() >= limit {
                    return Some(stack.into_iter().map(Option::unwrap_or_default).collect());
                }
                in_object.push(open == b'{');
                stack.push(if open == b'[' {
                    Some("[0]".to_owned())
                } else {
                    None
                });
            }
            b'}' | b']' => {
                stack.pop();
                in_object.pop();
            }
            b',' => {
                if let (Some(top), Some(object)) = (stack.last_mut(), in_object.last()) {
                    *top = if *object {
                        None
                    } else {
                        let next = top
                            .as_deref()
                            .and_then(|t| t.trim_matches(['[', ']']).parse::<usize>().ok())
                            .map_or(0, |i| i + 1);
                        Some(format!("[{next}]"))
                    };
                }
            }
            _ => {}
        }
        index += 1;
    }
    None
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_files() {
        for blank in [
            "",
            "  \n",
            "# only a comment\n",
            "/* a */ # b\n/* c\n d */\n",
        ] {
            assert!(is_blank_nix(blank), "{blank:?}");
        }
        for code in ["{ }", "# x\n{ }", "/* unclosed", "x # y"] {
            assert!(!is_blank_nix(code), "{code:?}");
        }
    }

    #[test]
    fn deep_json_is_found_with_its_path() {
        let deep = format!(
            "{{\"layout\":{{\"a\":[1,\"x]\",{}{}]}}}}",
            "{\"k\\\"\":".repeat(200),
            "}".repeat(200)
        );
        let path = too_deep(deep.as_bytes(), MAX_DEPTH).unwrap();
        assert_eq!(path.len(), MAX_DEPTH);
        assert_eq!(&path[..4], ["layout", "a", "[2]", "k\""]);
        assert_eq!(evaluated_path(&path[..3]).to_string(), "a[2]");
        assert!(too_deep(br#"{"layout":{"a":[[["x"]]]}}"#, MAX_DEPTH).is_none());
        assert!(too_deep(b"[[[[", 3).is_some());
    }

    #[test]
    fn bytes_that_are_not_utf8_are_findings_at_their_path() {
        let stdout = b"{\"layout\":{\"disk\":{\"main\":{\"device\":\"/dev/sd\xff\",\"ok\":\"x\"},\"k\xc3\":1}},\"positions\":[]}";
        let findings = read_evaluation(stdout).unwrap().unwrap_err();
        let found = codes_and_paths(&findings);
        assert_eq!(
            found,
            vec![
                ("MODEL005", "disk.\"k\u{fffd}\"".to_owned()),
                ("MODEL005", "disk.main.device".to_owned())
            ]
        );
        assert!(findings[1].message.contains("/dev/sd\u{fffd}"));
    }

    #[test]
    fn marked_values_are_type_findings() {
        let stdout = br#"{"layout":{"d":{"device":{"__xtaskInvalid":"the path literal /dev/sda"}}},"persistence":{"/p":{"files":[{"__xtaskInvalid":"the float inf"}]}},"positions":[]}"#;
        let findings = read_evaluation(stdout).unwrap().unwrap_err();
        let found = codes_and_paths(&findings);
        assert_eq!(
            found,
            vec![
                ("MODEL001", "d.device".to_owned()),
                (
                    "MODEL001",
                    "environment.persistence.\"/p\".files[0]".to_owned()
                )
            ]
        );
        assert!(read_evaluation(br#"{"layout":{"a":"b"}}"#).unwrap().is_ok());
        assert!(read_evaluation(b"{\"layout\":inf}").is_err());
    }

    fn codes_and_paths(findings: &[Finding]) -> Vec<(&'static str, String)> {
        findings
            .iter()
            .map(|f| (f.code, f.path.to_string()))
            .collect()
    }
}
