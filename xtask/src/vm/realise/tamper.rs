//! `--tamper`: deliberate differences between what is created and what is
//! expected, to prove that vm-test fails on each.

use std::fmt;
use std::str::FromStr;

use anyhow::Result;

/// A deliberate difference between what is created and what is expected,
/// to prove the in-VM checks catch it (`vm-test --tamper`, tests only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tamper {
    /// Do not create this subvolume.
    DropSubvolume(String),
    /// Mount `mountpoint` without `option`.
    DropMountOption { mountpoint: String, option: String },
    /// Checklist procedure `id` with an expectation added to its first
    /// command that its output cannot meet (a wrong checklist line).
    ProcedureExpect(String),
    /// Checklist procedure `id` with `sudo ` taken off its first command.
    ProcedureDropSudo(String),
    /// Checklist procedure `id` whose first command also runs `program
    /// --version`: a line using a program the server may lack.
    ProcedureAlsoRuns { id: String, program: String },
    /// Checklist procedure `id` as it was before names carried `<stamp>`:
    /// every `<stamp>` a fixed word, and its `test ! -e` lines gone (a
    /// save that may reuse an existing name).
    ProcedureFixedNames(String),
    /// In procedure ID (§4.6), the save snapshots the oldest copy an
    /// earlier save left in the snapshots' subvolume, when there is one,
    /// instead of /persist, under the new name: a stale restore that every
    /// command of the procedure passes (tests only).
    ProcedureStaleSave(String),
    /// The lab's server PATH as NixOS alone makes it, without the host's
    /// own `environment.systemPackages` (tools.nix).
    ServerWithoutHostPackages,
}

impl FromStr for Tamper {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text.split_once('=') {
            Some(("drop-subvolume", name)) if !name.is_empty() => {
                Ok(Tamper::DropSubvolume(name.to_owned()))
            }
            Some(("procedure-expect", id)) if !id.is_empty() => {
                Ok(Tamper::ProcedureExpect(id.to_owned()))
            }
            Some(("procedure-drop-sudo", id)) if !id.is_empty() => {
                Ok(Tamper::ProcedureDropSudo(id.to_owned()))
            }
            Some(("procedure-also-runs", rest)) => match rest.split_once(':') {
                Some((id, program)) if !id.is_empty() && !program.is_empty() => {
                    Ok(Tamper::ProcedureAlsoRuns {
                        id: id.to_owned(),
                        program: program.to_owned(),
                    })
                }
                _ => Err(format!("{text:?}: expected procedure-also-runs=ID:PROGRAM")),
            },
            Some(("server-path", "without-host-packages")) => Ok(Tamper::ServerWithoutHostPackages),
            Some(("procedure-fixed-names", id)) if !id.is_empty() => {
                Ok(Tamper::ProcedureFixedNames(id.to_owned()))
            }
            Some(("procedure-stale-save", id)) if !id.is_empty() => {
                Ok(Tamper::ProcedureStaleSave(id.to_owned()))
            }
            Some(("drop-mount-option", rest)) => match rest.split_once(':') {
                Some((mountpoint, option)) if !option.is_empty() => Ok(Tamper::DropMountOption {
                    mountpoint: mountpoint.to_owned(),
                    option: option.to_owned(),
                }),
                _ => Err(format!(
                    "{text:?}: expected drop-mount-option=/MOUNTPOINT:OPTION"
                )),
            },
            _ => Err(format!(
                "{text:?}: expected drop-subvolume=NAME, drop-mount-option=/MOUNTPOINT:OPTION, procedure-expect=ID, procedure-drop-sudo=ID, procedure-also-runs=ID:PROGRAM, procedure-fixed-names=ID, procedure-stale-save=ID or server-path=without-host-packages"
            )),
        }
    }
}

impl fmt::Display for Tamper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tamper::DropSubvolume(name) => write!(f, "drop-subvolume={name}"),
            Tamper::DropMountOption { mountpoint, option } => {
                write!(f, "drop-mount-option={mountpoint}:{option}")
            }
            Tamper::ProcedureExpect(id) => write!(f, "procedure-expect={id}"),
            Tamper::ProcedureDropSudo(id) => write!(f, "procedure-drop-sudo={id}"),
            Tamper::ProcedureAlsoRuns { id, program } => {
                write!(f, "procedure-also-runs={id}:{program}")
            }
            Tamper::ServerWithoutHostPackages => write!(f, "server-path=without-host-packages"),
            Tamper::ProcedureFixedNames(id) => write!(f, "procedure-fixed-names={id}"),
            Tamper::ProcedureStaleSave(id) => write!(f, "procedure-stale-save={id}"),
        }
    }
}
