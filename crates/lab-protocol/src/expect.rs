//! What a command must show: [`Expect`], checked against its exit status and
//! stdout, and the line patterns it uses ([`matches`], [`pattern_regex`]).

use serde::{Deserialize, Serialize};

/// A machine-checkable expectation on a command's exit status and stdout.
///
/// Patterns match a whole line (trimmed): `<n>` is one or more digits,
/// `<old-root>` an old root's name (`20260101T120000Z`, maybe `-NN`), `<*>`
/// any text, a run of spaces one or more blanks; everything else is literal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Expect {
    Exit {
        status: i32,
    },
    /// Stdout is empty (blank lines aside).
    Empty,
    /// Some line matches the pattern.
    Line {
        pattern: String,
    },
    /// No line matches the pattern.
    NoLine {
        pattern: String,
    },
    /// A line whose first field is `first` has every one of `include` among
    /// its fields (split at blanks and commas): mount options, in any order.
    Fields {
        first: String,
        include: Vec<String>,
    },
    /// The line matching `pattern` has a number at most `max` in field
    /// `field` (1-based, split at blanks; `37%` reads as 37).
    AtMost {
        pattern: String,
        field: usize,
        max: f64,
    },
}

impl Expect {
    /// `Ok` when the expectation holds for a command that exited with
    /// `status` and printed `stdout`; `Err` says what differed.
    pub fn check(&self, status: i32, stdout: &str) -> Result<(), String> {
        let lines = || stdout.lines().map(str::trim).filter(|l| !l.is_empty());
        match self {
            Expect::Exit { status: wanted } => (status == *wanted)
                .then_some(())
                .ok_or_else(|| format!("exit status {status}, expected {wanted}")),
            Expect::Empty => match lines().next() {
                None => Ok(()),
                Some(line) => Err(format!("expected no output, got {line:?}")),
            },
            Expect::Line { pattern } => lines()
                .any(|l| matches(pattern, l))
                .then_some(())
                .ok_or_else(|| format!("no line matches {pattern:?}")),
            Expect::NoLine { pattern } => match lines().find(|l| matches(pattern, l)) {
                None => Ok(()),
                Some(line) => Err(format!("{line:?} matches {pattern:?}")),
            },
            Expect::Fields { first, include } => {
                let fields = |l: &str| -> Vec<String> {
                    l.split(|c: char| c.is_whitespace() || c == ',')
                        .filter(|f| !f.is_empty())
                        .map(str::to_owned)
                        .collect()
                };
                let Some(line) = lines().find(|l| fields(l).first() == Some(first)) else {
                    return Err(format!("no line starts with {first:?}"));
                };
                let have = fields(line);
                let missing: Vec<&str> = include
                    .iter()
                    .filter(|i| !have.contains(i))
                    .map(String::as_str)
                    .collect();
                if missing.is_empty() {
                    Ok(())
                } else {
                    Err(format!("{first}: missing {}", missing.join(",")))
                }
            }
            Expect::AtMost {
                pattern,
                field,
                max,
            } => {
                let Some(line) = lines().find(|l| matches(pattern, l)) else {
                    return Err(format!("no line matches {pattern:?}"));
                };
                let value = line
                    .split_whitespace()
                    .nth(field.saturating_sub(1))
                    .map(|f| f.trim_end_matches('%'))
                    .and_then(|f| f.parse::<f64>().ok())
                    .ok_or_else(|| format!("field {field} of {line:?} is not a number"))?;
                (value <= *max)
                    .then_some(())
                    .ok_or_else(|| format!("{value} in {line:?} is above {max}"))
            }
        }
    }
}

/// Whether `line` (trimmed) matches `pattern` (see [`Expect`]).
pub fn matches(pattern: &str, line: &str) -> bool {
    #[derive(Debug)]
    enum Token<'a> {
        Literal(&'a str),
        Number,
        OldRoot,
        Any,
        Blank,
    }
    let mut tokens = Vec::new();
    let mut rest = pattern.trim();
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("<n>") {
            tokens.push(Token::Number);
            rest = after;
        } else if let Some(after) = rest.strip_prefix("<old-root>") {
            tokens.push(Token::OldRoot);
            rest = after;
        } else if let Some(after) = rest.strip_prefix("<*>") {
            tokens.push(Token::Any);
            rest = after;
        } else if rest.starts_with(' ') {
            tokens.push(Token::Blank);
            rest = rest.trim_start_matches(' ');
        } else {
            let end = rest
                .char_indices()
                .skip(1)
                .find(|(i, c)| *c == ' ' || rest[*i..].starts_with('<'))
                .map_or(rest.len(), |(i, _)| i);
            tokens.push(Token::Literal(&rest[..end]));
            rest = &rest[end..];
        }
    }
    fn old_root_len(s: &str) -> Option<usize> {
        let b = s.as_bytes();
        let stamp = b.len() >= 16
            && b[..8].iter().all(u8::is_ascii_digit)
            && b[8] == b'T'
            && b[9..15].iter().all(u8::is_ascii_digit)
            && b[15] == b'Z';
        if !stamp {
            return None;
        }
        let suffix = b.len() >= 19 && b[16] == b'-' && b[17..19].iter().all(u8::is_ascii_digit);
        Some(if suffix { 19 } else { 16 })
    }
    fn go(tokens: &[Token<'_>], s: &str) -> bool {
        let Some((token, more)) = tokens.split_first() else {
            return s.is_empty();
        };
        match token {
            Token::Literal(text) => s.strip_prefix(text).is_some_and(|r| go(more, r)),
            Token::Number => {
                let digits = s.bytes().take_while(u8::is_ascii_digit).count();
                (1..=digits).rev().any(|n| go(more, &s[n..]))
            }
            Token::OldRoot => {
                let Some(len) = old_root_len(s) else {
                    return false;
                };
                // Without the suffix too: `<old-root>-x` stays possible.
                go(more, &s[len..]) || (len == 19 && go(more, &s[16..]))
            }
            Token::Any => s
                .char_indices()
                .map(|(i, _)| i)
                .chain([s.len()])
                .any(|i| go(more, &s[i..])),
            Token::Blank => {
                let blanks = s.len() - s.trim_start().len();
                blanks > 0 && go(more, &s[blanks..])
            }
        }
    }
    go(&tokens, line.trim())
}

/// `pattern` (see [`Expect`]) as a regular expression that matches a whole
/// trimmed line the way [`matches`] does, in the syntax Python's `re` and
/// Rust's `regex` share (for runners in other languages, e.g. the NixOS VM
/// test's Python, which uses `re.fullmatch`).
pub fn pattern_regex(pattern: &str) -> String {
    let mut regex = String::new();
    let mut rest = pattern.trim();
    while let Some(c) = rest.chars().next() {
        if let Some(after) = rest.strip_prefix("<n>") {
            regex.push_str("[0-9]+");
            rest = after;
        } else if let Some(after) = rest.strip_prefix("<old-root>") {
            regex.push_str("[0-9]{8}T[0-9]{6}Z(?:-[0-9]{2})?");
            rest = after;
        } else if let Some(after) = rest.strip_prefix("<*>") {
            regex.push_str(".*");
            rest = after;
        } else if c == ' ' {
            regex.push_str("\\s+");
            rest = rest.trim_start_matches(' ');
        } else {
            if "\\.^$*+?{}[]|()-&~#".contains(c) {
                regex.push('\\');
            }
            regex.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    regex
}
