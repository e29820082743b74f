//! Requests that name an entry in a directory: lookup and the calls that
//! link, remove or rename entries (creating ones are in `create`). Every name is validated by
//! [`confinement::validate_name`] before any host call.

use std::ffi::CStr;
use std::io;
use std::os::fd::AsFd;

use fuse_backend_rs::api::filesystem::Entry;

use super::sys;
use super::ConfinedFs;
use crate::confinement::{self, ProcSelfFd};

impl ConfinedFs {
    pub(super) fn do_lookup(&self, parent: u64, name: &CStr) -> io::Result<Entry> {
        confinement::validate_name(name)?;
        let dir = self.dir(parent)?;
        self.entry_at(&dir, name)
    }

    pub(super) fn do_link(&self, inode: u64, newparent: u64, newname: &CStr) -> io::Result<Entry> {
        self.check_writable()?;
        confinement::validate_name(newname)?;
        let (_, fd) = self.inode(inode)?;
        let dir = self.dir(newparent)?;
        if let Some(q) = &self.quota {
            q.check_room(0)?;
        }
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
        let freed = self.freed_by_removal(dir.as_fd(), name);
        sys::unlink_at(dir.as_fd(), name, flags)?;
        self.release_bytes(freed);
        Ok(())
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
        // A replaced target is removed (unless it is the source itself, or
        // the two are exchanged).
        let freed = match (flags & libc::RENAME_EXCHANGE, self.quota.is_some()) {
            (0, true) => {
                let same = match (
                    sys::stat_at(old.as_fd(), oldname),
                    sys::stat_at(new.as_fd(), newname),
                ) {
                    (Ok(a), Ok(b)) => (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino),
                    _ => false,
                };
                if same {
                    0
                } else {
                    self.freed_by_removal(new.as_fd(), newname)
                }
            }
            _ => 0,
        };
        sys::rename_at(old.as_fd(), oldname, new.as_fd(), newname, flags)?;
        self.release_bytes(freed);
        Ok(())
    }
}
