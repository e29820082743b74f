//! The inode table: guest node ids ↔ host inodes, with lookup counts and a
//! bound on the host fds it keeps open (CVE-2020-10717 class).
//!
//! Each known inode is identified by `(st_dev, st_ino)` and holds an `O_PATH`
//! fd. When the number of open inode fds reaches the bound, fds of inodes
//! that also have a kernel file handle are closed, oldest first, and opened
//! again from the handle on their next use. Inodes without a usable handle
//! keep their fd; once those alone fill the bound, lookups of new inodes fail
//! with `ENFILE` while every other request keeps being served.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use super::file_handle::{FileHandle, FileHandles};
use super::sys;
use crate::policy::StatOverride;

/// The guest node id of the share root (FUSE_ROOT_ID).
pub const ROOT_ID: u64 = 1;

/// Host identity of an inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct InodeKey {
    /// `st_dev` of the host inode.
    pub dev: u64,
    /// `st_ino` of the host inode.
    pub ino: u64,
}

/// The stat-virtualization record of an inode as read at a given ctime
/// (`None`: the inode had no record). Setting or removing an xattr moves
/// the inode's ctime, so while the ctime is unchanged the record is too;
/// see `overlay::settled` for when a read may be kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CachedRecord {
    /// `(st_ctime, st_ctime_nsec)` the record was read at.
    pub ctime: (i64, i64),
    /// The record then.
    pub record: Option<StatOverride>,
}

/// One host inode the guest knows about.
pub struct InodeData {
    /// Guest node id.
    pub id: u64,
    /// Host identity.
    pub key: InodeKey,
    /// File type bits (`S_IFMT`) of the host inode.
    pub file_type: u32,
    /// A kernel file handle to reopen the inode after its fd was reclaimed.
    handle: Option<FileHandle>,
    /// The `O_PATH` fd, when currently open.
    fd: Mutex<Option<Arc<OwnedFd>>>,
    /// Kernel lookup count.
    refcount: AtomicU64,
    /// The record last read, reused while the ctime matches.
    record: Mutex<Option<CachedRecord>>,
}

impl InodeData {
    fn new(
        id: u64,
        key: InodeKey,
        file_type: u32,
        handle: Option<FileHandle>,
        fd: OwnedFd,
    ) -> Self {
        InodeData {
            id,
            key,
            file_type,
            handle,
            fd: Mutex::new(Some(Arc::new(fd))),
            refcount: AtomicU64::new(1),
            record: Mutex::new(None),
        }
    }

    /// The cached record if it was read at `ctime`.
    pub fn cached_record(&self, ctime: (i64, i64)) -> Option<Option<StatOverride>> {
        let cached = *self.record.lock().unwrap_or_else(|e| e.into_inner());
        cached.filter(|c| c.ctime == ctime).map(|c| c.record)
    }

    /// Keeps `read` as the inode's record.
    pub fn cache_record(&self, read: CachedRecord) {
        *self.record.lock().unwrap_or_else(|e| e.into_inner()) = Some(read);
    }

    /// Whether this inode is a directory.
    pub fn is_dir(&self) -> bool {
        self.file_type == libc::S_IFDIR
    }

    /// Whether this inode is a symlink.
    pub fn is_symlink(&self) -> bool {
        self.file_type == libc::S_IFLNK
    }
}

struct Maps {
    by_id: HashMap<u64, Arc<InodeData>>,
    by_key: HashMap<InodeKey, u64>,
}

/// The inode table.
pub struct InodeStore {
    maps: RwLock<Maps>,
    next_id: AtomicU64,
    fds: Mutex<FdAccount>,
    handles: Option<FileHandles>,
    max_fds: usize,
    /// Most inodes the table holds at once, fd or not (see
    /// [`ENTRIES_PER_FD`]).
    max_entries: usize,
}

/// Table entries allowed per inode fd: with file handles, entries outlive
/// their fds, so a guest that looks up ever more inodes and never forgets
/// them would otherwise grow the daemon without bound. At the default
/// 65,536 fds that is about a million inodes, as many as virtiofsd can
/// hold under its default RLIMIT_NOFILE.
pub const ENTRIES_PER_FD: usize = 16;

/// Which inodes hold an fd, oldest first, and how many.
struct FdAccount {
    open: usize,
    order: VecDeque<u64>,
    /// Ids in `order` of inodes forgotten since: dropped lazily (when met
    /// as a reclaim victim, or all at once when they are half of `order`),
    /// so a forget costs O(1) instead of a scan of every open inode.
    stale: usize,
}

impl FdAccount {
    /// Notes that an inode in `order` is gone.
    fn forgot_one(&mut self) {
        self.open = self.open.saturating_sub(1);
        self.stale += 1;
    }

    /// Whether `order` is due for dropping its stale ids.
    fn needs_compaction(&self) -> bool {
        self.stale > 64 && self.stale * 2 > self.order.len()
    }
}

/// A guard holding an inode's `O_PATH` fd for the duration of one request.
pub struct InodeFd(Arc<OwnedFd>);

impl AsFd for InodeFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl InodeStore {
    /// Creates the table with the share root (`root_fd`, an `O_PATH`
    /// directory fd) as node 1, holding at most `max_fds` inode fds.
    /// `handles` (when the kernel lets us reopen by handle) makes inode fds
    /// reclaimable.
    pub fn new(root_fd: OwnedFd, handles: Option<FileHandles>, max_fds: usize) -> io::Result<Self> {
        let st = sys::stat_fd(root_fd.as_fd())?;
        let key = InodeKey {
            dev: st.st_dev,
            ino: st.st_ino,
        };
        let root = InodeData::new(ROOT_ID, key, st.st_mode & libc::S_IFMT, None, root_fd);
        root.refcount.store(2, Ordering::Relaxed);
        let root = Arc::new(root);
        let mut by_id = HashMap::new();
        by_id.insert(ROOT_ID, root);
        let mut by_key = HashMap::new();
        by_key.insert(key, ROOT_ID);
        Ok(InodeStore {
            maps: RwLock::new(Maps { by_id, by_key }),
            next_id: AtomicU64::new(ROOT_ID + 1),
            fds: Mutex::new(FdAccount {
                open: 1,
                order: VecDeque::new(),
                stale: 0,
            }),
            handles,
            max_fds: max_fds.max(2),
            max_entries: max_fds.max(2).saturating_mul(ENTRIES_PER_FD),
        })
    }

    /// Whether the table holds the host inode `(dev, ino)`.
    pub fn holds(&self, (dev, ino): (u64, u64)) -> bool {
        let maps = self.maps.read().unwrap_or_else(|e| e.into_inner());
        maps.by_key.contains_key(&InodeKey { dev, ino })
    }

    /// Whether inode fds are reopened from file handles (which needs
    /// `CAP_DAC_READ_SEARCH`).
    pub fn uses_file_handles(&self) -> bool {
        self.handles.is_some()
    }

    /// The inode for guest node `id`, or `EBADF` for an id the guest was
    /// never given (or already forgot).
    pub fn get(&self, id: u64) -> io::Result<Arc<InodeData>> {
        let maps = self.maps.read().unwrap_or_else(|e| e.into_inner());
        maps.by_id
            .get(&id)
            .cloned()
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EBADF))
    }

    /// Number of host fds the table holds now.
    pub fn open_fds(&self) -> usize {
        self.fds.lock().unwrap_or_else(|e| e.into_inner()).open
    }

    /// The `O_PATH` fd of `inode`, reopening it from its file handle if the
    /// fd was reclaimed.
    pub fn fd(&self, inode: &InodeData) -> io::Result<InodeFd> {
        let mut slot = inode.fd.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(fd) = slot.as_ref() {
            return Ok(InodeFd(fd.clone()));
        }
        let (handle, handles) = match (&inode.handle, &self.handles) {
            (Some(h), Some(hs)) => (h, hs),
            _ => return Err(io::Error::from_raw_os_error(libc::ESTALE)),
        };
        self.reserve_slot()?;
        let fd = match handles.open(handle, libc::O_PATH | libc::O_NOFOLLOW) {
            Ok(fd) => fd,
            Err(e) => {
                self.release_slot();
                return Err(e);
            }
        };
        // The handle names an inode on the same filesystem; check that it is
        // still the one we handed out.
        let st = sys::stat_fd(fd.as_fd())?;
        if (InodeKey {
            dev: st.st_dev,
            ino: st.st_ino,
        }) != inode.key
        {
            self.release_slot();
            return Err(io::Error::from_raw_os_error(libc::ESTALE));
        }
        let fd = Arc::new(fd);
        *slot = Some(fd.clone());
        self.note_open(inode.id);
        Ok(InodeFd(fd))
    }

    /// Registers the result of a successful lookup: `fd` (an `O_PATH` fd to
    /// the entry) with stat `st`. Returns the inode, with its lookup count
    /// raised by one. An already known inode keeps its existing fd. A new
    /// inode past the table's bound is `ENFILE` (until the guest forgets).
    pub fn insert_or_ref(&self, fd: OwnedFd, st: &libc::stat64) -> io::Result<Arc<InodeData>> {
        let key = InodeKey {
            dev: st.st_dev,
            ino: st.st_ino,
        };
        if let Some(inode) = self.try_ref(key) {
            return Ok(inode);
        }
        let handle = self.handles.as_ref().and_then(|h| h.handle_of(fd.as_fd()));
        self.reserve_slot()?;
        let mut maps = self.maps.write().unwrap_or_else(|e| e.into_inner());
        if let Some(inode) = maps.by_key.get(&key).and_then(|id| maps.by_id.get(id)) {
            // Another request registered the same inode meanwhile.
            inode.refcount.fetch_add(1, Ordering::AcqRel);
            let inode = inode.clone();
            drop(maps);
            self.release_slot();
            return Ok(inode);
        }
        if maps.by_id.len() >= self.max_entries {
            drop(maps);
            self.release_slot();
            return Err(io::Error::from_raw_os_error(libc::ENFILE));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let inode = Arc::new(InodeData::new(
            id,
            key,
            st.st_mode & libc::S_IFMT,
            handle,
            fd,
        ));
        maps.by_id.insert(id, inode.clone());
        maps.by_key.insert(key, id);
        drop(maps);
        self.note_open(id);
        Ok(inode)
    }

    fn try_ref(&self, key: InodeKey) -> Option<Arc<InodeData>> {
        let maps = self.maps.read().unwrap_or_else(|e| e.into_inner());
        let id = *maps.by_key.get(&key)?;
        let inode = maps.by_id.get(&id)?;
        inode.refcount.fetch_add(1, Ordering::AcqRel);
        Some(inode.clone())
    }

    /// Drops `count` lookups of node `id`; at zero the inode and its fd go.
    pub fn forget(&self, id: u64, count: u64) {
        if id == ROOT_ID {
            return;
        }
        let mut maps = self.maps.write().unwrap_or_else(|e| e.into_inner());
        let Some(inode) = maps.by_id.get(&id).cloned() else {
            return;
        };
        let old = inode.refcount.load(Ordering::Acquire);
        let new = old.saturating_sub(count);
        inode.refcount.store(new, Ordering::Release);
        if new > 0 {
            return;
        }
        maps.by_id.remove(&id);
        if maps.by_key.get(&inode.key) == Some(&id) {
            maps.by_key.remove(&inode.key);
        }
        drop(maps);
        let had_fd = inode
            .fd
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .is_some();
        if had_fd {
            let mut acct = self.fds.lock().unwrap_or_else(|e| e.into_inner());
            acct.forgot_one();
            if acct.needs_compaction() {
                // Lock order as in reserve_slot: fds, then maps.
                let maps = self.maps.read().unwrap_or_else(|e| e.into_inner());
                acct.order.retain(|x| maps.by_id.contains_key(x));
                acct.stale = 0;
            }
        }
    }

    /// Forgets every inode but the root (the guest unmounted or reset).
    pub fn clear(&self) {
        let mut maps = self.maps.write().unwrap_or_else(|e| e.into_inner());
        maps.by_id.retain(|&id, _| id == ROOT_ID);
        maps.by_key.retain(|_, id| *id == ROOT_ID);
        let mut acct = self.fds.lock().unwrap_or_else(|e| e.into_inner());
        acct.open = 1;
        acct.order.clear();
        acct.stale = 0;
    }

    /// Reserves an fd slot, reclaiming the oldest reclaimable inode fds when
    /// the bound is reached. `ENFILE` when nothing can be reclaimed.
    fn reserve_slot(&self) -> io::Result<()> {
        let mut acct = self.fds.lock().unwrap_or_else(|e| e.into_inner());
        let mut budget = acct.order.len();
        while acct.open >= self.max_fds && budget > 0 {
            budget -= 1;
            let Some(victim) = acct.order.pop_front() else {
                break;
            };
            let inode = {
                let maps = self.maps.read().unwrap_or_else(|e| e.into_inner());
                maps.by_id.get(&victim).cloned()
            };
            let Some(inode) = inode else {
                // Forgotten since it was queued.
                acct.stale = acct.stale.saturating_sub(1);
                continue;
            };
            if inode.handle.is_none() {
                // Pinned: it cannot be reopened, keep it.
                acct.order.push_back(victim);
                continue;
            }
            // try_lock: a request holding this inode's slot may be waiting
            // for `fds`; never wait for it here (lock order).
            let reclaimed = match inode.fd.try_lock() {
                Ok(mut slot) => slot.take().is_some(),
                Err(_) => {
                    acct.order.push_back(victim);
                    false
                }
            };
            if reclaimed {
                acct.open -= 1;
            }
        }
        if acct.open >= self.max_fds {
            return Err(io::Error::from_raw_os_error(libc::ENFILE));
        }
        acct.open += 1;
        Ok(())
    }

    fn note_open(&self, id: u64) {
        self.fds
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .order
            .push_back(id);
    }

    fn release_slot(&self) {
        let mut acct = self.fds.lock().unwrap_or_else(|e| e.into_inner());
        acct.open = acct.open.saturating_sub(1);
    }
}
