//! The same operations as plain syscalls in this process: what the host
//! filesystem can do without any daemon, one thread per "queue".
//!
//! A daemon with `depth` requests in flight copies data into (reads) or
//! out of (writes) `depth` different guest buffers in turn, and for 1 MiB
//! requests those no longer fit in the CPU's caches; so a native thread
//! cycles through as many buffers of the request's size as a daemon figure
//! has requests in flight, and the native figure at that depth is the
//! same copying with no daemon.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use crate::fixture;
use crate::op::{Offsets, Op, LARGE_IO};
use crate::pipeline::{credit, Figure, Timing};

fn cstr(s: &str) -> CString {
    CString::new(s).unwrap_or_default()
}

fn check(rc: libc::c_long, what: &str) -> io::Result<libc::c_long> {
    if rc < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("{what}: {e}")));
    }
    Ok(rc)
}

fn open_at(dir: RawFd, name: &str, flags: i32) -> io::Result<OwnedFd> {
    let c = cstr(name);
    // SAFETY: NUL-terminated name; the result is checked.
    let fd = unsafe { libc::openat(dir, c.as_ptr(), flags | libc::O_CLOEXEC, 0o644) };
    check(fd.into(), name)?;
    // SAFETY: a new fd owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The fds one thread works on.
struct Files {
    small: OwnedFd,
    names: OwnedFd,
    read_file: OwnedFd,
    write_file: OwnedFd,
    scratch: OwnedFd,
    /// `depth` buffers of the largest request size, back to back.
    buf: Vec<u8>,
    /// How many buffers it cycles through.
    depth: usize,
    /// The buffer the next read or write uses.
    slot: usize,
    offsets: Offsets,
    created: u64,
    thread: usize,
}

impl Files {
    fn open(share: &Path, thread: usize, depth: usize) -> io::Result<Files> {
        let root = open_at(
            libc::AT_FDCWD,
            &share.to_string_lossy(),
            libc::O_PATH | libc::O_DIRECTORY,
        )?;
        let r = root.as_raw_fd();
        Ok(Files {
            small: open_at(r, fixture::SMALL, libc::O_PATH)?,
            names: open_at(r, fixture::NAMES_DIR, libc::O_PATH | libc::O_DIRECTORY)?,
            read_file: open_at(r, fixture::READ_FILE, libc::O_RDWR)?,
            write_file: open_at(r, fixture::WRITE_FILE, libc::O_RDWR)?,
            scratch: open_at(r, fixture::SCRATCH_DIR, libc::O_PATH | libc::O_DIRECTORY)?,
            buf: vec![0x5a; LARGE_IO as usize * depth.max(1)],
            depth: depth.max(1),
            slot: 0,
            offsets: Offsets::new(thread as u64 + 1),
            created: 0,
            thread,
        })
    }

    fn stat_at(dir: RawFd, name: &CString, flags: i32) -> io::Result<()> {
        // SAFETY: all-zero is a valid stat; the kernel fills it.
        let mut st: libc::stat64 = unsafe { std::mem::zeroed() };
        // SAFETY: valid fd, NUL-terminated name, writable struct.
        let rc = unsafe { libc::fstatat64(dir, name.as_ptr(), &mut st, flags) };
        check(rc.into(), "fstatat").map(drop)
    }

    fn one(&mut self, op: Op) -> io::Result<()> {
        match op {
            Op::Getattr => Self::stat_at(self.small.as_raw_fd(), &cstr(""), libc::AT_EMPTY_PATH),
            Op::Lookup => {
                let name = fixture::name_of(self.offsets.index(fixture::NAMES));
                let fd = open_at(
                    self.names.as_raw_fd(),
                    &name,
                    libc::O_PATH | libc::O_NOFOLLOW,
                )?;
                Self::stat_at(fd.as_raw_fd(), &cstr(""), libc::AT_EMPTY_PATH)
            }
            Op::Read4k | Op::Read1m | Op::Write4k | Op::Write1m => {
                let size = op.io_size() as usize;
                let at = self.offsets.next(op) as libc::off_t;
                self.slot = (self.slot + 1) % self.depth;
                let buf = self.buf[self.slot * size..].as_mut_ptr().cast();
                // SAFETY: `buf` holds at least `size` bytes; valid fds.
                let n = unsafe {
                    if op.is_write() {
                        libc::pwrite(self.write_file.as_raw_fd(), buf, size, at)
                    } else {
                        libc::pread(self.read_file.as_raw_fd(), buf, size, at)
                    }
                };
                check(n as libc::c_long, "pread/pwrite").map(drop)
            }
            Op::CreateUnlink => {
                let name = format!("t{}-{}", self.thread, self.created);
                self.created += 1;
                let dir = self.scratch.as_raw_fd();
                drop(open_at(
                    dir,
                    &name,
                    libc::O_CREAT | libc::O_EXCL | libc::O_RDWR,
                )?);
                let c = cstr(&name);
                // SAFETY: valid dir fd and NUL-terminated name.
                check(
                    unsafe { libc::unlinkat(dir, c.as_ptr(), 0) }.into(),
                    "unlink",
                )
                .map(drop)
            }
            Op::Readdirplus => self.list_and_stat(),
        }
    }

    /// getdents64 through the directory, an fstatat per entry.
    fn list_and_stat(&mut self) -> io::Result<()> {
        let dir = open_at(
            self.names.as_raw_fd(),
            ".",
            libc::O_RDONLY | libc::O_DIRECTORY,
        )?;
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            // SAFETY: `buf` is writable for its length; valid fd.
            let n = unsafe {
                libc::syscall(
                    libc::SYS_getdents64,
                    dir.as_raw_fd(),
                    buf.as_mut_ptr(),
                    buf.len(),
                )
            };
            let n = check(n, "getdents64")? as usize;
            if n == 0 {
                return Ok(());
            }
            let mut at = 0;
            while at + 19 < n {
                let reclen = u16::from_ne_bytes([buf[at + 16], buf[at + 17]]) as usize;
                let name = &buf[at + 19..at + reclen];
                let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
                if name != b"." && name != b".." {
                    let c = CString::new(name).unwrap_or_default();
                    Self::stat_at(dir.as_raw_fd(), &c, libc::AT_SYMLINK_NOFOLLOW)?;
                }
                at += reclen.max(1);
            }
        }
    }
}

/// Runs `op` on `threads` threads, each cycling through `depth` buffers.
pub fn run(
    share: &Path,
    op: Op,
    threads: usize,
    depth: usize,
    timing: Timing,
) -> Result<Figure, String> {
    let t0 = Instant::now() + timing.warmup;
    let t1 = t0 + timing.measure;
    let record = threads == 1;
    let results: Vec<io::Result<(f64, Vec<Duration>)>> = thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    let mut files = Files::open(share, t, depth)?;
                    let (mut count, mut lat) = (0.0, Vec::new());
                    loop {
                        let start = Instant::now();
                        if start >= t1 {
                            return Ok((count, lat));
                        }
                        files.one(op)?;
                        let end = Instant::now();
                        count += credit(start, end, (t0, t1));
                        if record && start >= t0 && end < t1 {
                            lat.push(end - start);
                        }
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(io::Error::other("thread panicked")))
            })
            .collect()
    });
    let mut count = 0.0;
    let mut latencies = Vec::new();
    for r in results {
        let (c, l) = r.map_err(|e| format!("native {}: {e}", op.key()))?;
        count += c;
        latencies.extend(l);
    }
    Ok(Figure::new(count, timing.measure, latencies))
}
