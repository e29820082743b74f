//! Advisory file locks (`flock`) between processes sharing one store.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

use crate::error::{Error, Result};

/// A held `flock`; released when dropped (the file is closed).
#[derive(Debug)]
pub struct FileLock {
    _file: File,
}

impl FileLock {
    /// Waits for a shared lock on `path` (created if missing).
    pub fn shared(path: &Path) -> Result<FileLock> {
        Self::take(path, libc::LOCK_SH)
    }

    /// Waits for an exclusive lock on `path` (created if missing).
    pub fn exclusive(path: &Path) -> Result<FileLock> {
        Self::take(path, libc::LOCK_EX)
    }

    /// Locks an already open file exclusively, waiting for it.
    pub fn exclusive_file(file: File, path: &Path) -> Result<FileLock> {
        flock(&file, libc::LOCK_EX).map_err(|e| Error::io("lock", path, e))?;
        Ok(FileLock { _file: file })
    }

    fn take(path: &Path, op: i32) -> Result<FileLock> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|e| Error::io("open lock file", path, e))?;
        flock(&file, op).map_err(|e| Error::io("lock", path, e))?;
        Ok(FileLock { _file: file })
    }
}

fn flock(file: &File, op: i32) -> std::io::Result<()> {
    loop {
        // SAFETY: flock on an fd we own; no memory is passed.
        let rc = unsafe { libc::flock(file.as_raw_fd(), op) };
        if rc == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}
