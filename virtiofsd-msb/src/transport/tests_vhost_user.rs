//! Unit tests of the vhost-user backend: a mock split queue driven
//! through `FsBackend`.

use super::*;
use crate::protocol::tests::{request, whole_file_write_lock, TinyFs};
use fuse_backend_rs::abi::fuse_abi::{InitIn, Opcode};
use std::sync::atomic::Ordering;
use std::time::Duration;
use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{Address, GuestAddress};

const REQ_ADDR: u64 = 0x10_0000;
const REPLY_ADDR: u64 = 0x20_0000;
const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;

struct Rig {
    mem: AtomicMem,
    backend: FsBackend<TinyFs>,
    vring: Vring,
    desc_table: GuestAddress,
    avail: GuestAddress,
    mock_used: GuestAddress,
    next_desc: u16,
}

fn rig(pool: usize) -> Rig {
    let mem = GuestMemoryAtomic::new(Mem::from_ranges(&[(GuestAddress(0), 0x40_0000)]).unwrap());
    let guard = mem.memory();
    let mock = MockSplitQueue::new(&*guard, 16);
    let vring = Vring::new(mem.clone(), 16).unwrap();
    vring.set_queue_size(16);
    vring
        .set_queue_info(
            mock.desc_table_addr().0,
            mock.avail_addr().0,
            mock.used_addr().0,
        )
        .unwrap();
    vring.set_queue_ready(true);
    let (desc_table, avail, mock_used) =
        (mock.desc_table_addr(), mock.avail_addr(), mock.used_addr());
    drop(mock);
    drop(guard);
    let opts = VhostUserOptions {
        tag: Some("myfs".into()),
        thread_pool_size: pool,
        poll_window: poll::DEFAULT_MAX_WINDOW,
    };
    let backend = FsBackend::new(Arc::new(TinyFs::default()), mem.clone(), &opts).unwrap();
    Rig {
        mem,
        backend,
        vring,
        desc_table,
        avail,
        mock_used,
        next_desc: 0,
    }
}

impl Rig {
    /// Queues one request (two descriptors: request, reply buffer, or
    /// just the request when `reply_len` is 0); returns the reply address.
    fn push(&mut self, req: &[u8], reply_len: u32) -> u64 {
        let guard = self.mem.memory();
        let slot = u64::from(self.next_desc);
        let req_addr = REQ_ADDR + slot * 0x1000;
        let reply_addr = REPLY_ADDR + slot * 0x1000;
        guard.write_slice(req, GuestAddress(req_addr)).unwrap();
        guard
            .write_slice(&vec![0xffu8; reply_len as usize], GuestAddress(reply_addr))
            .unwrap();
        let head = self.next_desc;
        let mut descs = vec![RawDescriptor::from(SplitDescriptor::new(
            req_addr,
            req.len() as u32,
            if reply_len > 0 { F_NEXT } else { 0 },
            head + 1,
        ))];
        if reply_len > 0 {
            descs.push(RawDescriptor::from(SplitDescriptor::new(
                reply_addr, reply_len, F_WRITE, 0,
            )));
        }
        for (i, d) in descs.iter().enumerate() {
            let at = self
                .desc_table
                .unchecked_add(16 * u64::from(head + i as u16));
            guard.write_obj(*d, at).unwrap();
        }
        self.next_desc += descs.len() as u16;
        let idx: u16 = guard.read_obj(self.avail.unchecked_add(2)).unwrap();
        guard
            .write_obj(head, self.avail.unchecked_add(4 + 2 * u64::from(idx % 16)))
            .unwrap();
        guard
            .write_obj(idx.wrapping_add(1), self.avail.unchecked_add(2))
            .unwrap();
        reply_addr
    }

    fn used(&self) -> Vec<(u32, u32)> {
        let guard = self.mem.memory();
        let idx: u16 = guard.read_obj(self.mock_used.unchecked_add(2)).unwrap();
        (0..idx)
            .map(|i| {
                let at = self.mock_used.unchecked_add(4 + 8 * u64::from(i));
                let id: u32 = guard.read_obj(at).unwrap();
                let len: u32 = guard.read_obj(at.unchecked_add(4)).unwrap();
                (id, len)
            })
            .collect()
    }

    fn header(&self, addr: u64) -> OutHeader {
        self.mem.memory().read_obj(GuestAddress(addr)).unwrap()
    }

    fn wait_used(&self, n: usize) -> Vec<(u32, u32)> {
        for _ in 0..500 {
            let u = self.used();
            if u.len() >= n {
                return u;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("only {:?} used", self.used());
    }
}

fn init_req(unique: u64) -> Vec<u8> {
    let init = InitIn {
        major: 7,
        minor: 31,
        max_readahead: 0,
        flags: 0,
    };
    request(Opcode::Init as u32, unique, 0, init.as_slice())
}

fn exercise(pool: usize) {
    let mut r = rig(pool);
    let a = r.push(&init_req(1), 256);
    let b = r.push(&request(Opcode::Lookup as u32, 2, 1, b"hello\0"), 256);
    // Reply buffer too small for the entry: an error must still go out.
    let c = r.push(&request(Opcode::Lookup as u32, 3, 1, b"hello\0"), 16);
    // Garbage: too short for a header.
    r.push(&[1, 2, 3], 64);
    // Forget: no reply.
    r.push(
        &request(Opcode::Forget as u32, 5, 2, &1u64.to_le_bytes()),
        0,
    );
    r.backend.process_queue(&r.vring).unwrap();
    let used = r.wait_used(5);
    let mut used = used;
    used.sort();
    let h = r.header(a);
    assert_eq!((h.unique, h.error), (1, 0));
    assert_eq!(used[0], (0, h.len));
    let h = r.header(b);
    assert_eq!((h.unique, h.error), (2, 0));
    assert_eq!(used[1], (2, h.len));
    let h = r.header(c);
    assert_eq!(h.unique, 3);
    assert!(h.error < 0, "{h:?}");
    assert_eq!(used[2], (4, 16));
    assert_eq!(used[3], (6, 0));
    assert_eq!(used[4], (8, 0));
    assert_eq!(r.header(c).len, 16);
    r.backend.shutdown();
}

#[test]
fn requests_round_trip_inline() {
    exercise(0);
}

#[test]
fn requests_round_trip_on_a_pool() {
    exercise(2);
}

#[test]
fn contended_lock_does_not_block_the_queue() {
    let mut r = rig(0);
    r.push(&init_req(1), 256);
    r.backend.process_queue(&r.vring).unwrap();
    r.backend
        .dispatcher
        .fs()
        .locked
        .store(true, Ordering::SeqCst);
    let lk = whole_file_write_lock(9);
    let lock_reply = r.push(&request(Opcode::Setlkw as u32, 2, 2, lk.as_slice()), 64);
    r.push(&request(Opcode::Getattr as u32, 3, 1, &[0u8; 16]), 256);
    r.backend.process_queue(&r.vring).unwrap();
    // The getattr behind the waiting lock is answered.
    let used = r.wait_used(2);
    assert_eq!(used[1].0, 4, "{used:?}");
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(r.used().len(), 2);
    r.backend
        .dispatcher
        .fs()
        .locked
        .store(false, Ordering::SeqCst);
    let used = r.wait_used(3);
    assert_eq!(used[2], (2, 16));
    let h = r.header(lock_reply);
    assert_eq!((h.unique, h.error, h.len), (2, 0, 16));
}

#[test]
fn config_space_and_features() {
    let r = rig(0);
    let b = &r.backend;
    let cfg = b.get_config(0, 40);
    assert_eq!(&cfg[..4], b"myfs");
    assert!(cfg[4..36].iter().all(|&x| x == 0));
    assert_eq!(u32::from_le_bytes(cfg[36..40].try_into().unwrap()), 16);
    assert_eq!(b.get_config(36, 4), 16u32.to_le_bytes().to_vec());
    assert_eq!(b.get_config(38, 4), vec![0, 0, 0, 0]);
    assert!(b.get_config(0, 4096).is_empty());
    assert!(b
        .protocol_features()
        .contains(VhostUserProtocolFeatures::CONFIG));
    assert!(b
        .protocol_features()
        .contains(VhostUserProtocolFeatures::MQ));
    assert_eq!(b.num_queues(), 17);
    assert_eq!(b.queues_per_thread().len(), 17);
    assert!(b.features() & (1 << VIRTIO_F_VERSION_1) != 0);
    let no_tag = FsBackend::new(
        Arc::new(TinyFs::default()),
        r.mem.clone(),
        &VhostUserOptions::default(),
    )
    .unwrap();
    assert!(!no_tag
        .protocol_features()
        .contains(VhostUserProtocolFeatures::CONFIG));
}
