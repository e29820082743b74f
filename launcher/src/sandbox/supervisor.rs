//! The supervisor: one process per running sandbox (`msb sandbox-supervisor
//! NAME`, started by `msb create`/`msb start` and detached from them). It
//! owns the VM, its daemons, the volume leases and the agent channel, and
//! serves clients on `<MSB_HOME>/sandboxes/<name>/control.sock`.
//!
//! Lifetime: it claims the sandbox's record, boots the machine in agent
//! mode, waits for the agent's `Ready`, then tells its starter it is up
//! (a line on the pipe passed as fd 3: `ready` or `error: …`). It ends on a
//! stop request from a client (`Shutdown`), on SIGTERM/SIGINT, or when the
//! VM or a daemon dies; every path tears the machine down and writes the
//! record's final state. The VMM and daemons die with it if it is killed
//! (`PR_SET_PDEATHSIG`), and their leases then read as stale.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::fd::FromRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use guest_init::protocol::{
    read_frame, write_frame, Frame, Incoming, Kind, Ready, ShutdownRequest, SignalRequest,
    PROTOCOL_VERSION,
};
use volumes::ProcessId;

use super::agent_link::{ends_session, AgentLink};
use super::error::{Error, Result};
use super::store::{SandboxStore, Status, UNHEALTHY_PREFIX};
use crate::machine::{self, GuestRole, Machine};
use crate::process::PASSED_FD;
use crate::run::signals;

/// Heartbeat period.
const PING_EVERY: Duration = Duration::from_secs(1);
/// No pong for this long: the sandbox is unhealthy.
const UNHEALTHY_AFTER: Duration = Duration::from_secs(5);
/// How long the guest gets to stop its processes on a clean stop.
const STOP_GRACE: Duration = Duration::from_secs(3);
/// How long after the guest's grace the VM gets to power off.
const POWEROFF_WAIT: Duration = Duration::from_secs(15);
/// File in the sandbox directory naming the supervisor's run directory,
/// so it can be removed if the supervisor is killed.
pub const RUN_DIR_NOTE: &str = "run-dir";
/// The sandbox's writable layer over its image (in its directory).
pub const UPPER_DISK: &str = "upper.raw";

/// Why the supervisor is stopping.
#[derive(Default)]
struct StopFlags {
    /// A client asked for a stop (`Shutdown` frame).
    requested: AtomicBool,
    /// Skip the guest's clean shutdown (`grace_ms` 0, or SIGTERM).
    force: AtomicBool,
}

/// Runs the supervisor of `name`; returns the process exit status.
pub fn main(name: &str, home: &std::path::Path) -> i32 {
    // SAFETY: the starter passes the write end of its ready pipe as fd 3
    // and nothing else in this process owns that descriptor.
    let mut ready = unsafe { File::from_raw_fd(PASSED_FD) };
    match supervise(name, home, &mut ready) {
        Ok(()) => 0,
        Err(e) => {
            let _ = writeln!(ready, "error: {e}");
            tracing::error!("{e}");
            1
        }
    }
}

/// The record of a sandbox owned by this process; its final state is
/// written on every way out.
struct Ownership {
    store: SandboxStore,
    name: String,
    end: (Status, Option<String>),
}

impl Drop for Ownership {
    fn drop(&mut self) {
        let sock = self.store.control_socket(&self.name);
        let _ = std::fs::remove_file(sock);
        let _ = std::fs::remove_file(self.store.dir(&self.name).join(RUN_DIR_NOTE));
        let (state, msg) = &self.end;
        if let Err(e) = self.store.release(&self.name, *state, msg.as_deref()) {
            tracing::error!("cannot record the end of sandbox {:?}: {e}", self.name);
        }
    }
}

fn supervise(name: &str, home: &std::path::Path, ready: &mut File) -> Result<()> {
    let mut store = SandboxStore::open(home)?;
    if !store.claim(name, ProcessId::current())? {
        return Err(Error::InvalidState(format!(
            "sandbox {name:?} is not waiting for a supervisor"
        )));
    }
    let spec = store.get(name)?.spec;
    let mut own = Ownership {
        store,
        name: name.to_string(),
        end: (Status::Crashed, Some("the supervisor failed".into())),
    };
    signals::install();
    std::env::set_current_dir(&spec.cwd).map_err(|e| Error::io(&spec.cwd, e))?;
    let mut checked = machine::check(&spec.machine)?;
    checked.holder = format!("sandbox {name}");
    let image = match &spec.image {
        Some(reference) => {
            let upper = machine::Upper::Disk(own.store.dir(name).join(UPPER_DISK));
            match machine::image::resolve(own.store.home(), reference, upper, false) {
                Ok(i) => Some(i),
                Err(e) => {
                    own.end = (Status::Stopped, Some(e.message.clone()));
                    return Err(e.into());
                }
            }
        }
        None => None,
    };
    let since = Instant::now();
    let mut machine = match Machine::prepare(checked, GuestRole::Agent, image) {
        Ok(m) => m,
        Err(e) => {
            own.end = (Status::Stopped, Some(e.message.clone()));
            return Err(e.into());
        }
    };
    let note = own.store.dir(name).join(RUN_DIR_NOTE);
    std::fs::write(&note, machine.dir().as_os_str().as_encoded_bytes())
        .map_err(|e| Error::io(&note, e))?;
    machine.start_vmm()?;
    let link = match AgentLink::boot(&mut machine, since, || signals::received().is_none()) {
        Ok(link) => Arc::new(link),
        Err(f) => {
            own.end = (Status::Stopped, Some(f.why.clone()));
            return Err(Error::Vm(format!(
                "{}. Last console lines:\n{}",
                f.why, f.console
            )));
        }
    };

    let sock_path = own.store.control_socket(name);
    let _ = std::fs::remove_file(&sock_path);
    let listener = UnixListener::bind(&sock_path).map_err(|e| Error::io(&sock_path, e))?;
    let flags = Arc::new(StopFlags::default());
    {
        let (link, flags) = (link.clone(), flags.clone());
        std::thread::spawn(move || accept_loop(listener, link, flags));
    }
    own.store.set_state(name, Status::Running, None)?;
    let _ = writeln!(ready, "ready");
    tracing::info!("sandbox {name:?} is up");

    own.end = watch(&mut own, &mut machine, &link, &flags);
    let (state, _) = own.end;
    if state == Status::Stopped {
        own.store.set_state(name, Status::Stopping, None)?;
        stop_guest(&mut machine, &link, flags.force.load(Ordering::SeqCst));
    }
    drop(link);
    drop(machine);
    Ok(())
}

/// Watches the VM until it must stop; returns the state to record.
fn watch(
    own: &mut Ownership,
    machine: &mut Machine,
    link: &AgentLink,
    flags: &StopFlags,
) -> (Status, Option<String>) {
    let mut last_ping = Instant::now();
    let mut unhealthy = false;
    loop {
        if flags.requested.load(Ordering::SeqCst) {
            return (Status::Stopped, None);
        }
        if let Some(sig) = signals::received() {
            tracing::info!("signal {sig}: stopping");
            flags.force.store(sig != libc::SIGHUP, Ordering::SeqCst);
            return (Status::Stopped, Some(format!("stopped by signal {sig}")));
        }
        if let Some(Ok(Some(st))) = machine.vmm_mut().map(|v| v.try_wait()) {
            return (
                Status::Crashed,
                Some(format!("the VM stopped unexpectedly ({st})")),
            );
        }
        if machine.must_stop() {
            return (
                Status::Crashed,
                Some("the guest rebooted or panicked".into()),
            );
        }
        let dead = machine
            .daemons_mut()
            .iter_mut()
            .find_map(|d| matches!(d.try_wait(), Ok(Some(_))).then(|| d.name().to_string()));
        if let Some(d) = dead {
            return (Status::Crashed, Some(format!("{d} exited unexpectedly")));
        }
        if last_ping.elapsed() >= PING_EVERY {
            last_ping = Instant::now();
            let _ = link.ping();
            let silent = link.is_closed() || link.since_pong() > UNHEALTHY_AFTER;
            if silent != unhealthy {
                unhealthy = silent;
                let msg = silent.then(|| {
                    format!(
                        "{UNHEALTHY_PREFIX} the guest agent has not answered for {}s",
                        link.since_pong().as_secs()
                    )
                });
                let _ = own
                    .store
                    .set_state(&own.name, Status::Running, msg.as_deref());
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Stops the guest: a clean shutdown through the agent (processes get
/// SIGTERM, disks are unmounted, the guest powers off), or straight to
/// stopping the VMM when `force` or when the guest does not comply.
fn stop_guest(machine: &mut Machine, link: &AgentLink, force: bool) {
    if !force && !link.is_closed() {
        let req = ShutdownRequest {
            grace_ms: STOP_GRACE.as_millis() as u64,
        };
        let _ = link.send(&Frame::json(Kind::Shutdown, 0, &req));
        if let Some(vmm) = machine.vmm_mut() {
            if vmm.wait_for(STOP_GRACE + POWEROFF_WAIT).is_some() {
                return;
            }
            tracing::warn!("the guest did not power off; stopping the VMM");
        }
    }
    if let Some(vmm) = machine.vmm_mut() {
        vmm.stop(Duration::from_millis(500));
    }
}

fn accept_loop(listener: UnixListener, link: Arc<AgentLink>, flags: Arc<StopFlags>) {
    for conn in listener.incoming() {
        match conn {
            Ok(stream) => {
                let (link, flags) = (link.clone(), flags.clone());
                std::thread::spawn(move || {
                    if let Err(e) = serve_client(stream, &link, &flags) {
                        tracing::debug!("client: {e}");
                    }
                });
            }
            Err(e) => tracing::warn!("control socket: {e}"),
        }
    }
}

/// Sessions of one client: its ids → the agent's.
type SessionMap = Arc<Mutex<HashMap<u32, u32>>>;

/// Serves one client connection: its sessions are forwarded to the agent
/// under fresh agent session ids, and their frames come back under the
/// client's ids. A client that goes away hangs up its sessions (SIGHUP to
/// their processes, stdin closed).
fn serve_client(stream: UnixStream, link: &Arc<AgentLink>, flags: &StopFlags) -> Result<()> {
    let io = |e: std::io::Error| Error::Agent(format!("client connection: {e}"));
    let mut reader = stream.try_clone().map_err(io)?;
    let writer = Arc::new(Mutex::new(stream));
    let sessions: SessionMap = Arc::default();
    let uptime = AtomicU64::new(0);
    let reply = |f: &Frame| -> Result<()> {
        let mut w = writer.lock().unwrap_or_else(|p| p.into_inner());
        write_frame(&mut *w, f).map_err(io)
    };
    let result = loop {
        let frame = match read_frame(&mut reader) {
            Ok(Incoming::Frame(f)) => f,
            Ok(Incoming::Malformed { session, why }) => {
                reply(&Frame::error(session, why))?;
                continue;
            }
            Ok(Incoming::End) => break Ok(()),
            Err(e) => break Err(io(e)),
        };
        match frame.kind {
            Kind::Hello => reply(&Frame::json(
                Kind::Ready,
                0,
                &Ready {
                    version: PROTOCOL_VERSION,
                    uptime_ms: uptime.load(Ordering::Relaxed),
                },
            ))?,
            Kind::Ping => reply(&Frame::data(Kind::Pong, 0, &frame.payload))?,
            Kind::Shutdown => {
                let req: ShutdownRequest = frame.parse().unwrap_or(ShutdownRequest { grace_ms: 1 });
                flags.force.store(req.grace_ms == 0, Ordering::SeqCst);
                flags.requested.store(true, Ordering::SeqCst);
            }
            Kind::Exec | Kind::Fs => {
                let client_id = frame.session;
                let known = sessions
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .contains_key(&client_id);
                if known || client_id == 0 {
                    reply(&Frame::error(client_id, "session id in use or 0"))?;
                    continue;
                }
                let (agent_id, rx) = link.open_session()?;
                sessions
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(client_id, agent_id);
                let (writer, sessions) = (writer.clone(), sessions.clone());
                std::thread::spawn(move || {
                    let mut started = false;
                    for mut f in rx {
                        started |= f.kind == Kind::Started;
                        let last = ends_session(&f, started);
                        f.session = client_id;
                        let mut w = writer.lock().unwrap_or_else(|p| p.into_inner());
                        if write_frame(&mut *w, &f).is_err() || last {
                            break;
                        }
                    }
                    sessions
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&client_id);
                });
                link.send(&Frame {
                    session: agent_id,
                    ..frame
                })?;
            }
            Kind::Stdin | Kind::Resize | Kind::Signal => {
                let agent_id = sessions
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&frame.session)
                    .copied();
                match agent_id {
                    Some(id) => link.send(&Frame {
                        session: id,
                        ..frame
                    })?,
                    None => reply(&Frame::error(frame.session, "no such session"))?,
                }
            }
            other => reply(&Frame::error(
                frame.session,
                format!("{other:?} is not a request"),
            ))?,
        }
    };
    hang_up(link, &sessions);
    result
}

/// Ends the agent sessions of a client that went away.
fn hang_up(link: &AgentLink, sessions: &SessionMap) {
    let open: Vec<u32> = sessions
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .drain()
        .map(|(_, a)| a)
        .collect();
    for id in open {
        let hup = SignalRequest {
            signal: libc::SIGHUP,
        };
        let _ = link.send(&Frame::json(Kind::Signal, id, &hup));
        let _ = link.send(&Frame::data(Kind::Stdin, id, &[]));
        link.close_session(id);
    }
}

/// The run directory a supervisor recorded, for cleaning up after one that
/// was killed.
pub fn recorded_run_dir(store: &SandboxStore, name: &str) -> Option<PathBuf> {
    let text = std::fs::read(store.dir(name).join(RUN_DIR_NOTE)).ok()?;
    let path = PathBuf::from(std::ffi::OsString::from(
        String::from_utf8_lossy(&text).into_owned(),
    ));
    // Only ever a directory msb made: msb-run-<pid>-<n>.
    let ok = path.is_absolute()
        && path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("msb-run-"));
    ok.then_some(path)
}
