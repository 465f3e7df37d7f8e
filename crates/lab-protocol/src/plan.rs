//! The plan: what the host tells the guest agent to do in one boot, as typed
//! data. The host builds it from the evaluated layout (`super::realise`); the
//! guest executes it step by step and never derives anything from the layout
//! itself. Commands are argument vectors with absolute program paths, run
//! without a shell.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Bumped when the plan changes incompatibly (host and guest are one binary,
/// so this only guards against a stale image).
pub const SCHEMA: u32 = 3;
/// The qemu fw_cfg file that carries the plan into the guest.
pub const FW_CFG_NAME: &str = "opt/xtask/plan.json";
/// Where the guest mounts the system it boots, like NixOS's /mnt-root.
pub const SYSROOT: &str = "/sysroot";
/// Where the agent mounts a Btrfs top level for its own checks.
pub const TOP_LEVEL_MOUNT: &str = "/run/xtask/top";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub schema: u32,
    pub host: String,
    /// 1 for the install boot.
    pub boot: u32,
    pub boots: u32,
    pub kind: BootKind,
    pub tools: GuestTools,
    /// The time qemu's RTC starts at (`-rtc base=`, epoch seconds): the
    /// kernel sets the clock from it, and the rollback names roots by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtc_base: Option<i64>,
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BootKind {
    /// Realise the layout as disko would, then mount and fill it.
    Install,
    /// Run the rollback script before mounting, as NixOS's initrd does.
    Rotate,
    /// A short boot of the month: the rollback and a look at the old roots,
    /// nothing mounted.
    RotateOnly,
    /// The lab's rescue system (§4.6): a boot that mounts nothing of the
    /// installed system; the admin's procedures run in a RAM root with the
    /// rescue system's declared commands (`checklist::places`).
    Rescue,
}

impl BootKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BootKind::Install => "install",
            BootKind::Rotate => "rotate",
            BootKind::RotateOnly => "rotate-only",
            BootKind::Rescue => "rescue",
        }
    }
}

/// Absolute paths of the programs in the image: where they were on the host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestTools {
    pub busybox: String,
    pub sgdisk: String,
    pub mkfs_btrfs: String,
    pub btrfs: String,
    pub mkfs_vfat: String,
    pub cryptsetup: String,
    pub mkswap: String,
    pub swapon: String,
    pub swapoff: String,
    pub mount: String,
    pub umount: String,
    pub blkid: String,
    pub findmnt: String,
    pub lsattr: String,
    pub chattr: String,
    pub compsize: String,
    pub fstrim: String,
    /// The admin's shell and GNU tools for procedures (empty when the image has none).
    #[serde(default)]
    pub bash: String,
    #[serde(default)]
    pub grep: String,
}

impl GuestTools {
    /// Every program, in the order of the fields (empty: not in the image).
    pub fn programs(&self) -> [&str; 17] {
        [
            &self.busybox,
            &self.sgdisk,
            &self.mkfs_btrfs,
            &self.btrfs,
            &self.mkfs_vfat,
            &self.cryptsetup,
            &self.mkswap,
            &self.swapon,
            &self.swapoff,
            &self.mount,
            &self.umount,
            &self.blkid,
            &self.findmnt,
            &self.lsattr,
            &self.chattr,
            &self.compsize,
            &self.fstrim,
        ]
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// Stable and unique within the boot: `sgdisk:2`, `mount:/nix`, `check:subvolumes`.
    pub name: String,
    /// Whether the boot goes on when this step fails. Creating the disk
    /// stops it; a mount or a check does not, so later checks still report.
    pub on_failure: OnFailure,
    pub action: Action,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    Stop,
    Continue,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Run a program; success is exit status 0.
    Run {
        argv: Vec<String>,
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        env: BTreeMap<String, String>,
    },
    /// Wait until a block device appears (virtio probes asynchronously).
    WaitForDevice {
        path: String,
        timeout_ms: u64,
    },
    /// What udev does for GPT partitions: /dev/disk/by-partlabel/<label>
    /// links, after checking that the kernel sees each partition's name.
    LinkPartitions {
        disk: String,
        links: Vec<PartitionLink>,
    },
    /// What udev does for a device-mapper device: /dev/mapper/<name> a
    /// link to its /dev/dm-<n>.
    LinkMapper {
        name: String,
    },
    MakeDirectories {
        paths: Vec<String>,
    },
    /// Writes a file, creating its parent directories.
    WriteFile {
        path: String,
        contents: String,
    },
    /// Incompressible bytes from the kernel's generator (getrandom(2)).
    WriteRandom {
        path: String,
        bytes: u64,
    },
    /// Journal-like text lines from a seeded generator.
    WriteLogText {
        path: String,
        bytes: u64,
        seed: u64,
    },
    /// Copies the guest's own files (binaries, libraries, modules) into a
    /// store-like tree: real bytes, like /nix/store.
    CopyTree {
        sources: Vec<String>,
        destination: String,
    },
    Remove {
        path: String,
    },
    /// sync(2): every filesystem's dirty data reaches the disk.
    Sync,
    Rollback(RollbackStep),
    /// Flush `device` (sync alone does not flush a disk whose
    /// filesystems are clean), then let the host measure the disk image.
    Measure {
        point: String,
        device: String,
    },
    Check(Check),
    /// What stage 2 gives the admin: /proc, /sys, /dev and /run, and the
    /// image's programs (read-only) inside /sysroot, so that commands run
    /// in a chroot see the booted system as the server shows it; the
    /// admin's home, and a check that the admin is not root and `sudo`
    /// makes it root.
    EnterSystem {
        binds: Vec<String>,
        #[serde(default)]
        login: Option<AdminLogin>,
    },
    /// impermanence at boot (nix-community/impermanence, nixos.nix and
    /// mount-file.bash): each persisted directory bind-mounted from its
    /// storage (created when missing); each persisted file bind-mounted
    /// when its storage has it, else a symlink to the storage.
    Persistence {
        directories: Vec<PersistedPath>,
        files: Vec<PersistedPath>,
    },
    /// Checklist commands, run as the admin would (see `AdminStep`).
    Admin(AdminStep),
    /// `vm-test --serve-ssh`: the booted system served by the
    /// distribution's sshd until the host says `continue`.
    ServeSsh(ServeSsh),
    /// Roadmap 7.2: a large file is created and deleted under
    /// `discard=async`, and a thread writes and fdatasyncs a small block every
    /// `interval_ms` until `Expect::DiscardLatency` stops it.
    DiscardProbe(DiscardProbe),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiscardProbe {
    /// The Btrfs device: its sysfs directory has the discard counters.
    pub device: String,
    /// The file that is fallocated, synced and deleted.
    pub big_file: String,
    pub big_bytes: u64,
    /// The file the latency probe writes to.
    pub sample_file: String,
    pub interval_ms: u64,
}

/// One part of a checklist procedure, run in one boot: the checklist's
/// command lines (xtask/src/deploy_checklist/procedures/) as the admin runs
/// them, by bash in a chroot of the booted system, each compared with its
/// expectations; and the lab's own setup and verification around them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdminStep {
    /// The procedure's stable id (`rollback.restore-persist`) and its
    /// checklist step (`4.4`): what a failure is named after.
    pub id: String,
    pub step: String,
    pub title: String,
    /// Which part of the procedure (parts are separated by reboots and reinstalls).
    pub part: u32,
    /// Who runs the checklist's commands.
    pub login: AdminLogin,
    /// Text replaced in every line and expectation before it runs: the
    /// server's disk (`/dev/sda`) is the VM's (`/dev/vda`).
    #[serde(default)]
    pub substitutions: Vec<(String, String)>,
    pub commands: Vec<AdminCommand>,
    /// Values captured at earlier boots, by name: for
    /// `Expectation::EqualsCaptured`, and the procedure's parameters
    /// (`<id>:<placeholder>`), which keep their value across its parts.
    #[serde(default)]
    pub captured: BTreeMap<String, String>,
}

/// The server's admin as the lab VM logs in: the user of machine.nix with
/// its uid, its primary group and wheel (nixos/modules/misc/ids.nix:
/// `users` is gid 100, `wheel` gid 1), and its home.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminLogin {
    pub user: String,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub home: String,
    /// The commands of each place the admin's lines run in (`server`,
    /// `local`), from `crate::deploy_checklist::places`: the lab's PATH for a
    /// line of that place offers exactly these. Empty: the image's PATH.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub commands: std::collections::BTreeMap<String, Vec<String>>,
}

/// The places the admin's lines run in: the keys of `AdminLogin::commands`.
pub const PLACE_SERVER: &str = "server";
pub const PLACE_LOCAL: &str = "local";
pub const PLACE_RESCUE: &str = "rescue";
/// nixos/modules/misc/ids.nix: `wheel` is gid 1; the lab's `sudo` admits
/// its members (`AdminLogin::groups`).
pub const WHEEL_GID: u32 = 1;

/// What the guest needs to serve the booted system over ssh: sshd (from
/// the image) runs outside /sysroot and chroots every session into it
/// (`ChrootDirectory`), so the admin's commands see the system as the
/// checklist's procedures do, with the same PATH and `sudo`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServeSsh {
    pub sshd: String,
    /// The host key (OpenSSH private key format) and the admin's public key.
    pub host_key: String,
    pub authorized_key: String,
    pub login: AdminLogin,
    /// How long to wait for the host's `continue`.
    pub wait_s: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdminCommand {
    pub role: CommandRole,
    /// Where the checklist runs it (`server`, `local`); None for the lab's own.
    #[serde(default)]
    pub at: Option<crate::command::Where>,
    /// As the checklist prints it, `<placeholders>` included.
    pub line: String,
    /// Run as the admin (the checklist's commands: `sudo` in the line where
    /// root is needed), else as root (the lab's own).
    pub as_admin: bool,
    /// The working directory: the workstation's for `local$` commands.
    #[serde(default)]
    pub cwd: Option<String>,
    /// Shell expressions that fill the placeholders in the VM, run as root
    /// the first time the procedure needs them; the value is kept for its
    /// later commands and parts.
    #[serde(default)]
    pub bindings: Vec<Binding>,
    /// The exit status the command must end with.
    pub exit: i32,
    /// The lab's expectations (for its own commands).
    #[serde(default)]
    pub expect: Vec<Expectation>,
    /// The checklist's expectations, checked by `Expect::check` as printed.
    #[serde(default)]
    pub checklist_expect: Vec<crate::expect::Expect>,
    /// Keep the trimmed stdout under this name (also for later boots).
    #[serde(default)]
    pub capture: Option<String>,
    /// Not run in the lab: why, and where it is proven instead.
    #[serde(default)]
    pub not_run: Option<NotRun>,
}

/// A command the lab VM cannot run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotRun {
    pub reason: String,
    /// Where it runs instead, if anywhere before the real server.
    pub proven_by: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    pub placeholder: String,
    pub shell: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandRole {
    /// Brings the VM into the situation the procedure is for (e.g. a damaged /persist).
    Setup,
    /// A command of the checklist.
    Checklist,
    /// The test's own verification (e.g. a checksum that must come back).
    Verify,
}

impl CommandRole {
    pub fn as_str(self) -> &'static str {
        match self {
            CommandRole::Setup => "setup",
            CommandRole::Checklist => "checklist",
            CommandRole::Verify => "verify",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Expectation {
    /// stdout contains the text.
    Contains { text: String },
    /// A line of stdout matches the POSIX extended regular expression (`grep -E`).
    Matches { pattern: String },
    /// stdout, without surrounding white space, is exactly the text.
    Equals { text: String },
    /// stdout, trimmed, equals a value captured earlier.
    EqualsCaptured { name: String },
}

impl std::fmt::Display for Expectation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Expectation::Contains { text } => write!(f, "output contains {text:?}"),
            Expectation::Matches { pattern } => write!(f, "a line matches /{pattern}/"),
            Expectation::Equals { text } => write!(f, "output is {text:?}"),
            Expectation::EqualsCaptured { name } => {
                write!(f, "output equals the value captured as {name:?}")
            }
        }
    }
}

/// impermanence's work at every boot: a persisted path and where its
/// persistent copy is (both inside /sysroot as the agent sees them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistedPath {
    /// E.g. /sysroot/persist/var/lib/nixos.
    pub storage: String,
    /// E.g. /sysroot/var/lib/nixos.
    pub target: String,
    /// The storage path as the booted system sees it (a symlink's text), e.g. /persist/etc/machine-id.
    pub link: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionLink {
    pub number: u32,
    /// The GPT partition name the kernel must report.
    pub label: String,
    /// The path the layout uses, e.g. /dev/disk/by-partlabel/disk-main-root.
    pub link: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RollbackStep {
    /// The script as embedded in the image, and its SHA-256 on the host.
    pub script: String,
    pub script_sha256: String,
    pub argv: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub status_dir: String,
    /// The roadmap's limit for one rotation.
    pub max_ms: u64,
    /// Further runs right after the first, each with the clock set to the
    /// second the first run named its root by plus this many seconds (0:
    /// several rotations in one second). The old roots are listed after
    /// every run.
    #[serde(default)]
    pub extra_runs: Vec<i64>,
    /// Files (relative to a root) the root the first run moves must hold:
    /// what the last boot wrote into /, checked before later runs move on.
    #[serde(default)]
    pub first_run_holds: Vec<String>,
    /// Where the old roots are: the top level's device and the subvolume.
    pub old_roots: OldRootsPlace,
    /// Whether a root must be moved. After a power cut between the move and
    /// the new root's creation there is none to move, and that is right.
    pub rotation_required: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OldRootsPlace {
    pub device: String,
    pub directory: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    /// Stable, e.g. `partition-table`, `mount-options:/nix`, `compression:@nix`.
    pub name: String,
    pub expect: Expect,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Expect {
    /// `sgdisk -p` and the kernel (sysfs) both show exactly these partitions.
    PartitionTable {
        disk: String,
        partitions: Vec<ExpectedPartition>,
    },
    /// The top level of `device` holds exactly these subvolumes, each once.
    Subvolumes { device: String, names: Vec<String> },
    /// /proc/self/mountinfo shows every one of `options` (as the kernel
    /// prints them) on `mountpoint`.
    MountOptions {
        mountpoint: String,
        fs_type: String,
        options: Vec<String>,
    },
    /// New directories and files under `directory` get these modes.
    Permissions {
        directory: String,
        directory_mode: u32,
        file_mode: u32,
    },
    /// `cryptsetup status` shows a plain dm-crypt mapping of `device` with
    /// `cipher`, and /proc/swaps uses it.
    SwapEncrypted {
        mapper: String,
        device: String,
        cipher: String,
        sectors: u64,
    },
    /// Right after opening, the mapping shows no swap signature: the key is
    /// not the one the last swap signature was written with.
    SwapFreshKey { mapper: String },
    /// compsize of `path`: the algorithm in use, and the minimum saving.
    Compression {
        path: String,
        subvolume: String,
        /// `None`: the data must be stored uncompressed.
        algorithm: Option<String>,
        min_saving_percent: Option<f64>,
    },
    /// A new file in `directory` gets the No_COW attribute (lsattr shows C)
    /// and is stored uncompressed.
    NoCow { directory: String },
    /// fstrim succeeds and discards at least `min_bytes`.
    Fstrim { mountpoint: String, min_bytes: u64 },
    /// The command util-linux's fstrim.service runs (`fstrim` with `args`)
    /// exits 0 and trims the filesystem mounted at `mountpoint`, whatever
    /// else it trims; `triggers` say which of the host's timer settings
    /// start it (for the report).
    FstrimService {
        args: Vec<String>,
        mountpoint: String,
        triggers: Vec<String>,
    },
    /// The filesystem queues freed extents for asynchronous discard.
    AsyncDiscard { mountpoint: String },
    /// None of these exist.
    Absent { paths: Vec<String> },
    /// The file holds exactly the bytes with this SHA-256.
    Digest { path: String, sha256: String },
    /// @old_roots holds `min_count..=max_count` subvolumes named
    /// YYYYMMDDTHHMMSSZ[-NN]; the newest holds `newest_holds` and some old
    /// root holds `some_holds` (the files an earlier boot wrote into /).
    OldRoots {
        device: String,
        directory: String,
        min_count: u32,
        max_count: u32,
        newest_holds: Vec<String>,
        some_holds: Vec<String>,
    },
    /// / holds nothing but the directories the mounts need: a new, empty root.
    FreshRoot { path: String, allowed: Vec<String> },
    /// The clock follows the RTC qemu was given: at least `rtc_base`, and no
    /// more ahead of it than the time since boot plus `slack_s`.
    Clock { rtc_base: i64, slack_s: u64 },
    /// Ends `Action::DiscardProbe`: waits until the filesystem has
    /// discarded `min_released_bytes`, then holds the write latencies while
    /// it did against the budgets.
    DiscardLatency {
        min_released_bytes: u64,
        max_wait_ms: u64,
        p99_budget_ms: f64,
        max_budget_ms: f64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpectedPartition {
    pub number: u32,
    pub start_sector: u64,
    pub end_sector: u64,
    /// sgdisk's 4-hex-digit code (`EF02`) or a GUID.
    pub type_code: String,
    pub label: String,
}

impl Plan {
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

/// `/sysroot` + an absolute path of the booted system.
pub fn in_sysroot(path: &str) -> String {
    if path == "/" {
        SYSROOT.to_owned()
    } else {
        format!("{SYSROOT}{path}")
    }
}
