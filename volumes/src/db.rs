//! The metadata database (`<MSB_HOME>/db/msb.db`, SQLite) and its schema
//! migrations.
//!
//! The schema version is SQLite's `PRAGMA user_version`: 0 for a new file,
//! then the number of [`MIGRATIONS`] applied. Opening applies the missing
//! ones in one `BEGIN IMMEDIATE` transaction (two processes opening a new
//! database at once cannot both migrate) and refuses a database written by
//! a newer `msb`. Every later change of the schema is a new entry at the end
//! of [`MIGRATIONS`]; an entry is never edited once released.
//!
//! Every writer uses `BEGIN IMMEDIATE`, so a transaction never has to
//! upgrade a read lock (which SQLite answers with `SQLITE_BUSY` without
//! waiting); waits for the lock are bounded by [`BUSY_TIMEOUT`].

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use crate::error::{Error, Result};

/// How long a connection waits for another process's lock.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(60);

/// Schema migrations; entry `i` takes the schema from version `i` to `i+1`.
pub const MIGRATIONS: &[&str] = &[
    // v1: volumes and leases.
    r#"
    CREATE TABLE volumes (
        name        TEXT PRIMARY KEY NOT NULL,
        kind        TEXT NOT NULL CHECK (kind IN ('dir', 'disk')),
        quota_mib   INTEGER CHECK (quota_mib IS NULL OR quota_mib > 0),
        size_mib    INTEGER CHECK (size_mib IS NULL OR size_mib > 0),
        disk_format TEXT,
        disk_fstype TEXT,
        labels      TEXT NOT NULL DEFAULT '{}',
        created_at  INTEGER NOT NULL,
        -- 'ready' volumes are the visible ones; 'creating' and 'removing'
        -- rows record an operation in progress (see store.rs).
        state       TEXT NOT NULL CHECK (state IN ('creating', 'ready', 'removing')),
        op_pid      INTEGER,
        op_start    INTEGER,
        work_path   TEXT
    ) STRICT;
    CREATE TABLE leases (
        id          INTEGER PRIMARY KEY,
        volume      TEXT NOT NULL REFERENCES volumes(name) ON DELETE CASCADE,
        pid         INTEGER NOT NULL,
        start_time  INTEGER NOT NULL,
        holder      TEXT NOT NULL,
        target      TEXT,
        readonly    INTEGER NOT NULL,
        acquired_at INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX leases_by_volume ON leases(volume);
    "#,
    // v2: sandboxes that stay up (the launcher's `sandbox` module). `spec` is
    // the JSON of what `msb create` was given (mount texts in the CLI's
    // grammar, image, cpus, memory, env, workdir); the supervisor process
    // (pid + /proc start time, like leases) owns a running sandbox, so a
    // row whose supervisor is gone reads as crashed.
    r#"
    CREATE TABLE sandboxes (
        name             TEXT PRIMARY KEY NOT NULL,
        spec             TEXT NOT NULL,
        image            TEXT,
        created_at       INTEGER NOT NULL,
        state            TEXT NOT NULL
                         CHECK (state IN ('starting', 'running', 'stopping', 'stopped', 'crashed')),
        supervisor_pid   INTEGER,
        supervisor_start INTEGER,
        started_at       INTEGER,
        message          TEXT
    ) STRICT;
    "#,
];

/// Maps a SQLite error to [`Error::Db`] naming `path`.
pub(crate) fn db_err(path: &Path) -> impl Fn(rusqlite::Error) -> Error + '_ {
    move |source| Error::Db {
        path: path.display().to_string(),
        source,
    }
}

/// Opens (creating) the database at `path` and brings its schema up to
/// date.
pub fn open(path: &Path) -> Result<Connection> {
    let err = db_err(path);
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let mut conn = Connection::open_with_flags(path, flags).map_err(&err)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(&err)?;
    conn.execute_batch("PRAGMA foreign_keys = ON; PRAGMA synchronous = FULL;")
        .map_err(&err)?;
    migrate(&mut conn, path)?;
    Ok(conn)
}

/// The schema version of `conn`.
pub fn schema_version(conn: &Connection) -> rusqlite::Result<u32> {
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
}

fn migrate(conn: &mut Connection, path: &Path) -> Result<()> {
    let err = db_err(path);
    let known = MIGRATIONS.len() as u32;
    // Cheap check first: most opens find the schema current.
    if schema_version(conn).map_err(&err)? == known {
        return Ok(());
    }
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(&err)?;
    let have = schema_version(&tx).map_err(&err)?;
    if have > known {
        return Err(Error::Conflict {
            name: path.display().to_string(),
            reason: format!(
                "the database has schema version {have}, this msb knows up to {known}: \
                 use a newer msb"
            ),
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(have as usize) {
        tx.execute_batch(sql).map_err(&err)?;
        tx.pragma_update(None, "user_version", i as u32 + 1)
            .map_err(&err)?;
        tracing::info!(
            "volume database {}: schema version {}",
            path.display(),
            i + 1
        );
    }
    tx.commit().map_err(&err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_database_gets_the_latest_schema_once() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("msb.db");
        let c = open(&p).unwrap();
        assert_eq!(schema_version(&c).unwrap(), MIGRATIONS.len() as u32);
        drop(c);
        // Reopening changes nothing.
        let c = open(&p).unwrap();
        assert_eq!(schema_version(&c).unwrap(), MIGRATIONS.len() as u32);
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("msb.db");
        let c = open(&p).unwrap();
        c.pragma_update(None, "user_version", 99).unwrap();
        drop(c);
        let e = open(&p).unwrap_err();
        assert!(e.to_string().contains("schema version 99"), "{e}");
    }

    #[test]
    fn concurrent_first_opens_migrate_once() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("msb.db");
        std::thread::scope(|s| {
            let hs: Vec<_> = (0..4).map(|_| s.spawn(|| open(&p).map(drop))).collect();
            for h in hs {
                h.join().unwrap().unwrap();
            }
        });
        let c = open(&p).unwrap();
        assert_eq!(schema_version(&c).unwrap(), MIGRATIONS.len() as u32);
    }
}
