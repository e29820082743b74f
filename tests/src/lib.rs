//! Shared pieces of the integration tests: a vhost-user frontend that drives
//! the daemon without a VM, and helpers to boot real guests under QEMU.
pub mod daemon_proc;
pub mod msb_proc;
pub mod qemu;
pub mod vhost_driver;
pub mod vm_turn;
