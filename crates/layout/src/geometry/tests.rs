//! Unit tests of `geometry`.

use super::*;
use crate::findings::AttrPath;
use crate::size::parse_partition_size;

pub(crate) fn partition(number: u32, key: &str, size: &str) -> Partition {
    Partition {
        path: AttrPath::new(["p", key]),
        key: key.to_owned(),
        name: key.to_owned(),
        number,
        type_code: "8300".to_owned(),
        label: key.to_owned(),
        device: format!("/dev/disk/by-partlabel/{key}"),
        size: parse_partition_size(size),
        size_text: size.to_owned(),
        start: "0".to_owned(),
        end: if size == "100%" {
            "-0".to_owned()
        } else {
            format!("+{size}")
        },
        priority: 1000,
        alignment: 0,
        content: None,
        hybrid: None,
        partlabel: None,
    }
}

fn ranged(number: u32, key: &str, start: &str, end: &str) -> Partition {
    Partition {
        start: start.to_owned(),
        end: end.to_owned(),
        ..partition(number, key, "0")
    }
}

fn gpt(partitions: Vec<Partition>) -> Gpt {
    Gpt {
        path: AttrPath::root(),
        partitions,
        efi_gpt_partition_first: true,
    }
}

fn sectors(geometry: &DiskGeometry) -> Vec<(u64, u64)> {
    geometry
        .extents
        .iter()
        .map(|e| (e.start_sector, e.end_sector))
        .collect()
}

fn cpx52() -> Gpt {
    gpt(vec![
        partition(1, "boot", "1M"),
        partition(2, "ESP", "1G"),
        partition(3, "swap", "32G"),
        partition(4, "root", "100%"),
    ])
}

#[test]
fn cpx52_matches_sgdisk() {
    // sgdisk -p on a 480000000000-byte file after disko's four --new calls.
    let geometry = compute(&cpx52(), 480_000_000_000);
    assert!(geometry.problems.is_empty(), "{:?}", geometry.problems);
    assert_eq!(
        sectors(&geometry),
        vec![
            (2048, 4095),
            (4096, 2101247),
            (2101248, 69210111),
            (69210112, 937498623),
        ]
    );
    assert_eq!(geometry.last_usable_sector, 937499966);
    assert_eq!(geometry.extents[3].size_bytes(), 444_563_718_144);
}

#[test]
fn unaligned_sizes_keep_their_end_and_push_the_next_start() {
    let gpt = gpt(vec![
        partition(1, "a", "1000K"),
        partition(2, "b", "777"),
        partition(3, "c", "100%"),
    ]);
    // As sgdisk 1.0.9 placed them on a 100 MiB file.
    assert_eq!(
        sectors(&compute(&gpt, 100 << 20)),
        vec![(2048, 4047), (4096, 4872), (6144, 202751)]
    );
}

#[test]
fn too_big_is_refused_not_a_panic() {
    let gpt = gpt(vec![
        partition(1, "swap", "32G"),
        partition(2, "root", "100%"),
    ]);
    let geometry = compute(&gpt, 16 << 30);
    assert!(
        matches!(
            geometry.problems.as_slice(),
            [Problem::Refused { key, refusal: Refusal::RunsInto { other: None, .. }, .. }] if key == "swap"
        ),
        "{:?}",
        geometry.problems
    );
    for tiny in [4096, 0, 40 * 512] {
        assert!(!compute(&gpt, tiny).problems.is_empty());
    }
    let huge = compute(&gpt, u64::MAX);
    assert!(huge.problems.is_empty(), "{:?}", huge.problems);
}

#[test]
fn a_gpt_table_holds_128_partitions() {
    let keys: Vec<String> = (0..200).map(|i| format!("p{i:03}")).collect();
    let gpt = gpt(keys
        .iter()
        .enumerate()
        .map(|(i, key)| partition(u32::try_from(i + 1).unwrap(), key, "1M"))
        .collect());
    let geometry = compute(&gpt, 480_000_000_000);
    assert_eq!(geometry.extents.len(), MAX_PARTITIONS);
    assert_eq!(
        geometry.problems,
        vec![Problem::TooMany {
            key: "p128".into(),
            count: 200
        }]
    );
}

#[test]
fn unparsed_sizes_stop_the_table() {
    let gpt = gpt(vec![partition(1, "a", "1X"), partition(2, "b", "100%")]);
    assert_eq!(
        compute(&gpt, 1 << 30).problems,
        vec![Problem::UnparsedSize { key: "a".into() }]
    );
}

#[test]
fn size_zero_takes_the_largest_free_block() {
    // disko's default size "0" gives `--new=N:0:+0`: sgdisk reads +0 as
    // its default end, the end of the free block (as sgdisk 1.0.9 did).
    let geometry = compute(
        &gpt(vec![
            partition(1, "a", "1M"),
            partition(2, "b", "0"),
            partition(3, "c", "1M"),
        ]),
        100 << 20,
    );
    assert_eq!(sectors(&geometry), vec![(2048, 4095), (4096, 202751)]);
    assert!(
        matches!(
            geometry.problems.as_slice(),
            [Problem::Refused { key, start_sector: 202752, end_sector: 204799, .. }] if key == "c"
        ),
        "{:?}",
        geometry.problems
    );
}

#[test]
fn a_second_rest_partition_lands_in_the_largest_gap_left() {
    // On the CPX52 that is the 1007 KiB before the first partition; on a
    // 100 MiB disk the 2015 sectors after the aligned end are one more
    // (both as sgdisk 1.0.9 placed them).
    let mut partitions = cpx52().partitions;
    partitions.push(partition(5, "more", "100%"));
    let geometry = compute(&gpt(partitions), 480_000_000_000);
    assert!(geometry.problems.is_empty(), "{:?}", geometry.problems);
    assert_eq!(
        geometry.extent(5).map(|e| (e.start_sector, e.end_sector)),
        Some((34, 2047))
    );
    let geometry = compute(
        &gpt(vec![
            partition(1, "boot", "1M"),
            partition(2, "a", "100%"),
            partition(3, "b", "100%"),
        ]),
        100 << 20,
    );
    assert_eq!(
        sectors(&geometry),
        vec![(2048, 4095), (4096, 202751), (202752, 204766)]
    );
}

#[test]
fn start_and_end_as_sgdisk_reads_them() {
    let geometry = compute(
        &gpt(vec![
            ranged(1, "boot", "1M", "+1M"),
            ranged(2, "ESP", "2M", "+512M"),
            ranged(3, "swap", "0", "+1G"),
            ranged(4, "root", "0", "-0"),
        ]),
        4 << 30,
    );
    assert!(geometry.problems.is_empty(), "{:?}", geometry.problems);
    assert_eq!(
        sectors(&geometry),
        vec![
            (2048, 4095),
            (4096, 1052671),
            (1052672, 3149823),
            (3149824, 8386559)
        ]
    );
}

#[test]
fn an_absolute_end_is_inclusive() {
    // `end = "2M"` is sector 4096 itself, so `start = "2M"` of the next is taken.
    let geometry = compute(
        &gpt(vec![
            ranged(1, "boot", "1M", "2M"),
            ranged(2, "ESP", "2M", "+512M"),
        ]),
        4 << 30,
    );
    assert_eq!(sectors(&geometry), vec![(2048, 4096)]);
    assert!(
        matches!(
            &geometry.problems[..],
            [Problem::Refused { key, start_sector: 4096, end_sector: 1052671, refusal: Refusal::StartTaken { .. }, .. }]
                if key == "ESP"
        ),
        "{:?}",
        geometry.problems
    );
}

#[test]
fn overlapping_ranges_are_refused() {
    let geometry = compute(
        &gpt(vec![
            ranged(1, "a", "1M", "100M"),
            ranged(2, "b", "50M", "200M"),
        ]),
        1 << 30,
    );
    assert!(
        matches!(
            &geometry.problems[..],
            [Problem::Refused { key, refusal: Refusal::StartTaken { other: Some(other) }, .. }]
                if key == "b" && other == "a"
        ),
        "{:?}",
        geometry.problems
    );
    let geometry = compute(
        &gpt(vec![
            ranged(1, "a", "100M", "200M"),
            ranged(2, "b", "50M", "150M"),
        ]),
        1 << 30,
    );
    assert!(
        matches!(
            &geometry.problems[..],
            [Problem::Refused { key, refusal: Refusal::RunsInto { other: Some(other), .. }, .. }]
                if key == "b" && other == "a"
        ),
        "{:?}",
        geometry.problems
    );
}

#[test]
fn an_alignment_popt_cannot_read_is_ignored() {
    let mut swap = partition(2, "swap", "32G");
    swap.alignment = u64::MAX / 2;
    let geometry = compute(
        &gpt(vec![
            partition(1, "boot", "1M"),
            swap,
            partition(3, "root", "100%"),
        ]),
        480_000_000_000,
    );
    assert_eq!(sectors(&geometry), vec![(2048, 4095), (4096, 937498623)]);
    assert!(matches!(&geometry.problems[..], [Problem::Ignored { key, .. }] if key == "swap"));
}

#[test]
fn ieee_to_int_reads_like_sgdisk() {
    let (low, high, align) = (2048, 204_766, 2048);
    assert_eq!(ieee_to_int("0", low, high, align, low), Some(2048));
    assert_eq!(ieee_to_int("", low, high, align, low), Some(2048));
    assert_eq!(ieee_to_int("1M", low, high, align, low), Some(2048));
    assert_eq!(ieee_to_int("1m", low, high, align, low), Some(2048));
    assert_eq!(ieee_to_int("4096s", low, high, align, low), Some(4096));
    assert_eq!(ieee_to_int("+1M", low, high, align, low), Some(4096));
    assert_eq!(ieee_to_int("+1M", low, high, align, high), Some(4095));
    assert_eq!(ieee_to_int("+0", low, high, align, high), Some(high));
    assert_eq!(ieee_to_int("-0", low, high, align, high), Some(high));
    assert_eq!(
        ieee_to_int("-1M", low, high, align, high),
        Some(high - 2048)
    );
    // It stops at the first character that is not a digit.
    assert_eq!(ieee_to_int("1.5G", low, high, align, low), Some(1));
    assert_eq!(ieee_to_int("0x10", low, high, align, low), Some(2048));
    assert_eq!(ieee_to_int("10GB", low, high, align, low), Some(10 << 21));
    for bad in ["abc", "--5", "+ 5", "-99999999999"] {
        assert_eq!(ieee_to_int(bad, low, high, align, low), None, "{bad}");
    }
    // An overflow reads as the largest number, which no disk has.
    assert_eq!(
        ieee_to_int("99999999999999999999", low, high, align, low),
        Some(u64::MAX)
    );
}
