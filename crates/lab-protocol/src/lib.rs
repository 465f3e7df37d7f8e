//! What the host side of `cargo xtask vm-test` and the guest agent (the lab
//! VM's /init, crates/guest) share: the plan the host hands the guest
//! (`plan`), the events the guest reports back (`protocol`), the command
//! record both keep (`command`), the checklist's expectations the guest
//! checks (`expect`), the rollback's root names (`stamp`) and the paths of
//! the image both agree on.

pub mod command;
pub mod expect;
pub mod plan;
pub mod protocol;
pub mod stamp;

/// The modules to load, in order (JSON list of paths): written by the host
/// into the image, read by the guest at start.
pub const MODULES_LIST: &str = "/etc/xtask/modules.json";

/// `ssh` in the image: the lab's transport, the VM being both machines.
pub const SSH_SHIM: &str = include_str!("ssh.sh");

/// Lower-case hexadecimal, as sha256sum prints a digest.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
