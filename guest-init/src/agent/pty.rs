//! Pseudo-terminals for `tty` exec sessions.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use crate::init::sys;
use crate::protocol::WindowSize;

/// Both ends of a new pty.
pub struct Pty {
    /// The agent's end: output is read and input written here.
    pub master: OwnedFd,
    /// The process's end (its stdin, stdout and stderr).
    pub slave: OwnedFd,
}

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Opens a pty of `size`. Both fds are close-on-exec (the child gets the
/// slave as its stdio only), so a concurrent spawn cannot inherit them.
pub fn open(size: WindowSize) -> io::Result<Pty> {
    let flags = libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC;
    // SAFETY: a valid NUL-terminated path; the fd returned is ours alone.
    let master = check(unsafe { libc::open(c"/dev/ptmx".as_ptr(), flags) })
        .map_err(|e| io::Error::new(e.kind(), format!("/dev/ptmx: {e}")))?;
    // SAFETY: master was just opened and is owned by nobody else.
    let master = unsafe { OwnedFd::from_raw_fd(master) };
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads an int from a valid pointer.
    check(unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) })?;
    // SAFETY: TIOCGPTPEER takes open flags by value and returns a new fd.
    let slave = check(unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTPEER, flags) })?;
    // SAFETY: slave was just returned by the kernel and is owned by nobody else.
    let slave = unsafe { OwnedFd::from_raw_fd(slave) };
    set_size(master.as_fd(), size)?;
    Ok(Pty { master, slave })
}

/// Sets the window size of the pty behind `fd` (the kernel sends SIGWINCH
/// to its foreground process group).
pub fn set_size(fd: BorrowedFd<'_>, size: WindowSize) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: size.rows,
        ws_col: size.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize from a valid pointer.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) }).map(|_| ())
}

/// Mounts devpts on `/dev/pts` (the kernel does not) and, when commands run
/// under `root`, makes the same instance visible at `{root}/dev/pts`.
pub fn mount_devpts(root: &str) -> Result<(), String> {
    let flags = libc::MS_NOSUID | libc::MS_NOEXEC;
    sys::mkdir_all("/dev/pts").map_err(|e| format!("mkdir /dev/pts: {e}"))?;
    match sys::mount(
        "devpts",
        "/dev/pts",
        "devpts",
        flags,
        "mode=0620,ptmxmode=0666",
    ) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
        Err(e) => return Err(format!("mount devpts on /dev/pts: {e}")),
    }
    if root.is_empty() {
        return Ok(());
    }
    let target = format!("{root}/dev/pts");
    sys::mkdir_all(&target).map_err(|e| format!("mkdir {target}: {e}"))?;
    sys::mount("/dev/pts", &target, "", libc::MS_BIND, "")
        .map_err(|e| format!("bind /dev/pts on {target}: {e}"))
}
