//! Open files: open/create, I/O, sync, fallocate, lseek, copy_file_range
//! and locks (POSIX locks as open-file-description locks, and flock).

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use fuse_backend_rs::abi::fuse_abi::OpenOptions;
use fuse_backend_rs::api::filesystem::{Context, ZeroCopyReader, ZeroCopyWriter};

use super::inodes::InodeData;
use super::sizes;
use super::sys;
use super::{CachePolicy, ConfinedFs};
use crate::policy::quota::growth;

fn errno(e: i32) -> io::Error {
    io::Error::from_raw_os_error(e)
}

/// Access-mode and other open flags that change data.
const WRITE_FLAGS: i32 = libc::O_WRONLY | libc::O_RDWR | libc::O_TRUNC | libc::O_APPEND;

/// The only guest open flags that reach the host (OPEN, OPENDIR, CREATE):
/// access mode, append/truncate, sync and direct I/O, non-blocking, and
/// the directory check. Everything else is dropped: `O_PATH`, the
/// `O_TMPFILE` bit (an anonymous host file the quota could not see),
/// `O_ASYNC` (SIGIO to the daemon), `__FMODE_EXEC`, and bits no kernel
/// defines yet; `O_CREAT`/`O_EXCL` are the request's business.
const GUEST_OPEN_FLAGS: i32 = libc::O_ACCMODE
    | libc::O_APPEND
    | libc::O_TRUNC
    | libc::O_NONBLOCK
    | libc::O_DSYNC
    | libc::O_SYNC
    | libc::O_DIRECT
    | libc::O_LARGEFILE
    | libc::O_NOATIME
    | libc::O_DIRECTORY;

/// `O_NONBLOCK` for a host FIFO: opening one without a peer, or reading an
/// empty one, must never hold a queue thread (the guest gets `ENXIO` or
/// `EAGAIN` instead).
pub(super) fn never_block(host_type: u32, flags: i32) -> i32 {
    if host_type == libc::S_IFIFO {
        flags | libc::O_NONBLOCK
    } else {
        flags
    }
}

impl ConfinedFs {
    pub(super) fn open_options(&self, is_dir: bool) -> OpenOptions {
        match (self.config.cache, is_dir) {
            (CachePolicy::Never, false) => OpenOptions::DIRECT_IO,
            (CachePolicy::Always, false) => OpenOptions::KEEP_CACHE,
            (CachePolicy::Always, true) => OpenOptions::CACHE_DIR,
            _ => OpenOptions::empty(),
        }
    }

    /// Host open flags for a guest open: creation flags are the kernel's
    /// business, and writes are refused on a read-only share.
    pub(super) fn host_open_flags(&self, flags: u32) -> io::Result<i32> {
        let flags = flags as i32;
        if flags & libc::O_ACCMODE == libc::O_ACCMODE {
            return Err(errno(libc::EINVAL));
        }
        let flags = flags & GUEST_OPEN_FLAGS;
        if flags & WRITE_FLAGS != 0 {
            self.check_writable()?;
        }
        Ok(flags)
    }

    /// Refuses to open what must not be opened for the guest: directories
    /// as files (and the reverse), symlinks, host device nodes (the guest may
    /// have made them, CVE-2020-35517 class), and host regular files that
    /// carry a guest symlink, device, fifo or socket in their record (the
    /// guest kernel opens those itself; only a misbehaving guest asks).
    /// `inode` is the fd's table entry when there is one (its cached
    /// record is then used).
    pub(super) fn check_openable(
        &self,
        fd: BorrowedFd<'_>,
        host_type: u32,
        is_dir: bool,
        flags: i32,
        inode: Option<&InodeData>,
    ) -> io::Result<()> {
        let guest_type = || match inode {
            Some(inode) => self.inode_type(inode, fd),
            None => self.guest_type(fd, host_type),
        };
        match (host_type, is_dir) {
            (libc::S_IFDIR, true) => Ok(()),
            (libc::S_IFDIR, false) if flags & libc::O_ACCMODE == libc::O_RDONLY => Ok(()),
            (libc::S_IFDIR, false) => Err(errno(libc::EISDIR)),
            (_, true) => Err(errno(libc::ENOTDIR)),
            (libc::S_IFREG, false) => match guest_type()? {
                libc::S_IFREG => Ok(()),
                libc::S_IFLNK => Err(errno(libc::ELOOP)),
                _ => Err(errno(libc::EACCES)),
            },
            (libc::S_IFIFO | libc::S_IFSOCK, false) => Ok(()),
            (libc::S_IFLNK, false) => Err(errno(libc::ELOOP)),
            _ => Err(errno(libc::EACCES)),
        }
    }

    /// Opens the inode behind `fd` again with `flags`. With `O_TRUNC` the
    /// bytes freed go back to the quota, and setuid/setgid leave the record
    /// as a truncate by the caller would clear them.
    pub(super) fn reopen_counted(
        &self,
        ctx: &Context,
        fd: BorrowedFd<'_>,
        flags: i32,
    ) -> io::Result<OwnedFd> {
        if flags & libc::O_TRUNC == 0 {
            return self.proc_fd.reopen(fd, flags);
        }
        let st = sys::stat_fd(fd)?;
        let mut opened = None;
        self.with_growth(
            fd,
            (st.st_dev, st.st_ino),
            |_| Ok(0),
            || {
                opened = Some(self.proc_fd.reopen(fd, flags)?);
                Ok(())
            },
        )?;
        let file = opened.ok_or_else(|| errno(libc::EIO))?;
        self.kill_priv(file.as_fd(), ctx.uid == 0);
        Ok(file)
    }

    pub(super) fn do_open(
        &self,
        ctx: &Context,
        inode: u64,
        flags: u32,
        is_dir: bool,
    ) -> io::Result<(u64, OpenOptions)> {
        let (data, fd) = self.inode(inode)?;
        let mut flags = self.host_open_flags(flags)?;
        self.check_openable(fd.as_fd(), data.file_type, is_dir, flags, Some(&data))?;
        flags = never_block(data.file_type, flags);
        if is_dir {
            flags |= libc::O_DIRECTORY;
        }
        let file = if self.config.readonly {
            // Reading must not even move the access time of a read-only
            // share (O_NOATIME needs ownership or CAP_FOWNER; without them
            // the host's atime rules apply).
            match self.proc_fd.reopen(fd.as_fd(), flags | libc::O_NOATIME) {
                Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                    self.proc_fd.reopen(fd.as_fd(), flags)?
                }
                other => other?,
            }
        } else {
            self.reopen_counted(ctx, fd.as_fd(), flags)?
        };
        let handle = self.handles.insert(inode, file)?;
        Ok((handle, self.open_options(is_dir)))
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
        h.with_file(|f| w.write_from(&mut self.copy.file(f), size as usize, offset))
    }

    pub(super) fn do_write(
        &self,
        ctx: &Context,
        inode: u64,
        handle: u64,
        r: &mut dyn ZeroCopyReader,
        size: u32,
        offset: u64,
    ) -> io::Result<usize> {
        self.check_writable()?;
        let h = self.handles.get(handle, inode)?;
        let written = if self.quota.is_some() {
            // SAFETY: F_GETFL on a valid fd takes no pointer.
            let fl = sys::cvt(unsafe { libc::fcntl(h.fd().as_raw_fd(), libc::F_GETFL) })?;
            let append = fl & libc::O_APPEND != 0;
            self.with_growth(
                h.fd(),
                self.inode_key(inode)?,
                |st| {
                    let size_now = sizes::size_of(st);
                    let start = if append { size_now } else { offset };
                    Ok(growth(size_now, start.saturating_add(u64::from(size))))
                },
                || h.with_file(|f| r.read_to(f, size as usize, offset)),
            )?
        } else {
            h.with_file(|f| r.read_to(f, size as usize, offset))?
        };
        self.kill_priv(h.fd(), ctx.uid == 0);
        Ok(written)
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
        self.with_growth(
            h.fd(),
            self.inode_key(inode)?,
            |st| sizes::fallocate_growth(mode, sizes::size_of(st), offset, len),
            || sys::fallocate_fd(h.fd(), mode, offset, len),
        )
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
        ctx: &Context,
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
        let copied = self.with_growth(
            dst.fd(),
            self.inode_key(inode_out)?,
            |st| {
                // No more than the source holds past `offset_in`.
                let available = sizes::size_of(&sys::stat_fd(src.fd())?).saturating_sub(offset_in);
                let n = (len as u64).min(available);
                Ok(growth(sizes::size_of(st), offset_out.saturating_add(n)))
            },
            || sys::copy_range(src.fd(), offset_in, dst.fd(), offset_out, len, flags),
        )?;
        self.kill_priv(dst.fd(), ctx.uid == 0);
        Ok(copied)
    }
}
