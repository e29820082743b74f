//! `virtiofsd-msb`: a confined passthrough virtio-fs daemon.
//!
//! Layers, top to bottom:
//! - [`transport`]: vhost-user-fs backend (one worker per request queue) and
//!   a host `/dev/fuse` mode for testing with stock tools;
//! - [`protocol`]: FUSE decoding (fuse-backend-rs `Server`) plus the requests
//!   that server does not dispatch itself;
//! - [`filesystem`]: our passthrough `FileSystem`;
//! - [`policy`]: stat virtualization, host permissions, xattr names and
//!   quota, consulted by the filesystem;
//! - [`confinement`]: the one place host paths are resolved;
//! - [`sandbox`], [`seccomp`], [`walls`]: the process sandbox, system call
//!   filter and privilege drop around all of it;
//! - [`copy_crew`]: helper threads that copy large reads, for the
//!   transport (whole requests) and the filesystem (pieces of one).

pub mod cli;
pub mod confinement;
pub mod copy_crew;
pub mod daemon;
pub mod filesystem;
pub mod policy;
pub mod protocol;
pub mod request_check;
pub mod sandbox;
pub mod seccomp;
pub mod transport;
pub mod walls;
