//! Our passthrough `FileSystem`: serves one host directory, resolving every
//! guest path through [`crate::confinement`].
//!
//! Split by concern: [`inodes`] (node ids, lookup counts, the fd bound),
//! [`handles`] (open files), [`sys`] (syscall wrappers), and the request
//! handlers in `entries` (names in directories), `attrs`, `files` (I/O),
//! [`locks`], `dirs` (directory listing) and `xattrs`; `fs_impl` wires them to
//! fuse-backend-rs's `FileSystem` trait.
//!
//! The policies of [`crate::policy`] are applied here: `overlay` reads and
//! writes the stat-virtualization record and creates entries, `sizes` does
//! the quota bookkeeping of every request that changes a size.

mod attrs;
mod create;
mod dirs;
mod entries;
pub mod file_handle;
mod files;
mod fs_impl;
pub mod handles;
pub mod inodes;
pub mod locks;
mod overlay;
mod single_file;
mod sizes;
pub mod sys;
mod xattrs;

use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use fuse_backend_rs::api::filesystem::Entry;

use crate::confinement::{self, ProcSelfFd};
use crate::policy::{HostPermissions, Quota, QuotaConfig, StatVirtualization};
use file_handle::FileHandles;
use handles::HandleTable;
use inodes::{InodeData, InodeFd, InodeStore};

/// How long the guest may cache entries and attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CachePolicy {
    /// No caching: every access goes to the daemon.
    Never,
    /// Cache for one second; keep page cache only while the file is unchanged.
    Auto,
    /// Cache for a long time: the guest has exclusive access to the share.
    Always,
}

/// Settings of one served directory.
#[derive(Debug, Clone)]
pub struct FsConfig {
    /// Host directory shown to the guest as its root.
    pub shared_dir: PathBuf,
    /// Reject every mutating request with EROFS.
    pub readonly: bool,
    /// Guest caching policy.
    pub cache: CachePolicy,
    /// Serve extended attributes (otherwise xattr requests answer ENOSYS).
    pub xattr: bool,
    /// Most host fds the inode table may hold open at once (open file
    /// handles are bounded by the same number, separately, and lock-owner
    /// descriptions by a quarter of it).
    pub max_inode_fds: usize,
    /// Where guest-visible owners and modes come from.
    pub stat_virtualization: StatVirtualization,
    /// Which modes host inodes get under stat virtualization.
    pub host_permissions: HostPermissions,
    /// The byte budget, if any.
    pub quota: Option<QuotaConfig>,
    /// Serve only this entry of `shared_dir` (a regular file), under a
    /// synthetic root directory holding nothing else (`--shared-file`).
    pub single_file: Option<OsString>,
    /// Threads copying one large READ together (1: no splitting;
    /// see [`crate::copy_crew`]).
    pub copy_threads: usize,
}

impl FsConfig {
    /// Settings for serving `shared_dir` read-write with the defaults:
    /// `--cache auto`, xattrs served, strict stat virtualization, private
    /// host permissions, no quota.
    pub fn new(shared_dir: PathBuf, max_inode_fds: usize) -> Self {
        FsConfig {
            shared_dir,
            readonly: false,
            cache: CachePolicy::Auto,
            xattr: true,
            max_inode_fds,
            stat_virtualization: StatVirtualization::Strict,
            host_permissions: HostPermissions::Private,
            quota: None,
            single_file: None,
            copy_threads: crate::copy_crew::default_threads(),
        }
    }
}

/// The confined passthrough filesystem.
pub struct ConfinedFs {
    config: FsConfig,
    inodes: InodeStore,
    handles: HandleTable,
    locks: locks::OwnerLocks,
    proc_fd: ProcSelfFd,
    timeout: Duration,
    /// Whether records are read and written (stat virtualization is on and
    /// the share's filesystem stores `user.*` xattrs).
    overlay: bool,
    quota: Option<Quota>,
    /// The file of a single-file share (`FsConfig::single_file`).
    single: Option<single_file::SingleFile>,
    /// Helpers for large reads.
    copy: crate::copy_crew::CopyCrew,
}

impl ConfinedFs {
    /// Opens the shared directory and prepares the inode table.
    ///
    /// Sets the process umask to 0: the guest kernel already applied the
    /// guest's umask to every mode it sends.
    ///
    /// With strict stat virtualization this fails when the share's
    /// filesystem does not store `user.*` xattrs; with a quota it counts the
    /// share (or joins the shared accounting file).
    pub fn new(config: FsConfig) -> io::Result<Self> {
        let root = open_root(&config.shared_dir)?;
        let single = match &config.single_file {
            Some(name) => Some(single_file::SingleFile::open(root.as_fd(), name)?),
            None => None,
        };
        if single.is_some() && config.quota.is_some() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a quota needs a shared directory, not a shared file",
            ));
        }
        // A single-file share probes its file: the directory is not served.
        let probe_at = single.as_ref().map_or(root.as_fd(), |s| s.fd());
        let overlay = overlay::decide(&config, probe_at)?;
        let quota = match &config.quota {
            Some(q) => {
                if let Some(file) = &q.accounting_file {
                    crate::policy::quota_file::check_outside(file, &config.shared_dir)?;
                }
                Some(Quota::open(q, root.as_fd())?)
            }
            None => None,
        };
        let mount_fd = confinement::open_dir_again(root.as_fd(), libc::O_RDONLY)?;
        let handles = FileHandles::probe(root.as_fd(), mount_fd);
        if handles.is_none() {
            tracing::info!(
                "file handles unavailable (no CAP_DAC_READ_SEARCH?): inode fds stay pinned"
            );
        }
        let inodes = InodeStore::new(root, handles, config.max_inode_fds)?;
        // SAFETY: umask only changes the process file-creation mask.
        unsafe { libc::umask(0) };
        let timeout = match config.cache {
            CachePolicy::Never => Duration::ZERO,
            CachePolicy::Auto => Duration::from_secs(1),
            CachePolicy::Always => Duration::from_secs(86_400),
        };
        Ok(ConfinedFs {
            copy: crate::copy_crew::CopyCrew::new(config.copy_threads),
            handles: HandleTable::new(config.max_inode_fds),
            locks: locks::OwnerLocks::new((config.max_inode_fds / 4).max(1)),
            config,
            inodes,
            proc_fd: ProcSelfFd::open()?,
            timeout,
            overlay,
            quota,
            single,
        })
    }

    /// Replaces the `/proc/self/fd` handle: a sandboxed server forked after
    /// [`ConfinedFs::new`] must use the one of its own process (and of its
    /// own `/proc`), which the sandbox opens.
    pub fn use_proc_fd(&mut self, proc_fd: ProcSelfFd) {
        self.proc_fd = proc_fd;
    }

    /// The settings this filesystem was built with.
    pub fn config(&self) -> &FsConfig {
        &self.config
    }

    /// Whether stat-virtualization records are in use on this share.
    pub fn overlay_active(&self) -> bool {
        self.overlay
    }

    /// Whether inode fds are reopened from file handles (the server then
    /// keeps `CAP_DAC_READ_SEARCH`).
    pub fn uses_file_handles(&self) -> bool {
        self.inodes.uses_file_handles()
    }

    /// Number of host fds the inode table holds now (for tests and logs).
    pub fn open_inode_fds(&self) -> usize {
        self.inodes.open_fds()
    }

    /// `EROFS` when the share is read-only.
    fn check_writable(&self) -> io::Result<()> {
        if self.config.readonly {
            Err(io::Error::from_raw_os_error(libc::EROFS))
        } else {
            Ok(())
        }
    }

    /// The inode `id` and its `O_PATH` fd.
    fn inode(&self, id: u64) -> io::Result<(Arc<InodeData>, InodeFd)> {
        if self.single_root(id).is_some() {
            // The root of a single-file share is synthetic: the host
            // directory behind it is never used by a request.
            return Err(io::Error::from_raw_os_error(libc::EPERM));
        }
        let inode = self.inodes.get(id)?;
        let fd = self.inodes.fd(&inode)?;
        Ok((inode, fd))
    }

    /// The directory `id` and its fd; `ENOTDIR` for anything else.
    fn dir(&self, id: u64) -> io::Result<InodeFd> {
        self.dir_inode(id).map(|(_, fd)| fd)
    }

    /// Like [`ConfinedFs::dir`], with the directory's table entry.
    fn dir_inode(&self, id: u64) -> io::Result<(Arc<InodeData>, InodeFd)> {
        let (inode, fd) = self.inode(id)?;
        if !inode.is_dir() {
            return Err(io::Error::from_raw_os_error(libc::ENOTDIR));
        }
        Ok((inode, fd))
    }

    /// Looks up `name` in directory fd `dir` and registers it: the common
    /// tail of lookup and of every request that creates an entry.
    fn entry_at(&self, dir: &InodeFd, name: &std::ffi::CStr) -> io::Result<Entry> {
        let fd = confinement::open_beneath(dir.as_fd(), name, libc::O_PATH | libc::O_NOFOLLOW, 0)?;
        self.entry_for_fd(fd)
    }

    /// Registers an `O_PATH` fd as a guest inode and builds its entry with
    /// the guest-visible attributes (`EIO` for a corrupt record, and then
    /// nothing is registered).
    fn entry_for_fd(&self, fd: OwnedFd) -> io::Result<Entry> {
        let st = sys::stat_fd(fd.as_fd())?;
        let inode = self.inodes.insert_or_ref(fd, &st)?;
        match self.inode_attr(&inode, st) {
            Ok(attr) => Ok(self.entry(inode.id, attr)),
            Err(e) => {
                // Not handed to the guest: take the lookup back.
                self.inodes.forget(inode.id, 1);
                Err(e)
            }
        }
    }

    /// Registers `fd`, an `O_PATH` fd with host `stat` `st` of an entry
    /// this request has just made with record `rec`: the record is not
    /// read back.
    fn entry_for_new(
        &self,
        fd: OwnedFd,
        st: libc::stat64,
        rec: Option<&crate::policy::StatOverride>,
    ) -> io::Result<Entry> {
        let mut attr = st;
        if let Some(rec) = rec {
            overlay::apply_record(rec, &mut attr)?;
        }
        let inode = self.inodes.insert_or_ref(fd, &st)?;
        Ok(self.entry(inode.id, attr))
    }

    fn entry(&self, id: u64, attr: libc::stat64) -> Entry {
        Entry {
            inode: id,
            generation: 0,
            attr,
            attr_flags: 0,
            attr_timeout: self.timeout,
            entry_timeout: self.timeout,
        }
    }
}

/// Opens the share root as an `O_PATH` directory fd, with an error naming it.
fn open_root(path: &std::path::Path) -> io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "shared dir path holds a NUL byte",
        )
    })?;
    // SAFETY: NUL-terminated path; the result is checked.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("shared dir {}: {e}", path.display()),
        ));
    }
    // SAFETY: a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_cache;
#[cfg(test)]
mod tests_policy;
#[cfg(test)]
mod tests_single_file;
