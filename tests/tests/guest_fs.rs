//! Real guest (Debian cloud kernel under QEMU TCG) doing file operations on a
//! virtiofs mount served by `virtiofsd-msb`; the host checks the results.
//! Needs `scripts/setup.sh` (qemu, kernel) and a built daemon
//! (`cargo build -p virtiofsd-msb`); see `msb_tests::qemu`.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use msb_tests::qemu::{start_daemon, GuestConfig, GuestOutcome};

const HOST_TEXT: &str = "made on the host";

/// The guest-visible mode bits of a host file: from the stat-virtualization
/// record `user.msb.override_stat` when the daemon keeps one, else st_mode.
fn guest_visible_mode(path: &Path) -> u32 {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).expect("path without NUL");
    let mut record = [0u8; 20];
    // SAFETY: both pointers are valid for the given lengths for the whole
    // call (NUL-terminated path, 20-byte buffer).
    let n = unsafe {
        libc::lgetxattr(
            c_path.as_ptr(),
            c"user.msb.override_stat".as_ptr(),
            record.as_mut_ptr().cast(),
            record.len(),
        )
    };
    if n == 20 && record[0] == 1 {
        let mode = u32::from_le_bytes(record[12..16].try_into().expect("4 bytes"));
        return mode & 0o7777;
    }
    fs::symlink_metadata(path)
        .expect("stat")
        .permissions()
        .mode()
        & 0o7777
}

/// `find . | sort` of `dir`, as the guest prints it (byte order, space-joined).
fn find_listing(dir: &Path) -> String {
    fn walk(base: &Path, rel: &str, out: &mut Vec<String>) {
        out.push(rel.to_string());
        let path = base.join(rel);
        let meta = fs::symlink_metadata(&path).expect("stat");
        if meta.is_dir() {
            for entry in fs::read_dir(&path).expect("read_dir") {
                let name = entry.expect("entry").file_name();
                walk(base, &format!("{rel}/{}", name.to_string_lossy()), out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, ".", &mut out);
    out.sort();
    out.iter().map(|p| format!("{p} ")).collect()
}

fn check_daemon_exit(out: &GuestOutcome) {
    let exit = out.daemon.exit_on_disconnect;
    assert!(
        exit.is_some_and(|s| s.success()) && out.daemon.socket_removed,
        "after QEMU disconnected the daemon should exit 0 by itself and remove its socket \
         (exit {exit:?}, socket removed {})\n{}",
        out.daemon.socket_removed,
        out.report()
    );
}

/// Create, write, read back, append, rename, hard-link, symlink, list, chmod,
/// truncate, lock and remove through the guest; check the host side.
#[test]
fn guest_file_operations_reach_the_host() {
    let daemon = start_daemon(&[]).expect("start virtiofsd-msb");
    let share = daemon.shared_dir().to_path_buf();
    fs::write(share.join("host_made.txt"), HOST_TEXT).expect("write host file");
    let out = GuestConfig::new(include_str!("../guest/fs_ops.sh"))
        .daemon(daemon)
        .env("HOST_TEXT", HOST_TEXT)
        .timeout(Duration::from_secs(90))
        .run()
        .expect("guest harness");
    eprintln!(
        "guest_fs: boot {:?} s, script end {:?} s, wall {:.1?}",
        out.boot_secs, out.end_secs, out.elapsed
    );
    out.assert_passed();
    let report = out.report();
    let w = share.join("work");
    let meta = |p: &str| {
        fs::symlink_metadata(w.join(p)).unwrap_or_else(|e| panic!("host: {p}: {e}\n{report}"))
    };
    let absent = |p: &str| {
        assert!(
            fs::symlink_metadata(w.join(p)).is_err(),
            "host: {p} should be gone\n{report}"
        );
    };

    // renamed.txt: written, appended, truncated to 5, chmod 640, mtime set.
    assert_eq!(
        fs::read(w.join("renamed.txt")).expect("read renamed.txt"),
        b"hello",
        "{report}"
    );
    let m = meta("renamed.txt");
    assert_eq!(m.nlink(), 1, "renamed.txt link count\n{report}");
    assert_eq!(m.mtime(), 981_173_106, "renamed.txt mtime\n{report}");
    assert_eq!(
        guest_visible_mode(&w.join("renamed.txt")),
        0o640,
        "renamed.txt mode\n{report}"
    );
    assert_eq!(out.result("renamed_mode"), "640");

    // seq.txt moved into dir/sub, plus a kept hard link.
    let expected_seq: String = (1..=20000).map(|i| format!("{i}\n")).collect();
    let seq = fs::read_to_string(w.join("dir/sub/seq.txt")).expect("read seq.txt");
    assert!(
        seq == expected_seq,
        "host: dir/sub/seq.txt contents differ ({} bytes)\n{report}",
        seq.len()
    );
    let (a, b) = (meta("dir/sub/seq.txt"), meta("seq.hard"));
    assert_eq!(
        (a.nlink(), a.ino()),
        (2, b.ino()),
        "seq.txt / seq.hard link\n{report}"
    );

    // big.bin: 1 MiB of 'z' with "XYZ" at 1000, mode 600.
    let big = fs::read(w.join("big.bin")).expect("read big.bin");
    assert_eq!(big.len(), 1 << 20, "{report}");
    assert_eq!(&big[1000..1003], b"XYZ", "{report}");
    let stray = big
        .iter()
        .enumerate()
        .filter(|(i, &c)| !(1000..1003).contains(i) && c != b'z')
        .count();
    assert_eq!(stray, 0, "big.bin has {stray} wrong bytes\n{report}");
    assert_eq!(
        guest_visible_mode(&w.join("big.bin")),
        0o600,
        "big.bin mode\n{report}"
    );

    // Symlinks stay symlinks with the guest's text.
    assert_eq!(
        fs::read_link(w.join("sym")).expect("readlink sym"),
        Path::new("renamed.txt")
    );
    assert_eq!(
        fs::read_link(w.join("dirlink")).expect("readlink dirlink"),
        Path::new("../work/dir/sub")
    );

    // Directories and modes.
    assert!(meta("dir").is_dir() && meta("dir/sub").is_dir(), "{report}");
    assert_eq!(
        guest_visible_mode(&w.join("dir")),
        0o711,
        "dir mode\n{report}"
    );

    // Sizes.
    let sparse = fs::read(w.join("sparse.bin")).expect("read sparse.bin");
    assert!(
        sparse.len() == 100_000 && sparse.iter().all(|&c| c == 0),
        "sparse.bin\n{report}"
    );
    assert_eq!(meta("otrunc.txt").len(), 0, "{report}");
    assert_eq!(meta("falloc.bin").len(), 65536, "{report}");
    assert!(meta("lockfile").is_file(), "{report}");
    assert_eq!(
        fs::read_to_string(share.join("host_made.txt")).expect("host file"),
        HOST_TEXT
    );

    // Removed and renamed-away names are gone.
    for p in [
        "hello.txt",
        "src.txt",
        "victim.txt",
        "hard.txt",
        "many",
        "dangling",
        "dir/moved",
        "dir/sub/deeper",
    ] {
        absent(p);
    }

    // The whole tree, as the host and as the guest saw it.
    let expected =
        ". ./big.bin ./dir ./dir/sub ./dir/sub/seq.txt ./dirlink ./falloc.bin ./lockfile \
                    ./otrunc.txt ./renamed.txt ./seq.hard ./sparse.bin ./sym ";
    assert_eq!(find_listing(&w), expected, "host tree\n{report}");
    assert_eq!(out.result("listing"), expected, "guest listing");

    check_daemon_exit(&out);
}

/// A flock taken in the guest is a real lock on the host file: a host process
/// cannot take a conflicting flock while the guest holds it.
#[test]
fn guest_flock_is_seen_by_the_host() {
    let daemon = start_daemon(&[]).expect("start virtiofsd-msb");
    let share = daemon.shared_dir().to_path_buf();
    let script = ". /lib/msb-test.sh\n\
                  run 'hold an exclusive flock' msb-lock hold /mnt/held.lock /mnt/lock-ready /mnt/lock-ack 40\n\
                  msb_finish\n";
    let mut guest = GuestConfig::new(script)
        .daemon(daemon)
        .timeout(Duration::from_secs(60))
        .start()
        .expect("guest harness");
    let ready = share.join("lock-ready");
    let deadline = Instant::now() + Duration::from_secs(50);
    while !ready.exists()
        && Instant::now() < deadline
        && !guest.wait_for_serial("MSB-TEST-END", Duration::from_millis(50))
    {}
    let host_try = if ready.exists() {
        let file = fs::File::open(share.join("held.lock")).expect("host open held.lock");
        // SAFETY: flock(2) on an fd owned by `file`, which outlives the call.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        let errno = std::io::Error::last_os_error();
        Some(if rc == 0 { Ok(()) } else { Err(errno) })
    } else {
        None
    };
    fs::write(share.join("lock-ack"), b"").expect("write lock-ack");
    let out = guest.wait();
    out.assert_passed();
    let host_try =
        host_try.unwrap_or_else(|| panic!("guest never signalled lock-ready\n{}", out.report()));
    assert!(
        matches!(&host_try, Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK)),
        "host flock(LOCK_EX|LOCK_NB) while the guest held the lock: {host_try:?}; \
         want EWOULDBLOCK (guest flock must be passed through to the host file)\n{}",
        out.report()
    );
    // Released when the guest unlocked.
    let file = fs::File::open(share.join("held.lock")).expect("host open held.lock");
    // SAFETY: as above.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    assert_eq!(
        rc,
        0,
        "lock still held after the guest released it: {}",
        std::io::Error::last_os_error()
    );
}

/// fcntl(2) record locks through the share follow POSIX: they conflict
/// between processes, not between two descriptors of one process, and
/// another process closing the file (FUSE_FLUSH with its own lock owner) does
/// not drop them.
#[test]
fn guest_posix_locks_follow_posix_semantics() {
    let daemon = start_daemon(&[]).expect("start virtiofsd-msb");
    let script = ". /lib/msb-test.sh\n\
                  run 'posix lock semantics' msb-lock posix-selftest /mnt/posix.lock\n\
                  msb_finish\n";
    let out = GuestConfig::new(script)
        .daemon(daemon)
        .timeout(Duration::from_secs(60))
        .run()
        .expect("guest harness");
    out.assert_passed();
}

/// The harness itself: a guest without a share boots, reports the missing
/// mount clearly and still powers off.
#[test]
fn guest_without_share_reports_mount_failure() {
    let out = GuestConfig::new("echo should not run; exit 0\n")
        .kernel_arg("msb.tag=absent")
        .timeout(Duration::from_secs(60))
        .run()
        .expect("guest harness");
    assert_eq!(out.status, Some(125), "{}", out.report());
    assert!(out.mount_failure().is_some(), "{}", out.report());
    assert!(!out.serial.contains("should not run"), "{}", out.report());
}
