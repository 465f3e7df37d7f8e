//! Results as `check`, the NixOS evaluation and `vm-test` write them, for tests.
use super::*;
use crate::deploy_checklist::facts::testing::with_key;
use crate::flake_eval::LockedInput;
use crate::results::{
    BootRecord, CheckRecord, CommandOutcome, CommandRecord, CommandStatus, ProcedureRecord,
    StepRecord, VmTestRequest,
};
use crate::results::{HostSummary, Kind, ProcedureStatus, SCHEMA};

pub const HEAD: &str = "0123456789abcdef0123456789abcdef01234567";
pub const OLD: &str = "fedcba9876543210fedcba9876543210fedcba98";

pub fn revision(commit: &str, dirty: bool) -> Revision {
    Revision {
        commit: Some(commit.to_owned()),
        dirty,
    }
}

/// The files each kind rests on, as the tests pretend they are now.
pub fn inputs(kind: Kind) -> Inputs {
    Inputs::from([
        (
            "hosts/servers/hetzner-cloud/disko.nix".to_owned(),
            "d1".to_owned(),
        ),
        (format!("{kind}-only.nix"), "k1".to_owned()),
    ])
}

pub fn header(kind: Kind, commit: &str, passed: bool) -> Header {
    Header {
        schema: SCHEMA,
        kind: kind.to_string(),
        host: "hetzner-cloud".to_owned(),
        revision: revision(commit, false),
        finished_at: "2026-11-28T12:00:00Z".to_owned(),
        passed,
        inputs: inputs(kind),
    }
}

pub fn check_results(commit: &str, errors: usize) -> CheckResults {
    CheckResults {
        header: header(Kind::Check, commit, errors == 0),
        disk_size_override: None,
        hosts: vec![HostSummary {
            host: "hetzner-cloud".to_owned(),
            errors,
            warnings: 0,
            findings: (0..errors)
                .map(|_| "SWAP001 disko.devices.disk.main".to_owned())
                .collect(),
        }],
    }
}

pub fn nixos_results(commit: &str, passed: bool) -> FlakeEvalResults {
    FlakeEvalResults {
        header: header(crate::flake_eval::KIND, commit, passed),
        attribute: "hetzner-vps".to_owned(),
        installable: crate::flake_eval::installable("hetzner-vps"),
        drv_path: passed.then(|| "/nix/store/0000-nixos-system-hetzner-vps.drv".to_owned()),
        error: (!passed).then(|| "Failed assertions:\n- hbohlen has no SSH key".to_owned()),
        locked_inputs: BTreeMap::from([(
            "nixpkgs".to_owned(),
            LockedInput {
                locked: "github:NixOS/nixpkgs/abc".to_owned(),
                nar_hash: Some("sha256-x".to_owned()),
            },
        )]),
    }
}

pub fn vm_results(commit: &str, passed: bool) -> VmTestResults {
    VmTestResults {
        header: header(Kind::VmTest, commit, passed),
        backend: "lab".to_owned(),
        accelerator: "tcg".to_owned(),
        kernel: "6.1.0-56-cloud-amd64".to_owned(),
        disk_bytes: 480_000_000_000,
        requested: VmTestRequest {
            boots: 3,
            disk_size: None,
            power_cuts: 0,
            boot_timeout_s: None,
            thorough: false,
            drills: false,
        },
        boots: vec![
            BootRecord {
                number: 1,
                kind: "install".to_owned(),
                wall_ms: 41_000,
                steps: vec![StepRecord {
                    name: "disko".to_owned(),
                    ms: 9_000,
                }],
                passed: true,
            },
            BootRecord {
                number: 2,
                kind: "rotate".to_owned(),
                wall_ms: 12_000,
                steps: Vec::new(),
                passed,
            },
        ],
        checks: vec![
            CheckRecord {
                boot: 1,
                name: "subvolumes".to_owned(),
                passed: true,
                measured: "8".to_owned(),
                expected: "8".to_owned(),
            },
            CheckRecord {
                boot: 2,
                name: "rotation".to_owned(),
                passed,
                measured: if passed { "moved" } else { "kept" }.to_owned(),
                expected: "moved".to_owned(),
            },
        ],
        figures: BTreeMap::from([
            ("compression.@nix.percent".to_owned(), 47.0),
            ("rotation_ms.boot2".to_owned(), 310.0),
            ("trim.freed_bytes".to_owned(), 1_073_741_824.0),
        ]),
        wall_ms: 60_000,
        procedures: Vec::new(),
    }
}

/// The procedures the lab runs, as `observe` lists them for the host.
pub fn lab_procedures() -> Vec<(String, String)> {
    [
        ("3.2", "verify.mounts"),
        ("3.9", "verify.reboot"),
        ("4.3", "rollback.file-from-old-root"),
    ]
    .iter()
    .map(|(step, id)| (step.to_string(), id.to_string()))
    .collect()
}

fn command(status: CommandStatus, role: &str, line: &str) -> CommandRecord {
    CommandRecord {
        boot: 3,
        part: 0,
        outcome: CommandOutcome {
            role: role.to_owned(),
            at: None,
            line: line.to_owned(),
            ran: line.to_owned(),
            status,
            exit: (status != CommandStatus::NotRun).then_some(0),
            ms: 100,
            stdout: String::new(),
            stderr: String::new(),
            expected: "exit 0".to_owned(),
            passed: status == CommandStatus::Pass,
            problem: match status {
                CommandStatus::NotRun => Some("needs systemd".to_owned()),
                CommandStatus::Fail => Some("exit 1 instead of 0".to_owned()),
                _ => None,
            },
            proven_by: (status == CommandStatus::NotRun).then(|| "the NixOS VM test".to_owned()),
        },
    }
}

/// A `vm-test --thorough` run: the lab's procedures passed (or the last
/// one failed), and one the lab cannot run.
pub fn thorough_results(commit: &str, passed: bool) -> ThoroughResults {
    thorough_results_of(commit, passed, &lab_procedures())
}

/// The same, for the procedures `all` (step, id).
pub fn thorough_results_of(
    commit: &str,
    passed: bool,
    all: &[(String, String)],
) -> ThoroughResults {
    let mut results = vm_results(commit, passed);
    results.header = header(crate::results::THOROUGH_KIND, commit, passed);
    results.requested.thorough = true;
    let mut records = vec![ProcedureRecord {
        id: "verify.units".to_owned(),
        step: "3.1".to_owned(),
        title: "The system came up clean".to_owned(),
        status: ProcedureStatus::NotRun,
        passed: false,
        commands: vec![command(
            CommandStatus::NotRun,
            "checklist",
            "sudo systemctl --failed",
        )],
    }];
    for (index, (step, id)) in all.iter().enumerate() {
        let last = index + 1 == all.len();
        let mut commands = vec![
            command(
                CommandStatus::Pass,
                "checklist",
                "sudo ls /btrfs_tmp/@old_roots",
            ),
            command(CommandStatus::Pass, "verify", "sha256sum /persist/x"),
        ];
        if !passed && last {
            commands[0] = command(CommandStatus::Fail, "checklist", "sudo cp -a x /persist/x");
        }
        let mut record = ProcedureRecord {
            id: id.clone(),
            step: step.clone(),
            title: "t".to_owned(),
            status: ProcedureStatus::NotRun,
            passed: false,
            commands,
        };
        record.settle();
        records.push(record);
    }
    results.procedures = records;
    ThoroughResults(results)
}

pub fn proof<T>(results: T) -> Evidence<T> {
    Evidence {
        pass: Found::Present(results),
        last: Found::Missing,
    }
}

/// Every gate passes: the key is in, everything ran at HEAD.
pub fn passing() -> Observed {
    Observed {
        verify: Found::Missing,
        host: "hetzner-cloud".to_owned(),
        flake_attribute: "hetzner-vps".to_owned(),
        machine_file: "hosts/servers/hetzner-cloud/machine.nix".to_owned(),
        head: revision(HEAD, false),
        facts: with_key(),
        check: proof(check_results(HEAD, 0)),
        nixos: proof(nixos_results(HEAD, true)),
        vm_test: proof(vm_results(HEAD, true)),
        thorough: proof(thorough_results(HEAD, true)),
        lab_procedures: lab_procedures(),
        docs: DocsState::Fresh,
        disk_bytes: BTreeMap::from([("main".to_owned(), 480_000_000_000)]),
        current: [
            Kind::Check,
            crate::flake_eval::KIND,
            Kind::VmTest,
            crate::results::THOROUGH_KIND,
        ]
        .into_iter()
        .map(|kind| (kind, inputs(kind)))
        .collect(),
        nixos_blocked: None,
        nixos_how:
            "on a machine with Nix, run `cargo xtask check --mode flake --host hetzner-cloud`"
                .to_owned(),
        results_dir: "target/xtask".to_owned(),
    }
}
