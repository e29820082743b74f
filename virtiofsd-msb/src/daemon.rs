//! Process-level setup and the serve loop: logging, rlimits, signals, socket.
//!
//! [`run`] is what `main` calls: it checks the flags, prepares the process
//! (log output, RLIMIT_NOFILE, a signal thread), validates the shared
//! directory and the endpoint, builds the filesystem and serves it until the
//! frontend disconnects, the mount goes away, or SIGTERM/SIGINT/SIGHUP comes.
//! Every stop path removes the socket file we created and returns `Ok`.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::sys::resource::{getrlimit, setrlimit, Resource};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::socket::{
    getsockname, getsockopt, sockopt, AddressFamily, SockType, SockaddrLike, SockaddrStorage,
};
use nix::unistd::{Gid, Group};

use crate::cli::{
    capabilities_json, Cli, Config, LogLevel, Mode, UsageError, DEFAULT_MAX_INODE_FDS,
};
use crate::filesystem::{ConfinedFs, FsConfig};
use crate::sandbox::SandboxMode;
use crate::seccomp::SeccompMode;
use crate::transport::fusedev::{FuseError, FuseMount, DEFAULT_FUSE_THREADS};
use crate::transport::vhost_user::{self, VhostUserError, VhostUserOptions};
use crate::walls;

/// RLIMIT_NOFILE the daemon aims for when `--rlimit-nofile` is not given
/// (further capped by `fs.nr_open`).
pub const DEFAULT_RLIMIT_NOFILE: u64 = 1_000_000;

/// Why the daemon could not start or stopped with an error. The `Display`
/// form names the thing that was wrong, then why.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// A flag combination clap cannot reject by itself.
    #[error("{0}")]
    Usage(#[from] UsageError),
    /// The shared directory is missing or unusable.
    #[error("shared directory \"{}\": {reason}", path.display())]
    SharedDir {
        /// The path given.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Another process listens on the socket path.
    #[error("socket path \"{}\": in use by another listener", path.display())]
    SocketBusy {
        /// The path given.
        path: PathBuf,
    },
    /// The socket could not be created.
    #[error("socket path \"{}\": {reason}", path.display())]
    Socket {
        /// The path given.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// `--fd` is not a listening unix socket.
    #[error("--fd {fd}: {reason}")]
    Fd {
        /// The fd given.
        fd: RawFd,
        /// Why.
        reason: String,
    },
    /// `--socket-group` cannot be applied.
    #[error("--socket-group {group:?}: {reason}")]
    SocketGroup {
        /// The group given.
        group: String,
        /// Why.
        reason: String,
    },
    /// RLIMIT_NOFILE cannot be set as asked.
    #[error("--rlimit-nofile {requested}: {reason}")]
    Rlimit {
        /// The limit asked for.
        requested: u64,
        /// Why.
        reason: String,
    },
    /// `--max-inode-fds` does not fit under RLIMIT_NOFILE.
    #[error("--max-inode-fds {requested}: {reason}")]
    MaxInodeFds {
        /// The bound asked for.
        requested: usize,
        /// Why.
        reason: String,
    },
    /// The filesystem could not be set up on the shared directory.
    #[error("shared directory \"{}\": {source}", path.display())]
    Filesystem {
        /// The shared directory.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The vhost-user transport failed.
    #[error(transparent)]
    VhostUser(#[from] VhostUserError),
    /// The FUSE transport failed.
    #[error(transparent)]
    Fuse(#[from] FuseError),
    /// Signal handling could not be set up.
    #[error("signal handling: {0}")]
    Signals(String),
    /// The sandbox could not be entered.
    #[error(transparent)]
    Sandbox(#[from] crate::sandbox::SandboxError),
    /// Privileges could not be dropped.
    #[error("dropping privileges: {0}")]
    Privileges(String),
}

impl DaemonError {
    /// Process exit code for this error: 2 for usage errors, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            DaemonError::Usage(_) => 2,
            _ => 1,
        }
    }
}

/// Runs the daemon as the flags say; returns when it has stopped cleanly.
pub fn run(cli: &Cli) -> Result<(), DaemonError> {
    if cli.print_capabilities {
        println!("{}", capabilities_json());
        return Ok(());
    }
    let config = cli.resolve()?;
    init_logging(config.log_level);
    // Before any thread exists, so every thread inherits the blocked mask
    // and only the signal thread sees these signals.
    let signals = block_stop_signals()?;
    let nofile = raise_rlimit_nofile(config.rlimit_nofile)?;
    let max_inode_fds = inode_fd_bound(config.max_inode_fds, nofile)?;
    let shared_dir = validate_shared_dir(&config.shared_dir)?;
    let fs_config = FsConfig {
        shared_dir: shared_dir.clone(),
        readonly: config.readonly,
        cache: config.cache,
        xattr: config.xattr,
        max_inode_fds,
        stat_virtualization: config.stat_virtualization,
        host_permissions: config.host_permissions,
        quota: config.quota.clone(),
        single_file: config.shared_file.clone(),
        copy_threads: config.copy_threads,
    };
    tracing::info!(
        shared_dir = %shared_dir.display(),
        shared_file = ?config.shared_file,
        readonly = config.readonly,
        cache = ?config.cache,
        stat_virtualization = config.stat_virtualization.as_str(),
        host_permissions = config.host_permissions.as_str(),
        quota_bytes = config.quota.as_ref().map(|q| q.limit_bytes),
        max_inode_fds,
        rlimit_nofile = nofile,
        "starting"
    );
    match &config.mode {
        Mode::FuseMount(dir) => run_fuse(&config, dir, fs_config, signals),
        Mode::SocketPath(path) => {
            // Bind before building the filesystem: it clears the umask.
            let (listener, socket) = SocketFile::create(path, config.socket_group.as_deref())?;
            let socket = Arc::new(socket);
            // Inside a sandbox the path is out of reach: the monitor outside
            // removes the socket once the server has exited.
            let here = (config.sandbox == SandboxMode::None).then(|| socket.clone());
            let result = build_fs(fs_config).and_then(|fs| {
                let s = socket.clone();
                let fs = walls::enter(&config, fs, false, move || s.remove())?;
                let s = here.clone();
                spawn_signal_thread(signals, move || {
                    if let Some(s) = s {
                        s.remove();
                    }
                    std::process::exit(0)
                })?;
                serve_vhost_user(&config, fs, listener)
            });
            if let Some(s) = here {
                s.remove();
            }
            result
        }
        Mode::Fd(fd) => {
            let listener = listener_from_fd(*fd)?;
            let fs = walls::enter(&config, build_fs(fs_config)?, false, || {})?;
            spawn_signal_thread(signals, || std::process::exit(0))?;
            serve_vhost_user(&config, fs, listener)
        }
    }
}

fn build_fs(config: FsConfig) -> Result<ConfinedFs, DaemonError> {
    let path = config.shared_dir.clone();
    ConfinedFs::new(config).map_err(|source| DaemonError::Filesystem { path, source })
}

fn serve_vhost_user(
    config: &Config,
    fs: Arc<ConfinedFs>,
    listener: UnixListener,
) -> Result<(), DaemonError> {
    let opts = VhostUserOptions {
        tag: config.tag.clone(),
        thread_pool_size: config.thread_pool_size,
        poll_window: config.poll_window,
    };
    vhost_user::serve(fs, listener, &opts)?;
    tracing::info!("stopped");
    Ok(())
}

fn run_fuse(
    config: &Config,
    dir: &Path,
    fs_config: FsConfig,
    signals: SigSet,
) -> Result<(), DaemonError> {
    if config.tag.is_some() {
        tracing::warn!("--tag has no effect with --fuse-mount");
    }
    let fsname = fs_config.shared_dir.to_string_lossy().into_owned();
    let readonly = fs_config.readonly;
    let fs = build_fs(fs_config)?;
    let mut mount = FuseMount::mount(dir, &fsname, readonly)?;
    let mountpoint = dir.to_path_buf();
    // Unmounting is the monitor's job whenever there is one: inside the
    // sandbox the mount is out of reach, and the system call filter
    // forbids umount2 anyway.
    let monitor = config.seccomp != SeccompMode::None;
    let fs = walls::enter(config, fs, monitor, move || {
        walls::unmount_host(&mountpoint)
    })?;
    if monitor || config.sandbox != SandboxMode::None {
        mount.leave_mounted();
    }
    let stopper = mount.stopper();
    spawn_signal_thread(signals, move || stopper.stop())?;
    let threads = match config.thread_pool_size {
        0 => DEFAULT_FUSE_THREADS,
        n => n,
    };
    mount.serve(fs, threads)?;
    tracing::info!("stopped");
    Ok(())
}

/// Sends log output to stderr: `--log-level` if given, else `RUST_LOG`, else
/// `info`.
pub fn init_logging(level: Option<LogLevel>) {
    use tracing_subscriber::EnvFilter;
    let filter = match level {
        Some(l) => EnvFilter::new(l.as_filter()),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    // Fails only if a subscriber is already installed (e.g. by a host
    // program using this crate as a library); keep that one.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_ansi(io::IsTerminal::is_terminal(&io::stderr()))
        .try_init();
}

fn stop_signals() -> SigSet {
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    set.add(Signal::SIGHUP);
    set
}

fn block_stop_signals() -> Result<SigSet, DaemonError> {
    let set = stop_signals();
    set.thread_block()
        .map_err(|e| DaemonError::Signals(format!("cannot block signals: {e}")))?;
    Ok(set)
}

/// Starts the thread that waits for SIGTERM/SIGINT/SIGHUP: the first runs
/// `on_stop`; a second one while stopping ends the process at once.
fn spawn_signal_thread<S>(set: SigSet, on_stop: S) -> Result<(), DaemonError>
where
    S: FnOnce() + Send + 'static,
{
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut on_stop = Some(on_stop);
            loop {
                match set.wait() {
                    Ok(sig) => match on_stop.take() {
                        Some(stop) => {
                            tracing::info!("received {sig}, stopping");
                            stop();
                        }
                        None => {
                            tracing::warn!("received {sig} again, exiting now");
                            std::process::exit(0);
                        }
                    },
                    Err(e) => {
                        tracing::error!("waiting for signals: {e}");
                        return;
                    }
                }
            }
        })
        .map(|_| ())
        .map_err(|e| DaemonError::Signals(format!("cannot start the signal thread: {e}")))
}

fn read_nr_open() -> Option<u64> {
    std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Raises RLIMIT_NOFILE: to `requested` (`Some(0)`: leave it), by default
/// to min(1,000,000, fs.nr_open), falling back to the hard limit when we may
/// not raise that. Returns the soft limit in force afterwards.
pub fn raise_rlimit_nofile(requested: Option<u64>) -> Result<u64, DaemonError> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(|e| DaemonError::Rlimit {
        requested: requested.unwrap_or(0),
        reason: format!("getrlimit: {e}"),
    })?;
    let (target, explicit) = match requested {
        Some(0) => return Ok(soft),
        Some(n) => (n, true),
        None => (
            DEFAULT_RLIMIT_NOFILE.min(read_nr_open().unwrap_or(DEFAULT_RLIMIT_NOFILE)),
            false,
        ),
    };
    if !explicit && soft >= target {
        return Ok(soft);
    }
    match setrlimit(Resource::RLIMIT_NOFILE, target, hard.max(target)) {
        Ok(()) => Ok(target),
        Err(e) if explicit => Err(DaemonError::Rlimit {
            requested: target,
            reason: format!("setrlimit: {e} (hard limit {hard})"),
        }),
        Err(e) => {
            let fallback = target.min(hard);
            tracing::debug!("cannot raise RLIMIT_NOFILE to {target} ({e}); using {fallback}");
            if fallback > soft {
                setrlimit(Resource::RLIMIT_NOFILE, fallback, hard).map_err(|e| {
                    DaemonError::Rlimit {
                        requested: fallback,
                        reason: format!("setrlimit: {e}"),
                    }
                })?;
                Ok(fallback)
            } else {
                Ok(soft)
            }
        }
    }
}

/// The inode fd bound to use under a soft RLIMIT_NOFILE of `nofile`.
///
/// Inode fds and open file handles are bounded separately by the same
/// number, and lock-owner descriptions by a quarter of it, so 2.25 times
/// the bound plus a reserve for the daemon's own fds (sockets, eventfds,
/// guest memory) must fit. An explicit bound that does
/// not fit is an error; the default is lowered to fit.
pub fn inode_fd_bound(requested: Option<usize>, nofile: u64) -> Result<usize, DaemonError> {
    let nofile = usize::try_from(nofile).unwrap_or(usize::MAX);
    let reserve = (nofile / 4).min(1024);
    let fits = nofile.saturating_sub(reserve) / 9 * 4;
    match requested {
        Some(n) if n <= fits => Ok(n),
        Some(n) => Err(DaemonError::MaxInodeFds {
            requested: n,
            reason: format!(
                "does not fit under RLIMIT_NOFILE {nofile} (at most {fits}; raise --rlimit-nofile)"
            ),
        }),
        None if fits >= 16 => Ok(DEFAULT_MAX_INODE_FDS.min(fits)),
        None => Err(DaemonError::MaxInodeFds {
            requested: DEFAULT_MAX_INODE_FDS,
            reason: format!("RLIMIT_NOFILE {nofile} is too low to serve files"),
        }),
    }
}

/// Checks that `path` is an existing directory; returns its canonical form.
pub fn validate_shared_dir(path: &Path) -> Result<PathBuf, DaemonError> {
    let err = |reason: String| DaemonError::SharedDir {
        path: path.to_path_buf(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| err(io_reason(&e)))?;
    if !meta.is_dir() {
        return Err(err("not a directory".into()));
    }
    path.canonicalize().map_err(|e| err(io_reason(&e)))
}

/// An `io::Error` as a short reason, without Rust's "(os error N)" suffix.
fn io_reason(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => nix::errno::Errno::from_raw(n).desc().to_string(),
        None => e.to_string(),
    }
}

/// A socket file this process created, removed when the daemon stops.
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
    ctime: (i64, i64),
}

impl SocketFile {
    /// Binds a listening socket at `path`. A stale socket file (nobody
    /// listening) is replaced; a live listener is [`DaemonError::SocketBusy`];
    /// anything else at `path` is left alone and refused.
    pub fn create(path: &Path, group: Option<&str>) -> Result<(UnixListener, Self), DaemonError> {
        let err = |reason: String| DaemonError::Socket {
            path: path.to_path_buf(),
            reason,
        };
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_socket() => {
                match is_listening(path) {
                    Ok(true) => {
                        return Err(DaemonError::SocketBusy {
                            path: path.to_path_buf(),
                        })
                    }
                    Ok(false) => {}
                    Err(e) => {
                        return Err(err(format!(
                            "exists, and cannot tell whether it is in use ({e}); remove it"
                        )))
                    }
                }
                tracing::info!("replacing stale socket {}", path.display());
                std::fs::remove_file(path).map_err(|e| err(io_reason(&e)))?;
            }
            Ok(_) => return Err(err("exists and is not a socket".into())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(err(io_reason(&e))),
        }
        let listener = UnixListener::bind(path).map_err(|e| match e.raw_os_error() {
            Some(libc::EADDRINUSE) => DaemonError::SocketBusy {
                path: path.to_path_buf(),
            },
            _ => err(io_reason(&e)),
        })?;
        let meta = std::fs::symlink_metadata(path).map_err(|e| err(io_reason(&e)))?;
        let mut socket = SocketFile {
            path: path.to_path_buf(),
            dev: meta.dev(),
            ino: meta.ino(),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        };
        if let Some(group) = group {
            let result = socket.set_group(group, &meta);
            // chown/chmod moved the change time; remember the new one.
            if let Ok(m) = std::fs::symlink_metadata(path) {
                if (m.dev(), m.ino()) == (socket.dev, socket.ino) {
                    socket.ctime = (m.ctime(), m.ctime_nsec());
                }
            }
            if let Err(e) = result {
                socket.remove();
                return Err(e);
            }
        }
        tracing::info!("listening on {}", path.display());
        Ok((listener, socket))
    }

    fn set_group(&self, group: &str, meta: &std::fs::Metadata) -> Result<(), DaemonError> {
        let err = |reason: String| DaemonError::SocketGroup {
            group: group.to_string(),
            reason,
        };
        let gid = match group.parse::<u32>() {
            Ok(n) => Gid::from_raw(n),
            Err(_) => match Group::from_name(group) {
                Ok(Some(g)) => g.gid,
                Ok(None) => return Err(err("no such group".into())),
                Err(e) => return Err(err(e.desc().to_string())),
            },
        };
        nix::unistd::chown(&self.path, None, Some(gid)).map_err(|e| err(e.desc().to_string()))?;
        // The group needs read and write permission to connect.
        let mode = (meta.permissions().mode() & 0o777) | 0o060;
        std::fs::set_permissions(&self.path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| err(io_reason(&e)))
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the socket file if it is still the one we created.
    pub fn remove(&self) {
        match std::fs::symlink_metadata(&self.path) {
            // Inode numbers get reused at once on some filesystems: the
            // change time tells a replacement apart.
            Ok(m)
                if m.dev() == self.dev
                    && m.ino() == self.ino
                    && (m.ctime(), m.ctime_nsec()) == self.ctime =>
            {
                if let Err(e) = std::fs::remove_file(&self.path) {
                    tracing::warn!("cannot remove {}: {e}", self.path.display());
                }
            }
            _ => {}
        }
    }
}

/// True if a listening unix socket is bound to `path` (per /proc/net/unix,
/// which lists bound paths without our having to connect: a probe connection
/// would be taken by a vhost-user backend as its frontend).
pub fn is_listening(path: &Path) -> io::Result<bool> {
    let table = std::fs::read_to_string("/proc/net/unix")?;
    let abs = absolute(path);
    let found = listening_paths(&table).any(|p| Path::new(p) == path || Path::new(p) == abs);
    Ok(found)
}

/// Paths of listening sockets in a /proc/net/unix table.
fn listening_paths(table: &str) -> impl Iterator<Item = &str> {
    const SO_ACCEPTCON: u32 = 0x0001_0000;
    table.lines().skip(1).filter_map(|line| {
        // Num RefCount Protocol Flags Type St Inode Path
        let mut rest = line.trim_start();
        let mut fields = Vec::with_capacity(7);
        for _ in 0..7 {
            let end = rest.find(' ')?;
            fields.push(&rest[..end]);
            rest = rest[end..].trim_start();
        }
        let flags = u32::from_str_radix(fields[3], 16).ok()?;
        (flags & SO_ACCEPTCON != 0 && !rest.is_empty()).then_some(rest)
    })
}

fn absolute(path: &Path) -> PathBuf {
    let joined = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(path))
            .unwrap_or_else(|_| path.to_path_buf())
    };
    match (joined.parent(), joined.file_name()) {
        (Some(parent), Some(name)) => parent
            .canonicalize()
            .map(|p| p.join(name))
            .unwrap_or(joined),
        _ => joined,
    }
}

/// Takes over `fd` as the vhost-user listener after checking that it is an
/// open, listening, unix stream socket.
pub fn listener_from_fd(fd: RawFd) -> Result<UnixListener, DaemonError> {
    let err = |reason: &str| DaemonError::Fd {
        fd,
        reason: reason.to_string(),
    };
    if fd < 0 {
        return Err(err("not a file descriptor"));
    }
    // SAFETY: F_GETFD only reads the descriptor flags; an fd that is not
    // open yields EBADF and touches nothing.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(err("not an open file descriptor"));
    }
    // SAFETY: `fd` is open (checked just above) and stays open for the
    // lifetime of this borrow, which ends within this function.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let st = nix::sys::stat::fstat(borrowed).map_err(|e| err(e.desc()))?;
    if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return Err(err("not a socket"));
    }
    let addr: SockaddrStorage = getsockname(fd).map_err(|e| err(e.desc()))?;
    if addr.family() != Some(AddressFamily::Unix) {
        return Err(err("not a unix socket"));
    }
    match getsockopt(&borrowed, sockopt::SockType) {
        Ok(SockType::Stream) => {}
        Ok(_) => return Err(err("not a stream socket")),
        Err(e) => return Err(err(e.desc())),
    }
    match getsockopt(&borrowed, sockopt::AcceptConn) {
        Ok(true) => {}
        Ok(false) => return Err(err("socket is not listening")),
        Err(e) => return Err(err(e.desc())),
    }
    // SAFETY: the caller handed us `fd` (the --fd contract) and it is an
    // open listening unix socket; from here on the listener owns it.
    let listener = unsafe { UnixListener::from_raw_fd(fd) };
    // SAFETY: setting FD_CLOEXEC on an fd we own changes only its flags.
    unsafe { libc::fcntl(listener.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;

    #[test]
    fn inode_fd_bound_fits_under_the_rlimit() {
        assert_eq!(
            inode_fd_bound(None, 1_000_000).unwrap(),
            DEFAULT_MAX_INODE_FDS
        );
        let low = inode_fd_bound(None, 1024).unwrap();
        assert!(low * 9 / 4 + 256 <= 1024, "{low}");
        assert!(low >= 16);
        assert_eq!(inode_fd_bound(Some(100), 1024).unwrap(), 100);
        let e = inode_fd_bound(Some(10_000), 1024).unwrap_err();
        assert!(e.to_string().starts_with("--max-inode-fds 10000: "), "{e}");
        assert!(inode_fd_bound(None, 10).is_err());
    }

    #[test]
    fn shared_dir_errors_name_the_path() {
        let e = validate_shared_dir(Path::new("/nonexistent/share")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "shared directory \"/nonexistent/share\": No such file or directory"
        );
        let f = tempfile::NamedTempFile::new().unwrap();
        let e = validate_shared_dir(f.path()).unwrap_err();
        assert!(e.to_string().ends_with("not a directory"), "{e}");
        let d = tempfile::tempdir().unwrap();
        assert!(validate_shared_dir(d.path()).unwrap().is_absolute());
    }

    #[test]
    fn socket_busy_stale_and_foreign_files() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("vfs.sock");
        let (live, sock) = SocketFile::create(&path, None).unwrap();
        assert!(is_listening(&path).unwrap());
        // A live listener: refused, and its socket left in place.
        let e = SocketFile::create(&path, None).unwrap_err();
        assert!(matches!(e, DaemonError::SocketBusy { .. }), "{e}");
        assert!(e.to_string().contains(path.to_str().unwrap()));
        assert!(path.exists());
        // Stale (listener gone, file left): replaced.
        drop(live);
        std::mem::forget(sock);
        assert!(!is_listening(&path).unwrap());
        let (_l, sock) = SocketFile::create(&path, None).unwrap();
        sock.remove();
        assert!(!path.exists());
        // A regular file is never deleted.
        std::fs::write(&path, b"data").unwrap();
        let e = SocketFile::create(&path, None).unwrap_err();
        assert!(e.to_string().contains("not a socket"), "{e}");
        assert_eq!(std::fs::read(&path).unwrap(), b"data");
        // A missing parent directory.
        let e = SocketFile::create(&d.path().join("no/dir/s.sock"), None).unwrap_err();
        assert!(e.to_string().contains("No such file"), "{e}");
    }

    #[test]
    fn remove_leaves_a_replaced_socket_alone() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("s.sock");
        let (l, sock) = SocketFile::create(&path, None).unwrap();
        drop(l);
        std::fs::remove_file(&path).unwrap();
        let _other = UnixListener::bind(&path).unwrap();
        sock.remove();
        assert!(path.exists(), "someone else's socket must stay");
    }

    #[test]
    fn socket_group_by_number_and_unknown_name() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("g.sock");
        let gid = nix::unistd::getegid().as_raw();
        let (_l, sock) = SocketFile::create(&path, Some(&gid.to_string())).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.gid(), gid);
        assert_eq!(meta.permissions().mode() & 0o060, 0o060);
        sock.remove();
        let e = SocketFile::create(&path, Some("no-such-group-xyz")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "--socket-group \"no-such-group-xyz\": no such group"
        );
        assert!(
            !path.exists(),
            "a failed setup must not leave the socket behind"
        );
    }

    #[test]
    fn fd_validation() {
        let e = listener_from_fd(987_654).unwrap_err();
        assert_eq!(e.to_string(), "--fd 987654: not an open file descriptor");
        let f = tempfile::tempfile().unwrap();
        let e = listener_from_fd(f.as_raw_fd()).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("--fd {}: not a socket", f.as_raw_fd())
        );
        let (a, _b) = UnixDatagram::pair().unwrap();
        let e = listener_from_fd(a.as_raw_fd()).unwrap_err();
        assert!(e.to_string().ends_with("not a stream socket"), "{e}");
        let (s, _t) = std::os::unix::net::UnixStream::pair().unwrap();
        let e = listener_from_fd(s.as_raw_fd()).unwrap_err();
        assert!(e.to_string().ends_with("not listening"), "{e}");
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let e = listener_from_fd(tcp.as_raw_fd()).unwrap_err();
        assert!(e.to_string().ends_with("not a unix socket"), "{e}");

        let d = tempfile::tempdir().unwrap();
        let l = UnixListener::bind(d.path().join("ok.sock")).unwrap();
        let fd = std::os::fd::IntoRawFd::into_raw_fd(l);
        let l = listener_from_fd(fd).unwrap();
        assert_eq!(l.as_raw_fd(), fd);
    }

    #[test]
    fn parses_proc_net_unix() {
        let table = "Num       RefCount Protocol Flags    Type St Inode Path\n\
            0000000000000000: 00000002 00000000 00010000 0001 01 12345 /run/a b.sock\n\
            0000000000000000: 00000003 00000000 00000000 0001 03 12346 /run/conn.sock\n\
            0000000000000000: 00000002 00000000 00010000 0001 01 12347\n\
            0000000000000000: 00000002 00000000 00010000 0001 01 12348 @abstract\n";
        let v: Vec<&str> = listening_paths(table).collect();
        assert_eq!(v, vec!["/run/a b.sock", "@abstract"]);
    }

    #[test]
    fn rlimit_zero_leaves_it() {
        let (soft, _) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        assert_eq!(raise_rlimit_nofile(Some(0)).unwrap(), soft);
    }

    #[test]
    fn usage_errors_exit_2() {
        assert_eq!(DaemonError::Usage(UsageError("x".into())).exit_code(), 2);
        assert_eq!(DaemonError::SocketBusy { path: "/x".into() }.exit_code(), 1);
    }
}
