//! Kernel file handles (`name_to_handle_at` / `open_by_handle_at`), used to
//! reopen inodes whose `O_PATH` fd the inode table reclaimed.
//!
//! Handles are produced by the daemon from its own fds, never taken from the
//! guest. `open_by_handle_at` needs `CAP_DAC_READ_SEARCH`; without it the
//! probe fails and inode fds simply stay pinned.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// Room for the largest handle the kernel hands out (`MAX_HANDLE_SZ`).
const MAX_HANDLE_BYTES: usize = 128;

/// An opaque kernel file handle.
#[derive(Clone)]
pub struct FileHandle {
    handle_type: i32,
    bytes: Vec<u8>,
}

/// `struct file_handle` with inline room for the handle bytes.
#[repr(C)]
struct RawHandle {
    handle_bytes: u32,
    handle_type: i32,
    f_handle: [u8; MAX_HANDLE_BYTES],
}

/// Makes and opens handles on the filesystem of the share.
pub struct FileHandles {
    mount_fd: OwnedFd,
    mount_id: i32,
}

impl FileHandles {
    /// Probes whether handles of `root` can be made and opened again; `None`
    /// when the filesystem or our capabilities do not allow it.
    pub fn probe(root: BorrowedFd<'_>, mount_fd: OwnedFd) -> Option<Self> {
        let (handle, mount_id) = name_to_handle(root).ok()?;
        let this = FileHandles { mount_fd, mount_id };
        this.open(&handle, libc::O_PATH).ok()?;
        Some(this)
    }

    /// The handle of `fd`, if it lives on the share's mount.
    pub fn handle_of(&self, fd: BorrowedFd<'_>) -> Option<FileHandle> {
        match name_to_handle(fd) {
            Ok((h, mount_id)) if mount_id == self.mount_id => Some(h),
            _ => None,
        }
    }

    /// Opens the inode behind `handle` with `flags`.
    pub fn open(&self, handle: &FileHandle, flags: i32) -> io::Result<OwnedFd> {
        let mut raw = RawHandle {
            handle_bytes: handle.bytes.len() as u32,
            handle_type: handle.handle_type,
            f_handle: [0; MAX_HANDLE_BYTES],
        };
        raw.f_handle[..handle.bytes.len()].copy_from_slice(&handle.bytes);
        // SAFETY: `raw` is a valid `struct file_handle` followed by
        // `handle_bytes` bytes; the kernel only reads it.
        let fd = unsafe {
            libc::open_by_handle_at(
                self.mount_fd.as_raw_fd(),
                (&mut raw as *mut RawHandle).cast(),
                flags | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new fd that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }
}

fn name_to_handle(fd: BorrowedFd<'_>) -> io::Result<(FileHandle, i32)> {
    let mut raw = RawHandle {
        handle_bytes: MAX_HANDLE_BYTES as u32,
        handle_type: 0,
        f_handle: [0; MAX_HANDLE_BYTES],
    };
    let mut mount_id: libc::c_int = 0;
    // SAFETY: `raw` has room for MAX_HANDLE_BYTES as announced in
    // handle_bytes; the empty path with AT_EMPTY_PATH names `fd` itself.
    let ret = unsafe {
        libc::name_to_handle_at(
            fd.as_raw_fd(),
            c"".as_ptr(),
            (&mut raw as *mut RawHandle).cast(),
            &mut mount_id,
            libc::AT_EMPTY_PATH,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    let len = (raw.handle_bytes as usize).min(MAX_HANDLE_BYTES);
    Ok((
        FileHandle {
            handle_type: raw.handle_type,
            bytes: raw.f_handle[..len].to_vec(),
        },
        mount_id,
    ))
}
