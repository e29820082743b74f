//! Directory listing: readdir and readdirplus over `getdents64`.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use fuse_backend_rs::api::filesystem::{DirEntry, Entry};

use super::ConfinedFs;
use crate::confinement;

/// Size of the buffer one `getdents64` call fills (one per open directory
/// handle, kept between requests).
const DIRENT_BUF: usize = 4096;

/// One entry decoded from a `getdents64` buffer.
struct RawDirent<'a> {
    ino: u64,
    next_offset: u64,
    kind: u8,
    name: &'a [u8],
}

/// Decodes the `linux_dirent64` record at the start of `buf`; returns it
/// and its length, or `None` when `buf` holds no complete record.
fn parse_dirent(buf: &[u8]) -> Option<(RawDirent<'_>, usize)> {
    const HEADER: usize = 19; // d_ino (8) + d_off (8) + d_reclen (2) + d_type (1)
    if buf.len() < HEADER {
        return None;
    }
    let ino = u64::from_ne_bytes(buf[0..8].try_into().ok()?);
    let off = i64::from_ne_bytes(buf[8..16].try_into().ok()?);
    let reclen = u16::from_ne_bytes(buf[16..18].try_into().ok()?) as usize;
    if reclen < HEADER || reclen > buf.len() {
        return None;
    }
    let name_field = &buf[HEADER..reclen];
    let name_len = name_field
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(name_field.len());
    let d = RawDirent {
        ino,
        next_offset: off as u64,
        kind: buf[18],
        name: &name_field[..name_len],
    };
    Some((d, reclen))
}

/// Fills `buf` with the next entries from `fd`'s current position.
fn read_batch(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is writable for its length; getdents64 writes at most
    // that many bytes of records.
    let n = unsafe {
        libc::syscall(
            libc::SYS_getdents64,
            fd.as_raw_fd(),
            buf.as_mut_ptr(),
            buf.len(),
        )
    };
    super::sys::cvt64(n).map(|n| n as usize)
}

/// A readdirplus entry without a lookup (node id 0): the kernel lists the
/// name and does not count it.
fn unlooked_entry(d: &RawDirent<'_>) -> Entry {
    // SAFETY: plain data, zero is a valid value.
    let mut attr: libc::stat64 = unsafe { std::mem::zeroed() };
    attr.st_ino = d.ino;
    attr.st_mode = u32::from(d.kind) << 12;
    Entry {
        inode: 0,
        generation: 0,
        attr,
        attr_flags: 0,
        attr_timeout: Default::default(),
        entry_timeout: Default::default(),
    }
}

impl ConfinedFs {
    /// Walks directory handle `handle` from `offset`, handing each entry to
    /// `add`, until `add` reports a full reply (returns `Ok(false)`) or the
    /// directory ends. Entries read ahead stay in the handle's cursor for a
    /// request that continues from where this one stops.
    fn walk_dir(
        &self,
        inode: u64,
        handle: u64,
        offset: u64,
        mut add: impl FnMut(&RawDirent<'_>) -> io::Result<bool>,
    ) -> io::Result<()> {
        let h = self.handles.get(handle, inode)?;
        let mut guard = h.lock_cursor();
        let cur = &mut *guard;
        if cur.offset != Some(offset) {
            // Not where the last request stopped: start over there.
            cur.offset = None;
            super::sys::lseek_fd(h.fd(), offset, libc::SEEK_SET as u32)?;
            (cur.filled, cur.pos, cur.offset) = (0, 0, Some(offset));
        }
        if cur.buf.is_empty() {
            cur.buf = vec![0u8; DIRENT_BUF];
        }
        loop {
            if cur.pos >= cur.filled {
                let n = read_batch(h.fd(), &mut cur.buf).inspect_err(|_| cur.offset = None)?;
                (cur.filled, cur.pos) = (n, 0);
                if n == 0 {
                    return Ok(());
                }
            }
            let Some((d, reclen)) = parse_dirent(&cur.buf[cur.pos..cur.filled]) else {
                // Not a complete record: drop the rest of this batch.
                cur.pos = cur.filled;
                continue;
            };
            if !add(&d)? {
                return Ok(());
            }
            let next = d.next_offset;
            cur.pos += reclen;
            cur.offset = Some(next);
        }
    }

    pub(super) fn do_readdir(
        &self,
        inode: u64,
        handle: u64,
        offset: u64,
        add_entry: &mut dyn FnMut(DirEntry) -> io::Result<usize>,
    ) -> io::Result<()> {
        let dir = if self.overlay {
            Some(self.dir(inode)?)
        } else {
            None
        };
        self.walk_dir(inode, handle, offset, |d| {
            let kind = match &dir {
                Some(dir) if d.kind == libc::DT_REG => self.record_dirent_type(dir, d.name),
                _ => d.kind,
            };
            let written = add_entry(DirEntry {
                ino: d.ino,
                offset: d.next_offset,
                type_: u32::from(kind),
                name: d.name,
            })?;
            Ok(written > 0)
        })
    }

    /// The directory-entry type of host regular file `name` as the guest
    /// sees it (a record may make it a symlink or special file); `DT_REG`
    /// when that cannot be told.
    fn record_dirent_type(&self, dir: &super::inodes::InodeFd, name: &[u8]) -> u8 {
        let Ok(name) = CString::new(name) else {
            return libc::DT_REG;
        };
        let flags = libc::O_PATH | libc::O_NOFOLLOW;
        let Ok(fd) = confinement::open_beneath(dir.as_fd(), &name, flags, 0) else {
            return libc::DT_REG;
        };
        match self.read_record(fd.as_fd(), libc::S_IFREG) {
            Ok(Some(rec)) => (rec.file_type() >> 12) as u8,
            _ => libc::DT_REG,
        }
    }

    pub(super) fn do_readdirplus(
        &self,
        inode: u64,
        handle: u64,
        offset: u64,
        add_entry: &mut dyn FnMut(DirEntry, Entry) -> io::Result<usize>,
    ) -> io::Result<()> {
        let dir = self.dir(inode)?;
        self.walk_dir(inode, handle, offset, |d| {
            let dirent = DirEntry {
                ino: d.ino,
                offset: d.next_offset,
                type_: u32::from(d.kind),
                name: d.name,
            };
            if d.name == b"." || d.name == b".." {
                // Listed without a lookup (node id 0): the kernel does not
                // count them.
                return Ok(add_entry(dirent, unlooked_entry(d))? > 0);
            }
            let Ok(name) =
                CStr::from_bytes_with_nul(&[d.name, b"\0"].concat()).map(|c| c.to_owned())
            else {
                return Ok(true);
            };
            if confinement::validate_name(&name).is_err() {
                return Ok(true);
            }
            let entry = match self.entry_at(&dir, &name) {
                Ok(e) => e,
                // Removed since getdents saw it: skip it.
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(true),
                // This entry cannot be looked up (e.g. a corrupt record):
                // list its name without attributes; its own lookup fails.
                Err(e) if e.raw_os_error() == Some(libc::EIO) => {
                    return Ok(add_entry(dirent, unlooked_entry(d))? > 0);
                }
                Err(e) => return Err(e),
            };
            let id = entry.inode;
            let dirent = DirEntry {
                type_: (entry.attr.st_mode & libc::S_IFMT) >> 12,
                ..dirent
            };
            let written = add_entry(dirent, entry)?;
            if written == 0 {
                // Not sent: undo the lookup count it took.
                self.inodes.forget(id, 1);
            }
            Ok(written > 0)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_records_are_not_parsed() {
        let mut rec = vec![0u8; 24];
        rec[0] = 7; // ino
        rec[8] = 1; // off
        rec[16] = 24; // reclen
        rec[18] = 8; // DT_REG
        rec[19] = b'a';
        let (d, len) = parse_dirent(&rec).unwrap();
        assert_eq!((d.name, d.ino, d.next_offset, len), (&b"a"[..], 7, 1, 24));
        rec[16] = 200; // reclen past the buffer
        assert!(parse_dirent(&rec).is_none());
        rec[16] = 3; // reclen shorter than the header
        assert!(parse_dirent(&rec).is_none());
        assert!(parse_dirent(&rec[..10]).is_none());
    }
}
