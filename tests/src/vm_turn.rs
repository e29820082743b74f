//! One VM at a time per test process: TCG guests are CPU-bound, and several
//! at once on a small machine make every boot time out.

use std::sync::{Condvar, Mutex};

/// The right to run one VM in this process; released on drop.
#[derive(Debug)]
pub struct VmTurn;

static BUSY: (Mutex<bool>, Condvar) = (Mutex::new(false), Condvar::new());

impl VmTurn {
    /// Waits until no other VM of this process runs, then takes the turn.
    pub fn take() -> VmTurn {
        let mut busy = BUSY.0.lock().unwrap_or_else(|p| p.into_inner());
        while *busy {
            busy = BUSY.1.wait(busy).unwrap_or_else(|p| p.into_inner());
        }
        *busy = true;
        VmTurn
    }
}

impl Drop for VmTurn {
    fn drop(&mut self) {
        *BUSY.0.lock().unwrap_or_else(|p| p.into_inner()) = false;
        BUSY.1.notify_one();
    }
}
