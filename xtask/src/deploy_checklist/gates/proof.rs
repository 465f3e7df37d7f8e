//! How a results-backed gate is decided: whether a result still describes
//! HEAD and its files ([`staleness`]), what each kind of result says about its
//! gate ([`Proof`]), and the decision from the proof and the last run ([`decide`]).

use crate::results::{changed_inputs, Header, SCHEMA};

use super::{short, Evidence, Found, Gate, Observed, Status};

/// Why a result does not describe HEAD and the files as they are now, or
/// `None` when it does.
fn staleness(header: &Header, observed: &Observed, kind: crate::results::Kind) -> Option<String> {
    if header.schema != SCHEMA {
        return Some(format!(
            "written with results schema {}, this xtask reads schema {SCHEMA}",
            header.schema
        ));
    }
    if !header.host.split(',').any(|h| h == observed.host) {
        return Some(format!(
            "made for host(s) {:?}, not {}",
            header.host, observed.host
        ));
    }
    let Some(head_commit) = &observed.head.commit else {
        return Some("HEAD is unknown (not a git checkout, or no commit yet)".to_owned());
    };
    let changed = observed
        .current
        .get(&kind)
        .map(|current| changed_inputs(&header.inputs, current))
        .unwrap_or_default();
    let files = |changed: &[String]| {
        let mut shown: Vec<&str> = changed.iter().take(3).map(String::as_str).collect();
        let more = changed.len().saturating_sub(3);
        let more = if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        };
        if shown.is_empty() {
            shown.push("nothing it rests on changed");
        }
        format!("{}{more}", shown.join(", "))
    };
    match &header.revision.commit {
        None => return Some("made outside a git checkout".to_owned()),
        Some(made) if made != head_commit => {
            return Some(format!(
                "made at {}, but HEAD is {} ({})",
                short(made),
                short(head_commit),
                files(&changed)
            ))
        }
        Some(_) => {}
    }
    if header.revision.dirty {
        return Some(format!(
            "made at {} with uncommitted changes, so it may not describe that commit",
            short(head_commit)
        ));
    }
    if !changed.is_empty() {
        return Some(format!(
            "made at {}, but since then {} (not committed)",
            short(head_commit),
            files(&changed)
        ));
    }
    None
}

/// What a kind of result says about its gate.
pub(super) trait Proof {
    const KIND: crate::results::Kind;
    fn header(&self) -> &Header;
    /// Why this result cannot prove the gate even when it passed (a partial
    /// run, another disk size); `None` when it can.
    fn shortfall(&self, observed: &Observed) -> Option<String>;
    /// Why it did not pass; `None` when it passed.
    fn failure(&self, observed: &Observed) -> Option<String>;
    /// One line about a result that proves the gate.
    fn summary(&self, observed: &Observed) -> String;
}

/// Decides a results-backed gate from the proof and the last run.
pub(super) fn decide<T: Proof>(
    template: Gate,
    evidence: &Evidence<T>,
    observed: &Observed,
    rerun: &str,
    never_run: impl FnOnce(Gate) -> Gate,
) -> Gate {
    let kind = T::KIND;
    let pass_file = crate::results::pass_file_name(kind);
    let last_file = crate::results::file_name(kind);
    let fresh = |r: &T| staleness(r.header(), observed, kind).is_none();
    let candidates: Vec<(&str, &T)> = [
        (pass_file.as_str(), evidence.pass.present()),
        (last_file.as_str(), evidence.last.present()),
    ]
    .into_iter()
    .filter_map(|(file, r)| r.map(|r| (file, r)))
    .collect();

    // The proof: a fresh result that can prove the gate and passed.
    if let Some((file, proof)) = candidates
        .iter()
        .find(|(_, r)| fresh(r) && r.shortfall(observed).is_none() && r.failure(observed).is_none())
    {
        let mut detail = proof.summary(observed);
        if let Some(last) = evidence.last.present() {
            if last.header().finished_at != proof.header().finished_at {
                let what = last.shortfall(observed).or_else(|| {
                    last.failure(observed)
                        .map(|f| format!("a run that did not pass ({f})"))
                });
                if let Some(what) = what {
                    detail.push_str(&format!(
                        "; the last run ({}, {last_file}) was {what}: it does not replace this proof",
                        last.header().finished_at
                    ));
                }
            }
        }
        return Gate {
            status: Status::Pass,
            detail,
            ..template
        }
        .from(file, proof.header());
    }
    // A fresh result that cannot prove the gate, or that failed.
    if let Some((file, result)) = candidates.iter().find(|(_, r)| fresh(r)) {
        let gate = template.clone().from(file, result.header());
        if let Some(shortfall) = result.shortfall(observed) {
            return Gate {
                status: Status::NotRun,
                detail: format!(
                    "only {shortfall} ran at this revision ({}); it does not satisfy the gate",
                    if result.header().passed {
                        "passed"
                    } else {
                        "did not pass"
                    }
                ),
                ..gate
            }
            .run(rerun);
        }
        if let Some(failure) = result.failure(observed) {
            return Gate {
                status: Status::Fail,
                detail: format!("{failure}; fix the cause, then run it again"),
                ..gate
            }
            .run(rerun);
        }
    }
    // Results that no longer describe this checkout.
    if let Some((file, result)) = candidates.first() {
        let why = staleness(result.header(), observed, kind).unwrap_or_default();
        return Gate {
            status: Status::Stale,
            detail: format!("{file}: {why}"),
            ..template
        }
        .from(file, result.header())
        .run(rerun);
    }
    for found in [&evidence.pass, &evidence.last] {
        if let Found::Unreadable(why) = found {
            return Gate {
                status: Status::Stale,
                detail: why.clone(),
                ..template
            }
            .run(rerun);
        }
    }
    never_run(template)
}

/// What a gate says when no result of its kind is on file: where it looked,
/// and the command that makes one.
pub(super) fn never_run_here<'a>(
    observed: &'a Observed,
    what: &'a str,
    rerun: &'a str,
) -> impl FnOnce(Gate) -> Gate + 'a {
    move |g| {
        Gate {
            detail: format!("no {what} in {}: never run here", observed.results_dir),
            ..g
        }
        .run(rerun.to_owned())
    }
}
