//! The server's listening socket: a unix socket it binds itself (mode
//! 0600, a stale socket left by a killed server replaced, a live one
//! refused), or one passed by socket activation (systemd's protocol:
//! `LISTEN_PID` is this process, `LISTEN_FDS=1`, the socket is fd 3).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use super::SOCKET_NAME;

/// First fd of socket activation.
const LISTEN_FDS_START: i32 = 3;

/// A listening socket, before the runtime starts.
#[derive(Debug)]
pub struct Bound {
    listener: UnixListener,
    /// The path this server created (removed when it stops), with the
    /// inode it had, so a newer server's socket is never removed.
    owned: Option<(PathBuf, u64)>,
    described: String,
}

impl Bound {
    /// The activated socket if there is one, else `socket` (default
    /// `<home>/msb.sock`) bound now. Call before any thread is started:
    /// the bind runs under a 0177 umask so the socket is never reachable
    /// by others, not even for an instant.
    pub fn take(socket: Option<&Path>, home: &Path) -> Result<Bound, String> {
        if let Some(listener) = activated()? {
            return Ok(Bound {
                listener,
                owned: None,
                described: "the socket passed by socket activation (fd 3)".into(),
            });
        }
        let path = socket
            .map(Path::to_path_buf)
            .unwrap_or_else(|| home.join(SOCKET_NAME));
        let path = std::path::absolute(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        clear_stale(&path)?;
        // SAFETY: umask(2) only swaps the process's file mode mask; no other
        // thread exists yet to create files meanwhile.
        let old = unsafe { libc::umask(0o177) };
        let bound = UnixListener::bind(&path);
        // SAFETY: as above, restoring the previous mask.
        unsafe { libc::umask(old) };
        let listener = bound.map_err(|e| format!("bind {}: {e}", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("chmod {}: {e}", path.display()))?;
        let ino = std::fs::symlink_metadata(&path)
            .map(|m| m.ino())
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Bound {
            listener,
            described: path.display().to_string(),
            owned: Some((path, ino)),
        })
    }

    /// The socket for tokio (made non-blocking).
    pub fn tokio_listener(&self) -> Result<tokio::net::UnixListener, String> {
        let l = self
            .listener
            .try_clone()
            .map_err(|e| format!("listening socket: {e}"))?;
        l.set_nonblocking(true)
            .map_err(|e| format!("listening socket: {e}"))?;
        tokio::net::UnixListener::from_std(l).map_err(|e| format!("listening socket: {e}"))
    }

    /// Where it listens, for the log.
    pub fn describe(&self) -> &str {
        &self.described
    }

    /// Removes the socket path this server created, if it is still ours.
    pub fn remove_path(&self) {
        if let Some((path, ino)) = &self.owned {
            if std::fs::symlink_metadata(path).is_ok_and(|m| m.ino() == *ino) {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

/// The socket passed by socket activation, if any; the variables are
/// cleared so the sandboxes' supervisors do not see them.
fn activated() -> Result<Option<UnixListener>, String> {
    let pid = std::env::var("LISTEN_PID").ok();
    let fds = std::env::var("LISTEN_FDS").ok();
    for var in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        std::env::remove_var(var);
    }
    let (Some(pid), Some(fds)) = (pid, fds) else {
        return Ok(None);
    };
    if pid.trim() != std::process::id().to_string() {
        return Ok(None);
    }
    match fds.trim() {
        "1" => {}
        n => {
            return Err(format!(
                "socket activation passed LISTEN_FDS={n}; msb serve takes exactly one socket"
            ))
        }
    }
    let fd = LISTEN_FDS_START;
    if !is_listening_unix_socket(fd) {
        return Err("socket activation: fd 3 is not a listening unix stream socket".into());
    }
    // SAFETY: fd 3 was handed to this process by its parent (LISTEN_PID is
    // our pid) for us to own, and was just checked to be a socket;
    // nothing else in this process uses it.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // Keep it away from the supervisors this server starts.
    // SAFETY: fcntl(2) on a descriptor we own.
    if unsafe { libc::fcntl(owned.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
        return Err(format!(
            "socket activation: fd 3: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(Some(UnixListener::from(owned)))
}

/// True when `fd` is a unix stream socket in the listening state.
fn is_listening_unix_socket(fd: i32) -> bool {
    let opt = |name: i32| -> Option<i32> {
        let mut value: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into `value`, which
        // we own; a bad fd only makes it fail.
        let r = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                name,
                (&mut value as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        (r == 0).then_some(value)
    };
    opt(libc::SO_DOMAIN) == Some(libc::AF_UNIX)
        && opt(libc::SO_TYPE) == Some(libc::SOCK_STREAM)
        && opt(libc::SO_ACCEPTCONN) == Some(1)
}

/// Removes a socket a killed server left at `path`; refuses a live one
/// (another server answers there) and anything that is not a socket.
fn clear_stale(path: &Path) -> Result<(), String> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    if !meta.file_type().is_socket() {
        return Err(format!(
            "{} exists and is not a socket; remove it or pick another --socket",
            path.display()
        ));
    }
    if UnixStream::connect(path).is_ok() {
        return Err(format!(
            "another server is listening on {}; stop it first or pick another --socket",
            path.display()
        ));
    }
    std::fs::remove_file(path).map_err(|e| format!("remove stale {}: {e}", path.display()))
}
