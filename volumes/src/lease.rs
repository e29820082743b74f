//! Leases: which running VM uses a volume.
//!
//! A lease is a row naming the launcher process (pid + start time, see
//! [`ProcessId`]). It is taken before the VM starts and released when the
//! [`Lease`] is dropped, which `msb run` does on every way out. A launcher
//! killed with SIGKILL cannot release it; its lease then names a process
//! that no longer exists (or a reused pid with another start time), so it
//! is *stale*: it blocks nothing, `inspect` shows it marked stale, and it is
//! deleted when the volume is next leased or removed.
//!
//! Dir volumes may be leased by any number of VMs at once (they share one
//! quota through the accounting file). A disk volume is an ext4 image that
//! only one kernel may mount read-write: it takes either one read-write
//! lease or any number of read-only ones.

use std::path::PathBuf;

use rusqlite::{params, Connection, TransactionBehavior};

use crate::db::{self, db_err};
use crate::error::{Error, Result};
use crate::model::{now_secs, LeaseInfo, VolumeKind};
use crate::process::ProcessId;
use crate::store::Store;

/// Who asks for a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRequest {
    /// What holds it, e.g. `msb run`.
    pub holder: String,
    /// Guest mount point.
    pub target: Option<String>,
    /// Mounted read-only.
    pub readonly: bool,
}

/// A lease held by this process; released on drop.
#[derive(Debug)]
pub struct Lease {
    db: PathBuf,
    id: i64,
    volume: String,
    pid: u32,
    released: bool,
}

pub(crate) fn select_leases(conn: &Connection, name: &str) -> rusqlite::Result<Vec<LeaseInfo>> {
    let mut st = conn.prepare(
        "SELECT pid, start_time, holder, target, readonly, acquired_at FROM leases \
         WHERE volume = ?1 ORDER BY id",
    )?;
    let rows = st.query_map([name], |r| {
        let pid: u32 = r.get(0)?;
        let start: i64 = r.get(1)?;
        let start_time = start as u64;
        Ok(LeaseInfo {
            pid,
            start_time,
            holder: r.get(2)?,
            target: r.get(3)?,
            readonly: r.get::<_, i64>(4)? != 0,
            acquired_at: r.get(5)?,
            live: ProcessId { pid, start_time }.is_alive(),
        })
    })?;
    rows.collect()
}

impl Store {
    /// Takes a lease on volume `name` for this process (see the module docs
    /// for when a disk volume refuses one with [`Error::InUse`]).
    pub fn lease(&mut self, name: &str, req: &LeaseRequest) -> Result<Lease> {
        let me = ProcessId::current();
        let row = self.ready_row(name)?;
        let err = db_err(&self.paths.db);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(&err)?;
        // Still there under the lock?
        match crate::store::select_row(&tx, name).map_err(&err)? {
            Some(r) if r.state == "ready" => {}
            _ => return Err(Error::NotFound(name.to_string())),
        }
        // Forget the leases of launchers that are gone.
        for stale in select_leases(&tx, name)
            .map_err(&err)?
            .into_iter()
            .filter(|l| !l.live)
        {
            tx.execute(
                "DELETE FROM leases WHERE volume = ?1 AND pid = ?2 AND start_time = ?3",
                params![name, stale.pid, stale.start_time as i64],
            )
            .map_err(&err)?;
        }
        if row.kind == VolumeKind::Disk {
            let live: Vec<LeaseInfo> = select_leases(&tx, name)
                .map_err(&err)?
                .into_iter()
                .filter(|l| l.live)
                .collect();
            let blocking: Vec<String> = live
                .iter()
                .filter(|l| !req.readonly || !l.readonly)
                .map(|l| l.to_string())
                .collect();
            if !blocking.is_empty() {
                return Err(Error::InUse {
                    name: name.to_string(),
                    users: format!(
                        "{} (a disk volume is attached read-write to one VM at a time, or \
                         read-only to several)",
                        blocking.join(", ")
                    ),
                });
            }
        }
        tx.execute(
            "INSERT INTO leases (volume, pid, start_time, holder, target, readonly, acquired_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                name,
                me.pid,
                me.start_time as i64,
                req.holder,
                req.target,
                req.readonly as i64,
                now_secs()
            ],
        )
        .map_err(&err)?;
        let id = tx.last_insert_rowid();
        tx.commit().map_err(&err)?;
        tracing::debug!("lease {id} on volume {name}");
        Ok(Lease {
            db: self.paths.db.clone(),
            id,
            volume: name.to_string(),
            pid: me.pid,
            released: false,
        })
    }
}

impl Lease {
    /// The volume it is on.
    pub fn volume(&self) -> &str {
        &self.volume
    }

    /// Its row id.
    pub fn id(&self) -> i64 {
        self.id
    }

    /// Releases it now, reporting a failure (drop does the same silently,
    /// with a warning).
    pub fn release(mut self) -> Result<()> {
        self.released = true;
        self.delete()
    }

    fn delete(&self) -> Result<()> {
        let conn = db::open(&self.db)?;
        conn.execute(
            "DELETE FROM leases WHERE id = ?1 AND pid = ?2",
            params![self.id, self.pid],
        )
        .map_err(db_err(&self.db))?;
        tracing::debug!("released lease {} on volume {}", self.id, self.volume);
        Ok(())
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if !self.released {
            if let Err(e) = self.delete() {
                tracing::warn!("releasing the lease on volume {}: {e}", self.volume);
            }
        }
    }
}
