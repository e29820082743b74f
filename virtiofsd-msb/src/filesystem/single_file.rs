//! Single-file shares (`--shared-file FILE`): the guest sees a root
//! directory that holds exactly one entry, the shared file, under its own
//! name.
//!
//! The file is opened once, at start, beneath its directory (`O_PATH`, a
//! final symlink refused) and from then on reached only through that fd:
//! a lookup of its name in the root registers a duplicate of it, so no
//! request resolves anything by name in the host directory. The root
//! itself is synthetic: its attributes are made up, its listing is `.`,
//! `..` and the file, and every other request naming it fails with `EPERM`
//! before any host call (see [`ConfinedFs::inode`]): nothing can be
//! created, removed, renamed or linked in it, and none of the file's
//! siblings can be named, listed or opened. The file inode itself is
//! served like any other: reads, writes, truncation, locks, xattrs, stat
//! virtualization, host permissions and read-only apply as for a directory
//! share.
//!
//! The host directory's fd is still the inode table's root (the file's
//! kernel handles are reopened on its mount), but no request ever gets to
//! use it.

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::time::Duration;

use fuse_backend_rs::api::filesystem::{DirEntry, Entry};

use super::inodes::ROOT_ID;
use super::{sys, ConfinedFs};
use crate::confinement;

/// The handle opendir gives for the synthetic root (the handle table starts
/// at 1, so this one never names an open file).
const ROOT_DIR_HANDLE: u64 = 0;
/// `st_ino` the synthetic root shows.
const ROOT_INO: u64 = 1;

/// The one file of a single-file share.
pub(super) struct SingleFile {
    /// Its name in the root (its own name on the host).
    name: CString,
    /// `O_PATH` fd opened at start; every lookup registers a duplicate.
    fd: OwnedFd,
}

impl SingleFile {
    /// Opens `name` beneath `dir` (a single component, no symlink); it must
    /// be a regular file.
    pub(super) fn open(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<SingleFile> {
        let invalid = |why: &str| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("shared file {:?}: {why}", name),
            )
        };
        let name = CString::new(name.as_bytes()).map_err(|_| invalid("holds a NUL byte"))?;
        confinement::validate_name(&name).map_err(|_| invalid("not a file name"))?;
        let fd = confinement::open_beneath(dir, &name, libc::O_PATH | libc::O_NOFOLLOW, 0)
            .map_err(|e| io::Error::new(e.kind(), format!("shared file {name:?}: {e}")))?;
        let st = sys::stat_fd(fd.as_fd())?;
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Err(invalid("not a regular file"));
        }
        Ok(SingleFile { name, fd })
    }

    /// The file's `O_PATH` fd (for probing its filesystem).
    pub(super) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl ConfinedFs {
    /// The shared file, when this is a single-file share and `inode` is its
    /// synthetic root.
    pub(super) fn single_root(&self, inode: u64) -> Option<&SingleFile> {
        self.single.as_ref().filter(|_| inode == ROOT_ID)
    }

    /// Lookup in the synthetic root: the file's own name, else `ENOENT`.
    pub(super) fn single_lookup(&self, file: &SingleFile, name: &CStr) -> io::Result<Entry> {
        confinement::validate_name(name)?;
        if name != file.name.as_c_str() {
            return Err(io::Error::from_raw_os_error(libc::ENOENT));
        }
        self.entry_for_fd(file.fd.try_clone()?)
    }

    /// Attributes of the synthetic root: a directory (`0555` when the share
    /// is read-only, else `0755`) with the host file's owner, device and
    /// times.
    pub(super) fn single_root_attr(
        &self,
        file: &SingleFile,
    ) -> io::Result<(libc::stat64, Duration)> {
        let mut attr = sys::stat_fd(file.fd.as_fd())?;
        let perms = if self.config.readonly { 0o555 } else { 0o755 };
        attr.st_ino = ROOT_INO;
        attr.st_mode = libc::S_IFDIR | perms;
        attr.st_nlink = 2;
        attr.st_size = 0;
        attr.st_blocks = 0;
        attr.st_rdev = 0;
        Ok((attr, self.timeout))
    }

    /// The synthetic root's listing from `offset`: `.`, `..`, the file.
    fn single_entries<'a>(
        &self,
        file: &'a SingleFile,
        offset: u64,
    ) -> io::Result<Vec<DirEntry<'a>>> {
        let st = sys::stat_fd(file.fd.as_fd())?;
        let all = [
            (ROOT_INO, &b"."[..], libc::DT_DIR),
            (ROOT_INO, &b".."[..], libc::DT_DIR),
            (st.st_ino, file.name.to_bytes(), libc::DT_REG),
        ];
        Ok(all
            .into_iter()
            .enumerate()
            .skip(offset as usize)
            .map(|(i, (ino, name, kind))| DirEntry {
                ino,
                offset: i as u64 + 1,
                type_: u32::from(kind),
                name,
            })
            .collect())
    }

    /// readdir of the synthetic root.
    pub(super) fn single_readdir(
        &self,
        file: &SingleFile,
        offset: u64,
        add_entry: &mut dyn FnMut(DirEntry) -> io::Result<usize>,
    ) -> io::Result<()> {
        for dirent in self.single_entries(file, offset)? {
            if add_entry(dirent)? == 0 {
                break;
            }
        }
        Ok(())
    }

    /// readdirplus of the synthetic root: `.` and `..` without a lookup,
    /// the file with one (taken back when the reply had no room).
    pub(super) fn single_readdirplus(
        &self,
        file: &SingleFile,
        offset: u64,
        add_entry: &mut dyn FnMut(DirEntry, Entry) -> io::Result<usize>,
    ) -> io::Result<()> {
        for dirent in self.single_entries(file, offset)? {
            if dirent.name == b"." || dirent.name == b".." {
                // SAFETY: plain data, zero is a valid value.
                let mut attr: libc::stat64 = unsafe { std::mem::zeroed() };
                attr.st_ino = dirent.ino;
                attr.st_mode = libc::S_IFDIR;
                let unlooked = Entry {
                    inode: 0,
                    generation: 0,
                    attr,
                    attr_flags: 0,
                    attr_timeout: Duration::ZERO,
                    entry_timeout: Duration::ZERO,
                };
                if add_entry(dirent, unlooked)? == 0 {
                    break;
                }
                continue;
            }
            let entry = self.single_lookup(file, &file.name)?;
            let id = entry.inode;
            let dirent = DirEntry {
                type_: (entry.attr.st_mode & libc::S_IFMT) >> 12,
                ..dirent
            };
            if add_entry(dirent, entry)? == 0 {
                self.inodes.forget(id, 1);
                break;
            }
        }
        Ok(())
    }

    /// opendir of the synthetic root: any flags that do not write.
    pub(super) fn single_opendir(&self, flags: u32) -> io::Result<u64> {
        match flags as i32 & libc::O_ACCMODE {
            libc::O_RDONLY => Ok(ROOT_DIR_HANDLE),
            _ => Err(io::Error::from_raw_os_error(libc::EISDIR)),
        }
    }
}
