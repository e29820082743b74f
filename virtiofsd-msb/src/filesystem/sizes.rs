//! Quota bookkeeping around requests that change sizes (see
//! [`crate::policy::quota`]): growth is reserved before the change, and the
//! change actually made (measured with `fstat` before and after, under a
//! per-inode lock) is what gets counted. Removing the last link of an inode
//! the daemon still holds keeps its bytes counted (an orphan) until it is
//! held no more.

use std::collections::HashSet;
use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::MutexGuard;
use std::time::{Duration, Instant};

use super::sys;
use super::ConfinedFs;
use crate::confinement;
use crate::policy::quota::{Charge, InodeKey, Quota};

/// `st_size` as an unsigned count.
pub(super) fn size_of(st: &libc::stat64) -> u64 {
    u64::try_from(st.st_size).unwrap_or(0)
}

/// Longest a request that would fail with `ENOSPC` waits for bytes
/// being given back (see [`ConfinedFs::retry_when_full`]).
const FULL_RETRY: Duration = Duration::from_millis(50);

fn enospc(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ENOSPC)
}

/// An entry about to be removed (unlink, or replaced by a rename): the
/// inode it names, held open and locked until [`ConfinedFs::removed`]
/// sees whether its last link went.
pub(super) struct Removal<'a> {
    quota: &'a Quota,
    fd: OwnedFd,
    key: InodeKey,
    _lock: MutexGuard<'a, ()>,
}

impl ConfinedFs {
    /// Runs `op`, which changes the size of the file behind `fd` (host
    /// inode `key`), under the quota: `plan` says from the current `stat`
    /// how many bytes `op` may add (reserved first; `ENOSPC` and no change
    /// when they do not fit), then the change `op` really made is counted
    /// (for an inode with no link left, as an orphan's). Without a quota
    /// this is just `op()`.
    pub(super) fn with_growth<R>(
        &self,
        fd: BorrowedFd<'_>,
        key: (u64, u64),
        plan: impl FnOnce(&libc::stat64) -> io::Result<u64>,
        op: impl FnOnce() -> io::Result<R>,
    ) -> io::Result<R> {
        let Some(q) = &self.quota else {
            return op();
        };
        let _inode = q.lock_inode(key.0, key.1);
        let before = sys::stat_fd(fd)?;
        let want = plan(&before)?;
        let charge = self.reserve(q, want)?;
        let result = op();
        let measured = match sys::stat_fd(fd) {
            Ok(after) => after.st_size.saturating_sub(before.st_size),
            Err(_) if result.is_ok() => want as i64,
            Err(_) => 0,
        };
        // Unlinked but open: still host disk space.
        let delta = if before.st_nlink == 0 {
            q.orphan_resized(key, measured)
        } else {
            measured
        };
        charge.settle(delta);
        result
    }

    /// [`Quota::reserve`]; when the bytes do not fit, see
    /// [`ConfinedFs::retry_when_full`].
    pub(super) fn reserve<'q>(&self, q: &'q Quota, bytes: u64) -> io::Result<Charge<'q>> {
        self.retry_when_full(q, || q.reserve(bytes))
    }

    /// `ENOSPC` when a new entry may not be made: the total is over the
    /// budget (after orphans no longer held gave their bytes back), or the
    /// share holds as many names as the budget allows.
    pub(super) fn check_room(&self) -> io::Result<()> {
        match &self.quota {
            Some(q) => {
                q.check_entry_room()?;
                self.retry_when_full(q, || q.check_room(0))
            }
            None => Ok(()),
        }
    }

    /// Names under the share changed by `delta` (made or removed).
    pub(super) fn entries_changed(&self, delta: i64) {
        if let Some(q) = &self.quota {
            q.entries_changed(delta);
        }
    }

    /// Runs `attempt`; while it answers `ENOSPC`, orphans no longer held
    /// give their bytes back and it runs again, for at most
    /// [`FULL_RETRY`]: a guest that closes and unlinks a file, then writes,
    /// sends the FORGET that frees the file on another queue, and another
    /// daemon sharing the budget may be freeing bytes the same way. Only
    /// the path to `ENOSPC` ever waits, and only while that may change.
    fn retry_when_full<T>(&self, q: &Quota, attempt: impl Fn() -> io::Result<T>) -> io::Result<T> {
        let deadline = Instant::now() + FULL_RETRY;
        loop {
            match attempt() {
                Err(e) if enospc(&e) => {
                    let pending = q.orphan_count() > 0 && self.release_unheld_orphans(q);
                    if !(pending || q.is_shared()) || Instant::now() >= deadline {
                        return attempt();
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
                other => return other,
            }
        }
    }

    /// After a FORGET or RELEASE: orphans the daemon no longer holds give
    /// their bytes back at once.
    pub(super) fn let_go(&self) {
        if let Some(q) = &self.quota {
            if q.orphan_count() > 0 {
                self.release_unheld_orphans(q);
            }
        }
    }

    /// Gives back the bytes of orphans neither the inode table nor an open
    /// handle holds any more. True when some orphan is left that only the
    /// inode table holds (a FORGET for it may be on its way).
    pub(super) fn release_unheld_orphans(&self, q: &Quota) -> bool {
        let open = self.handle_keys();
        let lookups_only = std::cell::Cell::new(false);
        q.release_orphans(|key| {
            let looked_up = self.inodes.holds(key);
            let opened = open.contains(&key);
            if looked_up && !opened {
                lookups_only.set(true);
            }
            looked_up || opened
        });
        lookups_only.get()
    }

    /// The host inodes of every open handle.
    fn handle_keys(&self) -> HashSet<InodeKey> {
        self.handles
            .snapshot()
            .iter()
            .filter_map(|h| sys::stat_fd(h.fd()).ok())
            .map(|st| (st.st_dev, st.st_ino))
            .collect()
    }

    /// Prepares the removal of the entry `name` of `dir` under the quota
    /// (`None` without one, or when the name cannot be opened: then the
    /// removal itself fails or frees nothing we counted).
    pub(super) fn removal_of(&self, dir: BorrowedFd<'_>, name: &CStr) -> Option<Removal<'_>> {
        let q = self.quota.as_ref()?;
        let flags = libc::O_PATH | libc::O_NOFOLLOW;
        let fd = confinement::open_beneath(dir, name, flags, 0).ok()?;
        let st = sys::stat_fd(fd.as_fd()).ok()?;
        if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
            return None;
        }
        Some(Removal {
            _lock: q.lock_inode(st.st_dev, st.st_ino),
            quota: q,
            fd,
            key: (st.st_dev, st.st_ino),
        })
    }

    /// After a removal succeeded: when it took the inode's last link, its
    /// bytes come back, unless the daemon still holds the inode (a guest
    /// handle or lookup), which keeps them counted as an orphan.
    pub(super) fn removed(&self, removal: Option<Removal<'_>>) {
        let Some(r) = removal else { return };
        let Ok(st) = sys::stat_fd(r.fd.as_fd()) else {
            return;
        };
        if st.st_nlink > 0 {
            return;
        }
        // Its data and (counted under the quota) its guest xattrs.
        let path = crate::confinement::ProcSelfFd::path_of(r.fd.as_fd());
        let bytes =
            size_of(&st).saturating_add(crate::policy::xattr_names::guest_xattr_bytes(&path));
        if self.inodes.holds(r.key) || self.handle_keys().contains(&r.key) {
            r.quota.adopt_orphan(r.key, bytes);
        } else {
            r.quota.adjust(-(i64::try_from(bytes).unwrap_or(i64::MAX)));
        }
    }

    /// The host identity of guest node `inode`.
    pub(super) fn inode_key(&self, inode: u64) -> io::Result<(u64, u64)> {
        let data = self.inodes.get(inode)?;
        Ok((data.key.dev, data.key.ino))
    }
}

/// Bytes a `fallocate(mode, offset, len)` may add to a file of `size`
/// bytes. Under a quota, preallocating past the end without growing the
/// size (`FALLOC_FL_KEEP_SIZE` without punching) is refused with
/// `EOPNOTSUPP`: it would take host disk space that apparent sizes never
/// show.
pub(super) fn fallocate_growth(mode: u32, size: u64, offset: u64, len: u64) -> io::Result<u64> {
    let mode = mode as i32;
    let end = offset.saturating_add(len);
    if mode & libc::FALLOC_FL_INSERT_RANGE != 0 {
        return Ok(len);
    }
    if mode & (libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_COLLAPSE_RANGE) != 0 {
        return Ok(0);
    }
    if mode & libc::FALLOC_FL_KEEP_SIZE != 0 {
        return if end > size {
            Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP))
        } else {
            Ok(0)
        };
    }
    Ok(crate::policy::quota::growth(size, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fallocate_growth_by_mode() {
        assert_eq!(fallocate_growth(0, 100, 50, 100).unwrap(), 50);
        assert_eq!(fallocate_growth(0, 100, 0, 10).unwrap(), 0);
        let keep = libc::FALLOC_FL_KEEP_SIZE as u32;
        let punch = libc::FALLOC_FL_PUNCH_HOLE as u32;
        assert_eq!(fallocate_growth(keep, 100, 0, 100).unwrap(), 0);
        assert_eq!(
            fallocate_growth(keep, 100, 50, 100)
                .unwrap_err()
                .raw_os_error(),
            Some(libc::EOPNOTSUPP)
        );
        assert_eq!(fallocate_growth(keep | punch, 100, 50, 1000).unwrap(), 0);
        let insert = libc::FALLOC_FL_INSERT_RANGE as u32;
        assert_eq!(fallocate_growth(insert, 8192, 4096, 4096).unwrap(), 4096);
        let zero = libc::FALLOC_FL_ZERO_RANGE as u32;
        assert_eq!(fallocate_growth(zero, 100, 0, 300).unwrap(), 200);
    }
}
