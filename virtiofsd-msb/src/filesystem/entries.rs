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
        self.check_room()?;
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
        let removal = self.removal_of(dir.as_fd(), name);
        sys::unlink_at(dir.as_fd(), name, flags)?;
        self.removed(removal);
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
        // A replaced target loses a link (none when the two are exchanged,
        // or are links of one inode: then nothing changes).
        let (removal, replaced) = if flags & libc::RENAME_EXCHANGE == 0 && self.quota.is_some() {
            // A name is replaced (one fewer) unless the two are links of
            // one inode (then nothing happens).
            let ino = |st: libc::stat64| (st.st_dev, st.st_ino);
            let replaced = match sys::stat_at(new.as_fd(), newname) {
                Ok(target) => sys::stat_at(old.as_fd(), oldname).map(ino).ok() != Some(ino(target)),
                Err(_) => false,
            };
            (self.removal_of(new.as_fd(), newname), replaced)
        } else {
            (None, false)
        };
        sys::rename_at(old.as_fd(), oldname, new.as_fd(), newname, flags)?;
        self.removed(removal);
        if replaced {
            self.entries_changed(-1);
        }
        Ok(())
    }
}
