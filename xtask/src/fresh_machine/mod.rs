//! `cargo xtask fresh-machine`: proves that the README's two commands work
//! the first time on a fresh Debian 12 machine.
//!
//! It makes a minimal Debian 12 root with debootstrap from Debian's archive
//! (minbase, plus the C linker the README names; the finished root is cached
//! as a tar file under target/fresh-machine/cache), configures the apt
//! sources a fresh Debian 12 install has, makes the host's Rust toolchain
//! available read-only, clones the repository's HEAD into it, and runs
//! exactly the commands of the README's "The two commands" block there,
//! in a mount namespace whose root is the fresh root (pivot_root, not chroot:
//! Nix escapes a chroot), with a clean environment and their own CARGO_HOME.
//!
//! Safety: everything is mounted in a private mount namespace of this
//! process (so no mount can outlive it or be seen by the host), unmounted
//! in reverse order on every path (errors, Ctrl-C, SIGTERM), and the root
//! is only ever removed when nothing is mounted below it, without crossing
//! file systems. It touches no block device; the tests inside create and
//! remove their own loop devices.
//!
//! Exit codes: 0 both commands passed, 1 a README command failed on the
//! fresh root, 2 the proof could not run (not root, no network, ...).

mod root;

use std::io::Write as _;

use std::process::{ExitCode, ExitStatus};
use std::time::Instant;

use anyhow::{bail, Context as _, Result};
use camino::{Utf8Path, Utf8PathBuf};
use serde::Serialize;

pub use root::mounts_below;
use root::{
    ca_bundle, debian_sources, in_root, lock, private_mount_namespace, remove_root, rust_sysroot,
    Mounts,
};
use toolbox::context::Context;
use toolbox::process::{Interrupt, Supervised};
use toolbox::progress::{seconds, Progress};
use toolbox::project::{project_root, revision};
use toolbox::setup;

/// Set by Ctrl-C / SIGTERM: the running step's process group is told to
/// stop, and nothing more starts (the runner's `Interrupt`).
static INTERRUPT: Interrupt = Interrupt::new();

fn interrupted() -> bool {
    INTERRUPT.requested()
}

/// Runs a step's command in its own process group (so that an interruption
/// stops all of it), inheriting our output.
fn run_process(command: Supervised) -> Result<ExitStatus> {
    command.interruptible(&INTERRUPT).inherit_output().status()
}

/// Runs a step's command that must succeed.
fn run_ok(command: Supervised, what: &str) -> Result<()> {
    let status = run_process(command)?;
    anyhow::ensure!(status.success(), "{what} failed ({status})");
    Ok(())
}

/// Debian 12.
pub const SUITE: &str = "bookworm";
/// What a fresh machine has besides minbase, as the README's set-up says:
/// a C linker for Rust (rustup needs it too). Everything else the commands
/// install themselves.
pub const PREREQUISITES: &[&str] = &["gcc", "libc6-dev"];
/// Where the host's Rust toolchain appears inside the root (read-only).
const RUST_IN_ROOT: &str = "/opt/rust";
/// Where the clone of the repository is inside the root.
const REPO_IN_ROOT: &str = "/root/repo";
/// Where the CA bundle of the host goes inside the root: outside
/// /etc/ssl/certs, which ca-certificates rewrites when apt installs it.
const CA_IN_ROOT: &str = "/etc/xtask-fresh-machine/ca-certificates.crt";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The Debian archive for debootstrap and for apt inside the root.
    #[arg(
        long,
        env = "XTASK_FRESH_MIRROR",
        default_value = "http://deb.debian.org/debian"
    )]
    pub mirror: String,
    /// The security archive for apt inside the root.
    #[arg(long, default_value = "http://deb.debian.org/debian-security")]
    pub security_mirror: String,
    /// Make the root with debootstrap again instead of unpacking the cached one.
    #[arg(long)]
    pub refresh: bool,
    /// Keep the root after the run (target/fresh-machine/root) to look around.
    #[arg(long)]
    pub keep: bool,
    /// Install this .deb into the root first (with apt, which fetches its
    /// dependencies), to reproduce a machine that came with it, e.g. a
    /// backport. Repeatable.
    #[arg(long, value_name = "DEB")]
    pub preinstall: Vec<Utf8PathBuf>,
    /// Run only the README's first command (`cargo xtask check`).
    #[arg(long)]
    pub check_only: bool,
    /// Print the steps and their times as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// One timed step of the proof.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub name: String,
    pub seconds: f64,
    /// For the README's commands: their exit code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
}

/// `target/xtask/fresh-machine.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Results {
    #[serde(flatten)]
    pub header: crate::results::Header,
    pub suite: String,
    pub mirror: String,
    pub root_from_cache: bool,
    pub preinstalled: Vec<String>,
    pub commands: Vec<String>,
    pub steps: Vec<Step>,
    pub total_seconds: f64,
}

/// The commands of the README's "The two commands" block, comments removed.
pub fn readme_commands(readme: &str) -> Result<Vec<String>> {
    let section = readme
        .split("\n## ")
        .find(|s| s.starts_with("The two commands"))
        .context("README.md has no \"## The two commands\" section")?;
    let block = section
        .split("```")
        .nth(1)
        .context("the README's \"The two commands\" section has no code block")?;
    let commands: Vec<String> = block
        .lines()
        .skip(1) // the language tag
        .map(|line| {
            line.split_once(" #")
                .map_or(line, |(command, _)| command)
                .trim()
        })
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(str::to_owned)
        .collect();
    anyhow::ensure!(
        !commands.is_empty(),
        "the README's \"The two commands\" block holds no command"
    );
    Ok(commands)
}

struct Proof<'a> {
    args: &'a Args,
    progress: Progress,
    steps: Vec<Step>,
}

impl Proof<'_> {
    fn step<R>(&mut self, name: &str, f: impl FnOnce(&mut Self) -> Result<R>) -> Result<R> {
        let started = Instant::now();
        self.progress.set_message(name.to_owned());
        let result = f(self);
        let took = started.elapsed();
        self.progress.println(format!(
            "fresh-machine: {name}: {}{}",
            seconds(took),
            if result.is_err() { " (failed)" } else { "" }
        ));
        self.steps.push(Step {
            name: name.to_owned(),
            seconds: took.as_secs_f64(),
            exit_code: None,
        });
        result
    }
}

pub fn run(context: &Context, args: Args) -> Result<ExitCode> {
    anyhow::ensure!(
        setup::is_root(),
        "fresh-machine needs root (debootstrap, mount namespaces and mounts; the tests inside use loop devices): run it as root, e.g. in CI"
    );
    // First, while this process has no threads yet.
    private_mount_namespace()?;
    for deb in &args.preinstall {
        anyhow::ensure!(deb.is_file(), "--preinstall {deb}: no such file");
        anyhow::ensure!(
            deb.extension() == Some("deb"),
            "--preinstall {deb}: not a .deb file"
        );
    }
    let readme =
        std::fs::read_to_string(project_root().join("README.md")).context("reading README.md")?;
    let mut commands = readme_commands(&readme)?;
    if args.check_only {
        commands.truncate(1);
    }
    let _ = ctrlc::set_handler(|| INTERRUPT.interrupt());

    let started = Instant::now();
    let base = project_root().join("target").join("fresh-machine");
    std::fs::create_dir_all(base.join("cache")).with_context(|| format!("creating {base}"))?;
    let _lock = lock(&base.join("lock"))?;
    let root = base.join("root");
    let mut proof = Proof {
        args: &args,
        progress: Progress::new("fresh-machine"),
        steps: Vec::new(),
    };
    let state = revision();
    if state.dirty {
        proof.progress.println(
            "fresh-machine: the working tree has uncommitted changes; the proof runs the committed HEAD (a clean clone), as CI does",
        );
    }
    let mut mounts = Mounts { points: Vec::new() };
    let outcome = prove(context, &mut proof, &mut mounts, &root, &base, &commands);
    // Undo the mounts on every path, before anything is removed.
    let unmounted = mounts.unmount_all();
    proof.progress.finish_and_clear();
    let from_cache = matches!(outcome, Ok((_, true)));
    let codes: Vec<Option<i32>> = match &outcome {
        Ok((codes, _)) => codes.clone(),
        Err(_) => Vec::new(),
    };
    if unmounted.is_ok() && !args.keep {
        if let Err(error) = remove_root(&root) {
            eprintln!("fresh-machine: {error:#}");
        }
    } else if args.keep {
        eprintln!("fresh-machine: the root is kept in {root} (chroot {root} /bin/bash)");
    }
    unmounted?;
    let passed = codes.len() == commands.len() && codes.iter().all(|c| *c == Some(0));
    let results = Results {
        header: crate::results::Header::at_revision(
            crate::results::Kind::FreshMachine,
            "-",
            passed,
            state,
        ),
        suite: SUITE.to_owned(),
        mirror: args.mirror.clone(),
        root_from_cache: from_cache,
        preinstalled: args.preinstall.iter().map(|d| d.to_string()).collect(),
        commands: commands.clone(),
        steps: proof.steps.clone(),
        total_seconds: started.elapsed().as_secs_f64(),
    };
    if outcome.is_ok() {
        crate::results::record(crate::results::Kind::FreshMachine, &results, passed)?;
    }
    print_summary(&results);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&results)?);
    }
    outcome?;
    if interrupted() {
        bail!("interrupted; everything it mounted is unmounted");
    }
    // A README command that fails on the fresh root, for whatever reason
    // (exit 1 or 2 inside), is what this proof exists to find.
    Ok(if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn print_summary(results: &Results) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "fresh-machine: steps on a fresh Debian 12 root:");
    for step in &results.steps {
        let _ = writeln!(
            err,
            "  {:>8.1} s  {}{}",
            step.seconds,
            step.name,
            step.exit_code
                .map(|c| format!(" (exit {c})"))
                .unwrap_or_default()
        );
    }
    let _ = writeln!(
        err,
        "  {:>8.1} s  in all ({})",
        results.total_seconds,
        if results.header.passed {
            "the README's commands passed the first time"
        } else {
            "the README's commands did NOT all pass"
        }
    );
}

/// The proof itself; returns each README command's exit code and whether
/// the root came from the cache.
fn prove(
    context: &Context,
    proof: &mut Proof,
    mounts: &mut Mounts,
    root: &Utf8Path,
    base: &Utf8Path,
    commands: &[String],
) -> Result<(Vec<Option<i32>>, bool)> {
    let args = proof.args;
    proof.step("host tools (debootstrap, git)", |_| {
        setup::ensure(
            context,
            &[setup::DEBOOTSTRAP, setup::GIT, setup::MOUNT, setup::UMOUNT],
        )
        .map(|_| ())
    })?;
    let sysroot = rust_sysroot()?;
    let ca = ca_bundle();
    let cached = debian_root(proof, root, base)?;
    proof.step("configure apt sources, DNS, CA bundle", |_| {
        configure_root(root, args, ca.as_deref())
    })?;
    proof.step(
        "mount /proc, /sys, /dev, /run and the Rust toolchain",
        |_| {
            mounts.mount(&["-t", "proc", "proc"], &root.join("proc"))?;
            mounts.bind(Utf8Path::new("/sys"), &root.join("sys"), false)?;
            mounts.bind(Utf8Path::new("/dev"), &root.join("dev"), false)?;
            mounts.mount(
                &["-t", "tmpfs", "-o", "mode=755", "tmpfs"],
                &root.join("run"),
            )?;
            mounts.bind(
                &sysroot,
                &root.join(RUST_IN_ROOT.trim_start_matches('/')),
                true,
            )
        },
    )?;
    proof.step("clone the repository (HEAD)", |_| {
        run_ok(
            Supervised::new("git").args([
                "clone",
                "--quiet",
                project_root().as_str(),
                root.join(REPO_IN_ROOT.trim_start_matches('/')).as_str(),
            ]),
            "git clone",
        )
    })?;
    if !args.preinstall.is_empty() {
        proof.step("preinstall the given packages", |_| {
            let mut inside = Vec::new();
            for deb in &args.preinstall {
                let name = deb.file_name().context("a .deb file name")?;
                std::fs::copy(deb, root.join("tmp").join(name))
                    .with_context(|| format!("copying {deb}"))?;
                inside.push(format!("/tmp/{name}"));
            }
            run_ok(
                in_root(
                    root,
                    &format!(
                        "export DEBIAN_FRONTEND=noninteractive; apt-get update -q && apt-get install -y -q --no-install-recommends {}",
                        inside.join(" ")
                    ),
                ),
                "installing the --preinstall packages",
            )
        })?;
    }
    let codes = run_commands(proof, root, commands)?;
    Ok((codes, cached))
}

/// A minimal Debian 12 root at `root`: unpacked from the cache under `base`,
/// or debootstrapped and cached. Returns whether it came from the cache.
fn debian_root(proof: &mut Proof, root: &Utf8Path, base: &Utf8Path) -> Result<bool> {
    let args = proof.args;
    // Uncompressed: compressing it takes longer than debootstrap itself.
    let cache = base.join("cache").join(format!(
        "debian-12-{SUITE}-minbase-{}.tar",
        PREREQUISITES.join("+")
    ));
    let stamp = cache.with_extension("mirror");
    let cached = !args.refresh
        && cache.is_file()
        && std::fs::read_to_string(&stamp).is_ok_and(|m| m.trim() == args.mirror);
    proof.step("remove the previous root", |_| remove_root(root))?;
    if cached {
        proof.step("unpack the cached Debian 12 root", |_| {
            std::fs::create_dir_all(root)?;
            run_ok(
                Supervised::new("tar").args([
                    "--numeric-owner",
                    "-xpf",
                    cache.as_str(),
                    "-C",
                    root.as_str(),
                ]),
                "unpacking the cached root",
            )
        })?;
    } else {
        proof.step("debootstrap a minimal Debian 12 root", |_| {
            run_ok(
                Supervised::new("debootstrap").args([
                    "--variant=minbase",
                    &format!("--include={}", PREREQUISITES.join(",")),
                    SUITE,
                    root.as_str(),
                    &args.mirror,
                ]),
                "debootstrap",
            )
        })?;
        proof.step("cache the root", |_| {
            let partial = cache.with_extension("partial");
            run_ok(
                Supervised::new("tar").args([
                    "--numeric-owner",
                    "--one-file-system",
                    "-cpf",
                    partial.as_str(),
                    "-C",
                    root.as_str(),
                    ".",
                ]),
                "caching the root",
            )?;
            std::fs::rename(&partial, &cache)?;
            std::fs::write(&stamp, &args.mirror)?;
            Ok(())
        })?;
    }
    Ok(cached)
}

/// apt's sources, no daemons, DNS and the CA bundle in the fresh root.
fn configure_root(root: &Utf8Path, args: &Args, ca: Option<&Utf8Path>) -> Result<()> {
    let _ = std::fs::remove_file(root.join("etc/apt/sources.list"));
    std::fs::create_dir_all(root.join("etc/apt/sources.list.d"))?;
    std::fs::write(
        root.join("etc/apt/sources.list.d/debian.sources"),
        debian_sources(&args.mirror, &args.security_mirror),
    )?;
    // No daemon may start inside a chroot (Debian's policy-rc.d convention).
    let policy = root.join("usr/sbin/policy-rc.d");
    std::fs::write(&policy, "#!/bin/sh\nexit 101\n")?;
    std::fs::set_permissions(&policy, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let _ = std::fs::remove_file(root.join("etc/resolv.conf"));
    std::fs::copy("/etc/resolv.conf", root.join("etc/resolv.conf"))
        .context("copying /etc/resolv.conf into the root")?;
    if let Some(ca) = ca {
        let target = root.join(CA_IN_ROOT.trim_start_matches('/'));
        std::fs::create_dir_all(target.parent().context("the CA's directory")?)?;
        std::fs::copy(ca, &target).with_context(|| format!("copying {ca}"))?;
    }
    Ok(())
}

/// The README's commands in the root, in order, until one fails; their
/// exit codes.
fn run_commands(
    proof: &mut Proof,
    root: &Utf8Path,
    commands: &[String],
) -> Result<Vec<Option<i32>>> {
    let mut codes = Vec::new();
    for command in commands {
        let started = Instant::now();
        proof.progress.set_message(command.clone());
        proof.progress.println(format!(
            "fresh-machine: running `{command}` in the fresh root"
        ));
        let status = proof
            .progress
            .suspend(|| run_process(in_root(root, &format!("cd {REPO_IN_ROOT} && {command}"))))?;
        let took = started.elapsed();
        proof.progress.println(format!(
            "fresh-machine: `{command}`: {} ({status})",
            seconds(took)
        ));
        proof.steps.push(Step {
            name: command.clone(),
            seconds: took.as_secs_f64(),
            exit_code: status.code(),
        });
        codes.push(status.code());
        if !status.success() {
            break;
        }
    }
    Ok(codes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_readme_names_exactly_two_commands() {
        let readme = std::fs::read_to_string(project_root().join("README.md")).unwrap();
        assert_eq!(
            readme_commands(&readme).unwrap(),
            vec!["cargo xtask check", "cargo xtask test"]
        );
    }

    #[test]
    fn commands_lose_their_comments() {
        let readme = "# x\n\n## The two commands\n\n```sh\ncargo xtask check    # is it right?\n# a comment\ncargo xtask test\n```\n\n## More\n";
        assert_eq!(
            readme_commands(readme).unwrap(),
            vec!["cargo xtask check", "cargo xtask test"]
        );
        assert!(readme_commands("# x\n## Other\n").is_err());
    }

    #[test]
    fn mounts_below_a_directory_and_not_beside_it() {
        let mountinfo = "\
22 1 254:1 / / rw,relatime - ext4 /dev/vda rw
40 22 0:5 / /work/t/root/dev rw - devtmpfs udev rw
41 40 0:6 / /work/t/root/dev/pts rw - devpts devpts rw
42 22 0:7 / /work/t/root2 rw - tmpfs tmpfs rw
43 22 0:8 / /work/t/root/with\\040space rw - tmpfs tmpfs rw
";
        assert_eq!(
            mounts_below(mountinfo, Utf8Path::new("/work/t/root")),
            vec![
                "/work/t/root/dev",
                "/work/t/root/dev/pts",
                "/work/t/root/with space"
            ]
        );
        assert!(mounts_below(mountinfo, Utf8Path::new("/work/x")).is_empty());
    }

    #[test]
    fn the_root_gets_the_sources_of_a_fresh_debian_12() {
        let sources = debian_sources("http://m/debian", "http://m/debian-security");
        assert!(sources.contains("Suites: bookworm bookworm-updates"));
        assert!(sources.contains("Suites: bookworm-security"));
    }
}
