//! Host FUSE mode: serve the filesystem on a `/dev/fuse` mount point, so
//! stock tools (pjdfstest, fsx) can test it without a VM.
//!
//! The mount uses `allow_other` and `default_permissions`: the daemon runs as
//! root and makes its host calls with its own credentials, so the kernel does
//! the permission checks for other users from the attributes we report.
//! Several worker threads each read requests from their own channel.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::thread;

use fuse_backend_rs::abi::fuse_abi::OutHeader;
use fuse_backend_rs::transport::{FuseChannel, FuseSession};
use vm_memory::ByteValued;

use crate::protocol::{error_header, Dispatcher, Outcome, PendingLock};
use crate::transport::{DeferredReply, LockWaiters, ServedFs};

/// Worker threads used when `--thread-pool-size` is 0.
pub const DEFAULT_FUSE_THREADS: usize = 4;

/// A FUSE mount failure.
#[derive(Debug, thiserror::Error)]
pub enum FuseError {
    /// The mount itself failed.
    #[error("fuse mount {path:?}: {reason}")]
    Mount {
        /// Mount point.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Serving could not start.
    #[error("fuse mount {path:?}: cannot start serving: {reason}")]
    Serve {
        /// Mount point.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// A live FUSE mount, unmounted when [`FuseMount::serve`] returns.
pub struct FuseMount {
    session: Arc<FuseSession>,
    mountpoint: PathBuf,
    stopped: Arc<AtomicBool>,
    /// Set in a sandboxed server: the monitor outside unmounts.
    leave_mounted: bool,
}

/// Ends a [`FuseMount::serve`] from another thread (e.g. on SIGTERM).
#[derive(Clone)]
pub struct FuseStopper {
    session: Weak<FuseSession>,
    stopped: Arc<AtomicBool>,
}

impl FuseStopper {
    /// Makes every worker finish its current request and return.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        if let Some(session) = self.session.upgrade() {
            if let Err(e) = session.wake() {
                tracing::warn!("cannot wake the fuse workers: {e}");
            }
        }
    }
}

impl FuseMount {
    /// Mounts a FUSE filesystem named `fsname` on `mountpoint`.
    pub fn mount(mountpoint: &Path, fsname: &str, readonly: bool) -> Result<Self, FuseError> {
        let err = |reason: String| FuseError::Mount {
            path: mountpoint.to_path_buf(),
            reason,
        };
        let meta = std::fs::metadata(mountpoint).map_err(|e| err(e.to_string()))?;
        if !meta.is_dir() {
            return Err(err("not a directory".into()));
        }
        let mut session = FuseSession::new(mountpoint, fsname, "virtiofsd-msb", readonly)
            .map_err(|e| err(e.to_string()))?;
        session.set_allow_other(true);
        session.mount().map_err(|e| err(e.to_string()))?;
        tracing::info!("mounted {fsname} on {}", mountpoint.display());
        Ok(FuseMount {
            session: Arc::new(session),
            mountpoint: mountpoint.to_path_buf(),
            stopped: Arc::new(AtomicBool::new(false)),
            leave_mounted: false,
        })
    }

    /// Makes [`FuseMount::serve`] return without unmounting: a sandboxed
    /// server cannot reach the host's mount, and the monitor outside the
    /// sandbox unmounts once the server has exited.
    pub fn leave_mounted(&mut self) {
        self.leave_mounted = true;
    }

    /// A handle that ends [`FuseMount::serve`].
    pub fn stopper(&self) -> FuseStopper {
        FuseStopper {
            session: Arc::downgrade(&self.session),
            stopped: self.stopped.clone(),
        }
    }

    /// Serves `fs` with `threads` workers until the mount goes away or a
    /// [`FuseStopper`] fires, then unmounts.
    pub fn serve<F: ServedFs>(self, fs: Arc<F>, threads: usize) -> Result<(), FuseError> {
        let result = self.run_workers(fs, threads.max(1));
        self.unmount();
        result
    }

    fn run_workers<F: ServedFs>(&self, fs: Arc<F>, threads: usize) -> Result<(), FuseError> {
        let serve_err = |reason: String| FuseError::Serve {
            path: self.mountpoint.clone(),
            reason,
        };
        let reply_file = self
            .session
            .get_fuse_file()
            .ok_or_else(|| serve_err("no fuse device".into()))?
            .try_clone()
            .map_err(|e| serve_err(e.to_string()))?;
        let reply_file = Arc::new(reply_file);
        let dispatcher = Arc::new(Dispatcher::new(fs));
        let lock_waiters = LockWaiters::default();
        let mut channels = Vec::with_capacity(threads);
        for _ in 0..threads {
            channels.push(
                self.session
                    .new_channel()
                    .map_err(|e| serve_err(e.to_string()))?,
            );
        }
        // A stop that came before the channels existed woke nobody.
        if self.stopped.load(Ordering::SeqCst) {
            let _ = self.session.wake();
        }
        let mut workers = Vec::with_capacity(threads);
        for (i, channel) in channels.into_iter().enumerate() {
            let worker = Worker {
                channel,
                dispatcher: dispatcher.clone(),
                reply_file: reply_file.clone(),
                lock_waiters: lock_waiters.clone(),
                stopper: self.stopper(),
            };
            let spawned = thread::Builder::new()
                .name(format!("fuse-{i}"))
                .spawn(move || worker.run());
            match spawned {
                Ok(h) => workers.push(h),
                Err(e) => {
                    self.stopper().stop();
                    for w in workers {
                        let _ = w.join();
                    }
                    return Err(serve_err(format!("cannot start a worker: {e}")));
                }
            }
        }
        for w in workers {
            let _ = w.join();
        }
        Ok(())
    }

    fn unmount(self) {
        let FuseMount {
            session,
            mountpoint,
            leave_mounted,
            ..
        } = self;
        if leave_mounted {
            // The session's Drop would try to unmount.
            std::mem::forget(session);
            return;
        }
        match Arc::try_unwrap(session) {
            Ok(mut session) => {
                if let Err(e) = session.umount() {
                    tracing::warn!("unmounting {}: {e}", mountpoint.display());
                }
            }
            Err(session) => {
                // A stopper is using the session right now; unmount by hand.
                if let Err(e) = nix::mount::umount2(&mountpoint, nix::mount::MntFlags::MNT_DETACH) {
                    tracing::warn!("unmounting {}: {e}", mountpoint.display());
                }
                drop(session);
            }
        }
        tracing::info!("unmounted {}", mountpoint.display());
    }
}

struct Worker<F: ServedFs> {
    channel: FuseChannel,
    dispatcher: Arc<Dispatcher<F>>,
    reply_file: Arc<File>,
    lock_waiters: LockWaiters,
    stopper: FuseStopper,
}

impl<F: ServedFs> Worker<F> {
    fn run(mut self) {
        loop {
            match self.channel.get_request() {
                Ok(Some((reader, writer))) => {
                    match self.dispatcher.handle_message(reader, writer.into()) {
                        Outcome::Failed { unique, errno } => {
                            // If the server did answer before failing, the
                            // kernel refuses this second reply with ENOENT.
                            send_header(&self.reply_file, error_header(unique, errno));
                        }
                        Outcome::Deferred(pending) => self.lock_waiters.dispatch(FuseLockWait {
                            fs: self.dispatcher.fs().clone(),
                            pending,
                            reply_file: self.reply_file.clone(),
                        }),
                        Outcome::Replied { .. } | Outcome::NoReply => {}
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    if !self.stopper.stopped.load(Ordering::SeqCst) {
                        tracing::info!("fuse session ended: {e}");
                    }
                    self.stopper.stop();
                    break;
                }
            }
        }
        // One worker seeing the end (unmount) means all are done.
        self.stopper.stop();
    }
}

/// Writes a bare reply to `/dev/fuse` in one write.
fn send_header(file: &File, header: OutHeader) {
    let mut f = file;
    match f.write(header.as_slice()) {
        Ok(_) => {}
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
            tracing::trace!(
                unique = header.unique,
                "request already answered or interrupted"
            );
        }
        Err(e) => tracing::debug!(unique = header.unique, "cannot send a reply: {e}"),
    }
}

struct FuseLockWait<F: ServedFs> {
    fs: Arc<F>,
    pending: PendingLock,
    reply_file: Arc<File>,
}

impl<F: ServedFs> DeferredReply for FuseLockWait<F> {
    fn complete(self) {
        let header = self.pending.wait(&*self.fs);
        send_header(&self.reply_file, header);
    }

    fn reject(self, errno: i32) {
        send_header(&self.reply_file, error_header(self.pending.unique, errno));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_refuses_a_missing_mount_point() {
        let e = FuseMount::mount(Path::new("/nonexistent/mnt"), "t", false)
            .err()
            .unwrap();
        let msg = e.to_string();
        assert!(msg.contains("/nonexistent/mnt"), "{msg}");
    }
}
