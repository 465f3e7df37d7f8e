//! The xtask of the Hetzner CPX52 flake: one module per subcommand (check,
//! vm_test, docs, deploy_checklist, verify, bench, test, fuzz, fresh_machine,
//! and deep for `check --deep`) over the domain below them. `main.rs` only
//! parses arguments.
//!
//! Below this crate: `layout` (the pure model and the kernel's reading of
//! mount options), `toolbox` (the one runner, progress, the project's paths,
//! the context, tool provisioning) and `lab-protocol` (what vm-test's host
//! side and the guest agent exchange); `guest` is the lab VM's own program.

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
