//! The agent's two outputs: the protocol port (ttyS1), one JSON event per
//! line for the host (`lab_protocol::protocol`), and the console log.

use std::fs::File;
use std::io::Write as _;
use std::sync::Mutex;

use lab_protocol::protocol::{self, Event};

/// The protocol port; the console is ttyS0.
pub const PROTOCOL_PORT: &str = "/dev/ttyS1";

/// The protocol port, opened at start (`start::open_port`), shared with
/// the panic hook; the host's answers are read from it too.
pub static PORT: Mutex<Option<File>> = Mutex::new(None);

/// One event to the host.
pub fn send(event: &Event) {
    let line = protocol::encode(event);
    if let Ok(mut port) = PORT.lock() {
        if let Some(port) = port.as_mut() {
            // One write per line, so a line is never split by another writer.
            let _ = port.write_all(line.as_bytes());
            let _ = port.flush();
        }
    }
}

/// A line on the console log.
pub fn say(text: &str) {
    println!("[xtask] {text}");
}

/// Kernel start to now, from /proc/uptime.
pub fn uptime_ms() -> u64 {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0, |s| (s * 1000.0) as u64)
}
