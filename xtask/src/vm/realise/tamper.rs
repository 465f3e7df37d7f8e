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
                "{text:?}: expected drop-subvolume=NAME, drop-mount-option=/MOUNTPOINT:OPTION, procedure-expect=ID or procedure-drop-sudo=ID"
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
        }
    }
}
