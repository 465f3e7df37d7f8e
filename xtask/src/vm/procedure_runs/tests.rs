//! Unit tests of `procedures`.

use std::collections::BTreeMap;

use super::*;
use crate::deploy_checklist::disposition::ssh_has_command;
use crate::deploy_checklist::facts::testing::host_facts;
use crate::deploy_checklist::facts::Where;
use crate::deploy_checklist::procedures::Expect;
use crate::deploy_checklist::server_procedures;
use crate::hosts::testing::host_subject;
use crate::vm::plan::{AdminStep, CommandRole};

fn lab() -> Lab {
    Lab {
        names: Names {
            top: "/btrfs_tmp".into(),
            old_roots: "@old_roots".into(),
            persist: "@persist".into(),
            snapshots: "@snapshots".into(),
        },
        disk: Some(("/dev/sda".into(), "/dev/vda".into())),
        login: AdminLogin {
            user: "hbohlen".into(),
            uid: 1000,
            gid: 100,
            groups: vec![100, 1],
            home: "/home/hbohlen".into(),
            commands: Default::default(),
        },
        lost: Some(LostFile {
            path: "root/xtask/boot-3.txt".into(),
            sha256: "ab".repeat(32),
        }),
        erased: vec!["/var/log".into(), "/var/lib/caddy".into()],
        root_subvolume: "@root".to_owned(),
    }
}

fn programs(line: &str) -> Vec<String> {
    simple_commands(line)
        .into_iter()
        .map(|w| w[0].clone())
        .collect()
}

#[test]
fn the_programs_of_a_line() {
    assert_eq!(
        programs("sudo journalctl -b -o cat | grep '^btrfs-rollback: '"),
        ["journalctl", "grep"]
    );
    assert_eq!(
            programs("sudo ls \"/btrfs_tmp/@old_roots/$(ls /btrfs_tmp/@old_roots | tail -n 1)/root/wiped-at-boot\""),
            ["ls", "ls", "tail"]
        );
    assert_eq!(
        programs("sudo sh -c 'sha256sum /etc/machine-id > /persist/identity.sha256'"),
        ["sh"]
    );
    assert_eq!(
        programs("NIX_SSHOPTS='-p 2' nixos-rebuild switch --flake .#x 2>&1 && echo done"),
        ["nixos-rebuild", "echo"]
    );
    assert_eq!(
        programs("sudo /run/current-system/bin/switch-to-configuration boot"),
        ["/run/current-system/bin/switch-to-configuration"]
    );
    let ssh = simple_commands("ssh -p 2222 hbohlen@<IP>");
    assert!(!ssh_has_command(&ssh[0]));
    let ssh = simple_commands("ssh hbohlen@<IP> 'sudo btrfs send /x' | zstd > f");
    assert!(ssh_has_command(&ssh[0]));
    assert_eq!(ssh[1][0], "zstd");
}

#[test]
fn every_server_procedure_has_its_place_in_the_lab() {
    let all = server_procedures(&host_subject(), &host_facts());
    let tiers: Vec<(&str, Tier)> = all
        .iter()
        .map(|n| (n.procedure.id.as_str(), tier(&n.procedure)))
        .collect();
    assert_eq!(
        tiers,
        [
            ("verify.units", Tier::NotInLab),
            ("verify.mounts", Tier::Default),
            ("verify.subvolumes", Tier::Default),
            ("verify.swap", Tier::Default),
            ("verify.esp", Tier::Default),
            ("verify.space", Tier::Default),
            ("verify.compression", Tier::Default),
            ("verify.trim", Tier::Default),
            ("verify.reboot", Tier::Thorough),
            ("rollback.previous-generation", Tier::NotInLab),
            ("rollback.switch-back", Tier::NotInLab),
            ("rollback.file-from-old-root", Tier::Thorough),
            ("rollback.restore-persist", Tier::Thorough),
            ("rollback.reinstall", Tier::Thorough),
            ("rollback.rescue-save", Tier::Drill),
        ]
    );
    // What is not run, each with its reason: nothing else.
    let mut not_run = Vec::new();
    for n in &all {
        for c in &n.procedure.commands {
            match disposition(&n.procedure.id, c) {
                Disposition::Run => {}
                Disposition::NotRun(why) | Disposition::Boundary(_, why) => {
                    assert!(!why.reason.is_empty());
                    not_run.push(format!("{} {}", n.step, c.line));
                }
            }
        }
    }
    assert_eq!(
            not_run,
            [
                "3.1 sudo systemctl --failed --no-legend --plain",
                "3.1 sudo systemctl is-active btrfs-rollback-status.service btrbk-persist.timer",
                "3.1 sudo systemctl show -p Id -p ActiveState 'btrfs-scrub[-@]btrfs_tmp.timer'",
                "3.9 sudo systemctl reboot",
                "3.9 ssh hbohlen@<IP>",
                "3.9 sudo journalctl -b -o cat | grep '^btrfs-rollback: '",
                "4.1 hcloud server request-console <server>",
                "4.1 hcloud server reset <server>",
                "4.1 sudo /run/current-system/bin/switch-to-configuration boot",
                "4.2 sudo nixos-rebuild switch --rollback",
                "4.4 sudo systemctl reboot",
                "4.5 hcloud server enable-rescue --type linux64 --ssh-key <key> <server>",
                "4.5 hcloud server reset <server>",
                "4.5 ssh-keygen -R <IP>",
                "4.5 nix run github:nix-community/nixos-anywhere -- --flake .#hetzner-vps --extra-files extra-<stamp> --target-host root@<IP>",
                "4.5 ssh-keygen -R <IP>",
                "4.5 sudo systemctl reboot",
                "4.6 hcloud server enable-rescue --type linux64 --ssh-key <key> <server>",
                "4.6 hcloud server reset <server>",
                "4.6 ssh-keygen -R <IP>",
                "4.6 ssh root@<IP>",
            ]
        );
}

#[test]
fn the_conversion_keeps_the_printed_lines_and_their_expectations() {
    let all = server_procedures(&host_subject(), &host_facts());
    let lab = lab();
    let thorough = of_tier(&all, Tier::Thorough, &lab).unwrap();
    let ids: Vec<&str> = thorough.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "rollback.file-from-old-root",
            "verify.reboot",
            "rollback.restore-persist",
            "rollback.reinstall",
            // The second runs, /persist changed in between.
            "rollback.restore-persist",
            "rollback.reinstall"
        ]
    );
    for (procedure, numbered) in thorough
        .iter()
        .map(|p| (p, all.iter().find(|n| n.procedure.id == p.id).unwrap()))
    {
        // Every checklist command is there, in order, as printed.
        let lines: Vec<&str> = procedure
            .parts
            .iter()
            .flat_map(|part| &part.commands)
            .filter(|c| c.role == CommandRole::Checklist)
            .map(|c| c.line.as_str())
            .collect();
        let printed: Vec<&str> = numbered
            .procedure
            .commands
            .iter()
            .map(|c| c.line.as_str())
            .collect();
        assert_eq!(lines, printed, "{}", procedure.id);
        for command in procedure.parts.iter().flat_map(|p| &p.commands) {
            if command.role == CommandRole::Checklist && command.not_run.is_none() {
                assert!(command.as_admin);
                // Every placeholder has a value.
                for placeholder in placeholders(&command.line) {
                    assert!(
                        command
                            .bindings
                            .iter()
                            .any(|b| b.placeholder == placeholder),
                        "{placeholder} in {}",
                        command.line
                    );
                }
            }
        }
    }
    let parts = |id: &str| -> Vec<Then> {
        thorough
            .iter()
            .find(|p| p.id == id)
            .unwrap()
            .parts
            .iter()
            .map(|p| p.then)
            .collect()
    };
    assert_eq!(parts("verify.reboot"), [Then::Reboot, Then::Done]);
    assert_eq!(parts("rollback.file-from-old-root"), [Then::Done]);
    assert_eq!(
        parts("rollback.restore-persist"),
        [Then::Reboot, Then::Done]
    );
    assert_eq!(
        parts("rollback.reinstall"),
        [Then::Reinstall, Then::Reboot, Then::Done]
    );
    // The server's disk is the VM's in the expectations.
    let default = of_tier(&all, Tier::Default, &lab).unwrap();
    let swap = default.iter().find(|p| p.id == "verify.swap").unwrap();
    let expects: Vec<&Expect> = swap.parts[0]
        .commands
        .iter()
        .flat_map(|c| &c.checklist_expect)
        .collect();
    assert!(expects.contains(&&Expect::Line {
        pattern: "device: /dev/vda3".into()
    }));
    // §4.5's local commands run on the workstation's disk.
    let reinstall = thorough
        .iter()
        .find(|p| p.id == "rollback.reinstall")
        .unwrap();
    let local: Vec<&AdminCommand> = reinstall
        .parts
        .iter()
        .flat_map(|p| &p.commands)
        .filter(|c| c.at == Some(Where::Local) && c.not_run.is_none())
        .collect();
    // The stream saved, checked twice, the identity carried, the stream
    // sent back.
    assert_eq!(local.len(), 6);
    assert!(local.iter().all(|c| c.cwd.as_deref() == Some(WORKSTATION)));
}

#[test]
fn nixos_test_file_is_the_checklists() {
    let all = server_procedures(&host_subject(), &host_facts());
    let generated = nixos_test_json(&all, &host_facts().admin_user);
    let path = toolbox::project::project_root().join(NIXOS_TEST_FILE);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
            committed == generated,
            "{NIXOS_TEST_FILE} is stale: `UPDATE_GOLDEN=1 cargo test -p xtask --lib nixos_test_file` rewrites it"
        );
    let document: serde_json::Value = serde_json::from_str(&generated).unwrap();
    let ids: Vec<&str> = document["procedures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, NIXOS_TEST_PROCEDURES);
    let status = document["procedures"][1]["commands"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["line"] == "sudo cat /run/btrfs-rollback/status")
        .unwrap();
    let regexes: Vec<&str> = status["expect"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["regex"].as_str().unwrap())
        .collect();
    assert_eq!(
        regexes,
        [
            "result=ok",
            "clock=ok",
            "rotated_to=[0-9]{8}T[0-9]{6}Z(?:-[0-9]{2})?"
        ]
    );
}

#[test]
fn a_placeholder_without_a_value_stops_the_conversion() {
    let mut all = server_procedures(&host_subject(), &host_facts());
    let swap = all
        .iter_mut()
        .find(|n| n.procedure.id == "verify.swap")
        .unwrap();
    swap.procedure.commands[0].line.push_str(" <nothing>");
    let error = of_tier(&all, Tier::Default, &lab()).unwrap_err();
    assert!(
        error.to_string().contains("no value for <nothing>"),
        "{error}"
    );
}

#[test]
fn the_schedule_waits_for_reboots_and_reinstalls() {
    let all = server_procedures(&host_subject(), &host_facts());
    let procedures = of_tier(&all, Tier::Thorough, &lab()).unwrap();
    let mut schedule = Schedule::new(procedures.clone());
    let captured = BTreeMap::new();
    let mut boots = Vec::new();
    while let Some(boot) = schedule.next_boot(&captured) {
        let describe = |steps: &[AdminStep]| -> Vec<String> {
            steps
                .iter()
                .map(|s| format!("{}/{}", s.step, s.part))
                .collect()
        };
        boots.push((
            boot.install,
            describe(&boot.continued),
            describe(&boot.started),
        ));
        schedule.finished_boot(|_| true);
    }
    let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        boots,
        [
            (false, vec![], strings(&["4.3/0", "3.9/0"])),
            (false, strings(&["3.9/1"]), strings(&["4.4/0"])),
            (false, strings(&["4.4/1"]), strings(&["4.5/0"])),
            (true, strings(&["4.5/1"]), vec![]),
            (false, strings(&["4.5/2"]), strings(&["4.4#2/0"])),
            (false, strings(&["4.4#2/1"]), strings(&["4.5#2/0"])),
            (true, strings(&["4.5#2/1"]), vec![]),
            (false, strings(&["4.5#2/2"]), vec![]),
        ]
    );
    // A failed part ends its procedure.
    let mut schedule = Schedule::new(procedures);
    schedule.next_boot(&captured);
    schedule.finished_boot(|p| p.id != "verify.reboot");
    let next = schedule.next_boot(&captured).unwrap();
    assert!(next.continued.is_empty());
    assert_eq!(next.started[0].step, "4.4");
}

#[test]
fn the_rescue_drill_breaks_the_system_boots_the_rescue_system_and_goes_on_with_4_5() {
    let all = server_procedures(&host_subject(), &host_facts());
    let procedures = of_tier(&all, Tier::Drill, &lab()).unwrap();
    let steps: Vec<&str> = procedures.iter().map(|p| p.step.as_str()).collect();
    assert_eq!(steps, ["4.6", "4.6#2"]);
    let drill = &procedures[0];
    let thens: Vec<Then> = drill.parts.iter().map(|p| p.then).collect();
    assert_eq!(
        thens,
        [Then::Rescue, Then::Reinstall, Then::Reboot, Then::Done]
    );
    let ran = |part: usize| -> Vec<String> {
        drill.parts[part]
            .commands
            .iter()
            .filter(|c| c.not_run.is_none())
            .map(|c| c.line.clone())
            .collect()
    };
    // The healthy system: the data that must come back, captured.
    assert!(ran(0).iter().any(|l| l.contains("xtask-rescue/data.bin")));
    // The rescue boot: the root deleted first, then §4.6's lines, run.
    let rescue = ran(1);
    let broken = rescue
        .iter()
        .position(|l| l.contains("btrfs subvolume delete /run/xtask-broken/@root"))
        .unwrap();
    let mount = rescue
        .iter()
        .position(|l| l == "mount -o subvolid=5 /dev/sda4 /mnt")
        .unwrap();
    assert!(broken < mount);
    assert!(rescue
        .iter()
        .any(|l| l.starts_with("ssh root@<IP> 'btrfs send")));
    // §4.5 from `hcloud server enable-rescue`: the receive after the
    // install, the checksum after the reboot.
    assert!(ran(2).iter().any(|l| l.contains("btrfs receive")));
    assert!(ran(3).iter().any(|l| l.contains("sha256sum")));
    let mut schedule = Schedule::new(procedures);
    let captured = BTreeMap::new();
    let mut kinds = Vec::new();
    while let Some(boot) = schedule.next_boot(&captured) {
        kinds.push((boot.rescue, boot.install));
        schedule.finished_boot(|_| true);
    }
    // The second run starts in the boot that ends the first.
    let once = [(true, false), (false, true), (false, false)];
    assert_eq!(kinds, [&[(false, false)][..], &once, &once].concat());
}
