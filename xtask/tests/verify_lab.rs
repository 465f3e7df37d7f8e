//! `cargo xtask verify` against the lab VM's freshly installed and rotated
//! system, over a real ssh connection to the distribution's real sshd:
//! `vm-test --serve-ssh` boots the install and the month as vm-test does,
//! then serves the booted system (qemu user networking, restricted, one
//! port forwarded from the host's 127.0.0.1 only) until this test closes
//! its stdin. verify must pass there, and fail, naming the check, on each
//! tamper, which the test makes through the lab's own channel (ssh as the
//! admin with sudo, never verify): compression off, an ESP readable by
//! others, a rollback that failed at the last boot, swap without
//! encryption. The first three are undone before the next, so each run
//! fails only the check its tamper touched.
//!
//! The lab has no systemd: the commands that need systemctl or journalctl
//! are NOT RUN there (verify says so; the NixOS VM test runs them).

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

const HOST: &str = "hetzner-cloud";
/// machine.nix's adminUser: the login the lab serves.
const ADMIN: &str = "hbohlen";

fn keygen(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&path)
        .status()
        .expect("ssh-keygen (apt-get install openssh-client)");
    assert!(status.success());
    path
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A lab VM serving its booted system on 127.0.0.1:port.
struct Lab {
    vm: Child,
    port: u16,
    config: PathBuf,
    stderr: mpsc::Receiver<String>,
}

impl Lab {
    fn start(dir: &Path) -> Lab {
        let host_key = keygen(dir, "host");
        let client = keygen(dir, "client");
        let port = free_port();
        let host_pub = std::fs::read_to_string(dir.join("host.pub")).unwrap();
        std::fs::write(
            dir.join("known_hosts"),
            format!("[127.0.0.1]:{port} {host_pub}"),
        )
        .unwrap();
        let config = dir.join("ssh_config");
        std::fs::write(
            &config,
            format!(
                "Host *\n  IdentityFile {}\n  IdentitiesOnly yes\n  UserKnownHostsFile {}\n  GlobalKnownHostsFile /dev/null\n",
                client.display(),
                dir.join("known_hosts").display()
            ),
        )
        .unwrap();
        let mut vm = Command::new(env!("CARGO_BIN_EXE_xtask"))
            .args([
                "vm-test",
                "--serve-ssh",
                &port.to_string(),
                "--ssh-host-key",
            ])
            .arg(&host_key)
            .arg("--ssh-authorized-key")
            .arg(dir.join("client.pub"))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running cargo xtask vm-test");
        let (tx, rx) = mpsc::channel();
        let stderr = vm.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let lab = Lab {
            vm,
            port,
            config,
            stderr: rx,
        };
        let mut seen = Vec::new();
        loop {
            match lab.stderr.recv_timeout(Duration::from_secs(900)) {
                Ok(line) if line.contains("serving ssh on 127.0.0.1") => break,
                Ok(line) => seen.push(line),
                Err(_) => panic!(
                    "vm-test did not serve ssh (install what it names; a kernel comes with `apt-get install linux-image-cloud-amd64`):\n{}",
                    seen.join("\n")
                ),
            }
        }
        lab
    }

    /// A command as the admin, through the lab's ssh (not verify's).
    fn ssh(&self, line: &str) -> String {
        let output = Command::new("ssh")
            .arg("-F")
            .arg(&self.config)
            .args(["-o", "BatchMode=yes", "-p", &self.port.to_string()])
            .arg(format!("{ADMIN}@127.0.0.1"))
            .arg(line)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{line}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn verify(&self, results: &Path) -> (i32, Value, String) {
        let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
            .args([
                "verify",
                "--host",
                HOST,
                "--json",
                "--device-map",
                "/dev/sda=/dev/vda",
            ])
            .arg(format!("{ADMIN}@127.0.0.1:{}", self.port))
            .arg("--ssh-config")
            .arg(&self.config)
            .arg("--results-dir")
            .arg(results)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        let record: Value = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|e| panic!("verify printed no record ({e}): {stderr}"));
        (output.status.code().unwrap_or(-1), record, stderr)
    }

    /// Closes the VM's stdin: the guest powers off; vm-test's exit status.
    fn finish(mut self) -> (Option<i32>, Vec<String>) {
        drop(self.vm.stdin.take());
        let status = self.vm.wait().unwrap();
        (status.code(), self.stderr.try_iter().collect())
    }
}

fn statuses(record: &Value) -> Vec<(String, String)> {
    record["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["id"].as_str().unwrap().to_owned(),
                c["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn failed(record: &Value) -> Vec<String> {
    statuses(record)
        .into_iter()
        .filter(|(_, s)| s == "FAIL")
        .map(|(id, _)| id)
        .collect()
}

#[test]
fn verify_passes_on_the_lab_system_and_names_each_tamper() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results");
    let lab = Lab::start(dir.path());

    let (code, record, stderr) = lab.verify(&results);
    assert_eq!(code, 0, "{stderr}\n{record:#}");
    assert_eq!(record["status"], "PASS");
    for (id, status) in statuses(&record) {
        // Only what needs systemd cannot run in the lab.
        let expected = match id.as_str() {
            "verify.units" | "verify.reboot" => "NOT RUN",
            _ => "PASS",
        };
        assert_eq!(status, expected, "{id}: {record:#}");
    }
    for id in [
        "verify.partitions",
        "verify.mounts",
        "verify.subvolumes",
        "verify.swap",
        "verify.esp",
        "verify.compression",
        "verify.trim",
        "verify.retention",
    ] {
        assert!(
            statuses(&record)
                .iter()
                .any(|(i, s)| i == id && s == "PASS"),
            "{id}"
        );
    }
    let reboot = record["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "verify.reboot")
        .unwrap();
    assert!(
        reboot["problem"].as_str().unwrap().contains("journalctl"),
        "{reboot:#}"
    );
    assert!(record["host_key"]
        .as_str()
        .unwrap()
        .starts_with("ssh-ed25519 SHA256:"));

    // Compression off: every Btrfs mount loses compress=zstd:1.
    lab.ssh("sudo mount -o remount,compress=no /");
    let (code, record, stderr) = lab.verify(&results);
    assert_eq!(
        (code, failed(&record)),
        (1, vec!["verify.mounts".to_owned()]),
        "{stderr}"
    );
    lab.ssh("sudo mount -o remount,compress=zstd:1 /");

    // The ESP readable by others.
    let esp = lab.ssh("sudo findmnt -n -o SOURCE,OPTIONS /boot");
    let (source, options) = esp.trim().split_once(' ').unwrap();
    lab.ssh(&format!(
        "sudo umount /boot && sudo mount -t vfat -o umask=0022 {source} /boot"
    ));
    let (code, record, stderr) = lab.verify(&results);
    assert_eq!(
        (code, failed(&record)),
        (1, vec!["verify.esp".to_owned()]),
        "{stderr}"
    );
    lab.ssh(&format!(
        "sudo umount /boot && sudo mount -t vfat -o {} {source} /boot",
        options.trim()
    ));

    // A rollback that failed at the last boot, as the script records one.
    let status = "/run/btrfs-rollback/status";
    lab.ssh(&format!(
        "sudo sed -i s/^result=ok$/result=failed/ {status} && sudo cp {status} /run/btrfs-rollback/failed"
    ));
    let (code, record, stderr) = lab.verify(&results);
    assert_eq!(
        (code, failed(&record)),
        (1, vec!["verify.reboot".to_owned()]),
        "{stderr}"
    );
    lab.ssh(&format!(
        "sudo sed -i s/^result=failed$/result=ok/ {status} && sudo rm /run/btrfs-rollback/failed"
    ));

    // Swap without encryption: the mapping closed, the partition itself swapped on.
    let mapper = lab.ssh("sudo ls /dev/mapper");
    let mapper = mapper
        .split_whitespace()
        .find(|n| n.contains("swap"))
        .expect("the swap's mapping")
        .to_owned();
    lab.ssh(&format!(
        "sudo swapoff /dev/mapper/{mapper} && sudo cryptsetup close {mapper} && sudo mkswap /dev/vda3 && sudo swapon /dev/vda3"
    ));
    let (code, record, stderr) = lab.verify(&results);
    assert_eq!(
        (code, failed(&record)),
        (1, vec!["verify.swap".to_owned()]),
        "{stderr}"
    );
    let swap = record["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "verify.swap")
        .unwrap();
    assert!(
        swap["value"].as_str().unwrap().contains("/dev/vda3"),
        "{swap:#}"
    );

    let (code, rest) = lab.finish();
    assert_eq!(code, Some(0), "vm-test --serve-ssh:\n{}", rest.join("\n"));
}
