//! Malformed FUSE requests through real virtqueues: truncated headers,
//! length fields that lie, unknown opcodes, bodies too short for their
//! opcode, names without NUL, hostile descriptor chains. Each gets an errno
//! reply (or for FORGET-like requests no reply), the chain always comes
//! back, a normal request right after still works, and the daemon lives.

use std::fs;
use std::time::Duration;

use fuse_backend_rs::abi::fuse_abi::{Opcode, ReadIn, WriteIn};
use msb_tests::daemon_proc::Daemon;
use msb_tests::vhost_driver::{
    parse_reply, Completion, DriverConfig, FsDriver, FuseClient, Segment, IN_HEADER_LEN, ROOT_ID,
};
use vm_memory::ByteValued;

/// What a malformed request must produce.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// An error reply with exactly this errno.
    Errno(i32),
    /// An error reply with any errno.
    AnyErrno,
    /// A well-framed reply, success or error.
    AnyReply,
    /// The chain comes back with nothing written.
    NoReply,
    /// Nothing written, or an error reply (for requests whose header cannot
    /// be decoded, so `unique` is unknown).
    ErrnoOrNothing,
    /// The chain comes back; what was written is not judged.
    Returned,
}

struct Case {
    name: String,
    chain: Vec<Segment>,
    /// The request's unique if its header is intact.
    unique: Option<u64>,
    reply_len: usize,
    expect: Expect,
}

/// Header with `len` set to `len` (or the true length) followed by `body`.
fn request(
    fs: &FsDriver,
    opcode: u32,
    nodeid: u64,
    body: &[u8],
    len: Option<u32>,
) -> (u64, Vec<u8>) {
    let (unique, mut bytes) = fs.encode(opcode, nodeid, body);
    if let Some(len) = len {
        bytes[0..4].copy_from_slice(&len.to_le_bytes());
    }
    (unique, bytes)
}

fn case(
    fs: &FsDriver,
    name: &str,
    opcode: u32,
    nodeid: u64,
    body: &[u8],
    len: Option<u32>,
    expect: Expect,
) -> Case {
    let (unique, bytes) = request(fs, opcode, nodeid, body, len);
    Case {
        name: name.to_string(),
        chain: vec![Segment::Readable(bytes), Segment::Writable(4096)],
        unique: Some(unique),
        reply_len: 4096,
        expect,
    }
}

fn judge(c: &Case, done: &Completion) -> Result<String, String> {
    let reply = || parse_reply(done, c.unique, c.reply_len).map_err(|e| e.to_string());
    let summary =
        |r: &msb_tests::vhost_driver::Reply| format!("error {} body {}B", r.error, r.body.len());
    match c.expect {
        Expect::Errno(want) => {
            let r = reply()?;
            if r.error == -want {
                Ok(summary(&r))
            } else {
                Err(format!("want errno {want}, got {}", summary(&r)))
            }
        }
        Expect::AnyErrno => {
            let r = reply()?;
            if r.error < 0 {
                Ok(summary(&r))
            } else {
                Err(format!("want an error reply, got {}", summary(&r)))
            }
        }
        Expect::AnyReply => reply().map(|r| summary(&r)),
        Expect::NoReply => {
            if done.used_len == 0 {
                Ok("no reply".into())
            } else {
                Err(format!(
                    "want no reply, daemon wrote {} bytes",
                    done.used_len
                ))
            }
        }
        Expect::ErrnoOrNothing => {
            if done.used_len == 0 {
                return Ok("no reply".into());
            }
            let r = parse_reply(done, None, c.reply_len).map_err(|e| e.to_string())?;
            if r.error < 0 {
                Ok(summary(&r))
            } else {
                Err(format!(
                    "want an error reply or nothing, got {}",
                    summary(&r)
                ))
            }
        }
        Expect::Returned => Ok(format!("returned, {} bytes written", done.used_len)),
    }
}

/// Every case runs against a daemon with the process sandbox on (the
/// default) and off, so a wall never hides a bug under it.
const MODES: [&[&str]; 2] = [&[], &["--sandbox", "none", "--seccomp", "none"]];

fn start(request_queues: usize, mode: &[&str]) -> (Daemon, FsDriver) {
    let d = Daemon::start(mode).unwrap_or_else(|e| panic!("cannot start virtiofsd-msb: {e}"));
    fs::write(d.shared_dir().join("file"), b"0123456789").unwrap();
    // Small requests: a chain not back within seconds has been dropped.
    let config = DriverConfig {
        request_queues,
        timeout: Duration::from_secs(5),
        ..DriverConfig::default()
    };
    let fs = d.connect_with(config).unwrap_or_else(|e| panic!("{e}"));
    (d, fs)
}

fn op(o: Opcode) -> u32 {
    o as u32
}

/// Collects cases encoded for one driver.
struct Cases<'a> {
    fs: &'a FsDriver,
    out: Vec<Case>,
}

impl Cases<'_> {
    /// A request with a true header length.
    fn add(&mut self, name: &str, opcode: u32, nodeid: u64, body: &[u8], expect: Expect) {
        self.out
            .push(case(self.fs, name, opcode, nodeid, body, None, expect));
    }

    /// A request whose header `len` field says `len`.
    fn lie(&mut self, name: &str, opcode: u32, nodeid: u64, body: &[u8], len: u32, expect: Expect) {
        self.out
            .push(case(self.fs, name, opcode, nodeid, body, Some(len), expect));
    }

    /// A hand-made chain.
    fn chain(&mut self, name: &str, chain: Vec<Segment>, unique: Option<u64>, expect: Expect) {
        let reply_len = chain
            .iter()
            .map(|s| match s {
                Segment::Writable(n) => *n as usize,
                _ => 0,
            })
            .sum();
        self.out.push(Case {
            name: name.into(),
            chain,
            unique,
            reply_len,
            expect,
        });
    }
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// Every malformed case, encoded for `fs` with `file` (a 10-byte file) open
/// as `fh`.
fn build_cases(fs: &FsDriver, file: u64, fh: u64) -> Vec<Case> {
    use Expect::*;
    use Opcode as O;
    let o = |x: Opcode| x as u32;
    let read = |fh, size| ReadIn {
        fh,
        size,
        ..Default::default()
    };
    let write = |size| WriteIn {
        fh,
        size,
        ..Default::default()
    };
    let bogus = 0xdead_beef_u64;
    let mut c = Cases {
        fs,
        out: Vec::new(),
    };

    // Truncated or empty headers: `unique` is unknown.
    let (_, hdr) = request(fs, o(O::Getattr), ROOT_ID, &[0; 16], None);
    let reply = Segment::Writable(4096);
    c.chain(
        "empty readable buffer",
        vec![Segment::Readable(vec![]), reply.clone()],
        None,
        ErrnoOrNothing,
    );
    for n in [1, 10, 39] {
        let chain = vec![Segment::Readable(hdr[..n].to_vec()), reply.clone()];
        c.chain(
            &format!("header truncated to {n} bytes"),
            chain,
            None,
            ErrnoOrNothing,
        );
    }

    // Length fields that lie.
    c.lie(
        "LOOKUP with len 0",
        o(O::Lookup),
        ROOT_ID,
        b"file\0",
        0,
        AnyErrno,
    );
    c.lie(
        "GETATTR with len 20 (< header)",
        o(O::Getattr),
        ROOT_ID,
        &[0; 16],
        20,
        AnyErrno,
    );
    c.lie(
        "LOOKUP with len past the buffer",
        o(O::Lookup),
        ROOT_ID,
        b"file\0",
        4096,
        AnyErrno,
    );
    c.lie(
        "LOOKUP with len u32::MAX",
        o(O::Lookup),
        ROOT_ID,
        b"file\0",
        u32::MAX,
        AnyErrno,
    );
    let hl = IN_HEADER_LEN as u32;
    c.lie(
        "LOOKUP with len = header only",
        o(O::Lookup),
        ROOT_ID,
        b"file\0",
        hl,
        AnyErrno,
    );
    let lying = cat(&[write(4096).as_slice(), b"ten bytes!"]);
    c.add(
        "WRITE claiming 4096 bytes, carrying 10",
        o(O::Write),
        file,
        &lying,
        AnyErrno,
    );
    let huge = cat(&[write(u32::MAX).as_slice(), b"xx"]);
    c.add(
        "WRITE of u32::MAX bytes",
        o(O::Write),
        file,
        &huge,
        AnyErrno,
    );
    let big_read = read(fh, u32::MAX);
    c.add(
        "READ of u32::MAX bytes into 4 KiB",
        o(O::Read),
        file,
        big_read.as_slice(),
        AnyReply,
    );

    // Unknown opcodes.
    for (name, opcode) in [
        ("opcode 0", 0),
        ("opcode 7 (unassigned)", 7),
        ("opcode 19 (unassigned)", 19),
        ("opcode 99 (unassigned)", 99),
        ("opcode 4242", 4242),
        ("opcode 4096 (CUSE_INIT)", 4096),
        ("opcode u32::MAX", u32::MAX),
    ] {
        c.add(name, opcode, ROOT_ID, &[0; 64], Errno(libc::ENOSYS));
    }
    c.add("SETUPMAPPING without DAX", 48, file, &[0; 40], AnyErrno);

    // Bodies too short for their opcode.
    c.add(
        "GETATTR without body",
        o(O::Getattr),
        ROOT_ID,
        &[],
        AnyReply,
    );
    for (name, opcode, node, len) in [
        ("INIT", O::Init, 0, 4),
        ("READ", O::Read, file, 4),
        ("WRITE", O::Write, file, 8),
        ("SETATTR", O::Setattr, file, 8),
        ("CREATE", O::Create, ROOT_ID, 8),
        ("MKNOD", O::Mknod, ROOT_ID, 4),
        ("MKDIR", O::Mkdir, ROOT_ID, 4),
        ("RENAME", O::Rename, ROOT_ID, 4),
        ("RENAME2", O::Rename2, ROOT_ID, 12),
        ("LINK", O::Link, ROOT_ID, 4),
        ("OPEN", O::Open, file, 0),
        ("RELEASE", O::Release, file, 0),
        ("FSYNC", O::Fsync, file, 0),
        ("READDIR", O::Readdir, ROOT_ID, 0),
        ("READDIRPLUS", O::Readdirplus, ROOT_ID, 0),
        ("GETXATTR", O::Getxattr, file, 4),
        ("SETXATTR", O::Setxattr, file, 4),
        ("GETLK", O::Getlk, file, 8),
        ("SETLK", O::Setlk, file, 8),
        ("ACCESS", O::Access, file, 0),
        ("FALLOCATE", O::Fallocate, file, 0),
        ("LSEEK", O::Lseek, file, 0),
        ("COPY_FILE_RANGE", O::CopyFileRange, file, 0),
    ] {
        let name = format!("{name} with a {len}-byte body");
        c.add(&name, o(opcode), node, &vec![0; len], AnyErrno);
    }

    // Names without NUL, or missing the second name.
    c.add(
        "LOOKUP name without NUL",
        o(O::Lookup),
        ROOT_ID,
        b"file",
        AnyErrno,
    );
    c.add(
        "UNLINK name without NUL",
        o(O::Unlink),
        ROOT_ID,
        b"file",
        AnyErrno,
    );
    let body = cat(&[&[0; 8], b"dir"]);
    c.add(
        "MKDIR name without NUL",
        o(O::Mkdir),
        ROOT_ID,
        &body,
        AnyErrno,
    );
    let body = cat(&[&[0; 16], b"new"]);
    c.add(
        "CREATE name without NUL",
        o(O::Create),
        ROOT_ID,
        &body,
        AnyErrno,
    );
    c.add(
        "SYMLINK with one string",
        o(O::Symlink),
        ROOT_ID,
        b"link\0",
        AnyErrno,
    );
    let body = cat(&[&ROOT_ID.to_le_bytes(), b"file\0"]);
    c.add(
        "RENAME with one name",
        o(O::Rename),
        ROOT_ID,
        &body,
        AnyErrno,
    );

    // Well-formed, but naming things that do not exist.
    c.add(
        "GETATTR of an unknown nodeid",
        o(O::Getattr),
        bogus,
        &[0; 16],
        AnyErrno,
    );
    c.add("GETATTR of nodeid 0", o(O::Getattr), 0, &[0; 16], AnyErrno);
    c.add(
        "LOOKUP in an unknown nodeid",
        o(O::Lookup),
        bogus,
        b"file\0",
        AnyErrno,
    );
    let r = read(bogus, 4);
    c.add(
        "READ with an unknown fh",
        o(O::Read),
        file,
        r.as_slice(),
        AnyErrno,
    );

    // Requests without a reply still come back.
    let batch_lie = cat(&[&1000u32.to_le_bytes(), &0u32.to_le_bytes()]);
    for (name, opcode, body) in [
        ("FORGET without body", O::Forget, Vec::new()),
        (
            "FORGET of an unknown nodeid",
            O::Forget,
            1u64.to_le_bytes().to_vec(),
        ),
        (
            "BATCH_FORGET claiming 1000 entries, carrying none",
            O::BatchForget,
            batch_lie,
        ),
    ] {
        let (_, bytes) = request(fs, o(opcode), bogus, &body, None);
        c.chain(name, vec![Segment::Readable(bytes)], None, NoReply);
    }

    // Reply buffers that cannot hold the reply.
    let (u, getattr) = request(fs, o(O::Getattr), ROOT_ID, &[0; 16], None);
    let req = Segment::Readable(getattr);
    c.chain(
        "GETATTR without a writable buffer",
        vec![req.clone()],
        Some(u),
        Returned,
    );
    for n in [8, 20] {
        let chain = vec![req.clone(), Segment::Writable(n)];
        c.chain(
            &format!("GETATTR with a {n}-byte reply buffer"),
            chain,
            Some(u),
            Returned,
        );
    }

    // Header split over many tiny descriptors: legal, must work.
    let (u, split) = request(fs, o(O::Lookup), ROOT_ID, b"file\0", None);
    let mut chain: Vec<Segment> = split
        .chunks(3)
        .map(|c| Segment::Readable(c.to_vec()))
        .collect();
    chain.extend((0..8).map(|_| Segment::Writable(32)));
    c.chain(
        "LOOKUP split over 15 + 8 descriptors",
        chain,
        Some(u),
        AnyReply,
    );
    c.out
}

/// A daemon with a connected driver and `file` open.
struct Rig {
    d: Daemon,
    fs: FsDriver,
    file: u64,
    fh: u64,
}

fn rig(mode: &[&str]) -> Rig {
    let (d, fs) = start(1, mode);
    let file = fs.lookup(ROOT_ID, b"file").unwrap().nodeid;
    let fh = fs.open(file, libc::O_RDWR).unwrap().fh;
    Rig { d, fs, file, fh }
}

#[test]
fn malformed_requests_get_errno_replies_and_the_daemon_keeps_serving() {
    for mode in MODES {
        malformed_requests_against(mode);
    }
}

fn malformed_requests_against(mode: &[&str]) {
    eprintln!("daemon flags {mode:?}");
    let mut r = rig(mode);
    let total = build_cases(&r.fs, r.file, r.fh).len();
    let mut failures = Vec::new();
    let mut restarts = 0;
    let mut i = 0;
    while i < total {
        // Re-encode for the current daemon (nodeids and handles may differ
        // after a restart).
        let c = build_cases(&r.fs, r.file, r.fh).swap_remove(i);
        i += 1;
        let outcome = match r.fs.send_chains(1, std::slice::from_ref(&c.chain)) {
            Ok(done) => judge(&c, &done[0]),
            Err(e) => Err(format!("chain not returned: {e}")),
        };
        match &outcome {
            Ok(what) => eprintln!("ok   {:<55} {what}", c.name),
            Err(why) => {
                eprintln!("FAIL {:<55} {why}", c.name);
                failures.push(format!("{}: {why}", c.name));
            }
        }
        if !r.d.is_alive() {
            failures.push(format!(
                "daemon died after {:?}; log:\n{}",
                c.name,
                r.d.log_tail(3000)
            ));
        } else if let Err(e) = r.fs.getattr(ROOT_ID) {
            failures.push(format!("normal GETATTR after {:?}: {e}", c.name));
        } else {
            continue;
        }
        // The queue or the daemon is gone: go on with a fresh one so one
        // bug does not hide the others.
        restarts += 1;
        r = rig(mode);
    }
    // (The content is only intact if the lying WRITEs were refused; those
    // cases report that themselves.)
    let data = r.fs.read(r.file, r.fh, 0, 100);
    assert_eq!(data.expect("read after all cases").len(), 10);
    assert!(r.d.is_alive(), "daemon died");
    assert!(
        failures.is_empty(),
        "{} of {total} cases failed ({restarts} daemon restarts):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn hostile_descriptors_do_not_kill_the_daemon() {
    // Each case gets its own daemon: a daemon may drop such a chain (the
    // queue is then unusable), but must stay alive and keep serving its
    // other queues.
    type Build = fn(u64, &[u8]) -> Vec<Segment>;
    let hostile: [(&str, Build); 6] = [
        ("reply buffer outside guest memory", |end, req| {
            vec![
                Segment::Readable(req.to_vec()),
                Segment::Raw {
                    addr: end + 4096,
                    len: 4096,
                    write: true,
                },
            ]
        }),
        ("request buffer outside guest memory", |end, _| {
            vec![
                Segment::Raw {
                    addr: end + 4096,
                    len: 64,
                    write: false,
                },
                Segment::Writable(4096),
            ]
        }),
        ("request buffer straddling the end of memory", |end, _| {
            vec![
                Segment::Raw {
                    addr: end - 8,
                    len: 64,
                    write: false,
                },
                Segment::Writable(4096),
            ]
        }),
        ("reply buffer of 4 GiB - 1 over all of memory", |_, req| {
            vec![
                Segment::Readable(req.to_vec()),
                Segment::Raw {
                    addr: 0,
                    len: u32::MAX,
                    write: true,
                },
            ]
        }),
        ("writable before readable", |_, req| {
            vec![Segment::Writable(4096), Segment::Readable(req.to_vec())]
        }),
        ("zero-length descriptors around the request", |_, req| {
            vec![
                Segment::Readable(vec![]),
                Segment::Readable(req.to_vec()),
                Segment::Writable(0),
                Segment::Writable(4096),
            ]
        }),
    ];
    let mut failures = Vec::new();
    let cases = MODES.iter().flat_map(|mode| {
        hostile
            .iter()
            .map(move |(name, build)| (*mode, *name, *build))
    });
    for (mode, name, build) in cases {
        let (mut d, fs) = start(2, mode);
        let end = fs.memory().base().0 + fs.memory().len();
        let (_, req) = request(&fs, op(Opcode::Getattr), ROOT_ID, &[0; 16], None);
        let outcome = match fs.send_chains(2, &[build(end, &req)]) {
            Ok(done) => format!("returned, {} bytes written", done[0].used_len),
            Err(e) => format!("not returned ({e})"),
        };
        eprintln!("{name:<50} {outcome}");
        if !d.is_alive() {
            failures.push(format!(
                "daemon died after {name:?}; log:\n{}",
                d.log_tail(3000)
            ));
            continue;
        }
        if let Err(e) = fs.getattr(ROOT_ID) {
            failures.push(format!("queue 1 stopped serving after {name:?}: {e}"));
        }
        if let Err(e) = fs.lookup(ROOT_ID, b"file") {
            failures.push(format!("lookup after {name:?}: {e}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
