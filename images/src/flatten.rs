//! Building an image root: the image's layers merged in order into one
//! tree whose files are HARD LINKS to the unpacked layer files (file data
//! is stored once however many images and roots share it); only the
//! directories are made anew, each carrying the record (and xattrs) of
//! the topmost layer that lists it, or a default `root:root 0755`.
//!
//! Merging applies each layer's opaque directories, then its whiteouts,
//! then its entries: a later entry replaces whatever was at its path (a
//! directory replacing a file, a file replacing a whole directory).
//! The walk of layer trees never follows a symlink: it only descends into
//! entries whose own type is directory, and `linkat` links a symlink
//! itself.

use std::collections::BTreeMap;
use std::ffi::{CString, OsStr};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use virtiofsd_msb::policy::stat_override::{StatOverride, XATTR_NAME};

use crate::error::{Error, Result};
use crate::layerdir;

/// A node of the merged tree.
enum Node {
    /// A directory: the index of the topmost layer listing it with a
    /// record (none: implied only), and its entries.
    Dir {
        source: Option<usize>,
        children: BTreeMap<Vec<u8>, Node>,
    },
    /// Anything else: the layer it comes from.
    Leaf(usize),
}

impl Node {
    fn empty_dir() -> Node {
        Node::Dir {
            source: None,
            children: BTreeMap::new(),
        }
    }

    /// The node at `path`, if any.
    fn find_mut(&mut self, path: &[Vec<u8>]) -> Option<&mut Node> {
        let mut cur = self;
        for comp in path {
            match cur {
                Node::Dir { children, .. } => cur = children.get_mut(comp)?,
                Node::Leaf(_) => return None,
            }
        }
        Some(cur)
    }
}

/// Layer trees (bottom first) merged and materialized at `dest` (which
/// must not exist).
pub fn build(layers: &[PathBuf], dest: &Path) -> Result<()> {
    let mut root = Node::empty_dir();
    for (i, layer) in layers.iter().enumerate() {
        let changes = layerdir::read_changes(layer)?;
        for dir in &changes.opaque {
            if let Some(Node::Dir { children, .. }) = root.find_mut(dir) {
                children.clear();
            }
        }
        for path in &changes.whiteouts {
            if let Some((name, parent)) = path.split_last() {
                if let Some(Node::Dir { children, .. }) = root.find_mut(parent) {
                    children.remove(name);
                }
            }
        }
        let tree = layer.join(layerdir::TREE);
        if has_record(&tree)? {
            if let Node::Dir { source, .. } = &mut root {
                *source = Some(i);
            }
        }
        merge_dir(&mut root, &tree, i)?;
    }
    let trees: Vec<PathBuf> = layers.iter().map(|l| l.join(layerdir::TREE)).collect();
    materialize(&root, &trees, &mut PathBuf::new(), dest)
}

/// Adds the entries of layer `i`'s directory `dir` into `node`.
fn merge_dir(node: &mut Node, dir: &Path, i: usize) -> Result<()> {
    let Node::Dir { children, .. } = node else {
        return Ok(());
    };
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io("read directory", dir, e))?;
    for e in entries {
        let e = e.map_err(|e| Error::io("read directory", dir, e))?;
        let ft = e
            .file_type()
            .map_err(|err| Error::io("stat", e.path(), err))?;
        let name = e.file_name().as_bytes().to_vec();
        if ft.is_dir() {
            let path = e.path();
            let child = children.entry(name).or_insert_with(Node::empty_dir);
            if matches!(child, Node::Leaf(_)) {
                *child = Node::empty_dir();
            }
            if has_record(&path)? {
                if let Node::Dir { source, .. } = child {
                    *source = Some(i);
                }
            }
            merge_dir(child, &path, i)?;
        } else {
            children.insert(name, Node::Leaf(i));
        }
    }
    Ok(())
}

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// Whether directory `p` carries a record.
fn has_record(p: &Path) -> Result<bool> {
    let c = cpath(p).map_err(|e| Error::io("getxattr", p, e))?;
    // SAFETY: NUL-terminated path and name; a NULL buffer of size 0 only
    // asks for the value's length.
    let rc = unsafe { libc::lgetxattr(c.as_ptr(), XATTR_NAME.as_ptr(), std::ptr::null_mut(), 0) };
    if rc >= 0 {
        return Ok(true);
    }
    match io::Error::last_os_error() {
        e if e.raw_os_error() == Some(libc::ENODATA) => Ok(false),
        e => Err(Error::io("getxattr", p, e)),
    }
}

/// The xattrs of `p` (names and values).
fn xattrs_of(p: &Path) -> io::Result<Vec<(CString, Vec<u8>)>> {
    let c = cpath(p)?;
    let mut names = vec![0u8; 64 << 10];
    // SAFETY: NUL-terminated path; `names` writable for its length.
    let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    names.truncate(n as usize);
    let mut out = Vec::new();
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let cname = CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        let mut value = vec![0u8; 64 << 10];
        // SAFETY: NUL-terminated path and name; `value` writable.
        let n = unsafe {
            libc::lgetxattr(
                c.as_ptr(),
                cname.as_ptr(),
                value.as_mut_ptr().cast(),
                value.len(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        value.truncate(n as usize);
        out.push((cname, value));
    }
    Ok(out)
}

fn set_xattr_path(p: &Path, name: &CString, value: &[u8]) -> io::Result<()> {
    let c = cpath(p)?;
    // SAFETY: NUL-terminated path and name; `value` readable.
    let rc = unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Creates directory `dest` for `node` (at `rel` in the image) and
/// everything beneath it.
fn materialize(node: &Node, trees: &[PathBuf], rel: &mut PathBuf, dest: &Path) -> Result<()> {
    let Node::Dir { source, children } = node else {
        return Ok(());
    };
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(dest)
        .map_err(|e| Error::io("create directory", dest, e))?;
    let src = source.map(|i| trees[i].join(&*rel));
    let (host_mode, mtime) = match &src {
        Some(s) => {
            for (name, value) in xattrs_of(s).map_err(|e| Error::io("read xattrs", s, e))? {
                set_xattr_path(dest, &name, &value).map_err(|e| Error::io("set xattr", dest, e))?;
            }
            let m = std::fs::symlink_metadata(s).map_err(|e| Error::io("stat", s, e))?;
            (m.mode() & 0o7777, Some((m.mtime(), m.mtime_nsec())))
        }
        None => {
            let rec = StatOverride {
                uid: 0,
                gid: 0,
                mode: libc::S_IFDIR | 0o755,
                rdev: 0,
            };
            set_xattr_path(dest, &XATTR_NAME.to_owned(), &rec.encode())
                .map_err(|e| Error::io("set xattr", dest, e))?;
            (0o755, None)
        }
    };
    for (name, child) in children {
        let name = OsStr::from_bytes(name);
        rel.push(name);
        let target = dest.join(name);
        let r = match child {
            Node::Dir { .. } => materialize(child, trees, rel, &target),
            Node::Leaf(i) => link(&trees[*i].join(&*rel), &target),
        };
        rel.pop();
        r?;
    }
    std::fs::set_permissions(dest, std::fs::Permissions::from_mode(host_mode))
        .map_err(|e| Error::io("chmod", dest, e))?;
    if let Some((secs, nsecs)) = mtime {
        let t = libc::timespec {
            tv_sec: secs,
            tv_nsec: nsecs,
        };
        let c = cpath(dest).map_err(|e| Error::io("utimes", dest, e))?;
        let times = [t, t];
        // SAFETY: NUL-terminated path and two timespecs.
        let rc = unsafe {
            libc::utimensat(
                libc::AT_FDCWD,
                c.as_ptr(),
                times.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        if rc != 0 {
            return Err(Error::io("utimes", dest, io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// Hard-links layer file `src` (a symlink is linked itself) at `dest`.
fn link(src: &Path, dest: &Path) -> Result<()> {
    let (s, d) = (
        cpath(src).map_err(|e| Error::io("link", src, e))?,
        cpath(dest).map_err(|e| Error::io("link", dest, e))?,
    );
    // SAFETY: NUL-terminated paths; flags 0 does not follow a final
    // symlink of `src`.
    let rc = unsafe { libc::linkat(libc::AT_FDCWD, s.as_ptr(), libc::AT_FDCWD, d.as_ptr(), 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(Error::io(
            &format!("hard-link {} to", src.display()),
            dest,
            io::Error::last_os_error(),
        ))
    }
}
