//! The guest side of `msb run`.
//!
//! - [`config`]: the JSON document the launcher hands the guest (mounts,
//!   command, environment) and the status the guest hands back. The launcher
//!   depends on this crate for exactly these types, so both ends share one
//!   schema.
//! - [`protocol`]: the framed protocol between the host and the agent.
//! - [`agent`]: the agent `msb-init` serves in a sandbox that stays up.
//! - [`init`]: what `msb-init` does as PID 1 (Linux only).

pub mod agent;
pub mod config;
pub mod init;
pub mod protocol;
