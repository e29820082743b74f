//! The supervisor's end of the agent channel: one connection to the guest
//! agent, shared by every client session.
//!
//! A reader thread takes frames off the channel and routes them by session
//! id to whoever opened the session ([`AgentLink::open_session`]); pongs
//! update the heartbeat clock. Sessions end with their terminal frame
//! (`Exited`, `FsDone`, or an `Error` for the session), after which the
//! route is dropped. Writers share one lock, so frames go out whole.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use guest_init::protocol::{
    read_frame, write_frame, Frame, Hello, Incoming, Kind, Ready, AGENT_VSOCK_PORT,
    PROTOCOL_VERSION,
};

use super::error::{Error, Result};
use crate::machine::Machine;
use crate::vmm::VmmKind;

/// Whether `frame` is the last one of its session, given whether the
/// session's process has started: `Exited` and `FsDone` always end it; an
/// `Error` ends it only before `Started` (a refused exec, a failed file
/// operation) — after that the agent's errors answer a bad Resize, Signal
/// or Stdin, and the process runs on to its `Exited`.
pub fn ends_session(frame: &Frame, started: bool) -> bool {
    frame.session != 0
        && match frame.kind {
            Kind::Exited | Kind::FsDone => true,
            Kind::Error => !started,
            _ => false,
        }
}

/// Where a session's frames go, and whether its process has started.
struct Route {
    tx: Sender<Frame>,
    started: bool,
}

type Routes = Arc<Mutex<HashMap<u32, Route>>>;

/// Why a VM's agent never answered.
#[derive(Debug)]
pub struct BootFailure {
    /// The boot step that did not happen, or the channel's error.
    pub why: String,
    /// The guest console's last lines.
    pub console: String,
}

/// A live connection to the guest agent.
pub struct AgentLink {
    writer: Mutex<UnixStream>,
    routes: Routes,
    last_pong: Arc<Mutex<Instant>>,
    next_session: AtomicU32,
    closed: Arc<AtomicBool>,
    reader: Option<JoinHandle<()>>,
}

impl AgentLink {
    /// Connects to the agent through the VMM's socket and waits for its
    /// `Ready`, until `deadline` or until `vm_alive` says the VM is gone.
    /// The socket appears once the VMM has started; the agent answers once
    /// the guest has booted, so `Hello` is repeated every second.
    pub fn connect(
        socket: &Path,
        kind: VmmKind,
        deadline: Instant,
        mut vm_alive: impl FnMut() -> bool,
    ) -> Result<(AgentLink, Ready)> {
        let stream = open_channel(socket, kind, deadline, &mut vm_alive)?;
        let reader_stream = stream
            .try_clone()
            .map_err(|e| Error::Agent(format!("agent channel: {e}")))?;
        let routes: Routes = Arc::default();
        let last_pong = Arc::new(Mutex::new(Instant::now()));
        let closed = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel();
        let reader = {
            let (routes, last_pong, closed) = (routes.clone(), last_pong.clone(), closed.clone());
            std::thread::spawn(move || {
                read_loop(reader_stream, &routes, &last_pong, ready_tx);
                closed.store(true, Ordering::SeqCst);
                // Every open session learns that the agent is gone.
                routes.lock().unwrap_or_else(|p| p.into_inner()).clear();
            })
        };
        let link = AgentLink {
            writer: Mutex::new(stream),
            routes,
            last_pong,
            next_session: AtomicU32::new(1),
            closed,
            reader: Some(reader),
        };
        let hello = Frame::json(
            Kind::Hello,
            0,
            &Hello {
                version: PROTOCOL_VERSION,
            },
        );
        loop {
            link.send(&hello)?;
            match ready_rx.recv_timeout(Duration::from_secs(1)) {
                Ok(ready) => return Ok((link, ready)),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(Error::Vm("the agent channel closed during boot".into()))
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            if !vm_alive() {
                return Err(Error::Vm("the VM stopped during boot".into()));
            }
            if Instant::now() >= deadline {
                return Err(Error::Vm("the guest agent did not answer".into()));
            }
        }
    }

    /// Connects to the agent of `machine` (its VMM started) within the
    /// machine's boot deadline counted from `since`, while `keep_going`
    /// holds; a failure names the boot step that did not happen and carries
    /// the console's last lines.
    pub fn boot(
        machine: &mut Machine,
        since: Instant,
        mut keep_going: impl FnMut() -> bool,
    ) -> std::result::Result<AgentLink, BootFailure> {
        let boot = machine.boot_watch();
        let deadline = since + boot.deadline;
        let failure = |machine: &Machine, why: String| BootFailure {
            why,
            console: crate::run::tail_lines(&machine.plan().console_log, 15),
        };
        let Some(socket) = machine.plan().agent_socket.clone() else {
            return Err(failure(machine, "no agent channel in the VM plan".into()));
        };
        let kind = machine.kind();
        let connected = AgentLink::connect(&socket, kind, deadline, || {
            keep_going()
                && machine
                    .vmm_mut()
                    .is_some_and(|v| matches!(v.try_wait(), Ok(None)))
        });
        connected.map(|(link, _)| link).map_err(|e| {
            let why = if Instant::now() >= deadline {
                boot.missing_step()
            } else {
                e.to_string()
            };
            failure(machine, why)
        })
    }

    /// Sends one frame to the agent.
    pub fn send(&self, frame: &Frame) -> Result<()> {
        let mut w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        write_frame(&mut *w, frame).map_err(|e| Error::Agent(format!("agent channel: {e}")))
    }

    /// A new agent session id and the receiver of its frames.
    pub fn open_session(&self) -> Result<(u32, Receiver<Frame>)> {
        if self.is_closed() {
            return Err(Error::Agent("the agent connection is closed".into()));
        }
        let id = self.next_session.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel();
        self.routes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, Route { tx, started: false });
        Ok((id, rx))
    }

    /// Forgets a session (its frames are dropped from now on).
    pub fn close_session(&self, id: u32) {
        self.routes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
    }

    /// Sends a heartbeat.
    pub fn ping(&self) -> Result<()> {
        self.send(&Frame::data(Kind::Ping, 0, b"hb"))
    }

    /// Time since the agent last answered a heartbeat.
    pub fn since_pong(&self) -> Duration {
        self.last_pong
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .elapsed()
    }

    /// True once the channel has ended.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }
}

impl Drop for AgentLink {
    fn drop(&mut self) {
        let w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let _ = w.shutdown(std::net::Shutdown::Both);
        drop(w);
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

fn read_loop(
    mut stream: UnixStream,
    routes: &Routes,
    last_pong: &Mutex<Instant>,
    ready_tx: Sender<Ready>,
) {
    loop {
        let frame = match read_frame(&mut stream) {
            Ok(Incoming::Frame(f)) => f,
            Ok(Incoming::Malformed { session, why }) => {
                tracing::warn!("agent sent a malformed frame (session {session}): {why}");
                continue;
            }
            Ok(Incoming::End) => return,
            Err(e) => {
                tracing::debug!("agent channel ended: {e}");
                return;
            }
        };
        match frame.kind {
            Kind::Pong => *last_pong.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now(),
            Kind::Ready => {
                if let Ok(ready) = frame.parse::<Ready>() {
                    let _ = ready_tx.send(ready);
                }
            }
            Kind::Error if frame.session == 0 => {
                tracing::warn!("agent: {}", String::from_utf8_lossy(&frame.payload));
            }
            _ => {
                let mut map = routes.lock().unwrap_or_else(|p| p.into_inner());
                let session = frame.session;
                let Some(route) = map.get_mut(&session) else {
                    continue;
                };
                route.started |= frame.kind == Kind::Started;
                let last = ends_session(&frame, route.started);
                let _ = route.tx.send(frame);
                if last {
                    map.remove(&session);
                }
            }
        }
    }
}

/// Connects to the VMM's agent socket, retrying while the VM starts; under
/// cloud-hypervisor also does the hybrid vsock handshake (`CONNECT <port>\n`
/// answered by `OK <host port>\n`; CH closes the connection while nothing
/// listens on the guest port, so each try is a new connection).
fn open_channel(
    socket: &Path,
    kind: VmmKind,
    deadline: Instant,
    vm_alive: &mut impl FnMut() -> bool,
) -> Result<UnixStream> {
    loop {
        let attempt = UnixStream::connect(socket).and_then(|s| {
            if kind == VmmKind::CloudHypervisor {
                hybrid_vsock_handshake(&s)?;
            }
            Ok(s)
        });
        match attempt {
            Ok(s) => return Ok(s),
            Err(e) => {
                if !vm_alive() || Instant::now() >= deadline {
                    return Err(Error::Vm(format!(
                        "cannot connect to the agent channel {}: {e}",
                        socket.display()
                    )));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

fn hybrid_vsock_handshake(stream: &UnixStream) -> std::io::Result<()> {
    let mut w = stream;
    writeln!(w, "CONNECT {AGENT_VSOCK_PORT}")?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut line = String::new();
    // One byte at a time: nothing after the line may be consumed here.
    let mut byte = [0u8; 1];
    while !line.ends_with('\n') && line.len() < 64 {
        if std::io::Read::read(&mut w, &mut byte)? == 0 {
            break;
        }
        line.push(byte[0] as char);
    }
    stream.set_read_timeout(None)?;
    if line.starts_with("OK") {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "vsock handshake answered {:?}",
            line.trim()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_end_a_session_only_before_it_started() {
        let f = |kind, session| Frame::data(kind, session, b"");
        assert!(ends_session(&f(Kind::Exited, 3), true));
        assert!(ends_session(&f(Kind::FsDone, 3), false));
        assert!(ends_session(&f(Kind::Error, 3), false));
        assert!(!ends_session(&f(Kind::Error, 3), true));
        assert!(!ends_session(&f(Kind::Stdout, 3), true));
        assert!(!ends_session(&f(Kind::Error, 0), false));
    }
}
