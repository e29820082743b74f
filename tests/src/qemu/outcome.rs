//! The result of a guest run: console markers, guest-reported values and
//! checks, timings, and what the daemon did.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitStatus;
use std::time::Duration;

use crate::daemon_proc::Daemon;

/// What happened to the daemon of a guest run.
#[derive(Debug, Clone, Default)]
pub struct DaemonReport {
    /// Whether a daemon served the guest at all.
    pub served: bool,
    /// Its exit status if it exited by itself within 5 s of QEMU ending.
    pub exit_on_disconnect: Option<ExitStatus>,
    /// Whether its socket file was gone by then.
    pub socket_removed: bool,
    /// Its stdout + stderr (the last 64 KiB).
    pub log: String,
}

/// Everything a finished guest run produced.
pub struct GuestOutcome {
    /// The serial console, carriage returns removed.
    pub serial: String,
    /// Exit status of /test.sh from the `MSB-TEST-END` marker (125: share
    /// not mounted, 126: no script); `None` if the marker never came.
    pub status: Option<i32>,
    /// Whether the run hit its timeout and QEMU was killed.
    pub timed_out: bool,
    /// The timeout that applied.
    pub timeout: Duration,
    /// QEMU's exit status.
    pub qemu_exit: Option<ExitStatus>,
    /// QEMU's stderr.
    pub qemu_stderr: String,
    /// Guest uptime (s) when /test.sh started: the boot time.
    pub boot_secs: Option<f64>,
    /// Guest uptime (s) at the end marker.
    pub end_secs: Option<f64>,
    /// Host wall time from QEMU start to exit.
    pub elapsed: Duration,
    /// The daemon's side.
    pub daemon: DaemonReport,
    /// The daemon itself, kept so its share outlives the run for host-side
    /// checks; dropping the outcome kills it and removes the share.
    pub daemon_process: Option<Daemon>,
}

fn marker_field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
}

impl GuestOutcome {
    /// Parses the console markers; QEMU fields and the daemon are filled in
    /// by the caller.
    pub(super) fn parse(
        serial: String,
        timed_out: bool,
        timeout: Duration,
        elapsed: Duration,
        daemon: DaemonReport,
    ) -> Self {
        let marker = |name: &str| {
            serial
                .lines()
                .rev()
                .find_map(|l| l.find(name).map(|i| l[i..].to_string()))
        };
        let end = marker("MSB-TEST-END ");
        let begin = marker("MSB-TEST-BEGIN ");
        let status = end
            .as_deref()
            .and_then(|l| marker_field(l, "status")?.parse().ok());
        let end_secs = end
            .as_deref()
            .and_then(|l| marker_field(l, "uptime")?.parse().ok());
        let boot_secs = begin
            .as_deref()
            .and_then(|l| marker_field(l, "uptime")?.parse().ok());
        GuestOutcome {
            serial,
            status,
            timed_out,
            timeout,
            qemu_exit: None,
            qemu_stderr: String::new(),
            boot_secs,
            end_secs,
            elapsed,
            daemon,
            daemon_process: None,
        }
    }

    /// The daemon's shared directory, if a daemon served the guest.
    pub fn share(&self) -> Option<&Path> {
        self.daemon_process.as_ref().map(Daemon::shared_dir)
    }

    /// Lines after `tag ` on the console (e.g. `MSB-FAIL`), tag removed.
    pub fn tagged(&self, tag: &str) -> Vec<&str> {
        let prefix = format!("{tag} ");
        self.serial
            .lines()
            .filter_map(|l| l.find(&prefix).map(|i| &l[i + prefix.len()..]))
            .collect()
    }

    /// Guest-reported values (`MSB-RESULT key=value`); the last one wins.
    pub fn results(&self) -> BTreeMap<String, String> {
        self.tagged("MSB-RESULT")
            .into_iter()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// The guest-reported value for `key`; panics with the full report if
    /// the guest did not report it.
    #[track_caller]
    pub fn result(&self, key: &str) -> String {
        match self.results().remove(key) {
            Some(v) => v,
            None => panic!("guest did not report result {key:?}\n{}", self.report()),
        }
    }

    /// Guest-side failed checks (`MSB-FAIL …`).
    pub fn failures(&self) -> Vec<&str> {
        self.tagged("MSB-FAIL")
    }

    /// The init's mount failure message, if the share was not mounted.
    pub fn mount_failure(&self) -> Option<&str> {
        self.tagged("msb-init: MSB-MOUNT-FAILED").into_iter().next()
    }

    /// A multi-line summary for failure messages: status, timings, guest
    /// failures, the console tail, the daemon log tail and QEMU's stderr.
    pub fn report(&self) -> String {
        fn tail(text: &str, n: usize) -> String {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        }
        let mut r = format!(
            "guest status {:?} (timed out: {}, timeout {:?}), qemu exit {:?}, wall {:.1?}, boot {:?} s, end {:?} s\n",
            self.status, self.timed_out, self.timeout, self.qemu_exit, self.elapsed, self.boot_secs, self.end_secs
        );
        if let Some(m) = self.mount_failure() {
            r.push_str(&format!("share NOT mounted: {m}\n"));
        }
        for f in self.failures() {
            r.push_str(&format!("guest check failed: {f}\n"));
        }
        r.push_str(&format!(
            "--- serial console (last 60 lines) ---\n{}\n",
            tail(&self.serial, 60)
        ));
        if self.daemon.served {
            r.push_str(&format!(
                "--- daemon (exit on disconnect {:?}, socket removed {}) log, last 40 lines ---\n{}\n",
                self.daemon.exit_on_disconnect,
                self.daemon.socket_removed,
                tail(&self.daemon.log, 40)
            ));
        }
        if !self.qemu_stderr.trim().is_empty() {
            r.push_str(&format!(
                "--- qemu stderr ---\n{}\n",
                tail(&self.qemu_stderr, 20)
            ));
        }
        r
    }

    /// Panics with [`report`](Self::report) unless the guest reached the end
    /// marker with status 0.
    #[track_caller]
    pub fn assert_passed(&self) {
        if self.status != Some(0) {
            panic!("guest run did not pass\n{}", self.report());
        }
    }
}
