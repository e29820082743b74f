//! The Rust SDK: the seeds' vocabulary over the `msb` library, async
//! (tokio). `use msb::{Sandbox, Volume};`
//!
//! ```no_run
//! # async fn demo() -> Result<(), msb::Error> {
//! use msb::{Sandbox, Volume};
//! let cache = Volume::builder("pip-cache").quota(1024).create().await?;
//! let sb = Sandbox::builder("worker")
//!     .volume("/root/.cache/pip", |v| v.named(cache.name()))
//!     .volume("/tmp/scratch", |v| v.tmpfs().size(100))
//!     .create()
//!     .await?;
//! let out = sb.shell("echo hello").await?;
//! assert_eq!(out.stdout(), "hello\n");
//! sb.stop().await?;
//! # Ok(()) }
//! ```
//!
//! Every call runs the library's blocking code on tokio's blocking pool, so
//! it never stalls the runtime. The state directory is `$MSB_HOME`
//! (default `~/.microsandbox`), shared with the CLI.

mod mount;
mod sandbox;
mod volume;

use std::path::PathBuf;

pub use mount::{
    BindMount, DiskMount, HostPermissions, Mount, MountBuilder, NamedMode, NamedMount,
    StatVirtualization, TmpfsMount, VolumeKind,
};
pub use sandbox::{ExecOptions, ExecOutput, ExecStream, Sandbox, SandboxBuilder, SandboxFs};
pub use volume::{Entry, EntryKind, Kind, Labels, Volume, VolumeBuilder, VolumeFs, VolumeHandle};

use crate::sandbox::{Error, Result};

/// The state directory.
fn home() -> Result<PathBuf> {
    Ok(volumes::default_home()?)
}

/// Runs blocking library code off the async runtime.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::State(format!("background task failed: {e}")))?
}
