//! Open file and directory handles the guest holds (`fh` in FUSE requests).

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::mem::ManuallyDrop;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

/// Where reading a directory handle stands: host entries the last
/// `getdents64` returned that no reply has taken yet, and the directory
/// offset a request must carry to continue with them. A request that
/// continues where the last one stopped needs no `lseek`, which on ext4
/// would make the next `getdents64` re-read and re-hash the whole
/// directory block.
#[derive(Default)]
pub struct DirCursor {
    /// The last `getdents64` output (allocated on first use).
    pub buf: Vec<u8>,
    /// Bytes of `buf` filled.
    pub filled: usize,
    /// Start of the first record in `buf` not handed out yet.
    pub pos: usize,
    /// The offset of the entry at `pos` (the host file position once `buf`
    /// is used up); `None` when not known.
    pub offset: Option<u64>,
}

/// One open host file or directory.
pub struct HandleData {
    /// Node id the handle was opened on.
    pub inode: u64,
    file: OwnedFd,
    /// Serialises seek + getdents on directory handles.
    dir_cursor: Mutex<DirCursor>,
}

impl HandleData {
    /// The open host fd.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// Runs `f` with a `File` view of the fd. Only positional I/O (pread /
    /// pwrite) goes through it, so requests on one handle may run at once.
    pub fn with_file<R>(&self, f: impl FnOnce(&mut File) -> R) -> R {
        // SAFETY: the File is never dropped (ManuallyDrop), so the fd stays
        // owned by `self.file`, which outlives this call.
        let mut file = ManuallyDrop::new(unsafe { File::from_raw_fd(self.file.as_raw_fd()) });
        f(&mut file)
    }

    /// Locks the directory cursor for one readdir pass.
    pub fn lock_cursor(&self) -> MutexGuard<'_, DirCursor> {
        self.dir_cursor.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The handle table, bounded so a guest cannot make the daemon hold
/// unlimited fds.
pub struct HandleTable {
    map: RwLock<HashMap<u64, Arc<HandleData>>>,
    next: AtomicU64,
    max: usize,
}

impl HandleTable {
    /// A table holding at most `max` open handles.
    pub fn new(max: usize) -> Self {
        HandleTable {
            map: RwLock::new(HashMap::new()),
            next: AtomicU64::new(1),
            max,
        }
    }

    /// Registers `file`, opened on node `inode`; `EMFILE` past the bound.
    pub fn insert(&self, inode: u64, file: OwnedFd) -> io::Result<u64> {
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        if map.len() >= self.max {
            return Err(io::Error::from_raw_os_error(libc::EMFILE));
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        map.insert(
            id,
            Arc::new(HandleData {
                inode,
                file,
                dir_cursor: Mutex::new(DirCursor::default()),
            }),
        );
        Ok(id)
    }

    /// The handle `id`, which must have been opened on `inode`; `EBADF`
    /// otherwise (the guest may send any number).
    pub fn get(&self, id: u64, inode: u64) -> io::Result<Arc<HandleData>> {
        let map = self.map.read().unwrap_or_else(|e| e.into_inner());
        match map.get(&id) {
            Some(h) if h.inode == inode => Ok(h.clone()),
            _ => Err(io::Error::from_raw_os_error(libc::EBADF)),
        }
    }

    /// Closes handle `id` (when no request is still using it).
    pub fn remove(&self, id: u64, inode: u64) -> io::Result<()> {
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        match map.get(&id) {
            Some(h) if h.inode == inode => {
                map.remove(&id);
                Ok(())
            }
            _ => Err(io::Error::from_raw_os_error(libc::EBADF)),
        }
    }

    /// Every open handle, as they are now.
    pub fn snapshot(&self) -> Vec<Arc<HandleData>> {
        let map = self.map.read().unwrap_or_else(|e| e.into_inner());
        map.values().cloned().collect()
    }

    /// Closes every handle.
    pub fn clear(&self) {
        self.map.write().unwrap_or_else(|e| e.into_inner()).clear();
    }
}
