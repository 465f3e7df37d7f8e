//! The size parsers: any text gives a size or an error, never a panic, and every size they accept is exactly what the text says.
//! The check itself is xtask::fuzz::check_size, so that the test suite replays
//! crash inputs without cargo-fuzz (xtask/tests/fuzz_regressions.rs).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| xtask::fuzz::check_size(data));
