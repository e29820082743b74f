//! The driver ("guest") side of a split virtqueue, written by hand so tests
//! control every descriptor the daemon sees.
//!
//! Each queue owns a slice of guest memory: descriptor table, available ring,
//! used ring, then an arena for request and reply buffers. One exchange puts
//! one or more descriptor chains on the available ring, kicks, and waits on
//! the call eventfd until the device has returned every chain through the
//! used ring (or a timeout passes).

use std::collections::HashMap;
use std::num::Wrapping;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::split::Descriptor;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::DriverError;

/// Size of one split descriptor.
const DESC_SIZE: u64 = 16;
/// Available ring: flags + idx, then `size` u16 entries, then used_event.
const AVAIL_META: u64 = 6;
/// Used ring: flags + idx, then `size` (id, len) u32 pairs, then avail_event.
const USED_META: u64 = 6;
const USED_ELEM_SIZE: u64 = 8;
/// Alignment of request/reply buffers in the arena.
const BUF_ALIGN: u64 = 8;

fn align_up(v: u64, align: u64) -> u64 {
    v.div_ceil(align) * align
}

/// Where one queue's structures live in guest memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLayout {
    /// Number of descriptors (a power of two, at most 32768).
    pub size: u16,
    /// Descriptor table (16-byte aligned).
    pub desc: GuestAddress,
    /// Available ring (2-byte aligned).
    pub avail: GuestAddress,
    /// Used ring (4-byte aligned).
    pub used: GuestAddress,
    /// First byte of the buffer arena.
    pub arena: GuestAddress,
    /// Arena length in bytes.
    pub arena_len: u64,
}

impl QueueLayout {
    /// Lays out a queue of `size` descriptors plus `arena_len` bytes of
    /// buffers starting at `base` (rounded up to a page).
    pub fn new(base: GuestAddress, size: u16, arena_len: u64) -> Self {
        let desc = align_up(base.0, 4096);
        let avail = desc + DESC_SIZE * u64::from(size);
        let used = align_up(avail + AVAIL_META + 2 * u64::from(size), 64);
        let arena = align_up(used + USED_META + USED_ELEM_SIZE * u64::from(size), 4096);
        QueueLayout {
            size,
            desc: GuestAddress(desc),
            avail: GuestAddress(avail),
            used: GuestAddress(used),
            arena: GuestAddress(arena),
            arena_len,
        }
    }

    /// First guest address after this queue's arena.
    pub fn end(&self) -> GuestAddress {
        GuestAddress(self.arena.0 + self.arena_len)
    }

    /// Bytes from the page-aligned start of the rings to the end of the arena.
    pub fn total_len(&self) -> u64 {
        self.end().0 - self.desc.0
    }
}

/// One buffer of a descriptor chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Segment {
    /// A device-readable buffer holding these bytes (copied into the arena).
    Readable(Vec<u8>),
    /// A zero-filled device-writable buffer of this many bytes in the arena;
    /// what the device writes comes back in [`Completion::written`].
    Writable(u32),
    /// A descriptor pointing wherever the test says, for hostile requests
    /// (outside guest memory, overlapping the rings, …). Nothing is copied.
    Raw {
        /// Guest physical address.
        addr: u64,
        /// Length in bytes.
        len: u32,
        /// Device-writable (`VRING_DESC_F_WRITE`).
        write: bool,
    },
}

/// A chain the device returned through the used ring.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Completion {
    /// The `len` the device put in the used element (bytes it wrote).
    pub used_len: u32,
    /// The first `used_len` bytes of the chain's arena-backed writable
    /// buffers, concatenated (fewer if `used_len` exceeds their size).
    pub written: Vec<u8>,
}

/// Driver side of one split virtqueue.
pub struct SplitQueue {
    index: usize,
    layout: QueueLayout,
    kick: EventFd,
    call: EventFd,
    next_avail: Wrapping<u16>,
    last_used: Wrapping<u16>,
    broken: Option<String>,
    completed: u64,
    event_idx: bool,
}

/// Chains handed to the device and not yet collected.
pub struct InFlight {
    pending: HashMap<u16, Pending>,
    count: usize,
}

/// Chain bookkeeping during one exchange.
struct Pending {
    chain: usize,
    writable: Vec<(GuestAddress, u32)>,
}

impl SplitQueue {
    /// Creates the queue's eventfds and zeroes its rings in `mem`.
    pub fn new(
        index: usize,
        layout: QueueLayout,
        mem: &GuestMemoryMmap<()>,
    ) -> Result<Self, DriverError> {
        if !layout.size.is_power_of_two() || layout.size > 32768 {
            return Err(DriverError::Setup(format!(
                "queue size {} is not a power of two <= 32768",
                layout.size
            )));
        }
        let ring_bytes = layout.arena.0 - layout.desc.0;
        mem.write_slice(&vec![0u8; ring_bytes as usize], layout.desc)
            .map_err(|e| DriverError::Memory(format!("zeroing queue {index} rings: {e}")))?;
        let kick = EventFd::new(EFD_NONBLOCK).map_err(DriverError::Io)?;
        let call = EventFd::new(EFD_NONBLOCK).map_err(DriverError::Io)?;
        Ok(SplitQueue {
            index,
            layout,
            kick,
            call,
            next_avail: Wrapping(0),
            last_used: Wrapping(0),
            broken: None,
            completed: 0,
            event_idx: false,
        })
    }

    /// The queue's layout in guest memory.
    pub fn layout(&self) -> &QueueLayout {
        &self.layout
    }

    /// The eventfd the driver writes to notify the device.
    pub fn kick_fd(&self) -> &EventFd {
        &self.kick
    }

    /// The eventfd the device writes when it has used buffers.
    pub fn call_fd(&self) -> &EventFd {
        &self.call
    }

    /// How many chains the device has returned on this queue so far.
    pub fn completed(&self) -> u64 {
        self.completed
    }

    /// Why the queue is unusable, if it is (after a timeout the device may
    /// still own buffers, so the queue is not reused).
    pub fn broken(&self) -> Option<&str> {
        self.broken.as_deref()
    }

    /// Places `chains` on the available ring, kicks once, and waits until the
    /// device has returned all of them (in any order) or `timeout` passes.
    /// Completions come back in the order of `chains`.
    pub fn exchange(
        &mut self,
        mem: &GuestMemoryMmap<()>,
        chains: &[Vec<Segment>],
        timeout: Duration,
    ) -> Result<Vec<Completion>, DriverError> {
        if let Some(why) = &self.broken {
            return Err(DriverError::QueueBroken {
                queue: self.index,
                why: why.clone(),
            });
        }
        let in_flight = self.start(mem, chains)?;
        self.finish(mem, in_flight, timeout)
    }

    /// Places `chains` on the available ring and kicks (unless the device
    /// asked, through EVENT_IDX, not to be kicked yet); [`SplitQueue::finish`]
    /// waits for them. Used directly by tests that kick at odd moments.
    pub fn start(
        &mut self,
        mem: &GuestMemoryMmap<()>,
        chains: &[Vec<Segment>],
    ) -> Result<InFlight, DriverError> {
        let old_avail = self.next_avail;
        let pending = self.post(mem, chains)?;
        self.publish_and_kick(mem, old_avail)?;
        Ok(InFlight {
            pending,
            count: chains.len(),
        })
    }

    /// Waits until the device has returned every chain of `in_flight` (in
    /// any order) or `timeout` passes; completions come back in the order
    /// the chains were given to [`SplitQueue::start`].
    pub fn finish(
        &mut self,
        mem: &GuestMemoryMmap<()>,
        in_flight: InFlight,
        timeout: Duration,
    ) -> Result<Vec<Completion>, DriverError> {
        let done = self.collect(mem, in_flight.pending, in_flight.count, timeout)?;
        if self.event_idx {
            // Ask to be notified as soon as the next chain is used.
            let at = self
                .layout
                .avail
                .unchecked_add(4 + 2 * u64::from(self.layout.size));
            mem.store(self.last_used.0, at, Ordering::Release)
                .map_err(|e| DriverError::Memory(e.to_string()))?;
        }
        Ok(done)
    }

    /// Uses the device's EVENT_IDX: drivers in VMs skip kicks the device
    /// said it does not need (virtio 1.x, 2.7.10); without EVENT_IDX every
    /// batch is kicked.
    fn kick_needed(
        &self,
        mem: &GuestMemoryMmap<()>,
        old: Wrapping<u16>,
    ) -> Result<bool, DriverError> {
        if !self.event_idx {
            return Ok(true);
        }
        let at = self
            .layout
            .used
            .unchecked_add(4 + USED_ELEM_SIZE * u64::from(self.layout.size));
        std::sync::atomic::fence(Ordering::SeqCst);
        let avail_event: u16 = mem
            .load(at, Ordering::Acquire)
            .map_err(|e| DriverError::Memory(e.to_string()))?;
        let new = self.next_avail;
        Ok((new - Wrapping(avail_event) - Wrapping(1)).0 < (new - old).0)
    }

    /// Whether the EVENT_IDX feature was negotiated for this queue.
    pub fn set_event_idx(&mut self, on: bool) {
        self.event_idx = on;
    }

    /// Writes descriptors, buffers and avail entries (not yet published);
    /// returns head → chain info.
    fn post(
        &mut self,
        mem: &GuestMemoryMmap<()>,
        chains: &[Vec<Segment>],
    ) -> Result<HashMap<u16, Pending>, DriverError> {
        let total: usize = chains.iter().map(Vec::len).sum();
        if chains.iter().any(Vec::is_empty) {
            return Err(DriverError::Request("empty descriptor chain".into()));
        }
        if total > usize::from(self.layout.size) {
            return Err(DriverError::Request(format!(
                "{total} descriptors do not fit queue {} of size {}",
                self.index, self.layout.size
            )));
        }
        let mem_err = |e: vm_memory::GuestMemoryError| DriverError::Memory(e.to_string());
        let mut cursor = self.layout.arena.0;
        let arena_end = self.layout.end().0;
        let (arena_len, index) = (self.layout.arena_len, self.index);
        let mut alloc = |len: u64| -> Result<GuestAddress, DriverError> {
            let at = align_up(cursor, BUF_ALIGN);
            if at + len > arena_end {
                return Err(DriverError::Request(format!(
                    "buffers exceed the {arena_len}-byte arena of queue {index}"
                )));
            }
            cursor = at + len;
            Ok(GuestAddress(at))
        };

        let mut pending = HashMap::new();
        let mut next_desc: u16 = 0;
        for (ci, chain) in chains.iter().enumerate() {
            let head = next_desc;
            let mut writable = Vec::new();
            for (si, seg) in chain.iter().enumerate() {
                let (addr, len, write) = match seg {
                    Segment::Readable(bytes) => {
                        let at = alloc(bytes.len() as u64)?;
                        mem.write_slice(bytes, at).map_err(mem_err)?;
                        (at.0, bytes.len() as u32, false)
                    }
                    Segment::Writable(len) => {
                        let at = alloc(u64::from(*len))?;
                        mem.write_slice(&vec![0u8; *len as usize], at)
                            .map_err(mem_err)?;
                        writable.push((at, *len));
                        (at.0, *len, true)
                    }
                    Segment::Raw { addr, len, write } => (*addr, *len, *write),
                };
                let last = si + 1 == chain.len();
                let mut flags = 0u16;
                if !last {
                    flags |= VRING_DESC_F_NEXT as u16;
                }
                if write {
                    flags |= VRING_DESC_F_WRITE as u16;
                }
                let next = if last { 0 } else { next_desc + 1 };
                let desc = Descriptor::new(addr, len, flags, next);
                let at = self
                    .layout
                    .desc
                    .unchecked_add(u64::from(next_desc) * DESC_SIZE);
                mem.write_obj(desc, at).map_err(mem_err)?;
                next_desc += 1;
            }
            pending.insert(
                head,
                Pending {
                    chain: ci,
                    writable,
                },
            );
            self.push_avail(mem, head)?;
        }
        Ok(pending)
    }

    /// Writes entry `index` of the descriptor table.
    pub fn write_descriptor(
        &self,
        mem: &GuestMemoryMmap<()>,
        index: u16,
        desc: Descriptor,
    ) -> Result<(), DriverError> {
        if index >= self.layout.size {
            return Err(DriverError::Request(format!(
                "descriptor {index} is outside queue {} of size {}",
                self.index, self.layout.size
            )));
        }
        let at = self.layout.desc.unchecked_add(u64::from(index) * DESC_SIZE);
        mem.write_obj(desc, at)
            .map_err(|e| DriverError::Memory(e.to_string()))
    }

    /// Puts chain `head` on the available ring without publishing it: the
    /// device sees it after [`SplitQueue::publish_avail`].
    pub fn push_avail(&mut self, mem: &GuestMemoryMmap<()>, head: u16) -> Result<(), DriverError> {
        let slot = u64::from(self.next_avail.0 % self.layout.size);
        mem.write_obj(head, self.layout.avail.unchecked_add(4 + 2 * slot))
            .map_err(|e| DriverError::Memory(e.to_string()))?;
        self.next_avail += Wrapping(1);
        Ok(())
    }

    /// Publishes every pushed entry: the Release store orders the
    /// descriptor and ring writes before the index the device reads.
    fn publish_avail(&mut self, mem: &GuestMemoryMmap<()>) -> Result<(), DriverError> {
        mem.store(
            self.next_avail.0,
            self.layout.avail.unchecked_add(2),
            Ordering::Release,
        )
        .map_err(|e| DriverError::Memory(e.to_string()))
    }

    /// The available index the next pushed chain gets.
    pub fn next_avail(&self) -> Wrapping<u16> {
        self.next_avail
    }

    /// Publishes the chains pushed since the available index was `since`
    /// and kicks the device if it asked for it (always without EVENT_IDX).
    pub fn publish_and_kick(
        &mut self,
        mem: &GuestMemoryMmap<()>,
        since: Wrapping<u16>,
    ) -> Result<(), DriverError> {
        self.publish_avail(mem)?;
        if self.kick_needed(mem, since)? {
            self.kick.write(1).map_err(|e| {
                DriverError::Io(std::io::Error::new(e.kind(), format!("kick: {e}")))
            })?;
        }
        Ok(())
    }

    /// The next element of the used ring as `(id, len)`, if the device
    /// returned a chain the driver has not taken yet.
    pub fn pop_used(
        &mut self,
        mem: &GuestMemoryMmap<()>,
    ) -> Result<Option<(u32, u32)>, DriverError> {
        let mem_err = |e: vm_memory::GuestMemoryError| DriverError::Memory(e.to_string());
        let used_idx: u16 = mem
            .load(self.layout.used.unchecked_add(2), Ordering::Acquire)
            .map_err(mem_err)?;
        if self.last_used == Wrapping(used_idx) {
            return Ok(None);
        }
        let slot = u64::from(self.last_used.0 % self.layout.size);
        let elem = self.layout.used.unchecked_add(4 + USED_ELEM_SIZE * slot);
        let id: u32 = mem.read_obj(elem).map_err(mem_err)?;
        let len: u32 = mem.read_obj(elem.unchecked_add(4)).map_err(mem_err)?;
        self.last_used += Wrapping(1);
        self.completed += 1;
        Ok(Some((id, len)))
    }

    /// Asks to be notified when the next chain is used (the EVENT_IDX
    /// `used_event`; without EVENT_IDX every use is notified anyway).
    /// Returns true when a used chain is already waiting, so the caller
    /// must not sleep.
    pub fn arm_call(&mut self, mem: &GuestMemoryMmap<()>) -> Result<bool, DriverError> {
        let mem_err = |e: vm_memory::GuestMemoryError| DriverError::Memory(e.to_string());
        if self.event_idx {
            let at = self
                .layout
                .avail
                .unchecked_add(4 + 2 * u64::from(self.layout.size));
            mem.store(self.last_used.0, at, Ordering::Release)
                .map_err(mem_err)?;
            // The device may have used a chain before it saw used_event.
            std::sync::atomic::fence(Ordering::SeqCst);
        }
        let used_idx: u16 = mem
            .load(self.layout.used.unchecked_add(2), Ordering::Acquire)
            .map_err(mem_err)?;
        Ok(self.last_used != Wrapping(used_idx))
    }

    /// Reads used elements until every pending chain is back.
    fn collect(
        &mut self,
        mem: &GuestMemoryMmap<()>,
        mut pending: HashMap<u16, Pending>,
        count: usize,
        timeout: Duration,
    ) -> Result<Vec<Completion>, DriverError> {
        let mem_err = |e: vm_memory::GuestMemoryError| DriverError::Memory(e.to_string());
        let deadline = Instant::now() + timeout;
        let mut done: Vec<Option<Completion>> = vec![None; count];
        let mut remaining = count;
        while remaining > 0 {
            while let Some((id, len)) = self.pop_used(mem)? {
                let Some(p) = u16::try_from(id).ok().and_then(|h| pending.remove(&h)) else {
                    let why = format!("device returned unknown or repeated chain id {id}");
                    self.broken = Some(why.clone());
                    return Err(DriverError::Protocol(why));
                };
                let mut written = Vec::new();
                let mut left = len as usize;
                for (addr, cap) in p.writable {
                    let n = left.min(cap as usize);
                    if n == 0 {
                        break;
                    }
                    let mut buf = vec![0u8; n];
                    mem.read_slice(&mut buf, addr).map_err(mem_err)?;
                    written.extend_from_slice(&buf);
                    left -= n;
                }
                done[p.chain] = Some(Completion {
                    used_len: len,
                    written,
                });
                remaining -= 1;
            }
            if remaining == 0 {
                break;
            }
            let now = Instant::now();
            if now >= deadline {
                let why = format!("{remaining} of {count} chains not returned within {timeout:?}");
                self.broken = Some(why.clone());
                return Err(DriverError::Timeout {
                    queue: self.index,
                    what: why,
                });
            }
            wait_readable(&self.call, deadline - now)?;
        }
        Ok(done
            .into_iter()
            .map(|c| c.expect("all chains completed"))
            .collect())
    }
}

/// Waits until `fd` is readable (or `max` passes), then drains it.
fn wait_readable(fd: &EventFd, max: Duration) -> Result<(), DriverError> {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // Wake up at least every 50 ms: a device that updates the used ring
    // without notifying should not cost the whole timeout.
    let ms = max.as_millis().clamp(1, 50) as libc::c_int;
    // SAFETY: `pfd` is a valid pollfd for the duration of the call.
    let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
    if rc < 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(DriverError::Io(e));
        }
    }
    // Non-blocking read: EAGAIN just means nothing was signalled.
    let _ = fd.read();
    Ok(())
}

#[cfg(test)]
#[path = "virtq_tests.rs"]
mod tests;
