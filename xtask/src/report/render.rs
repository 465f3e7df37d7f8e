//! The text form of a check report: a header per host, its tables, its
//! findings, and a summary line.

use std::fmt::Write as _;

use super::bytes_cell;
use super::{CheckReport, FlakeStatus, HostReport, Tables};
use crate::finding_text::render_finding;
use layout::size::{human, human_decimal};

/// The human-readable report.
pub fn render(report: &CheckReport) -> String {
    let mut out = String::new();
    for host in &report.hosts {
        render_host(&mut out, host);
    }
    let _ = writeln!(
        out,
        "{}: {} error(s), {} warning(s) in {} host(s), {} ms",
        if report.errors > 0 { "FAILED" } else { "ok" },
        report.errors,
        report.warnings,
        report.hosts.len(),
        report.duration_ms
    );
    out
}

fn render_host(out: &mut String, host: &HostReport) {
    let mode = match &host.flake {
        FlakeStatus::NotRequested => "standalone mode".to_owned(),
        FlakeStatus::Ran { attribute, system } => format!(
            "standalone and flake mode (nixosConfigurations.{attribute}){}",
            match system {
                Some(super::SystemEvaluation::Evaluated { drv_path }) =>
                    format!("; the system evaluates: {drv_path}"),
                Some(super::SystemEvaluation::Failed { .. }) =>
                    "; the system does NOT evaluate (NIX005)".to_owned(),
                _ => String::new(),
            }
        ),
        FlakeStatus::NotRun { reason } => format!("standalone mode; flake mode not run: {reason}"),
    };
    let _ = writeln!(out, "== {} ({}), {mode}", host.host, host.source);
    for note in &host.notes {
        let _ = writeln!(out, "note: {note}");
    }
    if let Some(tables) = &host.tables {
        render_tables(out, tables);
    }
    if host.findings.is_empty() {
        let _ = writeln!(out, "\nfindings: none\n");
    } else {
        let _ = writeln!(out, "\nfindings:");
        for finding in &host.findings {
            render_finding(out, finding);
        }
        let _ = writeln!(out);
    }
}

/// The widest a table cell is printed; the JSON report keeps the whole value.
const MAX_CELL_CHARS: usize = 120;

/// `cell`, cut to `MAX_CELL_CHARS` characters with the rest counted.
fn fit_cell(cell: &str) -> std::borrow::Cow<'_, str> {
    if cell.chars().any(char::is_control) {
        // A newline in a mountpoint must not break the table.
        let escaped: String = cell.chars().flat_map(char::escape_debug).collect();
        return std::borrow::Cow::Owned(fit_cell(&escaped).into_owned());
    }
    let count = cell.chars().count();
    if count <= MAX_CELL_CHARS {
        return std::borrow::Cow::Borrowed(cell);
    }
    let kept: String = cell.chars().take(MAX_CELL_CHARS - 20).collect();
    std::borrow::Cow::Owned(format!(
        "{kept}… (+{} chars)",
        count - (MAX_CELL_CHARS - 20)
    ))
}

/// Left-aligned columns two spaces apart, indented by two; a long cell is
/// cut, so that one long value cannot widen every row of a table with
/// thousands of rows.
pub fn table(rows: &[Vec<String>]) -> String {
    if rows.is_empty() {
        return String::new();
    }
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::NOTHING);
    for row in rows {
        table.add_row(row.iter().map(|cell| fit_cell(cell).into_owned()));
    }
    for (index, column) in table.column_iter_mut().enumerate() {
        column.set_padding((if index == 0 { 2 } else { 0 }, 2));
    }
    let mut out = String::new();
    for line in table.lines() {
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn render_tables(out: &mut String, tables: &Tables) {
    for disk in &tables.disks {
        let size = disk.size_bytes.map_or_else(
            || "size unknown".to_owned(),
            |b| format!("{} = {}", human_decimal(b), human(b)),
        );
        let _ = writeln!(
            out,
            "\ndisk {} {} ({size}), GPT:",
            fit_cell(&disk.key),
            fit_cell(&disk.device)
        );
        let mut rows = vec![[
            "#",
            "partition",
            "type",
            "start sector",
            "end sector",
            "size",
            "content",
        ]
        .map(String::from)
        .to_vec()];
        for p in &disk.partitions {
            rows.push(vec![
                p.number.to_string(),
                p.key.clone(),
                format!("{} {}", p.type_code, p.type_name),
                p.start_sector.map_or("?".into(), |s| s.to_string()),
                p.end_sector.map_or("?".into(), |s| s.to_string()),
                bytes_cell(p.size_bytes),
                p.content.clone(),
            ]);
        }
        out.push_str(&table(&rows));
        if let Some(free) = disk.unallocated_bytes {
            let _ = writeln!(
                out,
                "  unallocated (GPT, alignment): {}",
                bytes_cell(Some(free))
            );
        }
    }
    for fs in &tables.filesystems {
        let _ = writeln!(
            out,
            "\nbtrfs on {} (filesystem-wide options decided by the mount at {}):",
            fit_cell(&fs.device),
            fit_cell(
                fs.options_decided_by
                    .as_deref()
                    .unwrap_or("(nothing mounted)")
            )
        );
        let mut rows = vec![[
            "subvolume",
            "mountpoint",
            "options in effect",
            "boot",
            "at boot",
        ]
        .map(String::from)
        .to_vec()];
        for s in &fs.subvolumes {
            let mut options = s.options_in_effect.join(",");
            if s.nocow {
                options.push_str(" +C (No_COW)");
            }
            rows.push(vec![
                s.name.clone(),
                s.mountpoint
                    .clone()
                    .unwrap_or_else(|| "(not mounted)".into()),
                if options.is_empty() {
                    "-".into()
                } else {
                    options
                },
                if s.needed_for_boot {
                    "initrd".into()
                } else {
                    "".into()
                },
                s.lifecycle.describe().to_owned(),
            ]);
        }
        out.push_str(&table(&rows));
    }
    if !tables.other_mounts.is_empty() || !tables.swaps.is_empty() {
        let _ = writeln!(out, "\nother mounts and swap:");
        let mut rows = Vec::new();
        for m in &tables.other_mounts {
            rows.push(vec![
                m.mountpoint.clone(),
                m.fs_type.clone(),
                m.options_in_effect.join(","),
                m.device.clone(),
            ]);
        }
        for s in &tables.swaps {
            rows.push(vec![
                "(swap)".into(),
                bytes_cell(s.size_bytes),
                if s.random_encryption {
                    "random encryption".into()
                } else {
                    "UNENCRYPTED".into()
                },
                s.device.clone(),
            ]);
        }
        out.push_str(&table(&rows));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align() {
        let rows = vec![
            vec!["a".to_owned(), "bb".to_owned(), "c".to_owned()],
            vec!["aaa".to_owned(), "b".to_owned(), "".to_owned()],
        ];
        assert_eq!(table(&rows), "  a    bb  c\n  aaa  b\n");
    }

    #[test]
    fn long_cells_are_cut() {
        let long = "x".repeat(1 << 20);
        let rows = vec![
            vec![long, "end".to_owned()],
            vec!["a".to_owned(), "b".to_owned()],
        ];
        let printed = table(&rows);
        assert!(printed.len() < 400, "{} bytes", printed.len());
        assert!(
            printed.contains(&format!("(+{} chars)", (1 << 20) - 100)),
            "{printed}"
        );
        assert!(printed.contains("end"), "{printed}");
        let rows = vec![vec!["/srv/a\nb".to_owned(), "x".to_owned()]];
        assert_eq!(table(&rows), "  /srv/a\\nb  x\n");
    }
}
