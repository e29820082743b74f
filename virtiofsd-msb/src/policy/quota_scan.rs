//! Counting the apparent bytes under a directory (see [`super::quota`] for
//! what counts). Every directory is opened with `openat2` beneath its parent
//! without following symlinks, so the walk never leaves the tree even if it
//! changes meanwhile.

use std::collections::HashSet;
use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{BorrowedFd, IntoRawFd, OwnedFd};

use crate::confinement;

/// A directory stream over an fd we own.
struct Dir {
    stream: std::ptr::NonNull<libc::DIR>,
}

impl Dir {
    fn from_fd(fd: OwnedFd) -> io::Result<Dir> {
        let raw = fd.into_raw_fd();
        // SAFETY: `raw` is an open directory fd we own; fdopendir takes it
        // over on success.
        let stream = unsafe { libc::fdopendir(raw) };
        match std::ptr::NonNull::new(stream) {
            Some(stream) => Ok(Dir { stream }),
            None => {
                let e = io::Error::last_os_error();
                // SAFETY: fdopendir failed, so `raw` is still ours to close.
                unsafe { libc::close(raw) };
                Err(e)
            }
        }
    }

    fn fd(&self) -> BorrowedFd<'_> {
        // SAFETY: the stream is open for the life of `self`; dirfd returns
        // its fd, which stays valid until closedir in drop.
        unsafe { BorrowedFd::borrow_raw(libc::dirfd(self.stream.as_ptr())) }
    }

    /// The next entry name other than `.` and `..`.
    fn next_name(&mut self) -> io::Result<Option<CString>> {
        loop {
            // SAFETY: readdir64 reports errors through errno only; clear it
            // first to tell the end of the stream from an error.
            unsafe { *libc::__errno_location() = 0 };
            // SAFETY: the stream is open; the returned entry stays valid
            // until the next readdir on this stream, and we copy its name
            // before that.
            let ent = unsafe { libc::readdir64(self.stream.as_ptr()) };
            if ent.is_null() {
                let e = io::Error::last_os_error();
                return match e.raw_os_error() {
                    Some(0) | None => Ok(None),
                    Some(_) => Err(e),
                };
            }
            // SAFETY: d_name of a live dirent is NUL-terminated.
            let name = unsafe { CStr::from_ptr((*ent).d_name.as_ptr()) };
            let bytes = name.to_bytes();
            if bytes == b"." || bytes == b".." {
                continue;
            }
            return Ok(Some(name.to_owned()));
        }
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        // SAFETY: the stream is open and closed exactly once, here.
        unsafe { libc::closedir(self.stream.as_ptr()) };
    }
}

/// What a walk of a tree counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Apparent bytes of every non-directory inode, each inode once.
    pub bytes: u64,
    /// Names (directory entries other than `.` and `..`), hard links and
    /// directories included.
    pub entries: u64,
}

/// Apparent bytes of every non-directory inode under `root` (an fd of the
/// directory; `O_PATH` is fine), each inode counted once. Entries that
/// vanish during the walk are skipped; directories the daemon cannot read
/// are skipped with a warning.
pub fn apparent_bytes(root: BorrowedFd<'_>) -> io::Result<u64> {
    tally(root).map(|t| t.bytes)
}

/// Bytes as [`apparent_bytes`] counts them, and names, in one walk.
pub fn tally(root: BorrowedFd<'_>) -> io::Result<Tally> {
    let top = confinement::open_dir_again(root, libc::O_RDONLY)?;
    let mut stack = vec![Dir::from_fd(top)?];
    let mut seen: HashSet<(u64, u64)> = HashSet::new();
    let mut total: u64 = 0;
    let mut entries: u64 = 0;
    while let Some(dir) = stack.last_mut() {
        let Some(name) = dir.next_name()? else {
            stack.pop();
            continue;
        };
        let st = match crate::filesystem::sys::stat_at(dir.fd(), &name) {
            Ok(st) => st,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(e) => return Err(e),
        };
        entries += 1;
        if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
            let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW;
            match confinement::open_beneath(dir.fd(), &name, flags, 0) {
                Ok(fd) => {
                    let child = Dir::from_fd(fd)?;
                    stack.push(child);
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) => {
                    tracing::warn!("quota scan: skipping directory {name:?}: {e}");
                }
            }
            continue;
        }
        if st.st_nlink > 1 && !seen.insert((st.st_dev, st.st_ino)) {
            continue;
        }
        total = total.saturating_add(u64::try_from(st.st_size).unwrap_or(0));
        if st.st_mode & libc::S_IFMT == libc::S_IFREG {
            total = total.saturating_add(xattr_bytes_at(dir.fd(), &name));
        }
    }
    Ok(Tally {
        bytes: total,
        entries,
    })
}

/// Guest xattr bytes (see [`super::xattr_names::guest_xattr_bytes`]) of the
/// regular file `name` of `dir`, read through the file itself (no guest
/// path is followed).
fn xattr_bytes_at(dir: BorrowedFd<'_>, name: &CStr) -> u64 {
    let flags = libc::O_PATH | libc::O_NOFOLLOW;
    match confinement::open_beneath(dir, name, flags, 0) {
        Ok(fd) => {
            let path = confinement::ProcSelfFd::path_of(std::os::fd::AsFd::as_fd(&fd));
            super::xattr_names::guest_xattr_bytes(&path)
        }
        Err(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::{AsFd, FromRawFd};

    fn open_dir(p: &std::path::Path) -> OwnedFd {
        let c = CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: valid path; result checked.
        let fd = unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_DIRECTORY) };
        assert!(fd >= 0);
        // SAFETY: a fresh fd.
        unsafe { OwnedFd::from_raw_fd(fd) }
    }

    #[test]
    fn counts_files_and_symlinks_once_and_never_leaves_the_tree() {
        let outer = tempfile::tempdir().unwrap();
        let root = outer.path().join("root");
        std::fs::create_dir_all(root.join("a/b/c")).unwrap();
        std::fs::write(outer.path().join("outside"), vec![0u8; 100_000]).unwrap();
        std::fs::write(root.join("f1"), vec![1u8; 1000]).unwrap();
        std::fs::write(root.join("a/b/c/f2"), vec![2u8; 234]).unwrap();
        std::fs::hard_link(root.join("f1"), root.join("a/f1-again")).unwrap();
        // A symlink counts its target's length, never what it points at.
        std::os::unix::fs::symlink("../outside", root.join("a/out")).unwrap();
        std::os::unix::fs::symlink(outer.path(), root.join("a/b/up")).unwrap();
        let f = std::fs::File::create(root.join("sparse")).unwrap();
        f.set_len(5000).unwrap();
        let expected =
            1000 + 234 + "../outside".len() as u64 + outer.path().as_os_str().len() as u64 + 5000;
        let fd = open_dir(&root);
        assert_eq!(apparent_bytes(fd.as_fd()).unwrap(), expected);
        // a, a/b, a/b/c, f1, f2, f1-again, out, up, sparse.
        assert_eq!(tally(fd.as_fd()).unwrap().entries, 9);
    }

    #[test]
    fn empty_tree_is_zero() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("empty")).unwrap();
        assert_eq!(apparent_bytes(open_dir(d.path()).as_fd()).unwrap(), 0);
    }
}
