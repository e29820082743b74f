//! Stopping processes: for a `Shutdown` request and when the host goes.

use std::time::{Duration, Instant};

use super::session::pump::kill_group;
use super::Shared;

/// How long SIGKILLed processes get to be reaped before the agent moves on
/// (a process stuck in the kernel cannot be; PID 1 must not hang on it).
const KILL_WAIT: Duration = Duration::from_secs(2);

/// SIGTERM, up to `grace` for processes to end, then SIGKILL. As the
/// guest's PID 1 ([`AgentOptions::owns_machine`](super::AgentOptions))
/// every process is signalled and waited for; otherwise only the
/// connection's exec sessions.
pub fn stop_processes(shared: &Shared, grace: Duration) {
    for signal in [libc::SIGTERM, libc::SIGKILL] {
        let wait = if signal == libc::SIGTERM {
            grace
        } else {
            KILL_WAIT
        };
        if signal_all(shared, signal) && wait_gone(shared, Instant::now() + wait) {
            return;
        }
    }
}

/// Sends `signal` everywhere this agent may; false when there is nothing
/// to signal.
fn signal_all(shared: &Shared, signal: i32) -> bool {
    let execs = shared.sessions.all_execs();
    for e in &execs {
        kill_group(e.pid, signal);
    }
    if shared.options.owns_machine {
        // SAFETY: kill(-1) from PID 1 signals every other process; no pointers.
        return unsafe { libc::kill(-1, signal) } == 0;
    }
    !execs.is_empty()
}

/// Waits until what was signalled is gone; true when it is.
fn wait_gone(shared: &Shared, deadline: Instant) -> bool {
    if shared.options.owns_machine {
        return shared.reaper.wait_no_children(deadline);
    }
    shared
        .sessions
        .all_execs()
        .iter()
        .all(|e| e.exit.wait_until(deadline).is_some())
}
