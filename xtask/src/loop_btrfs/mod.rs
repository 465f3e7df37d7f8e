//! Real Btrfs on loop devices, for the rollback tests and the bench: the
//! fixtures (`loopback`) and the way each initrd runs the rollback script
//! (`rollback`).

pub mod loopback;
pub mod rollback_script;
