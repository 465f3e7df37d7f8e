//! The xtask of the Hetzner CPX52 flake: one vocabulary (the layout, its own
//! crate in crates/layout), one module per subcommand. `main.rs` only parses
//! arguments.

// Moved to crates/toolbox; re-exported so that `crate::process::…` and
// `xtask::process::…` keep their paths.
pub use toolbox::{context, process, progress, project, setup};

pub mod bench;
pub mod check;
pub mod deep;
pub mod deploy_checklist;
pub mod docs;
pub mod finding_text;
pub mod flake_eval;
pub mod fresh_machine;
pub mod fuzz;
pub mod hosts;
pub mod loop_btrfs;
pub mod nix_eval;
pub mod reference;
pub mod report;
pub mod results;
pub mod rules;
pub mod test;
pub mod verified;
pub mod verify;
pub mod vm;
pub mod vm_test;

// The layout model is its own crate; re-exported under its old paths.
pub use layout;
pub use layout::{findings, names};
