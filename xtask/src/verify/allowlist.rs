//! The only commands `verify` may send to a server: read-only ones.
//!
//! A line is allowed when it is a pipeline (`a | b`) of simple commands,
//! each optionally after `sudo`, without redirections, `;`, `&&`, `||`,
//! backgrounding or command substitution, whose program is in
//! [`READ_ONLY`] and whose arguments stay within what that entry allows
//! (`swapon --show`, not `swapon /dev/x`; `btrfs subvolume list`, not
//! `btrfs subvolume delete`). Everything else is refused: `fstrim` (it
//! discards), `touch`, `rm`, `mount`, `systemctl reboot`, ….
//!
//! `verify` holds every line against this list twice: when it plans the
//! checks (a line that fails is not planned) and again right before it
//! hands the line to `ssh` ([`super::ssh::Session::run`]).

/// A program verify may run, and what its arguments must be.
struct Allowed {
    program: &'static str,
    rule: Rule,
}

enum Rule {
    /// Reads only, whatever its arguments (no option of it writes).
    Any,
    /// The first non-option argument (the subcommand) is one of these.
    Subcommand(&'static [&'static str]),
    /// `btrfs GROUP COMMAND`: the pair is one of these.
    Pair(&'static [(&'static str, &'static str)]),
    /// One of these options must be present, and no plain argument may
    /// name anything to act on except what the options read.
    Option(&'static [&'static str]),
}

/// Read-only programs, each with what keeps it read-only.
const READ_ONLY: &[Allowed] = &[
    Allowed {
        program: "true",
        rule: Rule::Any,
    },
    Allowed {
        program: "id",
        rule: Rule::Any,
    },
    Allowed {
        program: "cat",
        rule: Rule::Any,
    },
    Allowed {
        program: "ls",
        rule: Rule::Any,
    },
    Allowed {
        program: "test",
        rule: Rule::Any,
    },
    Allowed {
        program: "grep",
        rule: Rule::Any,
    },
    Allowed {
        program: "head",
        rule: Rule::Any,
    },
    Allowed {
        program: "tail",
        rule: Rule::Any,
    },
    Allowed {
        program: "stat",
        rule: Rule::Any,
    },
    Allowed {
        program: "findmnt",
        rule: Rule::Any,
    },
    Allowed {
        program: "lsblk",
        rule: Rule::Any,
    },
    Allowed {
        program: "lsattr",
        rule: Rule::Any,
    },
    Allowed {
        program: "compsize",
        rule: Rule::Any,
    },
    Allowed {
        program: "journalctl",
        rule: Rule::Option(&["-b", "--boot"]),
    },
    Allowed {
        program: "swapon",
        rule: Rule::Option(&["--show", "-s", "--summary"]),
    },
    Allowed {
        program: "sfdisk",
        rule: Rule::Option(&["--dump", "-d", "--json", "-J", "--list", "-l"]),
    },
    Allowed {
        program: "cryptsetup",
        rule: Rule::Subcommand(&["status"]),
    },
    Allowed {
        program: "systemctl",
        rule: Rule::Subcommand(&["is-active", "is-failed", "status", "show", "list-units"]),
    },
    Allowed {
        program: "btrfs",
        rule: Rule::Pair(&[
            ("subvolume", "list"),
            ("subvolume", "show"),
            ("filesystem", "usage"),
            ("filesystem", "show"),
            ("filesystem", "df"),
        ]),
    },
];

/// Options of `systemctl` that list failed units (read-only) and need no subcommand.
const SYSTEMCTL_LISTING: &[&str] = &["--failed", "--state=failed"];
/// journalctl options that write (rotate, vacuum, flush, …): never allowed.
const JOURNALCTL_WRITES: &[&str] = &[
    "--rotate",
    "--flush",
    "--sync",
    "--relinquish-var",
    "--smart-relinquish-var",
    "--setup-keys",
    "--update-catalog",
];

/// `Ok` when `line` is read-only by the rules above; else what refused it.
pub fn check(line: &str) -> Result<(), String> {
    for token in ["`", "$(", ";", "&&", "||", ">", "<", "&", "\n"] {
        if line.contains(token) {
            return Err(format!(
                "{token:?} is not allowed (only plain read-only pipelines)"
            ));
        }
    }
    for segment in line.split('|') {
        let words = words(segment)?;
        let words: &[String] = match words.split_first() {
            // `sudo -n`: never ask for a password (an option that changes nothing else).
            Some((sudo, rest)) if sudo == "sudo" => match rest.split_first() {
                Some((option, more)) if option == "-n" => more,
                _ => rest,
            },
            _ => &words,
        };
        let Some((program, args)) = words.split_first() else {
            return Err("an empty command".to_owned());
        };
        if program.starts_with('-') || program.contains('=') {
            return Err(format!(
                "{program:?}: options or variables before the program"
            ));
        }
        let Some(allowed) = READ_ONLY.iter().find(|a| a.program == program) else {
            return Err(format!("{program} is not on the read-only list"));
        };
        let plain: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
        match allowed.rule {
            Rule::Any => {}
            Rule::Subcommand(subcommands) => {
                let listing = program == "systemctl"
                    && plain.is_empty()
                    && args.iter().any(|a| SYSTEMCTL_LISTING.contains(&a.as_str()));
                let first = plain.first().map(|s| s.as_str());
                if !listing && !first.is_some_and(|f| subcommands.contains(&f)) {
                    return Err(format!(
                        "{program} {}: only {} may be sent",
                        first.unwrap_or("(no subcommand)"),
                        subcommands.join(", ")
                    ));
                }
            }
            Rule::Pair(pairs) => {
                let pair = (
                    plain.first().map(|s| s.as_str()).unwrap_or(""),
                    plain.get(1).map(|s| s.as_str()).unwrap_or(""),
                );
                if !pairs.contains(&pair) {
                    return Err(format!(
                        "{program} {} {}: not a read-only command",
                        pair.0, pair.1
                    ));
                }
            }
            Rule::Option(options) => {
                let named = |a: &String| a.split('=').next().unwrap_or_default().to_owned();
                if !args.iter().any(|a| options.contains(&named(a).as_str())) {
                    return Err(format!("{program} without one of {}", options.join(", ")));
                }
                if program == "journalctl" {
                    if let Some(bad) = args.iter().find(|a| {
                        JOURNALCTL_WRITES
                            .iter()
                            .any(|w| a.as_str() == *w || a.starts_with("--vacuum"))
                    }) {
                        return Err(format!("journalctl {bad} writes"));
                    }
                }
                // `swapon --show` with a device would still only show, but
                // `swapon -s` takes none; a device argument is what enables
                // swap, so refuse any plain argument.
                if program == "swapon" && !plain.is_empty() {
                    return Err("swapon with a device enables swap".to_owned());
                }
            }
        }
    }
    Ok(())
}

/// Splits a simple command into words, removing quotes as sh would
/// (single quotes literal; double quotes without `$`, which the caller
/// already refused with `$(`, and without backslashes).
fn words(segment: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = segment.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some(q) if q == c => break,
                        Some('\\') if c == '"' => {
                            return Err("a backslash in double quotes".to_owned())
                        }
                        Some(q) => word.push(q),
                        None => return Err(format!("an unclosed {c}")),
                    }
                }
            }
            '\\' => return Err("a backslash outside quotes".to_owned()),
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// The absolute paths a line names (quotes removed): what a write of a
/// procedure may have made, so that verify skips the checks that read it.
pub fn paths(line: &str) -> Vec<String> {
    line.split(|c: char| c.is_whitespace() || c == '\'' || c == '"' || c == '>' || c == ';')
        .filter(|w| w.starts_with('/'))
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_only_lines_pass() {
        for line in [
            "sudo findmnt -t btrfs -l -n -o TARGET,SOURCE,OPTIONS",
            "sudo systemctl --failed --no-legend --plain",
            "sudo systemctl is-active btrfs-rollback-status.service",
            "sudo swapon --show=NAME,TYPE,SIZE --bytes --noheadings",
            "sudo cryptsetup status dev-disk-byx2dpartlabel-disk-main-swap",
            "sudo btrfs subvolume list /btrfs_tmp",
            "sudo btrfs filesystem usage -b /btrfs_tmp",
            "sudo compsize -x /nix",
            "sudo journalctl -b -o cat | grep '^btrfs-rollback: '",
            "sudo sfdisk --dump /dev/sda",
            "sudo test ! -e /run/btrfs-rollback/failed",
            "sudo -n true",
        ] {
            assert_eq!(check(line), Ok(()), "{line}");
        }
    }

    #[test]
    fn anything_that_writes_or_escapes_is_refused() {
        for line in [
            "sudo fstrim -v /btrfs_tmp",
            "sudo touch /root/wiped-at-boot",
            "sudo rm /persist/x",
            "sudo systemctl reboot",
            "sudo systemctl start foo.service",
            "sudo systemctl",
            "sudo swapon /dev/sda3",
            "sudo swapoff -a",
            "sudo cryptsetup close swap",
            "sudo btrfs subvolume delete /btrfs_tmp/@persist",
            "sudo btrfs subvolume snapshot /a /b",
            "sudo sfdisk /dev/sda",
            "sudo journalctl -b --vacuum-size=1",
            "sudo journalctl -b --rotate",
            "sudo mount -o remount,compress=no /",
            "cat /etc/passwd > /tmp/x",
            "ls; rm -rf /",
            "ls && reboot",
            "ls \"$(reboot)\"",
            "ls `reboot`",
            "sudo sh -c 'sha256sum /etc/machine-id > /persist/identity.sha256'",
            "sudo env rm /x",
            "FOO=1 ls",
            "sudo lsblk | sudo tee /x",
            "sudo dd if=/dev/zero of=/dev/sda",
            "ls & rm /x",
        ] {
            assert!(check(line).is_err(), "{line} must be refused");
        }
    }

    #[test]
    fn paths_are_read_from_quoted_and_redirected_words() {
        assert_eq!(
            paths("sudo sh -c 'sha256sum /etc/machine-id > /persist/identity.sha256'"),
            vec!["/etc/machine-id", "/persist/identity.sha256"]
        );
        assert_eq!(
            paths("sudo touch /root/a /persist/b"),
            vec!["/root/a", "/persist/b"]
        );
    }
}
