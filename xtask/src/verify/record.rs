//! The verify record (`crate::verified`) and how `verify` builds it from its
//! checks and the commands it ran.

pub use crate::verified::*;

use super::checks::Check;
use super::ssh::{Ran, Target};
use crate::verified::clip;
use toolbox::project::Revision;

impl CheckResult {
    pub fn new(check: &Check) -> CheckResult {
        CheckResult {
            id: check.id.clone(),
            step: check.step.clone(),
            title: check.title.clone(),
            status: Status::Pass,
            value: String::new(),
            problem: None,
            commands: Vec::new(),
            left_out: check
                .left_out
                .iter()
                .map(|l| (l.line.clone(), l.why.clone()))
                .collect(),
        }
    }
}

impl Record {
    pub fn new(host: &str, target: &Target, revision: Revision) -> Record {
        Record {
            schema: SCHEMA,
            kind: "verify".to_owned(),
            host: host.to_owned(),
            target: target.to_string(),
            address: target.address.clone(),
            host_key: None,
            revision,
            finished_at: crate::results::now_rfc3339(),
            status: Status::Pass,
            error: None,
            device_map: None,
            checks: Vec::new(),
        }
    }
}

impl From<&Ran> for RanCommand {
    fn from(ran: &Ran) -> RanCommand {
        RanCommand {
            line: ran.line.clone(),
            exit: ran.exit,
            stdout: clip(&ran.stdout),
            stderr: clip(&ran.stderr),
        }
    }
}
