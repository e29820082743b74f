//! `msb exec` and `msb shell`: a command in a running sandbox, with its
//! output streamed as it comes, stdin forwarded (`-i`), a pty (`-t`: the
//! local terminal in raw mode, resizes forwarded), and signals to `msb`
//! passed on to the command.

use std::io::{IsTerminal, Read, Write};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use guest_init::protocol::{ExecRequest, Exited, WindowSize};

use super::args::{ExecArgs, ShellArgs};
use crate::exit;
use crate::sandbox::client::{ExecEvent, ExecInput, ExecSession};
use crate::sandbox::{lifecycle, Error, Result};

/// Runs `msb exec`; returns the exit status.
pub fn exec(home: &std::path::Path, args: &ExecArgs) -> Result<i32> {
    let env = crate::machine::resolve_env(&args.env)?;
    let (uid, gid) = parse_user(args.user.as_deref())?;
    if let Some(w) = &args.workdir {
        if !w.starts_with('/') {
            return Err(Error::Invalid(format!(
                "--workdir {w:?} must be an absolute guest path"
            )));
        }
    }
    let req = ExecRequest {
        argv: args.command.clone(),
        env,
        workdir: args.workdir.clone(),
        uid,
        gid,
        stdin: args.interactive,
        tty: args.tty.then(terminal_size),
        timeout_ms: args.timeout.map(|s| s.saturating_mul(1000)),
    };
    run_session(home, &args.name, &req, args.timeout)
}

/// Runs `msb shell`: an interactive shell (a pty when stdin is a terminal).
pub fn shell(home: &std::path::Path, args: &ShellArgs) -> Result<i32> {
    let (uid, gid) = parse_user(args.user.as_deref())?;
    let tty = std::io::stdin().is_terminal();
    let req = ExecRequest {
        argv: vec![args.shell.clone()],
        env: Vec::new(),
        workdir: None,
        uid,
        gid,
        stdin: true,
        tty: tty.then(terminal_size),
        timeout_ms: None,
    };
    run_session(home, &args.name, &req, None)
}

/// Parses `-u UID[:GID]` (numbers only: the guest's user names are not
/// known on the host).
pub fn parse_user(text: Option<&str>) -> Result<(Option<u32>, Option<u32>)> {
    let Some(text) = text else {
        return Ok((None, None));
    };
    let bad = || Error::Invalid(format!("-u {text:?}: give UID or UID:GID as numbers"));
    let (u, g) = match text.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (text, None),
    };
    let uid = u.parse::<u32>().map_err(|_| bad())?;
    let gid = g.map(|g| g.parse::<u32>().map_err(|_| bad())).transpose()?;
    Ok((Some(uid), gid.or(Some(uid))))
}

/// The exit status of a finished command, printing why when it did not
/// exit by itself.
pub fn exit_status(e: &Exited, timeout: Option<u64>) -> i32 {
    if let Some(msg) = &e.error {
        eprintln!("msb: {msg}");
    }
    if e.timed_out {
        eprintln!(
            "msb: timed out after {}s; command killed",
            timeout.unwrap_or(0)
        );
        return exit::TIMEOUT;
    }
    match (e.code, e.signal) {
        (Some(c), _) => c,
        (None, Some(s)) => exit::SIGNAL_BASE + s,
        (None, None) => exit::LAUNCHER,
    }
}

fn run_session(
    home: &std::path::Path,
    name: &str,
    req: &ExecRequest,
    timeout: Option<u64>,
) -> Result<i32> {
    let socket = lifecycle::control_socket(home, name)?;
    let session = ExecSession::start(&socket, name, req)?;
    drive(session, req, timeout)
}

/// Runs an exec session on this terminal to its end: output streamed,
/// stdin forwarded when `req.stdin`, the terminal raw with a pty, signals
/// to `msb` passed on; returns the exit status (`msb exec`, `msb run -i`).
pub fn drive(mut session: ExecSession, req: &ExecRequest, timeout: Option<u64>) -> Result<i32> {
    let input = session.input();
    let _raw = if req.tty.is_some() {
        RawTerminal::enable()
    } else {
        None
    };
    if req.stdin {
        let input = input.clone();
        std::thread::spawn(move || forward_stdin(&input));
    }
    forward_signals(input, req.tty.is_some());
    let mut out = std::io::stdout();
    let mut err = std::io::stderr();
    loop {
        match session.next_event()? {
            ExecEvent::Stdout(b) => {
                out.write_all(&b).map_err(|e| Error::io("stdout", e))?;
                out.flush().map_err(|e| Error::io("stdout", e))?;
            }
            ExecEvent::Stderr(b) => {
                err.write_all(&b).map_err(|e| Error::io("stderr", e))?;
            }
            ExecEvent::Exited(e) => {
                drop(_raw);
                return Ok(exit_status(&e, timeout));
            }
        }
    }
}

fn forward_stdin(input: &ExecInput) {
    let mut stdin = std::io::stdin().lock();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match stdin.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if input.write(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let _ = input.close();
}

static PENDING: AtomicI32 = AtomicI32::new(0);

extern "C" fn note_signal(sig: libc::c_int) {
    PENDING.store(sig, Ordering::SeqCst);
}

/// Passes SIGINT, SIGTERM and SIGHUP sent to `msb` on to the command, and
/// with a pty, terminal resizes (SIGWINCH) as `Resize`.
fn forward_signals(input: ExecInput, tty: bool) {
    let mut sigs = vec![libc::SIGINT, libc::SIGTERM, libc::SIGHUP];
    if tty {
        sigs.push(libc::SIGWINCH);
    }
    for sig in sigs {
        // SAFETY: the handler only stores into an atomic (async-signal-safe);
        // the sigaction struct is fully initialised.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = note_signal as *const () as libc::sighandler_t;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_millis(20));
        match PENDING.swap(0, Ordering::SeqCst) {
            0 => {}
            libc::SIGWINCH => {
                let _ = input.resize(terminal_size());
            }
            sig => {
                if input.signal(sig).is_err() {
                    return;
                }
            }
        }
    });
}

/// The local terminal's size (24x80 when stdout is not a terminal).
pub fn terminal_size() -> WindowSize {
    let mut ws: libc::winsize = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes a winsize into the struct we pass.
    let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) } == 0;
    if ok && ws.ws_row > 0 && ws.ws_col > 0 {
        WindowSize {
            rows: ws.ws_row,
            cols: ws.ws_col,
        }
    } else {
        WindowSize { rows: 24, cols: 80 }
    }
}

/// The local terminal in raw mode (keys reach the guest's pty as typed,
/// Ctrl-C included) until dropped.
struct RawTerminal {
    saved: libc::termios,
}

impl RawTerminal {
    fn enable() -> Option<RawTerminal> {
        if !std::io::stdin().is_terminal() {
            return None;
        }
        // SAFETY: termios is plain data that tcgetattr fills; fd 0 is valid.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(libc::STDIN_FILENO, &mut t) != 0 {
                return None;
            }
            let saved = t;
            libc::cfmakeraw(&mut t);
            libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &t);
            Some(RawTerminal { saved })
        }
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        // SAFETY: restores the settings read in `enable` on the same fd.
        unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &self.saved) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_are_numbers() {
        assert_eq!(parse_user(None).unwrap(), (None, None));
        assert_eq!(parse_user(Some("1000")).unwrap(), (Some(1000), Some(1000)));
        assert_eq!(parse_user(Some("1000:5")).unwrap(), (Some(1000), Some(5)));
        for bad in ["root", "1:x", ":1", ""] {
            assert!(parse_user(Some(bad))
                .unwrap_err()
                .to_string()
                .contains("UID"));
        }
    }

    #[test]
    fn statuses_follow_msb_run() {
        let e = |code, signal, timed_out| Exited {
            code,
            signal,
            timed_out,
            error: None,
        };
        assert_eq!(exit_status(&e(Some(3), None, false), None), 3);
        assert_eq!(exit_status(&e(None, Some(9), false), None), 137);
        assert_eq!(exit_status(&e(None, Some(9), true), Some(1)), 124);
    }
}
