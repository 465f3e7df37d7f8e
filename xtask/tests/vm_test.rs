//! The full lab vm-test, as CI runs it: the real layout on a 480 GB disk,
//! the default boots, power cuts and `--thorough` under qemu, and tampered
//! copies of the rollback script that the month of boots must catch.
//! Without qemu or a kernel these tests fail and say what to install; they
//! never pass without having booted.

use std::process::Output;
use std::sync::Mutex;

use assert_cmd::Command;
use xtask::results::{CheckRecord, VmTestResults};

/// One VM at a time: CI has two cores.
static ONE_VM: Mutex<()> = Mutex::new(());

fn vm_test(args: &[&str]) -> (Output, VmTestResults) {
    let output = Command::cargo_bin("xtask")
        .expect("the xtask binary")
        .arg("vm-test")
        .args(args)
        .arg("--json")
        .output()
        .expect("running cargo xtask vm-test");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_ne!(
        output.status.code(),
        Some(2),
        "vm-test could not run (install what it names; a kernel comes with `apt-get install linux-image-cloud-amd64`):\n{stderr}"
    );
    let results: VmTestResults = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("vm-test printed no results ({e}):\n{stderr}"));
    (output, results)
}

fn check<'r>(results: &'r VmTestResults, boot: u32, name: &str) -> &'r CheckRecord {
    results
        .checks
        .iter()
        .find(|c| c.boot == boot && c.name == name)
        .unwrap_or_else(|| panic!("no check {name} at boot {boot}: {:#?}", results.checks))
}

#[test]
fn the_lab_vm_test_passes_on_the_real_layout_survives_power_cuts_and_runs_the_procedures() {
    let _one = ONE_VM.lock().unwrap_or_else(|e| e.into_inner());
    let (output, results) = vm_test(&["--power-cuts", "2", "--thorough"]);
    let failed: Vec<&CheckRecord> = results.checks.iter().filter(|c| !c.passed).collect();
    assert!(
        output.status.success() && failed.is_empty(),
        "failed checks: {failed:#?}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(results.header.passed);
    assert_eq!(results.backend, "lab");
    assert_eq!(results.disk_bytes, 480_000_000_000);
    let kinds: Vec<&str> = results.boots.iter().map(|b| b.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            // The default boots: the install, then the month.
            "install",
            "rotate",
            // Two power cuts, each followed by a normal boot.
            "power-cut",
            "rotate",
            "power-cut",
            "rotate",
            // --thorough: §4.3 and §4.4, §4.4 after its reboot and §4.5,
            // the reinstall, §4.5 after its reboot, then the calendar.
            "rotate",
            "rotate",
            "install",
            "rotate",
            "rotate-only",
            "rotate-only",
            "rotate-only",
            "rotate-only",
            "rotate-only",
            "rotate-only",
            "rotate-only",
        ]
    );

    // Every check the issue names, at the boots it belongs to.
    for name in [
        "partition-table",
        "subvolumes",
        "mount-options:/",
        "mount-options:/nix",
        "mount-options:/boot",
        "esp-permissions:/boot",
        "swap-encrypted",
        "swap-fresh-key",
        "compression:@nix",
        "compression:@containers",
        "nocow:/var/lib/containers",
        "trim:fstrim",
        "trim:discard-async",
        "trim:host-freed",
        "clock",
        "mount-time",
    ] {
        assert!(check(&results, 1, name).passed, "{name}");
    }
    for name in [
        "root-fresh",
        "root-wiped",
        "persist-marker",
        "old-roots",
        "rotation-time",
        "rollback-status",
        "swap-fresh-key",
        "mount-time",
        "first-run-root",
    ] {
        assert!(check(&results, 2, name).passed, "{name} at boot 2");
    }
    // The month: the clock jumped 40 days, then six rotations in one second
    // and one 31 days later, each held against the retention model, and
    // every rule was at work.
    let clock = check(&results, 2, "clock");
    assert!(
        clock.passed && clock.measured.starts_with("20"),
        "{clock:?}"
    );
    for run in 1..=7 {
        assert!(
            check(&results, 2, &format!("retention:run{run}")).passed,
            "run {run}"
        );
    }
    for run in 2..=7 {
        assert!(
            check(&results, 2, &format!("rollback-run:{run}")).passed,
            "run {run}"
        );
    }
    for name in [
        "month:deletion",
        "month:keep-at-least",
        "month:long-uptime",
        "month:same-second",
    ] {
        assert!(check(&results, 2, name).passed, "{name}");
    }
    // Each power cut (boots 3 and 5) is followed by a normal boot that finds everything.
    for (boot, cut) in [(4, 1), (6, 2)] {
        let survived = check(&results, boot, &format!("power-cut:{cut}"));
        assert!(
            survived.passed && survived.measured.contains("SIGKILL"),
            "{survived:?}"
        );
        for name in [
            "boot-completed",
            "root-fresh",
            "persist-marker",
            "subvolumes",
            "old-roots-kept",
            "retention:run1",
        ] {
            assert!(check(&results, boot, name).passed, "{name} after cut {cut}");
        }
    }

    // --thorough: the recovery procedures, each command run and recorded
    // under its checklist step, the data brought back by checksum.
    let steps: Vec<&str> = results.procedures.iter().map(|p| p.step.as_str()).collect();
    assert_eq!(steps, ["4.3", "4.4", "4.5"]);
    for procedure in &results.procedures {
        assert!(procedure.passed && procedure.provisional, "{procedure:#?}");
        assert!(
            procedure.commands.iter().all(|c| c.passed),
            "{procedure:#?}"
        );
    }
    let commands = |step: &str| {
        &results
            .procedures
            .iter()
            .find(|p| p.step == step)
            .unwrap()
            .commands
    };
    assert!(commands("4.3").iter().any(|c| c
        .ran
        .starts_with("sudo cp -a --reflink=auto /btrfs_tmp/@old_roots/20")
        && c.exit == Some(0)));
    // §4.4 spans a reboot, §4.5 a reinstall and a reboot: parts in later boots.
    let boots = |step: &str| {
        let mut boots: Vec<u32> = commands(step).iter().map(|c| c.boot).collect();
        boots.dedup();
        boots
    };
    assert_eq!(boots("4.4").len(), 2);
    assert_eq!(boots("4.5").len(), 3);
    assert_eq!(results.boots[boots("4.5")[1] as usize - 1].kind, "install");
    let verified: Vec<&xtask::results::CommandRecord> = results
        .procedures
        .iter()
        .flat_map(|p| &p.commands)
        .filter(|c| c.role == "verify" && c.expected.contains("captured"))
        .collect();
    assert!(verified.len() >= 3, "{verified:#?}");
    for step in ["4.3", "4.4", "4.5"] {
        assert!(results
            .checks
            .iter()
            .any(|c| c.name == format!("procedure:{step}") && c.passed));
    }
    // Roadmap 7.2 in the first boot of --thorough (boot 7, after the cuts).
    let discard: Vec<&CheckRecord> = results
        .checks
        .iter()
        .filter(|c| c.name == "discard-latency")
        .collect();
    assert!(
        discard.len() == 1 && discard[0].passed && discard[0].boot == 7,
        "{discard:#?}"
    );
    // The calendar's short boots are held against the model too.
    let calendar_checks = results
        .checks
        .iter()
        .filter(|c| c.boot > 10 && c.name.starts_with("retention:"))
        .count();
    assert_eq!(calendar_checks, 7);

    let figure = |name: &str| {
        *results
            .figures
            .get(name)
            .unwrap_or_else(|| panic!("no figure {name}: {:?}", results.figures.keys()))
    };
    assert!(figure("discard.released_bytes") >= 1_073_741_824.0);
    assert!(figure("discard.latency_p99_ms") > 0.0);
    assert!(figure("mount_ms.boot2") > 0.0);
    assert!(figure("compression.@nix.percent") > 30.0);
    assert!(figure("trim.freed_bytes") > 0.0);
    assert!(figure("rotation_ms.boot2") < 10_000.0);
    assert!(figure("vm.cpu_ms") > 0.0);
    assert!(figure("vm.peak_rss_bytes") > 0.0);
    assert!(figure("boot_ms.boot1") > 0.0);
    assert_eq!(figure("power_cuts.survived"), 2.0);
    assert_eq!(figure("power_cuts.total"), 2.0);

    // The file the deploy checklist reads says the same.
    let written: VmTestResults = xtask::results::read(&xtask::results::path("vm-test"))
        .unwrap()
        .expect("target/xtask/vm-test.json");
    assert_eq!(written.header.finished_at, results.header.finished_at);
    assert!(written.header.passed);
}

#[test]
fn a_tampered_realisation_fails_exactly_the_checks_that_see_it() {
    let _one = ONE_VM.lock().unwrap_or_else(|e| e.into_inner());
    let before = std::fs::read(xtask::results::path("vm-test")).ok();
    let (output, results) = vm_test(&[
        "--boots",
        "1",
        "--tamper",
        "drop-subvolume=@caddy",
        "--tamper",
        "drop-mount-option=/nix:noatime",
    ]);
    assert_eq!(
        output.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!results.header.passed);
    assert_eq!(results.header.kind, "vm-test-tampered");

    let subvolumes = check(&results, 1, "subvolumes");
    assert!(
        !subvolumes.passed && subvolumes.measured.contains("missing @caddy"),
        "{subvolumes:?}"
    );
    let nix = check(&results, 1, "mount-options:/nix");
    assert!(
        !nix.passed && nix.measured.contains("missing noatime"),
        "{nix:?}"
    );
    // What was not tampered with still passes.
    for name in [
        "partition-table",
        "mount-options:/",
        "mount-options:/persist",
        "compression:@nix",
        "swap-encrypted",
    ] {
        assert!(check(&results, 1, name).passed, "{name}");
    }
    // Without its subvolume, /var/lib/caddy cannot be mounted: a failed step, reported.
    assert!(results
        .checks
        .iter()
        .any(|c| c.name == "step:mount:/var/lib/caddy" && !c.passed));
    // The real results are not overwritten by a tampered run.
    assert_eq!(std::fs::read(xtask::results::path("vm-test")).ok(), before);
}

/// A copy of the real rollback script with `prologue` after its first line;
/// the copy lives as long as the returned directory.
fn tampered_script(prologue: &str) -> (tempfile::TempDir, String) {
    let real = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../nix/modules/btrfs-rollback/rollback.sh");
    let text = std::fs::read_to_string(&real).expect("the rollback script");
    let (shebang, rest) = text.split_once('\n').expect("a shebang line");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let copy = dir.path().join("rollback.sh");
    std::fs::write(&copy, format!("{shebang}\n{prologue}\n{rest}")).expect("writing the copy");
    (dir, copy.to_str().expect("a UTF-8 path").to_owned())
}

/// Runs the default vm-test with a tampered script: it must fail (exit 1),
/// with each of `failing` among the failed checks of `boot`, and leave the
/// real results alone.
fn fails_with(prologue: &str, boot: u32, failing: &[&str]) -> VmTestResults {
    let _one = ONE_VM.lock().unwrap_or_else(|e| e.into_inner());
    let before = std::fs::read(xtask::results::path("vm-test")).ok();
    let (_dir, script) = tampered_script(prologue);
    let (output, results) = vm_test(&["--rollback-script", &script]);
    let failed: Vec<&str> = results
        .checks
        .iter()
        .filter(|c| !c.passed && c.boot == boot)
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(
        output.status.code(),
        Some(1),
        "failed checks: {failed:?}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(results.header.kind, "vm-test-tampered");
    for name in failing {
        assert!(
            failed.contains(name),
            "{name} did not fail at boot {boot}: {failed:?}"
        );
    }
    assert_eq!(std::fs::read(xtask::results::path("vm-test")).ok(), before);
    results
}

#[test]
fn a_rollback_that_never_deletes_fails_the_month() {
    let results = fails_with(
        "BTRFS_ROLLBACK_RETENTION_DAYS=999999 # tampered: nothing is ever past retention",
        2,
        &["retention:run7", "month:deletion", "old-roots"],
    );
    assert!(check(&results, 2, "retention:run7")
        .measured
        .contains("kept but must be deleted"));
}

#[test]
fn a_rollback_that_ignores_keep_at_least_fails_the_month() {
    let results = fails_with(
        "BTRFS_ROLLBACK_KEEP_AT_LEAST=0 # tampered: keepAtLeast ignored",
        2,
        &["retention:run7", "month:keep-at-least"],
    );
    assert!(check(&results, 2, "retention:run7")
        .measured
        .contains("deleted but must be kept"));
}

#[test]
fn a_rollback_that_deletes_the_newest_root_fails() {
    let results = fails_with(
        r#"# tampered: after every rotation, the newest old root is deleted
btrfs() {
	command btrfs "$@" || return
	if [ "$1" = filesystem ] && [ "$2" = sync ]; then
		_tampered=$3/${BTRFS_ROLLBACK_OLD_ROOTS_SUBVOLUME:-@old_roots}
		_newest=$(ls -1 "$_tampered" | tail -n 1)
		[ -z "$_newest" ] || command btrfs subvolume delete "$_tampered/$_newest" >/dev/null
	fi
}"#,
        2,
        &["retention:run1", "old-roots"],
    );
    assert!(check(&results, 2, "retention:run1")
        .measured
        .contains("deleted but must be kept"));
}

#[test]
fn the_nixos_backend_fails_fast_and_says_what_is_missing_without_nixpkgs() {
    let started = std::time::Instant::now();
    let output = Command::cargo_bin("xtask")
        .expect("the xtask binary")
        .args(["vm-test", "--backend", "nixos"])
        .output()
        .expect("running cargo xtask vm-test --backend nixos");
    let stderr = String::from_utf8_lossy(&output.stderr);
    if output.status.success() {
        return; // a machine with the flake's inputs ran the NixOS test
    }
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("NixOS backend cannot run here"), "{stderr}");
    assert!(
        stderr.contains("flake") || stderr.contains("nixpkgs"),
        "names what is missing: {stderr}"
    );
    assert!(
        started.elapsed().as_secs() < 200,
        "not fast: {:?}",
        started.elapsed()
    );
}
