use super::*;
use crate::layout::mount_options::{compression, effective};
use crate::layout::testing::host_layout;

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
