//! The guest side of `msb run`.
//!
//! - [`config`]: the JSON document the launcher hands the guest (mounts,
//!   command, environment) and the status the guest hands back. The launcher
//!   depends on this crate for exactly these types, so both ends share one
//!   schema.
//! - [`init`]: what `msb-init` does as PID 1 (Linux only).

pub mod config;
pub mod protocol;
pub mod init;
