//! What /proc says about processes: used by the tests to find what a run
//! started and what it left behind.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::Duration;

/// What is known about a process from /proc.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcInfo {
    /// Process id.
    pub pid: i32,
    /// Parent process id.
    pub ppid: i32,
    /// Start time (clock ticks since boot), to tell reused pids apart.
    pub start: u64,
    /// One-letter state (`R`, `S`, `Z`, …).
    pub state: char,
    /// Command line, arguments joined by spaces (the name when empty).
    pub cmdline: String,
}

impl std::fmt::Display for ProcInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "pid {} (ppid {}, state {}): {}",
            self.pid, self.ppid, self.state, self.cmdline
        )
    }
}

/// Reads /proc/PID/stat and cmdline; `None` when the process is gone.
pub fn proc_info(pid: i32) -> Option<ProcInfo> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces.
    let close = stat.rfind(')')?;
    let name = stat.get(stat.find('(')? + 1..close)?.to_string();
    let fields: Vec<&str> = stat.get(close + 2..)?.split(' ').collect();
    let state = fields.first()?.chars().next()?;
    let ppid = fields.get(1)?.parse().ok()?;
    let start = fields.get(19)?.parse().ok()?;
    let raw = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let cmdline = raw
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    Some(ProcInfo {
        pid,
        ppid,
        start,
        state,
        cmdline: if cmdline.is_empty() {
            format!("[{name}]")
        } else {
            cmdline
        },
    })
}

/// Every process on the system, by pid.
pub fn all_processes() -> BTreeMap<i32, ProcInfo> {
    let mut out = BTreeMap::new();
    if let Ok(entries) = fs::read_dir("/proc") {
        for e in entries.flatten() {
            if let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) {
                if let Some(info) = proc_info(pid) {
                    out.insert(pid, info);
                }
            }
        }
    }
    out
}

/// Live (not zombie) processes other than this one whose command line
/// mentions `path`.
pub fn processes_mentioning(path: &Path) -> Vec<ProcInfo> {
    let needle = path.to_string_lossy().into_owned();
    let me = std::process::id() as i32;
    all_processes()
        .into_values()
        .filter(|p| p.pid != me && p.state != 'Z' && p.cmdline.contains(&needle))
        .collect()
}

/// The descendants of `root` in `procs` (not `root` itself).
pub fn descendants(procs: &BTreeMap<i32, ProcInfo>, root: i32) -> Vec<ProcInfo> {
    procs
        .values()
        .filter(|p| {
            let mut cur = p.ppid;
            for _ in 0..64 {
                if cur == root {
                    return true;
                }
                match procs.get(&cur) {
                    Some(parent) if cur > 1 => cur = parent.ppid,
                    _ => return false,
                }
            }
            false
        })
        .cloned()
        .collect()
}

pub(crate) fn kill_pid(pid: i32) {
    if pid > 1 {
        // SAFETY: kill(2) takes no pointers; the pid was just read from /proc
        // and belongs to a process started for this test.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

/// Polls /proc until `stop`, recording every descendant of `root` by pid.
pub(crate) fn watch_descendants(
    root: i32,
    stop: &AtomicBool,
    seen: &Mutex<BTreeMap<i32, ProcInfo>>,
) {
    while !stop.load(Ordering::Relaxed) {
        let procs = all_processes();
        if !procs.contains_key(&root) {
            return;
        }
        let found = descendants(&procs, root);
        let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
        for p in found {
            seen.entry(p.pid).or_insert(p);
        }
        drop(seen);
        thread::sleep(Duration::from_millis(20));
    }
}
