//! Directory listing: readdir and readdirplus over `getdents64`.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use fuse_backend_rs::api::filesystem::{DirEntry, Entry};

use super::ConfinedFs;
use crate::confinement;

/// Size of the buffer one `getdents64` call fills.
const DIRENT_BUF: usize = 16 * 1024;

/// One entry decoded from a `getdents64` buffer.
struct RawDirent<'a> {
    ino: u64,
    next_offset: u64,
    kind: u8,
    name: &'a [u8],
}

/// Decodes `linux_dirent64` records; stops at the first malformed record.
fn parse_dirents(buf: &[u8]) -> Vec<RawDirent<'_>> {
    const HEADER: usize = 19; // d_ino (8) + d_off (8) + d_reclen (2) + d_type (1)
    let mut out = Vec::new();
    let mut pos = 0;
    while pos + HEADER <= buf.len() {
        let rec = &buf[pos..];
        let ino = u64::from_ne_bytes(rec[0..8].try_into().unwrap_or_default());
        let off = i64::from_ne_bytes(rec[8..16].try_into().unwrap_or_default());
        let reclen = u16::from_ne_bytes(rec[16..18].try_into().unwrap_or_default()) as usize;
        if reclen < HEADER || reclen > rec.len() {
            break;
        }
        let name_field = &rec[HEADER..reclen];
        let name_len = name_field
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(name_field.len());
        out.push(RawDirent {
            ino,
            next_offset: off as u64,
            kind: rec[18],
            name: &name_field[..name_len],
        });
        pos += reclen;
    }
    out
}

/// Reads the next batch of entries from `fd` starting at `offset`.
fn read_batch(fd: BorrowedFd<'_>, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
    super::sys::lseek_fd(fd, offset, libc::SEEK_SET as u32)?;
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
    /// directory ends.
    fn walk_dir(
        &self,
        inode: u64,
        handle: u64,
        offset: u64,
        mut add: impl FnMut(&RawDirent<'_>) -> io::Result<bool>,
    ) -> io::Result<()> {
        let h = self.handles.get(handle, inode)?;
        let _cursor = h.lock_cursor();
        let mut buf = vec![0u8; DIRENT_BUF];
        let mut offset = offset;
        loop {
            let n = read_batch(h.fd(), offset, &mut buf)?;
            if n == 0 {
                return Ok(());
            }
            for d in parse_dirents(&buf[..n]) {
                if !add(&d)? {
                    return Ok(());
                }
                offset = d.next_offset;
            }
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
    fn malformed_records_stop_the_parse() {
        let mut rec = vec![0u8; 24];
        rec[0] = 7; // ino
        rec[8] = 1; // off
        rec[16] = 24; // reclen
        rec[18] = 8; // DT_REG
        rec[19] = b'a';
        let ents = parse_dirents(&rec);
        assert_eq!(ents.len(), 1);
        assert_eq!(ents[0].name, b"a");
        assert_eq!(ents[0].ino, 7);
        rec[16] = 200; // reclen past the buffer
        assert!(parse_dirents(&rec).is_empty());
        rec[16] = 3; // reclen shorter than the header
        assert!(parse_dirents(&rec).is_empty());
    }
}
