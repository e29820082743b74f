//! `msb cp`: files and trees between the host and a running sandbox,
//! streamed as tar through the agent (modes, symlinks and mtimes kept).
//!
//! As with `docker cp`: copying to an existing directory (or a path ending
//! in `/`) puts the source inside it under its own name; otherwise the
//! destination path names the copy.

use std::path::{Path, PathBuf};

use guest_init::protocol::{FileKind, FsRequest};

use crate::sandbox::client::fs_request;
use crate::sandbox::{lifecycle, Error, Result};

/// `NAME:/guest/path` → (name, path); host paths (starting with `/` or `.`,
/// or without a `:`) → `None`.
fn remote(spec: &str) -> Option<(&str, &str)> {
    if spec.starts_with('/') || spec.starts_with('.') {
        return None;
    }
    let (name, path) = spec.split_once(':')?;
    Some((name, path))
}

/// Copies `src` to `dst`; exactly one of them is `NAME:PATH`.
pub fn copy(home: &Path, src: &str, dst: &str) -> Result<()> {
    match (remote(src), remote(dst)) {
        (None, Some((name, path))) => copy_in(home, name, Path::new(src), path),
        (Some((name, path)), None) => copy_out(home, name, path, Path::new(dst)),
        _ => Err(Error::Invalid(format!(
            "msb cp {src:?} {dst:?}: exactly one of SRC and DST must be NAME:/guest/path"
        ))),
    }
}

fn guest_path(path: &str) -> Result<&str> {
    if path.starts_with('/') {
        Ok(path)
    } else {
        Err(Error::Invalid(format!(
            "guest path {path:?} must be absolute"
        )))
    }
}

/// The last component of a path, for naming the copy.
fn base_name(path: &str) -> Result<String> {
    Path::new(path.trim_end_matches('/'))
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| Error::Invalid(format!("{path:?} has no file name to copy")))
}

fn copy_in(home: &Path, name: &str, src: &Path, dst: &str) -> Result<()> {
    let dst = guest_path(dst)?;
    let meta = std::fs::symlink_metadata(src).map_err(|e| Error::io(src, e))?;
    let socket = lifecycle::control_socket(home, name)?;
    let into_dir = dst.ends_with('/')
        || fs_request(
            &socket,
            name,
            &FsRequest::Stat { path: dst.into() },
            None,
            None,
        )
        .ok()
        .and_then(|r| r.stat)
        .is_some_and(|s| s.kind == FileKind::Dir);
    let (dest_dir, entry) = if into_dir {
        (dst.to_string(), base_name(&src.to_string_lossy())?)
    } else {
        let parent = Path::new(dst)
            .parent()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_else(|| "/".into());
        (parent, base_name(dst)?)
    };
    let (mut reader, writer) = std::io::pipe().map_err(|e| Error::io("pipe", e))?;
    let src_owned = src.to_path_buf();
    let packer = std::thread::spawn(move || -> std::io::Result<()> {
        let mut tar = tar::Builder::new(writer);
        tar.follow_symlinks(false);
        if meta.is_dir() {
            tar.append_dir_all(&entry, &src_owned)?;
        } else {
            tar.append_path_with_name(&src_owned, &entry)?;
        }
        tar.into_inner()?;
        Ok(())
    });
    let req = FsRequest::CopyIn { dest: dest_dir };
    let sent = fs_request(&socket, name, &req, Some(&mut reader), None);
    drop(reader);
    let packed = packer
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("tar writer panicked")));
    sent?;
    packed.map_err(|e| Error::io(src, e))
}

fn copy_out(home: &Path, name: &str, src: &str, dst: &Path) -> Result<()> {
    let src = guest_path(src)?;
    let socket = lifecycle::control_socket(home, name)?;
    let entry = base_name(src)?;
    let into_dir = dst.is_dir();
    // Unpack into a fresh directory beside the destination, then move the
    // one entry into place: a failed copy leaves nothing half-written.
    let parent = if into_dir {
        dst.to_path_buf()
    } else {
        dst.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf()
    };
    let staging = tempfile::Builder::new()
        .prefix(".msb-cp-")
        .tempdir_in(&parent)
        .map_err(|e| Error::io(&parent, e))?;
    let (reader, mut writer) = std::io::pipe().map_err(|e| Error::io("pipe", e))?;
    let into = staging.path().to_path_buf();
    let unpacker = std::thread::spawn(move || -> std::io::Result<()> {
        let mut tar = tar::Archive::new(reader);
        tar.set_preserve_permissions(true);
        tar.set_preserve_mtime(true);
        tar.set_overwrite(false);
        // `unpack` refuses entries that would land outside `into`.
        tar.unpack(&into)
    });
    let req = FsRequest::CopyOut { path: src.into() };
    let got = fs_request(&socket, name, &req, None, Some(&mut writer));
    drop(writer);
    let unpacked = unpacker
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("tar reader panicked")));
    got?;
    unpacked.map_err(|e| Error::io(staging.path(), e))?;
    let target: PathBuf = if into_dir {
        dst.join(&entry)
    } else {
        dst.to_path_buf()
    };
    std::fs::rename(staging.path().join(&entry), &target).map_err(|e| Error::io(&target, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_specs() {
        assert_eq!(remote("dev:/etc/x"), Some(("dev", "/etc/x")));
        assert_eq!(remote("./a:b"), None);
        assert_eq!(remote("/abs/path"), None);
        assert_eq!(remote("plain"), None);
        assert_eq!(base_name("/a/b/").unwrap(), "b");
        assert!(base_name("/").is_err());
    }
}
