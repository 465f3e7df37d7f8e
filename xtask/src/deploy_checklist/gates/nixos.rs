//! The `nixos` gate: the NixOS evaluation of the flake, at HEAD.

use crate::flake_eval::FlakeEvalResults;
use crate::results::Header;

use super::proof::{decide, Proof};
use super::{gate, Gate, Observed, Status};

impl Proof for FlakeEvalResults {
    const KIND: crate::results::Kind = crate::flake_eval::KIND;
    fn header(&self) -> &Header {
        &self.header
    }
    fn shortfall(&self, observed: &Observed) -> Option<String> {
        (self.attribute != observed.flake_attribute).then(|| {
            format!(
                "an evaluation of nixosConfigurations.{}, not .{}",
                self.attribute, observed.flake_attribute
            )
        })
    }
    fn failure(&self, _: &Observed) -> Option<String> {
        match (&self.drv_path, &self.error) {
            (Some(_), None) if self.header.passed => None,
            (_, Some(error)) => Some(format!("the NixOS system does not evaluate: {error}")),
            _ => Some("the evaluation did not pass".to_owned()),
        }
    }
    fn summary(&self, _: &Observed) -> String {
        let inputs: Vec<String> = self
            .locked_inputs
            .iter()
            .map(|(name, input)| format!("{name} {}", input.locked))
            .collect();
        format!(
            "{} evaluates to {}{}",
            self.installable,
            self.drv_path.as_deref().unwrap_or("?"),
            if inputs.is_empty() {
                String::new()
            } else {
                format!(" with {}", inputs.join(", "))
            }
        )
    }
}

pub(super) fn nixos_gate(observed: &Observed) -> Gate {
    let title = format!(
        "the NixOS system evaluates (`nixosConfigurations.{}.config.system.build.toplevel`, pinned inputs)",
        observed.flake_attribute
    );
    decide(
        gate("nixos", title, Status::NotRun, ""),
        &observed.nixos,
        observed,
        &observed.nixos_how,
        |g| {
            Gate {
                detail: match &observed.nixos_blocked {
                    Some(why) => format!("cannot run here ({why}); never evaluated"),
                    None => format!("no result in {}: never evaluated", observed.results_dir),
                },
                ..g
            }
            .run(observed.nixos_how.clone())
        },
    )
}
