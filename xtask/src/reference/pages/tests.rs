//! Unit tests of `pages`.

use super::*;
use crate::hosts::testing::host_subject;

#[test]
fn the_partition_table_has_exact_positions() {
    let pages = pages(&host_subject());
    let layout = &pages[LAYOUT];
    assert!(
        layout.contains("Size: **480000000000 bytes** = 480.0 GB in decimal units"),
        "{layout}"
    );
    assert!(layout.contains(
        "| 4 | root | `disk-main-root` | 8300 Linux filesystem | 69210112 | 937498623 | 35435577344 B (33.0 GiB) | 479999295487 B (447.0 GiB) | 444563718144 B = 414.0 GiB = 444.6 GB |"
    ), "{layout}");
    assert!(layout.contains(
        "| 1 | boot | `disk-main-boot` | EF02 BIOS boot | 2048 | 4095 | 1048576 B (1.0 MiB) | 2097151 B (2.0 MiB) | 1048576 B = 1.0 MiB = 1.0 MB |"
    ), "{layout}");
}

#[test]
fn subvolumes_show_what_takes_effect() {
    let pages = pages(&host_subject());
    let layout = &pages[LAYOUT];
    assert!(
        layout.contains(
            "every subvolume has `compress=zstd:1`, `discard=async`, `space_cache=v2`, `ssd`"
        ),
        "{layout}"
    );
    assert!(layout.contains("| `@containers` | `/var/lib/containers` | `noatime,subvol=@containers,compress=zstd:1,discard=async,space_cache=v2,ssd` | none: No_COW files are never compressed | yes: `chattr +C`"), "{layout}");
    assert!(layout.contains("| `@root` | `/` |"));
    assert!(layout.contains("**wiped at every boot**"));
    assert!(layout.contains("`/dev/mapper/dev-disk-byx2dpartlabel-diskx2dmainx2dswap`"));
    assert!(
        layout
            .contains("├── @old_roots   (not mounted)  (old roots)\n├── @persist     → /persist\n"),
        "{layout}"
    );
    assert!(!layout.contains("without effect"));
}

#[test]
fn persisted_paths_come_from_persistence_nix() {
    let pages = pages(&host_subject());
    let page = &pages[PERSISTED];
    assert!(
        page.contains("| `/var/lib/tailscale` | directory | - | `/persist/var/lib/tailscale` |"),
        "{page}"
    );
    assert!(page.contains("| `/home/hbohlen/.ssh/authorized_keys` | file | hbohlen | `/persist/home/hbohlen/.ssh/authorized_keys` |"), "{page}");
    assert!(page.contains("| `/nix` | subvolume `@nix` |"));
    assert!(page.contains("| `/boot` | vfat on /dev/disk/by-partlabel/disk-main-ESP |"));
    assert!(!page.contains("| `/` |"), "the root is not kept: {page}");
}

#[test]
fn every_rule_is_catalogued_with_an_anchor() {
    let pages = pages(&host_subject());
    let page = &pages[RULES_PAGE];
    for rule in RULES {
        assert!(
            page.contains(&format!("### {}\n", rule.code)),
            "{}",
            rule.code
        );
        assert!(page.contains(&format!("(#{})", rule.code.to_ascii_lowercase())));
    }
}

#[test]
fn output_is_deterministic_and_undated() {
    let a = pages(&host_subject());
    let b = pages(&host_subject());
    assert_eq!(a, b);
    let today = crate::results::now_rfc3339();
    let revision = toolbox::project::revision().commit.unwrap_or_default();
    for (path, text) in &a {
        assert!(!text.contains(&today[..10]), "{path} holds today's date");
        assert!(
            revision.is_empty() || !text.contains(&revision[..12]),
            "{path} holds the revision"
        );
    }
}
