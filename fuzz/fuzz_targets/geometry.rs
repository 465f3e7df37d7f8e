//! The partition geometry on partitions written as text lines (`size [start [end [alignment]]]`) on a disk of any size.
//! The check itself is xtask::fuzz::check_geometry, so that the test suite replays
//! crash inputs without cargo-fuzz (xtask/tests/fuzz_regressions.rs).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| xtask::fuzz::check_geometry(data));
