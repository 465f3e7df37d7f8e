//! The guest agent, the lab VM's /init: the `guest` binary of crates/guest,
//! built by cargo from the workspace this xtask was built from, with the
//! xtask's own profile and target directory, so that it lands beside the
//! xtask binary and always matches the plan this xtask writes. Cargo does
//! nothing when it is up to date; `cargo test` and `cargo xtask` alike get a
//! fresh one without building it themselves.

use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use camino::{Utf8Path, Utf8PathBuf};

use toolbox::process::{Output, Supervised};
use toolbox::progress::Progress;

/// The guest's package and binary (crates/guest/Cargo.toml).
pub const PACKAGE: &str = "guest";
/// A first build of the guest on two cores takes well under this.
const BUILD_TIMEOUT: Duration = Duration::from_secs(1800);

/// Where the running xtask was built: its target directory and profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Build {
    pub target_dir: Utf8PathBuf,
    /// Cargo's name for it (`dev`, `release`, a custom profile).
    pub profile: String,
    /// The directory the profile's binaries go to (`target/debug`).
    pub out_dir: Utf8PathBuf,
}

impl Build {
    /// From the path of a binary cargo built: `<target>/<profile dir>/xtask`,
    /// or a test harness in `<target>/<profile dir>/deps/`.
    pub fn of(exe: &Utf8Path) -> Result<Build> {
        let mut out_dir = exe
            .parent()
            .with_context(|| format!("{exe} has no directory"))?;
        if out_dir.file_name() == Some("deps") {
            out_dir = out_dir.parent().unwrap_or(out_dir);
        }
        let (Some(dir_name), Some(target_dir)) = (out_dir.file_name(), out_dir.parent()) else {
            bail!("{exe} is not in a cargo target directory (target/<profile>/)");
        };
        let profile = match dir_name {
            "debug" => "dev",
            other => other,
        };
        Ok(Build {
            target_dir: target_dir.to_owned(),
            profile: profile.to_owned(),
            out_dir: out_dir.to_owned(),
        })
    }
}

/// Builds (or finds up to date) the guest binary for the running xtask.
pub fn build(progress: &Progress) -> Result<Utf8PathBuf> {
    let exe = Utf8PathBuf::try_from(std::env::current_exe()?)
        .context("the xtask binary's path is not UTF-8")?;
    let build = Build::of(&exe)?;
    let manifest = workspace_manifest();
    let beside = build.out_dir.join(PACKAGE);
    if !manifest.is_file() {
        // A copied xtask binary without its sources: a guest built beside it.
        if beside.is_file() {
            return Ok(beside);
        }
        bail!(
            "the guest agent is built from {manifest}, which is gone, and there is no {beside}: \
             run `cargo build -p {PACKAGE}` in the checkout this xtask came from"
        );
    }
    // The cargo that runs us (`cargo xtask`, `cargo test`), else the PATH's.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    progress.set_message(format!(
        "building the guest agent (cargo build -p {PACKAGE})"
    ));
    let finished = Supervised::new(&cargo)
        .args(["build", "--quiet", "--package", PACKAGE, "--profile"])
        .arg(&build.profile)
        .arg("--target-dir")
        .arg(&build.target_dir)
        .arg("--manifest-path")
        .arg(&manifest)
        .args(["--message-format", "json-render-diagnostics"])
        .timeout(BUILD_TIMEOUT)
        .stdout(Output::keep(16 << 20))
        .stderr(Output::keep(1 << 20))
        .run()
        .context("running cargo to build the guest agent")?;
    if !finished.success() {
        bail!(
            "`cargo build -p {PACKAGE} --profile {}` failed ({}):\n{}",
            build.profile,
            finished
                .status
                .map_or("stopped at its time limit".to_owned(), |s| s.to_string()),
            finished.stderr_text().trim()
        );
    }
    executable(&finished.stdout_text()).with_context(|| {
        format!("cargo built {PACKAGE} but named no executable for it in its messages")
    })
}

/// The workspace's Cargo.toml, from the xtask's own sources.
fn workspace_manifest() -> Utf8PathBuf {
    let manifest_dir = Utf8Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .unwrap_or(manifest_dir)
        .join("Cargo.toml")
}

/// The guest binary's path from cargo's JSON messages.
fn executable(messages: &str) -> Option<Utf8PathBuf> {
    messages
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|message| message["reason"] == "compiler-artifact")
        .filter(|message| message["target"]["name"] == PACKAGE)
        .filter_map(|message| message["executable"].as_str().map(Utf8PathBuf::from))
        .next_back()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_profile_and_target_directory_come_from_the_binary() {
        let build = Build::of(Utf8Path::new("/w/target/debug/xtask")).unwrap();
        assert_eq!(build.profile, "dev");
        assert_eq!(build.target_dir, "/w/target");
        assert_eq!(build.out_dir, "/w/target/debug");
        let harness = Build::of(Utf8Path::new("/t/release/deps/xtask-0123abcd")).unwrap();
        assert_eq!(harness.profile, "release");
        assert_eq!(harness.target_dir, "/t");
        let custom = Build::of(Utf8Path::new("/t/bench-fast/xtask")).unwrap();
        assert_eq!(custom.profile, "bench-fast");
        assert!(Build::of(Utf8Path::new("xtask")).is_err());
    }

    #[test]
    fn the_executable_is_the_guest_artifact() {
        let messages = r#"{"reason":"compiler-artifact","target":{"name":"lab_protocol"},"executable":null}
{"reason":"compiler-artifact","target":{"name":"guest"},"executable":"/t/debug/guest"}
{"reason":"build-finished","success":true}"#;
        assert_eq!(executable(messages).unwrap(), "/t/debug/guest");
        assert_eq!(executable(r#"{"reason":"build-finished"}"#), None);
    }

    /// The real thing: cargo builds the guest for this test binary's profile.
    #[test]
    fn builds_the_guest_beside_the_running_binary() {
        let guest = build(&Progress::hidden()).unwrap();
        let exe = Utf8PathBuf::try_from(std::env::current_exe().unwrap()).unwrap();
        assert_eq!(guest, Build::of(&exe).unwrap().out_dir.join(PACKAGE));
        assert!(guest.is_file());
    }
}
