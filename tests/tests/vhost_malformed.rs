//! Malformed FUSE requests through real virtqueues: truncated headers,
//! length fields that lie, unknown opcodes, bodies too short for their
//! opcode, names without NUL, hostile descriptor chains. Each runs on a
//! fresh daemon with the sandbox on and off (see `hostile_util`) and gets
//! an errno reply (or for FORGET-like requests no reply), the chain comes
//! back, a normal request right after still works, and the daemon lives.

mod hostile_util;

use std::io;
use std::path::Path;
use std::time::Duration;

use fuse_backend_rs::abi::fuse_abi::{Opcode, ReadIn, WriteIn};
use hostile_util::{all, run_suite, Hostile, Setup};
use msb_tests::daemon_proc::Daemon;
use msb_tests::vhost_driver::{
    parse_reply, Completion, FsDriver, FuseClient, Segment, IN_HEADER_LEN, ROOT_ID,
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

struct Chain {
    name: String,
    chain: Vec<Segment>,
    /// The request's unique if its header is intact.
    unique: Option<u64>,
    reply_len: usize,
    expect: Expect,
}

/// Encodes a request header (with a fresh unique) plus body: the driver's
/// own encoder when a daemon runs, a stand-in when only names are wanted.
type Encode<'a> = &'a dyn Fn(u32, u64, &[u8]) -> (u64, Vec<u8>);

/// Header with `len` set to `len` (or the true length) followed by `body`.
fn request(
    fs: Encode<'_>,
    opcode: u32,
    nodeid: u64,
    body: &[u8],
    len: Option<u32>,
) -> (u64, Vec<u8>) {
    let (unique, mut bytes) = fs(opcode, nodeid, body);
    if let Some(len) = len {
        bytes[0..4].copy_from_slice(&len.to_le_bytes());
    }
    (unique, bytes)
}

fn case(
    fs: Encode<'_>,
    name: &str,
    opcode: u32,
    nodeid: u64,
    body: &[u8],
    len: Option<u32>,
    expect: Expect,
) -> Chain {
    let (unique, bytes) = request(fs, opcode, nodeid, body, len);
    Chain {
        name: name.to_string(),
        chain: vec![Segment::Readable(bytes), Segment::Writable(4096)],
        unique: Some(unique),
        reply_len: 4096,
        expect,
    }
}

fn judge(c: &Chain, done: &Completion) -> Result<String, String> {
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

fn op(o: Opcode) -> u32 {
    o as u32
}

/// Collects cases encoded for one driver.
struct Cases<'a> {
    fs: Encode<'a>,
    out: Vec<Chain>,
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
        self.out.push(Chain {
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

/// Every malformed request, encoded by `fs` with `file` (a 10-byte file)
/// open as `fh`.
fn build_chains(fs: Encode<'_>, file: u64, fh: u64) -> Vec<Chain> {
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

/// The share every case starts with: `file`, 10 bytes.
fn ten_byte_file(root: &Path) -> io::Result<()> {
    std::fs::write(root.join("share/file"), b"0123456789")
}

/// Small requests: a chain not back within seconds has been dropped.
const CHAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// A stand-in encoder for listing the cases: right lengths, no daemon.
fn no_daemon(_: u32, _: u64, body: &[u8]) -> (u64, Vec<u8>) {
    (0, vec![0; IN_HEADER_LEN + body.len()])
}

/// The `index`th request of [`build_chains`], sent on request queue 1 of a
/// fresh daemon with `file` open read-write; its reply is judged, then
/// `file` must still hold its 10 bytes.
struct Malformed {
    index: usize,
    name: String,
}

/// Every malformed request as a case of its own.
fn malformed_cases() -> Vec<Malformed> {
    build_chains(&no_daemon, 0, 0)
        .into_iter()
        .enumerate()
        .map(|(index, c)| Malformed {
            index,
            name: c.name,
        })
        .collect()
}

impl Hostile for Malformed {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn setup(&self) -> Setup {
        Setup {
            args: &[],
            prepare: Some(ten_byte_file),
            queues: 1,
            timeout: CHAIN_TIMEOUT,
        }
    }

    fn run(&self, _d: &Daemon, fs: &FsDriver) {
        let file = fs.lookup(ROOT_ID, b"file").unwrap().nodeid;
        let fh = fs.open(file, libc::O_RDWR).unwrap().fh;
        let encode = |op, node, body: &[u8]| fs.encode(op, node, body);
        let c = build_chains(&encode, file, fh).swap_remove(self.index);
        assert_eq!(c.name, self.name, "cases listed in another order");
        let done = fs
            .send_chains(1, std::slice::from_ref(&c.chain))
            .unwrap_or_else(|e| panic!("chain not returned: {e}"));
        match judge(&c, &done[0]) {
            Ok(what) => eprintln!("     {:<55} {what}", c.name),
            Err(why) => panic!("{why}"),
        }
        // A lying WRITE must not have changed the file.
        let data = fs.read(file, fh, 0, 100).expect("read after the case");
        assert_eq!(data, b"0123456789", "the file changed");
    }
}

/// Builds a hostile chain from the end of guest memory and a GETATTR.
type Build = fn(u64, &[u8]) -> Vec<Segment>;

/// A hostile descriptor chain sent on request queue 2: the daemon may drop
/// such a chain (that queue is then unusable), but must stay alive and
/// keep serving queue 1 (GETATTR there, then a LOOKUP).
struct Descriptors {
    name: &'static str,
    build: Build,
}

impl Hostile for Descriptors {
    fn name(&self) -> String {
        self.name.to_string()
    }

    fn setup(&self) -> Setup {
        Setup {
            args: &[],
            prepare: Some(ten_byte_file),
            queues: 2,
            timeout: CHAIN_TIMEOUT,
        }
    }

    fn run(&self, _d: &Daemon, fs: &FsDriver) {
        let end = fs.memory().base().0 + fs.memory().len();
        let encode = |op, node, body: &[u8]| fs.encode(op, node, body);
        let (_, req) = request(&encode, op(Opcode::Getattr), ROOT_ID, &[0; 16], None);
        let outcome = match fs.send_chains(2, &[(self.build)(end, &req)]) {
            Ok(done) => format!("returned, {} bytes written", done[0].used_len),
            Err(e) => format!("not returned ({e})"),
        };
        eprintln!("     {:<55} {outcome}", self.name);
        fs.getattr(ROOT_ID).expect("queue 1 after the chain");
        fs.lookup(ROOT_ID, b"file").expect("lookup after the chain");
    }
}

/// Chains that point outside guest memory, at all of it, or order their
/// buffers wrongly.
const DESCRIPTORS: [Descriptors; 6] = [
    Descriptors {
        name: "reply buffer outside guest memory",
        build: |end, req| {
            vec![
                Segment::Readable(req.to_vec()),
                Segment::Raw {
                    addr: end + 4096,
                    len: 4096,
                    write: true,
                },
            ]
        },
    },
    Descriptors {
        name: "request buffer outside guest memory",
        build: |end, _| {
            vec![
                Segment::Raw {
                    addr: end + 4096,
                    len: 64,
                    write: false,
                },
                Segment::Writable(4096),
            ]
        },
    },
    Descriptors {
        name: "request buffer straddling the end of memory",
        build: |end, _| {
            vec![
                Segment::Raw {
                    addr: end - 8,
                    len: 64,
                    write: false,
                },
                Segment::Writable(4096),
            ]
        },
    },
    Descriptors {
        name: "reply buffer of 4 GiB - 1 over all of memory",
        build: |_, req| {
            vec![
                Segment::Readable(req.to_vec()),
                Segment::Raw {
                    addr: 0,
                    len: u32::MAX,
                    write: true,
                },
            ]
        },
    },
    Descriptors {
        name: "writable before readable",
        build: |_, req| vec![Segment::Writable(4096), Segment::Readable(req.to_vec())],
    },
    Descriptors {
        name: "zero-length descriptors around the request",
        build: |_, req| {
            vec![
                Segment::Readable(vec![]),
                Segment::Readable(req.to_vec()),
                Segment::Writable(0),
                Segment::Writable(4096),
            ]
        },
    },
];

#[test]
fn malformed_requests_and_hostile_chains_each_on_a_fresh_daemon_with_the_sandbox_on_and_off() {
    let malformed = malformed_cases();
    let mut cases = all(&[&malformed[..]]);
    cases.extend(all(&[&DESCRIPTORS[..]]));
    run_suite(file!(), &cases);
}
