//! File operations inside a layer (or root) being built, all relative to
//! its directory fd: every component is opened with `openat2(RESOLVE_BENEATH
//! | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)` and `O_NOFOLLOW` (through
//! `virtiofsd_msb::confinement`), so a symlink already in the tree is
//! never followed and nothing outside it can be reached, whatever the
//! layer's paths say.

use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

use virtiofsd_msb::confinement::{open_beneath, open_dir_again};
use virtiofsd_msb::filesystem::sys;

/// Host mode of a directory the tree needs but no entry describes yet.
pub const IMPLICIT_DIR_MODE: u32 = 0o755;

/// One path component as a C string (components never hold NUL or `/`).
pub fn cname(component: &[u8]) -> io::Result<CString> {
    CString::new(component).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// Opens directory `name` beneath `dir`, never through a symlink.
pub fn open_subdir(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<OwnedFd> {
    open_beneath(
        dir,
        name,
        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
        0,
    )
}

/// Most directory fds kept open at once.
const MAX_OPEN_DIRS: usize = 256;

/// A directory tree under construction, with the directories recently
/// used kept open (tar entries come grouped by directory).
pub struct Tree {
    root: OwnedFd,
    open: HashMap<Vec<Vec<u8>>, OwnedFd>,
}

impl Tree {
    /// Opens the (existing) top directory of the tree.
    pub fn open(dir: &Path) -> io::Result<Tree> {
        let f = std::fs::File::open(dir)?;
        let root = open_dir_again(f.as_fd(), libc::O_RDONLY)?;
        let mut tree = Tree {
            root,
            open: HashMap::new(),
        };
        tree.forget();
        Ok(tree)
    }

    /// The directory `parents` (components beneath the top), created with
    /// its missing ancestors (host mode [`IMPLICIT_DIR_MODE`], no record)
    /// when needed. `ELOOP`/`ENOTDIR` when a component is a symlink or
    /// not a directory.
    pub fn enter(&mut self, parents: &[Vec<u8>]) -> io::Result<BorrowedFd<'_>> {
        if !self.open.contains_key(parents) {
            let mut start = parents.len();
            while start > 0 && !self.open.contains_key(&parents[..start]) {
                start -= 1;
            }
            let mut cur = match self.open.get(&parents[..start]) {
                Some(fd) => fd.try_clone()?,
                None => open_dir_again(self.root.as_fd(), libc::O_RDONLY)?,
            };
            for i in start..parents.len() {
                cur = open_or_create(cur.as_fd(), &parents[i])?;
                if self.open.len() >= MAX_OPEN_DIRS {
                    self.forget();
                }
                self.open.insert(parents[..=i].to_vec(), cur.try_clone()?);
            }
        }
        match self.open.get(parents) {
            Some(fd) => Ok(fd.as_fd()),
            None => open_dir_again(self.root.as_fd(), libc::O_RDONLY)
                .and(Err(io::Error::from_raw_os_error(libc::EIO))),
        }
    }

    /// Opens the existing directory `path` (no creation).
    pub fn open_dir(&self, path: &[Vec<u8>]) -> io::Result<OwnedFd> {
        if let Some(fd) = self.open.get(path) {
            return fd.try_clone();
        }
        let mut cur = open_dir_again(self.root.as_fd(), libc::O_RDONLY)?;
        for comp in path {
            cur = open_subdir(cur.as_fd(), &cname(comp)?)?;
        }
        Ok(cur)
    }

    /// Forgets the open directories (after a directory was removed: an
    /// fd of it or beneath it would point at a deleted directory).
    pub fn forget(&mut self) {
        self.open.clear();
        if let Ok(root) = self.root.try_clone() {
            self.open.insert(Vec::new(), root);
        }
    }
}

fn open_or_create(dir: BorrowedFd<'_>, comp: &[u8]) -> io::Result<OwnedFd> {
    let name = cname(comp)?;
    match open_subdir(dir, &name) {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
            match sys::mkdir_at(dir, &name, IMPLICIT_DIR_MODE) {
                Err(e) if e.raw_os_error() != Some(libc::EEXIST) => return Err(e),
                _ => {}
            }
            open_subdir(dir, &name)
        }
        r => r,
    }
}

/// Removes `name` in `dir`, a whole subtree when it is a directory; no
/// symlink is followed.
pub fn remove_entry(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    let st = sys::stat_at(dir, name)?;
    if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
        return sys::unlink_at(dir, name, 0);
    }
    let sub = open_subdir(dir, name)?;
    for child in list_names(sub.as_fd())? {
        remove_entry(sub.as_fd(), &child)?;
    }
    sys::unlink_at(dir, name, libc::AT_REMOVEDIR)
}

/// The names in directory `dir` (without `.` and `..`).
pub fn list_names(dir: BorrowedFd<'_>) -> io::Result<Vec<CString>> {
    // Listing our own fd through /proc resolves no path of the tree.
    let proc_path = format!("/proc/self/fd/{}", dir.as_raw_fd());
    let mut out = Vec::new();
    for e in std::fs::read_dir(proc_path)? {
        let e = e?;
        use std::os::unix::ffi::OsStrExt;
        out.push(cname(e.file_name().as_bytes())?);
    }
    Ok(out)
}

/// Sets xattr `name` on the inode `fd` has open (a file or directory).
pub fn set_xattr(fd: BorrowedFd<'_>, name: &CStr, value: &[u8]) -> io::Result<()> {
    // SAFETY: valid fd, NUL-terminated name, `value` readable for its length.
    let rc = unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    sys::cvt(rc).map(drop)
}

/// Sets the host mode of the inode `fd` has open.
pub fn chmod_fd(fd: BorrowedFd<'_>, mode: u32) -> io::Result<()> {
    // SAFETY: valid fd.
    sys::cvt(unsafe { libc::fchmod(fd.as_raw_fd(), mode) }).map(drop)
}

/// Sets atime and mtime of `name` in `dir` to `mtime`, not following a
/// symlink.
pub fn set_mtime_at(dir: BorrowedFd<'_>, name: &CStr, mtime: libc::timespec) -> io::Result<()> {
    let times = [mtime, mtime];
    // SAFETY: valid fd, NUL-terminated name, two timespecs.
    let rc = unsafe {
        libc::utimensat(
            dir.as_raw_fd(),
            name.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    sys::cvt(rc).map(drop)
}

/// Sets atime and mtime of the inode `fd` has open.
pub fn set_mtime_fd(fd: BorrowedFd<'_>, mtime: libc::timespec) -> io::Result<()> {
    let times = [mtime, mtime];
    // SAFETY: valid fd and two timespecs.
    sys::cvt(unsafe { libc::futimens(fd.as_raw_fd(), times.as_ptr()) }).map(drop)
}
