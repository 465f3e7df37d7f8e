//! What `verify` checks on a server, planned from the one source of the
//! checklist's procedures (§3, `crate::deploy_checklist::server_procedures`) plus
//! two checks derived from the same model: the partition table and the old
//! roots against the retention rules.
//!
//! From each §3 procedure verify sends the server commands that are
//! read-only ([`super::allowlist`]) and do not read what an earlier,
//! writing command of the procedure made (a marker file, a checksum list):
//! `fstrim`, `touch`, the reboot and what reads their effects are left out,
//! each with the reason, in the record. The expectations are the
//! checklist's own ([`Expect::check`]), as vm-test holds them.

use serde::Serialize;

use super::allowlist;
use crate::deploy_checklist::facts::{HostFacts, Where};
use crate::deploy_checklist::procedures::{names, Expect, ROLLBACK_STATUS_DIR};
use crate::hosts::Subject;
use crate::vm::retention::{self, Fate, Rules, Stamp};
use layout::names::{partition_node, sgdisk_stored_name};

/// One line of verify's report.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// `verify.mounts`, `verify.partitions`, `verify.retention`, ….
    pub id: String,
    /// The checklist step it comes from (`3.2`), if any.
    pub step: Option<String>,
    pub title: String,
    pub commands: Vec<Probe>,
    /// The procedure's commands verify does not send, and why.
    pub left_out: Vec<LeftOut>,
    #[serde(skip)]
    pub judge: Judge,
}

/// A command verify sends and what it must show.
#[derive(Debug, Clone, Serialize)]
pub struct Probe {
    pub line: String,
    pub expect: Vec<Expect>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LeftOut {
    pub line: String,
    pub why: String,
}

/// How the outputs are judged beyond each command's expectations.
#[derive(Debug, Clone)]
pub enum Judge {
    /// The expectations alone.
    Expectations,
    /// The first command prints the rollback's status file, the second the
    /// old roots: none may be one the rules deleted at the last boot.
    Retention(Rules),
}

/// A GPT type as `sfdisk --dump` prints it (upper-case GUID), for the
/// sgdisk codes disko hosts use: the GUIDs sgdisk 1.0.9 writes for them,
/// as util-linux 2.38's sfdisk printed them on an image sgdisk made.
fn type_guid(code: &str) -> Option<String> {
    let code = code.to_ascii_uppercase();
    let guid = match code.as_str() {
        "EF02" => "21686148-6449-6E6F-744E-656564454649",
        "EF00" => "C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
        "8200" => "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F",
        "8300" => "0FC63DAF-8483-4772-8E79-3D69D8477DE4",
        other if other.len() == 36 && other.matches('-').count() == 4 => other,
        _ => return None,
    };
    Some(guid.to_owned())
}

fn sudo(line: String) -> String {
    format!("sudo {line}")
}

/// The partition table of every disk against the model: each partition's
/// start, size, type and name, as `sfdisk --dump` (util-linux, on every
/// NixOS system) prints them.
fn partitions(subject: &Subject) -> Vec<Check> {
    let tables = subject.tables();
    let mut checks = Vec::new();
    for disk in &tables.disks {
        if disk.partitions.is_empty() {
            continue;
        }
        let mut expect = vec![Expect::Line {
            pattern: "label: gpt".to_owned(),
        }];
        for p in &disk.partitions {
            let Some(node) = partition_node(&disk.device, p.number) else {
                continue;
            };
            let (Some(start), Some(end)) = (p.start_sector, p.end_sector) else {
                continue;
            };
            let size = end + 1 - start;
            let kind = type_guid(&p.type_code)
                .map(|g| format!("type={g},"))
                .unwrap_or_else(|| "type=<*>,".to_owned());
            expect.push(Expect::Line {
                pattern: format!(
                    "{node} : start= {start}, size= {size}, {kind} uuid=<*>, name=\"{}\"<*>",
                    sgdisk_stored_name(&p.label)
                ),
            });
        }
        checks.push(Check {
            id: "verify.partitions".to_owned(),
            step: None,
            title: format!("Partition table of {}", disk.device),
            commands: vec![Probe {
                line: sudo(format!("sfdisk --dump {}", disk.device)),
                expect,
            }],
            left_out: Vec::new(),
            judge: Judge::Expectations,
        });
    }
    checks
}

/// Every check verify runs on `subject`'s server, in report order.
pub fn plan(subject: &Subject, facts: &HostFacts, rules: Rules) -> Vec<Check> {
    let mut checks = partitions(subject);
    for numbered in crate::deploy_checklist::server_procedures(subject, facts) {
        let procedure = numbered.procedure;
        if !procedure.id.starts_with("verify.") {
            continue;
        }
        let mut written: Vec<String> = Vec::new();
        let mut commands = Vec::new();
        let mut left_out = Vec::new();
        for command in &procedure.commands {
            let line = command.line.clone();
            let why = if command.at != Where::Server {
                Some("runs on the workstation, not on the server".to_owned())
            } else if line.contains('<') {
                Some("needs a value the admin fills in".to_owned())
            } else if let Err(refused) = allowlist::check(&line) {
                written.extend(allowlist::paths(&line));
                Some(format!("not read-only: {refused}"))
            } else {
                allowlist::paths(&line)
                    .into_iter()
                    .find(|p| written.contains(p))
                    .map(|path| {
                        format!("reads {path}, which an earlier command of the procedure writes")
                    })
            };
            match why {
                Some(why) => left_out.push(LeftOut { line, why }),
                None => commands.push(Probe {
                    line,
                    expect: command.expect.clone(),
                }),
            }
        }
        if commands.is_empty() {
            continue;
        }
        checks.push(Check {
            id: procedure.id,
            step: Some(numbered.step),
            title: procedure.title,
            commands,
            left_out,
            judge: Judge::Expectations,
        });
    }
    let n = names(&subject.tables());
    checks.push(Check {
        id: "verify.retention".to_owned(),
        step: None,
        title: format!(
            "Old roots against the retention rules ({} days, at least {} kept)",
            rules.retention_days, rules.keep_at_least
        ),
        commands: vec![
            Probe {
                line: sudo(format!("cat {ROLLBACK_STATUS_DIR}/status")),
                expect: vec![Expect::Line {
                    pattern: "rotated_to=<old-root>".to_owned(),
                }],
            },
            Probe {
                line: sudo(format!("ls {}/{}", n.top, n.old_roots)),
                expect: Vec::new(),
            },
        ],
        left_out: Vec::new(),
        judge: Judge::Retention(rules),
    });
    checks
}

/// The checks for a server whose disk the kernel names `to` where the
/// layout says `from` (the lab VM's virtio disk is /dev/vda where the
/// server's is /dev/sda): every line and expectation, partitions included.
pub fn rename_device(checks: &mut [Check], from: &str, to: &str) {
    let rename = |text: &mut String| *text = text.replace(from, to);
    for check in checks {
        rename(&mut check.title);
        for probe in &mut check.commands {
            rename(&mut probe.line);
            for expect in &mut probe.expect {
                match expect {
                    Expect::Line { pattern }
                    | Expect::NoLine { pattern }
                    | Expect::AtMost { pattern, .. } => rename(pattern),
                    Expect::Fields { first, include } => {
                        rename(first);
                        include.iter_mut().for_each(rename);
                    }
                    Expect::Exit { .. } | Expect::Empty => {}
                }
            }
        }
    }
}

/// The retention verdict on the last boot: `Err` names an old root the
/// rollback should have deleted. `status` is the status file, `listing`
/// the old roots' directory.
pub fn retention(rules: Rules, status: &str, listing: &str) -> Result<String, String> {
    let value = |key: &str| {
        status
            .lines()
            .find_map(|l| l.trim().strip_prefix(&format!("{key}=")))
            .map(str::to_owned)
    };
    let rotated = value("rotated_to").unwrap_or_default();
    let Some(stamp) = Stamp::parse(&rotated) else {
        return Err(format!(
            "the status file names no rotation (rotated_to={rotated:?})"
        ));
    };
    if value("clock").as_deref() != Some("ok") {
        return Err(format!(
            "the last boot's clock was not trusted (clock={}): the rollback deleted nothing",
            value("clock").unwrap_or_default()
        ));
    }
    let roots: Vec<String> = listing.split_whitespace().map(str::to_owned).collect();
    let verdict = retention::apply(rules, &roots, stamp.epoch);
    let kept = verdict.kept();
    if !roots.contains(&rotated) {
        return Err(format!(
            "{rotated}, the last boot's root, is not among the old roots"
        ));
    }
    let overdue: Vec<String> = verdict.with(|fate| fate == Fate::Deleted);
    if !overdue.is_empty() {
        return Err(format!(
            "past retention at the last boot ({rotated}) but still there: {}",
            overdue.join(" ")
        ));
    }
    Ok(format!(
        "{} old roots, newest {rotated}, none past retention",
        kept.len()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deploy_checklist::facts::testing::host_facts;
    use crate::hosts::testing::host_subject;

    fn rules() -> Rules {
        Rules {
            retention_days: 30,
            keep_at_least: 5,
        }
    }

    /// Every command verify can send is on the read-only list: the plan of
    /// the repository's host, and of the same host with an admin key (the
    /// facts that change the lines).
    #[test]
    fn every_command_verify_can_send_is_read_only() {
        let subject = host_subject();
        for facts in [
            host_facts(),
            crate::deploy_checklist::facts::testing::with_key(),
        ] {
            let checks = plan(&subject, &facts, rules());
            assert!(checks.len() >= 8, "{checks:#?}");
            for check in &checks {
                for probe in &check.commands {
                    assert_eq!(allowlist::check(&probe.line), Ok(()), "{}", probe.line);
                }
            }
        }
    }

    #[test]
    fn the_plan_covers_what_the_issue_asks() {
        let checks = plan(&host_subject(), &host_facts(), rules());
        let ids: Vec<&str> = checks.iter().map(|c| c.id.as_str()).collect();
        for id in [
            "verify.partitions",
            "verify.units",
            "verify.mounts",
            "verify.subvolumes",
            "verify.swap",
            "verify.esp",
            "verify.compression",
            "verify.trim",
            "verify.reboot",
            "verify.retention",
        ] {
            assert!(ids.contains(&id), "{id} missing from {ids:?}");
        }
        let all: Vec<&str> = checks
            .iter()
            .flat_map(|c| c.commands.iter().map(|p| p.line.as_str()))
            .collect();
        assert!(!all.iter().any(|l| l.contains("fstrim")), "{all:?}");
        assert!(
            all.iter().any(|l| l.contains("cryptsetup status")),
            "{all:?}"
        );
        let reboot = checks.iter().find(|c| c.id == "verify.reboot").unwrap();
        let sent: Vec<&str> = reboot.commands.iter().map(|p| p.line.as_str()).collect();
        assert!(sent.iter().any(|l| l.ends_with("/status")), "{sent:?}");
        assert!(
            !sent.iter().any(|l| l.contains("wiped-at-boot")),
            "{sent:?}"
        );
        assert!(reboot.left_out.iter().any(|l| l.line.contains("touch")));
        let partitions = checks.iter().find(|c| c.id == "verify.partitions").unwrap();
        let patterns: Vec<String> = partitions.commands[0]
            .expect
            .iter()
            .map(|e| format!("{e:?}"))
            .collect();
        assert!(
            patterns
                .iter()
                .any(|p| p.contains("/dev/sda1 : start= 2048, size= 2048, type=21686148")),
            "{patterns:?}"
        );
    }

    #[test]
    fn the_partition_lines_match_what_sfdisk_prints() {
        let checks = plan(&host_subject(), &host_facts(), rules());
        let partitions = checks.iter().find(|c| c.id == "verify.partitions").unwrap();
        let Expect::Line { pattern } = &partitions.commands[0].expect[1] else {
            panic!("a line pattern");
        };
        // sfdisk 2.38's --dump line for a BIOS boot partition sgdisk made
        // (the uuid differs on every disk).
        let printed = "/dev/sda1 : start=        2048, size=        2048, type=21686148-6449-6E6F-744E-656564454649, uuid=9A1B8A0D-6A0B-4B0C-9D7E-0B5C8E2F6A11, name=\"disk-main-boot\"";
        assert!(
            crate::deploy_checklist::procedures::matches(pattern, printed),
            "{pattern}"
        );
        let moved = printed.replace("start=        2048", "start=        4096");
        assert!(!crate::deploy_checklist::procedures::matches(
            pattern, &moved
        ));
    }

    #[test]
    fn retention_names_a_root_the_last_boot_should_have_deleted() {
        let status = "result=ok\nrotated_to=20260306T120000Z\nclock=ok\n";
        let young: Vec<String> = (0..6)
            .map(|d| format!("202603{:02}T120000Z", d + 1))
            .collect();
        let listing = young.join("\n");
        assert!(retention(rules(), status, &listing).is_ok());
        // 40 days before the last boot, and six newer ones: deleted by the rules.
        let old = format!("20260120T120000Z\n{listing}");
        let problem = retention(rules(), status, &old).unwrap_err();
        assert!(problem.contains("20260120T120000Z"), "{problem}");
        assert!(retention(rules(), "result=ok\nclock=ok\n", &listing).is_err());
        assert!(retention(
            rules(),
            &status.replace("clock=ok", "clock=implausible"),
            &listing
        )
        .is_err());
    }
}
