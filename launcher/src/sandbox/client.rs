//! Talking to a running sandbox's supervisor over its control socket: exec
//! sessions ([`ExecSession`]), file operations ([`fs_request`]) and stop
//! requests. Blocking; the async SDK runs these on tokio's blocking pool.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{Arc, Mutex};

use guest_init::protocol::{
    read_frame, write_frame, ExecRequest, Exited, Frame, FsReply, FsRequest, Hello, Incoming, Kind,
    ShutdownRequest, SignalRequest, WindowSize, MAX_PAYLOAD, PROTOCOL_VERSION,
};

use super::agent_link::AgentLink;
use super::error::{Error, Result};

/// Session id a client uses for its one session per connection.
const SESSION: u32 = 1;

fn io_err(e: std::io::Error) -> Error {
    Error::Agent(format!("sandbox connection: {e}"))
}

/// An open control connection (after the Hello/Ready exchange).
struct Connection {
    reader: UnixStream,
    writer: Arc<Mutex<UnixStream>>,
}

impl Connection {
    fn open(socket: &Path, sandbox: &str) -> Result<Connection> {
        let stream = UnixStream::connect(socket).map_err(|e| {
            Error::InvalidState(format!(
                "sandbox {sandbox:?} is not answering on {} ({e}); is it running?",
                socket.display()
            ))
        })?;
        let mut conn = Connection {
            reader: stream.try_clone().map_err(io_err)?,
            writer: Arc::new(Mutex::new(stream)),
        };
        conn.send(&Frame::json(
            Kind::Hello,
            0,
            &Hello {
                version: PROTOCOL_VERSION,
            },
        ))?;
        match conn.next()? {
            Some(f) if f.kind == Kind::Ready => Ok(conn),
            Some(f) => Err(Error::Agent(format!(
                "sandbox {sandbox:?} answered {:?} to Hello",
                f.kind
            ))),
            None => Err(Error::Agent(format!(
                "sandbox {sandbox:?} closed the connection"
            ))),
        }
    }

    fn send(&self, frame: &Frame) -> Result<()> {
        let mut w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        write_frame(&mut *w, frame).map_err(io_err)
    }

    /// The next frame, `None` at the end of the connection.
    fn next(&mut self) -> Result<Option<Frame>> {
        loop {
            match read_frame(&mut self.reader).map_err(io_err)? {
                Incoming::Frame(f) => return Ok(Some(f)),
                Incoming::Malformed { why, .. } => {
                    tracing::warn!("malformed frame from the supervisor: {why}")
                }
                Incoming::End => return Ok(None),
            }
        }
    }
}

/// What an exec session produces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecEvent {
    /// Bytes on stdout (or the pty).
    Stdout(Vec<u8>),
    /// Bytes on stderr.
    Stderr(Vec<u8>),
    /// The process ended; nothing follows.
    Exited(Exited),
}

/// Sends one frame of a session.
type FrameSender = Arc<dyn Fn(Frame) -> Result<()> + Send + Sync>;
/// Receives the next frame of a session (`None` once the transport ended).
type FrameReceiver = Box<dyn FnMut() -> Result<Option<Frame>> + Send>;

/// A process running in a sandbox, reached through a supervisor's control
/// socket ([`ExecSession::start`]) or straight through an agent link
/// ([`ExecSession::over_agent`], for `msb run -i`).
pub struct ExecSession {
    send: FrameSender,
    recv: FrameReceiver,
    session: u32,
    done: bool,
    started: bool,
}

/// Sends input, resizes and signals to an [`ExecSession`] from another
/// thread.
#[derive(Clone)]
pub struct ExecInput {
    send: FrameSender,
    session: u32,
}

impl ExecInput {
    /// Sends bytes to the process's stdin.
    pub fn write(&self, bytes: &[u8]) -> Result<()> {
        for chunk in bytes.chunks(MAX_PAYLOAD) {
            if !chunk.is_empty() {
                (self.send)(Frame::data(Kind::Stdin, self.session, chunk))?;
            }
        }
        Ok(())
    }

    /// Closes the process's stdin.
    pub fn close(&self) -> Result<()> {
        (self.send)(Frame::data(Kind::Stdin, self.session, &[]))
    }

    /// Resizes the process's pty.
    pub fn resize(&self, size: WindowSize) -> Result<()> {
        (self.send)(Frame::json(Kind::Resize, self.session, &size))
    }

    /// Sends a signal to the process's group.
    pub fn signal(&self, signal: i32) -> Result<()> {
        (self.send)(Frame::json(
            Kind::Signal,
            self.session,
            &SignalRequest { signal },
        ))
    }
}

fn check_request(req: &ExecRequest) -> Result<()> {
    if req.argv.is_empty() || req.argv[0].is_empty() {
        return Err(Error::Invalid("exec: empty command".into()));
    }
    Ok(())
}

impl ExecSession {
    /// Starts `req` in the sandbox whose control socket is `socket`.
    pub fn start(socket: &Path, sandbox: &str, req: &ExecRequest) -> Result<ExecSession> {
        check_request(req)?;
        let mut conn = Connection::open(socket, sandbox)?;
        conn.send(&Frame::json(Kind::Exec, SESSION, req))?;
        let writer = conn.writer.clone();
        let send: FrameSender = Arc::new(move |f: Frame| {
            let mut w = writer.lock().unwrap_or_else(|p| p.into_inner());
            write_frame(&mut *w, &f).map_err(io_err)
        });
        Ok(ExecSession {
            send,
            recv: Box::new(move || conn.next()),
            session: SESSION,
            done: false,
            started: false,
        })
    }

    /// Starts `req` through the agent link of a VM this process owns.
    pub fn over_agent(link: Arc<AgentLink>, req: &ExecRequest) -> Result<ExecSession> {
        check_request(req)?;
        let (session, rx) = link.open_session()?;
        link.send(&Frame::json(Kind::Exec, session, req))?;
        Ok(ExecSession {
            send: Arc::new(move |f: Frame| link.send(&f)),
            recv: Box::new(move || Ok(rx.recv().ok())),
            session,
            done: false,
            started: false,
        })
    }

    /// A handle for stdin, resizes and signals.
    pub fn input(&self) -> ExecInput {
        ExecInput {
            send: self.send.clone(),
            session: self.session,
        }
    }

    /// The next event; after [`ExecEvent::Exited`] there are none.
    pub fn next_event(&mut self) -> Result<ExecEvent> {
        if self.done {
            return Err(Error::Agent("exec session already ended".into()));
        }
        loop {
            let Some(f) = (self.recv)()? else {
                return Err(Error::Agent(
                    "the sandbox went away before the command ended".into(),
                ));
            };
            match f.kind {
                Kind::Stdout => return Ok(ExecEvent::Stdout(f.payload)),
                Kind::Stderr => return Ok(ExecEvent::Stderr(f.payload)),
                Kind::Exited => {
                    self.done = true;
                    return Ok(ExecEvent::Exited(f.parse().map_err(Error::Agent)?));
                }
                Kind::Started => self.started = true,
                Kind::Error if !self.started => {
                    self.done = true;
                    return Err(Error::Agent(error_text(&f)));
                }
                // After Started an error answers a bad resize, signal or
                // stdin frame; the process goes on.
                Kind::Error => tracing::warn!("sandbox: {}", error_text(&f)),
                _ => {}
            }
        }
    }
}

fn error_text(f: &Frame) -> String {
    f.parse::<guest_init::protocol::ErrorReply>()
        .map(|e| e.message)
        .unwrap_or_else(|_| String::from_utf8_lossy(&f.payload).into_owned())
}

/// Runs one file operation: `upload` is streamed as the request's data
/// (write, copy-in), what comes back goes to `download` (read, copy-out).
pub fn fs_request(
    socket: &Path,
    sandbox: &str,
    req: &FsRequest,
    upload: Option<&mut dyn Read>,
    download: Option<&mut dyn Write>,
) -> Result<FsReply> {
    let mut conn = Connection::open(socket, sandbox)?;
    conn.send(&Frame::json(Kind::Fs, SESSION, req))?;
    if let Some(src) = upload {
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = src.read(&mut buf).map_err(io_err)?;
            if n == 0 {
                break;
            }
            conn.send(&Frame::data(Kind::Stdin, SESSION, &buf[..n]))?;
        }
        conn.send(&Frame::data(Kind::Stdin, SESSION, &[]))?;
    }
    let mut sink = download;
    loop {
        let Some(f) = conn.next()? else {
            return Err(Error::Agent("the sandbox went away mid-operation".into()));
        };
        match f.kind {
            Kind::Stdout => {
                if let Some(w) = sink.as_mut() {
                    w.write_all(&f.payload).map_err(io_err)?;
                }
            }
            Kind::FsDone => return f.parse().map_err(Error::Agent),
            Kind::Error => return Err(fs_error(req, &error_text(&f))),
            _ => {}
        }
    }
}

/// A guest-side file error, typed when the agent says what it was.
fn fs_error(req: &FsRequest, message: &str) -> Error {
    let lower = message.to_ascii_lowercase();
    if lower.contains("no such file") || lower.contains("not found") {
        Error::NotFound(message.to_string())
    } else if lower.contains("escape") {
        Error::PathEscape {
            path: message.to_string(),
            root: format!("the {} destination", op_name(req)),
        }
    } else {
        Error::Agent(message.to_string())
    }
}

fn op_name(req: &FsRequest) -> &'static str {
    match req {
        FsRequest::Read { .. } => "read",
        FsRequest::Write { .. } => "write",
        FsRequest::List { .. } => "list",
        FsRequest::Stat { .. } => "stat",
        FsRequest::Remove { .. } => "remove",
        FsRequest::Mkdir { .. } => "mkdir",
        FsRequest::CopyOut { .. } => "copy",
        FsRequest::CopyIn { .. } => "copy",
    }
}

/// Asks the supervisor to stop the sandbox (`force`: no clean guest
/// shutdown) and waits until it has (it closes the connection when done).
pub fn request_stop(socket: &Path, sandbox: &str, force: bool) -> Result<()> {
    let mut conn = Connection::open(socket, sandbox)?;
    let grace_ms = if force { 0 } else { 1 };
    conn.send(&Frame::json(
        Kind::Shutdown,
        0,
        &ShutdownRequest { grace_ms },
    ))?;
    // The supervisor exits when it is done, which ends the connection.
    while conn.next().ok().flatten().is_some() {}
    Ok(())
}
