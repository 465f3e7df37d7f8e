//! The `login` gate: the admin can log in and use sudo, from the host's facts.

use super::{gate, Gate, Observed, Status};

pub(super) fn login_gate(observed: &Observed) -> Gate {
    let facts = &observed.facts;
    let title = format!(
        "{} can log in and use sudo (machine.nix, users.nix, services.nix)",
        facts.admin_user
    );
    let problems = facts.login_problems(&observed.machine_file);
    if problems.is_empty() {
        return gate(
            "login",
            title,
            Status::Pass,
            format!(
                "{} SSH key(s) for {}, in wheel with sudo; root login over SSH: {}",
                facts.admin_keys,
                facts.admin_user,
                if facts.root_can_log_in() {
                    "possible"
                } else {
                    "off"
                }
            ),
        );
    }
    let key_missing = facts.admin_keys == 0;
    let g = gate(
        "login",
        title,
        Status::Fail,
        format!("{}; fix the host files and commit, then run the gates again (they are stale after the edit)", problems.join("; ")),
    );
    if key_missing {
        g.run(format!(
            "add your public key to adminSshKeys in {}, then `git commit`",
            observed.machine_file
        ))
    } else {
        g
    }
}
