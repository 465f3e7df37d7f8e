//! What `check` reports: one document per run (`--json` prints it; the
//! schema in docs/check-json.md), the tables every subcommand shows about a
//! layout (`tables`), and the text form of both (`render`).

mod render;
mod tables;

use std::collections::BTreeMap;
use std::process::ExitCode;

use schemars::JsonSchema;
use serde::Serialize;

use layout::findings::{Finding, Severity};

pub use crate::finding_text::render_finding;
pub use render::{render, table};
pub use tables::*;

/// Version of the `--json` document (docs/check-json.md).
pub const SCHEMA: u32 = 1;

/// The `--mode` asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Flake mode when flake.lock exists and Nix can evaluate it, else standalone.
    Auto,
    /// Only the host's plain files, with nix-instantiate; needs no nixpkgs.
    Standalone,
    /// Also the merged NixOS configuration; fails when it cannot run.
    Flake,
}

/// How the flake evaluation went.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case", tag = "status")]
pub enum FlakeStatus {
    /// `--mode standalone`: flake mode was not asked for.
    NotRequested,
    /// Flake mode evaluated `nixosConfigurations.<attribute>`.
    Ran {
        /// The flake attribute, e.g. `hetzner-vps`.
        attribute: String,
        /// `--mode flake` only (else `null`): the whole system's evaluation
        /// (`config.system.build.toplevel.drvPath`), also finding NIX005 when
        /// it fails; recorded in `target/xtask/flake-eval.json` for the deploy
        /// checklist's NixOS gate.
        system: Option<SystemEvaluation>,
    },
    /// Flake mode could not run here (`--mode auto`).
    NotRun {
        /// Why, e.g. no flake.lock yet.
        reason: String,
    },
}

/// Everything `check` found about one host.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct HostReport {
    /// The directory name under `hosts/`, e.g. `hetzner-cloud`.
    pub host: String,
    /// The layout file checked (relative to the repository when inside it).
    pub source: String,
    pub flake: FlakeStatus,
    /// Disk attribute name → size in bytes used for the geometry
    /// (`--disk-size`, else `diskSize` in the host's machine.nix).
    pub disk_sizes: BTreeMap<String, u64>,
    /// `null` when the layout could not be built (syntax, evaluation or model errors).
    pub tables: Option<Tables>,
    /// Errors first, then by code and path.
    pub findings: Vec<Finding>,
    /// Things to know that are not findings (e.g. a disk without a known size).
    pub notes: Vec<String>,
}

impl HostReport {
    pub fn count(&self, severity: Severity) -> usize {
        self.findings
            .iter()
            .filter(|f| f.severity == severity)
            .count()
    }
}

/// The document `cargo xtask check --json` prints.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct CheckReport {
    /// The version of this document: removing or renaming a field bumps it.
    pub schema: u32,
    pub mode: Mode,
    /// One per checked host, sorted by name.
    pub hosts: Vec<HostReport>,
    /// Error findings over all hosts.
    pub errors: usize,
    /// Warning findings over all hosts.
    pub warnings: usize,
    /// Wall time of the whole check.
    pub duration_ms: u64,
    /// `--deep` only: what the real tools did, per host (absent otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deep: Option<Vec<crate::deep::DeepReport>>,
}

impl CheckReport {
    pub fn exit_code(&self) -> ExitCode {
        let disagreements = self
            .deep
            .iter()
            .flatten()
            .any(|d| !d.disagreements.is_empty());
        if self.errors > 0 || disagreements {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        }
    }
}

/// How the evaluation went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum SystemEvaluation {
    /// The system evaluates.
    Evaluated {
        /// E.g. `/nix/store/…-nixos-system-….drv`.
        drv_path: String,
    },
    /// The configuration does not evaluate: a failed assertion, a type error, ….
    Failed {
        /// Nix's message.
        message: String,
    },
    /// Could not run here; the reason.
    NotRun {
        /// Why.
        reason: String,
    },
}
