//! The reader thread of a connection: decodes frames and routes them.
//!
//! Everything here answers fast: Ping is answered in place, execs are
//! spawned and handed to their own threads, fs operations run on theirs.
//! The only wait is for a session whose stdin queue is full (see
//! [`input`](super::input)). Each frame is handled under `catch_unwind`: a
//! bug hit by one request answers that request with an error and the
//! connection goes on.

use std::io::Read;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::input::Input;
use super::session::{exec, pump};
use super::sessions::{ExecHandle, Lookup};
use super::{fs, pty, shutdown, ServeEnd, Shared};
use crate::protocol::{
    self, ExecRequest, Frame, FsRequest, Hello, Incoming, Kind, Ready, ShutdownRequest,
    SignalRequest, WindowSize, PROTOCOL_VERSION,
};

/// Highest signal number (SIGRTMAX on Linux).
const MAX_SIGNAL: i32 = 64;
/// After a Shutdown: how long sessions get to send their last frames.
const LAST_FRAMES_WAIT: Duration = Duration::from_secs(2);

/// Serves frames from `reader` until the stream ends or a Shutdown.
pub fn run(mut reader: impl Read, shared: &Arc<Shared>) -> std::io::Result<ServeEnd> {
    let mut greeted = false;
    let end = loop {
        let frame = match protocol::read_frame(&mut reader) {
            Ok(Incoming::Frame(f)) => f,
            Ok(Incoming::Malformed { session, why }) => {
                shared.sink.error(session, why);
                continue;
            }
            Ok(Incoming::End) => break Ok(ServeEnd::Disconnected),
            Err(e) => break Err(e),
        };
        let (kind, id) = (frame.kind, frame.session);
        match panic::catch_unwind(AssertUnwindSafe(|| handle(shared, &mut greeted, frame))) {
            Ok(Some(end)) => break Ok(end),
            Ok(None) => {}
            Err(_) => {
                shared.sink.error(
                    id,
                    format!("internal error in the agent handling a {kind:?} frame"),
                );
            }
        }
    };
    shared.sessions.drop_inputs();
    if matches!(end, Ok(ServeEnd::Shutdown)) {
        // The processes are gone: let their sessions send their last frames.
        shared.wait_workers(Instant::now() + LAST_FRAMES_WAIT);
    } else {
        // Nobody is left to read the sessions' output: stop them.
        shared.sink.close();
        for e in shared.sessions.all_execs() {
            pump::kill_group(e.pid, libc::SIGKILL);
        }
    }
    shared.sink.close();
    end
}

/// Decodes a JSON payload, answering a bad one with an error.
fn parse<T: for<'a> serde::Deserialize<'a>>(shared: &Shared, frame: &Frame) -> Option<T> {
    match frame.parse::<T>() {
        Ok(v) => Some(v),
        Err(e) => {
            shared.sink.error(frame.session, e);
            None
        }
    }
}

fn handle(shared: &Arc<Shared>, greeted: &mut bool, frame: Frame) -> Option<ServeEnd> {
    let id = frame.session;
    let sink = &shared.sink;
    match frame.kind {
        Kind::Ping => {
            sink.send(&Frame::data(Kind::Pong, id, &frame.payload));
        }
        Kind::Hello => {
            let hello: Hello = parse(shared, &frame)?;
            if hello.version != PROTOCOL_VERSION {
                sink.error(
                    id,
                    format!(
                        "protocol version {} is not supported (this agent speaks {PROTOCOL_VERSION})",
                        hello.version
                    ),
                );
            } else {
                *greeted = true;
                let ready = Ready {
                    version: PROTOCOL_VERSION,
                    uptime_ms: crate::init::uptime_ms(),
                };
                sink.json(Kind::Ready, id, &ready);
            }
        }
        // The host's complaint about one of our frames: nothing to do
        // (and never answered, so two peers cannot trade errors forever).
        Kind::Error => {}
        kind if !*greeted => {
            sink.error(id, format!("{kind:?} frame before Hello: send Hello first"));
        }
        Kind::Exec | Kind::Fs if id == 0 => {
            sink.error(0, "session 0 is the connection: sessions need ids from 1");
        }
        Kind::Exec => exec::start(shared, id, parse::<ExecRequest>(shared, &frame)?),
        Kind::Fs => fs::start(shared, id, parse::<FsRequest>(shared, &frame)?),
        Kind::Stdin => stdin(shared, id, frame.payload),
        Kind::Resize => {
            let size: WindowSize = parse(shared, &frame)?;
            resize(shared, id, size);
        }
        Kind::Signal => {
            let req: SignalRequest = parse(shared, &frame)?;
            signal(shared, id, req.signal);
        }
        Kind::Shutdown => {
            let req: ShutdownRequest = parse(shared, &frame)?;
            shutdown::stop_processes(shared, Duration::from_millis(req.grace_ms));
            return Some(ServeEnd::Shutdown);
        }
        kind => {
            sink.error(id, format!("{kind:?} frames go from the agent to the host"));
        }
    }
    None
}

/// Answers a frame for a session that is not live: quietly dropped when
/// the session ended recently (the host had not seen it end), an error
/// otherwise.
fn not_live<T>(shared: &Shared, id: u32, found: Lookup<T>) {
    if matches!(found, Lookup::Unknown) {
        shared.sink.error(id, format!("no session {id}"));
    }
}

fn stdin(shared: &Shared, id: u32, data: Vec<u8>) {
    let end = data.is_empty();
    let found = if end {
        shared.sessions.take_input(id)
    } else {
        shared.sessions.input(id)
    };
    match found {
        Lookup::Live(Some(queue)) => {
            // Fails only when the consumer is gone (process exited,
            // operation failed): its input no longer matters.
            let _ = queue.send(if end { Input::End } else { Input::Data(data) });
        }
        Lookup::Live(None) => {
            shared.sink.error(
                id,
                format!("session {id} takes no stdin (or it was closed)"),
            );
        }
        other => not_live(shared, id, other),
    }
}

fn resize(shared: &Shared, id: u32, size: WindowSize) {
    match shared.sessions.exec(id) {
        Lookup::Live(Some(ExecHandle {
            pty: Some(master), ..
        })) => {
            use std::os::fd::AsFd;
            if let Err(err) = pty::set_size(master.as_fd(), size) {
                shared
                    .sink
                    .error(id, format!("session {id}: resize: {err}"));
            }
        }
        Lookup::Live(_) => {
            shared
                .sink
                .error(id, format!("session {id} has no terminal to resize"));
        }
        other => not_live(shared, id, other),
    }
}

fn signal(shared: &Shared, id: u32, signal: i32) {
    if !(1..=MAX_SIGNAL).contains(&signal) {
        shared
            .sink
            .error(id, format!("session {id}: no signal number {signal}"));
        return;
    }
    match shared.sessions.exec(id) {
        Lookup::Live(Some(e)) => pump::kill_group(e.pid, signal),
        Lookup::Live(None) => {
            shared
                .sink
                .error(id, format!("session {id} runs no process to signal"));
        }
        other => not_live(shared, id, other),
    }
}
