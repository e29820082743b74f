//! Attribute requests: getattr, setattr, readlink, statfs, access.

use std::io;
use std::os::fd::AsFd;
use std::time::Duration;

use fuse_backend_rs::abi::fuse_abi::SetattrValid;

use super::sys;
use super::ConfinedFs;
use crate::confinement::ProcSelfFd;

impl ConfinedFs {
    pub(super) fn do_getattr(&self, inode: u64) -> io::Result<(libc::stat64, Duration)> {
        let (_, fd) = self.inode(inode)?;
        Ok((sys::stat_fd(fd.as_fd())?, self.timeout))
    }

    pub(super) fn do_setattr(
        &self,
        inode: u64,
        attr: libc::stat64,
        handle: Option<u64>,
        valid: SetattrValid,
    ) -> io::Result<(libc::stat64, Duration)> {
        self.check_writable()?;
        let (data, fd) = self.inode(inode)?;
        let name = ProcSelfFd::entry_name(fd.as_fd());
        if valid.contains(SetattrValid::MODE) {
            sys::chmod_at(self.proc_fd.dir(), &name, attr.st_mode & 0o7777)?;
        }
        if valid.intersects(SetattrValid::UID | SetattrValid::GID) {
            let uid = if valid.contains(SetattrValid::UID) {
                attr.st_uid
            } else {
                u32::MAX
            };
            let gid = if valid.contains(SetattrValid::GID) {
                attr.st_gid
            } else {
                u32::MAX
            };
            sys::chown_fd(fd.as_fd(), uid, gid)?;
        }
        if valid.contains(SetattrValid::SIZE) {
            if data.is_dir() {
                return Err(io::Error::from_raw_os_error(libc::EISDIR));
            }
            let size = u64::try_from(attr.st_size)
                .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
            match handle.map(|h| self.handles.get(h, inode)).transpose()? {
                Some(h) => sys::truncate_fd(h.fd(), size)?,
                None => {
                    if data.file_type != libc::S_IFREG {
                        return Err(io::Error::from_raw_os_error(libc::EINVAL));
                    }
                    let file = self.proc_fd.reopen(fd.as_fd(), libc::O_WRONLY)?;
                    sys::truncate_fd(file.as_fd(), size)?;
                }
            }
        }
        let times_valid = SetattrValid::ATIME | SetattrValid::MTIME;
        if valid.intersects(times_valid) {
            let pick = |set: bool, now: bool, sec: i64, nsec: i64| match (set, now) {
                (false, _) => libc::timespec {
                    tv_sec: 0,
                    tv_nsec: libc::UTIME_OMIT,
                },
                (true, true) => libc::timespec {
                    tv_sec: 0,
                    tv_nsec: libc::UTIME_NOW,
                },
                (true, false) => libc::timespec {
                    tv_sec: sec,
                    tv_nsec: nsec,
                },
            };
            let times = [
                pick(
                    valid.contains(SetattrValid::ATIME),
                    valid.contains(SetattrValid::ATIME_NOW),
                    attr.st_atime,
                    attr.st_atime_nsec,
                ),
                pick(
                    valid.contains(SetattrValid::MTIME),
                    valid.contains(SetattrValid::MTIME_NOW),
                    attr.st_mtime,
                    attr.st_mtime_nsec,
                ),
            ];
            sys::utimens_at(self.proc_fd.dir(), &name, &times)?;
        }
        Ok((sys::stat_fd(fd.as_fd())?, self.timeout))
    }

    pub(super) fn do_readlink(&self, inode: u64) -> io::Result<Vec<u8>> {
        let (data, fd) = self.inode(inode)?;
        if !data.is_symlink() {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        sys::readlink_fd(fd.as_fd())
    }

    pub(super) fn do_statfs(&self, inode: u64) -> io::Result<libc::statvfs64> {
        let (_, fd) = self.inode(inode)?;
        sys::statvfs_fd(fd.as_fd())
    }

    /// `access(2)` as the guest caller: checks mode bits of the host inode
    /// against the caller's uid/gid (root gets what root gets).
    pub(super) fn do_access(&self, uid: u32, gid: u32, inode: u64, mask: u32) -> io::Result<()> {
        let (_, fd) = self.inode(inode)?;
        let st = sys::stat_fd(fd.as_fd())?;
        if mask == libc::F_OK as u32 {
            return Ok(());
        }
        let mode = st.st_mode;
        let allowed = if uid == 0 {
            // Root may read and write anything; execute needs one x bit
            // (or a directory).
            let x_ok = mode & 0o111 != 0 || mode & libc::S_IFMT == libc::S_IFDIR;
            (libc::R_OK | libc::W_OK) as u32 | if x_ok { libc::X_OK as u32 } else { 0 }
        } else if st.st_uid == uid {
            (mode >> 6) & 0o7
        } else if st.st_gid == gid {
            (mode >> 3) & 0o7
        } else {
            mode & 0o7
        };
        if mask & !allowed == 0 {
            Ok(())
        } else {
            Err(io::Error::from_raw_os_error(libc::EACCES))
        }
    }
}
