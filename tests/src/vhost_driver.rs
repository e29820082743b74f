//! A vhost-user-fs **frontend** for tests: it plays the VMM and the guest
//! kernel's virtio-fs driver at once, without a VM.
//!
//! [`FsDriver::connect`] does the vhost-user handshake a VMM does (owner,
//! features, protocol features, memory table, one split virtqueue per queue)
//! with guest memory in a memfd, then sends FUSE requests by writing real
//! descriptor chains into those virtqueues, kicking the queue's eventfd and
//! waiting (with a timeout, never forever) on its call eventfd.
//!
//! Queue 0 is virtio-fs's high-priority queue (FORGET goes there); queues
//! `1..=N` are request queues. Each queue has its own lock, so threads using
//! different queues run concurrently.
//!
//! Layers, for different kinds of tests:
//! - [`FuseClient`] (implemented by [`FsDriver`] and [`QueueClient`]): typed
//!   requests (`lookup`, `create`, `read`, `readdirplus`, …) that check the
//!   reply's framing and decode it;
//! - [`FsDriver::send`] / [`FsDriver::send_on`] / [`FsDriver::send_batch`]:
//!   any opcode with any body, reply checked and split into header and body;
//! - [`FsDriver::send_raw`] and [`FsDriver::send_chains`]: arbitrary bytes
//!   and arbitrary descriptor chains, nothing checked, for hostile tests;
//! - [`FsDriver::window`]: many requests in flight on one queue, each slot
//!   refilled as its reply comes back (benchmarks).
//!
//! ```no_run
//! use msb_tests::vhost_driver::{FsDriver, FuseClient, ROOT_ID};
//! let fs = FsDriver::connect("/tmp/vfs.sock".as_ref(), 1).unwrap();
//! fs.init().unwrap();
//! let entry = fs.lookup(ROOT_ID, b"hello.txt").unwrap();
//! let fh = fs.open(entry.nodeid, libc::O_RDONLY).unwrap().fh;
//! let data = fs.read(entry.nodeid, fh, 0, 4096).unwrap();
//! ```

pub mod memory;
mod ops;
pub mod virtq;
pub mod window;

use std::fmt;
use std::io;
use std::mem::size_of;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use fuse_backend_rs::abi::fuse_abi::{InHeader, OutHeader};
use vhost::vhost_user::message::VhostUserHeaderFlag;
use vhost::vhost_user::{
    Frontend, VhostUserFrontend, VhostUserProtocolFeatures, VhostUserVirtioFeatures,
};
use vhost::{VhostBackend, VringConfigData};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use vm_memory::{ByteValued, GuestAddress};

use memory::SharedMemory;
pub use ops::{parse_direntplus, DirEntry, DirEntryPlus, FuseClient, QueueClient};
pub use virtq::{Completion, Segment};
use virtq::{QueueLayout, SplitQueue};

/// Node id of the filesystem root.
pub const ROOT_ID: u64 = 1;
/// Index of virtio-fs's high-priority queue.
pub const HIPRIO_QUEUE: usize = 0;
/// Index of the first request queue.
pub const FIRST_REQUEST_QUEUE: usize = 1;
/// Size of a FUSE request header.
pub const IN_HEADER_LEN: usize = size_of::<InHeader>();
/// Size of a FUSE reply header.
pub const OUT_HEADER_LEN: usize = size_of::<OutHeader>();

/// Everything that can go wrong talking to the daemon.
#[derive(Debug)]
pub enum DriverError {
    /// The daemon answered the request with this errno (positive).
    Errno(i32),
    /// The daemon did not return a chain in time (the queue is then broken).
    Timeout {
        /// Queue index.
        queue: usize,
        /// What was outstanding.
        what: String,
    },
    /// The queue timed out earlier and is not used again.
    QueueBroken {
        /// Queue index.
        queue: usize,
        /// The earlier failure.
        why: String,
    },
    /// A reply that breaks the FUSE or virtio framing rules (a daemon bug).
    Protocol(String),
    /// A vhost-user message failed (socket, handshake, backend refusal).
    Vhost(String),
    /// The handshake could not be completed as configured.
    Setup(String),
    /// The request does not fit the queue (too many descriptors or bytes).
    Request(String),
    /// Guest memory access failed.
    Memory(String),
    /// An OS call failed.
    Io(io::Error),
}

impl DriverError {
    /// The errno if the daemon answered with an error reply.
    pub fn errno(&self) -> Option<i32> {
        match self {
            DriverError::Errno(e) => Some(*e),
            _ => None,
        }
    }
}

impl fmt::Display for DriverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DriverError::Errno(e) => write!(
                f,
                "daemon replied errno {e} ({})",
                io::Error::from_raw_os_error(*e)
            ),
            DriverError::Timeout { queue, what } => write!(f, "queue {queue}: timeout: {what}"),
            DriverError::QueueBroken { queue, why } => {
                write!(
                    f,
                    "queue {queue} is unusable after an earlier failure: {why}"
                )
            }
            DriverError::Protocol(m) => write!(f, "malformed reply from daemon: {m}"),
            DriverError::Vhost(m) => write!(f, "vhost-user: {m}"),
            DriverError::Setup(m) => write!(f, "driver setup: {m}"),
            DriverError::Request(m) => write!(f, "request does not fit: {m}"),
            DriverError::Memory(m) => write!(f, "guest memory: {m}"),
            DriverError::Io(e) => write!(f, "I/O: {e}"),
        }
    }
}

impl std::error::Error for DriverError {}

/// Shorthand for driver results.
pub type Result<T> = std::result::Result<T, DriverError>;

fn vhost_err(what: &str) -> impl Fn(vhost::Error) -> DriverError + '_ {
    move |e| DriverError::Vhost(format!("{what}: {e}"))
}

/// How the driver sets itself up.
#[derive(Debug, Clone)]
pub struct DriverConfig {
    /// Number of request queues (the hiprio queue comes on top).
    pub request_queues: usize,
    /// Descriptors per queue (power of two).
    pub queue_size: u16,
    /// Bytes of request/reply buffers per queue; one exchange must fit.
    pub arena_bytes: u64,
    /// How long to wait for the daemon to return a chain.
    pub timeout: Duration,
    /// uid, gid and pid put in every request header.
    pub creds: (u32, u32, u32),
    /// Acknowledge REPLY_ACK when offered, so every vhost-user message is
    /// answered before the next one goes out. QEMU does not wait like that
    /// for SET_VRING_ENABLE: turn this off to behave as it does.
    pub reply_ack: bool,
    /// Negotiate VIRTIO_RING_F_EVENT_IDX when offered (kicks and calls are
    /// then suppressed as the other side asks, as Linux guests do).
    pub event_idx: bool,
    /// Send a `FUSE_INIT` on the first request queue during the handshake,
    /// the way a guest does right after DRIVER_OK; its reply is waited for
    /// at the end of [`FsDriver::connect_with`] (a lost kick is then a
    /// [`DriverError::Timeout`]). Do not call `init()` again afterwards.
    pub early_init: Option<EarlyKick>,
}

/// When the handshake's early `FUSE_INIT` is kicked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EarlyKick {
    /// Right after SET_VRING_ENABLE is sent (not waiting for the daemon to
    /// process it unless REPLY_ACK is on).
    AfterEnable,
    /// After SET_VRING_KICK, before SET_VRING_ENABLE.
    BeforeEnable,
}

impl Default for DriverConfig {
    fn default() -> Self {
        // SAFETY: these calls have no preconditions and cannot fail.
        let creds = unsafe { (libc::geteuid(), libc::getegid(), libc::getpid() as u32) };
        DriverConfig {
            request_queues: 1,
            queue_size: 256,
            arena_bytes: 4 << 20,
            timeout: Duration::from_secs(30),
            creds,
            reply_ack: true,
            event_idx: false,
            early_init: None,
        }
    }
}

/// What the handshake settled on.
#[derive(Debug, Clone, Copy)]
pub struct Negotiated {
    /// Virtio features the daemon offered.
    pub offered_features: u64,
    /// Virtio features acknowledged.
    pub acked_features: u64,
    /// Protocol features the daemon offered.
    pub offered_protocol: VhostUserProtocolFeatures,
    /// Protocol features acknowledged.
    pub acked_protocol: VhostUserProtocolFeatures,
    /// `GET_QUEUE_NUM` answer (needs MQ).
    pub daemon_queues: Option<u64>,
}

/// A FUSE request for [`FsDriver::send_batch`].
#[derive(Debug, Clone)]
pub struct Request {
    /// FUSE opcode.
    pub opcode: u32,
    /// Node id in the header.
    pub nodeid: u64,
    /// Bytes after the header.
    pub body: Vec<u8>,
    /// Room for the reply body (the reply header is added).
    pub reply_capacity: u32,
}

/// A decoded FUSE reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// `unique` of the reply header (checked against the request's).
    pub unique: u64,
    /// `error` of the reply header: 0 or a negative errno.
    pub error: i32,
    /// Bytes after the reply header.
    pub body: Vec<u8>,
}

impl Reply {
    /// The body on success, [`DriverError::Errno`] on an error reply.
    pub fn into_result(self) -> Result<Vec<u8>> {
        if self.error == 0 {
            Ok(self.body)
        } else {
            Err(DriverError::Errno(-self.error))
        }
    }
}

/// Reads a `T` from the start of `bytes` (which may be longer); too few
/// bytes is a [`DriverError::Protocol`] naming `what`.
pub fn decode<T: ByteValued + Default>(bytes: &[u8], what: &str) -> Result<T> {
    if bytes.len() < size_of::<T>() {
        return Err(DriverError::Protocol(format!(
            "{what}: reply body is {} bytes, need {}",
            bytes.len(),
            size_of::<T>()
        )));
    }
    let mut v = T::default();
    v.as_mut_slice().copy_from_slice(&bytes[..size_of::<T>()]);
    Ok(v)
}

/// The frontend: vhost-user connection, guest memory and queues.
pub struct FsDriver {
    frontend: Mutex<Frontend>,
    memory: SharedMemory,
    queues: Vec<Mutex<SplitQueue>>,
    unique: AtomicU64,
    config: DriverConfig,
    negotiated: Negotiated,
}

impl FsDriver {
    /// Connects to the daemon's socket with `request_queues` request queues
    /// and default settings.
    pub fn connect(socket: &Path, request_queues: usize) -> Result<FsDriver> {
        FsDriver::connect_with(
            socket,
            DriverConfig {
                request_queues,
                ..DriverConfig::default()
            },
        )
    }

    /// Connects and sets up every queue as a VMM would.
    pub fn connect_with(socket: &Path, config: DriverConfig) -> Result<FsDriver> {
        if config.request_queues == 0 {
            return Err(DriverError::Setup("need at least one request queue".into()));
        }
        let total = 1 + config.request_queues;
        let mut fe = Frontend::connect(socket, total as u64)
            .map_err(|e| DriverError::Vhost(format!("connecting to {}: {e}", socket.display())))?;
        fe.set_owner().map_err(vhost_err("SET_OWNER"))?;

        let offered = fe.get_features().map_err(vhost_err("GET_FEATURES"))?;
        let version_1 = 1u64 << VIRTIO_F_VERSION_1;
        let proto_bit = VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();
        if offered & version_1 == 0 || offered & proto_bit == 0 {
            return Err(DriverError::Setup(format!(
                "daemon features {offered:#x} lack VERSION_1 or PROTOCOL_FEATURES"
            )));
        }
        let event_idx_bit = 1u64 << VIRTIO_RING_F_EVENT_IDX;
        let mut acked = version_1 | proto_bit;
        if config.event_idx {
            if offered & event_idx_bit == 0 {
                return Err(DriverError::Setup(format!(
                    "daemon features {offered:#x} lack EVENT_IDX"
                )));
            }
            acked |= event_idx_bit;
        }
        fe.set_features(acked).map_err(vhost_err("SET_FEATURES"))?;

        let offered_protocol = fe
            .get_protocol_features()
            .map_err(vhost_err("GET_PROTOCOL_FEATURES"))?;
        let mut wanted = VhostUserProtocolFeatures::MQ;
        if config.reply_ack {
            wanted |= VhostUserProtocolFeatures::REPLY_ACK;
        }
        let acked_protocol = offered_protocol & wanted;
        fe.set_protocol_features(acked_protocol)
            .map_err(vhost_err("SET_PROTOCOL_FEATURES"))?;
        if acked_protocol.contains(VhostUserProtocolFeatures::REPLY_ACK) {
            // Every later message is acknowledged, so a refusal shows up here
            // instead of as a silent queue.
            fe.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);
        }
        let daemon_queues = if acked_protocol.contains(VhostUserProtocolFeatures::MQ) {
            let n = fe.get_queue_num().map_err(vhost_err("GET_QUEUE_NUM"))?;
            if n < total as u64 {
                return Err(DriverError::Setup(format!(
                    "daemon supports {n} queues; asked for 1 hiprio + {} request queues",
                    config.request_queues
                )));
            }
            Some(n)
        } else if total > 2 {
            return Err(DriverError::Setup(
                "daemon does not offer the MQ protocol feature; cannot use several request queues"
                    .into(),
            ));
        } else {
            None
        };

        let layouts = Self::layouts(&config, total);
        let mem_len = layouts.last().map(|l| l.end().0).unwrap_or(0);
        let memory =
            SharedMemory::new(GuestAddress(0), mem_len as usize).map_err(DriverError::Io)?;
        let region = memory.region_info().map_err(DriverError::Io)?;
        fe.set_mem_table(&[region])
            .map_err(vhost_err("SET_MEM_TABLE"))?;

        let mut queues = Vec::with_capacity(total);
        let mut early = None;
        let unique = AtomicU64::new(1);
        for (i, layout) in layouts.into_iter().enumerate() {
            let mut q = SplitQueue::new(i, layout, memory.mem())?;
            q.set_event_idx(config.event_idx);
            let early_here = config.early_init.filter(|_| i == FIRST_REQUEST_QUEUE);
            let vmm = |a| memory.vmm_addr(a).map_err(DriverError::Io);
            let addrs = VringConfigData {
                queue_max_size: layout.size,
                queue_size: layout.size,
                flags: 0,
                desc_table_addr: vmm(layout.desc)?,
                used_ring_addr: vmm(layout.used)?,
                avail_ring_addr: vmm(layout.avail)?,
                log_addr: None,
            };
            let what = |m: &str| format!("{m} (queue {i})");
            fe.set_vring_num(i, layout.size)
                .map_err(|e| DriverError::Vhost(format!("{}: {e}", what("SET_VRING_NUM"))))?;
            fe.set_vring_addr(i, &addrs)
                .map_err(|e| DriverError::Vhost(format!("{}: {e}", what("SET_VRING_ADDR"))))?;
            fe.set_vring_base(i, 0)
                .map_err(|e| DriverError::Vhost(format!("{}: {e}", what("SET_VRING_BASE"))))?;
            fe.set_vring_call(i, q.call_fd())
                .map_err(|e| DriverError::Vhost(format!("{}: {e}", what("SET_VRING_CALL"))))?;
            fe.set_vring_kick(i, q.kick_fd())
                .map_err(|e| DriverError::Vhost(format!("{}: {e}", what("SET_VRING_KICK"))))?;
            let mut send_early = |q: &mut SplitQueue| -> Result<()> {
                let chain = early_init_chain(&config, &unique);
                early = Some((chain.0, q.start(memory.mem(), &[chain.1])?));
                Ok(())
            };
            if early_here == Some(EarlyKick::BeforeEnable) {
                send_early(&mut q)?;
            }
            fe.set_vring_enable(i, true)
                .map_err(|e| DriverError::Vhost(format!("{}: {e}", what("SET_VRING_ENABLE"))))?;
            if early_here == Some(EarlyKick::AfterEnable) {
                send_early(&mut q)?;
            }
            queues.push(Mutex::new(q));
        }
        if let Some((unique, in_flight)) = early {
            let q = queues[FIRST_REQUEST_QUEUE]
                .get_mut()
                .unwrap_or_else(|p| p.into_inner());
            let done = q.finish(memory.mem(), in_flight, config.timeout)?;
            let cap = EARLY_INIT_REPLY + OUT_HEADER_LEN;
            let reply = parse_reply(&done[0], Some(unique), cap)?;
            if reply.error != 0 {
                return Err(DriverError::Errno(-reply.error));
            }
        }

        Ok(FsDriver {
            frontend: Mutex::new(fe),
            memory,
            queues,
            unique,
            config,
            negotiated: Negotiated {
                offered_features: offered,
                acked_features: acked,
                offered_protocol,
                acked_protocol,
                daemon_queues,
            },
        })
    }

    fn layouts(config: &DriverConfig, total: usize) -> Vec<QueueLayout> {
        let mut base = GuestAddress(0);
        let mut out = Vec::with_capacity(total);
        for i in 0..total {
            // The hiprio queue only carries FORGET-sized requests.
            let arena = if i == HIPRIO_QUEUE {
                256 * 1024
            } else {
                config.arena_bytes
            };
            let l = QueueLayout::new(base, config.queue_size, arena);
            base = l.end();
            out.push(l);
        }
        out
    }

    /// The settings in use.
    pub fn config(&self) -> &DriverConfig {
        &self.config
    }

    /// What the handshake negotiated.
    pub fn negotiated(&self) -> Negotiated {
        self.negotiated
    }

    /// Number of request queues (queue indices `1..=n`).
    pub fn request_queues(&self) -> usize {
        self.queues.len() - 1
    }

    /// The vhost-user connection, for tests that send their own messages.
    pub fn frontend(&self) -> MutexGuard<'_, Frontend> {
        self.frontend.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The shared guest memory.
    pub fn memory(&self) -> &SharedMemory {
        &self.memory
    }

    /// How many chains the daemon has returned on `queue`.
    pub fn completed(&self, queue: usize) -> u64 {
        self.queues
            .get(queue)
            .map(|q| self.lock(q).completed())
            .unwrap_or(0)
    }

    /// A [`FuseClient`] whose requests go to request queue `queue` (1-based
    /// like the queue index; 0 would be the hiprio queue).
    pub fn on_queue(&self, queue: usize) -> QueueClient<'_> {
        QueueClient::new(self, queue)
    }

    /// A fresh `unique` for a request header.
    pub fn next_unique(&self) -> u64 {
        self.unique.fetch_add(1, Ordering::Relaxed)
    }

    fn lock<'a>(&self, q: &'a Mutex<SplitQueue>) -> MutexGuard<'a, SplitQueue> {
        q.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Builds header + body with a fresh unique; returns (unique, bytes).
    pub fn encode(&self, opcode: u32, nodeid: u64, body: &[u8]) -> (u64, Vec<u8>) {
        let unique = self.next_unique();
        (
            unique,
            encode_request(self.config.creds, unique, opcode, nodeid, body),
        )
    }

    /// A request header with a fresh unique for a body of `body_len` bytes
    /// (for senders that place the body themselves); returns (unique, bytes).
    pub fn encode_header(
        &self,
        opcode: u32,
        nodeid: u64,
        body_len: usize,
    ) -> (u64, [u8; IN_HEADER_LEN]) {
        let unique = self.next_unique();
        let header = request_header(self.config.creds, unique, opcode, nodeid, body_len);
        let mut bytes = [0u8; IN_HEADER_LEN];
        bytes.copy_from_slice(header.as_slice());
        (unique, bytes)
    }

    /// Sends descriptor chains on `queue` as one batch (one kick) and returns
    /// what the daemon wrote, nothing checked.
    pub fn send_chains(&self, queue: usize, chains: &[Vec<Segment>]) -> Result<Vec<Completion>> {
        let q = self
            .queues
            .get(queue)
            .ok_or_else(|| DriverError::Request(format!("no queue {queue}")))?;
        self.lock(q)
            .exchange(self.memory.mem(), chains, self.config.timeout)
    }

    /// Sends `bytes` as one readable buffer plus, if `reply_capacity > 0`,
    /// one writable buffer of that size, on `queue`. Nothing is checked.
    pub fn send_raw(&self, bytes: &[u8], reply_capacity: u32, queue: usize) -> Result<Completion> {
        let mut chain = vec![Segment::Readable(bytes.to_vec())];
        if reply_capacity > 0 {
            chain.push(Segment::Writable(reply_capacity));
        }
        Ok(self.send_chains(queue, &[chain])?.remove(0))
    }

    /// Sends one request on the first request queue; `reply_capacity` is room
    /// for the reply body. Error replies come back as `Ok(Reply)` with a
    /// negative `error`; framing violations as [`DriverError::Protocol`].
    pub fn send(
        &self,
        opcode: u32,
        nodeid: u64,
        body: &[u8],
        reply_capacity: u32,
    ) -> Result<Reply> {
        self.send_on(FIRST_REQUEST_QUEUE, opcode, nodeid, body, reply_capacity)
    }

    /// Like [`FsDriver::send`] on a chosen queue.
    pub fn send_on(
        &self,
        queue: usize,
        opcode: u32,
        nodeid: u64,
        body: &[u8],
        reply_capacity: u32,
    ) -> Result<Reply> {
        let req = Request {
            opcode,
            nodeid,
            body: body.to_vec(),
            reply_capacity,
        };
        self.send_batch(queue, std::slice::from_ref(&req))?
            .remove(0)
    }

    /// Sends several requests in one kick (the daemon may process them in
    /// any order) and checks each reply.
    pub fn send_batch(&self, queue: usize, requests: &[Request]) -> Result<Vec<Result<Reply>>> {
        let mut uniques = Vec::with_capacity(requests.len());
        let mut chains = Vec::with_capacity(requests.len());
        for r in requests {
            let (unique, bytes) = self.encode(r.opcode, r.nodeid, &r.body);
            uniques.push(unique);
            let cap = r.reply_capacity.saturating_add(OUT_HEADER_LEN as u32);
            chains.push(vec![Segment::Readable(bytes), Segment::Writable(cap)]);
        }
        let done = self.send_chains(queue, &chains)?;
        Ok(done
            .into_iter()
            .zip(requests.iter().zip(uniques))
            .map(|(c, (r, unique))| check_reply(&c, r, unique))
            .collect())
    }

    /// Sends a request that has no reply (FORGET, BATCH_FORGET) on `queue`:
    /// only a readable buffer. The daemon must still return the chain.
    pub fn send_no_reply(&self, queue: usize, opcode: u32, nodeid: u64, body: &[u8]) -> Result<()> {
        let (_, bytes) = self.encode(opcode, nodeid, body);
        let c = self.send_raw(&bytes, 0, queue)?;
        if c.used_len != 0 {
            return Err(DriverError::Protocol(format!(
                "opcode {opcode}: no writable buffer, yet used len is {}",
                c.used_len
            )));
        }
        Ok(())
    }
}

/// A request header (with `creds` as uid, gid, pid) followed by `body`.
fn encode_request(
    creds: (u32, u32, u32),
    unique: u64,
    opcode: u32,
    nodeid: u64,
    body: &[u8],
) -> Vec<u8> {
    let header = request_header(creds, unique, opcode, nodeid, body.len());
    let mut bytes = header.as_slice().to_vec();
    bytes.extend_from_slice(body);
    bytes
}

/// The header of a request with a `body_len`-byte body.
fn request_header(
    creds: (u32, u32, u32),
    unique: u64,
    opcode: u32,
    nodeid: u64,
    body_len: usize,
) -> InHeader {
    let (uid, gid, pid) = creds;
    InHeader {
        len: (IN_HEADER_LEN + body_len) as u32,
        opcode,
        unique,
        nodeid,
        uid,
        gid,
        pid,
        padding: 0,
    }
}

/// Room for the early `FUSE_INIT` reply body (an `InitOut`).
const EARLY_INIT_REPLY: usize = 256;

/// The handshake's `FUSE_INIT` (7.36, no flags) as one chain; returns its
/// unique too.
fn early_init_chain(config: &DriverConfig, unique: &AtomicU64) -> (u64, Vec<Segment>) {
    use fuse_backend_rs::abi::fuse_abi::{InitIn, Opcode};
    let body = InitIn {
        major: 7,
        minor: 36,
        max_readahead: 128 * 1024,
        flags: 0,
    };
    let unique_id = unique.fetch_add(1, Ordering::Relaxed);
    let bytes = encode_request(
        config.creds,
        unique_id,
        Opcode::Init as u32,
        0,
        body.as_slice(),
    );
    let chain = vec![
        Segment::Readable(bytes),
        Segment::Writable((EARLY_INIT_REPLY + OUT_HEADER_LEN) as u32),
    ];
    (unique_id, chain)
}

/// Checks the framing of one reply and splits it.
fn check_reply(c: &Completion, r: &Request, unique: u64) -> Result<Reply> {
    let cap = r.reply_capacity as usize + OUT_HEADER_LEN;
    parse_reply(c, Some(unique), cap)
        .map_err(|e| DriverError::Protocol(format!("opcode {} (unique {unique}): {e}", r.opcode)))
}

/// Checks that a completion holds one well-framed FUSE reply and splits it:
/// used len within `buffer_len`, a reply header whose `len` equals the used
/// len, `unique` as expected (if given), `error` 0 or a negative errno, and
/// no body on error replies. Violations are [`DriverError::Protocol`].
pub fn parse_reply(
    c: &Completion,
    expected_unique: Option<u64>,
    buffer_len: usize,
) -> Result<Reply> {
    let bad = |m: String| Err(DriverError::Protocol(m));
    if c.used_len as usize > buffer_len {
        return bad(format!(
            "used len {} exceeds the {buffer_len}-byte reply buffer",
            c.used_len
        ));
    }
    if c.written.len() < OUT_HEADER_LEN {
        return bad(format!("no reply header (used len {})", c.used_len));
    }
    let h: OutHeader = decode(&c.written, "reply header")?;
    if h.len != c.used_len {
        return bad(format!("header len {} but used len {}", h.len, c.used_len));
    }
    if let Some(u) = expected_unique {
        if h.unique != u {
            return bad(format!(
                "reply carries unique {}, request had {u}",
                h.unique
            ));
        }
    }
    if h.error > 0 || h.error < -4095 {
        return bad(format!("error field {} is not 0 or -errno", h.error));
    }
    if h.error != 0 && h.len as usize != OUT_HEADER_LEN {
        return bad(format!(
            "error reply {} carries {} body bytes",
            h.error,
            h.len as usize - OUT_HEADER_LEN
        ));
    }
    Ok(Reply {
        unique: h.unique,
        error: h.error,
        body: c.written[OUT_HEADER_LEN..].to_vec(),
    })
}

#[cfg(test)]
mod reference_tests;
