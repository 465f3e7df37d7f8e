//! `cargo xtask verify` against the lab VM's freshly installed and rotated
//! system, over a real ssh connection to the distribution's real sshd:
//! `vm-test --serve-ssh` boots the install and the month as vm-test does,
//! then serves the booted system (qemu user networking, restricted, one
//! port forwarded from the host's 127.0.0.1 only) until this test closes
//! its stdin. verify must pass there, and fail, naming the check, on each
//! tamper, which the test makes through the lab's own channel (ssh as the
//! admin with sudo, never verify): compression off, an ESP readable by
//! others, a rollback that failed at the last boot, swap without
//! encryption; and one of the same kind the issue does not list, an old
//! root past retention left behind. Each but the last is undone before the
//! next, so each run fails only the check its tamper touched.
//!
//! A second lab VM, booted at the same time, stands in for a fleet:
//! `verify --all` on a copy of the repository with two hosts whose
//! machine.nix give the two forwarded addresses checks both in parallel,
//! one summary table, one exit code (0 while both pass, 1 once one fails).
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

/// The workstation's side: one admin key, and a known_hosts with each
/// lab's host key at its port, in an ssh_config for `ssh -F`.
struct Workstation {
    config: PathBuf,
    client_pub: PathBuf,
}

fn workstation(dir: &Path, labs: &[(u16, PathBuf)]) -> Workstation {
    let client = keygen(dir, "client");
    let mut known = String::new();
    for (port, key) in labs {
        let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
        known.push_str(&format!("[127.0.0.1]:{port} {public}"));
    }
    std::fs::write(dir.join("known_hosts"), known).unwrap();
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
    Workstation {
        config,
        client_pub: dir.join("client.pub"),
    }
}

/// A lab VM serving its booted system on 127.0.0.1:port.
struct Lab {
    vm: Child,
    port: u16,
    config: PathBuf,
    stderr: mpsc::Receiver<String>,
}

impl Lab {
    /// Starts `vm-test --serve-ssh`; `ready` waits until it serves.
    fn start(port: u16, host_key: &Path, workstation: &Workstation) -> Lab {
        let mut vm = Command::new(env!("CARGO_BIN_EXE_xtask"))
            .args([
                "vm-test",
                "--serve-ssh",
                &port.to_string(),
                "--ssh-host-key",
            ])
            .arg(host_key)
            .arg("--ssh-authorized-key")
            .arg(&workstation.client_pub)
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
        Lab {
            vm,
            port,
            config: workstation.config.clone(),
            stderr: rx,
        }
    }

    fn ready(&self) {
        let mut seen = Vec::new();
        loop {
            match self.stderr.recv_timeout(Duration::from_secs(900)) {
                Ok(line) if line.contains("serving ssh on 127.0.0.1") => return,
                Ok(line) => seen.push(line),
                Err(_) => panic!(
                    "vm-test did not serve ssh (install what it names; a kernel comes with `apt-get install linux-image-cloud-amd64`):\n{}",
                    seen.join("\n")
                ),
            }
        }
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
    let keys = [keygen(dir.path(), "host-a"), keygen(dir.path(), "host-b")];
    let ports = [free_port(), free_port()];
    let workstation = workstation(
        dir.path(),
        &[(ports[0], keys[0].clone()), (ports[1], keys[1].clone())],
    );
    // Both boot at once; the second serves only verify --all.
    let lab = Lab::start(ports[0], &keys[0], &workstation);
    let other = Lab::start(ports[1], &keys[1], &workstation);
    lab.ready();
    other.ready();

    // The fleet: two hosts with the layout, one per lab VM.
    let fleet = fleet(dir.path(), ports);
    let (code, stdout) = verify_all(&fleet, &workstation, &results, false);
    assert_eq!(code, 0, "{stdout}");
    for (host, port) in [("hetzner-cloud", ports[0]), ("hetzner-cloud-b", ports[1])] {
        assert!(
            stdout.contains(&format!("| {host} "))
                && stdout.contains(&format!("{ADMIN}@127.0.0.1:{port}")),
            "{stdout}"
        );
    }

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
    // The fleet with one server wrong: one exit code, the failing host
    // named (as JSON this time: one record per host).
    let (code, stdout) = verify_all(&fleet, &workstation, &results, true);
    assert_eq!(code, 1, "{stdout}");
    let records: Vec<Value> = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("verify --all --json printed no records ({e}): {stdout}"));
    let statuses: Vec<(&str, &str)> = records
        .iter()
        .map(|r| (r["host"].as_str().unwrap(), r["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        statuses,
        [("hetzner-cloud", "FAIL"), ("hetzner-cloud-b", "PASS")],
        "{stdout}"
    );
    assert_eq!(failed(&records[0]), ["verify.mounts"]);
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

    // Not in the list, of the same kind: an old root the last boot's
    // rollback should have deleted (named 40 days before it) is still there.
    let stale = "/btrfs_tmp/@old_roots/20200101T000000Z";
    lab.ssh(&format!("sudo btrfs subvolume create {stale}"));
    let (code, record, stderr) = lab.verify(&results);
    assert_eq!(
        (code, failed(&record)),
        (1, vec!["verify.retention".to_owned()]),
        "{stderr}"
    );
    let retention = record["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "verify.retention")
        .unwrap();
    assert!(
        retention["problem"]
            .as_str()
            .unwrap()
            .contains("20200101T000000Z"),
        "{retention:#}"
    );
    lab.ssh(&format!("sudo btrfs subvolume delete {stale}"));

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

    for lab in [lab, other] {
        let (code, rest) = lab.finish();
        assert_eq!(code, Some(0), "vm-test --serve-ssh:\n{}", rest.join("\n"));
    }
}

/// A copy of the repository's hosts and Nix library with two hosts of the
/// same layout, each machine.nix giving one lab's forwarded address.
fn fleet(dir: &Path, ports: [u16; 2]) -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let root = dir.join("fleet");
    std::fs::create_dir_all(&root).unwrap();
    let copy = |from: &Path, to: &Path| {
        let status = Command::new("cp")
            .arg("-a")
            .arg(from)
            .arg(to)
            .status()
            .unwrap();
        assert!(
            status.success(),
            "cp -a {} {}",
            from.display(),
            to.display()
        );
    };
    for part in ["hosts", "nix", "flake.nix"] {
        copy(&repo.join(part), &root.join(part));
    }
    let servers = root.join("hosts/servers");
    copy(
        &servers.join("hetzner-cloud"),
        &servers.join("hetzner-cloud-b"),
    );
    for (host, port) in [("hetzner-cloud", ports[0]), ("hetzner-cloud-b", ports[1])] {
        let machine = servers.join(host).join("machine.nix");
        let text = std::fs::read_to_string(&machine).unwrap();
        assert!(
            text.contains("sshAddress = null;"),
            "machine.nix has sshAddress"
        );
        std::fs::write(
            &machine,
            text.replace(
                "sshAddress = null;",
                &format!("sshAddress = \"127.0.0.1:{port}\";"),
            ),
        )
        .unwrap();
    }
    root
}

/// `verify --all` on the fleet: its exit code and its stdout (the table
/// and the failed checks, or with `json` the records), with stderr after.
fn verify_all(
    fleet: &Path,
    workstation: &Workstation,
    results: &Path,
    json: bool,
) -> (i32, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_xtask"));
    command
        .args([
            "verify",
            "--all",
            "--device-map",
            "/dev/sda=/dev/vda",
            "--ssh-config",
        ])
        .arg(&workstation.config)
        .arg("--results-dir")
        .arg(results)
        .env("XTASK_PROJECT_ROOT", fleet);
    if json {
        command.arg("--json");
    }
    let output = command.output().unwrap();
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    if !json {
        text.push_str(&String::from_utf8_lossy(&output.stderr));
    }
    (output.status.code().unwrap_or(-1), text)
}
