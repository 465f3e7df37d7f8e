//! The NixOS backend: the flake's own VM test (nix/tests, wired as
//! `checks.x86_64-linux.vm-test`), which boots the real host configuration
//! with disko on a test-sized disk and reboots twice. It needs Nix, the
//! flake's inputs (nixpkgs, disko) and ideally KVM; where those are
//! missing it stops at once and says which.

use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

use crate::nix::NixError;
use crate::project::project_root;
use crate::results::{CheckRecord, Header, VmTestResults};
use crate::setup;

pub const CHECK_ATTRIBUTE: &str = "checks.x86_64-linux.vm-test";
/// Evaluating the test must not hang on a network that is not there.
const EVAL_TIMEOUT: Duration = Duration::from_secs(180);

fn nix_command(nix: &camino::Utf8Path) -> Command {
    let mut command = Command::new(nix);
    command
        .current_dir(project_root())
        .args(["--extra-experimental-features", "nix-command flakes"])
        .args(["--option", "connect-timeout", "5"]);
    command
}

/// Why this machine cannot run the NixOS backend, if it cannot.
pub fn missing_prerequisites() -> Option<String> {
    let root = project_root();
    if !root.join("flake.nix").is_file() {
        return Some(format!(
            "no flake.nix in {root}: the NixOS backend runs `nix build .#{CHECK_ATTRIBUTE}`, which the flake does not define yet"
        ));
    }
    if !root.join("flake.lock").is_file() {
        return Some(
            "no flake.lock: pin the inputs once with `nix flake lock` (needs network access)"
                .to_owned(),
        );
    }
    None
}

pub fn run(context: &crate::context::Context, host: &str) -> Result<ExitCode> {
    if let Some(reason) = missing_prerequisites() {
        bail!("the NixOS backend cannot run here: {reason}");
    }
    let found = setup::ensure(context, &[setup::NIX])?;
    let nix = found.path(setup::NIX)?;
    let attribute = format!(".#{CHECK_ATTRIBUTE}");
    let started = Instant::now();

    // Evaluate first: without nixpkgs in the store (or a network) this fails
    // in seconds, where a build would try to download for minutes.
    eprintln!("nixos backend: evaluating {attribute}");
    let mut eval = nix_command(nix);
    eval.args(["eval", "--raw", &format!("{attribute}.drvPath")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = eval
        .spawn()
        .with_context(|| format!("running {nix} eval"))?;
    let output = wait_with_timeout(child, EVAL_TIMEOUT)?;
    let Some(output) = output else {
        bail!(
            "the NixOS backend cannot run here: evaluating {attribute} took longer than {} s (no binary cache or network?)",
            EVAL_TIMEOUT.as_secs()
        );
    };
    if !output.status.success() {
        let error = NixError::parse(&String::from_utf8_lossy(&output.stderr));
        bail!(
            "the NixOS backend cannot run here: {attribute} does not evaluate: {}\n  it needs the flake's inputs (nixpkgs, disko) in the Nix store or a network to fetch them; the lab backend (the default) needs neither",
            error.message
        );
    }

    eprintln!("nixos backend: nix build -L {attribute}");
    let status = nix_command(nix)
        .args(["build", "-L", "--no-link", &attribute])
        .status()
        .with_context(|| format!("running {nix} build"))?;
    let passed = status.success();
    let results = VmTestResults {
        header: Header::now("vm-test", host, passed),
        backend: "nixos".to_owned(),
        accelerator: if std::path::Path::new("/dev/kvm").exists() {
            "kvm"
        } else {
            "tcg"
        }
        .to_owned(),
        kernel: String::new(),
        disk_bytes: 0,
        requested: crate::results::VmTestRequest {
            boots: 0,
            disk_size: None,
            power_cuts: 0,
            boot_timeout_s: None,
            thorough: false,
        },
        boots: Vec::new(),
        checks: vec![CheckRecord {
            boot: 0,
            name: "nixos-test".to_owned(),
            passed,
            measured: status.to_string(),
            expected: format!("nix build {attribute} succeeds"),
        }],
        figures: Default::default(),
        wall_ms: started.elapsed().as_millis() as u64,
        procedures: Vec::new(),
    };
    // Shown as the last run; the NixOS test records no boots of the host's
    // disk, so it never becomes the deploy gate's proof.
    let path = crate::results::record("vm-test", &results, false)?.run;
    eprintln!("results: {}", crate::project::display_path(&path));
    Ok(if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn wait_with_timeout(
    mut child: std::process::Child,
    timeout: Duration,
) -> Result<Option<std::process::Output>> {
    let started = Instant::now();
    loop {
        if child.try_wait()?.is_some() {
            return Ok(Some(child.wait_with_output()?));
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
