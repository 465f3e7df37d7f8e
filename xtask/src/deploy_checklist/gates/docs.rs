//! The `docs` gate: docs/reference/ regenerated in memory matches the tree.

use super::{gate, DocsState, Gate, Observed, Status};

pub(super) fn docs_gate(observed: &Observed) -> Gate {
    const TITLE: &str = "docs/reference/ matches the config";
    match &observed.docs {
        DocsState::Fresh => gate(
            "docs",
            TITLE,
            Status::Pass,
            "regenerated in memory: identical",
        ),
        DocsState::Drifted(summary) => {
            gate("docs", TITLE, Status::Fail, format!("differs ({summary})")).run(format!(
                "cargo xtask docs --host {}, then `git commit`",
                observed.host
            ))
        }
        DocsState::Unknown(why) => gate(
            "docs",
            TITLE,
            Status::NotRun,
            format!("could not compare: {why}"),
        )
        .run(format!("cargo xtask docs --check --host {}", observed.host)),
    }
}
