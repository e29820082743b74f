//! The quota accounting file several daemons of one directory share
//! (`--quota-file PATH`).
//!
//! # Format
//!
//! 32 bytes, integers little-endian:
//!
//! | bytes  | field                                              |
//! |--------|----------------------------------------------------|
//! | 0..8   | magic `MSBQUOT1`                                   |
//! | 8..16  | `st_dev` of the shared directory                   |
//! | 16..24 | `st_ino` of the shared directory                   |
//! | 24..32 | bytes counted (see [`super::quota`] for what counts) |
//!
//! # Locking
//!
//! Open-file-description record locks (`F_OFD_SETLKW`), which every daemon
//! takes on its own open of the file and which the kernel drops when a
//! daemon dies:
//! - byte 0, exclusive, around every read-modify-write of the total (and
//!   around start-up);
//! - byte 1, shared, held for as long as a daemon serves with the file. A
//!   daemon that starts and can take byte 1 *exclusively* knows no other
//!   daemon uses the file: it rescans the directory and rewrites the total
//!   (repairing whatever a crash left). Otherwise it trusts the total, after
//!   checking the file belongs to the same directory.
//!
//! The file must live outside the shared directory (the guest must not
//! reach it); the daemon refuses one inside.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Magic at the start of the file.
pub const MAGIC: &[u8; 8] = b"MSBQUOT1";

/// Length of the file's contents.
pub const FILE_LEN: usize = 32;

/// Byte locked around updates.
const UPDATE_BYTE: i64 = 0;

/// Byte every live daemon holds shared.
const LIVE_BYTE: i64 = 1;

/// Decoded contents of the accounting file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// `(st_dev, st_ino)` of the directory the total belongs to.
    pub dir: (u64, u64),
    /// Bytes counted.
    pub used: u64,
}

impl Header {
    /// Encodes the header.
    pub fn encode(&self) -> [u8; FILE_LEN] {
        let mut b = [0u8; FILE_LEN];
        b[0..8].copy_from_slice(MAGIC);
        b[8..16].copy_from_slice(&self.dir.0.to_le_bytes());
        b[16..24].copy_from_slice(&self.dir.1.to_le_bytes());
        b[24..32].copy_from_slice(&self.used.to_le_bytes());
        b
    }

    /// Decodes a header; `None` for anything else (empty, foreign, torn).
    pub fn decode(b: &[u8]) -> Option<Header> {
        if b.len() != FILE_LEN || &b[0..8] != MAGIC {
            return None;
        }
        let word = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or_default());
        Some(Header {
            dir: (word(8), word(16)),
            used: word(24),
        })
    }
}

/// The total kept in a shared file.
pub struct SharedCounter {
    path: PathBuf,
    dir: (u64, u64),
    /// Threads of this daemon share one open file description, whose OFD
    /// locks do not exclude each other: this mutex does.
    file: Mutex<File>,
}

/// An OFD lock held on one byte, released on drop.
struct ByteLock<'a> {
    file: &'a File,
    byte: i64,
}

fn ofd_lock(file: &File, byte: i64, kind: i32, wait: bool) -> io::Result<()> {
    // SAFETY: plain data; every field used is set below.
    let mut fl: libc::flock64 = unsafe { std::mem::zeroed() };
    fl.l_type = kind as i16;
    fl.l_whence = libc::SEEK_SET as i16;
    fl.l_start = byte;
    fl.l_len = 1;
    let cmd = if wait {
        libc::F_OFD_SETLKW
    } else {
        libc::F_OFD_SETLK
    };
    loop {
        // SAFETY: valid fd and a valid, writable flock64.
        let rc = unsafe { libc::fcntl(file.as_raw_fd(), cmd, &mut fl as *mut libc::flock64) };
        if rc == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

impl<'a> ByteLock<'a> {
    fn exclusive(file: &'a File, byte: i64) -> io::Result<Self> {
        ofd_lock(file, byte, libc::F_WRLCK, true)?;
        Ok(ByteLock { file, byte })
    }
}

impl Drop for ByteLock<'_> {
    fn drop(&mut self) {
        let _ = ofd_lock(self.file, self.byte, libc::F_UNLCK, false);
    }
}

fn read_header(file: &File) -> io::Result<Option<Header>> {
    let mut b = [0u8; FILE_LEN + 1];
    let mut n = 0;
    while n < b.len() {
        let got = file.read_at(&mut b[n..], n as u64)?;
        if got == 0 {
            break;
        }
        n += got;
    }
    Ok(Header::decode(&b[..n]))
}

fn write_header(file: &File, h: &Header) -> io::Result<()> {
    file.write_all_at(&h.encode(), 0)?;
    file.set_len(FILE_LEN as u64)
}

impl SharedCounter {
    /// Opens (creating, mode 0600) the accounting file at `path` for the
    /// directory identified by `dir` (`st_dev`, `st_ino`). `scan` counts the
    /// directory; it runs when no other daemon uses the file, or the file
    /// holds no valid total.
    pub fn open(
        path: &Path,
        dir: (u64, u64),
        scan: impl FnOnce() -> io::Result<u64>,
    ) -> io::Result<SharedCounter> {
        let named =
            |e: io::Error| io::Error::new(e.kind(), format!("quota file {}: {e}", path.display()));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(path)
            .map_err(named)?;
        if !file.metadata().map_err(named)?.is_file() {
            return Err(named(io::Error::from_raw_os_error(libc::EINVAL)));
        }
        {
            let _update = ByteLock::exclusive(&file, UPDATE_BYTE).map_err(named)?;
            let alone = match ofd_lock(&file, LIVE_BYTE, libc::F_WRLCK, false) {
                Ok(()) => true,
                Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EACCES)) => false,
                Err(e) => return Err(named(e)),
            };
            let current = read_header(&file).map_err(named)?;
            match current {
                Some(h) if !alone && h.dir != dir => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!(
                            "quota file {}: in use by a daemon serving another directory",
                            path.display()
                        ),
                    ))
                }
                Some(h) if !alone => {
                    tracing::info!(used = h.used, "quota: joining the shared accounting");
                }
                _ => {
                    let used = scan()?;
                    tracing::info!(used, "quota: scanned the shared directory");
                    write_header(&file, &Header { dir, used }).map_err(named)?;
                }
            }
            // Stay registered as a live user of the file (downgrades our
            // exclusive lock when we were alone).
            ofd_lock(&file, LIVE_BYTE, libc::F_RDLCK, true).map_err(named)?;
        }
        Ok(SharedCounter {
            path: path.to_path_buf(),
            dir,
            file: Mutex::new(file),
        })
    }

    /// Runs `f` on the total under the update lock and stores what it
    /// returns as the new total.
    pub fn update<R>(&self, f: impl FnOnce(u64) -> (u64, R)) -> io::Result<R> {
        let file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        let _update = ByteLock::exclusive(&file, UPDATE_BYTE)?;
        let Some(h) = read_header(&file)? else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("quota file {}: contents damaged", self.path.display()),
            ));
        };
        let (used, r) = f(h.used);
        if used != h.used {
            write_header(
                &file,
                &Header {
                    dir: self.dir,
                    used,
                },
            )?;
        }
        Ok(r)
    }
}

/// Refuses an accounting file inside the shared directory `shared` (the
/// guest could read or change it there).
pub fn check_outside(file: &Path, shared: &Path) -> io::Result<()> {
    let shared = shared.canonicalize()?;
    let parent = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let parent = parent.canonicalize().map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("quota file {}: directory: {e}", file.display()),
        )
    })?;
    if parent.starts_with(&shared) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "quota file {} is inside the shared directory: put it outside, where the guest \
                 cannot reach it",
                file.display()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounting_file_must_be_outside_the_share() {
        let d = tempfile::tempdir().unwrap();
        let share = d.path().join("share");
        std::fs::create_dir_all(share.join("sub")).unwrap();
        check_outside(&d.path().join("q"), &share).unwrap();
        assert!(check_outside(&share.join("q"), &share).is_err());
        assert!(check_outside(&share.join("sub/q"), &share).is_err());
        assert!(check_outside(&share.join("sub/../q"), &share).is_err());
    }

    #[test]
    fn header_roundtrip_and_rejects() {
        let h = Header {
            dir: (0x801, 42),
            used: 12345,
        };
        assert_eq!(Header::decode(&h.encode()), Some(h));
        assert_eq!(Header::decode(b""), None);
        let mut bad = h.encode();
        bad[0] = b'X';
        assert_eq!(Header::decode(&bad), None);
        assert_eq!(Header::decode(&h.encode()[..31]), None);
    }

    #[test]
    fn first_opener_scans_and_later_ones_join() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("q");
        let a = SharedCounter::open(&path, (1, 2), || Ok(100)).unwrap();
        // A second daemon while the first lives: no scan, same total.
        let b = SharedCounter::open(&path, (1, 2), || panic!("must not rescan")).unwrap();
        a.update(|u| (u + 5, ())).unwrap();
        assert_eq!(b.update(|u| (u, u)).unwrap(), 105);
        b.update(|u| (u - 50, ())).unwrap();
        assert_eq!(a.update(|u| (u, u)).unwrap(), 55);
        // Another directory cannot join while they live.
        let e = SharedCounter::open(&path, (9, 9), || Ok(0))
            .err()
            .expect("refused");
        assert!(e.to_string().contains("another directory"), "{e}");
        drop(a);
        drop(b);
        // Alone again: the next opener rescans (repairing drift).
        let c = SharedCounter::open(&path, (1, 2), || Ok(7)).unwrap();
        assert_eq!(c.update(|u| (u, u)).unwrap(), 7);
        drop(c);
        // Alone, another directory may take the file over.
        let e = SharedCounter::open(&path, (9, 9), || Ok(3)).unwrap();
        assert_eq!(e.update(|u| (u, u)).unwrap(), 3);
    }

    #[test]
    fn damaged_files_are_rescanned_when_alone() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("q");
        std::fs::write(&path, b"garbage").unwrap();
        let c = SharedCounter::open(&path, (1, 2), || Ok(11)).unwrap();
        assert_eq!(c.update(|u| (u, u)).unwrap(), 11);
        assert_eq!(std::fs::read(&path).unwrap().len(), FILE_LEN);
    }

    #[test]
    fn concurrent_updates_from_two_openers_are_not_lost() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("q");
        let a = SharedCounter::open(&path, (1, 2), || Ok(0)).unwrap();
        let b = SharedCounter::open(&path, (1, 2), || Ok(0)).unwrap();
        std::thread::scope(|s| {
            for c in [&a, &b, &a, &b] {
                s.spawn(move || {
                    for _ in 0..200 {
                        c.update(|u| (u + 1, ())).unwrap();
                    }
                });
            }
        });
        assert_eq!(a.update(|u| (u, u)).unwrap(), 800);
    }
}
