//! Replays every input a fuzz target ever crashed on, and the fuzzers' seeds,
//! through the same checks the targets run (xtask::fuzz), without cargo-fuzz.
//! A crash input goes to tests/fixtures/fuzz/<target>/ before the fix
//! (docs/fuzzing.md), so that this test fails until the fix is in.

use std::panic::{catch_unwind, AssertUnwindSafe};

use xtask::fuzz::{check, regression_inputs, TARGETS};

#[test]
fn every_committed_fuzz_input_passes_its_check() {
    let seeds = concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/seeds");
    let mut failures = Vec::new();
    for target in TARGETS {
        let mut inputs = regression_inputs(target).expect("the regression inputs");
        assert!(
            !inputs.is_empty(),
            "no regression inputs for {target} in tests/fixtures/fuzz/{target}/"
        );
        if let Ok(entries) = std::fs::read_dir(format!("{seeds}/{target}")) {
            for entry in entries {
                let path = entry.expect("a seed").path();
                inputs.push(camino::Utf8PathBuf::try_from(path).expect("a UTF-8 seed path"));
            }
        }
        for input in inputs {
            let data = std::fs::read(&input).expect("reading an input");
            if let Err(panic) = catch_unwind(AssertUnwindSafe(|| check(target, &data))) {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default();
                failures.push(format!("{target} {input}: {message}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The checks must be able to fail: a size the parser would have to
/// misread is caught.
#[test]
fn the_checks_catch_what_they_are_for() {
    for target in TARGETS {
        assert!(
            std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/fuzz_targets"))
                .join(format!("{target}.rs"))
                .is_file(),
            "fuzz/fuzz_targets/{target}.rs is missing"
        );
    }
    let unknown = catch_unwind(|| check("no-such-target", b""));
    assert!(unknown.is_err());
}
