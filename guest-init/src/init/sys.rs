//! The few system calls PID 1 needs, as safe functions.

use std::ffi::CString;
use std::io;
use std::path::Path;

fn cstr(p: &str) -> io::Result<CString> {
    CString::new(p)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("{p:?} holds a NUL")))
}

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `mount(2)`; `data` is the fs-specific option string.
pub fn mount(
    source: &str,
    target: &str,
    fstype: &str,
    flags: libc::c_ulong,
    data: &str,
) -> io::Result<()> {
    let (s, t, f, d) = (cstr(source)?, cstr(target)?, cstr(fstype)?, cstr(data)?);
    // SAFETY: all pointers are valid NUL-terminated strings for the call.
    check(unsafe { libc::mount(s.as_ptr(), t.as_ptr(), f.as_ptr(), flags, d.as_ptr().cast()) })
}

/// `umount(2)` of `target`.
pub fn umount(target: &str) -> io::Result<()> {
    let t = cstr(target)?;
    // SAFETY: a valid NUL-terminated path for the duration of the call.
    check(unsafe { libc::umount(t.as_ptr()) })
}

/// `umount2(target, MNT_DETACH)`: detached now, gone once unused.
pub fn umount_detach(target: &str) -> io::Result<()> {
    let t = cstr(target)?;
    // SAFETY: a valid NUL-terminated path for the duration of the call.
    check(unsafe { libc::umount2(t.as_ptr(), libc::MNT_DETACH) })
}

/// `mkdir -p` with mode 0755.
pub fn mkdir_all(path: &str) -> io::Result<()> {
    std::fs::create_dir_all(path)
}

/// Loads the kernel module at `path` with `finit_module`; an already
/// loaded module is fine.
pub fn load_module(path: &Path) -> io::Result<()> {
    let file = std::fs::File::open(path)?;
    use std::os::fd::AsRawFd;
    // SAFETY: a valid fd and an empty NUL-terminated parameter string.
    let ret = unsafe { libc::syscall(libc::SYS_finit_module, file.as_raw_fd(), c"".as_ptr(), 0) };
    if ret < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EEXIST) {
            return Err(e);
        }
    }
    Ok(())
}

/// Flushes every filesystem and powers the machine off. Never returns.
pub fn power_off() -> ! {
    // SAFETY: sync and reboot take no pointers.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_POWER_OFF);
    }
    // reboot only returns on error; PID 1 must never exit.
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}
