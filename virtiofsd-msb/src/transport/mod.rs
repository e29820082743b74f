//! Transports carrying FUSE requests to the filesystem.
//!
//! - [`vhost_user`]: the vhost-user-fs backend a VMM connects to, one worker
//!   thread per virtqueue;
//! - [`fusedev`]: a host `/dev/fuse` mount, for testing the filesystem with
//!   stock tools without a VM;
//! - [`fast_path`]: READ and WRITE served straight from a descriptor chain
//!   (vhost-user), [`large_read`]: spotting a large READ to hand to a copy
//!   helper, [`poll`]: adaptive polling of a queue before its thread sleeps.
//!
//! Both hand each request to [`crate::protocol::Dispatcher`] (vhost-user
//! READ and WRITE in the plain shape go to the filesystem from
//! [`fast_path`]). This module holds
//! what they share: the bound for threads waiting on contended locks and the
//! optional fixed request thread pool.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};

use fuse_backend_rs::api::filesystem::FileSystem;

use crate::protocol::ExtraRequests;

pub mod fast_path;
pub mod fusedev;
pub mod large_read;
pub mod poll;
pub mod vhost_user;
pub mod vring;

/// The filesystems a transport can serve.
pub trait ServedFs:
    FileSystem<Inode = u64, Handle = u64> + ExtraRequests + Send + Sync + 'static
{
}

impl<T> ServedFs for T where
    T: FileSystem<Inode = u64, Handle = u64> + ExtraRequests + Send + Sync + 'static
{
}

/// Most `FUSE_SETLKW` requests that may wait for a conflicting lock at once;
/// past this bound further conflicting requests fail with ENOLCK.
pub const MAX_LOCK_WAITERS: usize = 64;

/// A reply that must be produced off the request thread.
pub trait DeferredReply: Send + 'static {
    /// Does the waiting and sends the reply.
    fn complete(self);
    /// Sends an error reply with `errno` without waiting.
    fn reject(self, errno: i32);
}

/// Runs blocking lock waits on their own threads, at most `max` at once.
///
/// A contended `FUSE_SETLKW` can wait for an unbounded time; doing that on a
/// queue thread would stall every later request on that queue, including the
/// unlock that would end the wait. Contended lock waits are rare, so each gets
/// a short-lived thread; the common (uncontended) case never gets here.
#[derive(Clone)]
pub struct LockWaiters {
    active: Arc<AtomicUsize>,
    max: usize,
}

impl Default for LockWaiters {
    fn default() -> Self {
        LockWaiters::new(MAX_LOCK_WAITERS)
    }
}

struct Permit(Arc<AtomicUsize>);

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl LockWaiters {
    /// Allows at most `max` concurrent waits.
    pub fn new(max: usize) -> Self {
        LockWaiters {
            active: Arc::new(AtomicUsize::new(0)),
            max,
        }
    }

    /// Waits currently in progress.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::SeqCst)
    }

    fn acquire(&self) -> Option<Permit> {
        self.active
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()
            .map(|_| Permit(self.active.clone()))
    }

    /// Completes `job` on a waiter thread, or rejects it with ENOLCK when the
    /// bound is reached or no thread can be started.
    pub fn dispatch<J: DeferredReply>(&self, job: J) {
        let Some(permit) = self.acquire() else {
            tracing::warn!("too many lock requests waiting; answering ENOLCK");
            job.reject(libc::ENOLCK);
            return;
        };
        let slot = Arc::new(Mutex::new(Some(job)));
        let theirs = slot.clone();
        let spawned = thread::Builder::new()
            .name("lock-wait".into())
            .spawn(move || {
                let _permit = permit;
                let job = theirs.lock().ok().and_then(|mut j| j.take());
                if let Some(job) = job {
                    job.complete();
                }
            });
        if let Err(e) = spawned {
            tracing::error!("cannot start a lock waiter thread: {e}");
            let job = slot.lock().ok().and_then(|mut j| j.take());
            if let Some(job) = job {
                job.reject(libc::ENOLCK);
            }
        }
    }
}

type Job = Box<dyn FnOnce() + Send + 'static>;

/// A fixed pool of request threads (`--thread-pool-size` > 0).
///
/// Jobs go through one channel; the only lock is the one taken to receive
/// the next job, never one held while a request is handled.
pub struct ThreadPool {
    tx: Mutex<Option<Sender<Job>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl ThreadPool {
    /// Starts `size` threads (at least one).
    pub fn new(size: usize) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let mut threads = Vec::new();
        for i in 0..size.max(1) {
            let rx = rx.clone();
            threads.push(
                thread::Builder::new()
                    .name(format!("fs-worker-{i}"))
                    .spawn(move || loop {
                        let job = match rx.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    })?,
            );
        }
        Ok(ThreadPool {
            tx: Mutex::new(Some(tx)),
            threads: Mutex::new(threads),
        })
    }

    /// Queues `job`; runs it on the caller's thread if the pool is shut down.
    pub fn execute<J: FnOnce() + Send + 'static>(&self, job: J) {
        let sender = self.tx.lock().ok().and_then(|tx| tx.clone());
        match sender {
            Some(tx) => {
                if let Err(mpsc::SendError(job)) = tx.send(Box::new(job)) {
                    job();
                }
            }
            None => job(),
        }
    }

    /// Lets queued jobs finish and joins the threads.
    pub fn shutdown(&self) {
        if let Ok(mut tx) = self.tx.lock() {
            tx.take();
        }
        let threads = match self.threads.lock() {
            Ok(mut t) => std::mem::take(&mut *t),
            Err(_) => return,
        };
        for t in threads {
            let _ = t.join();
        }
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;
    use std::time::Duration;

    struct Job {
        done: mpsc::Sender<Result<(), i32>>,
        gate: Arc<Mutex<()>>,
    }

    impl DeferredReply for Job {
        fn complete(self) {
            let _g = self.gate.lock().unwrap();
            self.done.send(Ok(())).unwrap();
        }
        fn reject(self, errno: i32) {
            self.done.send(Err(errno)).unwrap();
        }
    }

    #[test]
    fn lock_waiters_are_bounded() {
        let waiters = LockWaiters::new(2);
        let gate = Arc::new(Mutex::new(()));
        let held = gate.lock().unwrap();
        let (tx, rx) = channel();
        for _ in 0..3 {
            waiters.dispatch(Job {
                done: tx.clone(),
                gate: gate.clone(),
            });
        }
        // The third one is rejected at once.
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(5)).unwrap(),
            Err(libc::ENOLCK)
        );
        assert_eq!(waiters.active(), 2);
        drop(held);
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), Ok(()));
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), Ok(()));
        for _ in 0..100 {
            if waiters.active() == 0 {
                break;
            }
            thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(waiters.active(), 0);
    }

    #[test]
    fn thread_pool_runs_jobs_concurrently() {
        let pool = ThreadPool::new(2).unwrap();
        let (tx, rx) = channel();
        let barrier = Arc::new(std::sync::Barrier::new(2));
        for _ in 0..2 {
            let tx = tx.clone();
            let b = barrier.clone();
            // Both must run at once to pass the barrier.
            pool.execute(move || {
                b.wait();
                tx.send(()).unwrap();
            });
        }
        rx.recv_timeout(Duration::from_secs(5)).unwrap();
        rx.recv_timeout(Duration::from_secs(5)).unwrap();
        pool.shutdown();
        // After shutdown jobs run inline.
        let (tx, rx) = channel();
        pool.execute(move || tx.send(7).unwrap());
        assert_eq!(rx.try_recv().unwrap(), 7);
    }
}
