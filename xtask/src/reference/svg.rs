//! The disk diagram: every disk as a bar of partitions proportional to their
//! size, and every Btrfs filesystem as a tree of subvolumes. Plain SVG 1.1
//! with presentation attributes only (no scripts, no external fonts, no CSS),
//! on a white background, so that it reads the same in a browser and on GitHub
//! in light and dark mode.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::report::{BtrfsTable, DiskTable, Lifecycle, SubvolumeRow, Tables};
use layout::kernel_options::{btrfs_scope, Scope};
use layout::size::{human, human_decimal};

pub const WIDTH: f64 = 960.0;
const PAD: f64 = 24.0;
const BAR_HEIGHT: f64 = 40.0;
/// Partitions narrower than this at scale are drawn this wide, so that the
/// 1 MiB BIOS boot partition of a 480 GB disk stays visible and labelled.
pub const MIN_SEGMENT: f64 = 36.0;
const ROW: f64 = 30.0;
const BOX_HEIGHT: f64 = 24.0;
const FONT: &str = "Verdana, DejaVu Sans, Arial, Helvetica, sans-serif";
const INK: &str = "#1b1f24";
const MUTED: &str = "#57606a";

/// Escapes text for XML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// A rough width of `text` in Verdana at `size` px, to decide what fits.
fn text_width(text: &str, size: f64) -> f64 {
    text.chars().count() as f64 * size * 0.63
}

/// Coordinates with at most one decimal, so that output is stable.
fn n(value: f64) -> String {
    let rounded = (value * 10.0).round() / 10.0;
    if rounded.fract() == 0.0 {
        format!("{}", rounded as i64)
    } else {
        format!("{rounded:.1}")
    }
}

struct Canvas {
    body: String,
    y: f64,
}

impl Canvas {
    fn text(&mut self, x: f64, y: f64, size: f64, attrs: &str, text: &str) {
        let _ = writeln!(
            self.body,
            "  <text x=\"{}\" y=\"{}\" font-size=\"{}\"{attrs}>{}</text>",
            n(x),
            n(y),
            n(size),
            escape(text)
        );
    }

    fn rect(&mut self, x: f64, y: f64, w: f64, h: f64, attrs: &str) {
        let _ = writeln!(
            self.body,
            "  <rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\"{attrs}/>",
            n(x),
            n(y),
            n(w),
            n(h)
        );
    }

    fn line(&mut self, x1: f64, y1: f64, x2: f64, y2: f64, attrs: &str) {
        let _ = writeln!(
            self.body,
            "  <line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"{MUTED}\" stroke-width=\"1.5\"{attrs}/>",
            n(x1),
            n(y1),
            n(x2),
            n(y2)
        );
    }
}

/// Widths of segments of `sizes` on a bar `total` wide: proportional, but
/// never below `minimum` (and then the others share what is left).
pub fn segment_widths(sizes: &[u64], total: f64, minimum: f64) -> Vec<f64> {
    if sizes.is_empty() {
        return Vec::new();
    }
    if sizes.iter().all(|s| *s == 0) || minimum * sizes.len() as f64 >= total {
        return vec![total / sizes.len() as f64; sizes.len()];
    }
    let mut fixed = vec![false; sizes.len()];
    loop {
        let free_width = total - minimum * fixed.iter().filter(|f| **f).count() as f64;
        let free_bytes: u64 = sizes
            .iter()
            .zip(&fixed)
            .filter(|(_, f)| !**f)
            .map(|(s, _)| *s)
            .sum();
        let mut changed = false;
        let widths: Vec<f64> = sizes
            .iter()
            .zip(fixed.iter_mut())
            .map(|(size, fixed)| {
                if *fixed {
                    return minimum;
                }
                let width = if free_bytes == 0 {
                    0.0
                } else {
                    free_width * *size as f64 / free_bytes as f64
                };
                if width < minimum {
                    *fixed = true;
                    changed = true;
                }
                width
            })
            .collect();
        if !changed {
            return widths;
        }
    }
}

fn partition_fill(type_code: &str, content: &str) -> &'static str {
    match type_code.to_ascii_uppercase().as_str() {
        "EF02" => "#d0d7de",
        "EF00" => "#f6d58e",
        "8200" => "#d2c4f0",
        _ if content.starts_with("btrfs") => "#9fdcd2",
        _ if content.starts_with("swap") => "#d2c4f0",
        _ => "#e6e6e6",
    }
}

fn lifecycle_fill(lifecycle: Lifecycle) -> &'static str {
    match lifecycle {
        Lifecycle::WipedAtBoot => "#fbd9c4",
        Lifecycle::Persistent => "#cdeccf",
        Lifecycle::Retained => "#e4e4e4",
    }
}

/// The whole diagram for `host`; `disk_sizes` (by disk key) labels disks
/// that have no partition table, and so no geometry.
pub fn diagram(host: &str, tables: &Tables, disk_sizes: &BTreeMap<String, u64>) -> String {
    let mut canvas = Canvas {
        body: String::new(),
        y: PAD,
    };
    canvas.y += 16.0;
    canvas.text(
        PAD,
        canvas.y,
        18.0,
        &format!(" font-weight=\"bold\" fill=\"{INK}\""),
        &format!("Disk layout of {host}"),
    );
    canvas.y += 20.0;
    canvas.text(
        PAD,
        canvas.y,
        12.0,
        &format!(" fill=\"{MUTED}\""),
        &format!(
            "Partition widths are proportional to size; partitions narrower than {} px at scale are drawn {} px wide so that they stay visible.",
            n(MIN_SEGMENT),
            n(MIN_SEGMENT)
        ),
    );
    for disk in &tables.disks {
        let size = disk
            .size_bytes
            .or_else(|| disk_sizes.get(&disk.key).copied());
        disk_bar(&mut canvas, tables, disk, size);
    }
    for fs in &tables.filesystems {
        subvolume_tree(&mut canvas, tables, fs);
    }
    legend(&mut canvas);
    let height = canvas.y + PAD;
    let title = format!("Disk layout of {host}: partitions and Btrfs subvolumes");
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" font-family=\"{FONT}\" role=\"img\" aria-labelledby=\"title\">\n\
         \x20 <title id=\"title\">{title}</title>\n\
         \x20 <desc>Generated by cargo xtask docs from the host's disko.nix and machine.nix.</desc>\n\
         \x20 <rect x=\"0\" y=\"0\" width=\"{w}\" height=\"{h}\" rx=\"8\" fill=\"#ffffff\" stroke=\"#d0d7de\"/>\n\
         {body}</svg>\n",
        w = n(WIDTH),
        h = n(height),
        title = escape(&title),
        body = canvas.body,
    )
}

fn disk_bar(canvas: &mut Canvas, tables: &Tables, disk: &DiskTable, size: Option<u64>) {
    canvas.y += 36.0;
    let size = size.map_or_else(
        || "size unknown".to_owned(),
        |b| format!("{} ({})", human_decimal(b), human(b)),
    );
    let kind = if disk.partitions.is_empty() {
        "no partition table"
    } else {
        "GPT"
    };
    canvas.text(
        PAD,
        canvas.y,
        14.0,
        &format!(" font-weight=\"bold\" fill=\"{INK}\""),
        &format!("Disk {} · {} · {size} · {kind}", disk.key, disk.device),
    );
    canvas.y += 10.0;
    let bar_y = canvas.y;
    let total = WIDTH - 2.0 * PAD;
    if disk.partitions.is_empty() {
        let content = tables
            .filesystems
            .iter()
            .find(|fs| fs.device == disk.device)
            .map_or("whole disk", |_| "whole disk: btrfs");
        canvas.rect(
            PAD,
            bar_y,
            total,
            BAR_HEIGHT,
            " fill=\"#9fdcd2\" stroke=\"#ffffff\" stroke-width=\"2\"",
        );
        canvas.text(
            PAD + total / 2.0,
            bar_y + BAR_HEIGHT / 2.0 + 5.0,
            13.0,
            &format!(" text-anchor=\"middle\" fill=\"{INK}\""),
            content,
        );
        canvas.y += BAR_HEIGHT;
        return;
    }
    let known = disk.partitions.iter().all(|p| p.size_bytes.is_some());
    let sizes: Vec<u64> = disk
        .partitions
        .iter()
        .map(|p| if known { p.size_bytes.unwrap_or(0) } else { 1 })
        .collect();
    let widths = segment_widths(&sizes, total, MIN_SEGMENT);
    let scale = if known {
        disk.size_bytes.map(|b| total / b as f64)
    } else {
        None
    };
    let mut x = PAD;
    for (p, width) in disk.partitions.iter().zip(&widths) {
        canvas.rect(
            x,
            bar_y,
            *width,
            BAR_HEIGHT,
            &format!(
                " fill=\"{}\" stroke=\"#ffffff\" stroke-width=\"2\"",
                partition_fill(&p.type_code, &p.content)
            ),
        );
        let long = format!(
            "{} {} · {}",
            p.number,
            p.key,
            p.size_bytes.map_or_else(|| p.size_text.clone(), human)
        );
        let label = if text_width(&long, 13.0) + 12.0 <= *width {
            long
        } else {
            p.number.to_string()
        };
        canvas.text(
            x + width / 2.0,
            bar_y + BAR_HEIGHT / 2.0 + 5.0,
            13.0,
            &format!(" text-anchor=\"middle\" font-weight=\"bold\" fill=\"{INK}\""),
            &label,
        );
        x += width;
    }
    canvas.y += BAR_HEIGHT + 8.0;
    for (p, width) in disk.partitions.iter().zip(&widths) {
        canvas.y += 20.0;
        canvas.rect(
            PAD,
            canvas.y - 11.0,
            12.0,
            12.0,
            &format!(
                " fill=\"{}\" stroke=\"{MUTED}\" stroke-width=\"0.5\"",
                partition_fill(&p.type_code, &p.content)
            ),
        );
        let mut text = format!(
            "{} {} · {} {} · {} · sectors {}–{} · {}",
            p.number,
            p.key,
            p.type_code,
            p.type_name,
            p.size_bytes.map_or_else(|| p.size_text.clone(), human),
            p.start_sector.map_or("?".to_owned(), |s| s.to_string()),
            p.end_sector.map_or("?".to_owned(), |s| s.to_string()),
            p.content
        );
        let at_scale = scale.zip(p.size_bytes).map(|(s, b)| s * b as f64);
        if at_scale.is_some_and(|w| w + 0.05 < *width) {
            text.push_str(" · drawn wider than scale");
        }
        canvas.text(
            PAD + 20.0,
            canvas.y,
            12.0,
            &format!(" fill=\"{INK}\""),
            &text,
        );
    }
    if let Some(free) = disk.unallocated_bytes {
        canvas.y += 20.0;
        canvas.text(
            PAD + 20.0,
            canvas.y,
            12.0,
            &format!(" fill=\"{MUTED}\""),
            &format!(
                "Not drawn: {} unallocated (the GPT at both ends, alignment gaps).",
                human(free)
            ),
        );
    }
}

/// The filesystem-wide options in effect, from the mount that decides them.
fn filesystem_options(fs: &BtrfsTable) -> Vec<String> {
    let decider = fs.options_decided_by.as_deref();
    fs.subvolumes
        .iter()
        .find(|s| s.mountpoint.as_deref() == decider && decider.is_some())
        .map(|s| {
            s.options_in_effect
                .iter()
                .filter(|o| btrfs_scope(o) == Scope::FilesystemWide)
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

fn home_of(tables: &Tables, device: &str) -> String {
    for disk in &tables.disks {
        if let Some(p) = disk.partitions.iter().find(|p| p.device == device) {
            return format!("partition {} ({}) of disk {}", p.number, p.key, disk.key);
        }
        if disk.partitions.is_empty() && disk.device == device {
            return format!("the whole disk {}", disk.key);
        }
    }
    device.to_owned()
}

fn subvolume_tree(canvas: &mut Canvas, tables: &Tables, fs: &BtrfsTable) {
    tree_heading(canvas, tables, fs);
    let top = fs.subvolumes.iter().find(|s| s.name == "(top level)");
    let children: Vec<&SubvolumeRow> = fs
        .subvolumes
        .iter()
        .filter(|s| s.name != "(top level)")
        .collect();
    canvas.y += 14.0;
    let top_y = canvas.y;
    let top_text = format!(
        "top level (subvolid 5) → {}",
        top.and_then(|t| t.mountpoint.as_deref())
            .unwrap_or("not mounted")
    );
    let top_width = text_width(&top_text, 13.0) + 24.0;
    canvas.rect(
        PAD,
        top_y,
        top_width,
        BOX_HEIGHT,
        " rx=\"4\" fill=\"#eaeef2\" stroke=\"#8c959f\"",
    );
    canvas.text(
        PAD + 12.0,
        top_y + 16.5,
        13.0,
        &format!(" font-weight=\"bold\" fill=\"{INK}\""),
        &top_text,
    );

    let box_x = PAD + 44.0;
    let columns = Columns {
        trunk_x: PAD + 18.0,
        box_x,
        box_width: WIDTH - PAD - box_x,
        name_width: children
            .iter()
            .map(|s| text_width(&s.name, 13.0))
            .fold(0.0, f64::max)
            + 20.0,
        mount_width: children
            .iter()
            .map(|s| text_width(s.mountpoint.as_deref().unwrap_or("(not mounted)"), 12.0) + 18.0)
            .fold(0.0, f64::max)
            + 16.0,
    };
    let mut last_mid = top_y + BOX_HEIGHT;
    canvas.y = top_y + BOX_HEIGHT;
    for s in &children {
        last_mid = subvolume_box(canvas, s, &columns);
    }
    if !children.is_empty() {
        canvas.line(
            columns.trunk_x,
            top_y + BOX_HEIGHT,
            columns.trunk_x,
            last_mid,
            "",
        );
    }
}

/// Where the tree's parts go across: the trunk, the boxes, and in a box
/// the name and mountpoint columns.
#[derive(Debug, Clone, Copy)]
struct Columns {
    trunk_x: f64,
    box_x: f64,
    box_width: f64,
    name_width: f64,
    mount_width: f64,
}

/// The filesystem's title and its filesystem-wide options.
fn tree_heading(canvas: &mut Canvas, tables: &Tables, fs: &BtrfsTable) {
    canvas.y += 40.0;
    canvas.text(
        PAD,
        canvas.y,
        14.0,
        &format!(" font-weight=\"bold\" fill=\"{INK}\""),
        &format!("Btrfs on {}", home_of(tables, &fs.device)),
    );
    let options = filesystem_options(fs);
    canvas.y += 18.0;
    canvas.text(
        PAD,
        canvas.y,
        12.0,
        &format!(" fill=\"{MUTED}\""),
        &if options.is_empty() {
            "No filesystem-wide options.".to_owned()
        } else {
            format!(
                "Filesystem-wide, for every subvolume (set by the first mount, {}): {}",
                fs.options_decided_by.as_deref().unwrap_or("?"),
                options.join(", ")
            )
        },
    );
}

/// One subvolume's box on the trunk (and what accumulates inside it);
/// returns the height of its branch.
fn subvolume_box(canvas: &mut Canvas, s: &SubvolumeRow, columns: &Columns) -> f64 {
    let Columns {
        box_x,
        box_width,
        name_width,
        mount_width,
        ..
    } = *columns;
    canvas.y += ROW - BOX_HEIGHT + 2.0;
    let y = canvas.y;
    let mid = y + BOX_HEIGHT / 2.0;
    canvas.line(columns.trunk_x, mid, box_x, mid, "");
    canvas.rect(
        box_x,
        y,
        box_width,
        BOX_HEIGHT,
        &format!(
            " rx=\"4\" fill=\"{}\" stroke=\"#8c959f\"",
            lifecycle_fill(s.lifecycle)
        ),
    );
    let base = y + 16.5;
    canvas.text(
        box_x + 10.0,
        base,
        13.0,
        &format!(" font-weight=\"bold\" fill=\"{INK}\""),
        &s.name,
    );
    let mount_x = box_x + 10.0 + name_width;
    canvas.text(
        mount_x,
        base,
        12.0,
        &format!(" fill=\"{INK}\""),
        &format!("→ {}", s.mountpoint.as_deref().unwrap_or("(not mounted)")),
    );
    let mut notes = Vec::new();
    if s.nocow {
        notes.push("No_COW (+C): not compressed".to_owned());
    } else if let Some(compression) = &s.compression {
        notes.push(format!("compressed {compression}"));
    }
    if s.needed_for_boot {
        notes.push("mounted in the initrd".to_owned());
    }
    canvas.text(
        mount_x + mount_width,
        base,
        12.0,
        &format!(" fill=\"{MUTED}\""),
        &notes.join(" · "),
    );
    canvas.text(
        box_x + box_width - 10.0,
        base,
        12.0,
        &format!(" text-anchor=\"end\" font-style=\"italic\" fill=\"{INK}\""),
        s.lifecycle.describe(),
    );
    canvas.y = y + BOX_HEIGHT;
    if s.lifecycle == Lifecycle::Retained {
        // What accumulates inside: one old root per boot.
        canvas.y += 6.0;
        let inner_y = canvas.y;
        let inner_x = box_x + 36.0;
        canvas.line(
            box_x + 18.0,
            y + BOX_HEIGHT,
            box_x + 18.0,
            inner_y + 11.0,
            "",
        );
        canvas.line(box_x + 18.0, inner_y + 11.0, inner_x, inner_y + 11.0, "");
        canvas.rect(
            inner_x,
            inner_y,
            box_width - 36.0,
            22.0,
            " rx=\"4\" fill=\"#f6f8fa\" stroke=\"#8c959f\" stroke-dasharray=\"4 3\"",
        );
        canvas.text(
            inner_x + 10.0,
            inner_y + 15.5,
            12.0,
            &format!(" fill=\"{MUTED}\""),
            "one subvolume per boot: the root of the previous boot, named by its time",
        );
        canvas.y = inner_y + 22.0;
    }
    mid
}

fn legend(canvas: &mut Canvas) {
    canvas.y += 36.0;
    let mut x = PAD;
    for lifecycle in [
        Lifecycle::WipedAtBoot,
        Lifecycle::Persistent,
        Lifecycle::Retained,
    ] {
        canvas.rect(
            x,
            canvas.y - 11.0,
            14.0,
            14.0,
            &format!(
                " rx=\"3\" fill=\"{}\" stroke=\"#8c959f\"",
                lifecycle_fill(lifecycle)
            ),
        );
        let label = lifecycle.describe();
        canvas.text(x + 20.0, canvas.y, 12.0, &format!(" fill=\"{INK}\""), label);
        x += 20.0 + text_width(label, 12.0) + 28.0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiny_partitions_get_the_minimum_width() {
        // The CPX52: 1 MiB, 1 GiB, 32 GiB and 414 GiB on 912 px.
        let sizes = [1 << 20, 1 << 30, 32 << 30, 444_563_718_144];
        let widths = segment_widths(&sizes, 912.0, MIN_SEGMENT);
        assert_eq!(widths[0], MIN_SEGMENT);
        assert_eq!(widths[1], MIN_SEGMENT);
        assert!(widths[2] > MIN_SEGMENT && widths[3] > widths[2]);
        assert!((widths.iter().sum::<f64>() - 912.0).abs() < 1e-6);
        // Proportional between the ones drawn at scale.
        let ratio = widths[3] / widths[2];
        assert!((ratio - 444_563_718_144.0 / (32u64 << 30) as f64).abs() < 1e-9);
    }

    #[test]
    fn degenerate_bars_split_evenly() {
        assert_eq!(segment_widths(&[], 100.0, 10.0), Vec::<f64>::new());
        assert_eq!(segment_widths(&[0, 0], 100.0, 10.0), vec![50.0, 50.0]);
        assert_eq!(segment_widths(&[1, 2, 3], 20.0, 10.0), vec![20.0 / 3.0; 3]);
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            escape("a<b & \"c\" 'd'>"),
            "a&lt;b &amp; &quot;c&quot; &apos;d&apos;&gt;"
        );
        assert_eq!(escape("x\u{1}y"), "x y");
    }

    #[test]
    fn numbers_are_stable() {
        assert_eq!(n(12.0), "12");
        assert_eq!(n(12.04), "12");
        assert_eq!(n(12.06), "12.1");
        assert_eq!(n(-0.0), "0");
    }
}
