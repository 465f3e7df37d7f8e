//! What `check` reports: one document per run (`--json` prints it; the
//! schema in docs/check-json.md), the tables every subcommand shows about a
//! layout (`tables`), and the text form of both (`render`).

mod render;
mod tables;

use std::collections::BTreeMap;
use std::process::ExitCode;

use serde::Serialize;

use crate::findings::{Finding, Severity};

pub use render::{render, render_finding, table};
pub use tables::*;

/// Version of the `--json` document (docs/check-json.md).
pub const SCHEMA: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
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
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case", tag = "status")]
pub enum FlakeStatus {
    NotRequested,
    Ran {
        attribute: String,
        /// `--mode flake` only: the whole system's evaluation (the NixOS gate).
        system: Option<crate::flake_eval::SystemEvaluation>,
    },
    NotRun {
        reason: String,
    },
}

/// Everything `check` found about one host.
#[derive(Debug, Clone, Serialize)]
pub struct HostReport {
    pub host: String,
    pub source: String,
    pub flake: FlakeStatus,
    /// Disk sizes used for the geometry, by disk.
    pub disk_sizes: BTreeMap<String, u64>,
    pub tables: Option<Tables>,
    pub findings: Vec<Finding>,
    /// Things the reader should know that are not findings.
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

#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub schema: u32,
    pub mode: Mode,
    pub hosts: Vec<HostReport>,
    pub errors: usize,
    pub warnings: usize,
    pub duration_ms: u64,
}

impl CheckReport {
    pub fn exit_code(&self) -> ExitCode {
        if self.errors > 0 {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        }
    }
}
