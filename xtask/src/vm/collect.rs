//! Turns one boot's protocol events into the records of
//! target/xtask/vm-test.json: the steps with their times, the checks, the
//! figures, and whether the boot got through.

use std::collections::BTreeMap;

use crate::results::{BootRecord, CheckRecord, StepRecord};

use super::plan::BootKind;
use super::protocol::{CommandEvent, Event};

#[derive(Debug, Clone, PartialEq)]
pub struct Collected {
    pub record: BootRecord,
    pub checks: Vec<CheckRecord>,
    pub figures: BTreeMap<String, f64>,
    /// `data` events by name (the old roots, the rollback status).
    pub data: BTreeMap<String, serde_json::Value>,
    /// The procedures' commands, in the order they ran.
    pub commands: Vec<CommandEvent>,
    /// The agent started and read its plan (`hello`).
    pub started: bool,
    /// The agent reached `done`.
    pub finished: bool,
    pub fatal: Option<String>,
}

/// Collects a boot's events. Only events between `hello` and `done` count.
pub fn collect(number: u32, kind: BootKind, wall_ms: u64, events: &[Event]) -> Collected {
    let mut collected = Collected {
        record: BootRecord {
            number,
            kind: kind.as_str().to_owned(),
            wall_ms,
            steps: Vec::new(),
            passed: false,
        },
        checks: Vec::new(),
        figures: BTreeMap::new(),
        data: BTreeMap::new(),
        commands: Vec::new(),
        started: false,
        finished: false,
        fatal: None,
    };
    let mut agent_ok = false;
    for event in events {
        if collected.finished {
            break;
        }
        if !collected.started {
            if let Event::Hello { boot, .. } = event {
                if *boot == number {
                    collected.started = true;
                    // What came before belongs to no plan.
                    collected.fatal = None;
                }
            }
            // A fatal error before `hello` (no plan) still explains the failure.
            if let Event::Fatal { message } = event {
                collected.fatal = Some(message.clone());
            }
            continue;
        }
        match event {
            Event::Hello { .. }
            | Event::StepStarted { .. }
            | Event::Measure { .. }
            | Event::Serving {} => {}
            Event::StepFinished {
                name,
                ms,
                ok,
                detail,
            } => {
                collected.record.steps.push(StepRecord {
                    name: name.clone(),
                    ms: *ms,
                });
                if !ok {
                    collected.checks.push(CheckRecord {
                        boot: number,
                        name: format!("step:{name}"),
                        passed: false,
                        measured: detail.clone().unwrap_or_else(|| "failed".to_owned()),
                        expected: "the step succeeds".to_owned(),
                    });
                }
            }
            Event::Check {
                name,
                passed,
                measured,
                expected,
            } => collected.checks.push(CheckRecord {
                boot: number,
                name: name.clone(),
                passed: *passed,
                measured: measured.clone(),
                expected: expected.clone(),
            }),
            Event::Figure { name, value } => {
                collected.figures.insert(name.clone(), *value);
            }
            Event::Data { name, value } => {
                collected.data.insert(name.clone(), value.clone());
            }
            Event::Command(command) => collected.commands.push((**command).clone()),
            Event::Fatal { message } => collected.fatal = Some(message.clone()),
            Event::Done { ok, .. } => {
                collected.finished = true;
                agent_ok = *ok;
            }
        }
    }
    collected.record.passed = collected.finished
        && agent_ok
        && collected.fatal.is_none()
        && collected.checks.iter().all(|c| c.passed);
    collected
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(name: &str, passed: bool) -> Event {
        Event::Check {
            name: name.into(),
            passed,
            measured: "m".into(),
            expected: "e".into(),
        }
    }

    #[test]
    fn a_passing_boot() {
        let events = vec![
            Event::Fatal {
                message: "stale line from an earlier boot".into(),
            },
            Event::Hello {
                boot: 2,
                uptime_ms: 3000,
                kernel: "6.1".into(),
            },
            Event::StepStarted {
                name: "rollback".into(),
            },
            Event::StepFinished {
                name: "rollback".into(),
                ms: 80,
                ok: true,
                detail: None,
            },
            check("rotation-time", true),
            Event::Figure {
                name: "rotation_ms.boot2".into(),
                value: 80.0,
            },
            Event::Data {
                name: "old_roots".into(),
                value: serde_json::json!(["20250101T000000Z"]),
            },
            Event::Done {
                ok: true,
                uptime_ms: 9000,
            },
            check("after-done-ignored", false),
        ];
        let c = collect(2, BootKind::Rotate, 9500, &events);
        assert!(c.started && c.finished && c.record.passed, "{c:?}");
        assert_eq!(c.fatal, None, "events before hello belong to nobody");
        assert_eq!(
            c.record.steps,
            [StepRecord {
                name: "rollback".into(),
                ms: 80
            }]
        );
        assert_eq!(c.checks.len(), 1);
        assert_eq!(c.figures["rotation_ms.boot2"], 80.0);
        assert_eq!(c.data["old_roots"][0], "20250101T000000Z");
        assert_eq!(c.record.kind, "rotate");
    }

    #[test]
    fn failures_show_as_checks() {
        let events = vec![
            Event::Hello {
                boot: 1,
                uptime_ms: 1,
                kernel: "k".into(),
            },
            Event::StepFinished {
                name: "mount:/var/lib/caddy".into(),
                ms: 5,
                ok: false,
                detail: Some("mount: wrong fs type".into()),
            },
            check("subvolumes", false),
            Event::Done {
                ok: false,
                uptime_ms: 2,
            },
        ];
        let c = collect(1, BootKind::Install, 10, &events);
        assert!(!c.record.passed);
        let names: Vec<&str> = c.checks.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["step:mount:/var/lib/caddy", "subvolumes"]);
        assert_eq!(c.checks[0].measured, "mount: wrong fs type");
    }

    #[test]
    fn a_boot_that_never_started_or_never_finished() {
        let none = collect(
            1,
            BootKind::Install,
            10,
            &[Event::Fatal {
                message: "no plan".into(),
            }],
        );
        assert!(!none.started && !none.record.passed);
        assert_eq!(none.fatal.as_deref(), Some("no plan"));
        let cut = collect(
            2,
            BootKind::Rotate,
            10,
            &[
                Event::Hello {
                    boot: 2,
                    uptime_ms: 1,
                    kernel: "k".into(),
                },
                check("x", true),
            ],
        );
        assert!(cut.started && !cut.finished && !cut.record.passed);
        // A hello for another boot (a stale image) does not start this one.
        let other = collect(
            3,
            BootKind::Rotate,
            10,
            &[Event::Hello {
                boot: 2,
                uptime_ms: 1,
                kernel: "k".into(),
            }],
        );
        assert!(!other.started);
    }
}
