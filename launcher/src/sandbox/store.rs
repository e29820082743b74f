//! Sandbox records in the project's SQLite database (`<MSB_HOME>/db/msb.db`,
//! table `sandboxes`, schema in `volumes::db`), and the per-sandbox
//! directory `<MSB_HOME>/sandboxes/<name>/` (control socket, supervisor log).
//!
//! A record's `state` is what its supervisor last wrote; what a reader sees
//! ([`SandboxRecord::status`]) also checks that the supervisor still runs
//! (pid + start time), so a supervisor killed with SIGKILL reads as
//! crashed, never as running.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde::{Deserialize, Serialize};
use volumes::ProcessId;

use super::error::{Error, Result};
use super::spec::SandboxSpec;

/// What state a sandbox is in, as users see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Its supervisor is booting the VM.
    Starting,
    /// Up and answering.
    Running,
    /// Up, but its agent stopped answering heartbeats.
    Unhealthy,
    /// Shutting down.
    Stopping,
    /// Not running (created, or stopped cleanly).
    Stopped,
    /// Its VM, supervisor or a daemon died; `msb start` brings it back.
    Crashed,
}

impl Status {
    /// The word `msb ls` prints.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Starting => "starting",
            Status::Running => "running",
            Status::Unhealthy => "unhealthy",
            Status::Stopping => "stopping",
            Status::Stopped => "stopped",
            Status::Crashed => "crashed",
        }
    }

    /// True while a supervisor owns the sandbox.
    pub fn is_up(self) -> bool {
        matches!(
            self,
            Status::Starting | Status::Running | Status::Unhealthy | Status::Stopping
        )
    }
}

/// A message the heartbeat writes while the agent does not answer.
pub const UNHEALTHY_PREFIX: &str = "unhealthy:";

/// One row of the `sandboxes` table.
#[derive(Debug, Clone)]
pub struct SandboxRecord {
    /// Name.
    pub name: String,
    /// What it was created with.
    pub spec: SandboxSpec,
    /// Seconds since the epoch.
    pub created_at: i64,
    /// State as written.
    pub state: String,
    /// The supervisor, while one owns the sandbox.
    pub supervisor: Option<ProcessId>,
    /// When the current (or last) run started, seconds since the epoch.
    pub started_at: Option<i64>,
    /// Why it stopped or crashed, or that it is unhealthy.
    pub message: Option<String>,
}

impl SandboxRecord {
    /// The state as users see it: an "up" state whose supervisor is gone
    /// is [`Status::Crashed`].
    pub fn status(&self) -> Status {
        let written = match self.state.as_str() {
            "starting" => Status::Starting,
            "running" => Status::Running,
            "stopping" => Status::Stopping,
            "crashed" => Status::Crashed,
            _ => Status::Stopped,
        };
        if !written.is_up() {
            return written;
        }
        match self.supervisor {
            Some(p) if p.is_alive() => {
                let unhealthy = self
                    .message
                    .as_deref()
                    .is_some_and(|m| m.starts_with(UNHEALTHY_PREFIX));
                if written == Status::Running && unhealthy {
                    Status::Unhealthy
                } else {
                    written
                }
            }
            // A supervisor that has not claimed the row yet (just spawned).
            None if written == Status::Starting => Status::Starting,
            _ => Status::Crashed,
        }
    }

    /// Why it is in its state, including a supervisor that vanished.
    pub fn reason(&self) -> Option<String> {
        let written_up = matches!(self.state.as_str(), "starting" | "running" | "stopping");
        if written_up && self.status() == Status::Crashed {
            return Some("its supervisor process is gone (killed?)".into());
        }
        self.message.clone()
    }
}

/// Seconds since the epoch.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The sandbox records and directories under one `MSB_HOME`.
pub struct SandboxStore {
    home: PathBuf,
    conn: Connection,
}

/// The columns [`row_to_record`] reads, in its order.
const SELECT: &str = "SELECT name, spec, created_at, state, supervisor_pid, supervisor_start, \
                      started_at, message FROM sandboxes";

fn db_err(e: rusqlite::Error) -> Error {
    Error::State(format!("sandbox database: {e}"))
}

impl SandboxStore {
    /// Opens the store under `home` (the volume store creates the database
    /// and its schema).
    pub fn open(home: &Path) -> Result<SandboxStore> {
        let volumes = volumes::Store::open(home)?;
        let home = volumes.home().to_path_buf();
        let conn = volumes::db::open(volumes.db_path())?;
        std::fs::create_dir_all(home.join("sandboxes"))
            .map_err(|e| Error::io(home.join("sandboxes"), e))?;
        Ok(SandboxStore { home, conn })
    }

    /// `MSB_HOME`.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// `<MSB_HOME>/sandboxes/<name>`.
    pub fn dir(&self, name: &str) -> PathBuf {
        self.home.join("sandboxes").join(name)
    }

    /// The supervisor's control socket.
    pub fn control_socket(&self, name: &str) -> PathBuf {
        self.dir(name).join("control.sock")
    }

    /// The supervisor's log.
    pub fn log(&self, name: &str) -> PathBuf {
        self.dir(name).join("supervisor.log")
    }

    /// Inserts a new record in state `starting` with no supervisor yet.
    /// Exactly one of several concurrent inserts of a name wins; the others
    /// get [`Error::AlreadyExists`].
    pub fn insert(&mut self, name: &str, spec: &SandboxSpec) -> Result<()> {
        let text = serde_json::to_string(spec).map_err(|e| Error::State(e.to_string()))?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db_err)?;
        let exists: bool = tx
            .query_row(
                "SELECT 1 FROM sandboxes WHERE name = ?1",
                params![name],
                |_| Ok(true),
            )
            .optional()
            .map_err(db_err)?
            .unwrap_or(false);
        if exists {
            return Err(Error::AlreadyExists(format!("sandbox {name:?}")));
        }
        tx.execute(
            "INSERT INTO sandboxes (name, spec, image, created_at, state) \
             VALUES (?1, ?2, ?3, ?4, 'starting')",
            params![name, text, spec.image, now()],
        )
        .map_err(db_err)?;
        tx.commit().map_err(db_err)?;
        std::fs::create_dir_all(self.dir(name)).map_err(|e| Error::io(self.dir(name), e))?;
        Ok(())
    }

    /// The record of `name`.
    pub fn get(&self, name: &str) -> Result<SandboxRecord> {
        self.find(name)?
            .ok_or_else(|| Error::NotFound(format!("sandbox {name:?}")))
    }

    /// The record of `name`, if any.
    pub fn find(&self, name: &str) -> Result<Option<SandboxRecord>> {
        self.conn
            .query_row(
                &format!("{SELECT} WHERE name = ?1"),
                params![name],
                row_to_record,
            )
            .optional()
            .map_err(db_err)?
            .transpose()
    }

    /// Every record, by name.
    pub fn list(&self) -> Result<Vec<SandboxRecord>> {
        let mut stmt = self
            .conn
            .prepare(&format!("{SELECT} ORDER BY name"))
            .map_err(db_err)?;
        let rows = stmt.query_map([], row_to_record).map_err(db_err)?;
        let mut out = Vec::new();
        for r in rows {
            out.push(r.map_err(db_err)??);
        }
        Ok(out)
    }

    /// Marks `name` as starting again (for `msb start`): refused while a
    /// supervisor owns it.
    pub fn restart(&mut self, name: &str) -> Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db_err)?;
        let rec = tx
            .query_row(
                &format!("{SELECT} WHERE name = ?1"),
                params![name],
                row_to_record,
            )
            .optional()
            .map_err(db_err)?
            .transpose()?
            .ok_or_else(|| Error::NotFound(format!("sandbox {name:?}")))?;
        if rec.status().is_up() {
            return Err(Error::InvalidState(format!(
                "sandbox {name:?} is {}",
                rec.status().as_str()
            )));
        }
        tx.execute(
            "UPDATE sandboxes SET state = 'starting', supervisor_pid = NULL, \
             supervisor_start = NULL, message = NULL WHERE name = ?1",
            params![name],
        )
        .map_err(db_err)?;
        tx.commit().map_err(db_err)
    }

    /// The supervisor `me` takes ownership of a `starting` record nobody
    /// owns yet; false if someone else did.
    pub fn claim(&mut self, name: &str, me: ProcessId) -> Result<bool> {
        let n = self
            .conn
            .execute(
                "UPDATE sandboxes SET supervisor_pid = ?2, supervisor_start = ?3 \
                 WHERE name = ?1 AND state = 'starting' AND supervisor_pid IS NULL",
                params![name, me.pid, me.start_time as i64],
            )
            .map_err(db_err)?;
        Ok(n == 1)
    }

    /// Writes the state (and message) of `name`, as its supervisor.
    pub fn set_state(&mut self, name: &str, state: Status, message: Option<&str>) -> Result<()> {
        let started = (state == Status::Running).then(now);
        self.conn
            .execute(
                "UPDATE sandboxes SET state = ?2, message = ?3, \
                 started_at = COALESCE(?4, started_at) WHERE name = ?1",
                params![name, state.as_str(), message, started],
            )
            .map_err(db_err)?;
        Ok(())
    }

    /// Records that nothing owns `name` any more (its supervisor ended).
    pub fn release(&mut self, name: &str, state: Status, message: Option<&str>) -> Result<()> {
        self.conn
            .execute(
                "UPDATE sandboxes SET state = ?2, message = ?3, supervisor_pid = NULL, \
                 supervisor_start = NULL WHERE name = ?1",
                params![name, state.as_str(), message],
            )
            .map_err(db_err)?;
        Ok(())
    }

    /// Deletes the record and directory of `name` (the caller made sure
    /// it is not running).
    pub fn delete(&mut self, name: &str) -> Result<()> {
        self.conn
            .execute("DELETE FROM sandboxes WHERE name = ?1", params![name])
            .map_err(db_err)?;
        match std::fs::remove_dir_all(self.dir(name)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(self.dir(name), e)),
        }
    }
}

type RowResult = rusqlite::Result<Result<SandboxRecord>>;

fn row_to_record(r: &rusqlite::Row<'_>) -> RowResult {
    let name: String = r.get(0)?;
    let spec_text: String = r.get(1)?;
    let pid: Option<i64> = r.get(4)?;
    let start: Option<i64> = r.get(5)?;
    let spec = match serde_json::from_str::<SandboxSpec>(&spec_text) {
        Ok(s) => s,
        Err(e) => {
            return Ok(Err(Error::State(format!(
                "sandbox {name:?}: stored spec is unreadable: {e}"
            ))))
        }
    };
    Ok(Ok(SandboxRecord {
        name,
        spec,
        created_at: r.get(2)?,
        state: r.get(3)?,
        supervisor: pid.zip(start).map(|(p, s)| ProcessId {
            pid: p as u32,
            start_time: s as u64,
        }),
        started_at: r.get(6)?,
        message: r.get(7)?,
    }))
}
