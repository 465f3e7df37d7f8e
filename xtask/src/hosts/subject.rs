//! A host as the generated pages and the deploy checklist see it: its
//! layout, built without errors, with the machine's facts and disk sizes.

use std::collections::BTreeMap;

use anyhow::{bail, Context as _, Result};
use camino::Utf8Path;

use super::{load, Loaded, Machine};
use super::{Firmware, Model};
use crate::context::Context;
use crate::findings::Severity;
use crate::layout::Layout;
use crate::nix::Nix;
use crate::report::render_finding;
use crate::report::Tables;

/// What the reference is generated from: one host's evaluated files.
#[derive(Debug, Clone)]
pub struct Subject {
    pub host: String,
    /// The files read, relative to the repository root.
    pub sources: Vec<String>,
    pub layout: Layout,
    pub machine: Machine,
    /// Disk sizes by disk key, from machine.nix; disks without one get no geometry.
    pub disk_sizes: BTreeMap<String, u64>,
}

impl Subject {
    /// Builds the subject from a layout and machine facts (no Nix involved).
    pub fn new(
        host: &str,
        sources: Vec<String>,
        layout: Layout,
        machine: Machine,
    ) -> Result<Subject> {
        let mut disk_sizes = BTreeMap::new();
        for disk in &layout.disks {
            if let Some(bytes) = machine.disk_bytes(&disk.key)? {
                disk_sizes.insert(disk.key.clone(), bytes);
            }
        }
        Ok(Subject {
            host: host.to_owned(),
            sources,
            layout,
            machine,
            disk_sizes,
        })
    }

    /// Mounts, effective options and geometry, derived once.
    pub fn model(&self) -> Model<'_> {
        // The tables do not depend on the firmware; only rules do.
        Model::new(&self.layout, &self.disk_sizes, Firmware::default())
    }

    pub fn tables(&self) -> Tables {
        Tables::new(&self.model())
    }

    /// The flake attribute that builds the host (`nixosConfigurations.<this>`).
    pub fn flake_attribute(&self) -> &str {
        self.machine
            .flake_attribute
            .as_deref()
            .unwrap_or(self.host.as_str())
    }
}

/// Evaluates host `name` of the repository at `root` with nix-instantiate.
/// Fails (exit 2) when the layout does not build: the docs would be fiction.
pub fn load_subject(context: &Context, root: &Utf8Path, name: &str) -> Result<Subject> {
    let host = super::find_in(root, name)?;
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

#[cfg(test)]
pub mod testing {
    //! The repo's host as a `Subject`, from the evaluation fixture (no Nix).
    use super::Subject;
    use crate::hosts::Machine;
    use crate::layout::testing::{host_evaluation, host_layout};

    pub fn host_subject() -> Subject {
        let machine: Machine =
            serde_json::from_value(host_evaluation()["machine"].clone()).expect("machine facts");
        Subject::new(
            "hetzner-cloud",
            vec![
                "hosts/servers/hetzner-cloud/disko.nix".to_owned(),
                "hosts/servers/hetzner-cloud/persistence.nix".to_owned(),
                "hosts/servers/hetzner-cloud/machine.nix".to_owned(),
            ],
            host_layout(),
            machine,
        )
        .expect("the host's subject")
    }
}
