//! Shared pieces of the integration tests: a vhost-user frontend that drives
//! the daemon without a VM, and helpers to boot real guests under QEMU.
pub mod daemon_proc;
pub mod guest_helper;
pub mod host_tools;
pub mod msb_proc;
pub mod oci_image;
pub mod procs;
pub mod qemu;
pub mod sandbox_env;
pub mod vhost_driver;
pub mod vm_turn;
