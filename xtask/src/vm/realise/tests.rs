use super::*;
use layout::testing::host_layout;

fn realisation_of<'a>(
    layout: &'a Layout,
    context: &'a Model<'a>,
    tamper: Vec<Tamper>,
) -> Realisation<'a> {
    let at = |name: &str| format!("/usr/sbin/{name}");
    let tools = GuestTools {
        sgdisk: "/usr/sbin/sgdisk".into(),
        mount: "/usr/bin/mount".into(),
        busybox: "/usr/bin/busybox".into(),
        mkfs_btrfs: at("mkfs.btrfs"),
        btrfs: at("btrfs"),
        mkfs_vfat: at("mkfs.vfat"),
        cryptsetup: at("cryptsetup"),
        mkswap: at("mkswap"),
        swapon: at("swapon"),
        swapoff: at("swapoff"),
        umount: at("umount"),
        blkid: at("blkid"),
        findmnt: at("findmnt"),
        lsattr: at("lsattr"),
        chattr: at("chattr"),
        compsize: at("compsize"),
        fstrim: at("fstrim"),
        bash: "/usr/bin/bash".into(),
        grep: "/usr/bin/grep".into(),
    };
    let script = EmbeddedScript {
        guest_path: "/etc/xtask/btrfs-rollback.sh".into(),
        host_path: "nix/modules/btrfs-rollback/rollback.sh".into(),
        sha256: "00".into(),
    };
    let inputs = RunInputs {
        tools,
        rollback: Some(script),
        rollback_settings: RollbackSettings::default(),
        boots: 3,
        nonce: "n0nce".into(),
        tamper,
    };
    Realisation::new(layout, context, inputs).unwrap()
}

fn context_of(layout: &Layout) -> Model<'_> {
    let sizes = [("main".to_owned(), 480_000_000_000u64)]
        .into_iter()
        .collect();
    Model::new(layout, &sizes, crate::hosts::Firmware::default())
}

fn argv_of<'p>(plan: &'p Plan, name: &str) -> &'p [String] {
    plan.steps
        .iter()
        .find_map(|s| match (&s.action, s.name == name) {
            (Action::Run { argv, .. }, true) => Some(argv.as_slice()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no step {name}"))
}

fn expectation<'p>(plan: &'p Plan, name: &str) -> &'p Expect {
    plan.steps
        .iter()
        .find_map(|s| match &s.action {
            Action::Check(c) if c.name == name => Some(&c.expect),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no check {name}"))
}

#[test]
fn install_runs_sgdisk_as_disko_and_expects_the_computed_geometry() {
    let layout = host_layout();
    let context = context_of(&layout);
    let plan = realisation_of(&layout, &context, vec![]).plan(1).unwrap();
    assert_eq!(plan.kind, BootKind::Install);
    assert_eq!(
        argv_of(&plan, "sgdisk:1"),
        [
            "/usr/sbin/sgdisk",
            "--align-end",
            "--new=1:0:+1M",
            "--partition-guid=1:R",
            "--change-name=1:disk-main-boot",
            "--typecode=1:EF02",
            "--attributes=1:=:0",
            "/dev/vda"
        ]
    );
    assert_eq!(argv_of(&plan, "sgdisk:4")[2], "--new=4:0:-0");
    // Randomly encrypted swap gets no mkswap from disko; NixOS makes it at each boot.
    assert!(!plan.steps.iter().any(|s| s.name.starts_with("mkswap:")));
    let Expect::PartitionTable { partitions, .. } = expectation(&plan, "partition-table") else {
        panic!()
    };
    let sectors: Vec<(u64, u64)> = partitions
        .iter()
        .map(|p| (p.start_sector, p.end_sector))
        .collect();
    assert_eq!(
        sectors,
        [
            (2048, 4095),
            (4096, 2101247),
            (2101248, 69210111),
            (69210112, 937498623)
        ]
    );
    // All 8 subvolumes, / mounted first with the model's options.
    let Expect::Subvolumes { names, .. } = expectation(&plan, "subvolumes") else {
        panic!()
    };
    assert_eq!(names.len(), 8);
    let first_mount = plan
        .steps
        .iter()
        .find(|s| s.name.starts_with("mount:"))
        .unwrap();
    assert_eq!(first_mount.name, "mount:/");
    assert_eq!(
        argv_of(&plan, "mount:/nix"),
        [
            "/usr/bin/mount",
            "-t",
            "btrfs",
            "-o",
            "compress=zstd:1,noatime,ssd,space_cache=v2,discard=async,subvol=@nix",
            "/dev/disk/by-partlabel/disk-main-root",
            "/sysroot/nix"
        ]
    );
    // What check predicts, in the kernel's words.
    let Expect::MountOptions { options, .. } = expectation(&plan, "mount-options:/nix") else {
        panic!()
    };
    for option in [
        "noatime",
        "subvol=/@nix",
        "compress=zstd:1",
        "ssd",
        "space_cache=v2",
        "discard=async",
    ] {
        assert!(
            options.contains(&option.to_owned()),
            "{option} not in {options:?}"
        );
    }
    let Expect::MountOptions { options, .. } = expectation(&plan, "mount-options:/boot") else {
        panic!()
    };
    assert_eq!(options, &["fmask=0177", "dmask=0077"]);
    let Expect::Compression {
        min_saving_percent,
        algorithm,
        ..
    } = expectation(&plan, "compression:@nix")
    else {
        panic!()
    };
    assert_eq!(
        (algorithm.as_deref(), *min_saving_percent),
        (Some("zstd"), Some(30.0))
    );
    let Expect::Compression { algorithm, .. } = expectation(&plan, "compression:@containers")
    else {
        panic!()
    };
    assert_eq!(*algorithm, None, "No_COW data is stored uncompressed");
    assert!(matches!(
        expectation(&plan, "nocow:/var/lib/containers"),
        Expect::NoCow { .. }
    ));
    let Expect::Permissions {
        directory_mode,
        file_mode,
        ..
    } = expectation(&plan, "esp-permissions:/boot")
    else {
        panic!()
    };
    assert_eq!((*directory_mode, *file_mode), (0o700, 0o600));
    let Expect::SwapEncrypted {
        sectors, mapper, ..
    } = expectation(&plan, "swap-encrypted")
    else {
        panic!()
    };
    assert_eq!(*sectors, 32 << 21);
    assert_eq!(
        mapper,
        "/dev/mapper/dev-disk-byx2dpartlabel-diskx2dmainx2dswap"
    );
    // No shell anywhere: every program is an absolute path.
    for s in &plan.steps {
        if let Action::Run { argv, .. } = &s.action {
            assert!(argv[0].starts_with('/') || argv[0].is_empty(), "{argv:?}");
        }
    }
}

#[test]
fn rotation_runs_the_script_before_mounting_and_expects_the_old_roots() {
    let layout = host_layout();
    let context = context_of(&layout);
    let plan = realisation_of(&layout, &context, vec![]).plan(3).unwrap();
    assert_eq!(plan.kind, BootKind::Rotate);
    let position = |prefix: &str| {
        plan.steps
            .iter()
            .position(|s| s.name.starts_with(prefix))
            .unwrap()
    };
    assert!(position("rollback") < position("mount:"));
    assert!(!plan
        .steps
        .iter()
        .any(|s| s.name.starts_with("sgdisk") || s.name.starts_with("mkfs")));
    let Action::Rollback(rollback) = &plan.steps[position("rollback")].action else {
        panic!()
    };
    assert_eq!(
        rollback.argv,
        [
            "/usr/bin/busybox",
            "sh",
            "/etc/xtask/btrfs-rollback.sh",
            "/dev/disk/by-partlabel/disk-main-root"
        ]
    );
    assert_eq!(rollback.env["BTRFS_ROLLBACK_MOUNTPOINT"], "/btrfs_tmp");
    assert_eq!(rollback.env["BTRFS_ROLLBACK_ROOT_SUBVOLUME"], "@root");
    assert_eq!(rollback.env["BTRFS_ROLLBACK_RETENTION_DAYS"], "30");
    assert_eq!(rollback.env["BTRFS_ROLLBACK_KEEP_AT_LEAST"], "5");
    let Expect::OldRoots {
        min_count,
        max_count,
        newest_holds,
        ..
    } = expectation(&plan, "old-roots")
    else {
        panic!()
    };
    assert_eq!((*min_count, *max_count), (2, 2));
    assert!(newest_holds.contains(&"etc/xtask-boot-2".to_owned()));
    let Expect::Absent { paths } = expectation(&plan, "root-wiped") else {
        panic!()
    };
    assert!(paths.contains(&"/sysroot/etc/xtask-boot-1".to_owned()));
    assert!(paths.contains(&"/sysroot/etc/xtask-boot-2".to_owned()));
    assert!(matches!(
        expectation(&plan, "persist-marker"),
        Expect::Digest { .. }
    ));
    let Expect::FreshRoot { allowed, .. } = expectation(&plan, "root-fresh") else {
        panic!()
    };
    assert_eq!(
        allowed,
        &[".snapshots", "boot", "btrfs_tmp", "nix", "persist", "var"]
    );
    // Checked before this boot writes its own files.
    let position = |prefix: &str| {
        plan.steps
            .iter()
            .position(|s| s.name.starts_with(prefix))
            .unwrap()
    };
    assert!(position("check:root-fresh") < position("write:"));
}

#[test]
fn after_a_power_cut_the_old_roots_may_be_one_or_two_more() {
    let layout = host_layout();
    let context = context_of(&layout);
    let history = History::AfterPowerCut {
        old_roots_before: 2,
        last_completed_boot: 3,
    };
    let plan = realisation_of(&layout, &context, vec![])
        .plan_with_history(5, history)
        .unwrap();
    let Expect::OldRoots {
        min_count,
        max_count,
        newest_holds,
        some_holds,
        ..
    } = expectation(&plan, "old-roots")
    else {
        panic!()
    };
    assert_eq!((*min_count, *max_count), (3, 4));
    assert!(newest_holds.is_empty());
    assert!(some_holds.contains(&"etc/xtask-boot-3".to_owned()));
    let rollback = plan
        .steps
        .iter()
        .find_map(|s| match &s.action {
            Action::Rollback(r) => Some(r),
            _ => None,
        })
        .unwrap();
    assert!(!rollback.rotation_required);
}

fn position(plan: &Plan, prefix: &str) -> usize {
    plan.steps
        .iter()
        .position(|s| s.name.starts_with(prefix))
        .unwrap_or_else(|| panic!("no step {prefix}"))
}

#[test]
fn the_install_starts_the_discard_probe_after_its_writes_and_ends_it_before_fstrim() {
    let layout = host_layout();
    let context = context_of(&layout);
    let mut spec = BootSpec::new(1);
    spec.rtc_base = Some(1_799_589_600);
    spec.discard_probe = Some(DiscardBudget {
        p99_ms: 1000.0,
        max_ms: 3000.0,
    });
    let plan = realisation_of(&layout, &context, vec![])
        .plan_for(&spec)
        .unwrap();
    assert_eq!(plan.rtc_base, Some(1_799_589_600));
    assert_eq!(position(&plan, "check:clock"), 1);
    // With `--boots 1` the probe is in the install boot: after its
    // writes, before the trim probe.
    assert!(position(&plan, "fill:/var/lib/containers") < position(&plan, "discard:probe"));
    assert!(position(&plan, "discard:probe") < position(&plan, "check:partition-table"));
    assert!(position(&plan, "check:discard-latency") < position(&plan, "check:trim:fstrim"));
    let Expect::DiscardLatency {
        min_released_bytes,
        p99_budget_ms,
        ..
    } = expectation(&plan, "discard-latency")
    else {
        panic!()
    };
    assert_eq!((*min_released_bytes, *p99_budget_ms), (1 << 30, 1000.0));
}

fn admin_login() -> AdminLogin {
    AdminLogin {
        user: "hbohlen".to_owned(),
        uid: 1000,
        gid: 100,
        groups: vec![100, 1],
        home: "/home/hbohlen".to_owned(),
        commands: Default::default(),
    }
}

/// A procedure part with no commands: where it lands in the plan is what counts.
fn admin_step(step: &str) -> AdminStep {
    AdminStep {
        id: format!("id-{step}"),
        step: step.to_owned(),
        title: "t".to_owned(),
        part: 0,
        login: admin_login(),
        substitutions: Vec::new(),
        commands: Vec::new(),
        captured: BTreeMap::new(),
    }
}

#[test]
fn a_rotation_ends_the_discard_probe_before_the_checklists_fstrim() {
    // `bench` puts the probe into the default run's last boot, where the
    // checklist's §3.8 runs `fstrim`: that would trim what async discard
    // is to release, and the probe would see nothing released.
    let layout = host_layout();
    let context = context_of(&layout);
    let mut spec = BootSpec::new(2);
    spec.discard_probe = Some(DiscardBudget {
        p99_ms: 1000.0,
        max_ms: 3000.0,
    });
    spec.procedures = vec![admin_step("3.8")];
    let plan = realisation_of(&layout, &context, vec![])
        .plan_for(&spec)
        .unwrap();
    assert!(position(&plan, "discard:probe") < position(&plan, "check:discard-latency"));
    assert!(position(&plan, "check:discard-latency") < position(&plan, "procedure:3.8"));
}

#[test]
fn the_months_boot_rotates_again_at_the_clocks_the_plan_sets() {
    let layout = host_layout();
    let context = context_of(&layout);
    let mut spec = BootSpec::new(2);
    spec.extra_runs = vec![0, 0, 86_400];
    spec.first_run_holds = spec.newest_holds.take();
    spec.old_roots_expected = Some((3, 3));
    let realisation = realisation_of(&layout, &context, vec![]);
    let plan = realisation.plan_for(&spec).unwrap();
    let Action::Rollback(rollback) = &plan.steps[position(&plan, "rollback")].action else {
        panic!()
    };
    assert_eq!(rollback.extra_runs, [0, 0, 86_400]);
    assert!(rollback
        .first_run_holds
        .contains(&"etc/xtask-boot-1".to_owned()));
    assert_eq!(rollback.old_roots.directory, "@old_roots");
    let Expect::OldRoots {
        min_count,
        max_count,
        newest_holds,
        some_holds,
        ..
    } = expectation(&plan, "old-roots")
    else {
        panic!()
    };
    assert_eq!((*min_count, *max_count), (3, 3));
    assert!(newest_holds.is_empty() && some_holds.is_empty());
}

#[test]
fn procedures_run_in_the_system_continued_ones_before_the_checks() {
    let layout = host_layout();
    let context = context_of(&layout);
    let login = admin_login();
    let mut spec = BootSpec::new(4);
    spec.continued = vec![admin_step("4.4")];
    spec.procedures = vec![admin_step("4.5")];
    let plan = realisation_of(&layout, &context, vec![])
        .plan_for(&spec)
        .unwrap();
    // / is checked before stage 2 puts directories into it, then
    // impermanence binds and links what /persist keeps.
    assert!(position(&plan, "check:root-fresh") < position(&plan, "impermanence"));
    assert!(position(&plan, "impermanence") < position(&plan, "system:enter"));
    let Action::Persistence { directories, files } =
        &plan.steps[position(&plan, "impermanence")].action
    else {
        panic!()
    };
    assert!(directories
        .iter()
        .any(|d| d.storage == "/sysroot/persist/var/lib/nixos"
            && d.target == "/sysroot/var/lib/nixos"));
    assert!(files.iter().any(|f| f.link == "/persist/etc/machine-id"));
    assert!(position(&plan, "system:enter") < position(&plan, "procedure:4.4"));
    assert!(position(&plan, "procedure:4.4") < position(&plan, "check:persist-marker"));
    assert!(position(&plan, "check:subvolumes") < position(&plan, "procedure:4.5"));
    assert!(position(&plan, "procedure:4.5") < position(&plan, "write:"));
    let Action::EnterSystem {
        binds,
        login: given,
    } = &plan.steps[position(&plan, "system:enter")].action
    else {
        panic!()
    };
    for dir in ["/proc", "/dev", "/run", "/usr", "/lib"] {
        assert!(binds.contains(&dir.to_owned()), "{dir}");
    }
    assert_eq!(given.as_ref(), Some(&login));
    // The install boot writes what systemd and sshd create at the first boot.
    let install = realisation_of(&layout, &context, vec![]).plan(1).unwrap();
    let Action::WriteFile { path, contents } =
        &install.steps[position(&install, "first-boot:/etc/machine-id")].action
    else {
        panic!()
    };
    assert_eq!(path, "/sysroot/persist/etc/machine-id");
    assert_eq!(contents.trim().len(), 32);
    // A short boot: the rollback and the old roots, nothing mounted.
    let mut short = BootSpec::new(5);
    short.kind = BootKind::RotateOnly;
    let plan = realisation_of(&layout, &context, vec![])
        .plan_for(&short)
        .unwrap();
    assert!(plan.steps.iter().any(|s| s.name == "check:old-roots"));
    assert!(!plan.steps.iter().any(|s| s.name.starts_with("mount:")));
}

#[test]
fn root_files_stay_on_the_root_subvolume() {
    let layout = host_layout();
    let context = context_of(&layout);
    let files = realisation_of(&layout, &context, vec![]).root_files(1);
    assert!(!files.is_empty());
    for file in files {
        assert!(
            !file.starts_with("/nix")
                && !file.starts_with("/var/log")
                && !file.starts_with("/persist")
        );
    }
}

#[test]
fn tampering_changes_the_steps_not_the_expectations() {
    let layout = host_layout();
    let context = context_of(&layout);
    let tamper = vec![
        "drop-subvolume=@caddy".parse().unwrap(),
        "drop-mount-option=/nix:noatime".parse().unwrap(),
    ];
    let plan = realisation_of(&layout, &context, tamper).plan(1).unwrap();
    assert!(!plan.steps.iter().any(|s| s.name == "subvolume:@caddy"));
    let Expect::Subvolumes { names, .. } = expectation(&plan, "subvolumes") else {
        panic!()
    };
    assert!(names.contains(&"@caddy".to_owned()));
    assert!(!argv_of(&plan, "mount:/nix")[4].contains("noatime"));
    let Expect::MountOptions { options, .. } = expectation(&plan, "mount-options:/nix") else {
        panic!()
    };
    assert!(options.contains(&"noatime".to_owned()));
    assert!("drop-everything".parse::<Tamper>().is_err());
    let wrong: Tamper = "procedure-expect=verify.swap".parse().unwrap();
    assert_eq!(wrong, Tamper::ProcedureExpect("verify.swap".to_owned()));
    assert_eq!(wrong.to_string(), "procedure-expect=verify.swap");
    assert!("procedure-drop-sudo=".parse::<Tamper>().is_err());
    assert!("drop-mount-option=/nix".parse::<Tamper>().is_err());
    for text in [
        "procedure-also-runs=verify.space:sgdisk",
        "procedure-fixed-names=rollback.reinstall",
        "server-path=without-host-packages",
    ] {
        assert_eq!(text.parse::<Tamper>().unwrap().to_string(), text);
    }
    assert!("procedure-also-runs=verify.space"
        .parse::<Tamper>()
        .is_err());
    assert!("server-path=anything".parse::<Tamper>().is_err());
}

#[test]
fn hostile_strings_stay_single_arguments_and_no_shell_runs_them() {
    // Shell metacharacters in names, labels and options reach the guest as
    // data: each one argument of an argument vector, never shell text.
    let mut evaluation = layout::testing::host_evaluation();
    let hostile = "@x;$(reboot)`id` \"'|&>*";
    let btrfs = &mut evaluation["layout"]["disko"]["devices"]["disk"]["main"]["content"]
        ["partitions"]["root"]["content"];
    btrfs["subvolumes"][hostile] = serde_json::json!({ "mountpoint": "/srv/a b;c" });
    btrfs["mountOptions"]
        .as_array_mut()
        .unwrap()
        .push("x-note=$(halt)".into());
    let (layout, _) = layout::testing::layout_of(&evaluation);
    let layout = layout.unwrap();
    let context = context_of(&layout);
    let plan = realisation_of(&layout, &context, vec![]).plan(1).unwrap();
    let mut seen_subvolume = false;
    for step in &plan.steps {
        if let Action::Run { argv, .. } = &step.action {
            let program = argv[0].rsplit('/').next().unwrap();
            assert!(argv[0].starts_with('/'), "{argv:?}");
            assert!(
                !["sh", "bash", "dash", "busybox"].contains(&program),
                "a shell runs {argv:?}"
            );
            if argv
                .iter()
                .any(|a| a == &format!("/run/xtask/disko/{hostile}"))
            {
                seen_subvolume = true;
            }
            for argument in argv {
                assert!(!argument.contains('\n'), "{argument:?}");
            }
        }
    }
    assert!(
        seen_subvolume,
        "the hostile subvolume is created from one argument"
    );
    assert_eq!(
        argv_of(&plan, "mount:/srv/a b;c").last().unwrap(),
        "/sysroot/srv/a b;c"
    );
    // The plan survives JSON unchanged, as the guest reads it.
    let back: Plan = serde_json::from_str(&plan.to_json()).unwrap();
    assert_eq!(back, plan);
}

#[test]
fn rollback_settings_from_the_host_or_the_module_defaults() {
    let value = serde_json::json!({ "boot": { "btrfsRollback": {
        "enable": true, "mountPoint": "/mnt/top", "retentionDays": 7, "keepAtLeast": 2
    }}});
    let settings = RollbackSettings::from_evaluation(&value, "rollback.nix").unwrap();
    assert_eq!(settings.mount_point, "/mnt/top");
    assert_eq!((settings.retention_days, settings.keep_at_least), (7, 2));
    assert_eq!(settings.root_subvolume, "@root");
    let bad = serde_json::json!({ "boot": { "btrfsRollback": { "keepAtLeast": "five" } } });
    assert!(RollbackSettings::from_evaluation(&bad, "rollback.nix").is_err());
    let none = RollbackSettings::from_evaluation(&serde_json::json!({}), "x").unwrap();
    assert_eq!(none.mount_point, RollbackSettings::default().mount_point);
}

#[test]
fn systemd_names_like_nixos() {
    assert_eq!(
        systemd_device_name("/dev/disk/by-partlabel/disk-main-swap"),
        "dev-disk-byx2dpartlabel-diskx2dmainx2dswap"
    );
    assert_eq!(systemd_device_name("/dev/sda3"), "dev-sda3");
}

#[test]
fn the_month_measures_what_its_rollback_deletes_around_the_hosts_fstrim_service() {
    let layout = host_layout();
    let context = context_of(&layout);
    let realisation = realisation_of(&layout, &context, vec![]);
    let triggers = vec!["OnBootSec=15min".to_owned()];
    // The install leaves the data in its root, after everything else.
    let mut install = BootSpec::new(1);
    install.rollback_trim = Some(RollbackTrim {
        triggers: triggers.clone(),
    });
    let plan = realisation.plan_for(&install).unwrap();
    let write = position(&plan, "rollback-trim:write");
    let Action::WriteRandom { path, bytes } = &plan.steps[write].action else {
        panic!()
    };
    assert_eq!(
        (path.as_str(), *bytes),
        ("/sysroot/var/tmp/xtask-rollback-trim", ROLLBACK_TRIM_BYTES)
    );
    assert!(position(&plan, "trim:measure-after") < write);
    // Without it, no boot writes it.
    assert!(!realisation
        .plan(1)
        .unwrap()
        .steps
        .iter()
        .any(|s| s.name.starts_with("rollback-trim")));

    // The month: measured before the rollback, after the cleaner, after fstrim.service.
    let mut month = BootSpec::new(2);
    month.procedures = vec![admin_step("3.8")];
    month.rollback_trim = Some(RollbackTrim { triggers });
    let plan = realisation.plan_for(&month).unwrap();
    let order = [
        "measure:rollback-trim.before",
        "rollback",
        "rollback-trim:cleaned",
        "measure:rollback-trim.deleted",
        "check:trim:fstrim-service",
        "measure:rollback-trim.after",
        "procedure:3.8",
    ];
    for pair in order.windows(2) {
        assert!(
            position(&plan, pair[0]) < position(&plan, pair[1]),
            "{pair:?}"
        );
    }
    assert_eq!(
        argv_of(&plan, "rollback-trim:cleaned"),
        ["/usr/sbin/btrfs", "subvolume", "sync", "/sysroot/btrfs_tmp"]
    );
    let Expect::FstrimService {
        args, mountpoint, ..
    } = expectation(&plan, "trim:fstrim-service")
    else {
        panic!()
    };
    assert_eq!(
        args,
        &[
            "--listed-in",
            "/etc/fstab:/proc/self/mountinfo",
            "--verbose",
            "--quiet-unsupported"
        ]
    );
    assert_eq!(mountpoint, "/sysroot");
    // A host whose timer never starts fstrim.service: measured, not trimmed.
    month.rollback_trim = Some(RollbackTrim { triggers: vec![] });
    let plan = realisation.plan_for(&month).unwrap();
    assert!(plan
        .steps
        .iter()
        .any(|s| s.name == "measure:rollback-trim.after"));
    assert!(!plan
        .steps
        .iter()
        .any(|s| s.name == "check:trim:fstrim-service"));
}
