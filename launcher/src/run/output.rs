//! Copying the guest's stdout/stderr from FIFOs to ours as it arrives.
//!
//! The FIFO is opened read-write and non-blocking before the VMM starts, so
//! the VMM's own open never blocks and the pump never sees a premature EOF;
//! the pump ends when told to, after draining what is left.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Creates a FIFO at `path` (mode 0600).
pub fn make_fifo(path: &Path) -> io::Result<()> {
    let c = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path holds a NUL"))?;
    // SAFETY: a valid NUL-terminated path.
    if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A thread copying one FIFO to one sink.
pub struct Pump {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Pump {
    /// Opens `fifo` and starts copying it to `sink`.
    pub fn start(fifo: &Path, mut sink: impl Write + Send + 'static) -> io::Result<Pump> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(fifo)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || copy_until_stopped(file, &mut sink, &flag));
        Ok(Pump {
            stop,
            thread: Some(thread),
        })
    }

    /// Drains what is left and stops.
    pub fn finish(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Pump {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

fn copy_until_stopped(mut file: File, sink: &mut dyn Write, stop: &AtomicBool) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let stopping = stop.load(Ordering::SeqCst);
        match file.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if sink
                    .write_all(&buf[..n])
                    .and_then(|_| sink.flush())
                    .is_err()
                {
                    return;
                }
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if stopping {
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        }
        let mut pfd = libc::pollfd {
            fd: file.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd; a bounded timeout so `stop` is seen.
        unsafe { libc::poll(&mut pfd, 1, 50) };
    }
}

/// An unbuffered handle on a duplicate of our own stdout (1) or stderr (2).
pub fn own_fd(fd: i32) -> io::Result<File> {
    // SAFETY: dup takes a plain integer and returns a new fd or -1.
    let dup = unsafe { libc::dup(fd) };
    if dup < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `dup` is a fresh descriptor owned by nothing else.
    Ok(unsafe { File::from_raw_fd(dup) })
}
