//! Which boot runs which part of which procedure.

use std::collections::{BTreeMap, VecDeque};

use super::{Procedure, Then};
use crate::vm::plan::AdminStep;

/// What one boot runs of the procedures.
#[derive(Debug, Clone, PartialEq)]
pub struct BootProcedures {
    /// The last boot ended with a reinstall: this one is an install boot.
    pub install: bool,
    /// The last boot ended where the rescue system starts: this one is
    /// the lab's rescue boot.
    pub rescue: bool,
    pub continued: Vec<AdminStep>,
    pub started: Vec<AdminStep>,
}

/// Spreads procedures over boots: each boot continues what the last one
/// began, then starts new procedures until one ends in a reboot (two
/// procedures never wait for different reboots at once).
#[derive(Debug, Clone, Default)]
pub struct Schedule {
    queue: VecDeque<Procedure>,
    /// Procedures waiting for the next boot, with the part to run there.
    pending: Vec<(Procedure, usize)>,
    /// Running in the current boot.
    running: Vec<(Procedure, usize)>,
}

/// The boot's part of a procedure, as the plan carries it.
pub fn step_of(
    procedure: &Procedure,
    part: usize,
    captured: &BTreeMap<String, String>,
) -> AdminStep {
    AdminStep {
        id: procedure.id.clone(),
        step: procedure.step.clone(),
        title: procedure.title.clone(),
        part: part as u32,
        login: procedure.login.clone(),
        substitutions: procedure.substitutions.clone(),
        commands: procedure.parts[part].commands.clone(),
        captured: captured.clone(),
    }
}

impl Schedule {
    pub fn new(procedures: Vec<Procedure>) -> Schedule {
        Schedule {
            queue: procedures.into(),
            ..Schedule::default()
        }
    }

    /// How many boots the schedule takes when every part passes.
    pub fn boots(&self) -> u32 {
        let mut copy = self.clone();
        let mut boots = 0;
        while copy.next_boot(&BTreeMap::new()).is_some() {
            copy.finished_boot(|_| true);
            boots += 1;
        }
        boots
    }

    pub fn is_done(&self) -> bool {
        self.queue.is_empty() && self.pending.is_empty()
    }

    pub fn next_boot(&mut self, captured: &BTreeMap<String, String>) -> Option<BootProcedures> {
        if self.is_done() {
            return None;
        }
        let install = self
            .pending
            .iter()
            .any(|(p, part)| p.parts[part - 1].then == Then::Reinstall);
        let rescue = self
            .pending
            .iter()
            .any(|(p, part)| p.parts[part - 1].then == Then::Rescue);
        let continued_parts = std::mem::take(&mut self.pending);
        let mut waits = continued_parts
            .iter()
            .any(|(p, part)| p.parts[*part].then != Then::Done);
        let mut started_parts = Vec::new();
        while !waits {
            let Some(procedure) = self.queue.pop_front() else {
                break;
            };
            waits = procedure.parts[0].then != Then::Done;
            started_parts.push((procedure, 0));
        }
        let step = |(p, part): &(Procedure, usize)| step_of(p, *part, captured);
        let boot = BootProcedures {
            install,
            rescue,
            continued: continued_parts.iter().map(step).collect(),
            started: started_parts.iter().map(step).collect(),
        };
        self.running = continued_parts.into_iter().chain(started_parts).collect();
        Some(boot)
    }

    /// After the boot: procedures whose part passed go on at the next boot;
    /// a failed one ends there (its later parts build on it).
    pub fn finished_boot(&mut self, passed: impl Fn(&Procedure) -> bool) {
        for (procedure, part) in std::mem::take(&mut self.running) {
            if passed(&procedure) && part + 1 < procedure.parts.len() {
                self.pending.push((procedure, part + 1));
            }
        }
    }
}
