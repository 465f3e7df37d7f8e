//! A host as the generated pages and the deploy checklist see it: its
//! layout, built without errors, with the machine's facts and disk sizes.

use std::collections::BTreeMap;

use anyhow::Result;

use super::Machine;
use super::{Firmware, Model};
use layout::Layout;

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

    /// The flake attribute that builds the host (`nixosConfigurations.<this>`).
    pub fn flake_attribute(&self) -> &str {
        self.machine
            .flake_attribute
            .as_deref()
            .unwrap_or(self.host.as_str())
    }
}

#[cfg(test)]
pub mod testing {
    //! The repo's host as a `Subject`, from the evaluation fixture (no Nix).
    use super::Subject;
    use crate::hosts::Machine;
    use layout::testing::{host_evaluation, host_layout};

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
