//! Disk volumes: a sparse raw image of the requested size, formatted ext4
//! with `mkfs.ext4` from e2fsprogs.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{Error, Result};

/// Environment variable naming the `mkfs.ext4` binary.
pub const MKFS_ENV: &str = "MSB_MKFS_EXT4";

/// Finds `mkfs.ext4`: `$MSB_MKFS_EXT4`, `PATH`, then the sbin directories
/// (often missing from a user's `PATH`).
pub fn find_mkfs() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(MKFS_ENV) {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|d| d.join("mkfs.ext4"))
        .find(|p| p.is_file())
}

/// Creates `image` (sparse, `size_mib` MiB) and formats it ext4, labelled
/// with (the first 16 bytes of) `name`. `mkfs.ext4` dies with this process
/// (`PR_SET_PDEATHSIG`), so a killed create leaves no formatter behind.
pub fn make_ext4(name: &str, image: &Path, size_mib: u32) -> Result<()> {
    let mkfs = find_mkfs().ok_or_else(|| Error::Mkfs {
        name: name.to_string(),
        reason: format!(
            "mkfs.ext4 not found on PATH or in /usr/sbin (install e2fsprogs, or set {MKFS_ENV})"
        ),
    })?;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(image)
        .map_err(|e| Error::io("create disk image", image, e))?;
    file.set_len(u64::from(size_mib) << 20)
        .map_err(|e| Error::io("size disk image", image, e))?;
    drop(file);
    let label: String = name.chars().take(16).collect();
    let mut cmd = Command::new(&mkfs);
    // The image is brand new and sparse, so its unwritten blocks read as
    // zeros: mkfs need not zero the journal (64 MiB of a 4 GiB disk) and
    // the file stays a few MiB until the guest writes.
    cmd.args(["-q", "-F", "-t", "ext4", "-m", "0", "-L", &label])
        .args(["-E", "lazy_journal_init=1"])
        .arg(image)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: the closure runs between fork and exec and only calls prctl,
    // which is async-signal-safe and takes plain integers.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().map_err(|e| Error::Mkfs {
        name: name.to_string(),
        reason: format!("cannot run {}: {e}", mkfs.display()),
    })?;
    if !out.status.success() {
        return Err(Error::Mkfs {
            name: name.to_string(),
            reason: format!(
                "{} failed ({}): {}{}",
                mkfs.display(),
                out.status,
                String::from_utf8_lossy(&out.stdout).trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    // Pinned as raw from the start (see `disk_image`): whatever its guest
    // writes, it is never taken for another format.
    if let Err(e) = crate::disk_image::record_raw(image) {
        tracing::debug!("{}: no raw record ({e})", image.display());
    }
    std::fs::File::open(image)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io("sync disk image", image, e))
}
