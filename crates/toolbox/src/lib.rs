//! The host side's plumbing, below every subcommand: the one runner for
//! child processes (`process`), progress of long work, where the project
//! is, the context every command is handed, and finding and installing the
//! system tools a command needs (`setup`).

pub mod context;
pub mod process;
pub mod progress;
pub mod project;
pub mod setup;
