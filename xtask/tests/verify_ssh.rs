//! `cargo xtask verify` against the distribution's real OpenSSH server
//! (Debian's openssh-server) and real sudo, on 127.0.0.1 of a network
//! namespace this test makes: no packet can leave it.
//!
//! The server is this machine (in its own mount namespace, where a tmpfs
//! /run and copies of /etc/passwd, /etc/shadow, /etc/group and /etc/sudoers
//! add an admin with passwordless sudo and a user without sudo), so the
//! layout checks run for real and fail: this machine does not have the
//! host's disk. What this proves: the login as the admin with the user's
//! ssh config, the host key recorded as ssh saw it, the checks sent and
//! judged one by one (exit 1, each failure named with what was seen), the
//! record, and exit 2 for an unknown or changed host key, an unreachable
//! server and an admin without sudo. That every check passes on a server
//! with the layout, and fails on each tamper, is tests/verify_lab.rs (the
//! lab VM served over sshd).
//!
//! Needs root (namespaces, mounts); CI runs it as root.

use std::io::Write as _;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const PORT: u16 = 2222;
const ADMIN: &str = "verifyadmin";
const NO_SUDO: &str = "verifynosudo";
const HOST: &str = "hetzner-cloud";

fn need(program: &str, package: &str) -> PathBuf {
    let found = which::which(program)
        .or_else(|_| which::which(format!("/usr/sbin/{program}")))
        .unwrap_or_else(|_| {
            panic!("{program} is missing: apt-get install {package} (cargo xtask test installs it)")
        });
    found
}

fn run(program: &Path, args: &[&str]) -> String {
    let output = Command::new(program).args(args).output().unwrap();
    assert!(
        output.status.success(),
        "{} {args:?}: {}",
        program.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

struct Server {
    dir: tempfile::TempDir,
    sshd: Child,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.sshd.kill();
        let _ = self.sshd.wait();
    }
}

impl Server {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// An sshd on 127.0.0.1:PORT of this thread's own network namespace.
fn start_server() -> Server {
    // SAFETY: plain queries and a per-thread namespace switch: the test's
    // thread (and the children it spawns) get a network namespace with
    // only a loopback interface; other threads keep the host's.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "verify_ssh needs root (network and mount namespaces); CI runs it as root"
    );
    assert_eq!(
        unsafe { libc::unshare(libc::CLONE_NEWNET) },
        0,
        "unshare(CLONE_NEWNET): {}",
        std::io::Error::last_os_error()
    );
    let busybox = need("busybox", "busybox-static");
    run(&busybox, &["ip", "link", "set", "lo", "up"]);

    let sshd = need("sshd", "openssh-server");
    let keygen = need("ssh-keygen", "openssh-client");
    need("sudo", "sudo");
    let unshare = need("unshare", "util-linux");

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    let key = |name: &str| {
        let path = d.join(name);
        run(
            &keygen,
            &[
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                name,
                "-f",
                path.to_str().unwrap(),
            ],
        );
    };
    key("host_ed25519");
    key("other_host_ed25519");
    key("client_ed25519");
    let client_pub = std::fs::read_to_string(d.join("client_ed25519.pub")).unwrap();
    let host_pub = std::fs::read_to_string(d.join("host_ed25519.pub")).unwrap();
    let other_pub = std::fs::read_to_string(d.join("other_host_ed25519.pub")).unwrap();

    // The users, in copies of the account files bound over the real ones
    // in sshd's own mount namespace.
    let mut passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    let mut shadow = std::fs::read_to_string("/etc/shadow").unwrap_or_default();
    let mut group = std::fs::read_to_string("/etc/group").unwrap();
    for (user, id) in [(ADMIN, 64_020), (NO_SUDO, 64_021)] {
        let home = d.join("home").join(user);
        std::fs::create_dir_all(&home).unwrap();
        std::os::unix::fs::chown(&home, Some(id), Some(id)).unwrap();
        passwd.push_str(&format!(
            "{user}:x:{id}:{id}::{}:/bin/bash\n",
            home.display()
        ));
        shadow.push_str(&format!("{user}:*:19000:0:99999:7:::\n"));
        group.push_str(&format!("{user}:x:{id}:\n"));
        std::fs::create_dir_all(d.join("authorized")).unwrap();
        std::fs::write(d.join("authorized").join(user), &client_pub).unwrap();
    }
    std::fs::write(d.join("passwd"), passwd).unwrap();
    std::fs::write(d.join("shadow"), shadow).unwrap();
    std::fs::write(d.join("group"), group).unwrap();
    std::fs::write(
        d.join("sudoers"),
        // Debian's own defaults (secure_path), then the admin as NixOS's
        // wheel with wheelNeedsPassword = false.
        format!("Defaults secure_path=\"/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\"\nroot ALL=(ALL:ALL) ALL\n{ADMIN} ALL=(ALL:ALL) NOPASSWD: ALL\n"),
    )
    .unwrap();
    std::fs::set_permissions(d.join("sudoers"), std::fs::Permissions::from_mode(0o440)).unwrap();
    std::fs::set_permissions(d.join("shadow"), std::fs::Permissions::from_mode(0o640)).unwrap();
    std::fs::write(
        d.join("sshd_config"),
        format!(
            "ListenAddress 127.0.0.1:{PORT}\nHostKey {}\nAuthorizedKeysFile {}/authorized/%u\nPidFile {}/sshd.pid\nUsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin no\nStrictModes no\nAllowUsers {ADMIN} {NO_SUDO}\n",
            d.join("host_ed25519").display(),
            d.display(),
            d.display()
        ),
    )
    .unwrap();
    // The workstation's side: its known_hosts and keys, through ssh -F.
    std::fs::write(
        d.join("known_hosts"),
        format!("[127.0.0.1]:{PORT} {host_pub}"),
    )
    .unwrap();
    std::fs::write(
        d.join("changed_known_hosts"),
        format!("[127.0.0.1]:{PORT} {other_pub}"),
    )
    .unwrap();
    std::fs::write(d.join("empty_known_hosts"), "").unwrap();
    for known in ["known_hosts", "changed_known_hosts", "empty_known_hosts"] {
        std::fs::write(
            d.join(format!("ssh_config.{known}")),
            format!(
                "Host *\n  IdentityFile {}\n  IdentitiesOnly yes\n  UserKnownHostsFile {}\n  GlobalKnownHostsFile /dev/null\n",
                d.join("client_ed25519").display(),
                d.join(known).display()
            ),
        )
        .unwrap();
    }
    let script = format!(
        "set -e; mount --make-rprivate /; mount -t tmpfs -o mode=0755 run /run; mkdir -m 0755 /run/sshd; \
         for f in passwd shadow group sudoers; do mount --bind {d}/$f /etc/$f; done; \
         exec {sshd} -D -e -f {d}/sshd_config",
        d = d.display(),
        sshd = sshd.display()
    );
    let log = std::fs::File::create(d.join("sshd.log")).unwrap();
    let child = Command::new(&unshare)
        .args(["--mount", "--", "sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let server = Server { dir, sshd: child };
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", PORT)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "sshd did not listen on 127.0.0.1:{PORT}: {}",
            std::fs::read_to_string(server.path("sshd.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    server
}

fn verify(server: &Server, target: &str, known: &str) -> (i32, Value, String) {
    let results = server.path("results");
    let output = assert_cmd::Command::cargo_bin("xtask")
        .unwrap()
        .args(["verify", "--host", HOST, target, "--json", "--ssh-config"])
        .arg(server.path(&format!("ssh_config.{known}")))
        .arg("--results-dir")
        .arg(&results)
        .env("XTASK_NO_INSTALL", "1")
        .timeout(Duration::from_secs(600))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let record: Value = serde_json::from_slice(
        &std::fs::read(results.join(format!("verify-{HOST}.json"))).unwrap_or_default(),
    )
    .unwrap_or(Value::Null);
    (output.status.code().unwrap_or(-1), record, stderr)
}

fn check<'a>(record: &'a Value, id: &str) -> &'a Value {
    record["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no check {id} in {record:#}"))
}

#[test]
fn verify_over_a_real_sshd() {
    let server = start_server();
    let admin = format!("{ADMIN}@127.0.0.1:{PORT}");

    // This machine is not the server the layout describes: the checks run
    // over ssh, as the admin with sudo, and fail, each saying what it saw.
    let (code, record, stderr) = verify(&server, &admin, "known_hosts");
    assert_eq!(code, 1, "{stderr}\n{record:#}");
    assert_eq!(record["status"], "FAIL", "{record:#}");
    let keygen = need("ssh-keygen", "openssh-client");
    let fingerprint = run(
        &keygen,
        &[
            "-l",
            "-f",
            server.path("host_ed25519.pub").to_str().unwrap(),
        ],
    );
    let sha = fingerprint.split_whitespace().nth(1).unwrap();
    assert_eq!(
        record["host_key"].as_str().unwrap(),
        format!("ssh-ed25519 {sha}"),
        "the record's host key is the key sshd served"
    );
    // The admin's commands ran as root through sudo: the mounts check saw
    // this machine's mount table (no Btrfs mounts of the layout).
    let mounts = check(&record, "verify.mounts");
    assert_eq!(mounts["status"], "FAIL", "{mounts:#}");
    assert!(
        mounts["problem"]
            .as_str()
            .unwrap()
            .contains("no line starts with"),
        "{mounts:#}"
    );
    let swap = check(&record, "verify.swap");
    assert_ne!(swap["status"], "PASS", "{swap:#}");
    // Every command sent is on the read-only list, and nothing that writes
    // (fstrim, touch, rm, reboot) was sent.
    let mut sent = 0;
    for c in record["checks"].as_array().unwrap() {
        for command in c["commands"].as_array().unwrap() {
            let line = command["line"].as_str().unwrap();
            assert_eq!(xtask::verify::allowlist::check(line), Ok(()), "{line}");
            sent += 1;
        }
    }
    assert!(sent >= 8, "{record:#}");
    let text = serde_json::to_string(&record).unwrap();
    assert!(!text.contains("\"line\":\"sudo fstrim"), "fstrim was sent");

    // A host key ssh does not know, and one that changed: exit 2, nothing checked.
    for known in ["empty_known_hosts", "changed_known_hosts"] {
        let (code, record, stderr) = verify(&server, &admin, known);
        assert_eq!(code, 2, "{known}: {stderr}");
        assert!(stderr.contains("host key"), "{known}: {stderr}");
        assert_eq!(record["status"], "ERROR", "{known}: {record:#}");
        assert!(record["checks"].as_array().unwrap().is_empty());
    }
    // Nobody listening: exit 2.
    let (code, _, stderr) = verify(
        &server,
        &format!("{ADMIN}@127.0.0.1:{}", PORT + 1),
        "known_hosts",
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("cannot be reached"), "{stderr}");
    // A login without sudo: exit 2, said so.
    let (code, _, stderr) = verify(
        &server,
        &format!("{NO_SUDO}@127.0.0.1:{PORT}"),
        "known_hosts",
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("cannot use sudo"), "{stderr}");
    let _ = std::io::stderr().flush();
    if std::env::var_os("VERIFY_SSH_SHOW").is_some() {
        let (_, record, _) = verify(&server, &admin, "known_hosts");
        eprintln!("{}", serde_json::to_string_pretty(&record).unwrap());
    }
}
