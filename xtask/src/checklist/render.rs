//! The checklist as Markdown, and the gates alone as text for stderr.

use std::fmt::Write as _;

use super::gates::{short, Status};
use super::plan::{figure, seconds, Step};
use super::Checklist;

fn revision_of(commit: Option<&str>) -> String {
    commit.map_or_else(|| "-".to_owned(), |c| format!("`{}`", short(c)))
}

/// The gates as aligned text (for stderr when the checklist is withheld).
pub fn gates_text(checklist: &Checklist) -> String {
    let mut out = format!(
        "deploy-checklist for {} (HEAD {}{}):\n",
        checklist.host,
        checklist.head.commit.as_deref().map_or("unknown", short),
        if checklist.head.dirty {
            ", uncommitted changes"
        } else {
            ""
        }
    );
    let width = checklist
        .gates
        .iter()
        .map(|g| g.id.len())
        .max()
        .unwrap_or(0);
    for gate in &checklist.gates {
        let _ = writeln!(
            out,
            "  {:<5}  {:<width$}  {}",
            gate.status.label(),
            gate.id,
            gate.detail
        );
    }
    out
}

fn banner(checklist: &Checklist) -> String {
    let failing: Vec<String> = checklist
        .gates
        .iter()
        .filter(|g| g.status != Status::Pass)
        .map(|g| format!("{} is {}", g.id, g.status.label()))
        .collect();
    match checklist.status {
        Status::Pass => "> **READY**: every gate passes at this revision.\n".to_owned(),
        status => format!(
            "> **NOT READY ({})**: {}. Do not deploy from this checklist; it was printed with `--allow-stale`.\n",
            status.label(),
            failing.join(", ")
        ),
    }
}

fn steps(out: &mut String, number: usize, steps: &[Step]) {
    for (index, step) in steps.iter().enumerate() {
        let _ = writeln!(out, "### {number}.{} {}\n", index + 1, step.title);
        for note in &step.notes {
            let _ = writeln!(out, "{note}\n");
        }
        if !step.commands.is_empty() {
            out.push_str("- [ ] Run:\n\n  ```sh\n");
            for command in &step.commands {
                let _ = writeln!(out, "  {} {}", command.at.prompt(), command.line);
            }
            out.push_str("  ```\n\n");
        }
        if !step.expected.is_empty() {
            out.push_str("  Expected:\n\n  ```text\n");
            for line in &step.expected {
                let _ = writeln!(out, "  {line}");
            }
            out.push_str("  ```\n\n");
        }
        for note in &step.afterwards {
            let _ = writeln!(out, "{note}\n");
        }
    }
}

pub fn markdown(checklist: &Checklist) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Deployment checklist: {} (`nixosConfigurations.{}`)\n",
        checklist.host, checklist.flake_attribute
    );
    let _ = writeln!(
        out,
        "Made by `cargo xtask deploy-checklist` at HEAD {}{}.\n",
        revision_of(checklist.head.commit.as_deref()),
        if checklist.head.dirty {
            " with uncommitted changes"
        } else {
            ""
        }
    );
    out.push_str(&banner(checklist));
    out.push_str("\n## 1. Pre-flight gates\n\n");
    out.push_str("| gate | status | revision | detail |\n|---|---|---|---|\n");
    for gate in &checklist.gates {
        let _ = writeln!(
            out,
            "| {} | **{}** | {} | {} |",
            gate.title,
            gate.status.label(),
            revision_of(gate.revision.as_deref()),
            gate.detail.replace('|', "\\|")
        );
    }
    out.push('\n');
    if let Some(measured) = &checklist.measured {
        let _ = writeln!(
            out,
            "### What vm-test measured\n\nAt revision {}, finished {}, {} backend under {}, kernel {}, a {}-byte virtual disk, {} in all{}.\n",
            revision_of(measured.revision.as_deref()),
            measured.finished_at,
            measured.backend,
            measured.accelerator,
            measured.kernel,
            measured.disk_bytes,
            seconds(measured.wall_ms),
            if measured.passed { "" } else { "; **the run failed**" }
        );
        if !measured.boots.is_empty() {
            out.push_str(
                "| boot | kind | wall time | passed | longest steps |\n|---:|---|---:|---|---|\n",
            );
            for boot in &measured.boots {
                // The whole step list is in vm-test.json; the longest tell where time went.
                let mut longest: Vec<_> = boot.steps.iter().collect();
                longest.sort_by_key(|s| std::cmp::Reverse(s.ms));
                let steps: Vec<String> = longest
                    .iter()
                    .take(5)
                    .map(|s| format!("{} {}", s.name, seconds(s.ms)))
                    .collect();
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {} |",
                    boot.number,
                    boot.kind,
                    seconds(boot.wall_ms),
                    if boot.passed { "yes" } else { "**no**" },
                    steps.join(", ")
                );
            }
            out.push('\n');
        }
        if !measured.figures.is_empty() {
            out.push_str("| figure | value |\n|---|---:|\n");
            for (name, value) in &measured.figures {
                let _ = writeln!(out, "| `{name}` | {} |", figure(*value));
            }
            out.push('\n');
        }
    }

    out.push_str("## 2. Deployment\n\n");
    out.push_str(
        "`local$` runs on your workstation, in this repository at the revision above; `server#` runs on the \
         server as root. Fill in:\n\n",
    );
    for (name, meaning) in &checklist.placeholders {
        let _ = writeln!(out, "- `{name}`: {meaning}");
    }
    out.push('\n');
    steps(&mut out, 2, &checklist.deployment);

    out.push_str("## 3. Post-deploy verification\n\n");
    out.push_str(
        "Each expected output is computed from the layout; `<n>` and `<N>` stand for numbers that differ \
         from machine to machine.\n\n",
    );
    steps(&mut out, 3, &checklist.verification);

    out.push_str("## 4. Rollback plan\n\n");
    out.push_str(
        "From the mildest to the most drastic. docs/troubleshooting.md covers failures of the boot-time rollback itself.\n\n",
    );
    steps(&mut out, 4, &checklist.rollback);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checklist::build;
    use crate::checklist::gates::testing::passing;
    use crate::checklist::gates::Found;
    use crate::docs::testing::host_subject;

    #[test]
    fn a_ready_checklist() {
        let checklist = build(&host_subject(), &passing());
        let md = markdown(&checklist);
        assert!(md.starts_with(
            "# Deployment checklist: hetzner-cloud (`nixosConfigurations.hetzner-vps`)\n"
        ));
        assert!(md.contains("> **READY**"));
        assert!(md.contains(
            "| `cargo xtask check` is clean | **PASS** | `0123456789ab` | no findings |"
        ));
        assert!(md.contains("| `compression.@nix.percent` | 47 |"));
        assert!(md.contains("| 2 | rotate | 12.0 s | yes |  |"));
        assert!(md.contains("## 2. Deployment"));
        assert!(md.contains("  local$ nix run github:nix-community/nixos-anywhere -- --flake .#hetzner-vps --target-host root@<IP>\n"));
        assert!(md.contains("## 3. Post-deploy verification"));
        assert!(md.contains("  server# swapon --show=NAME,TYPE,SIZE --bytes\n"));
        assert!(md.contains("## 4. Rollback plan"));
        assert!(md.contains("  server# nixos-rebuild switch --rollback\n"));
    }

    #[test]
    fn a_stale_checklist_says_so_everywhere() {
        let mut observed = passing();
        observed.vm_test = Found::Missing;
        let checklist = build(&host_subject(), &observed);
        let md = markdown(&checklist);
        assert!(
            md.contains("> **NOT READY (STALE)**: vm-test is STALE."),
            "{md}"
        );
        assert!(!md.contains("What vm-test measured"));
        let text = gates_text(&checklist);
        assert!(
            text.contains(
                "  STALE  vm-test  no target/xtask/vm-test.json: run `cargo xtask vm-test`"
            ),
            "{text}"
        );
        assert!(text.contains("  PASS   check    no findings"), "{text}");
    }
}
