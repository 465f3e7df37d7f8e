//! `cargo xtask vm-test`'s machinery: the layout booted in a VM.
//!
//! Data flows one way. The host evaluates the layout (`rules::load`),
//! derives geometry and effective options once, and turns them into one
//! plan per boot (`realise`); the guest agent (`guest`, this very binary as
//! the VM's /init) executes the plan and reports events (`protocol`); the
//! host collects them (`collect`) into target/xtask/vm-test.json.
//!
//! - `kernel`, `modules`, `elf`, `cpio`, `initramfs`: what the VM boots;
//! - `accel`, `qemu`, `disk`: running it;
//! - `lab`: the default backend; `nixos`: the flake's NixOS VM test;
//! - `retention`, `month`: the rollback's rules and the month of boots
//!   that holds real rotations against them;
//! - `procedures`: checklist procedures the guest runs as the admin would;
//! - `budgets`: the roadmap's performance budgets (discard, mounts).

pub mod accel;
pub mod budgets;
pub mod collect;
pub mod cpio;
pub mod disk;
pub mod elf;
pub mod guest;
pub mod initramfs;
pub mod kernel;
pub mod lab;
pub mod modules;
pub mod month;
pub mod nixos;
pub mod plan;
pub mod procedures;
pub mod protocol;
pub mod qemu;
pub mod realise;
pub mod retention;
