//! Runs the `virtiofsd-msb` binary for a test and cleans up after it.
//!
//! [`Daemon::start`] makes a temporary directory holding `share/` (the
//! shared dir), the socket and the daemon's log, starts the daemon and waits
//! for its socket. Dropping the [`Daemon`] kills and reaps the process and
//! removes the directory, also when the test panics; a panicking test gets
//! the tail of the daemon's log on stderr.

use std::env;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use crate::vhost_driver::{DriverConfig, FsDriver, FuseClient};

/// How long to wait for the socket to appear.
const SOCKET_WAIT: Duration = Duration::from_secs(30);

/// Finds the daemon binary: `$MSB_DAEMON_BIN`, else the newer of
/// `<target>/debug/virtiofsd-msb` and `<target>/release/virtiofsd-msb`
/// (`<target>` is `$CARGO_TARGET_DIR` or the workspace's `target/`).
pub fn daemon_binary() -> io::Result<PathBuf> {
    if let Some(p) = env::var_os("MSB_DAEMON_BIN") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("MSB_DAEMON_BIN={} is not a file", p.display()),
            ))
        };
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let target = env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|t| {
            if t.is_relative() {
                workspace.join(t)
            } else {
                t
            }
        })
        .unwrap_or_else(|| workspace.join("target"));
    let newest = ["debug", "release"]
        .iter()
        .map(|profile| target.join(profile).join("virtiofsd-msb"))
        .filter_map(|p| {
            let mtime = fs::metadata(&p).and_then(|m| m.modified()).ok()?;
            Some((mtime, p))
        })
        .max_by_key(|(mtime, _): &(SystemTime, PathBuf)| *mtime);
    let (built, bin) = newest.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "virtiofsd-msb binary not found under {}/{{debug,release}}: run \
                 `cargo build -p virtiofsd-msb` first (or set MSB_DAEMON_BIN)",
                target.display()
            ),
        )
    })?;
    // `cargo test` does not rebuild another package's binary: refuse to
    // test a daemon older than the sources it was built from (listed in
    // cargo's dep-info file next to it).
    if let Some(src) = newer_source(&bin, built) {
        return Err(io::Error::other(format!(
            "{} is older than {}: run `cargo build -p virtiofsd-msb` \
             (or set MSB_DAEMON_BIN to test a chosen binary)",
            bin.display(),
            src.display()
        )));
    }
    Ok(bin)
}

/// A source file listed in `<bin>.d` that changed after `built`, if any.
fn newer_source(bin: &Path, built: SystemTime) -> Option<PathBuf> {
    let mut dep_info = bin.as_os_str().to_owned();
    dep_info.push(".d");
    let text = fs::read_to_string(PathBuf::from(dep_info)).ok()?;
    let (_, deps) = text.lines().next()?.split_once(": ")?;
    // Paths are separated by spaces; a space inside a path is `\ `.
    let deps = deps.replace("\\ ", "\0");
    deps.split(' ')
        .filter(|d| !d.is_empty())
        .map(|d| PathBuf::from(d.replace('\0', " ")))
        .find(|p| {
            fs::metadata(p)
                .and_then(|m| m.modified())
                .is_ok_and(|m| m > built)
        })
}

/// A running daemon with its own temporary directory.
pub struct Daemon {
    child: Option<Child>,
    dir: Option<tempfile::TempDir>,
    socket: PathBuf,
    shared: PathBuf,
    log: PathBuf,
}

/// Options for [`Daemon::start_with`].
#[derive(Debug, Clone, Default)]
pub struct DaemonOptions {
    /// Extra command-line arguments after `--socket-path` and `--shared-dir`.
    pub args: Vec<String>,
    /// Called with the temporary root (shared dir is `root/share`) before
    /// the daemon starts, to lay out files.
    pub prepare: Option<fn(&Path) -> io::Result<()>>,
}

impl Daemon {
    /// Starts the daemon on an empty `share/` with `extra_args`.
    pub fn start(extra_args: &[&str]) -> io::Result<Daemon> {
        Daemon::start_with(DaemonOptions {
            args: extra_args.iter().map(|s| s.to_string()).collect(),
            prepare: None,
        })
    }

    /// Starts the daemon as `opts` says and waits for its socket.
    pub fn start_with(opts: DaemonOptions) -> io::Result<Daemon> {
        Daemon::launch(&daemon_binary()?, opts, None, None)
    }

    /// Starts the daemon serving only `share/<file>` (`--shared-file`),
    /// which `opts.prepare` must create.
    pub fn start_shared_file(file: &str, opts: DaemonOptions) -> io::Result<Daemon> {
        Daemon::launch(&daemon_binary()?, opts, None, Some(file))
    }

    /// Starts `bin`, a daemon taking virtiofsd's `--socket-path` and
    /// `--shared-dir` (virtiofsd itself, to compare with), serving the
    /// existing directory `shared`, which is left alone when the daemon is
    /// dropped; socket and log go to a temporary root as usual.
    pub fn start_serving(bin: &Path, shared: &Path, args: Vec<String>) -> io::Result<Daemon> {
        let opts = DaemonOptions {
            args,
            prepare: None,
        };
        Daemon::launch(bin, opts, Some(shared), None)
    }

    fn launch(
        bin: &Path,
        opts: DaemonOptions,
        shared: Option<&Path>,
        file: Option<&str>,
    ) -> io::Result<Daemon> {
        let dir = tempfile::Builder::new()
            .prefix("msb-vhost-test-")
            .tempdir()?;
        let root = dir.path().to_path_buf();
        let shared = match shared {
            Some(s) => s.to_path_buf(),
            None => {
                let s = root.join("share");
                fs::create_dir(&s)?;
                s
            }
        };
        if let Some(prepare) = opts.prepare {
            prepare(&root)?;
        }
        let socket = root.join("vhost.sock");
        let log = root.join("daemon.log");
        let out = File::create(&log)?;
        let err = out.try_clone()?;
        let mut cmd = Command::new(bin);
        cmd.arg("--socket-path").arg(&socket);
        match file {
            Some(f) => cmd.arg("--shared-file").arg(shared.join(f)),
            None => cmd.arg("--shared-dir").arg(&shared),
        };
        cmd.args(&opts.args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let child = cmd
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("starting {}: {e}", bin.display())))?;
        let mut d = Daemon {
            child: Some(child),
            dir: Some(dir),
            socket,
            shared,
            log,
        };
        d.wait_for_socket()?;
        Ok(d)
    }

    fn wait_for_socket(&mut self) -> io::Result<()> {
        let deadline = Instant::now() + SOCKET_WAIT;
        loop {
            if self.socket.exists() {
                return Ok(());
            }
            if let Some(status) = self.try_wait()? {
                return Err(io::Error::other(format!(
                    "daemon exited ({status}) before creating its socket; log:\n{}",
                    self.log_tail(4000)
                )));
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "daemon did not create {} within {SOCKET_WAIT:?}; log:\n{}",
                        self.socket.display(),
                        self.log_tail(4000)
                    ),
                ));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The vhost-user socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The shared directory (`root/share`).
    pub fn shared_dir(&self) -> &Path {
        &self.shared
    }

    /// The temporary root holding the share, socket and log; tests may put
    /// things outside the share here.
    pub fn root(&self) -> &Path {
        match &self.dir {
            Some(dir) => dir.path(),
            None => self.shared.parent().unwrap_or(&self.shared),
        }
    }

    /// The id of the process started (with a sandbox: the monitor, which
    /// forwards signals to the server; see [`Daemon::server_pid`]).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// `Some(status)` once the daemon has exited.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        match self.child.as_mut() {
            Some(c) => c.try_wait(),
            None => Err(io::Error::other("daemon already reaped")),
        }
    }

    /// True while the daemon process runs.
    pub fn is_alive(&mut self) -> bool {
        matches!(self.try_wait(), Ok(None))
    }

    /// Waits up to `max` for the daemon to exit by itself.
    pub fn wait_exit(&mut self, max: Duration) -> io::Result<Option<ExitStatus>> {
        let deadline = Instant::now() + max;
        loop {
            if let Some(s) = self.try_wait()? {
                return Ok(Some(s));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The process serving requests: with a sandbox the started process
    /// is a monitor and the server is its last descendant (in `namespace`
    /// mode there is an intermediate process between them). Waits (up to
    /// [`SOCKET_WAIT`]) until that process runs more than one thread, which
    /// it does only once its walls are up.
    pub fn server_pid(&self) -> io::Result<u32> {
        let deadline = Instant::now() + SOCKET_WAIT;
        loop {
            let mut pid = self.pid();
            while let Some(child) = only_child(pid) {
                pid = child;
            }
            if thread_count(pid).unwrap_or(0) > 1 {
                return Ok(pid);
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no serving process under pid {}", self.pid()),
                ));
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Number of open fds of the serving process (entries of
    /// `/proc/PID/fd` of [`Daemon::server_pid`]).
    pub fn open_fds(&self) -> io::Result<usize> {
        Ok(fs::read_dir(format!("/proc/{}/fd", self.server_pid()?))?.count())
    }

    /// The last `max` bytes of the daemon's stdout/stderr.
    pub fn log_tail(&self, max: usize) -> String {
        let data = fs::read(&self.log).unwrap_or_default();
        let start = data.len().saturating_sub(max);
        String::from_utf8_lossy(&data[start..]).into_owned()
    }

    /// Connects a [`FsDriver`] with `request_queues` request queues and
    /// sends `FUSE_INIT`; errors carry the tail of the daemon's log.
    pub fn connect(&self, request_queues: usize) -> Result<FsDriver, String> {
        self.connect_with(DriverConfig {
            request_queues,
            ..DriverConfig::default()
        })
    }

    /// Like [`Daemon::connect`] with a chosen driver configuration (with
    /// `early_init` set, the handshake has sent `FUSE_INIT` already).
    pub fn connect_with(&self, config: DriverConfig) -> Result<FsDriver, String> {
        let init_sent = config.early_init.is_some();
        let fs = FsDriver::connect_with(&self.socket, config).map_err(|e| {
            format!(
                "connecting to the daemon: {e}\ndaemon log:\n{}",
                self.log_tail(4000)
            )
        })?;
        if init_sent {
            return Ok(fs);
        }
        fs.init()
            .map_err(|e| format!("FUSE_INIT: {e}\ndaemon log:\n{}", self.log_tail(4000)))?;
        Ok(fs)
    }

    /// Sends `signal` to the daemon.
    pub fn signal(&self, signal: i32) -> io::Result<()> {
        // SAFETY: kill(2) on the pid of our own, not yet reaped child.
        if unsafe { libc::kill(self.pid() as libc::pid_t, signal) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// The one child of `pid`, if it has exactly one.
fn only_child(pid: u32) -> Option<u32> {
    let list = fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
    let mut children = list.split_whitespace().filter_map(|c| c.parse().ok());
    match (children.next(), children.next()) {
        (Some(c), None) => Some(c),
        _ => None,
    }
}

/// The `Threads:` count of `/proc/PID/status`.
fn thread_count(pid: u32) -> Option<usize> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
        if thread::panicking() {
            eprintln!(
                "---- virtiofsd-msb log (tail) ----\n{}\n---- end of log ----",
                self.log_tail(8000)
            );
        }
        if let Some(dir) = self.dir.take() {
            let _ = dir.close();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::FileTimes;

    #[test]
    fn stale_binary_is_detected_from_dep_info() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("with space.rs");
        let bin = dir.path().join("bin");
        fs::write(&src, "").unwrap();
        fs::write(&bin, "").unwrap();
        let escaped = src.display().to_string().replace(' ', "\\ ");
        fs::write(
            dir.path().join("bin.d"),
            format!("{}: {escaped} /nonexistent.rs\n", bin.display()),
        )
        .unwrap();
        let now = SystemTime::now();
        let set = |p: &Path, t: SystemTime| {
            let f = File::options().write(true).open(p).unwrap();
            f.set_times(FileTimes::new().set_modified(t)).unwrap();
        };
        set(&src, now - Duration::from_secs(60));
        assert_eq!(newer_source(&bin, now), None);
        set(&src, now + Duration::from_secs(60));
        assert_eq!(newer_source(&bin, now), Some(src));
        assert_eq!(newer_source(&dir.path().join("nobin"), now), None);
    }
}
