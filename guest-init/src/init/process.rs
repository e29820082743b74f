//! Starting the command, wiring its output, and reaping every child.

use std::fs::File;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::config::{GuestConfig, GuestStatus, InitStage, OutputChannel};

/// PATH the command gets unless the config sets one.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Opens an output channel for writing.
pub fn open_channel(channel: &OutputChannel) -> Result<File, String> {
    let path = match channel {
        OutputChannel::Device { path } => path.clone(),
        OutputChannel::Port { name } => find_port(name)?,
    };
    let file = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(&path)
        .map_err(|e| format!("output channel {path}: {e}"))?;
    make_raw_if_tty(&file);
    Ok(file)
}

/// Puts a tty channel (cloud-hypervisor's `/dev/hvc0`, `/dev/ttyS0`) in raw
/// mode, so output reaches the host byte for byte (no `\n` → `\r\n`).
fn make_raw_if_tty(file: &File) {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    // SAFETY: termios is plain data filled by tcgetattr; every call gets a
    // valid fd and a valid pointer.
    unsafe {
        if libc::isatty(fd) != 1 {
            return;
        }
        let mut t: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(fd, &mut t) == 0 {
            libc::cfmakeraw(&mut t);
            libc::tcsetattr(fd, libc::TCSANOW, &t);
        }
    }
}

/// How long to wait for a virtio-serial port to show up: the host announces
/// ports (and then their names) asynchronously after virtio_console probes.
const PORT_WAIT: Duration = Duration::from_secs(5);

/// The /dev node of the virtio-serial port called `name` (waits up to
/// `PORT_WAIT` for it to appear).
pub fn find_port(name: &str) -> Result<String, String> {
    let deadline = Instant::now() + PORT_WAIT;
    loop {
        if let Ok(entries) = std::fs::read_dir("/sys/class/virtio-ports") {
            for e in entries.flatten() {
                let port_name = std::fs::read_to_string(e.path().join("name")).unwrap_or_default();
                if port_name.trim() == name {
                    return Ok(format!("/dev/{}", e.file_name().to_string_lossy()));
                }
            }
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "no virtio-serial port named {name:?} appeared within {PORT_WAIT:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs the command of `config` with `root` as its root ("" for `/`),
/// reaping every process until the command ends. Returns its status.
pub fn run(config: &GuestConfig, root: &str, stdout: File, stderr: File) -> GuestStatus {
    let mut cmd = Command::new(&config.command[0]);
    cmd.args(&config.command[1..])
        .env_clear()
        .env("PATH", DEFAULT_PATH)
        .env("HOME", if config.uid == 0 { "/root" } else { "/" })
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr);
    for kv in &config.env {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        cmd.env(k, v);
    }
    let root = root.to_string();
    let workdir = config.workdir.clone().unwrap_or_else(|| "/".into());
    let (uid, gid) = (config.uid, config.gid);
    // SAFETY: the closure runs in the forked child before exec and only
    // makes async-signal-safe system calls (chroot, chdir, setgroups,
    // setgid, setuid, setsid) on data prepared before the fork.
    unsafe {
        let root_c = std::ffi::CString::new(root).unwrap_or_default();
        let workdir_c = std::ffi::CString::new(workdir).unwrap_or_default();
        cmd.pre_exec(move || {
            if !root_c.as_bytes().is_empty() && libc::chroot(root_c.as_ptr()) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::chdir(workdir_c.as_ptr()) != 0 {
                return Err(io::Error::last_os_error());
            }
            libc::setsid();
            let drop_ids = gid != 0 || uid != 0;
            if drop_ids
                && (libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(gid) != 0
                    || libc::setuid(uid) != 0)
            {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return GuestStatus::InitFailed {
                stage: InitStage::CommandNotFound,
                message: format!("{}: command not found", config.command[0]),
            };
        }
        Err(e) => {
            return GuestStatus::InitFailed {
                stage: InitStage::Exec,
                message: format!("{}: cannot run: {e}", config.command[0]),
            };
        }
    };
    reap_until(child.id() as libc::pid_t)
}

/// Reaps every child (PID 1 inherits orphans) until `main` ends.
fn reap_until(main: libc::pid_t) -> GuestStatus {
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes the status into a valid int.
        let pid = unsafe { libc::waitpid(-1, &mut status, 0) };
        if pid < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return GuestStatus::InitFailed {
                stage: InitStage::Exec,
                message: format!("waitpid: {e}"),
            };
        }
        if pid == main {
            let st = std::process::ExitStatus::from_raw(status);
            return match (st.code(), st.signal()) {
                (Some(code), _) => GuestStatus::Exited { code },
                (None, Some(signal)) => GuestStatus::Signaled { signal },
                _ => GuestStatus::Exited { code: 0 },
            };
        }
    }
}

/// How long [`kill_remaining`] waits for killed processes to be reaped.
const KILL_WAIT: Duration = Duration::from_secs(2);

/// Kills every process but PID 1 (what the command left running in the
/// background) and reaps them, so nothing keeps files open on the mounts
/// about to be unmounted. Gives up after `KILL_WAIT` (a process stuck in
/// the kernel cannot be reaped; PID 1 must not hang on it).
pub fn kill_remaining() {
    // SAFETY: kill(2) with pid -1 from PID 1 signals every other process;
    // it takes no pointers.
    if unsafe { libc::kill(-1, libc::SIGKILL) } != 0 {
        // ESRCH: there was nothing left to kill.
        return;
    }
    let deadline = Instant::now() + KILL_WAIT;
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes the status into a valid int.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid < 0 {
            return; // ECHILD: every child is reaped.
        }
        if pid == 0 {
            if Instant::now() >= deadline {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
