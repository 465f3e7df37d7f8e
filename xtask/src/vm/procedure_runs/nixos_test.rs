//! nix/tests/procedures.json, the procedures the NixOS VM test runs.

use crate::deploy_checklist::procedures::Expect;
use crate::deploy_checklist::Numbered;

use super::NIXOS_TEST_PROCEDURES;

/// Where the NixOS VM test reads its procedures from (relative to the repository).
pub const NIXOS_TEST_FILE: &str = "nix/tests/procedures.json";

/// nix/tests/procedures.json: the procedures the NixOS VM test runs
/// (`NIXOS_TEST_PROCEDURES`, those that need systemd), as the checklist
/// prints them, each pattern also as a regular expression for Python's
/// `re.fullmatch`. A unit test keeps the file equal to this.
pub fn nixos_test_json(all: &[Numbered], admin: &str) -> String {
    use crate::deploy_checklist::procedures::pattern_regex;
    let procedures: Vec<serde_json::Value> = all
        .iter()
        .filter(|n| NIXOS_TEST_PROCEDURES.contains(&n.procedure.id.as_str()))
        .map(|n| {
            let commands: Vec<serde_json::Value> = n
                .procedure
                .commands
                .iter()
                .map(|c| {
                    let expect: Vec<serde_json::Value> = c
                        .expect
                        .iter()
                        .map(|e| {
                            let mut value = serde_json::to_value(e).unwrap_or_default();
                            let pattern = match e {
                                Expect::Line { pattern }
                                | Expect::NoLine { pattern }
                                | Expect::AtMost { pattern, .. } => Some(pattern),
                                _ => None,
                            };
                            if let (Some(pattern), Some(object)) = (pattern, value.as_object_mut())
                            {
                                object.insert("regex".to_owned(), pattern_regex(pattern).into());
                            }
                            value
                        })
                        .collect();
                    serde_json::json!({
                        "where": c.at,
                        "line": c.line,
                        "reboots": c.reboots,
                        "expect": expect,
                    })
                })
                .collect();
            serde_json::json!({
                "id": n.procedure.id,
                "step": n.step,
                "title": n.procedure.title,
                "commands": commands,
            })
        })
        .collect();
    let document = serde_json::json!({
        "comment": "Generated from xtask/src/deploy_checklist/procedures/ (the deploy checklist's one source) for nix/tests/vm-test.nix; `UPDATE_GOLDEN=1 cargo test -p xtask --lib nixos_test_file` rewrites it.",
        "admin": admin,
        "procedures": procedures,
    });
    let mut text = serde_json::to_string_pretty(&document).unwrap_or_default();
    text.push('\n');
    text
}
