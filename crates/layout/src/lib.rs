//! The layout: the one vocabulary every subcommand speaks. Evaluated from Nix
//! once (by the xtask's nix module), built into typed data here, judged by
//! the xtask's rules, realised by its lab VM, drawn by its docs.
//!
//! Pure: no child processes, no network, no files but the ones it is given.

pub mod build;
pub mod findings;
pub mod generator;
pub mod geometry;
pub mod impermanence;
pub mod kernel_options;
pub mod model;
pub mod mount_options;
pub mod names;
pub mod paths;
pub mod positions;
pub mod size;

pub use model::*;

#[cfg(any(test, feature = "testing"))]
pub mod testing {
    //! The repo's own host as Nix evaluates it, for unit tests that must not
    //! need Nix. `tests/host_fixture.rs` proves it still equals the real evaluation.
    use camino::Utf8Path;
    use serde_json::Value;

    use super::build::{build, Evaluated};
    use super::Layout;
    use crate::findings::Finding;

    pub const HOST_EVALUATION: &str =
        include_str!("../../../xtask/tests/fixtures/hetzner-cloud.eval.json");

    /// The evaluation of hosts/servers/hetzner-cloud (`layout`, `persistence`, …).
    pub fn host_evaluation() -> Value {
        serde_json::from_str(HOST_EVALUATION).expect("the fixture is JSON")
    }

    /// Builds a layout from an evaluation such as `host_evaluation()`, perhaps edited.
    pub fn layout_of(evaluation: &Value) -> (Option<Layout>, Vec<Finding>) {
        build(&Evaluated {
            host: "hetzner-cloud",
            source: Utf8Path::new("hosts/servers/hetzner-cloud/disko.nix"),
            layout: &evaluation["layout"],
            persistence: &evaluation["persistence"],
        })
    }

    pub fn host_layout() -> Layout {
        let (layout, findings) = layout_of(&host_evaluation());
        assert!(findings.is_empty(), "{findings:#?}");
        layout.expect("the host's layout builds")
    }
}
