//! The one place host paths are resolved.
//!
//! Every name the guest sends is a single path component. [`validate_name`]
//! refuses anything else (empty, `.`, `..`, a `/`), and every open of a
//! guest-named entry goes through [`open_beneath`], which uses `openat2` with
//! `RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_SYMLINKS` relative to a
//! directory fd the daemon already trusts. A symlink in the share is opened
//! as the link itself (`O_PATH | O_NOFOLLOW`) and never followed on the host:
//! the guest reads its text with `readlink` and resolves it in its own tree.
//!
//! The other `*at` calls the filesystem makes (mkdirat, unlinkat, renameat2,
//! …) take a validated single component beneath a trusted directory fd and do
//! not follow a final symlink, so they cannot leave the share either.
//!
//! Re-opening an inode the daemon already holds (an `O_PATH` fd) for I/O goes
//! through [`ProcSelfFd::reopen`]: `/proc/self/fd/N` names exactly the inode of
//! our own fd, with no lookup of any guest-controlled component.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

/// Checks one guest-supplied name: it must be a single, ordinary path
/// component. Empty names, `.`, `..` and anything holding `/` get `EINVAL`.
/// (A `CStr` cannot hold an interior NUL.)
pub fn validate_name(name: &CStr) -> io::Result<()> {
    let bytes = name.to_bytes();
    let bad = bytes.is_empty() || bytes == b"." || bytes == b".." || bytes.contains(&b'/');
    if bad {
        Err(io::Error::from_raw_os_error(libc::EINVAL))
    } else {
        Ok(())
    }
}

/// The `openat2` resolve flags used for every guest-named open: stay beneath
/// the directory, never cross a magic link, never follow a symlink.
pub const RESOLVE_CONFINED: u64 =
    libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS | libc::RESOLVE_NO_SYMLINKS;

/// Opens the guest-named entry `name` beneath directory `dir` with `openat2`.
///
/// `name` must already have passed [`validate_name`]; it is checked again
/// here so no caller can skip it. A final symlink is never followed: with
/// `O_PATH | O_NOFOLLOW` the link itself is opened, otherwise the open fails
/// with `ELOOP`.
pub fn open_beneath(
    dir: BorrowedFd<'_>,
    name: &CStr,
    flags: i32,
    mode: u32,
) -> io::Result<OwnedFd> {
    validate_name(name)?;
    openat2_raw(dir, name, flags, mode, RESOLVE_CONFINED)
}

/// Opens the directory `dir` itself again (name `"."`), confined like any
/// other open. Used to get a readable fd for the share root.
pub fn open_dir_again(dir: BorrowedFd<'_>, flags: i32) -> io::Result<OwnedFd> {
    openat2_raw(dir, c".", flags | libc::O_DIRECTORY, 0, RESOLVE_CONFINED)
}

/// `struct open_how` of openat2(2) (libc's is non-exhaustive).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

fn openat2_raw(
    dir: BorrowedFd<'_>,
    name: &CStr,
    flags: i32,
    mode: u32,
    resolve: u64,
) -> io::Result<OwnedFd> {
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u64,
        mode: if flags & (libc::O_CREAT | libc::O_TMPFILE) != 0 {
            u64::from(mode)
        } else {
            0
        },
        resolve,
    };
    loop {
        // SAFETY: `how` is a fully initialised `struct open_how` whose size we pass;
        // `name` is a valid NUL-terminated string; `dir` is an open fd.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dir.as_raw_fd(),
                name.as_ptr(),
                &how as *const OpenHow,
                std::mem::size_of::<OpenHow>(),
            )
        };
        if ret >= 0 {
            // SAFETY: openat2 returned a new fd that nothing else owns.
            return Ok(unsafe { OwnedFd::from_raw_fd(ret as RawFd) });
        }
        let err = io::Error::last_os_error();
        // openat2 answers EAGAIN with RESOLVE_BENEATH when a concurrent
        // rename might have let a `..` escape; retry as the man page advises.
        if err.raw_os_error() != Some(libc::EAGAIN) {
            return Err(err);
        }
    }
}

/// Set once the working directory is the `/proc/self/fd` directory (see
/// [`ProcSelfFd::make_cwd`]): paths naming our fds are then relative.
static PROC_FD_IS_CWD: AtomicBool = AtomicBool::new(false);

/// A handle on `/proc/self/fd`, used to re-open inodes the daemon holds as
/// `O_PATH` fds with real access modes, and to name them for the few calls
/// that take no fd (xattrs, utimensat on `O_PATH` fds).
pub struct ProcSelfFd {
    dir: OwnedFd,
}

impl ProcSelfFd {
    /// Opens `/proc/self/fd`; fails if /proc is not mounted.
    pub fn open() -> io::Result<Self> {
        // SAFETY: a constant NUL-terminated path; the result is checked.
        let fd = unsafe {
            libc::open(
                c"/proc/self/fd".as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: open returned a new fd that nothing else owns.
        let dir = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(ProcSelfFd { dir })
    }

    /// The `/proc/self/fd` directory fd.
    pub fn dir(&self) -> BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.dir.as_fd()
    }

    /// The name of `fd` inside `/proc/self/fd`.
    pub fn entry_name(fd: BorrowedFd<'_>) -> CString {
        // A decimal number never holds a NUL.
        CString::new(fd.as_raw_fd().to_string()).unwrap_or_default()
    }

    /// A path naming `fd` (for path-only calls such as getxattr):
    /// `/proc/self/fd/N`, or just `N` once [`ProcSelfFd::make_cwd`] has
    /// made that directory the working directory (inside the sandbox, where
    /// `/proc` is no longer reachable by an absolute path: `/` is the share,
    /// and an absolute path would name a guest file).
    pub fn path_of(fd: BorrowedFd<'_>) -> CString {
        let path = if PROC_FD_IS_CWD.load(Ordering::Acquire) {
            fd.as_raw_fd().to_string()
        } else {
            format!("/proc/self/fd/{}", fd.as_raw_fd())
        };
        // A path made of digits and '/' never holds a NUL.
        CString::new(path).unwrap_or_default()
    }

    /// Makes this `/proc/self/fd` directory the process's working
    /// directory, so [`ProcSelfFd::path_of`] gives relative paths from now
    /// on. The sandbox calls this once, before any thread starts.
    pub fn make_cwd(&self) -> io::Result<()> {
        // SAFETY: fchdir on an open directory fd (O_PATH fds are allowed).
        if unsafe { libc::fchdir(self.dir.as_raw_fd()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        PROC_FD_IS_CWD.store(true, Ordering::Release);
        Ok(())
    }

    /// Opens the inode behind our own `fd` again with `flags` (never with
    /// `O_CREAT`). This follows only the magic link of an fd the daemon
    /// holds, never a guest-supplied path.
    pub fn reopen(&self, fd: BorrowedFd<'_>, flags: i32) -> io::Result<OwnedFd> {
        let name = Self::entry_name(fd);
        let flags = (flags | libc::O_CLOEXEC) & !(libc::O_NOFOLLOW | libc::O_CREAT | libc::O_EXCL);
        // SAFETY: `name` is NUL-terminated; `self.dir` is an open directory.
        let ret = unsafe { libc::openat(self.dir.as_raw_fd(), name.as_ptr(), flags) };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: openat returned a new fd that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(ret) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    fn open_dir(path: &std::path::Path) -> OwnedFd {
        let c = CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: valid path; result checked.
        let fd = unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        assert!(fd >= 0);
        // SAFETY: fresh fd.
        unsafe { OwnedFd::from_raw_fd(fd) }
    }

    #[test]
    fn names_that_are_not_one_component_are_refused() {
        for bad in [&b""[..], b".", b"..", b"a/b", b"/", b"../x"] {
            let c = CString::new(bad).unwrap();
            let err = validate_name(&c).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::EINVAL), "{bad:?}");
        }
        for good in [&b"a"[..], b"...", b".hidden", b"a b", b"\xff"] {
            validate_name(&CString::new(good).unwrap()).unwrap();
        }
    }

    #[test]
    fn symlinks_are_opened_as_links_and_never_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let share = tmp.path().join("share");
        std::fs::create_dir(&share).unwrap();
        std::fs::write(tmp.path().join("secret"), b"s").unwrap();
        std::os::unix::fs::symlink("../secret", share.join("out")).unwrap();
        std::os::unix::fs::symlink("/etc", share.join("etc")).unwrap();
        let dir = open_dir(&share);
        for link in [c"out", c"etc"] {
            let err = open_beneath(dir.as_fd(), link, libc::O_RDONLY, 0).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::ELOOP));
            let fd = open_beneath(dir.as_fd(), link, libc::O_PATH | libc::O_NOFOLLOW, 0).unwrap();
            // SAFETY: stat64 is plain data; all-zero is a valid value.
            let mut st: libc::stat64 = unsafe { std::mem::zeroed() };
            // SAFETY: valid fd, empty path with AT_EMPTY_PATH, st is writable.
            let r = unsafe {
                libc::fstatat64(fd.as_raw_fd(), c"".as_ptr(), &mut st, libc::AT_EMPTY_PATH)
            };
            assert_eq!(r, 0);
            assert_eq!(st.st_mode & libc::S_IFMT, libc::S_IFLNK);
        }
        assert!(open_beneath(dir.as_fd(), c"..", libc::O_PATH, 0).is_err());
    }

    #[test]
    fn reopen_gives_the_same_inode_with_a_real_access_mode() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("f"), b"data").unwrap();
        let dir = open_dir(tmp.path());
        let path_fd = open_beneath(dir.as_fd(), c"f", libc::O_PATH | libc::O_NOFOLLOW, 0).unwrap();
        let proc_fd = ProcSelfFd::open().unwrap();
        let file = proc_fd.reopen(path_fd.as_fd(), libc::O_RDONLY).unwrap();
        let mut file = std::fs::File::from(file);
        let mut s = String::new();
        std::io::Read::read_to_string(&mut file, &mut s).unwrap();
        assert_eq!(s, "data");
    }
}
