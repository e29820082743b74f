//! Where things live under the state root (`MSB_HOME`, default
//! `~/.microsandbox`), and the small file operations the store needs.
//!
//! ```text
//! <home>/db/msb.db               metadata (SQLite)
//! <home>/volumes/<name>/         a volume: the data itself (dir volumes)
//!                                or disk.raw (disk volumes)
//! <home>/volumes/.staging/       volumes being created
//! <home>/volumes/.trash/         volumes being deleted
//! <home>/volumes/.quota/<name>   quota accounting file shared by every
//!                                virtiofsd-msb serving the volume and by
//!                                VolumeFs (outside the served directory)
//! ```
//!
//! Volume names never start with `.`, so the dot directories cannot clash
//! with a volume.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Environment variable naming the state root.
pub const HOME_ENV: &str = "MSB_HOME";

/// The state root: `$MSB_HOME`, else `$HOME/.microsandbox`.
pub fn default_home() -> Result<PathBuf> {
    if let Some(h) = std::env::var_os(HOME_ENV).filter(|h| !h.is_empty()) {
        return Ok(PathBuf::from(h));
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(h) => Ok(PathBuf::from(h).join(".microsandbox")),
        None => Err(Error::invalid(
            "state directory",
            "neither MSB_HOME nor HOME is set",
        )),
    }
}

/// The paths of one state root.
#[derive(Debug, Clone)]
pub(crate) struct Paths {
    pub home: PathBuf,
    pub volumes: PathBuf,
    pub staging: PathBuf,
    pub trash: PathBuf,
    pub quota: PathBuf,
    pub db: PathBuf,
}

impl Paths {
    pub fn new(home: PathBuf) -> Paths {
        let volumes = home.join("volumes");
        Paths {
            staging: volumes.join(".staging"),
            trash: volumes.join(".trash"),
            quota: volumes.join(".quota"),
            db: home.join("db").join("msb.db"),
            volumes,
            home,
        }
    }

    /// Creates every directory (the root and `db/` private to the user).
    pub fn create_dirs(&self) -> Result<()> {
        let private = [&self.home, &self.home.join("db")];
        for d in private {
            mkdir_all(d, 0o700)?;
        }
        for d in [&self.volumes, &self.staging, &self.trash, &self.quota] {
            mkdir_all(d, 0o755)?;
        }
        Ok(())
    }

    /// The directory of volume `name`.
    pub fn volume(&self, name: &str) -> PathBuf {
        self.volumes.join(name)
    }

    /// The quota accounting file of volume `name`.
    pub fn quota_file(&self, name: &str) -> PathBuf {
        self.quota.join(name)
    }

    /// A fresh path in `dir` for `name` (not created).
    pub fn unique_in(dir: &Path, name: &str) -> PathBuf {
        use std::sync::atomic::{AtomicU64, Ordering};
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        dir.join(format!(
            "{name}.{}.{nanos}.{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ))
    }
}

fn mkdir_all(d: &Path, mode: u32) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(d)
        .map_err(|e| Error::io("create directory", d, e))
}

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// Renames `from` to `to`, failing with `EEXIST` when `to` exists (even an
/// empty directory, which plain rename(2) would replace).
pub(crate) fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
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

/// fsyncs directory `d`, making renames inside it durable.
pub(crate) fn sync_dir(d: &Path) {
    if let Err(e) = std::fs::File::open(d).and_then(|f| f.sync_all()) {
        tracing::warn!("fsync {}: {e}", d.display());
    }
}

/// Deletes `p` (file or tree) if it exists; entries vanishing meanwhile (a
/// concurrent cleanup) are fine.
pub(crate) fn remove_tree(p: &Path) -> io::Result<()> {
    let mut last = None;
    for _ in 0..5 {
        let meta = match std::fs::symlink_metadata(p) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let r = if meta.is_dir() {
            std::fs::remove_dir_all(p)
        } else {
            std::fs::remove_file(p)
        };
        match r {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => last = Some(e),
        }
    }
    match last {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Moves `p`, if it exists, into the trash directory (to be deleted
/// outside any lock). Returns whether there was something to move.
pub(crate) fn move_to_trash(paths: &Paths, p: &Path, name: &str) -> Result<bool> {
    match std::fs::symlink_metadata(p) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(Error::io("inspect", p, e)),
        Ok(_) => {}
    }
    let dest = Paths::unique_in(&paths.trash, name);
    rename_noreplace(p, &dest).map_err(|e| Error::io("move to the trash", p, e))?;
    Ok(true)
}

/// Deletes everything in the trash directory.
pub(crate) fn empty_trash(paths: &Paths) {
    let Ok(entries) = std::fs::read_dir(&paths.trash) else {
        return;
    };
    for e in entries.flatten() {
        if let Err(err) = remove_tree(&e.path()) {
            tracing::warn!("could not delete {}: {err}", e.path().display());
        }
    }
}
