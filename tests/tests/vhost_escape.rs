//! Escape attempts through the vhost-user driver: bad names, symlinks that
//! point out of the share, and a directory swapped for a symlink by a host
//! thread while the "guest" walks, lists, reads, writes and creates in it.
//! A sentinel outside the share must never be read, written or listed, and
//! nothing may be created outside.

use std::collections::BTreeSet;
use std::fs::{self, File, FileTimes};
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use msb_tests::daemon_proc::Daemon;
use msb_tests::vhost_driver::{DriverError, FsDriver, FuseClient, ROOT_ID};

const SENTINEL: &[u8] = b"SENTINEL-7c1e9b: host secret outside the share";
const SENTINEL_NAME: &str = "SENTINEL_NAME_4d2a";
const S_IFMT: u32 = libc::S_IFMT;

/// The host side: `root/outside/` with the sentinel files, `root/share/`.
struct Sentinel {
    outside: PathBuf,
    files: Vec<(PathBuf, fs::Metadata)>,
    dir_mtime: i64,
    dir_mtime_nsec: i64,
    listing: BTreeSet<String>,
}

impl Sentinel {
    /// Creates `outside/inner` and `outside/SENTINEL_NAME` with the sentinel
    /// content and an atime older than the mtime, so that under `relatime`
    /// any read on the host would move the atime.
    fn plant(root: &Path) -> Sentinel {
        let outside = root.join("outside");
        fs::create_dir(&outside).unwrap();
        let old = SystemTime::now() - Duration::from_secs(3 * 24 * 3600);
        for name in ["inner", SENTINEL_NAME, "sentinel"] {
            let p = outside.join(name);
            fs::write(&p, SENTINEL).unwrap();
            let f = File::options().write(true).open(&p).unwrap();
            f.set_times(
                FileTimes::new()
                    .set_accessed(old)
                    .set_modified(SystemTime::now()),
            )
            .unwrap();
        }
        let files = ["inner", SENTINEL_NAME, "sentinel"]
            .iter()
            .map(|n| {
                let p = outside.join(n);
                let md = fs::metadata(&p).unwrap();
                (p, md)
            })
            .collect();
        let md = fs::metadata(&outside).unwrap();
        Sentinel {
            listing: list_host(&outside),
            outside,
            files,
            dir_mtime: md.mtime(),
            dir_mtime_nsec: md.mtime_nsec(),
        }
    }

    /// Panics unless every sentinel file and the outside dir are untouched.
    fn check_untouched(&self) {
        for (p, before) in &self.files {
            let after = fs::metadata(p).unwrap();
            assert_eq!(
                (after.mtime(), after.mtime_nsec()),
                (before.mtime(), before.mtime_nsec()),
                "{} was modified",
                p.display()
            );
            assert_eq!(
                (after.atime(), after.atime_nsec()),
                (before.atime(), before.atime_nsec()),
                "{} was read on the host (atime moved)",
                p.display()
            );
            assert_eq!(after.len(), before.len(), "{} changed size", p.display());
            assert_eq!(
                fs::read(p).unwrap(),
                SENTINEL,
                "{} content changed",
                p.display()
            );
        }
        assert_eq!(
            list_host(&self.outside),
            self.listing,
            "entries appeared outside"
        );
        let md = fs::metadata(&self.outside).unwrap();
        assert_eq!(
            (md.mtime(), md.mtime_nsec()),
            (self.dir_mtime, self.dir_mtime_nsec),
            "the outside directory was modified"
        );
    }
}

fn list_host(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn start() -> (Daemon, Sentinel, FsDriver) {
    let d = Daemon::start(&[]).unwrap_or_else(|e| panic!("cannot start virtiofsd-msb: {e}"));
    let sentinel = Sentinel::plant(d.root());
    let share = d.shared_dir();
    fs::create_dir(share.join("sub")).unwrap();
    fs::write(share.join("sub/file"), b"inside").unwrap();
    fs::write(share.join("inner"), b"inside").unwrap();
    let fs = d.connect(1).unwrap_or_else(|e| panic!("{e}"));
    (d, sentinel, fs)
}

fn is_bad_name_errno(e: &DriverError) -> bool {
    matches!(e.errno(), Some(libc::EINVAL) | Some(libc::EPERM))
}

#[test]
fn bad_names_are_rejected_at_every_entry_point() {
    let (d, sentinel, fs) = start();
    let sub = fs.lookup(ROOT_ID, b"sub").expect("lookup sub");
    let bad: &[&[u8]] = &[
        b"..",
        b".",
        b"",
        b"sub/file",
        b"../outside",
        b"../outside/sentinel",
        b"/etc",
        b"sub/",
        b"inner\0junk",
    ];
    let mut failures = Vec::new();
    'all: for parent in [ROOT_ID, sub.nodeid] {
        for name in bad {
            let shown = String::from_utf8_lossy(name).replace('\0', "\\0");
            let mode = libc::S_IFREG | 0o644;
            let attempts: [(&str, Result<(), DriverError>); 8] = [
                ("lookup", fs.lookup(parent, name).map(drop)),
                (
                    "create",
                    fs.create(parent, name, mode, libc::O_RDWR).map(drop),
                ),
                ("mkdir", fs.mkdir(parent, name, 0o755).map(drop)),
                ("symlink", fs.symlink(parent, name, b"x").map(drop)),
                ("unlink", fs.unlink(parent, name)),
                ("rmdir", fs.rmdir(parent, name)),
                ("rename-from", fs.rename(parent, name, ROOT_ID, b"renamed")),
                ("rename-to", fs.rename(ROOT_ID, b"inner", parent, name)),
            ];
            for (op, r) in attempts {
                let at = format!("{op} {shown:?} in {parent}");
                match r {
                    Err(e) if is_bad_name_errno(&e) => {}
                    Err(e @ (DriverError::Timeout { .. } | DriverError::QueueBroken { .. })) => {
                        failures.push(format!("{at}: {e}; stopping here"));
                        break 'all;
                    }
                    Err(e) => failures.push(format!("{at}: {e} (want EINVAL or EPERM)")),
                    Ok(()) => failures.push(format!("{at}: succeeded")),
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "bad names not rejected:\n{}",
        failures.join("\n")
    );
    // Nothing moved or appeared anywhere.
    assert_eq!(fs::read(d.shared_dir().join("inner")).unwrap(), b"inside");
    assert_eq!(
        fs::read(d.shared_dir().join("sub/file")).unwrap(),
        b"inside"
    );
    sentinel.check_untouched();
}

#[test]
fn symlinks_out_of_the_share_are_never_followed() {
    let (d, sentinel, fs) = start();
    let share = d.shared_dir();
    let abs_outside = sentinel.outside.to_string_lossy().into_owned();
    let links: Vec<(&str, String, &[u8])> = vec![
        ("etc_link", "/etc".into(), b"passwd"),
        ("sub/out_link", "../../outside".into(), b"sentinel"),
        ("out_link", "../outside".into(), b"sentinel"),
        ("abs_link", abs_outside, b"sentinel"),
        ("file_link", "../outside/sentinel".into(), b"x"),
    ];
    for (path, target, _) in &links {
        symlink(target, share.join(path)).unwrap();
    }
    let sub = fs.lookup(ROOT_ID, b"sub").unwrap();
    let mut failures = Vec::new();
    for (path, target, child) in &links {
        let (parent, name) = match path.split_once('/') {
            Some((_, n)) => (sub.nodeid, n),
            None => (ROOT_ID, *path),
        };
        let e = fs
            .lookup(parent, name.as_bytes())
            .unwrap_or_else(|e| panic!("lookup {path}: {e}"));
        assert_eq!(
            e.attr.mode & S_IFMT,
            libc::S_IFLNK,
            "{path} is returned as a symlink"
        );
        assert_eq!(
            fs.getattr(e.nodeid).unwrap().mode & S_IFMT,
            libc::S_IFLNK,
            "getattr {path}"
        );
        assert_eq!(
            fs.readlink(e.nodeid).unwrap(),
            target.as_bytes(),
            "readlink {path}"
        );
        let mut must_fail = |op: &str, ok: bool| {
            if ok {
                failures.push(format!("{op} through {path} -> {target} succeeded"));
            }
        };
        must_fail("lookup child", fs.lookup(e.nodeid, child).is_ok());
        must_fail("open O_RDONLY", fs.open(e.nodeid, libc::O_RDONLY).is_ok());
        must_fail("open O_RDWR", fs.open(e.nodeid, libc::O_RDWR).is_ok());
        must_fail("opendir", fs.opendir(e.nodeid).is_ok());
        must_fail(
            "create child",
            fs.create(e.nodeid, b"created", libc::S_IFREG | 0o644, libc::O_RDWR)
                .is_ok(),
        );
        must_fail("mkdir child", fs.mkdir(e.nodeid, b"made", 0o755).is_ok());
        must_fail("readdir", fs.list(e.nodeid).is_ok());
        fs.forget(e.nodeid, 1).unwrap();
    }
    // A symlink the guest makes is just as inert.
    let g = fs
        .symlink(ROOT_ID, b"guest_link", b"../outside")
        .expect("guest symlink");
    assert!(fs::symlink_metadata(share.join("guest_link"))
        .unwrap()
        .file_type()
        .is_symlink());
    if fs.lookup(g.nodeid, b"sentinel").is_ok() {
        failures.push("lookup through guest-made symlink succeeded".into());
    }
    if fs.open(g.nodeid, libc::O_RDONLY).is_ok() {
        failures.push("open of guest-made symlink succeeded".into());
    }
    assert!(
        failures.is_empty(),
        "symlinks followed:\n{}",
        failures.join("\n")
    );
    assert!(!Path::new("/etc/created").exists() && !Path::new("/etc/made").exists());
    sentinel.check_untouched();
}

/// Counters of what the walker managed to do, to show the test did real work.
#[derive(Default, Debug)]
struct WalkStats {
    iterations: u64,
    saw_dir: u64,
    saw_symlink: u64,
    reads: u64,
    writes: u64,
    listings: u64,
    creates: u64,
}

#[test]
fn directory_swapped_for_symlink_during_walk() {
    let (d, sentinel, fs) = start();
    let share = d.shared_dir().to_path_buf();
    fs::create_dir(share.join("swap")).unwrap();
    fs::write(share.join("swap/inner"), b"inside").unwrap();
    symlink("../outside", share.join("swap_alt")).unwrap();
    const MIN_SWAPS: u64 = 1000;
    const ITERATIONS: u64 = 400;

    // A handle to the real directory taken before the race starts.
    let held = fs.lookup(ROOT_ID, b"swap").unwrap();
    assert_eq!(held.attr.mode & S_IFMT, libc::S_IFDIR);

    let stop = AtomicBool::new(false);
    let swaps = AtomicU64::new(0);
    let mut violations: Vec<String> = Vec::new();
    let mut stats = WalkStats::default();
    let mut created: Vec<String> = Vec::new();

    std::thread::scope(|s| {
        let swapper = s.spawn(|| {
            let a = c_path(&share.join("swap"));
            let b = c_path(&share.join("swap_alt"));
            while !stop.load(Ordering::Relaxed) {
                // SAFETY: two valid NUL-terminated paths; renameat2 with
                // RENAME_EXCHANGE atomically swaps the two names.
                let rc = unsafe {
                    libc::renameat2(
                        libc::AT_FDCWD,
                        a.as_ptr(),
                        libc::AT_FDCWD,
                        b.as_ptr(),
                        libc::RENAME_EXCHANGE,
                    )
                };
                assert_eq!(rc, 0, "renameat2: {}", std::io::Error::last_os_error());
                swaps.fetch_add(1, Ordering::Relaxed);
                std::thread::yield_now();
            }
        });

        let mut i = 0u64;
        while i < ITERATIONS || swaps.load(Ordering::Relaxed) < MIN_SWAPS {
            if i > 50 * ITERATIONS {
                break;
            }
            walk_once(
                &fs,
                i,
                held.nodeid,
                &mut stats,
                &mut violations,
                &mut created,
            );
            i += 1;
        }
        stop.store(true, Ordering::Relaxed);
        swapper.join().expect("swapper thread");
    });

    let swaps = swaps.load(Ordering::Relaxed);
    eprintln!("swap race: {swaps} swaps, {stats:?}");
    assert!(violations.is_empty(), "escapes:\n{}", violations.join("\n"));
    assert!(swaps >= MIN_SWAPS, "only {swaps} swaps happened");
    assert!(
        stats.saw_dir > 0 && stats.saw_symlink > 0,
        "race never hit both states: {stats:?}"
    );
    assert!(
        stats.reads > 0 && stats.listings > 0,
        "walker did no real work: {stats:?}"
    );
    sentinel.check_untouched();
    // Whatever was created landed in the real directory.
    let real = if share.join("swap").is_dir() && !share.join("swap").is_symlink() {
        share.join("swap")
    } else {
        share.join("swap_alt")
    };
    for name in &created {
        assert!(
            real.join(name).exists(),
            "created {name} is not in the share"
        );
    }
    assert_eq!(fs::read(real.join("inner")).unwrap(), b"inside");
    drop(d);
}

fn c_path(p: &Path) -> std::ffi::CString {
    std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap()
}

/// One pass of lookups, reads, writes, listings and creates through `swap`
/// (freshly looked up, so either the directory or the symlink) and through
/// the handle taken before the race.
fn walk_once(
    fs: &FsDriver,
    i: u64,
    held: u64,
    stats: &mut WalkStats,
    violations: &mut Vec<String>,
    created: &mut Vec<String>,
) {
    stats.iterations += 1;
    let check_data = |what: &str, data: &[u8], violations: &mut Vec<String>| {
        if contains(data, SENTINEL) || contains(data, b"SENTINEL") {
            violations.push(format!("iteration {i}: {what} returned sentinel bytes"));
        }
    };
    let check_names = |what: &str, names: &[Vec<u8>], violations: &mut Vec<String>| {
        for n in names {
            if n == SENTINEL_NAME.as_bytes() || n == b"sentinel" {
                violations.push(format!(
                    "iteration {i}: {what} listed {:?}",
                    String::from_utf8_lossy(n)
                ));
            }
        }
    };

    let mut dirs = vec![held];
    let fresh = fs.lookup(ROOT_ID, b"swap");
    let mut fresh_id = None;
    match &fresh {
        Ok(e) if e.attr.mode & S_IFMT == libc::S_IFDIR => {
            stats.saw_dir += 1;
            dirs.push(e.nodeid);
            fresh_id = Some(e.nodeid);
        }
        Ok(e) => {
            stats.saw_symlink += 1;
            fresh_id = Some(e.nodeid);
            if fs.lookup(e.nodeid, b"inner").is_ok() {
                violations.push(format!(
                    "iteration {i}: lookup through symlink node succeeded"
                ));
            }
            if fs.open(e.nodeid, libc::O_RDONLY).is_ok() {
                violations.push(format!("iteration {i}: open of symlink node succeeded"));
            }
        }
        Err(_) => {}
    }

    for (k, &dir) in dirs.iter().enumerate() {
        if fs.lookup(dir, SENTINEL_NAME.as_bytes()).is_ok() {
            violations.push(format!("iteration {i}: lookup found {SENTINEL_NAME}"));
        }
        if let Ok(inner) = fs.lookup(dir, b"inner") {
            if let Ok(o) = fs.open(inner.nodeid, libc::O_RDWR) {
                if let Ok(data) = fs.read(inner.nodeid, o.fh, 0, 4096) {
                    stats.reads += 1;
                    check_data("read", &data, violations);
                }
                // Same content back: only a write that lands outside shows.
                if fs.write(inner.nodeid, o.fh, 0, b"inside").is_ok() {
                    stats.writes += 1;
                }
                let _ = fs.release(inner.nodeid, o.fh);
            }
            let _ = fs.forget(inner.nodeid, 1);
        }
        if (i + k as u64) & 1 == 0 {
            if let Ok(list) = fs.list(dir) {
                stats.listings += 1;
                let names: Vec<_> = list.into_iter().map(|e| e.name).collect();
                check_names("readdir", &names, violations);
            }
        } else if let Ok(list) = fs.list_plus(dir) {
            stats.listings += 1;
            let names: Vec<_> = list.iter().map(|e| e.dirent.name.clone()).collect();
            check_names("readdirplus", &names, violations);
            for e in list.iter().filter(|e| e.entry.nodeid != 0) {
                if e.dirent.name != b"." && e.dirent.name != b".." {
                    let _ = fs.forget(e.entry.nodeid, 1);
                }
            }
        }
        let name = format!("created_{i}_{k}");
        if let Ok((e, o)) = fs.create(dir, name.as_bytes(), libc::S_IFREG | 0o644, libc::O_RDWR) {
            stats.creates += 1;
            created.push(name);
            let _ = fs.release(e.nodeid, o.fh);
            let _ = fs.forget(e.nodeid, 1);
        }
    }
    if let Some(id) = fresh_id {
        let _ = fs.forget(id, 1);
    }
}
