//! Attribute requests: getattr, setattr, readlink, statfs, access, with
//! the stat-virtualization record and the quota applied.

use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd};
use std::time::Duration;

use fuse_backend_rs::abi::fuse_abi::SetattrValid;

use super::ConfinedFs;
use super::{overlay, sizes, sys};
use crate::confinement::ProcSelfFd;
use crate::policy::quota::growth;

fn errno(e: i32) -> io::Error {
    io::Error::from_raw_os_error(e)
}

/// The uid and gid a chown asks for (`u32::MAX`: unchanged).
fn wanted_owner(attr: &libc::stat64, valid: SetattrValid) -> (u32, u32) {
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
    (uid, gid)
}

impl ConfinedFs {
    pub(super) fn do_getattr(&self, inode: u64) -> io::Result<(libc::stat64, Duration)> {
        let (data, fd) = self.inode(inode)?;
        Ok((self.inode_stat(&data, fd.as_fd())?, self.timeout))
    }

    /// chmod/chown with stat virtualization: the record changes; the host
    /// inode keeps its owner, and its mode changes only as
    /// `--host-permissions mirror` allows (never setuid/setgid/sticky).
    fn set_owner_mode_overlay(
        &self,
        fd: BorrowedFd<'_>,
        st: &libc::stat64,
        attr: &libc::stat64,
        valid: SetattrValid,
    ) -> io::Result<()> {
        let host_type = st.st_mode & libc::S_IFMT;
        if overlay::can_hold_record(host_type) {
            let cur = self.current_record(fd, st)?;
            let mut new = cur;
            if valid.contains(SetattrValid::MODE) {
                new.mode = cur.file_type() | (attr.st_mode & 0o7777);
                if let Some(m) = self.config.host_permissions.chmod_mode(new.mode) {
                    if st.st_mode & 0o7777 != m {
                        let name = ProcSelfFd::entry_name(fd);
                        sys::chmod_at(self.proc_fd.dir(), &name, m)?;
                    }
                }
            }
            if valid.contains(SetattrValid::UID) {
                new.uid = attr.st_uid;
            }
            if valid.contains(SetattrValid::GID) {
                new.gid = attr.st_gid;
            }
            // Written even when nothing changed: a chmod/chown moves ctime.
            return self.write_record(fd, &new);
        }
        match host_type {
            // A real host symlink cannot hold a record, and the guest may
            // not give host symlinks host owners of its choosing (host
            // `protected_symlinks` trusts a link's owner): only a chown to
            // the owner it has succeeds.
            libc::S_IFLNK if valid.contains(SetattrValid::MODE) => Err(errno(libc::EOPNOTSUPP)),
            libc::S_IFLNK => {
                let (uid, gid) = wanted_owner(attr, valid);
                let same = |want: u32, have: u32| want == u32::MAX || want == have;
                if same(uid, st.st_uid) && same(gid, st.st_gid) {
                    Ok(())
                } else {
                    Err(errno(libc::EPERM))
                }
            }
            // Special files present on the host stay as the host has them.
            _ => Err(errno(libc::EPERM)),
        }
    }

    /// chmod/chown without stat virtualization: the host inode changes, but
    /// never to setuid/setgid (setgid directories aside), never on a device
    /// node, and never to another owner or group (that needs the record).
    fn set_owner_mode_host(
        &self,
        fd: BorrowedFd<'_>,
        st: &libc::stat64,
        attr: &libc::stat64,
        valid: SetattrValid,
    ) -> io::Result<()> {
        let host_type = st.st_mode & libc::S_IFMT;
        if valid.intersects(SetattrValid::UID | SetattrValid::GID) {
            let (uid, gid) = wanted_owner(attr, valid);
            let uid_changes = uid != u32::MAX && uid != st.st_uid;
            let gid_changes = gid != u32::MAX && gid != st.st_gid;
            if uid_changes || gid_changes {
                return Err(errno(libc::EPERM));
            }
        }
        if valid.contains(SetattrValid::MODE) {
            let m = attr.st_mode & 0o7777;
            let setgid_file = m & libc::S_ISGID != 0 && host_type != libc::S_IFDIR;
            if matches!(host_type, libc::S_IFCHR | libc::S_IFBLK)
                || m & libc::S_ISUID != 0
                || setgid_file
            {
                return Err(errno(libc::EPERM));
            }
            let name = ProcSelfFd::entry_name(fd);
            sys::chmod_at(self.proc_fd.dir(), &name, m)?;
        }
        Ok(())
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
        if valid.intersects(SetattrValid::MODE | SetattrValid::UID | SetattrValid::GID) {
            let st = sys::stat_fd(fd.as_fd())?;
            if self.overlay {
                self.set_owner_mode_overlay(fd.as_fd(), &st, &attr, valid)?;
            } else {
                self.set_owner_mode_host(fd.as_fd(), &st, &attr, valid)?;
            }
        }
        if valid.contains(SetattrValid::SIZE) {
            if data.is_dir() {
                return Err(errno(libc::EISDIR));
            }
            let size = u64::try_from(attr.st_size).map_err(|_| errno(libc::EINVAL))?;
            if self.inode_type(&data, fd.as_fd())? != libc::S_IFREG {
                return Err(errno(libc::EINVAL));
            }
            let key = (data.key.dev, data.key.ino);
            let plan = |st: &libc::stat64| Ok(growth(sizes::size_of(st), size));
            match handle.map(|h| self.handles.get(h, inode)).transpose()? {
                Some(h) => {
                    self.with_growth(h.fd(), key, plan, || sys::truncate_fd(h.fd(), size))?
                }
                None => {
                    let file = self.proc_fd.reopen(fd.as_fd(), libc::O_WRONLY)?;
                    self.with_growth(file.as_fd(), key, plan, || {
                        sys::truncate_fd(file.as_fd(), size)
                    })?
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
        Ok((self.inode_stat(&data, fd.as_fd())?, self.timeout))
    }

    pub(super) fn do_readlink(&self, inode: u64) -> io::Result<Vec<u8>> {
        let (data, fd) = self.inode(inode)?;
        if data.is_symlink() {
            return sys::readlink_fd(fd.as_fd());
        }
        if data.file_type == libc::S_IFREG && self.inode_type(&data, fd.as_fd())? == libc::S_IFLNK {
            return self.read_file_backed_link(fd.as_fd());
        }
        Err(errno(libc::EINVAL))
    }

    /// The target of a file-backed symlink (a host regular file whose
    /// record says `S_IFLNK`, as microsandbox stores symlinks in strict
    /// mode): the file's contents, at most `PATH_MAX - 1` bytes.
    fn read_file_backed_link(&self, fd: BorrowedFd<'_>) -> io::Result<Vec<u8>> {
        let file = std::fs::File::from(self.proc_fd.reopen(fd, libc::O_RDONLY)?);
        let max = libc::PATH_MAX as usize - 1;
        let mut buf = Vec::with_capacity(256);
        std::io::Read::take(&file, max as u64 + 1).read_to_end(&mut buf)?;
        if buf.is_empty() || buf.len() > max || buf.contains(&0) {
            overlay::log_guest_visible(format_args!(
                "file-backed symlink with an unusable target ({} bytes)",
                buf.len()
            ));
            return Err(errno(libc::EIO));
        }
        Ok(buf)
    }

    pub(super) fn do_statfs(&self, inode: u64) -> io::Result<libc::statvfs64> {
        let (_, fd) = self.inode(inode)?;
        let host = sys::statvfs_fd(fd.as_fd())?;
        Ok(match &self.quota {
            Some(q) => {
                if q.orphan_count() > 0 {
                    self.release_unheld_orphans(q);
                }
                q.statfs(host)
            }
            None => host,
        })
    }

    /// `access(2)` as the guest caller: checks the guest-visible mode bits
    /// against the caller's uid/gid (root gets what root gets).
    pub(super) fn do_access(&self, uid: u32, gid: u32, inode: u64, mask: u32) -> io::Result<()> {
        let (data, fd) = self.inode(inode)?;
        let st = self.inode_stat(&data, fd.as_fd())?;
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
