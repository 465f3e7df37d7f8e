//! `cargo xtask vm-test`'s machinery: the layout booted in a VM.
//!
//! Data flows one way. The host evaluates the layout (`rules::load`),
//! derives geometry and effective options once, and turns them into one
//! plan per boot (`realise`); the guest agent (crates/guest, built and
//! found by `agent`, the VM's /init) executes the plan and reports events (`protocol`); the
//! host collects them (`collect`) into target/xtask/vm-test.json.
//!
//! - `kernel`, `modules`, `elf`, `cpio`, `agent`, `initramfs`: what the VM boots;
//! - `accel`, `qemu`, `disk`: running it;
//! - `lab`: the default backend; `nixos`: the flake's NixOS VM test;
//! - `retention`, `month`: the rollback's rules and the month of boots
//!   that holds real rotations against them;
//! - `procedures`: checklist procedures the guest runs as the admin would;
//! - `budgets`: the roadmap's performance budgets (discard, mounts).

pub mod accel;
pub mod agent;
pub mod budgets;
pub mod collect;
pub mod cpio;
pub mod disk;
pub mod elf;
pub mod initramfs;
pub mod kernel;
pub mod lab_backend;
pub mod modules;
pub mod month;
pub mod nixos_backend;
pub mod procedure_runs;
pub mod qemu;
pub mod realise;
pub mod retention;

pub use lab_protocol::{plan, protocol};
