//! Open files: open/create, I/O, sync, fallocate, lseek, copy_file_range
//! and locks (POSIX locks as open-file-description locks, and flock).

use std::ffi::CStr;
use std::io;
use std::os::fd::AsFd;

use fuse_backend_rs::abi::fuse_abi::{CreateIn, OpenOptions};
use fuse_backend_rs::api::filesystem::{Context, Entry, ZeroCopyReader, ZeroCopyWriter};

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
}
