//! Turning an [`ExecRequest`] into a [`Command`]: environment, program
//! lookup, working directory and identity, checked before the fork so a
//! failure comes back as a clear 127 or 126.

use std::ffi::CString;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::Command;

use crate::agent::guest_path::GuestRoot;
use crate::agent::AgentOptions;
use crate::init::process::DEFAULT_PATH;
use crate::protocol::ExecRequest;

/// Exit code of a command that was not found.
pub const NOT_FOUND: i32 = 127;
/// Exit code of a command that was found but could not run.
pub const CANNOT_RUN: i32 = 126;

/// Why a command was not started.
#[derive(Debug)]
pub struct Refusal {
    /// 127 (not found) or 126 (cannot run).
    pub code: i32,
    /// What was wrong, naming the program or path.
    pub message: String,
}

fn refuse(code: i32, message: String) -> Refusal {
    Refusal { code, message }
}

/// The process environment: a base (`PATH`, `HOME`, `TERM` on a pty), then
/// the sandbox's entries, then the request's; a later entry of a name wins.
pub fn environment(req: &ExecRequest, options: &AgentOptions) -> Vec<(String, String)> {
    let (uid, _) = identity(req, options);
    let mut env = vec![
        ("PATH".to_string(), DEFAULT_PATH.to_string()),
        (
            "HOME".to_string(),
            if uid == 0 { "/root" } else { "/" }.to_string(),
        ),
    ];
    if req.tty.is_some() {
        env.push(("TERM".into(), "xterm".into()));
    }
    for kv in options.env.iter().chain(&req.env) {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        env.retain(|(name, _)| name != k);
        env.push((k.to_string(), v.to_string()));
    }
    env
}

/// The uid and gid a request runs as: its own, else the sandbox's default
/// user (a request naming a uid but no gid gets gid 0).
pub fn identity(req: &ExecRequest, options: &AgentOptions) -> (u32, u32) {
    match req.uid {
        Some(uid) => (uid, req.gid.unwrap_or(0)),
        None => (options.uid, req.gid.unwrap_or(options.gid)),
    }
}

/// A command for `req`, with its environment, identity, working directory
/// and a new session (process group) set up in the child. Stdio is the
/// caller's to set.
pub fn prepare(
    req: &ExecRequest,
    options: &AgentOptions,
    root: &GuestRoot,
) -> Result<Command, Refusal> {
    let name = req.argv.first().map(String::as_str).unwrap_or("");
    let env = environment(req, options);
    let workdir = match &req.workdir {
        Some(w) => root
            .absolute(w, None)
            .map_err(|m| refuse(CANNOT_RUN, format!("workdir: {m}")))?,
        None => root.workdir().to_string(),
    };
    match root
        .locate(&workdir)
        .and_then(|l| std::fs::metadata(l.path))
    {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(refuse(
                CANNOT_RUN,
                format!("workdir {workdir}: not a directory"),
            ))
        }
        Err(e) => return Err(refuse(CANNOT_RUN, format!("workdir {workdir}: {e}"))),
    }
    let (uid, gid) = identity(req, options);
    for (what, id) in [("uid", uid), ("gid", gid)] {
        // (uid_t)-1 means "unchanged" to the set*id calls.
        if id == u32::MAX {
            return Err(refuse(CANNOT_RUN, format!("{what} {id} is not a valid id")));
        }
    }
    let path_var = env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_str())
        .unwrap_or(DEFAULT_PATH);
    let program = find_program(name, path_var, &workdir, root)?;

    let mut cmd = Command::new(&program);
    cmd.arg0(name).args(&req.argv[1..]).env_clear();
    for (k, v) in &env {
        cmd.env(k, v);
    }
    let nul = |what: &str| refuse(CANNOT_RUN, format!("{what} holds a NUL byte"));
    let chroot_to = match options.root.as_str() {
        "" => None,
        r => Some(CString::new(r).map_err(|_| nul("root"))?),
    };
    let workdir_c = CString::new(workdir).map_err(|_| nul("workdir"))?;
    // SAFETY: geteuid/getegid take no arguments and cannot fail.
    let change_ids = unsafe { uid != libc::geteuid() || gid != libc::getegid() };
    let tty = req.tty.is_some();
    let first_realtime = libc::SIGRTMIN();
    // SAFETY: the closure runs in the forked child before exec and makes
    // only async-signal-safe system calls (sigaction, chroot, chdir,
    // setsid, ioctl, setgroups, setgid, setuid) on data prepared before
    // the fork.
    unsafe {
        cmd.pre_exec(move || {
            // Ignored signals survive exec: a process started by an agent
            // that was itself started with SIGINT ignored (a background job
            // of a shell) would not stop on Ctrl-C. Every command starts
            // with the default dispositions (std already resets the mask
            // and SIGPIPE).
            for sig in 1..first_realtime {
                if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                    libc::signal(sig, libc::SIG_DFL);
                }
            }
            if let Some(r) = &chroot_to {
                if libc::chroot(r.as_ptr()) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            if libc::chdir(workdir_c.as_ptr()) != 0 || libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            // The pty slave is stdin by now: make it the controlling tty,
            // so Ctrl-C typed on it signals this process group.
            if tty && libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
            if change_ids
                && (libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(gid) != 0
                    || libc::setuid(uid) != 0)
            {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(cmd)
}

/// What looking at one candidate program gave.
enum Candidate {
    Runnable,
    NotRunnable(String),
    Missing,
}

fn examine(abs: &str, root: &GuestRoot) -> Candidate {
    match root.locate(abs).and_then(|l| std::fs::metadata(l.path)) {
        Err(_) => Candidate::Missing,
        Ok(m) if m.is_dir() => Candidate::NotRunnable("is a directory".into()),
        Ok(m) if m.permissions().mode() & 0o111 == 0 => {
            Candidate::NotRunnable("permission denied (not executable)".into())
        }
        Ok(_) => Candidate::Runnable,
    }
}

/// The absolute guest path of program `name`: as given when it holds a
/// `/` (relative to `workdir`), else the first runnable file in `path_var`.
fn find_program(
    name: &str,
    path_var: &str,
    workdir: &str,
    root: &GuestRoot,
) -> Result<String, Refusal> {
    if name.is_empty() || name.contains('\0') {
        return Err(refuse(NOT_FOUND, format!("{name:?}: command not found")));
    }
    if name.contains('/') {
        let abs = root
            .absolute(name, Some(workdir))
            .map_err(|m| refuse(NOT_FOUND, format!("{name}: {m}")))?;
        return match examine(&abs, root) {
            Candidate::Runnable => Ok(abs),
            Candidate::NotRunnable(why) => Err(refuse(CANNOT_RUN, format!("{name}: {why}"))),
            Candidate::Missing => Err(refuse(
                NOT_FOUND,
                format!("{name}: no such file or directory"),
            )),
        };
    }
    let mut not_runnable = None;
    for dir in path_var.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let Ok(abs) = root.absolute(&format!("{dir}/{name}"), Some(workdir)) else {
            continue;
        };
        match examine(&abs, root) {
            Candidate::Runnable => return Ok(abs),
            Candidate::NotRunnable(why) => {
                not_runnable.get_or_insert(format!("{name}: {why}"));
            }
            Candidate::Missing => {}
        }
    }
    Err(match not_runnable {
        Some(message) => refuse(CANNOT_RUN, message),
        None => refuse(NOT_FOUND, format!("{name}: command not found")),
    })
}
