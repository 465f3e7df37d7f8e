//! `cargo xtask check --deep` as users run it: the real binary, real disko
//! (a checkout given by XTASK_DISKO_SRC, with XTASK_NIXPKGS_LIB), and as root
//! the real sgdisk, mkfs and kernel on image files and loop devices.
//!
//! The tests that need the checkouts are `#[ignore]`d in the default run (the
//! checkouts cannot be fetched on machines without GitHub; the generated corpus,
//! recorded with real disko, holds check in every run). Run them:
//! `sudo -E XTASK_DISKO_SRC=… XTASK_NIXPKGS_LIB=… cargo test -p xtask --test check_deep -- --ignored`
//! (checkouts at the revisions xtask::deep::PINNED_DISKO and PINNED_NIXPKGS_LIB name).

use assert_cmd::Command;
use xtask::deep::{DISKO_SRC_ENV, NIXPKGS_LIB_ENV, PINNED_DISKO, PINNED_NIXPKGS_LIB};

fn corpus(name: &str) -> String {
    format!(
        "{}/tests/fixtures/disko-corpus/{name}.nix",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn fixture(name: &str) -> String {
    format!(
        "{}/tests/fixtures/deep/{name}.nix",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// The binary with the checkouts, as root; fails with what to give otherwise.
fn deep() -> Command {
    assert!(
        unsafe { libc::geteuid() } == 0,
        "check --deep needs root for loop devices and mounts (CI runs as root): sudo -E cargo test -p xtask --test check_deep"
    );
    for (env, repository, revision) in [
        (DISKO_SRC_ENV, "nix-community/disko", PINNED_DISKO),
        (
            NIXPKGS_LIB_ENV,
            "nix-community/nixpkgs.lib",
            PINNED_NIXPKGS_LIB,
        ),
    ] {
        assert!(
            std::env::var_os(env).is_some(),
            "set {env} to a checkout of {repository} at {revision} \
             (git clone https://github.com/{repository} DIR && git -C DIR checkout {revision})"
        );
    }
    for tool in ["sgdisk", "mkfs.vfat", "mkfs.btrfs", "jq", "nix-instantiate"] {
        assert!(
            which::which(tool).is_ok()
                || which::which_in(tool, Some("/usr/sbin:/sbin"), "/").is_ok(),
            "{tool} is missing: apt-get install gdisk dosfstools btrfs-progs jq nix-bin"
        );
    }
    let mut command = Command::cargo_bin("xtask").expect("the xtask binary builds");
    command.args(["check", "--mode", "standalone", "--deep"]);
    command
}

fn run(command: &mut Command) -> (Option<i32>, String, String) {
    let output = command.output().expect("xtask runs");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The host's own layout: disko creates it, every mkfs and Btrfs mount
/// succeeds as check predicts, the ESP's vfat mount is NOT RUN with mount's words.
#[test]
#[ignore = "needs disko and nixpkgs.lib checkouts (no GitHub here): XTASK_DISKO_SRC=DIR XTASK_NIXPKGS_LIB=DIR cargo test -p xtask --test check_deep -- --ignored"]
fn the_hosts_layout_agrees_with_the_real_tools() {
    let (code, stdout, stderr) = run(&mut deep());
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("ran: disko's create script: sgdisk and every mkfs ran and succeeded"),
        "{stdout}"
    );
    assert!(
        stdout.contains("ran: mount /: ok; mountinfo root /@root"),
        "{stdout}"
    );
    assert!(stdout.contains("compress=zstd:1"), "{stdout}");
    // vfat is not in this kernel: not run, never a pass.
    if stdout.contains("NOT RUN: mount /boot") {
        assert!(
            stdout.contains("unknown filesystem type 'vfat'"),
            "{stdout}"
        );
    } else {
        assert!(stdout.contains("ran: mount /boot: ok"), "{stdout}");
    }
    assert!(
        stdout.contains("deep: agrees (0 disagreement(s)"),
        "{stdout}"
    );
}

/// Reality fails: mkfs.vfat refuses FAT12 on the 1 GiB ESP. The report
/// names the partition (check's finding) and gives mkfs's own message.
#[test]
#[ignore = "needs disko and nixpkgs.lib checkouts (no GitHub here): XTASK_DISKO_SRC=DIR XTASK_NIXPKGS_LIB=DIR cargo test -p xtask --test check_deep -- --ignored"]
fn a_failing_mkfs_is_reported_with_the_tools_message() {
    let (code, stdout, stderr) = run(deep().args(["--disko", &corpus("esp-fat12")]));
    assert_eq!(code, Some(1), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("disko's create script (sgdisk, mkfs) failed")
            && stdout
                .contains("mkfs.vfat: Attempting to create a too small or a too large filesystem"),
        "{stdout}"
    );
    assert!(stdout.contains("partitions.ESP"), "{stdout}");
}

/// A case nobody listed, of the same kind: a Btrfs mount whose options name a
/// subvolume twice. The kernel mounts the last one, and the deep check reads
/// it back from /proc/self/mountinfo; check's model must say the same.
#[test]
#[ignore = "needs disko and nixpkgs.lib checkouts (no GitHub here): XTASK_DISKO_SRC=DIR XTASK_NIXPKGS_LIB=DIR cargo test -p xtask --test check_deep -- --ignored"]
fn a_mounted_subvolume_is_read_back_from_mountinfo() {
    let (code, stdout, stderr) = run(deep().args(["--disko", &fixture("subvol-last-wins")]));
    assert!(
        stdout.contains("ran: mount /data: ok; mountinfo root /@second"),
        "{code:?}\n{stdout}\n{stderr}"
    );
    assert!(!stdout.contains("DISAGREES: mount /data"), "{stdout}");
}

/// dm-crypt: cryptsetup never runs (it would act on a device outside the
/// sandbox, and the kernel may lack dm-crypt). NOT RUN, naming the command.
#[test]
#[ignore = "needs disko and nixpkgs.lib checkouts (no GitHub here): XTASK_DISKO_SRC=DIR XTASK_NIXPKGS_LIB=DIR cargo test -p xtask --test check_deep -- --ignored"]
fn luks_is_not_run_and_never_a_pass() {
    let (code, stdout, stderr) = run(deep().args(["--disko", &fixture("luks-data")]));
    assert!(
        stdout.contains("NOT RUN: disko's create script reached a step this sandbox never runs")
            && stdout.contains("cryptsetup -q luksFormat /dev/disk/by-partlabel/disk-main-crypted"),
        "{code:?}\n{stdout}\n{stderr}"
    );
    assert!(!stdout.contains("every mkfs ran and succeeded"), "{stdout}");
    assert!(stdout.contains("1 step(s) NOT RUN"), "{stdout}");
}

/// Without the sources it cannot run: exit 2 with what to give.
#[test]
fn without_disko_source_it_exits_2_saying_what_to_give() {
    let mut command = Command::cargo_bin("xtask").expect("the xtask binary builds");
    command
        .env_remove(DISKO_SRC_ENV)
        .env_remove(NIXPKGS_LIB_ENV)
        .args(["check", "--deep"]);
    let (code, _, stderr) = run(&mut command);
    assert_eq!(code, Some(2), "{stderr}");
    if unsafe { libc::geteuid() } == 0 {
        assert!(
            stderr.contains("--disko-src DIR") && stderr.contains(PINNED_DISKO),
            "{stderr}"
        );
        assert!(stderr.contains("NOT RUN"), "{stderr}");
    } else {
        assert!(stderr.contains("needs root"), "{stderr}");
    }
}

/// A directory that is not disko is refused before anything runs.
#[test]
fn a_directory_that_is_not_disko_exits_2() {
    let empty = tempfile::tempdir().expect("a temp dir");
    let mut command = Command::cargo_bin("xtask").expect("the xtask binary builds");
    command
        .env(NIXPKGS_LIB_ENV, empty.path())
        .args(["check", "--deep", "--disko-src"])
        .arg(empty.path());
    let (code, _, stderr) = run(&mut command);
    assert_eq!(code, Some(2), "{stderr}");
    if unsafe { libc::geteuid() } == 0 {
        assert!(stderr.contains("not a disko checkout"), "{stderr}");
    }
}

/// Exporting the checkouts does not change a plain check: they are read only with --deep.
#[test]
fn the_checkouts_in_the_environment_do_not_change_a_plain_check() {
    let mut command = Command::cargo_bin("xtask").expect("the xtask binary builds");
    command
        .env(DISKO_SRC_ENV, "/nonexistent/disko")
        .env(NIXPKGS_LIB_ENV, "/nonexistent/nixpkgs.lib")
        .args(["check", "--mode", "standalone"]);
    let (code, stdout, stderr) = run(&mut command);
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(!stdout.contains("== deep"), "{stdout}");
}
