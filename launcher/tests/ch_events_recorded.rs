//! cloud-hypervisor event streams (see `tests/data/README.md`) through the
//! launcher's event watcher: exactly which events are seen, when watching
//! stops, and what CH's exit status then means.

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use msb::vmm::ch_events::{
    ch_exit, classify, watch_events, ChEvent, ChLifecycle, Flow, Lifecycle, WatchEnd,
};
use msb::vmm::VmmExit;

fn stream(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/ch-events")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Runs the watcher as the launcher does: every event into a
/// [`ChLifecycle`], stopping when it says so.
fn watch(name: &str) -> (Vec<ChEvent>, ChLifecycle, WatchEnd) {
    let data = stream(name);
    let mut seen = Vec::new();
    let mut life = ChLifecycle::default();
    let end = watch_events(data.as_slice(), |ev| {
        let flow = life.observe(&ev);
        seen.push(ev);
        flow
    })
    .expect("reading from memory cannot fail");
    (seen, life, end)
}

fn names(events: &[ChEvent]) -> Vec<String> {
    events
        .iter()
        .map(|e| match e.properties.get("id") {
            Some(id) => format!("{}.{}({id})", e.source, e.event),
            None => format!("{}.{}", e.source, e.event),
        })
        .collect()
}

const BOOT: [&str; 7] = [
    "vmm.starting",
    "vm.booting",
    "vm.booted",
    "virtio-device.activated(_disk0)",
    "virtio-device.activated(_fs1)",
    "virtio-device.activated(_fs2)",
    "virtio-device.activated(__console)",
];

fn code(c: i32) -> ExitStatus {
    ExitStatus::from_raw(c << 8)
}

fn signal(s: i32) -> ExitStatus {
    ExitStatus::from_raw(s)
}

#[test]
fn poweroff_runs_to_the_end_and_exit_0_is_a_poweroff() {
    let (events, life, end) = watch("poweroff.json");
    let mut expected = BOOT.to_vec();
    expected.extend(["vm.shutdown", "vm.deleted", "vmm.shutdown"]);
    assert_eq!(names(&events), expected);
    assert_eq!(end, WatchEnd::Eof);
    assert_eq!(
        life,
        ChLifecycle {
            booted: true,
            shutdown: true,
            reboot: false,
            panic: None
        }
    );
    assert_eq!(events[0].timestamp, Duration::new(0, 912_345));
    assert_eq!(events[9].timestamp, Duration::new(0, 913_401_554));
    assert_eq!(ch_exit(code(0), &life), VmmExit::PoweredOff);
    // A failure after a shutdown event is still CH's failure.
    assert_eq!(ch_exit(code(1), &life), VmmExit::Failed(1));
}

#[test]
fn reboot_stops_the_watch_at_rebooting() {
    let (events, life, end) = watch("reboot.json");
    let mut expected = BOOT.to_vec();
    expected.extend([
        "virtio-device.reset(_disk0)",
        "virtio-device.reset(_fs1)",
        "virtio-device.reset(_fs2)",
        "virtio-device.reset(__console)",
        "vm.rebooting",
    ]);
    // Nothing after `vm.rebooting` is read: the launcher kills CH there.
    assert_eq!(names(&events), expected);
    assert_eq!(end, WatchEnd::Stopped);
    assert!(life.reboot && life.booted && !life.shutdown && life.panic.is_none());
    assert_eq!(classify(events.last().unwrap()), Lifecycle::Reboot);
    assert_eq!(ch_exit(signal(libc::SIGKILL), &life), VmmExit::Rebooted);
}

#[test]
fn guest_panic_stops_the_watch_before_the_reboot() {
    let (events, life, end) = watch("panic.json");
    let mut expected = BOOT.to_vec();
    expected.push("guest.panic");
    assert_eq!(names(&events), expected);
    assert_eq!(end, WatchEnd::Stopped);
    let last = events.last().unwrap();
    assert_eq!(
        last.properties.get("event").map(String::as_str),
        Some("panic")
    );
    assert_eq!(classify(last), Lifecycle::GuestPanic(Some("panic".into())));
    assert_eq!(life.panic.as_deref(), Some("panic"));
    assert_eq!(ch_exit(signal(libc::SIGKILL), &life), VmmExit::GuestPanic);
}

#[test]
fn a_cut_short_event_is_skipped_and_the_rest_still_counts() {
    let (events, life, end) = watch("truncated.json");
    let expected = [
        "vmm.starting",
        "vm.booting",
        "vm.booted",
        "virtio-device.activated(_disk0)",
        // virtio-device.activated(_fs1) was cut short: dropped.
        "virtio-device.activated(_fs2)",
        "virtio-device.activated(__console)",
        "vm.shutdown",
        "vm.deleted",
        "vmm.shutdown",
    ];
    assert_eq!(names(&events), expected);
    assert_eq!(end, WatchEnd::Eof);
    assert!(life.shutdown && !life.reboot);
    assert_eq!(ch_exit(code(0), &life), VmmExit::PoweredOff);
}

#[test]
fn byte_by_byte_delivery_gives_the_same_events() {
    struct OneByte(Vec<u8>, usize);
    impl std::io::Read for OneByte {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.1 >= self.0.len() || buf.is_empty() {
                return Ok(0);
            }
            buf[0] = self.0[self.1];
            self.1 += 1;
            Ok(1)
        }
    }
    for name in [
        "poweroff.json",
        "reboot.json",
        "panic.json",
        "truncated.json",
    ] {
        let whole = watch(name).0;
        let mut slow = Vec::new();
        let mut life = ChLifecycle::default();
        watch_events(OneByte(stream(name), 0), |ev| {
            let flow = life.observe(&ev);
            slow.push(ev);
            flow
        })
        .unwrap();
        assert_eq!(slow, whole, "{name}");
    }
}

#[test]
fn a_watcher_that_only_logs_reads_everything() {
    let mut count = 0;
    let end = watch_events(stream("reboot.json").as_slice(), |_| {
        count += 1;
        Flow::Continue
    })
    .unwrap();
    assert_eq!(end, WatchEnd::Eof);
    assert_eq!(count, 7 + 4 + 3);
}

#[test]
fn ch_failures_and_crashes() {
    let fresh = ChLifecycle::default();
    // Missing vhost-user socket, bad config, KVM errors: exit 1.
    assert_eq!(ch_exit(code(1), &fresh), VmmExit::Failed(1));
    // clap rejected the command line.
    assert_eq!(ch_exit(code(2), &fresh), VmmExit::Failed(2));
    // seccomp violation, Rust panic (abort), or our SIGKILL.
    for sig in [libc::SIGSYS, libc::SIGABRT, libc::SIGKILL] {
        assert_eq!(ch_exit(signal(sig), &fresh), VmmExit::Killed(sig));
    }
}
