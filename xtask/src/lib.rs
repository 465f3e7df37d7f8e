//! The xtask of the Hetzner CPX52 flake: one crate, one vocabulary (the
//! layout), one module per subcommand. `main.rs` only parses arguments.

pub mod bench;
pub mod check;
pub mod checklist;
pub mod context;
pub mod deep;
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
