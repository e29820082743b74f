//! Requests that name an entry in a directory: lookup and the calls that
//! create, link, remove or rename entries. Every name is validated by
//! [`confinement::validate_name`] before any host call.

use std::ffi::CStr;
use std::io;
use std::os::fd::AsFd;

use fuse_backend_rs::api::filesystem::{Context, Entry};

use super::sys::{self, ScopedFsCreds};
use super::ConfinedFs;
use crate::confinement::{self, ProcSelfFd};

impl ConfinedFs {
    pub(super) fn do_lookup(&self, parent: u64, name: &CStr) -> io::Result<Entry> {
        confinement::validate_name(name)?;
        let dir = self.dir(parent)?;
        self.entry_at(&dir, name)
    }

    /// Creates an entry with the guest caller's fs uid/gid, then looks it up.
    fn create_entry(
        &self,
        ctx: &Context,
        parent: u64,
        name: &CStr,
        make: impl FnOnce(&super::inodes::InodeFd) -> io::Result<()>,
    ) -> io::Result<Entry> {
        self.check_writable()?;
        confinement::validate_name(name)?;
        let dir = self.dir(parent)?;
        {
            let _creds = ScopedFsCreds::switch(ctx.uid, ctx.gid)?;
            make(&dir)?;
        }
        self.entry_at(&dir, name)
    }

    pub(super) fn do_mkdir(
        &self,
        ctx: &Context,
        parent: u64,
        name: &CStr,
        mode: u32,
    ) -> io::Result<Entry> {
        self.create_entry(ctx, parent, name, |dir| {
            sys::mkdir_at(dir.as_fd(), name, mode & 0o7777)
        })
    }

    pub(super) fn do_mknod(
        &self,
        ctx: &Context,
        parent: u64,
        name: &CStr,
        mode: u32,
        rdev: u32,
    ) -> io::Result<Entry> {
        self.create_entry(ctx, parent, name, |dir| {
            sys::mknod_at(dir.as_fd(), name, mode, u64::from(rdev))
        })
    }

    pub(super) fn do_symlink(
        &self,
        ctx: &Context,
        target: &CStr,
        parent: u64,
        name: &CStr,
    ) -> io::Result<Entry> {
        self.create_entry(ctx, parent, name, |dir| {
            sys::symlink_at(target, dir.as_fd(), name)
        })
    }

    pub(super) fn do_link(&self, inode: u64, newparent: u64, newname: &CStr) -> io::Result<Entry> {
        self.check_writable()?;
        confinement::validate_name(newname)?;
        let (_, fd) = self.inode(inode)?;
        let dir = self.dir(newparent)?;
        // Link the inode we hold through its /proc/self/fd magic link: no
        // guest path is resolved for the source.
        let src = ProcSelfFd::entry_name(fd.as_fd());
        sys::link_at(
            self.proc_fd.dir(),
            &src,
            dir.as_fd(),
            newname,
            libc::AT_SYMLINK_FOLLOW,
        )?;
        self.entry_at(&dir, newname)
    }

    pub(super) fn do_unlink(&self, parent: u64, name: &CStr, flags: i32) -> io::Result<()> {
        self.check_writable()?;
        confinement::validate_name(name)?;
        let dir = self.dir(parent)?;
        sys::unlink_at(dir.as_fd(), name, flags)
    }

    pub(super) fn do_rename(
        &self,
        olddir: u64,
        oldname: &CStr,
        newdir: u64,
        newname: &CStr,
        flags: u32,
    ) -> io::Result<()> {
        self.check_writable()?;
        confinement::validate_name(oldname)?;
        confinement::validate_name(newname)?;
        let allowed = libc::RENAME_NOREPLACE | libc::RENAME_EXCHANGE;
        if flags & !allowed != 0 {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let old = self.dir(olddir)?;
        let new = self.dir(newdir)?;
        sys::rename_at(old.as_fd(), oldname, new.as_fd(), newname, flags)
    }
}
