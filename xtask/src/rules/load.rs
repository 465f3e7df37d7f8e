//! Loading a host: evaluate its files with Nix (nix/lib/eval-host.nix),
//! build the typed layout, read machine.nix and rollback.nix, and run the
//! host rules. Every command that needs a host's layout starts here. It sits
//! with the rules (above `hosts`), because loading runs them.

use anyhow::{bail, Context as _, Result};
use camino::Utf8Path;
use serde_json::Value;

use crate::finding_text::render_finding;
use crate::hosts::{Host, Machine, Subject};
use crate::nix_eval::{HostSources, Nix};
use crate::rules;
use layout::build::{build, Evaluated};
use layout::findings::{Finding, Severity};
use layout::positions::Positions;
use layout::Layout;
use toolbox::context::Context;
use toolbox::project::display_path;

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
    let mut evaluation = match nix.evaluate_host(&HostSources {
        layout: layout_file,
        persistence: host.persistence_file.as_deref(),
        machine: host.machine_file.as_deref(),
        rollback: host.rollback_file.as_deref(),
    })? {
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
                layout::findings::AttrPath::new(["machine"]),
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

/// Evaluates host `name` of the repository at `root` with nix-instantiate.
/// Fails (exit 2) when the layout does not build: the docs would be fiction.
pub fn load_subject(context: &Context, root: &Utf8Path, name: &str) -> Result<Subject> {
    let host = crate::hosts::find_in(root, name)?;
    let nix = Nix::locate(context)?;
    let Loaded {
        layout,
        findings,
        machine,
        ..
    } = load(&nix, &host, &host.layout_file)?;
    let Some(layout) = layout else {
        let mut shown = String::new();
        for finding in findings.iter().filter(|f| f.severity == Severity::Error) {
            render_finding(&mut shown, finding);
        }
        bail!(
            "the layout of {name} does not build, so there is nothing true to document:\n{shown}run `cargo xtask check --host {name}` and fix it first"
        );
    };
    let relative = |path: &Utf8Path| {
        path.strip_prefix(root)
            .map(Utf8Path::to_string)
            .unwrap_or_else(|_| path.to_string())
    };
    let mut sources = vec![relative(&host.layout_file)];
    sources.extend(host.persistence_file.as_deref().map(relative));
    sources.extend(host.machine_file.as_deref().map(relative));
    Subject::new(name, sources, layout, machine)
        .with_context(|| format!("reading the machine facts of {name}"))
}
