//! Unit tests of the gates (the results they read come from `testing`).

use super::testing::*;
use super::*;
use crate::deploy_checklist::facts::testing::host_facts;
use crate::results::{Kind, SCHEMA};

fn statuses(observed: &Observed) -> Vec<(&'static str, Status)> {
    gates(observed).iter().map(|g| (g.id, g.status)).collect()
}

fn by_id<'a>(gates: &'a [Gate], id: &str) -> &'a Gate {
    gates.iter().find(|g| g.id == id).unwrap()
}

#[test]
fn everything_fresh_and_clean_passes() {
    let observed = passing();
    let gates = gates(&observed);
    assert!(gates.iter().all(|g| g.status == Status::Pass), "{gates:#?}");
    assert_eq!(overall(&gates), Status::Pass);
    assert_eq!(by_id(&gates, "check").revision.as_deref(), Some(HEAD));
    assert_eq!(
        by_id(&gates, "check").file.as_deref(),
        Some("check.pass.json")
    );
    assert!(by_id(&gates, "vm-test")
        .detail
        .contains("2 boot(s), 2 in-VM check(s) passed"));
    assert!(by_id(&gates, "nixos")
            .detail
            .contains("evaluates to /nix/store/0000-nixos-system-hetzner-vps.drv with nixpkgs github:NixOS/nixpkgs/abc"));
}

#[test]
fn the_procedures_gate_needs_a_thorough_pass_of_every_procedure_the_lab_runs() {
    // Passed: the summary counts what ran and what could not.
    let gates = gates(&passing());
    let procedures = by_id(&gates, "procedures");
    assert_eq!(procedures.status, Status::Pass);
    assert_eq!(
        procedures.file.as_deref(),
        Some("vm-test-thorough.pass.json")
    );
    assert!(
        procedures
            .detail
            .contains("3 procedures of §3 and §4 ran in the lab VM")
            && procedures
                .detail
                .contains("1 commands cannot run there and are NOT RUN, not counted"),
        "{}",
        procedures.detail
    );

    // A procedure failed: FAIL, naming the checklist step and the command.
    let mut observed = passing();
    observed.thorough = proof(thorough_results(HEAD, false));
    let failed = by_id(&gates_of(&observed), "procedures").clone();
    assert_eq!(failed.status, Status::Fail);
    assert!(
            failed
                .detail
                .contains("checklist 4.3 (rollback.file-from-old-root) failed at `sudo cp -a x /persist/x`: exit 1 instead of 0"),
            "{}",
            failed.detail
        );

    // A failed later run stays beside the proof.
    let mut observed = passing();
    observed.thorough = Evidence {
        pass: Found::Present(thorough_results(HEAD, true)),
        last: Found::Present({
            let mut last = thorough_results(HEAD, false);
            last.0.header.finished_at = "2026-11-29T00:00:00Z".to_owned();
            last
        }),
    };
    let kept = by_id(&gates_of(&observed), "procedures").clone();
    assert_eq!(kept.status, Status::Pass);
    assert!(
        kept.detail.contains("does not replace this proof"),
        "{}",
        kept.detail
    );

    // A procedure the lab runs is missing (NOT RUN in the results).
    let mut observed = passing();
    let mut results = thorough_results(HEAD, true);
    results.0.procedures.retain(|p| p.id != "verify.reboot");
    observed.thorough = proof(results);
    let missing = by_id(&gates_of(&observed), "procedures").clone();
    assert_eq!(missing.status, Status::NotRun);
    assert!(
        missing.detail.contains("did not run 3.9 verify.reboot"),
        "{}",
        missing.detail
    );

    // A default run (no --thorough) proves nothing about the procedures.
    let mut observed = passing();
    let mut default = thorough_results(HEAD, true);
    default.0.requested.thorough = false;
    observed.thorough = proof(default);
    assert_eq!(
        by_id(&gates_of(&observed), "procedures").status,
        Status::NotRun
    );

    // A thorough run without --drills: §4.6 (the lab's rescue boot) did
    // not run, and the gate says how to run it.
    let mut observed = passing();
    observed
        .lab_procedures
        .push(("4.6".to_owned(), "rollback.rescue-save".to_owned()));
    observed.thorough = proof(thorough_results(HEAD, true));
    let gate = by_id(&gates_of(&observed), "procedures").clone();
    assert_ne!(gate.status, Status::Pass);
    assert!(
        gate.detail.contains("4.6 rollback.rescue-save") && gate.detail.contains("--drills"),
        "{}",
        gate.detail
    );

    // Another revision: STALE, with the command to run.
    let mut observed = passing();
    observed.thorough = proof(thorough_results(OLD, true));
    let stale = by_id(&gates_of(&observed), "procedures").clone();
    assert_eq!(stale.status, Status::Stale);
    assert_eq!(
        stale.command.as_deref(),
        Some("cargo xtask vm-test --thorough --drills --host hetzner-cloud")
    );
}

fn gates_of(observed: &Observed) -> Vec<Gate> {
    gates(observed)
}

#[test]
fn nothing_run_is_not_run_and_says_what_to_run() {
    let mut observed = passing();
    observed.check = Evidence::none();
    observed.vm_test = Evidence::none();
    observed.thorough = Evidence::none();
    observed.nixos = Evidence::none();
    observed.nixos_blocked = Some("no flake.lock: the inputs are not pinned".to_owned());
    observed.nixos_how =
        crate::flake_eval::how_to_run(camino::Utf8Path::new("/nonexistent"), "hetzner-cloud");
    let gates = gates(&observed);
    assert_eq!(
        statuses(&observed),
        vec![
            ("login", Status::Pass),
            ("check", Status::NotRun),
            ("nixos", Status::NotRun),
            ("vm-test", Status::NotRun),
            ("procedures", Status::NotRun),
            ("docs", Status::Pass),
            ("tree", Status::Pass)
        ]
    );
    assert_eq!(
        by_id(&gates, "check").command.as_deref(),
        Some("cargo xtask check --host hetzner-cloud")
    );
    assert_eq!(
        by_id(&gates, "procedures").command.as_deref(),
        Some("cargo xtask vm-test --thorough --drills --host hetzner-cloud")
    );
    let nixos = by_id(&gates, "nixos");
    assert!(
        nixos.detail.contains("cannot run here (no flake.lock"),
        "{}",
        nixos.detail
    );
    assert!(nixos.command.as_deref().unwrap().contains("nix flake lock"));
    assert!(nixos
        .command
        .as_deref()
        .unwrap()
        .contains("cargo xtask check --mode flake --host hetzner-cloud"));
    assert_eq!(overall(&gates), Status::NotRun);
}

#[test]
fn the_missing_key_fails_login_and_blocks_check() {
    let mut observed = passing();
    observed.facts = host_facts();
    let mut check = check_results(HEAD, 0);
    check.hosts[0].warnings = 1;
    check.hosts[0].findings = vec!["HOST001 adminSshKeys".to_owned()];
    observed.check = proof(check);
    let gates = gates(&observed);
    let login = by_id(&gates, "login");
    assert_eq!(login.status, Status::Fail);
    assert!(
        login.detail.contains("no SSH key for hbohlen"),
        "{}",
        login.detail
    );
    assert!(login
        .command
        .as_deref()
        .unwrap()
        .contains("adminSshKeys in hosts/servers/hetzner-cloud/machine.nix"));
    let check = by_id(&gates, "check");
    assert_eq!(check.status, Status::Fail);
    assert!(check.detail.contains("HOST001"), "{}", check.detail);
    assert_eq!(overall(&gates), Status::Fail);
}

#[test]
fn results_of_another_revision_a_dirty_tree_or_another_schema_are_stale() {
    let mut observed = passing();
    observed.check = proof(check_results(OLD, 0));
    let mut dirty = vm_results(HEAD, true);
    dirty.header.revision.dirty = true;
    observed.vm_test = proof(dirty);
    let mut other_schema = nixos_results(HEAD, true);
    other_schema.header.schema = SCHEMA - 1;
    observed.nixos = proof(other_schema);
    let gates = gates(&observed);
    let check = by_id(&gates, "check");
    assert_eq!(check.status, Status::Stale);
    assert!(
        check
            .detail
            .contains("made at fedcba987654, but HEAD is 0123456789ab"),
        "{}",
        check.detail
    );
    assert_eq!(
        check.command.as_deref(),
        Some("cargo xtask check --host hetzner-cloud")
    );
    assert_eq!(by_id(&gates, "vm-test").status, Status::Stale);
    assert!(by_id(&gates, "vm-test")
        .detail
        .contains("uncommitted changes"));
    assert_eq!(by_id(&gates, "nixos").status, Status::Stale);
    assert!(by_id(&gates, "nixos").detail.contains("schema"));
}

#[test]
fn an_uncommitted_edit_to_an_input_makes_its_gates_stale() {
    let mut observed = passing();
    observed.head.dirty = true;
    for kind in [Kind::Check, Kind::VmTest, crate::flake_eval::KIND] {
        observed.current.get_mut(&kind).unwrap().insert(
            "hosts/servers/hetzner-cloud/disko.nix".to_owned(),
            "d2".to_owned(),
        );
    }
    // Only vm-test's own file changed for this one.
    observed
        .current
        .get_mut(&Kind::VmTest)
        .unwrap()
        .insert("vm-test-only.nix".to_owned(), "k2".to_owned());
    let gates = gates(&observed);
    for id in ["check", "nixos", "vm-test"] {
        let g = by_id(&gates, id);
        assert_eq!(g.status, Status::Stale, "{g:?}");
        assert!(
            g.detail
                .contains("hosts/servers/hetzner-cloud/disko.nix changed (not committed)")
                || g.detail
                    .contains("disko.nix changed, vm-test-only.nix changed (not committed)"),
            "{}",
            g.detail
        );
    }
    assert_eq!(by_id(&gates, "tree").status, Status::Fail);
    // A file that feeds nothing leaves the results fresh (the tree gate still fails).
    let mut observed = passing();
    observed.head.dirty = true;
    assert_eq!(
        by_id(&super::gates(&observed), "check").status,
        Status::Pass
    );
}

#[test]
fn results_for_another_host_are_stale() {
    let mut observed = passing();
    let mut other_host = check_results(HEAD, 0);
    other_host.header.host = "elsewhere".to_owned();
    observed.check = proof(other_host);
    assert!(by_id(&gates(&observed), "check")
        .detail
        .contains("not hetzner-cloud"));
    let mut all_hosts = check_results(HEAD, 0);
    all_hosts.header.host = "a,hetzner-cloud".to_owned();
    observed.check = proof(all_hosts);
    assert_eq!(by_id(&gates(&observed), "check").status, Status::Pass);
    observed.check = Evidence {
        pass: Found::Unreadable("target/xtask/check.pass.json is not a results file".to_owned()),
        last: Found::Missing,
    };
    assert_eq!(by_id(&gates(&observed), "check").status, Status::Stale);
}

#[test]
fn failed_results_fail_and_say_why() {
    let mut observed = passing();
    observed.check = Evidence {
        pass: Found::Missing,
        last: Found::Present(check_results(HEAD, 2)),
    };
    observed.vm_test = Evidence {
        pass: Found::Missing,
        last: Found::Present(vm_results(HEAD, false)),
    };
    observed.nixos = Evidence {
        pass: Found::Missing,
        last: Found::Present(nixos_results(HEAD, false)),
    };
    let gates = gates(&observed);
    let check = by_id(&gates, "check");
    assert_eq!(check.status, Status::Fail);
    assert!(check.detail.contains("2 error(s)") && check.detail.contains("SWAP001"));
    assert_eq!(check.file.as_deref(), Some("check.json"));
    let vm = by_id(&gates, "vm-test");
    assert_eq!(vm.status, Status::Fail);
    assert!(
        vm.detail.contains("boot 2 (rotate) failed"),
        "{}",
        vm.detail
    );
    assert!(vm
        .detail
        .contains("rotation: measured \"kept\", expected \"moved\""));
    let nixos = by_id(&gates, "nixos");
    assert_eq!(nixos.status, Status::Fail);
    assert!(
        nixos.detail.contains("hbohlen has no SSH key"),
        "{}",
        nixos.detail
    );
    assert_eq!(overall(&gates), Status::Fail);
}

#[test]
fn a_failed_run_is_shown_but_does_not_replace_the_proof() {
    let mut observed = passing();
    let mut failed = vm_results(HEAD, false);
    failed.header.finished_at = "2026-11-28T13:00:00Z".to_owned();
    observed.vm_test.last = Found::Present(failed);
    let vm = by_id(&gates(&observed), "vm-test").clone();
    assert_eq!(vm.status, Status::Pass);
    assert_eq!(vm.file.as_deref(), Some("vm-test.pass.json"));
    assert!(
            vm.detail.contains("the last run (2026-11-28T13:00:00Z, vm-test.json) was a run that did not pass (boot 2 (rotate) failed"),
            "{}",
            vm.detail
        );
}

#[test]
fn a_partial_or_differently_sized_vm_test_does_not_satisfy_the_gate() {
    let mut observed = passing();
    let mut partial = vm_results(HEAD, true);
    partial.requested.boots = 1;
    partial.boots.truncate(1);
    observed.vm_test = Evidence {
        pass: Found::Missing,
        last: Found::Present(partial.clone()),
    };
    let vm = by_id(&gates(&observed), "vm-test").clone();
    assert_eq!(vm.status, Status::NotRun);
    assert!(
        vm.detail.contains("only a partial run (--boots 1"),
        "{}",
        vm.detail
    );
    assert_eq!(
        vm.command.as_deref(),
        Some("cargo xtask vm-test --host hetzner-cloud")
    );

    let mut small = vm_results(HEAD, true);
    small.disk_bytes = 40 << 30;
    small.requested.disk_size = Some("40GiB".to_owned());
    observed.vm_test = Evidence {
        pass: Found::Missing,
        last: Found::Present(small),
    };
    let vm = by_id(&gates(&observed), "vm-test").clone();
    assert_eq!(vm.status, Status::NotRun);
    assert!(
        vm.detail
            .contains("a run on a 42949672960-byte disk, not the host's 480000000000 bytes"),
        "{}",
        vm.detail
    );

    // A proof on file stays the proof; the partial run is shown beside it.
    observed.vm_test = Evidence {
        pass: Found::Present(vm_results(HEAD, true)),
        last: Found::Present(VmTestResults {
            header: Header {
                finished_at: "2026-11-29T08:00:00Z".to_owned(),
                ..partial.header.clone()
            },
            ..partial
        }),
    };
    let vm = by_id(&gates(&observed), "vm-test").clone();
    assert_eq!(vm.status, Status::Pass);
    assert!(vm.detail.contains("was a partial run"), "{}", vm.detail);

    // A passing run that never rotated is not the full test either.
    let mut no_rotation = vm_results(HEAD, true);
    no_rotation.boots.retain(|b| b.kind == "install");
    observed.vm_test = proof(no_rotation);
    let vm = by_id(&gates(&observed), "vm-test").clone();
    assert_eq!(vm.status, Status::NotRun);
    assert!(
        vm.detail.contains("without a boot of kind rotate"),
        "{}",
        vm.detail
    );
}

#[test]
fn a_check_with_another_disk_size_does_not_satisfy_the_gate() {
    let mut observed = passing();
    let mut resized = check_results(HEAD, 0);
    resized.disk_size_override = Some(480 << 30);
    observed.check = proof(resized);
    let gate = by_id(&gates(&observed), "check").clone();
    assert_eq!(gate.status, Status::NotRun);
    assert!(gate.detail.contains("--disk-size"), "{}", gate.detail);
}

#[test]
fn a_passing_run_without_checks_proves_nothing() {
    let mut observed = passing();
    let mut empty = vm_results(HEAD, true);
    empty.checks.clear();
    observed.vm_test = proof(empty);
    assert_eq!(by_id(&gates(&observed), "vm-test").status, Status::Fail);
}

#[test]
fn stale_docs_and_a_dirty_tree_fail() {
    let mut observed = passing();
    observed.docs = DocsState::Drifted("changed: layout.md".to_owned());
    observed.head.dirty = true;
    let gates = gates(&observed);
    assert_eq!(by_id(&gates, "docs").status, Status::Fail);
    assert!(by_id(&gates, "docs").detail.contains("changed: layout.md"));
    assert_eq!(by_id(&gates, "tree").status, Status::Fail);

    observed.docs = DocsState::Unknown("nix-instantiate is missing".to_owned());
    observed.head = Revision {
        commit: None,
        dirty: true,
    };
    let gates = super::gates(&observed);
    assert_eq!(by_id(&gates, "docs").status, Status::NotRun);
    assert_eq!(by_id(&gates, "tree").status, Status::Fail);
    assert_eq!(
        by_id(&gates, "check").status,
        Status::Stale,
        "no HEAD: nothing is fresh"
    );
}

#[test]
fn fail_outranks_stale_outranks_not_run() {
    let mut observed = passing();
    observed.check = Evidence::none();
    assert_eq!(overall(&gates(&observed)), Status::NotRun);
    observed.vm_test = proof(vm_results(OLD, true));
    assert_eq!(overall(&gates(&observed)), Status::Stale);
    observed.docs = DocsState::Drifted("x".to_owned());
    assert_eq!(overall(&gates(&observed)), Status::Fail);
}
