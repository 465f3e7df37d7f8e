//! The NixOS evaluation gate: the host's whole system,
//! `nixosConfigurations.<attr>.config.system.build.toplevel.drvPath`,
//! evaluated with the flake's pinned inputs (flake.lock), as nixos-anywhere
//! would build it. `cargo xtask check --mode flake` runs it after the layout
//! and records the result in target/xtask/flake-eval.json (the last run) and
//! flake-eval.pass.json (the last evaluation that succeeded), with the
//! revision, the hashes of the files it rests on and the locked inputs.
//!
//! Evaluating the toplevel runs every NixOS assertion (an empty
//! `adminSshKeys` fails here) and every module's types, which standalone mode
//! cannot. Where Nix, flake.lock or the inputs are missing the gate is
//! NOT RUN, with the command that runs it on a machine that has them.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context as _, Result};
use camino::Utf8Path;
use serde::{Deserialize, Serialize};

use crate::nix_eval::{self, RawEvaluation};
use crate::results::{self, Header};
use toolbox::context::Context;
use toolbox::project::Revision;

/// The results kind: target/xtask/flake-eval.json.
pub const KIND: results::Kind = results::Kind::FlakeEval;

/// Evaluating all of NixOS takes tens of seconds, fetching nixpkgs minutes.
const TIMEOUT: Duration = Duration::from_secs(900);

/// target/xtask/flake-eval.json (and .pass.json).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlakeEvalResults {
    #[serde(flatten)]
    pub header: Header,
    /// `nixosConfigurations.<attribute>`.
    pub attribute: String,
    /// What was evaluated, as `nix eval` takes it.
    pub installable: String,
    /// The system's derivation, when it evaluated.
    pub drv_path: Option<String>,
    /// Nix's message, when it did not.
    pub error: Option<String>,
    /// The inputs flake.lock pinned, by name.
    pub locked_inputs: BTreeMap<String, LockedInput>,
}

/// One input as flake.lock pins it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockedInput {
    /// e.g. `github:NixOS/nixpkgs/<rev>`.
    pub locked: String,
    #[serde(rename = "narHash")]
    pub nar_hash: Option<String>,
}

/// What `check` reports of the system's evaluation: the report owns the type.
pub use crate::report::SystemEvaluation;

/// `.#nixosConfigurations.<attribute>.config.system.build.toplevel.drvPath`.
pub fn installable(attribute: &str) -> String {
    format!(".#nixosConfigurations.{attribute}.config.system.build.toplevel.drvPath")
}

/// What evaluates the gate by hand, on a machine with Nix.
pub fn nix_command(attribute: &str) -> String {
    format!("nix eval --raw {}", installable(attribute))
}

/// What to run on a machine with Nix (and network, the first time) to make
/// the gate PASS: pin the inputs once, commit the lock, evaluate.
pub fn how_to_run(root: &Utf8Path, host: &str) -> String {
    let check = format!("cargo xtask check --mode flake --host {host}");
    if root.join("flake.lock").is_file() {
        format!("on a machine with Nix, run `{check}`")
    } else {
        format!(
            "on a machine with Nix (flakes) and network, run `nix flake lock && git add flake.lock && git commit -m 'Pin the flake inputs'`, then `{check}`"
        )
    }
}

/// Why the gate cannot run in this checkout, before trying: no flake.lock.
pub fn cannot_run_here(root: &Utf8Path) -> Option<String> {
    (!root.join("flake.lock").is_file()).then(|| {
        "no flake.lock: the inputs (nixpkgs, disko, impermanence) are not pinned".to_owned()
    })
}

/// Evaluates the system of `nixosConfigurations.<attribute>` in the
/// repository at `root`.
pub fn evaluate(context: &Context, root: &Utf8Path, attribute: &str) -> Result<SystemEvaluation> {
    if let Some(reason) = cannot_run_here(root) {
        return Ok(SystemEvaluation::NotRun { reason });
    }
    Ok(
        match nix_eval::eval_raw(context, &installable(attribute), TIMEOUT)? {
            RawEvaluation::Printed(path) if path.starts_with('/') && path.ends_with(".drv") => {
                SystemEvaluation::Evaluated { drv_path: path }
            }
            RawEvaluation::Printed(other) => SystemEvaluation::Failed {
                message: format!("printed {other:?}, not the path of a derivation"),
            },
            RawEvaluation::Failed(message) if unreachable_inputs(&message) => {
                SystemEvaluation::NotRun {
                    reason: format!(
                        "the flake's inputs are not here and cannot be fetched: {message}"
                    ),
                }
            }
            RawEvaluation::Failed(message) => SystemEvaluation::Failed { message },
            RawEvaluation::NotRun(reason) => SystemEvaluation::NotRun { reason },
        },
    )
}

/// Whether Nix failed because it could not fetch an input, which says
/// nothing about the configuration.
fn unreachable_inputs(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    [
        "unable to download",
        "could not resolve host",
        "couldn't resolve host",
        "failed to connect",
        "offline mode",
        "cannot fetch",
        "unable to fetch",
        "connection timed out",
    ]
    .iter()
    .any(|sign| message.contains(sign))
}

/// flake.lock's inputs of the root flake, each with what it is locked to.
pub fn locked_inputs(root: &Utf8Path) -> Result<BTreeMap<String, LockedInput>> {
    let path = root.join("flake.lock");
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(error) => return Err(error).with_context(|| format!("reading {path}")),
    };
    let lock: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{path} is not JSON"))?;
    let nodes = &lock["nodes"];
    let root_node = lock["root"].as_str().unwrap_or("root");
    let mut inputs = BTreeMap::new();
    if let Some(names) = nodes[root_node]["inputs"].as_object() {
        for (name, node) in names {
            // A follows is a list of names; only direct inputs are nodes.
            let Some(node) = node.as_str() else { continue };
            let locked = &nodes[node]["locked"];
            let text = |key: &str| locked[key].as_str().map(str::to_owned);
            let described = match (text("type").as_deref(), text("owner"), text("repo")) {
                (Some(kind @ ("github" | "gitlab" | "sourcehut")), Some(owner), Some(repo)) => {
                    format!(
                        "{kind}:{owner}/{repo}/{}",
                        text("rev").unwrap_or_else(|| "?".to_owned())
                    )
                }
                _ => text("url")
                    .or_else(|| text("path"))
                    .map(|u| {
                        format!(
                            "{u}{}",
                            text("rev").map(|r| format!("?rev={r}")).unwrap_or_default()
                        )
                    })
                    .unwrap_or_else(|| locked.to_string()),
            };
            inputs.insert(
                name.clone(),
                LockedInput {
                    locked: described,
                    nar_hash: text("narHash"),
                },
            );
        }
    }
    Ok(inputs)
}

/// Records an evaluation of `host`'s system as the last run, and as the proof
/// when it evaluated. Nothing is recorded for an evaluation that did not run.
pub fn record(
    root: &Utf8Path,
    host: &str,
    attribute: &str,
    evaluation: &SystemEvaluation,
    revision: Revision,
) -> Result<Option<results::Recorded>> {
    let (drv_path, error) = match evaluation {
        SystemEvaluation::Evaluated { drv_path } => (Some(drv_path.clone()), None),
        SystemEvaluation::Failed { message } => (None, Some(message.clone())),
        SystemEvaluation::NotRun { .. } => return Ok(None),
    };
    let passed = drv_path.is_some();
    let results = FlakeEvalResults {
        header: Header::at_revision(KIND, host, passed, revision),
        attribute: attribute.to_owned(),
        installable: installable(attribute),
        drv_path,
        error,
        locked_inputs: locked_inputs(root)?,
    };
    results::record(KIND, &results, passed).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gate_names_the_exact_command() {
        assert_eq!(
            nix_command("hetzner-vps"),
            "nix eval --raw .#nixosConfigurations.hetzner-vps.config.system.build.toplevel.drvPath"
        );
        let dir = tempfile::tempdir().unwrap();
        let root = Utf8Path::from_path(dir.path()).unwrap();
        assert!(how_to_run(root, "hetzner-cloud").contains("nix flake lock"));
        assert!(cannot_run_here(root).unwrap().contains("no flake.lock"));
        assert_eq!(
            evaluate(&Context::default(), root, "hetzner-vps").unwrap(),
            SystemEvaluation::NotRun {
                reason: cannot_run_here(root).unwrap()
            }
        );
        std::fs::write(root.join("flake.lock"), "{}").unwrap();
        assert_eq!(
            how_to_run(root, "hetzner-cloud"),
            "on a machine with Nix, run `cargo xtask check --mode flake --host hetzner-cloud`"
        );
    }

    #[test]
    fn network_failures_are_not_findings() {
        assert!(unreachable_inputs(
            "unable to download 'https://api.github.com/repos/NixOS/nixpkgs/tarball/abc': Couldn't resolve host name (6)"
        ));
        assert!(!unreachable_inputs(
            "Failed assertions:\n- hbohlen has no SSH key"
        ));
    }

    #[test]
    fn reads_the_locked_inputs() {
        let dir = tempfile::tempdir().unwrap();
        let root = Utf8Path::from_path(dir.path()).unwrap();
        assert!(locked_inputs(root).unwrap().is_empty());
        std::fs::write(
            root.join("flake.lock"),
            r#"{"nodes":{
                "nixpkgs":{"locked":{"type":"github","owner":"NixOS","repo":"nixpkgs","rev":"abc123","narHash":"sha256-x"}},
                "disko":{"locked":{"type":"git","url":"https://example.org/disko","rev":"def"}},
                "root":{"inputs":{"nixpkgs":"nixpkgs","disko":"disko","other":["nixpkgs"]}}},
               "root":"root","version":7}"#,
        )
        .unwrap();
        let inputs = locked_inputs(root).unwrap();
        assert_eq!(inputs["nixpkgs"].locked, "github:NixOS/nixpkgs/abc123");
        assert_eq!(inputs["nixpkgs"].nar_hash.as_deref(), Some("sha256-x"));
        assert_eq!(inputs["disko"].locked, "https://example.org/disko?rev=def");
        assert_eq!(inputs.len(), 2);
    }
}
