//! Adaptive polling of a request queue before its thread goes to sleep.
//!
//! A queue thread that has answered a batch would normally re-enable the
//! guest's kicks and sleep on the kick eventfd; the next request then costs
//! the guest an eventfd write (a VM exit in a real VM) and us a wakeup. At
//! one request in flight those two dominate the round trip (a `getattr`
//! is a few microseconds of work and tens of microseconds of waking).
//!
//! So, after a batch, the thread keeps looking at the available ring for a
//! short window, with kicks still suppressed (with EVENT_IDX the guest
//! then sees no need to kick at all). The window adapts per thread, the
//! way QEMU's `poll-max-ns` does for its event loops:
//! - a wakeup that came soon after the thread went to sleep (sooner than
//!   the largest window) means a longer window would have caught it: the
//!   window doubles, up to the largest;
//! - a long sleep after a window that found nothing means polling was
//!   wasted: the window halves, and below [`MIN_WINDOW`] it is off.
//!
//! An idle or slowly trickling guest so costs nothing; a guest issuing
//! requests back to back gets them picked up without a wakeup. The spin
//! yields the CPU between looks, so a runnable vCPU thread is not starved.
//!
//! At most half the host's CPUs (at least one) poll at once, whatever the
//! number of queue threads: the guest's vCPUs run on the same CPUs, and a
//! queue thread spinning where a vCPU wants to run costs the guest more
//! than the wakeup it saves. A thread that finds every polling slot taken
//! sleeps at once. (Two queues at one request in flight each on a 2-CPU
//! host, `scripts/bench-daemon`: two pollers 4.3–5.2x virtiofsd's speed,
//! one poller 8.9x.)

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

/// Windows shorter than this are not worth a look: polling is off.
pub const MIN_WINDOW: Duration = Duration::from_micros(2);

/// The default largest window (`--poll-us`).
pub const DEFAULT_MAX_WINDOW: Duration = Duration::from_micros(50);

/// Per-thread polling state.
#[derive(Clone, Copy, Default)]
struct State {
    /// How long the next poll lasts (zero: off).
    window: Duration,
    /// When this thread last went to sleep after a poll found nothing.
    slept_at: Option<Instant>,
}

thread_local! {
    static STATE: Cell<State> = const { Cell::new(State { window: Duration::ZERO, slept_at: None }) };
}

/// Notes a wakeup by a kick on this thread and adapts its window to how
/// long it slept; `max` is the largest window (zero: polling off).
pub fn woke(max: Duration) {
    if max.is_zero() {
        return;
    }
    STATE.with(|cell| {
        let mut st = cell.get();
        if let Some(at) = st.slept_at.take() {
            st.window = adapt(st.window, at.elapsed(), max);
        }
        cell.set(st);
    });
}

/// The next window after a sleep of `slept` that followed a window of
/// `window`.
fn adapt(window: Duration, slept: Duration, max: Duration) -> Duration {
    if slept < max {
        (window * 2).clamp(MIN_WINDOW, max)
    } else {
        let half = window / 2;
        if half < MIN_WINDOW {
            Duration::ZERO
        } else {
            half
        }
    }
}

/// How many threads may poll at once, and how many do.
struct PollSlots {
    busy: AtomicUsize,
    max: usize,
}

impl PollSlots {
    /// Room for `max` polling threads (at least one).
    const fn new(max: usize) -> Self {
        PollSlots {
            busy: AtomicUsize::new(0),
            max: if max == 0 { 1 } else { max },
        }
    }

    /// Takes a slot; `None` when all are taken.
    fn take(&self) -> Option<SlotGuard<'_>> {
        self.busy
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()
            .map(|_| SlotGuard(self))
    }
}

/// A taken polling slot, given back when dropped.
struct SlotGuard<'a>(&'a PollSlots);

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The daemon's polling slots: half the CPUs it may run on, at least one.
static SLOTS: LazyLock<PollSlots> = LazyLock::new(|| {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    PollSlots::new(cpus / 2)
});

/// Looks for more work with `more` for up to this thread's window (when a
/// polling slot is free); returns true as soon as it finds some. When it
/// finds none, the thread is about to sleep: that moment is noted for
/// [`woke`].
pub fn poll(max: Duration, more: impl FnMut() -> bool) -> bool {
    poll_in(&SLOTS, max, more)
}

/// [`poll`] with the given slots.
fn poll_in(slots: &PollSlots, max: Duration, mut more: impl FnMut() -> bool) -> bool {
    if max.is_zero() {
        return false;
    }
    let window = STATE.with(|cell| cell.get().window);
    if !window.is_zero() {
        if let Some(_slot) = slots.take() {
            let deadline = Instant::now() + window;
            loop {
                if more() {
                    return true;
                }
                if Instant::now() >= deadline {
                    break;
                }
                std::thread::yield_now();
            }
        }
    }
    STATE.with(|cell| {
        let mut st = cell.get();
        st.slept_at = Some(Instant::now());
        cell.set(st);
    });
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: Duration = DEFAULT_MAX_WINDOW;

    #[test]
    fn short_sleeps_grow_the_window_up_to_the_largest() {
        let mut w = Duration::ZERO;
        for _ in 0..20 {
            w = adapt(w, Duration::from_micros(5), MAX);
        }
        assert_eq!(w, MAX);
        assert_eq!(adapt(Duration::ZERO, Duration::ZERO, MAX), MIN_WINDOW);
    }

    #[test]
    fn long_sleeps_turn_polling_off() {
        let mut w = MAX;
        for _ in 0..20 {
            w = adapt(w, Duration::from_millis(10), MAX);
        }
        assert_eq!(w, Duration::ZERO);
    }

    #[test]
    fn a_thread_finding_every_slot_taken_sleeps_at_once() {
        static ONE: PollSlots = PollSlots::new(1);
        std::thread::spawn(|| {
            for _ in 0..10 {
                woke(MAX);
                assert!(!poll_in(&ONE, MAX, || false));
            }
            let held = ONE.take().expect("a free slot");
            assert!(!poll_in(&ONE, MAX, || panic!("polled without a slot")));
            drop(held);
            // The slot is back: the next poll looks again.
            assert!(poll_in(&ONE, MAX, || true));
            assert_eq!(ONE.busy.load(Ordering::Relaxed), 0);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn slots_hold_at_least_one_poller() {
        let none = PollSlots::new(0);
        let first = none.take();
        assert!(first.is_some());
        assert!(none.take().is_none());
        drop(first);
        assert!(none.take().is_some());
    }

    #[test]
    fn polling_off_never_calls_more() {
        assert!(!poll(Duration::ZERO, || panic!("looked")));
    }

    #[test]
    fn a_thread_woken_back_to_back_polls_for_the_whole_window() {
        // Its own slots: other tests in this process may hold the daemon's.
        static MINE: PollSlots = PollSlots::new(1);
        std::thread::spawn(|| {
            let window = || STATE.with(|c| c.get().window);
            // A fresh thread does not poll: it sleeps at once.
            assert!(!poll_in(&MINE, MAX, || panic!("looked with a zero window")));
            for _ in 0..10 {
                woke(MAX);
                assert!(!poll_in(&MINE, MAX, || false));
            }
            assert_eq!(window(), MAX);
            assert!(poll_in(&MINE, MAX, || true));
            let t = Instant::now();
            let mut looks = 0;
            assert!(!poll_in(&MINE, MAX, || {
                looks += 1;
                false
            }));
            assert!(t.elapsed() >= MAX && looks >= 1);
        })
        .join()
        .unwrap();
    }
}
