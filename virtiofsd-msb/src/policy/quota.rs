//! Quota: a budget of apparent bytes for everything under the shared dir.
//!
//! # What is counted
//!
//! The apparent size (`st_size`) of every non-directory inode reachable
//! under the shared dir, each inode once however many hard links it has:
//! regular files (holes included), symlinks (their target length) and the
//! host regular files that carry guest special files. This is `du -sb`'s
//! count (apparent bytes, hard links once) without the sizes of directories
//! themselves, which are filesystem bookkeeping the guest cannot size and
//! the daemon could not track exactly. Guest extended attributes count
//! too: name plus value of every `user.*` attribute the guest sees (see
//! [`super::xattr_names::guest_xattr_bytes`]; the daemon's own
//! stat-virtualization record does not count).
//!
//! Metadata is bounded rather than counted: a share under a quota holds at
//! most one name per [`BYTES_PER_ENTRY`] bytes of budget (directories and
//! hard links included), so a guest cannot exhaust the host filesystem's
//! inodes with empty files. Each daemon keeps its own count of names (its
//! start-up scan, then its own changes); daemons sharing `--quota-file`
//! each apply the bound to what they see.
//!
//! # How it is kept
//!
//! The daemon scans the tree once at start (see [`super::quota_scan`]) and
//! then keeps a running total: every request that changes a size measures
//! the size before and after and applies the difference; growth is reserved
//! *before* the change, so a write, fallocate, truncate/setattr growth,
//! copy_file_range or symlink whose growth does not fit fails with `ENOSPC`
//! and changes nothing (no partial growth past the limit). Unlinking the
//! last link of an inode, or replacing it by a rename, frees its size;
//! shrinking frees the difference.
//!
//! # Unlinked but open
//!
//! An inode whose last link goes while the daemon still holds it (in its
//! inode table or an open handle) keeps taking host disk space: it becomes
//! an *orphan* whose bytes stay counted, and its growth is counted too
//! (`exec 3>f; rm f; dd >&3` cannot pass the budget). Its bytes come back
//! once the daemon holds it no more, checked lazily: when a reservation
//! would fail, and when `statfs` is asked ([`Quota::release_orphans`]).
//!
//! A directory already over its quota is served; only growth fails, and new
//! entries are refused while the total is over the limit.
//!
//! # Several daemons on one directory
//!
//! Without `--quota-file` the total lives in the daemon's memory. With
//! `--quota-file PATH` it lives in that file (see [`super::quota_file`]),
//! which every daemon serving the same directory opens: each update is a
//! read-modify-write under a lock, so all of them draw from one budget. The
//! first daemon to start on the file (no other daemon holding it) rescans
//! the directory, which also repairs any drift a crash left behind.

use std::collections::HashMap;
use std::io;
use std::os::fd::BorrowedFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use super::quota_file::SharedCounter;
use super::quota_scan;

/// Block size `statfs` reports under a quota.
pub const STATFS_BLOCK: u64 = 4096;

/// Number of per-inode locks serialising size changes.
const STRIPES: usize = 64;

/// Budget bytes per directory entry allowed: a guest may not fill the host
/// filesystem's inodes and directories with empty files. At 1 KiB, an 8 MiB
/// budget allows 8192 names, a 1 GiB one about a million.
pub const BYTES_PER_ENTRY: u64 = 1024;

/// `--quota-mib` / `--quota-file` as the filesystem gets them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaConfig {
    /// The budget in bytes (non-zero).
    pub limit_bytes: u64,
    /// The shared accounting file, if the budget is shared.
    pub accounting_file: Option<PathBuf>,
}

/// Where the running total lives.
enum Counter {
    /// This daemon alone.
    Memory(Mutex<u64>),
    /// A file shared with other daemons.
    Shared(SharedCounter),
}

/// A host inode: `(st_dev, st_ino)`.
pub type InodeKey = (u64, u64);

/// A byte budget and its running total.
pub struct Quota {
    limit: u64,
    counter: Counter,
    stripes: Vec<Mutex<()>>,
    /// Unlinked inodes still held open, with the bytes counted for each.
    orphans: Mutex<HashMap<InodeKey, u64>>,
    /// `orphans.len()`, read without the lock.
    orphan_count: AtomicUsize,
    /// Names under the share as this daemon counts them (its start-up
    /// scan, then its own creations and removals).
    entries: AtomicU64,
    /// Most names allowed (`limit / BYTES_PER_ENTRY`).
    max_entries: u64,
}

fn enospc() -> io::Error {
    io::Error::from_raw_os_error(libc::ENOSPC)
}

impl Quota {
    /// A budget of `limit` bytes of which `used` are taken, kept in memory.
    pub fn in_memory(limit: u64, used: u64) -> Quota {
        Quota::with_counter(limit, Counter::Memory(Mutex::new(used)))
    }

    fn with_counter(limit: u64, counter: Counter) -> Quota {
        Quota {
            limit,
            counter,
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            orphans: Mutex::new(HashMap::new()),
            orphan_count: AtomicUsize::new(0),
            entries: AtomicU64::new(0),
            max_entries: (limit / BYTES_PER_ENTRY).max(1),
        }
    }

    /// Sets up the budget for the directory `root`: scans it (in memory),
    /// or opens the shared accounting file, scanning when this daemon is
    /// the only one using it.
    pub fn open(config: &QuotaConfig, root: BorrowedFd<'_>) -> io::Result<Quota> {
        let tally = quota_scan::tally(root)?;
        let counter = match &config.accounting_file {
            None => Counter::Memory(Mutex::new(tally.bytes)),
            Some(path) => {
                let st = crate::filesystem::sys::stat_fd(root)?;
                Counter::Shared(SharedCounter::open(path, (st.st_dev, st.st_ino), || {
                    Ok(tally.bytes)
                })?)
            }
        };
        let quota = Quota::with_counter(config.limit_bytes, counter);
        quota.entries.store(tally.entries, Ordering::Relaxed);
        let used = quota.used()?;
        if used > quota.limit {
            tracing::warn!(
                used,
                limit = quota.limit,
                "the shared directory is already over its quota: growth will fail"
            );
        }
        Ok(quota)
    }

    /// The budget in bytes.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Bytes counted now.
    pub fn used(&self) -> io::Result<u64> {
        match &self.counter {
            Counter::Memory(m) => Ok(*m.lock().unwrap_or_else(|e| e.into_inner())),
            Counter::Shared(s) => s.update(|used| (used, used)),
        }
    }

    /// Read-modify-write of the total.
    fn update<R>(&self, f: impl FnOnce(u64) -> (u64, R)) -> io::Result<R> {
        match &self.counter {
            Counter::Memory(m) => {
                let mut used = m.lock().unwrap_or_else(|e| e.into_inner());
                let (new, r) = f(*used);
                *used = new;
                Ok(r)
            }
            Counter::Shared(s) => s.update(f),
        }
    }

    /// Takes `bytes` of budget for a change about to happen; `ENOSPC`
    /// (nothing taken) when they do not fit. Settle the returned charge with
    /// the growth that really happened.
    pub fn reserve(&self, bytes: u64) -> io::Result<Charge<'_>> {
        if bytes > 0 {
            let limit = self.limit;
            self.update(|used| match used.checked_add(bytes) {
                Some(total) if total <= limit => (total, Ok(())),
                _ => (used, Err(enospc())),
            })??;
        }
        Ok(Charge {
            quota: self,
            reserved: bytes,
            settled: false,
        })
    }

    /// `ENOSPC` when `bytes` more would not fit, or the total is already
    /// over the limit (new entries are refused then, even empty ones).
    pub fn check_room(&self, bytes: u64) -> io::Result<()> {
        let used = self.used()?;
        if used > self.limit || used.saturating_add(bytes) > self.limit {
            Err(enospc())
        } else {
            Ok(())
        }
    }

    /// Applies a change that already happened: `delta` bytes more (or
    /// fewer). Never fails for lack of budget; the total never goes below 0.
    pub fn adjust(&self, delta: i64) {
        if delta == 0 {
            return;
        }
        let result = self.update(|used| (apply_delta(used, delta), ()));
        if let Err(e) = result {
            tracing::warn!("quota accounting: cannot record a change of {delta} bytes: {e}");
        }
    }

    /// `ENOSPC` when no new name may be made: this daemon counts as many
    /// names under the share as the budget allows (see [`BYTES_PER_ENTRY`];
    /// requests racing on several queues may pass it by one each).
    pub fn check_entry_room(&self) -> io::Result<()> {
        if self.entries.load(Ordering::Relaxed) >= self.max_entries {
            Err(enospc())
        } else {
            Ok(())
        }
    }

    /// A name was made (`+1`) or removed (`-1`).
    pub fn entries_changed(&self, delta: i64) {
        let _ = self
            .entries
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(apply_delta(n, delta))
            });
    }

    /// Names counted now, and the most allowed.
    pub fn entries(&self) -> (u64, u64) {
        (self.entries.load(Ordering::Relaxed), self.max_entries)
    }

    /// Whether other daemons share the total (`--quota-file`).
    pub fn is_shared(&self) -> bool {
        matches!(self.counter, Counter::Shared(_))
    }

    /// Number of orphans (unlinked inodes still held, bytes still counted).
    pub fn orphan_count(&self) -> usize {
        self.orphan_count.load(Ordering::Acquire)
    }

    fn orphans(&self) -> MutexGuard<'_, HashMap<InodeKey, u64>> {
        self.orphans.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The last link of `key` went while the daemon still holds it: its
    /// `bytes` stay counted until [`Quota::release_orphans`] finds it no
    /// longer held.
    pub fn adopt_orphan(&self, key: InodeKey, bytes: u64) {
        let mut orphans = self.orphans();
        let entry = orphans.entry(key).or_insert(0);
        *entry = entry.saturating_add(bytes);
        self.orphan_count.store(orphans.len(), Ordering::Release);
    }

    /// `key`, which has no link left, changed size by `delta` bytes (as
    /// measured); returns the change to count. An orphan's entry follows
    /// it; an unlinked inode not known as one (its unlink raced a lookup)
    /// becomes one, with only its growth counted (its earlier bytes were
    /// given back when it was unlinked).
    pub fn orphan_resized(&self, key: InodeKey, delta: i64) -> i64 {
        let mut orphans = self.orphans();
        let counted = match orphans.get_mut(&key) {
            Some(bytes) => {
                let before = *bytes;
                *bytes = apply_delta(before, delta);
                (*bytes as i64).saturating_sub(before as i64)
            }
            None => {
                let grown = delta.max(0);
                orphans.insert(key, grown as u64);
                grown
            }
        };
        self.orphan_count.store(orphans.len(), Ordering::Release);
        counted
    }

    /// Gives back the bytes of every orphan `held` says the daemon no
    /// longer holds; returns how many bytes came back.
    pub fn release_orphans(&self, held: impl Fn(InodeKey) -> bool) -> u64 {
        let mut freed = 0u64;
        {
            let mut orphans = self.orphans();
            orphans.retain(|key, bytes| {
                if held(*key) {
                    true
                } else {
                    freed = freed.saturating_add(*bytes);
                    false
                }
            });
            self.orphan_count.store(orphans.len(), Ordering::Release);
        }
        self.adjust(-(i64::try_from(freed).unwrap_or(i64::MAX)));
        freed
    }

    /// Serialises size-changing requests on one host inode (`dev`, `ino`)
    /// within this daemon, so their before/after measurements do not mix.
    pub fn lock_inode(&self, dev: u64, ino: u64) -> MutexGuard<'_, ()> {
        let h = dev.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ ino.wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
        let i = (h >> 32) as usize % self.stripes.len();
        self.stripes[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The `statfs` answer under this quota: the budget as the size, what is
    /// left of it (no more than the host has free) as free space.
    pub fn statfs(&self, host: libc::statvfs64) -> libc::statvfs64 {
        let used = self.used().unwrap_or(self.limit);
        quota_statfs(host, self.limit, used)
    }
}

/// `used + delta`, clamped to `0..=u64::MAX`.
pub fn apply_delta(used: u64, delta: i64) -> u64 {
    if delta >= 0 {
        used.saturating_add(delta as u64)
    } else {
        used.saturating_sub(delta.unsigned_abs())
    }
}

/// Growth of a file of `size` bytes when data ends at `end`.
pub fn growth(size: u64, end: u64) -> u64 {
    end.saturating_sub(size)
}

/// [`Quota::statfs`] as a pure function of the host answer, the limit and
/// the total.
pub fn quota_statfs(mut st: libc::statvfs64, limit: u64, used: u64) -> libc::statvfs64 {
    let host_free = st.f_bavail.saturating_mul(st.f_frsize.max(1));
    let free = limit.saturating_sub(used).min(host_free);
    st.f_bsize = STATFS_BLOCK;
    st.f_frsize = STATFS_BLOCK;
    st.f_blocks = limit / STATFS_BLOCK;
    st.f_bfree = free / STATFS_BLOCK;
    st.f_bavail = free / STATFS_BLOCK;
    st
}

/// Budget reserved for one change; give the real growth to
/// [`Charge::settle`]. Dropped unsettled (the change failed before it
/// started) it gives the reservation back.
pub struct Charge<'a> {
    quota: &'a Quota,
    reserved: u64,
    settled: bool,
}

impl Charge<'_> {
    /// Records that the size really changed by `delta` bytes.
    pub fn settle(mut self, delta: i64) {
        self.settled = true;
        let reserved = i64::try_from(self.reserved).unwrap_or(i64::MAX);
        self.quota.adjust(delta.saturating_sub(reserved));
    }
}

impl Drop for Charge<'_> {
    fn drop(&mut self) {
        if !self.settled && self.reserved > 0 {
            let reserved = i64::try_from(self.reserved).unwrap_or(i64::MAX);
            self.quota.adjust(-reserved);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errno<T>(r: io::Result<T>) -> Option<i32> {
        r.err().and_then(|e| e.raw_os_error())
    }

    #[test]
    fn reserve_up_to_the_limit_and_not_past_it() {
        let q = Quota::in_memory(100, 0);
        q.reserve(60).unwrap().settle(60);
        assert_eq!(q.used().unwrap(), 60);
        assert_eq!(errno(q.reserve(41)), Some(libc::ENOSPC));
        assert_eq!(q.used().unwrap(), 60, "a refused reservation takes nothing");
        q.reserve(40).unwrap().settle(40);
        assert_eq!(q.used().unwrap(), 100);
        assert_eq!(errno(q.reserve(1)), Some(libc::ENOSPC));
        q.reserve(0).unwrap().settle(0);
    }

    #[test]
    fn settling_less_gives_back_and_dropping_releases() {
        let q = Quota::in_memory(100, 10);
        q.reserve(50).unwrap().settle(20);
        assert_eq!(q.used().unwrap(), 30);
        drop(q.reserve(50).unwrap());
        assert_eq!(q.used().unwrap(), 30);
        q.reserve(0).unwrap().settle(-25);
        assert_eq!(q.used().unwrap(), 5);
        q.adjust(-1000);
        assert_eq!(q.used().unwrap(), 0, "never below zero");
    }

    #[test]
    fn over_the_limit_only_shrinking_works() {
        let q = Quota::in_memory(100, 150);
        assert_eq!(errno(q.reserve(1)), Some(libc::ENOSPC));
        assert_eq!(errno(q.check_room(0)), Some(libc::ENOSPC));
        q.adjust(-60);
        assert_eq!(q.used().unwrap(), 90);
        q.check_room(10).unwrap();
        assert_eq!(errno(q.check_room(11)), Some(libc::ENOSPC));
    }

    #[test]
    fn growth_and_deltas() {
        assert_eq!(growth(100, 50), 0);
        assert_eq!(growth(100, 150), 50);
        assert_eq!(apply_delta(5, -10), 0);
        assert_eq!(apply_delta(u64::MAX - 1, 10), u64::MAX);
        assert_eq!(apply_delta(5, 3), 8);
    }

    #[test]
    fn statfs_reports_the_budget() {
        // SAFETY: plain data; zero is valid.
        let mut host: libc::statvfs64 = unsafe { std::mem::zeroed() };
        host.f_bsize = 4096;
        host.f_frsize = 4096;
        host.f_blocks = 1 << 30;
        host.f_bavail = 1 << 29;
        host.f_bfree = 1 << 29;
        host.f_files = 1000;
        let st = quota_statfs(host, 8 << 20, 3 << 20);
        assert_eq!(st.f_blocks * st.f_frsize, 8 << 20);
        assert_eq!(st.f_bavail * st.f_frsize, 5 << 20);
        assert_eq!(st.f_bfree, st.f_bavail);
        assert_eq!(st.f_files, 1000, "inode counts stay the host's");
        let over = quota_statfs(host, 8 << 20, 9 << 20);
        assert_eq!(over.f_bavail, 0);
        host.f_bavail = 1;
        let tight = quota_statfs(host, 8 << 20, 0);
        assert_eq!(tight.f_bavail, 1, "never more than the host has free");
    }

    #[test]
    fn entries_are_bounded_by_the_budget() {
        let q = Quota::in_memory(4 * BYTES_PER_ENTRY, 0);
        for _ in 0..4 {
            q.check_entry_room().unwrap();
            q.entries_changed(1);
        }
        assert_eq!(errno(q.check_entry_room()), Some(libc::ENOSPC));
        q.entries_changed(-1);
        q.check_entry_room().unwrap();
        q.entries_changed(-10);
        assert_eq!(q.entries(), (0, 4));
    }

    #[test]
    fn orphans_stay_counted_until_released() {
        let q = Quota::in_memory(100, 40);
        q.adopt_orphan((1, 7), 40);
        assert_eq!(q.orphan_count(), 1);
        // It grows by 30 and shrinks by 100: only down to zero.
        assert_eq!(q.orphan_resized((1, 7), 30), 30);
        assert_eq!(q.orphan_resized((1, 7), -100), -70);
        // An unlinked inode nobody adopted: only growth counts.
        assert_eq!(q.orphan_resized((1, 8), -5), 0);
        assert_eq!(q.orphan_resized((1, 8), 9), 9);
        q.adjust(9);
        assert_eq!(q.release_orphans(|k| k == (1, 8)), 0);
        assert_eq!(q.orphan_count(), 1);
        assert_eq!(q.used().unwrap(), 49);
        assert_eq!(q.release_orphans(|_| false), 9);
        assert_eq!(q.used().unwrap(), 40);
        assert_eq!(q.orphan_count(), 0);
    }

    #[test]
    fn concurrent_reservations_never_pass_the_limit() {
        let q = Quota::in_memory(1000, 0);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..100 {
                        if let Ok(c) = q.reserve(7) {
                            c.settle(7);
                        }
                    }
                });
            }
        });
        let used = q.used().unwrap();
        assert!(used <= 1000 && used > 990, "{used}");
    }
}
