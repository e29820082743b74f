//! Small file operations of the store: no-replace renames, directory
//! fsync, tree removal.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// Renames `from` to `to`, failing with `EEXIST` when `to` exists (even an
/// empty directory, which plain rename(2) would replace).
pub fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    let (f, t) = (cpath(from)?, cpath(to)?);
    // SAFETY: two valid NUL-terminated paths; AT_FDCWD needs no fd.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            f.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// fsyncs directory `d` so renames inside it are durable.
pub fn sync_dir(d: &Path) {
    if let Err(e) = std::fs::File::open(d).and_then(|f| f.sync_all()) {
        tracing::warn!("fsync {}: {e}", d.display());
    }
}

/// Deletes `p` (a file or a whole tree) if it exists. Store trees keep
/// owner rwx on every directory, so nothing needs a chmod first.
pub fn remove_tree(p: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(p) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
        Ok(m) if m.is_dir() => match std::fs::remove_dir_all(p) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            r => r,
        },
        Ok(_) => match std::fs::remove_file(p) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            r => r,
        },
    }
}

/// Deletes `p` by first renaming it into `trash_dir` (so a crash never
/// leaves a half-deleted tree under its real name), then removing it.
pub fn remove_via(p: &Path, trash: &Path) -> io::Result<()> {
    match rename_noreplace(p, trash) {
        Ok(()) => remove_tree(trash),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}
