//! `msb-lock`: a tiny static guest helper for the lock tests (busybox has no
//! `flock` applet). Built by scripts/build-test-initramfs.sh with plain `rustc`
//! (std only, crt-static) and installed as /bin/msb-lock in the test initramfs.
//!
//! Commands (exit 0 when every check holds, 1 otherwise, 2 on usage errors):
//! - `flock-selftest FILE`: flock(2) semantics between open file descriptions.
//! - `posix-selftest FILE`: fcntl(2) record locks: between processes (this
//!   one and children running `posix-probe`), between two descriptors of one
//!   process, and across another process closing the file.
//! - `posix-probe FILE GO`: the child half of `posix-selftest` (waits for the
//!   file GO to exist, then checks the parent's locks from outside).
//! - `hold FILE READY ACK SECS`: take an exclusive flock on FILE, create READY,
//!   wait up to SECS seconds for ACK to exist, release the lock.
//!
//! Every check prints one line `msb-lock: ok <what>` or `msb-lock: FAIL <what>`.

use std::ffi::{c_int, c_short};
use std::fs::{File, OpenOptions, TryLockError};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

const F_GETLK: c_int = 5;
const F_SETLK: c_int = 6;
const F_RDLCK: c_short = 0;
const F_WRLCK: c_short = 1;
const F_UNLCK: c_short = 2;

/// `struct flock` of x86_64 Linux.
#[repr(C)]
#[derive(Clone, Copy)]
struct Flock {
    l_type: c_short,
    l_whence: c_short,
    l_start: i64,
    l_len: i64,
    l_pid: i32,
}

unsafe extern "C" {
    fn fcntl(fd: c_int, cmd: c_int, ...) -> c_int;
}

/// One fcntl lock command on `file` for bytes `start..start+len`.
fn posix_lock(
    file: &File,
    cmd: c_int,
    kind: c_short,
    start: i64,
    len: i64,
) -> std::io::Result<Flock> {
    let mut fl = Flock {
        l_type: kind,
        l_whence: 0,
        l_start: start,
        l_len: len,
        l_pid: 0,
    };
    // SAFETY: `fl` is a valid, writable `struct flock` for the duration of the
    // call and the fd is owned by `file`, which outlives the call.
    let rc = unsafe { fcntl(file.as_raw_fd(), cmd, &mut fl as *mut Flock) };
    if rc == -1 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(fl)
    }
}

struct Checker {
    failed: bool,
}

impl Checker {
    fn check(&mut self, what: &str, ok: bool, detail: String) {
        if ok {
            println!("msb-lock: ok {what}");
        } else {
            println!("msb-lock: FAIL {what}: {detail}");
            self.failed = true;
        }
    }

    fn exit(self) -> ExitCode {
        if self.failed {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        }
    }
}

fn open_rw(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
}

fn describe(r: &Result<(), TryLockError>) -> String {
    match r {
        Ok(()) => "acquired".to_string(),
        Err(TryLockError::WouldBlock) => "would block".to_string(),
        Err(TryLockError::Error(e)) => format!("error: {e}"),
    }
}

fn would_block(r: &Result<(), TryLockError>) -> bool {
    matches!(r, Err(TryLockError::WouldBlock))
}

fn flock_selftest(path: &Path) -> std::io::Result<ExitCode> {
    let mut c = Checker { failed: false };
    let a = open_rw(path)?;
    let b = open_rw(path)?;
    let r = a.lock();
    c.check("flock exclusive on fd A", r.is_ok(), format!("{r:?}"));
    let r = b.try_lock();
    c.check(
        "flock exclusive on fd B conflicts",
        would_block(&r),
        describe(&r),
    );
    let r = b.try_lock_shared();
    c.check(
        "flock shared on fd B conflicts",
        would_block(&r),
        describe(&r),
    );
    let r = a.unlock();
    c.check("flock unlock fd A", r.is_ok(), format!("{r:?}"));
    let r = b.try_lock();
    c.check(
        "flock exclusive on fd B after unlock",
        r.is_ok(),
        describe(&r),
    );
    let r = b.unlock();
    c.check("flock unlock fd B", r.is_ok(), format!("{r:?}"));
    let r = a.lock_shared();
    c.check("flock shared on fd A", r.is_ok(), format!("{r:?}"));
    let r = b.try_lock_shared();
    c.check("flock shared on fd B alongside A", r.is_ok(), describe(&r));
    let third = open_rw(path)?;
    let r = third.try_lock();
    c.check(
        "flock exclusive on fd C conflicts with shared",
        would_block(&r),
        describe(&r),
    );
    drop(a);
    drop(b);
    let r = third.try_lock();
    c.check("flock released on close", r.is_ok(), describe(&r));
    Ok(c.exit())
}

/// Starts `posix-probe FILE GO` now; it opens FILE only once GO exists, so it
/// never inherits (and never closes) one of our descriptors of FILE.
fn spawn_probe(path: &Path, go: &Path) -> std::io::Result<std::process::Child> {
    let _ = std::fs::remove_file(go);
    Command::new(std::env::current_exe()?)
        .arg("posix-probe")
        .arg(path)
        .arg(go)
        .stdout(std::process::Stdio::piped())
        .spawn()
}

/// Lets a probe started by [`spawn_probe`] run; true if all its checks held.
fn run_probe(child: std::process::Child, go: &Path) -> std::io::Result<bool> {
    File::create(go)?;
    let out = child.wait_with_output()?;
    print!("{}", String::from_utf8_lossy(&out.stdout));
    Ok(out.status.success())
}

fn posix_selftest(path: &Path) -> std::io::Result<ExitCode> {
    let mut c = Checker { failed: false };
    let go = std::env::temp_dir().join(format!("msb-lock-go-{}", std::process::id()));
    let first = spawn_probe(path, &go)?;
    let f = open_rw(path)?;
    let r = posix_lock(&f, F_SETLK, F_WRLCK, 0, 10);
    c.check(
        "posix write lock bytes 0..10",
        r.is_ok(),
        format!("{:?}", r.err()),
    );
    let r = posix_lock(&f, F_SETLK, F_RDLCK, 100, 10);
    c.check(
        "posix read lock bytes 100..110",
        r.is_ok(),
        format!("{:?}", r.err()),
    );
    let ok = run_probe(first, &go)?;
    c.check(
        "posix locks conflict with another process",
        ok,
        "see the probe's lines".into(),
    );

    // POSIX locks belong to the process: another descriptor of ours does
    // not conflict with them.
    let other = open_rw(path)?;
    let r = posix_lock(&other, F_SETLK, F_WRLCK, 0, 10);
    c.check(
        "posix lock through a second fd of the same process",
        r.is_ok(),
        format!("{:?}", r.err()),
    );
    let r = posix_lock(&other, F_SETLK, F_RDLCK, 0, 10);
    c.check(
        "posix downgrade to read through the second fd",
        r.is_ok(),
        format!("{:?}", r.err()),
    );
    let r = posix_lock(&f, F_SETLK, F_WRLCK, 0, 10);
    c.check(
        "posix upgrade to write through the first fd",
        r.is_ok(),
        format!("{:?}", r.err()),
    );
    std::mem::forget(other); // closing it would drop our locks (POSIX)

    // Another process closing a descriptor of the file (here: the exec of a
    // child that inherited it close-on-exec, which sends FUSE_FLUSH with the
    // child's lock owner) must not drop our locks.
    let status = Command::new("/bin/true").status()?;
    c.check(
        "run a child (closes inherited fds at exec)",
        status.success(),
        format!("{status}"),
    );
    let second = spawn_probe(path, &go)?;
    let ok = run_probe(second, &go)?;
    c.check(
        "posix locks survive another process's close",
        ok,
        "see the probe's lines".into(),
    );

    let r = posix_lock(&f, F_SETLK, F_UNLCK, 0, 0);
    c.check("posix unlock all", r.is_ok(), format!("{:?}", r.err()));
    let _ = std::fs::remove_file(&go);
    Ok(c.exit())
}

fn posix_probe(path: &Path, go: &Path) -> std::io::Result<ExitCode> {
    let mut c = Checker { failed: false };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !go.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let f = open_rw(path)?;
    let r = posix_lock(&f, F_SETLK, F_WRLCK, 5, 2);
    let conflict = matches!(&r, Err(e) if matches!(e.raw_os_error(), Some(11) | Some(13)));
    c.check(
        "posix write lock in held range conflicts",
        conflict,
        format!("{r:?}", r = r.map(|_| ())),
    );
    let r = posix_lock(&f, F_GETLK, F_WRLCK, 0, 1);
    let reported =
        matches!(&r, Ok(fl) if fl.l_type == F_WRLCK && fl.l_start == 0 && fl.l_len == 10);
    let detail = match &r {
        Ok(fl) => format!(
            "type {} start {} len {} pid {}",
            fl.l_type, fl.l_start, fl.l_len, fl.l_pid
        ),
        Err(e) => format!("{e}"),
    };
    c.check(
        "posix getlk reports the holder's write lock",
        reported,
        detail,
    );
    let r = posix_lock(&f, F_SETLK, F_RDLCK, 100, 10);
    c.check(
        "posix read lock shares a read-locked range",
        r.is_ok(),
        format!("{:?}", r.err()),
    );
    let r = posix_lock(&f, F_SETLK, F_WRLCK, 100, 1);
    let conflict = matches!(&r, Err(e) if matches!(e.raw_os_error(), Some(11) | Some(13)));
    c.check(
        "posix write lock on a read-locked range conflicts",
        conflict,
        format!("{:?}", r.map(|_| ())),
    );
    let r = posix_lock(&f, F_SETLK, F_WRLCK, 20, 10);
    c.check(
        "posix write lock on a free range",
        r.is_ok(),
        format!("{:?}", r.err()),
    );
    Ok(c.exit())
}

fn hold(path: &Path, ready: &Path, ack: &Path, secs: u64) -> std::io::Result<ExitCode> {
    let mut c = Checker { failed: false };
    let f = open_rw(path)?;
    let r = f.lock();
    c.check("hold: flock exclusive", r.is_ok(), format!("{r:?}"));
    File::create(ready)?.sync_all()?;
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut acked = false;
    while Instant::now() < deadline {
        if ack.exists() {
            acked = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    c.check(
        "hold: host acknowledged",
        acked,
        format!("no {} after {secs} s", ack.display()),
    );
    let r = f.unlock();
    c.check("hold: unlock", r.is_ok(), format!("{r:?}"));
    Ok(c.exit())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match argv.as_slice() {
        ["flock-selftest", file] => flock_selftest(Path::new(file)),
        ["posix-selftest", file] => posix_selftest(Path::new(file)),
        ["posix-probe", file, go] => posix_probe(Path::new(file), Path::new(go)),
        ["hold", file, ready, ack, secs] => match secs.parse() {
            Ok(secs) => hold(Path::new(file), Path::new(ready), Path::new(ack), secs),
            Err(_) => {
                eprintln!("msb-lock: bad seconds {secs:?}");
                return ExitCode::from(2);
            }
        },
        _ => {
            eprintln!("usage: msb-lock flock-selftest|posix-selftest FILE | posix-probe FILE GO | hold FILE READY ACK SECS");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            println!("msb-lock: FAIL {argv:?}: {e}");
            ExitCode::from(1)
        }
    }
}
