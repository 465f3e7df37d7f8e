//! Reading what nix-instantiate printed: any bytes give a value, findings or an error; too deep JSON is always a finding.
//! The check itself is xtask::fuzz::check_evaluation, so that the test suite replays
//! crash inputs without cargo-fuzz (xtask/tests/fuzz_regressions.rs).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| xtask::fuzz::check_evaluation(data));
