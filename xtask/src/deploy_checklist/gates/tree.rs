//! The `tree` gate: the working tree is clean, so the commit is what is deployed.

use super::{gate, Gate, Observed, Status};

pub(super) fn tree_gate(observed: &Observed) -> Gate {
    const TITLE: &str = "the working tree is clean";
    match &observed.head.commit {
        None => gate(
            "tree",
            TITLE,
            Status::Fail,
            "not a git checkout (or no commit yet): deploy from a commit",
        ),
        Some(commit) if observed.head.dirty => Gate {
            revision: Some(commit.clone()),
            ..gate(
                "tree",
                TITLE,
                Status::Fail,
                "uncommitted or untracked changes: what you deploy must be the commit the results name",
            )
            .run("git status; commit or stash the changes, then run the gates again")
        },
        Some(commit) => Gate {
            revision: Some(commit.clone()),
            ..gate("tree", TITLE, Status::Pass, "nothing to commit")
        },
    }
}
