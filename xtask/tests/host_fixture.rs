//! The unit tests read the repo's host from a JSON fixture so that they need
//! no Nix; this proves the fixture is still what Nix evaluates.

use std::process::Command;

use serde_json::Value;

#[test]
fn the_fixture_is_the_real_evaluation_of_the_host() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let host = format!("{root}/hosts/servers/hetzner-cloud");
    let output = Command::new("nix-instantiate")
        .args([
            "--eval",
            "--strict",
            "--json",
            &format!("{root}/nix/lib/eval-host.nix"),
        ])
        .args(["--argstr", "layoutFile", &format!("{host}/disko.nix")])
        .args([
            "--argstr",
            "persistenceFile",
            &format!("{host}/persistence.nix"),
        ])
        .args(["--argstr", "machineFile", &format!("{host}/machine.nix")])
        .args(["--argstr", "rollbackFile", &format!("{host}/rollback.nix")])
        .output()
        .expect("nix-instantiate runs (on Debian: apt-get install nix-bin)");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut evaluated: Value = serde_json::from_slice(&output.stdout).unwrap();
    // Positions name absolute paths of this checkout.
    for positions in ["positions", "machinePositions", "rollbackPositions"] {
        evaluated.as_object_mut().unwrap().remove(positions);
    }
    let fixture: Value =
        serde_json::from_str(include_str!("fixtures/hetzner-cloud.eval.json")).unwrap();
    assert!(
        evaluated == fixture,
        "xtask/tests/fixtures/hetzner-cloud.eval.json is stale; regenerate it:\n{}",
        serde_json::to_string_pretty(&evaluated).unwrap()
    );
}
