//! Host-side file access to a dir volume, with no VM running.
//!
//! Every path is relative to the volume root and resolved by the kernel
//! with `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)` against an fd of
//! the root opened once (see [`path`]): absolute paths, `..` that leaves
//! the root and symlinks leading out give [`Error::PathEscape`]. There is
//! no check-then-use window: the check *is* the open, and operations on
//! the last component (`mkdirat`, `unlinkat`, `fstatat`) work on a
//! directory fd obtained that way and never follow a final symlink.
//! Symlinks that stay inside the volume are followed.
//!
//! Writes count against the volume's quota through the same accounting
//! file the `virtiofsd-msb` daemons of running VMs use (its lock included),
//! counted the daemon's way: apparent bytes of non-directory inodes, each
//! inode once. A write that would pass the quota fails with `ENOSPC` and
//! changes nothing.

mod path;

use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde::Serialize;
use virtiofsd_msb::confinement;
use virtiofsd_msb::filesystem::sys;
use virtiofsd_msb::policy::{Quota, QuotaConfig};

use crate::error::{Error, Result};
use path::{openat2, RelPath};

/// Mode of files `write` creates.
pub const FILE_MODE: u32 = 0o644;
/// Mode of directories `mkdir` creates.
pub const DIR_MODE: u32 = 0o755;

/// Type of a directory entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    /// Regular file.
    File,
    /// Directory.
    Dir,
    /// Symbolic link (not followed).
    Symlink,
    /// Anything else (fifo, socket, device).
    Other,
}

/// One entry of [`VolumeFs::read_dir`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// File name (lossy UTF-8).
    pub name: String,
    /// Its type.
    pub kind: EntryKind,
    /// Apparent size in bytes (`st_size`).
    pub size: u64,
}

/// The quota of a volume, opened on the first change.
struct QuotaSlot {
    limit: u64,
    file: PathBuf,
    quota: OnceLock<Quota>,
}

/// File operations confined to one volume root.
pub struct VolumeFs {
    root_path: PathBuf,
    root: OwnedFd,
    quota: Option<QuotaSlot>,
}

impl std::fmt::Debug for VolumeFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VolumeFs")
            .field("root", &self.root_path)
            .field("quota", &self.quota.as_ref().map(|q| q.limit))
            .finish()
    }
}

fn errno(e: &io::Error) -> Option<i32> {
    e.raw_os_error()
}

impl VolumeFs {
    /// Opens `root` (a directory) for confined access. `quota` is the
    /// budget in bytes and the accounting file shared with the daemons.
    pub fn open(root: &Path, quota: Option<(u64, PathBuf)>) -> Result<VolumeFs> {
        let dir = File::open(root).map_err(|e| Error::io("open volume directory", root, e))?;
        if !dir
            .metadata()
            .map_err(|e| Error::io("open volume directory", root, e))?
            .is_dir()
        {
            return Err(Error::io(
                "open volume directory",
                root,
                io::Error::from_raw_os_error(libc::ENOTDIR),
            ));
        }
        Ok(VolumeFs {
            root_path: root.to_path_buf(),
            root: OwnedFd::from(dir),
            quota: quota.map(|(limit, file)| QuotaSlot {
                limit,
                file,
                quota: OnceLock::new(),
            }),
        })
    }

    /// Absolute host path of the volume root.
    pub fn root(&self) -> &Path {
        &self.root_path
    }

    /// The quota, opened (joining or starting the shared accounting) before
    /// the first change; `None` without a quota.
    fn quota(&self) -> Result<Option<&Quota>> {
        let Some(slot) = &self.quota else {
            return Ok(None);
        };
        if let Some(q) = slot.quota.get() {
            return Ok(Some(q));
        }
        let config = QuotaConfig {
            limit_bytes: slot.limit,
            accounting_file: Some(slot.file.clone()),
        };
        let q = Quota::open(&config, self.root.as_fd())
            .map_err(|e| Error::io("open quota accounting", &slot.file, e))?;
        // A racing thread may have set it first; either is fine.
        let _ = slot.quota.set(q);
        Ok(slot.quota.get())
    }

    fn open_rel(&self, rel: &RelPath, what: &str, flags: i32, mode: u32) -> Result<OwnedFd> {
        openat2(self.root.as_fd(), &rel.full(), flags, mode).map_err(|e| rel.error(what, e))
    }

    fn open_dir(&self, rel: &RelPath, path: &CStr, what: &str) -> Result<OwnedFd> {
        openat2(self.root.as_fd(), path, libc::O_PATH | libc::O_DIRECTORY, 0)
            .map_err(|e| rel.error(what, e))
    }

    /// Reads a whole regular file.
    pub fn read(&self, path: impl AsRef<Path>) -> Result<Vec<u8>> {
        let rel = RelPath::parse(path.as_ref())?;
        let flags = libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY;
        let mut f = File::from(self.open_rel(&rel, "read", flags, 0)?);
        let meta = f.metadata().map_err(|e| rel.error("read", e))?;
        if !meta.is_file() {
            let e = if meta.is_dir() {
                io::Error::from_raw_os_error(libc::EISDIR)
            } else {
                io::Error::new(io::ErrorKind::InvalidInput, "not a regular file")
            };
            return Err(rel.error("read", e));
        }
        let mut data = Vec::with_capacity(meta.len() as usize);
        f.read_to_end(&mut data).map_err(|e| rel.error("read", e))?;
        Ok(data)
    }

    /// Reads a whole file as UTF-8.
    pub fn read_string(&self, path: impl AsRef<Path>) -> Result<String> {
        let path = path.as_ref();
        String::from_utf8(self.read(path)?).map_err(|_| Error::Io {
            context: format!("read {:?}", path.to_string_lossy()),
            source: io::Error::new(io::ErrorKind::InvalidData, "not valid UTF-8"),
        })
    }

    /// Writes `data` to a file, creating it (mode 0644) or truncating it.
    /// Fails with `ENOSPC` when the growth does not fit the quota, leaving
    /// the file as it was (and not creating it).
    pub fn write(&self, path: impl AsRef<Path>, data: impl AsRef<[u8]>) -> Result<()> {
        let data = data.as_ref();
        let rel = RelPath::parse(path.as_ref())?;
        let (parent, name) = rel.split("write")?;
        let quota = self.quota()?;
        let base = libc::O_WRONLY | libc::O_CREAT | libc::O_NONBLOCK | libc::O_NOCTTY;
        let (fd, created) = match openat2(
            self.root.as_fd(),
            &rel.full(),
            base | libc::O_EXCL,
            FILE_MODE,
        ) {
            Ok(fd) => (fd, true),
            // Exists (or is a symlink, which O_EXCL never follows): open it
            // (following a symlink that stays inside).
            Err(e) if errno(&e) == Some(libc::EEXIST) => {
                (self.open_rel(&rel, "write", base, FILE_MODE)?, false)
            }
            Err(e) => return Err(rel.error("write", e)),
        };
        let mut f = File::from(fd);
        let meta = f.metadata().map_err(|e| rel.error("write", e))?;
        if !meta.is_file() {
            let e = io::Error::new(io::ErrorKind::InvalidInput, "not a regular file");
            return Err(rel.error("write", e));
        }
        if created {
            f.set_permissions(std::fs::Permissions::from_mode(FILE_MODE))
                .map_err(|e| rel.error("write", e))?;
        }
        let old = meta.len();
        let new = data.len() as u64;
        let charge = match quota {
            Some(q) => match q.reserve(new.saturating_sub(old)) {
                Ok(c) => Some(c),
                Err(e) => {
                    if created {
                        self.unlink_quiet(&parent, &name);
                    }
                    return Err(rel.error("write", e));
                }
            },
            None => None,
        };
        let written = f.set_len(0).and_then(|()| f.write_all(data));
        let size_now = |f: &File| f.metadata().map(|m| m.len()).unwrap_or(new);
        if let Some(c) = charge {
            let end = if written.is_ok() { new } else { size_now(&f) };
            c.settle(end as i64 - old as i64);
        }
        written.map_err(|e| rel.error("write", e))
    }

    /// Best-effort unlink of `parent/name` (undoing a create).
    fn unlink_quiet(&self, parent: &CStr, name: &CStr) {
        if let Ok(dir) = openat2(
            self.root.as_fd(),
            parent,
            libc::O_PATH | libc::O_DIRECTORY,
            0,
        ) {
            let _ = sys::unlink_at(dir.as_fd(), name, 0);
        }
    }

    /// Writes a string (see [`VolumeFs::write`]).
    pub fn write_string(&self, path: impl AsRef<Path>, text: &str) -> Result<()> {
        self.write(path, text.as_bytes())
    }

    /// Creates a directory and any missing parents (mode 0755). An existing
    /// directory is fine; an existing non-directory is `ENOTDIR`/`EEXIST`.
    pub fn mkdir(&self, path: impl AsRef<Path>) -> Result<()> {
        let rel = RelPath::parse(path.as_ref())?;
        if rel.is_root() {
            return Ok(());
        }
        let dir_flags = libc::O_PATH | libc::O_DIRECTORY;
        for n in 1..=rel.comps.len() {
            let prefix = rel.prefix(n);
            match openat2(self.root.as_fd(), &prefix, dir_flags, 0) {
                Ok(_) => continue,
                Err(e) if errno(&e) == Some(libc::ENOENT) => {}
                Err(e) => return Err(rel.error("mkdir", e)),
            }
            let parent = self.open_dir(&rel, &rel.prefix(n - 1), "mkdir")?;
            let name = CString::new(rel.comps[n - 1].clone()).unwrap_or_default();
            match sys::mkdir_at(parent.as_fd(), &name, DIR_MODE) {
                Ok(()) => {
                    // Exactly 0755 whatever the umask; never through a
                    // symlink put there meanwhile.
                    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW;
                    let made = confinement::open_beneath(parent.as_fd(), &name, flags, 0)
                        .map_err(|e| rel.error("mkdir", e))?;
                    File::from(made)
                        .set_permissions(std::fs::Permissions::from_mode(DIR_MODE))
                        .map_err(|e| rel.error("mkdir", e))?;
                }
                // Made by someone else meanwhile: check it on the next turn.
                Err(e) if errno(&e) == Some(libc::EEXIST) => {
                    openat2(self.root.as_fd(), &prefix, dir_flags, 0)
                        .map_err(|e| rel.error("mkdir", e))?;
                }
                Err(e) => return Err(rel.error("mkdir", e)),
            }
        }
        Ok(())
    }

    /// Deletes one file, symlink or empty directory.
    pub fn remove(&self, path: impl AsRef<Path>) -> Result<()> {
        let rel = RelPath::parse(path.as_ref())?;
        let (parent, name) = rel.split("remove")?;
        let quota = self.quota()?;
        let dir = self.open_dir(&rel, &parent, "remove")?;
        let st = sys::stat_at(dir.as_fd(), &name).map_err(|e| rel.error("remove", e))?;
        let freed = unlink_entry(dir.as_fd(), &name, &st).map_err(|e| rel.error("remove", e))?;
        if let Some(q) = quota {
            q.adjust(-(freed as i64));
        }
        Ok(())
    }

    /// Deletes a path and everything under it; a missing path is fine.
    /// Never descends through a symlink (it is deleted, not followed).
    pub fn remove_all(&self, path: impl AsRef<Path>) -> Result<()> {
        let rel = RelPath::parse(path.as_ref())?;
        let (parent, name) = rel.split("remove_all")?;
        let quota = self.quota()?;
        let dir = match self.open_dir(&rel, &parent, "remove") {
            Ok(d) => d,
            Err(e) if e.io_error().and_then(errno) == Some(libc::ENOENT) => return Ok(()),
            Err(e) => return Err(e),
        };
        let mut freed = 0u64;
        let result = remove_tree_at(dir.as_fd(), &name, &mut freed);
        if let Some(q) = quota {
            q.adjust(-(freed as i64));
        }
        match result {
            Err(e) if errno(&e) == Some(libc::ENOENT) => Ok(()),
            other => other.map_err(|e| rel.error("remove", e)),
        }
    }

    /// Whether a file or directory exists at `path` (a symlink is followed,
    /// inside the volume; a dangling one does not exist).
    pub fn exists(&self, path: impl AsRef<Path>) -> Result<bool> {
        let rel = RelPath::parse(path.as_ref())?;
        match openat2(self.root.as_fd(), &rel.full(), libc::O_PATH, 0) {
            Ok(_) => Ok(true),
            Err(e) if matches!(errno(&e), Some(libc::ENOENT | libc::ENOTDIR)) => Ok(false),
            Err(e) => Err(rel.error("exists", e)),
        }
    }

    /// The entries of directory `path`, sorted by name.
    pub fn read_dir(&self, path: impl AsRef<Path>) -> Result<Vec<Entry>> {
        let rel = RelPath::parse(path.as_ref())?;
        let dir = self.open_rel(&rel, "list", libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
        let mut out = Vec::new();
        for name in entry_names(dir.as_fd()).map_err(|e| rel.error("list", e))? {
            let st = match sys::stat_at(dir.as_fd(), &name) {
                Ok(st) => st,
                Err(e) if errno(&e) == Some(libc::ENOENT) => continue,
                Err(e) => return Err(rel.error("list", e)),
            };
            let kind = match st.st_mode & libc::S_IFMT {
                libc::S_IFREG => EntryKind::File,
                libc::S_IFDIR => EntryKind::Dir,
                libc::S_IFLNK => EntryKind::Symlink,
                _ => EntryKind::Other,
            };
            out.push(Entry {
                name: String::from_utf8_lossy(name.as_bytes()).into_owned(),
                kind,
                size: st.st_size.max(0) as u64,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
}

/// Bytes the quota stops counting when `st`'s entry is unlinked: its size
/// when this is its last link, else nothing (directories never count).
fn freed_by(st: &libc::stat64) -> u64 {
    let is_dir = st.st_mode & libc::S_IFMT == libc::S_IFDIR;
    if is_dir || st.st_nlink > 1 {
        0
    } else {
        st.st_size.max(0) as u64
    }
}

/// Unlinks `name` in `dir` (`st` is its lstat); returns the bytes freed.
fn unlink_entry(dir: BorrowedFd<'_>, name: &CStr, st: &libc::stat64) -> io::Result<u64> {
    let is_dir = st.st_mode & libc::S_IFMT == libc::S_IFDIR;
    let flags = if is_dir { libc::AT_REMOVEDIR } else { 0 };
    sys::unlink_at(dir, name, flags)?;
    Ok(freed_by(st))
}

/// Deletes `name` in `dir` and, for a directory, everything under it,
/// opening each subdirectory beneath its parent without following
/// symlinks. Adds the bytes freed to `freed`.
fn remove_tree_at(dir: BorrowedFd<'_>, name: &CStr, freed: &mut u64) -> io::Result<()> {
    let st = sys::stat_at(dir, name)?;
    if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
        let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW;
        let sub = confinement::open_beneath(dir, name, flags, 0)?;
        for child in entry_names(sub.as_fd())? {
            match remove_tree_at(sub.as_fd(), &child, freed) {
                Err(e) if errno(&e) == Some(libc::ENOENT) => {}
                other => other?,
            }
        }
    }
    *freed += unlink_entry(dir, name, &st)?;
    Ok(())
}

/// Names in the directory open at `dir` (not `.`/`..`), read through
/// `/proc/self/fd`, which names exactly that directory.
fn entry_names(dir: BorrowedFd<'_>) -> io::Result<Vec<CString>> {
    let path = format!("/proc/self/fd/{}", dir.as_raw_fd());
    let mut names = Vec::new();
    for e in std::fs::read_dir(path)? {
        let e = e?;
        let name = e.file_name();
        names.push(CString::new(name.as_bytes()).map_err(|_| io::ErrorKind::InvalidData)?);
    }
    Ok(names)
}

#[cfg(test)]
mod tests;
