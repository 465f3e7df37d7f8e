//! The commands each place offers: the installed server (as its NixOS
//! configuration builds `/run/current-system/sw/bin`), the Hetzner rescue
//! system, and the operator's workstation. A procedure or a guide that
//! calls a program its place lacks fails `commands_of` in tests and
//! `cargo xtask docs --check`; the lab VM offers the admin exactly the
//! server's (or the workstation's) set (crates/guest, `admin`).
//!
//! # The server
//!
//! nixpkgs `nixos/modules/config/system-path.nix` (read at commit
//! 0354e8b747c8d69802d160ff408d1aece50472c9): `environment.systemPackages`
//! starts as `corePackages ++ defaultPackages` ([`CORE_PACKAGES`],
//! [`DEFAULT_PACKAGES`]). The modules the host enables add theirs
//! ([`MODULE_PACKAGES`]; the files named there), and the host's own
//! `environment.systemPackages` (`pkgs.<name>` in the host's files,
//! [`host_packages`]) the rest. Each package's programs are those its
//! `bin/` and `sbin/` hold ([`programs_of`]; a package we do not list is
//! taken to give one program of its own name).
//!
//! Not on the server although one might expect it: `cryptsetup`
//! (nixos/modules/config/swap.nix puts it only on the path of the mkswap
//! unit), `compsize` (nowhere), `lsattr` (e2fsprogs: nixos/modules/tasks/
//! filesystems/ext.nix adds it with the systemd initrd only when ext is in
//! the initrd's filesystems, read at 01f31c2ee7d045a337dff0f858c0ed61dd0f4ddb),
//! `podman` (no host file enables virtualisation.podman). The host adds the
//! first three in hosts/servers/hetzner-cloud/tools.nix for the checklist.

use std::collections::BTreeSet;

use anyhow::{Context as _, Result};
use camino::Utf8Path;

use super::facts::Where;

/// system-path.nix's `corePackageNames` (0354e8b7).
pub const CORE_PACKAGES: &[&str] = &[
    "acl",
    "attr",
    "bashInteractive",
    "bzip2",
    "coreutils-full",
    "cpio",
    "curl",
    "diffutils",
    "findutils",
    "gawk",
    "getent",
    "getconf",
    "gnugrep",
    "gnupatch",
    "gnused",
    "gnutar",
    "gzip",
    "xz",
    "less",
    "libcap",
    "ncurses",
    "netcat",
    "mkpasswd",
    "procps",
    "su",
    "time",
    "util-linux",
    "which",
    "zstd",
];

/// system-path.nix's `defaultPackageNames` (0354e8b7).
pub const DEFAULT_PACKAGES: &[&str] = &["perl", "rsync", "strace"];

/// What the NixOS modules this host enables put in
/// `environment.systemPackages` (or `security.wrappers`, for sudo), with
/// the file that does it.
pub const MODULE_PACKAGES: &[(&str, &str)] = &[
    // fsPackages: dosfstools always, btrfs-progs with btrfs in
    // boot.supportedFilesystems (boot.nix sets it); read at 0148e16d and 03a362fe.
    ("nixos/modules/tasks/filesystems.nix", "dosfstools"),
    ("nixos/modules/tasks/filesystems/btrfs.nix", "btrfs-progs"),
    // With services.btrbk.instances (snapshots.nix); read at 015c6d73.
    ("nixos/modules/services/backup/btrbk.nix", "btrbk"),
    ("nixos/modules/security/sudo.nix", "sudo"),
    ("nixos/modules/programs/ssh.nix", "openssh"),
    ("nixos/modules/services/system/nix-daemon.nix", "nix"),
    ("nixos/modules/system/boot/systemd.nix", "systemd"),
    ("nixos/modules/installer/tools/tools.nix", "nixos-tools"),
    ("nixos/modules/system/boot/kernel.nix", "kmod"),
    ("nixos/modules/tasks/network-interfaces.nix", "iproute2"),
    ("nixos/modules/tasks/network-interfaces.nix", "iputils"),
    ("nixos/modules/tasks/network-interfaces.nix", "hostname"),
    ("nixos/modules/programs/shadow.nix", "shadow"),
    ("nixos/modules/system/boot/loader/grub/grub.nix", "grub2"),
    // services.tailscale.enable (services.nix).
    (
        "nixos/modules/services/networking/tailscale.nix",
        "tailscale",
    ),
];

/// GNU coreutils 9 (coreutils-full: every program, with stdbuf).
const COREUTILS: &[&str] = &[
    "[",
    "b2sum",
    "base32",
    "base64",
    "basename",
    "basenc",
    "cat",
    "chcon",
    "chgrp",
    "chmod",
    "chown",
    "chroot",
    "cksum",
    "comm",
    "cp",
    "csplit",
    "cut",
    "date",
    "dd",
    "df",
    "dir",
    "dircolors",
    "dirname",
    "du",
    "echo",
    "env",
    "expand",
    "expr",
    "factor",
    "false",
    "fmt",
    "fold",
    "groups",
    "head",
    "hostid",
    "id",
    "install",
    "join",
    "kill",
    "link",
    "ln",
    "logname",
    "ls",
    "md5sum",
    "mkdir",
    "mkfifo",
    "mknod",
    "mktemp",
    "mv",
    "nice",
    "nl",
    "nohup",
    "nproc",
    "numfmt",
    "od",
    "paste",
    "pathchk",
    "pinky",
    "pr",
    "printenv",
    "printf",
    "ptx",
    "pwd",
    "readlink",
    "realpath",
    "rm",
    "rmdir",
    "runcon",
    "seq",
    "sha1sum",
    "sha224sum",
    "sha256sum",
    "sha384sum",
    "sha512sum",
    "shred",
    "shuf",
    "sleep",
    "sort",
    "split",
    "stat",
    "stdbuf",
    "stty",
    "sum",
    "sync",
    "tac",
    "tail",
    "tee",
    "test",
    "timeout",
    "touch",
    "tr",
    "true",
    "truncate",
    "tsort",
    "tty",
    "uname",
    "unexpand",
    "uniq",
    "unlink",
    "uptime",
    "users",
    "vdir",
    "wc",
    "who",
    "whoami",
    "yes",
];

/// The programs of procps.
const PROCPS: &[&str] = &[
    "free", "kill", "pgrep", "pidof", "pkill", "pmap", "ps", "pwdx", "slabtop", "sysctl", "tload",
    "top", "uptime", "vmstat", "w", "watch",
];

/// The programs of util-linux.
const UTIL_LINUX: &[&str] = &[
    "blkdiscard",
    "blkid",
    "blockdev",
    "chrt",
    "dmesg",
    "eject",
    "fallocate",
    "fdisk",
    "findfs",
    "findmnt",
    "flock",
    "fsck",
    "fstrim",
    "getopt",
    "hexdump",
    "ionice",
    "ipcs",
    "kill",
    "logger",
    "losetup",
    "lsblk",
    "lscpu",
    "lslocks",
    "lsns",
    "mkswap",
    "more",
    "mount",
    "mountpoint",
    "nsenter",
    "partx",
    "rename",
    "renice",
    "script",
    "setsid",
    "sfdisk",
    "swapoff",
    "swapon",
    "taskset",
    "umount",
    "unshare",
    "uuidgen",
    "wipefs",
    "wdctl",
    "zramctl",
];

/// The programs of btrfs-progs.
const BTRFS_PROGS: &[&str] = &[
    "btrfs",
    "mkfs.btrfs",
    "btrfsck",
    "fsck.btrfs",
    "btrfstune",
    "btrfs-convert",
    "btrfs-image",
    "btrfs-map-logical",
    "btrfs-select-super",
];

/// The programs of openssh.
const OPENSSH: &[&str] = &[
    "ssh",
    "scp",
    "sftp",
    "ssh-add",
    "ssh-agent",
    "ssh-keygen",
    "ssh-keyscan",
];

/// The programs of nix.
const NIX: &[&str] = &[
    "nix",
    "nix-build",
    "nix-channel",
    "nix-collect-garbage",
    "nix-copy-closure",
    "nix-env",
    "nix-hash",
    "nix-instantiate",
    "nix-prefetch-url",
    "nix-shell",
    "nix-store",
];

/// The programs of systemd.
const SYSTEMD: &[&str] = &[
    "systemctl",
    "journalctl",
    "loginctl",
    "hostnamectl",
    "timedatectl",
    "localectl",
    "busctl",
    "systemd-analyze",
    "systemd-run",
    "systemd-cat",
    "systemd-tmpfiles",
    "udevadm",
    "networkctl",
    "resolvectl",
    "coredumpctl",
    "machinectl",
    "reboot",
    "poweroff",
    "halt",
    "shutdown",
];

/// The programs of nixos-tools.
const NIXOS_TOOLS: &[&str] = &[
    "nixos-rebuild",
    "nixos-version",
    "nixos-option",
    "nixos-generate-config",
    "nixos-install",
    "nixos-enter",
];

/// The programs of shadow.
const SHADOW: &[&str] = &[
    "passwd", "login", "newgrp", "useradd", "usermod", "groupadd",
];

/// The programs of e2fsprogs.
const E2FSPROGS: &[&str] = &[
    "lsattr",
    "chattr",
    "e2fsck",
    "mke2fs",
    "mkfs.ext4",
    "tune2fs",
    "resize2fs",
    "debugfs",
    "dumpe2fs",
];

/// The programs in a package's `bin/` and `sbin/`, as far as the
/// procedures and guides care (the package's own name for one not listed).
pub fn programs_of(package: &str) -> Vec<&'static str> {
    let programs: &[&str] = match package {
        "acl" => &["getfacl", "setfacl", "chacl"],
        "attr" => &["attr", "getfattr", "setfattr"],
        "bashInteractive" | "bash" => &["bash", "sh"],
        "bzip2" => &["bzip2", "bunzip2", "bzcat", "bzip2recover"],
        "coreutils" | "coreutils-full" => COREUTILS,
        "cpio" => &["cpio"],
        "curl" => &["curl"],
        "diffutils" => &["diff", "cmp", "diff3", "sdiff"],
        "findutils" => &["find", "xargs", "locate", "updatedb"],
        "gawk" => &["awk", "gawk"],
        "getent" => &["getent"],
        "getconf" => &["getconf"],
        "gnugrep" => &["grep", "egrep", "fgrep"],
        "gnupatch" => &["patch"],
        "gnused" => &["sed"],
        "gnutar" => &["tar"],
        "gzip" => &["gzip", "gunzip", "zcat", "zgrep", "zless"],
        "xz" => &["xz", "unxz", "xzcat", "lzma", "unlzma"],
        "less" => &["less"],
        "libcap" => &["capsh", "getcap", "setcap", "getpcaps"],
        "ncurses" => &["clear", "reset", "tput", "tset", "infocmp", "tic", "toe"],
        "netcat" => &["nc"],
        "mkpasswd" => &["mkpasswd"],
        "procps" => PROCPS,
        "su" => &["su"],
        "time" => &["time"],
        "util-linux" => UTIL_LINUX,
        "which" => &["which"],
        "zstd" => &["zstd", "unzstd", "zstdcat", "zstdmt"],
        "perl" => &["perl"],
        "rsync" => &["rsync"],
        "strace" => &["strace"],
        "dosfstools" => &["mkfs.fat", "mkfs.vfat", "fsck.fat", "fsck.vfat", "fatlabel"],
        "btrfs-progs" => BTRFS_PROGS,
        "btrbk" => &["btrbk"],
        "sudo" => &["sudo"],
        "openssh" => OPENSSH,
        "nix" => NIX,
        "systemd" => SYSTEMD,
        "nixos-tools" => NIXOS_TOOLS,
        "kmod" => &["modprobe", "lsmod", "rmmod", "insmod", "modinfo", "depmod"],
        "iproute2" => &["ip", "ss", "bridge", "tc"],
        "iputils" => &["ping", "tracepath", "arping"],
        "hostname" => &["hostname"],
        "shadow" => SHADOW,
        "grub2" => &["grub-install", "grub-mkconfig", "grub-editenv"],
        "tailscale" => &["tailscale"],
        "compsize" => &["compsize"],
        "cryptsetup" => &["cryptsetup", "veritysetup", "integritysetup"],
        "e2fsprogs" => E2FSPROGS,
        "gptfdisk" => &["sgdisk", "gdisk", "cgdisk"],
        "hcloud" => &["hcloud"],
        "git" => &["git"],
        "cargo" => &["cargo"],
        _ => return Vec::new(),
    };
    programs.to_vec()
}

/// What bash runs itself (no program on PATH needed).
pub const SHELL_BUILTINS: &[&str] = &[
    "cd", "echo", "printf", "test", "[", "true", "false", "set", "export", "command", "exit",
    "read", "type", "umask", "wait", "exec", "{", "}", "if", "then", "else", "fi", "for", "do",
    "done", "while", ":", ".", "source",
];

/// `pkgs.<name>` in `environment.systemPackages = [ … ];` of the host's
/// files: the host's own packages. A text scan (the host files need
/// nixpkgs to evaluate): a list built any other way is not seen, and
/// its commands count as missing, which errs on the safe side.
pub fn host_packages(host_dir: &Utf8Path) -> Result<Vec<String>> {
    let mut found = Vec::new();
    let entries = std::fs::read_dir(host_dir).with_context(|| format!("reading {host_dir}"))?;
    let mut files: Vec<_> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "nix"))
        .collect();
    files.sort();
    for file in files {
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        found.extend(packages_in(&text));
    }
    Ok(found)
}

/// The `pkgs.<name>` of every `environment.systemPackages = [ … ];` in `text`.
pub fn packages_in(text: &str) -> Vec<String> {
    let code: String = text
        .lines()
        .map(|l| l.split_once('#').map_or(l, |(code, _)| code))
        .collect::<Vec<_>>()
        .join("\n");
    let mut found = Vec::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("systemPackages") {
        rest = &rest[at + "systemPackages".len()..];
        let Some(open) = rest.find('[') else { break };
        let Some(close) = rest[open..].find(']') else {
            break;
        };
        let list = &rest[open + 1..open + close];
        for word in list.split_whitespace() {
            if let Some(name) = word.strip_prefix("pkgs.") {
                found.push(name.trim_end_matches(';').to_owned());
            }
        }
        rest = &rest[open + close..];
    }
    found
}

/// The commands on the installed server's PATH: system-path.nix's sets,
/// the enabled modules' packages, the host's own.
pub fn server_commands(host_packages: &[String]) -> BTreeSet<String> {
    let mut commands = BTreeSet::new();
    let packages = CORE_PACKAGES
        .iter()
        .chain(DEFAULT_PACKAGES)
        .copied()
        .chain(MODULE_PACKAGES.iter().map(|(_, p)| *p))
        .map(str::to_owned)
        .chain(host_packages.iter().cloned());
    for package in packages {
        let programs = programs_of(&package);
        if programs.is_empty() {
            commands.insert(package);
        } else {
            commands.extend(programs.into_iter().map(str::to_owned));
        }
    }
    commands
}

/// The Hetzner rescue system (a Debian live system; docs.hetzner.com,
/// "Rescue System"): GNU coreutils, util-linux, btrfs-progs, gdisk and the
/// usual Debian base, as root. Declared, not measured: we cannot boot it.
pub fn rescue_commands() -> BTreeSet<String> {
    [
        "bashInteractive",
        "coreutils",
        "util-linux",
        "findutils",
        "gnugrep",
        "gnused",
        "diffutils",
        "btrfs-progs",
        "gptfdisk",
        "e2fsprogs",
        "cryptsetup",
        "zstd",
        "gnutar",
        "kmod",
        "iproute2",
        // Debian's init: journalctl reads a saved journal (`-D`).
        "systemd",
    ]
    .iter()
    .flat_map(|p| programs_of(p))
    .map(str::to_owned)
    .collect()
}

/// The operator's workstation, as README's "What you need" asks for it:
/// Nix with flakes, git, the Rust toolchain (cargo), OpenSSH's client,
/// zstd, the hcloud CLI, and a POSIX userland (GNU or BSD coreutils).
pub fn workstation_commands() -> BTreeSet<String> {
    [
        "nix",
        "git",
        "cargo",
        "openssh",
        "zstd",
        "hcloud",
        "coreutils",
        "findutils",
        "gnugrep",
        "gnused",
        "diffutils",
        "gnutar",
        "nixos-tools",
    ]
    .iter()
    .flat_map(|p| programs_of(p))
    .map(str::to_owned)
    .collect()
}

/// The three places' commands, for one host.
#[derive(Debug, Clone)]
pub struct Places {
    pub server: BTreeSet<String>,
    pub rescue: BTreeSet<String>,
    pub workstation: BTreeSet<String>,
}

impl Places {
    pub fn for_host(host_dir: &Utf8Path) -> Result<Places> {
        Ok(Places {
            server: server_commands(&host_packages(host_dir)?),
            rescue: rescue_commands(),
            workstation: workstation_commands(),
        })
    }

    pub fn commands(&self, at: Where) -> &BTreeSet<String> {
        match at {
            Where::Server => &self.server,
            Where::Rescue => &self.rescue,
            Where::Local => &self.workstation,
        }
    }

    /// The programs `line` calls at `at` that the place lacks.
    pub fn missing(&self, at: Where, line: &str) -> Vec<String> {
        let have = self.commands(at);
        let mut missing = Vec::new();
        for words in super::disposition::simple_commands(line) {
            let program = words[0].as_str();
            // An absolute path names a file, not a PATH lookup.
            if program.starts_with('/') || program.starts_with('<') {
                continue;
            }
            if SHELL_BUILTINS.contains(&program) || have.contains(program) {
                continue;
            }
            if !missing.iter().any(|m| m == program) {
                missing.push(program.to_owned());
            }
        }
        missing
    }
}

/// A place's name as the guides and messages say it.
pub fn place_name(at: Where) -> &'static str {
    match at {
        Where::Server => "the installed server",
        Where::Rescue => "the Hetzner rescue system",
        Where::Local => "the workstation",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use toolbox::project::project_root;

    fn places() -> Places {
        Places::for_host(&project_root().join("hosts/servers/hetzner-cloud")).unwrap()
    }

    #[test]
    fn the_server_has_what_nixos_and_the_host_install_and_nothing_else() {
        let places = places();
        for have in [
            "btrfs",
            "findmnt",
            "sha256sum",
            "zstd",
            "sudo",
            "btrbk",
            "lsblk",
            "cmp",
        ] {
            assert!(places.server.contains(have), "{have}");
        }
        // The host's tools.nix adds these for the checklist.
        for added in ["compsize", "cryptsetup", "lsattr"] {
            assert!(places.server.contains(added), "{added}: tools.nix");
        }
        for lacking in ["podman", "docker", "hcloud", "cargo", "sgdisk", "gdisk"] {
            assert!(!places.server.contains(lacking), "{lacking}");
        }
        assert_eq!(
            places.missing(Where::Server, "sudo podman image prune"),
            ["podman"]
        );
        assert!(places
            .missing(Where::Server, "sudo sh -c 'btrfs filesystem du -s /x/*'")
            .is_empty());
        assert_eq!(
            places.missing(Where::Local, "ssh a@b 'sudo x' | zstd > f"),
            Vec::<String>::new()
        );
    }

    #[test]
    fn without_the_hosts_tools_the_server_lacks_compsize_cryptsetup_and_lsattr() {
        let bare = server_commands(&[]);
        for lacking in ["compsize", "cryptsetup", "lsattr"] {
            assert!(!bare.contains(lacking), "{lacking}");
        }
    }

    #[test]
    fn host_packages_are_read_from_system_packages_lists() {
        let text = "{ pkgs, ... }:\n{\n  # pkgs.hidden is a comment\n  environment.systemPackages = [\n    pkgs.compsize\n    pkgs.cryptsetup # why\n  ];\n  other = [ pkgs.not-this ];\n}\n";
        assert_eq!(packages_in(text), ["compsize", "cryptsetup"]);
    }
}
