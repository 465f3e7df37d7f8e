//! The checklist's own save and restore lines (§4.4, §4.5) on a real Btrfs
//! (a loop device, as root), run twice with /persist changed in between:
//! the real btrfs-progs and GNU mv judge the hazard rules of
//! xtask/src/deploy_checklist/hazards.rs. A snapshot onto a name that exists fails
//! (a read-only one: the old §2.2/§4.5 line, whose next line then sent the
//! older data) or goes *inside* it (a writable one: a leftover
//! `@persist.restored`, which the swap then brings back); `mv` without `-T`
//! moves into a leftover. The checklist's `test ! -e` lines and `mv -T` stop
//! them, and a new `<stamp>` saves the newer data.
//! Without root or the tools these tests fail and say what to install.

use std::process::Command;

use camino::Utf8Path;
use xtask::deploy_checklist::procedures::Procedure;
use xtask::loop_btrfs::loopback::{BtrfsFixture, Lab};

fn lab() -> Lab {
    Lab::prepare(&toolbox::context::Context::default(), &[])
        .expect("loop-device Btrfs (run as root; btrfs-progs, mount, losetup)")
}

fn procedure(id: &str) -> Procedure {
    let loaded = xtask::deploy_checklist::load(
        &toolbox::context::Context::default(),
        &toolbox::project::project_root(),
        "hetzner-cloud",
    )
    .expect("the host loads");
    xtask::deploy_checklist::server_procedures(&loaded.subject, &loaded.facts)
        .into_iter()
        .find(|n| n.procedure.id == id)
        .unwrap_or_else(|| panic!("no procedure {id}"))
        .procedure
}

/// The server line `sudo …` of `procedure` that starts with `prefix`
/// (after sudo), as root runs it here: the top level at `top`, `<stamp>`
/// and `<snapshot>` filled in.
fn line(procedure: &Procedure, prefix: &str, top: &Utf8Path, stamp: &str) -> String {
    let found = procedure
        .commands
        .iter()
        .map(|c| c.line.trim_start_matches("sudo ").to_owned())
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("{}: no line starting {prefix:?}", procedure.id));
    found
        .replace("/btrfs_tmp", top.as_str())
        .replace("<stamp>", stamp)
}

/// `sh -c LINE` as root: its exit status.
fn sh(line: &str) -> i32 {
    let status = Command::new("sh")
        .arg("-c")
        .arg(line)
        .status()
        .expect("running sh");
    status.code().unwrap_or(-1)
}

fn write(path: &Utf8Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("writing {path}: {e}"));
}

fn read(path: &Utf8Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

#[test]
fn a_second_save_under_a_reused_name_keeps_the_older_data_and_the_checklist_stops_it() {
    let lab = lab();
    let fs = BtrfsFixture::create(&lab, 1 << 30).expect("a loop-device Btrfs");
    let top = fs.top();
    fs.create_subvolume("@persist").unwrap();
    fs.create_subvolume("@snapshots").unwrap();
    let data = top.join("@persist/data");
    write(&data, "first");
    let reinstall = procedure("rollback.reinstall");
    let guard = |stamp: &str| line(&reinstall, "test ! -e", top, stamp);
    let snapshot = |stamp: &str| line(&reinstall, "btrfs subvolume snapshot -r", top, stamp);

    // The first save.
    assert_eq!(sh(&guard("A")), 0);
    assert_eq!(sh(&snapshot("A")), 0);
    let saved_a = top.join("@snapshots/@persist.saved-A");
    assert_eq!(read(&saved_a.join("data")), "first");

    // /persist changes; the old line reused its name: btrfs tries to
    // snapshot into the existing (read-only) one and fails, and the name
    // keeps the older data, which the old §4.5's next line sent.
    write(&data, "second");
    assert_eq!(sh(&snapshot("A")), 1, "into a read-only snapshot: EROFS");
    assert_eq!(read(&saved_a.join("data")), "first");
    assert!(!saved_a.join("@persist").exists());
    // The checklist's guard stops that, and a new stamp saves the newer data.
    assert_eq!(sh(&guard("A")), 1);
    assert_eq!(sh(&guard("B")), 0);
    assert_eq!(sh(&snapshot("B")), 0);
    assert_eq!(
        read(&top.join("@snapshots/@persist.saved-B/data")),
        "second"
    );
}

#[test]
fn a_restore_onto_a_leftover_name_is_stopped_before_it_swallows_persist() {
    let lab = lab();
    let fs = BtrfsFixture::create(&lab, 1 << 30).expect("a loop-device Btrfs");
    let top = fs.top();
    fs.create_subvolume("@persist").unwrap();
    fs.create_subvolume("@snapshots").unwrap();
    write(&top.join("@persist/data"), "live");
    // Leftovers of an earlier attempt, each holding an older /persist.
    for leftover in ["@persist.replaced", "@persist.restored"] {
        fs.create_subvolume(leftover).unwrap();
        write(&top.join(leftover).join("data"), "older");
    }
    let restore = procedure("rollback.restore-persist");
    let commands: Vec<String> = restore
        .commands
        .iter()
        .map(|c| {
            c.line
                .trim_start_matches("sudo ")
                .replace("/btrfs_tmp", top.as_str())
        })
        .collect();
    let guards: Vec<&String> = commands
        .iter()
        .filter(|l| l.starts_with("test ! -e"))
        .collect();
    assert_eq!(guards.len(), 2, "{commands:#?}");
    assert!(guards.iter().all(|g| sh(g) == 1), "the leftovers stop it");
    // Without the guard: the writable leftover swallows the new snapshot,
    // and the swap would bring back the older /persist.
    write(&top.join("@snapshots/marker"), "");
    fs.create_subvolume("@snapshots/@persist.20260101T1200")
        .unwrap();
    write(
        &top.join("@snapshots/@persist.20260101T1200/data"),
        "snapshot",
    );
    let snapshot = commands
        .iter()
        .find(|l| l.starts_with("btrfs subvolume snapshot"))
        .expect("the snapshot")
        .replace("<snapshot>", "@persist.20260101T1200");
    assert_eq!(sh(&snapshot), 0);
    assert_eq!(read(&top.join("@persist.restored/data")), "older");
    assert!(top
        .join("@persist.restored/@persist.20260101T1200/data")
        .exists());
    // What the old rescue line did: plain mv moves @persist into the leftover.
    let swap = commands
        .iter()
        .find(|l| l.starts_with("mv -T") && l.ends_with(".replaced"))
        .expect("the swap");
    assert_ne!(sh(swap), 0, "mv -T refuses an existing directory");
    assert!(top.join("@persist/data").exists());
    assert_eq!(sh(&swap.replacen("mv -T", "mv", 1)), 0);
    assert!(top.join("@persist.replaced/@persist/data").exists());
    assert!(!top.join("@persist").exists());
}

/// `sh -c LINE` in `dir`: exit status and stdout.
fn sh_in(dir: &Utf8Path, line: &str) -> (i32, String) {
    let output = Command::new("sh")
        .arg("-c")
        .arg(line)
        .current_dir(dir)
        .output()
        .expect("running sh");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

#[test]
fn zstd_t_passes_an_empty_stream_and_the_checklists_stream_check_does_not() {
    let lab = lab();
    let fs = BtrfsFixture::create(&lab, 1 << 30).expect("a loop-device Btrfs");
    let top = fs.top();
    fs.create_subvolume("@persist").unwrap();
    fs.create_subvolume("@snapshots").unwrap();
    write(&top.join("@persist/data"), "kept");
    let reinstall = procedure("rollback.reinstall");
    assert_eq!(
        sh(&line(&reinstall, "btrfs subvolume snapshot -r", top, "A")),
        0
    );
    let check = reinstall
        .commands
        .iter()
        .find(|c| c.line.ends_with("| head -c 12"))
        .expect("the stream check");
    let test = "zstd -q -t persist-A.btrfs.zst";
    let stream = check.line.replace("<stamp>", "A");
    let scratch = tempfile::tempdir().expect("a scratch directory");
    let dir = Utf8Path::from_path(scratch.path()).expect("UTF-8");
    // What a failed ssh leaves: zstd compresses nothing into a valid frame.
    assert_eq!(sh_in(dir, "printf '' | zstd -q > persist-A.btrfs.zst").0, 0);
    assert_eq!(sh_in(dir, test).0, 0, "zstd -t passes the empty stream");
    let (status, stdout) = sh_in(dir, &stream);
    assert!(check
        .expect
        .iter()
        .any(|e| e.check(status, &stdout).is_err()));
    // A real send stream passes both.
    let send = format!(
        "btrfs send -q {top}/@snapshots/@persist.saved-A | zstd -q -f > persist-A.btrfs.zst"
    );
    assert_eq!(sh_in(dir, &send).0, 0);
    assert_eq!(sh_in(dir, test).0, 0);
    let (status, stdout) = sh_in(dir, &stream);
    assert!(
        check
            .expect
            .iter()
            .all(|e| e.check(status, &stdout).is_ok()),
        "{stdout:?}"
    );
}
