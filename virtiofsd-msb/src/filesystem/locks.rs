//! Locks: POSIX record locks per guest lock owner, and flock per handle.
//!
//! A guest process's POSIX locks belong to its lock owner (one per
//! `files_struct`), not to an open file: two fds of one process never
//! conflict, and closing any of them drops them all. The host has no such
//! owner to lend us, so each (inode, owner) pair gets its own host open file
//! description and the locks are taken on it as OFD locks. Conflicts
//! between owners then behave as between processes; `FUSE_FLUSH` (sent on
//! every close) closes the owner's description, dropping its locks, as
//! close(2) does. flock locks belong to the open file, so they are taken on
//! the handle's own fd.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex};

use fuse_backend_rs::abi::fuse_abi::LK_FLOCK;
use fuse_backend_rs::api::filesystem::FileLock;

use super::sys;
use super::ConfinedFs;

/// Host open file descriptions holding each lock owner's POSIX locks.
pub struct OwnerLocks {
    fds: Mutex<HashMap<(u64, u64), Arc<OwnedFd>>>,
    max: usize,
}

impl OwnerLocks {
    /// A table of at most `max` owner descriptions.
    pub fn new(max: usize) -> Self {
        OwnerLocks {
            fds: Mutex::new(HashMap::new()),
            max,
        }
    }

    /// The description of (`inode`, `owner`), opened by `open` on first use.
    fn get_or_open(
        &self,
        inode: u64,
        owner: u64,
        open: impl FnOnce() -> io::Result<OwnedFd>,
    ) -> io::Result<Arc<OwnedFd>> {
        let mut fds = self.fds.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(fd) = fds.get(&(inode, owner)) {
            return Ok(fd.clone());
        }
        if fds.len() >= self.max {
            return Err(io::Error::from_raw_os_error(libc::ENOLCK));
        }
        let fd = Arc::new(open()?);
        fds.insert((inode, owner), fd.clone());
        Ok(fd)
    }

    /// Drops `owner`'s description of `inode`, and with it its locks.
    pub fn close(&self, inode: u64, owner: u64) {
        self.fds
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(inode, owner));
    }

    /// Drops every description.
    pub fn clear(&self) {
        self.fds.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

impl ConfinedFs {
    /// The host description carrying `owner`'s POSIX locks on `inode`,
    /// opened with the access mode of the guest's `handle`.
    fn owner_fd(&self, inode: u64, handle: u64, owner: u64) -> io::Result<Arc<OwnedFd>> {
        let h = self.handles.get(handle, inode)?;
        self.locks.get_or_open(inode, owner, || {
            // SAFETY: F_GETFL on a valid fd takes no pointer.
            let flags = sys::cvt(unsafe {
                libc::fcntl(std::os::fd::AsRawFd::as_raw_fd(&h.fd()), libc::F_GETFL)
            })?;
            self.proc_fd.reopen(h.fd(), flags & libc::O_ACCMODE)
        })
    }

    pub(super) fn do_getlk(
        &self,
        inode: u64,
        handle: u64,
        owner: u64,
        lock: FileLock,
    ) -> io::Result<FileLock> {
        let fd = self.owner_fd(inode, handle, owner)?;
        let mut fl = posix_lock(&lock);
        sys::ofd_lock(fd.as_fd(), libc::F_OFD_GETLK, &mut fl)?;
        Ok(file_lock(&fl))
    }

    /// `setlk` / `setlkw`; `wait` blocks the calling thread until the lock
    /// is free (the dispatcher only waits off the queue threads).
    pub(super) fn do_setlk(
        &self,
        inode: u64,
        handle: u64,
        owner: u64,
        lock: FileLock,
        flags: u32,
        wait: bool,
    ) -> io::Result<()> {
        if flags & LK_FLOCK != 0 {
            let h = self.handles.get(handle, inode)?;
            let op = match lock.lock_type as i32 {
                libc::F_RDLCK => libc::LOCK_SH,
                libc::F_WRLCK => libc::LOCK_EX,
                libc::F_UNLCK => libc::LOCK_UN,
                _ => return Err(io::Error::from_raw_os_error(libc::EINVAL)),
            };
            return sys::flock_fd(h.fd(), if wait { op } else { op | libc::LOCK_NB });
        }
        let fd = self.owner_fd(inode, handle, owner)?;
        let mut fl = posix_lock(&lock);
        let cmd = if wait {
            libc::F_OFD_SETLKW
        } else {
            libc::F_OFD_SETLK
        };
        sys::ofd_lock(fd.as_fd(), cmd, &mut fl)
    }

    /// On every close of a guest fd: the closing owner's POSIX locks on
    /// the inode go, as with close(2).
    pub(super) fn do_flush(&self, inode: u64, handle: u64, owner: u64) -> io::Result<()> {
        self.handles.get(handle, inode)?;
        self.locks.close(inode, owner);
        Ok(())
    }
}

/// FUSE lock (inclusive end, `OFFSET_MAX` for "to the end") → `flock64`.
fn posix_lock(lock: &FileLock) -> libc::flock64 {
    // SAFETY: plain data; every field is set below or meant to be zero.
    let mut fl: libc::flock64 = unsafe { std::mem::zeroed() };
    fl.l_type = lock.lock_type as i16;
    fl.l_whence = libc::SEEK_SET as i16;
    fl.l_start = lock.start.min(i64::MAX as u64) as i64;
    fl.l_len = if lock.end >= i64::MAX as u64 {
        0
    } else {
        (lock.end.saturating_sub(lock.start) + 1).min(i64::MAX as u64) as i64
    };
    fl.l_pid = 0;
    fl
}

/// `flock64` from F_OFD_GETLK → FUSE lock.
fn file_lock(fl: &libc::flock64) -> FileLock {
    let start = fl.l_start.max(0) as u64;
    let end = if fl.l_len == 0 {
        i64::MAX as u64
    } else {
        start + fl.l_len as u64 - 1
    };
    FileLock {
        start,
        end,
        lock_type: fl.l_type as u32,
        pid: fl.l_pid.max(0) as u32,
    }
}
