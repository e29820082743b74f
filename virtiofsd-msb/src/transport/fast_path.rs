//! `FUSE_READ` and `FUSE_WRITE` served straight from their descriptor
//! chain.
//!
//! The general path wraps a chain in fuse-backend-rs's `Reader` and
//! `Writer` and lets its `Server` decode the request: four or five heap
//! allocations and as many copies of slice lists per request, which at 16
//! requests in flight were about a tenth of a queue thread's time on 4 KiB
//! reads and writes. Here the chain is walked once into small on-stack lists
//! of guest memory slices, the fixed part of the request is decoded from
//! them, and the very same `FileSystem::read` / `FileSystem::write` of the
//! served filesystem is called with a zero-copy writer or reader over those
//! slices. Nothing about what the filesystem checks changes.
//!
//! Only requests in the plain shape take this path: the readable part
//! first, exactly `len` bytes as the header says (and, for a WRITE, exactly
//! its data after the fixed part), room for the whole reply in the writable
//! part, every descriptor inside guest memory, a READ no larger than its
//! reply buffer. Descriptors may be cut anywhere (a Linux guest gives the
//! reply header and a WRITE's `fuse_write_out` a descriptor each, and every
//! data page one). Anything else, malformed or just unusual, returns `None`
//! and takes the general path, which answers it as before.

use std::io::{self, Write};
use std::mem::size_of;
use std::panic::{self, AssertUnwindSafe};

use fuse_backend_rs::abi::fuse_abi::{
    InHeader, Opcode, OutHeader, ReadIn, WriteIn, WriteOut, READ_LOCKOWNER, WRITE_CACHE,
    WRITE_LOCKOWNER,
};
use fuse_backend_rs::api::filesystem::{Context, ZeroCopyReader, ZeroCopyWriter};
use fuse_backend_rs::file_buf::FileVolatileSlice;
use fuse_backend_rs::file_traits::FileReadWriteVolatile;
use smallvec::SmallVec;
use virtio_queue::DescriptorChain;
use vm_memory::{ByteValued, GuestMemory, GuestMemoryMmap, VolatileSlice};

use crate::protocol::error_header;
use crate::transport::ServedFs;

/// Descriptors per side kept on the stack; longer chains spill to the heap
/// (one allocation, still fewer than the general path's).
pub const INLINE_SEGMENTS: usize = 8;

/// Longest request the general path takes: fuse-backend-rs answers a
/// longer one ENOMEM (its `MAX_BUFFER_SIZE` plus one page of headers).
const MAX_REQUEST_LEN: usize = fuse_backend_rs::api::server::MAX_BUFFER_SIZE as usize + 4096;

/// The request header and the fixed part of a READ or WRITE.
const FIXED_LEN: usize = size_of::<InHeader>() + size_of::<ReadIn>();
const _: () = assert!(size_of::<ReadIn>() == size_of::<WriteIn>());

type Mem = GuestMemoryMmap<()>;
type Slices<'m> = SmallVec<[VolatileSlice<'m, ()>; INLINE_SEGMENTS]>;

/// Serves `chain` if it is a READ or WRITE in the plain shape; returns the
/// length the device wrote (for the used ring), or `None` when the general
/// path is to serve it.
pub fn serve<F, M>(fs: &F, mem: &Mem, chain: &DescriptorChain<M>) -> Option<u32>
where
    F: ServedFs,
    M: std::ops::Deref<Target = Mem> + Clone,
{
    let parts = Parts::of(mem, chain)?;
    let header: InHeader = decode(&parts.fixed[..size_of::<InHeader>()]);
    if header.len as usize != parts.readable || parts.readable > MAX_REQUEST_LEN {
        return None;
    }
    // Room for at least an error reply, checked before any filesystem call
    // (a declined request is served again by the general path).
    let reply_room: usize = parts.reply.iter().map(|s| s.len()).sum();
    if reply_room < size_of::<OutHeader>() {
        return None;
    }
    tracing::trace!(
        opcode = header.opcode,
        unique = header.unique,
        nodeid = header.nodeid,
        "fuse request (fast path)"
    );
    let mut ctx = Context::from(&header);
    fs.id_remap(&mut ctx).ok()?;
    let body = &parts.fixed[size_of::<InHeader>()..];
    let answered = if header.opcode == Opcode::Read as u32 {
        let args: ReadIn = decode(body);
        let mut data = Cursor::new(parts.reply.clone(), size_of::<OutHeader>())?;
        if args.size as usize > data.remaining() {
            return None;
        }
        let owner = (args.read_flags & READ_LOCKOWNER != 0).then_some(args.lock_owner);
        guarded(|| {
            fs.read(
                &ctx,
                header.nodeid,
                args.fh,
                &mut data,
                args.size,
                args.offset,
                owner,
                args.flags,
            )
        })
        .map(|n| (n, None))
    } else if header.opcode == Opcode::Write as u32 {
        let args: WriteIn = decode(body);
        let mut data = Cursor::new(parts.data, 0)?;
        if args.size as usize != data.remaining() || reply_room < REPLY_WITH_WRITE_OUT {
            return None;
        }
        let owner = (args.fuse_flags & WRITE_LOCKOWNER != 0).then_some(args.lock_owner);
        let delayed = args.fuse_flags & WRITE_CACHE != 0;
        guarded(|| {
            fs.write(
                &ctx,
                header.nodeid,
                args.fh,
                &mut data,
                args.size,
                args.offset,
                owner,
                delayed,
                args.flags,
                args.fuse_flags,
            )
        })
        .map(|n| (0, Some(n)))
    } else {
        return None;
    };
    Some(reply_to(parts.reply, header.unique, answered))
}

/// Length of an OutHeader followed by a WriteOut.
const REPLY_WITH_WRITE_OUT: usize = size_of::<OutHeader>() + size_of::<WriteOut>();

/// Runs a filesystem call; a panic in it is an EIO answer, as on the
/// general path, not a dead queue thread.
fn guarded(call: impl FnOnce() -> io::Result<usize>) -> io::Result<usize> {
    panic::catch_unwind(AssertUnwindSafe(call)).unwrap_or_else(|_| {
        tracing::error!("fuse: request handler panicked (fast path)");
        Err(io::Error::from_raw_os_error(libc::EIO))
    })
}

/// Writes the reply header (and a WriteOut for a write) at the start of
/// the writable descriptors (which have room for them); returns the
/// reply's length. `answered` is (bytes read, bytes written) or the error.
fn reply_to(reply: Slices<'_>, unique: u64, answered: io::Result<(usize, Option<usize>)>) -> u32 {
    let header_len = size_of::<OutHeader>();
    let (out, write_out) = match answered {
        Ok((read, None)) => (
            OutHeader {
                len: (header_len + read) as u32,
                error: 0,
                unique,
            },
            None,
        ),
        Ok((_, Some(written))) => (
            OutHeader {
                len: REPLY_WITH_WRITE_OUT as u32,
                error: 0,
                unique,
            },
            Some(WriteOut {
                size: written as u32,
                padding: 0,
            }),
        ),
        Err(e) => {
            // The errno fuse-backend-rs's general path answers with.
            let errno = e
                .raw_os_error()
                .unwrap_or_else(|| fuse_backend_rs::encode_io_error_kind(e.kind()));
            (error_header(unique, errno), None)
        }
    };
    let mut w = Cursor { slices: reply };
    // The caller checked the room: these cannot come up short.
    let _ = w.write_all(out.as_slice());
    if let Some(wo) = write_out {
        let _ = w.write_all(wo.as_slice());
    }
    out.len
}

/// A `T` from the start of `bytes`; bytes past their end read as zero.
pub(super) fn decode<T: ByteValued + Default>(bytes: &[u8]) -> T {
    let mut v = T::default();
    let n = size_of::<T>().min(bytes.len());
    v.as_mut_slice()[..n].copy_from_slice(&bytes[..n]);
    v
}

/// A chain taken apart: the fixed part of the request copied out, the
/// readable bytes after it, the writable descriptors.
struct Parts<'m> {
    fixed: [u8; FIXED_LEN],
    readable: usize,
    data: Slices<'m>,
    reply: Slices<'m>,
}

impl<'m> Parts<'m> {
    fn of<M>(mem: &'m Mem, chain: &DescriptorChain<M>) -> Option<Self>
    where
        M: std::ops::Deref<Target = Mem> + Clone,
    {
        let mut parts = Parts {
            fixed: [0; FIXED_LEN],
            readable: 0,
            data: Slices::new(),
            reply: Slices::new(),
        };
        let mut seen_writable = false;
        for desc in chain.clone() {
            let slice = mem.get_slice(desc.addr(), desc.len() as usize).ok()?;
            if desc.is_write_only() {
                seen_writable = true;
                // Empty descriptors carry nothing; the cursors never see
                // one (a copy into one would end a reply short).
                if !slice.is_empty() {
                    parts.reply.push(slice);
                }
                continue;
            }
            if seen_writable {
                // Readable after writable: the general path refuses it.
                return None;
            }
            let got = parts.readable.min(FIXED_LEN);
            let head = (FIXED_LEN - got).min(slice.len());
            slice
                .subslice(0, head)
                .ok()?
                .copy_to(&mut parts.fixed[got..got + head]);
            parts.readable = parts.readable.checked_add(slice.len())?;
            if head < slice.len() {
                parts.data.push(slice.offset(head).ok()?);
            }
        }
        (parts.readable >= FIXED_LEN).then_some(parts)
    }
}

/// Guest memory slices consumed front to back: the zero-copy writer of a
/// READ's data and reader of a WRITE's.
struct Cursor<'m> {
    slices: Slices<'m>,
}

impl<'m> Cursor<'m> {
    /// `slices` past their first `skip` bytes; `None` if they hold fewer.
    fn new(slices: Slices<'m>, skip: usize) -> Option<Self> {
        let mut c = Cursor { slices };
        if c.remaining() < skip {
            return None;
        }
        c.advance(skip);
        Some(c)
    }

    fn remaining(&self) -> usize {
        self.slices.iter().map(|s| s.len()).sum()
    }

    /// The next `count` bytes (or fewer, at the end) as file I/O buffers.
    fn next(&self, count: usize) -> SmallVec<[FileVolatileSlice<'m>; INLINE_SEGMENTS]> {
        let mut left = count;
        let mut bufs = SmallVec::new();
        for s in &self.slices {
            if left == 0 {
                break;
            }
            let n = s.len().min(left);
            if let Ok(part) = s.subslice(0, n) {
                bufs.push(FileVolatileSlice::from_volatile_slice(&part));
            }
            left -= n;
        }
        bufs
    }

    /// Drops the first `n` bytes.
    fn advance(&mut self, mut n: usize) {
        while n > 0 {
            let Some(first) = self.slices.first_mut() else {
                return;
            };
            if n < first.len() {
                if let Ok(rest) = first.offset(n) {
                    *first = rest;
                }
                return;
            }
            n -= first.len();
            self.slices.remove(0);
        }
    }
}

impl<'m> Cursor<'m> {
    /// Moves up to `count` bytes between the file and the next slices with
    /// `io` (a vectored read or write at an offset) and consumes them.
    fn transfer(
        &mut self,
        count: usize,
        io: impl FnOnce(&[FileVolatileSlice<'m>]) -> io::Result<usize>,
    ) -> io::Result<usize> {
        let bufs = self.next(count);
        if bufs.is_empty() {
            return Ok(0);
        }
        let n = io(&bufs)?;
        self.advance(n);
        Ok(n)
    }

    /// Copies between a buffer and the first slice with `copy` (which
    /// returns the bytes it copied) and consumes them.
    fn copy_first(&mut self, copy: impl FnOnce(&VolatileSlice<'m, ()>) -> usize) -> usize {
        let Some(first) = self.slices.first() else {
            return 0;
        };
        let n = copy(first);
        self.advance(n);
        n
    }
}

impl ZeroCopyWriter for Cursor<'_> {
    fn write_from(
        &mut self,
        f: &mut dyn FileReadWriteVolatile,
        count: usize,
        off: u64,
    ) -> io::Result<usize> {
        self.transfer(count, |bufs| f.read_vectored_at_volatile(bufs, off))
    }

    fn available_bytes(&self) -> usize {
        self.remaining()
    }
}

impl io::Write for Cursor<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(self.copy_first(|s| {
            let n = s.len().min(buf.len());
            s.copy_from(&buf[..n]);
            n
        }))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl ZeroCopyReader for Cursor<'_> {
    fn read_to(
        &mut self,
        f: &mut dyn FileReadWriteVolatile,
        count: usize,
        off: u64,
    ) -> io::Result<usize> {
        self.transfer(count, |bufs| f.write_vectored_at_volatile(bufs, off))
    }
}

impl io::Read for Cursor<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        Ok(self.copy_first(|s| s.copy_to(buf)))
    }
}

#[cfg(test)]
#[path = "tests_fast_path.rs"]
mod tests;
