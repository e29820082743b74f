//! Open files: open/create, I/O, sync, fallocate, lseek, copy_file_range
//! and locks (POSIX locks as open-file-description locks, and flock).

use std::ffi::CStr;
use std::io;
use std::os::fd::AsFd;

use fuse_backend_rs::abi::fuse_abi::{CreateIn, OpenOptions, LK_FLOCK};
use fuse_backend_rs::api::filesystem::{Context, Entry, FileLock, ZeroCopyReader, ZeroCopyWriter};

use super::sys::{self, ScopedFsCreds};
use super::{CachePolicy, ConfinedFs};
use crate::confinement;

/// Access-mode and other open flags that change data.
const WRITE_FLAGS: i32 = libc::O_WRONLY | libc::O_RDWR | libc::O_TRUNC | libc::O_APPEND;

impl ConfinedFs {
    fn open_options(&self, is_dir: bool) -> OpenOptions {
        match (self.config.cache, is_dir) {
            (CachePolicy::Never, false) => OpenOptions::DIRECT_IO,
            (CachePolicy::Always, false) => OpenOptions::KEEP_CACHE,
            (CachePolicy::Always, true) => OpenOptions::CACHE_DIR,
            _ => OpenOptions::empty(),
        }
    }

    /// Host open flags for a guest open: creation flags are the kernel's
    /// business, and writes are refused on a read-only share.
    fn host_open_flags(&self, flags: u32) -> io::Result<i32> {
        let flags = flags as i32 & !(libc::O_CREAT | libc::O_EXCL | libc::O_NOCTTY);
        if flags & WRITE_FLAGS != 0 {
            self.check_writable()?;
        }
        Ok(flags)
    }

    pub(super) fn do_open(
        &self,
        inode: u64,
        flags: u32,
        is_dir: bool,
    ) -> io::Result<(u64, OpenOptions)> {
        let (data, fd) = self.inode(inode)?;
        let mut flags = self.host_open_flags(flags)?;
        match (data.file_type, is_dir) {
            (libc::S_IFDIR, true) => flags |= libc::O_DIRECTORY,
            (libc::S_IFDIR, false) if flags & libc::O_ACCMODE == libc::O_RDONLY => {}
            (libc::S_IFDIR, false) => return Err(io::Error::from_raw_os_error(libc::EISDIR)),
            (_, true) => return Err(io::Error::from_raw_os_error(libc::ENOTDIR)),
            (libc::S_IFREG | libc::S_IFIFO | libc::S_IFSOCK, false) => {}
            // Never open a host device node for the guest (CVE-2020-35517
            // class): the guest may have made it.
            _ => return Err(io::Error::from_raw_os_error(libc::EACCES)),
        }
        let file = self.proc_fd.reopen(fd.as_fd(), flags)?;
        let handle = self.handles.insert(inode, file)?;
        Ok((handle, self.open_options(is_dir)))
    }

    pub(super) fn do_create(
        &self,
        ctx: &Context,
        parent: u64,
        name: &CStr,
        args: CreateIn,
    ) -> io::Result<(Entry, u64, OpenOptions)> {
        self.check_writable()?;
        confinement::validate_name(name)?;
        let dir = self.dir(parent)?;
        let flags = self.host_open_flags(args.flags)? | libc::O_CREAT;
        let file = {
            let _creds = ScopedFsCreds::switch(ctx.uid, ctx.gid)?;
            confinement::open_beneath(dir.as_fd(), name, flags, args.mode & 0o7777)?
        };
        // The inode we just opened, not whatever the name points at now.
        let path_fd = self.proc_fd.reopen(file.as_fd(), libc::O_PATH)?;
        let entry = self.entry_for_fd(path_fd)?;
        match self.handles.insert(entry.inode, file) {
            Ok(handle) => Ok((entry, handle, self.open_options(false))),
            Err(e) => {
                self.inodes.forget(entry.inode, 1);
                Err(e)
            }
        }
    }

    pub(super) fn do_read(
        &self,
        inode: u64,
        handle: u64,
        w: &mut dyn ZeroCopyWriter,
        size: u32,
        offset: u64,
    ) -> io::Result<usize> {
        let h = self.handles.get(handle, inode)?;
        h.with_file(|f| w.write_from(f, size as usize, offset))
    }

    pub(super) fn do_write(
        &self,
        inode: u64,
        handle: u64,
        r: &mut dyn ZeroCopyReader,
        size: u32,
        offset: u64,
    ) -> io::Result<usize> {
        self.check_writable()?;
        let h = self.handles.get(handle, inode)?;
        h.with_file(|f| r.read_to(f, size as usize, offset))
    }

    /// On close of any guest fd of the handle: drop the POSIX locks held
    /// through it, as close(2) does.
    pub(super) fn do_flush(&self, inode: u64, handle: u64) -> io::Result<()> {
        let h = self.handles.get(handle, inode)?;
        let mut unlock = posix_lock(&FileLock {
            start: 0,
            end: u64::MAX,
            lock_type: libc::F_UNLCK as u32,
            pid: 0,
        });
        match sys::ofd_lock(h.fd(), libc::F_OFD_SETLK, &mut unlock) {
            // Not every filesystem supports locks; flush still succeeds.
            Err(e)
                if e.raw_os_error() != Some(libc::ENOLCK)
                    && e.raw_os_error() != Some(libc::EINVAL) =>
            {
                Err(e)
            }
            _ => Ok(()),
        }
    }

    pub(super) fn do_release(&self, inode: u64, handle: u64) -> io::Result<()> {
        self.handles.remove(handle, inode)
    }

    pub(super) fn do_fsync(&self, inode: u64, handle: u64, datasync: bool) -> io::Result<()> {
        let h = self.handles.get(handle, inode)?;
        sys::sync_fd(h.fd(), datasync)
    }

    pub(super) fn do_fallocate(
        &self,
        inode: u64,
        handle: u64,
        mode: u32,
        offset: u64,
        len: u64,
    ) -> io::Result<()> {
        self.check_writable()?;
        let h = self.handles.get(handle, inode)?;
        sys::fallocate_fd(h.fd(), mode, offset, len)
    }

    pub(super) fn do_lseek(
        &self,
        inode: u64,
        handle: u64,
        offset: u64,
        whence: u32,
    ) -> io::Result<u64> {
        let h = self.handles.get(handle, inode)?;
        match whence as i32 {
            libc::SEEK_SET
            | libc::SEEK_CUR
            | libc::SEEK_END
            | libc::SEEK_DATA
            | libc::SEEK_HOLE => sys::lseek_fd(h.fd(), offset, whence),
            _ => Err(io::Error::from_raw_os_error(libc::EINVAL)),
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn do_copy_file_range(
        &self,
        inode_in: u64,
        handle_in: u64,
        offset_in: u64,
        inode_out: u64,
        handle_out: u64,
        offset_out: u64,
        len: u64,
        flags: u64,
    ) -> io::Result<usize> {
        self.check_writable()?;
        let flags = u32::try_from(flags).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        let src = self.handles.get(handle_in, inode_in)?;
        let dst = self.handles.get(handle_out, inode_out)?;
        let len = usize::try_from(len)
            .unwrap_or(usize::MAX)
            .min(isize::MAX as usize);
        sys::copy_range(src.fd(), offset_in, dst.fd(), offset_out, len, flags)
    }

    pub(super) fn do_getlk(&self, inode: u64, handle: u64, lock: FileLock) -> io::Result<FileLock> {
        let h = self.handles.get(handle, inode)?;
        let mut fl = posix_lock(&lock);
        sys::ofd_lock(h.fd(), libc::F_OFD_GETLK, &mut fl)?;
        Ok(file_lock(&fl))
    }

    /// `setlk` / `setlkw`; `wait` blocks this worker until the lock is free.
    pub(super) fn do_setlk(
        &self,
        inode: u64,
        handle: u64,
        lock: FileLock,
        flags: u32,
        wait: bool,
    ) -> io::Result<()> {
        let h = self.handles.get(handle, inode)?;
        if flags & LK_FLOCK != 0 {
            let op = match lock.lock_type as i32 {
                libc::F_RDLCK => libc::LOCK_SH,
                libc::F_WRLCK => libc::LOCK_EX,
                libc::F_UNLCK => libc::LOCK_UN,
                _ => return Err(io::Error::from_raw_os_error(libc::EINVAL)),
            };
            return sys::flock_fd(h.fd(), if wait { op } else { op | libc::LOCK_NB });
        }
        let mut fl = posix_lock(&lock);
        let cmd = if wait {
            libc::F_OFD_SETLKW
        } else {
            libc::F_OFD_SETLK
        };
        sys::ofd_lock(h.fd(), cmd, &mut fl)
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
