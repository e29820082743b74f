//! FUSE request dispatch on top of fuse-backend-rs's `Server`.
//!
//! fuse-backend-rs 0.14 does not dispatch `FUSE_COPY_FILE_RANGE` and routes
//! `FUSE_SETLKW` to the non-blocking `setlk`; both are handled here through
//! [`ExtraRequests`]. A request the server cannot decode still gets an errno
//! reply so the guest never waits forever.

use std::io;

use fuse_backend_rs::api::filesystem::{Context, FileLock};

/// Requests our filesystem serves that fuse-backend-rs's `Server` does not
/// hand to a `FileSystem`.
pub trait ExtraRequests {
    /// `FUSE_COPY_FILE_RANGE`: copy `len` bytes from (`inode_in`, `handle_in`,
    /// `offset_in`) to (`inode_out`, `handle_out`, `offset_out`); returns the
    /// number of bytes copied.
    #[allow(clippy::too_many_arguments)]
    fn copy_file_range(
        &self,
        ctx: &Context,
        inode_in: u64,
        handle_in: u64,
        offset_in: u64,
        inode_out: u64,
        handle_out: u64,
        offset_out: u64,
        len: u64,
        flags: u64,
    ) -> io::Result<usize>;

    /// `FUSE_SETLKW`: like `setlk` but waits for a conflicting lock to go.
    fn setlk_wait(
        &self,
        ctx: &Context,
        inode: u64,
        handle: u64,
        owner: u64,
        lock: FileLock,
        flags: u32,
    ) -> io::Result<()>;
}
