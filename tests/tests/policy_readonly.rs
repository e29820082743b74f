//! Read-only in depth through `virtiofsd-msb --readonly --fuse-mount`: the
//! "guest" (the host kernel here) remounts the share read-write, which a
//! guest owns its kernel can always do, and then tries every kind of change.
//! The daemon must refuse each, and the host tree must come out identical:
//! data, modes, owners, timestamps (atime included, but for symlinks:
//! readlink(2) moves a symlink's atime and cannot be told not to), xattrs
//! and the stat-virtualization record.

mod common;
mod policy_util;

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use policy_util::{errno, Record, Setup};

/// Everything the host can tell about one entry.
#[derive(Debug, PartialEq, Eq)]
struct Snap {
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    times: [(i64, i64); 3],
    ino: u64,
    nlink: u64,
    xattrs: BTreeMap<String, Vec<u8>>,
    content: Option<Vec<u8>>,
}

/// Every path under `root` (reading directories moves their atime: call
/// this only where that does not matter).
fn all_paths(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        if fs::symlink_metadata(&p).unwrap().is_dir() {
            for e in fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
        out.push(p.strip_prefix(root).unwrap().to_path_buf());
    }
    out.sort();
    out
}

/// Stats, xattrs and contents of `paths` under `root`, read without moving
/// any atime (O_NOATIME; no directory is listed).
fn snapshot(root: &Path, paths: &[PathBuf]) -> BTreeMap<PathBuf, Snap> {
    let mut out = BTreeMap::new();
    for rel in paths {
        let p = root.join(rel);
        let m = fs::symlink_metadata(&p).unwrap();
        let mut xattrs = BTreeMap::new();
        for name in policy_util::listxattr(&p).unwrap_or_default() {
            xattrs.insert(name.clone(), policy_util::getxattr(&p, &name).unwrap());
        }
        let content = if m.is_file() {
            let mut buf = Vec::new();
            OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOATIME)
                .open(&p)
                .and_then(|mut f| f.read_to_end(&mut buf))
                .unwrap();
            Some(buf)
        } else if m.is_symlink() {
            Some(fs::read_link(&p).unwrap().as_os_str().as_bytes().to_vec())
        } else {
            None
        };
        // readlink(2) moves a symlink's atime and Linux has no O_NOATIME
        // for it (this snapshot reads links too): symlink atimes are not
        // compared.
        let atime = if m.is_symlink() {
            (0, 0)
        } else {
            (m.atime(), m.atime_nsec())
        };
        out.insert(
            rel.clone(),
            Snap {
                mode: m.mode(),
                uid: m.uid(),
                gid: m.gid(),
                size: m.len(),
                times: [
                    atime,
                    (m.mtime(), m.mtime_nsec()),
                    (m.ctime(), m.ctime_nsec()),
                ],
                ino: m.ino(),
                nlink: m.nlink(),
                xattrs,
                content,
            },
        );
    }
    out
}

/// Sets atime to well before mtime, so a read would move it (relatime).
fn age_atime(p: &Path) {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    let times = [
        libc::timespec {
            tv_sec: 1_000_000,
            tv_nsec: 0,
        },
        libc::timespec {
            tv_sec: 2_000_000,
            tv_nsec: 0,
        },
    ];
    // SAFETY: valid path and two timespecs.
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    assert_eq!(rc, 0);
}

fn remount_rw(mnt: &Path) {
    let c = CString::new(mnt.as_os_str().as_bytes()).unwrap();
    let flags = libc::MS_REMOUNT | libc::MS_NOSUID | libc::MS_NODEV;
    // SAFETY: valid path; no data argument.
    let rc = unsafe {
        libc::mount(
            std::ptr::null(),
            c.as_ptr(),
            std::ptr::null(),
            flags,
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "remount rw: {}", std::io::Error::last_os_error());
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line = info
        .lines()
        .find(|l| l.split(' ').nth(4) == Some(mnt.to_str().unwrap()))
        .expect("mount listed");
    assert!(
        line.split(' ').nth(5).unwrap().starts_with("rw"),
        "still ro: {line}"
    );
}

/// Asserts that `r` failed; returns the errno.
fn refused<T: std::fmt::Debug>(what: &str, r: std::io::Result<T>) -> i32 {
    match r {
        Ok(v) => panic!("{what}: succeeded on a read-only share ({v:?})"),
        Err(e) => errno(&e),
    }
}

#[test]
fn a_guest_that_remounts_read_write_still_changes_nothing() {
    let Some(s) = Setup::new("a_guest_that_remounts_read_write_still_changes_nothing") else {
        return;
    };
    // A share with data, a record, a guest xattr, a directory and a link.
    let sh = &s.share;
    fs::write(sh.join("data.txt"), b"original").unwrap();
    fs::set_permissions(sh.join("data.txt"), fs::Permissions::from_mode(0o600)).unwrap();
    let rec = Record {
        uid: 1000,
        gid: 1000,
        mode: libc::S_IFREG | 0o666,
        rdev: 0,
    };
    policy_util::setxattr(&sh.join("data.txt"), policy_util::RECORD, &rec.encode()).unwrap();
    policy_util::setxattr(&sh.join("data.txt"), "user.note", b"keep").unwrap();
    fs::create_dir(sh.join("dir")).unwrap();
    fs::write(sh.join("dir/inner"), b"inner").unwrap();
    fs::write(sh.join("lockme"), b"").unwrap();
    std::os::unix::fs::symlink("data.txt", sh.join("link")).unwrap();
    let paths = all_paths(sh);
    for p in &paths {
        age_atime(&sh.join(p));
    }
    let before = snapshot(sh, &paths);

    let mut m = s.mount(&["--readonly", "--xattr"]);
    remount_rw(&s.mnt);
    let mnt = &s.mnt;
    let f = mnt.join("data.txt");
    // The guest view keeps the record.
    let gm = fs::metadata(&f).unwrap();
    assert_eq!((gm.uid(), gm.mode()), (1000, libc::S_IFREG | 0o666));

    let mut errnos = Vec::new();
    let mut try_op =
        |what: &str, r: std::io::Result<()>| errnos.push((what.to_string(), refused(what, r)));
    try_op(
        "open for writing",
        OpenOptions::new().write(true).open(&f).map(drop),
    );
    try_op(
        "append",
        OpenOptions::new()
            .append(true)
            .open(&f)
            .and_then(|mut h| h.write_all(b"x")),
    );
    try_op(
        "O_TRUNC",
        OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&f)
            .map(drop),
    );
    try_op("create", fs::write(mnt.join("new"), b"n"));
    try_op("mkdir", fs::create_dir(mnt.join("newdir")));
    try_op(
        "symlink",
        std::os::unix::fs::symlink("x", mnt.join("newlink")),
    );
    try_op("hard link", fs::hard_link(&f, mnt.join("hard")));
    try_op("rename", fs::rename(&f, mnt.join("moved")));
    try_op("unlink", fs::remove_file(mnt.join("link")));
    try_op(
        "rmdir",
        fs::remove_dir(mnt.join("dir")).or_else(|_| fs::remove_dir_all(mnt.join("dir"))),
    );
    try_op(
        "chmod",
        fs::set_permissions(&f, fs::Permissions::from_mode(0o4777)),
    );
    try_op("chown", std::os::unix::fs::chown(&f, Some(0), Some(0)));
    try_op("truncate", {
        let c = CString::new(f.as_os_str().as_bytes()).unwrap();
        // SAFETY: valid path.
        let rc = unsafe { libc::truncate(c.as_ptr(), 0) };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    });
    try_op(
        "utimes",
        fs::File::open(&f).and_then(|h| h.set_modified(std::time::SystemTime::now())),
    );
    let xa = |r: Result<(), i32>| r.map_err(std::io::Error::from_raw_os_error);
    try_op(
        "setxattr",
        xa(policy_util::setxattr(&f, "user.note", b"changed")),
    );
    try_op("removexattr", xa(policy_util::removexattr(&f, "user.note")));
    let forged = Record {
        uid: 0,
        gid: 0,
        mode: libc::S_IFREG | 0o4777,
        rdev: 0,
    };
    try_op(
        "set the record",
        xa(policy_util::setxattr(
            &f,
            policy_util::RECORD,
            &forged.encode(),
        )),
    );
    try_op(
        "remove the record",
        xa(policy_util::removexattr(&f, policy_util::RECORD)),
    );
    try_op("mknod", {
        let c = CString::new(mnt.join("dev").as_os_str().as_bytes()).unwrap();
        // SAFETY: valid path.
        let rc = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    });
    // A lock file that does not exist yet cannot be created to lock it.
    try_op(
        "flock a new lock file",
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(mnt.join("new.lock"))
            .map(drop),
    );
    // An existing file opened read-only takes a shared flock (changes no
    // data), but no write lock.
    let ro = fs::File::open(mnt.join("lockme")).unwrap();
    // SAFETY: plain data; zero is a valid value.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as i16;
    fl.l_whence = libc::SEEK_SET as i16;
    // SAFETY: valid fd and flock struct.
    let rc = unsafe { libc::fcntl(ro.as_raw_fd(), libc::F_SETLK, &fl) };
    try_op(
        "F_WRLCK on a read-only open",
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        },
    );
    drop(ro);

    // Reads work and move nothing, not even atime.
    assert_eq!(fs::read(&f).unwrap(), b"original");
    assert_eq!(fs::read(mnt.join("dir/inner")).unwrap(), b"inner");
    let listed =
        fs::read_dir(mnt.join("dir")).unwrap().count() + fs::read_dir(mnt).unwrap().count();
    assert_eq!(listed, 1 + 4);
    assert_eq!(
        fs::read_link(mnt.join("link")).unwrap(),
        Path::new("data.txt")
    );
    assert_eq!(policy_util::getxattr(&f, "user.note").unwrap(), b"keep");
    m.check_alive().unwrap();
    drop(m);

    for (what, e) in &errnos {
        assert!(
            [libc::EROFS, libc::EBADF, libc::EACCES].contains(e),
            "{what}: errno {e}, want EROFS (or the kernel's own EBADF/EACCES)"
        );
    }
    let erofs = errnos.iter().filter(|(_, e)| *e == libc::EROFS).count();
    assert!(
        erofs >= errnos.len() - 2,
        "most refusals come from the daemon: {errnos:?}"
    );
    let after = snapshot(sh, &paths);
    for (path, snap) in &before {
        assert_eq!(after.get(path), Some(snap), "{} changed", path.display());
    }
    assert_eq!(all_paths(sh), paths, "entries appeared or vanished");
}
