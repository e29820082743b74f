//! The thread of one exec session: forwards its output, enforces its
//! timeout, and sends `Exited` once the output is through.
//!
//! When `Exited` goes out: after the process has ended and its output
//! streams have reached EOF. A stream can stay open after the process ends
//! because a background process it started holds it; then the stream is
//! read on while data keeps coming with gaps under [`AFTER_EXIT_QUIET`],
//! up to [`AFTER_EXIT_MAX`] bytes (more than the pipes can hold when the
//! process ends, so nothing the process itself wrote is lost). Output of
//! background processes after that is dropped.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::process::ExitStatusExt;
use std::panic::{self, AssertUnwindSafe};
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::agent::reaper::ExitWatch;
use crate::agent::Shared;
use crate::protocol::{Exited, Kind};

/// After the process ended: a quiet gap this long ends the output.
pub const AFTER_EXIT_QUIET: Duration = Duration::from_millis(100);
/// After the process ended: at most this many more bytes are forwarded.
pub const AFTER_EXIT_MAX: u64 = 4 << 20;
/// Bytes read at once.
const READ_SIZE: usize = 256 * 1024;

/// One output stream of the process.
pub struct Stream {
    file: File,
    kind: Kind,
}

impl Stream {
    /// Output read from `file`, sent as `kind` frames.
    pub fn new(file: File, kind: Kind) -> Stream {
        Stream { file, kind }
    }
}

/// Sends `signal` to the process group of `pid` (or to `pid` alone when
/// the group is gone: it may have moved to another one).
pub fn kill_group(pid: libc::pid_t, signal: i32) {
    // SAFETY: kill takes no pointers; a gone process is ESRCH, ignored.
    unsafe {
        if libc::kill(-pid, signal) != 0 {
            libc::kill(pid, signal);
        }
    }
}

/// Starts the session thread.
pub fn spawn(
    shared: &Arc<Shared>,
    id: u32,
    pid: libc::pid_t,
    streams: Vec<Stream>,
    exit: Arc<ExitWatch>,
    timeout: Option<Duration>,
) {
    let worker = shared.clone();
    let body = move || {
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
            pump(&worker, id, pid, streams, &exit, timeout)
        }));
        let exited = outcome.unwrap_or_else(|_| {
            kill_group(pid, libc::SIGKILL);
            Exited {
                code: None,
                signal: None,
                timed_out: false,
                error: Some(format!("session {id}: internal error in the agent")),
            }
        });
        worker.sessions.end(id);
        worker.sink.json(Kind::Exited, id, &exited);
    };
    if let Err(e) = shared.spawn_worker(format!("msb-exec-{id}"), body) {
        kill_group(pid, libc::SIGKILL);
        shared.sessions.end(id);
        let error = Some(format!(
            "session {id}: the agent cannot start a thread: {e}"
        ));
        let exited = Exited {
            code: None,
            signal: None,
            timed_out: false,
            error,
        };
        shared.sink.json(Kind::Exited, id, &exited);
    }
}

fn pump(
    shared: &Shared,
    id: u32,
    pid: libc::pid_t,
    mut streams: Vec<Stream>,
    exit: &ExitWatch,
    timeout: Option<Duration>,
) -> Exited {
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut buf = vec![0u8; READ_SIZE];
    let mut status: Option<i32> = None;
    let mut timed_out = false;
    // Since the process ended: when data last came, and how much.
    let mut quiet_since = Instant::now();
    let mut after_exit: u64 = 0;
    loop {
        if status.is_none() {
            status = exit.status();
            if status.is_some() {
                quiet_since = Instant::now();
            }
        }
        if status.is_some()
            && (streams.is_empty()
                || quiet_since.elapsed() >= AFTER_EXIT_QUIET
                || after_exit >= AFTER_EXIT_MAX)
        {
            break;
        }
        let wait = match (status, deadline) {
            (Some(_), _) => Some(AFTER_EXIT_QUIET.saturating_sub(quiet_since.elapsed())),
            (None, Some(d)) if !timed_out => Some(d.saturating_duration_since(Instant::now())),
            _ => None,
        };
        let ready = poll_streams(&streams, status.is_none().then_some(exit), wait);
        for i in ready.into_iter().rev() {
            match read_some(&mut streams[i].file, &mut buf) {
                Ok(0) | Err(_) => {
                    streams.remove(i);
                }
                Ok(n) => {
                    shared.sink.data(streams[i].kind, id, &buf[..n]);
                    if status.is_some() {
                        quiet_since = Instant::now();
                        after_exit += n as u64;
                    }
                }
            }
        }
        if let (None, Some(d)) = (status, deadline) {
            if !timed_out && Instant::now() >= d {
                kill_group(pid, libc::SIGKILL);
                timed_out = true;
            }
        }
    }
    let st = ExitStatus::from_raw(status.unwrap_or(0));
    Exited {
        code: st.code(),
        signal: st.signal(),
        timed_out,
        error: None,
    }
}

/// Reads once; EINTR retried, a pty's EIO (every slave closed) is EOF.
fn read_some(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match file.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.raw_os_error() == Some(libc::EIO) => return Ok(0),
            other => return other,
        }
    }
}

/// Waits until a stream is readable (or hung up), the exit watch fires, or
/// `wait` passes; returns the indexes of the ready streams, ascending.
fn poll_streams(
    streams: &[Stream],
    exit: Option<&ExitWatch>,
    wait: Option<Duration>,
) -> Vec<usize> {
    let mut fds: Vec<libc::pollfd> = streams
        .iter()
        .map(|s| libc::pollfd {
            fd: s.file.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    if let Some(w) = exit {
        fds.push(libc::pollfd {
            fd: w.event_fd().as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        });
    }
    let ms = match wait {
        // Round up so a short wait does not spin at 0 ms.
        Some(d) => d.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int,
        None => -1,
    };
    // SAFETY: fds is a valid array of fds.len() pollfd structs.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
    if n <= 0 {
        return Vec::new();
    }
    (0..streams.len())
        .filter(|&i| fds[i].revents != 0)
        .collect()
}
