//! cloud-hypervisor's event monitor: parsing the stream, deciding when the
//! launcher must stop CH, and what CH's exit status means.
//!
//! Format (CH docs `event-monitor.md` and its `event_monitor` crate): a
//! sequence of pretty-printed JSON objects separated by blank lines,
//!
//! ```text
//! {
//!   "timestamp": {
//!     "secs": 0,
//!     "nanos": 4324467
//!   },
//!   "source": "vm",
//!   "event": "booting",
//!   "properties": null
//! }
//! ```
//!
//! `timestamp` is the time since CH started; `properties` is `null` or an
//! object of string values (e.g. `{"id": "_disk0"}`). CH writes each event
//! and then `"\n\n"` to a non-blocking descriptor and ignores write errors,
//! so an event may be cut short; the parser drops such a fragment at the
//! next blank line and carries on. Compact (one object per line) input is
//! accepted too.
//!
//! The events that matter here: `vm`/`shutdown` then `vm`/`deleted` then
//! `vmm`/`shutdown` on a guest poweroff (CH then exits 0 by itself);
//! `vm`/`rebooting` (then `vm`/`rebooted`) on a guest reboot, a triple
//! fault, or a panic with `panic=-1`: CH re-creates and boots the VM again,
//! so the launcher must kill it; `guest`/`panic` (property `event`, e.g.
//! `"panic"`) from the pvpanic device: the launcher must kill it too.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::process::ExitStatus;
use std::time::Duration;

use serde::Deserialize;

use super::VmmExit;

/// One event from CH's event monitor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChEvent {
    /// Time since CH started (zero when the event had no timestamp).
    pub timestamp: Duration,
    /// Emitter: `vmm`, `vm`, `guest`, `virtio-device`, `vdpa`, …
    pub source: String,
    /// What happened: `booting`, `shutdown`, `rebooting`, `panic`, …
    pub event: String,
    /// Event properties (non-string JSON values are kept as JSON text).
    pub properties: BTreeMap<String, String>,
}

/// What an event means for the launcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lifecycle {
    /// Nothing to act on (device activations, boot progress, …).
    Info,
    /// The VM finished booting (`vm`/`booted`).
    Booted,
    /// The guest powered off or CH is shutting down (`vm`/`shutdown`,
    /// `vm`/`deleted`, `vmm`/`shutdown`): CH exits by itself.
    Shutdown,
    /// The guest is rebooting (`vm`/`rebooting`, `vm`/`rebooted`): stop CH.
    Reboot,
    /// The guest kernel panicked (`guest`/`panic`); the text is the
    /// `event` property when present. Stop CH.
    GuestPanic(Option<String>),
}

impl Lifecycle {
    /// True when the launcher must stop CH (it would boot the guest again).
    pub fn must_stop(&self) -> bool {
        matches!(self, Lifecycle::Reboot | Lifecycle::GuestPanic(_))
    }
}

/// Classifies one event.
pub fn classify(ev: &ChEvent) -> Lifecycle {
    match (ev.source.as_str(), ev.event.as_str()) {
        ("vm", "rebooting") | ("vm", "rebooted") => Lifecycle::Reboot,
        ("guest", "panic") => Lifecycle::GuestPanic(ev.properties.get("event").cloned()),
        ("vm", "shutdown") | ("vm", "deleted") | ("vmm", "shutdown") => Lifecycle::Shutdown,
        ("vm", "booted") => Lifecycle::Booted,
        _ => Lifecycle::Info,
    }
}

/// Whether to keep watching after an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Keep reading events.
    Continue,
    /// Stop watching now.
    Stop,
}

/// Why [`watch_events`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchEnd {
    /// The stream ended (CH exited and closed the event descriptor).
    Eof,
    /// The callback returned [`Flow::Stop`].
    Stopped,
}

/// Reads CH's event stream from `reader`, calling `on` for every event, until
/// the stream ends or `on` returns [`Flow::Stop`]. Malformed or cut-short
/// events are logged and skipped, never fatal.
pub fn watch_events(
    mut reader: impl Read,
    mut on: impl FnMut(ChEvent) -> Flow,
) -> io::Result<WatchEnd> {
    let mut framer = Framer::default();
    let mut buf = [0u8; 8192];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => {
                if framer.in_object() {
                    tracing::debug!("cloud-hypervisor event stream ended inside an event");
                }
                return Ok(WatchEnd::Eof);
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        for object in framer.push(&buf[..n]) {
            match parse_event(&object) {
                Ok(ev) => {
                    if on(ev) == Flow::Stop {
                        return Ok(WatchEnd::Stopped);
                    }
                }
                Err(e) => tracing::warn!(
                    "skipping a cloud-hypervisor event that does not parse ({e}): {}",
                    String::from_utf8_lossy(&object)
                ),
            }
        }
    }
}

/// The raw JSON shape of an event.
#[derive(Deserialize)]
struct RawEvent {
    #[serde(default)]
    timestamp: Option<RawTimestamp>,
    source: String,
    event: String,
    #[serde(default)]
    properties: Option<serde_json::Map<String, serde_json::Value>>,
}

/// A serde-serialised `std::time::Duration`.
#[derive(Deserialize)]
struct RawTimestamp {
    secs: u64,
    nanos: u32,
}

/// Parses one event object.
pub fn parse_event(json: &[u8]) -> Result<ChEvent, serde_json::Error> {
    let raw: RawEvent = serde_json::from_slice(json)?;
    let timestamp = raw
        .timestamp
        .map(|t| Duration::new(t.secs, t.nanos.min(999_999_999)))
        .unwrap_or_default();
    let properties = raw
        .properties
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => (k, s),
            other => (k, other.to_string()),
        })
        .collect();
    Ok(ChEvent {
        timestamp,
        source: raw.source,
        event: raw.event,
        properties,
    })
}

/// Largest event accepted; anything longer is dropped (CH's are < 1 KiB).
const MAX_EVENT: usize = 64 * 1024;

/// Splits a byte stream into top-level JSON objects by brace depth
/// (respecting strings and escapes). A blank line inside an object means CH
/// cut that event short: it is dropped and framing restarts.
#[derive(Default)]
struct Framer {
    current: Vec<u8>,
    depth: usize,
    in_string: bool,
    escaped: bool,
    /// The last byte other than space, tab or CR was a newline.
    after_newline: bool,
    /// Bytes of an oversized object still being skipped.
    skipping: bool,
}

impl Framer {
    fn in_object(&self) -> bool {
        self.depth > 0
    }

    fn reset(&mut self) {
        self.current.clear();
        self.depth = 0;
        self.in_string = false;
        self.escaped = false;
        self.skipping = false;
    }

    /// Feeds bytes; returns the objects completed by them.
    fn push(&mut self, bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut done = Vec::new();
        for &b in bytes {
            if b == b'\n' {
                if self.after_newline && self.depth > 0 {
                    tracing::warn!(
                        "dropping a cut-short cloud-hypervisor event: {}",
                        String::from_utf8_lossy(&self.current)
                    );
                    self.reset();
                }
                self.after_newline = true;
            } else if !matches!(b, b' ' | b'\t' | b'\r') {
                self.after_newline = false;
            }
            if self.depth == 0 {
                if b == b'{' {
                    self.depth = 1;
                    self.current.push(b);
                }
                // Anything else between objects is separator or junk.
                continue;
            }
            if !self.skipping {
                self.current.push(b);
                if self.current.len() > MAX_EVENT {
                    tracing::warn!("dropping an oversized cloud-hypervisor event");
                    self.current.clear();
                    self.skipping = true;
                }
            }
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                } else if b == b'\\' {
                    self.escaped = true;
                } else if b == b'"' {
                    self.in_string = false;
                }
                continue;
            }
            match b {
                b'"' => self.in_string = true,
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' => {
                    self.depth -= 1;
                    if self.depth == 0 {
                        if !self.skipping {
                            done.push(std::mem::take(&mut self.current));
                        }
                        self.reset();
                    }
                }
                _ => {}
            }
        }
        done
    }
}

/// Lifecycle state gathered from the events of one CH run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChLifecycle {
    /// `vm`/`booted` was seen.
    pub booted: bool,
    /// A shutdown event was seen (guest poweroff or VMM shutdown).
    pub shutdown: bool,
    /// A reboot event was seen.
    pub reboot: bool,
    /// A guest panic was seen, with its `event` property (or `"panic"`).
    pub panic: Option<String>,
}

impl ChLifecycle {
    /// Records `ev`; returns [`Flow::Stop`] once the launcher must stop CH
    /// (reboot or guest panic). Watching further events after that is
    /// pointless: CH is about to boot the guest again.
    pub fn observe(&mut self, ev: &ChEvent) -> Flow {
        let class = classify(ev);
        match &class {
            Lifecycle::Info => {}
            Lifecycle::Booted => self.booted = true,
            Lifecycle::Shutdown => self.shutdown = true,
            Lifecycle::Reboot => self.reboot = true,
            Lifecycle::GuestPanic(detail) => {
                self.panic = Some(detail.clone().unwrap_or_else(|| "panic".to_string()))
            }
        }
        if class.must_stop() {
            Flow::Stop
        } else {
            Flow::Continue
        }
    }
}

/// What a CH exit means, given the events seen. CH exits 0 after a clean
/// VMM shutdown (guest poweroff, or an API `vmm.shutdown`) and 1 on any
/// error it reports (bad config, a vhost-user socket it cannot connect,
/// KVM failures; the message is in its log); clap usage errors exit 2.
/// A guest panic or reboot wins over the status: the launcher killed CH
/// because of it.
pub fn ch_exit(status: ExitStatus, seen: &ChLifecycle) -> VmmExit {
    use std::os::unix::process::ExitStatusExt;
    if seen.panic.is_some() {
        return VmmExit::GuestPanic;
    }
    if seen.reboot {
        return VmmExit::Rebooted;
    }
    match (status.code(), status.signal()) {
        (Some(0), _) => VmmExit::PoweredOff,
        (Some(code), _) => VmmExit::Failed(code),
        (None, Some(sig)) => VmmExit::Killed(sig),
        (None, None) => VmmExit::Failed(-1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    fn collect(stream: &[u8], chunk: usize) -> Vec<ChEvent> {
        struct Chunked<'a>(&'a [u8], usize);
        impl Read for Chunked<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let n = self.0.len().min(self.1).min(buf.len());
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let mut out = Vec::new();
        let end = watch_events(Chunked(stream, chunk), |e| {
            out.push(e);
            Flow::Continue
        })
        .unwrap();
        assert_eq!(end, WatchEnd::Eof);
        out
    }

    const PRETTY: &str = "{\n  \"timestamp\": {\n    \"secs\": 0,\n    \"nanos\": 1693039\n  },\n  \"source\": \"vmm\",\n  \"event\": \"starting\",\n  \"properties\": null\n}\n\n{\n  \"timestamp\": {\n    \"secs\": 7,\n    \"nanos\": 611037580\n  },\n  \"source\": \"virtio-device\",\n  \"event\": \"activated\",\n  \"properties\": {\n    \"id\": \"__console\"\n  }\n}\n\n";

    #[test]
    fn pretty_stream_parses_at_any_chunking() {
        for chunk in [1, 2, 3, 7, 64, 8192] {
            let evs = collect(PRETTY.as_bytes(), chunk);
            assert_eq!(evs.len(), 2, "chunk {chunk}");
            assert_eq!(evs[0].timestamp, Duration::new(0, 1_693_039));
            assert_eq!(
                (evs[0].source.as_str(), evs[0].event.as_str()),
                ("vmm", "starting")
            );
            assert!(evs[0].properties.is_empty());
            assert_eq!(evs[1].timestamp, Duration::new(7, 611_037_580));
            assert_eq!(
                evs[1].properties.get("id").map(String::as_str),
                Some("__console")
            );
        }
    }

    #[test]
    fn compact_lines_and_odd_values() {
        let text = concat!(
            r#"{"timestamp":{"secs":1,"nanos":2},"source":"guest","event":"panic","properties":{"event":"panic"}}"#,
            "\n",
            r#"{"source":"vm","event":"x","properties":{"n":3,"s":"a}b{\"c"}}"#,
            "\n"
        );
        let evs = collect(text.as_bytes(), 5);
        assert_eq!(evs.len(), 2);
        assert_eq!(
            classify(&evs[0]),
            Lifecycle::GuestPanic(Some("panic".into()))
        );
        assert_eq!(evs[1].timestamp, Duration::ZERO);
        assert_eq!(evs[1].properties["n"], "3");
        assert_eq!(evs[1].properties["s"], "a}b{\"c");
    }

    #[test]
    fn a_cut_short_event_is_dropped_and_the_next_one_kept() {
        let text = "{\n  \"timestamp\": {\n    \"secs\": 1,\n    \"nan\n\n{\"source\":\"vm\",\"event\":\"shutdown\",\"properties\":null}\n\n";
        let evs = collect(text.as_bytes(), 4);
        assert_eq!(evs.len(), 1);
        assert_eq!(classify(&evs[0]), Lifecycle::Shutdown);
    }

    #[test]
    fn junk_and_bad_objects_are_skipped() {
        let text = "garbage\n{\"source\":1}\n\n{\"source\":\"vm\",\"event\":\"booted\"}\n\n";
        let evs = collect(text.as_bytes(), 3);
        assert_eq!(evs.len(), 1);
        assert_eq!(classify(&evs[0]), Lifecycle::Booted);
    }

    #[test]
    fn oversized_event_is_dropped() {
        let big = format!(
            "{{\"source\":\"vm\",\"event\":\"x\",\"properties\":{{\"p\":\"{}\"}}}}\n\n{{\"source\":\"vm\",\"event\":\"booted\"}}\n\n",
            "a".repeat(MAX_EVENT + 10)
        );
        let evs = collect(big.as_bytes(), 4096);
        assert_eq!(evs.len(), 1);
        assert_eq!(evs[0].event, "booted");
    }

    #[test]
    fn stop_ends_the_watch_early() {
        let text = "{\"source\":\"vm\",\"event\":\"rebooting\"}\n\n{\"source\":\"vm\",\"event\":\"rebooted\"}\n\n";
        let mut seen = ChLifecycle::default();
        let mut count = 0;
        let end = watch_events(text.as_bytes(), |e| {
            count += 1;
            seen.observe(&e)
        })
        .unwrap();
        assert_eq!(end, WatchEnd::Stopped);
        assert_eq!(count, 1);
        assert!(seen.reboot);
    }

    #[test]
    fn exit_statuses_map() {
        let code = |c: i32| ExitStatus::from_raw(c << 8);
        let sig = |s: i32| ExitStatus::from_raw(s);
        let clean = ChLifecycle::default();
        assert_eq!(ch_exit(code(0), &clean), VmmExit::PoweredOff);
        assert_eq!(ch_exit(code(1), &clean), VmmExit::Failed(1));
        assert_eq!(ch_exit(code(2), &clean), VmmExit::Failed(2));
        assert_eq!(
            ch_exit(sig(libc::SIGSYS), &clean),
            VmmExit::Killed(libc::SIGSYS)
        );
        let rebooted = ChLifecycle {
            reboot: true,
            ..Default::default()
        };
        assert_eq!(ch_exit(sig(libc::SIGKILL), &rebooted), VmmExit::Rebooted);
        let panicked = ChLifecycle {
            reboot: true,
            panic: Some("panic".into()),
            ..Default::default()
        };
        assert_eq!(ch_exit(sig(libc::SIGKILL), &panicked), VmmExit::GuestPanic);
    }
}
