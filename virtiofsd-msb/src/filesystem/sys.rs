//! Thin safe wrappers over the libc calls the filesystem makes. Every name
//! argument here is one already-validated component beneath a trusted
//! directory fd (see [`crate::confinement`]); no wrapper follows a final
//! symlink unless its doc says so.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// Turns a libc `-1` return into the thread's errno.
pub fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// `-1` → errno for `ssize_t`/`off_t` returns.
pub fn cvt64(ret: i64) -> io::Result<i64> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// `lstat` of the inode behind `fd` (works on `O_PATH` fds).
pub fn stat_fd(fd: BorrowedFd<'_>) -> io::Result<libc::stat64> {
    stat_at_flags(fd, c"", libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW)
}

/// `lstat` of `name` inside directory `dir`.
pub fn stat_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<libc::stat64> {
    stat_at_flags(dir, name, libc::AT_SYMLINK_NOFOLLOW)
}

fn stat_at_flags(dir: BorrowedFd<'_>, name: &CStr, flags: i32) -> io::Result<libc::stat64> {
    // SAFETY: stat64 is plain data; zeroed is a valid value to overwrite.
    let mut st: libc::stat64 = unsafe { std::mem::zeroed() };
    // SAFETY: valid fd, NUL-terminated name, writable `st`.
    cvt(unsafe { libc::fstatat64(dir.as_raw_fd(), name.as_ptr(), &mut st, flags) })?;
    Ok(st)
}

/// `mkdirat(dir, name, mode)`.
pub fn mkdir_at(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> io::Result<()> {
    // SAFETY: valid fd and NUL-terminated name.
    cvt(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode) }).map(drop)
}

/// `mknodat(dir, name, mode, rdev)`.
pub fn mknod_at(dir: BorrowedFd<'_>, name: &CStr, mode: u32, rdev: u64) -> io::Result<()> {
    // SAFETY: valid fd and NUL-terminated name.
    cvt(unsafe { libc::mknodat(dir.as_raw_fd(), name.as_ptr(), mode, rdev) }).map(drop)
}

/// `symlinkat(target, dir, name)`: the link text is stored, never resolved.
pub fn symlink_at(target: &CStr, dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    // SAFETY: NUL-terminated strings and a valid fd.
    cvt(unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), name.as_ptr()) }).map(drop)
}

/// `unlinkat(dir, name, flags)` (`AT_REMOVEDIR` for directories).
pub fn unlink_at(dir: BorrowedFd<'_>, name: &CStr, flags: i32) -> io::Result<()> {
    // SAFETY: valid fd and NUL-terminated name.
    cvt(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) }).map(drop)
}

/// `renameat2(olddir, oldname, newdir, newname, flags)`.
pub fn rename_at(
    olddir: BorrowedFd<'_>,
    oldname: &CStr,
    newdir: BorrowedFd<'_>,
    newname: &CStr,
    flags: u32,
) -> io::Result<()> {
    // SAFETY: valid fds and NUL-terminated names.
    cvt(unsafe {
        libc::renameat2(
            olddir.as_raw_fd(),
            oldname.as_ptr(),
            newdir.as_raw_fd(),
            newname.as_ptr(),
            flags,
        )
    })
    .map(drop)
}

/// `linkat(olddir, oldname, newdir, newname, flags)`.
pub fn link_at(
    olddir: BorrowedFd<'_>,
    oldname: &CStr,
    newdir: BorrowedFd<'_>,
    newname: &CStr,
    flags: i32,
) -> io::Result<()> {
    // SAFETY: valid fds and NUL-terminated names.
    cvt(unsafe {
        libc::linkat(
            olddir.as_raw_fd(),
            oldname.as_ptr(),
            newdir.as_raw_fd(),
            newname.as_ptr(),
            flags,
        )
    })
    .map(drop)
}

/// Text of the symlink behind `fd` (an `O_PATH | O_NOFOLLOW` fd).
pub fn readlink_fd(fd: BorrowedFd<'_>) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
    // SAFETY: `buf` is writable for its length; empty path names `fd`.
    let n = unsafe {
        libc::readlinkat(
            fd.as_raw_fd(),
            c"".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    let n = cvt64(n as i64)? as usize;
    buf.truncate(n);
    Ok(buf)
}

/// `fchownat(fd, "", uid, gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW)`;
/// `u32::MAX` leaves a field unchanged.
pub fn chown_fd(fd: BorrowedFd<'_>, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: valid fd and empty NUL-terminated path.
    cvt(unsafe {
        libc::fchownat(
            fd.as_raw_fd(),
            c"".as_ptr(),
            uid,
            gid,
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .map(drop)
}

/// `fchmodat(dir, name, mode, 0)`.
pub fn chmod_at(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> io::Result<()> {
    // SAFETY: valid fd and NUL-terminated name.
    cvt(unsafe { libc::fchmodat(dir.as_raw_fd(), name.as_ptr(), mode, 0) }).map(drop)
}

/// `utimensat(dir, name, times, 0)`.
pub fn utimens_at(dir: BorrowedFd<'_>, name: &CStr, times: &[libc::timespec; 2]) -> io::Result<()> {
    // SAFETY: valid fd, NUL-terminated name, two timespecs.
    cvt(unsafe { libc::utimensat(dir.as_raw_fd(), name.as_ptr(), times.as_ptr(), 0) }).map(drop)
}

/// `ftruncate(fd, size)`.
pub fn truncate_fd(fd: BorrowedFd<'_>, size: u64) -> io::Result<()> {
    // SAFETY: valid fd.
    cvt(unsafe { libc::ftruncate64(fd.as_raw_fd(), size as i64) }).map(drop)
}

/// `fallocate(fd, mode, offset, len)`.
pub fn fallocate_fd(fd: BorrowedFd<'_>, mode: u32, offset: u64, len: u64) -> io::Result<()> {
    // SAFETY: valid fd.
    cvt(unsafe { libc::fallocate64(fd.as_raw_fd(), mode as i32, offset as i64, len as i64) })
        .map(drop)
}

/// `lseek(fd, offset, whence)`.
pub fn lseek_fd(fd: BorrowedFd<'_>, offset: u64, whence: u32) -> io::Result<u64> {
    // SAFETY: valid fd.
    cvt64(unsafe { libc::lseek64(fd.as_raw_fd(), offset as i64, whence as i32) }).map(|o| o as u64)
}

/// `fsync` or `fdatasync`.
pub fn sync_fd(fd: BorrowedFd<'_>, datasync: bool) -> io::Result<()> {
    // SAFETY: valid fd.
    let ret = unsafe {
        if datasync {
            libc::fdatasync(fd.as_raw_fd())
        } else {
            libc::fsync(fd.as_raw_fd())
        }
    };
    cvt(ret).map(drop)
}

/// `fstatvfs` of the filesystem holding `fd`.
pub fn statvfs_fd(fd: BorrowedFd<'_>) -> io::Result<libc::statvfs64> {
    // SAFETY: plain data, overwritten by the call.
    let mut st: libc::statvfs64 = unsafe { std::mem::zeroed() };
    // SAFETY: valid fd and writable struct.
    cvt(unsafe { libc::fstatvfs64(fd.as_raw_fd(), &mut st) })?;
    Ok(st)
}

/// `copy_file_range` between two open files.
pub fn copy_range(
    fd_in: BorrowedFd<'_>,
    off_in: u64,
    fd_out: BorrowedFd<'_>,
    off_out: u64,
    len: usize,
    flags: u32,
) -> io::Result<usize> {
    let mut off_in = off_in as i64;
    let mut off_out = off_out as i64;
    // SAFETY: valid fds and offsets the kernel may update.
    let n = unsafe {
        libc::copy_file_range(
            fd_in.as_raw_fd(),
            &mut off_in,
            fd_out.as_raw_fd(),
            &mut off_out,
            len,
            flags,
        )
    };
    cvt64(n as i64).map(|n| n as usize)
}

/// `fcntl(fd, cmd, &flock)` for OFD locks.
pub fn ofd_lock(fd: BorrowedFd<'_>, cmd: i32, lock: &mut libc::flock64) -> io::Result<()> {
    // SAFETY: valid fd and a valid, writable flock struct.
    cvt(unsafe { libc::fcntl(fd.as_raw_fd(), cmd, lock as *mut libc::flock64) }).map(drop)
}

/// `flock(fd, op)`.
pub fn flock_fd(fd: BorrowedFd<'_>, op: i32) -> io::Result<()> {
    // SAFETY: valid fd.
    cvt(unsafe { libc::flock(fd.as_raw_fd(), op) }).map(drop)
}

/// Extended-attribute calls on a path (an `/proc/self/fd/N` path of ours).
pub mod xattr {
    use super::{cvt, cvt64};
    use std::ffi::{CStr, CString};
    use std::io;
    use std::os::fd::{AsRawFd, BorrowedFd};
    use std::sync::atomic::{AtomicBool, Ordering};

    /// `getxattr(path, name)`; an empty `buf` asks for the size.
    pub fn get(path: &CStr, name: &CStr, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: NUL-terminated strings; `buf` is writable for its length.
        let n = unsafe {
            libc::getxattr(
                path.as_ptr(),
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        cvt64(n as i64).map(|n| n as usize)
    }

    /// `getxattrat`/`setxattrat` (Linux 6.13; the same number on every
    /// architecture since the syscall tables were unified).
    const SYS_SETXATTRAT: libc::c_long = 463;
    const SYS_GETXATTRAT: libc::c_long = 464;

    /// `struct xattr_args` of `getxattrat`/`setxattrat`.
    #[repr(C)]
    struct XattrArgs {
        value: u64,
        size: u32,
        flags: u32,
    }

    /// Set once the kernel has answered `ENOSYS` to the `*xattrat` calls.
    static NO_XATTRAT: AtomicBool = AtomicBool::new(false);

    /// Runs an `*xattrat` call; `None` when the kernel does not have it
    /// (then the caller uses the path-based call).
    fn xattrat(call: impl FnOnce() -> libc::c_long) -> Option<io::Result<usize>> {
        if NO_XATTRAT.load(Ordering::Relaxed) {
            return None;
        }
        match cvt64(call()) {
            Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
                NO_XATTRAT.store(true, Ordering::Relaxed);
                None
            }
            r => Some(r.map(|n| n as usize)),
        }
    }

    /// `getxattr` of the inode that `name` in directory `dir` resolves to
    /// (following it: meant for the `/proc/self/fd` directory, a shorter
    /// walk than the whole `/proc/self/fd/N` path); falls back to `path`
    /// on kernels without `getxattrat`.
    pub fn get_at(
        (dir, name): (BorrowedFd<'_>, &CStr),
        path: impl FnOnce() -> CString,
        attr: &CStr,
        buf: &mut [u8],
    ) -> io::Result<usize> {
        let args = XattrArgs {
            value: buf.as_mut_ptr() as u64,
            size: buf.len().try_into().unwrap_or(u32::MAX),
            flags: 0,
        };
        let got = xattrat(|| {
            // SAFETY: valid fd, NUL-terminated strings, and `args` points at
            // `buf`, writable for `args.size` bytes, for the whole call.
            unsafe {
                libc::syscall(
                    SYS_GETXATTRAT,
                    dir.as_raw_fd(),
                    name.as_ptr(),
                    0,
                    attr.as_ptr(),
                    &args as *const XattrArgs,
                    std::mem::size_of::<XattrArgs>(),
                )
            }
        });
        got.unwrap_or_else(|| get(&path(), attr, buf))
    }

    /// `setxattr` through `dir`/`name` as [`get_at`] reads.
    pub fn set_at(
        (dir, name): (BorrowedFd<'_>, &CStr),
        path: impl FnOnce() -> CString,
        attr: &CStr,
        value: &[u8],
        flags: u32,
    ) -> io::Result<()> {
        let args = XattrArgs {
            value: value.as_ptr() as u64,
            size: value.len().try_into().unwrap_or(u32::MAX),
            flags,
        };
        let done = xattrat(|| {
            // SAFETY: valid fd, NUL-terminated strings, and `args` points at
            // `value`, readable for `args.size` bytes, for the whole call.
            unsafe {
                libc::syscall(
                    SYS_SETXATTRAT,
                    dir.as_raw_fd(),
                    name.as_ptr(),
                    0,
                    attr.as_ptr(),
                    &args as *const XattrArgs,
                    std::mem::size_of::<XattrArgs>(),
                )
            }
        });
        match done {
            Some(r) => r.map(drop),
            None => set(&path(), attr, value, flags as i32),
        }
    }

    /// `fgetxattr(fd, name)` on an fd opened for I/O (not `O_PATH`).
    pub fn fget(fd: BorrowedFd<'_>, name: &CStr, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: valid fd, NUL-terminated name; `buf` is writable for its
        // length.
        let n = unsafe {
            libc::fgetxattr(
                fd.as_raw_fd(),
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        cvt64(n as i64).map(|n| n as usize)
    }

    /// `fsetxattr(fd, name, value, flags)` on an fd opened for I/O.
    pub fn fset(fd: BorrowedFd<'_>, name: &CStr, value: &[u8], flags: i32) -> io::Result<()> {
        // SAFETY: valid fd, NUL-terminated name; `value` readable for its
        // length.
        cvt(unsafe {
            libc::fsetxattr(
                fd.as_raw_fd(),
                name.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                flags,
            )
        })
        .map(drop)
    }

    /// `listxattr(path)`; an empty `buf` asks for the size.
    pub fn list(path: &CStr, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: NUL-terminated path; `buf` is writable for its length.
        let n = unsafe { libc::listxattr(path.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        cvt64(n as i64).map(|n| n as usize)
    }

    /// `setxattr(path, name, value, flags)`.
    pub fn set(path: &CStr, name: &CStr, value: &[u8], flags: i32) -> io::Result<()> {
        // SAFETY: NUL-terminated strings; `value` readable for its length.
        cvt(unsafe {
            libc::setxattr(
                path.as_ptr(),
                name.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                flags,
            )
        })
        .map(drop)
    }

    /// `removexattr(path, name)`.
    pub fn remove(path: &CStr, name: &CStr) -> io::Result<()> {
        // SAFETY: NUL-terminated strings.
        cvt(unsafe { libc::removexattr(path.as_ptr(), name.as_ptr()) }).map(drop)
    }
}

/// Sets the calling thread's filesystem uid and gid for the life of the
/// guard, so files the guest creates get the guest caller's owner.
pub struct ScopedFsCreds {
    old_uid: u32,
    old_gid: u32,
}

impl ScopedFsCreds {
    /// Switches this thread to `uid`/`gid` (gid first, as root). A daemon
    /// not running as root keeps its own identity (the calls are no-ops).
    pub fn switch(uid: u32, gid: u32) -> io::Result<Self> {
        // SAFETY: setfsgid/setfsuid only change this thread's fs ids and
        // return the previous value.
        let old_gid = unsafe { libc::setfsgid(gid) } as u32;
        // SAFETY: as above.
        let old_uid = unsafe { libc::setfsuid(uid) } as u32;
        // setfsuid reports no error; read back to see whether it took.
        // SAFETY: an invalid id (-1) changes nothing and returns the current.
        let now_uid = unsafe { libc::setfsuid(u32::MAX) } as u32;
        // SAFETY: as above.
        let now_gid = unsafe { libc::setfsgid(u32::MAX) } as u32;
        let guard = ScopedFsCreds { old_uid, old_gid };
        if (now_uid != uid || now_gid != gid) && old_uid == 0 {
            return Err(io::Error::from_raw_os_error(libc::EPERM));
        }
        Ok(guard)
    }
}

impl Drop for ScopedFsCreds {
    fn drop(&mut self) {
        // SAFETY: restores this thread's previous fs ids.
        unsafe {
            libc::setfsuid(self.old_uid);
            libc::setfsgid(self.old_gid);
        }
    }
}
