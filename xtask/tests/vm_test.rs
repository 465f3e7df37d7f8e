//! The full lab vm-test, as CI runs it: the real layout on a 480 GB disk,
//! three boots under qemu. Without qemu or a kernel these tests fail and
//! say what to install; they never pass without having booted.

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
fn the_lab_vm_test_passes_on_the_real_layout_and_survives_power_cuts() {
    let _one = ONE_VM.lock().unwrap_or_else(|e| e.into_inner());
    let (output, results) = vm_test(&["--power-cuts", "2"]);
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
            "install",
            "rotate",
            "rotate",
            "power-cut",
            "rotate",
            "power-cut",
            "rotate"
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
    ] {
        assert!(check(&results, 1, name).passed, "{name}");
    }
    for boot in [2, 3] {
        for name in [
            "root-wiped",
            "persist-marker",
            "old-roots",
            "rotation-time",
            "rollback-status",
            "swap-fresh-key",
        ] {
            assert!(check(&results, boot, name).passed, "{name} at boot {boot}");
        }
    }
    assert!(check(&results, 3, "old-roots-kept").passed);
    // Each power cut (boots 4 and 6) is followed by a normal boot that finds everything.
    for (boot, cut) in [(5, 1), (7, 2)] {
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
        ] {
            assert!(check(&results, boot, name).passed, "{name} after cut {cut}");
        }
    }

    let figure = |name: &str| {
        *results
            .figures
            .get(name)
            .unwrap_or_else(|| panic!("no figure {name}: {:?}", results.figures.keys()))
    };
    assert!(figure("compression.@nix.percent") > 30.0);
    assert!(figure("trim.freed_bytes") > 0.0);
    assert!(figure("rotation_ms.boot2") < 10_000.0);
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
