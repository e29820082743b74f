//! Stdin of a session: [`Kind::Stdin`](crate::protocol::Kind::Stdin) frames
//! queued by the connection's reader thread for the session's consumer.
//!
//! The queue is bounded ([`QUEUE_FRAMES`] frames): when a consumer lags that
//! far behind, the reader thread waits for it, which is the only
//! backpressure a plain byte stream offers (the host's writes then block
//! too). A process that never reads its stdin while the host keeps sending
//! therefore stalls the connection once its pipe and this queue are full.

use std::fs::File;
use std::io::{self, Read, Write};
use std::sync::mpsc::{self, Receiver, SyncSender};

/// Frames a session's stdin queue holds before the reader waits.
pub const QUEUE_FRAMES: usize = 16;

/// One item of a session's stdin.
#[derive(Debug)]
pub enum Input {
    /// Bytes.
    Data(Vec<u8>),
    /// The host closed stdin (an empty Stdin frame).
    End,
}

/// The reader thread's end of a stdin queue.
pub type InputSender = SyncSender<Input>;

/// A new stdin queue.
pub fn queue() -> (InputSender, Receiver<Input>) {
    mpsc::sync_channel(QUEUE_FRAMES)
}

/// Reads a stdin queue as a byte stream: EOF at [`Input::End`], an error
/// when the queue is dropped without it (the connection ended mid-stream).
pub struct InputReader {
    rx: Receiver<Input>,
    chunk: Vec<u8>,
    pos: usize,
    ended: bool,
    /// Bytes read so far.
    pub total: u64,
}

impl InputReader {
    /// A reader of `rx`.
    pub fn new(rx: Receiver<Input>) -> InputReader {
        InputReader {
            rx,
            chunk: Vec::new(),
            pos: 0,
            ended: false,
            total: 0,
        }
    }

    /// Reads and drops everything up to the end of the stream.
    pub fn drain(&mut self) -> io::Result<()> {
        io::copy(self, &mut io::sink()).map(|_| ())
    }
}

impl Read for InputReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.chunk.len() {
            if self.ended {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Input::Data(d)) => {
                    self.chunk = d;
                    self.pos = 0;
                }
                Ok(Input::End) => self.ended = true,
                Err(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "the host connection ended before the end of the data",
                    ))
                }
            }
        }
        let n = out.len().min(self.chunk.len() - self.pos);
        out[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        self.total += n as u64;
        Ok(n)
    }
}

/// Where a process's stdin goes.
pub enum StdinTarget {
    /// A pipe: closed at the end of the stream.
    Pipe(File),
    /// A pty master: the end of the stream is typed as the terminal's EOF
    /// character (the master stays open for the output).
    Pty(File),
}

/// Starts the thread feeding `rx` into `target`. Data for a process that
/// no longer reads (EPIPE) is dropped, so the queue never stays full.
pub fn spawn_feeder(session: u32, rx: Receiver<Input>, target: StdinTarget) {
    let run = move || {
        let (mut file, tty) = match target {
            StdinTarget::Pipe(f) => (f, false),
            StdinTarget::Pty(f) => (f, true),
        };
        let mut broken = false;
        while let Ok(item) = rx.recv() {
            match item {
                Input::Data(d) if !broken => broken = file.write_all(&d).is_err(),
                Input::Data(_) => {}
                Input::End if tty => {
                    if !broken {
                        let _ = file.write_all(&[eof_char(&file)]);
                    }
                }
                Input::End => break,
            }
        }
    };
    let spawned = std::thread::Builder::new()
        .name(format!("msb-stdin-{session}"))
        .spawn(run);
    if let Err(e) = spawned {
        eprintln!("msb-init agent: session {session}: no stdin thread: {e}");
    }
}

/// The terminal's EOF character (VEOF, normally Ctrl-D).
fn eof_char(tty: &File) -> u8 {
    use std::os::fd::AsRawFd;
    // SAFETY: termios is plain data filled by tcgetattr on a valid fd.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(tty.as_raw_fd(), &mut t) == 0 {
            return t.c_cc[libc::VEOF];
        }
    }
    0x04
}
