//! Helpers shared by the host FUSE-mode tests (`pjdfstest.rs`, `fsx.rs`):
//! preflight checks, locating the daemon and the reference tools, scratch
//! directories, running a tool with a deadline, and a guard that mounts the
//! daemon's host FUSE mode and always tears it down (unmount, stop the
//! daemon), also when the test panics.
#![allow(dead_code)] // each test binary uses a subset

use std::ffi::{CString, OsStr};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// Writes a line straight to the process's stderr. Unlike `eprintln!`, this
/// is not captured by the test harness, so summaries show up in CI logs even
/// when the test passes.
pub fn report(line: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{line}");
}

/// Checks that the test can run here: root and a usable /dev/fuse.
///
/// Returns `true` to run. Otherwise panics with the reason, or, only when
/// `MSB_ALLOW_SKIP=1`, prints a loud `SKIPPED:` line and returns `false`.
pub fn preflight(test: &str) -> bool {
    let mut problems = Vec::new();
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        problems.push(
            "not running as root (FUSE mounts need it, and pjdfstest switches users)".to_string(),
        );
    }
    if let Err(e) = OpenOptions::new().read(true).write(true).open("/dev/fuse") {
        problems.push(format!("cannot open /dev/fuse: {e}"));
    }
    if problems.is_empty() {
        return true;
    }
    let why = problems.join("; ");
    if std::env::var("MSB_ALLOW_SKIP").as_deref() == Ok("1") {
        report(&format!("SKIPPED: {test}: {why} (MSB_ALLOW_SKIP=1)"));
        return false;
    }
    panic!(
        "{test} cannot run: {why}. Run the tests as root with /dev/fuse available \
         (CI does), or set MSB_ALLOW_SKIP=1 to skip this test explicitly."
    );
}

/// The `virtiofsd-msb` binary to test (`$MSB_DAEMON_BIN`, else the newest
/// build under `target/`), as [`msb_tests::daemon_proc::daemon_binary`]
/// finds it; panics with its message when there is none.
pub fn daemon_bin() -> PathBuf {
    msb_tests::daemon_proc::daemon_binary().unwrap_or_else(|e| panic!("{e}"))
}

/// Finds a reference tool installed by `scripts/setup.sh` (`cargo install`):
/// in `$PATH`, then in `$CARGO_HOME/bin` and `~/.cargo/bin`.
pub fn find_tool(name: &str) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(h) = std::env::var_os("CARGO_HOME") {
        dirs.push(PathBuf::from(h).join("bin"));
    }
    if let Some(h) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(h).join(".cargo/bin"));
    }
    dirs.into_iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("{name} not found in PATH or ~/.cargo/bin: run scripts/setup.sh (cargo install {name})")
        })
}

/// A scratch directory (mode 0755 so pjdfstest's unprivileged users can
/// traverse it), removed on drop. Lives in `$MSB_TEST_TMPDIR` or the system
/// temp dir.
pub struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    /// Creates a new scratch directory whose name starts with `prefix`.
    pub fn new(prefix: &str) -> Scratch {
        let parent = std::env::var_os("MSB_TEST_TMPDIR")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(&parent)
            .unwrap_or_else(|e| panic!("creating a scratch dir in {}: {e}", parent.display()));
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))
            .expect("chmod scratch dir");
        Scratch { dir }
    }

    /// The scratch directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Creates (mode 0755) and returns `<scratch>/<name>`.
    pub fn mkdir(&self, name: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        fs::create_dir(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).expect("chmod");
        p
    }
}

/// How a command run under [`run_with_deadline`] ended.
pub struct Finished {
    /// Exit status; `None` when it was killed at the deadline.
    pub status: Option<ExitStatus>,
    /// Wall-clock time it ran.
    pub elapsed: Duration,
    /// Everything it wrote to stdout.
    pub stdout: String,
    /// Everything it wrote to stderr.
    pub stderr: String,
}

impl Finished {
    /// A short description of how it ended, for messages.
    pub fn describe(&self) -> String {
        match self.status {
            None => format!("killed at its deadline after {:.1?}", self.elapsed),
            Some(s) => match (s.code(), s.signal()) {
                (Some(c), _) => format!("exit status {c} after {:.1?}", self.elapsed),
                (None, Some(sig)) => format!("killed by signal {sig} after {:.1?}", self.elapsed),
                _ => format!("{s} after {:.1?}", self.elapsed),
            },
        }
    }
}

/// Runs `cmd` in its own process group with stdout/stderr captured into
/// files under `log_dir`, killing the whole group at `deadline`.
pub fn run_with_deadline(
    mut cmd: Command,
    log_dir: &Path,
    label: &str,
    deadline: Duration,
) -> Finished {
    let out_path = log_dir.join(format!("{label}.stdout"));
    let err_path = log_dir.join(format!("{label}.stderr"));
    let out = File::create(&out_path).expect("create stdout log");
    let err = File::create(&err_path).expect("create stderr log");
    cmd.stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0);
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {label} ({cmd:?}): {e}"));
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for child") {
            break Some(s);
        }
        if start.elapsed() > deadline {
            // SAFETY: kill(2) on the child's own process group (it called
            // setpgid(0, 0) via process_group(0)); no memory is involved.
            unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL) };
            let _ = child.wait();
            break None;
        }
        sleep(Duration::from_millis(50));
    };
    let elapsed = start.elapsed();
    Finished {
        status,
        elapsed,
        stdout: read_lossy(&out_path),
        stderr: read_lossy(&err_path),
    }
}

fn read_lossy(p: &Path) -> String {
    let mut buf = Vec::new();
    if let Ok(mut f) = File::open(p) {
        let _ = f.read_to_end(&mut buf);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Decodes the octal escapes (`\040` for a space) of /proc/self/mountinfo.
fn unescape_mountinfo(field: &str) -> Vec<u8> {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            let oct = &b[i + 1..i + 4];
            if oct.iter().all(|c| (b'0'..=b'7').contains(c)) {
                out.push((oct[0] - b'0') * 64 + (oct[1] - b'0') * 8 + (oct[2] - b'0'));
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// The filesystem type of the mount whose mount point is exactly `path`
/// (the topmost one), from /proc/self/mountinfo.
pub fn mount_fstype(path: &Path) -> Option<String> {
    let info = fs::read_to_string("/proc/self/mountinfo").ok()?;
    let want = path.as_os_str().as_bytes();
    let mut found = None;
    for line in info.lines() {
        let mut halves = line.splitn(2, " - ");
        let (Some(left), Some(right)) = (halves.next(), halves.next()) else {
            continue;
        };
        let Some(mount_point) = left.split(' ').nth(4) else {
            continue;
        };
        if unescape_mountinfo(mount_point) == want {
            found = right.split(' ').next().map(str::to_string);
        }
    }
    found
}

/// A `virtiofsd-msb --shared-dir SRC --fuse-mount DIR` instance. Dropping it
/// (also while unwinding from a failed assertion) unmounts DIR and stops the
/// daemon: SIGTERM, then SIGKILL after a grace period.
pub struct FuseMount {
    child: Option<Child>,
    mountpoint: PathBuf,
    log: PathBuf,
}

impl FuseMount {
    /// Starts the daemon serving `shared` at `mountpoint` (logging to `log`)
    /// and waits until a FUSE filesystem is mounted there. Panics, after
    /// cleaning up, when the daemon exits early or nothing is mounted within
    /// 20 s. Extra daemon flags come from `$MSB_FUSE_DAEMON_ARGS`
    /// (whitespace-separated), for debugging.
    pub fn start(daemon: &Path, shared: &Path, mountpoint: &Path, log: &Path) -> FuseMount {
        FuseMount::start_with_args(daemon, shared, mountpoint, log, &[])
    }

    /// [`FuseMount::start`] with `args` added to the daemon's command line
    /// (before any from `$MSB_FUSE_DAEMON_ARGS`).
    pub fn start_with_args(
        daemon: &Path,
        shared: &Path,
        mountpoint: &Path,
        log: &Path,
        args: &[&str],
    ) -> FuseMount {
        let mountpoint = fs::canonicalize(mountpoint).expect("canonicalize mount point");
        assert!(
            mount_fstype(&mountpoint).is_none(),
            "{} is already a mount point",
            mountpoint.display()
        );
        let out = File::create(log).expect("create daemon log");
        let err = out.try_clone().expect("dup daemon log");
        let mut cmd = Command::new(daemon);
        cmd.arg("--shared-dir")
            .arg(shared)
            .arg("--fuse-mount")
            .arg(&mountpoint)
            .args(args);
        if let Ok(extra) = std::env::var("MSB_FUSE_DAEMON_ARGS") {
            cmd.args(extra.split_whitespace());
        }
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        // SAFETY: the closure runs in the child between fork and exec and
        // only calls prctl(2), which is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                // Take the daemon down if the test process dies without
                // running destructors (e.g. killed at a CI deadline).
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            })
        };
        let start = Instant::now();
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {}: {e}", daemon.display()));
        let mut guard = FuseMount {
            child: Some(child),
            mountpoint,
            log: log.to_path_buf(),
        };
        loop {
            if let Some(fstype) = mount_fstype(&guard.mountpoint) {
                if fstype.starts_with("fuse") {
                    report(&format!(
                        "{} mounted at {} ({fstype}) after {:.2?}",
                        daemon.display(),
                        guard.mountpoint.display(),
                        start.elapsed()
                    ));
                    return guard;
                }
            }
            if let Some(status) = guard
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "{} --shared-dir {} --fuse-mount {} exited ({status}) before mounting; its log:\n{}",
                    daemon.display(),
                    shared.display(),
                    guard.mountpoint.display(),
                    guard.log_tail(40)
                );
            }
            if start.elapsed() > Duration::from_secs(20) {
                panic!(
                    "no FUSE filesystem mounted at {} within 20 s; daemon log:\n{}",
                    guard.mountpoint.display(),
                    guard.log_tail(40)
                );
            }
            sleep(Duration::from_millis(20));
        }
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.mountpoint
    }

    /// The last `n` lines of the daemon's log.
    pub fn log_tail(&self, n: usize) -> String {
        tail(&read_lossy(&self.log), n)
    }

    /// `Ok` while the daemon runs and the FUSE mount is still in place.
    pub fn check_alive(&mut self) -> Result<(), String> {
        if let Some(child) = self.child.as_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("the daemon exited during the run ({status})"));
            }
        }
        match mount_fstype(&self.mountpoint) {
            Some(t) if t.starts_with("fuse") => Ok(()),
            other => Err(format!(
                "the FUSE mount at {} is gone (now: {other:?})",
                self.mountpoint.display()
            )),
        }
    }

    /// Unmounts and stops the daemon now; returns how the daemon ended.
    /// After an unmount a FUSE daemon normally exits by itself; it gets
    /// SIGTERM after 5 s and SIGKILL 5 s later.
    pub fn shutdown(&mut self) -> Option<String> {
        self.unmount();
        let mut child = self.child.take()?;
        let start = Instant::now();
        let mut sent_term = false;
        let ended = loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    break if sent_term {
                        format!("{status} after SIGTERM")
                    } else {
                        format!("{status} on unmount")
                    };
                }
                Ok(None) => {}
                Err(e) => break format!("wait failed: {e}"),
            }
            let waited = start.elapsed();
            if !sent_term && waited > Duration::from_secs(5) {
                // SAFETY: kill(2) on our own child's pid, which has not been
                // reaped yet (try_wait returned None), so it is still ours.
                unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
                sent_term = true;
            }
            if waited > Duration::from_secs(10) {
                let _ = child.kill();
                let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
                break format!("{status}: did not exit within 10 s, SIGKILLed");
            }
            sleep(Duration::from_millis(20));
        };
        Some(ended)
    }

    fn unmount(&self) {
        let Ok(c) = CString::new(self.mountpoint.as_os_str().as_bytes()) else {
            return;
        };
        // Several attempts in case mounts are stacked; lazy so a hung daemon
        // cannot block us.
        for _ in 0..4 {
            match mount_fstype(&self.mountpoint) {
                Some(t) if t.starts_with("fuse") => {}
                _ => return,
            }
            // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
            let rc = unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
            if rc != 0 {
                report(&format!(
                    "umount2({}): {}",
                    self.mountpoint.display(),
                    std::io::Error::last_os_error()
                ));
                // Fall back to the setuid helper (non-root runs).
                let _ = Command::new("fusermount3")
                    .args([
                        OsStr::new("-u"),
                        OsStr::new("-z"),
                        self.mountpoint.as_os_str(),
                    ])
                    .status();
            }
        }
    }
}

impl Drop for FuseMount {
    fn drop(&mut self) {
        if let Some(how) = self.shutdown() {
            report(&format!("virtiofsd-msb (FUSE mode) stopped: {how}"));
        }
    }
}

/// A directory on a filesystem other than the one holding `than` (for
/// pjdfstest's EXDEV cases): a fresh directory in /dev/shm when that is a
/// different filesystem. Removed on drop.
pub fn other_fs_dir(than: &Path) -> Option<tempfile::TempDir> {
    let dev = fs::metadata(than).ok()?.dev();
    let shm = Path::new("/dev/shm");
    if fs::metadata(shm).ok()?.dev() == dev {
        return None;
    }
    let d = tempfile::Builder::new()
        .prefix("msb-secondary")
        .tempdir_in(shm)
        .ok()?;
    fs::set_permissions(d.path(), fs::Permissions::from_mode(0o755)).ok()?;
    Some(d)
}
