//! The layout crate is pure: it starts no processes, opens no network
//! connections and reads no files (the xtask runs processes through its
//! runner and hands this crate what it read). This reads every source file
//! of the crate and fails on any use of std::process, std::net or std::fs,
//! however it is imported.

use std::fs;
use std::path::{Path, PathBuf};

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display())) {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Whether `text` names `module` of std: `std::process`, `use std::{…, process}`,
/// `::std::process`.
fn uses(text: &str, module: &str) -> bool {
    let code: String = text
        .lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let compact: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    compact.contains(&format!("std::{module}"))
        || (compact.contains("std::{")
            && compact.split("std::{").skip(1).any(|rest| {
                // The whole import list, nested braces and all, up to the `;`.
                let list = rest.split(';').next().unwrap_or(rest);
                list.split([',', '{', '}'])
                    .any(|item| item == module || item.starts_with(&format!("{module}::")))
            }))
}

#[test]
fn no_source_file_uses_std_process_net_or_fs() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    assert!(
        files.len() > 10,
        "found only {files:?} under {}",
        src.display()
    );
    let mut offenders = Vec::new();
    for file in &files {
        let text =
            fs::read_to_string(file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
        for module in ["process", "net", "fs"] {
            if uses(&text, module) {
                offenders.push(format!("{} uses std::{module}", file.display()));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "the layout crate must stay pure (run processes and read files in the xtask, and pass the crate what they give):\n{}",
        offenders.join("\n")
    );
}

#[test]
fn the_check_sees_each_form_of_use() {
    for text in [
        "use std::process::Command;",
        "let c = std::process::Command::new(\"ls\");",
        "use std::{fs, process};",
        "use std::{fs, process::Command};",
        "use ::std::process;",
        "use std :: process;",
        "use std::{collections::{BTreeMap, BTreeSet}, process};",
    ] {
        assert!(uses(text, "process"), "{text}");
    }
    for text in [
        "// std::process is not used here",
        "use std::{fs, processes};",
        "use std::collections::BTreeMap;",
    ] {
        assert!(!uses(text, "process"), "{text}");
    }
}
