//! Helpers for the daemon-policy tests (`policy_*.rs`) through the host FUSE
//! mode: raw xattr calls with their errno, the stat-virtualization record as
//! the host sees it, running a shell command as another user, and a daemon
//! that is expected to refuse to start.
#![allow(dead_code)] // each test binary uses a subset

use std::ffi::CString;
use std::fs::File;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::common::{self, FuseMount, Scratch};

/// Name of the record xattr.
pub const RECORD: &str = "user.msb.override_stat";

/// A scratch tree with `share/`, `mnt/` and `logs/`, and the daemon binary;
/// `None` when the test is skipped (see [`common::preflight`]).
pub struct Setup {
    /// The scratch directory (removed on drop, after the mounts).
    pub scratch: Scratch,
    /// The daemon binary.
    pub daemon: PathBuf,
    /// The shared directory.
    pub share: PathBuf,
    /// The mount point.
    pub mnt: PathBuf,
    /// Where logs go.
    pub logs: PathBuf,
}

impl Setup {
    /// Prepares the scratch tree for `test`.
    pub fn new(test: &str) -> Option<Setup> {
        if !common::preflight(test) {
            return None;
        }
        let scratch = Scratch::new("msb-policy-");
        let share = scratch.mkdir("share");
        let mnt = scratch.mkdir("mnt");
        let logs = scratch.mkdir("logs");
        Some(Setup {
            daemon: common::daemon_bin(),
            scratch,
            share,
            mnt,
            logs,
        })
    }

    /// Mounts the share on `mnt` with `args`.
    pub fn mount(&self, args: &[&str]) -> FuseMount {
        self.mount_at(&self.share, &self.mnt, "daemon", args)
    }

    /// Mounts `share` on `mnt` with `args`, logging to `logs/<label>.log`.
    pub fn mount_at(&self, share: &Path, mnt: &Path, label: &str, args: &[&str]) -> FuseMount {
        let log = self.logs.join(format!("{label}.log"));
        FuseMount::start_with_args(&self.daemon, share, mnt, &log, args)
    }
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("path without NUL")
}

fn last_errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// `lgetxattr`; `Err(errno)` on failure.
pub fn getxattr(path: &Path, name: &str) -> Result<Vec<u8>, i32> {
    let (p, n) = (cpath(path), CString::new(name).unwrap());
    let mut buf = vec![0u8; 65536];
    // SAFETY: NUL-terminated strings; `buf` is writable for its length.
    let r = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if r < 0 {
        return Err(last_errno());
    }
    buf.truncate(r as usize);
    Ok(buf)
}

/// `lsetxattr`; `Err(errno)` on failure.
pub fn setxattr(path: &Path, name: &str, value: &[u8]) -> Result<(), i32> {
    let (p, n) = (cpath(path), CString::new(name).unwrap());
    // SAFETY: NUL-terminated strings; `value` is readable for its length.
    let r = unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if r < 0 {
        Err(last_errno())
    } else {
        Ok(())
    }
}

/// `lremovexattr`; `Err(errno)` on failure.
pub fn removexattr(path: &Path, name: &str) -> Result<(), i32> {
    let (p, n) = (cpath(path), CString::new(name).unwrap());
    // SAFETY: NUL-terminated strings.
    let r = unsafe { libc::lremovexattr(p.as_ptr(), n.as_ptr()) };
    if r < 0 {
        Err(last_errno())
    } else {
        Ok(())
    }
}

/// `llistxattr`, split into names; `Err(errno)` on failure.
pub fn listxattr(path: &Path) -> Result<Vec<String>, i32> {
    let p = cpath(path);
    let mut buf = vec![0u8; 65536];
    // SAFETY: NUL-terminated path; `buf` is writable for its length.
    let r = unsafe { libc::llistxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if r < 0 {
        return Err(last_errno());
    }
    buf.truncate(r as usize);
    Ok(buf
        .split(|&b| b == 0)
        .filter(|n| !n.is_empty())
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .collect())
}

/// A decoded record: uid, gid, mode, rdev.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    /// Guest owner.
    pub uid: u32,
    /// Guest group.
    pub gid: u32,
    /// Guest mode with type bits.
    pub mode: u32,
    /// Guest device number.
    pub rdev: u32,
}

impl Record {
    /// Encodes the 20-byte record (version 1).
    pub fn encode(&self) -> Vec<u8> {
        let mut v = vec![1u8, 0, 0, 0];
        for w in [self.uid, self.gid, self.mode, self.rdev] {
            v.extend_from_slice(&w.to_le_bytes());
        }
        v
    }
}

/// The record stored on the host file `path`, if any; panics on a value
/// that is not a version-1 record.
pub fn record(path: &Path) -> Option<Record> {
    let v = getxattr(path, RECORD).ok()?;
    assert_eq!(
        v.len(),
        20,
        "record of {} is {} bytes",
        path.display(),
        v.len()
    );
    assert_eq!(
        &v[..4],
        &[1, 0, 0, 0],
        "record header of {}",
        path.display()
    );
    let w = |i: usize| u32::from_le_bytes(v[i..i + 4].try_into().unwrap());
    Some(Record {
        uid: w(4),
        gid: w(8),
        mode: w(12),
        rdev: w(16),
    })
}

/// Runs `script` with `sh -c` as `uid`/`gid` (no supplementary groups);
/// returns its exit status and stderr.
pub fn sh_as(uid: u32, gid: u32, script: &str) -> (ExitStatus, String) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .uid(uid)
        .gid(gid)
        .stdin(Stdio::null())
        .output()
        .expect("run sh");
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `script` with `sh -c` as root; panics when it fails.
pub fn sh(script: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .output()
        .expect("run sh");
    assert!(
        out.status.success(),
        "`{script}` failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The errno of an `io::Error`.
pub fn errno(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

/// Runs the daemon with `--shared-dir share --fuse-mount mnt args`, which
/// must refuse to start: returns its exit status and output. If it is still
/// running after 20 s (or mounted), it is killed, `mnt` unmounted, and the
/// test fails.
pub fn expect_refusal(
    daemon: &Path,
    share: &Path,
    mnt: &Path,
    args: &[&str],
) -> (ExitStatus, String) {
    let log = mnt.with_extension("refusal.log");
    let out = File::create(&log).expect("log");
    let err = out.try_clone().expect("dup");
    let mut child = Command::new(daemon)
        .arg("--shared-dir")
        .arg(share)
        .arg("--fuse-mount")
        .arg(mnt)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .expect("spawn daemon");
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if start.elapsed() > Duration::from_secs(20) || common::mount_fstype(mnt).is_some() {
            let _ = child.kill();
            let _ = child.wait();
            let c = cpath(mnt);
            // SAFETY: valid path; lazy unmount of our own mount point.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
            panic!(
                "the daemon started with {args:?} instead of refusing; log:\n{}",
                read(&log)
            );
        }
        sleep(Duration::from_millis(20));
    };
    (status, read(&log))
}

fn read(p: &Path) -> String {
    let mut s = String::new();
    if let Ok(mut f) = File::open(p) {
        let _ = f.read_to_string(&mut s);
    }
    s
}
