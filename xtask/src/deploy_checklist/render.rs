//! The checklist as Markdown, and the gates alone as text for stderr.

use std::fmt::Write as _;

use super::facts::Where;
use super::gates::{short, Status};
use super::plan::{figure_text, seconds};
use super::procedures::{Expect, Procedure};
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
            "  {:<7}  {:<width$}  {}",
            gate.status.label(),
            gate.id,
            gate.detail.replace('\n', " ")
        );
        if let Some(command) = &gate.command {
            let _ = writeln!(out, "  {:<7}  {:<width$}  to fix: {command}", "", "");
        }
    }
    out.push_str("not a gate, never run here (they need nixpkgs and KVM): the NixOS VM tests\n");
    let width = checklist
        .nixos_vm_tests
        .iter()
        .map(|t| t.name.len())
        .max()
        .unwrap_or(0);
    for test in &checklist.nixos_vm_tests {
        let _ = writeln!(
            out,
            "  {:<7}  {:<width$}  run: {}",
            test.status.label(),
            test.name,
            test.command
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
    if checklist.ready {
        "> **READY**: every gate passes at this revision.\n".to_owned()
    } else {
        format!(
            "> **NOT READY ({})**: {}. Do not deploy from this checklist; it was printed with `--allow-stale`.\n",
            checklist.status.label(),
            failing.join(", ")
        )
    }
}

/// One expectation as the reader sees it, when the command shows nothing else.
fn describe(expect: &Expect) -> String {
    match expect {
        Expect::Exit { status } => format!("exit status {status}"),
        Expect::Empty => "(nothing)".to_owned(),
        Expect::Line { pattern } => pattern.clone(),
        Expect::NoLine { pattern } => format!("no line like `{pattern}`"),
        Expect::Fields { first, include } => format!("{first}  {}", include.join(",")),
        Expect::AtMost {
            pattern,
            field,
            max,
        } => format!(
            "`{pattern}` with field {field} at most {}",
            figure_text(*max)
        ),
    }
}

/// What the lab VM did with a procedure, in one line.
fn tested_line(tested: &super::Tested) -> String {
    use crate::results::ProcedureStatus;
    match tested.status {
        ProcedureStatus::NotRun => format!(
            "*vm-test: NOT RUN in the lab VM ({}).*",
            tested.why_not.as_deref().unwrap_or("not run")
        ),
        status => format!(
            "*vm-test --thorough ({}): {}, {} of its commands ran as expected in the lab VM{}.*",
            tested.file,
            status.label(),
            tested.passed,
            if tested.not_run > 0 {
                format!(", {} NOT RUN there", tested.not_run)
            } else {
                String::new()
            }
        ),
    }
}

fn steps(out: &mut String, number: usize, steps: &[Procedure], checklist: &Checklist) {
    for (index, step) in steps.iter().enumerate() {
        let _ = writeln!(
            out,
            "### {number}.{} {} (`{}`)\n",
            index + 1,
            step.title,
            step.id
        );
        if let Some(tested) = checklist.tested.get(&step.id) {
            let _ = writeln!(out, "{}\n", tested_line(tested));
        }
        for note in &step.notes {
            let _ = writeln!(out, "{note}\n");
        }
        if !step.parameters.is_empty() {
            for parameter in &step.parameters {
                let _ = writeln!(out, "- `{}`: {}", parameter.name, parameter.meaning);
            }
            out.push('\n');
        }
        // Commands in runs; a command with expected output closes its run.
        let mut open = false;
        for command in &step.commands {
            if !open {
                out.push_str("- [ ] Run:\n\n  ```sh\n");
                open = true;
            }
            // Says where a login goes, for the reader (and the consistency test).
            let comment = match command.reaches {
                Some(Where::Rescue) if !command.line.contains("nixos-anywhere") => {
                    "   # the rescue system"
                }
                _ if command.reboots => "   # then log in again",
                _ => "",
            };
            let _ = writeln!(out, "  {} {}{comment}", command.at.prompt(), command.line);
            let expected: Vec<String> = if command.shows.is_empty() {
                command
                    .expect
                    .iter()
                    .filter(|e| !matches!(e, Expect::Exit { status: 0 }))
                    .map(describe)
                    .collect()
            } else {
                command.shows.clone()
            };
            if !expected.is_empty() {
                out.push_str("  ```\n\n  Expected:\n\n  ```text\n");
                for line in &expected {
                    let _ = writeln!(out, "  {line}");
                }
                out.push_str("  ```\n\n");
                open = false;
            }
        }
        if open {
            out.push_str("  ```\n\n");
        }
        for note in &step.afterwards {
            let _ = writeln!(out, "{note}\n");
        }
    }
}

fn measured(out: &mut String, checklist: &Checklist) {
    let Some(measured) = &checklist.measured else {
        return;
    };
    let _ = writeln!(
        out,
        "### What vm-test measured\n\n{} (`{}`): revision {}, finished {}, {} backend under {}, kernel {}, a {}-byte virtual disk, {} boot(s) asked for, {} in all{}. Every figure is in the JSON (`--json`).\n",
        if measured.file.contains(".pass.") { "The proof" } else { "The last run" },
        measured.file,
        revision_of(measured.revision.as_deref()),
        measured.finished_at,
        measured.backend,
        measured.accelerator,
        measured.kernel,
        measured.disk_bytes,
        measured.requested.boots,
        seconds(measured.wall_ms),
        if measured.passed { "" } else { "; **the run failed**" }
    );
    if !measured.boots.is_empty() {
        out.push_str(
            "| boot | kind | time | checks passed | rotation |\n|---:|---|---:|---:|---:|\n",
        );
        for boot in &measured.boots {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {}/{}{} | {} |",
                boot.number,
                boot.kind,
                seconds(boot.wall_ms),
                boot.checks_passed,
                boot.checks,
                if boot.passed { "" } else { " **failed**" },
                boot.rotation_ms
                    .map_or_else(|| "-".to_owned(), |ms| format!("{} ms", figure_text(ms)))
            );
        }
        out.push('\n');
    }
    if !measured.thresholds.is_empty() {
        out.push_str("| roadmap | measured | |\n|---|---|---|\n");
        for t in &measured.thresholds {
            let _ = writeln!(
                out,
                "| {} | {} | {} |",
                t.roadmap,
                t.measured,
                if t.met { "met" } else { "**not met**" }
            );
        }
        out.push('\n');
    }
}

pub fn markdown(checklist: &Checklist) -> String {
    let mut out = String::new();
    let facts = &checklist.facts;
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
        let mut detail = gate.detail.clone();
        if let Some(command) = &gate.command {
            detail.push_str(&format!(". To fix: {command}"));
        }
        let _ = writeln!(
            out,
            "| {} | **{}** | {} | {} |",
            gate.title,
            gate.status.label(),
            revision_of(gate.revision.as_deref()),
            detail.replace('|', "\\|").replace('\n', " ")
        );
    }
    out.push('\n');
    out.push_str("Not a gate, and never run here: the NixOS VM tests of the flake (nix/checks.nix) need nixpkgs and KVM. Run them where both are (`nix flake check` runs every check):\n\n");
    out.push_str("| NixOS VM test | what it proves | status | command |\n|---|---|---|---|\n");
    for test in &checklist.nixos_vm_tests {
        let _ = writeln!(
            out,
            "| {} | {} | **{}** | `{}` |",
            test.name,
            test.proves.replace('|', "\\|"),
            test.status.label(),
            test.command
        );
    }
    out.push('\n');
    measured(&mut out, checklist);

    out.push_str("## 2. Deployment\n\n");
    let _ = writeln!(
        out,
        "`local$` runs on your workstation, in this repository at the revision above; `rescue#` in the Hetzner rescue system, as root (`ssh root@<IP>` while rescue mode is on); `server$` on the installed server as {admin} (`{login}`), where root cannot log in (PermitRootLogin {permit:?}): every server command that needs root starts with `sudo`. Fill in:\n",
        admin = facts.admin_user,
        login = facts.ssh_server(),
        permit = facts.permit_root_login,
    );
    for (name, meaning) in &checklist.placeholders {
        let _ = writeln!(out, "- `{name}`: {meaning}");
    }
    out.push('\n');
    steps(&mut out, 2, &checklist.deployment, checklist);

    out.push_str("## 3. Post-deploy verification\n\n");
    out.push_str(
        "Each expected output is computed from the layout; `<n>` stands for a number that differs \
         from machine to machine, `<old-root>` for an old root's name, `<*>` for any text. \
         The procedure name after each title is its stable id (docs/deploy-checklist.md).\n\n",
    );
    let post = &checklist.post_deploy;
    let _ = writeln!(
        out,
        "`{}` runs the read-only commands of these steps over ssh (with the partition table and the old roots against retention) and records the result in {}; run it after the install, after every deploy, and from a timer on your workstation.\n\n**Post-deploy verify: {}**: {}.\n",
        post.command, post.file, post.status, post.detail
    );
    steps(&mut out, 3, &checklist.verification, checklist);

    out.push_str("## 4. Rollback plan\n\n");
    out.push_str(
        "From the mildest to the most drastic. docs/troubleshooting.md covers failures of the boot-time rollback itself.\n\n",
    );
    steps(&mut out, 4, &checklist.rollback, checklist);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deploy_checklist::build;
    use crate::deploy_checklist::facts::testing::host_facts;
    use crate::deploy_checklist::gates::testing::passing;
    use crate::deploy_checklist::gates::Evidence;
    use crate::hosts::testing::host_subject;

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
        assert!(
            md.contains("| compression saves > 30 % on /nix | 47% saved | met |"),
            "{md}"
        );
        assert!(
            md.contains("| 2 | rotate | 12.0 s | 1/1 | 310 ms |"),
            "{md}"
        );
        assert!(
            !md.contains("trim.freed_bytes"),
            "the figure dump stays in the JSON"
        );
        assert!(md.contains("## 2. Deployment"));
        assert!(md.contains("  local$ nix run github:nix-community/nixos-anywhere -- --flake .#hetzner-vps --target-host root@<IP>\n"));
        assert!(md.contains("  local$ ssh hbohlen@<IP>\n"));
        assert!(md.contains("  rescue# [ -d /sys/firmware/efi ] && echo UEFI || echo BIOS\n"));
        assert!(md.contains("## 3. Post-deploy verification"));
        assert!(md.contains("### 3.1 The system came up clean (`verify.units`)\n\n*vm-test: NOT RUN in the lab VM (needs systemd; run instead by the NixOS VM test).*\n"), "{md}");
        assert!(md.contains("(`verify.mounts`)\n\n*vm-test --thorough (vm-test-thorough.pass.json): PASS, 1 of its commands ran as expected in the lab VM.*\n"), "{md}");
        assert!(md.contains("  server$ sudo swapon --show=NAME,TYPE,SIZE --bytes --noheadings\n"));
        assert!(md.contains("## 4. Rollback plan"));
        assert!(md.contains("  server$ sudo nixos-rebuild switch --rollback\n"));
        assert!(md.contains("- `<old-root>`: an old root in /btrfs_tmp/@old_roots"));
    }

    #[test]
    fn a_not_ready_checklist_says_so_everywhere() {
        let mut observed = passing();
        observed.vm_test = Evidence::none();
        observed.facts = host_facts();
        let checklist = build(&host_subject(), &observed);
        let md = markdown(&checklist);
        assert!(
            md.contains("> **NOT READY (FAIL)**: login is FAIL, vm-test is NOT RUN."),
            "{md}"
        );
        assert!(!md.contains("What vm-test measured"));
        let text = gates_text(&checklist);
        assert!(
            text.contains("  NOT RUN  vm-test     no result in target/xtask: never run here\n"),
            "{text}"
        );
        assert!(
            text.contains("to fix: cargo xtask vm-test --host hetzner-cloud"),
            "{text}"
        );
        assert!(text.contains("  FAIL     login       hosts/servers/hetzner-cloud/machine.nix has no SSH key for hbohlen"), "{text}");
        assert!(
            text.contains("  PASS     check       no findings"),
            "{text}"
        );
    }
}
