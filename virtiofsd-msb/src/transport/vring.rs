//! A vring that never loses a kick.
//!
//! vhost-user-backend's worker reads (and so consumes) a queue's kick
//! eventfd before it asks whether the ring is enabled, and drops the event
//! when it is not. The frontend's `SET_VRING_ENABLE` is handled on another
//! thread (the vhost-user message loop), and a frontend that does not wait
//! for acknowledgements (QEMU without REPLY_ACK on that message, most guests'
//! first FUSE_INIT right after DRIVER_OK) can kick before the enable is
//! processed: the worker consumes the kick, sees a disabled ring, and the
//! request sits on the ring forever. The same happens when a kick lands
//! between the kick fd's registration and the queue being marked ready.
//!
//! [`KickSafeVring`] closes both windows: whenever the ring becomes enabled
//! or ready it kicks itself once more, so whatever the frontend queued
//! before is looked at. A spare kick only makes the worker find an empty
//! ring, which costs one wakeup.

use std::fs::File;
use std::io;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::sync::{Arc, Mutex};

use vhost_user_backend::{VringRwLock, VringStateGuard, VringStateMutGuard, VringT};
use virtio_queue::Error as QueueError;
use vm_memory::GuestAddressSpace;
use vmm_sys_util::event::EventNotifier;

/// A [`VringRwLock`] that re-kicks itself when it becomes usable.
#[derive(Clone)]
pub struct KickSafeVring<M: GuestAddressSpace> {
    inner: VringRwLock<M>,
    /// A second handle on the frontend's kick eventfd, to kick ourselves.
    self_kick: Arc<Mutex<Option<EventNotifier>>>,
}

impl<M: GuestAddressSpace> KickSafeVring<M> {
    /// Wakes this ring's worker as a frontend kick would.
    fn kick_self(&self) {
        let guard = self.self_kick.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(kick) = guard.as_ref() {
            if let Err(e) = kick.notify() {
                tracing::warn!("cannot re-kick a queue: {e}");
            }
        }
    }
}

impl<'a, M: 'a + GuestAddressSpace> VringStateGuard<'a, M> for KickSafeVring<M> {
    type G = <VringRwLock<M> as VringStateGuard<'a, M>>::G;
}

impl<'a, M: 'a + GuestAddressSpace> VringStateMutGuard<'a, M> for KickSafeVring<M> {
    type G = <VringRwLock<M> as VringStateMutGuard<'a, M>>::G;
}

impl<M: 'static + GuestAddressSpace> VringT<M> for KickSafeVring<M> {
    fn new(mem: M, max_queue_size: u16) -> Result<Self, QueueError> {
        Ok(KickSafeVring {
            inner: VringRwLock::new(mem, max_queue_size)?,
            self_kick: Arc::new(Mutex::new(None)),
        })
    }

    fn get_ref(&self) -> <Self as VringStateGuard<'_, M>>::G {
        self.inner.get_ref()
    }

    fn get_mut(&self) -> <Self as VringStateMutGuard<'_, M>>::G {
        self.inner.get_mut()
    }

    fn add_used(&self, desc_index: u16, len: u32) -> Result<(), QueueError> {
        self.inner.add_used(desc_index, len)
    }

    fn signal_used_queue(&self) -> io::Result<()> {
        self.inner.signal_used_queue()
    }

    fn enable_notification(&self) -> Result<bool, QueueError> {
        self.inner.enable_notification()
    }

    fn disable_notification(&self) -> Result<(), QueueError> {
        self.inner.disable_notification()
    }

    fn needs_notification(&self) -> Result<bool, QueueError> {
        self.inner.needs_notification()
    }

    fn set_enabled(&self, enabled: bool) {
        self.inner.set_enabled(enabled);
        if enabled {
            // A kick consumed while the ring was disabled was dropped.
            self.kick_self();
        }
    }

    fn set_queue_info(
        &self,
        desc_table: u64,
        avail_ring: u64,
        used_ring: u64,
    ) -> Result<(), QueueError> {
        self.inner.set_queue_info(desc_table, avail_ring, used_ring)
    }

    fn queue_next_avail(&self) -> u16 {
        self.inner.queue_next_avail()
    }

    fn set_queue_next_avail(&self, base: u16) {
        self.inner.set_queue_next_avail(base)
    }

    fn set_queue_next_used(&self, idx: u16) {
        self.inner.set_queue_next_used(idx)
    }

    fn queue_used_idx(&self) -> Result<u16, QueueError> {
        self.inner.queue_used_idx()
    }

    fn set_queue_size(&self, num: u16) {
        self.inner.set_queue_size(num)
    }

    fn set_queue_event_idx(&self, enabled: bool) {
        self.inner.set_queue_event_idx(enabled)
    }

    fn set_queue_ready(&self, ready: bool) {
        self.inner.set_queue_ready(ready);
        if ready {
            // The kick fd is watched before the queue is marked ready: a
            // kick in between found a queue that yields no chains.
            self.kick_self();
        }
    }

    fn set_kick(&self, file: Option<File>) {
        let second = file.as_ref().and_then(|f| match f.try_clone() {
            // SAFETY: `try_clone` returned a new descriptor that nothing
            // else owns; the notifier takes sole ownership of it.
            Ok(dup) => Some(unsafe { EventNotifier::from_raw_fd(dup.into_raw_fd()) }),
            Err(e) => {
                tracing::warn!("cannot keep a handle on a kick eventfd: {e}");
                None
            }
        });
        *self.self_kick.lock().unwrap_or_else(|p| p.into_inner()) = second;
        self.inner.set_kick(file)
    }

    fn read_kick(&self) -> io::Result<bool> {
        self.inner.read_kick()
    }

    fn set_call(&self, file: Option<File>) {
        self.inner.set_call(file)
    }

    fn set_err(&self, file: Option<File>) {
        self.inner.set_err(file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{GuestAddress, GuestMemoryAtomic, GuestMemoryMmap};
    use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

    type Mem = GuestMemoryAtomic<GuestMemoryMmap<()>>;

    fn vring() -> KickSafeVring<Mem> {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
        KickSafeVring::new(GuestMemoryAtomic::new(mem), 16).unwrap()
    }

    fn kick_pair() -> (EventFd, File) {
        let efd = EventFd::new(EFD_NONBLOCK).unwrap();
        let file = efd.try_clone().unwrap();
        // SAFETY: the cloned EventFd's descriptor is handed over whole.
        let file = unsafe { File::from_raw_fd(file.into_raw_fd()) };
        (efd, file)
    }

    #[test]
    fn a_kick_consumed_while_disabled_comes_back_on_enable() {
        let v = vring();
        let (frontend, backend_end) = kick_pair();
        v.set_kick(Some(backend_end));
        frontend.write(1).unwrap();
        // The worker reads the kick while the ring is still disabled.
        assert!(!v.read_kick().unwrap());
        assert!(frontend.read().is_err(), "the kick was consumed");
        v.set_enabled(true);
        assert_eq!(frontend.read().unwrap(), 1, "enabling re-kicks");
    }

    #[test]
    fn becoming_ready_rekicks_and_disabling_does_not() {
        let v = vring();
        let (frontend, backend_end) = kick_pair();
        v.set_kick(Some(backend_end));
        v.set_queue_ready(true);
        assert_eq!(frontend.read().unwrap(), 1);
        v.set_enabled(false);
        v.set_queue_ready(false);
        assert!(frontend.read().is_err(), "no kick on the way down");
    }

    #[test]
    fn no_kick_fd_is_harmless() {
        let v = vring();
        v.set_enabled(true);
        v.set_queue_ready(true);
        v.set_kick(None);
        v.set_enabled(true);
    }
}
