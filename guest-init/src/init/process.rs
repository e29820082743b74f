//! Starting the command, wiring its output, and reaping every child.

use std::fs::File;
use std::io;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};

use crate::config::{GuestConfig, GuestStatus, InitStage, OutputChannel};

/// PATH the command gets unless the config sets one.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Opens an output channel for writing.
pub fn open_channel(channel: &OutputChannel) -> Result<File, String> {
    let path = match channel {
        OutputChannel::Device { path } => path.clone(),
        OutputChannel::Port { name } => find_port(name)?,
    };
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .map_err(|e| format!("output channel {path}: {e}"))
}

/// The /dev node of the virtio-serial port called `name`.
fn find_port(name: &str) -> Result<String, String> {
    let entries =
        std::fs::read_dir("/sys/class/virtio-ports").map_err(|e| format!("virtio ports: {e}"))?;
    for e in entries.flatten() {
        let port_name = std::fs::read_to_string(e.path().join("name")).unwrap_or_default();
        if port_name.trim() == name {
            return Ok(format!("/dev/{}", e.file_name().to_string_lossy()));
        }
    }
    Err(format!("no virtio-serial port named {name:?}"))
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
