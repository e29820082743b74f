//! The process sandbox (`--sandbox`): the wall behind openat2 confinement.
//!
//! - `namespace` (default): the daemon forks into new user (when not run
//!   as root), pid, mount, network, IPC, UTS and cgroup namespaces, mounts a fresh
//!   `/proc` for its pid namespace, keeps only `/proc/self/fd` of it (an fd),
//!   bind-mounts the shared directory on itself (`nosuid,nodev,noexec`, and
//!   read-only with `--readonly`) and `pivot_root`s into it, detaching the
//!   old root: no host path outside the share is reachable by name any more.
//! - `chroot`: where namespaces are unavailable, the daemon forks and
//!   `chroot`s into the shared directory (root only).
//! - `none`: no sandbox; confinement relies on openat2 alone.
//!
//! Process layout with a sandbox: the process that was started stays
//! outside as a small *monitor*: it forwards SIGTERM/SIGINT/SIGHUP to the
//! server, waits for it, then does the host-side cleanup the server can no
//! longer do (remove the socket it created, unmount a `--fuse-mount`) and
//! exits with the server's status. In `namespace` mode an intermediate
//! process between them creates the namespaces and waits for the server
//! (pid 1 of the new pid namespace) in the same way. Every child dies with
//! its parent (`PR_SET_PDEATHSIG`), so killing the monitor ends them all.
//!
//! Everything the server needs from the host (the listening socket,
//! `/dev/fuse`, the share's root fd, the quota accounting file) is opened
//! before the fork. After confinement, the server reaches inodes it holds
//! through `/proc/self/fd` only: it makes that directory its working
//! directory so the few path-only calls (xattrs on kernels without
//! `getxattrat`) name `N` relative to it (see
//! [`crate::confinement::ProcSelfFd::path_of`]).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::confinement::ProcSelfFd;

/// Which sandbox the server runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SandboxMode {
    /// New namespaces and `pivot_root` into the shared directory.
    Namespace,
    /// `chroot` into the shared directory.
    Chroot,
    /// No sandbox.
    None,
}

impl SandboxMode {
    /// The flag's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            SandboxMode::Namespace => "namespace",
            SandboxMode::Chroot => "chroot",
            SandboxMode::None => "none",
        }
    }
}

/// A sandbox step that failed: names the mode and the step.
#[derive(Debug, thiserror::Error)]
#[error("--sandbox {mode}: {step}: {source}{hint}")]
pub struct SandboxError {
    mode: &'static str,
    step: String,
    source: io::Error,
    hint: &'static str,
}

/// What to suggest when namespaces or chroot are not permitted here.
const HINT: &str = " (namespaces or chroot unavailable here? try --sandbox chroot or none)";

fn fail(mode: SandboxMode, step: impl Into<String>) -> impl FnOnce(io::Error) -> SandboxError {
    let step = step.into();
    move |source| {
        let hint = match source.raw_os_error() {
            Some(libc::EPERM | libc::EINVAL | libc::ENOSPC | libc::EACCES) => HINT,
            _ => "",
        };
        SandboxError {
            mode: mode.as_str(),
            step,
            source,
            hint,
        }
    }
}

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Signals the monitor (and the intermediate process) pass on to their
/// child.
const FORWARDED: [libc::c_int; 3] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP];

/// Forks the sandboxed server. Returns `Ok` in the server only; the
/// calling process becomes the monitor: it never returns from here, runs
/// `cleanup` once the server has exited and exits with its status.
///
/// Must be called while the process has a single thread (checked), with
/// SIGTERM/SIGINT/SIGHUP blocked (the server's signal thread waits for them).
/// With [`SandboxMode::None`] this does nothing, unless `monitor` asks for
/// a monitor anyway (a server whose system call filter forbids its own
/// host-side cleanup, such as unmounting a `--fuse-mount`).
pub fn fork_server(
    mode: SandboxMode,
    monitor: bool,
    cleanup: impl FnOnce(),
) -> Result<(), SandboxError> {
    if mode == SandboxMode::None && !monitor {
        return Ok(());
    }
    let threads = std::fs::read_dir("/proc/self/task")
        .map(|d| d.count())
        .map_err(fail(mode, "counting threads in /proc/self/task"))?;
    if threads != 1 {
        return Err(fail(mode, "fork")(io::Error::other(format!(
            "{threads} threads already run; the sandbox must be entered first"
        ))));
    }
    // SAFETY: geteuid/getegid have no preconditions.
    let (euid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let (child, alive) = fork_child(mode)?;
    let Some(child) = child else {
        // The child (server or intermediate).
        if mode == SandboxMode::Namespace {
            enter_namespaces(euid, gid, alive)?;
        } else {
            drop(alive);
        }
        return Ok(());
    };
    supervise(child, alive, cleanup)
}

/// Forks; returns `(Some(pid), write end)` in the parent and `(None, read
/// end)` in the child, which has `PR_SET_PDEATHSIG` = SIGKILL set and has
/// checked that its parent still lived at that point (the pipe's write end
/// is open for as long as the parent lives).
fn fork_child(mode: SandboxMode) -> Result<(Option<libc::pid_t>, OwnedFd), SandboxError> {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a writable array of two ints.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }).map_err(fail(mode, "pipe2"))?;
    // SAFETY: pipe2 returned two new fds that nothing else owns.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: the process has one thread (checked by the caller), so the
    // child starts with consistent state; it only returns into our code.
    let pid = cvt(unsafe { libc::fork() }).map_err(fail(mode, "fork"))?;
    if pid > 0 {
        drop(read);
        return Ok((Some(pid), write));
    }
    drop(write);
    // SAFETY: prctl with integer arguments only.
    cvt(unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) })
        .map_err(fail(mode, "prctl(PR_SET_PDEATHSIG)"))?;
    let mut pfd = libc::pollfd {
        fd: read.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd; zero timeout.
    let ready = unsafe { libc::poll(&mut pfd, 1, 0) };
    if ready != 0 {
        // The parent died (write end closed) before PDEATHSIG was armed.
        // SAFETY: _exit ends this process without running anything else.
        unsafe { libc::_exit(1) };
    }
    Ok((None, read))
}

/// The monitor / intermediate loop: closes every fd but stdio and
/// `keep`, forwards [`FORWARDED`] signals to `child`, reaps it, runs
/// `cleanup` and exits with its status (128 + N when killed by signal N).
fn supervise(child: libc::pid_t, keep: OwnedFd, cleanup: impl FnOnce()) -> ! {
    close_fds_except(keep.as_raw_fd());
    // SAFETY: sigset operations on a local set; sigprocmask on this
    // (single) thread.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in FORWARDED.iter().chain(&[libc::SIGCHLD]) {
            libc::sigaddset(&mut set, *sig);
        }
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    let code = loop {
        if let Some(code) = reap(child) {
            break code;
        }
        // SAFETY: `set` is initialised; no siginfo is asked for.
        let sig = unsafe { libc::sigwaitinfo(&set, std::ptr::null_mut()) };
        if FORWARDED.contains(&sig) {
            // SAFETY: kill(2) on our own child, not reaped yet.
            unsafe { libc::kill(child, sig) };
        }
    };
    cleanup();
    drop(keep);
    std::process::exit(code)
}

/// `Some(exit code)` once `child` has ended.
fn reap(child: libc::pid_t) -> Option<i32> {
    let mut status = 0;
    // SAFETY: `status` is writable; WNOHANG never blocks.
    let r = unsafe { libc::waitpid(child, &mut status, libc::WNOHANG) };
    if r == child {
        if libc::WIFEXITED(status) {
            return Some(libc::WEXITSTATUS(status));
        }
        if libc::WIFSIGNALED(status) {
            return Some(128 + libc::WTERMSIG(status));
        }
        return None;
    }
    if r < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD) {
        return Some(1);
    }
    None
}

/// Closes every fd from 3 up except `keep`: the monitor holds nothing of
/// the server's (its copy of `/dev/fuse` would keep a dead mount hanging).
fn close_fds_except(keep: RawFd) {
    let ranges = [(3, keep - 1), (keep + 1, libc::c_int::MAX)];
    for (lo, hi) in ranges {
        if lo > hi {
            continue;
        }
        // SAFETY: close_range only closes fds of this process, which owns
        // them all; nothing in this process uses them afterwards (it only
        // waits and exits).
        let r = unsafe { libc::syscall(libc::SYS_close_range, lo as u32, hi as u32, 0u32) };
        if r != 0 {
            for fd in lo..hi.min(4096) {
                // SAFETY: as above, one fd at a time.
                unsafe { libc::close(fd) };
            }
        }
    }
}

/// In the intermediate process: new namespaces (a user namespace mapping
/// our own ids when not root), then fork the server as pid 1 of the new
/// pid namespace and wait for it. Returns in the server only.
fn enter_namespaces(
    euid: libc::uid_t,
    gid: libc::gid_t,
    alive: OwnedFd,
) -> Result<(), SandboxError> {
    let mode = SandboxMode::Namespace;
    let mut flags = libc::CLONE_NEWPID
        | libc::CLONE_NEWNS
        | libc::CLONE_NEWNET
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWUTS
        | libc::CLONE_NEWCGROUP;
    if euid != 0 {
        flags |= libc::CLONE_NEWUSER;
    }
    // SAFETY: unshare with flag bits only; this process has one thread.
    cvt(unsafe { libc::unshare(flags) }).map_err(fail(mode, "unshare"))?;
    if euid != 0 {
        map_own_ids(euid, gid).map_err(fail(mode, "user namespace id maps"))?;
    }
    let (child, inner) = fork_child(mode)?;
    drop(alive);
    match child {
        None => {
            drop(inner);
            Ok(())
        }
        Some(pid) => supervise(pid, inner, || {}),
    }
}

/// Maps our own uid and gid to themselves in the user namespace just
/// created (the only mapping an unprivileged process may write).
fn map_own_ids(uid: libc::uid_t, gid: libc::gid_t) -> io::Result<()> {
    std::fs::write("/proc/self/setgroups", "deny")?;
    std::fs::write("/proc/self/uid_map", format!("{uid} {uid} 1"))?;
    std::fs::write("/proc/self/gid_map", format!("{gid} {gid} 1"))
}

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn mount(
    src: Option<&std::ffi::CStr>,
    target: &std::ffi::CStr,
    fstype: Option<&std::ffi::CStr>,
    flags: libc::c_ulong,
) -> io::Result<()> {
    let ptr = |s: Option<&std::ffi::CStr>| s.map_or(std::ptr::null(), |s| s.as_ptr());
    // SAFETY: NUL-terminated strings or null pointers; no data argument.
    cvt(unsafe {
        libc::mount(
            ptr(src),
            target.as_ptr(),
            ptr(fstype),
            flags,
            std::ptr::null(),
        )
    })
    .map(drop)
}

/// In the server, after the filesystem has been built: confines the
/// process to `shared_dir` as `mode` says and returns the `/proc/self/fd`
/// handle the filesystem must use from now on, which is also made the
/// working directory. With [`SandboxMode::None`] returns `None`.
pub fn confine(
    mode: SandboxMode,
    shared_dir: &Path,
    readonly: bool,
) -> Result<Option<ProcSelfFd>, SandboxError> {
    let proc_fd = match mode {
        SandboxMode::None => return Ok(None),
        SandboxMode::Namespace => pivot_into(shared_dir, readonly)?,
        SandboxMode::Chroot => chroot_into(shared_dir)?,
    };
    proc_fd
        .make_cwd()
        .map_err(fail(mode, "fchdir to /proc/self/fd"))?;
    Ok(Some(proc_fd))
}

fn pivot_into(shared_dir: &Path, readonly: bool) -> Result<ProcSelfFd, SandboxError> {
    let mode = SandboxMode::Namespace;
    let share = cpath(shared_dir).map_err(fail(mode, "shared dir path"))?;
    // Nothing we mount from here on reaches the host's namespace.
    mount(None, c"/", None, libc::MS_SLAVE | libc::MS_REC)
        .map_err(fail(mode, "making / a slave mount"))?;
    // A /proc of our own pid namespace: it shows this server only.
    let proc_flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC | libc::MS_RELATIME;
    mount(Some(c"proc"), c"/proc", Some(c"proc"), proc_flags)
        .map_err(fail(mode, "mounting a new /proc"))?;
    let proc_fd = ProcSelfFd::open().map_err(fail(mode, "opening /proc/self/fd"))?;
    mount(Some(&share), &share, None, libc::MS_BIND | libc::MS_REC).map_err(fail(
        mode,
        format!("bind-mounting {}", shared_dir.display()),
    ))?;
    // Device nodes, setuid bits and executables of the share mean nothing
    // to the server; a read-only share is read-only for it too.
    let mut flags =
        libc::MS_REMOUNT | libc::MS_BIND | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    if readonly {
        flags |= libc::MS_RDONLY;
    }
    mount(None, &share, None, flags).map_err(fail(mode, "remounting the share nosuid,nodev"))?;
    // SAFETY: chdir to a NUL-terminated path.
    cvt(unsafe { libc::chdir(share.as_ptr()) }).map_err(fail(mode, "chdir into the share"))?;
    // SAFETY: pivot_root(".", ".") stacks the old root over the new one;
    // both arguments are NUL-terminated.
    cvt(unsafe { libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) } as i32)
        .map_err(fail(mode, "pivot_root"))?;
    // SAFETY: detaches the old root (now mounted on top of "."), a
    // NUL-terminated path.
    cvt(unsafe { libc::umount2(c".".as_ptr(), libc::MNT_DETACH) })
        .map_err(fail(mode, "detaching the old root"))?;
    // SAFETY: chdir to a NUL-terminated path.
    cvt(unsafe { libc::chdir(c"/".as_ptr()) }).map_err(fail(mode, "chdir /"))?;
    Ok(proc_fd)
}

fn chroot_into(shared_dir: &Path) -> Result<ProcSelfFd, SandboxError> {
    let mode = SandboxMode::Chroot;
    let share = cpath(shared_dir).map_err(fail(mode, "shared dir path"))?;
    let proc_fd = ProcSelfFd::open().map_err(fail(mode, "opening /proc/self/fd"))?;
    // SAFETY: chdir/chroot to NUL-terminated paths.
    cvt(unsafe { libc::chdir(share.as_ptr()) }).map_err(fail(mode, "chdir into the share"))?;
    // SAFETY: as above.
    cvt(unsafe { libc::chroot(c".".as_ptr()) }).map_err(fail(mode, "chroot"))?;
    Ok(proc_fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_mode_step_and_hint() {
        let e = fail(SandboxMode::Namespace, "unshare")(io::Error::from_raw_os_error(libc::EPERM));
        let s = e.to_string();
        assert!(s.starts_with("--sandbox namespace: unshare: "), "{s}");
        assert!(s.contains("try --sandbox chroot or none"), "{s}");
        let e = fail(SandboxMode::Chroot, "x")(io::Error::from_raw_os_error(libc::ENOENT));
        assert!(!e.to_string().contains("try"), "{e}");
    }

    #[test]
    fn none_does_nothing() {
        fork_server(SandboxMode::None, false, || panic!("no monitor")).unwrap();
        assert!(confine(SandboxMode::None, Path::new("/"), false)
            .unwrap()
            .is_none());
    }
}
