//! Helper threads for large reads.
//!
//! A 1 MiB `FUSE_READ` is one `preadv` from the page cache into guest
//! memory: a memory copy, bound by what one core can move. A [`CopyCrew`]
//! is a few helper threads that take some of that copying off a queue
//! thread, in one of two ways:
//! - **pieces** (one large read at a time, e.g. one request in flight):
//!   the request is cut into page-aligned pieces at consecutive file
//!   offsets; idle helpers copy all pieces but the first, the request's own
//!   thread the first, and it waits for every piece before it answers. The
//!   guest sees one request served as if by one call: the count is the
//!   length of the prefix that was copied without a gap (a short piece, at
//!   the end of the file, ends it; what later pieces read is not reported);
//! - **whole requests** (several in flight): the transport hands a large
//!   read to an idle helper with [`CopyCrew::try_offload`] and goes on with
//!   the next request; the helper answers it. No thread waits for another.
//!
//! A job is only ever handed to a helper that was idle (claimed first), so
//! a piece never waits in line behind a whole request and a helper that
//! serves a request may itself split it onto other idle helpers without
//! deadlock.
//!
//! Writes are neither split nor moved: the kernel serializes the writes to
//! one file on its inode lock, so split pieces only wait for each other
//! (measured with `scripts/bench-daemon`: 1 MiB writes split in two ran at
//! 0.8x of one `pwritev`), and a split write that failed half-way would
//! leave data past what it reports.
//!
//! Helper threads start on the first large read (after the daemon's
//! walls went up: the system call filter allows threads) and live as long
//! as the filesystem.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex, OnceLock};

use fuse_backend_rs::file_buf::FileVolatileSlice;
use fuse_backend_rs::file_traits::FileReadWriteVolatile;

/// Requests smaller than this are copied by one thread.
pub const MIN_SPLIT: usize = 256 * 1024;

/// Pieces are cut at multiples of this (keeps `O_DIRECT` alignment).
const PIECE_ALIGN: usize = 4096;

/// Most threads [`default_threads`] picks.
const MAX_DEFAULT_THREADS: usize = 4;

/// The number of copying threads when the command line says nothing: the
/// CPUs this process may run on, at most `MAX_DEFAULT_THREADS` (4).
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(MAX_DEFAULT_THREADS)
}

/// One piece: a file range and the memory it is read into.
struct Piece {
    fd: RawFd,
    iov: Vec<libc::iovec>,
    offset: u64,
}

// SAFETY: the iovecs point into guest memory (or a caller's buffer) and the
// fd belongs to an open handle; the submitting thread waits for every piece
// it handed out before it returns, so both outlive the helper's use.
unsafe impl Send for Piece {}

impl Piece {
    fn len(&self) -> usize {
        self.iov.iter().map(|v| v.iov_len).sum()
    }

    /// Reads the whole piece (retrying short reads and EINTR) and returns
    /// how much was read before EOF or an error.
    fn copy(&self) -> io::Result<usize> {
        let total = self.len();
        let mut iov = self.iov.clone();
        let mut done = 0usize;
        while done < total {
            let iovcnt = iov.len().min(libc::UIO_MAXIOV as usize) as libc::c_int;
            let off = (self.offset + done as u64) as libc::off_t;
            // SAFETY: every iovec names writable memory valid for this
            // piece's lifetime (see `unsafe impl Send`); the count matches
            // the array.
            let n = unsafe { libc::preadv(self.fd, iov.as_ptr(), iovcnt, off) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return if done == 0 { Err(e) } else { Ok(done) };
            }
            if n == 0 {
                break;
            }
            done += n as usize;
            advance(&mut iov, n as usize);
        }
        Ok(done)
    }
}

/// Drops the first `n` bytes of `iov`.
fn advance(iov: &mut Vec<libc::iovec>, mut n: usize) {
    let mut whole = 0;
    for v in iov.iter_mut() {
        if n < v.iov_len {
            v.iov_base = (v.iov_base as usize + n) as *mut libc::c_void;
            v.iov_len -= n;
            break;
        }
        n -= v.iov_len;
        whole += 1;
    }
    iov.drain(..whole);
}

/// A whole request a helper serves on its own.
pub type Task = Box<dyn FnOnce() + Send + 'static>;

/// Work for a helper.
enum Job {
    /// A piece of a split read and where its result goes.
    Piece {
        piece: Piece,
        index: usize,
        done: SyncSender<(usize, io::Result<usize>)>,
    },
    /// A whole request.
    Task(Task),
}

/// The helper threads of one filesystem, started on first use.
pub struct CopyCrew {
    /// Threads copying one request, the request's own included.
    threads: usize,
    jobs: OnceLock<Option<Sender<Job>>>,
    /// Helpers waiting for a job and not yet claimed.
    idle: Arc<AtomicUsize>,
}

impl CopyCrew {
    /// A crew where `threads` threads (the request's own included) copy one
    /// large read; 1 or 0 never splits.
    pub fn new(threads: usize) -> Self {
        CopyCrew {
            threads: threads.max(1),
            jobs: OnceLock::new(),
            idle: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Whether a helper waits for work now. Helpers start with the first
    /// large read split into pieces; until then this is false.
    pub fn has_idle_helper(&self) -> bool {
        self.jobs.get().is_some_and(Option::is_some) && self.idle.load(Ordering::Acquire) > 0
    }

    /// Hands `task` to an idle helper; gives it back when none is idle (the
    /// caller runs it itself).
    pub fn try_offload(&self, task: Task) -> Result<(), Task> {
        let Some(jobs) = self.sender() else {
            return Err(task);
        };
        if self.claim(1) == 0 {
            return Err(task);
        }
        match jobs.send(Job::Task(task)) {
            // No helper left to receive it.
            Err(mpsc::SendError(Job::Task(task))) => Err(task),
            _ => Ok(()),
        }
    }

    /// Claims up to `want` idle helpers; returns how many it got. Every
    /// job sent must have been claimed, so it starts at once.
    fn claim(&self, want: usize) -> usize {
        let mut got = 0;
        let _ = self
            .idle
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |idle| {
                got = idle.min(want);
                (got > 0).then(|| idle - got)
            });
        got
    }

    /// `file` as seen by a transport's zero-copy writer: large vectored
    /// reads at an offset go through this crew.
    pub fn file<'a>(&'a self, file: &'a mut File) -> CrewFile<'a> {
        CrewFile { file, crew: self }
    }

    fn sender(&self) -> Option<&Sender<Job>> {
        self.jobs.get_or_init(|| self.start_helpers()).as_ref()
    }

    /// Starts `threads - 1` helpers sharing one job queue; `None` (copy
    /// alone) if not even one could start.
    fn start_helpers(&self) -> Option<Sender<Job>> {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let mut started = 0;
        for i in 1..self.threads {
            let rx = rx.clone();
            let idle = self.idle.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("copy-{i}"))
                .spawn(move || helper(&rx, &idle));
            match spawned {
                Ok(_) => started += 1,
                Err(e) => tracing::warn!("cannot start a copy thread: {e}"),
            }
        }
        (started > 0).then_some(tx)
    }

    /// Reads `fd` at `offset` into `bufs` in pieces, if the request is
    /// large enough to split; `None` when it is not (the caller reads it
    /// alone).
    fn run(&self, fd: RawFd, bufs: &[FileVolatileSlice], offset: u64) -> Option<io::Result<usize>> {
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if self.threads < 2 || total < MIN_SPLIT || offset.checked_add(total as u64).is_none() {
            return None;
        }
        let jobs = self.sender()?;
        let helpers = self.claim(self.threads - 1);
        if helpers == 0 {
            return None;
        }
        let mut pieces = cut(fd, bufs, offset, helpers + 1);
        let lens: Vec<usize> = pieces.iter().map(Piece::len).collect();
        let first = pieces.remove(0);
        let (done_tx, done_rx) = mpsc::sync_channel(pieces.len());
        let mut results: Vec<Option<io::Result<usize>>> =
            (0..=pieces.len()).map(|_| None).collect();
        // `cut` may make fewer pieces than asked: unused claims go back.
        if helpers > pieces.len() {
            self.idle
                .fetch_add(helpers - pieces.len(), Ordering::AcqRel);
        }
        for (i, piece) in pieces.into_iter().enumerate() {
            let job = Job::Piece {
                piece,
                index: i + 1,
                done: done_tx.clone(),
            };
            if let Err(mpsc::SendError(Job::Piece { piece, index, .. })) = jobs.send(job) {
                // No helper left: copy it here.
                results[index] = Some(piece.copy());
            }
        }
        drop(done_tx);
        results[0] = Some(first.copy());
        // Wait for every piece handed out: their memory is the caller's.
        while let Ok((i, r)) = done_rx.recv() {
            results[i] = Some(r);
        }
        Some(join(&lens, results))
    }
}

/// A helper: does jobs until the crew is dropped. It counts itself idle
/// before it waits; whoever sends it a job has claimed it (uncounted it).
fn helper(jobs: &Mutex<Receiver<Job>>, idle: &AtomicUsize) {
    loop {
        idle.fetch_add(1, Ordering::AcqRel);
        let job = {
            let rx = jobs.lock().unwrap_or_else(|p| p.into_inner());
            rx.recv()
        };
        match job {
            Err(_) => return,
            Ok(Job::Task(task)) => task(),
            Ok(Job::Piece { piece, index, done }) => {
                let result = piece.copy();
                // The submitter waits for this; it cannot have gone.
                let _ = done.send((index, result));
            }
        }
    }
}

/// Cuts `bufs` (copied at `offset`) into at most `parts` pieces of equal,
/// page-aligned length.
fn cut(fd: RawFd, bufs: &[FileVolatileSlice], offset: u64, parts: usize) -> Vec<Piece> {
    let total: usize = bufs.iter().map(|b| b.len()).sum();
    let piece_len = total.div_ceil(parts).next_multiple_of(PIECE_ALIGN);
    let mut pieces = Vec::with_capacity(parts);
    let mut current = Piece {
        fd,
        iov: Vec::new(),
        offset,
    };
    let mut room = piece_len;
    for buf in bufs {
        let (mut base, mut left) = (buf.as_ptr() as usize, buf.len());
        while left > 0 {
            let n = left.min(room);
            current.iov.push(libc::iovec {
                iov_base: base as *mut libc::c_void,
                iov_len: n,
            });
            base += n;
            left -= n;
            room -= n;
            if room == 0 {
                let next = current.offset + piece_len as u64;
                pieces.push(std::mem::replace(
                    &mut current,
                    Piece {
                        fd,
                        iov: Vec::new(),
                        offset: next,
                    },
                ));
                room = piece_len;
            }
        }
    }
    if !current.iov.is_empty() {
        pieces.push(current);
    }
    pieces
}

/// The request's result from its pieces' results: the gap-free prefix;
/// the first piece's error when nothing was copied.
fn join(lens: &[usize], results: Vec<Option<io::Result<usize>>>) -> io::Result<usize> {
    let mut copied = 0;
    for (len, result) in lens.iter().zip(results) {
        match result.unwrap_or_else(|| Err(io::Error::from_raw_os_error(libc::EIO))) {
            Ok(n) => {
                copied += n;
                if n < *len {
                    break;
                }
            }
            Err(e) if copied == 0 => return Err(e),
            Err(_) => break,
        }
    }
    Ok(copied)
}

/// A file whose large vectored reads at an offset are split over a
/// [`CopyCrew`]; everything else goes straight to the file.
pub struct CrewFile<'a> {
    file: &'a mut File,
    crew: &'a CopyCrew,
}

impl FileReadWriteVolatile for CrewFile<'_> {
    fn read_volatile(&mut self, slice: FileVolatileSlice) -> io::Result<usize> {
        self.file.read_volatile(slice)
    }

    fn read_vectored_volatile(&mut self, bufs: &[FileVolatileSlice]) -> io::Result<usize> {
        self.file.read_vectored_volatile(bufs)
    }

    fn write_volatile(&mut self, slice: FileVolatileSlice) -> io::Result<usize> {
        self.file.write_volatile(slice)
    }

    fn write_vectored_volatile(&mut self, bufs: &[FileVolatileSlice]) -> io::Result<usize> {
        self.file.write_vectored_volatile(bufs)
    }

    fn read_at_volatile(&mut self, slice: FileVolatileSlice, offset: u64) -> io::Result<usize> {
        self.file.read_at_volatile(slice, offset)
    }

    fn read_vectored_at_volatile(
        &mut self,
        bufs: &[FileVolatileSlice],
        offset: u64,
    ) -> io::Result<usize> {
        let fd = self.file.as_raw_fd();
        match self.crew.run(fd, bufs, offset) {
            Some(result) => result,
            None => self.file.read_vectored_at_volatile(bufs, offset),
        }
    }

    fn write_at_volatile(&mut self, slice: FileVolatileSlice, offset: u64) -> io::Result<usize> {
        self.file.write_at_volatile(slice, offset)
    }

    fn write_vectored_at_volatile(
        &mut self,
        bufs: &[FileVolatileSlice],
        offset: u64,
    ) -> io::Result<usize> {
        self.file.write_vectored_at_volatile(bufs, offset)
    }
}

#[cfg(test)]
#[path = "tests_copy_crew.rs"]
mod tests;
