//! One reaper for every child of the process.
//!
//! As PID 1 the agent inherits every orphan of the guest and must reap them
//! all, yet each exec session needs the exit status of its own process.
//! A single thread does all the reaping:
//!
//! 1. it blocks in `waitid(P_ALL, WEXITED | WNOWAIT)` until some child has
//!    ended (without reaping it);
//! 2. it takes the spawn lock and reaps with `waitpid(-1, WNOHANG)` until
//!    nothing is left to reap, handing the status of registered pids to
//!    their [`ExitWatch`] and discarding the rest (orphans);
//! 3. when there is no child at all (`ECHILD`), it sleeps until the next
//!    spawn.
//!
//! The spawn lock closes two races: `std::process::Command::spawn` reaps a
//! child whose `exec` failed itself (and panics if someone else reaped it
//! first), and a child that ends at once must not be reaped before its pid
//! is registered. [`Reaper::spawn`] holds the lock from the fork until the
//! pid is registered, and the reaper holds it while it reaps.
//!
//! Outside a guest (tests on the host) the same reaper serves the process's
//! own children; the process is made a child subreaper so the orphans of
//! its sessions are reparented to it and reaped too. Nothing else in such a
//! process may wait for its own children: the reaper takes them all.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::process::{Child, Command};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// Locks `m`, ignoring poisoning (a panicked holder leaves plain data).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Where the exit status of one spawned process arrives.
#[derive(Debug)]
pub struct ExitWatch {
    status: Mutex<Option<i32>>,
    ended: Condvar,
    /// An eventfd made readable when the status arrives (for `poll`).
    event: OwnedFd,
}

impl ExitWatch {
    fn new() -> io::Result<Arc<ExitWatch>> {
        // SAFETY: eventfd takes no pointers; the fd it returns is ours alone.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Arc::new(ExitWatch {
            status: Mutex::new(None),
            ended: Condvar::new(),
            // SAFETY: fd was just returned by eventfd and is owned by nobody else.
            event: unsafe { OwnedFd::from_raw_fd(fd) },
        }))
    }

    /// The raw wait status (`waitpid` encoding) once the process has ended.
    pub fn status(&self) -> Option<i32> {
        *lock(&self.status)
    }

    /// Waits until the process has ended or `deadline` passes.
    pub fn wait_until(&self, deadline: Instant) -> Option<i32> {
        let mut status = lock(&self.status);
        while status.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            status = self
                .ended
                .wait_timeout(status, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        *status
    }

    /// An fd that polls readable once the status is there.
    pub fn event_fd(&self) -> BorrowedFd<'_> {
        self.event.as_fd()
    }

    fn set(&self, raw_status: i32) {
        *lock(&self.status) = Some(raw_status);
        self.ended.notify_all();
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a valid u64 to our own eventfd. A
        // failure (counter overflow) cannot happen with one write per watch.
        unsafe { libc::write(self.event.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }
}

/// The process-wide reaper (see the module docs).
#[derive(Debug)]
pub struct Reaper {
    /// Held around every spawn and every reaping pass.
    spawn_lock: Mutex<()>,
    /// Pids whose status someone waits for.
    watched: Mutex<HashMap<libc::pid_t, Arc<ExitWatch>>>,
    /// Bumped at every spawn, to wake a reaper that had no child.
    spawns: Mutex<u64>,
    spawned: Condvar,
}

static REAPER: OnceLock<&'static Reaper> = OnceLock::new();

impl Reaper {
    /// The reaper of this process, started on first use.
    pub fn global() -> &'static Reaper {
        REAPER.get_or_init(|| {
            // SAFETY: prctl with integer arguments only; failure is harmless
            // (orphans then go to the real init, as without the agent).
            unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
            let reaper: &'static Reaper = Box::leak(Box::new(Reaper {
                spawn_lock: Mutex::new(()),
                watched: Mutex::new(HashMap::new()),
                spawns: Mutex::new(0),
                spawned: Condvar::new(),
            }));
            let started = std::thread::Builder::new()
                .name("msb-reaper".into())
                .spawn(move || reaper.run());
            if let Err(e) = started {
                // Without a thread nothing is reaped: zombies pile up and
                // sessions never end. Say so loudly; there is no fallback.
                eprintln!("msb-init agent: cannot start the reaper thread: {e}");
            }
            reaper
        })
    }

    /// Spawns `cmd` and registers its pid; the returned watch receives its
    /// exit status. Never call `wait` on the returned child.
    pub fn spawn(&self, cmd: &mut Command) -> io::Result<(Child, Arc<ExitWatch>)> {
        let watch = ExitWatch::new()?;
        let _spawning = lock(&self.spawn_lock);
        let child = cmd.spawn()?;
        lock(&self.watched).insert(child.id() as libc::pid_t, watch.clone());
        *lock(&self.spawns) += 1;
        self.spawned.notify_all();
        Ok((child, watch))
    }

    /// Whether the process has any child left (zombies included).
    pub fn has_children(&self) -> bool {
        // SAFETY: siginfo_t is plain data written by waitid.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: a valid siginfo_t pointer; WNOWAIT leaves every child as is.
        let r = unsafe {
            libc::waitid(
                libc::P_ALL,
                0,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        !(r < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD))
    }

    /// Waits until no child is left or `deadline` passes; true when none is.
    pub fn wait_no_children(&self, deadline: Instant) -> bool {
        loop {
            if !self.has_children() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn run(&self) -> ! {
        loop {
            let spawns_before = *lock(&self.spawns);
            // SAFETY: siginfo_t is plain data written by waitid.
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            // SAFETY: a valid siginfo_t pointer; WNOWAIT reaps nothing.
            let r =
                unsafe { libc::waitid(libc::P_ALL, 0, &mut info, libc::WEXITED | libc::WNOWAIT) };
            if r < 0 {
                match io::Error::last_os_error().raw_os_error() {
                    Some(libc::EINTR) => {}
                    Some(libc::ECHILD) => self.sleep_until_spawn(spawns_before),
                    // Cannot happen with these arguments; do not spin.
                    _ => std::thread::sleep(Duration::from_millis(100)),
                }
                continue;
            }
            self.reap_all();
        }
    }

    fn sleep_until_spawn(&self, spawns_before: u64) {
        let mut spawns = lock(&self.spawns);
        while *spawns == spawns_before {
            spawns = self.spawned.wait(spawns).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Reaps every ended child, under the spawn lock.
    fn reap_all(&self) {
        let _no_spawn = lock(&self.spawn_lock);
        loop {
            let mut status = 0;
            // SAFETY: waitpid writes the status into a valid int.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                // 0: children left but none ended; -1: ECHILD (or EINTR,
                // retried by the next waitid).
                return;
            }
            if let Some(watch) = lock(&self.watched).remove(&pid) {
                watch.set(status);
            }
        }
    }
}
