//! The agent protocol: how the host talks to `msb-init`'s agent in a
//! running sandbox, and how clients talk to a sandbox's supervisor (the
//! supervisor routes the same frames between the two).
//!
//! A byte stream (a virtio-serial port, a vsock connection, a unix socket)
//! carries frames:
//!
//! ```text
//! u32 LE  len      bytes after this field (kind + session + payload),
//!                  5 ..= 5 + MAX_PAYLOAD
//! u8      kind     a [`Kind`]
//! u32 LE  session  which exec/fs session (0: the connection itself)
//! ...     payload  raw bytes for data frames, JSON for the others
//! ```
//!
//! One connection multiplexes many sessions: the host picks session ids and
//! every frame of a session carries its id. A frame that cannot be decoded
//! (unknown kind, bad JSON) is answered with an [`Kind::Error`] frame for
//! its session and the stream goes on; a length past the bound is read and
//! thrown away (answered the same way), so a peer cannot make the other
//! side allocate or stall. Only a stream that ends mid-frame is fatal.
//!
//! Versioning: the host opens with [`Kind::Hello`] carrying
//! [`PROTOCOL_VERSION`]; the agent answers [`Kind::Ready`] with its own.
//! A peer refuses a major version it does not know.

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

/// Version of this protocol.
pub const PROTOCOL_VERSION: u32 = 1;
/// Largest payload of one frame (data frames are split to fit).
pub const MAX_PAYLOAD: usize = 1 << 20;
/// Bytes of the header after the length field.
const HEADER_REST: usize = 5;
/// Name of the virtio-serial port carrying the agent channel (QEMU).
pub const AGENT_PORT: &str = "msb.agent";
/// vsock port the agent listens on (cloud-hypervisor's hybrid vsock).
pub const AGENT_VSOCK_PORT: u32 = 1024;

/// What a frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Host → agent: [`Hello`]; opens a connection.
    Hello = 1,
    /// Host → agent: heartbeat; the payload comes back in [`Kind::Pong`].
    Ping = 2,
    /// Host → agent: start a process, [`ExecRequest`].
    Exec = 3,
    /// Host → agent: bytes for the session's stdin; an empty payload closes it.
    Stdin = 4,
    /// Host → agent: [`WindowSize`] of the session's pty.
    Resize = 5,
    /// Host → agent: [`SignalRequest`] for the session's process.
    Signal = 6,
    /// Host → agent: [`ShutdownRequest`]: stop everything and power off.
    Shutdown = 7,
    /// Host → agent: a file operation, [`FsRequest`].
    Fs = 8,
    /// Agent → host: [`Ready`], the answer to [`Kind::Hello`].
    Ready = 64,
    /// Agent → host: the payload of a [`Kind::Ping`].
    Pong = 65,
    /// Agent → host: [`Started`]: the session's process runs.
    Started = 66,
    /// Agent → host: bytes the process wrote on stdout (or its pty), or
    /// file data of a read/copy-out session.
    Stdout = 67,
    /// Agent → host: bytes the process wrote on stderr.
    Stderr = 68,
    /// Agent → host: [`Exited`]: the session is over.
    Exited = 69,
    /// Either way: [`ErrorReply`] for a request that could not be served.
    Error = 70,
    /// Agent → host: [`FsReply`]: a file operation is done.
    FsDone = 71,
}

impl Kind {
    /// The kind of a frame's kind byte.
    pub fn from_byte(b: u8) -> Option<Kind> {
        use Kind::*;
        Some(match b {
            1 => Hello,
            2 => Ping,
            3 => Exec,
            4 => Stdin,
            5 => Resize,
            6 => Signal,
            7 => Shutdown,
            8 => Fs,
            64 => Ready,
            65 => Pong,
            66 => Started,
            67 => Stdout,
            68 => Stderr,
            69 => Exited,
            70 => Error,
            71 => FsDone,
            _ => return None,
        })
    }
}

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// What it is.
    pub kind: Kind,
    /// Session id (0: the connection).
    pub session: u32,
    /// Raw payload.
    pub payload: Vec<u8>,
}

impl Frame {
    /// A frame with a JSON payload.
    pub fn json<T: Serialize>(kind: Kind, session: u32, body: &T) -> Frame {
        Frame {
            kind,
            session,
            // Serializing our own plain structs cannot fail.
            payload: serde_json::to_vec(body).unwrap_or_default(),
        }
    }

    /// A frame with raw bytes.
    pub fn data(kind: Kind, session: u32, bytes: &[u8]) -> Frame {
        Frame {
            kind,
            session,
            payload: bytes.to_vec(),
        }
    }

    /// An [`Kind::Error`] frame.
    pub fn error(session: u32, message: impl Into<String>) -> Frame {
        Frame::json(
            Kind::Error,
            session,
            &ErrorReply {
                message: message.into(),
            },
        )
    }

    /// Decodes the JSON payload.
    pub fn parse<'a, T: Deserialize<'a>>(&'a self) -> Result<T, String> {
        serde_json::from_slice(&self.payload)
            .map_err(|e| format!("bad {:?} frame (session {}): {e}", self.kind, self.session))
    }
}

/// What reading a frame gave.
#[derive(Debug)]
pub enum Incoming {
    /// A well-formed frame.
    Frame(Frame),
    /// A frame that was skipped whole (unknown kind or too long): answer
    /// with an error for `session`; the stream is still in step.
    Malformed {
        /// Session id of the frame.
        session: u32,
        /// What was wrong.
        why: String,
    },
    /// The stream ended cleanly between frames.
    End,
}

/// Reads one frame from `r`. A stream that ends inside a frame is an
/// `UnexpectedEof` error; a bad kind or length is [`Incoming::Malformed`].
pub fn read_frame(r: &mut impl Read) -> io::Result<Incoming> {
    let mut len_bytes = [0u8; 4];
    // Distinguish a clean end (no byte of a new frame) from a cut one.
    let mut got = 0;
    while got < 4 {
        match r.read(&mut len_bytes[got..]) {
            Ok(0) if got == 0 => return Ok(Incoming::End),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let len = u32::from_le_bytes(len_bytes) as usize;
    if len < HEADER_REST {
        // Nothing to skip beyond the bytes the length claims.
        let mut junk = vec![0u8; len];
        r.read_exact(&mut junk)?;
        return Ok(Incoming::Malformed {
            session: 0,
            why: format!("frame length {len} is shorter than its header"),
        });
    }
    let mut head = [0u8; HEADER_REST];
    r.read_exact(&mut head)?;
    let session = u32::from_le_bytes([head[1], head[2], head[3], head[4]]);
    let payload_len = len - HEADER_REST;
    if payload_len > MAX_PAYLOAD {
        skip(r, payload_len as u64)?;
        return Ok(Incoming::Malformed {
            session,
            why: format!("frame payload of {payload_len} bytes exceeds {MAX_PAYLOAD}"),
        });
    }
    let mut payload = vec![0u8; payload_len];
    r.read_exact(&mut payload)?;
    match Kind::from_byte(head[0]) {
        Some(kind) => Ok(Incoming::Frame(Frame {
            kind,
            session,
            payload,
        })),
        None => Ok(Incoming::Malformed {
            session,
            why: format!("unknown frame kind {}", head[0]),
        }),
    }
}

/// Reads and drops `n` bytes.
fn skip(r: &mut impl Read, n: u64) -> io::Result<()> {
    let copied = io::copy(&mut r.take(n), &mut io::sink())?;
    if copied < n {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

/// The bytes of `frame` on the wire. Fails for a payload over
/// [`MAX_PAYLOAD`] (split data with [`data_frames`]).
pub fn encode(frame: &Frame) -> io::Result<Vec<u8>> {
    if frame.payload.len() > MAX_PAYLOAD {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{:?} frame payload of {} bytes exceeds {MAX_PAYLOAD}",
                frame.kind,
                frame.payload.len()
            ),
        ));
    }
    let len = (HEADER_REST + frame.payload.len()) as u32;
    let mut out = Vec::with_capacity(4 + len as usize);
    out.extend_from_slice(&len.to_le_bytes());
    out.push(frame.kind as u8);
    out.extend_from_slice(&frame.session.to_le_bytes());
    out.extend_from_slice(&frame.payload);
    Ok(out)
}

/// Writes one frame in a single `write_all` (callers sharing a stream hold
/// its lock around this call).
pub fn write_frame(w: &mut impl Write, frame: &Frame) -> io::Result<()> {
    w.write_all(&encode(frame)?)
}

/// `bytes` as data frames of `kind`, each at most [`MAX_PAYLOAD`].
pub fn data_frames(kind: Kind, session: u32, bytes: &[u8]) -> impl Iterator<Item = Frame> + '_ {
    bytes
        .chunks(MAX_PAYLOAD)
        .map(move |c| Frame::data(kind, session, c))
}

/// [`Kind::Hello`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The host's [`PROTOCOL_VERSION`].
    pub version: u32,
}

/// [`Kind::Ready`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ready {
    /// The agent's [`PROTOCOL_VERSION`].
    pub version: u32,
    /// Guest uptime when the agent became ready, in milliseconds.
    pub uptime_ms: u64,
}

/// [`Kind::Exec`]: the process to start.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecRequest {
    /// Program and arguments (looked up in `PATH` when the program has no `/`).
    pub argv: Vec<String>,
    /// `KEY=VALUE` entries added to the sandbox's environment.
    #[serde(default)]
    pub env: Vec<String>,
    /// Working directory (default: the sandbox's, else `/`).
    #[serde(default)]
    pub workdir: Option<String>,
    /// User id (default: the sandbox's user, the image's `User`, else 0).
    #[serde(default)]
    pub uid: Option<u32>,
    /// Group id (default: 0 when `uid` is given, else the sandbox's group).
    #[serde(default)]
    pub gid: Option<u32>,
    /// Whether stdin is forwarded ([`Kind::Stdin`] frames); otherwise it
    /// reads as empty.
    #[serde(default)]
    pub stdin: bool,
    /// Run on a pseudo-terminal of this size (stdout and stderr then arrive
    /// merged as [`Kind::Stdout`]).
    #[serde(default)]
    pub tty: Option<WindowSize>,
    /// Kill the process (SIGKILL to its process group) after this long.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// A terminal size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowSize {
    /// Rows.
    pub rows: u16,
    /// Columns.
    pub cols: u16,
}

/// [`Kind::Signal`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignalRequest {
    /// Signal number (sent to the process group of the session's process).
    pub signal: i32,
}

/// [`Kind::Shutdown`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShutdownRequest {
    /// How long processes get between SIGTERM and SIGKILL.
    pub grace_ms: u64,
}

/// [`Kind::Started`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Started {
    /// Guest pid of the process.
    pub pid: u32,
}

/// [`Kind::Exited`]: how a session's process ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exited {
    /// Exit code, when it exited.
    #[serde(default)]
    pub code: Option<i32>,
    /// Signal number, when a signal killed it.
    #[serde(default)]
    pub signal: Option<i32>,
    /// True when the session's timeout killed it.
    #[serde(default)]
    pub timed_out: bool,
    /// Why it could not start (then `code` is 126 or 127).
    #[serde(default)]
    pub error: Option<String>,
}

/// [`Kind::Error`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    /// What went wrong.
    pub message: String,
}

/// [`Kind::Fs`]: file operations inside the guest (paths are guest paths,
/// resolved by the guest kernel as root).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum FsRequest {
    /// File contents come back as [`Kind::Stdout`] frames, then
    /// [`Kind::FsDone`].
    Read {
        /// Guest path.
        path: String,
    },
    /// Contents follow as [`Kind::Stdin`] frames ending with an empty one;
    /// the file is created or truncated with `mode`.
    Write {
        /// Guest path.
        path: String,
        /// Permission bits of a new file.
        #[serde(default = "default_file_mode")]
        mode: u32,
    },
    /// Entries come back in [`FsReply::entries`].
    List {
        /// Guest directory.
        path: String,
    },
    /// Metadata in [`FsReply::stat`].
    Stat {
        /// Guest path (symlinks not followed).
        path: String,
    },
    /// Remove a file, or a directory (with everything in it if `recursive`).
    Remove {
        /// Guest path.
        path: String,
        /// Remove a non-empty directory too.
        #[serde(default)]
        recursive: bool,
    },
    /// Create a directory and its missing parents.
    Mkdir {
        /// Guest path.
        path: String,
        /// Permission bits of created directories.
        #[serde(default = "default_dir_mode")]
        mode: u32,
    },
    /// A tar stream (ustar/PAX) of `path` comes back as [`Kind::Stdout`]
    /// frames (`msb cp` out of a sandbox).
    CopyOut {
        /// Guest file or directory.
        path: String,
    },
    /// A tar stream follows as [`Kind::Stdin`] frames and is unpacked into
    /// the directory `dest` (`msb cp` into a sandbox).
    CopyIn {
        /// Guest directory.
        dest: String,
    },
}

fn default_file_mode() -> u32 {
    0o644
}

fn default_dir_mode() -> u32 {
    0o755
}

/// Type of a directory entry or stat result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    /// Regular file.
    File,
    /// Directory.
    Dir,
    /// Symbolic link.
    Symlink,
    /// Anything else (device, fifo, socket).
    Other,
}

/// One file's metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileStat {
    /// Name (the last path component).
    pub name: String,
    /// Type.
    pub kind: FileKind,
    /// Size in bytes.
    pub size: u64,
    /// Permission bits (incl. setuid/setgid/sticky).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
}

/// [`Kind::FsDone`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsReply {
    /// Directory entries (for `list`).
    #[serde(default)]
    pub entries: Vec<FileStat>,
    /// Metadata (for `stat`).
    #[serde(default)]
    pub stat: Option<FileStat>,
    /// Bytes moved (read, write, copy).
    #[serde(default)]
    pub bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(f: &Frame) -> Frame {
        let bytes = encode(f).unwrap();
        match read_frame(&mut bytes.as_slice()).unwrap() {
            Incoming::Frame(g) => g,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn frames_round_trip() {
        let exec = ExecRequest {
            argv: vec!["echo".into(), "hi".into()],
            tty: Some(WindowSize { rows: 24, cols: 80 }),
            ..Default::default()
        };
        let f = Frame::json(Kind::Exec, 7, &exec);
        let g = roundtrip(&f);
        assert_eq!(g, f);
        assert_eq!(g.parse::<ExecRequest>().unwrap(), exec);
        let d = Frame::data(Kind::Stdout, u32::MAX, &[0, 1, 2, 255]);
        assert_eq!(roundtrip(&d), d);
        let empty = Frame::data(Kind::Stdin, 1, &[]);
        assert_eq!(roundtrip(&empty), empty);
    }

    #[test]
    fn stream_of_frames_then_clean_end() {
        let mut wire = Vec::new();
        for i in 0..3 {
            write_frame(&mut wire, &Frame::data(Kind::Stdout, i, b"x")).unwrap();
        }
        let mut r = wire.as_slice();
        for i in 0..3 {
            match read_frame(&mut r).unwrap() {
                Incoming::Frame(f) => assert_eq!(f.session, i),
                other => panic!("{other:?}"),
            }
        }
        assert!(matches!(read_frame(&mut r).unwrap(), Incoming::End));
    }

    #[test]
    fn cut_frame_is_an_error_not_a_hang() {
        let wire = encode(&Frame::data(Kind::Stdout, 1, b"hello")).unwrap();
        for cut in 1..wire.len() {
            let e = read_frame(&mut &wire[..cut]).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "cut at {cut}");
        }
    }

    #[test]
    fn oversized_and_unknown_frames_are_skipped_in_step() {
        let mut wire = Vec::new();
        let big = (HEADER_REST + MAX_PAYLOAD + 1) as u32;
        wire.extend_from_slice(&big.to_le_bytes());
        wire.push(Kind::Stdin as u8);
        wire.extend_from_slice(&9u32.to_le_bytes());
        wire.extend(std::iter::repeat_n(0xAB, MAX_PAYLOAD + 1));
        // Unknown kind 200.
        wire.extend_from_slice(&(HEADER_REST as u32 + 2).to_le_bytes());
        wire.push(200);
        wire.extend_from_slice(&4u32.to_le_bytes());
        wire.extend_from_slice(b"zz");
        // Too short for a header.
        wire.extend_from_slice(&2u32.to_le_bytes());
        wire.extend_from_slice(b"ab");
        write_frame(&mut wire, &Frame::data(Kind::Ping, 0, b"ok")).unwrap();
        let mut r = wire.as_slice();
        let m1 = read_frame(&mut r).unwrap();
        assert!(
            matches!(m1, Incoming::Malformed { session: 9, .. }),
            "{m1:?}"
        );
        let m2 = read_frame(&mut r).unwrap();
        assert!(
            matches!(&m2, Incoming::Malformed { session: 4, why } if why.contains("kind 200")),
            "{m2:?}"
        );
        let m3 = read_frame(&mut r).unwrap();
        assert!(
            matches!(m3, Incoming::Malformed { session: 0, .. }),
            "{m3:?}"
        );
        match read_frame(&mut r).unwrap() {
            Incoming::Frame(f) => {
                assert_eq!((f.kind, f.payload.as_slice()), (Kind::Ping, &b"ok"[..]))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_json_is_a_clear_error() {
        let f = Frame::data(Kind::Exec, 3, b"{not json");
        let e = f.parse::<ExecRequest>().unwrap_err();
        assert!(e.contains("Exec") && e.contains("session 3"), "{e}");
        let unknown = Frame::data(Kind::Exec, 3, br#"{"argv":["a"],"rootkit":1}"#);
        assert!(unknown.parse::<ExecRequest>().is_err());
    }

    #[test]
    fn big_data_is_split() {
        let bytes = vec![7u8; MAX_PAYLOAD * 2 + 5];
        let frames: Vec<_> = data_frames(Kind::Stdout, 1, &bytes).collect();
        assert_eq!(frames.len(), 3);
        assert_eq!(frames[2].payload.len(), 5);
        assert!(encode(&Frame::data(Kind::Stdout, 1, &bytes)).is_err());
    }

    #[test]
    fn kinds_map_both_ways() {
        for b in 0..=255u8 {
            if let Some(k) = Kind::from_byte(b) {
                assert_eq!(k as u8, b);
            }
        }
    }
}
