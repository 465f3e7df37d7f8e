//! `vm-test --serve-ssh`: the booted system served over the distribution's
//! real OpenSSH server (Debian's sshd, from the image), so that the host
//! can run `cargo xtask verify` against it as against a server.
//!
//! The network is qemu's user networking (restricted: the guest reaches
//! nothing; the host forwards one port on its 127.0.0.1 to the guest's 22),
//! at the address qemu's DHCP would give (10.0.2.15/24). sshd runs in the
//! image, outside /sysroot: the accounts it reads (/etc/passwd, /etc/group)
//! are the image's, written here from machine.nix's admin; every session is
//! chrooted into /sysroot (`ChrootDirectory`), where the admin's shell,
//! PATH and `sudo` are those of the checklist's procedures (`super::admin`).

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

use crate::admin::ADMIN_PATH;
use crate::port::{say, send};
use crate::program::run_ok;
use lab_protocol::plan::{Plan, ServeSsh, SYSROOT};
use lab_protocol::protocol::Event;

/// qemu's user networking: the guest's address and the network's prefix.
const GUEST_ADDRESS: &str = "10.0.2.15/24";
/// Debian's sshd privilege separation user and its directory.
const PRIVSEP_USER: &str = "sshd";
const PRIVSEP_ID: u32 = 74;
const PRIVSEP_DIR: &str = "/run/sshd";

fn write(path: &str, contents: &str, mode: u32) -> Result<()> {
    if let Some(parent) = std::path::Path::new(path).parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let mut file = std::fs::File::create(path).with_context(|| format!("writing {path}"))?;
    file.write_all(contents.as_bytes())?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// Brings the network up, starts sshd, tells the host, and waits for it.
pub fn serve(
    plan: &Plan,
    serve: &ServeSsh,
    wait_for_host: fn(Duration) -> Result<()>,
) -> Result<Option<String>> {
    let ip = |args: &[&str]| -> Result<()> {
        let mut argv = vec![plan.tools.busybox.clone(), "ip".to_owned()];
        argv.extend(args.iter().map(|a| (*a).to_owned()));
        run_ok(&argv).map(|_| ())
    };
    ip(&["link", "set", "lo", "up"])?;
    ip(&["addr", "add", GUEST_ADDRESS, "dev", "eth0"])
        .context("no eth0: is virtio_net in the image and qemu started with -nic user?")?;
    ip(&["link", "set", "eth0", "up"])?;

    // sshd's StrictModes: the directories above the authorized keys are
    // root's and not writable by others (the image's / may be neither).
    std::os::unix::fs::chown("/", Some(0), Some(0)).context("chown /")?;
    std::fs::set_permissions("/", std::fs::Permissions::from_mode(0o755))?;
    let login = &serve.login;
    let user = &login.user;
    write(
        "/etc/passwd",
        &format!(
            "root:x:0:0:root:/root:{bash}\n{PRIVSEP_USER}:x:{PRIVSEP_ID}:{PRIVSEP_ID}:privilege separation:{PRIVSEP_DIR}:/bin/false\n{user}:x:{uid}:{gid}::{home}:{bash}\n",
            bash = plan.tools.bash,
            uid = login.uid,
            gid = login.gid,
            home = login.home
        ),
        0o644,
    )?;
    let mut group = format!("root:x:0:\n{PRIVSEP_USER}:x:{PRIVSEP_ID}:\n");
    let mut gids = vec![login.gid];
    gids.extend(login.groups.iter().copied());
    gids.sort_unstable();
    gids.dedup();
    for gid in gids.into_iter().filter(|g| *g != 0 && *g != PRIVSEP_ID) {
        let name = if gid == login.gid {
            user.clone()
        } else {
            format!("g{gid}")
        };
        group.push_str(&format!("{name}:x:{gid}:{user}\n"));
    }
    write("/etc/group", &group, 0o644)?;
    write("/etc/ssh/ssh_host_ed25519_key", &serve.host_key, 0o600)?;
    write(
        &format!("/etc/ssh/authorized_keys/{user}"),
        &serve.authorized_key,
        0o644,
    )?;
    std::fs::create_dir_all(PRIVSEP_DIR)?;
    std::fs::set_permissions(PRIVSEP_DIR, std::fs::Permissions::from_mode(0o755))?;
    let home = format!("{SYSROOT}{}", login.home);
    std::fs::create_dir_all(&home)?;
    std::os::unix::fs::chown(&home, Some(login.uid), Some(login.gid))?;
    write(
        "/etc/ssh/sshd_config",
        &format!(
            "Port 22\nListenAddress 0.0.0.0\nHostKey /etc/ssh/ssh_host_ed25519_key\nAuthorizedKeysFile /etc/ssh/authorized_keys/%u\nAllowUsers {user}\nPermitRootLogin no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nUseDNS no\nPidFile none\nChrootDirectory {SYSROOT}\nSetEnv PATH={ADMIN_PATH} LC_ALL=C\n"
        ),
        0o644,
    )?;
    let mut sshd = Command::new(&serve.sshd)
        .args(["-D", "-e", "-f", "/etc/ssh/sshd_config"])
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", serve.sshd))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", 22)).is_err() {
        if let Some(status) = sshd.try_wait()? {
            bail!("sshd exited ({status}) before it listened; its messages are on the console");
        }
        if Instant::now() > deadline {
            let _ = sshd.kill();
            bail!("sshd did not listen on port 22 within 30 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    say(&format!("sshd listens on port 22 for {user}"));
    send(&Event::Serving {});
    let waited = wait_for_host(Duration::from_secs(serve.wait_s));
    let _ = sshd.kill();
    let _ = sshd.wait();
    waited?;
    Ok(Some(format!("served {user} over ssh")))
}
