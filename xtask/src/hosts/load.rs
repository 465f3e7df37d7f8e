//! Loading a host: evaluate its files with Nix (nix/lib/eval-host.nix),
//! build the typed layout, read machine.nix and rollback.nix, and run the
//! host rules. Every command that needs a host's layout starts here.

use anyhow::Result;
use camino::Utf8Path;
use serde_json::Value;

use super::{Host, Machine};
use crate::findings::{Finding, Severity};
use crate::layout::build::{build, Evaluated};
use crate::layout::positions::Positions;
use crate::layout::Layout;
use crate::nix::Nix;
use crate::project::display_path;
use crate::rules;

/// The evaluated layout, its findings (the host rules' included), and
/// where its attributes are written.
pub struct Loaded {
    pub layout: Option<Layout>,
    pub findings: Vec<Finding>,
    pub machine: Machine,
    pub positions: Positions,
    /// rollback.nix, evaluated: `None` when the host has none, or when the
    /// evaluation failed (then `findings` say why).
    pub rollback: Option<Value>,
}

/// Evaluates and builds a host's layout (standalone mode).
pub fn load(nix: &Nix, host: &Host, layout_file: &Utf8Path) -> Result<Loaded> {
    let mut evaluation = match nix.evaluate_host(host, layout_file)? {
        Ok(value) => value,
        Err(findings) => {
            return Ok(Loaded {
                layout: None,
                findings,
                machine: Machine::default(),
                positions: Positions::default(),
                rollback: None,
            })
        }
    };
    let mut findings = Vec::new();
    let machine = match serde_json::from_value::<Option<Machine>>(evaluation["machine"].clone()) {
        Ok(machine) => machine.unwrap_or_default(),
        Err(error) => {
            findings.push(Finding::new(
                "MODEL001",
                Severity::Error,
                crate::findings::AttrPath::new(["machine"]),
                format!("{}: {error}", host.machine_file.as_deref().map(display_path).unwrap_or_default()),
                "machine.nix holds plain data: strings for flakeAttribute and diskSize, a list of strings for firmware, partitionSizes with strings for biosBoot, esp, swap and btrfs, partitionSizeDeviations with { size; reason; } for those.",
            ));
            Machine::default()
        }
    };
    let mut trees = |key: &str| match evaluation.get_mut(key).map(Value::take) {
        Some(Value::Array(trees)) => Positions::new(trees),
        _ => Positions::default(),
    };
    let machine_positions = trees("machinePositions");
    let rollback_positions = trees("rollbackPositions");
    let rollback = match evaluation.get_mut("rollback").map(Value::take) {
        None | Some(Value::Null) => None,
        Some(value) => Some(value),
    };
    // Taken, not cloned: for huge layouts the position trees are most of the evaluation.
    let positions = Positions::new(match evaluation.get_mut("positions").map(Value::take) {
        Some(Value::Array(trees)) => trees,
        _ => Vec::new(),
    });
    let (layout, built) = build(&Evaluated {
        host: &host.name,
        source: layout_file,
        layout: &evaluation["layout"],
        persistence: &evaluation["persistence"],
    });
    findings.extend(built);
    findings.extend(rules::host::findings(
        layout.as_ref(),
        &rules::host::HostFiles {
            host,
            machine: &machine,
            machine_positions: &machine_positions,
            rollback: rollback.as_ref(),
            rollback_positions: &rollback_positions,
        },
    ));
    Ok(Loaded {
        layout,
        findings,
        machine,
        positions,
        rollback,
    })
}
