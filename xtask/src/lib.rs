//! The xtask of the Hetzner CPX52 flake: one crate, one vocabulary (the
//! layout), one module per subcommand. `main.rs` only parses arguments.

// Moved to crates/toolbox; re-exported so that `crate::process::…` and
// `xtask::process::…` keep their paths.
pub use toolbox::{context, process, progress, project, setup};

pub mod bench;
pub mod check;
pub mod checklist;
pub mod docs;
pub mod findings;
pub mod flake_eval;
pub mod fresh_machine;
pub mod fuzz;
pub mod hosts;
pub mod lab;
pub mod layout;
pub mod names;
pub mod nix;
pub mod reference;
pub mod report;
pub mod results;
pub mod rules;
pub mod test_cmd;
pub mod verify;
pub mod vm;
pub mod vm_test;
