//! Extended attributes, served only with `--xattr`.
//!
//! The calls go through `/proc/self/fd/N` of the inode's own fd, so no
//! guest path is resolved. Symlinks carry no attributes here (Linux refuses
//! `user.*` on them anyway). Only `user.*` names reach the host, and never
//! the daemon's own `user.msb.*` (the stat-virtualization record): see
//! [`crate::policy::xattr_names`].
//!
//! Under a quota, guest xattrs are host bytes like file data: each name
//! plus its value is counted ([`crate::policy::xattr_names::guest_xattr_bytes`]), growth is reserved
//! before a set (`ENOSPC` and no change when it does not fit), a removal or
//! a smaller value gives back, and the last unlink of a file gives its
//! xattrs back with its data (see `sizes.rs`).

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::AsFd;

use fuse_backend_rs::api::filesystem::{GetxattrReply, ListxattrReply};

use super::sys::xattr;
use super::ConfinedFs;
use crate::confinement::ProcSelfFd;
use crate::policy::xattr_names;

/// Longest extended attribute value Linux stores (`XATTR_SIZE_MAX`).
const XATTR_SIZE_MAX: usize = 65536;

fn errno(e: i32) -> io::Error {
    io::Error::from_raw_os_error(e)
}

impl ConfinedFs {
    /// The `/proc/self/fd` path of `inode`, or `None` for a symlink.
    fn xattr_path(&self, inode: u64) -> io::Result<Option<(CString, super::inodes::InodeFd)>> {
        if !self.config.xattr {
            return Err(errno(libc::ENOSYS));
        }
        let (data, fd) = self.inode(inode)?;
        if data.is_symlink() {
            return Ok(None);
        }
        Ok(Some((ProcSelfFd::path_of(fd.as_fd()), fd)))
    }

    pub(super) fn do_getxattr(
        &self,
        inode: u64,
        name: &CStr,
        size: u32,
    ) -> io::Result<GetxattrReply> {
        let target = self.xattr_path(inode)?;
        if let Some(e) = xattr_names::classify(name.to_bytes()).get_errno() {
            return Err(errno(e));
        }
        let Some((path, _fd)) = target else {
            return Err(errno(libc::ENODATA));
        };
        if size == 0 {
            return Ok(GetxattrReply::Count(
                xattr::get(&path, name, &mut [])? as u32
            ));
        }
        // The guest picks `size` (up to 4 GiB); no value is longer than
        // XATTR_SIZE_MAX, so no buffer needs to be either.
        let mut buf = vec![0u8; (size as usize).min(XATTR_SIZE_MAX)];
        let n = xattr::get(&path, name, &mut buf)?;
        buf.truncate(n);
        Ok(GetxattrReply::Value(buf))
    }

    pub(super) fn do_listxattr(&self, inode: u64, size: u32) -> io::Result<ListxattrReply> {
        let names = match self.xattr_path(inode)? {
            Some((path, _fd)) => xattr_names::filter_list(&host_list(&path)?),
            None => Vec::new(),
        };
        if size == 0 {
            return Ok(ListxattrReply::Count(names.len() as u32));
        }
        if names.len() > size as usize {
            return Err(errno(libc::ERANGE));
        }
        Ok(ListxattrReply::Names(names))
    }

    pub(super) fn do_setxattr(
        &self,
        inode: u64,
        name: &CStr,
        value: &[u8],
        flags: u32,
    ) -> io::Result<()> {
        let target = self.xattr_path(inode)?;
        self.check_writable()?;
        if let Some(e) = xattr_names::classify(name.to_bytes()).change_errno() {
            return Err(errno(e));
        }
        let Some((path, fd)) = target else {
            return Err(errno(libc::EPERM));
        };
        self.xattr_change(&fd, &path, name, Some(value.len()), || {
            xattr::set(&path, name, value, flags as i32)
        })
    }

    /// Runs `op`, which sets the guest xattr `name` of the inode behind
    /// `fd` (`path`) to a `new_len`-byte value or (`None`) removes it,
    /// under the quota: the growth is reserved first, and the change made
    /// is counted (for an inode with no link left, as an orphan's).
    /// Without a quota this is just `op()`.
    fn xattr_change(
        &self,
        fd: &super::inodes::InodeFd,
        path: &CStr,
        name: &CStr,
        new_len: Option<usize>,
        op: impl FnOnce() -> io::Result<()>,
    ) -> io::Result<()> {
        let Some(q) = &self.quota else {
            return op();
        };
        let st = super::sys::stat_fd(fd.as_fd())?;
        let key = (st.st_dev, st.st_ino);
        let _inode = q.lock_inode(key.0, key.1);
        let counted = |len: usize| (name.to_bytes().len() + len) as u64;
        let old = match xattr::get(path, name, &mut []) {
            Ok(len) => counted(len),
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) => 0,
            Err(e) => return Err(e),
        };
        let new = new_len.map_or(0, counted);
        let charge = self.reserve(q, new.saturating_sub(old))?;
        op()?;
        let delta = i64::try_from(new).unwrap_or(i64::MAX) - i64::try_from(old).unwrap_or(0);
        let unlinked = super::sys::stat_fd(fd.as_fd()).is_ok_and(|st| st.st_nlink == 0);
        charge.settle(if unlinked {
            q.orphan_resized(key, delta)
        } else {
            delta
        });
        Ok(())
    }

    pub(super) fn do_removexattr(&self, inode: u64, name: &CStr) -> io::Result<()> {
        let target = self.xattr_path(inode)?;
        self.check_writable()?;
        if let Some(e) = xattr_names::classify(name.to_bytes()).change_errno() {
            return Err(errno(e));
        }
        let Some((path, fd)) = target else {
            return Err(errno(libc::ENODATA));
        };
        self.xattr_change(&fd, &path, name, None, || xattr::remove(&path, name))
    }
}

/// The full host list of xattr names of `path`, retried if it grows
/// between asking for its size and reading it.
fn host_list(path: &CStr) -> io::Result<Vec<u8>> {
    for _ in 0..8 {
        let len = xattr::list(path, &mut [])?;
        let mut buf = vec![0u8; len + 64];
        match xattr::list(path, &mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(e) if e.raw_os_error() == Some(libc::ERANGE) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(errno(libc::ERANGE))
}
