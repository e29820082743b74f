//! Pipelined requests on one queue, as a guest with many requests in
//! flight sends them: a fixed number of slots, each one request chain (a
//! readable request buffer, then a writable reply buffer) that is sent
//! again as soon as its previous reply is back.
//!
//! [`FsDriver::window`] takes a request queue for the lifetime of the
//! [`Window`]. Slot `k` always uses descriptors `2k` and `2k + 1` and its own
//! part of the queue's arena, so refilling a slot costs two descriptor
//! writes, the request bytes and one available-ring entry. Chains pushed
//! with [`Window::submit`] reach the device at [`Window::flush`] (one index
//! update and, unless EVENT_IDX says the device is still looking, one kick).

use std::num::Wrapping;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::MutexGuard;
use std::time::Duration;

use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::split::Descriptor;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::virtq::SplitQueue;
use super::{DriverError, FsDriver, Result};

/// Alignment of each slot's buffers in the arena.
const SLOT_ALIGN: u64 = 64;

/// One slot's buffers.
#[derive(Debug, Clone, Copy)]
struct Slot {
    request: GuestAddress,
    reply: GuestAddress,
    busy: bool,
}

/// A request queue with up to `slots` chains in flight.
pub struct Window<'a> {
    queue: MutexGuard<'a, SplitQueue>,
    mem: &'a GuestMemoryMmap<()>,
    slots: Vec<Slot>,
    request_cap: u32,
    reply_cap: u32,
    /// Available index before the first chain not yet published.
    unpublished_since: Option<Wrapping<u16>>,
    in_flight: usize,
}

impl FsDriver {
    /// Takes request queue `queue` for pipelined requests: `slots` chains of
    /// a `request_cap`-byte request buffer and a `reply_cap`-byte reply
    /// buffer each. The queue must be idle; other senders on it wait until
    /// the window is dropped.
    pub fn window(
        &self,
        queue: usize,
        slots: usize,
        request_cap: u32,
        reply_cap: u32,
    ) -> Result<Window<'_>> {
        let q = self
            .queues
            .get(queue)
            .ok_or_else(|| DriverError::Request(format!("no queue {queue}")))?;
        let guard = self.lock(q);
        if let Some(why) = guard.broken() {
            return Err(DriverError::QueueBroken {
                queue,
                why: why.to_string(),
            });
        }
        let layout = *guard.layout();
        if slots == 0 || 2 * slots > usize::from(layout.size) {
            return Err(DriverError::Request(format!(
                "{slots} slots need {} descriptors; queue {queue} has {}",
                2 * slots,
                layout.size
            )));
        }
        let align = |n: u32| u64::from(n).div_ceil(SLOT_ALIGN) * SLOT_ALIGN;
        let stride = align(request_cap) + align(reply_cap);
        let needed = stride * slots as u64;
        if needed > layout.arena_len {
            return Err(DriverError::Request(format!(
                "{slots} slots of {stride} bytes exceed the {}-byte arena of queue {queue}",
                layout.arena_len
            )));
        }
        let slots = (0..slots as u64)
            .map(|k| {
                let request = GuestAddress(layout.arena.0 + k * stride);
                Slot {
                    request,
                    reply: GuestAddress(request.0 + align(request_cap)),
                    busy: false,
                }
            })
            .collect();
        Ok(Window {
            queue: guard,
            mem: self.memory.mem(),
            slots,
            request_cap,
            reply_cap,
            unpublished_since: None,
            in_flight: 0,
        })
    }
}

impl Window<'_> {
    /// Number of slots.
    pub fn slots(&self) -> usize {
        self.slots.len()
    }

    /// Chains handed to the device and not yet returned.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    fn slot(&self, slot: usize) -> Result<Slot> {
        self.slots
            .get(slot)
            .copied()
            .ok_or_else(|| DriverError::Request(format!("no slot {slot}")))
    }

    /// Writes `bytes` at `offset` of slot `slot`'s request buffer, for
    /// payload that stays the same from one request to the next (the data
    /// of a WRITE): [`Window::submit`] then only rewrites the headers.
    pub fn fill_request(&self, slot: usize, offset: u32, bytes: &[u8]) -> Result<()> {
        let s = self.slot(slot)?;
        if u64::from(offset) + bytes.len() as u64 > u64::from(self.request_cap) {
            return Err(DriverError::Request(format!(
                "{} bytes at {offset} exceed the {}-byte request buffer",
                bytes.len(),
                self.request_cap
            )));
        }
        self.mem
            .write_slice(bytes, GuestAddress(s.request.0 + u64::from(offset)))
            .map_err(|e| DriverError::Memory(e.to_string()))
    }

    /// Queues slot `slot`'s chain: `prefix` is written at the start of its
    /// request buffer, the device reads `request_len` bytes (the prefix and
    /// whatever [`Window::fill_request`] left after it) and may write
    /// `reply_len` bytes (0: no reply buffer). Sent at the next flush.
    pub fn submit(
        &mut self,
        slot: usize,
        prefix: &[u8],
        request_len: u32,
        reply_len: u32,
    ) -> Result<()> {
        let s = self.slot(slot)?;
        if s.busy {
            return Err(DriverError::Request(format!("slot {slot} is in flight")));
        }
        if prefix.len() > request_len as usize
            || request_len > self.request_cap
            || reply_len > self.reply_cap
        {
            return Err(DriverError::Request(format!(
                "slot {slot}: request {request_len} bytes (prefix {}) / reply {reply_len} \
                 bytes do not fit {} / {}",
                prefix.len(),
                self.request_cap,
                self.reply_cap
            )));
        }
        let mem_err = |e: vm_memory::GuestMemoryError| DriverError::Memory(e.to_string());
        self.mem.write_slice(prefix, s.request).map_err(mem_err)?;
        let head = (2 * slot) as u16;
        let (flags, next) = if reply_len > 0 {
            (VRING_DESC_F_NEXT as u16, head + 1)
        } else {
            (0, 0)
        };
        let q = &mut self.queue;
        q.write_descriptor(
            self.mem,
            head,
            Descriptor::new(s.request.0, request_len, flags, next),
        )?;
        if reply_len > 0 {
            let reply = Descriptor::new(s.reply.0, reply_len, VRING_DESC_F_WRITE as u16, 0);
            q.write_descriptor(self.mem, head + 1, reply)?;
        }
        let since = q.next_avail();
        q.push_avail(self.mem, head)?;
        self.unpublished_since.get_or_insert(since);
        self.slots[slot].busy = true;
        self.in_flight += 1;
        Ok(())
    }

    /// Hands every submitted chain to the device.
    pub fn flush(&mut self) -> Result<()> {
        match self.unpublished_since.take() {
            Some(since) => self.queue.publish_and_kick(self.mem, since),
            None => Ok(()),
        }
    }

    /// Takes every returned chain off the used ring, calling
    /// `done(slot, used_len)` for each; returns how many came back. A chain
    /// id that is not an in-flight slot head breaks the queue.
    pub fn harvest(&mut self, mut done: impl FnMut(usize, u32)) -> Result<usize> {
        let mut n = 0;
        while let Some((id, len)) = self.queue.pop_used(self.mem)? {
            let slot = (id / 2) as usize;
            let known = id % 2 == 0 && self.slots.get(slot).is_some_and(|s| s.busy);
            if !known {
                return Err(DriverError::Protocol(format!(
                    "device returned chain id {id}, which is not in flight"
                )));
            }
            self.slots[slot].busy = false;
            self.in_flight -= 1;
            n += 1;
            done(slot, len);
        }
        Ok(n)
    }

    /// Reads the first `buf.len()` bytes of slot `slot`'s reply buffer.
    pub fn read_reply(&self, slot: usize, buf: &mut [u8]) -> Result<()> {
        let s = self.slot(slot)?;
        if buf.len() > self.reply_cap as usize {
            return Err(DriverError::Request(format!(
                "{} bytes exceed the {}-byte reply buffer",
                buf.len(),
                self.reply_cap
            )));
        }
        self.mem
            .read_slice(buf, s.reply)
            .map_err(|e| DriverError::Memory(e.to_string()))
    }

    /// Asks the device to notify at the next used chain; true when one is
    /// already waiting (do not sleep then).
    pub fn arm(&mut self) -> Result<bool> {
        self.queue.arm_call(self.mem)
    }

    /// The queue's call eventfd, to wait on.
    pub fn call_fd(&self) -> RawFd {
        self.queue.call_fd().as_raw_fd()
    }
}

/// Sleeps until one of `windows` is notified or `max` passes, then clears
/// the notifications. Arm the windows first ([`Window::arm`]).
pub fn wait_any(windows: &[Window<'_>], max: Duration) -> Result<()> {
    let mut fds: Vec<libc::pollfd> = windows
        .iter()
        .map(|w| libc::pollfd {
            fd: w.call_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let ms = max.as_millis().clamp(1, 1000) as libc::c_int;
    // SAFETY: `fds` is a valid array of `fds.len()` pollfds for the call.
    let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
    if rc < 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(DriverError::Io(e));
        }
    }
    for (w, p) in windows.iter().zip(&fds) {
        if p.revents != 0 {
            // Non-blocking: EAGAIN only means it was cleared already.
            let _ = w.queue.call_fd().read();
        }
    }
    Ok(())
}
