//! Recovery of what crashed operations left behind (see the store's module
//! docs for the protocol it completes).

use std::collections::HashSet;
use std::path::PathBuf;

use rusqlite::{Connection, TransactionBehavior};

use crate::db::db_err;
use crate::error::{Error, Result};
use crate::paths::{self, Paths};
use crate::store::{select_rows, Row, Store};

/// What one recovery pass did (for logs and tests).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Volumes whose crashed create was undone.
    pub undone_creates: Vec<String>,
    /// Volumes whose crashed removal was finished.
    pub finished_removals: Vec<String>,
    /// Staging directories no row named, deleted.
    pub orphan_staging: usize,
}

impl Recovery {
    /// True when there was nothing to do.
    pub fn is_empty(&self) -> bool {
        *self == Recovery::default()
    }
}

/// Undoes (a `creating` row) or finishes (a `removing` row) the operation
/// of a process that is gone, inside the caller's write transaction.
pub(crate) fn undo_row(conn: &Connection, p: &Paths, row: &Row) -> Result<()> {
    let err = db_err(&p.db);
    let final_dir = p.volume(&row.name);
    match row.state.as_str() {
        "creating" => {
            let staging = row.work_path.clone().unwrap_or_default();
            let staged =
                !staging.as_os_str().is_empty() && std::fs::symlink_metadata(&staging).is_ok();
            if staged {
                // Never renamed: whatever sits at volumes/<name> is not ours.
                paths::move_to_trash(p, &staging, &row.name)?;
            } else {
                // The staging dir became volumes/<name>.
                paths::move_to_trash(p, &final_dir, &row.name)?;
            }
            tracing::warn!(
                "volume {}: undid a create interrupted by the death of pid {}",
                row.name,
                row.op.map(|o| o.pid).unwrap_or(0)
            );
        }
        "removing" => {
            paths::move_to_trash(p, &final_dir, &row.name)?;
            let _ = std::fs::remove_file(p.quota_file(&row.name));
            tracing::warn!(
                "volume {}: finished a removal interrupted by the death of pid {}",
                row.name,
                row.op.map(|o| o.pid).unwrap_or(0)
            );
        }
        _ => return Ok(()),
    }
    conn.execute("DELETE FROM volumes WHERE name = ?1", [&row.name])
        .map_err(&err)?;
    Ok(())
}

impl Store {
    /// Repairs what crashed operations left (run by [`Store::open`]): see
    /// the module docs of the store. Safe to run at any time, from any
    /// number of processes.
    pub fn recover(&mut self) -> Result<Recovery> {
        let mut done = Recovery::default();
        let p = self.paths.clone();
        let err = db_err(&p.db);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(&err)?;
        // Operations of processes that are gone.
        let rows = select_rows(&tx).map_err(&err)?;
        let mut named: HashSet<PathBuf> = HashSet::new();
        let mut names: HashSet<String> = HashSet::new();
        for row in &rows {
            let dead = !row.op.is_some_and(|o| o.is_alive());
            if row.state != "ready" && dead {
                undo_row(&tx, &p, row)?;
                if row.state == "creating" {
                    done.undone_creates.push(row.name.clone());
                } else {
                    done.finished_removals.push(row.name.clone());
                }
                continue;
            }
            names.insert(row.name.clone());
            if let Some(w) = &row.work_path {
                named.insert(w.clone());
            }
        }
        // Staging directories no row names (their transaction rolled back).
        for e in read_dir(&p.staging)? {
            if !named.contains(&e) {
                let name = e
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned();
                paths::move_to_trash(&p, &e, &name)?;
                done.orphan_staging += 1;
            }
        }
        // Accounting files of volumes that no longer exist.
        for e in read_dir(&p.quota)? {
            let name = e.file_name().unwrap_or_default().to_string_lossy();
            if !names.contains(name.as_ref()) {
                let _ = std::fs::remove_file(&e);
            }
        }
        tx.commit().map_err(&err)?;
        paths::empty_trash(&p);
        if !done.is_empty() {
            tracing::info!("volume store recovery: {done:?}");
        }
        Ok(done)
    }
}

fn read_dir(d: &std::path::Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(d).map_err(|e| Error::io("read directory", d, e))?;
    Ok(entries.flatten().map(|e| e.path()).collect())
}
