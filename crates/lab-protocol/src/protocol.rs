//! What the guest agent tells the host, one JSON event per line on its own
//! serial port (ttyS1), and what the host answers on the same port.
//!
//! The kernel's console (ttyS0) carries printk output that can land in the
//! middle of a long line, so structured data never shares it: ttyS1 carries
//! only lines of the form `@xtask <json>`. `hello` opens a boot's results and
//! `done` closes them; anything outside those markers, or not of this form,
//! is ignored (and kept in the log).

use serde::{Deserialize, Serialize};

use crate::command::CommandOutcome;

/// Every protocol line starts with this.
pub const PREFIX: &str = "@xtask ";
/// What the host writes back after a `measure` event has been handled.
pub const CONTINUE: &str = "continue";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The agent runs as /init and has read its plan: results begin.
    Hello {
        boot: u32,
        /// Kernel start to /init, from /proc/uptime.
        uptime_ms: u64,
        kernel: String,
    },
    StepStarted {
        name: String,
    },
    StepFinished {
        name: String,
        ms: u64,
        ok: bool,
        /// Why it failed, or what it printed that matters.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
    Check {
        name: String,
        passed: bool,
        measured: String,
        expected: String,
    },
    Figure {
        name: String,
        value: f64,
    },
    /// Structured data for checks the host makes across boots (e.g. the old roots).
    Data {
        name: String,
        value: serde_json::Value,
    },
    /// One command of a checklist procedure, with what it printed.
    Command(Box<CommandEvent>),
    /// The guest has flushed its disk and waits for the host to measure the
    /// image, then to write `continue`.
    Measure {
        point: String,
    },
    /// sshd listens on the guest's port 22 (`vm-test --serve-ssh`); the
    /// guest waits for the host's `continue`.
    Serving {},
    /// The agent could not go on (its plan is unreadable, it panicked, …).
    Fatal {
        message: String,
    },
    /// Results end; the agent unmounts and powers off next.
    Done {
        ok: bool,
        uptime_ms: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandEvent {
    /// The procedure's id (`rollback.file-from-old-root`), its checklist
    /// step (`4.3`) and the part of it this boot ran.
    pub id: String,
    pub step: String,
    pub part: u32,
    pub index: u32,
    /// What became of it, as the host's record keeps it.
    #[serde(flatten)]
    pub outcome: CommandOutcome,
}

/// One protocol line, newline included.
pub fn encode(event: &Event) -> String {
    // Serialising these types cannot fail: no maps with non-string keys.
    let json = serde_json::to_string(event).unwrap_or_else(|error| {
        format!(r#"{{"event":"fatal","message":"unencodable event: {error}"}}"#)
    });
    format!("{PREFIX}{json}\n")
}

/// What a line of the protocol port holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Line {
    Event(Event),
    /// Looks like a protocol line but does not parse (a bug, or a cut-off line).
    Malformed {
        line: String,
        error: String,
    },
    /// Not a protocol line (noise, an echo).
    Other,
}

pub fn decode(line: &str) -> Line {
    let line = line.trim_end_matches(['\r', '\n']);
    // A line may carry noise in front (a terminal reset, a NUL); the prefix finds the start.
    let Some(start) = line.find(PREFIX) else {
        return Line::Other;
    };
    let json = &line[start + PREFIX.len()..];
    match serde_json::from_str(json) {
        Ok(event) => Line::Event(event),
        Err(error) => Line::Malformed {
            line: line.to_owned(),
            error: error.to_string(),
        },
    }
}

/// Splits a byte stream into lines, keeping a partial last line for later.
#[derive(Debug, Default)]
pub struct LineBuffer {
    pending: Vec<u8>,
}

impl LineBuffer {
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        self.pending.extend_from_slice(bytes);
        let mut lines = Vec::new();
        while let Some(end) = self.pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            lines.push(String::from_utf8_lossy(&line).into_owned());
        }
        lines
    }

    /// The unterminated rest, e.g. when the VM died mid-line.
    pub fn rest(&mut self) -> Option<String> {
        (!self.pending.is_empty())
            .then(|| String::from_utf8_lossy(&std::mem::take(&mut self.pending)).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip() {
        let events = [
            Event::Hello {
                boot: 2,
                uptime_ms: 3100,
                kernel: "6.1.0".into(),
            },
            Event::StepFinished {
                name: "mkfs:root".into(),
                ms: 40,
                ok: false,
                detail: Some("exit status 1: ERROR: \"quoted\"\nsecond line".into()),
            },
            Event::Check {
                name: "mount-options:/nix".into(),
                passed: true,
                measured: "rw,noatime".into(),
                expected: "noatime".into(),
            },
            Event::Figure {
                name: "rotation_ms.boot2".into(),
                value: 41.5,
            },
            Event::Data {
                name: "old_roots".into(),
                value: serde_json::json!(["20250101T000000Z"]),
            },
            Event::Done {
                ok: true,
                uptime_ms: 9000,
            },
        ];
        for event in events {
            let line = encode(&event);
            assert!(
                line.ends_with('\n') && line.matches('\n').count() == 1,
                "{line}"
            );
            assert_eq!(decode(&line), Line::Event(event));
        }
    }

    /// The command's shared outcome is flattened: the line is what it was
    /// when the event declared every field itself, in the same order.
    #[test]
    fn a_command_event_keeps_its_fields_and_their_order() {
        let event = Event::Command(Box::new(CommandEvent {
            id: "rollback.file-from-old-root".into(),
            step: "4.3".into(),
            part: 1,
            index: 2,
            outcome: CommandOutcome {
                role: "checklist".into(),
                at: Some(crate::command::Where::Server),
                line: "sudo ls <old-root>".into(),
                ran: "sudo ls 20260101T000000Z".into(),
                status: crate::command::CommandStatus::NotRun,
                exit: None,
                ms: 0,
                stdout: String::new(),
                stderr: String::new(),
                expected: "exit 0".into(),
                passed: false,
                problem: Some("needs systemd".into()),
                proven_by: None,
            },
        }));
        let line = encode(&event);
        assert_eq!(
            line,
            concat!(
                r#"@xtask {"event":"command","id":"rollback.file-from-old-root","step":"4.3","#,
                r#""part":1,"index":2,"role":"checklist","at":"server","line":"sudo ls <old-root>","#,
                r#""ran":"sudo ls 20260101T000000Z","status":"not-run","exit":null,"ms":0,"#,
                r#""stdout":"","stderr":"","expected":"exit 0","passed":false,"#,
                r#""problem":"needs systemd"}"#,
                "\n"
            )
        );
        assert_eq!(decode(&line), Line::Event(event));
    }

    #[test]
    fn noise_and_cut_lines() {
        assert_eq!(decode("[    3.1] random: crng init done"), Line::Other);
        assert!(matches!(
            decode("\u{1b}c@xtask {\"event\":\"done\",\"ok\":true,\"uptime_ms\":1}"),
            Line::Event(Event::Done { ok: true, .. })
        ));
        assert!(matches!(
            decode("@xtask {\"event\":\"check\",\"name\":\"x\""),
            Line::Malformed { .. }
        ));
        assert!(matches!(
            decode("@xtask {\"event\":\"reboot\"}"),
            Line::Malformed { .. }
        ));
    }

    #[test]
    fn line_buffer_keeps_partial_lines() {
        let mut buffer = LineBuffer::default();
        assert!(buffer.push(b"@xtask {\"ev").is_empty());
        let lines = buffer.push(b"ent\":1}\nnext\npart");
        assert_eq!(lines, ["@xtask {\"event\":1}\n", "next\n"]);
        assert_eq!(buffer.rest().as_deref(), Some("part"));
        assert_eq!(buffer.rest(), None);
    }
}
