//! The outgoing half of a connection, shared by every thread that answers.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use super::reaper::lock;
use crate::protocol::{self, Frame, Kind, MAX_PAYLOAD};

/// Frames to the host. One lock around each frame's single write keeps
/// frames from different threads whole. Once closed (the connection ended,
/// or a write failed) frames are dropped, so no stale frame of an old
/// connection reaches a later one.
pub struct FrameSink {
    writer: Mutex<Box<dyn Write + Send>>,
    /// Set without the lock, so closing never waits for a writer blocked
    /// on a host that went away.
    closed: AtomicBool,
}

impl FrameSink {
    /// A sink writing to `writer`.
    pub fn new(writer: impl Write + Send + 'static) -> Arc<FrameSink> {
        Arc::new(FrameSink {
            writer: Mutex::new(Box::new(writer)),
            closed: AtomicBool::new(false),
        })
    }

    /// Sends one frame; false when the sink is closed or the write failed.
    pub fn send(&self, frame: &Frame) -> bool {
        let bytes = match protocol::encode(frame) {
            Ok(b) => b,
            Err(e) => {
                // Only data frames can be too long, and those are split.
                eprintln!("msb-init agent: dropping a frame: {e}");
                return false;
            }
        };
        let mut writer = lock(&self.writer);
        if self.closed.load(Ordering::SeqCst) {
            return false;
        }
        if writer.write_all(&bytes).is_err() {
            self.closed.store(true, Ordering::SeqCst);
            return false;
        }
        true
    }

    /// Sends `bytes` as data frames of `kind`, split at [`MAX_PAYLOAD`].
    pub fn data(&self, kind: Kind, session: u32, bytes: &[u8]) -> bool {
        protocol::data_frames(kind, session, bytes).all(|f| self.send(&f))
    }

    /// Sends a JSON frame.
    pub fn json<T: Serialize>(&self, kind: Kind, session: u32, body: &T) -> bool {
        self.send(&Frame::json(kind, session, body))
    }

    /// Sends an [`Kind::Error`] frame.
    pub fn error(&self, session: u32, message: impl Into<String>) -> bool {
        self.send(&Frame::error(session, message))
    }

    /// Drops every later frame.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }
}

/// A [`Write`] that sends what it is given as [`Kind::Stdout`] data frames
/// of one session (file contents, tar streams), in chunks of up to
/// [`DataWriter::CHUNK`].
pub struct DataWriter<'a> {
    sink: &'a FrameSink,
    session: u32,
    buf: Vec<u8>,
    /// Bytes accepted so far.
    pub total: u64,
}

impl<'a> DataWriter<'a> {
    /// Bytes gathered before a frame goes out.
    const CHUNK: usize = 256 * 1024;

    /// A writer for `session`'s data.
    pub fn new(sink: &'a FrameSink, session: u32) -> DataWriter<'a> {
        DataWriter {
            sink,
            session,
            buf: Vec::with_capacity(Self::CHUNK),
            total: 0,
        }
    }
}

impl Write for DataWriter<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(Self::CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        self.total += n as u64;
        if self.buf.len() >= Self::CHUNK {
            self.flush()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        debug_assert!(self.buf.len() <= MAX_PAYLOAD);
        let sent = self.sink.data(Kind::Stdout, self.session, &self.buf);
        self.buf.clear();
        if sent {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the host connection is gone",
            ))
        }
    }
}
