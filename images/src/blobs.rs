//! The content-addressed blob store: `blobs/sha256/<hex>`, each file
//! verified against its digest before it is renamed into place, so a blob
//! that exists is whole and correct.
//!
//! Downloads go to `tmp/<hex>.partial`, locked with `flock` so two pulls of
//! one blob do not interleave; an interrupted download leaves that file
//! behind and the next pull resumes after its last byte (or starts over
//! when the registry ignores the range). A blob whose digest or size turns
//! out wrong is deleted and reported; nothing half-stored remains.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::digest::{Digest, Hasher};
use crate::error::{Error, Result};
use crate::lock::FileLock;
use crate::paths::Paths;

/// Largest manifest, index or config read into memory.
pub const MAX_DOCUMENT: u64 = 16 << 20;

/// Whether blob `d` is stored.
pub fn has(paths: &Paths, d: &Digest) -> bool {
    paths.blob(d).is_file()
}

/// Reads a small stored blob (manifest, config), checking its digest again
/// (cheap, and catches a store damaged on disk).
pub fn read_small(paths: &Paths, d: &Digest, what: &str) -> Result<Vec<u8>> {
    let path = paths.blob(d);
    let f = File::open(&path).map_err(|e| Error::io("open blob", &path, e))?;
    let mut bytes = Vec::new();
    f.take(MAX_DOCUMENT + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io("read blob", &path, e))?;
    if bytes.len() as u64 > MAX_DOCUMENT {
        return Err(Error::manifest(
            what,
            format!("larger than {MAX_DOCUMENT} bytes"),
        ));
    }
    let actual = Digest::of(&bytes);
    if &actual != d {
        return Err(Error::DigestMismatch {
            what: what.to_string(),
            expected: d.to_string(),
            actual: actual.to_string(),
        });
    }
    Ok(bytes)
}

/// Stores `bytes` (a manifest we hold in memory) under their digest.
pub fn put_bytes(paths: &Paths, bytes: &[u8]) -> Result<Digest> {
    let d = Digest::of(bytes);
    if !has(paths, &d) {
        ingest(paths, &d, Some(bytes.len() as u64), "blob", bytes)?;
    }
    Ok(d)
}

/// Copies a blob from `src`, verifying digest `expected` and `size` (when
/// known); stores it only when both match.
pub fn ingest(
    paths: &Paths,
    expected: &Digest,
    size: Option<u64>,
    what: &str,
    mut src: impl Read,
) -> Result<PathBuf> {
    if has(paths, expected) {
        return Ok(paths.blob(expected));
    }
    let mut partial = Partial::open(paths, expected)?;
    partial.restart()?;
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                partial.discard();
                return Err(Error::io(&format!("read {what}"), "(source)", e));
            }
        };
        partial.write(&buf[..n], size, what)?;
    }
    partial.commit(size, what)
}

/// Stores a blob whose digest is not known beforehand (a layer of a
/// `docker save` archive); returns its digest and size.
pub fn ingest_unnamed(paths: &Paths, mut src: impl Read) -> Result<(Digest, u64)> {
    let tmp = paths.unique_tmp("unnamed");
    let result = (|| {
        let mut f = File::create(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
        let mut h = Hasher::new();
        let mut buf = vec![0u8; 256 << 10];
        loop {
            let n = src.read(&mut buf).map_err(|e| Error::io("read", &tmp, e))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            f.write_all(&buf[..n])
                .map_err(|e| Error::io("write", &tmp, e))?;
        }
        f.sync_all().map_err(|e| Error::io("fsync", &tmp, e))?;
        let len = h.len();
        let d = h.finish();
        let dest = paths.blob(&d);
        std::fs::rename(&tmp, &dest).map_err(|e| Error::io("rename into", &dest, e))?;
        Ok((d, len))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// A download in progress: `tmp/<hex>.partial`, locked.
pub struct Partial {
    path: PathBuf,
    dest: PathBuf,
    expected: Digest,
    file: File,
    hasher: Hasher,
    /// Bytes hashed but not yet written (writes go out in 1 MiB pieces).
    pending: Vec<u8>,
    _lock: FileLock,
}

/// Size of the write buffer of a download.
const PENDING: usize = 1 << 20;

impl Partial {
    /// Opens (creating) and locks the partial file of blob `expected`,
    /// waiting while another process downloads it, and hashes what an
    /// earlier, interrupted download left in it.
    pub fn open(paths: &Paths, expected: &Digest) -> Result<Partial> {
        let path = paths.tmp.join(format!("{}.partial", expected.hex()));
        let open = || {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(&path)
        };
        // A holder that found the content bad unlinks the file before
        // unlocking: whoever waited on that inode opens the path again.
        let (file, lock) = loop {
            let file = open().map_err(|e| Error::io("open", &path, e))?;
            let lock_fd = file.try_clone().map_err(|e| Error::io("dup", &path, e))?;
            let lock = FileLock::exclusive_file(lock_fd, &path)?;
            if same_inode(&file, &path) {
                break (file, lock);
            }
        };
        let mut p = Partial {
            dest: paths.blob(expected),
            expected: expected.clone(),
            file,
            hasher: Hasher::new(),
            pending: Vec::with_capacity(PENDING),
            _lock: lock,
            path,
        };
        p.rehash()?;
        Ok(p)
    }

    /// Bytes already there (where a resumed download continues).
    pub fn offset(&self) -> u64 {
        self.hasher.len()
    }

    /// Whether the blob was completed (by another process) meanwhile.
    pub fn done(&self) -> bool {
        self.dest.is_file()
    }

    /// Drops what is there and starts from byte 0.
    pub fn restart(&mut self) -> Result<()> {
        self.file
            .set_len(0)
            .and_then(|()| self.file.seek(SeekFrom::Start(0)).map(drop))
            .map_err(|e| Error::io("truncate", &self.path, e))?;
        self.hasher = Hasher::new();
        self.pending.clear();
        Ok(())
    }

    /// Writes out what is buffered (kept for a resume, too).
    pub fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let r = self.file.write_all(&self.pending);
        self.pending.clear();
        r.map_err(|e| Error::io("write", &self.path, e))
    }

    fn rehash(&mut self) -> Result<()> {
        self.file
            .seek(SeekFrom::Start(0))
            .map_err(|e| Error::io("seek", &self.path, e))?;
        let mut buf = vec![0u8; 256 << 10];
        loop {
            let n = self
                .file
                .read(&mut buf)
                .map_err(|e| Error::io("read", &self.path, e))?;
            if n == 0 {
                return Ok(());
            }
            self.hasher.update(&buf[..n]);
        }
    }

    /// Appends bytes; fails (deleting the partial file) once more than
    /// `size` bytes arrived.
    pub fn write(&mut self, bytes: &[u8], size: Option<u64>, what: &str) -> Result<()> {
        let total = self.hasher.len() + bytes.len() as u64;
        if let Some(size) = size.filter(|&s| total > s) {
            self.discard();
            return Err(Error::SizeMismatch {
                what: what.to_string(),
                expected: size,
                actual: total,
            });
        }
        self.hasher.update(bytes);
        self.pending.extend_from_slice(bytes);
        if self.pending.len() >= PENDING {
            self.flush()?;
        }
        Ok(())
    }

    /// Checks size and digest; on success renames the file into
    /// `blobs/`, else deletes it.
    pub fn commit(mut self, size: Option<u64>, what: &str) -> Result<PathBuf> {
        self.flush()?;
        let len = self.hasher.len();
        if let Some(size) = size.filter(|&s| s != len) {
            self.discard();
            return Err(Error::SizeMismatch {
                what: what.to_string(),
                expected: size,
                actual: len,
            });
        }
        let actual = self.hasher.clone().finish();
        if actual != self.expected {
            let expected = self.expected.to_string();
            self.discard();
            return Err(Error::DigestMismatch {
                what: what.to_string(),
                expected,
                actual: actual.to_string(),
            });
        }
        self.file
            .sync_all()
            .map_err(|e| Error::io("fsync", &self.path, e))?;
        std::fs::rename(&self.path, &self.dest)
            .map_err(|e| Error::io("rename into", &self.dest, e))?;
        Ok(self.dest.clone())
    }

    /// Deletes the partial file (its content is known to be bad).
    pub fn discard(&mut self) {
        self.pending.clear();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Whether `path` still names the inode `file` has open.
fn same_inode(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
        _ => false,
    }
}

impl Drop for Partial {
    /// Keeps what arrived before an interruption, for a resume.
    fn drop(&mut self) {
        let _ = self.flush();
    }
}
