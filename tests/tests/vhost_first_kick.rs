//! A guest's first request must not be lost however its kick lines up with
//! the ring being enabled.
//!
//! QEMU sends SET_VRING_ENABLE without waiting for an answer and the guest
//! sends FUSE_INIT right after DRIVER_OK, so the kick can reach the daemon's
//! queue thread before (or while) the vhost-user thread enables the ring. A
//! daemon that drops such a kick leaves the guest hanging at mount. Each case
//! below connects 200 times to a fresh daemon, sends FUSE_INIT inside the
//! handshake, and requires its answer every time.

use std::time::Duration;

use msb_tests::daemon_proc::Daemon;
use msb_tests::vhost_driver::{DriverConfig, EarlyKick, FuseClient, ROOT_ID};

/// Fresh connections per case.
const ROUNDS: usize = 200;

fn fresh_connections(early: EarlyKick, event_idx: bool) {
    let mut lost = Vec::new();
    for round in 0..ROUNDS {
        let d = Daemon::start(&[]).unwrap_or_else(|e| panic!("cannot start virtiofsd-msb: {e}"));
        let config = DriverConfig {
            // A FUSE_INIT answer takes well under a millisecond: 3 s
            // without one means the request was dropped.
            timeout: Duration::from_secs(3),
            reply_ack: false,
            event_idx,
            early_init: Some(early),
            ..DriverConfig::default()
        };
        match d.connect_with(config) {
            Ok(fs) => {
                // The connection is healthy afterwards too.
                fs.getattr(ROOT_ID)
                    .unwrap_or_else(|e| panic!("round {round}: GETATTR after INIT: {e}"));
            }
            Err(e) => lost.push(format!("round {round}: {}", e.lines().next().unwrap_or(""))),
        }
    }
    assert!(
        lost.is_empty(),
        "{} of {ROUNDS} fresh connections lost their first request ({early:?}, \
         event_idx {event_idx}):\n{}",
        lost.len(),
        lost.join("\n")
    );
    eprintln!("{ROUNDS} of {ROUNDS} first requests answered ({early:?}, event_idx {event_idx})");
}

#[test]
fn kick_right_after_enable_without_reply_ack() {
    fresh_connections(EarlyKick::AfterEnable, false);
}

#[test]
fn kick_before_enable() {
    fresh_connections(EarlyKick::BeforeEnable, false);
}

#[test]
fn kick_right_after_enable_with_event_idx() {
    fresh_connections(EarlyKick::AfterEnable, true);
}
