//! Hostile lock requests through the real daemon and real virtqueues: a
//! blocking lock behind another owner's must never hold the queue it came
//! on, waiters and lock owners are bounded, flock conflicts behave as
//! between open files, and nonsense lock types are refused. Each case runs
//! on a fresh daemon with the sandbox on and off (see `hostile_util`).

mod hostile_util;

use std::path::Path;
use std::time::{Duration, Instant};

use fuse_backend_rs::abi::fuse_abi::{FlushIn, GetattrIn, Opcode};
use hostile_util::inflight::InFlight;
use hostile_util::{all, errno, lock_body, run_suite, Case};
use msb_tests::daemon_proc::Daemon;
use msb_tests::vhost_driver::{FsDriver, FuseClient, ROOT_ID};
use vm_memory::ByteValued;

/// The whole file.
const ALL: (u64, u64) = (0, u64::MAX >> 1);
/// How long an answer that must come at once may take (generous: TCG
/// guests and loaded CI hosts).
const PROMPT: Duration = Duration::from_secs(5);
/// How long a request that must stay blocked is watched.
const BLOCKED: Duration = Duration::from_millis(300);

fn file_with(root: &Path) -> std::io::Result<()> {
    std::fs::write(root.join("share/f"), b"file data")
}

/// `f` looked up and opened read-write twice: (node, fh1, fh2).
fn open_twice(fs: &FsDriver) -> (u64, u64, u64) {
    let node = fs.lookup(ROOT_ID, b"f").unwrap().nodeid;
    let a = fs.open(node, libc::O_RDWR).unwrap().fh;
    let b = fs.open(node, libc::O_RDWR).unwrap().fh;
    (node, a, b)
}

fn setlk(fs: &FsDriver, node: u64, body: &[u8]) -> i32 {
    errno(fs.call(Opcode::Setlk, node, body, 0))
}

fn getattr_body() -> Vec<u8> {
    GetattrIn::default().as_slice().to_vec()
}

fn blocked_setlkw_never_holds_its_queue(_d: &Daemon, fs: &FsDriver) {
    let (node, a, b) = open_twice(fs);
    assert_eq!(
        setlk(fs, node, &lock_body(a, 1, libc::F_WRLCK, ALL, false)),
        0
    );
    let mut q = InFlight::new(fs, 1, 8);
    q.send(
        0,
        Opcode::Setlkw,
        node,
        &lock_body(b, 2, libc::F_WRLCK, ALL, false),
    );
    assert_eq!(q.wait(0, BLOCKED), None, "SETLKW granted past a held lock");
    // The same queue still answers, while the lock waits.
    q.send(1, Opcode::Getattr, ROOT_ID, &getattr_body());
    assert_eq!(
        q.wait(1, PROMPT),
        Some(0),
        "GETATTR behind a blocked SETLKW"
    );
    let probe = lock_body(b, 3, libc::F_WRLCK, ALL, false);
    q.send(2, Opcode::Setlk, node, &probe);
    assert_eq!(q.wait(2, PROMPT), Some(libc::EAGAIN), "a third owner");
    // The holder lets go (on the same queue): the waiter gets it.
    q.send(
        3,
        Opcode::Setlk,
        node,
        &lock_body(a, 1, libc::F_UNLCK, ALL, false),
    );
    assert_eq!(q.wait(3, PROMPT), Some(0));
    assert_eq!(q.wait(0, PROMPT), Some(0), "the waiter after the unlock");
    q.send(
        4,
        Opcode::Setlk,
        node,
        &lock_body(a, 1, libc::F_WRLCK, ALL, false),
    );
    assert_eq!(
        q.wait(4, PROMPT),
        Some(libc::EAGAIN),
        "owner 2 holds it now"
    );
}

fn lock_waiters_are_bounded(_d: &Daemon, fs: &FsDriver) {
    let (node, a, b) = open_twice(fs);
    assert_eq!(
        setlk(fs, node, &lock_body(a, 1, libc::F_WRLCK, ALL, false)),
        0
    );
    // 70 owners wait for read locks (compatible with each other).
    let waiters = 70;
    let mut q = InFlight::new(fs, 1, waiters + 2);
    for i in 0..waiters {
        let body = lock_body(b, 100 + i as u64, libc::F_RDLCK, ALL, false);
        q.send(i, Opcode::Setlkw, node, &body);
    }
    // The ones past the bound are refused at once; the others wait.
    let mut pending: Vec<usize> = (0..waiters).collect();
    let deadline = Instant::now() + PROMPT;
    while pending.len() > 64 && Instant::now() < deadline {
        pending.retain(|&i| match q.wait(i, Duration::ZERO) {
            None => true,
            Some(libc::ENOLCK) => false,
            Some(e) => panic!("waiter {i}: errno {e}"),
        });
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(pending.len(), 64, "waiters left waiting (bound: 64)");
    std::thread::sleep(BLOCKED);
    assert_eq!(
        q.in_flight(),
        64,
        "a waiter was answered while the lock is held"
    );
    q.send(waiters, Opcode::Getattr, ROOT_ID, &getattr_body());
    assert_eq!(q.wait(waiters, PROMPT), Some(0), "GETATTR with 64 waiting");
    let unlock = lock_body(a, 1, libc::F_UNLCK, ALL, false);
    q.send(waiters + 1, Opcode::Setlk, node, &unlock);
    assert_eq!(q.wait(waiters + 1, PROMPT), Some(0));
    for i in pending {
        assert_eq!(q.wait(i, PROMPT), Some(0), "waiter {i} after the unlock");
    }
}

fn flock_behind_another_handle(_d: &Daemon, fs: &FsDriver) {
    let (node, a, b) = open_twice(fs);
    assert_eq!(
        setlk(fs, node, &lock_body(a, 1, libc::F_WRLCK, ALL, true)),
        0
    );
    assert_eq!(
        setlk(fs, node, &lock_body(b, 1, libc::F_RDLCK, ALL, true)),
        libc::EAGAIN,
        "flock is per open file, not per owner"
    );
    let mut q = InFlight::new(fs, 1, 4);
    q.send(
        0,
        Opcode::Setlkw,
        node,
        &lock_body(b, 2, libc::F_WRLCK, ALL, true),
    );
    assert_eq!(q.wait(0, BLOCKED), None, "flock granted past a held one");
    q.send(1, Opcode::Getattr, ROOT_ID, &getattr_body());
    assert_eq!(q.wait(1, PROMPT), Some(0), "GETATTR behind a blocked flock");
    // Closing the holder's file drops its flock.
    let release = fuse_backend_rs::abi::fuse_abi::ReleaseIn {
        fh: a,
        flags: libc::O_RDWR as u32,
        release_flags: 2, // FUSE_RELEASE_FLOCK_UNLOCK
        lock_owner: 1,
    };
    q.send(2, Opcode::Release, node, release.as_slice());
    assert_eq!(q.wait(2, PROMPT), Some(0));
    assert_eq!(
        q.wait(0, PROMPT),
        Some(0),
        "the waiter after the holder closed"
    );
}

fn lock_owners_are_bounded(d: &Daemon, fs: &FsDriver) {
    let (node, a, _) = open_twice(fs);
    let fds = d.open_fds().unwrap();
    let mut held = Vec::new();
    let mut refused = 0;
    for owner in 0..40u64 {
        let range = (owner * 10, owner * 10 + 4);
        match setlk(fs, node, &lock_body(a, owner, libc::F_WRLCK, range, false)) {
            0 => held.push(owner),
            libc::ENOLCK => refused += 1,
            e => panic!("owner {owner}: errno {e}"),
        }
    }
    assert!(
        held.len() <= 16 && refused > 0,
        "{} owners held",
        held.len()
    );
    assert!(
        d.open_fds().unwrap() <= fds + 16,
        "one fd per owner at most"
    );
    // A FLUSH (close) of one owner makes room for another.
    let flush = FlushIn {
        fh: a,
        unused: 0,
        padding: 0,
        lock_owner: held[0],
    };
    fs.call(Opcode::Flush, node, flush.as_slice(), 0).unwrap();
    let body = lock_body(a, 1000, libc::F_WRLCK, (5000, 5001), false);
    assert_eq!(setlk(fs, node, &body), 0, "after a FLUSH");
}

fn nonsense_lock_requests_are_refused(_d: &Daemon, fs: &FsDriver) {
    let (node, a, _) = open_twice(fs);
    for type_ in [3, 7, -1] {
        let body = lock_body(a, 1, type_, ALL, false);
        assert_eq!(setlk(fs, node, &body), libc::EINVAL, "type {type_}");
        let body = lock_body(a, 1, type_, ALL, true);
        assert_eq!(setlk(fs, node, &body), libc::EINVAL, "flock type {type_}");
    }
    // A lock naming a handle of another inode, or none.
    let dir = fs.mkdir(ROOT_ID, b"d", 0o755).unwrap();
    let body = lock_body(a, 1, libc::F_WRLCK, ALL, false);
    assert_eq!(setlk(fs, dir.nodeid, &body), libc::EBADF);
    let body = lock_body(0xdead, 1, libc::F_WRLCK, ALL, false);
    assert_eq!(setlk(fs, node, &body), libc::EBADF);
    // The file is still lockable.
    let body = lock_body(a, 1, libc::F_WRLCK, ALL, false);
    assert_eq!(setlk(fs, node, &body), 0);
}

/// Blocking locks never hold a queue; bounded waiters and owners.
const LOCKS: [Case; 5] = [
    Case::new(
        "SETLKW behind another owner's lock never holds its queue",
        &[],
        blocked_setlkw_never_holds_its_queue,
    )
    .prepared(file_with),
    Case::new(
        "70 SETLKW waiters: 64 wait, the rest ENOLCK",
        &[],
        lock_waiters_are_bounded,
    )
    .prepared(file_with),
    Case::new(
        "flock behind another handle's flock",
        &[],
        flock_behind_another_handle,
    )
    .prepared(file_with),
    Case::new(
        "lock owners past the bound",
        &["--max-inode-fds", "64"],
        lock_owners_are_bounded,
    )
    .prepared(file_with),
    Case::new(
        "lock types and handles that make no sense",
        &[],
        nonsense_lock_requests_are_refused,
    )
    .prepared(file_with),
];

#[test]
fn hostile_locks_each_on_a_fresh_daemon_with_the_sandbox_on_and_off() {
    run_suite(file!(), &all(&[&LOCKS[..]]));
}
