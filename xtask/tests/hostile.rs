//! `cargo xtask check` against hostile configs (issue 6): huge and deep
//! values, bytes that are not UTF-8, shell metacharacters, smuggled subvolume
//! selectors, absurd sizes and broken Nix. Each one runs through the real
//! binary and the real nix-instantiate, under a time limit and an
//! address-space limit (RLIMIT_AS, inherited by nix-instantiate), and must end
//! with its own finding code and exit 1: never a panic, never exit 2 for a
//! config that is merely wrong. The figures (time, peak memory, output size)
//! are printed; run with `-- --nocapture` to see them.
//!
//! The fixtures are in tests/fixtures/hostile/, one hazard each; most apply
//! one change to the repo's host with tests/fixtures/bad/with-change.nix.

mod support;
use support::copy_tree;

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A run is killed after this long: far above what any fixture needs (the
/// slowest takes seconds in a debug build), so the bound never makes the test flaky.
const TIME_LIMIT: Duration = Duration::from_secs(120);
/// RLIMIT_AS of the xtask and of the nix-instantiate it starts, in KiB.
const ADDRESS_SPACE_KIB: u64 = 4 << 20;
/// Most reports are a few KiB; tables of 10 000 rows a few MiB.
const DEFAULT_MAX_OUTPUT: usize = 4 << 20;

fn fixture(name: &str) -> String {
    format!(
        "{}/tests/fixtures/hostile/{name}.nix",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// What one limited run of the xtask left behind.
struct Run {
    code: Option<i32>,
    signal: Option<i32>,
    stdout: Vec<u8>,
    stderr: String,
    elapsed: Duration,
    /// Peak resident memory (VmHWM) of the xtask and of the largest
    /// nix-instantiate it started, in KiB, sampled every few milliseconds
    /// from /proc (so growth in a process's last milliseconds may be missed).
    peak_xtask_kib: u64,
    peak_nix_kib: u64,
}

impl Run {
    fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    fn describe(&self) -> String {
        format!(
            "exit {:?} (signal {:?}) after {:?}\n--- stdout (first 3000 bytes) ---\n{}\n--- stderr ---\n{}",
            self.code,
            self.signal,
            self.elapsed,
            self.stdout_text().chars().take(3000).collect::<String>(),
            self.stderr
        )
    }

    /// Never a panic, whatever else happened.
    fn assert_no_panic(&self, what: &str) {
        assert_ne!(self.code, Some(101), "{what} panicked: {}", self.describe());
        assert!(
            !self.stderr.contains("panicked"),
            "{what} panicked: {}",
            self.describe()
        );
        assert!(
            self.signal.is_none(),
            "{what} was killed: {}",
            self.describe()
        );
    }
}

/// VmHWM of process `pid` in KiB, if it is running `program` (by its comm:
/// before exec, a spawned child still shows its parent's memory).
fn high_water(pid: &str, program: &str) -> Option<u64> {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    if !comm.trim_end().starts_with(program) {
        return None;
    }
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|kib| kib.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The children of every thread of `pid`.
fn children(pid: &str) -> Vec<String> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .filter_map(|task| task.ok())
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Runs `xtask <args>` with RLIMIT_AS set (through `ulimit -v` in sh, which
/// then execs the xtask), samples its memory and that of the nix-instantiate
/// it starts, and kills it after `TIME_LIMIT`.
fn run_limited(args: &[&str], env: &[(&str, &str)]) -> Run {
    let xtask = assert_cmd::cargo::cargo_bin("xtask");
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(format!(
            "ulimit -v {ADDRESS_SPACE_KIB} && exec \"$0\" \"$@\""
        ))
        .arg(&xtask)
        .args(args)
        .env_remove("XTASK_NIX_TIMEOUT")
        .env_remove("XTASK_PROJECT_ROOT")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, value) in env {
        command.env(key, value);
    }
    let started = Instant::now();
    let mut child = command.spawn().expect("sh starts");
    let pid = child.id();
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let reading = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        stdout.read_to_end(&mut bytes).expect("reading stdout");
        bytes
    });
    let reading_errors = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        stderr.read_to_end(&mut bytes).expect("reading stderr");
        String::from_utf8_lossy(&bytes).into_owned()
    });
    let mut killed = false;
    let (mut peak_xtask_kib, mut peak_nix_kib) = (0, 0);
    let pid_text = pid.to_string();
    let status = loop {
        if let Some(kib) = high_water(&pid_text, "xtask") {
            peak_xtask_kib = peak_xtask_kib.max(kib);
            for child in children(&pid_text) {
                if let Some(kib) = high_water(&child, "nix") {
                    peak_nix_kib = peak_nix_kib.max(kib);
                }
            }
        }
        if let Some(status) = child.try_wait().expect("waiting for the xtask") {
            break status;
        }
        if !killed && started.elapsed() > TIME_LIMIT {
            child.kill().expect("killing the xtask");
            killed = true;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let elapsed = started.elapsed();
    let run = Run {
        code: status.code(),
        signal: std::os::unix::process::ExitStatusExt::signal(&status),
        stdout: reading.join().expect("the stdout reader"),
        stderr: reading_errors.join().expect("the stderr reader"),
        elapsed,
        peak_xtask_kib,
        peak_nix_kib,
    };
    assert!(
        !killed,
        "xtask {args:?} ran longer than {TIME_LIMIT:?}: {}",
        run.describe()
    );
    run
}

/// One hostile config: the finding code it must get, and a piece of text the
/// finding must hold (in its message or its location), so that the test
/// checks the right finding and not only its code.
struct Case {
    name: &'static str,
    code: &'static str,
    says: &'static str,
}

const fn case(name: &'static str, code: &'static str, says: &'static str) -> Case {
    Case { name, code, says }
}

/// Every fixture in tests/fixtures/hostile/ but the slow and special ones below.
const CORPUS: &[Case] = &[
    // Huge and deep.
    case("ten-thousand-subvolumes", "BTRFS001", "\"@data9999\""),
    case("hundred-thousand-attributes", "MODEL003", "99980 more"),
    case("deeply-nested-attrset", "MODEL006", "\"@nix\".nested.a.a"),
    case("nested-past-the-nix-stack", "NIX002", "stack overflow"),
    case("very-long-device", "DEV001", "more characters"),
    case("very-long-subvolume-name", "BTRFS003", "more characters"),
    case(
        "long-mountpoint-in-a-huge-table",
        "DEV002",
        "\"@data0\".mountpoint",
    ),
    case("ten-thousand-partitions", "PART008", "10004 partitions"),
    case("memory-bomb", "NIX002", "out of memory"),
    // Bytes that are not UTF-8.
    case("non-utf8-subvolume-name", "MODEL005", "\"@caddy\".name"),
    case("non-utf8-device", "MODEL005", "disk.main.device"),
    case("non-utf8-mountpoint", "MODEL005", "\"@caddy\".mountpoint"),
    case("non-utf8-attribute-name", "MODEL005", "the attribute name"),
    case("latin1-file", "MODEL005", "caf\u{fffd}"),
    case("utf16-file", "NIX001", "utf16-file.nix"),
    // Shell metacharacters.
    case("device-backticks", "DEV001", "`reboot`"),
    case("device-newline", "DEV001", "/dev/sda\\nreboot"),
    case("device-quotes-and-spaces", "DEV001", "; reboot"),
    case("device-glob", "DEV001", "/dev/sd*"),
    case("device-is-a-regular-file", "DEV001", "/tmp/disk.img"),
    case("subvolume-name-command", "BTRFS003", "@$(reboot)"),
    case(
        "subvolume-key-semicolon-newline",
        "BTRFS003",
        "@x;reboot\\n",
    ),
    case("label-backticks", "SHELL001", "swap`reboot`"),
    case("label-too-long", "DEV001", "36 characters"),
    // udev writes `;` as \x3b in by-partlabel names, disko as \x3B.
    case("disk-name-metacharacters", "DEV003", "disk-main;reboot-"),
    case("mountpoint-command", "DEV002", "caddy$(reboot)"),
    case("mountpoint-newline-quote", "DEV002", "/srv/a\\n"),
    case("mountpoint-spaces-star", "DEV002", "/srv/my data/*"),
    case("mount-option-fstab-injection", "DEV002", "/dev/sdb /etc"),
    // subvol= and subvolid= smuggled into mount options: another existing
    // subvolume is mounted (BTRFS012); one the kernel refuses is BTRFS004.
    case(
        "subvol-on-the-top-level-mount",
        "BTRFS012",
        "subvolume \"@root\"",
    ),
    case("subvolid-in-a-subvolume", "BTRFS004", "subvolid 256"),
    case(
        "subvol-through-filesystems-options",
        "BTRFS012",
        "fileSystems",
    ),
    case(
        "subvol-behind-a-comma",
        "BTRFS012",
        "subvolume \"@persist\"",
    ),
    // Absurd sizes.
    case("size-zero", "PART004", "has no size"),
    case("size-negative", "PART001", "-1G"),
    case("size-2-to-the-64-bytes", "PART001", "larger than 2^64"),
    case("size-twenty-digits", "PART001", "99999999999999999999P"),
    case("size-float-notation", "PART001", "1e9"),
    case("size-hex", "PART001", "0x10"),
    case("size-double-percent", "PART001", "100%%"),
    case("size-negative-integer", "MODEL001", "swap.size"),
    case("size-as-float", "MODEL001", "swap.size"),
    case("alignment-huge", "PART010", "\"swap\" is never created"),
    // Wrong shapes and types.
    case("mountpoint-relative", "BTRFS002", "var/lib/caddy"),
    case("root-mounted-twice", "BTRFS001", "/ is mounted twice"),
    case("empty-subvolume-name", "BTRFS003", "\"\""),
    case("subvolume-inside-old-roots", "BTRFS003", "@old_roots/x"),
    case("uuid-garbage", "MODEL001", "not a GUID"),
    case("type-code-garbage", "MODEL001", "EF02 --zap-all"),
    case("content-is-a-string", "MODEL001", "a string"),
    case("partitions-as-a-list", "MODEL001", "a list"),
    case("boolean-mountpoint", "MODEL001", "\"@caddy\".mountpoint"),
    case("null-everywhere", "MODEL001", "has no device"),
    case("disko-devices-null", "MODEL004", "no disko.devices"),
    case("file-systems-a-string", "MODEL001", "fileSystems"),
    case("layout-is-a-list", "MODEL001", "a list"),
    case("path-literal-mountpoint", "MODEL001", "path literal"),
    case("infinite-float", "MODEL001", "not a finite number"),
    case("function-in-config", "NIX002", "function-in-config.nix"),
    // Nix that does not evaluate.
    case("infinite-recursion", "NIX002", "infinite recursion"),
    case("import-missing-file", "NIX002", "no-such-file.nix"),
    case("throw", "NIX002", "throw.nix"),
    case("abort", "NIX002", "no disk today"),
    case("assertion-failure", "NIX002", "assertion"),
    case("needs-lib", "NIX004", "flake mode"),
    case("empty-file", "NIX001", "is empty"),
    case("only-a-comment", "NIX001", "is empty"),
];

/// The figures of one run, for the table printed at the end.
struct Figure {
    name: String,
    mode: &'static str,
    code: Option<i32>,
    elapsed: Duration,
    peak_xtask_kib: u64,
    peak_nix_kib: u64,
    output_bytes: usize,
}

fn print_figures(figures: &[Figure]) {
    println!(
        "{:<36} {:<5} {:>4} {:>8} {:>10} {:>10} {:>12}",
        "fixture", "mode", "exit", "ms", "xtask MiB", "nix MiB", "output bytes"
    );
    for f in figures {
        println!(
            "{:<36} {:<5} {:>4} {:>8} {:>10.1} {:>10.1} {:>12}",
            f.name,
            f.mode,
            f.code.map_or("-".to_owned(), |c| c.to_string()),
            f.elapsed.as_millis(),
            f.peak_xtask_kib as f64 / 1024.0,
            f.peak_nix_kib as f64 / 1024.0,
            f.output_bytes
        );
    }
}

/// Checks one case in both output modes; returns what went wrong, if anything.
fn check_case(
    case: &Case,
    env: &[(&str, &str)],
    max_output: usize,
    json_too: bool,
    figures: &mut Vec<Figure>,
) -> Vec<String> {
    let mut failures = Vec::new();
    let file = fixture(case.name);
    let human = run_limited(&["check", "--mode", "standalone", "--disko", &file], env);
    human.assert_no_panic(case.name);
    figures.push(Figure {
        name: case.name.to_owned(),
        mode: "text",
        code: human.code,
        elapsed: human.elapsed,
        peak_xtask_kib: human.peak_xtask_kib,
        peak_nix_kib: human.peak_nix_kib,
        output_bytes: human.stdout.len(),
    });
    let stdout = human.stdout_text();
    let tag = format!("error[{}]", case.code);
    if human.code != Some(1) || !stdout.contains(&tag) || !stdout.contains(case.says) {
        failures.push(format!(
            "{}: expected exit 1 with {tag} saying {:?}; {}",
            case.name,
            case.says,
            human.describe()
        ));
    }
    if human.stdout.len() > max_output {
        failures.push(format!(
            "{}: the report is {} bytes, more than {max_output}",
            case.name,
            human.stdout.len()
        ));
    }
    if !json_too {
        return failures;
    }
    let json = run_limited(
        &["check", "--mode", "standalone", "--json", "--disko", &file],
        env,
    );
    json.assert_no_panic(case.name);
    figures.push(Figure {
        name: case.name.to_owned(),
        mode: "json",
        code: json.code,
        elapsed: json.elapsed,
        peak_xtask_kib: json.peak_xtask_kib,
        peak_nix_kib: json.peak_nix_kib,
        output_bytes: json.stdout.len(),
    });
    let report: Value = match serde_json::from_slice(&json.stdout) {
        Ok(report) => report,
        Err(error) => {
            failures.push(format!(
                "{}: --json printed no JSON ({error}); {}",
                case.name,
                json.describe()
            ));
            return failures;
        }
    };
    let findings = report["hosts"][0]["findings"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let matching = findings.iter().any(|f| {
        f["code"] == case.code
            && (f["message"].as_str().unwrap_or("").contains(case.says)
                || f["path"].as_str().unwrap_or("").contains(case.says)
                || f["location"]["file"]
                    .as_str()
                    .unwrap_or("")
                    .contains(case.says))
    });
    if json.code != Some(1) || !matching {
        failures.push(format!(
            "{}: --json: expected exit 1 and a {} finding saying {:?}; got exit {:?} and {}",
            case.name,
            case.code,
            case.says,
            json.code,
            serde_json::to_string_pretty(&findings)
                .unwrap_or_default()
                .chars()
                .take(3000)
                .collect::<String>()
        ));
    }
    // Every finding tells what is wrong and how to fix it.
    for finding in &findings {
        if finding["message"].as_str().is_none_or(str::is_empty)
            || finding["hint"].as_str().is_none_or(str::is_empty)
        {
            failures.push(format!(
                "{}: a finding without message or fix: {finding}",
                case.name
            ));
        }
    }
    failures
}

#[test]
fn every_hostile_config_gets_its_finding_within_bounds() {
    let mut figures = Vec::new();
    let mut failures = Vec::new();
    for case in CORPUS {
        let max_output = match case.name {
            // One 16 MiB value, quoted once or twice: the report must stay small.
            "very-long-device" | "very-long-subvolume-name" => 64 << 10,
            _ => DEFAULT_MAX_OUTPUT,
        };
        failures.extend(check_case(case, &[], max_output, true, &mut figures));
    }
    print_figures(&figures);
    assert!(failures.is_empty(), "{}", failures.join("\n---\n"));
}

/// A computation without end is stopped by check's own time limit. Whether
/// the config loops or the machine is slow cannot be told apart, so it is a
/// run that could not finish (exit 2, with the limit and how to raise it),
/// never a finding about the file.
#[test]
fn an_endless_evaluation_is_stopped_and_is_no_finding() {
    let file = fixture("endless-evaluation");
    let run = run_limited(
        &["check", "--mode", "standalone", "--disko", &file],
        &[("XTASK_NIX_TIMEOUT", "2")],
    );
    run.assert_no_panic("endless-evaluation");
    assert_eq!(run.code, Some(2), "{}", run.describe());
    assert!(
        run.stderr.contains("did not finish within 2 s")
            && run.stderr.contains("XTASK_NIX_TIMEOUT"),
        "{}",
        run.describe()
    );
    assert!(!run.stdout_text().contains("NIX002"), "{}", run.describe());
}

/// Every fixture file is in the corpus, so none is forgotten.
#[test]
fn the_corpus_lists_every_fixture() {
    let dir = format!("{}/tests/fixtures/hostile", env!("CARGO_MANIFEST_DIR"));
    let mut listed: Vec<&str> = CORPUS.iter().map(|c| c.name).collect();
    // The helper that builds the huge layouts is not a fixture itself.
    listed.extend([
        "endless-evaluation",
        "hundred-thousand-subvolumes",
        "many-subvolumes",
    ]);
    let mut missing = Vec::new();
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).expect("the fixtures") {
        let name = entry.expect("an entry").file_name();
        let name = name.to_string_lossy();
        let Some(stem) = name.strip_suffix(".nix") else {
            continue;
        };
        if stem != "many-subvolumes" {
            count += 1;
        }
        if !listed.contains(&stem) {
            missing.push(stem.to_owned());
        }
    }
    assert!(
        missing.is_empty(),
        "fixtures not in the corpus: {missing:?}"
    );
    assert!(count >= 30, "only {count} hostile fixtures");
}

/// 100 000 subvolumes: linear work only. The bound is generous; the figure
/// is what matters (printed).
#[test]
fn a_hundred_thousand_subvolumes_stay_linear() {
    let mut figures = Vec::new();
    let failures = check_case(
        &case("hundred-thousand-subvolumes", "BTRFS001", "\"@data99999\""),
        &[],
        64 << 20,
        false,
        &mut figures,
    );
    print_figures(&figures);
    assert!(failures.is_empty(), "{}", failures.join("\n---\n"));
}

fn symlink(target: impl AsRef<Path>, link: impl AsRef<Path>) {
    std::os::unix::fs::symlink(target, link).expect("creating a symlink");
}

/// A copy of the repository's hosts/ and nix/ in a temporary directory, for
/// runs with XTASK_PROJECT_ROOT: the repository itself is never touched.
fn temporary_repo() -> tempfile::TempDir {
    let repo = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    let dir = tempfile::tempdir().expect("a temporary directory");
    for part in ["hosts", "nix"] {
        copy_tree(repo.join(part), dir.path().join(part));
    }
    dir
}

#[test]
fn symlink_loops_in_hosts_are_visited_once() {
    let dir = temporary_repo();
    let root = dir.path();
    let hosts = root.join("hosts");
    let host = hosts.join("servers").join("hetzner-cloud");
    // Directory loops: to an ancestor, to itself, and two links to each other.
    symlink("../..", host.join("back-to-hosts"));
    symlink(".", hosts.join("self"));
    symlink("b", hosts.join("a"));
    symlink("a", hosts.join("b"));
    symlink("nowhere", hosts.join("dangling"));
    // A host whose disko.nix is a link to itself, and one whose disko.nix is
    // a pipe nothing writes to (reading it would block for ever).
    std::fs::create_dir_all(hosts.join("ghost")).expect("ghost");
    symlink("disko.nix", hosts.join("ghost").join("disko.nix"));
    std::fs::create_dir_all(hosts.join("pipe")).expect("pipe");
    let fifo = Command::new("mkfifo")
        .arg(hosts.join("pipe").join("disko.nix"))
        .status()
        .expect("mkfifo runs");
    assert!(fifo.success());
    // .nix files that are links to themselves or to each other.
    symlink("loop.nix", root.join("nix").join("loop.nix"));
    symlink("two.nix", root.join("nix").join("one.nix"));
    symlink("one.nix", root.join("nix").join("two.nix"));

    let root_env = root.to_str().expect("a UTF-8 temporary path");
    let all = run_limited(
        &["check", "--all", "--mode", "standalone"],
        &[("XTASK_PROJECT_ROOT", root_env)],
    );
    all.assert_no_panic("check --all");
    let stdout = all.stdout_text();
    assert_eq!(all.code, Some(0), "{}", all.describe());
    assert_eq!(
        stdout.matches("== hetzner-cloud").count(),
        1,
        "{}",
        all.describe()
    );
    assert!(stdout.contains("in 1 host(s)"), "{}", all.describe());
    println!(
        "check --all over symlink loops: {} ms, xtask peak {:.1} MiB",
        all.elapsed.as_millis(),
        all.peak_xtask_kib as f64 / 1024.0
    );
    let one = run_limited(
        &["check", "--mode", "standalone"],
        &[("XTASK_PROJECT_ROOT", root_env)],
    );
    one.assert_no_panic("check");
    assert_eq!(one.code, Some(0), "{}", one.describe());
    // The results went to the copy, not to the repository.
    assert!(root.join("target/xtask/check.json").is_file());
}

#[test]
fn a_layout_path_full_of_shell_characters_is_passed_as_it_is() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let odd = dir.path().join("a b;$(touch pwned)`id`'\"*");
    std::fs::create_dir_all(&odd).expect("the odd directory");
    let layout = odd.join("disko.nix");
    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../hosts/servers/hetzner-cloud/disko.nix"
        ),
        &layout,
    )
    .expect("copying the host's layout");
    let run = run_limited(
        &[
            "check",
            "--mode",
            "standalone",
            "--disko",
            layout.to_str().expect("UTF-8"),
        ],
        &[],
    );
    run.assert_no_panic("check");
    assert_eq!(run.code, Some(0), "{}", run.describe());
    assert!(
        run.stdout_text().contains("ok: 0 error(s)"),
        "{}",
        run.describe()
    );
    assert!(!dir.path().join("pwned").exists());
    assert!(!odd.join("pwned").exists());
}

#[test]
fn layout_paths_that_are_no_files_exit_2_with_the_reason() {
    use assert_cmd::Command;
    use predicates::prelude::*;
    let dir = tempfile::tempdir().expect("a temporary directory");
    for (path, says) in [
        (dir.path().to_path_buf(), "not a regular file"),
        (PathBuf::from("/dev/zero"), "not a regular file"),
        (dir.path().join("missing.nix"), "no such file"),
    ] {
        Command::cargo_bin("xtask")
            .expect("the xtask binary")
            .args(["check", "--mode", "standalone", "--disko"])
            .arg(&path)
            .timeout(TIME_LIMIT)
            .assert()
            .code(2)
            .stderr(predicate::str::contains(says))
            .stderr(predicate::str::contains("panicked").not());
    }
    // A path that is not UTF-8 cannot be named in the report: clap says so.
    let name = <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(b"/tmp/caf\xe9.nix");
    Command::cargo_bin("xtask")
        .expect("the xtask binary")
        .args(["check", "--disko"])
        .arg(name)
        .timeout(TIME_LIMIT)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("UTF-8"))
        .stderr(predicate::str::contains("panicked").not());
}

#[test]
fn a_bad_time_limit_is_refused_with_the_fix() {
    let run = run_limited(
        &["check", "--mode", "standalone"],
        &[("XTASK_NIX_TIMEOUT", "soon")],
    );
    run.assert_no_panic("check");
    assert_eq!(run.code, Some(2), "{}", run.describe());
    assert!(
        run.stderr.contains("XTASK_NIX_TIMEOUT"),
        "{}",
        run.describe()
    );
}
