//! Unpacking a layer tarball, once per diff ID, into
//! `layers/sha256/<diff id>/`:
//!
//! ```text
//! tree/          the layer's files; host owner = the user who pulled;
//!                guest owner, mode, type and rdev in the record xattr
//! whiteouts      NUL-separated paths the layer deletes from lower layers
//! opaque-dirs    NUL-separated directories whose lower content it hides
//! ```
//!
//! Regular files, directories, symlinks and hard links become the same on
//! the host; device nodes and fifos become empty regular files whose
//! record carries the real type and device number (the host never gets a
//! device node). Host modes never carry setuid/setgid/sticky and files are
//! never writable (they are shared by every root); the record keeps the
//! image's bits. Directories listed in the tar get a record; directories
//! only implied by a path get none (the flattening step gives those the
//! lower layers' metadata or a default).
//!
//! Safe by construction: paths are split into components (`..` refused,
//! a leading `/` read relative to the layer), every directory is opened
//! beneath the layer with no symlink followed ([`tree`]), hard link
//! targets must be in the layer, and the bytes of tar headers between two
//! entries (long names, PAX records) are bounded. The work happens in a
//! staging directory renamed into place after the uncompressed stream's
//! digest matched the diff ID; on any error the staging tree is deleted.

mod entry;
pub(crate) mod tree;

use std::cell::Cell;
use std::io::{self, BufReader, Read};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use tar::EntryType;
use virtiofsd_msb::filesystem::sys;
use virtiofsd_msb::policy::stat_override::StatOverride;

use crate::digest::{Digest, HashingReader};
use crate::error::{Error, Result};
use crate::layerdir;
use crate::paths::Paths;
use entry::{classify, split_path, Kind, Meta};
use tree::{cname, Tree};

/// Most bytes of tar headers (long names, PAX records) read between two
/// entries.
pub const MAX_HEADER_BYTES: u64 = 4 << 20;

/// Makes sure the layer with diff ID `diff_id` is unpacked, from the
/// stored blob at `blob` (its digest `layer` names it in errors).
pub fn ensure_layer(paths: &Paths, blob: &Path, layer: &Digest, diff_id: &Digest) -> Result<()> {
    let mut file = std::fs::File::open(blob).map_err(|e| Error::io("open layer", blob, e))?;
    ensure_layer_from(paths, &mut file, layer, diff_id)
}

/// Makes sure the layer with diff ID `diff_id` is unpacked, reading its
/// blob (digest `layer`) from `blob`, e.g. while it downloads. `blob` is
/// read to its end before the layer is committed: a stream that fails
/// instead of ending (the download was cut, or the blob's digest did not
/// match) leaves nothing behind. Returns at once, reading nothing, when
/// the layer is already there.
pub fn ensure_layer_from(
    paths: &Paths,
    blob: &mut dyn Read,
    layer: &Digest,
    diff_id: &Digest,
) -> Result<()> {
    let dest = paths.layer(diff_id);
    if dest.is_dir() {
        return Ok(());
    }
    let staging = Staging::new(paths.unique_tmp(&format!("layer-{}", diff_id.short())))?;
    let tree_dir = staging.0.join(layerdir::TREE);
    crate::paths::mkdir_all(&tree_dir, 0o755)?;
    let changes = unpack_into(&mut *blob, &tree_dir, layer, diff_id)?;
    // A decompressor may stop at its end marker: what follows must still
    // arrive whole (the end of a download says its digest matched).
    io::copy(blob, &mut io::sink())
        .map_err(|e| Error::unsafe_layer(&layer.to_string(), b"(blob)", e.to_string()))?;
    layerdir::write_changes(&staging.0, &changes)?;
    staging.commit(&dest)
}

/// A staging directory deleted on drop unless committed.
struct Staging(PathBuf);

impl Staging {
    fn new(path: PathBuf) -> Result<Staging> {
        crate::paths::mkdir_all(&path, 0o700)?;
        Ok(Staging(path))
    }

    /// Renames the staging directory to `dest`; when another process got
    /// there first, its copy stays and ours is deleted.
    fn commit(self, dest: &Path) -> Result<()> {
        match crate::fsutil::rename_noreplace(&self.0, dest) {
            Ok(()) => {
                crate::fsutil::sync_dir(dest.parent().unwrap_or(dest));
                // Committed: nothing to delete, but the path's memory is
                // freed (found by the oci_layer fuzz target's leak check).
                let mut this = std::mem::ManuallyDrop::new(self);
                drop(std::mem::take(&mut this.0));
                Ok(())
            }
            Err(e) if matches!(e.raw_os_error(), Some(libc::EEXIST) | Some(libc::ENOTEMPTY)) => {
                Ok(())
            }
            Err(e) => Err(Error::io("rename into", dest, e)),
        }
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = crate::fsutil::remove_tree(&self.0);
    }
}

/// Bounds what the tar reader may read while the budget is armed.
struct Budget<R> {
    inner: R,
    left: Rc<Cell<Option<u64>>>,
}

impl<R: Read> Read for Budget<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(left) = self.left.get() {
            let n64 = n as u64;
            if n64 > left {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("tar headers of one entry exceed {MAX_HEADER_BYTES} bytes"),
                ));
            }
            self.left.set(Some(left - n64));
        }
        Ok(n)
    }
}

/// The uncompressed stream of a layer blob, by its magic number.
fn decompress<'a>(mut raw: Box<dyn Read + 'a>, layer: &str) -> Result<Box<dyn Read + 'a>> {
    let read_err = |e: io::Error| Error::unsafe_layer(layer, b"(blob)", e.to_string());
    // The first bytes, whatever the size of the reads that bring them.
    let mut head = Vec::with_capacity(4);
    (&mut raw)
        .take(4)
        .read_to_end(&mut head)
        .map_err(read_err)?;
    let compression = crate::spec::Compression::sniff(&head);
    let r = BufReader::with_capacity(256 << 10, io::Cursor::new(head).chain(raw));
    Ok(match compression {
        crate::spec::Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(r)),
        crate::spec::Compression::Zstd => Box::new(
            ruzstd::decoding::StreamingDecoder::new(r)
                .map_err(|e| Error::unsafe_layer(layer, b"", format!("bad zstd stream: {e}")))?,
        ),
        crate::spec::Compression::None => Box::new(r),
    })
}

/// The state of one layer being unpacked.
struct Unpacker {
    tree: Tree,
    layer: String,
    changes: layerdir::Changes,
    /// Directories listed in the tar: host mode and mtime are set last
    /// (creating their children changes the mtime).
    dirs: Vec<(Vec<Vec<u8>>, Meta)>,
}

fn unpack_into(
    blob: &mut dyn Read,
    tree_dir: &Path,
    layer: &Digest,
    diff_id: &Digest,
) -> Result<layerdir::Changes> {
    let layer_name = layer.to_string();
    let hashing = HashingReader::new(decompress(Box::new(blob), &layer_name)?);
    let left = Rc::new(Cell::new(None));
    let mut archive = tar::Archive::new(Budget {
        inner: hashing,
        left: left.clone(),
    });
    let tree = Tree::open(tree_dir).map_err(|e| Error::io("open", tree_dir, e))?;
    let mut u = Unpacker {
        tree,
        layer: layer_name.clone(),
        changes: layerdir::Changes::default(),
        dirs: Vec::new(),
    };
    let stream_err =
        |e: io::Error| Error::unsafe_layer(&layer_name, b"(tar stream)", e.to_string());
    {
        let mut entries = archive.entries().map_err(stream_err)?;
        loop {
            left.set(Some(MAX_HEADER_BYTES));
            let next = entries.next();
            left.set(None);
            match next {
                None => break,
                Some(entry) => u.apply(entry.map_err(stream_err)?)?,
            }
        }
    }
    let (actual, _) = archive.into_inner().inner.finish().map_err(stream_err)?;
    if &actual != diff_id {
        return Err(Error::DigestMismatch {
            what: format!("layer {layer_name} (uncompressed)"),
            expected: diff_id.to_string(),
            actual: actual.to_string(),
        });
    }
    u.finish_dirs()?;
    Ok(u.changes)
}

fn refuse(layer: &str, path: &[u8], why: impl Into<String>) -> Error {
    Error::unsafe_layer(layer, path, why)
}

/// Maps an error of a file operation on entry `path`.
fn fs_err(layer: &str, path: &[u8], e: io::Error) -> Error {
    let why = match e.raw_os_error() {
        Some(libc::ELOOP) => "a parent directory is a symlink (never followed)".to_string(),
        Some(libc::ENOTDIR) => {
            "a parent is a symlink (never followed) or not a directory".to_string()
        }
        Some(libc::EXDEV) => "it would leave the layer".to_string(),
        Some(libc::EOPNOTSUPP) => {
            format!("{e}: the store's filesystem must hold user.* extended attributes")
        }
        _ => e.to_string(),
    };
    refuse(layer, path, why)
}

impl Unpacker {
    fn apply<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<()> {
        let layer = self.layer.clone();
        let raw = entry.path_bytes().into_owned();
        let comps = split_path(&raw).map_err(|why| refuse(&layer, &raw, why))?;
        let etype = entry.header().entry_type();
        let Some((name, parents)) = comps.split_last() else {
            // "./": the layer's root directory itself.
            if etype.is_dir() {
                let meta = entry::meta(&mut entry).map_err(|why| refuse(&layer, &raw, why))?;
                self.dir_record(&raw, &[], &meta)?;
                self.dirs.push((Vec::new(), meta));
            }
            return Ok(());
        };
        match classify(name) {
            Kind::Plain => {}
            Kind::Ignored => return Ok(()),
            Kind::Opaque => {
                self.tree
                    .enter(parents)
                    .map_err(|e| fs_err(&layer, &raw, e))?;
                self.changes.opaque.push(parents.to_vec());
                return Ok(());
            }
            Kind::Whiteout(hidden) => {
                if hidden.is_empty() || hidden == b"." || hidden == b".." {
                    return Err(refuse(&layer, &raw, "whiteout of no name"));
                }
                let mut p = parents.to_vec();
                p.push(hidden);
                self.changes.whiteouts.push(p);
                return Ok(());
            }
        }
        let meta = entry::meta(&mut entry).map_err(|why| refuse(&layer, &raw, why))?;
        let cn = cname(name).map_err(|e| fs_err(&layer, &raw, e))?;
        let mut rec = StatOverride {
            uid: meta.uid,
            gid: meta.gid,
            mode: libc::S_IFREG | meta.perm,
            rdev: 0,
        };
        self.changes.entries += 1;
        match etype {
            EntryType::Directory => {
                let dir = self
                    .tree
                    .enter(parents)
                    .map_err(|e| fs_err(&layer, &raw, e))?;
                entry::make_dir(dir, &cn).map_err(|e| fs_err(&layer, &raw, e))?;
                self.dir_record(&raw, &comps, &meta)?;
                self.dirs.push((comps, meta));
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                let dir = self
                    .tree
                    .enter(parents)
                    .map_err(|e| fs_err(&layer, &raw, e))?;
                let (n, removed_dir) = entry::create_replacing(dir, &cn, || {
                    entry::create_file(dir, name, &mut entry, &rec, &meta)
                })
                .map_err(|e| fs_err(&layer, &raw, e))?;
                self.forget_if(removed_dir);
                self.changes.bytes += n;
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let h = entry.header();
                let major = h.device_major().ok().flatten().unwrap_or(0);
                let minor = h.device_minor().ok().flatten().unwrap_or(0);
                rec.mode = meta.perm
                    | match etype {
                        EntryType::Char => libc::S_IFCHR,
                        EntryType::Block => libc::S_IFBLK,
                        _ => libc::S_IFIFO,
                    };
                if etype != EntryType::Fifo {
                    rec.rdev = entry::encode_dev(major, minor);
                }
                let dir = self
                    .tree
                    .enter(parents)
                    .map_err(|e| fs_err(&layer, &raw, e))?;
                let (_, removed_dir) = entry::create_replacing(dir, &cn, || {
                    entry::create_file(dir, name, &mut io::empty(), &rec, &meta)
                })
                .map_err(|e| fs_err(&layer, &raw, e))?;
                self.forget_if(removed_dir);
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .ok_or_else(|| refuse(&layer, &raw, "symlink without a target"))?;
                if target.is_empty() || target.len() > entry::MAX_PATH || target.contains(&0) {
                    return Err(refuse(
                        &layer,
                        &raw,
                        "symlink target empty, too long or holding NUL",
                    ));
                }
                let ct = cname(&target).map_err(|e| fs_err(&layer, &raw, e))?;
                let dir = self
                    .tree
                    .enter(parents)
                    .map_err(|e| fs_err(&layer, &raw, e))?;
                let (_, removed_dir) =
                    entry::create_replacing(dir, &cn, || sys::symlink_at(&ct, dir, &cn))
                        .and_then(|r| tree::set_mtime_at(dir, &cn, meta.mtime).map(|()| r))
                        .map_err(|e| fs_err(&layer, &raw, e))?;
                self.forget_if(removed_dir);
            }
            EntryType::Link => self.hard_link(
                &raw,
                &comps,
                entry.link_name_bytes().map(|t| t.into_owned()),
            )?,
            EntryType::XGlobalHeader => {}
            other => {
                tracing::warn!(
                    "layer {}: skipping {:?} of tar type {:?}",
                    self.layer,
                    String::from_utf8_lossy(&raw),
                    other
                );
                self.changes.entries -= 1;
            }
        }
        Ok(())
    }

    /// A hard link to an earlier entry of this layer.
    fn hard_link(&mut self, raw: &[u8], comps: &[Vec<u8>], target: Option<Vec<u8>>) -> Result<()> {
        let layer = self.layer.clone();
        let target = target.ok_or_else(|| refuse(&layer, raw, "hard link without a target"))?;
        let tcomps = split_path(&target)
            .map_err(|why| refuse(&layer, raw, format!("hard link target: {why}")))?;
        let Some((tname, tparents)) = tcomps.split_last() else {
            return Err(refuse(&layer, raw, "hard link to the layer root"));
        };
        if tcomps == comps {
            return Ok(());
        }
        let (name, parents) = comps
            .split_last()
            .ok_or_else(|| refuse(&layer, raw, "hard link as the root"))?;
        let tdir = self.tree.open_dir(tparents).map_err(|e| {
            refuse(
                &layer,
                raw,
                format!(
                    "hard link target {:?} not in this layer: {e}",
                    String::from_utf8_lossy(&target)
                ),
            )
        })?;
        let (ctn, cn) = (
            cname(tname).map_err(|e| fs_err(&layer, raw, e))?,
            cname(name).map_err(|e| fs_err(&layer, raw, e))?,
        );
        match sys::stat_at(tdir.as_fd(), &ctn) {
            Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => {
                return Err(refuse(&layer, raw, "hard link to a directory"))
            }
            Ok(_) => {}
            Err(e) => {
                return Err(refuse(
                    &layer,
                    raw,
                    format!(
                        "hard link target {:?} not in this layer: {e}",
                        String::from_utf8_lossy(&target)
                    ),
                ))
            }
        }
        let dir = self
            .tree
            .enter(parents)
            .map_err(|e| fs_err(&layer, raw, e))?;
        let (_, removed_dir) =
            entry::create_replacing(dir, &cn, || sys::link_at(tdir.as_fd(), &ctn, dir, &cn, 0))
                .map_err(|e| fs_err(&layer, raw, e))?;
        self.forget_if(removed_dir);
        Ok(())
    }

    /// Drops the open directory fds after a directory was replaced.
    fn forget_if(&mut self, removed_dir: bool) {
        if removed_dir {
            self.tree.forget();
        }
    }

    /// Writes the record of directory `comps` (empty: the layer root).
    fn dir_record(&mut self, raw: &[u8], comps: &[Vec<u8>], meta: &Meta) -> Result<()> {
        let layer = self.layer.clone();
        let rec = StatOverride {
            uid: meta.uid,
            gid: meta.gid,
            mode: libc::S_IFDIR | meta.perm,
            rdev: 0,
        };
        let fd = self
            .tree
            .open_dir(comps)
            .map_err(|e| fs_err(&layer, raw, e))?;
        entry::write_record(fd.as_fd(), &rec, &meta.xattrs).map_err(|e| fs_err(&layer, raw, e))
    }

    /// Host modes and mtimes of the listed directories, deepest first.
    fn finish_dirs(&mut self) -> Result<()> {
        let layer = self.layer.clone();
        self.dirs.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        for (path, meta) in &self.dirs {
            let raw = path.join(&b'/');
            let fd = match self.tree.open_dir(path) {
                Ok(fd) => fd,
                // Replaced by a later entry: nothing to finish.
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::ENOENT) | Some(libc::ENOTDIR) | Some(libc::ELOOP)
                    ) =>
                {
                    continue
                }
                Err(e) => return Err(fs_err(&layer, &raw, e)),
            };
            tree::chmod_fd(fd.as_fd(), entry::host_dir_mode(meta.perm))
                .and_then(|()| tree::set_mtime_fd(fd.as_fd(), meta.mtime))
                .map_err(|e| fs_err(&layer, &raw, e))?;
        }
        Ok(())
    }
}
