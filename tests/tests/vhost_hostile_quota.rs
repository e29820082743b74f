//! Hostile guests against the quota, through the real daemon and real
//! virtqueues: every way a guest can put bytes on the host disk (writes to
//! unlinked-but-open files, renames over open files, fallocate, truncate,
//! copy_file_range, hard links, sparse and append writes, requests racing
//! on several queues) stays within `--quota-mib 8`, checked against what
//! the host really holds. Each case runs on a fresh daemon with the sandbox
//! on and off. Last, a stress test mixing lookups, forgets, inode-fd
//! reclaim, links, renames and unlinks on four queues must end without a
//! deadlock and with the count equal to the host's.

mod hostile_util;

use std::sync::atomic::{AtomicU64, Ordering};

use fuse_backend_rs::abi::fuse_abi::Opcode;
use hostile_util::{
    all, copy_range, errno, fallocate, host_bytes, link, run_suite, truncate, unlinked_open_bytes,
    Case,
};
use msb_tests::daemon_proc::Daemon;
use msb_tests::vhost_driver::{FsDriver, FuseClient, QueueClient, ROOT_ID};

const MIB: u64 = 1 << 20;
const LIMIT: u64 = 8 * MIB;
const Q8: &[&str] = &["--quota-mib", "8"];
const CHUNK: usize = 64 << 10;

/// Writes `CHUNK`s at increasing offsets from `start` until ENOSPC or
/// `max` bytes; returns the bytes written. Any other error fails.
fn fill(fs: &impl FuseClient, node: u64, fh: u64, start: u64, max: u64) -> u64 {
    let data = vec![0x5au8; CHUNK];
    let mut done = 0;
    while done < max {
        match fs.write(node, fh, start + done, &data) {
            Ok(n) => done += u64::from(n),
            Err(e) if e.errno() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("write at {}: {e}", start + done),
        }
    }
    done
}

/// Free bytes `statfs` reports.
fn free(fs: &FsDriver) -> u64 {
    let st = fs.statfs(ROOT_ID).unwrap();
    st.bavail * u64::from(st.frsize.max(1))
}

/// What the host holds: linked files plus unlinked ones the server keeps
/// open. Never more than the budget.
fn assert_within(d: &Daemon) -> u64 {
    let held = host_bytes(d.shared_dir()) + unlinked_open_bytes(d);
    assert!(
        held <= LIMIT,
        "host holds {held} bytes under an {LIMIT}-byte quota"
    );
    held
}

fn unlinked_open_file(d: &Daemon, fs: &FsDriver) {
    // exec 3>/q/f; rm /q/f; dd if=/dev/zero bs=1M count=64 >&3
    let (e, o) = fs.create(ROOT_ID, b"f", 0o644, libc::O_RDWR).unwrap();
    fs.unlink(ROOT_ID, b"f").unwrap();
    let written = fill(fs, e.nodeid, o.fh, 0, 64 * MIB);
    assert!(written <= LIMIT, "{written} bytes written past the quota");
    assert!(written >= LIMIT - CHUNK as u64, "only {written} bytes fit");
    assert_within(d);
    assert!(free(fs) < CHUNK as u64, "statfs forgets the open file");
    // Its last holder goes: the bytes come back.
    fs.release(e.nodeid, o.fh).unwrap();
    fs.forget(e.nodeid, 1).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while free(fs) < LIMIT - CHUNK as u64 {
        assert!(
            std::time::Instant::now() < deadline,
            "bytes never came back"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn rename_over_open_file(d: &Daemon, fs: &FsDriver) {
    let (a, ao) = fs.create(ROOT_ID, b"a", 0o644, libc::O_RDWR).unwrap();
    assert_eq!(fill(fs, a.nodeid, ao.fh, 0, 6 * MIB), 6 * MIB);
    fs.create(ROOT_ID, b"b", 0o644, libc::O_RDWR).unwrap();
    fs.rename(ROOT_ID, b"b", ROOT_ID, b"a").unwrap();
    // The replaced file is still open and still grows.
    fill(fs, a.nodeid, ao.fh, 6 * MIB, MIB);
    let (c, co) = fs.create(ROOT_ID, b"c", 0o644, libc::O_RDWR).unwrap();
    let more = fill(fs, c.nodeid, co.fh, 0, 8 * MIB);
    assert!(
        more <= MIB + CHUNK as u64,
        "{more} bytes beside an open replaced file"
    );
    assert_within(d);
}

fn fallocate_past_the_budget(d: &Daemon, fs: &FsDriver) {
    let (e, o) = fs.create(ROOT_ID, b"f", 0o644, libc::O_RDWR).unwrap();
    assert_eq!(
        errno(fallocate(fs, e.nodeid, o.fh, 0, 0, 16 * MIB)),
        libc::ENOSPC
    );
    assert_eq!(
        fs.getattr(e.nodeid).unwrap().size,
        0,
        "a refused fallocate grew the file"
    );
    let keep = libc::FALLOC_FL_KEEP_SIZE as u32;
    assert_eq!(
        errno(fallocate(fs, e.nodeid, o.fh, keep, 0, 4 * MIB)),
        libc::EOPNOTSUPP
    );
    fallocate(fs, e.nodeid, o.fh, 0, 0, 7 * MIB).unwrap();
    assert_eq!(
        errno(fallocate(fs, e.nodeid, o.fh, 0, 7 * MIB, 2 * MIB)),
        libc::ENOSPC
    );
    let punch = (libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE) as u32;
    fallocate(fs, e.nodeid, o.fh, punch, 0, MIB).unwrap();
    assert_within(d);
}

fn truncate_up_past_the_budget(d: &Daemon, fs: &FsDriver) {
    let (e, o) = fs.create(ROOT_ID, b"f", 0o644, libc::O_RDWR).unwrap();
    assert_eq!(errno(truncate(fs, e.nodeid, 0, 1 << 40)), libc::ENOSPC);
    assert_eq!(errno(truncate(fs, e.nodeid, o.fh, 9 * MIB)), libc::ENOSPC);
    truncate(fs, e.nodeid, o.fh, 6 * MIB).unwrap();
    let (g, go) = fs.create(ROOT_ID, b"g", 0o644, libc::O_RDWR).unwrap();
    assert!(fill(fs, g.nodeid, go.fh, 0, 8 * MIB) <= 2 * MIB);
    // Shrinking gives back.
    truncate(fs, e.nodeid, 0, 0).unwrap();
    assert!(fill(fs, g.nodeid, go.fh, 2 * MIB, 8 * MIB) >= 5 * MIB);
    assert_within(d);
}

fn copy_file_range_doubling(d: &Daemon, fs: &FsDriver) {
    let (a, ao) = fs.create(ROOT_ID, b"a", 0o644, libc::O_RDWR).unwrap();
    assert_eq!(fill(fs, a.nodeid, ao.fh, 0, 3 * MIB), 3 * MIB);
    let (b, bo) = fs.create(ROOT_ID, b"b", 0o644, libc::O_RDWR).unwrap();
    let mut copies = 0;
    for i in 0..4u64 {
        match copy_range(
            fs,
            (a.nodeid, ao.fh, 0),
            (b.nodeid, bo.fh, i * 3 * MIB),
            3 * MIB,
        ) {
            Ok(_) => copies += 1,
            Err(e) => assert_eq!(e.errno(), Some(libc::ENOSPC), "{e}"),
        }
    }
    assert_eq!(copies, 1, "a 3 MiB copy fits once beside 3 MiB in 8 MiB");
    assert_within(d);
}

fn hard_links_count_once(d: &Daemon, fs: &FsDriver) {
    let (a, ao) = fs.create(ROOT_ID, b"a", 0o644, libc::O_RDWR).unwrap();
    assert_eq!(fill(fs, a.nodeid, ao.fh, 0, 5 * MIB), 5 * MIB);
    fs.release(a.nodeid, ao.fh).unwrap();
    link(fs, a.nodeid, ROOT_ID, b"b").unwrap();
    link(fs, a.nodeid, ROOT_ID, b"c").unwrap();
    fs.unlink(ROOT_ID, b"a").unwrap();
    fs.unlink(ROOT_ID, b"b").unwrap();
    let (f, fo) = fs.create(ROOT_ID, b"f", 0o644, libc::O_RDWR).unwrap();
    let more = fill(fs, f.nodeid, fo.fh, 0, 8 * MIB);
    assert!(
        (2 * MIB..=3 * MIB).contains(&more),
        "{more}: links counted more than once, or their bytes freed early"
    );
    assert_within(d);
}

fn sparse_and_append_writes(d: &Daemon, fs: &FsDriver) {
    let (e, o) = fs.create(ROOT_ID, b"s", 0o644, libc::O_RDWR).unwrap();
    assert_eq!(
        errno(fs.write(e.nodeid, o.fh, 100 * MIB, b"x")),
        libc::ENOSPC
    );
    fs.write(e.nodeid, o.fh, 4 * MIB, b"x").unwrap();
    let (a, _) = fs.create(ROOT_ID, b"app", 0o644, libc::O_RDWR).unwrap();
    let ao = fs.open(a.nodeid, libc::O_WRONLY | libc::O_APPEND).unwrap();
    // An append lands at the end whatever offset the guest claims.
    let written = fill(fs, a.nodeid, ao.fh, 0, 8 * MIB);
    assert!(written <= 4 * MIB, "{written} appended beside 4 MiB");
    assert_within(d);
}

fn writes_racing_on_four_queues(d: &Daemon, fs: &FsDriver) {
    let total = AtomicU64::new(0);
    std::thread::scope(|s| {
        for q in 0..4 {
            let total = &total;
            s.spawn(move || {
                let c = QueueClient::new(fs, q);
                let name = format!("q{q}");
                let (e, o) = c
                    .create(ROOT_ID, name.as_bytes(), 0o644, libc::O_RDWR)
                    .unwrap();
                if q % 2 == 1 {
                    c.unlink(ROOT_ID, name.as_bytes()).unwrap();
                }
                total.fetch_add(fill(&c, e.nodeid, o.fh, 0, 8 * MIB), Ordering::Relaxed);
            });
        }
    });
    let total = total.load(Ordering::Relaxed);
    assert!(total <= LIMIT, "{total} bytes written by racing queues");
    assert_within(d);
}

fn tmpfile_flags_make_no_anonymous_file(d: &Daemon, fs: &FsDriver) {
    const O_TMPFILE: i32 = 0o20200000;
    let dir = fs.mkdir(ROOT_ID, b"dir", 0o755).unwrap();
    assert_ne!(errno(fs.open(dir.nodeid, O_TMPFILE | libc::O_RDWR)), 0);
    if let Ok((e, o)) = fs.create(ROOT_ID, b"t", 0o644, O_TMPFILE | libc::O_RDWR) {
        // Made as a plain, linked file.
        fs.write(e.nodeid, o.fh, 0, b"visible").unwrap();
        assert_eq!(std::fs::read(d.shared_dir().join("t")).unwrap(), b"visible");
    }
    assert_eq!(unlinked_open_bytes(d), 0);
    assert_eq!(fs.list(dir.nodeid).unwrap().len(), 2, "only . and ..");
}

/// A share already past its budget (laid out before the daemon started).
fn over_budget_share(root: &std::path::Path) -> std::io::Result<()> {
    std::fs::write(root.join("share/big"), vec![1u8; 9 << 20])?;
    std::fs::write(root.join("share/small"), b"s")
}

fn no_new_entries_over_the_budget(_d: &Daemon, fs: &FsDriver) {
    let small = fs.lookup(ROOT_ID, b"small").unwrap();
    for r in [
        errno(fs.mkdir(ROOT_ID, b"d", 0o755)),
        errno(fs.create(ROOT_ID, b"n", 0o644, libc::O_RDWR)),
        errno(fs.symlink(ROOT_ID, b"l", b"target")),
        errno(link(fs, small.nodeid, ROOT_ID, b"h")),
    ] {
        assert_eq!(r, libc::ENOSPC);
    }
    // Shrinking still works, and then there is room again.
    fs.unlink(ROOT_ID, b"big").unwrap();
    fs.mkdir(ROOT_ID, b"d", 0o755).unwrap();
}

/// Empty files cost no bytes, but names are bounded: one per KiB of budget.
fn empty_entries_are_bounded(d: &Daemon, fs: &FsDriver) {
    let mut made = 0;
    for i in 0..3000 {
        let name = format!("e{i}");
        let r = if i % 3 == 0 {
            fs.mkdir(ROOT_ID, name.as_bytes(), 0o755).map(drop)
        } else {
            fs.create(ROOT_ID, name.as_bytes(), 0o644, libc::O_RDONLY)
                .map(|(e, o)| fs.release(e.nodeid, o.fh).unwrap())
        };
        match r {
            Ok(()) => made += 1,
            Err(e) => {
                assert_eq!(e.errno(), Some(libc::ENOSPC), "{e}");
                break;
            }
        }
    }
    assert_eq!(made, 1024, "names allowed under a 1 MiB quota");
    let host = std::fs::read_dir(d.shared_dir()).unwrap().count();
    assert_eq!(host, 1024);
    fs.unlink(ROOT_ID, b"e1").unwrap();
    fs.create(ROOT_ID, b"again", 0o644, libc::O_RDONLY).unwrap();
    assert_eq!(errno(fs.symlink(ROOT_ID, b"l", b"t")), libc::ENOSPC);
}

/// Every way to put bytes on the host.
const BYTES: [Case; 11] = [
    Case::new(
        "unlinked-but-open file written past the quota",
        Q8,
        unlinked_open_file,
    ),
    Case::new(
        "rename over an open file, then more writes",
        Q8,
        rename_over_open_file,
    ),
    Case::new(
        "fallocate past the budget, KEEP_SIZE, punch",
        Q8,
        fallocate_past_the_budget,
    ),
    Case::new(
        "truncate up past the budget",
        Q8,
        truncate_up_past_the_budget,
    ),
    Case::new("copy_file_range doubling", Q8, copy_file_range_doubling),
    Case::new("hard links count once", Q8, hard_links_count_once),
    Case::new("sparse and append writes", Q8, sparse_and_append_writes),
    Case::new(
        "writes racing on four queues",
        Q8,
        writes_racing_on_four_queues,
    )
    .queues(4),
    Case::new(
        "O_TMPFILE flags make no anonymous file",
        Q8,
        tmpfile_flags_make_no_anonymous_file,
    ),
    Case::new(
        "empty files and directories are bounded",
        &["--quota-mib", "1"],
        empty_entries_are_bounded,
    ),
    Case::new(
        "no new entries once over",
        Q8,
        no_new_entries_over_the_budget,
    )
    .prepared(over_budget_share),
];

/// Four queues: each makes, writes, links, renames (replacing its last
/// file), unlinks and forgets its own files, looks up another queue's
/// (racing its removal), and every third round writes to a file after its
/// last link went. With only 16 inode fds, reclaim runs all the time.
fn stress(d: &Daemon, fs: &FsDriver) {
    let rounds = 150;
    std::thread::scope(|s| {
        for q in 0..4usize {
            s.spawn(move || {
                let c = QueueClient::new(fs, q);
                let last = format!("c{q}");
                for i in 0..rounds {
                    let a = format!("a{q}-{i}");
                    let b = format!("b{q}-{i}");
                    let (e, o) = c
                        .create(ROOT_ID, a.as_bytes(), 0o644, libc::O_RDWR)
                        .unwrap();
                    c.write(e.nodeid, o.fh, 0, &[q as u8; 4096]).unwrap();
                    link(&c, e.nodeid, ROOT_ID, b.as_bytes()).unwrap();
                    let other = format!("a{}-{i}", (q + 1) % 4);
                    if let Ok(x) = c.lookup(ROOT_ID, other.as_bytes()) {
                        c.forget(x.nodeid, 1).unwrap();
                    }
                    c.rename(ROOT_ID, b.as_bytes(), ROOT_ID, last.as_bytes())
                        .unwrap();
                    c.unlink(ROOT_ID, a.as_bytes()).unwrap();
                    if i % 3 == 0 {
                        c.unlink(ROOT_ID, last.as_bytes()).unwrap();
                    }
                    c.write(e.nodeid, o.fh, 4096, &[1; 4096]).unwrap();
                    c.release(e.nodeid, o.fh).unwrap();
                    // The create's lookup and the link's.
                    c.forget(e.nodeid, 2).unwrap();
                    c.call(Opcode::Statfs, ROOT_ID, &[], 80).unwrap();
                }
            });
        }
    });
    // Everything released and forgotten (forgets travel on the hiprio
    // queue: give them a moment): the daemon's count is the host's.
    let host = host_bytes(d.shared_dir());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let st = fs.statfs(ROOT_ID).unwrap();
        let used = 64 * MIB - st.bavail * u64::from(st.frsize);
        if used.abs_diff(host) < u64::from(st.frsize) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "daemon counts {used} bytes, the host holds {host}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(unlinked_open_bytes(d), 0);
}

/// Many requests at once.
const STRESS: [Case; 1] = [Case::new(
    "stress: lookup/forget/reclaim/link/rename/unlink on 4 queues",
    &["--quota-mib", "64", "--max-inode-fds", "16"],
    stress,
)
.queues(4)];

#[test]
fn quota_holds_each_case_on_a_fresh_daemon_with_the_sandbox_on_and_off() {
    run_suite(file!(), &all(&[&BYTES, &STRESS]));
}
