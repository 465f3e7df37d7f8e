//! Strings disko pastes into the bash script that partitions, formats and
//! mounts the disk during the install (`set -efux`, as root). Which string
//! lands where follows each type's `_create` and `_mount` in disko's
//! lib/types/*.nix (checked at disko 878ec37): some are pasted bare, some
//! inside double quotes, and `name`, `device`, `format` and `mountpoint`
//! also into the comment line `( # <type> <name> <device> <format>
//! <mountpoint> #` that opens each block. `extraArgs` and `mountOptions` of
//! a `filesystem` go through `lib.escapeShellArgs` and are safe.

use std::borrow::Cow;

use super::{Issue, Model};
use layout::findings::AttrPath;
use layout::{Btrfs, Content, Disk, DiskContent, Filesystem, Subvolume, Swap};

/// How a string is pasted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quoting {
    /// As a bare word: `mkfs.${format}`.
    Bare,
    /// Inside double quotes: `"${device}"`.
    DoubleQuoted,
    /// Into the comment line that opens a block.
    Comment,
}

/// What a character does there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Effect {
    /// Splits or changes the arguments of the command.
    ChangesArguments,
    /// Runs commands, or reads and writes files, of the author's choosing.
    RunsCommands,
}

/// The most dangerous character of `value` in `quoting`, and what it does.
fn hazard(value: &str, quoting: Quoting) -> Option<(char, Effect)> {
    let mut worst: Option<(char, Effect)> = None;
    let mut note = |c: char, effect: Effect| {
        if worst.is_none_or(|(_, e)| effect > e) {
            worst = Some((c, effect));
        }
    };
    let chars: Vec<char> = value.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        let next = chars.get(i + 1).copied();
        let word_start = i == 0 || chars[i - 1].is_whitespace();
        match quoting {
            Quoting::Comment if c == '\n' => note(c, Effect::RunsCommands),
            Quoting::Comment => {}
            Quoting::DoubleQuoted => match c {
                // `$(...)`, `${...}`, `$name`: expansion; `$(` runs commands.
                '$' if next.is_some_and(|n| n == '(' || n == '{') => note(c, Effect::RunsCommands),
                '$' if next
                    .is_some_and(|n| n.is_ascii_alphanumeric() || "_@*#?$!-".contains(n)) =>
                {
                    note(c, Effect::ChangesArguments)
                }
                '`' | '"' => note(c, Effect::RunsCommands),
                '\\' if next.is_some_and(|n| "$`\"\\\n".contains(n)) => {
                    note(c, Effect::ChangesArguments)
                }
                _ => {}
            },
            Quoting::Bare => match c {
                ';' | '&' | '|' | '(' | ')' | '<' | '>' | '$' | '`' | '\n' => {
                    note(c, Effect::RunsCommands)
                }
                ' ' | '\t' | '\'' | '"' | '\\' | '{' | '}' => note(c, Effect::ChangesArguments),
                '#' | '~' if word_start => note(c, Effect::ChangesArguments),
                _ => {}
            },
        }
    }
    worst
}

/// One string disko pastes, with where and how.
struct Pasted<'a> {
    /// The attribute it is written at: `base.field[index]`, joined only
    /// when reported (layouts may have 100 000 subvolumes).
    base: &'a AttrPath,
    field: &'static str,
    index: Option<usize>,
    value: &'a str,
    quoting: &'static [Quoting],
    /// The command it lands in, with the value shown as `…`.
    command: Cow<'static, str>,
}

fn pasted<'a>(model: &Model<'a>) -> Vec<Pasted<'a>> {
    let mut list = Vec::new();
    for disk in &model.layout.disks {
        disk_pasted(disk, &mut list);
    }
    for (_, _, content) in model.layout.contents() {
        match content {
            Content::Filesystem(fs) => filesystem_pasted(fs, &mut list),
            Content::Btrfs(btrfs) => btrfs_pasted(btrfs, &mut list),
            Content::Swap(swap) => swap_pasted(swap, &mut list),
        }
    }
    list
}

/// A disk's name and device, and its GPT partitions' fields.
fn disk_pasted<'a>(disk: &'a Disk, list: &mut Vec<Pasted<'a>>) {
    use Quoting::{Bare, Comment, DoubleQuoted};
    list.push(Pasted {
        base: &disk.path,
        field: "name",
        index: None,
        value: &disk.name,
        quoting: &[Comment],
        command: Cow::Borrowed("( # disk <name> <device> #"),
    });
    list.push(Pasted {
        base: &disk.path,
        field: "device",
        index: None,
        value: &disk.device,
        quoting: &[Comment, DoubleQuoted],
        command: Cow::Borrowed("sgdisk --clear \"<device>\""),
    });
    let Some(DiskContent::Gpt(gpt)) = &disk.content else {
        return;
    };
    for partition in &gpt.partitions {
        let number = partition.number;
        list.push(Pasted {
            base: &partition.path,
            field: "start",
            index: None,
            value: &partition.start,
            quoting: &[Bare],
            command: Cow::Owned(format!("sgdisk --new={number}:<start>:<end>")),
        });
        list.push(Pasted {
            base: &partition.path,
            field: "end",
            index: None,
            value: &partition.end,
            quoting: &[Bare],
            command: Cow::Owned(format!("sgdisk --new={number}:<start>:<end>")),
        });
        list.push(Pasted {
            base: &partition.path,
            field: "label",
            index: None,
            value: &partition.label,
            quoting: &[DoubleQuoted],
            command: Cow::Owned(format!("sgdisk --change-name=\"{number}:<label>\"")),
        });
        if let Some(code) = partition
            .hybrid
            .as_ref()
            .and_then(|h| h.mbr_partition_type.as_ref())
        {
            list.push(Pasted {
                base: &partition.path,
                field: "hybrid.mbrPartitionType",
                index: None,
                value: code,
                quoting: &[Bare],
                command: Cow::Owned(format!(
                    "sfdisk --label-nested dos --part-type <disk> {number} <type>"
                )),
            });
        }
    }
}

/// A filesystem's device, format and mountpoint.
fn filesystem_pasted<'a>(fs: &'a Filesystem, list: &mut Vec<Pasted<'a>>) {
    use Quoting::{Bare, Comment, DoubleQuoted};
    list.push(Pasted {
        base: &fs.path,
        field: "device",
        index: None,
        value: &fs.device,
        quoting: &[Comment, DoubleQuoted],
        command: Cow::Borrowed("mkfs.<format> … \"<device>\""),
    });
    list.push(Pasted {
        base: &fs.path,
        field: "format",
        index: None,
        value: &fs.format,
        quoting: &[Comment, Bare],
        command: Cow::Borrowed("mkfs.<format> … \"<device>\""),
    });
    if let Some(mountpoint) = &fs.mountpoint {
        list.push(Pasted {
            base: &fs.path,
            field: "mountpoint",
            index: None,
            value: mountpoint,
            quoting: &[Comment, DoubleQuoted],
            command: Cow::Borrowed("mount \"<device>\" \"/mnt<mountpoint>\""),
        });
    }
}

/// A Btrfs filesystem's fields, its swap files and its subvolumes'.
fn btrfs_pasted<'a>(btrfs: &'a Btrfs, list: &mut Vec<Pasted<'a>>) {
    use Quoting::{Bare, Comment, DoubleQuoted};
    let has_swap = !btrfs.swapfiles.is_empty();
    list.push(Pasted {
        base: &btrfs.path,
        field: "device",
        index: None,
        value: &btrfs.device,
        quoting: if has_swap {
            &[Comment, DoubleQuoted, Bare]
        } else {
            &[Comment, DoubleQuoted]
        },
        command: if has_swap {
            Cow::Borrowed("mount <device> \"$MNTPOINT\" -o subvol=/")
        } else {
            Cow::Borrowed("mkfs.btrfs \"<device>\" <extraArgs>")
        },
    });
    for (index, arg) in btrfs.extra_args.iter().enumerate() {
        list.push(Pasted {
            base: &btrfs.path,
            field: "extraArgs",
            index: Some(index),
            value: arg,
            quoting: &[Bare],
            command: Cow::Borrowed("mkfs.btrfs \"<device>\" <extraArgs>"),
        });
    }
    if let Some(mountpoint) = &btrfs.mountpoint {
        list.push(Pasted {
            base: &btrfs.path,
            field: "mountpoint",
            index: None,
            value: mountpoint,
            quoting: &[Comment, DoubleQuoted],
            command: Cow::Borrowed("mount \"<device>\" \"/mnt<mountpoint>\""),
        });
        for (index, option) in btrfs.mount_options.iter().enumerate() {
            list.push(Pasted {
                base: &btrfs.path,
                field: "mountOptions",
                index: Some(index),
                value: option,
                quoting: &[Bare],
                command: Cow::Borrowed("mount … -o <option>"),
            });
        }
    }
    for file in &btrfs.swapfiles {
        list.push(Pasted {
            base: &file.path,
            field: "path",
            index: None,
            value: &file.file,
            quoting: &[DoubleQuoted],
            command: Cow::Borrowed("btrfs filesystem mkswapfile … \"$MNTPOINT/<path>\""),
        });
    }
    for subvolume in &btrfs.subvolumes {
        subvolume_pasted(subvolume, list);
    }
}

/// A subvolume's name, arguments, mount and swap files.
fn subvolume_pasted<'a>(subvolume: &'a Subvolume, list: &mut Vec<Pasted<'a>>) {
    use Quoting::{Bare, DoubleQuoted};
    list.push(Pasted {
        base: &subvolume.path,
        field: "name",
        index: None,
        value: &subvolume.name,
        quoting: if subvolume.mountpoint.is_some() {
            &[DoubleQuoted, Bare]
        } else {
            &[DoubleQuoted]
        },
        command: if subvolume.mountpoint.is_some() {
            Cow::Borrowed("mount … -o subvol=<name>")
        } else {
            Cow::Borrowed("SUBVOL_ABS_PATH=\"$MNTPOINT/<name>\"")
        },
    });
    for (index, arg) in subvolume.extra_args.iter().enumerate() {
        list.push(Pasted {
            base: &subvolume.path,
            field: "extraArgs",
            index: Some(index),
            value: arg,
            quoting: &[Bare],
            command: Cow::Borrowed("btrfs subvolume create \"$SUBVOL_ABS_PATH\" <extraArgs>"),
        });
    }
    if let Some(mountpoint) = &subvolume.mountpoint {
        list.push(Pasted {
            base: &subvolume.path,
            field: "mountpoint",
            index: None,
            value: mountpoint,
            quoting: &[DoubleQuoted],
            command: Cow::Borrowed("mount \"<device>\" \"/mnt<mountpoint>\""),
        });
        for (index, option) in subvolume.mount_options.iter().enumerate() {
            list.push(Pasted {
                base: &subvolume.path,
                field: "mountOptions",
                index: Some(index),
                value: option,
                quoting: &[Bare],
                command: Cow::Borrowed("mount … -o <option>"),
            });
        }
    }
    for file in &subvolume.swapfiles {
        list.push(Pasted {
            base: &file.path,
            field: "path",
            index: None,
            value: &file.file,
            quoting: &[DoubleQuoted],
            command: Cow::Borrowed("btrfs filesystem mkswapfile … \"$SUBVOL_ABS_PATH/<path>\""),
        });
    }
}

/// A swap partition's device, and its arguments unless randomly encrypted.
fn swap_pasted<'a>(swap: &'a Swap, list: &mut Vec<Pasted<'a>>) {
    use Quoting::{Bare, Comment, DoubleQuoted};
    list.push(Pasted {
        base: &swap.path,
        field: "device",
        index: None,
        value: &swap.device,
        quoting: &[Comment, DoubleQuoted],
        command: Cow::Borrowed("swapon … \"<device>\""),
    });
    // With randomEncryption disko neither formats nor enables it.
    if !swap.random_encryption {
        for (index, arg) in swap.extra_args.iter().enumerate() {
            list.push(Pasted {
                base: &swap.path,
                field: "extraArgs",
                index: Some(index),
                value: arg,
                quoting: &[Bare],
                command: Cow::Borrowed("mkswap <extraArgs> \"<device>\""),
            });
        }
        for (index, option) in swap.mount_options.iter().enumerate() {
            list.push(Pasted {
                base: &swap.path,
                field: "mountOptions",
                index: Some(index),
                value: option,
                quoting: &[Bare],
                command: Cow::Borrowed("swapon --options=<options> \"<device>\""),
            });
        }
    }
}

fn shown(c: char) -> String {
    match c {
        '\n' => "a newline".to_owned(),
        '\t' => "a tab".to_owned(),
        ' ' => "a space".to_owned(),
        '`' => "a backquote".to_owned(),
        other => format!("`{other}`"),
    }
}

pub fn metacharacters(model: &Model) -> Vec<Issue> {
    let mut issues = Vec::new();
    for item in pasted(model) {
        let found = item
            .quoting
            .iter()
            .filter_map(|q| hazard(item.value, *q).map(|(c, e)| (e, c, *q)))
            .max_by_key(|(effect, _, _)| *effect);
        let Some((effect, c, quoting)) = found else {
            continue;
        };
        let place = match quoting {
            Quoting::Bare => "bare (unquoted)",
            Quoting::DoubleQuoted => "inside double quotes",
            Quoting::Comment => "into a comment line",
        };
        let what = match effect {
            Effect::RunsCommands => format!(
                "{} there ends the word or the quoting, so the rest runs as shell code: it runs arbitrary commands during the install (as root, on the machine being installed)",
                shown(c)
            ),
            Effect::ChangesArguments => format!(
                "{} there splits or changes the words bash passes on, so the command runs with other arguments than written and fails or does something else",
                shown(c)
            ),
        };
        let mut path = item.base.clone();
        for segment in item.field.split('.') {
            path = path.join(segment);
        }
        if let Some(index) = item.index {
            path = path.join(format!("[{index}]"));
        }
        issues.push(Issue::new(
            path,
            format!(
                "{:?} is pasted {place} into disko's install script (`{}`): {what}",
                item.value, item.command
            ),
            "Use plain names and paths (letters, digits, `-`, `_`, `.`, `/`), one argument per list element, and nothing the shell reads as syntax.",
        ));
    }
    issues
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{hazard, Effect, Quoting};
    use crate::rules::testing::*;

    #[test]
    fn what_bash_does_with_each_character() {
        assert_eq!(hazard("vfat", Quoting::Bare), None);
        assert_eq!(hazard("-f", Quoting::Bare), None);
        assert_eq!(hazard("compress=zstd:1", Quoting::Bare), None);
        assert_eq!(
            hazard("a*b?[c]", Quoting::Bare),
            None,
            "set -f: no globbing"
        );
        assert_eq!(
            hazard("vfat;reboot", Quoting::Bare),
            Some((';', Effect::RunsCommands))
        );
        assert_eq!(
            hazard("$(reboot)", Quoting::Bare),
            Some(('$', Effect::RunsCommands))
        );
        assert_eq!(
            hazard("-L my label", Quoting::Bare),
            Some((' ', Effect::ChangesArguments))
        );
        assert_eq!(hazard("a#b", Quoting::Bare), None);
        assert_eq!(
            hazard("#b", Quoting::Bare),
            Some(('#', Effect::ChangesArguments))
        );
        assert_eq!(hazard("/srv/my data", Quoting::DoubleQuoted), None);
        assert_eq!(hazard("a;b", Quoting::DoubleQuoted), None);
        assert_eq!(hazard("a\\x20b", Quoting::DoubleQuoted), None);
        assert_eq!(
            hazard("a$(id)", Quoting::DoubleQuoted),
            Some(('$', Effect::RunsCommands))
        );
        assert_eq!(
            hazard("a`id`", Quoting::DoubleQuoted),
            Some(('`', Effect::RunsCommands))
        );
        assert_eq!(
            hazard("a\"b", Quoting::DoubleQuoted),
            Some(('"', Effect::RunsCommands))
        );
        assert_eq!(
            hazard("$HOME", Quoting::DoubleQuoted),
            Some(('$', Effect::ChangesArguments))
        );
        assert_eq!(hazard("a $ b", Quoting::DoubleQuoted), None);
        assert_eq!(
            hazard("a\nreboot", Quoting::Comment),
            Some(('\n', Effect::RunsCommands))
        );
        assert_eq!(hazard("a;b", Quoting::Comment), None);
    }

    #[test]
    fn the_format_runs_commands() {
        let findings = findings_after(|e| {
            partition(e, "ESP")["content"]["format"] = json!("vfat; touch /pwned");
        });
        let shell = findings
            .iter()
            .find(|f| f.code == "SHELL001")
            .expect("SHELL001");
        assert!(
            shell
                .message
                .contains("runs arbitrary commands during the install"),
            "{shell:?}"
        );
        assert!(shell.message.contains("mkfs.<format>"), "{shell:?}");
        assert_eq!(
            shell.path.to_string(),
            "disko.devices.disk.main.content.partitions.ESP.content.format"
        );
    }

    #[test]
    fn btrfs_extra_args_are_bare_but_filesystem_ones_are_escaped() {
        let codes = codes_after(|e| btrfs(e)["extraArgs"] = json!(["-f", "$(touch /pwned)"]));
        assert!(codes.contains(&"SHELL001"), "{codes:?}");
        let codes = codes_after(|e| {
            partition(e, "ESP")["content"]["extraArgs"] = json!(["-n", "$(touch /pwned)"]);
        });
        assert!(!codes.contains(&"SHELL001"), "{codes:?}");
    }

    #[test]
    fn random_encryption_swap_is_never_formatted_by_disko() {
        let codes = codes_after(|e| {
            partition(e, "swap")["content"]["extraArgs"] = json!(["$(touch /pwned)"]);
        });
        assert!(!codes.contains(&"SHELL001"), "{codes:?}");
        let codes = codes_after(|e| {
            partition(e, "swap")["content"]["extraArgs"] = json!(["$(touch /pwned)"]);
            partition(e, "swap")["content"]["randomEncryption"] = json!(false);
        });
        assert!(codes.contains(&"SHELL001"), "{codes:?}");
    }

    #[test]
    fn start_end_and_mbr_type_are_bare() {
        let codes = codes_after(|e| partition(e, "swap")["end"] = json!("+32G;reboot"));
        assert!(codes.contains(&"SHELL001"), "{codes:?}");
    }
}
