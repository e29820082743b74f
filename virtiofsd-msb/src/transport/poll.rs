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

use std::cell::Cell;
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

/// Looks for more work with `more` for up to this thread's window;
/// returns true as soon as it finds some. When it finds none, the thread
/// is about to sleep: that moment is noted for [`woke`].
pub fn poll(max: Duration, mut more: impl FnMut() -> bool) -> bool {
    if max.is_zero() {
        return false;
    }
    let window = STATE.with(|cell| cell.get().window);
    if !window.is_zero() {
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
    fn polling_off_never_calls_more() {
        assert!(!poll(Duration::ZERO, || panic!("looked")));
    }

    #[test]
    fn a_thread_woken_back_to_back_polls_for_the_whole_window() {
        std::thread::spawn(|| {
            let window = || STATE.with(|c| c.get().window);
            // A fresh thread does not poll: it sleeps at once.
            assert!(!poll(MAX, || panic!("looked with a zero window")));
            for _ in 0..10 {
                woke(MAX);
                assert!(!poll(MAX, || false));
            }
            assert_eq!(window(), MAX);
            assert!(poll(MAX, || true));
            let t = Instant::now();
            let mut looks = 0;
            assert!(!poll(MAX, || {
                looks += 1;
                false
            }));
            assert!(t.elapsed() >= MAX && looks >= 1);
        })
        .join()
        .unwrap();
    }
}
