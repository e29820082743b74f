//! Shared by the hostile-request suites: each case runs against a fresh
//! daemon twice, with the process sandbox on (the default: namespaces,
//! seccomp, dropped capabilities) and off (`--sandbox none --seccomp
//! none`), so a wall never hides a bug of the layer under it. Also the
//! FUSE requests the driver has no helper for.

#![allow(dead_code)]

use std::io;
use std::mem::size_of;
use std::path::Path;
use std::time::Duration;

use fuse_backend_rs::abi::fuse_abi::{
    Attr, AttrOut, CopyFileRangeIn, EntryOut, FallocateIn, FileLock, GetxattrIn, GetxattrOut,
    LinkIn, LkIn, LseekIn, LseekOut, MknodIn, Opcode, Rename2In, SetattrIn, SetxattrIn,
};
use msb_tests::daemon_proc::{Daemon, DaemonOptions};
use msb_tests::vhost_driver::{DriverConfig, DriverError, FsDriver, FuseClient};
use vm_memory::ByteValued;

pub mod inflight;

/// What a hostile case needs from its daemon and driver.
pub struct Setup {
    /// Daemon flags beyond the socket and shared dir (the mode's flags are
    /// added).
    pub args: &'static [&'static str],
    /// Lays out files under the temporary root (share is `root/share`).
    pub prepare: Option<fn(&Path) -> io::Result<()>>,
    /// Request queues to connect with.
    pub queues: usize,
    /// How long the driver waits for a chain to come back.
    pub timeout: Duration,
}

/// One hostile case, run by [`run_suite`] on a fresh daemon per mode.
pub trait Hostile {
    /// What the case tries (unique within its suite).
    fn name(&self) -> String;
    /// How its daemon and driver are set up.
    fn setup(&self) -> Setup;
    /// The attack and its checks; panics on a wrong answer.
    fn run(&self, d: &Daemon, fs: &FsDriver);
}

/// A hostile case given as a function: a daemon set up as `args`/`prepare`
/// say, then `run` with a connected driver.
pub struct Case {
    /// What the case tries.
    pub name: &'static str,
    /// Daemon flags beyond the socket and shared dir.
    pub args: &'static [&'static str],
    /// Lays out files under the temporary root (share is `root/share`).
    pub prepare: Option<fn(&Path) -> io::Result<()>>,
    /// Request queues to connect with.
    pub queues: usize,
    /// The attack and its checks.
    pub run: fn(&Daemon, &FsDriver),
}

impl Case {
    /// A case with one queue, no preparation.
    pub const fn new(
        name: &'static str,
        args: &'static [&'static str],
        run: fn(&Daemon, &FsDriver),
    ) -> Case {
        Case {
            name,
            args,
            prepare: None,
            queues: 1,
            run,
        }
    }

    /// The same case with `prepare` laying out the share first.
    pub const fn prepared(mut self, prepare: fn(&Path) -> io::Result<()>) -> Case {
        self.prepare = Some(prepare);
        self
    }

    /// The same case with `n` request queues.
    pub const fn queues(mut self, n: usize) -> Case {
        self.queues = n;
        self
    }
}

impl Hostile for Case {
    fn name(&self) -> String {
        self.name.to_string()
    }

    fn setup(&self) -> Setup {
        Setup {
            args: self.args,
            prepare: self.prepare,
            queues: self.queues,
            timeout: DriverConfig::default().timeout,
        }
    }

    fn run(&self, d: &Daemon, fs: &FsDriver) {
        (self.run)(d, fs)
    }
}

/// Every case of `lists`, as one list for [`run_suite`].
pub fn all<'a, C: Hostile>(lists: &[&'a [C]]) -> Vec<&'a dyn Hostile> {
    lists
        .iter()
        .flat_map(|l| l.iter().map(|c| c as &dyn Hostile))
        .collect()
}

/// The two ways every case runs.
pub const MODES: [(&str, &[&str]); 2] = [
    ("sandbox on", &[]),
    ("sandbox off", &["--sandbox", "none", "--seccomp", "none"]),
];

/// Runs every case of the suite `suite` (a file name) in both modes, each
/// on a fresh daemon, and checks after each that the daemon is alive and
/// still answers a normal GETATTR. Every case runs even when one fails;
/// then the failures (name, mode, daemon log) are reported together. On
/// success prints `hostile suite FILE: N cases x 2 modes passed`
/// (also when the harness captures output).
pub fn run_suite(suite: &str, cases: &[&dyn Hostile]) {
    let suite = Path::new(suite)
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| suite.to_string());
    let mut names = std::collections::HashSet::new();
    for c in cases {
        assert!(names.insert(c.name()), "two cases named {:?}", c.name());
    }
    let mut failures = Vec::new();
    for (mode, mode_args) in MODES {
        for case in cases {
            let name = case.name();
            match run_one(*case, mode_args) {
                Ok(()) => eprintln!("ok   {name} ({mode})"),
                Err(why) => {
                    eprintln!("FAIL {name} ({mode})");
                    failures.push(format!("case {name:?} ({mode}): {why}"));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "hostile suite {suite}: {} of {} runs failed:\n{}",
        failures.len(),
        cases.len() * MODES.len(),
        failures.join("\n\n")
    );
    // Past the test harness's capture, so a passing run shows it too.
    let line = format!(
        "hostile suite {suite}: {} cases x {} modes passed\n",
        cases.len(),
        MODES.len()
    );
    let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
}

/// One case on a fresh daemon started with `mode_args` added.
fn run_one(case: &dyn Hostile, mode_args: &[&str]) -> Result<(), String> {
    let setup = case.setup();
    let mut args: Vec<String> = setup.args.iter().map(|s| s.to_string()).collect();
    args.extend(mode_args.iter().map(|s| s.to_string()));
    let mut d = Daemon::start_with(DaemonOptions {
        args,
        prepare: setup.prepare,
    })
    .map_err(|e| format!("start: {e}"))?;
    let fs = d.connect_with(DriverConfig {
        request_queues: setup.queues,
        timeout: setup.timeout,
        ..DriverConfig::default()
    })?;
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| case.run(&d, &fs)));
    if let Err(p) = outcome {
        let msg = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        return Err(format!("{msg}\ndaemon log:\n{}", d.log_tail(3000)));
    }
    if !d.is_alive() {
        return Err(format!("the daemon died; log:\n{}", d.log_tail(3000)));
    }
    // The daemon must still serve after the attack.
    fs.getattr(msb_tests::vhost_driver::ROOT_ID)
        .map_err(|e| format!("daemon stopped serving: {e}\nlog:\n{}", d.log_tail(3000)))?;
    Ok(())
}

/// The errno of a failed request (0 for success, -1 for a transport error).
pub fn errno<T>(r: Result<T, DriverError>) -> i32 {
    match r {
        Ok(_) => 0,
        Err(e) => e.errno().unwrap_or(-1),
    }
}

/// `FUSE_SETATTR` with the given valid bits and values.
pub fn setattr(fs: &impl FuseClient, node: u64, arg: SetattrIn) -> Result<Attr, DriverError> {
    Ok(fs
        .call_obj::<AttrOut>(Opcode::Setattr, node, arg.as_slice())?
        .attr)
}

/// `FATTR_SIZE` through handle `fh` (0: none).
pub fn truncate(fs: &impl FuseClient, node: u64, fh: u64, size: u64) -> Result<Attr, DriverError> {
    const FATTR_SIZE: u32 = 1 << 3;
    const FATTR_FH: u32 = 1 << 6;
    let valid = FATTR_SIZE | if fh != 0 { FATTR_FH } else { 0 };
    setattr(
        fs,
        node,
        SetattrIn {
            valid,
            fh,
            size,
            ..Default::default()
        },
    )
}

/// Guest chown (`u32::MAX`: leave that id).
pub fn chown(fs: &impl FuseClient, node: u64, uid: u32, gid: u32) -> Result<Attr, DriverError> {
    const FATTR_UID: u32 = 1 << 1;
    const FATTR_GID: u32 = 1 << 2;
    let mut valid = 0;
    if uid != u32::MAX {
        valid |= FATTR_UID;
    }
    if gid != u32::MAX {
        valid |= FATTR_GID;
    }
    setattr(
        fs,
        node,
        SetattrIn {
            valid,
            uid,
            gid,
            ..Default::default()
        },
    )
}

/// `FUSE_FALLOCATE`.
pub fn fallocate(
    fs: &impl FuseClient,
    node: u64,
    fh: u64,
    mode: u32,
    offset: u64,
    length: u64,
) -> Result<(), DriverError> {
    let arg = FallocateIn {
        fh,
        offset,
        length,
        mode,
        padding: 0,
    };
    fs.call(Opcode::Fallocate, node, arg.as_slice(), 0)
        .map(drop)
}

/// `FUSE_COPY_FILE_RANGE`; returns the count copied.
pub fn copy_range(
    fs: &impl FuseClient,
    (node_in, fh_in, off_in): (u64, u64, u64),
    (node_out, fh_out, off_out): (u64, u64, u64),
    len: u64,
) -> Result<u32, DriverError> {
    let arg = CopyFileRangeIn {
        fh_in,
        offset_in: off_in,
        nodeid_out: node_out,
        fh_out,
        offset_out: off_out,
        len,
        flags: 0,
    };
    let body = fs.call(Opcode::CopyFileRange, node_in, arg.as_slice(), 8)?;
    Ok(u32::from_le_bytes(body[..4].try_into().unwrap_or_default()))
}

/// `FUSE_LINK` of `node` as `parent/name`.
pub fn link(
    fs: &impl FuseClient,
    node: u64,
    parent: u64,
    name: &[u8],
) -> Result<EntryOut, DriverError> {
    let mut body = LinkIn { oldnodeid: node }.as_slice().to_vec();
    body.extend_from_slice(name);
    body.push(0);
    fs.call_obj(Opcode::Link, parent, &body)
}

/// `FUSE_SETXATTR`.
pub fn setxattr(
    fs: &impl FuseClient,
    node: u64,
    name: &str,
    value: &[u8],
) -> Result<(), DriverError> {
    let mut body = SetxattrIn {
        size: value.len() as u32,
        flags: 0,
    }
    .as_slice()
    .to_vec();
    body.extend_from_slice(name.as_bytes());
    body.push(0);
    body.extend_from_slice(value);
    fs.call(Opcode::Setxattr, node, &body, 0).map(drop)
}

/// `FUSE_GETXATTR` with a guest-chosen `size`; returns the reply body.
pub fn getxattr(
    fs: &impl FuseClient,
    node: u64,
    name: &str,
    size: u32,
    capacity: u32,
) -> Result<Vec<u8>, DriverError> {
    let mut body = GetxattrIn { size, padding: 0 }.as_slice().to_vec();
    body.extend_from_slice(name.as_bytes());
    body.push(0);
    fs.call(
        Opcode::Getxattr,
        node,
        &body,
        capacity.max(size_of::<GetxattrOut>() as u32),
    )
}

/// A POSIX write lock on the whole file for `owner` (`wait`: SETLKW).
pub fn lock(
    fs: &impl FuseClient,
    node: u64,
    fh: u64,
    owner: u64,
    wait: bool,
) -> Result<(), DriverError> {
    let arg = LkIn {
        fh,
        owner,
        lk: FileLock {
            start: 0,
            end: u64::MAX >> 1,
            type_: libc::F_WRLCK as u32,
            pid: 1,
        },
        lk_flags: 0,
        padding: 0,
    };
    let op = if wait { Opcode::Setlkw } else { Opcode::Setlk };
    fs.call(op, node, arg.as_slice(), 0).map(drop)
}

/// Calls `visit` once per inode under `dir` (hard links seen once), for
/// directories too, with a path to it and its metadata (not followed).
fn for_each_inode(dir: &Path, mut visit: impl FnMut(&Path, &std::fs::Metadata)) {
    use std::os::unix::fs::MetadataExt;
    let mut seen = std::collections::HashSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let Ok(m) = std::fs::symlink_metadata(e.path()) else {
                continue;
            };
            if m.is_dir() {
                stack.push(e.path());
            }
            if seen.insert(m.ino()) {
                visit(&e.path(), &m);
            }
        }
    }
}

/// Apparent bytes of every non-directory inode under `dir`, each inode
/// once (what the quota counts, seen from the host).
pub fn host_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    for_each_inode(dir, |_, m| {
        if !m.is_dir() {
            total += m.len();
        }
    });
    total
}

/// Bytes of unlinked files of the share's filesystem the server still
/// holds open: the sizes of its open fds with link count 0 on the share's
/// device (from `/proc/PID/fd`; guest memory, a memfd, is elsewhere).
pub fn unlinked_open_bytes(d: &Daemon) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let pid = d.server_pid().unwrap();
    let dev = std::fs::metadata(d.shared_dir()).unwrap().dev();
    let mut seen = std::collections::HashSet::new();
    let mut total = 0;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"));
    for e in fds.into_iter().flatten().flatten() {
        if let Ok(m) = std::fs::metadata(e.path()) {
            if m.is_file() && m.nlink() == 0 && m.dev() == dev && seen.insert(m.ino()) {
                total += m.size();
            }
        }
    }
    total
}

/// `FUSE_RENAME2` of `parent/name` to `newparent/newname` with `flags`.
pub fn rename2(
    fs: &impl FuseClient,
    (parent, name): (u64, &[u8]),
    (newparent, newname): (u64, &[u8]),
    flags: u32,
) -> Result<(), DriverError> {
    let mut body = Rename2In {
        newdir: newparent,
        flags,
        padding: 0,
    }
    .as_slice()
    .to_vec();
    for n in [name, newname] {
        body.extend_from_slice(n);
        body.push(0);
    }
    fs.call(Opcode::Rename2, parent, &body, 0).map(drop)
}

/// `FUSE_MKNOD` of `parent/name` with `mode` (type included) and `rdev`.
pub fn mknod(
    fs: &impl FuseClient,
    parent: u64,
    name: &[u8],
    mode: u32,
    rdev: u32,
) -> Result<EntryOut, DriverError> {
    let mut body = MknodIn {
        mode,
        rdev,
        umask: 0,
        padding: 0,
    }
    .as_slice()
    .to_vec();
    body.extend_from_slice(name);
    body.push(0);
    fs.call_obj(Opcode::Mknod, parent, &body)
}

/// `FUSE_LSEEK`; returns the new offset.
pub fn lseek(
    fs: &impl FuseClient,
    node: u64,
    fh: u64,
    offset: u64,
    whence: u32,
) -> Result<u64, DriverError> {
    let arg = LseekIn {
        fh,
        offset,
        whence,
        padding: 0,
    };
    Ok(fs
        .call_obj::<LseekOut>(Opcode::Lseek, node, arg.as_slice())?
        .offset)
}

/// A POSIX lock request (`SETLK`, `SETLKW` or `GETLK` as `op`) of
/// `type_` on `start..=end` for `owner`; `flock` sets `FUSE_LK_FLOCK`.
pub fn lock_body(
    fh: u64,
    owner: u64,
    type_: i32,
    (start, end): (u64, u64),
    flock: bool,
) -> Vec<u8> {
    LkIn {
        fh,
        owner,
        lk: FileLock {
            start,
            end,
            type_: type_ as u32,
            pid: 1,
        },
        lk_flags: if flock { 1 } else { 0 },
        padding: 0,
    }
    .as_slice()
    .to_vec()
}

/// Guest extended-attribute bytes under `dir` as the host holds them:
/// names plus values of every `user.*` attribute of every inode (each
/// once), the daemon's own record excluded.
pub fn host_xattr_bytes(dir: &Path) -> u64 {
    use std::os::unix::ffi::OsStrExt;
    let mut total = 0;
    for_each_inode(dir, |path, m| {
        if m.file_type().is_symlink() {
            return;
        }
        let path = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
        let mut names = vec![0u8; 1 << 16];
        // SAFETY: a NUL-terminated path and a buffer of the given size.
        let n = unsafe { libc::llistxattr(path.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
        for name in names[..n.max(0) as usize].split(|&b| b == 0) {
            if !name.starts_with(b"user.") || name.starts_with(b"user.msb.") {
                continue;
            }
            let c = std::ffi::CString::new(name).unwrap();
            // SAFETY: NUL-terminated strings; size 0 only asks the length.
            let len =
                unsafe { libc::lgetxattr(path.as_ptr(), c.as_ptr(), std::ptr::null_mut(), 0) };
            total += name.len() as u64 + len.max(0) as u64;
        }
    });
    total
}
