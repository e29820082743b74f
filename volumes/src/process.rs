//! Who holds a lease or runs a pending operation: a process id plus the
//! process's start time, so a pid reused after a crash is not mistaken for
//! the process that crashed.

use std::fs;

/// A process, identified across pid reuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessId {
    /// Process id.
    pub pid: u32,
    /// Start time in clock ticks after boot (/proc/PID/stat field 22).
    pub start_time: u64,
}

/// State and start time from `/proc/<pid>/stat`; `None` when the process
/// does not exist.
fn stat_of(pid: u32) -> Option<(char, u64)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces or
    // parentheses itself: the fields after it start after the last ')'.
    let rest = text.get(text.rfind(')')? + 1..)?;
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.chars().next()?;
    // `rest` starts at field 3 (state); start time is field 22.
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

impl ProcessId {
    /// This process.
    pub fn current() -> ProcessId {
        let pid = std::process::id();
        ProcessId {
            pid,
            start_time: stat_of(pid).map(|(_, s)| s).unwrap_or(0),
        }
    }

    /// Process `pid` as it is now, if it exists.
    pub fn of(pid: u32) -> Option<ProcessId> {
        stat_of(pid).map(|(_, start_time)| ProcessId { pid, start_time })
    }

    /// True while this very process runs: same pid, same start time, and
    /// not a zombie (a zombie has exited; it only awaits its parent).
    pub fn is_alive(&self) -> bool {
        match stat_of(self.pid) {
            Some((state, start)) => start == self.start_time && !matches!(state, 'Z' | 'X'),
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_changed_start_time_is_not() {
        let me = ProcessId::current();
        assert!(me.start_time > 0);
        assert!(me.is_alive());
        assert_eq!(ProcessId::of(me.pid), Some(me));
        let other = ProcessId {
            start_time: me.start_time + 1,
            ..me
        };
        assert!(
            !other.is_alive(),
            "same pid, other start time: a reused pid"
        );
    }

    #[test]
    fn an_exited_child_is_dead_even_before_it_is_reaped() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let id = ProcessId::of(child.id()).unwrap_or(ProcessId {
            pid: child.id(),
            start_time: 0,
        });
        // Wait for it to become a zombie (still unreaped).
        for _ in 0..500 {
            if !id.is_alive() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        assert!(!id.is_alive());
        child.wait().unwrap();
        assert!(!id.is_alive());
    }
}
