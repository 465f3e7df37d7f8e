//! The model and everything after it, on JSON as nix-instantiate prints it: building, the geometry, every rule, the tables and both reports.
//! The check itself is xtask::fuzz::check_model, so that the test suite replays
//! crash inputs without cargo-fuzz (xtask/tests/fuzz_regressions.rs).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| xtask::fuzz::check_model(data));
