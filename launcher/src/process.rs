//! Child processes of a run (daemons, the VMM): started in their own
//! process group (a terminal's Ctrl-C reaches `msb` only, which then stops
//! everything in order), killed with `msb` if it dies (`PR_SET_PDEATHSIG`;
//! spawn from a thread that lives as long as the child), and always
//! reaped.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

/// The fd number a passed-down socket gets in the child (`--fd 3`).
pub const PASSED_FD: i32 = 3;

/// Sets up `cmd`'s child as described in the module docs; `pass` becomes
/// its fd [`PASSED_FD`].
pub(crate) fn prepare(cmd: &mut Command, pass: Option<RawFd>) {
    let parent = std::process::id();
    // SAFETY: the closure runs between fork and exec and only makes
    // async-signal-safe calls (setpgid, prctl, getppid, fcntl, dup2) on plain
    // integers; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            let mut failed = libc::setpgid(0, 0) != 0
                || libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGKILL as libc::c_ulong,
                    0,
                    0,
                    0,
                ) != 0;
            // msb may have died before prctl took effect.
            if !failed && libc::getppid() as u32 != parent {
                return Err(io::Error::other("msb exited"));
            }
            failed = failed
                || match pass {
                    // Already in place: dup2 would be a no-op that keeps
                    // FD_CLOEXEC, so clear the flag instead.
                    Some(fd) if fd == PASSED_FD => libc::fcntl(fd, libc::F_SETFD, 0) < 0,
                    // dup2 gives the new descriptor no FD_CLOEXEC.
                    Some(fd) => libc::dup2(fd, PASSED_FD) < 0,
                    None => false,
                };
            if failed {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// A child `msb` owns: stopped and reaped on drop.
#[derive(Debug)]
pub struct Supervised {
    name: String,
    log: PathBuf,
    child: Child,
    exited: Option<ExitStatus>,
}

impl Supervised {
    /// Starts `cmd` as `name`, whose output goes to `log`; `pass` becomes
    /// fd [`PASSED_FD`] in the child.
    pub fn spawn(
        name: impl Into<String>,
        mut cmd: Command,
        pass: Option<&OwnedFd>,
        log: PathBuf,
    ) -> io::Result<Self> {
        prepare(&mut cmd, pass.map(|fd| fd.as_raw_fd()));
        let name = name.into();
        let child = cmd
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("start {name}: {e}")))?;
        tracing::debug!("started {name} (pid {})", child.id());
        Ok(Supervised {
            name,
            log,
            child,
            exited: None,
        })
    }

    /// What this child is, for messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The file its output goes to.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Its exit status, if it has exited.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait()?;
        }
        Ok(self.exited)
    }

    /// Waits up to `grace` for it to exit by itself.
    pub fn wait_for(&mut self, grace: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + grace;
        loop {
            match self.try_wait() {
                Ok(Some(st)) => return Some(st),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                _ => return None,
            }
        }
    }

    /// SIGTERM, up to `grace` to exit, then SIGKILL; always reaps.
    pub fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        if let Ok(Some(st)) = self.try_wait() {
            return Some(st);
        }
        // SAFETY: kill takes plain integers; the pid is our unreaped child,
        // so it cannot have been reused.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        if let Some(st) = self.wait_for(grace) {
            return Some(st);
        }
        tracing::warn!(
            "{} (pid {}) ignored SIGTERM; killing it",
            self.name,
            self.child.id()
        );
        let _ = self.child.kill();
        let st = self.child.wait().ok();
        self.exited = st;
        st
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(2));
    }
}
