//! The fast path answers exactly what the general path answers, and
//! leaves every request not in its plain shape to the general path.

use std::sync::Arc;

use fuse_backend_rs::api::filesystem::FileSystem;
use fuse_backend_rs::transport::{Reader, VirtioFsWriter};
use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{Bytes, GuestAddress};

use super::*;
use crate::filesystem::{ConfinedFs, FsConfig};
use crate::protocol::{Dispatcher, Outcome};

const WRITE_ONLY: u16 = 2;
const REQ_AT: u64 = 0x1_0000;
const REPLY_AT: u64 = 0x8_0000;
const ROOT: u64 = 1;

struct Rig {
    _dir: tempfile::TempDir,
    dispatcher: Dispatcher<ConfinedFs>,
    mem: Mem,
    node: u64,
    fh: u64,
}

/// A filesystem on a temporary directory holding `f` (8 KiB of a
/// pattern), opened read-write.
fn rig() -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..8192u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(dir.path().join("f"), &data).unwrap();
    let fs = ConfinedFs::new(FsConfig::new(dir.path().to_path_buf(), 64)).unwrap();
    let ctx = Context::new();
    let node = fs.lookup(&ctx, ROOT, c"f").unwrap().inode;
    let fh = fs
        .open(&ctx, node, libc::O_RDWR as u32, 0)
        .unwrap()
        .0
        .unwrap();
    Rig {
        _dir: dir,
        dispatcher: Dispatcher::new(Arc::new(fs)),
        mem: Mem::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap(),
        node,
        fh,
    }
}

fn header(opcode: Opcode, nodeid: u64, len: usize) -> InHeader {
    InHeader {
        len: len as u32,
        opcode: opcode as u32,
        unique: 77,
        nodeid,
        ..Default::default()
    }
}

fn read_req(r: &Rig, fh: u64, offset: u64, size: u32) -> Vec<u8> {
    let mut v = header(Opcode::Read, r.node, FIXED_LEN).as_slice().to_vec();
    let args = ReadIn {
        fh,
        offset,
        size,
        ..Default::default()
    };
    v.extend_from_slice(args.as_slice());
    v
}

fn write_req(r: &Rig, fh: u64, offset: u64, data: &[u8]) -> Vec<u8> {
    let mut v = header(Opcode::Write, r.node, FIXED_LEN + data.len())
        .as_slice()
        .to_vec();
    let args = WriteIn {
        fh,
        offset,
        size: data.len() as u32,
        ..Default::default()
    };
    v.extend_from_slice(args.as_slice());
    v.extend_from_slice(data);
    v
}

/// A chain: `req` cut at `cuts` into readable descriptors, then writable
/// descriptors of `replies` bytes.
fn descs(r: &Rig, req: &[u8], cuts: &[usize], replies: &[u32]) -> Vec<RawDescriptor> {
    r.mem.write_slice(req, GuestAddress(REQ_AT)).unwrap();
    let mut out = Vec::new();
    let mut at = 0;
    let mut ends: Vec<usize> = cuts.to_vec();
    ends.push(req.len());
    for end in ends {
        let len = (end - at) as u32;
        out.push(RawDescriptor::from(SplitDescriptor::new(
            REQ_AT + at as u64,
            len,
            0,
            0,
        )));
        at = end;
    }
    let mut reply_at = REPLY_AT;
    for &len in replies {
        out.push(RawDescriptor::from(SplitDescriptor::new(
            reply_at, len, WRITE_ONLY, 0,
        )));
        reply_at += u64::from(len);
    }
    out
}

/// Clears the reply area, serves the chain by the fast path (`fast`) or the
/// general one, and returns (used length, reply bytes); `None` when the
/// fast path declined.
fn serve_by(r: &Rig, d: &[RawDescriptor], fast: bool) -> Option<(u32, Vec<u8>)> {
    r.mem
        .write_slice(&[0xee; 0x2_0000], GuestAddress(REPLY_AT))
        .unwrap();
    let queue = MockSplitQueue::new(&r.mem, 64);
    let chain = queue.build_desc_chain(d).unwrap();
    let used = if fast {
        serve(&**r.dispatcher.fs(), &r.mem, &chain)?
    } else {
        let reader = Reader::from_descriptor_chain(&r.mem, chain.clone()).unwrap();
        let writer = VirtioFsWriter::new(&r.mem, chain).unwrap();
        match r.dispatcher.handle_message(reader, writer.into()) {
            Outcome::Replied { len, .. } => len as u32,
            other => panic!("general path: {other:?}"),
        }
    };
    let mut reply = vec![0u8; used as usize];
    r.mem
        .read_slice(&mut reply, GuestAddress(REPLY_AT))
        .unwrap();
    Some((used, reply))
}

/// Both paths give the same answer; returns it.
fn same_answer(r: &Rig, d: &[RawDescriptor]) -> (u32, Vec<u8>) {
    let fast = serve_by(r, d, true).expect("the fast path declined");
    let general = serve_by(r, d, false).unwrap();
    assert_eq!(fast, general, "fast and general paths differ");
    fast
}

fn error_of(reply: &[u8]) -> i32 {
    i32::from_ne_bytes(reply[4..8].try_into().unwrap())
}

#[test]
fn reads_answer_as_the_general_path() {
    let r = rig();
    let data = std::fs::read(r._dir.path().join("f")).unwrap();
    // Whole, short at the end of the file, past it, cut into pieces.
    let (used, reply) = same_answer(&r, &descs(&r, &read_req(&r, r.fh, 100, 4096), &[], &[8192]));
    assert_eq!(used, 16 + 4096);
    assert_eq!(reply[16..], data[100..4196]);
    let (used, _) = same_answer(
        &r,
        &descs(&r, &read_req(&r, r.fh, 8000, 4096), &[], &[8192]),
    );
    assert_eq!(used, 16 + 192);
    let (used, _) = same_answer(&r, &descs(&r, &read_req(&r, r.fh, 9000, 10), &[], &[100]));
    assert_eq!(used, 16);
    let pieces = descs(
        &r,
        &read_req(&r, r.fh, 1, 5000),
        &[40, 41],
        &[16, 3, 2000, 2997],
    );
    let (used, reply) = same_answer(&r, &pieces);
    assert_eq!(used, 16 + 5000);
    assert_eq!(reply[16..], data[1..5001]);
    // A handle nobody opened.
    let (_, reply) = same_answer(&r, &descs(&r, &read_req(&r, 999, 0, 10), &[], &[100]));
    assert_eq!(error_of(&reply), -libc::EBADF);
}

#[test]
fn writes_answer_as_the_general_path() {
    let r = rig();
    let payload: Vec<u8> = (0..3000u32).map(|i| (i % 13) as u8).collect();
    let req = write_req(&r, r.fh, 4000, &payload);
    for d in [
        descs(&r, &req, &[], &[24]),
        descs(&r, &req, &[FIXED_LEN], &[64]),
        descs(&r, &req, &[10, FIXED_LEN, FIXED_LEN + 1, 2000], &[24]),
    ] {
        let (used, reply) = same_answer(&r, &d);
        assert_eq!(used, 24);
        assert_eq!(error_of(&reply), 0);
        assert_eq!(u32::from_ne_bytes(reply[16..20].try_into().unwrap()), 3000);
        let file = std::fs::read(r._dir.path().join("f")).unwrap();
        assert_eq!(file[4000..7000], payload[..]);
    }
    let (_, reply) = same_answer(&r, &descs(&r, &write_req(&r, 999, 0, b"x"), &[], &[24]));
    assert_eq!(error_of(&reply), -libc::EBADF);
}

#[test]
fn linux_guest_layouts_and_many_descriptors_take_the_fast_path() {
    // A Linux guest gives the header, the fixed part, the reply header,
    // fuse_write_out and every data page a descriptor each.
    let r = rig();
    let data = std::fs::read(r._dir.path().join("f")).unwrap();
    let (used, reply) = same_answer(
        &r,
        &descs(&r, &read_req(&r, r.fh, 0, 8192), &[40], &[16, 4096, 4096]),
    );
    assert_eq!(used, 16 + 8192);
    assert_eq!(reply[16..], data[..8192]);
    let payload = vec![0x42u8; 3 * 4096];
    let req = write_req(&r, r.fh, 4096, &payload);
    let (used, reply) = same_answer(
        &r,
        &descs(&r, &req, &[40, 80, 80 + 4096, 80 + 8192], &[16, 8]),
    );
    assert_eq!((used, error_of(&reply)), (24, 0));
    // Empty descriptors anywhere (found by the virtio_chain fuzz target:
    // an empty first reply descriptor left the reply header unwritten).
    let (used, reply) = same_answer(
        &r,
        &descs(
            &r,
            &read_req(&r, r.fh, 0, 100),
            &[0, 40, 40],
            &[0, 16, 0, 0, 100],
        ),
    );
    assert_eq!(used, 16 + 100);
    assert_eq!(reply[16..], data[..100]);
    let (used, _) = same_answer(&r, &descs(&r, &req, &[80, 80], &[0, 24, 0]));
    assert_eq!(used, 24);
    // More descriptors than kept on the stack, headers cut anywhere.
    let cuts: Vec<usize> = (1..=2 * INLINE_SEGMENTS).map(|i| i * 5).collect();
    let (used, _) = same_answer(&r, &descs(&r, &req, &cuts, &[7, 9, 5, 3]));
    assert_eq!(used, 24);
    let replies = [3u32; 3 * INLINE_SEGMENTS];
    let (used, reply) = same_answer(&r, &descs(&r, &read_req(&r, r.fh, 4106, 50), &[], &replies));
    assert_eq!(used, 16 + 50);
    assert_eq!(
        reply[16..],
        payload[..50].iter().map(|_| 0x42).collect::<Vec<u8>>()[..]
    );
}

#[test]
fn requests_not_in_the_plain_shape_take_the_general_path() {
    let r = rig();
    let read = read_req(&r, r.fh, 0, 100);
    let declined = |d: Vec<RawDescriptor>| serve_by(&r, &d, true).is_none();
    // The header's length is not what the chain holds.
    let mut long = read.clone();
    long.extend_from_slice(&[0; 8]);
    assert!(declined(descs(&r, &long, &[], &[200])));
    // A write whose size is not its data.
    let mut w = write_req(&r, r.fh, 0, b"abcd");
    w.pop();
    let n = w.len() as u32;
    w[..4].copy_from_slice(&n.to_ne_bytes());
    assert!(declined(descs(&r, &w, &[], &[24])));
    // Reply buffer smaller than the read; no room for a write's reply or
    // for any reply header.
    assert!(declined(descs(
        &r,
        &read_req(&r, r.fh, 0, 4096),
        &[],
        &[1000]
    )));
    assert!(declined(descs(
        &r,
        &write_req(&r, r.fh, 0, b"x"),
        &[],
        &[16]
    )));
    assert!(declined(descs(&r, &read_req(&r, r.fh, 0, 0), &[], &[15])));
    // A truncated fixed part; other requests.
    let mut getattr = header(Opcode::Getattr, r.node, FIXED_LEN)
        .as_slice()
        .to_vec();
    getattr.extend_from_slice(&[0; 40]);
    assert!(declined(descs(&r, &getattr, &[], &[200])));
    let mut short = header(Opcode::Read, r.node, 60).as_slice().to_vec();
    short.extend_from_slice(&[0; 20]);
    assert!(declined(descs(&r, &short, &[], &[200])));
    // Readable after writable.
    let mut d = descs(&r, &read, &[], &[200]);
    d.swap(0, 1);
    assert!(declined(d));
}
