//! The volume store: create, look up, list and remove named volumes.
//!
//! # Atomic create and remove
//!
//! The SQLite write lock (`BEGIN IMMEDIATE`) is the one mutex of the store:
//! every change of a row *and* every change of the entries directly under
//! `volumes/` (a rename in or out, a staging directory made) happens while
//! holding it, or is announced by a row written under it.
//!
//! Create:
//! 1. under the lock: refuse a taken name (any row, or a directory in the
//!    way that no row claims); make `volumes/.staging/<name>.<unique>`;
//!    insert the row in state `creating` naming this process (pid + start
//!    time) and the staging path; commit. From here exactly one process
//!    owns the name: a second creator finds the row and gets
//!    [`Error::AlreadyExists`].
//! 2. without the lock: fill the staging directory (for a disk volume,
//!    `disk.raw` + `mkfs.ext4`);
//! 3. `renameat2(staging, volumes/<name>, RENAME_NOREPLACE)`;
//! 4. set the row `ready`. Only `ready` rows are volumes for
//!    [`Store::get`], [`Store::list`], leases and removal.
//!
//! Remove: under the lock, refuse while a live lease exists, else mark the
//! row `removing` (with this process and a trash path) and commit; rename
//! the directory into `volumes/.trash/`; delete the row; delete the trash.
//!
//! Recovery ([`Store::open`] runs it, under the lock): a `creating` or
//! `removing` row whose process is gone (SIGKILL at any point) is undone
//! or finished: a `creating` row whose staging directory still exists never
//! got renamed (the staging dir goes to the trash; whatever else sits at
//! `volumes/<name>` is not ours and is left alone); one whose staging dir
//! is gone was renamed, so `volumes/<name>` is ours and goes to the trash;
//! a `removing` row's directory goes to the trash. Then the row goes.
//! Staging entries no row names (a process killed inside its first
//! transaction, which rolled back) and quota files of names without a row
//! are deleted, and the trash emptied (outside the lock). Leases of dead
//! launchers are not recovery's business: they block nothing (see
//! [`crate::Lease`]). So after any crash the next `msb volume …` or `msb run` sees no
//! half volume: every `ready` row has its directory, every volume
//! directory has its row, and the name can be created again.

use std::collections::BTreeMap;
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use crate::db::{self, db_err};
use crate::disk;
use crate::error::{Error, Result};
use crate::model::{
    now_secs, CreateOptions, LeaseInfo, VolumeHandle, VolumeKind, DISK_FORMAT, DISK_FSTYPE,
    DISK_IMAGE,
};
use crate::paths::{self, Paths};
use crate::process::ProcessId;
use crate::validate_name;

/// Test hook: when `MSB_VOLUMES_CRASH_AT` names one of the points of
/// create (`create-reserved`, `create-populated`, `create-renamed`) or
/// remove (`remove-marked`, `remove-renamed`), the process SIGKILLs itself
/// there. The crash tests use it to hit every step deterministically.
#[doc(hidden)]
pub const CRASH_ENV: &str = "MSB_VOLUMES_CRASH_AT";

fn crash_point(point: &str) {
    if std::env::var_os(CRASH_ENV).is_some_and(|v| v == point) {
        // SAFETY: kill(2) on our own pid; no memory is involved.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    }
}

/// One row of the `volumes` table.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    pub name: String,
    pub kind: VolumeKind,
    pub quota_mib: Option<u32>,
    pub size_mib: Option<u32>,
    pub disk_format: Option<String>,
    pub disk_fstype: Option<String>,
    pub labels: String,
    pub created_at: i64,
    pub state: String,
    pub op: Option<ProcessId>,
    pub work_path: Option<PathBuf>,
}

const COLS: &str = "name, kind, quota_mib, size_mib, disk_format, disk_fstype, labels, \
                    created_at, state, op_pid, op_start, work_path";

fn row_from(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    let kind: String = r.get(1)?;
    let op_pid: Option<u32> = r.get(9)?;
    let op_start: Option<i64> = r.get(10)?;
    Ok(Row {
        name: r.get(0)?,
        kind: if kind == "disk" {
            VolumeKind::Disk
        } else {
            VolumeKind::Dir
        },
        quota_mib: r.get(2)?,
        size_mib: r.get(3)?,
        disk_format: r.get(4)?,
        disk_fstype: r.get(5)?,
        labels: r.get(6)?,
        created_at: r.get(7)?,
        state: r.get(8)?,
        op: op_pid.map(|pid| ProcessId {
            pid,
            start_time: op_start.unwrap_or(0) as u64,
        }),
        work_path: r.get::<_, Option<String>>(11)?.map(PathBuf::from),
    })
}

pub(crate) fn select_row(conn: &Connection, name: &str) -> rusqlite::Result<Option<Row>> {
    conn.query_row(
        &format!("SELECT {COLS} FROM volumes WHERE name = ?1"),
        [name],
        row_from,
    )
    .optional()
}

pub(crate) fn select_rows(conn: &Connection) -> rusqlite::Result<Vec<Row>> {
    let mut st = conn.prepare(&format!("SELECT {COLS} FROM volumes ORDER BY name"))?;
    let rows = st.query_map([], row_from)?;
    rows.collect()
}

/// The named-volume store under one state root.
pub struct Store {
    pub(crate) paths: Paths,
    pub(crate) conn: Connection,
}

fn check_name(name: &str) -> Result<()> {
    validate_name(name).map_err(|reason| Error::InvalidName {
        name: name.to_string(),
        reason,
    })
}

impl Store {
    /// Opens the store at [`crate::default_home`] (`$MSB_HOME`, else
    /// `~/.microsandbox`).
    pub fn open_default() -> Result<Store> {
        Store::open(paths::default_home()?)
    }

    /// Opens (creating its directories and database) the store rooted at
    /// `home`, and recovers what crashed operations left (see the module
    /// docs).
    pub fn open(home: impl Into<PathBuf>) -> Result<Store> {
        let home = home.into();
        // Daemons and VMMs get these paths: make them absolute once.
        let home =
            std::path::absolute(&home).map_err(|e| Error::io("state directory", &home, e))?;
        let paths = Paths::new(home);
        paths.create_dirs()?;
        let conn = db::open(&paths.db)?;
        let mut store = Store { paths, conn };
        store.recover()?;
        Ok(store)
    }

    /// The state root.
    pub fn home(&self) -> &Path {
        &self.paths.home
    }

    /// The database file.
    pub fn db_path(&self) -> &Path {
        &self.paths.db
    }

    /// The directory of volume `name` (whether or not it exists).
    pub fn volume_path(&self, name: &str) -> PathBuf {
        self.paths.volume(name)
    }

    /// The quota accounting file every `virtiofsd-msb` serving volume
    /// `name` and every [`crate::VolumeFs`] of it share (`--quota-file`).
    pub fn quota_file(&self, name: &str) -> PathBuf {
        self.paths.quota_file(name)
    }

    pub(crate) fn err(&self) -> impl Fn(rusqlite::Error) -> Error + '_ {
        db_err(&self.paths.db)
    }

    /// Creates volume `name`; [`Error::AlreadyExists`] when the name is
    /// taken (also by a create still in progress in another process).
    pub fn create(&mut self, name: &str, opts: &CreateOptions) -> Result<VolumeHandle> {
        check_name(name)?;
        opts.validate()?;
        let me = ProcessId::current();
        let final_dir = self.paths.volume(name);
        let staging = Paths::unique_in(&self.paths.staging, name);
        let labels = serde_json::to_string(&opts.labels).map_err(|e| Error::Conflict {
            name: name.to_string(),
            reason: format!("labels: {e}"),
        })?;
        let kind = opts.kind();
        let (fmt, fstype) = match kind {
            VolumeKind::Disk => (Some(DISK_FORMAT), Some(DISK_FSTYPE)),
            VolumeKind::Dir => (None, None),
        };
        // 1. Reserve the name and the staging directory.
        {
            let err = db_err(&self.paths.db);
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(&err)?;
            if let Some(row) = select_row(&tx, name).map_err(&err)? {
                let live = row.op.is_some_and(|p| p.is_alive());
                match (row.state.as_str(), live) {
                    ("ready", _) | ("creating", true) => {
                        return Err(Error::AlreadyExists(name.to_string()))
                    }
                    ("removing", true) => {
                        return Err(Error::Conflict {
                            name: name.to_string(),
                            reason: "it is being removed right now; try again".into(),
                        })
                    }
                    // A crashed create or remove: finish it first.
                    _ => crate::recovery::undo_row(&tx, &self.paths, &row)?,
                }
            }
            if std::fs::symlink_metadata(&final_dir).is_ok() {
                return Err(Error::Conflict {
                    name: name.to_string(),
                    reason: format!(
                        "{} exists but is not a registered volume; move it away first",
                        final_dir.display()
                    ),
                });
            }
            std::fs::DirBuilder::new()
                .mode(0o755)
                .create(&staging)
                .map_err(|e| Error::io("create staging directory", &staging, e))?;
            tx.execute(
                "INSERT INTO volumes (name, kind, quota_mib, size_mib, disk_format, disk_fstype, \
                 labels, created_at, state, op_pid, op_start, work_path) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'creating', ?9, ?10, ?11)",
                params![
                    name,
                    kind.as_str(),
                    opts.quota(),
                    opts.size_mib,
                    fmt,
                    fstype,
                    labels,
                    now_secs(),
                    me.pid,
                    me.start_time as i64,
                    staging.to_string_lossy(),
                ],
            )
            .map_err(&err)?;
            tx.commit().map_err(&err)?;
        }
        crash_point("create-reserved");
        // 2. Fill it, 3. move it in place.
        let built = match (kind, opts.size_mib) {
            (VolumeKind::Disk, Some(size)) => {
                disk::make_ext4(name, &staging.join(DISK_IMAGE), size)
            }
            _ => Ok(()),
        };
        let moved = built.and_then(|()| {
            crash_point("create-populated");
            paths::rename_noreplace(&staging, &final_dir).map_err(|e| {
                if e.raw_os_error() == Some(libc::EEXIST) {
                    Error::Conflict {
                        name: name.to_string(),
                        reason: format!("{} appeared meanwhile", final_dir.display()),
                    }
                } else {
                    Error::io("move in place", &final_dir, e)
                }
            })
        });
        if let Err(e) = moved {
            self.abort_create(name, &staging, me);
            return Err(e);
        }
        paths::sync_dir(&self.paths.volumes);
        crash_point("create-renamed");
        // 4. Publish.
        self.conn
            .execute(
                "UPDATE volumes SET state = 'ready', op_pid = NULL, op_start = NULL, \
                 work_path = NULL WHERE name = ?1",
                [name],
            )
            .map_err(self.err())?;
        tracing::info!("created volume {name} ({kind})");
        self.get(name)
    }

    /// Undoes a create that failed before its rename: the row first (so a
    /// crash here leaves only an unreferenced staging dir, which recovery
    /// sweeps), then the staging directory.
    fn abort_create(&self, name: &str, staging: &Path, me: ProcessId) {
        let r = self.conn.execute(
            "DELETE FROM volumes WHERE name = ?1 AND state = 'creating' AND op_pid = ?2",
            params![name, me.pid],
        );
        if let Err(e) = r {
            tracing::warn!("volume {name}: undoing the failed create: {e}");
        }
        if let Err(e) = paths::remove_tree(staging) {
            tracing::warn!("could not delete {}: {e}", staging.display());
        }
    }

    /// The `ready` row of `name`, or [`Error::NotFound`].
    pub(crate) fn ready_row(&self, name: &str) -> Result<Row> {
        check_name(name)?;
        match select_row(&self.conn, name).map_err(self.err())? {
            Some(r) if r.state == "ready" => Ok(r),
            _ => Err(Error::NotFound(name.to_string())),
        }
    }

    /// Metadata of volume `name`, or [`Error::NotFound`].
    pub fn get(&self, name: &str) -> Result<VolumeHandle> {
        let row = self.ready_row(name)?;
        self.handle(row)
    }

    /// Metadata of volume `name`, `None` when there is none.
    pub fn find(&self, name: &str) -> Result<Option<VolumeHandle>> {
        match self.get(name) {
            Ok(h) => Ok(Some(h)),
            Err(Error::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every volume, by name.
    pub fn list(&self) -> Result<Vec<VolumeHandle>> {
        let rows = select_rows(&self.conn).map_err(self.err())?;
        rows.into_iter()
            .filter(|r| r.state == "ready")
            .map(|r| self.handle(r))
            .collect()
    }

    fn handle(&self, row: Row) -> Result<VolumeHandle> {
        let path = self.paths.volume(&row.name);
        let labels: BTreeMap<String, String> =
            serde_json::from_str(&row.labels).unwrap_or_default();
        Ok(VolumeHandle {
            used_bytes: used_bytes(row.kind, &path),
            capacity_bytes: row.size_mib.map(|m| u64::from(m) << 20),
            in_use_by: self.leases_of(&row.name)?,
            name: row.name,
            path,
            kind: row.kind,
            quota_mib: row.quota_mib,
            disk_format: row.disk_format,
            disk_fstype: row.disk_fstype,
            labels,
            created_at: row.created_at,
        })
    }

    /// Leases on `name`, live or stale.
    pub fn leases_of(&self, name: &str) -> Result<Vec<LeaseInfo>> {
        crate::lease::select_leases(&self.conn, name).map_err(self.err())
    }

    /// Removes volume `name` and its data. Refused with [`Error::InUse`]
    /// while a live launcher holds a lease on it; leases of launchers that
    /// are gone do not count.
    pub fn remove(&mut self, name: &str) -> Result<()> {
        check_name(name)?;
        let me = ProcessId::current();
        let final_dir = self.paths.volume(name);
        let trash = Paths::unique_in(&self.paths.trash, name);
        {
            let err = db_err(&self.paths.db);
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(&err)?;
            let row = select_row(&tx, name)
                .map_err(&err)?
                .ok_or_else(|| Error::NotFound(name.to_string()))?;
            let live_op = row.op.is_some_and(|p| p.is_alive() && p != me);
            match row.state.as_str() {
                "ready" => {}
                "removing" if !live_op => {}
                "removing" => {
                    return Err(Error::Conflict {
                        name: name.to_string(),
                        reason: "another process is removing it right now".into(),
                    })
                }
                _ => return Err(Error::NotFound(name.to_string())),
            }
            let leases = crate::lease::select_leases(&tx, name).map_err(&err)?;
            let live: Vec<String> = leases
                .iter()
                .filter(|l| l.live)
                .map(|l| l.to_string())
                .collect();
            if !live.is_empty() {
                return Err(Error::InUse {
                    name: name.to_string(),
                    users: live.join(", "),
                });
            }
            tx.execute("DELETE FROM leases WHERE volume = ?1", [name])
                .map_err(&err)?;
            tx.execute(
                "UPDATE volumes SET state = 'removing', op_pid = ?2, op_start = ?3, \
                 work_path = ?4 WHERE name = ?1",
                params![name, me.pid, me.start_time as i64, trash.to_string_lossy()],
            )
            .map_err(&err)?;
            tx.commit().map_err(&err)?;
        }
        crash_point("remove-marked");
        match paths::rename_noreplace(&final_dir, &trash) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("move to the trash", &final_dir, e)),
        }
        paths::sync_dir(&self.paths.volumes);
        crash_point("remove-renamed");
        self.conn
            .execute("DELETE FROM volumes WHERE name = ?1", [name])
            .map_err(self.err())?;
        let quota = self.paths.quota_file(name);
        if let Err(e) = std::fs::remove_file(&quota) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!("could not delete {}: {e}", quota.display());
            }
        }
        paths::remove_tree(&trash).map_err(|e| Error::io("delete", &trash, e))?;
        tracing::info!("removed volume {name}");
        Ok(())
    }

    /// Host-side file access to dir volume `name` (see [`crate::VolumeFs`]).
    pub fn fs(&self, name: &str) -> Result<crate::VolumeFs> {
        let row = self.ready_row(name)?;
        if row.kind == VolumeKind::Disk {
            return Err(Error::Conflict {
                name: name.to_string(),
                reason: format!(
                    "host-side file access works on dir volumes; this is a disk volume (an \
                     ext4 image at {})",
                    self.paths.volume(name).join(DISK_IMAGE).display()
                ),
            });
        }
        let quota = row
            .quota_mib
            .map(|q| (u64::from(q) << 20, self.paths.quota_file(name)));
        crate::VolumeFs::open(&self.paths.volume(name), quota)
    }
}

/// Bytes a volume uses: apparent bytes of the tree (what the quota counts)
/// for a dir volume, allocated bytes of the image for a disk volume. 0 when
/// it cannot be measured (logged).
fn used_bytes(kind: VolumeKind, path: &Path) -> u64 {
    let measured = match kind {
        VolumeKind::Dir => std::fs::File::open(path)
            .and_then(|d| virtiofsd_msb::policy::quota_scan::apparent_bytes(d.as_fd())),
        VolumeKind::Disk => std::fs::metadata(path.join(DISK_IMAGE)).map(|m| m.blocks() * 512),
    };
    measured.unwrap_or_else(|e| {
        tracing::warn!("measuring {}: {e}", path.display());
        0
    })
}
