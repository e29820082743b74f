//! Quota bookkeeping around requests that change sizes (see
//! [`crate::policy::quota`]): growth is reserved before the change, and the
//! change actually made (measured with `fstat` before and after, under a
//! per-inode lock) is what gets counted.

use std::ffi::CStr;
use std::io;
use std::os::fd::BorrowedFd;

use super::sys;
use super::ConfinedFs;

/// `st_size` as an unsigned count.
pub(super) fn size_of(st: &libc::stat64) -> u64 {
    u64::try_from(st.st_size).unwrap_or(0)
}

impl ConfinedFs {
    /// Runs `op`, which changes the size of the file behind `fd` (host
    /// inode `key`), under the quota: `plan` says from the current `stat`
    /// how many bytes `op` may add (reserved first; `ENOSPC` and no change
    /// when they do not fit), then the change `op` really made is counted.
    /// Without a quota this is just `op()`.
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
        // An inode without links is out of `du`'s sight: not counted.
        let linked = before.st_nlink > 0;
        let charge = q.reserve(if linked { want } else { 0 })?;
        let result = op();
        let delta = match (linked, sys::stat_fd(fd)) {
            (false, _) => 0,
            (true, Ok(after)) => after.st_size.saturating_sub(before.st_size),
            (true, Err(_)) if result.is_ok() => want as i64,
            (true, Err(_)) => 0,
        };
        charge.settle(delta);
        result
    }

    /// Bytes the quota gets back when the entry `name` of `dir` goes away
    /// (unlink, or replaced by a rename): the size of a non-directory that
    /// has no other link. 0 without a quota.
    pub(super) fn freed_by_removal(&self, dir: BorrowedFd<'_>, name: &CStr) -> u64 {
        if self.quota.is_none() {
            return 0;
        }
        match sys::stat_at(dir, name) {
            Ok(st) if st.st_mode & libc::S_IFMT != libc::S_IFDIR && st.st_nlink == 1 => {
                size_of(&st)
            }
            _ => 0,
        }
    }

    /// Gives `bytes` back to the quota.
    pub(super) fn release_bytes(&self, bytes: u64) {
        if let Some(q) = &self.quota {
            q.adjust(-(i64::try_from(bytes).unwrap_or(i64::MAX)));
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
