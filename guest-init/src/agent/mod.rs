//! The sandbox agent: what `msb-init` serves, instead of running one
//! command, when the config names an [`AgentChannel`]. It speaks the
//! [`protocol`](crate::protocol) and runs until a Shutdown request.
//!
//! [`serve`] works over any byte stream, so the host side and the tests can
//! drive it over a unix socket; [`run_in_guest`] is PID 1's entry (devpts,
//! the channel, reconnections).
//!
//! Threads of a connection:
//! - the reader (`connection`): decodes frames, answers Ping at once,
//!   starts sessions, routes stdin, resizes and signals;
//! - per exec session, a pump (`session::pump`: output, timeout, the
//!   `Exited` frame) and, when it takes stdin, a feeder (`input`);
//! - per fs session, a worker (`fs`);
//! - one process-wide `reaper`.
//!
//! Frames from all of them go through one `sink::FrameSink`, a lock
//! around each frame's write.

mod channel;
mod connection;
mod fs;
mod guest_path;
mod input;
mod pty;
pub mod reaper;
mod session;
mod sessions;
mod shutdown;
mod sink;

use std::io::{self, Read, Write};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use crate::config::AgentChannel;
use guest_path::GuestRoot;
use reaper::{lock, Reaper};
use sessions::Sessions;
use sink::FrameSink;

pub use session::pump::{AFTER_EXIT_MAX, AFTER_EXIT_QUIET};

/// How the agent runs its sessions.
#[derive(Debug, Clone, Default)]
pub struct AgentOptions {
    /// Directory commands run in (they chroot there) and fs paths resolve
    /// beneath: "" for `/`.
    pub root: String,
    /// `KEY=VALUE` entries every command gets (the sandbox's environment),
    /// before the request's own.
    pub env: Vec<String>,
    /// Working directory of commands that name none, and start of relative
    /// fs paths (default `/`).
    pub workdir: Option<String>,
    /// The agent is the guest's PID 1: a Shutdown signals every process of
    /// the machine, not only the sessions' (never set this on a host).
    pub owns_machine: bool,
    /// User id of commands whose request names none (the image's `User`).
    pub uid: u32,
    /// Group id of commands whose request names no user (the image's
    /// `User`).
    pub gid: u32,
}

/// Why [`serve`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServeEnd {
    /// A Shutdown request was carried out: processes are stopped.
    Shutdown,
    /// The stream ended; the connection's sessions were killed.
    Disconnected,
}

/// What the threads of one connection share.
pub(crate) struct Shared {
    sink: Arc<FrameSink>,
    sessions: Sessions,
    options: AgentOptions,
    root: GuestRoot,
    reaper: &'static Reaper,
    workers: Workers,
}

/// Session threads that have not sent their last frame yet.
#[derive(Default)]
struct Workers {
    count: Mutex<usize>,
    idle: Condvar,
}

/// Counts a worker out when its thread ends (panicking or not).
struct WorkerDone<'a>(&'a Workers);

impl Drop for WorkerDone<'_> {
    fn drop(&mut self) {
        let mut count = lock(&self.0.count);
        *count = count.saturating_sub(1);
        self.0.idle.notify_all();
    }
}

impl Shared {
    /// Starts a session thread, counted until it ends.
    fn spawn_worker(
        self: &Arc<Self>,
        name: String,
        body: impl FnOnce() + Send + 'static,
    ) -> io::Result<()> {
        *lock(&self.workers.count) += 1;
        let me = self.clone();
        let started = std::thread::Builder::new().name(name).spawn(move || {
            let _done = WorkerDone(&me.workers);
            body();
        });
        if started.is_err() {
            drop(WorkerDone(&self.workers));
        }
        started.map(|_| ())
    }

    /// Waits until every session thread has sent its last frame, or
    /// `deadline`; true when they all have.
    fn wait_workers(&self, deadline: Instant) -> bool {
        let mut count = lock(&self.workers.count);
        while *count > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            count = self
                .workers
                .idle
                .wait_timeout(count, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }
}

/// Serves one connection: frames are read from `reader` on this thread and
/// answers written to `writer`. Returns when the stream ends (an error for
/// a stream cut inside a frame) or after a Shutdown. The process's children
/// are reaped by the [`reaper`] from then on: nothing else in the process
/// may wait for its own children.
pub fn serve<R: Read, W: Write + Send + 'static>(
    reader: R,
    writer: W,
    options: &AgentOptions,
) -> io::Result<ServeEnd> {
    let shared = Arc::new(Shared {
        sink: FrameSink::new(writer),
        sessions: Sessions::default(),
        options: options.clone(),
        root: GuestRoot::open(&options.root, options.workdir.as_deref())?,
        reaper: Reaper::global(),
        workers: Workers::default(),
    });
    connection::run(reader, &shared)
}

/// PID 1's agent: mounts devpts, then serves `channel` until a Shutdown
/// has stopped every process. Fails only when the channel cannot be opened.
pub fn run_in_guest(channel: &AgentChannel, options: &AgentOptions) -> Result<(), String> {
    if let Err(m) = pty::mount_devpts(&options.root) {
        // Sessions without a terminal still work.
        eprintln!("msb-init agent: {m}; terminal sessions will fail");
    }
    Reaper::global();
    channel::serve_forever(channel, options)
}
