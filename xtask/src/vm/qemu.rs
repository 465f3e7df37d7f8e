//! One boot of the lab VM: qemu with the kernel, the initramfs, the plan in
//! fw_cfg and the disk; the console to a log file, the protocol port to a
//! pipe read line by line. The VM is always killed and reaped: on timeout,
//! on Ctrl-C, on a power cut, when the host side panics, and when the
//! xtask process itself dies (PR_SET_PDEATHSIG).

use std::io::Write as _;
use std::process::ChildStdin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use camino::{Utf8Path, Utf8PathBuf};

use super::accel::Accel;
use super::plan::FW_CFG_NAME;
use super::protocol::{self, Event, Line, LineBuffer};
use toolbox::process::{Chunks, Output, Supervised};

/// What is kept of qemu's own messages (stderr); the rest is read and dropped.
const QEMU_STDERR_BYTES: u64 = 64 * 1024;

/// Set by the Ctrl-C / SIGTERM handler.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Installs the Ctrl-C and SIGTERM handler (once per process).
pub fn handle_interrupts() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let _ = ctrlc::set_handler(|| INTERRUPTED.store(true, Ordering::SeqCst));
    });
}

#[derive(Debug, Clone)]
pub struct VmConfig {
    pub qemu: Utf8PathBuf,
    pub accel: Accel,
    pub memory_mib: u32,
    pub cpus: u32,
    pub kernel: Utf8PathBuf,
    pub initrd: Utf8PathBuf,
    pub disk: Utf8PathBuf,
    pub plan: Utf8PathBuf,
    pub console_log: Utf8PathBuf,
    pub protocol_log: Utf8PathBuf,
    pub timeout: Duration,
    /// `-rtc base=`: the guest's clock at power-on (epoch seconds, UTC).
    pub rtc_base: Option<i64>,
    /// A second virtio disk (/dev/vdb), for procedures that save data off the server.
    pub second_disk: Option<Utf8PathBuf>,
    /// `vm-test --serve-ssh`: a network card on qemu's user networking,
    /// restricted (the guest reaches nothing), with this port of the host's
    /// 127.0.0.1 (only) forwarded to the guest's 22.
    pub ssh_forward: Option<u16>,
}

/// qemu's `-rtc base=` form: `2026-12-01T13:50:39` (UTC).
pub fn rtc_base(epoch: i64) -> Result<String> {
    let at = time::OffsetDateTime::from_unix_timestamp(epoch)
        .with_context(|| format!("{epoch} is not a representable time"))?;
    at.format(time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second]"
    ))
    .context("formatting the RTC base")
}

/// The kernel command line: the console on ttyS0, a panic ends the VM,
/// and /init is the guest agent.
pub const KERNEL_COMMAND_LINE: &str =
    "console=ttyS0 loglevel=5 panic=-1 mitigations=off rdinit=/init";

impl VmConfig {
    pub fn args(&self) -> Result<Vec<String>> {
        let mut args: Vec<String> = [
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-machine",
            "pc",
            "-no-reboot",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        args.extend(self.accel.qemu_args().iter().map(|s| (*s).to_owned()));
        args.push("-nic".to_owned());
        args.push(match self.ssh_forward {
            None => "none".to_owned(),
            Some(port) => {
                format!("user,model=virtio-net-pci,restrict=on,hostfwd=tcp:127.0.0.1:{port}-:22")
            }
        });
        let drive = format!(
            "file={},if=none,id=disk0,format=qcow2,discard=unmap,cache=writeback",
            escape_option(self.disk.as_str())
        );
        args.extend([
            "-m".to_owned(),
            self.memory_mib.to_string(),
            "-smp".to_owned(),
            self.cpus.to_string(),
            "-kernel".to_owned(),
            self.kernel.to_string(),
            "-initrd".to_owned(),
            self.initrd.to_string(),
            "-append".to_owned(),
            KERNEL_COMMAND_LINE.to_owned(),
            "-drive".to_owned(),
            drive,
            "-device".to_owned(),
            "virtio-blk-pci,drive=disk0".to_owned(),
            "-object".to_owned(),
            "rng-random,id=rng0,filename=/dev/urandom".to_owned(),
            "-device".to_owned(),
            "virtio-rng-pci,rng=rng0".to_owned(),
            "-fw_cfg".to_owned(),
            format!(
                "name={FW_CFG_NAME},file={}",
                escape_option(self.plan.as_str())
            ),
            "-chardev".to_owned(),
            format!(
                "file,id=console,path={}",
                escape_option(self.console_log.as_str())
            ),
            "-serial".to_owned(),
            "chardev:console".to_owned(),
            "-chardev".to_owned(),
            "stdio,id=protocol,signal=off".to_owned(),
            "-serial".to_owned(),
            "chardev:protocol".to_owned(),
        ]);
        if let Some(disk) = &self.second_disk {
            args.extend([
                "-drive".to_owned(),
                format!(
                    "file={},if=none,id=disk1,format=qcow2,discard=unmap,cache=writeback",
                    escape_option(disk.as_str())
                ),
                "-device".to_owned(),
                "virtio-blk-pci,drive=disk1".to_owned(),
            ]);
        }
        if let Some(epoch) = self.rtc_base {
            args.extend(["-rtc".to_owned(), format!("base={}", rtc_base(epoch)?)]);
        }
        Ok(args)
    }
}

/// qemu's option syntax doubles commas inside values.
fn escape_option(value: &str) -> String {
    value.replace(',', ",,")
}

/// How a boot ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// The guest powered off.
    Exited {
        code: Option<i32>,
    },
    TimedOut,
    Interrupted,
    /// Killed on purpose (a power cut).
    Killed {
        reason: String,
    },
}

#[derive(Debug)]
pub struct BootRun {
    pub events: Vec<Event>,
    pub ending: Ending,
    pub wall: Duration,
    /// qemu's VmHWM: the most memory it held at once.
    pub peak_rss_bytes: Option<u64>,
    /// CPU time qemu used (user + system): on a busy host the boot's wall
    /// time stretches, its CPU time much less.
    pub cpu_ms: Option<u64>,
    pub malformed: Vec<String>,
    pub qemu_stderr: String,
}

/// What an event handler may do to the running VM.
pub struct Control<'a> {
    /// qemu's stdin: the protocol port's input. `None` once qemu is gone.
    stdin: Option<&'a mut ChildStdin>,
    kill_at: &'a mut Option<(Instant, String)>,
}

impl Control<'_> {
    /// Lets a guest waiting after `measure` go on.
    pub fn answer(&mut self) -> Result<()> {
        let stdin = self.stdin.as_mut().context("qemu's stdin is closed")?;
        stdin.write_all(format!("{}\n", protocol::CONTINUE).as_bytes())?;
        stdin.flush()?;
        Ok(())
    }

    /// Pulls the plug (SIGKILL) at `at`.
    pub fn kill_at(&mut self, at: Instant, reason: impl Into<String>) {
        *self.kill_at = Some((at, reason.into()));
    }
}

/// qemu's VmHWM in bytes.
fn peak_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// CPU time of a process (utime + stime of /proc/PID/stat), in ms.
fn cpu_ms(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may hold spaces: state is field 3,
    // utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(ticks * 1000 / per_second)
}

/// Boots the VM once and feeds every protocol event to `on_event`.
///
/// qemu runs on the supervised runner (`toolbox::process`): its time limit,
/// its kill and reaping (also when this function returns early or the
/// caller panics), and the reading of its outputs while it runs are the
/// runner's. It cannot be a one-shot `Supervised::run`, which only waits
/// for the end: a boot is a conversation. Each protocol line is acted on
/// while qemu runs (an answer on its stdin after `measure`, a power cut at
/// an instant the handler chooses), Ctrl-C ends it, and qemu's memory and
/// CPU time are sampled from /proc until it exits (they are gone after).
/// So this loop drives the `Running` child itself.
pub fn boot(
    config: &VmConfig,
    mut on_event: impl FnMut(&Event, &mut Control) -> Result<()>,
) -> Result<BootRun> {
    let (lines_tx, lines_rx) = mpsc::channel::<String>();
    let mut vm = Supervised::new(&config.qemu)
        .args(config.args()?)
        .timeout(config.timeout)
        .stdin_piped()
        .stdout(Output::Each(protocol_lines(&config.protocol_log, lines_tx)))
        .stderr(Output::keep(QEMU_STDERR_BYTES))
        // Ctrl-C reaches the xtask, which kills qemu itself, after cleaning up.
        .own_process_group()
        .die_with_parent()
        .spawn()?;
    let pid = vm.pid().context("qemu's process id")?;

    let mut events = Vec::new();
    let mut malformed = Vec::new();
    let mut peak = None;
    let mut cpu = None;
    let mut kill_at: Option<(Instant, String)> = None;
    let mut next_sample = Instant::now();
    let mut handle = |line: String,
                      events: &mut Vec<Event>,
                      malformed: &mut Vec<String>,
                      stdin: Option<&mut ChildStdin>,
                      kill_at: &mut Option<(Instant, String)>|
     -> Result<()> {
        match protocol::decode(&line) {
            Line::Event(event) => {
                let mut control = Control { stdin, kill_at };
                on_event(&event, &mut control)?;
                events.push(event);
            }
            Line::Malformed { line, error } => malformed.push(format!("{line} ({error})")),
            Line::Other => {}
        }
        Ok(())
    };
    let ending = loop {
        let wait = kill_at
            .as_ref()
            .map_or(Duration::from_millis(50), |(at, _)| {
                at.saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(50))
            });
        // VmHWM only grows, and is gone once qemu exits: read it often.
        if Instant::now() >= next_sample {
            peak = peak.max(peak_rss(pid));
            cpu = cpu.max(cpu_ms(pid));
            next_sample = Instant::now() + Duration::from_millis(100);
        }
        match lines_rx.recv_timeout(wait) {
            Ok(line) => {
                if line.contains("\"event\":\"done\"") {
                    peak = peak.max(peak_rss(pid));
                    cpu = cpu.max(cpu_ms(pid));
                }
                handle(line, &mut events, &mut malformed, vm.stdin(), &mut kill_at)?;
            }
            Err(mpsc::RecvTimeoutError::Timeout) | Err(mpsc::RecvTimeoutError::Disconnected) => {}
        }
        if let Some((at, reason)) = &kill_at {
            if Instant::now() >= *at {
                vm.kill()?;
                break Ending::Killed {
                    reason: reason.clone(),
                };
            }
        }
        if let Some(status) = vm.try_wait()? {
            break Ending::Exited {
                code: status.code(),
            };
        }
        if INTERRUPTED.load(Ordering::SeqCst) {
            vm.kill()?;
            break Ending::Interrupted;
        }
        if vm.past_time_limit() {
            vm.kill()?;
            break Ending::TimedOut;
        }
    };
    // qemu is reaped; its outputs end with it: take what the reader still had.
    let finished = vm.finish()?;
    if !matches!(ending, Ending::Killed { .. }) {
        while let Ok(line) = lines_rx.try_recv() {
            handle(line, &mut events, &mut malformed, None, &mut None)?;
        }
    }
    Ok(BootRun {
        events,
        ending,
        wall: finished.elapsed,
        peak_rss_bytes: peak,
        cpu_ms: cpu,
        malformed,
        qemu_stderr: finished.stderr_text(),
    })
}

/// Reads the protocol port: logs every byte to `log` and sends whole lines,
/// and the unterminated rest at the end (the VM died mid-line).
fn protocol_lines(log: &Utf8Path, lines: mpsc::Sender<String>) -> Chunks {
    let mut file = std::fs::File::create(log).ok();
    let mut buffer = LineBuffer::default();
    Box::new(move |chunk: &[u8]| {
        if chunk.is_empty() {
            if let Some(rest) = buffer.rest() {
                let _ = lines.send(rest);
            }
            return;
        }
        if let Some(file) = file.as_mut() {
            let _ = file.write_all(chunk);
        }
        for line in buffer.push(chunk) {
            let _ = lines.send(line);
        }
    })
}

/// The last `count` lines of a log (the console after a failure).
pub fn tail(path: &Utf8Path, count: usize) -> Vec<String> {
    let bytes = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<String> = text
        .lines()
        .map(|l| l.trim_end_matches('\r').to_owned())
        .collect();
    lines[lines.len().saturating_sub(count)..].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_has_no_network_and_discard_unmap() {
        let config = VmConfig {
            qemu: "/usr/bin/qemu-system-x86_64".into(),
            accel: Accel::Tcg,
            memory_mib: 1024,
            cpus: 2,
            kernel: "/boot/vmlinuz".into(),
            initrd: "/t/initrd.cpio".into(),
            disk: "/t/a,b.qcow2".into(),
            plan: "/t/plan.json".into(),
            console_log: "/t/console.log".into(),
            protocol_log: "/t/protocol.log".into(),
            timeout: Duration::from_secs(60),
            rtc_base: Some(1_799_589_600),
            second_disk: Some("/t/backup.qcow2".into()),
            ssh_forward: None,
        };
        let args = config.args().unwrap();
        let joined = args.join(" ");
        assert!(joined.contains("-nic none"));
        assert!(joined.contains("file=/t/a,,b.qcow2,if=none,id=disk0,format=qcow2,discard=unmap"));
        assert!(joined.contains("virtio-rng-pci"));
        assert!(joined.contains("-cpu max"));
        assert!(joined.contains("name=opt/xtask/plan.json,file=/t/plan.json"));
        assert!(!joined.contains("netdev"));
        // The clock starts where the plan says: 2027-01-10T14:00:00 UTC.
        assert!(joined.contains("-rtc base=2027-01-10T14:00:00"), "{joined}");
        // The second disk comes after the first, so it is /dev/vdb.
        let first = joined.find("drive=disk0").unwrap();
        assert!(joined.find("drive=disk1").unwrap() > first);
        let without = VmConfig {
            rtc_base: None,
            second_disk: None,
            ..config
        };
        assert!(!without
            .args()
            .unwrap()
            .iter()
            .any(|a| a == "-rtc" || a.contains("disk1")));
        let memory = args.iter().position(|a| a == "-m").unwrap();
        assert!(args[memory + 1].parse::<u32>().unwrap() <= 1024);
        // --serve-ssh: one forward, from the host's loopback only, and the
        // guest restricted (it reaches nothing).
        let serving = without.args_with_forward(2222);
        let nic: Vec<&String> = serving.iter().filter(|a| a.contains("hostfwd")).collect();
        assert_eq!(
            nic,
            ["user,model=virtio-net-pci,restrict=on,hostfwd=tcp:127.0.0.1:2222-:22"]
        );
        assert_eq!(serving.iter().filter(|a| *a == "-nic").count(), 1);
    }

    impl VmConfig {
        fn args_with_forward(&self, port: u16) -> Vec<String> {
            VmConfig {
                ssh_forward: Some(port),
                ..self.clone()
            }
            .args()
            .unwrap()
        }
    }

    #[test]
    fn reads_its_own_cpu_time() {
        let busy = std::time::Instant::now();
        while busy.elapsed() < Duration::from_millis(30) {}
        assert!(cpu_ms(std::process::id()).is_some_and(|ms| ms > 0));
        assert_eq!(cpu_ms(u32::MAX), None);
    }

    #[test]
    fn the_protocol_port_is_logged_and_split_into_lines() {
        let dir = tempfile::tempdir().unwrap();
        let log = Utf8PathBuf::from_path_buf(dir.path().join("protocol.log")).unwrap();
        let (sender, lines) = mpsc::channel();
        let mut read = protocol_lines(&log, sender);
        for chunk in [&b"{\"a\":1}\n{\"b\""[..], b":2}\r\nhalf", b""] {
            read(chunk);
        }
        drop(read);
        let lines: Vec<String> = lines.iter().collect();
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert_eq!(lines[2], "half", "the rest comes at the end of the stream");
        assert_eq!(
            std::fs::read(&log).unwrap(),
            b"{\"a\":1}\n{\"b\":2}\r\nhalf"
        );
    }

    #[test]
    fn tails_logs() {
        let dir = tempfile::tempdir().unwrap();
        let path = Utf8PathBuf::from_path_buf(dir.path().join("log")).unwrap();
        std::fs::write(&path, "a\r\nb\nc\n").unwrap();
        assert_eq!(tail(&path, 2), ["b", "c"]);
        assert!(tail(&path.with_file_name("missing"), 5).is_empty());
    }
}
