//! The NixOS backend: the flake's own VM test (nix/tests, wired as
//! `checks.x86_64-linux.vm-test`), which boots the real host configuration
//! with disko on a test-sized disk and reboots twice. It needs Nix, the
//! flake's inputs (nixpkgs, disko) and ideally KVM; where those are
//! missing it stops at once and says which.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::nix_eval::NixError;
use crate::results::{CheckRecord, Header, VmTestResults};
use toolbox::process::{Output, Supervised};
use toolbox::project::project_root;
use toolbox::setup;

pub const CHECK_ATTRIBUTE: &str = "checks.x86_64-linux.vm-test";

/// The flake's NixOS VM tests and their command: the checklist lists them.
pub use crate::deploy_checklist::disposition::{check_command, VM_TESTS};

/// Evaluating the test must not hang on a network that is not there.
const EVAL_TIMEOUT: Duration = Duration::from_secs(180);
/// What is kept of the evaluation's messages; the rest is read and dropped
/// (a `throw` may carry a huge string).
const EVAL_ERROR_BYTES: u64 = 4 << 20;

/// `nix` on the supervised runner (`toolbox::process`), in the project, with
/// flakes and a short connect timeout.
fn nix_command(nix: &camino::Utf8Path) -> Supervised {
    Supervised::new(nix)
        .current_dir(project_root())
        .args(["--extra-experimental-features", "nix-command flakes"])
        .args(["--option", "connect-timeout", "5"])
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

pub fn run(context: &toolbox::context::Context, host: &str) -> Result<ExitCode> {
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
    let eval = nix_command(nix).args(["eval", "--raw", &format!("{attribute}.drvPath")]);
    evaluate(eval, &attribute, EVAL_TIMEOUT)?;

    eprintln!("nixos backend: nix build -L {attribute}");
    // No time limit: building the test (and a VM boot in it) takes what it
    // takes; its log goes to the terminal, and Ctrl-C reaches nix too.
    let built = nix_command(nix)
        .args(["build", "-L", "--no-link", &attribute])
        .stdout(Output::Inherit)
        .stderr(Output::Inherit)
        .run()?;
    let passed = built.success();
    let status = built
        .status
        .map_or_else(|| "stopped".to_owned(), |status| status.to_string());
    let results = VmTestResults {
        header: Header::now(crate::results::Kind::VmTest, host, passed),
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
            drills: false,
        },
        boots: Vec::new(),
        checks: vec![CheckRecord {
            boot: 0,
            name: "nixos-test".to_owned(),
            passed,
            measured: status,
            expected: format!("nix build {attribute} succeeds"),
        }],
        figures: Default::default(),
        wall_ms: started.elapsed().as_millis() as u64,
        procedures: Vec::new(),
    };
    // Shown as the last run; the NixOS test records no boots of the host's
    // disk, so it never becomes the deploy gate's proof.
    let path = crate::results::record(crate::results::Kind::VmTest, &results, false)?.run;
    eprintln!("results: {}", toolbox::project::display_path(&path));
    Ok(if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Runs the evaluation `eval` within `timeout`, its outputs read while it
/// runs (so that Nix never blocks on a full pipe of messages, which would
/// look like a slow evaluation); `Err` says why the backend cannot run.
fn evaluate(eval: Supervised, attribute: &str, timeout: Duration) -> Result<()> {
    let finished = eval
        .timeout(timeout)
        .stdout(Output::keep(1 << 20))
        .stderr(Output::keep(EVAL_ERROR_BYTES))
        .run()?;
    if finished.stopped() {
        bail!(
            "the NixOS backend cannot run here: evaluating {attribute} took longer than {} s (no binary cache or network?)",
            timeout.as_secs()
        );
    }
    if !finished.success() {
        let error = NixError::parse(&finished.stderr_text());
        bail!(
            "the NixOS backend cannot run here: {attribute} does not evaluate: {}\n  it needs the flake's inputs (nixpkgs, disko) in the Nix store or a network to fetch them; the lab backend (the default) needs neither",
            error.message
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Supervised {
        Supervised::new("sh").args(["-c", script])
    }

    #[test]
    fn an_evaluation_that_prints_more_than_a_pipe_holds_is_not_taken_for_a_timeout() {
        // 1 MiB of messages, 16 times what a pipe holds, before the answer:
        // a runner that did not read them while waiting would see the child
        // block and stop it at the time limit.
        let chatty =
            sh("head -c 1048576 /dev/zero | tr '\\0' w >&2; echo /nix/store/x-vm-test.drv");
        evaluate(chatty, ".#vm-test", Duration::from_secs(60)).unwrap();

        // A failure after 200 KB of trace is reported as Nix's own message.
        let failing = sh(
            "head -c 200000 /dev/zero | tr '\\0' w >&2; echo >&2; echo 'error: attribute missing' >&2; exit 1",
        );
        let error = evaluate(failing, ".#vm-test", Duration::from_secs(60))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains(".#vm-test does not evaluate: attribute missing"),
            "{error}"
        );

        let hanging = sh("exec sleep 30");
        let error = evaluate(hanging, ".#vm-test", Duration::from_millis(300))
            .unwrap_err()
            .to_string();
        assert!(error.contains("took longer than"), "{error}");
    }
}
