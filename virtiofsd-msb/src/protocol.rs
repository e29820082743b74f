//! FUSE request dispatch on top of fuse-backend-rs's `Server`.
//!
//! fuse-backend-rs 0.14 does not dispatch `FUSE_COPY_FILE_RANGE` and routes
//! `FUSE_SETLKW` to the non-blocking `setlk`; both are handled here through
//! [`ExtraRequests`]. A request the server cannot decode still gets an errno
//! reply so the guest never waits forever.
//!
//! The [`Dispatcher`] never writes a fallback reply itself: after the server
//! consumed the `Writer` it cannot know whether a reply went out. It reports
//! an [`Outcome`] and the transport, which can check, sends the errno reply.

use std::io::{self, IoSlice, Write};
use std::mem::size_of;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;

use fuse_backend_rs::abi::fuse_abi::{
    CopyFileRangeIn, InHeader, LkIn, Opcode, OutHeader, WriteOut,
};
use fuse_backend_rs::api::filesystem::{Context, FileLock, FileSystem};
use fuse_backend_rs::api::server::Server;
use fuse_backend_rs::transport::{Reader, Writer};
use vm_memory::bitmap::BitmapSlice;
use vm_memory::ByteValued;

use crate::request_check;

/// Requests our filesystem serves that fuse-backend-rs's `Server` does not
/// hand to a `FileSystem`.
pub trait ExtraRequests {
    /// `FUSE_COPY_FILE_RANGE`: copy `len` bytes from (`inode_in`, `handle_in`,
    /// `offset_in`) to (`inode_out`, `handle_out`, `offset_out`); returns the
    /// number of bytes copied.
    #[allow(clippy::too_many_arguments)]
    fn copy_file_range(
        &self,
        ctx: &Context,
        inode_in: u64,
        handle_in: u64,
        offset_in: u64,
        inode_out: u64,
        handle_out: u64,
        offset_out: u64,
        len: u64,
        flags: u64,
    ) -> io::Result<usize>;

    /// `FUSE_SETLKW`: like `setlk` but waits for a conflicting lock to go.
    fn setlk_wait(
        &self,
        ctx: &Context,
        inode: u64,
        handle: u64,
        owner: u64,
        lock: FileLock,
        flags: u32,
    ) -> io::Result<()>;

    /// Helper threads that may serve a whole large `FUSE_READ` while the
    /// queue thread goes on with the next request (see
    /// [`crate::copy_crew`]); `None`: every request is served in line.
    fn copy_crew(&self) -> Option<&crate::copy_crew::CopyCrew> {
        None
    }
}

/// Size of the reply header every FUSE reply starts with.
pub const OUT_HEADER_LEN: usize = size_of::<OutHeader>();

const OP_FORGET: u32 = Opcode::Forget as u32;
const OP_BATCH_FORGET: u32 = Opcode::BatchForget as u32;
const OP_INTERRUPT: u32 = Opcode::Interrupt as u32;
const OP_SETLKW: u32 = Opcode::Setlkw as u32;
const OP_COPY_FILE_RANGE: u32 = Opcode::CopyFileRange as u32;

/// True for the requests the kernel expects no reply to.
pub fn is_no_reply_opcode(opcode: u32) -> bool {
    matches!(opcode, OP_FORGET | OP_BATCH_FORGET | OP_INTERRUPT)
}

/// What became of one request.
#[derive(Debug)]
pub enum Outcome {
    /// A reply went out; `len` is the length the server reported (0 when it
    /// wrote a reply without counting it, as for `FUSE_DESTROY`).
    Replied {
        /// The request's `unique`.
        unique: u64,
        /// Reply length in bytes as reported.
        len: usize,
    },
    /// The request takes no reply (forget, interrupt), or the message was too
    /// short to name any request.
    NoReply,
    /// Handling failed. Unless the transport finds that a reply for `unique`
    /// went out anyway, it must send an error reply with `errno`.
    Failed {
        /// The request's `unique`.
        unique: u64,
        /// Positive errno for the fallback reply.
        errno: i32,
    },
    /// A `FUSE_SETLKW` that conflicts with a held lock: the transport must
    /// wait for it off the request thread ([`PendingLock::wait`]) and then
    /// send the returned header as the reply.
    Deferred(PendingLock),
}

/// A blocking lock request whose reply is due once the lock is granted.
#[derive(Debug, Clone, Copy)]
pub struct PendingLock {
    /// The request's `unique`.
    pub unique: u64,
    ctx: Context,
    inode: u64,
    handle: u64,
    owner: u64,
    start: u64,
    end: u64,
    lock_type: u32,
    pid: u32,
    flags: u32,
}

impl PendingLock {
    /// Waits for the lock through [`ExtraRequests::setlk_wait`] and returns
    /// the complete reply (a bare header: success or errno).
    pub fn wait<F: ExtraRequests + ?Sized>(&self, fs: &F) -> OutHeader {
        let lock = FileLock {
            start: self.start,
            end: self.end,
            lock_type: self.lock_type,
            pid: self.pid,
        };
        match fs.setlk_wait(
            &self.ctx,
            self.inode,
            self.handle,
            self.owner,
            lock,
            self.flags,
        ) {
            Ok(()) => ok_header(self.unique),
            Err(e) => error_header(self.unique, errno_of(&e)),
        }
    }
}

/// A bare success reply for `unique`.
pub fn ok_header(unique: u64) -> OutHeader {
    OutHeader {
        len: OUT_HEADER_LEN as u32,
        error: 0,
        unique,
    }
}

/// An error reply for `unique` carrying `errno` (positive; clamped into the
/// range the kernel accepts).
pub fn error_header(unique: u64, errno: i32) -> OutHeader {
    let errno = if (1..4096).contains(&errno) {
        errno
    } else {
        libc::EIO
    };
    OutHeader {
        len: OUT_HEADER_LEN as u32,
        error: -errno,
        unique,
    }
}

/// The errno an `io::Error` maps to in a reply.
pub fn errno_of(e: &io::Error) -> i32 {
    match e.raw_os_error() {
        Some(n) if (1..4096).contains(&n) => n,
        _ => libc::EIO,
    }
}

/// The errno a failed server call answers with: malformed input gives
/// EINVAL, anything else EIO.
fn errno_of_server_error(e: &fuse_backend_rs::Error) -> i32 {
    use fuse_backend_rs::Error as E;
    match e {
        E::DecodeMessage(_)
        | E::MissingParameter
        | E::InvalidCString(_)
        | E::InvalidHeaderLength
        | E::InvalidXattrSize(_) => libc::EINVAL,
        E::InvalidMessage(io) => match io.raw_os_error() {
            Some(n) if (1..4096).contains(&n) => n,
            _ => libc::EINVAL,
        },
        E::FailedToRemapID(_) => libc::EPERM,
        _ => libc::EIO,
    }
}

/// Decodes FUSE requests and hands them to the filesystem.
pub struct Dispatcher<F: FileSystem<Inode = u64, Handle = u64> + ExtraRequests + Send + Sync> {
    server: Server<Arc<F>>,
    fs: Arc<F>,
}

impl<F> Dispatcher<F>
where
    F: FileSystem<Inode = u64, Handle = u64> + ExtraRequests + Send + Sync,
{
    /// A dispatcher serving `fs`.
    pub fn new(fs: Arc<F>) -> Self {
        Dispatcher {
            server: Server::new(fs.clone()),
            fs,
        }
    }

    /// The filesystem requests go to.
    pub fn fs(&self) -> &Arc<F> {
        &self.fs
    }

    /// Handles one request read from `r`, writing its reply (if any) to `w`.
    /// Never panics on malformed input.
    pub fn handle_message<S: BitmapSlice>(&self, r: Reader<'_, S>, w: Writer<'_, S>) -> Outcome {
        let mut body = r.clone();
        let header: InHeader = match body.read_obj() {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!("fuse: request shorter than its header: {e}");
                return Outcome::NoReply;
            }
        };
        tracing::trace!(
            opcode = header.opcode,
            unique = header.unique,
            nodeid = header.nodeid,
            "fuse request"
        );
        if let Err(errno) = request_check::check(&header, r.available_bytes(), &mut body.clone()) {
            tracing::debug!(
                opcode = header.opcode,
                unique = header.unique,
                errno,
                "fuse: malformed request refused"
            );
            if is_no_reply_opcode(header.opcode) {
                return Outcome::NoReply;
            }
            let mut w = w;
            return reply_error(&mut w, header.unique, errno);
        }
        // A bug in the decoding or the filesystem must not take the queue
        // thread down with it (the guest would wait forever): answer EIO.
        let handled = panic::catch_unwind(AssertUnwindSafe(|| match header.opcode {
            OP_COPY_FILE_RANGE => self.copy_file_range(&header, body, w),
            OP_SETLKW => self.setlkw(&header, body, w),
            op => match self.server.handle_message(r, w, None, None) {
                _ if is_no_reply_opcode(op) => Outcome::NoReply,
                Ok(len) => Outcome::Replied {
                    unique: header.unique,
                    len,
                },
                Err(e) => {
                    let errno = errno_of_server_error(&e);
                    tracing::debug!(
                        opcode = op,
                        unique = header.unique,
                        "fuse: request failed: {e}"
                    );
                    Outcome::Failed {
                        unique: header.unique,
                        errno,
                    }
                }
            },
        }));
        match handled {
            Ok(outcome) => outcome,
            Err(_) => {
                tracing::error!(
                    opcode = header.opcode,
                    unique = header.unique,
                    "fuse: request handler panicked"
                );
                if is_no_reply_opcode(header.opcode) {
                    Outcome::NoReply
                } else {
                    Outcome::Failed {
                        unique: header.unique,
                        errno: libc::EIO,
                    }
                }
            }
        }
    }

    fn copy_file_range<S: BitmapSlice>(
        &self,
        h: &InHeader,
        mut body: Reader<'_, S>,
        mut w: Writer<'_, S>,
    ) -> Outcome {
        let args: CopyFileRangeIn = match body.read_obj() {
            Ok(a) => a,
            Err(_) => return reply_error(&mut w, h.unique, libc::EINVAL),
        };
        let ctx = Context::from(h);
        let result = self.fs.copy_file_range(
            &ctx,
            h.nodeid,
            args.fh_in,
            args.offset_in,
            args.nodeid_out,
            args.fh_out,
            args.offset_out,
            args.len,
            args.flags,
        );
        match result {
            Ok(n) => {
                let out = WriteOut {
                    size: u32::try_from(n).unwrap_or(u32::MAX),
                    padding: 0,
                };
                reply_ok(&mut w, h.unique, out.as_slice())
            }
            Err(e) => reply_error(&mut w, h.unique, errno_of(&e)),
        }
    }

    fn setlkw<S: BitmapSlice>(
        &self,
        h: &InHeader,
        mut body: Reader<'_, S>,
        mut w: Writer<'_, S>,
    ) -> Outcome {
        let args: LkIn = match body.read_obj() {
            Ok(a) => a,
            Err(_) => return reply_error(&mut w, h.unique, libc::EINVAL),
        };
        let ctx = Context::from(h);
        let lock = FileLock::from(args.lk);
        // Uncontended locks (and every unlock) complete right here; only a
        // conflict has to wait, and that must not hold the request thread.
        match FileSystem::setlk(
            &*self.fs,
            &ctx,
            h.nodeid,
            args.fh,
            args.owner,
            lock,
            args.lk_flags,
        ) {
            Ok(()) => reply_ok(&mut w, h.unique, &[]),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EACCES)) => {
                Outcome::Deferred(PendingLock {
                    unique: h.unique,
                    ctx,
                    inode: h.nodeid,
                    handle: args.fh,
                    owner: args.owner,
                    start: lock.start,
                    end: lock.end,
                    lock_type: lock.lock_type,
                    pid: lock.pid,
                    flags: args.lk_flags,
                })
            }
            Err(e) => reply_error(&mut w, h.unique, errno_of(&e)),
        }
    }
}

/// Writes a success reply with `body` in one write (a `/dev/fuse` reply must
/// be a single write).
fn reply_ok<S: BitmapSlice>(w: &mut Writer<'_, S>, unique: u64, body: &[u8]) -> Outcome {
    let len = OUT_HEADER_LEN + body.len();
    let header = OutHeader {
        len: len as u32,
        error: 0,
        unique,
    };
    write_reply(w, header, body)
}

fn reply_error<S: BitmapSlice>(w: &mut Writer<'_, S>, unique: u64, errno: i32) -> Outcome {
    write_reply(w, error_header(unique, errno), &[])
}

fn write_reply<S: BitmapSlice>(w: &mut Writer<'_, S>, header: OutHeader, body: &[u8]) -> Outcome {
    let unique = header.unique;
    let len = header.len as usize;
    let res = if body.is_empty() {
        w.write(header.as_slice())
    } else {
        w.write_vectored(&[IoSlice::new(header.as_slice()), IoSlice::new(body)])
    };
    match res.and_then(|n| w.commit(None).map(|_| n)) {
        Ok(n) if n == len => Outcome::Replied { unique, len },
        Ok(n) => {
            tracing::debug!(unique, "fuse: short reply ({n} of {len} bytes)");
            Outcome::Failed {
                unique,
                errno: libc::EIO,
            }
        }
        Err(e) => {
            tracing::debug!(unique, "fuse: writing reply failed: {e}");
            Outcome::Failed {
                unique,
                errno: libc::EIO,
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    //! Dispatcher tests over an in-memory request buffer and a pipe standing
    //! in for `/dev/fuse`, against a tiny test-only filesystem.

    use super::*;
    use fuse_backend_rs::abi::fuse_abi::{InitIn, InitOut};
    use fuse_backend_rs::api::filesystem::{Entry, FsOptions};
    use fuse_backend_rs::transport::{FuseBuf, FuseDevWriter};
    use std::ffi::CStr;
    use std::io::Read;
    use std::os::unix::io::{AsRawFd, FromRawFd, OwnedFd};
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::time::Duration;

    /// A test-only filesystem: one directory (inode 1) holding one file
    /// `hello` (inode 2). Locks conflict while `locked` is set.
    #[derive(Default)]
    pub(crate) struct TinyFs {
        pub locked: AtomicBool,
        pub copies: AtomicU64,
    }

    fn attr(ino: u64, dir: bool) -> libc::stat64 {
        // SAFETY: stat64 is a plain C struct for which all-zero bytes are valid.
        let mut st: libc::stat64 = unsafe { std::mem::zeroed() };
        st.st_ino = ino;
        st.st_mode = if dir {
            libc::S_IFDIR | 0o755
        } else {
            libc::S_IFREG | 0o644
        };
        st.st_nlink = if dir { 2 } else { 1 };
        st.st_size = if dir { 0 } else { 5 };
        st
    }

    impl FileSystem for TinyFs {
        type Inode = u64;
        type Handle = u64;

        fn init(&self, _capable: FsOptions) -> io::Result<FsOptions> {
            Ok(FsOptions::empty())
        }

        fn lookup(&self, _ctx: &Context, parent: u64, name: &CStr) -> io::Result<Entry> {
            if parent == 1 && name.to_bytes() == b"hello" {
                Ok(Entry {
                    inode: 2,
                    generation: 0,
                    attr: attr(2, false),
                    attr_flags: 0,
                    attr_timeout: Duration::from_secs(1),
                    entry_timeout: Duration::from_secs(1),
                })
            } else {
                Err(io::Error::from_raw_os_error(libc::ENOENT))
            }
        }

        fn readlink(&self, _ctx: &Context, _inode: u64) -> io::Result<Vec<u8>> {
            panic!("test: a buggy handler");
        }

        fn getattr(
            &self,
            _ctx: &Context,
            inode: u64,
            _handle: Option<u64>,
        ) -> io::Result<(libc::stat64, Duration)> {
            match inode {
                1 => Ok((attr(1, true), Duration::from_secs(1))),
                2 => Ok((attr(2, false), Duration::from_secs(1))),
                _ => Err(io::Error::from_raw_os_error(libc::ENOENT)),
            }
        }

        fn setlk(
            &self,
            _ctx: &Context,
            _inode: u64,
            _handle: u64,
            _owner: u64,
            _lock: FileLock,
            _flags: u32,
        ) -> io::Result<()> {
            if self.locked.load(Ordering::SeqCst) {
                Err(io::Error::from_raw_os_error(libc::EAGAIN))
            } else {
                Ok(())
            }
        }
    }

    impl ExtraRequests for TinyFs {
        fn copy_file_range(
            &self,
            _ctx: &Context,
            inode_in: u64,
            _handle_in: u64,
            _offset_in: u64,
            _inode_out: u64,
            _handle_out: u64,
            _offset_out: u64,
            len: u64,
            _flags: u64,
        ) -> io::Result<usize> {
            if inode_in != 2 {
                return Err(io::Error::from_raw_os_error(libc::EBADF));
            }
            self.copies.fetch_add(1, Ordering::SeqCst);
            Ok(len.min(5) as usize)
        }

        fn setlk_wait(
            &self,
            _ctx: &Context,
            _inode: u64,
            _handle: u64,
            _owner: u64,
            _lock: FileLock,
            _flags: u32,
        ) -> io::Result<()> {
            while self.locked.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(1));
            }
            Ok(())
        }
    }

    /// Builds a FUSE request: header (with `len` filled in) and body.
    /// A write lock on all of handle 1 for `owner`.
    pub(crate) fn whole_file_write_lock(owner: u64) -> LkIn {
        LkIn {
            fh: 1,
            owner,
            lk: fuse_backend_rs::abi::fuse_abi::FileLock {
                start: 0,
                end: u64::MAX,
                type_: libc::F_WRLCK as u32,
                pid: 1,
            },
            lk_flags: 0,
            padding: 0,
        }
    }

    pub(crate) fn request(opcode: u32, unique: u64, nodeid: u64, body: &[u8]) -> Vec<u8> {
        let h = InHeader {
            len: (size_of::<InHeader>() + body.len()) as u32,
            opcode,
            unique,
            nodeid,
            uid: 0,
            gid: 0,
            pid: 1,
            padding: 0,
        };
        let mut v = h.as_slice().to_vec();
        v.extend_from_slice(body);
        v
    }

    fn pipe() -> (OwnedFd, OwnedFd) {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2 writes.
        let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) };
        assert_eq!(rc, 0);
        // SAFETY: pipe2 succeeded, so both fds are open and owned by us alone.
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
    }

    /// Sends `req` through the dispatcher with a pipe as the reply channel;
    /// returns the outcome and whatever bytes were written.
    pub(crate) fn roundtrip<F>(d: &Dispatcher<F>, mut req: Vec<u8>) -> (Outcome, Vec<u8>)
    where
        F: FileSystem<Inode = u64, Handle = u64> + ExtraRequests + Send + Sync,
    {
        let (rx, tx) = pipe();
        let mut out_buf = vec![0u8; 8192];
        let outcome = {
            let r = Reader::<()>::from_fuse_buffer(FuseBuf::new(&mut req)).unwrap();
            let w = FuseDevWriter::<()>::new(tx.as_raw_fd(), &mut out_buf).unwrap();
            d.handle_message(r, w.into())
        };
        let mut file = std::fs::File::from(rx);
        let mut got = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            match file.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
        }
        (outcome, got)
    }

    fn header_of(bytes: &[u8]) -> OutHeader {
        OutHeader::from_slice(&bytes[..OUT_HEADER_LEN])
            .copied()
            .unwrap()
    }

    fn dispatcher() -> Dispatcher<TinyFs> {
        Dispatcher::new(Arc::new(TinyFs::default()))
    }

    fn init(d: &Dispatcher<TinyFs>) {
        let init = InitIn {
            major: 7,
            minor: 31,
            max_readahead: 0,
            flags: 0,
        };
        let (o, got) = roundtrip(d, request(Opcode::Init as u32, 1, 0, init.as_slice()));
        assert!(matches!(o, Outcome::Replied { unique: 1, .. }), "{o:?}");
        let h = header_of(&got);
        assert_eq!(h.error, 0);
        assert_eq!(h.len as usize, OUT_HEADER_LEN + size_of::<InitOut>());
    }

    #[test]
    fn init_and_lookup_go_through_the_server() {
        let d = dispatcher();
        init(&d);
        let (o, got) = roundtrip(&d, request(Opcode::Lookup as u32, 2, 1, b"hello\0"));
        assert!(matches!(o, Outcome::Replied { unique: 2, .. }), "{o:?}");
        let h = header_of(&got);
        assert_eq!((h.error, h.unique), (0, 2));
        let (_, got) = roundtrip(&d, request(Opcode::Lookup as u32, 3, 1, b"nope\0"));
        assert_eq!(header_of(&got).error, -libc::ENOENT);
    }

    #[test]
    fn unknown_opcode_gets_enosys() {
        let d = dispatcher();
        init(&d);
        let (o, got) = roundtrip(&d, request(9999, 7, 1, &[]));
        assert!(matches!(o, Outcome::Replied { unique: 7, .. }), "{o:?}");
        assert_eq!(header_of(&got).error, -libc::ENOSYS);
    }

    #[test]
    fn truncated_request_is_reported_not_panicked() {
        let d = dispatcher();
        init(&d);
        // A SETATTR whose body is missing entirely.
        let (o, _) = roundtrip(&d, request(Opcode::Setattr as u32, 8, 1, &[]));
        match o {
            Outcome::Failed { unique: 8, errno } => assert_eq!(errno, libc::EINVAL),
            Outcome::Replied { unique: 8, .. } => {}
            o => panic!("{o:?}"),
        }
        // Shorter than a header: nothing to answer.
        let (o, got) = roundtrip(&d, vec![1, 2, 3]);
        assert!(matches!(o, Outcome::NoReply), "{o:?}");
        assert!(got.is_empty());
        // A header whose len lies.
        let mut req = request(Opcode::Lookup as u32, 9, 1, b"hello\0");
        req[0..4].copy_from_slice(&3u32.to_le_bytes());
        let (o, _) = roundtrip(&d, req);
        assert!(
            matches!(
                o,
                Outcome::Failed { unique: 9, .. } | Outcome::Replied { unique: 9, .. }
            ),
            "{o:?}"
        );
    }

    #[test]
    fn forget_gets_no_reply() {
        let d = dispatcher();
        init(&d);
        let (o, got) = roundtrip(
            &d,
            request(Opcode::Forget as u32, 10, 2, &1u64.to_le_bytes()),
        );
        assert!(matches!(o, Outcome::NoReply), "{o:?}");
        assert!(got.is_empty());
        // Malformed forget: still no reply.
        let (o, got) = roundtrip(&d, request(Opcode::BatchForget as u32, 11, 0, &[1]));
        assert!(matches!(o, Outcome::NoReply), "{o:?}");
        assert!(got.is_empty());
    }

    #[test]
    fn copy_file_range_reply_layout() {
        let d = dispatcher();
        init(&d);
        let args = CopyFileRangeIn {
            fh_in: 1,
            offset_in: 0,
            nodeid_out: 2,
            fh_out: 2,
            offset_out: 0,
            len: 100,
            flags: 0,
        };
        let (o, got) = roundtrip(&d, request(OP_COPY_FILE_RANGE, 12, 2, args.as_slice()));
        assert!(
            matches!(
                o,
                Outcome::Replied {
                    unique: 12,
                    len: 24
                }
            ),
            "{o:?}"
        );
        let h = header_of(&got);
        assert_eq!((h.len, h.error, h.unique), (24, 0, 12));
        let out = WriteOut::from_slice(&got[16..24]).copied().unwrap();
        assert_eq!(out.size, 5);
        // Error from the filesystem.
        let (_, got) = roundtrip(&d, request(OP_COPY_FILE_RANGE, 13, 1, args.as_slice()));
        assert_eq!(header_of(&got).error, -libc::EBADF);
        // Truncated arguments.
        let (_, got) = roundtrip(&d, request(OP_COPY_FILE_RANGE, 14, 2, &[0u8; 8]));
        assert_eq!(header_of(&got).error, -libc::EINVAL);
        assert_eq!(d.fs().copies.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn setlkw_uncontended_replies_at_once_and_contended_defers() {
        let d = dispatcher();
        init(&d);
        let lk = whole_file_write_lock(42);
        let (o, got) = roundtrip(&d, request(OP_SETLKW, 20, 2, lk.as_slice()));
        assert!(
            matches!(
                o,
                Outcome::Replied {
                    unique: 20,
                    len: 16
                }
            ),
            "{o:?}"
        );
        assert_eq!(header_of(&got).error, 0);

        d.fs().locked.store(true, Ordering::SeqCst);
        let (o, got) = roundtrip(&d, request(OP_SETLKW, 21, 2, lk.as_slice()));
        assert!(got.is_empty(), "a deferred lock must not be answered yet");
        let Outcome::Deferred(p) = o else {
            panic!("{o:?}")
        };
        assert_eq!(p.unique, 21);
        let fs = d.fs().clone();
        let t = std::thread::spawn(move || p.wait(&*fs));
        std::thread::sleep(Duration::from_millis(20));
        d.fs().locked.store(false, Ordering::SeqCst);
        let h = t.join().unwrap();
        assert_eq!((h.unique, h.error, h.len), (21, 0, 16));

        let (_, got) = roundtrip(&d, request(OP_SETLKW, 22, 2, &[0u8; 4]));
        assert_eq!(header_of(&got).error, -libc::EINVAL);
    }

    #[test]
    fn a_panicking_handler_becomes_an_error() {
        let d = dispatcher();
        init(&d);
        let (o, _) = roundtrip(&d, request(Opcode::Readlink as u32, 30, 2, &[]));
        assert!(
            matches!(o, Outcome::Failed { unique: 30, errno } if errno == libc::EIO),
            "{o:?}"
        );
        // Still serving.
        let (_, got) = roundtrip(&d, request(Opcode::Lookup as u32, 31, 1, b"hello\0"));
        assert_eq!(header_of(&got).error, 0);
    }

    #[test]
    fn error_header_clamps_errno() {
        assert_eq!(error_header(1, libc::ENOENT).error, -libc::ENOENT);
        assert_eq!(error_header(1, 0).error, -libc::EIO);
        assert_eq!(error_header(1, -5).error, -libc::EIO);
        assert_eq!(error_header(1, 100_000).error, -libc::EIO);
        assert_eq!(errno_of(&io::Error::other("x")), libc::EIO);
    }
}
