//! Shared pieces of the integration tests: a vhost-user frontend that drives
//! the daemon without a VM, and helpers to boot real guests under QEMU.
