//! Runs the driver against a reference backend built in-process from the
//! stock rust-vmm pieces (vhost-user-backend + fuse-backend-rs `Server`), so
//! the frontend's handshake and virtqueue handling are checked independently
//! of our daemon.

use std::ffi::CStr;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fuse_backend_rs::abi::fuse_abi::Opcode;
use fuse_backend_rs::api::filesystem::{Context, Entry, FileSystem};
use fuse_backend_rs::api::server::Server;
use fuse_backend_rs::transport::{Reader, VirtioFsWriter};
use vhost::vhost_user::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost_user_backend::{VhostUserBackend, VhostUserDaemon, VringRwLock, VringT};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_queue::QueueOwnedT;
use vm_memory::{GuestAddressSpace, GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;

use super::*;

/// A filesystem with a root (1) holding one file, `hello` (2).
struct TinyFs;

fn stat(ino: u64, mode: u32, size: i64) -> libc::stat64 {
    // SAFETY: stat64 is plain old data; all-zero is a valid value.
    let mut st: libc::stat64 = unsafe { std::mem::zeroed() };
    st.st_ino = ino;
    st.st_mode = mode;
    st.st_size = size;
    st.st_nlink = 1;
    st
}

impl FileSystem for TinyFs {
    type Inode = u64;
    type Handle = u64;

    fn lookup(&self, _: &Context, parent: u64, name: &CStr) -> io::Result<Entry> {
        if parent == 1 && name.to_bytes() == b"hello" {
            Ok(Entry {
                inode: 2,
                generation: 0,
                attr: stat(2, libc::S_IFREG | 0o644, 5),
                attr_flags: 0,
                attr_timeout: Duration::ZERO,
                entry_timeout: Duration::ZERO,
            })
        } else {
            Err(io::Error::from_raw_os_error(libc::ENOENT))
        }
    }

    fn getattr(
        &self,
        _: &Context,
        inode: u64,
        _: Option<u64>,
    ) -> io::Result<(libc::stat64, Duration)> {
        match inode {
            1 => Ok((stat(1, libc::S_IFDIR | 0o755, 0), Duration::ZERO)),
            2 => Ok((stat(2, libc::S_IFREG | 0o644, 5), Duration::ZERO)),
            _ => Err(io::Error::from_raw_os_error(libc::ENOENT)),
        }
    }
}

type Mem = GuestMemoryAtomic<GuestMemoryMmap<()>>;

#[derive(Clone)]
struct RefBackend {
    server: Arc<Server<TinyFs>>,
    mem: Arc<Mutex<Option<Mem>>>,
    queues: usize,
}

impl VhostUserBackend for RefBackend {
    type Bitmap = ();
    type Vring = VringRwLock;

    fn num_queues(&self) -> usize {
        self.queues
    }
    fn max_queue_size(&self) -> usize {
        1024
    }
    fn features(&self) -> u64 {
        (1 << VIRTIO_F_VERSION_1) | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
    }
    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        VhostUserProtocolFeatures::MQ | VhostUserProtocolFeatures::REPLY_ACK
    }
    fn set_event_idx(&self, _: bool) {}
    fn update_memory(&self, mem: Mem) -> io::Result<()> {
        *self.mem.lock().unwrap() = Some(mem);
        Ok(())
    }
    fn handle_event(
        &self,
        ev: u16,
        _: EventSet,
        vrings: &[VringRwLock],
        _: usize,
    ) -> io::Result<()> {
        let vring = &vrings[usize::from(ev)];
        let atomic = self.mem.lock().unwrap().clone().expect("memory table set");
        let mem = atomic.memory();
        let chains: Vec<_> = vring
            .get_mut()
            .get_queue_mut()
            .iter(atomic.memory())
            .map_err(io::Error::other)?
            .collect();
        for chain in chains {
            let head = chain.head_index();
            let reader =
                Reader::from_descriptor_chain(&*mem, chain.clone()).map_err(io::Error::other)?;
            let len = match VirtioFsWriter::new(&*mem, chain) {
                Ok(w) => self
                    .server
                    .handle_message(reader, w.into(), None, None)
                    .unwrap_or(0),
                Err(_) => 0, // no writable buffer (FORGET)
            };
            vring.add_used(head, len as u32).map_err(io::Error::other)?;
        }
        vring.signal_used_queue()
    }
}

/// Starts the reference backend on a fresh socket; returns its path.
fn start_reference(queues: usize) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("ref.sock");
    let backend = RefBackend {
        server: Arc::new(Server::new(TinyFs)),
        mem: Arc::new(Mutex::new(None)),
        queues,
    };
    let mut daemon = VhostUserDaemon::new(
        "ref-vufs".into(),
        backend,
        GuestMemoryAtomic::new(GuestMemoryMmap::new()),
    )
    .unwrap();
    let path = sock.clone();
    std::thread::spawn(move || {
        let _ = daemon.serve(&path);
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !sock.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "reference backend did not listen"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    (dir, sock)
}

#[test]
fn full_round_trip_against_reference_backend() {
    let (_dir, sock) = start_reference(3);
    let fs = FsDriver::connect(&sock, 2).unwrap();
    let n = fs.negotiated();
    assert_eq!(n.daemon_queues, Some(3));
    assert!(n
        .acked_protocol
        .contains(VhostUserProtocolFeatures::REPLY_ACK));

    let init = fs.init().unwrap();
    assert_eq!(init.major, 7);
    let e = fs.lookup(ROOT_ID, b"hello").unwrap();
    assert_eq!(e.nodeid, 2);
    assert_eq!(e.attr.size, 5);
    assert_eq!(
        fs.lookup(ROOT_ID, b"nope").unwrap_err().errno(),
        Some(libc::ENOENT)
    );
    assert_eq!(fs.getattr(ROOT_ID).unwrap().mode, libc::S_IFDIR | 0o755);
    // Unimplemented in TinyFs → ENOSYS from the server's defaults.
    assert_eq!(fs.readlink(2).unwrap_err().errno(), Some(libc::ENOSYS));
    // Unknown opcode.
    let r = fs.send(4242, ROOT_ID, &[], 0).unwrap();
    assert_eq!(r.error, -libc::ENOSYS);
    // FORGET on the hiprio queue comes back without a reply.
    fs.forget(2, 1).unwrap();
    fs.batch_forget(&[(2, 1)]).unwrap();
    // The second request queue works, concurrently with the first.
    std::thread::scope(|s| {
        for q in 1..=2 {
            let fs = &fs;
            s.spawn(move || {
                let c = fs.on_queue(q);
                for _ in 0..50 {
                    assert_eq!(c.lookup(ROOT_ID, b"hello").unwrap().nodeid, 2);
                }
            });
        }
    });
    assert!(fs.completed(1) >= 50 && fs.completed(2) >= 50);
    assert!(fs.completed(HIPRIO_QUEUE) >= 2);
    // A batch of requests in one kick.
    let reqs: Vec<_> = (0..8)
        .map(|_| Request {
            opcode: Opcode::Getattr as u32,
            nodeid: 2,
            body: vec![0; 16],
            reply_capacity: 256,
        })
        .collect();
    for r in fs.send_batch(1, &reqs).unwrap() {
        assert_eq!(r.unwrap().error, 0);
    }
}

#[test]
fn asking_for_more_queues_than_offered_is_a_clear_error() {
    let (_dir, sock) = start_reference(2);
    let err = match FsDriver::connect(&sock, 2) {
        Ok(_) => panic!("connect with too many queues succeeded"),
        Err(e) => e,
    };
    assert!(matches!(err, DriverError::Setup(_)), "{err}");
}

#[test]
fn a_window_keeps_requests_in_flight_and_refills_each_slot() {
    use super::window::wait_any;
    let (_dir, sock) = start_reference(2);
    let fs = FsDriver::connect(&sock, 1).unwrap();
    fs.init().unwrap();
    const SLOTS: usize = 4;
    // More chains than the ring has entries, so its indices wrap.
    let total = 3 * usize::from(fs.config().queue_size) + 5;
    let mut w = fs.window(1, SLOTS, 256, 256).unwrap();
    assert_eq!(w.slots(), SLOTS);
    let mut uniques = [0u64; SLOTS];
    let lookup = |w: &mut window::Window<'_>, slot: usize, uniques: &mut [u64; SLOTS]| {
        let name = b"hello\0";
        let (unique, header) = fs.encode_header(Opcode::Lookup as u32, ROOT_ID, name.len());
        let mut bytes = header.to_vec();
        bytes.extend_from_slice(name);
        w.submit(slot, &bytes, bytes.len() as u32, 256).unwrap();
        uniques[slot] = unique;
    };
    for slot in 0..SLOTS {
        lookup(&mut w, slot, &mut uniques);
    }
    assert!(
        matches!(w.submit(0, &[0; 8], 8, 0), Err(DriverError::Request(_))),
        "a slot in flight cannot be submitted again"
    );
    w.flush().unwrap();
    let (mut sent, mut answered) = (SLOTS, 0);
    while answered < total {
        let mut back = Vec::new();
        w.harvest(|slot, len| back.push((slot, len))).unwrap();
        if back.is_empty() {
            if !w.arm().unwrap() {
                wait_any(std::slice::from_ref(&w), Duration::from_secs(5)).unwrap();
            }
            continue;
        }
        for (slot, len) in back {
            let mut bytes = vec![0u8; len as usize];
            w.read_reply(slot, &mut bytes).unwrap();
            let done = Completion {
                used_len: len,
                written: bytes,
            };
            let reply = parse_reply(&done, Some(uniques[slot]), 256).unwrap();
            assert_eq!(reply.error, 0);
            answered += 1;
            if sent < total {
                lookup(&mut w, slot, &mut uniques);
                sent += 1;
            }
        }
        w.flush().unwrap();
    }
    assert_eq!(w.in_flight(), 0);
    drop(w);
    assert_eq!(fs.completed(1), total as u64 + 1);
    // The queue is usable the ordinary way again.
    assert_eq!(fs.lookup(ROOT_ID, b"hello").unwrap().nodeid, 2);
}

#[test]
fn a_window_refuses_what_does_not_fit() {
    let (_dir, sock) = start_reference(2);
    let fs = FsDriver::connect(&sock, 1).unwrap();
    let size = usize::from(fs.config().queue_size);
    assert!(matches!(
        fs.window(1, size / 2 + 1, 64, 64),
        Err(DriverError::Request(_))
    ));
    let arena = fs.config().arena_bytes as u32;
    assert!(matches!(
        fs.window(1, 2, arena, 64),
        Err(DriverError::Request(_))
    ));
    assert!(matches!(
        fs.window(7, 1, 64, 64),
        Err(DriverError::Request(_))
    ));
    let w = fs.window(1, 1, 64, 64).unwrap();
    assert!(matches!(
        w.fill_request(0, 60, &[0; 8]),
        Err(DriverError::Request(_))
    ));
    assert!(matches!(
        w.read_reply(1, &mut [0; 4]),
        Err(DriverError::Request(_))
    ));
}
