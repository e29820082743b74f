//! Sandboxes that stay up: a VM per sandbox, owned by a supervisor process,
//! taking commands through the guest agent.
//!
//! - [`spec`]: what a sandbox is created with;
//! - [`store`]: sandbox records in the SQLite database and their status;
//! - [`lifecycle`]: create, start, stop, remove, list;
//! - [`supervisor`]: the process that owns a running sandbox;
//! - [`agent_link`]: the supervisor's connection to the guest agent;
//! - [`client`]: exec and file operations through a supervisor;
//! - [`error`]: the library's error type.

pub mod agent_link;
pub mod client;
pub mod error;
pub mod lifecycle;
pub mod spec;
pub mod store;
pub mod supervisor;

pub use error::{Error, Result};
