//! Unit tests of `procedures`.

use super::*;

#[test]
fn patterns_match_whole_lines() {
    assert!(matches(
        "ID <n> gen <n> top level 5 path @nix",
        "ID 256 gen 12 top level 5 path @nix"
    ));
    assert!(!matches(
        "ID <n> gen <n> top level 5 path @nix",
        "ID 256 gen 12 top level 5 path @nix2"
    ));
    assert!(matches(
        "/dev/dm-<n> partition 34359734272",
        "/dev/dm-0   partition 34359734272"
    ));
    assert!(!matches("/dev/dm-<n> partition 1", "/dev/dm- partition 1"));
    assert!(matches("<old-root>", "20260101T120000Z"));
    assert!(matches("<old-root>", "20260101T120000Z-01"));
    assert!(!matches("<old-root>", "20260101T1200Z"));
    assert!(matches(
        "/btrfs_tmp/@old_roots/<old-root>/root/wiped-at-boot",
        "/btrfs_tmp/@old_roots/20260101T120000Z-02/root/wiped-at-boot"
    ));
    assert!(matches(
        "<*>C<*> /var/lib/containers",
        "---------------C------ /var/lib/containers"
    ));
    assert!(!matches(
        "<*>C<*> /var/lib/containers",
        "---------------------- /var/lib/containers"
    ));
    assert!(matches("type: PLAIN", "  type:    PLAIN"));
    assert!(!matches("type: PLAIN", "type:PLAIN"));
    assert!(matches(
        "/btrfs_tmp: <*> (<n> bytes) trimmed",
        "/btrfs_tmp: 398.2 GiB (427565010944 bytes) trimmed"
    ));
}

#[test]
fn the_regex_of_a_pattern_matches_what_the_pattern_matches() {
    let cases = [
        (
            "ID <n> gen <n> top level 5 path @nix",
            "ID 256 gen 12 top level 5 path @nix",
        ),
        (
            "ID <n> gen <n> top level 5 path @nix",
            "ID 256 gen 12 top level 5 path @nix2",
        ),
        (
            "/dev/dm-<n> partition 34359734272",
            "/dev/dm-0   partition 34359734272",
        ),
        ("/dev/dm-<n> partition 1", "/dev/dm- partition 1"),
        ("<old-root>", "20260101T120000Z"),
        ("<old-root>", "20260101T120000Z-01"),
        ("<old-root>", "20260101T1200Z"),
        ("rotated_to=<old-root>", "rotated_to=20260101T120000Z-02"),
        (
            "<*>C<*> /var/lib/containers",
            "---------------C------ /var/lib/containers",
        ),
        (
            "<*>C<*> /var/lib/containers",
            "---------------------- /var/lib/containers",
        ),
        ("type: PLAIN", "type:    PLAIN"),
        ("type: PLAIN", "type:PLAIN"),
        (
            "btrfs-rollback: result=ok <*>",
            "btrfs-rollback: result=ok rotated_to=x (1 ms)",
        ),
        ("<*> part <*> 0B<*>", "|-vda3 part 512B 2G"),
        ("<*> part <*> 0B<*>", "|-vda3 part 0B 0B"),
        (
            "Data,single: <*>",
            "Data,single: Size:1.00GiB, Used:2.00MiB (0.20%)",
        ),
        ("/x.y+[z] (a|b)", "/x.y+[z] (a|b)"),
        ("/x.y+[z] (a|b)", "/xxy+[z] (a|b)"),
    ];
    for (pattern, line) in cases {
        let regex = regex::Regex::new(&format!("^(?:{})$", pattern_regex(pattern))).unwrap();
        assert_eq!(
            regex.is_match(line.trim()),
            matches(pattern, line),
            "{pattern:?} as {:?} on {line:?}",
            pattern_regex(pattern)
        );
    }
}

#[test]
fn expectations_say_what_differed() {
    let fields = Expect::Fields {
        first: "/nix".to_owned(),
        include: vec!["compress=zstd:1".to_owned(), "subvol=/@nix".to_owned()],
    };
    let out = "/  /dev/sda4[/@root] rw,noatime\n/nix /dev/sda4[/@nix] rw,noatime,compress=zstd:1,subvolid=257,subvol=/@nix\n";
    assert_eq!(fields.check(0, out), Ok(()));
    let err = fields
        .check(0, "/nix /dev/sda4[/@nix] rw,compress=zstd:3,subvol=/@nix")
        .unwrap_err();
    assert_eq!(err, "/nix: missing compress=zstd:1");
    assert!(Expect::Empty.check(0, "\n\n").is_ok());
    assert!(Expect::Empty
        .check(0, "x.service loaded failed failed X\n")
        .is_err());
    assert!(Expect::Exit { status: 0 }.check(1, "").is_err());
    let perc = Expect::AtMost {
        pattern: "TOTAL <*>".to_owned(),
        field: 2,
        max: 70.0,
    };
    let compsize = "Processed 10 files\nType       Perc     Disk Usage   Uncompressed Referenced\nTOTAL       37%      1.0G         2.8G         2.8G\nzstd        30%      800M         2.6G         2.6G\n";
    assert!(perc.check(0, compsize).is_ok());
    assert!(perc
        .check(0, &compsize.replace("TOTAL       37%", "TOTAL       85%"))
        .unwrap_err()
        .contains("85 in"));
}

/// §3.1's scrub timer: the name nixpkgs gives it changed (NixOS/nixpkgs
/// PR #559627 made it a template instance); both names pass, a missing or
/// stopped timer does not.
#[test]
fn the_scrub_timer_passes_under_either_nixpkgs_name() {
    let subject = crate::hosts::testing::host_subject();
    let facts = crate::deploy_checklist::facts::testing::with_key();
    let steps = super::verification::verification(&subject, &facts, None);
    let units = steps.iter().find(|p| p.id == "verify.units").unwrap();
    let scrub = units
        .commands
        .iter()
        .find(|c| c.line.contains("btrfs-scrub"))
        .unwrap();
    assert_eq!(
        scrub.line,
        "sudo systemctl show -p Id -p ActiveState 'btrfs-scrub[-@]btrfs_tmp.timer'"
    );
    let holds = |stdout: &str| scrub.expect.iter().all(|e| e.check(0, stdout).is_ok());
    // What systemctl show prints for each name.
    assert!(holds(
        "Id=btrfs-scrub-btrfs_tmp.timer\nActiveState=active\n"
    ));
    assert!(holds(
        "Id=btrfs-scrub@btrfs_tmp.timer\nActiveState=active\n"
    ));
    // No unit fits the glob: show prints nothing.
    assert!(!holds(""));
    assert!(!holds(
        "Id=btrfs-scrub@btrfs_tmp.timer\nActiveState=inactive\n"
    ));
    assert!(!holds(
        "Id=btrfs-scrub@btrfs_tmp.timer\nActiveState=failed\n"
    ));
    // No other command of the procedure names a scrub timer.
    assert!(
        units
            .commands
            .iter()
            .filter(|c| c.line.contains("btrfs-scrub"))
            .count()
            == 1
    );
}
