//! `cargo xtask docs`: golden files for the repo's host and for a fixture
//! host, the SVG as XML, and `--check` catching a layout change. Uses the
//! real nix-instantiate. Nothing here writes into the repository: changes
//! happen on temporary copies.
//!
//! To accept new output of the fixture host after a deliberate change:
//! `UPDATE_GOLDEN=1 cargo test --test docs_golden`.

mod support;
use support::copy_tree;

use assert_cmd::Command;
use camino::Utf8PathBuf;
use predicates::prelude::*;
use toolbox::context::Context;
use xtask::reference::{self, REFERENCE_DIR};

fn repo() -> Utf8PathBuf {
    Utf8PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_owned()
}

fn fixture_root() -> Utf8PathBuf {
    Utf8PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/docs/two-disks")
}

fn xtask() -> Command {
    Command::cargo_bin("xtask").expect("the xtask binary builds")
}

#[test]
fn the_repos_reference_is_what_the_config_generates() {
    xtask()
        .args(["docs", "--check"])
        .assert()
        .code(0)
        .stdout(predicate::str::contains("docs/reference/ is fresh"));
}

#[test]
fn the_fixture_host_matches_its_golden_files() {
    let root = fixture_root();
    let generated = reference::generate(&Context::default(), &root, "two-disks")
        .expect("the fixture host generates");
    let dir = root.join(REFERENCE_DIR);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        reference::write(&dir, &generated).expect("writing the golden files");
    }
    let drift = reference::compare(&dir, &generated).expect("comparing");
    assert!(
        drift.is_empty(),
        "the fixture's golden files differ (UPDATE_GOLDEN=1 accepts the new output):\n{}",
        drift.render(dir.as_str())
    );
    let layout = &generated["layout.md"];
    // Per-disk sizes, decimal, and a disk without a partition table.
    assert!(layout.contains("Size: **64000000000 bytes** = 64.0 GB"));
    assert!(layout.contains("## Disk `data`: /dev/vdb, no partition table"));
    assert!(layout.contains("## Btrfs on the whole disk `data`, /dev/vdb"));
    // The second mount's compress=lzo is shown as ignored, and /srv/db as No_COW.
    assert!(layout.contains("- `/srv/db` asks for `compress=lzo` but gets `compress=zstd:1`"));
    assert!(layout.contains("| `@db` | `/srv/db` |"));
    assert!(layout.contains("boots with UEFI."));
    let persisted = &generated["persisted-paths.md"];
    assert!(persisted.contains(
        "| `/home/alice/projects` | directory | alice | `/persist/home/alice/projects` |"
    ));
}

/// Parses an SVG and checks what browsers and GitHub need.
fn assert_good_svg(text: &str) -> roxmltree::Document<'_> {
    let document = roxmltree::Document::parse(text).expect("the SVG is well-formed XML");
    let root = document.root_element();
    assert_eq!(root.tag_name().name(), "svg");
    assert_eq!(
        root.tag_name().namespace(),
        Some("http://www.w3.org/2000/svg")
    );
    for attribute in ["width", "height", "viewBox"] {
        assert!(root.attribute(attribute).is_some(), "no {attribute}");
    }
    for node in document.descendants().filter(|n| n.is_element()) {
        let name = node.tag_name().name();
        assert!(
            !matches!(name, "script" | "foreignObject" | "style" | "image" | "a"),
            "<{name}> does not belong in a diagram GitHub shows"
        );
        for attribute in node.attributes() {
            assert!(
                !attribute.name().starts_with("on") && !attribute.value().contains("url("),
                "{name} has {}={:?}",
                attribute.name(),
                attribute.value()
            );
            assert!(attribute.name() != "href", "external references: {name}");
        }
    }
    assert!(document
        .descendants()
        .any(|n| n.tag_name().name() == "title"));
    document
}

#[test]
fn the_diagrams_are_well_formed_and_keep_tiny_partitions_visible() {
    let repo_svg = std::fs::read_to_string(repo().join(REFERENCE_DIR).join("disk.svg"))
        .expect("docs/reference/disk.svg is committed");
    let document = assert_good_svg(&repo_svg);
    // The 1 MiB BIOS boot partition is drawn at the minimum width and labelled.
    let min = xtask::reference::svg::MIN_SEGMENT;
    let bar: Vec<_> = document
        .descendants()
        .filter(|n| n.tag_name().name() == "rect" && n.attribute("height") == Some("40"))
        .collect();
    assert_eq!(bar.len(), 4, "one segment per partition");
    let first_width: f64 = bar[0].attribute("width").unwrap().parse().unwrap();
    assert_eq!(first_width, min);
    assert!(repo_svg.contains("1 boot · EF02 BIOS boot · 1.0 MiB"));
    assert!(repo_svg.contains("drawn wider than scale"));
    for name in [
        "@root",
        "@nix",
        "@persist",
        "@log",
        "@containers",
        "@caddy",
        "@snapshots",
        "@old_roots",
    ] {
        assert!(
            repo_svg.contains(&format!(">{name}</text>")),
            "{name} is in the tree"
        );
    }

    let fixture = reference::generate(&Context::default(), &fixture_root(), "two-disks").unwrap();
    assert_good_svg(&fixture["disk.svg"]);
    assert!(fixture["disk.svg"].contains("whole disk: btrfs"));
}

#[test]
fn check_fails_after_a_layout_change_and_passes_after_docs() {
    // A copy of the repository's hosts and reference, never the repository itself.
    let temp = tempfile::tempdir().unwrap();
    let root = Utf8PathBuf::from_path_buf(temp.path().to_owned()).unwrap();
    copy_tree(repo().join("hosts"), root.join("hosts"));
    copy_tree(repo().join(REFERENCE_DIR), root.join(REFERENCE_DIR));
    let dir = root.join(REFERENCE_DIR);

    let generated = reference::generate(&Context::default(), &root, "hetzner-cloud").unwrap();
    assert!(
        reference::compare(&dir, &generated).unwrap().is_empty(),
        "the copy starts fresh"
    );

    // Halve the swap: every position after it moves.
    let disko = root.join("hosts/servers/hetzner-cloud/disko.nix");
    let text = std::fs::read_to_string(&disko).unwrap();
    assert!(text.contains("size = \"32G\";"));
    std::fs::write(&disko, text.replace("size = \"32G\";", "size = \"16G\";")).unwrap();

    let generated = reference::generate(&Context::default(), &root, "hetzner-cloud").unwrap();
    let drift = reference::compare(&dir, &generated).unwrap();
    let changed: Vec<&str> = drift.changed.iter().map(|c| c.path.as_str()).collect();
    assert_eq!(changed, vec!["disk.svg", "layout.md"], "{drift:#?}");
    let rendered = drift.render(REFERENCE_DIR);
    assert!(rendered.contains("changed: docs/reference/layout.md"));
    assert!(
        rendered.contains("+| 3 | swap |"),
        "a line diff: {rendered}"
    );

    reference::write(&dir, &generated).unwrap();
    let again = reference::generate(&Context::default(), &root, "hetzner-cloud").unwrap();
    assert!(reference::compare(&dir, &again).unwrap().is_empty());

    // Hand edits and stray files are caught too.
    std::fs::write(dir.join("notes.md"), "mine\n").unwrap();
    std::fs::remove_file(dir.join("rules.md")).unwrap();
    let drift = reference::compare(&dir, &again).unwrap();
    assert_eq!(drift.extra, vec!["notes.md"]);
    assert_eq!(drift.missing, vec!["rules.md"]);
}

#[test]
fn unknown_hosts_cannot_run() {
    xtask()
        .args(["docs", "--check", "--host", "no-such-host"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no host \"no-such-host\""))
        .stderr(predicate::str::contains("hetzner-cloud"));
}
