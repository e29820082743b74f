//! Requests that make a new entry: mkdir, mknod, symlink and create.
//!
//! With stat virtualization on, the host entry is made by the daemon as its
//! own user, with the host mode of [`crate::policy::host_perms`], and the
//! guest's owner, group, type and mode go into its record:
//! - guest char/block devices, fifos and sockets become host *regular
//!   files* carrying the type (and device number) in the record, so the host
//!   never holds a node the guest made (CVE-2020-35517 class);
//! - symlinks are real host symlinks (Linux keeps no `user.*` xattr on a
//!   symlink), always the daemon's own: the guest never picks the host
//!   owner of a symlink (host `protected_symlinks` trusts it).
//!
//! With it off (`--stat-virtualization off`, or relaxed on a filesystem
//! without `user.*` xattrs) entries are made with the guest caller's fs
//! uid/gid as before, setuid/setgid never reach the host mode, and device
//! nodes are refused (`EPERM`).

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use fuse_backend_rs::abi::fuse_abi::{CreateIn, OpenOptions};
use fuse_backend_rs::api::filesystem::{Context, Entry};

use super::inodes::{InodeData, InodeFd};
use super::overlay::RecordFd;
use super::sys::{self, ScopedFsCreds};
use super::ConfinedFs;
use crate::confinement;

fn errno(e: i32) -> io::Error {
    io::Error::from_raw_os_error(e)
}

/// Setuid and setgid: never part of a host mode the guest asks for when
/// stat virtualization is off.
const PRIV_BITS: u32 = libc::S_ISUID | libc::S_ISGID;

/// How many times a create retries when the name appears and vanishes
/// between its exclusive create and its open of the existing entry.
const CREATE_RETRIES: usize = 8;

impl ConfinedFs {
    /// Checks shared by every request that makes an entry; returns the
    /// parent directory.
    fn prepare_create(&self, parent: u64, name: &CStr) -> io::Result<(Arc<InodeData>, InodeFd)> {
        self.check_writable()?;
        confinement::validate_name(name)?;
        let dir = self.dir_inode(parent)?;
        self.check_room()?;
        Ok(dir)
    }

    /// An `O_PATH` fd (and its `stat`) for the inode behind `made`, just
    /// created as `name` in `dir`: opened by name when the name still leads
    /// to that inode (a shorter walk than `/proc/self/fd`), else through
    /// `/proc/self/fd`.
    fn path_fd_of(
        &self,
        dir: BorrowedFd<'_>,
        name: &CStr,
        made: BorrowedFd<'_>,
    ) -> io::Result<(OwnedFd, libc::stat64)> {
        let want = sys::stat_fd(made)?;
        let flags = libc::O_PATH | libc::O_NOFOLLOW;
        if let Ok(fd) = confinement::open_beneath(dir, name, flags, 0) {
            match sys::stat_fd(fd.as_fd()) {
                Ok(st) if (st.st_dev, st.st_ino) == (want.st_dev, want.st_ino) => {
                    return Ok((fd, st))
                }
                _ => {}
            }
        }
        let fd = self.proc_fd.reopen(made, libc::O_PATH)?;
        let st = sys::stat_fd(fd.as_fd())?;
        Ok((fd, st))
    }

    /// Switches to the guest caller's fs ids when stat virtualization is
    /// off (the host owner is then the guest's); a no-op guard otherwise.
    fn creds_for_create(&self, ctx: &Context) -> io::Result<Option<ScopedFsCreds>> {
        if self.overlay {
            Ok(None)
        } else {
            ScopedFsCreds::switch(ctx.uid, ctx.gid).map(Some)
        }
    }

    pub(super) fn do_mkdir(
        &self,
        ctx: &Context,
        parent: u64,
        name: &CStr,
        mode: u32,
    ) -> io::Result<Entry> {
        let (pdata, dir) = self.prepare_create(parent, name)?;
        let mode = libc::S_IFDIR | (mode & 0o7777);
        if !self.overlay {
            {
                let _creds = self.creds_for_create(ctx)?;
                sys::mkdir_at(dir.as_fd(), name, mode & 0o7777)?;
            }
            return self.entry_at(&dir, name);
        }
        let rec = self.new_record(ctx.uid, ctx.gid, &pdata, dir.as_fd(), mode, 0)?;
        let host_mode = self.config.host_permissions.create_mode(rec.mode);
        sys::mkdir_at(dir.as_fd(), name, host_mode)?;
        // Opened for reading (the daemon owns it, with at least rwx): the
        // record goes through this fd, with no path walk.
        let flags = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_DIRECTORY;
        let made = confinement::open_beneath(dir.as_fd(), name, flags, 0)?;
        // A directory made a moment ago has no record: one that has was
        // swapped in under the name meanwhile; leave it alone.
        if self
            .read_record_via(RecordFd::Open(made.as_fd()), libc::S_IFDIR)?
            .is_some()
        {
            return Err(errno(libc::EEXIST));
        }
        if let Err(e) = self.write_record_via(RecordFd::Open(made.as_fd()), &rec) {
            self.undo_create(dir.as_fd(), name, made.as_fd(), libc::AT_REMOVEDIR);
            return Err(e);
        }
        let (fd, st) = self.path_fd_of(dir.as_fd(), name, made.as_fd())?;
        self.entry_for_new(fd, st, Some(&rec))
    }

    pub(super) fn do_mknod(
        &self,
        ctx: &Context,
        parent: u64,
        name: &CStr,
        mode: u32,
        rdev: u32,
    ) -> io::Result<Entry> {
        let (pdata, dir) = self.prepare_create(parent, name)?;
        let file_type = match mode & libc::S_IFMT {
            0 => libc::S_IFREG,
            t
            @ (libc::S_IFREG | libc::S_IFCHR | libc::S_IFBLK | libc::S_IFIFO | libc::S_IFSOCK) => t,
            _ => return Err(errno(libc::EINVAL)),
        };
        let perm = mode & 0o7777;
        let is_device = matches!(file_type, libc::S_IFCHR | libc::S_IFBLK);
        if !self.overlay {
            // Only the record could hold a guest device safely.
            if is_device {
                return Err(errno(libc::EPERM));
            }
            {
                let _creds = self.creds_for_create(ctx)?;
                sys::mknod_at(dir.as_fd(), name, file_type | (perm & !PRIV_BITS), 0)?;
            }
            return self.entry_at(&dir, name);
        }
        let rdev = if is_device { rdev } else { 0 };
        let mode = file_type | perm;
        let rec = self.new_record(ctx.uid, ctx.gid, &pdata, dir.as_fd(), mode, rdev)?;
        let host_mode = self.config.host_permissions.create_mode(rec.mode);
        // Always a plain regular file on the host.
        let flags = libc::O_RDONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW;
        let file = confinement::open_beneath(dir.as_fd(), name, flags, host_mode)?;
        self.record_new_file(dir.as_fd(), name, &file, &rec)?;
        let (fd, st) = self.path_fd_of(dir.as_fd(), name, file.as_fd())?;
        self.entry_for_new(fd, st, Some(&rec))
    }

    /// Writes the record of a file just created; on failure removes it.
    fn record_new_file(
        &self,
        dir: BorrowedFd<'_>,
        name: &CStr,
        file: &OwnedFd,
        rec: &crate::policy::StatOverride,
    ) -> io::Result<()> {
        self.write_record_via(RecordFd::Open(file.as_fd()), rec)
            .inspect_err(|_| {
                self.undo_create(dir, name, file.as_fd(), 0);
            })
    }

    pub(super) fn do_symlink(
        &self,
        ctx: &Context,
        target: &CStr,
        parent: u64,
        name: &CStr,
    ) -> io::Result<Entry> {
        let (_, dir) = self.prepare_create(parent, name)?;
        let len = target.to_bytes().len() as u64;
        let charge = self
            .quota
            .as_ref()
            .map(|q| self.reserve(q, len))
            .transpose()?;
        {
            let _creds = self.creds_for_create(ctx)?;
            sys::symlink_at(target, dir.as_fd(), name)?;
        }
        if let Some(c) = charge {
            c.settle(len as i64);
        }
        let fd = confinement::open_beneath(dir.as_fd(), name, libc::O_PATH | libc::O_NOFOLLOW, 0)?;
        self.entry_for_fd(fd)
    }

    pub(super) fn do_create(
        &self,
        ctx: &Context,
        parent: u64,
        name: &CStr,
        args: CreateIn,
    ) -> io::Result<(Entry, u64, OpenOptions)> {
        let (pdata, dir) = self.prepare_create(parent, name)?;
        let flags = self.host_open_flags(args.flags)?;
        let guest_excl = args.flags as i32 & libc::O_EXCL != 0;
        let perm = args.mode & 0o7777;
        let host_mode = if self.overlay {
            self.config
                .host_permissions
                .create_mode(libc::S_IFREG | perm)
        } else {
            perm & !PRIV_BITS
        };
        let excl = (flags & !libc::O_TRUNC) | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW;
        let rec = if self.overlay {
            let mode = libc::S_IFREG | perm;
            Some(self.new_record(ctx.uid, ctx.gid, &pdata, dir.as_fd(), mode, 0)?)
        } else {
            None
        };
        // The file, and whether this request made it (its record is `rec`).
        let mut file = None;
        for _ in 0..CREATE_RETRIES {
            let made = {
                let _creds = self.creds_for_create(ctx)?;
                confinement::open_beneath(dir.as_fd(), name, excl, host_mode)
            };
            match made {
                Ok(f) => {
                    if let Some(rec) = &rec {
                        self.record_new_file(dir.as_fd(), name, &f, rec)?;
                    }
                    file = Some((f, true));
                    break;
                }
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) && !guest_excl => {
                    // It exists (made by someone else meanwhile): open it as
                    // OPEN would.
                    let path = libc::O_PATH | libc::O_NOFOLLOW;
                    let fd = match confinement::open_beneath(dir.as_fd(), name, path, 0) {
                        Ok(fd) => fd,
                        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
                        Err(e) => return Err(e),
                    };
                    let st = sys::stat_fd(fd.as_fd())?;
                    let host_type = st.st_mode & libc::S_IFMT;
                    self.check_openable(fd.as_fd(), host_type, false, flags, None)?;
                    let flags = super::files::never_block(host_type, flags);
                    file = Some((self.reopen_counted(ctx, fd.as_fd(), flags)?, false));
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        let (file, made) = file.ok_or_else(|| errno(libc::ENOENT))?;
        if made {
            self.entries_changed(1);
        }
        // The inode we just opened, not whatever the name points at now.
        let (path_fd, st) = self.path_fd_of(dir.as_fd(), name, file.as_fd())?;
        let entry = if made {
            self.entry_for_new(path_fd, st, rec.as_ref())?
        } else {
            self.entry_for_fd(path_fd)?
        };
        match self.handles.insert(entry.inode, file) {
            Ok(handle) => Ok((entry, handle, self.open_options(false))),
            Err(e) => {
                self.inodes.forget(entry.inode, 1);
                Err(e)
            }
        }
    }
}
