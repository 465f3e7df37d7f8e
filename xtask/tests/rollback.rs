//! The rollback script (nix/modules/btrfs-rollback/rollback.sh) on real
//! Btrfs: loop devices over sparse files, each scenario under busybox sh
//! (busybox applets), dash and bash (GNU tools). Needs root; without root,
//! btrfs-progs, busybox, dash or loop devices these tests fail and say what
//! to install. @persist is checksummed around every run.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt as _};
use std::rc::Rc;
use std::time::{Duration, SystemTime};

use camino::{Utf8Path, Utf8PathBuf};
use sha2::{Digest as _, Sha256};
use toolbox::process::{Output, Supervised};
use xtask::loop_btrfs::loopback::{
    create_subvolume_in, is_mountpoint, is_subvolume, BtrfsFixture, Lab,
};
use xtask::loop_btrfs::rollback_script::{
    old_root_name, required_tools, Interpreter, Run, Runner, Settings, Status,
};

const DAY: i64 = 86_400;
/// The fake clock: 2026-05-28T20:26:40Z.
const NOW: i64 = 1_780_000_000;
const FLOOR_NAME: &str = "20260101T000000Z";
const FIXTURE_BYTES: u64 = 384 << 20;
/// Small enough that filling its metadata takes a moment.
const SMALL_FIXTURE_BYTES: u64 = 256 << 20;

fn lab() -> Lab {
    Lab::prepare(&toolbox::context::Context::default(), &required_tools())
        .unwrap_or_else(|e| panic!("the rollback tests cannot run on this machine:\n{e:#}"))
}

fn runner(interpreter: Interpreter) -> Rc<Runner> {
    Rc::new(Runner::new(interpreter).expect("preparing the interpreter"))
}

fn name(epoch: i64) -> String {
    old_root_name(epoch, 0).unwrap()
}

fn name_n(epoch: i64, suffix: u8) -> String {
    old_root_name(epoch, suffix).unwrap()
}

/// One fresh filesystem, one interpreter, and the @persist digest.
struct Case {
    label: String,
    fs: BtrfsFixture,
    runner: Rc<Runner>,
    settings: Settings,
    persist: String,
}

impl Case {
    fn new(lab: &Lab, interpreter: Interpreter) -> Case {
        Case::with_runner(lab, runner(interpreter))
    }

    fn with_runner(lab: &Lab, runner: Rc<Runner>) -> Case {
        Case::with_size(lab, runner, FIXTURE_BYTES)
    }

    fn with_size(lab: &Lab, runner: Rc<Runner>, bytes: u64) -> Case {
        let interpreter = runner.interpreter;
        let fs = BtrfsFixture::create(lab, bytes).expect("creating a loop-device Btrfs");
        let mut settings = Settings::under(fs.scratch());
        settings.now = Some(NOW);
        fs.forget_on_drop(&settings.mountpoint);
        // @persist: files, a directory, a symlink and a nested subvolume.
        let persist = fs.create_subvolume("@persist").unwrap();
        fs::create_dir_all(persist.join("etc/ssh")).unwrap();
        fs::write(persist.join("etc/machine-id"), "0123456789abcdef\n").unwrap();
        fs::write(persist.join("etc/ssh/ssh_host_ed25519_key"), "secret\n").unwrap();
        fs::set_permissions(
            persist.join("etc/ssh/ssh_host_ed25519_key"),
            fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        symlink("machine-id", persist.join("etc/machine-id.link")).unwrap();
        fs::create_dir_all(persist.join("var/lib")).unwrap();
        fs.create_subvolume("@persist/var/lib/data").unwrap();
        fs::write(persist.join("var/lib/data/db"), vec![7u8; 100_000]).unwrap();
        let digest = tree_digest(&persist);
        Case {
            label: format!("[{}]", interpreter.name()),
            fs,
            runner,
            settings,
            persist: digest,
        }
    }

    fn top(&self) -> &Utf8Path {
        self.fs.top()
    }

    fn root(&self) -> Utf8PathBuf {
        self.top().join("@root")
    }

    fn old(&self, name: &str) -> Utf8PathBuf {
        self.top().join("@old_roots").join(name)
    }

    fn run(&self) -> Run {
        self.runner
            .run(self.fs.device(), &self.settings)
            .unwrap_or_else(|e| panic!("{} {e:#}", self.label))
    }

    /// A run that must succeed; checks the summary against the status file
    /// and that @persist did not change.
    fn run_ok(&self) -> Status {
        let run = self.run();
        assert_eq!(run.code, Some(0), "{} {}", self.label, run.transcript());
        let status = run.status().unwrap().clone();
        assert_eq!(
            status.get("result"),
            "ok",
            "{} {}",
            self.label,
            run.transcript()
        );
        assert!(
            !status.failed_marker,
            "{} failed marker after success",
            self.label
        );
        self.check_summary(&run, &status);
        self.check_persist();
        assert!(
            !is_mountpoint(&self.settings.mountpoint),
            "{} the script left {} mounted",
            self.label,
            self.settings.mountpoint
        );
        assert!(
            is_subvolume(&self.root()),
            "{} no @root after a run",
            self.label
        );
        assert_eq!(
            entries(&self.root()),
            Vec::<String>::new(),
            "{} @root is not empty",
            self.label
        );
        status
    }

    fn check_summary(&self, run: &Run, status: &Status) {
        // A run that worked says nothing alarming (btrfs-progs' errors
        // about ids it was asked to resolve after deleting them, e.g.).
        if status.get("result") == "ok" {
            assert!(
                !run.stderr.contains("ERROR"),
                "{} noise on a successful run: {}",
                self.label,
                run.transcript()
            );
        }
        let summary = run.summary().unwrap_or_else(|| {
            panic!(
                "{} stdout is not one summary line: {}",
                self.label,
                run.transcript()
            )
        });
        for key in [
            "result",
            "rotated_to",
            "deleted",
            "kept",
            "skipped",
            "clock",
            "ms",
            "message",
        ] {
            assert_eq!(
                summary.get(key).map(String::as_str),
                Some(status.get(key)),
                "{} summary and status disagree on {key}: {}",
                self.label,
                run.transcript()
            );
        }
        assert!(
            status.number("ms").is_some(),
            "{} ms is not a number",
            self.label
        );
    }

    fn check_persist(&self) {
        assert_eq!(
            tree_digest(&self.top().join("@persist")),
            self.persist,
            "{} @persist changed",
            self.label
        );
    }

    /// An old root named `name` with a marker file and nested subvolumes
    /// (paths inside the root, parents first).
    fn old_root(&self, name: &str, nested: &[&str]) {
        if !self.top().join("@old_roots").exists() {
            self.fs.create_subvolume("@old_roots").unwrap();
        }
        self.fs
            .create_subvolume(&format!("@old_roots/{name}"))
            .unwrap();
        fill_root(&self.fs, &format!("@old_roots/{name}"), name, nested);
    }

    /// @root with a marker and nested subvolumes.
    fn current_root(&self, marker: &str, nested: &[&str]) {
        if !self.root().exists() {
            self.fs.create_subvolume("@root").unwrap();
        }
        fill_root(&self.fs, "@root", marker, nested);
    }

    /// Sorted entries of @old_roots.
    fn old_roots(&self) -> Vec<String> {
        entries(&self.top().join("@old_roots"))
    }

    /// Whether the old root `name` is complete: marker and every nested subvolume.
    fn intact(&self, name: &str, marker: &str, nested: &[&str]) -> bool {
        let root = self.old(name);
        is_subvolume(&root)
            && fs::read_to_string(root.join("marker")).ok().as_deref() == Some(marker)
            && nested.iter().all(|n| {
                is_subvolume(&root.join(n))
                    && fs::read_to_string(root.join(n).join("marker"))
                        .ok()
                        .as_deref()
                        == Some(&format!("{marker}:{n}")[..])
            })
    }

    /// Subvolumes at or below @old_roots/<name>.
    fn subvolumes_of(&self, name: &str) -> Vec<String> {
        let prefix = format!("@old_roots/{name}");
        self.fs
            .subvolumes()
            .unwrap()
            .into_iter()
            .filter(|p| *p == prefix || p.starts_with(&format!("{prefix}/")))
            .collect()
    }
}

fn fill_root(fs: &BtrfsFixture, relative: &str, marker: &str, nested: &[&str]) {
    let root = fs.top().join(relative);
    fs::write(root.join("marker"), marker).unwrap();
    for n in nested {
        let path = root.join(n);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).unwrap();
        }
        fs.create_subvolume(&format!("{relative}/{n}")).unwrap();
        fs::write(path.join("marker"), format!("{marker}:{n}")).unwrap();
    }
}

fn entries(dir: &Utf8Path) -> Vec<String> {
    let Ok(read) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = read
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A digest of a tree: names, types, modes, file contents and link targets.
fn tree_digest(dir: &Utf8Path) -> String {
    let mut hasher = Sha256::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(current) = stack.pop() {
        for name in entries(&current) {
            let path = current.join(&name);
            let meta = fs::symlink_metadata(&path).unwrap();
            hasher.update(format!("{path}\0{:o}\0", meta.permissions().mode()).as_bytes());
            if meta.file_type().is_symlink() {
                hasher.update(fs::read_link(&path).unwrap().as_os_str().as_encoded_bytes());
            } else if meta.is_dir() {
                stack.push(path);
            } else {
                hasher.update(fs::read(&path).unwrap());
            }
        }
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn set_mtime(path: &Utf8Path, at: SystemTime) {
    fs::File::open(path).unwrap().set_modified(at).unwrap();
}

/// The run succeeded and deleted and kept these many old roots.
fn assert_ok_with(
    run: &xtask::loop_btrfs::rollback_script::Run,
    label: &str,
    deleted: u64,
    kept: u64,
) {
    let status = run.status().unwrap();
    assert_eq!(status.get("result"), "ok", "{label} {}", run.transcript());
    assert_eq!(
        status.number("deleted"),
        Some(deleted),
        "{label} {}",
        run.transcript()
    );
    assert_eq!(
        status.number("kept"),
        Some(kept),
        "{label} {}",
        run.transcript()
    );
}

fn for_each_interpreter(mut scenario: impl FnMut(&Case)) {
    let lab = lab();
    for interpreter in Interpreter::ALL {
        let case = Case::new(&lab, interpreter);
        scenario(&case);
    }
}

// --- Scenarios -----------------------------------------------------------

#[test]
fn first_boot_then_a_normal_rotation() {
    for_each_interpreter(|case| {
        let l = &case.label;
        let status = case.run_ok();
        assert_eq!(status.get("rotated_to"), "", "{l}");
        assert_eq!(status.number("deleted"), Some(0), "{l}");
        assert_eq!(status.number("kept"), Some(0), "{l}");
        assert_eq!(status.number("skipped"), Some(0), "{l}");
        assert_eq!(status.get("clock"), "ok", "{l}");
        assert!(
            is_subvolume(&case.top().join("@old_roots")),
            "{l} no @old_roots"
        );
        assert_eq!(
            entries(case.top()),
            ["@old_roots", "@persist", "@root"],
            "{l}"
        );
        assert!(case.old_roots().is_empty(), "{l}");

        case.current_root("boot 1", &["var/lib/machines"]);
        let mut settings = case.settings.clone();
        settings.now = Some(NOW + 60);
        let run = case.runner.run(case.fs.device(), &settings).unwrap();
        let status = run.status().unwrap();
        assert_eq!(status.get("result"), "ok", "{l} {}", run.transcript());
        assert_eq!(status.get("rotated_to"), name(NOW + 60), "{l}");
        assert_eq!(status.number("kept"), Some(1), "{l}");
        assert!(
            run.stdout.starts_with(&format!(
                "btrfs-rollback: result=ok rotated_to={} deleted=0 kept=1 ",
                name(NOW + 60)
            )),
            "{l} {}",
            run.transcript()
        );
        assert!(
            case.intact(&name(NOW + 60), "boot 1", &["var/lib/machines"]),
            "{l}"
        );
        assert!(is_subvolume(&case.root()), "{l}");
        assert!(
            entries(&case.root()).is_empty(),
            "{l} the new root is not empty"
        );
        case.check_persist();
    });
}

#[test]
fn three_rotations_in_the_same_second() {
    for_each_interpreter(|case| {
        let l = &case.label;
        case.run_ok();
        let expected = [name(NOW), name_n(NOW, 1), name_n(NOW, 2)];
        for (i, want) in expected.iter().enumerate() {
            case.current_root(&format!("boot {i}"), &[]);
            let status = case.run_ok();
            assert_eq!(status.get("rotated_to"), want, "{l}");
        }
        assert_eq!(case.old_roots(), expected, "{l}");
        for (i, want) in expected.iter().enumerate() {
            assert!(case.intact(want, &format!("boot {i}"), &[]), "{l} {want}");
            // Nothing nested: each holds only its marker.
            assert_eq!(entries(&case.old(want)), ["marker"], "{l} {want}");
        }
    });
}

#[test]
fn an_old_mtime_is_not_an_old_root() {
    for_each_interpreter(|case| {
        let l = &case.label;
        let forty_days_ago = SystemTime::UNIX_EPOCH + Duration::from_secs((NOW - 40 * DAY) as u64);
        case.old_root(&name(NOW - DAY), &[]);
        set_mtime(&case.old(&name(NOW - DAY)).join("marker"), forty_days_ago);
        set_mtime(&case.old(&name(NOW - DAY)), forty_days_ago);
        case.current_root("untouched for 40 days", &[]);
        set_mtime(&case.root().join("marker"), forty_days_ago);
        set_mtime(&case.root(), forty_days_ago);
        case.fs.sync().unwrap();

        let mut keep_none = case.settings.clone();
        keep_none.keep_at_least = Some(0);
        let run = case.runner.run(case.fs.device(), &keep_none).unwrap();
        let status = run.status().unwrap();
        assert_eq!(status.get("result"), "ok", "{l} {}", run.transcript());
        assert_eq!(
            status.number("deleted"),
            Some(0),
            "{l} {}",
            run.transcript()
        );
        assert!(case.intact(&name(NOW - DAY), &name(NOW - DAY), &[]), "{l}");
        assert!(case.intact(&name(NOW), "untouched for 40 days", &[]), "{l}");

        // And on the next boot, the root that sat still for 40 days is one day old.
        keep_none.now = Some(NOW + DAY);
        let run = case.runner.run(case.fs.device(), &keep_none).unwrap();
        assert_eq!(
            run.status().unwrap().number("deleted"),
            Some(0),
            "{l} {}",
            run.transcript()
        );
        assert!(case.intact(&name(NOW), "untouched for 40 days", &[]), "{l}");
        case.check_persist();
    });
}

#[test]
fn retention_at_29_and_31_days() {
    for_each_interpreter(|case| {
        let l = &case.label;
        for (age, nested) in [
            (31, &["var/lib/machines"][..]),
            (30, &[][..]),
            (29, &[][..]),
        ] {
            case.old_root(&name(NOW - age * DAY), nested);
        }
        case.current_root("current", &[]);
        let mut settings = case.settings.clone();
        settings.keep_at_least = Some(0);
        settings.retention_days = Some(30);
        let run = case.runner.run(case.fs.device(), &settings).unwrap();
        assert_ok_with(&run, l, 1, 3);
        assert_eq!(
            case.old_roots(),
            [name(NOW - 30 * DAY), name(NOW - 29 * DAY), name(NOW)],
            "{l} only the 31-day-old root goes (exactly 30 days is not past)"
        );
        assert!(case.subvolumes_of(&name(NOW - 31 * DAY)).is_empty(), "{l}");
        assert!(
            case.intact(&name(NOW - 29 * DAY), &name(NOW - 29 * DAY), &[]),
            "{l}"
        );
        case.check_persist();
    });
}

#[test]
fn keep_at_least_protects_the_newest_whatever_their_age() {
    for_each_interpreter(|case| {
        let l = &case.label;
        // The server was off for two months: every old root is past retention.
        for age in [90, 80, 70, 61] {
            case.old_root(&name(NOW - age * DAY), &["srv"]);
        }
        case.current_root("current", &[]);
        let mut settings = case.settings.clone();
        settings.keep_at_least = Some(3);
        let run = case.runner.run(case.fs.device(), &settings).unwrap();
        assert_ok_with(&run, l, 2, 3);
        assert_eq!(
            case.old_roots(),
            [name(NOW - 70 * DAY), name(NOW - 61 * DAY), name(NOW)],
            "{l} the three newest stay (the one just moved counts)"
        );
        for age in [70, 61] {
            assert!(
                case.intact(&name(NOW - age * DAY), &name(NOW - age * DAY), &["srv"]),
                "{l}"
            );
        }

        // With the default (5), the rest survive the next boot too.
        case.current_root("next", &[]);
        settings.keep_at_least = None;
        settings.now = Some(NOW + DAY);
        let run = case.runner.run(case.fs.device(), &settings).unwrap();
        assert_eq!(
            run.status().unwrap().number("deleted"),
            Some(0),
            "{l} {}",
            run.transcript()
        );
        assert_eq!(case.old_roots().len(), 4, "{l}");
        case.check_persist();
    });
}

#[test]
fn a_clock_in_1970_deletes_nothing_and_names_after_the_newest() {
    for_each_interpreter(|case| {
        let l = &case.label;
        case.old_root(&name(NOW - 40 * DAY), &[]);
        case.old_root(&name(NOW - 10 * DAY), &[]);
        case.current_root("current", &[]);
        let mut settings = case.settings.clone();
        settings.now = Some(100 * DAY);
        settings.keep_at_least = Some(0);
        let run = case.runner.run(case.fs.device(), &settings).unwrap();
        let status = run.status().unwrap();
        assert_eq!(status.get("result"), "ok", "{l} {}", run.transcript());
        assert_eq!(status.get("clock"), "implausible", "{l}");
        assert_eq!(status.number("deleted"), Some(0), "{l}");
        assert_eq!(status.get("rotated_to"), name_n(NOW - 10 * DAY, 1), "{l}");
        assert!(
            run.stderr.contains("btrfs-rollback: warning: the clock"),
            "{l} {}",
            run.transcript()
        );
        assert!(
            case.intact(&name(NOW - 40 * DAY), &name(NOW - 40 * DAY), &[]),
            "{l}"
        );

        // Once the clock is right again, the 40-day-old root goes; the root
        // named during the bad clock is as old as the newest before it.
        settings.now = Some(NOW);
        let status = case.run_with(&settings);
        assert_eq!(status.get("clock"), "ok", "{l}");
        assert_eq!(status.number("deleted"), Some(1), "{l}");
        assert_eq!(
            case.old_roots(),
            [name(NOW - 10 * DAY), name_n(NOW - 10 * DAY, 1), name(NOW)],
            "{l}"
        );
    });
}

#[test]
fn a_bad_clock_on_an_empty_old_roots_uses_the_floor() {
    for_each_interpreter(|case| {
        let l = &case.label;
        case.current_root("current", &[]);
        let mut settings = case.settings.clone();
        settings.now = Some(0);
        let status = case.run_with(&settings);
        assert_eq!(status.get("clock"), "implausible", "{l}");
        assert_eq!(status.get("rotated_to"), FLOOR_NAME, "{l}");
        case.current_root("again", &[]);
        let status = case.run_with(&settings);
        assert_eq!(status.get("rotated_to"), format!("{FLOOR_NAME}-01"), "{l}");
    });
}

#[test]
fn a_clock_before_1970_from_date_still_rotates() {
    // busybox sh runs its own `date` applet, so only dash and bash can be
    // given this `date`.
    let lab = lab();
    for interpreter in [Interpreter::Dash, Interpreter::Bash] {
        let case = Case::new(&lab, interpreter);
        let l = &case.label;
        let path = tempfile::tempdir().unwrap();
        for entry in fs::read_dir(case.runner.tool_dir()).unwrap() {
            let entry = entry.unwrap();
            if entry.file_name() != "date" {
                symlink(entry.path(), path.path().join(entry.file_name())).unwrap();
            }
        }
        let date = path.path().join("date");
        fs::write(&date, "#!/bin/sh\necho -86400\n").unwrap();
        fs::set_permissions(&date, fs::Permissions::from_mode(0o755)).unwrap();
        case.old_root(&name(NOW - 40 * DAY), &[]);
        case.current_root("current", &[]);
        let mut settings = case.settings.clone();
        settings.now = None;
        settings.keep_at_least = Some(0);
        let command = case.runner.command(
            case.fs.device(),
            &settings,
            false,
            Some(Utf8Path::from_path(path.path()).unwrap()),
        );
        let run = case.runner.run_command(command, &settings).unwrap();
        let status = run.status().unwrap();
        assert_eq!(status.get("result"), "ok", "{l} {}", run.transcript());
        assert_eq!(status.get("clock"), "implausible", "{l}");
        assert_eq!(status.get("rotated_to"), name_n(NOW - 40 * DAY, 1), "{l}");
        assert_eq!(status.number("deleted"), Some(0), "{l}");
        case.check_persist();
    }
}

#[test]
fn a_clock_in_the_far_future_deletes_nothing() {
    for_each_interpreter(|case| {
        let l = &case.label;
        case.old_root(&name(NOW - 40 * DAY), &[]);
        case.current_root("current", &[]);
        let mut settings = case.settings.clone();
        settings.keep_at_least = Some(0);
        // 2100-01-01T03:25:45Z: past the ceiling.
        settings.now = Some(4_102_444_800 + 12_345);
        let status = case.run_with(&settings);
        assert_eq!(status.get("clock"), "implausible", "{l}");
        assert_eq!(status.number("deleted"), Some(0), "{l}");
        assert_eq!(status.get("rotated_to"), name_n(NOW - 40 * DAY, 1), "{l}");
        assert!(
            case.intact(&name(NOW - 40 * DAY), &name(NOW - 40 * DAY), &[]),
            "{l}"
        );
    });
}

/// The plausible range to the second, with old roots past retention on
/// hand so that a clock wrongly trusted deletes: a name from 2025 (names run
/// from 1970) is not behind a clock a second before 2026.
#[test]
fn the_clock_floor_and_ceiling_to_the_second() {
    const FLOOR: i64 = 1_767_225_600;
    const CEILING: i64 = 4_102_444_800;
    for_each_interpreter(|case| {
        let l = &case.label;
        let old_2025 = "20250601T000000Z";
        case.old_root(old_2025, &[]);
        case.current_root("current", &[]);
        let mut settings = case.settings.clone();
        settings.keep_at_least = Some(0);
        let mut at = |now: i64, clock: &str, rotated_to: &str, deleted: u64| {
            settings.now = Some(now);
            let status = case.run_with(&settings);
            assert_eq!(status.get("clock"), clock, "{l} at {now}");
            assert_eq!(status.get("rotated_to"), rotated_to, "{l} at {now}");
            assert_eq!(status.number("deleted"), Some(deleted), "{l} at {now}");
            case.check_persist();
        };
        // 2025-12-31T23:59:59Z: before the floor, though after every name.
        at(FLOOR - 1, "implausible", &format!("{old_2025}-01"), 0);
        assert!(case.old(old_2025).exists(), "{l}");
        // The floor's own second: trusted; both 2025 roots are past retention.
        at(FLOOR, "ok", FLOOR_NAME, 2);
        // The last second before 2100: trusted.
        at(CEILING - 1, "ok", "20991231T235959Z", 1);
        // 2100-01-01T00:00:00Z: not trusted; a root 40 days before the
        // newest is kept.
        case.old_root("20991122T000000Z", &[]);
        at(CEILING, "implausible", "20991231T235959Z-01", 0);
        assert!(case.old("20991122T000000Z").exists(), "{l}");
    });
}

#[test]
fn a_clock_behind_the_newest_old_root_deletes_nothing() {
    for_each_interpreter(|case| {
        let l = &case.label;
        case.old_root(&name(NOW - 40 * DAY), &[]);
        case.old_root(&name_n(NOW + DAY, 99), &[]);
        case.current_root("current", &[]);
        let mut settings = case.settings.clone();
        settings.keep_at_least = Some(0);
        let status = case.run_with(&settings);
        assert_eq!(status.get("clock"), "implausible", "{l}");
        assert_eq!(status.number("deleted"), Some(0), "{l}");
        // After suffix 99 comes the next second.
        assert_eq!(status.get("rotated_to"), name(NOW + DAY + 1), "{l}");
        assert!(
            case.intact(&name(NOW - 40 * DAY), &name(NOW - 40 * DAY), &[]),
            "{l}"
        );
    });
}

#[test]
fn nested_subvolumes_two_levels_deep() {
    let nested = ["var/lib/machines", "var/lib/machines/inner", "srv/data"];
    for_each_interpreter(|case| {
        let l = &case.label;
        for age in [40, 35, 1] {
            case.old_root(&name(NOW - age * DAY), &nested);
        }
        case.current_root("current", &nested);
        let mut settings = case.settings.clone();
        settings.keep_at_least = Some(0);
        let status = case.run_with(&settings);
        assert_eq!(status.number("deleted"), Some(2), "{l}");
        for age in [40, 35] {
            assert!(
                case.subvolumes_of(&name(NOW - age * DAY)).is_empty(),
                "{l} {age} days"
            );
            assert!(!case.old(&name(NOW - age * DAY)).exists(), "{l}");
        }
        assert!(
            case.intact(&name(NOW - DAY), &name(NOW - DAY), &nested),
            "{l}"
        );
        assert!(case.intact(&name(NOW), "current", &nested), "{l}");
        assert_eq!(case.subvolumes_of(&name(NOW)).len(), 4, "{l}");
    });
}

#[test]
fn entries_that_are_not_old_roots_are_left_and_reported() {
    for_each_interpreter(|case| {
        let l = &case.label;
        case.old_root(&name(NOW - 40 * DAY), &[]);
        let old_roots = case.top().join("@old_roots");
        fs::write(old_roots.join("notes.txt"), "hello").unwrap();
        fs::create_dir(old_roots.join("manual-backup")).unwrap();
        fs::write(old_roots.join("manual-backup/file"), "data").unwrap();
        // Our name, old, but a plain directory.
        fs::create_dir(old_roots.join(name(NOW - 60 * DAY))).unwrap();
        fs::write(old_roots.join(name(NOW - 60 * DAY)).join("file"), "data").unwrap();
        // Subvolumes with names that are not ours.
        case.fs.create_subvolume("@old_roots/keep-me").unwrap();
        case.fs
            .create_subvolume(&format!("@old_roots/{}-00", name(NOW - 50 * DAY)))
            .unwrap();
        // Our shape, but no such time: 30 February, month 13, hour 24.
        for impossible in ["20250230T000000Z", "20251301T000000Z", "20250101T240000Z"] {
            case.fs
                .create_subvolume(&format!("@old_roots/{impossible}"))
                .unwrap();
        }
        // A symlink to @persist: never followed.
        symlink("../@persist", old_roots.join(name(NOW - 45 * DAY))).unwrap();
        case.current_root("current", &[]);
        let before: BTreeSet<String> = case.old_roots().into_iter().collect();

        let mut settings = case.settings.clone();
        settings.keep_at_least = Some(0);
        let run = case.runner.run(case.fs.device(), &settings).unwrap();
        let status = run.status().unwrap();
        assert_eq!(status.get("result"), "ok", "{l} {}", run.transcript());
        assert_eq!(
            status.number("skipped"),
            Some(9),
            "{l} {}",
            run.transcript()
        );
        assert_eq!(status.number("deleted"), Some(1), "{l}");
        assert!(
            run.stderr.contains("btrfs-rollback: warning: "),
            "{l} {}",
            run.transcript()
        );
        assert!(run.stderr.contains("keep-me"), "{l} {}", run.transcript());
        let after: BTreeSet<String> = case.old_roots().into_iter().collect();
        let mut expected = before.clone();
        expected.remove(&name(NOW - 40 * DAY));
        expected.insert(name(NOW));
        assert_eq!(after, expected, "{l}");
        assert_eq!(
            fs::read_to_string(old_roots.join("manual-backup/file")).unwrap(),
            "data"
        );
        assert_eq!(
            fs::read_to_string(old_roots.join(name(NOW - 60 * DAY)).join("file")).unwrap(),
            "data"
        );
        assert!(is_subvolume(&old_roots.join("keep-me")), "{l}");
        case.check_persist();
    });
}

#[test]
fn names_and_ages_at_calendar_edges() {
    // 2028-02-29T23:59:59Z, 2028-03-01T00:00:00Z, 2030-12-31T23:59:59Z, 2099-12-31T23:59:59Z.
    let moments = [1_835_481_599, 1_835_481_600, 1_924_991_999, 4_102_444_799];
    for_each_interpreter(|case| {
        let l = &case.label;
        case.run_ok();
        for now in moments {
            let mut settings = case.settings.clone();
            settings.now = Some(now);
            case.current_root("edge", &[]);
            let status = case.run_with(&settings);
            assert_eq!(status.get("rotated_to"), name(now), "{l} at {now}");
            assert_eq!(status.get("clock"), "ok", "{l} at {now}");
        }
    });
    // Ages from names across a leap day: exactly 31 days + 1 s goes, 31 days - 1 s stays.
    for_each_interpreter(|case| {
        let l = &case.label;
        let leap_noon = 1_835_438_400; // 2028-02-29T12:00:00Z
        case.old_root(&name_n(leap_noon, 5), &[]);
        case.old_root(&name(leap_noon + 2), &[]);
        case.current_root("current", &[]);
        let mut settings = case.settings.clone();
        settings.keep_at_least = Some(0);
        settings.retention_days = Some(31);
        settings.now = Some(leap_noon + 31 * DAY + 1);
        let status = case.run_with(&settings);
        assert_eq!(status.number("deleted"), Some(1), "{l}");
        assert_eq!(
            case.old_roots(),
            [name(leap_noon + 2), name(leap_noon + 31 * DAY + 1)],
            "{l}"
        );
    });
}

#[test]
fn failures_are_reported_and_marked() {
    for_each_interpreter(|case| {
        let l = &case.label;
        // A device that is not there: nothing is touched.
        let run = case
            .runner
            .run(Utf8Path::new("/dev/xtask-no-such-device"), &case.settings)
            .unwrap();
        let status = run.status().unwrap();
        assert_ne!(run.code, Some(0), "{l} {}", run.transcript());
        assert_eq!(status.get("result"), "failed", "{l}");
        assert!(status.failed_marker, "{l} no failed marker");
        assert!(
            run.stdout.starts_with("btrfs-rollback: result=failed "),
            "{l} {}",
            run.transcript()
        );
        assert_eq!(run.stdout.lines().count(), 1, "{l} {}", run.transcript());

        // A plain directory where @root should be: left as it is.
        fs::create_dir(case.root()).unwrap();
        fs::write(case.root().join("file"), "x").unwrap();
        let run = case.run();
        let status = run.status().unwrap();
        assert_eq!(status.get("result"), "failed", "{l} {}", run.transcript());
        assert!(
            status.get("message").contains("not a subvolume"),
            "{l} {}",
            run.transcript()
        );
        assert_eq!(entries(&case.root()), ["file"], "{l}");
        assert!(case.old_roots().is_empty(), "{l}");
        assert!(
            !is_mountpoint(&case.settings.mountpoint),
            "{l} left mounted"
        );

        // A bad setting stops before anything is mounted.
        let mut settings = case.settings.clone();
        settings.old_roots_subvolume = Some("a/b".to_owned());
        let run = case.runner.run(case.fs.device(), &settings).unwrap();
        assert_eq!(
            run.status().unwrap().get("result"),
            "failed",
            "{l} {}",
            run.transcript()
        );
        assert!(!is_mountpoint(&case.settings.mountpoint), "{l}");

        // A later good run replaces the marker.
        fs::remove_dir_all(case.root()).unwrap();
        let status = case.run_ok();
        assert!(!status.failed_marker, "{l}");
        case.check_persist();
    });
}

#[test]
fn other_subvolume_names_are_honoured() {
    for_each_interpreter(|case| {
        let l = &case.label;
        case.fs.create_subvolume("root").unwrap();
        fs::write(case.top().join("root/marker"), "x").unwrap();
        let mut settings = case.settings.clone();
        settings.root_subvolume = Some("root".to_owned());
        settings.old_roots_subvolume = Some("old".to_owned());
        let status = case.run_with(&settings);
        assert_eq!(status.get("rotated_to"), name(NOW), "{l}");
        assert_eq!(
            fs::read_to_string(case.top().join("old").join(name(NOW)).join("marker")).unwrap(),
            "x"
        );
        assert!(!case.top().join("@root").exists(), "{l} touched @root");
    });
}

impl Case {
    /// `run_ok` with other settings (the @root emptiness check included).
    fn run_with(&self, settings: &Settings) -> Status {
        let run = self
            .runner
            .run(self.fs.device(), settings)
            .unwrap_or_else(|e| panic!("{} {e:#}", self.label));
        assert_eq!(run.code, Some(0), "{} {}", self.label, run.transcript());
        let status = run.status().unwrap().clone();
        assert_eq!(
            status.get("result"),
            "ok",
            "{} {}",
            self.label,
            run.transcript()
        );
        self.check_summary(&run, &status);
        self.check_persist();
        let root = self
            .top()
            .join(settings.root_subvolume.as_deref().unwrap_or("@root"));
        assert!(is_subvolume(&root), "{} no root after a run", self.label);
        assert!(
            entries(&root).is_empty(),
            "{} the root is not empty",
            self.label
        );
        status
    }
}

// --- Process calls -----------------------------------------------------------

/// Wrappers in place of each tool: they log every call and, at call
/// `XTASK_HOOK_CRASH_AT`, kill the whole run (its process group) before the
/// tool runs, or, with `XTASK_HOOK_HALF=1` on a `btrfs subvolume delete`,
/// after deleting the first half of its paths; at call `XTASK_HOOK_FAIL_AT`
/// the tool fails (exit 1) without running. The script is unchanged.
struct Hooks {
    dir: tempfile::TempDir,
}

impl Hooks {
    fn new(runner: &Runner) -> Hooks {
        let dir = tempfile::tempdir().unwrap();
        for entry in fs::read_dir(runner.tool_dir()).unwrap() {
            let entry = entry.unwrap();
            let program = entry.file_name().to_string_lossy().into_owned();
            let real = entry.path();
            let wrapper = format!(
                r#"#!/bin/sh
n=0
# The run's process group, from the first call (made by the script itself):
# a tool under GNU timeout is in a group of its own.
if [ ! -s "$XTASK_HOOK_COUNTER.group" ]; then
    read -r _ _ _ _ group _ < /proc/$$/stat
    echo "$group" > "$XTASK_HOOK_COUNTER.group"
fi
read -r group < "$XTASK_HOOK_COUNTER.group"
[ -r "$XTASK_HOOK_COUNTER" ] && read -r n < "$XTASK_HOOK_COUNTER"
n=$((n + 1))
echo "$n" > "$XTASK_HOOK_COUNTER"
echo "{program} $*" >> "$XTASK_HOOK_LOG"
if [ "$n" -eq "${{XTASK_HOOK_FAIL_AT:-0}}" ]; then
    # As a full filesystem fails (the script reads the cause from the error).
    echo "xtask hook: call $n ({program}) fails: No space left on device" >&2
    exit 1
fi
if [ "$n" -eq "${{XTASK_HOOK_CRASH_AT:-0}}" ]; then
    if [ "${{XTASK_HOOK_HALF:-}}" = 1 ] && [ "${{1:-}} ${{2:-}}" = "subvolume delete" ]; then
        shift 2
        half=$((($# + 1) / 2))
        i=0
        for p in "$@"; do
            i=$((i + 1))
            [ "$i" -le "$half" ] || break
            '{real}' subvolume delete "$p" >/dev/null
        done
    fi
    kill -KILL -"$group" 0
fi
exec '{real}' "$@"
"#,
                real = real.display()
            );
            let path = dir.path().join(&program);
            fs::write(&path, wrapper).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        }
        Hooks { dir }
    }

    fn path(&self) -> &Utf8Path {
        Utf8Path::from_path(self.dir.path()).unwrap()
    }

    /// Runs with the hooks; returns the run and the logged calls.
    fn run(
        &self,
        case: &Case,
        settings: &Settings,
        crash_at: usize,
        half: bool,
    ) -> (Run, Vec<String>) {
        self.run_faulty(case, settings, crash_at, half, 0)
    }

    /// `run`, and call `fail_at` fails.
    fn run_faulty(
        &self,
        case: &Case,
        settings: &Settings,
        crash_at: usize,
        half: bool,
        fail_at: usize,
    ) -> (Run, Vec<String>) {
        let counter = case.fs.scratch().join("hook-counter");
        let log = case.fs.scratch().join("hook-log");
        let _ = fs::remove_file(&counter);
        let _ = fs::remove_file(format!("{counter}.group"));
        let _ = fs::remove_file(&log);
        let command = case
            .runner
            .command(case.fs.device(), settings, false, Some(self.path()))
            .env("XTASK_HOOK_COUNTER", &counter)
            .env("XTASK_HOOK_LOG", &log)
            .env("XTASK_HOOK_CRASH_AT", crash_at.to_string())
            .env("XTASK_HOOK_HALF", if half { "1" } else { "0" })
            .env("XTASK_HOOK_FAIL_AT", fail_at.to_string())
            // Its own process group: `kill 0` must not reach the test.
            .own_process_group();
        let run = case.runner.run_command(command, settings).unwrap();
        let calls = fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect();
        (run, calls)
    }
}

#[test]
fn process_calls_do_not_grow_with_old_roots() {
    let lab = lab();
    for interpreter in Interpreter::ALL {
        let mut counts = Vec::new();
        for roots in [3, 40] {
            let case = Case::new(&lab, interpreter);
            let l = &case.label;
            for i in 0..roots {
                case.old_root(&name(NOW - (40 + i) * DAY), &["var/lib/machines"]);
            }
            case.current_root("current", &[]);
            let hooks = Hooks::new(&case.runner);
            let mut settings = case.settings.clone();
            settings.keep_at_least = Some(0);
            let (run, calls) = hooks.run(&case, &settings, 0, false);
            let status = run.status().unwrap();
            assert_eq!(status.get("result"), "ok", "{l} {}", run.transcript());
            assert_eq!(status.number("deleted"), Some(roots as u64), "{l}");
            let btrfs: Vec<&String> = calls.iter().filter(|c| c.starts_with("btrfs ")).collect();
            assert_eq!(btrfs.len(), 4, "{l} create, list, delete, sync: {btrfs:#?}");
            assert!(
                btrfs
                    .iter()
                    .any(|c| c.starts_with("btrfs subvolume delete ")),
                "{l} {btrfs:#?}"
            );
            counts.push(calls.len());
        }
        assert_eq!(
            counts[0],
            counts[1],
            "[{}] process calls grew with the number of old roots",
            interpreter.name()
        );
    }
}

// --- Crashes -------------------------------------------------------------------

/// The crash scenario, small because it runs once per traced line: an old
/// root past retention with subvolumes nested two levels deep, a recent
/// one, a file, and a root with a nested subvolume; keepAtLeast 1.
const PAST: [(i64, &[&str]); 1] = [(40, &["a", "a/b"])];
const RECENT: [(i64, &[&str]); 1] = [(2, &["d"])];
const CURRENT_NESTED: &[&str] = &["var/lib/machines"];

fn crash_case(lab: &Lab, runner: &Rc<Runner>) -> (Case, Settings) {
    let case = Case::with_runner(lab, Rc::clone(runner));
    for (age, nested) in PAST.iter().chain(RECENT.iter()) {
        case.old_root(&name(NOW - age * DAY), nested);
    }
    fs::write(case.top().join("@old_roots/notes.txt"), "keep").unwrap();
    case.current_root("current", CURRENT_NESTED);
    let mut settings = case.settings.clone();
    settings.keep_at_least = Some(1);
    (case, settings)
}

/// Where the content of the root that was current before the crash is.
fn holders_of_current(case: &Case) -> Vec<Utf8PathBuf> {
    let mut places = Vec::new();
    if fs::read_to_string(case.root().join("marker"))
        .ok()
        .as_deref()
        == Some("current")
    {
        places.push(case.root());
    }
    for n in case.old_roots() {
        if fs::read_to_string(case.old(&n).join("marker"))
            .ok()
            .as_deref()
            == Some("current")
        {
            places.push(case.old(&n));
        }
    }
    places
}

/// After a crash at `at` and one normal run: the invariants.
fn check_after_crash(case: &Case, settings: &Settings, at: &str) {
    let l = format!("{} crash at {at}:", case.label);
    // Right after the crash: the current root is in exactly one place.
    let holders = holders_of_current(case);
    assert_eq!(holders.len(), 1, "{l} the current root is at {holders:?}");
    case.check_persist();

    // A reboot: the crashed run's mount is gone.
    case.fs.unmount_all(&settings.mountpoint).unwrap();
    let run = case.runner.run(case.fs.device(), settings).unwrap();
    let status = run.status().unwrap();
    assert_eq!(status.get("result"), "ok", "{l} {}", run.transcript());

    assert_eq!(
        entries(case.top()),
        ["@old_roots", "@persist", "@root"],
        "{l}"
    );
    assert!(is_subvolume(&case.root()), "{l} no @root");
    assert!(entries(&case.root()).is_empty(), "{l} @root not fresh");
    case.check_persist();
    let subvolumes = case.fs.subvolumes().unwrap();
    for (age, _) in PAST {
        let past = format!("@old_roots/{}", name(NOW - age * DAY));
        assert!(
            !subvolumes
                .iter()
                .any(|p| *p == past || p.starts_with(&format!("{past}/"))),
            "{l} {age}-day root left: {subvolumes:#?}"
        );
        assert!(
            !case.old(&name(NOW - age * DAY)).exists(),
            "{l} {age}-day root left"
        );
    }
    for (age, nested) in RECENT {
        assert!(
            case.intact(&name(NOW - age * DAY), &name(NOW - age * DAY), nested),
            "{l} {age}-day root damaged"
        );
    }
    assert_eq!(
        fs::read_to_string(case.top().join("@old_roots/notes.txt")).unwrap(),
        "keep",
        "{l}"
    );
    let holders = holders_of_current(case);
    assert_eq!(holders.len(), 1, "{l} the current root is at {holders:?}");
    let moved_to = holders[0].file_name().unwrap().to_owned();
    assert!(case.intact(&moved_to, "current", CURRENT_NESTED), "{l}");
    // Anything else is a fresh root rotated again after the crash: empty, named after.
    for n in case.old_roots() {
        let known = n == "notes.txt"
            || n == moved_to
            || RECENT.iter().any(|(age, _)| n == name(NOW - age * DAY));
        if !known {
            assert!(n.starts_with(&name(NOW)), "{l} unexpected {n}");
            assert!(
                is_subvolume(&case.old(&n)) && entries(&case.old(&n)).is_empty(),
                "{l} {n} is not an empty root"
            );
        }
    }
    for path in &subvolumes {
        let allowed = path == "@root"
            || path == "@old_roots"
            || path.starts_with("@persist")
            || path.starts_with("@old_roots/");
        assert!(allowed, "{l} stray subvolume {path}");
    }
}

/// One test per interpreter, so that the slow crash tests run in parallel.
macro_rules! per_interpreter {
    ($module:ident, $scenario:ident) => {
        mod $module {
            use super::*;

            #[test]
            fn busybox_sh() {
                $scenario(Interpreter::Busybox)
            }

            #[test]
            fn dash() {
                $scenario(Interpreter::Dash)
            }

            #[test]
            fn bash() {
                $scenario(Interpreter::Bash)
            }
        }
    };
}

per_interpreter!(
    a_crash_before_any_command_is_finished_by_the_next_run,
    crash_before_each_command
);
per_interpreter!(
    a_kill_at_every_traced_line_is_finished_by_the_next_run,
    kill_at_every_traced_line
);

fn crash_before_each_command(interpreter: Interpreter) {
    let lab = lab();
    let runner = runner(interpreter);
    {
        // How many tool calls a whole run makes.
        let (case, settings) = crash_case(&lab, &runner);
        let hooks = Hooks::new(&case.runner);
        let (run, calls) = hooks.run(&case, &settings, 0, false);
        assert_eq!(
            run.status().unwrap().get("result"),
            "ok",
            "{}",
            run.transcript()
        );
        // busybox sh runs its own applets without PATH, so only btrfs is
        // hooked there; the traced-line test covers every line of it.
        let mut wanted = vec![
            "btrfs subvolume create",
            "btrfs subvolume delete",
            "btrfs filesystem sync",
        ];
        if interpreter != Interpreter::Busybox {
            wanted.extend(["mount ", "mv ", "umount "]);
        }
        for want in wanted {
            assert!(
                calls.iter().any(|c| c.starts_with(want)),
                "[{}] no call of {want:?} among {calls:#?}",
                interpreter.name()
            );
        }
        drop(case);
        for k in 1..=calls.len() {
            let halves: &[bool] = if calls[k - 1].starts_with("btrfs subvolume delete") {
                &[false, true]
            } else {
                &[false]
            };
            for &half in halves {
                let (case, settings) = crash_case(&lab, &runner);
                let hooks = Hooks::new(&case.runner);
                let (run, _) = hooks.run(&case, &settings, k, half);
                assert_eq!(
                    run.code,
                    None,
                    "{} call {k} was not killed: {}",
                    case.label,
                    run.transcript()
                );
                let at = format!(
                    "call {k} ({}){}",
                    calls[k - 1],
                    if half { ", half done" } else { "" }
                );
                if half {
                    // The kill came in the middle: some paths went, the roots did not all go.
                    let left: usize = PAST
                        .iter()
                        .map(|(age, _)| case.subvolumes_of(&name(NOW - age * DAY)).len())
                        .sum();
                    assert!(
                        left > 0 && left < 3,
                        "{} {at}: {left} subvolumes of the past root left",
                        case.label
                    );
                }
                check_after_crash(&case, &settings, &at);
            }
        }
    }
}

fn kill_at_every_traced_line(interpreter: Interpreter) {
    let lab = lab();
    let runner = runner(interpreter);
    {
        let (case, settings) = crash_case(&lab, &runner);
        let lines = traced_run(&case, &settings, usize::MAX);
        assert!(lines > 50, "{} only {lines} traced lines", case.label);
        drop(case);
        for k in 1..=lines {
            let (case, settings) = crash_case(&lab, &runner);
            traced_run(&case, &settings, k);
            check_after_crash(&case, &settings, &format!("traced line {k} of {lines}"));
        }
    }
}

/// Runs under `-x` and SIGKILLs the run's process group when the `kill_at`-th
/// traced line appears; returns how many traced lines were seen.
fn traced_run(case: &Case, settings: &Settings, kill_at: usize) -> usize {
    let (traced, lines) = std::sync::mpsc::channel::<Vec<u8>>();
    let running = case
        .runner
        .command(case.fs.device(), settings, true, None)
        .own_process_group()
        .stdout(Output::Null)
        .stderr(Output::lines(move |line| {
            let _ = traced.send(line.to_vec());
        }))
        .spawn()
        .unwrap();
    let group = running.pid().unwrap() as libc::pid_t;
    let mut seen = 0;
    // Ends when the reader has read all of stderr (it holds the sender).
    for line in lines {
        if line.first() == Some(&b'+') {
            seen += 1;
            if seen == kill_at {
                // SAFETY: kill(2) on the run's own process group, created above.
                let killed = unsafe { libc::kill(-group, libc::SIGKILL) };
                assert_eq!(killed, 0, "{} could not kill the run", case.label);
                break;
            }
        }
    }
    running.wait().unwrap();
    wait_until_gone(group);
    seen
}

/// Waits until no live process is left in the process group (a killed
/// `mount` or `btrfs` may still be leaving the kernel), as after a power cut.
fn wait_until_gone(group: libc::pid_t) {
    for _ in 0..1000 {
        if !group_alive(group) {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("process group {group} is still alive 5 s after SIGKILL");
}

/// Whether a process that is not a zombie is in the group (from /proc).
fn group_alive(group: libc::pid_t) -> bool {
    let Ok(processes) = fs::read_dir("/proc") else {
        return false;
    };
    processes.filter_map(Result::ok).any(|p| {
        let Ok(stat) = fs::read_to_string(p.path().join("stat")) else {
            return false;
        };
        // pid (comm) state ppid pgrp ...; comm may hold spaces and parentheses.
        let Some((_, rest)) = stat.rsplit_once(") ") else {
            return false;
        };
        let mut fields = rest.split(' ');
        let state = fields.next();
        let pgrp = fields.nth(1).and_then(|f| f.parse::<libc::pid_t>().ok());
        pgrp == Some(group) && state != Some("Z")
    })
}

// --- Failing commands ------------------------------------------------------------

per_interpreter!(
    every_failing_command_still_gives_one_summary_status_and_marker,
    failing_commands
);

/// Each tool call of a whole run fails in turn (busybox sh: each btrfs
/// call, as its applets bypass PATH). Whatever fails, the exit handler
/// prints one summary line, writes the status and, on failure, the marker,
/// and unmounts; the next run finishes the work.
fn failing_commands(interpreter: Interpreter) {
    let lab = lab();
    let runner = runner(interpreter);
    let (case, settings) = crash_case(&lab, &runner);
    let hooks = Hooks::new(&case.runner);
    let (_, calls) = hooks.run(&case, &settings, 0, false);
    assert!(calls.len() >= 4, "{} {calls:#?}", case.label);
    drop(case);
    for k in 1..=calls.len() {
        let (case, settings) = crash_case(&lab, &runner);
        let hooks = Hooks::new(&case.runner);
        let (run, _) = hooks.run_faulty(&case, &settings, 0, false, k);
        let at = format!("call {k} ({}) failing", calls[k - 1]);
        let l = format!("{} {at}:", case.label);
        let summary = run
            .summary()
            .unwrap_or_else(|| panic!("{l} not one summary line: {}", run.transcript()));
        if calls[k - 1].starts_with("mkdir ") && calls[k - 1].ends_with("/status") {
            // No status directory: the one case without a status file,
            // which the running system reports as a rollback that did not run.
            assert!(run.status.is_none(), "{l}");
            assert!(
                run.stderr.contains("no status file this boot"),
                "{l} {}",
                run.transcript()
            );
            assert_eq!(
                run.code == Some(0),
                summary["result"] == "ok",
                "{l} {}",
                run.transcript()
            );
            check_after_crash(&case, &settings, &at);
            continue;
        }
        let status = run
            .status
            .clone()
            .unwrap_or_else(|| panic!("{l} no status file: {}", run.transcript()));
        let result = status.get("result");
        assert!(
            result == "ok" || result == "failed",
            "{l} result={result}: {}",
            run.transcript()
        );
        assert_eq!(summary["result"], result, "{l} {}", run.transcript());
        assert_eq!(
            status.failed_marker,
            result == "failed",
            "{l} marker and result disagree: {}",
            run.transcript()
        );
        assert_eq!(
            run.code == Some(0),
            result == "ok",
            "{l} exit code and result disagree: {}",
            run.transcript()
        );
        if result == "failed" {
            assert!(
                !status.get("message").is_empty(),
                "{l} a failure without a message"
            );
        }
        if !calls[k - 1].starts_with("umount") {
            assert!(
                !is_mountpoint(&settings.mountpoint),
                "{l} left mounted: {}",
                run.transcript()
            );
        }
        check_after_crash(&case, &settings, &at);
    }
    if interpreter != Interpreter::Busybox {
        crash_while_the_move_is_retried(&lab, &runner, &calls);
    }
}

/// The first move fails (as on a full filesystem), so retention runs before
/// the move is tried again: a kill before each command after the failure is
/// finished by the next run. (busybox sh's mv bypasses PATH.)
fn crash_while_the_move_is_retried(lab: &Lab, runner: &Rc<Runner>, calls: &[String]) {
    let failing = 1 + calls
        .iter()
        .position(|c| c.starts_with("mv -T "))
        .unwrap_or_else(|| panic!("no mv -T among {calls:#?}"));
    let (case, settings) = crash_case(lab, runner);
    let hooks = Hooks::new(&case.runner);
    let (run, retried) = hooks.run_faulty(&case, &settings, 0, false, failing);
    assert_eq!(
        run.status().unwrap().get("result"),
        "ok",
        "{} {}",
        case.label,
        run.transcript()
    );
    assert!(
        retried[failing..]
            .iter()
            .any(|c| c.starts_with("btrfs subvolume delete"))
            && retried[failing..].iter().any(|c| c.starts_with("mv -T ")),
        "{} no delete and second move after the failed one: {retried:#?}",
        case.label
    );
    drop(case);
    for k in failing + 1..=retried.len() {
        let (case, settings) = crash_case(lab, runner);
        let hooks = Hooks::new(&case.runner);
        let (run, _) = hooks.run_faulty(&case, &settings, k, false, failing);
        assert_eq!(
            run.code,
            None,
            "{} call {k} was not killed: {}",
            case.label,
            run.transcript()
        );
        let at = format!("call {k} ({}) after the failed move", retried[k - 1]);
        check_after_crash(&case, &settings, &at);
    }
}

// --- Full metadata -----------------------------------------------------------------

per_interpreter!(a_full_metadata_recovers_by_the_second_boot, full_metadata);

fn set_xattr(path: &Utf8Path, name: &str, value: &[u8]) -> std::io::Result<()> {
    let path = std::ffi::CString::new(path.as_str()).unwrap();
    let name = std::ffi::CString::new(name).unwrap();
    // SAFETY: NUL-terminated strings and a buffer of the given length.
    let rc = unsafe {
        libc::setxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn is_enospc(error: &std::io::Error) -> bool {
    error.raw_os_error() == Some(libc::ENOSPC)
}

/// Empty files with 3.9 KB xattrs in `dir` until the metadata is full (the
/// kind of small-item growth that fills metadata, not data); how many xattrs.
fn fill_with_xattrs(l: &str, dir: &Utf8Path) -> usize {
    let value = vec![b'm'; 3900];
    let mut xattrs = 0;
    'fill: for f in 0.. {
        let file = dir.join(format!("xattrs-{f}"));
        match fs::write(&file, "") {
            Ok(()) => {}
            Err(e) if is_enospc(&e) => break,
            Err(e) => panic!("{l} {file}: {e}"),
        }
        for a in 0..100 {
            match set_xattr(&file, &format!("user.m{a}"), &value) {
                Ok(()) => xattrs += 1,
                Err(e) if is_enospc(&e) => break 'fill,
                Err(e) => panic!("{l} xattr on {file}: {e}"),
            }
        }
    }
    xattrs
}

/// Fills the filesystem the way a full one looks: data chunks over all the
/// space, with room inside them, and the metadata full, mostly with xattrs
/// on files in `holder` (a directory below the top level). Then checks that
/// renaming @root fails with ENOSPC, as the rollback's move will.
fn fill_metadata(case: &Case, holder: &str) {
    let l = &case.label;
    let filler = case.fs.create_subvolume("@filler").unwrap();
    let chunk = vec![0u8; 1 << 20];
    let mut files = 0;
    loop {
        match fs::write(filler.join(format!("f{files}")), &chunk) {
            Ok(()) => files += 1,
            Err(e) if is_enospc(&e) => break,
            Err(e) => panic!("{l} filling the data: {e}"),
        }
    }
    case.fs.sync().unwrap();
    for i in (0..=files).step_by(2) {
        let _ = fs::remove_file(filler.join(format!("f{i}")));
    }
    case.fs.sync().unwrap();
    let holder = case.top().join(holder);
    let xattrs = fill_with_xattrs(l, &holder);
    case.fs.sync().unwrap();
    let probe = case.old("probe");
    match fs::rename(case.root(), &probe) {
        Err(e) if is_enospc(&e) => {}
        Ok(()) => {
            fs::rename(&probe, case.root()).unwrap();
            panic!(
                "{l} the metadata is not full after {xattrs} xattrs: @root can still be renamed"
            );
        }
        Err(e) => panic!("{l} renaming @root: {e}"),
    }
}

fn full_metadata(interpreter: Interpreter) {
    let lab = lab();
    let runner = runner(interpreter);
    let past = name(NOW - 40 * DAY);
    let recent = name(NOW - 2 * DAY);

    // What fills the metadata is an old root past retention: deleting it
    // first makes room for the move.
    let case = Case::with_size(&lab, Rc::clone(&runner), SMALL_FIXTURE_BYTES);
    let l = &case.label;
    case.old_root(&past, &["var/lib/machines"]);
    case.old_root(&recent, &[]);
    case.current_root("current", CURRENT_NESTED);
    fill_metadata(&case, &format!("@old_roots/{past}"));
    let mut settings = case.settings.clone();
    settings.keep_at_least = Some(1);
    let first = case.runner.run(case.fs.device(), &settings).unwrap();
    let status = first.status().unwrap();
    assert!(
        first
            .stderr
            .contains("deleting old roots past retention first, then trying again"),
        "{l} the move did not fail: {}",
        first.transcript()
    );
    assert!(
        case.subvolumes_of(&past).is_empty() && !case.old(&past).exists(),
        "{l} retention did not run when the move failed: {}",
        first.transcript()
    );
    assert_eq!(status.number("deleted"), Some(1), "{l}");
    assert!(first.summary().is_some(), "{l} {}", first.transcript());
    eprintln!("{l} the boot with full metadata: {}", first.stdout.trim());
    case.check_persist();
    assert!(case.intact(&recent, &recent, &[]), "{l}");
    if status.get("result") == "ok" {
        // Room was made in time for this boot.
        assert_eq!(status.get("rotated_to"), name(NOW), "{l}");
        assert!(case.intact(&name(NOW), "current", CURRENT_NESTED), "{l}");
        assert!(entries(&case.root()).is_empty(), "{l}");
    } else {
        // Loud, and the old root is where it was.
        assert!(status.failed_marker, "{l} {}", first.transcript());
        assert_eq!(holders_of_current(&case), [case.root()], "{l}");
    }
    // The second boot rotates.
    settings.now = Some(NOW + 3600);
    let second = case.run_with(&settings);
    assert!(!second.get("rotated_to").is_empty(), "{l}");
    let holders = holders_of_current(&case);
    assert_eq!(holders.len(), 1, "{l} the current root is at {holders:?}");
    assert!(
        case.intact(holders[0].file_name().unwrap(), "current", CURRENT_NESTED),
        "{l}"
    );
    case.check_persist();
    drop(case);

    // Nothing is past retention: nothing can be freed, and every boot says
    // so; the root is never lost and never silently kept.
    let case = Case::with_size(&lab, Rc::clone(&runner), SMALL_FIXTURE_BYTES);
    let l = &case.label;
    case.old_root(&recent, &[]);
    case.current_root("current", CURRENT_NESTED);
    fill_metadata(&case, &format!("@old_roots/{recent}"));
    for boot in 0..2 {
        let run = case.runner.run(case.fs.device(), &case.settings).unwrap();
        let status = run.status().unwrap();
        assert_eq!(
            status.get("result"),
            "failed",
            "{l} boot {boot}: {}",
            run.transcript()
        );
        assert!(status.failed_marker, "{l} boot {boot}");
        assert!(
            status
                .get("message")
                .contains("this boot keeps its old root"),
            "{l} boot {boot}: {}",
            run.transcript()
        );
        assert_eq!(run.stdout.lines().count(), 1, "{l} {}", run.transcript());
        assert_eq!(holders_of_current(&case), [case.root()], "{l} boot {boot}");
        assert!(
            case.intact(&recent, &recent, &[]),
            "{l} boot {boot}: the recent old root was touched"
        );
        assert!(!is_mountpoint(&case.settings.mountpoint), "{l}");
        case.check_persist();
    }
}

// --- Several runs at once -------------------------------------------------------------

per_interpreter!(four_runs_at_once_never_nest_or_lose_a_root, concurrent_runs);

const TRIALS: usize = 50;
const RUNS_AT_ONCE: usize = 4;

/// What the subvolumes below @old_roots may be: old roots directly in it,
/// each with only the nested subvolumes its content brought along (by its
/// marker), never a root inside a root.
fn check_nothing_nested(case: &Case, l: &str) {
    let (past, recent) = (name(NOW - 40 * DAY), name(NOW - 2 * DAY));
    let known: [(&str, &[&str]); 3] = [
        ("current", CURRENT_NESTED),
        (&past, &["a", "a/b"]),
        (&recent, &["d"]),
    ];
    for path in case.fs.subvolumes().unwrap() {
        let Some(below) = path.strip_prefix("@old_roots/") else {
            assert!(
                path == "@root" || path == "@old_roots" || path.starts_with("@persist"),
                "{l} stray subvolume {path}"
            );
            continue;
        };
        let (root, rest) = below.split_once('/').unwrap_or((below, ""));
        assert!(
            old_root_name_is_valid(root),
            "{l} {path}: {root} is not an old root's name"
        );
        if rest.is_empty() {
            continue;
        }
        let marker = fs::read_to_string(case.old(root).join("marker")).unwrap_or_default();
        let allowed = known
            .iter()
            .find(|(m, _)| *m == marker)
            .map(|(_, nested)| *nested)
            .unwrap_or(&[]);
        assert!(
            allowed.contains(&rest),
            "{l} {path} is nested in the old root {root} (marker {marker:?})"
        );
    }
}

fn old_root_name_is_valid(name: &str) -> bool {
    let (base, suffix) = match name.split_once('-') {
        Some((base, suffix)) => (base, Some(suffix)),
        None => (name, None),
    };
    let format = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    time::PrimitiveDateTime::parse(base, format).is_ok()
        && suffix.is_none_or(|s| s.len() == 2 && s != "00" && s.bytes().all(|b| b.is_ascii_digit()))
}

fn concurrent_runs(interpreter: Interpreter) {
    let lab = lab();
    let runner = runner(interpreter);
    let mut contended = 0;
    let mut ok_runs = 0;
    let mut failed_runs = 0;
    for trial in 0..TRIALS {
        let (case, base) = crash_case(&lab, &runner);
        let l = format!("{} trial {trial}:", case.label);
        let all: Vec<Settings> = (0..RUNS_AT_ONCE)
            .map(|i| {
                let mut s = base.clone();
                s.mountpoint = case.fs.scratch().join(format!("btrfs_tmp_{i}"));
                s.status_dir = case.fs.scratch().join(format!("status_{i}"));
                case.fs.forget_on_drop(&s.mountpoint);
                s
            })
            .collect();
        let children: Vec<_> = all
            .iter()
            .map(|s| {
                case.runner
                    .command(case.fs.device(), s, false, None)
                    .spawn()
                    .unwrap()
            })
            .collect();
        let runs: Vec<Run> = children
            .into_iter()
            .zip(&all)
            .map(|(child, s)| {
                let output = child.wait().unwrap();
                Run {
                    code: output.status.and_then(|status| status.code()),
                    stdout: output.stdout_text(),
                    stderr: output.stderr_text(),
                    wall_ms: 0.0,
                    status: Status::read(&s.status_dir).unwrap(),
                }
            })
            .collect();
        let mut rotated = 0;
        for (run, s) in runs.iter().zip(&all) {
            let summary = run
                .summary()
                .unwrap_or_else(|| panic!("{l} not one summary line: {}", run.transcript()));
            let status = run.status().unwrap();
            assert_eq!(summary["result"], status.get("result"), "{l}");
            assert_eq!(
                status.failed_marker,
                status.get("result") == "failed",
                "{l} {}",
                run.transcript()
            );
            assert!(!is_mountpoint(&s.mountpoint), "{l} left mounted");
            if status.get("result") == "ok" {
                ok_runs += 1;
                let to = status.get("rotated_to");
                if !to.is_empty() {
                    rotated += 1;
                    assert!(
                        is_subvolume(&case.old(to)),
                        "{l} reported a move to {to}, which is not an old root: {}",
                        run.transcript()
                    );
                }
            } else {
                failed_runs += 1;
            }
        }
        if rotated > 1 {
            contended += 1;
        }
        let transcripts = || {
            runs.iter()
                .map(Run::transcript)
                .collect::<Vec<_>>()
                .join("\n")
        };
        check_nothing_nested(&case, &format!("{l} {}", transcripts()));
        let holders = holders_of_current(&case);
        assert_eq!(holders.len(), 1, "{l} the current root is at {holders:?}");
        assert!(
            case.intact(holders[0].file_name().unwrap(), "current", CURRENT_NESTED),
            "{l} {}",
            transcripts()
        );
        for (age, nested) in RECENT {
            assert!(
                case.intact(&name(NOW - age * DAY), &name(NOW - age * DAY), nested),
                "{l} {age}-day root damaged"
            );
        }
        case.check_persist();
        // A run on its own afterwards finds everything in order.
        check_after_crash(&case, &base, "four runs at once");
        check_nothing_nested(&case, &l);
    }
    eprintln!(
        "[{}] {TRIALS} trials of {RUNS_AT_ONCE} runs at once: {ok_runs} runs ok, {failed_runs} failed, {contended} trials with more than one move",
        interpreter.name()
    );
    assert!(
        contended > 0,
        "[{}] the runs never raced: no trial had two moves",
        interpreter.name()
    );
}

// --- Old roots that resist deletion ----------------------------------------------------

#[test]
fn read_only_old_roots_and_names_with_newlines_are_deleted() {
    for_each_interpreter(|case| {
        let l = &case.label;
        // A read-only old root holding a nested subvolume.
        let read_only = name(NOW - 40 * DAY);
        case.old_root(&read_only, &["var/lib/machines"]);
        case.fs
            .set_read_only(&format!("@old_roots/{read_only}"), true)
            .unwrap();
        // A read-only nested subvolume holding another.
        let inner_read_only = name(NOW - 39 * DAY);
        case.old_root(&inner_read_only, &["srv", "srv/inner"]);
        case.fs
            .set_read_only(&format!("@old_roots/{inner_read_only}/srv"), true)
            .unwrap();
        // Nested subvolumes with newlines in their names and in a parent's.
        let newlines = name(NOW - 38 * DAY);
        case.old_root(&newlines, &[]);
        let root = case.old(&newlines);
        create_subvolume_in(&root, "line\nbreak").unwrap();
        create_subvolume_in(&root, "ends in a newline\n").unwrap();
        fs::create_dir(root.join("dir\nname")).unwrap();
        create_subvolume_in(&root.join("dir\nname"), "sub").unwrap();
        create_subvolume_in(&root.join("line\nbreak"), "deeper").unwrap();
        case.old_root(&name(NOW - DAY), &["d"]);
        case.current_root("current", &[]);
        let mut settings = case.settings.clone();
        settings.keep_at_least = Some(0);
        let run = case.runner.run(case.fs.device(), &settings).unwrap();
        assert_ok_with(&run, l, 3, 2);
        // What the batch deleted is not an error of the one-by-one pass.
        case.check_summary(&run, run.status().unwrap());
        assert!(
            !run.stdout.contains("could not delete"),
            "{l} {}",
            run.transcript()
        );
        for gone in [&read_only, &inner_read_only, &newlines] {
            assert!(!case.old(gone).exists(), "{l} {gone} is left");
        }
        assert_eq!(case.old_roots(), [name(NOW - DAY), name(NOW)], "{l}");
        assert!(
            case.intact(&name(NOW - DAY), &name(NOW - DAY), &["d"]),
            "{l}"
        );
        for gone in [&read_only, &inner_read_only, &newlines] {
            assert!(case.subvolumes_of(gone).is_empty(), "{l} {gone} is left");
        }
        case.check_persist();
    });
}

/// The subvolume id of `path` (`btrfs inspect-internal rootid`).
fn subvolume_id(lab: &Lab, path: &Utf8Path) -> u64 {
    let btrfs = lab.tool(toolbox::setup::BTRFS).unwrap();
    let output = std::process::Command::new(btrfs.as_str())
        .args(["inspect-internal", "rootid", path.as_str()])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn a_name_that_forges_a_listing_line_cannot_reach_persist() {
    let lab = lab();
    for interpreter in Interpreter::ALL {
        let case = Case::new(&lab, interpreter);
        let l = &case.label;
        let past = name(NOW - 40 * DAY);
        case.old_root(&past, &[]);
        // In the old root, a symlink to @persist/var/lib, and a subvolume
        // whose path makes `btrfs subvolume list` print a line for the path
        // through that symlink, with the real id of @persist/var/lib/data:
        // <old root>/x\nID <id> gen 1 top level 5 path @old_roots/<old root>/l/data.
        let data = case.top().join("@persist/var/lib/data");
        let id = subvolume_id(&lab, &data);
        symlink("../../@persist/var/lib", case.old(&past).join("l")).unwrap();
        let forger = case
            .old(&past)
            .join(format!("x\nID {id} gen 1 top level 5 path @old_roots"))
            .join(&past)
            .join("l");
        fs::create_dir_all(&forger).unwrap();
        create_subvolume_in(&forger, "data").unwrap();
        case.current_root("current", &[]);
        let mut settings = case.settings.clone();
        settings.keep_at_least = Some(0);
        let run = case.runner.run(case.fs.device(), &settings).unwrap();
        assert!(
            is_subvolume(&data),
            "{l} @persist/var/lib/data was deleted: {}",
            run.transcript()
        );
        case.check_persist();
        assert_ok_with(&run, l, 1, 1);
        assert!(!case.old(&past).exists(), "{l} {}", run.transcript());
    }
}

#[test]
fn an_old_root_that_cannot_be_deleted_is_left_with_a_warning() {
    let lab = lab();
    for interpreter in Interpreter::ALL {
        let case = Case::new(&lab, interpreter);
        let l = &case.label;
        let btrfs = lab.tool(toolbox::setup::BTRFS).unwrap();
        let set_default = |args: &[&str]| {
            let status = std::process::Command::new(btrfs.as_str())
                .args(["subvolume", "set-default"])
                .args(args)
                .status()
                .unwrap();
            assert!(status.success(), "{l} set-default {args:?}");
        };
        let stuck = name(NOW - 40 * DAY);
        let deletable = name(NOW - 39 * DAY);
        case.old_root(&stuck, &["srv"]);
        case.old_root(&deletable, &[]);
        // The kernel refuses to delete the default subvolume.
        set_default(&[case.old(&stuck).join("srv").as_str()]);
        let mut settings = case.settings.clone();
        settings.keep_at_least = Some(0);
        for boot in 0..2 {
            case.current_root(&format!("boot {boot}"), &[]);
            settings.now = Some(NOW + boot * 60);
            let run = case.runner.run(case.fs.device(), &settings).unwrap();
            let status = run.status().unwrap();
            assert_eq!(
                status.get("result"),
                "ok",
                "{l} boot {boot}: {}",
                run.transcript()
            );
            assert!(!status.failed_marker, "{l}");
            assert!(
                status
                    .get("message")
                    .contains("could not delete 1 old roots past retention"),
                "{l} boot {boot}: {}",
                run.transcript()
            );
            assert!(
                run.stderr.contains(&format!(
                    "could not delete 1 old roots past retention: {stuck}"
                )),
                "{l} {}",
                run.transcript()
            );
            assert!(case.old(&stuck).exists(), "{l}");
            assert!(!case.old(&deletable).exists(), "{l}");
            case.check_persist();
        }
        // Once it can be deleted, the next boot does.
        set_default(&["5", case.top().as_str()]);
        case.current_root("boot 2", &[]);
        settings.now = Some(NOW + 120);
        let status = case.run_with(&settings);
        assert_eq!(status.number("deleted"), Some(1), "{l}");
        assert!(!case.old(&stuck).exists(), "{l}");
    }
}

// --- Entries that are not old roots -------------------------------------------------

#[test]
fn entries_that_are_not_old_roots_never_steer_names_or_the_clock() {
    for_each_interpreter(|case| {
        let l = &case.label;
        let past = name(NOW - 40 * DAY);
        case.old_root(&past, &[]);
        let old_roots = case.top().join("@old_roots");
        // Names of future old roots on a file and a plain directory, a
        // subvolume named for a year no clock reaches, and a plain
        // directory where this boot's root would go.
        fs::write(old_roots.join("20991231T235959Z"), "a file").unwrap();
        fs::create_dir(old_roots.join("20991230T000000Z")).unwrap();
        case.fs
            .create_subvolume("@old_roots/99991231T235959Z-99")
            .unwrap();
        case.fs
            .create_subvolume("@old_roots/21000101T000000Z")
            .unwrap();
        fs::create_dir(old_roots.join(name(NOW))).unwrap();
        fs::write(old_roots.join(name(NOW)).join("file"), "mine").unwrap();
        case.current_root("current", &[]);
        let mut settings = case.settings.clone();
        settings.keep_at_least = Some(0);
        let run = case.runner.run(case.fs.device(), &settings).unwrap();
        let status = run.status().unwrap();
        assert_ok_with(&run, l, 1, 1);
        assert_eq!(status.get("clock"), "ok", "{l} {}", run.transcript());
        assert_eq!(
            status.number("skipped"),
            Some(5),
            "{l} {}",
            run.transcript()
        );
        // The plain directory keeps its name: the root takes the next one.
        assert_eq!(status.get("rotated_to"), name_n(NOW, 1), "{l}");
        assert!(case.intact(&name_n(NOW, 1), "current", &[]), "{l}");
        assert_eq!(
            fs::read_to_string(old_roots.join(name(NOW)).join("file")).unwrap(),
            "mine",
            "{l}"
        );
        assert!(!case.old(&past).exists(), "{l} retention did not run");
        for kept in ["99991231T235959Z-99", "21000101T000000Z"] {
            assert!(is_subvolume(&case.old(kept)), "{l} {kept}");
        }
        // The next boots name roots by the clock, and recognise them.
        for boot in 1..3 {
            case.current_root(&format!("boot {boot}"), &[]);
            settings.now = Some(NOW + boot * 60);
            let status = case.run_with(&settings);
            assert_eq!(status.get("rotated_to"), name(NOW + boot * 60), "{l}");
            assert_eq!(status.get("clock"), "ok", "{l}");
            assert_eq!(status.number("skipped"), Some(5), "{l}");
        }
        case.check_persist();
    });
}

#[test]
fn no_name_is_left_after_the_last_one_of_2099() {
    for_each_interpreter(|case| {
        let l = &case.label;
        let last = "20991231T235959Z-99";
        case.old_root(last, &[]);
        case.old_root(&name(NOW - 40 * DAY), &[]);
        case.current_root("current", &[]);
        let mut settings = case.settings.clone();
        settings.keep_at_least = Some(0);
        let run = case.runner.run(case.fs.device(), &settings).unwrap();
        let status = run.status().unwrap();
        assert_eq!(status.get("result"), "failed", "{l} {}", run.transcript());
        assert!(status.failed_marker, "{l}");
        assert_eq!(status.get("clock"), "implausible", "{l}");
        assert!(
            status.get("message").contains("no name is left"),
            "{l} {}",
            run.transcript()
        );
        assert_eq!(holders_of_current(case), [case.root()], "{l}");
        assert_eq!(
            case.old_roots(),
            [name(NOW - 40 * DAY), last.to_owned()],
            "{l}"
        );
        case.check_persist();
    });
}

#[test]
fn keep_at_least_counts_suffixed_names_in_time_order() {
    for_each_interpreter(|case| {
        let l = &case.label;
        // Globs list names with a suffix after all others: 90d, 80d, 70d,
        // then 90d-01, 90d-02. In time order the third is 90d-02.
        let a = NOW - 90 * DAY;
        for old in [
            name(a),
            name_n(a, 1),
            name_n(a, 2),
            name(NOW - 80 * DAY),
            name(NOW - 70 * DAY),
        ] {
            case.old_root(&old, &[]);
        }
        case.current_root("current", &[]);
        let mut settings = case.settings.clone();
        settings.keep_at_least = Some(3);
        let run = case.runner.run(case.fs.device(), &settings).unwrap();
        assert_ok_with(&run, l, 3, 3);
        assert_eq!(
            case.old_roots(),
            [name(NOW - 80 * DAY), name(NOW - 70 * DAY), name(NOW)],
            "{l}"
        );
    });
}

// --- Conditions a server meets ------------------------------------------------------

per_interpreter!(
    full_metadata_held_by_the_current_root_heals_by_the_second_boot,
    full_metadata_in_the_current_root
);

/// The metadata is full because of what the current root holds (a runaway
/// cache under /, xattrs here), and the data chunks are full of an old root
/// past retention: deleting it frees data, not room for metadata, until the
/// emptied data chunks go back to the unallocated space.
fn full_metadata_in_the_current_root(interpreter: Interpreter) {
    let lab = lab();
    let case = Case::with_size(&lab, runner(interpreter), SMALL_FIXTURE_BYTES);
    let l = &case.label;
    let past = name(NOW - 40 * DAY);
    let recent = name(NOW - 2 * DAY);
    case.old_root(&past, &[]);
    case.old_root(&recent, &[]);
    case.current_root("current", CURRENT_NESTED);
    let chunk = vec![0u8; 1 << 20];
    for i in 0.. {
        match fs::write(case.old(&past).join(format!("f{i}")), &chunk) {
            Ok(()) => {}
            Err(e) if is_enospc(&e) => break,
            Err(e) => panic!("{l} filling the data: {e}"),
        }
    }
    case.fs.sync().unwrap();
    fill_with_xattrs(l, &case.root());
    case.fs.sync().unwrap();
    match fs::rename(case.root(), case.old("probe")) {
        Err(e) if is_enospc(&e) => {}
        other => panic!("{l} the metadata is not full: renaming @root gave {other:?}"),
    }
    let mut settings = case.settings.clone();
    settings.keep_at_least = Some(1);
    let first = case.runner.run(case.fs.device(), &settings).unwrap();
    eprintln!("{l} the first boot: {}", first.transcript());
    assert!(first.summary().is_some(), "{l} {}", first.transcript());
    case.check_persist();
    assert_eq!(holders_of_current(&case).len(), 1, "{l}");
    if first.status().unwrap().get("result") != "ok" {
        assert!(first.status().unwrap().failed_marker, "{l}");
        settings.now = Some(NOW + 3600);
        let second = case.runner.run(case.fs.device(), &settings).unwrap();
        assert_eq!(
            second.status().unwrap().get("result"),
            "ok",
            "{l} the second boot: {}",
            second.transcript()
        );
    }
    let holders = holders_of_current(&case);
    assert_eq!(holders.len(), 1, "{l} the current root is at {holders:?}");
    assert_ne!(
        holders[0],
        case.root(),
        "{l} not rotated by the second boot"
    );
    assert!(
        case.intact(holders[0].file_name().unwrap(), "current", CURRENT_NESTED),
        "{l}"
    );
    assert!(case.intact(&recent, &recent, &[]), "{l}");
    assert!(!case.old(&past).exists(), "{l}");
    case.check_persist();
}

/// An RLIMIT_STACK of 256 KiB gives the smallest argument limit Linux has
/// (128 KiB) for every exec of the run.
fn with_smallest_argument_limit(command: Supervised) -> Supervised {
    // SAFETY: only setrlimit between fork and exec.
    unsafe {
        command.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 256 << 10,
                rlim_max: 256 << 10,
            };
            if libc::setrlimit(libc::RLIMIT_STACK, &limit) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        })
    }
}

#[test]
fn many_nested_subvolumes_are_deleted_in_batches_below_the_argument_limit() {
    // 1 200 nested subvolumes with container-engine names (64 hex digits)
    // pass 128 KiB of arguments: one `btrfs subvolume delete` of them all
    // fails with E2BIG. The 20 000 of a real engine are in the bench.
    const NESTED: usize = 1200;
    let lab = lab();
    for interpreter in Interpreter::ALL {
        let case = Case::new(&lab, interpreter);
        let l = &case.label;
        let past = name(NOW - 40 * DAY);
        case.old_root(&past, &[]);
        let engine = format!("@old_roots/{past}/var/lib/docker/btrfs/subvolumes");
        fs::create_dir_all(case.top().join(&engine)).unwrap();
        for i in 0..NESTED {
            let id = format!("{:064x}", (i as u128 + 1) * 0x9e37_79b9_7f4a_7c15);
            case.fs.create_subvolume(&format!("{engine}/{id}")).unwrap();
        }
        case.current_root("current", &[]);
        let mut settings = case.settings.clone();
        settings.keep_at_least = Some(1);
        let hooks = Hooks::new(&case.runner);
        let counter = case.fs.scratch().join("hook-counter");
        let log = case.fs.scratch().join("hook-log");
        let command = case
            .runner
            .command(case.fs.device(), &settings, false, Some(hooks.path()))
            .env("XTASK_HOOK_COUNTER", &counter)
            .env("XTASK_HOOK_LOG", &log)
            .own_process_group();
        let command = with_smallest_argument_limit(command);
        let run = case.runner.run_command(command, &settings).unwrap();
        let calls = fs::read_to_string(&log).unwrap_or_default();
        assert!(
            !run.stderr.contains("too long") && !run.stderr.contains("one by one"),
            "{l} {}",
            run.transcript()
        );
        assert_ok_with(&run, l, 1, 1);
        case.check_summary(&run, run.status().unwrap());
        let deletes = calls
            .lines()
            .filter(|c| c.starts_with("btrfs subvolume delete"))
            .count();
        let btrfs_calls = calls.lines().filter(|c| c.starts_with("btrfs ")).count();
        assert!(
            (2..=6).contains(&deletes) && btrfs_calls <= deletes + 4,
            "{l} {deletes} deletes, {btrfs_calls} btrfs calls for {NESTED} nested subvolumes"
        );
        assert!(case.subvolumes_of(&past).is_empty(), "{l}");
        case.check_persist();
    }
}

/// A directory of PATH with the run's tools, and `umount` replaced by one
/// that keeps a process inside the mount while it runs the real umount:
/// the real umount finds it busy.
fn path_with_busy_umount(case: &Case) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in fs::read_dir(case.runner.tool_dir()).unwrap() {
        let entry = entry.unwrap();
        let program = entry.file_name();
        let real = fs::canonicalize(entry.path()).unwrap();
        let path = dir.path().join(&program);
        if program == "umount" {
            let script = format!(
                "#!/bin/sh\n( cd \"$1\" && exec {sleep} 2 ) &\n{sleep} 0.3\nexec '{}' \"$@\"\n",
                real.display(),
                sleep = ["/usr/bin/sleep", "/bin/sleep"]
                    .into_iter()
                    .find(|p| Utf8Path::new(p).exists())
                    .expect("sleep (coreutils)")
            );
            fs::write(&path, script).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        } else {
            symlink(&real, &path).unwrap();
        }
    }
    dir
}

#[test]
fn a_busy_unmount_after_a_good_move_is_not_a_failure() {
    // busybox sh runs its own umount applet, without PATH: dash and bash.
    let lab = lab();
    for interpreter in [Interpreter::Dash, Interpreter::Bash] {
        let case = Case::new(&lab, interpreter);
        let l = &case.label;
        case.current_root("current", &[]);
        let dir = path_with_busy_umount(&case);
        let path = Utf8Path::from_path(dir.path()).unwrap();
        let command = case
            .runner
            .command(case.fs.device(), &case.settings, false, Some(path));
        let run = case.runner.run_command(command, &case.settings).unwrap();
        let status = run.status().unwrap();
        assert_eq!(run.code, Some(0), "{l} {}", run.transcript());
        assert_eq!(status.get("result"), "ok", "{l} {}", run.transcript());
        assert!(
            !status.failed_marker,
            "{l} a failed marker after a good move"
        );
        assert_eq!(status.get("rotated_to"), name(NOW), "{l}");
        assert!(run.stderr.contains("busy"), "{l} {}", run.transcript());
        std::thread::sleep(Duration::from_millis(2500));
        // The next run finds the mountpoint usable.
        let mut settings = case.settings.clone();
        settings.now = Some(NOW + 60);
        case.run_with(&settings);
    }
}

/// A tmpfs at `at` with `options`; unmounted on the fixture's drop.
fn mount_tmpfs(case: &Case, at: &Utf8Path, options: &str) {
    fs::create_dir_all(at).unwrap();
    let status = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", options, "tmpfs", at.as_str()])
        .status()
        .unwrap();
    assert!(status.success(), "mounting a tmpfs at {at}");
    case.fs.forget_on_drop(at);
}

#[test]
fn trouble_writing_the_status_never_decides_the_result() {
    for_each_interpreter(|case| {
        let l = &case.label;
        // Read-only, full of data, out of inodes.
        for (k, (options, fill)) in [
            ("ro,size=64k", None),
            ("size=8k", Some("data")),
            ("size=1m,nr_inodes=2", Some("inodes")),
        ]
        .into_iter()
        .enumerate()
        {
            let mut settings = case.settings.clone();
            settings.status_dir = case.fs.scratch().join(format!("status-trouble-{k}"));
            settings.now = Some(NOW + k as i64 * 60);
            mount_tmpfs(case, &settings.status_dir, options);
            match fill {
                Some("data") => {
                    let chunk = vec![1u8; 4096];
                    let mut file = fs::File::create(settings.status_dir.join("filler")).unwrap();
                    while std::io::Write::write_all(&mut file, &chunk).is_ok() {}
                }
                Some(_) => {
                    for i in 0.. {
                        if fs::write(settings.status_dir.join(format!("f{i}")), "").is_err() {
                            break;
                        }
                    }
                }
                None => {}
            }
            case.current_root(&format!("current-{k}"), &[]);
            let run = case.runner.run(case.fs.device(), &settings).unwrap();
            let summary = run
                .summary()
                .unwrap_or_else(|| panic!("{l} {options}: {}", run.transcript()));
            assert_eq!(run.code, Some(0), "{l} {options}: {}", run.transcript());
            assert_eq!(
                summary["result"],
                "ok",
                "{l} {options}: {}",
                run.transcript()
            );
            assert_eq!(
                summary["rotated_to"],
                name(NOW + k as i64 * 60),
                "{l} {options}"
            );
            assert!(
                run.stderr.contains("could not write"),
                "{l} {options}: {}",
                run.transcript()
            );
            case.check_persist();
        }
    });
}

/// `chattr +a`/`+i` on a directory: FS_IOC_SETFLAGS.
fn set_inode_flags(path: &Utf8Path, flags: libc::c_long) {
    let dir = fs::File::open(path).unwrap();
    const FS_IOC_SETFLAGS: libc::c_ulong = 0x4008_6602;
    // SAFETY: a valid descriptor and a pointer to a long.
    let rc = unsafe {
        libc::ioctl(
            std::os::fd::AsRawFd::as_raw_fd(&dir),
            FS_IOC_SETFLAGS,
            &flags as *const libc::c_long,
        )
    };
    assert_eq!(
        rc,
        0,
        "setting flags on {path}: {}",
        std::io::Error::last_os_error()
    );
}
const FS_APPEND_FL: libc::c_long = 0x20;
const FS_IMMUTABLE_FL: libc::c_long = 0x10;

/// A run that must fail, change nothing, and not go down the full
/// filesystem's path; returns the message.
fn refused(case: &Case, settings: &Settings, past: &str) -> String {
    let l = &case.label;
    let run = case.runner.run(case.fs.device(), settings).unwrap();
    let status = run.status().unwrap();
    assert_eq!(status.get("result"), "failed", "{l} {}", run.transcript());
    assert!(status.failed_marker, "{l}");
    assert_ne!(run.code, Some(0), "{l}");
    assert!(
        !run.stderr
            .contains("deleting old roots past retention first"),
        "{l} taken for a full filesystem: {}",
        run.transcript()
    );
    assert!(
        status
            .get("message")
            .contains("this boot keeps its old root"),
        "{l} {}",
        run.transcript()
    );
    assert!(
        case.intact(past, past, &["var/lib/machines"]),
        "{l} the old root past retention was touched: {}",
        run.transcript()
    );
    assert!(case.root().join("marker").exists(), "{l} @root moved");
    assert!(!is_mountpoint(&settings.mountpoint), "{l}");
    case.check_persist();
    status.get("message").to_owned()
}

#[test]
fn each_cause_of_a_failed_move_is_told_apart() {
    for_each_interpreter(|case| {
        let l = &case.label;
        let past = name(NOW - 40 * DAY);
        case.old_root(&past, &["var/lib/machines"]);
        case.current_root("current", &[]);
        let settings = case.settings.clone();

        // A read-only @old_roots.
        case.fs.set_read_only("@old_roots", true).unwrap();
        let message = refused(case, &settings, &past);
        assert!(
            message.contains("@old_roots is a read-only subvolume"),
            "{l} {message}"
        );
        case.fs.set_read_only("@old_roots", false).unwrap();

        // A read-only @root (btrfs receive makes them): rotated.
        case.fs.set_read_only("@root", true).unwrap();
        let status = case.run_with(&settings);
        assert_eq!(status.get("rotated_to"), name(NOW), "{l}");
        assert!(case.intact(&name(NOW), "current", &[]), "{l}");

        // An append-only @old_roots takes the root (the kernel lets entries
        // in, not out); retention then leaves what it cannot delete, with
        // a warning, and nothing is lost.
        fs::write(case.root().join("marker"), "current2").unwrap();
        let mut settings = settings.clone();
        settings.now = Some(NOW + 60);
        set_inode_flags(&case.top().join("@old_roots"), FS_APPEND_FL);
        let run = case.runner.run(case.fs.device(), &settings).unwrap();
        let status = run.status().unwrap().clone();
        set_inode_flags(&case.top().join("@old_roots"), 0);
        assert_eq!(
            status.get("result"),
            "ok",
            "{l} append-only: {}",
            run.transcript()
        );
        assert!(
            case.intact(status.get("rotated_to"), "current2", &[]),
            "{l}"
        );
        case.check_persist();
    });
}

#[test]
fn an_immutable_old_roots_or_root_is_named_and_changes_nothing() {
    for_each_interpreter(|case| {
        let l = &case.label;
        let past = name(NOW - 40 * DAY);
        case.old_root(&past, &["var/lib/machines"]);
        case.current_root("current", &[]);
        for what in ["@old_roots", "@root"] {
            set_inode_flags(&case.top().join(what), FS_IMMUTABLE_FL);
            let message = refused(case, &case.settings, &past);
            set_inode_flags(&case.top().join(what), 0);
            assert!(
                message.contains("Operation not permitted")
                    && message.contains("append-only or immutable attribute"),
                "{l} {what}: {message}"
            );
        }
        // Once the attribute is cleared the next boot rotates.
        let status = case.run_with(&case.settings);
        assert_eq!(status.get("rotated_to"), name(NOW), "{l}");
        assert!(case.intact(&name(NOW), "current", &[]), "{l}");
    });
}

/// A write-protected device: mount(8) (util-linux and busybox) falls back to
/// a read-only mount, which the script sees before it tries anything. The
/// device is made read-only with BLKROSET (`blockdev --setro`) while nothing
/// has the filesystem mounted, as in the initrd: with a mount already open
/// the kernel only warns and Btrfs goes on writing through it.
#[test]
fn a_read_only_device_changes_nothing_and_says_so() {
    let blockdev = |flag: &str, device: &Utf8Path| {
        let out = std::process::Command::new("blockdev")
            .args([flag, device.as_str()])
            .output()
            .expect("blockdev (util-linux: apt-get install util-linux)");
        assert!(
            out.status.success(),
            "blockdev {flag} {device}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    for_each_interpreter(|case| {
        let l = &case.label;
        let past = name(NOW - 40 * DAY);
        case.old_root(&past, &["var/lib/machines"]);
        case.current_root("current", &[]);
        let mut settings = case.settings.clone();
        settings.keep_at_least = Some(0);
        case.fs.sync().unwrap();
        case.fs.unmount_all(case.top()).unwrap();
        let device = case.fs.device();
        wait_until_released(device);
        blockdev("--setro", device);
        let run = case.runner.run(device, &settings);
        blockdev("--setrw", device);
        case.fs.mount_top_level(case.top()).unwrap();
        let run = run.unwrap();
        let status = run.status().unwrap();
        assert_eq!(status.get("result"), "failed", "{l} {}", run.transcript());
        assert!(status.failed_marker, "{l}");
        assert_ne!(run.code, Some(0), "{l}");
        let message = status.get("message");
        assert!(
            message.contains("is read-only (a write-protected device")
                && message.contains("changed nothing, this boot keeps its old root"),
            "{l} {}",
            run.transcript()
        );
        assert_eq!(status.number("deleted"), Some(0), "{l}");
        assert!(
            !run.stderr
                .contains("deleting old roots past retention first"),
            "{l} taken for a full filesystem: {}",
            run.transcript()
        );
        assert!(case.intact(&past, &past, &["var/lib/machines"]), "{l}");
        assert!(case.root().join("marker").exists(), "{l} @root moved");
        assert!(!is_mountpoint(&settings.mountpoint), "{l}");
        case.check_persist();
        // Writable again, the next boot rotates and deletes.
        let status = case.run_with(&settings);
        assert_eq!(status.get("rotated_to"), name(NOW), "{l}");
        assert_eq!(status.number("deleted"), Some(1), "{l}");
    });
}

/// Waits until the kernel has let go of the filesystem on `device` after
/// its last unmount (its /sys/fs/btrfs/FSID goes): a mount while the old
/// superblock lives on reuses it, writable, whatever the device says.
fn wait_until_released(device: &Utf8Path) {
    use std::io::{Read as _, Seek as _};
    // The superblock at 64 KiB holds the fsid at byte 32.
    let mut fsid = [0u8; 16];
    let mut dev = fs::File::open(device).unwrap();
    dev.seek(std::io::SeekFrom::Start(0x10000 + 32)).unwrap();
    dev.read_exact(&mut fsid).unwrap();
    let hex: String = fsid.iter().map(|b| format!("{b:02x}")).collect();
    let uuid = format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    );
    let sysfs = std::path::Path::new("/sys/fs/btrfs").join(&uuid);
    let start = std::time::Instant::now();
    while sysfs.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{device}: {} still there 30 s after the last unmount",
            sysfs.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A case of the same kind nobody listed: the filesystem's top directory
/// immutable (`chattr +i` on the mounted top level). With @root there the
/// move out of it is refused; without one (a first boot, or a power cut
/// right after the move) the new root cannot be created, and that is not a
/// full filesystem either: nothing is deleted, and the message says why.
#[test]
fn an_immutable_top_level_is_named_and_never_taken_for_a_full_filesystem() {
    for_each_interpreter(|case| {
        let l = &case.label;
        let past = name(NOW - 40 * DAY);
        case.old_root(&past, &["var/lib/machines"]);
        case.current_root("current", &[]);
        let mut settings = case.settings.clone();
        settings.keep_at_least = Some(0);
        set_inode_flags(case.top(), FS_IMMUTABLE_FL);
        let message = refused(case, &settings, &past);
        set_inode_flags(case.top(), 0);
        assert!(message.contains("the top level"), "{l} {message}");

        // No @root: what a power cut between the move and the creation leaves.
        let moved = name(NOW - 60);
        fs::rename(case.root(), case.old(&moved)).unwrap();
        set_inode_flags(case.top(), FS_IMMUTABLE_FL);
        let run = case.runner.run(case.fs.device(), &settings).unwrap();
        set_inode_flags(case.top(), 0);
        let status = run.status().unwrap();
        assert_eq!(status.get("result"), "failed", "{l} {}", run.transcript());
        assert!(status.failed_marker, "{l}");
        assert_eq!(status.number("deleted"), Some(0), "{l}");
        assert!(
            !run.stderr
                .contains("deleting old roots past retention first"),
            "{l} taken for a full filesystem: {}",
            run.transcript()
        );
        let message = status.get("message");
        assert!(
            message.contains("cannot create @root: Operation not permitted")
                && message.contains("immutable attribute")
                && message.contains("no root to mount"),
            "{l} {}",
            run.transcript()
        );
        assert!(case.intact(&past, &past, &["var/lib/machines"]), "{l}");
        assert!(case.intact(&moved, "current", &[]), "{l}");
        assert!(!is_mountpoint(&settings.mountpoint), "{l}");
        case.check_persist();
        // Cleared, the next boot creates the root and applies retention.
        let status = case.run_with(&settings);
        assert_eq!(status.get("rotated_to"), "", "{l}");
        assert_eq!(status.number("deleted"), Some(1), "{l}");
    });
}

#[test]
fn a_qgroup_over_its_limit_is_named_and_deletes_nothing() {
    for_each_interpreter(|case| {
        let l = &case.label;
        let past = name(NOW - 40 * DAY);
        case.old_root(&past, &["var/lib/machines"]);
        case.current_root("current", &[]);
        fs::write(case.root().join("big"), vec![5u8; 4 << 20]).unwrap();
        let btrfs = |args: &[&str]| {
            let out = std::process::Command::new("btrfs")
                .args(args)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "btrfs {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let top = case.top().as_str();
        btrfs(&["quota", "enable", top]);
        btrfs(&["quota", "rescan", "-w", top]);
        // The rename reserves metadata in the top level's tree: its
        // qgroup (0/5) at its limit refuses it with EDQUOT.
        btrfs(&["qgroup", "limit", "16k", top]);
        case.fs.sync().unwrap();
        let message = refused(case, &case.settings, &past);
        assert!(message.contains("qgroup"), "{l} {message}");
    });
}

#[test]
fn a_stale_mount_on_the_mountpoint_is_cleared_and_a_foreign_one_refused() {
    for_each_interpreter(|case| {
        let l = &case.label;
        case.current_root("current", &[]);
        // What a run stopped before its unmount leaves.
        case.fs.mount_top_level(&case.settings.mountpoint).unwrap();
        let status = case.run_ok();
        assert_eq!(status.get("rotated_to"), name(NOW), "{l}");
        // Not ours: never unmounted, never used.
        let past = name(NOW - 40 * DAY);
        case.old_root(&past, &["var/lib/machines"]);
        fs::write(case.root().join("marker"), "second").unwrap();
        mount_tmpfs(case, &case.settings.mountpoint, "size=64k");
        let mut settings = case.settings.clone();
        settings.now = Some(NOW + 60);
        let run = case.runner.run(case.fs.device(), &settings).unwrap();
        let status = run.status().unwrap();
        assert_eq!(status.get("result"), "failed", "{l} {}", run.transcript());
        assert!(
            status.get("message").contains("tmpfs"),
            "{l} {}",
            run.transcript()
        );
        assert!(
            is_mountpoint(&case.settings.mountpoint),
            "{l} unmounted a tmpfs"
        );
        assert!(case.intact(&past, &past, &["var/lib/machines"]), "{l}");
        case.check_persist();
    });
}

#[test]
fn a_mounted_subvolume_is_never_the_root_nor_the_old_roots() {
    for_each_interpreter(|case| {
        let l = &case.label;
        case.current_root("current", &[]);
        fs::create_dir_all(case.top().join("@persist/old")).unwrap();
        let root_name = name(NOW - 40 * DAY);
        case.fs
            .create_subvolume(&format!("@persist/{root_name}"))
            .unwrap();
        let digest = tree_digest(&case.top().join("@persist"));
        for (root, old) in [("@persist", "@old_roots"), ("@root", "@persist")] {
            let mut settings = case.settings.clone();
            settings.root_subvolume = Some(root.to_owned());
            settings.old_roots_subvolume = Some(old.to_owned());
            settings.mounted_subvolumes = Some("@persist /@nix @log".to_owned());
            let run = case.runner.run(case.fs.device(), &settings).unwrap();
            let status = run.status().unwrap();
            assert_eq!(
                status.get("result"),
                "failed",
                "{l} {root} {old}: {}",
                run.transcript()
            );
            assert!(
                status.get("message").contains("mounted by the system"),
                "{l} {}",
                run.transcript()
            );
            assert_eq!(
                tree_digest(&case.top().join("@persist")),
                digest,
                "{l} {root} {old}"
            );
            assert!(case.root().join("marker").exists(), "{l}");
        }
    });
}
