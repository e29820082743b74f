//! READ, WRITE and raw requests as virtio descriptor chains, into the
//! vhost-user transport's fast path (`transport::fast_path::serve`), and
//! into the general path (fuse-backend-rs `Reader`/`Writer` and the
//! dispatcher) whenever the fast path declines, as the queue thread does.
//!
//! The input is a sequence of operations; each picks the request (a READ or
//! WRITE on the open file, with fuzzed offset, size, flags, header length,
//! handle and node, or raw bytes with a READ or WRITE opcode), where the request is cut into
//! readable descriptors and how the reply buffer is cut into writable ones.
//!
//! Oracles, besides panics and sanitizer reports: an answer from the fast
//! path fits its writable descriptors and its header's length and unique
//! are what the used ring says and the request had; a successful READ
//! returned the file's bytes at that offset; a successful WRITE put its
//! data in the file.

#![no_main]

use std::sync::{Arc, Mutex};

use fuse_backend_rs::api::filesystem::{Context, FileSystem};
use fuse_backend_rs::transport::{Reader, VirtioFsWriter};
use libfuzzer_sys::fuzz_target;
use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use virtiofsd_msb::filesystem::{ConfinedFs, FsConfig};
use virtiofsd_msb::protocol::Dispatcher;
use virtiofsd_msb::transport::fast_path;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

type Mem = GuestMemoryMmap<()>;

const MEM_LEN: u64 = 8 << 20;
const REQ_AT: u64 = 0x10_0000;
const REPLY_AT: u64 = 0x40_0000;
const FILE_LEN: usize = 256 * 1024;
const OP_READ: u32 = 15;
const OP_WRITE: u32 = 16;

struct Rig {
    _root: tempfile::TempDir,
    file: std::path::PathBuf,
    dispatcher: Dispatcher<ConfinedFs>,
    mem: Mem,
    node: u64,
    fh: u64,
}

impl Rig {
    fn new() -> Rig {
        let root = tempfile::Builder::new()
            .prefix("msb-fuzz-chain-")
            .tempdir()
            .expect("tempdir");
        let file = root.path().join("f");
        let data: Vec<u8> = (0..FILE_LEN).map(|i| (i * 31 % 253) as u8).collect();
        std::fs::write(&file, data).unwrap();
        let fs = ConfinedFs::new(FsConfig::new(root.path().to_path_buf(), 64)).expect("fs");
        let ctx = Context::new();
        let node = fs.lookup(&ctx, 1, c"f").expect("lookup").inode;
        let fh = fs
            .open(&ctx, node, libc::O_RDWR as u32, 0)
            .expect("open")
            .0
            .expect("handle");
        Rig {
            _root: root,
            file,
            dispatcher: Dispatcher::new(Arc::new(fs)),
            mem: Mem::from_ranges(&[(GuestAddress(0), MEM_LEN as usize)]).unwrap(),
            node,
            fh,
        }
    }
}

/// Reads little-endian fields off the input; zeros once it runs out.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn bytes(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
    fn u8(&mut self) -> u8 {
        self.bytes(1).first().copied().unwrap_or(0)
    }
    fn u16(&mut self) -> u16 {
        u16::from(self.u8()) | u16::from(self.u8()) << 8
    }
    fn u32(&mut self) -> u32 {
        u32::from(self.u16()) | u32::from(self.u16()) << 16
    }
}

/// One request's bytes and what it is.
struct Request {
    bytes: Vec<u8>,
    unique: u64,
    read_at: Option<u64>,
    write_at: Option<u64>,
}

fn header(len: u32, opcode: u32, unique: u64, nodeid: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(80);
    v.extend_from_slice(&len.to_le_bytes());
    v.extend_from_slice(&opcode.to_le_bytes());
    v.extend_from_slice(&unique.to_le_bytes());
    v.extend_from_slice(&nodeid.to_le_bytes());
    v.extend_from_slice(&[0u8; 16]);
    v
}

fn request(rig: &Rig, inp: &mut Input, unique: u64) -> Request {
    let kind = inp.u8();
    if kind & 3 == 3 {
        // Raw bytes, but a READ or a WRITE: other requests could rename or
        // truncate the file under the oracles (the dispatcher's own
        // target, fuse_request, covers them).
        let n = usize::from(inp.u16() % 4096);
        let mut bytes = inp.bytes(n).to_vec();
        let opcode = if kind & 4 != 0 { OP_WRITE } else { OP_READ };
        if bytes.len() >= 8 {
            bytes[4..8].copy_from_slice(&opcode.to_le_bytes());
        }
        let unique = bytes
            .get(8..16)
            .map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap()));
        return Request {
            bytes,
            unique,
            read_at: None,
            write_at: None,
        };
    }
    let write = kind & 1 == 1;
    let size = u32::from(inp.u16()) * 17 % (FILE_LEN as u32 + 8192);
    let offset = u64::from(inp.u32()) % (FILE_LEN as u64 * 2);
    let flags = inp.u32();
    let len_delta = inp.u8() as i8;
    let fh = if kind & 4 != 0 { u64::from(inp.u16()) } else { rig.fh };
    let node = if kind & 8 != 0 { u64::from(inp.u16()) } else { rig.node };
    let payload = if write { size as usize } else { 0 };
    let len = (80 + payload) as i64 + i64::from(if kind & 16 != 0 { len_delta } else { 0 });
    let mut bytes = header(len.max(0) as u32, if write { OP_WRITE } else { OP_READ }, unique, node);
    bytes.extend_from_slice(&fh.to_le_bytes());
    bytes.extend_from_slice(&offset.to_le_bytes());
    bytes.extend_from_slice(&size.to_le_bytes());
    bytes.extend_from_slice(&(flags & 0xff).to_le_bytes()); // read_flags / fuse_flags
    bytes.extend_from_slice(&u64::from(flags >> 8).to_le_bytes()); // lock_owner
    bytes.extend_from_slice(&(flags >> 16).to_le_bytes()); // flags
    bytes.extend_from_slice(&0u32.to_le_bytes());
    bytes.extend((0..payload).map(|i| (i as u8) ^ (unique as u8)));
    Request {
        bytes,
        unique,
        read_at: (!write).then_some(offset),
        write_at: write.then_some(offset),
    }
}

/// Puts the request in guest memory cut into readable descriptors, then
/// writable ones; returns them and the total writable length.
fn chain_of(rig: &Rig, inp: &mut Input, req: &[u8]) -> (Vec<RawDescriptor>, usize) {
    rig.mem.write_slice(req, GuestAddress(REQ_AT)).unwrap();
    let mut descs = Vec::new();
    let mut cuts: Vec<usize> = (0..inp.u8() % 4)
        .map(|_| usize::from(inp.u16()) % (req.len() + 1))
        .collect();
    cuts.sort_unstable();
    cuts.push(req.len());
    let mut at = 0;
    for end in cuts {
        descs.push(RawDescriptor::from(SplitDescriptor::new(
            REQ_AT + at as u64,
            (end - at) as u32,
            0,
            0,
        )));
        at = end;
    }
    let mut writable = 0usize;
    let mut reply_at = REPLY_AT;
    for _ in 0..(inp.u8() % 10) {
        let len = u32::from(inp.u16()) * 16 % (FILE_LEN as u32 + 4096);
        descs.push(RawDescriptor::from(SplitDescriptor::new(reply_at, len, 2, 0)));
        reply_at += u64::from(len);
        writable += len as usize;
    }
    (descs, writable)
}

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

fn serve(rig: &Rig, inp: &mut Input, unique: u64) {
    let req = request(rig, inp, unique);
    let (descs, writable) = chain_of(rig, inp, &req.bytes);
    let queue = MockSplitQueue::new(&rig.mem, 256);
    let Ok(chain) = queue.build_desc_chain(&descs) else {
        return;
    };
    let fs = rig.dispatcher.fs();
    let Some(used) = fast_path::serve(&**fs, &rig.mem, &chain) else {
        // Declined: the general path answers it, as on the queue thread.
        if let (Ok(r), Ok(w)) = (
            Reader::from_descriptor_chain(&rig.mem, chain.clone()),
            VirtioFsWriter::new(&rig.mem, chain),
        ) {
            let _ = rig.dispatcher.handle_message(r, w.into());
        }
        return;
    };
    let used = used as usize;
    assert!(used <= writable, "answer of {used} bytes in {writable}");
    let mut reply = vec![0u8; used];
    rig.mem.read_slice(&mut reply, GuestAddress(REPLY_AT)).unwrap();
    assert!(used >= 16, "answer shorter than its header");
    assert_eq!(le32(&reply) as usize, used, "header length is not the used length");
    let unique_back = u64::from_le_bytes(reply[8..16].try_into().unwrap());
    assert_eq!(unique_back, req.unique, "answer to another request");
    let error = le32(&reply[4..]) as i32;
    if error != 0 {
        assert!(error < 0 && error > -4096, "error {error}");
        return;
    }
    let file = std::fs::read(&rig.file).unwrap();
    if let Some(at) = req.read_at {
        let at = (at as usize).min(file.len());
        let got = &reply[16..];
        assert!(got.len() <= file.len() - at, "read past the end of the file");
        assert_eq!(got, &file[at..at + got.len()], "read returned other bytes");
    }
    if let Some(at) = req.write_at {
        assert_eq!(used, 24, "write answered without a WriteOut");
        let n = le32(&reply[16..]) as usize;
        if n > 0 {
            let data = &req.bytes[80..80 + n];
            let at = at as usize;
            assert!(file.len() >= at + n, "write of {n} at {at}: file of {}", file.len());
            assert_eq!(&file[at..at + n], data, "write lost");
        }
        // Keep the file at its size, so later reads see a known file.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&rig.file)
            .and_then(|f| f.set_len(FILE_LEN as u64))
            .unwrap();
    }
}

static RIG: Mutex<Option<Rig>> = Mutex::new(None);

fuzz_target!(|data: &[u8]| {
    let mut guard = RIG.lock().unwrap_or_else(|e| e.into_inner());
    let rig = guard.get_or_insert_with(Rig::new);
    let mut inp = Input(data);
    let mut unique = 1000;
    while !inp.0.is_empty() {
        unique += 1;
        serve(rig, &mut inp, unique);
        // A write far out (a raw request may carry any offset) must not
        // make the next check read a huge file.
        let size = std::fs::metadata(&rig.file).map_or(0, |m| m.len());
        if size > 4 * FILE_LEN as u64 {
            let f = std::fs::OpenOptions::new().write(true).open(&rig.file).unwrap();
            f.set_len(FILE_LEN as u64).unwrap();
        }
    }
});
