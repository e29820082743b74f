//! A small client of the agent for the tests: `agent::serve` runs on a
//! thread of the test process over a unix socket pair, as it runs over a
//! virtio-serial port in a guest.
//!
//! The agent's reaper takes every child of the test process: tests must not
//! start processes of their own (std::process) in these binaries.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::Write;
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use guest_init::agent::{self, AgentOptions, ServeEnd};
use guest_init::protocol::{
    self, ExecRequest, Exited, Frame, FsRequest, Hello, Incoming, Kind, Ready, PROTOCOL_VERSION,
};

/// How long a test waits for any one frame before it fails.
pub const FRAME_WAIT: Duration = Duration::from_secs(60);

type Routes = Arc<Mutex<HashMap<u32, Sender<Frame>>>>;

/// One connection to an agent served on a thread of this process.
pub struct Agent {
    stream: Mutex<UnixStream>,
    routes: Routes,
    /// Frames for session 0 and for sessions nobody opened.
    other: Mutex<Receiver<Frame>>,
    server: Option<JoinHandle<std::io::Result<ServeEnd>>>,
    next_id: AtomicU32,
}

/// Options for a test agent: never `owns_machine` on a host.
pub fn options() -> AgentOptions {
    AgentOptions::default()
}

impl Agent {
    /// An agent after the Hello/Ready handshake.
    pub fn start() -> Agent {
        Agent::start_with(options())
    }

    /// An agent with `options`, after the handshake.
    pub fn start_with(options: AgentOptions) -> Agent {
        let agent = Agent::connect(options);
        agent.send(&Frame::json(
            Kind::Hello,
            0,
            &Hello {
                version: PROTOCOL_VERSION,
            },
        ));
        let ready = agent.next_other();
        assert_eq!(ready.kind, Kind::Ready, "{ready:?}");
        let ready: Ready = ready.parse().unwrap();
        assert_eq!(ready.version, PROTOCOL_VERSION);
        agent
    }

    /// An agent before any handshake.
    pub fn connect(options: AgentOptions) -> Agent {
        let (host, guest) = UnixStream::pair().unwrap();
        let reader = guest.try_clone().unwrap();
        let server = std::thread::spawn(move || agent::serve(reader, guest, &options));
        let routes: Routes = Arc::default();
        let (other_tx, other) = mpsc::channel();
        let mut incoming = host.try_clone().unwrap();
        let table = routes.clone();
        std::thread::spawn(move || loop {
            let frame = match protocol::read_frame(&mut incoming) {
                Ok(Incoming::Frame(f)) => f,
                Ok(Incoming::Malformed { why, .. }) => panic!("the agent sent a bad frame: {why}"),
                Ok(Incoming::End) | Err(_) => return,
            };
            let route = table.lock().unwrap().get(&frame.session).cloned();
            let sent = match route {
                Some(tx) => tx.send(frame),
                None => other_tx.send(frame),
            };
            if sent.is_err() {
                // The test is done with that session; keep reading.
            }
        });
        Agent {
            stream: Mutex::new(host),
            routes,
            other: Mutex::new(other),
            server: Some(server),
            next_id: AtomicU32::new(1),
        }
    }

    /// Sends one frame.
    pub fn send(&self, frame: &Frame) {
        protocol::write_frame(&mut *self.stream.lock().unwrap(), frame).unwrap();
    }

    /// Sends raw bytes.
    pub fn send_raw(&self, bytes: &[u8]) {
        self.stream.lock().unwrap().write_all(bytes).unwrap();
    }

    /// The next frame for session 0 or an unopened session.
    pub fn next_other(&self) -> Frame {
        self.other
            .lock()
            .unwrap()
            .recv_timeout(FRAME_WAIT)
            .expect("no frame from the agent")
    }

    /// A new session id whose frames come to the returned session.
    pub fn session(&self) -> Session<'_> {
        let id = self.next_id.fetch_add(1, Ordering::SeqCst) + 1000;
        self.session_with_id(id)
    }

    /// A session with the given id (its frames are routed to it).
    pub fn session_with_id(&self, id: u32) -> Session<'_> {
        let (tx, rx) = mpsc::channel();
        self.routes.lock().unwrap().insert(id, tx);
        Session {
            agent: self,
            id,
            rx,
        }
    }

    /// Starts `req` in a new session.
    pub fn exec(&self, req: &ExecRequest) -> Session<'_> {
        let s = self.session();
        s.send(Kind::Exec, serde_json::to_vec(req).unwrap());
        s
    }

    /// Runs `argv` to the end.
    pub fn run(&self, argv: &[&str]) -> Outcome {
        self.exec(&request(argv)).finish()
    }

    /// Starts an fs request in a new session.
    pub fn fs(&self, req: &FsRequest) -> Session<'_> {
        let s = self.session();
        s.send(Kind::Fs, serde_json::to_vec(req).unwrap());
        s
    }

    /// Ends the connection and waits for `serve` to return.
    pub fn close(mut self) -> std::io::Result<ServeEnd> {
        self.stop().expect("serve already joined")
    }

    fn stop(&mut self) -> Option<std::io::Result<ServeEnd>> {
        let _ = self.stream.lock().unwrap().shutdown(Shutdown::Both);
        self.server
            .take()
            .map(|h| h.join().expect("serve panicked"))
    }

    /// Waits for `serve` to return by itself (after a Shutdown).
    pub fn join(mut self) -> std::io::Result<ServeEnd> {
        let result = self.server.take().unwrap().join().expect("serve panicked");
        let _ = self.stream.lock().unwrap().shutdown(Shutdown::Both);
        result
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An exec request for `argv` running as the test's own user (so the tests
/// also run unprivileged).
pub fn request(argv: &[&str]) -> ExecRequest {
    // SAFETY: geteuid/getegid cannot fail.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    ExecRequest {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        uid: Some(uid),
        gid: Some(gid),
        ..Default::default()
    }
}

/// The frames of one session.
pub struct Session<'a> {
    agent: &'a Agent,
    /// Its id.
    pub id: u32,
    rx: Receiver<Frame>,
}

/// Everything an exec session sent.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The pid from Started (0 if it never started).
    pub pid: u32,
    /// Stdout bytes, in order.
    pub stdout: Vec<u8>,
    /// Stderr bytes, in order.
    pub stderr: Vec<u8>,
    /// How it ended.
    pub exited: Option<Exited>,
    /// Error frames seen.
    pub errors: Vec<String>,
}

impl Outcome {
    /// Stdout as text.
    pub fn out(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Stderr as text.
    pub fn err(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// The exit status.
    pub fn exited(&self) -> &Exited {
        self.exited.as_ref().expect("no Exited frame")
    }
}

impl Session<'_> {
    /// Sends a frame of this session.
    pub fn send(&self, kind: Kind, payload: Vec<u8>) {
        self.agent.send(&Frame {
            kind,
            session: self.id,
            payload,
        });
    }

    /// Sends a JSON frame of this session.
    pub fn send_json<T: serde::Serialize>(&self, kind: Kind, body: &T) {
        self.send(kind, serde_json::to_vec(body).unwrap());
    }

    /// Sends stdin bytes (split into frames that fit).
    pub fn stdin(&self, bytes: &[u8]) {
        for f in protocol::data_frames(Kind::Stdin, self.id, bytes) {
            self.agent.send(&f);
        }
    }

    /// Closes stdin.
    pub fn eof(&self) {
        self.send(Kind::Stdin, Vec::new());
    }

    /// The next frame of this session.
    pub fn next(&self) -> Frame {
        self.next_within(FRAME_WAIT)
            .unwrap_or_else(|| panic!("session {}: no frame in {FRAME_WAIT:?}", self.id))
    }

    /// The next frame, if one comes within `wait`.
    pub fn next_within(&self, wait: Duration) -> Option<Frame> {
        match self.rx.recv_timeout(wait) {
            Ok(f) => Some(f),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => panic!("the client reader ended"),
        }
    }

    /// Waits for Started; returns the pid.
    pub fn started(&self) -> u32 {
        let f = self.next();
        assert_eq!(
            f.kind,
            Kind::Started,
            "{f:?}: {}",
            String::from_utf8_lossy(&f.payload)
        );
        f.parse::<protocol::Started>().unwrap().pid
    }

    /// Collects frames until Exited (or an Error before Started).
    pub fn finish(&self) -> Outcome {
        let mut out = Outcome::default();
        loop {
            let f = self.next();
            match f.kind {
                Kind::Started => {
                    assert_eq!(out.pid, 0, "Started twice");
                    assert!(
                        out.stdout.is_empty() && out.stderr.is_empty(),
                        "output before Started"
                    );
                    out.pid = f.parse::<protocol::Started>().unwrap().pid;
                }
                Kind::Stdout => out.stdout.extend_from_slice(&f.payload),
                Kind::Stderr => out.stderr.extend_from_slice(&f.payload),
                Kind::Error => out
                    .errors
                    .push(f.parse::<protocol::ErrorReply>().unwrap().message),
                Kind::Exited => {
                    out.exited = Some(f.parse().unwrap());
                    // Exactly once, and nothing after it.
                    if let Some(extra) = self.next_within(Duration::from_millis(200)) {
                        panic!("frame after Exited: {extra:?}");
                    }
                    return out;
                }
                other => panic!("unexpected {other:?} frame"),
            }
        }
    }

    /// Collects an fs session: data (Stdout) and the FsDone reply, or the
    /// Error message.
    pub fn fs_result(&self) -> Result<(Vec<u8>, protocol::FsReply), String> {
        let mut data = Vec::new();
        loop {
            let f = self.next();
            match f.kind {
                Kind::Stdout => data.extend_from_slice(&f.payload),
                Kind::FsDone => return Ok((data, f.parse().unwrap())),
                Kind::Error => return Err(f.parse::<protocol::ErrorReply>().unwrap().message),
                other => panic!("unexpected {other:?} frame in an fs session"),
            }
        }
    }

    /// The next frame, which must be an Error; returns its message.
    pub fn error(&self) -> String {
        let f = self.next();
        assert_eq!(f.kind, Kind::Error, "{f:?}");
        f.parse::<protocol::ErrorReply>().unwrap().message
    }
}

/// Whether process `pid` is gone (reaped), waiting up to `wait`.
pub fn gone_within(pid: u32, wait: Duration) -> bool {
    let deadline = std::time::Instant::now() + wait;
    loop {
        // SAFETY: signal 0 only checks that the process exists.
        if unsafe { libc::kill(pid as i32, 0) } != 0 {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
