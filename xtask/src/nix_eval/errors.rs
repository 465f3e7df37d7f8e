//! Nix's error messages, read: the message and the first position it names.

use camino::{Utf8Path, Utf8PathBuf};

use layout::findings::Location;

/// Nix's own message and the first position it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NixError {
    pub message: String,
    pub location: Option<Location>,
}

impl NixError {
    /// Reads an error as Nix 2.8 and later print it:
    /// `error: <message>` … `at /path/file.nix:LINE:COL:`.
    pub fn parse(stderr: &str) -> NixError {
        NixError::parse_skipping(stderr, |_| false)
    }

    /// Like `parse`, but ignores positions in files `skip` names; without a
    /// position, the file of `… while evaluating the file '<file>'` (from
    /// `--show-trace`), with line 0.
    pub fn parse_skipping(stderr: &str, skip: impl Fn(&Utf8Path) -> bool) -> NixError {
        let lines: Vec<&str> = stderr.lines().map(str::trim).collect();
        // Newer Nix prints a trace first and the cause as the last `error:`.
        let cause = lines.iter().enumerate().rev().find_map(|(index, line)| {
            let message = line.strip_prefix("error:")?.trim();
            (!message.is_empty()).then_some((index, message))
        });
        let (after, message) = match cause {
            Some((index, message)) => (index, message.to_owned()),
            None => (
                0,
                lines
                    .iter()
                    .find(|l| !l.is_empty() && **l != "error:")
                    .copied()
                    .unwrap_or("(no message)")
                    .to_owned(),
            ),
        };
        let ordered = || lines[after..].iter().chain(lines[..after].iter());
        let location = ordered()
            .filter_map(|line| parse_position(line))
            .find(|location| !skip(&location.file))
            .or_else(|| {
                ordered()
                    .filter_map(|line| evaluated_file(line))
                    .find(|location| !skip(&location.file))
            });
        NixError { message, location }
    }
}

/// `at /path/file.nix:LINE:COL:` → a location; other positions (`«string»`) are skipped.
fn parse_position(line: &str) -> Option<Location> {
    let rest = line.strip_prefix("at ")?;
    let rest = rest.strip_suffix(':').unwrap_or(rest);
    let mut parts = rest.rsplitn(3, ':');
    let column = parts.next()?.parse().ok()?;
    let line = parts.next()?.parse().ok()?;
    let file = parts.next()?;
    file.starts_with('/').then(|| Location {
        file: Utf8PathBuf::from(file),
        line,
        column,
    })
}

/// `… while evaluating the file '/path/file.nix':` → that file, line 0.
fn evaluated_file(line: &str) -> Option<Location> {
    let rest = line
        .trim_start_matches(['…', '.', ' '])
        .strip_prefix("while evaluating the file '")?;
    let file = rest
        .strip_suffix("':")
        .or_else(|| rest.strip_suffix('\''))?;
    file.starts_with('/').then(|| Location {
        file: Utf8PathBuf::from(file),
        line: 0,
        column: 0,
    })
}

/// The last `error:` of `stderr` with the lines that continue it (NixOS
/// lists failed assertions one per line below `error:`).
pub(super) fn whole_message(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.lines().map(str::trim).collect();
    let Some(start) = lines.iter().rposition(|l| l.starts_with("error:")) else {
        return NixError::parse(stderr).message;
    };
    let first = lines[start].trim_start_matches("error:").trim();
    let mut message: Vec<&str> = Vec::new();
    if !first.is_empty() {
        message.push(first);
    }
    for line in &lines[start + 1..] {
        if line.is_empty() {
            if message.is_empty() {
                continue;
            }
            break;
        }
        message.push(line);
    }
    let mut text = message.join("\n");
    if text.len() > 4000 {
        let cut = (0..=4000)
            .rev()
            .find(|i| text.is_char_boundary(*i))
            .unwrap_or(0);
        text.truncate(cut);
        text.push_str(" …");
    }
    if text.is_empty() {
        NixError::parse(stderr).message
    } else {
        text
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_every_failed_assertion() {
        let stderr = "warning: x\nerror:\n       … while evaluating\n\n       error:\n       Failed assertions:\n       - a\n       - b\n";
        assert_eq!(whole_message(stderr), "Failed assertions:\n- a\n- b");
        assert_eq!(
            whole_message("error: Failed assertions:\n       - hbohlen has no SSH key\n"),
            "Failed assertions:\n- hbohlen has no SSH key"
        );
    }

    #[test]
    fn reads_nix_2_8_errors() {
        let stderr = "error: undefined variable 'y'\n\n       at /tmp/u.nix:1:7:\n\n            1| { x = y; }\n             |       ^\n";
        let error = NixError::parse(stderr);
        assert_eq!(error.message, "undefined variable 'y'");
        let location = error.location.unwrap();
        assert_eq!(location.file, "/tmp/u.nix");
        assert_eq!((location.line, location.column), (1, 7));
    }

    #[test]
    fn reads_errors_without_a_position() {
        let error =
            NixError::parse("error: getting status of '/nope.nix': No such file or directory\n");
        assert_eq!(
            error.message,
            "getting status of '/nope.nix': No such file or directory"
        );
        assert!(error.location.is_none());
        let error = NixError::parse("something odd\n");
        assert_eq!(error.message, "something odd");
    }

    #[test]
    fn positions_in_skipped_files_give_way_to_the_evaluated_file() {
        let stderr = "error: nope\n\n       … while evaluating the file '/x/throw.nix':\n\n       … while evaluating 'load'\n\n       at /repo/nix/lib/eval-host.nix:14:5:\n";
        let error = NixError::parse_skipping(stderr, |f| f.starts_with("/repo/nix/lib"));
        assert_eq!(error.message, "nope");
        let location = error.location.unwrap();
        assert_eq!((location.file.as_str(), location.line), ("/x/throw.nix", 0));
        // Without skipping, the first position wins as before.
        assert_eq!(NixError::parse(stderr).location.unwrap().line, 14);
    }

    #[test]
    fn reads_newer_multi_line_errors() {
        let stderr = "error:\n       … while calling the 'import' builtin\n         at «string»:1:1:\n\n       error: value is a string while a set was expected\n       at /x/disko.nix:3:5:\n";
        let error = NixError::parse(stderr);
        assert_eq!(error.message, "value is a string while a set was expected");
        assert_eq!(error.location.unwrap().line, 3);
    }
}
