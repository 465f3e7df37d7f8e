//! The host's NixOS modules that need the module system (network.nix, the
//! rollback module's units, services.nix), evaluated one at a time with the
//! real `nix-instantiate` through the module-system stand-in of
//! tests/fixtures/nixos-stand-in (it names the nixpkgs files it follows).
//! nixpkgs is not here, so this proves what the modules themselves define;
//! `nix flake check` (nix/checks.nix) evaluates the whole system.

use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};

const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
const STAND_IN: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/nixos-stand-in/default.nix"
);

/// `config` of `module` (a path from the repository root) evaluated with
/// `definitions` from other modules; `Err` with Nix's message when the
/// evaluation fails.
fn try_evaluate(module: &str, definitions: &Value) -> Result<Value, String> {
    let module = Path::new(REPO).join(module);
    let output = Command::new("nix-instantiate")
        .args(["--readonly-mode", "--eval", "--strict", "--json", STAND_IN])
        .arg("--arg")
        .arg("module")
        .arg(module.canonicalize().unwrap())
        .args(["--argstr", "definitions", &definitions.to_string()])
        .output()
        .expect("nix-instantiate (apt-get install nix-bin)");
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    let value: Value = serde_json::from_slice(&output.stdout).unwrap();
    Ok(value["config"].clone())
}

fn evaluate(module: &str, definitions: &Value) -> Value {
    try_evaluate(module, definitions).unwrap_or_else(|e| panic!("{module}: {e}"))
}

/// What the host's other modules give the rollback module (rollback.nix's
/// settings, disko's root device, boot.nix's initrd).
fn rollback_module(systemd_initrd: bool) -> Value {
    evaluate(
        "nix/modules/btrfs-rollback",
        &json!({
            "boot": {
                "btrfsRollback": { "enable": true },
                "initrd": { "systemd": { "enable": systemd_initrd } }
            },
            "fileSystems": {
                "/": { "device": "/dev/disk/by-partlabel/disk-main-root", "options": ["subvol=@root"] },
                "/persist": { "neededForBoot": true },
                "/var/log": { "neededForBoot": true }
            }
        }),
    )
}

/// systemd.time(7) spans as this project writes them: `<n>s`, `<n>min`, `<n>h`.
fn seconds(span: &Value) -> Option<u64> {
    let text = span.as_str()?;
    let digits: String = text.chars().take_while(char::is_ascii_digit).collect();
    let n: u64 = digits.parse().ok()?;
    match &text[digits.len()..] {
        "s" | "" => Some(n),
        "min" => Some(n * 60),
        "h" => Some(n * 3600),
        _ => None,
    }
}

fn assertion_holds(config: &Value, needle: &str) -> bool {
    let assertion = config["assertions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["message"].as_str().unwrap().contains(needle))
        .unwrap_or_else(|| panic!("no assertion about {needle:?}: {config:#}"));
    assertion["assertion"].as_bool().unwrap()
}

#[test]
fn the_rollback_unit_in_the_systemd_initrd_has_a_time_limit_and_a_kill_deadline() {
    let config = rollback_module(true);
    let unit = &config["boot"]["initrd"]["systemd"]["services"]["btrfs-rollback"];
    let service = &unit["serviceConfig"];
    assert_eq!(service["Type"], "oneshot", "{unit:#}");
    let start = seconds(&service["TimeoutStartSec"])
        .unwrap_or_else(|| panic!("btrfs-rollback.service has no TimeoutStartSec: {service:#}"));
    // Far above a rotation (well under a second, 10 000 old roots ~4 s),
    // far below a boot nobody waits for.
    assert!((60..=600).contains(&start), "TimeoutStartSec {start} s");
    let stop = seconds(&service["TimeoutStopSec"])
        .unwrap_or_else(|| panic!("no TimeoutStopSec (SIGKILL after SIGTERM): {service:#}"));
    assert!(stop <= 60, "TimeoutStopSec {stop} s");
    // Still fails open: wanted, never required, by initrd.target.
    assert_eq!(unit["wantedBy"], json!(["initrd.target"]));
    assert!(unit.get("requiredBy").is_none());
}

#[test]
fn the_scripted_initrd_runs_the_rollback_under_a_time_limit() {
    let config = rollback_module(false);
    let commands = config["boot"]["initrd"]["postResumeCommands"]
        .as_str()
        .unwrap_or_else(|| panic!("no postResumeCommands: {config:#}"));
    let line = commands
        .lines()
        .find(|l| l.contains("/etc/btrfs-rollback.sh"))
        .unwrap_or_else(|| panic!("the script is not run: {commands}"));
    // busybox's `timeout [-s SIG] [-k KILL_SECS] SECS PROG ARGS`, directly
    // around the shell that runs the script.
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = words
        .iter()
        .position(|w| *w == "timeout")
        .unwrap_or_else(|| panic!("the script runs without `timeout`: {line}"));
    assert_eq!(&words[at + 1..at + 4], ["-s", "TERM", "-k"], "{line}");
    let kill: u64 = words[at + 4].parse().unwrap();
    let limit: u64 = words[at + 5].parse().unwrap();
    assert!((60..=600).contains(&limit) && kill <= 60, "{line}");
    assert_eq!(
        &words[at + 6..at + 8],
        ["ash", "/etc/btrfs-rollback.sh"],
        "{line}"
    );
    // The device wait before it is bounded too.
    assert!(
        commands.contains("\"$btrfs_rollback_wait\" -lt "),
        "{commands}"
    );
}

/// Every oneshot unit the host defines or changes has a start limit: a
/// oneshot has none by default (systemd.service(5), TimeoutStartSec=), and a
/// hung one holds what is ordered after it.
#[test]
fn every_oneshot_unit_of_the_host_is_bounded() {
    // Units of upstream packages whose Type the host does not write:
    // util-linux's sys-utils/fstrim.service.in is Type=oneshot.
    let upstream_oneshots = ["fstrim"];
    let services = evaluate("hosts/servers/hetzner-cloud/services.nix", &json!({}));
    let mut checked = Vec::new();
    for (module, config) in [
        ("the rollback module, systemd initrd", rollback_module(true)),
        (
            "the rollback module, scripted initrd",
            rollback_module(false),
        ),
        ("services.nix", services),
    ] {
        for units in [
            &config["systemd"]["services"],
            &config["boot"]["initrd"]["systemd"]["services"],
        ] {
            let Some(units) = units.as_object() else {
                continue;
            };
            for (name, unit) in units {
                let service = &unit["serviceConfig"];
                let oneshot = service["Type"] == "oneshot"
                    || (service.get("Type").is_none()
                        && upstream_oneshots.contains(&name.as_str()));
                if !oneshot {
                    continue;
                }
                assert!(
                    seconds(&service["TimeoutStartSec"]).is_some(),
                    "{module}: {name}.service is a oneshot without TimeoutStartSec: {service:#}"
                );
                checked.push(name.clone());
            }
        }
    }
    checked.sort();
    checked.dedup();
    assert_eq!(
        checked,
        ["btrfs-rollback", "btrfs-rollback-status", "fstrim"],
        "the units this test knows of"
    );
}

#[test]
fn space_freed_in_the_initrd_is_trimmed_weekly_and_after_every_boot() {
    let config = evaluate("hosts/servers/hetzner-cloud/services.nix", &json!({}));
    assert_eq!(config["services"]["fstrim"]["enable"], true, "{config:#}");
    let timer = &config["systemd"]["timers"]["fstrim"]["timerConfig"];
    assert!(seconds(&timer["OnBootSec"]).is_some(), "{timer:#}");
    assert_eq!(timer["Persistent"], true, "{timer:#}");
}

fn network(hetzner_network: Value) -> Result<Value, String> {
    try_evaluate(
        "hosts/servers/hetzner-cloud/network.nix",
        &json!({ "hetzner": { "network": hetzner_network } }),
    )
}

/// `Kind = "!*"`: only links without a kind (physical ones) match. NixOS's
/// own catch-all, 99-ethernet-default-dhcp in
/// nixos/modules/tasks/network-interfaces-systemd.nix (NixOS/nixpkgs
/// 003a3fd2f05c), matches Type=ether with it.
#[test]
fn catch_all_and_uplink_match_only_physical_ethernet() {
    let config = network(json!({})).unwrap();
    let networks = &config["systemd"]["network"]["networks"];
    let fallback = &networks["90-ethernet"]["matchConfig"];
    assert_eq!(fallback["Type"], "ether", "{fallback:#}");
    assert_eq!(fallback["Kind"], "!*", "{fallback:#}");
    // The case the issue did not list: the uplink's name glob (en* eth*)
    // also fits a VLAN such as eth0.4000, and a MAC match fits every VLAN
    // on the uplink (they inherit its address); neither may take the
    // public IPv6 address.
    for definitions in [json!({}), json!({ "macAddress": "96:00:01:23:45:67" })] {
        let config = network(definitions.clone()).unwrap();
        let uplink = &config["systemd"]["network"]["networks"]["10-uplink"]["matchConfig"];
        assert_eq!(uplink["Kind"], "!*", "{definitions}: {uplink:#}");
    }
}

#[test]
fn an_ipv6_only_server_without_an_address_is_refused() {
    let holds = |definitions: Value| {
        let config = network(definitions).unwrap();
        assertion_holds(&config, "no address")
    };
    assert!(holds(json!({})), "the repository's host");
    assert!(holds(json!({ "ipv4": true, "ipv6Address": null })));
    assert!(!holds(json!({ "ipv4": false, "ipv6Address": null })));
    let config =
        network(json!({ "ipv4": false, "ipv6Address": "2a01:4f8:c012:3456::1/64" })).unwrap();
    assert!(assertion_holds(&config, "no address"));
    let uplink = &config["systemd"]["network"]["networks"]["10-uplink"];
    assert_eq!(uplink["networkConfig"]["DHCP"], "no", "{uplink:#}");
    assert_eq!(uplink["address"], json!(["2a01:4f8:c012:3456::1/64"]));
    assert_eq!(uplink["routes"], json!([{ "Gateway": "fe80::1" }]));
    assert_eq!(
        config["warnings"],
        json!([]),
        "no IPv4-only warning on an IPv6-only server"
    );
}

// --- The NixOS VM tests (nix/checks.nix, nix/tests/vm-test.nix) -----------

const CHECKS_STAND_IN: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/nixos-stand-in/checks.nix"
);

/// The flake's VM tests as nix/checks.nix builds them, with makeDiskoTest
/// and nixpkgs stood in (tests/fixtures/nixos-stand-in/checks.nix).
fn vm_tests() -> Value {
    let output = Command::new("nix-instantiate")
        .args([
            "--readonly-mode",
            "--eval",
            "--strict",
            "--json",
            CHECKS_STAND_IN,
        ])
        .arg("--arg")
        .arg("repo")
        .arg(Path::new(REPO).canonicalize().unwrap())
        .output()
        .expect("nix-instantiate (apt-get install nix-bin)");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

fn deletion_file() -> Value {
    let text = std::fs::read_to_string(Path::new(REPO).join("nix/tests/deletion.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// What the lab's retention model (the rules rollback.sh is held to in
/// vm-test) says boots `1..=boots` find under `rules`, one boot a minute:
/// (old roots after the rotation, roots deleted).
fn modelled(rules: xtask::vm::retention::Rules, boots: usize) -> Vec<(usize, usize)> {
    use xtask::vm::retention::{apply, next_name, CLOCK_FLOOR, DAY};
    // A plausible clock: the NixOS test's VM keeps the host's.
    let start = CLOCK_FLOOR + 400 * DAY;
    let mut roots: Vec<String> = Vec::new();
    (1..=boots)
        .map(|boot| {
            let now = start + 60 * boot as i64;
            roots.push(next_name(&roots, now));
            let verdict = apply(rules, &roots, now);
            roots = verdict.kept();
            (roots.len(), verdict.deleted().len())
        })
        .collect()
}

fn rules_of(file: &Value) -> xtask::vm::retention::Rules {
    xtask::vm::retention::Rules {
        retention_days: file["retentionDays"].as_u64().unwrap(),
        keep_at_least: file["keepAtLeast"].as_u64().unwrap(),
    }
}

/// The counts the deletion variants assert at each boot are the lab's
/// model's, and the variants do delete (and do keep the newest).
#[test]
fn the_nixos_deletion_tests_expect_what_the_retention_model_says() {
    let file = deletion_file();
    let boots: Vec<(usize, usize)> = file["boots"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(index, b)| {
            assert_eq!(b["boot"].as_u64(), Some(index as u64 + 1), "{b}");
            (
                b["oldRoots"].as_u64().unwrap() as usize,
                b["deleted"].as_u64().unwrap() as usize,
            )
        })
        .collect();
    let rules = rules_of(&file);
    assert_eq!(
        boots,
        modelled(rules, boots.len()),
        "nix/tests/deletion.json"
    );
    // It exercises what the default NixOS test never does: a deletion, and
    // keepAtLeast holding roots that are past retention.
    assert!(boots.iter().filter(|(_, deleted)| *deleted > 0).count() >= 2);
    assert!(boots
        .iter()
        .any(|(kept, _)| *kept as u64 == rules.keep_at_least));
    // The model tells other settings apart: the comparison can fail.
    let other = xtask::vm::retention::Rules {
        keep_at_least: rules.keep_at_least + 1,
        ..rules
    };
    assert_ne!(boots, modelled(other, boots.len()));
}

/// nix/checks.nix has the deletion and scripted-initrd variants, they add
/// exactly the test-only settings of deletion.json (and the scripted
/// initrd), and every variant's test script is valid Python.
#[test]
fn the_nixos_vm_test_variants_are_wired_and_their_scripts_parse() {
    let tests = vm_tests();
    let file = deletion_file();
    let retention = json!({ "boot": { "btrfsRollback": {
        "retentionDays": file["retentionDays"],
        "keepAtLeast": file["keepAtLeast"],
    } } });
    let scripted = json!({ "boot": { "initrd": { "systemd": { "enable": false } } } });
    let expected = [
        ("vm-test", "hetzner-cloud-bios", json!([])),
        ("vm-test-uefi", "hetzner-cloud-uefi", json!([])),
        (
            "vm-test-deletion",
            "hetzner-cloud-bios-deletion",
            json!([retention]),
        ),
        (
            "vm-test-scripted-initrd",
            "hetzner-cloud-bios-deletion-scripted-initrd",
            json!([retention, scripted]),
        ),
    ];
    let names: Vec<&str> = tests
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut wanted: Vec<&str> = expected.iter().map(|(n, _, _)| *n).collect();
    wanted.sort();
    assert_eq!(names, wanted);
    for (check, name, imports) in &expected {
        let test = &tests[*check];
        assert_eq!(test["name"], *name, "{check}");
        assert_eq!(test["imports"], *imports, "{check}");
        let script = test["testScript"].as_str().unwrap();
        let parsed = Command::new("python3")
            .args(["-c", "import ast, sys; ast.parse(sys.stdin.read())"])
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write as _;
                child.stdin.take().unwrap().write_all(script.as_bytes())?;
                child.wait_with_output()
            })
            .expect("python3 (apt-get install python3-minimal)");
        assert!(
            parsed.status.success(),
            "{check}: the test script is not valid Python: {}",
            String::from_utf8_lossy(&parsed.stderr)
        );
    }
    // deploy-checklist lists exactly these as NOT RUN (xtask::vm::nixos_backend::VM_TESTS).
    let listed: Vec<&str> = xtask::vm::nixos_backend::VM_TESTS
        .iter()
        .map(|(n, _)| *n)
        .collect();
    let mut listed_sorted = listed.clone();
    listed_sorted.sort();
    assert_eq!(listed_sorted, wanted);
    // The variants count old roots from the file; the default counts one a boot.
    let default = tests["vm-test"]["testScript"].as_str().unwrap();
    assert!(default.contains("deletion_boots"), "{default}");
}

/// The module refuses a rollback that would wipe or delete in a subvolume
/// the system mounts (issue 21's guards), under the stand-in evaluation.
#[test]
fn the_rollback_refuses_subvolumes_the_system_mounts() {
    let with = |root: &str, old: &str, persist: &str| {
        evaluate(
            "nix/modules/btrfs-rollback",
            &json!({
                "boot": {
                    "btrfsRollback": {
                        "enable": true, "rootSubvolume": root, "oldRootsSubvolume": old
                    },
                    "initrd": { "systemd": { "enable": true } }
                },
                "fileSystems": {
                    "/": { "device": "/dev/disk/by-partlabel/disk-main-root", "options": ["subvol=@root"] },
                    "/persist": { "neededForBoot": true, "options": [format!("subvol={persist}")] },
                    "/var/log": { "neededForBoot": true }
                }
            }),
        )
    };
    let at_root = "the subvolume wiped at every boot must be the one mounted at /";
    let unmounted = "must be a subvolume mounted nowhere";
    let good = with("@root", "@old_roots", "@persist");
    assert!(assertion_holds(&good, at_root) && assertion_holds(&good, unmounted));
    // The script is told which subvolumes are mounted, and refuses them too.
    let environment =
        &good["boot"]["initrd"]["systemd"]["services"]["btrfs-rollback"]["environment"];
    assert_eq!(
        environment["BTRFS_ROLLBACK_MOUNTED_SUBVOLUMES"], "@persist",
        "{environment:#}"
    );
    assert!(!assertion_holds(
        &with("@persist", "@old_roots", "@persist"),
        at_root
    ));
    assert!(!assertion_holds(
        &with("@root", "@persist", "@persist"),
        unmounted
    ));
    // A leading slash in subvol= names the same subvolume.
    assert!(!assertion_holds(
        &with("@root", "@data", "/@data"),
        unmounted
    ));
}

/// The script's bounded waits (13 at most, with 10 s of pauses:
/// rollback.sh's wait_for_space and move_after_returning_chunks) fit inside
/// the unit's start limit, so a slow commit cannot use it up.
#[test]
fn the_scripts_waits_fit_the_units_time_limit() {
    let config = rollback_module(true);
    let service = &config["boot"]["initrd"]["systemd"]["services"]["btrfs-rollback"];
    let wait: u64 = service["environment"]["BTRFS_ROLLBACK_WAIT_SECONDS"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no BTRFS_ROLLBACK_WAIT_SECONDS: {service:#}"));
    let start = seconds(&service["serviceConfig"]["TimeoutStartSec"]).unwrap();
    assert!(
        13 * wait + 10 < start,
        "13 × {wait} s + 10 s ≥ TimeoutStartSec {start} s"
    );
}
