//! The xtask of the Hetzner CPX52 flake: one vocabulary (the layout, its own
//! crate in crates/layout), one module per subcommand. `main.rs` only parses
//! arguments.

pub mod bench;
pub mod check;
pub mod checklist;
pub mod context;
pub mod docs;
pub mod flake_eval;
pub mod fresh_machine;
pub mod fuzz;
pub mod hosts;
pub mod lab;
pub mod nix;
pub mod process;
pub mod progress;
pub mod project;
pub mod reference;
pub mod report;
pub mod results;
pub mod rules;
pub mod setup;
pub mod test_cmd;
pub mod verify;
pub mod vm;
pub mod vm_test;

// The layout model is its own crate; re-exported under its old paths.
pub use layout;
pub use layout::{findings, names};
