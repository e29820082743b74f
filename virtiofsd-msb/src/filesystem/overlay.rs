//! Stat virtualization in the filesystem: reading and writing the record of
//! [`crate::policy::stat_override`] and building guest-visible attributes.
//!
//! Records are read through `/proc/self/fd/N` of the inode's own fd, so no
//! guest path is resolved. Only host regular files and directories can hold
//! one (Linux refuses `user.*` xattrs elsewhere); host symlinks and any
//! special file present on the host show their host metadata.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::inodes::{CachedRecord, InodeData};
use super::sys::{self, xattr};
use super::ConfinedFs;
use super::FsConfig;
use crate::confinement::ProcSelfFd;
use crate::policy::stat_override::{self, StatOverride, XattrSupport};
use crate::policy::StatVirtualization;

fn errno(e: i32) -> io::Error {
    io::Error::from_raw_os_error(e)
}

/// Logs a problem a guest can make the daemon meet on every request (a
/// corrupt record it keeps asking for): at warning level the first time,
/// then at debug level, so a guest cannot flood the host's logs.
pub(super) fn log_guest_visible(what: std::fmt::Arguments<'_>) {
    static WARNED: AtomicBool = AtomicBool::new(false);
    if WARNED.swap(true, Ordering::Relaxed) {
        tracing::debug!("{what}");
    } else {
        tracing::warn!("{what} (further ones are logged at debug level)");
    }
}

/// How far in the past an inode's ctime must lie for a record read at that
/// ctime to be reused. Any later change of the record moves the ctime to
/// the time of that change, which is then at least this much later: more
/// than the coarsest timestamp granularity of a Linux filesystem holding
/// `user.*` xattrs (2 s), so the new ctime cannot equal the old one.
/// Changes within this window of a read are always seen, because such
/// recent records are read again every time.
const RECORD_SETTLE: Duration = Duration::from_secs(2);

/// Whether a record read at `now` at inode ctime `ctime` may be reused
/// while the ctime stays the same.
pub(super) fn settled(ctime: (i64, i64), now: SystemTime) -> bool {
    let Ok(now) = now.duration_since(UNIX_EPOCH) else {
        return false;
    };
    let ctime_ns = i128::from(ctime.0) * 1_000_000_000 + i128::from(ctime.1);
    ctime_ns + (RECORD_SETTLE.as_nanos() as i128) < now.as_nanos() as i128
}

/// `(st_ctime, st_ctime_nsec)` of `st`.
fn ctime_of(st: &libc::stat64) -> (i64, i64) {
    (st.st_ctime, st.st_ctime_nsec)
}

/// Whether a host inode of this type can hold a record.
pub(super) fn can_hold_record(host_type: u32) -> bool {
    matches!(host_type, libc::S_IFREG | libc::S_IFDIR)
}

/// Probes the share root: do `user.*` xattrs work there? Read-only shares
/// are probed with a `getxattr` only (`ENODATA` proves support); writable
/// ones also set and remove `user.msb._probe`.
pub(super) fn probe(root: BorrowedFd<'_>, writable: bool) -> XattrSupport {
    let path = ProcSelfFd::path_of(root);
    let mut buf = [0u8; stat_override::RECORD_LEN];
    let read = stat_override::classify_read_probe(
        xattr::get(&path, stat_override::XATTR_NAME, &mut buf)
            .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO)),
    );
    if !writable || read == XattrSupport::Unsupported {
        return read;
    }
    let name = stat_override::PROBE_XATTR_NAME;
    match xattr::set(&path, name, b"1", 0) {
        Ok(()) => {
            let _ = xattr::remove(&path, name);
            XattrSupport::Supported
        }
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => XattrSupport::Unsupported,
        // EROFS, EACCES, EPERM: we may not write here; the read decides.
        Err(_) => read,
    }
}

/// A short name for the filesystem type of `fd`, for messages.
fn fs_type_name(fd: BorrowedFd<'_>) -> String {
    // SAFETY: plain data, overwritten by the call.
    let mut st: libc::statfs64 = unsafe { std::mem::zeroed() };
    // SAFETY: valid fd and writable struct.
    if unsafe { libc::fstatfs64(std::os::fd::AsRawFd::as_raw_fd(&fd), &mut st) } != 0 {
        return "unknown filesystem".into();
    }
    let name = match st.f_type as u64 {
        0x4d44 => "vfat",
        0x2011_bab0 => "exfat",
        0x5346_544e => "ntfs",
        0x8584_58f6 => "ramfs",
        0x0102_1994 => "tmpfs",
        0x6573_5546 => "fuse",
        0x6969 => "nfs",
        0x7371_7368 => "squashfs",
        0x9660 => "iso9660",
        _ => return format!("filesystem type {:#x}", st.f_type),
    };
    name.to_string()
}

/// Decides whether records are in use for this share, as
/// `--stat-virtualization` asks; strict refuses a filesystem that does not
/// store `user.*` xattrs.
/// The daemon's effective uid, read once while setting up (before the
/// system call filter goes on).
static DAEMON_UID: OnceLock<u32> = OnceLock::new();

fn daemon_uid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    *DAEMON_UID.get_or_init(|| unsafe { libc::geteuid() })
}

pub(super) fn decide(config: &FsConfig, root: BorrowedFd<'_>) -> io::Result<bool> {
    daemon_uid();
    let mode = config.stat_virtualization;
    if mode == StatVirtualization::Off {
        return Ok(false);
    }
    let support = probe(root, !config.readonly);
    match (mode, support) {
        (_, XattrSupport::Supported) => {
            tracing::info!(
                "stat virtualization ({}): guest owners and modes live in {}",
                mode.as_str(),
                stat_override::XATTR_NAME.to_string_lossy()
            );
            Ok(true)
        }
        (StatVirtualization::Strict, XattrSupport::Unsupported) => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "--stat-virtualization strict needs user.* extended attributes, which this \
                 {} does not store; use --stat-virtualization relaxed (or off) to serve it \
                 with its host metadata",
                fs_type_name(root)
            ),
        )),
        (StatVirtualization::Strict, XattrSupport::Unknown(e)) => Err(io::Error::new(
            io::Error::from_raw_os_error(e).kind(),
            format!(
                "--stat-virtualization strict: cannot probe user.* extended attributes: {}",
                io::Error::from_raw_os_error(e)
            ),
        )),
        (_, XattrSupport::Unsupported) => {
            tracing::warn!(
                "--stat-virtualization relaxed: the {} stores no user.* extended attributes; \
                 the guest sees host metadata",
                fs_type_name(root)
            );
            Ok(false)
        }
        (_, XattrSupport::Unknown(_)) => Ok(true),
    }
}

/// Puts `rec` into `st`; `EIO` (logged) when it does not fit the host inode.
pub(super) fn apply_record(rec: &StatOverride, st: &mut libc::stat64) -> io::Result<()> {
    rec.apply(st).map_err(|c| {
        log_guest_visible(format_args!("{c}"));
        io::Error::from(c)
    })
}

/// Decodes what reading the record into `buf` gave: `Ok(None)` when there
/// is none, `EIO` (logged) for a corrupt one.
fn decode_record(got: io::Result<usize>, buf: &[u8]) -> io::Result<Option<StatOverride>> {
    match got {
        Ok(n) => StatOverride::decode(&buf[..n]).map(Some).map_err(|c| {
            log_guest_visible(format_args!("{c}"));
            io::Error::from(c)
        }),
        Err(e) => match e.raw_os_error() {
            Some(libc::ENODATA) | Some(libc::EOPNOTSUPP) => Ok(None),
            Some(libc::ERANGE) => {
                log_guest_visible(format_args!(
                    "corrupt record: longer than {}",
                    stat_override::RECORD_LEN
                ));
                Err(errno(libc::EIO))
            }
            _ => Err(e),
        },
    }
}

/// An fd the record of an inode is read or written through.
#[derive(Clone, Copy)]
pub(super) enum RecordFd<'a> {
    /// An `O_PATH` fd: through its `/proc/self/fd` magic link.
    Path(BorrowedFd<'a>),
    /// An fd opened for I/O: through the fd itself, which costs no path
    /// walk.
    Open(BorrowedFd<'a>),
}

impl RecordFd<'_> {
    fn get(self, proc: &ProcSelfFd, buf: &mut [u8]) -> io::Result<usize> {
        let name = stat_override::XATTR_NAME;
        match self {
            RecordFd::Path(fd) => {
                let link = ProcSelfFd::entry_name(fd);
                xattr::get_at((proc.dir(), &link), || ProcSelfFd::path_of(fd), name, buf)
            }
            RecordFd::Open(fd) => xattr::fget(fd, name, buf),
        }
    }

    fn set(self, proc: &ProcSelfFd, value: &[u8]) -> io::Result<()> {
        let name = stat_override::XATTR_NAME;
        match self {
            RecordFd::Path(fd) => {
                let link = ProcSelfFd::entry_name(fd);
                xattr::set_at(
                    (proc.dir(), &link),
                    || ProcSelfFd::path_of(fd),
                    name,
                    value,
                    0,
                )
            }
            RecordFd::Open(fd) => xattr::fset(fd, name, value, 0),
        }
    }
}

impl ConfinedFs {
    /// The record of the inode behind `fd` (host type `host_type`), if the
    /// overlay is on and one is stored. `EIO` for a corrupt record.
    pub(super) fn read_record(
        &self,
        fd: BorrowedFd<'_>,
        host_type: u32,
    ) -> io::Result<Option<StatOverride>> {
        self.read_record_via(RecordFd::Path(fd), host_type)
    }

    /// Like [`ConfinedFs::read_record`] through any kind of fd.
    pub(super) fn read_record_via(
        &self,
        fd: RecordFd<'_>,
        host_type: u32,
    ) -> io::Result<Option<StatOverride>> {
        if !self.overlay || !can_hold_record(host_type) {
            return Ok(None);
        }
        // One byte more than a record, to see an overlong value.
        let mut buf = [0u8; stat_override::RECORD_LEN + 1];
        let got = fd.get(&self.proc_fd, &mut buf);
        let Some(rec) = decode_record(got, &buf)? else {
            return Ok(None);
        };
        // Forged records (a host user's own xattr) grant nothing.
        let (RecordFd::Path(raw) | RecordFd::Open(raw)) = fd;
        let owner = sys::stat_fd(raw)?.st_uid;
        Ok(Some(rec.trusted_for_owner(owner, daemon_uid())))
    }

    /// The record of `inode` (host `stat` `st`, taken just before), read
    /// through the inode's own fd unless the cached read is still valid
    /// (same ctime). A read is kept only when the ctime has settled.
    pub(super) fn inode_record(
        &self,
        inode: &InodeData,
        st: &libc::stat64,
    ) -> io::Result<Option<StatOverride>> {
        let host_type = st.st_mode & libc::S_IFMT;
        if !self.overlay || !can_hold_record(host_type) {
            return Ok(None);
        }
        let ctime = ctime_of(st);
        if let Some(record) = inode.cached_record(ctime) {
            return Ok(record);
        }
        let fd = self.inodes.fd(inode)?;
        let record = self.read_record(fd.as_fd(), host_type)?;
        if settled(ctime, SystemTime::now()) {
            inode.cache_record(CachedRecord { ctime, record });
        }
        Ok(record)
    }

    /// The guest-visible attributes of `inode` whose host `stat` is `st`.
    pub(super) fn inode_attr(
        &self,
        inode: &InodeData,
        mut st: libc::stat64,
    ) -> io::Result<libc::stat64> {
        if let Some(rec) = self.inode_record(inode, &st)? {
            apply_record(&rec, &mut st)?;
        }
        Ok(st)
    }

    /// `stat` of `inode` (whose fd is `fd`) as the guest sees it.
    pub(super) fn inode_stat(
        &self,
        inode: &InodeData,
        fd: BorrowedFd<'_>,
    ) -> io::Result<libc::stat64> {
        let st = sys::stat_fd(fd)?;
        self.inode_attr(inode, st)
    }

    /// The guest-visible file type of `inode` (whose fd is `fd`).
    pub(super) fn inode_type(&self, inode: &InodeData, fd: BorrowedFd<'_>) -> io::Result<u32> {
        if !self.overlay || !can_hold_record(inode.file_type) {
            return Ok(inode.file_type);
        }
        let st = sys::stat_fd(fd)?;
        Ok(self
            .inode_record(inode, &st)?
            .map_or(inode.file_type, |r| r.file_type()))
    }

    /// Stores `rec` as the record of the inode behind `fd`.
    pub(super) fn write_record(&self, fd: BorrowedFd<'_>, rec: &StatOverride) -> io::Result<()> {
        self.write_record_via(RecordFd::Path(fd), rec)
    }

    /// Like [`ConfinedFs::write_record`] through any kind of fd.
    pub(super) fn write_record_via(&self, fd: RecordFd<'_>, rec: &StatOverride) -> io::Result<()> {
        self.check_writable()?;
        fd.set(&self.proc_fd, &rec.encode())
    }

    /// The record of the inode, or one made from its host metadata.
    pub(super) fn current_record(
        &self,
        fd: BorrowedFd<'_>,
        st: &libc::stat64,
    ) -> io::Result<StatOverride> {
        let rec = self.read_record(fd, st.st_mode & libc::S_IFMT)?;
        Ok(rec.unwrap_or_else(|| StatOverride::from_host(st)))
    }

    /// The guest-visible file type of an inode of host type `host_type`.
    pub(super) fn guest_type(&self, fd: BorrowedFd<'_>, host_type: u32) -> io::Result<u32> {
        Ok(self
            .read_record(fd, host_type)?
            .map_or(host_type, |r| r.file_type()))
    }

    /// The record of a new entry the guest caller `uid`/`gid` creates with
    /// `mode` (type and permissions) in the directory `parent`: owned by the
    /// caller; in a setgid directory the group is the directory's, and a
    /// new directory inherits setgid, as the kernel does it.
    pub(super) fn new_record(
        &self,
        uid: u32,
        gid: u32,
        parent: &InodeData,
        parent_fd: BorrowedFd<'_>,
        mode: u32,
        rdev: u32,
    ) -> io::Result<StatOverride> {
        let pst = sys::stat_fd(parent_fd)?;
        let prec = self
            .inode_record(parent, &pst)?
            .unwrap_or_else(|| StatOverride::from_host(&pst));
        let mut rec = StatOverride {
            uid,
            gid,
            mode,
            rdev,
        };
        if prec.mode & libc::S_ISGID != 0 {
            rec.gid = prec.gid;
            if mode & libc::S_IFMT == libc::S_IFDIR {
                rec.mode |= libc::S_ISGID;
            }
        }
        Ok(rec)
    }

    /// After a data change (write, copy_file_range, truncating open) by a
    /// caller who is not root: clears setuid (and setgid with group execute)
    /// in the record of the file behind `fd`, as the kernel does for a
    /// writer without `CAP_FSETID`. The data change already happened, so a
    /// failure here is logged, not returned.
    pub(super) fn kill_priv(&self, fd: BorrowedFd<'_>, privileged: bool) {
        if !self.overlay || privileged {
            return;
        }
        // `fd` is the open file the data went through.
        let fd = RecordFd::Open(fd);
        let result = self.read_record_via(fd, libc::S_IFREG).and_then(|rec| {
            match rec.and_then(|r| r.after_data_change(false)) {
                Some(new) => self.write_record_via(fd, &new),
                None => Ok(()),
            }
        });
        if let Err(e) = result {
            log_guest_visible(format_args!(
                "cannot clear setuid/setgid in a record after a write: {e}"
            ));
        }
    }

    /// Removes the entry `name` of `dir` that a failed creation left,
    /// provided it is still the inode behind `made`.
    pub(super) fn undo_create(
        &self,
        dir: BorrowedFd<'_>,
        name: &CStr,
        made: BorrowedFd<'_>,
        flags: i32,
    ) {
        let (Ok(a), Ok(b)) = (sys::stat_at(dir, name), sys::stat_fd(made)) else {
            return;
        };
        if (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino) {
            let _ = sys::unlink_at(dir, name, flags);
        }
    }
}
