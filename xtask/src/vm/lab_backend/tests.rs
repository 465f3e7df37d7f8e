use super::*;
use crate::vm::accel::Accel;
use crate::vm::collect::collect;
use crate::vm::plan::Plan;
use crate::vm::qemu::{BootRun, Ending};
use layout::kernel_options::compression;
use layout::mount_options::effective;
use layout::testing::host_layout;

#[test]
fn what_if_compression_changes_every_btrfs_mount() {
    let layout = host_layout();
    let zstd3 = with_compression(&layout, "zstd:3");
    for (mountpoint, e) in effective(&zstd3) {
        if mountpoint != "/boot" {
            assert_eq!(
                compression(&e.options).as_deref(),
                Some("zstd:3"),
                "{mountpoint}"
            );
        }
    }
    let none = with_compression(&layout, "none");
    assert!(effective(&none)
        .values()
        .all(|e| compression(&e.options).is_none()));
    // The original is untouched.
    assert_eq!(
        compression(&effective(&layout)["/nix"].options).as_deref(),
        Some("zstd:1")
    );
}

fn install_plan() -> Plan {
    Plan {
        schema: 1,
        host: "test".to_owned(),
        boot: 1,
        boots: 2,
        kind: BootKind::Install,
        tools: crate::vm::plan::GuestTools::default(),
        rtc_base: None,
        steps: Vec::new(),
    }
}

/// Boot 1 as qemu and the agent ended it; no console log (none is read
/// unless the boot failed).
fn outcome(ending: Ending, started: bool, finished: bool) -> BootOutcome {
    let mut collected = collect(1, BootKind::Install, 1500, &[]);
    collected.started = started;
    collected.finished = finished;
    collected.record.passed = started && finished;
    BootOutcome {
        run: BootRun {
            events: Vec::new(),
            ending,
            wall: Duration::from_millis(1500),
            peak_rss_bytes: Some(64 << 20),
            cpu_ms: Some(700),
            malformed: Vec::new(),
            qemu_stderr: String::new(),
        },
        collected,
        console_log: Utf8PathBuf::from("/nonexistent/xtask-test/console.log"),
        rollback_span: None,
    }
}

#[test]
fn a_boot_that_ran_to_the_end_is_recorded_with_the_hosts_check() {
    let mut tally = Tally::default();
    let completion = tally
        .completed(
            &install_plan(),
            &outcome(Ending::Exited { code: Some(0) }, true, true),
            &Options::defaults().unwrap(),
            Accel::Tcg,
        )
        .unwrap();
    assert_eq!(completion, Completion::Ran { finished: true });
    assert_eq!(tally.boots.len(), 1);
    assert!(tally.boots[0].passed);
    assert!(tally.check_passed(1, "boot-completed"));
    assert_eq!(tally.figures["boot_ms.boot1"], 1500.0);
    assert_eq!(tally.figures["vm.cpu_ms"], 700.0);
    assert_eq!(tally.peak, 64 << 20);
    assert!(tally.could_not_run.is_none() && tally.failing_console.is_none());
}

#[test]
fn a_boot_that_timed_out_ran_but_failed() {
    let mut tally = Tally::default();
    let completion = tally
        .completed(
            &install_plan(),
            &outcome(Ending::TimedOut, true, false),
            &Options::defaults().unwrap(),
            Accel::Tcg,
        )
        .unwrap();
    assert_eq!(completion, Completion::Ran { finished: false });
    assert!(!tally.boots[0].passed);
    let check = tally
        .checks
        .iter()
        .find(|c| c.name == "boot-completed")
        .unwrap();
    assert!(!check.passed);
    assert_eq!(check.measured, "did not finish within 300 s");
    assert!(tally.failing_console.is_some());
    assert!(tally.could_not_run.is_none());
}

#[test]
fn a_boot_whose_agent_never_started_could_not_run() {
    let mut tally = Tally::default();
    let completion = tally
        .completed(
            &install_plan(),
            &outcome(Ending::Exited { code: Some(1) }, false, false),
            &Options::defaults().unwrap(),
            Accel::Tcg,
        )
        .unwrap();
    assert_eq!(completion, Completion::NeverStarted);
    assert_eq!(tally.boots.len(), 1);
    assert!(tally
        .could_not_run
        .as_deref()
        .unwrap()
        .starts_with("boot 1: the guest agent never started (qemu exited (status 1)"));
    assert!(!tally.checks.iter().any(|c| c.name == "boot-completed"));
}

#[test]
fn an_interrupted_boot_stops_the_run() {
    let mut tally = Tally::default();
    let error = tally
        .completed(
            &install_plan(),
            &outcome(Ending::Interrupted, true, false),
            &Options::defaults().unwrap(),
            Accel::Tcg,
        )
        .unwrap_err();
    assert!(error.to_string().starts_with("interrupted"));
}

#[test]
fn a_save_with_fixed_names_is_what_the_second_run_must_catch() {
    use crate::deploy_checklist::facts::testing::host_facts;
    use crate::hosts::testing::host_subject;
    let mut all = crate::deploy_checklist::server_procedures(&host_subject(), &host_facts());
    let tamper: Vec<Tamper> = vec![
        "procedure-fixed-names=rollback.reinstall".parse().unwrap(),
        "procedure-also-runs=verify.space:sgdisk".parse().unwrap(),
    ];
    prepare::tamper_procedures(&mut all, &tamper).unwrap();
    let reinstall = &all
        .iter()
        .find(|n| n.procedure.id == "rollback.reinstall")
        .unwrap()
        .procedure;
    let lines: Vec<&str> = reinstall.commands.iter().map(|c| c.line.as_str()).collect();
    assert!(lines
        .iter()
        .all(|l| !l.contains("<stamp>") && !l.contains("test ! -e")));
    assert!(lines.contains(
        &"sudo btrfs subvolume snapshot -r /btrfs_tmp/@persist /btrfs_tmp/@snapshots/@persist.saved-fixed"
    ));
    let space = &all
        .iter()
        .find(|n| n.procedure.id == "verify.space")
        .unwrap()
        .procedure;
    assert!(space.commands[0]
        .line
        .ends_with("&& sgdisk --version >/dev/null"));
    let unknown: Vec<Tamper> = vec!["procedure-fixed-names=no.such".parse().unwrap()];
    assert!(prepare::tamper_procedures(&mut all, &unknown).is_err());
}

#[test]
fn a_stale_save_keeps_every_name_and_snapshots_an_earlier_copy() {
    use crate::deploy_checklist::facts::testing::host_facts;
    use crate::hosts::testing::host_subject;
    let mut all = crate::deploy_checklist::server_procedures(&host_subject(), &host_facts());
    let before = all
        .iter()
        .find(|n| n.procedure.id == "rollback.rescue-save")
        .unwrap()
        .procedure
        .commands
        .len();
    let tamper: Vec<Tamper> = vec!["procedure-stale-save=rollback.rescue-save".parse().unwrap()];
    assert_eq!(
        tamper[0].to_string(),
        "procedure-stale-save=rollback.rescue-save"
    );
    prepare::tamper_procedures(&mut all, &tamper).unwrap();
    let rescue = &all
        .iter()
        .find(|n| n.procedure.id == "rollback.rescue-save")
        .unwrap()
        .procedure;
    let lines: Vec<&str> = rescue.commands.iter().map(|c| c.line.as_str()).collect();
    // Nothing removed, the new name and its guard kept: no command can see it.
    assert_eq!(lines.len(), before);
    assert!(lines.contains(&"test ! -e /mnt/@snapshots/@persist.saved-<stamp>"));
    assert!(lines.contains(
        &"old=$(ls -d /mnt/@snapshots/@persist.saved-* 2>/dev/null | head -n 1); btrfs subvolume snapshot -r \"${old:-/mnt/@persist}\" /mnt/@snapshots/@persist.saved-<stamp>"
    ));
    let unknown: Vec<Tamper> = vec!["procedure-stale-save=verify.space".parse().unwrap()];
    assert!(prepare::tamper_procedures(&mut all, &unknown).is_err());
}

#[test]
fn the_defaults_are_the_flags_defaults_without_the_environment() {
    let options = Options::defaults().unwrap();
    assert_eq!(options.host, hosts::DEFAULT_HOST);
    assert_eq!(options.boots, crate::results::FULL_VM_TEST_BOOTS);
    assert_eq!(
        (options.memory_mib, options.cpus, options.power_cuts),
        (1024, 2, 0)
    );
    assert!(options.progress);
    assert!(!options.thorough && !options.drills && !options.discard_probe && !options.keep_logs);
    assert_eq!(options.reporter, Reporter::Stderr);
    assert!(options.kernel.is_none() && options.modules.is_none() && options.accel.is_none());
    assert!(options.boot_timeout.is_none() && options.serve_ssh.is_none());
    assert!(options.tamper.is_empty() && options.compression.is_none());
}
