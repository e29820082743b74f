//! The live sessions of one connection.

use std::collections::{HashMap, HashSet, VecDeque};
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};

use super::input::InputSender;
use super::reaper::{lock, ExitWatch};

/// How many ended session ids are remembered: frames the host sent before
/// it saw a session end (late stdin, a resize, a signal) are then dropped
/// quietly instead of being answered as errors.
const REMEMBERED_ENDED: usize = 4096;

/// The running process of an exec session.
#[derive(Clone)]
pub struct ExecHandle {
    /// Its pid, which is also its process group (it runs in its own session).
    pub pid: libc::pid_t,
    /// The pty master, for a terminal session.
    pub pty: Option<Arc<OwnedFd>>,
    /// Where its exit status arrives.
    pub exit: Arc<ExitWatch>,
}

/// One live session.
struct Entry {
    exec: Option<ExecHandle>,
    input: Option<InputSender>,
}

/// What a session id names.
pub enum Lookup<T> {
    /// A live session.
    Live(T),
    /// A session that ended recently: ignore frames for it.
    Ended,
    /// Never seen (or long gone).
    Unknown,
}

#[derive(Default)]
struct Table {
    live: HashMap<u32, Entry>,
    ended: HashSet<u32>,
    ended_order: VecDeque<u32>,
}

/// The session table, shared by the reader thread and the session threads.
#[derive(Default)]
pub struct Sessions {
    table: Mutex<Table>,
}

impl Sessions {
    /// Whether `id` names a live session.
    pub fn is_live(&self, id: u32) -> bool {
        lock(&self.table).live.contains_key(&id)
    }

    /// Adds a live session; an id already in use is refused.
    pub fn insert(
        &self,
        id: u32,
        exec: Option<ExecHandle>,
        input: Option<InputSender>,
    ) -> Result<(), String> {
        let mut t = lock(&self.table);
        if t.live.contains_key(&id) {
            return Err(format!("session {id} is already in use"));
        }
        t.ended.remove(&id);
        t.live.insert(id, Entry { exec, input });
        Ok(())
    }

    /// Ends session `id` (or notes that a session that never started ended).
    pub fn end(&self, id: u32) {
        let mut t = lock(&self.table);
        t.live.remove(&id);
        if t.ended.insert(id) {
            t.ended_order.push_back(id);
            if t.ended_order.len() > REMEMBERED_ENDED {
                if let Some(old) = t.ended_order.pop_front() {
                    t.ended.remove(&old);
                }
            }
        }
    }

    fn lookup<T>(&self, id: u32, f: impl FnOnce(&mut Entry) -> T) -> Lookup<T> {
        let mut t = lock(&self.table);
        if let Some(e) = t.live.get_mut(&id) {
            return Lookup::Live(f(e));
        }
        if t.ended.contains(&id) {
            Lookup::Ended
        } else {
            Lookup::Unknown
        }
    }

    /// The stdin queue of `id`, if it takes stdin (still open).
    pub fn input(&self, id: u32) -> Lookup<Option<InputSender>> {
        self.lookup(id, |e| e.input.clone())
    }

    /// Takes the stdin queue of `id` away (its stdin is closing).
    pub fn take_input(&self, id: u32) -> Lookup<Option<InputSender>> {
        self.lookup(id, |e| e.input.take())
    }

    /// The process of `id`, for an exec session.
    pub fn exec(&self, id: u32) -> Lookup<Option<ExecHandle>> {
        self.lookup(id, |e| e.exec.clone())
    }

    /// Every live exec session's process.
    pub fn all_execs(&self) -> Vec<ExecHandle> {
        lock(&self.table)
            .live
            .values()
            .filter_map(|e| e.exec.clone())
            .collect()
    }

    /// Drops every stdin queue (the connection ended): consumers see the
    /// stream cut, not a clean end.
    pub fn drop_inputs(&self) {
        for e in lock(&self.table).live.values_mut() {
            e.input = None;
        }
    }
}
