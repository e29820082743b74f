//! The vhost-user-fs backend: virtqueues from the VMM, FUSE requests inside.
//!
//! Queue 0 is the high-priority queue (FORGET, INTERRUPT), queues 1.. are
//! request queues; we offer up to [`MAX_REQUEST_QUEUES`] and serve whichever
//! the frontend sets up. Every queue has its own worker thread (from
//! vhost-user-backend's `queues_per_thread`), so queues never wait on each
//! other; with `--thread-pool-size N` the queue threads hand requests to a
//! fixed pool instead of handling them inline.

use std::io::{self, Write};
use std::os::unix::net::UnixListener;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use fuse_backend_rs::abi::fuse_abi::OutHeader;
use fuse_backend_rs::transport::{Reader, VirtioFsWriter};
use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost::vhost_user::Listener;
use vhost_user_backend::{VhostUserBackend, VhostUserDaemon, VringT};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};
use virtio_queue::{DescriptorChain, QueueT};
use vm_memory::{ByteValued, Bytes, GuestAddressSpace, GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{
    new_event_consumer_and_notifier, EventConsumer, EventFlag, EventNotifier,
};

use crate::protocol::{error_header, Dispatcher, Outcome, PendingLock, OUT_HEADER_LEN};
use crate::transport::vring::KickSafeVring;
use crate::transport::{
    fast_path, large_read, poll, DeferredReply, LockWaiters, ServedFs, ThreadPool,
};

/// Most request queues offered to the frontend (plus the hiprio queue).
pub const MAX_REQUEST_QUEUES: usize = 16;

/// Answers served between two notifications inside one batch. Notifying
/// after each answer keeps a guest that is awake busy but wakes a sleeping
/// one per request; notifying once per batch lets the guest fall asleep
/// while the batch is served (measured with `scripts/bench-daemon`, 16 in
/// flight: every answer 1.07x virtiofsd on 4 KiB reads, once per batch
/// 0.68x, every 4 answers 1.28x on an idle 2-CPU host).
pub const NOTIFY_EVERY: usize = 4;

/// Largest virtqueue size offered.
pub const QUEUE_MAX_SIZE: usize = 1024;

/// Size of the virtio-fs configuration space: `tag[36]` + `num_request_queues`.
pub const CONFIG_SPACE_LEN: usize = 40;

type Mem = GuestMemoryMmap<()>;
type AtomicMem = GuestMemoryAtomic<Mem>;
type Vring = KickSafeVring<AtomicMem>;
type Chain = DescriptorChain<Arc<Mem>>;

/// Why the vhost-user transport stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum VhostUserError {
    /// The backend or its worker threads could not be set up.
    #[error("cannot set up the vhost-user backend: {0}")]
    Setup(String),
    /// Accepting or serving the frontend's connection failed.
    #[error("vhost-user connection: {0}")]
    Connection(String),
}

/// Settings of the vhost-user backend.
#[derive(Debug, Clone, Default)]
pub struct VhostUserOptions {
    /// Tag for the configuration space; enables the CONFIG protocol feature.
    pub tag: Option<String>,
    /// Request threads (0: inline on each queue thread).
    pub thread_pool_size: usize,
    /// Largest time a queue thread keeps looking for more requests after a
    /// batch before it sleeps (zero: never; see [`poll`]).
    pub poll_window: Duration,
}

/// A virtio-fs device backend serving one filesystem.
pub struct FsBackend<F: ServedFs> {
    dispatcher: Arc<Dispatcher<F>>,
    mem: AtomicMem,
    tag: Option<String>,
    pool: Option<ThreadPool>,
    lock_waiters: LockWaiters,
    poll_window: Duration,
}

impl<F: ServedFs> FsBackend<F> {
    /// A backend serving `fs`, reading guest memory through `mem` (the same
    /// atomic the `VhostUserDaemon` updates).
    pub fn new(fs: Arc<F>, mem: AtomicMem, opts: &VhostUserOptions) -> io::Result<Self> {
        let pool = match opts.thread_pool_size {
            0 => None,
            n => Some(ThreadPool::new(n)?),
        };
        Ok(FsBackend {
            dispatcher: Arc::new(Dispatcher::new(fs)),
            mem,
            tag: opts.tag.clone(),
            pool,
            lock_waiters: LockWaiters::default(),
            poll_window: opts.poll_window,
        })
    }

    /// The virtio-fs configuration space: the tag, NUL padded to 36 bytes,
    /// then the number of request queues (little-endian u32).
    pub fn config_space(&self) -> [u8; CONFIG_SPACE_LEN] {
        let mut cfg = [0u8; CONFIG_SPACE_LEN];
        if let Some(tag) = &self.tag {
            let n = tag.len().min(36);
            cfg[..n].copy_from_slice(&tag.as_bytes()[..n]);
        }
        cfg[36..].copy_from_slice(&(MAX_REQUEST_QUEUES as u32).to_le_bytes());
        cfg
    }

    /// Stops the request thread pool, if any.
    pub fn shutdown(&self) {
        if let Some(pool) = &self.pool {
            pool.shutdown();
        }
    }

    /// Serves every available descriptor chain of `vring`, with the
    /// guest's kicks suppressed meanwhile, and keeps looking for more for
    /// this thread's polling window before it lets the guest kick again.
    pub fn process_queue(&self, vring: &Vring) -> io::Result<()> {
        poll::woke(self.poll_window);
        loop {
            let mem = self.mem.memory().into_inner();
            vring.disable_notification().map_err(io::Error::other)?;
            self.drain(vring, &mem);
            if poll::poll(self.poll_window, || has_available(vring, &mem)) {
                continue;
            }
            // Chains made available after the last pop and before the
            // guest saw kicks enabled again are served now.
            if !vring.enable_notification().map_err(io::Error::other)? {
                return Ok(());
            }
        }
    }

    /// Serves the chains available now. The guest is notified (when it
    /// asks) after every [`NOTIFY_EVERY`] answers while more chains wait, so
    /// it can take those answers and queue more while the rest is served,
    /// and once at the end.
    fn drain(&self, vring: &Vring, mem: &Arc<Mem>) {
        let mut answered = 0usize;
        let mut unsignalled = false;
        loop {
            let chain = vring
                .get_mut()
                .get_queue_mut()
                .pop_descriptor_chain(mem.clone());
            let Some(chain) = chain else { break };
            let req = ChainRequest {
                dispatcher: self.dispatcher.clone(),
                vring: vring.clone(),
                mem: mem.clone(),
                chain,
                lock_waiters: self.lock_waiters.clone(),
            };
            match &self.pool {
                Some(pool) => pool.execute(move || req.serve_and_signal()),
                None => {
                    let Some(req) = self.offload_large_read(req, vring, mem) else {
                        continue;
                    };
                    if req.serve() {
                        answered += 1;
                        unsignalled = true;
                        if answered.is_multiple_of(NOTIFY_EVERY) && has_available(vring, mem) {
                            signal(vring);
                            unsignalled = false;
                        }
                    }
                }
            }
        }
        if unsignalled {
            signal(vring);
        }
    }
}

impl<F: ServedFs> FsBackend<F> {
    /// Hands a large `FUSE_READ` to an idle copy helper when more chains
    /// wait, so this thread serves them while the helper copies (several
    /// large reads in flight are then copied by several cores; one alone is
    /// split into pieces instead, see [`crate::copy_crew`]). Gives the
    /// request back when it is to be served here.
    fn offload_large_read(
        &self,
        req: ChainRequest<F>,
        vring: &Vring,
        mem: &Mem,
    ) -> Option<ChainRequest<F>> {
        let Some(crew) = self.dispatcher.fs().copy_crew() else {
            return Some(req);
        };
        // Cheapest test first: small requests at depth never get here
        // while no large read has started the helpers.
        if !crew.has_idle_helper()
            || !has_available(vring, mem)
            || !large_read::is_large_read(mem, &req.chain)
        {
            return Some(req);
        }
        if let Err(task) = crew.try_offload(Box::new(move || req.serve_and_signal())) {
            // No helper idle: served here, now.
            task();
        }
        None
    }
}

/// Whether the guest has made chains available that were not popped yet.
fn has_available(vring: &Vring, mem: &Mem) -> bool {
    let state = vring.get_ref();
    let queue = state.get_queue();
    queue.ready()
        && queue
            .avail_idx(mem, Ordering::Acquire)
            .is_ok_and(|idx| idx.0 != queue.next_avail())
}

/// Notifies the guest about used buffers when the ring asks for it.
fn signal(vring: &Vring) {
    let needed = vring.needs_notification().unwrap_or(true);
    if needed {
        if let Err(e) = vring.signal_used_queue() {
            tracing::warn!("cannot signal the guest: {e}");
        }
    }
}

/// One descriptor chain and what it takes to answer it.
struct ChainRequest<F: ServedFs> {
    dispatcher: Arc<Dispatcher<F>>,
    vring: Vring,
    mem: Arc<Mem>,
    chain: Chain,
    lock_waiters: LockWaiters,
}

/// How a chain was dealt with.
enum Handled {
    /// Return the chain to the used ring with this length.
    Used(u32),
    /// A contended lock: the reply comes from a lock waiter.
    Deferred(PendingLock),
}

impl<F: ServedFs> ChainRequest<F> {
    /// Handles the request away from the queue thread's batch and notifies
    /// the guest itself (when the ring asks).
    fn serve_and_signal(self) {
        let vring = self.vring.clone();
        if self.serve() {
            signal(&vring);
        }
    }

    /// Handles the request; returns true if the chain went to the used ring
    /// now (false when its reply is deferred to a lock waiter).
    fn serve(self) -> bool {
        let head = self.chain.head_index();
        match handle_chain(&self.dispatcher, &self.mem, &self.chain) {
            Handled::Used(len) => {
                add_used(&self.vring, head, len);
                true
            }
            Handled::Deferred(pending) => {
                let job = LockWait {
                    fs: self.dispatcher.fs().clone(),
                    pending,
                    vring: self.vring,
                    mem: self.mem,
                    chain: self.chain,
                };
                self.lock_waiters.dispatch(job);
                false
            }
        }
    }
}

/// A contended `FUSE_SETLKW` waiting for its lock off the queue thread.
struct LockWait<F: ServedFs> {
    fs: Arc<F>,
    pending: PendingLock,
    vring: Vring,
    mem: Arc<Mem>,
    chain: Chain,
}

impl<F: ServedFs> LockWait<F> {
    fn finish(self, header: OutHeader) {
        let len = write_header(&self.mem, &self.chain, header);
        add_used(&self.vring, self.chain.head_index(), len);
        signal(&self.vring);
    }
}

impl<F: ServedFs> DeferredReply for LockWait<F> {
    fn complete(self) {
        let header = self.pending.wait(&*self.fs);
        self.finish(header);
    }

    fn reject(self, errno: i32) {
        let header = error_header(self.pending.unique, errno);
        self.finish(header);
    }
}

/// Dispatches one chain and works out what goes to the used ring.
fn handle_chain<F: ServedFs>(dispatcher: &Dispatcher<F>, mem: &Arc<Mem>, chain: &Chain) -> Handled {
    let mem: &Mem = mem;
    if let Some(used) = fast_path::serve(&**dispatcher.fs(), mem, chain) {
        return Handled::Used(used);
    }
    let reader = match Reader::from_descriptor_chain(mem, chain.clone()) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!("bad descriptor chain (request part): {e}");
            return Handled::Used(0);
        }
    };
    let writer = match VirtioFsWriter::new(mem, chain.clone()) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!("bad descriptor chain (reply part): {e}");
            return Handled::Used(0);
        }
    };
    let writable = writer.available_bytes();
    let used = match dispatcher.handle_message(reader, writer.into()) {
        Outcome::NoReply => 0,
        Outcome::Replied { len, .. } if len > 0 => len.min(writable) as u32,
        Outcome::Replied { unique, .. } => sent_reply_len(mem, chain, unique).unwrap_or(0),
        Outcome::Failed { unique, errno } => sent_reply_len(mem, chain, unique)
            .unwrap_or_else(|| write_header(mem, chain, error_header(unique, errno))),
        Outcome::Deferred(p) => return Handled::Deferred(p),
    };
    Handled::Used(used)
}

fn add_used(vring: &Vring, head: u16, len: u32) {
    if let Err(e) = vring.add_used(head, len) {
        tracing::warn!("cannot return descriptor {head} to the guest: {e}");
    }
}

/// Length of the writable part of `chain`.
fn writable_len(chain: &Chain) -> usize {
    chain
        .clone()
        .writable()
        .fold(0usize, |acc, d| acc.saturating_add(d.len() as usize))
}

/// The reply header at the start of the chain's writable buffers, if a
/// complete one for `unique` is there (the server may have sent a reply
/// before failing, or sent one without counting it).
fn sent_reply_len(mem: &Mem, chain: &Chain, unique: u64) -> Option<u32> {
    let mut raw = [0u8; OUT_HEADER_LEN];
    let mut filled = 0;
    for desc in chain.clone().writable() {
        if filled == raw.len() {
            break;
        }
        let n = (desc.len() as usize).min(raw.len() - filled);
        mem.read_slice(&mut raw[filled..filled + n], desc.addr())
            .ok()?;
        filled += n;
    }
    if filled < raw.len() {
        return None;
    }
    let h = OutHeader::from_slice(&raw).copied()?;
    let len = h.len as usize;
    (h.unique == unique && len >= OUT_HEADER_LEN && len <= writable_len(chain) && h.error <= 0)
        .then_some(h.len)
}

/// Writes a bare reply header into the chain; returns the used length.
fn write_header(mem: &Mem, chain: &Chain, header: OutHeader) -> u32 {
    let written = VirtioFsWriter::new(mem, chain.clone())
        .map_err(|e| io::Error::other(e.to_string()))
        .and_then(|mut w| w.write_all(header.as_slice()));
    match written {
        Ok(()) => OUT_HEADER_LEN as u32,
        Err(e) => {
            tracing::debug!(unique = header.unique, "cannot write a reply header: {e}");
            0
        }
    }
}

impl<F: ServedFs> VhostUserBackend for FsBackend<F> {
    type Bitmap = ();
    type Vring = Vring;

    fn num_queues(&self) -> usize {
        1 + MAX_REQUEST_QUEUES
    }

    fn max_queue_size(&self) -> usize {
        QUEUE_MAX_SIZE
    }

    fn features(&self) -> u64 {
        (1u64 << VIRTIO_F_VERSION_1)
            | (1u64 << VIRTIO_RING_F_INDIRECT_DESC)
            | (1u64 << VIRTIO_RING_F_EVENT_IDX)
            | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        let mut f = VhostUserProtocolFeatures::MQ | VhostUserProtocolFeatures::REPLY_ACK;
        if self.tag.is_some() {
            f |= VhostUserProtocolFeatures::CONFIG;
        }
        f
    }

    fn set_event_idx(&self, _enabled: bool) {
        // Each vring knows (vhost-user-backend sets it on the queues).
    }

    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        let cfg = self.config_space();
        let (offset, size) = (offset as usize, size as usize);
        if size > cfg.len() {
            return Vec::new();
        }
        let mut out = vec![0u8; size];
        if offset < cfg.len() {
            let n = size.min(cfg.len() - offset);
            out[..n].copy_from_slice(&cfg[offset..offset + n]);
        }
        out
    }

    fn update_memory(&self, _mem: AtomicMem) -> io::Result<()> {
        // `self.mem` is the very atomic the daemon just updated.
        Ok(())
    }

    fn queues_per_thread(&self) -> Vec<u64> {
        (0..self.num_queues()).map(|q| 1u64 << q).collect()
    }

    fn exit_event(&self, _thread_index: usize) -> Option<(EventConsumer, EventNotifier)> {
        match new_event_consumer_and_notifier(EventFlag::NONBLOCK | EventFlag::CLOEXEC) {
            Ok(pair) => Some(pair),
            Err(e) => {
                tracing::error!("cannot create a worker exit event: {e}");
                None
            }
        }
    }

    fn handle_event(
        &self,
        device_event: u16,
        evset: EventSet,
        vrings: &[Self::Vring],
        thread_id: usize,
    ) -> io::Result<()> {
        if evset != EventSet::IN {
            return Err(io::Error::other(format!(
                "queue {thread_id}: unexpected epoll events {evset:?}"
            )));
        }
        let Some(vring) = vrings.get(device_event as usize) else {
            return Err(io::Error::other(format!(
                "queue {thread_id}: unknown event {device_event}"
            )));
        };
        // A broken queue is logged, not fatal: returning an error would end
        // this queue's worker thread for good.
        if let Err(e) = self.process_queue(vring) {
            tracing::warn!("queue {thread_id}: {e}");
        }
        Ok(())
    }
}

/// Serves `fs` to one vhost-user frontend connecting on `listener`; returns
/// when the frontend disconnects.
pub fn serve<F: ServedFs>(
    fs: Arc<F>,
    listener: UnixListener,
    opts: &VhostUserOptions,
) -> Result<(), VhostUserError> {
    let mem = GuestMemoryAtomic::new(Mem::new());
    let backend = Arc::new(
        FsBackend::new(fs, mem.clone(), opts).map_err(|e| VhostUserError::Setup(e.to_string()))?,
    );
    let mut daemon = VhostUserDaemon::new("virtiofsd-msb".into(), backend.clone(), mem)
        .map_err(|e| VhostUserError::Setup(e.to_string()))?;
    let mut listener = Listener::from(listener);
    tracing::info!("waiting for a vhost-user frontend to connect");
    daemon
        .start(&mut listener)
        .map_err(|e| VhostUserError::Connection(e.to_string()))?;
    drop(listener);
    tracing::info!("vhost-user frontend connected");
    let result = daemon.wait();
    for handler in daemon.get_epoll_handlers() {
        handler.send_exit_event();
    }
    backend.shutdown();
    match result {
        Ok(()) => Ok(()),
        Err(vhost_user_backend::Error::HandleRequest(
            vhost::vhost_user::Error::Disconnected
            | vhost::vhost_user::Error::PartialMessage
            | vhost::vhost_user::Error::SocketBroken(_),
        )) => {
            tracing::info!("vhost-user frontend disconnected");
            Ok(())
        }
        Err(e) => Err(VhostUserError::Connection(e.to_string())),
    }
}

#[cfg(test)]
#[path = "tests_vhost_user.rs"]
mod tests;
