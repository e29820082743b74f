//! The FUSE requests of each operation, as a small state machine per
//! window slot: most operations are one request; create+unlink is CREATE,
//! RELEASE, UNLINK (and a FORGET on the hiprio queue now and then, as a
//! guest evicting the deleted inode would send); readdirplus is OPENDIR,
//! READDIRPLUS until the listing ends, RELEASEDIR.

use std::mem::size_of;

use fuse_backend_rs::abi::fuse_abi::{
    AttrOut, CreateIn, EntryOut, GetattrIn, Opcode, OpenIn, OpenOut, OutHeader, ReadIn, ReleaseIn,
    WriteIn, WriteOut,
};
use msb_tests::vhost_driver::{
    parse_direntplus, FsDriver, FuseClient, IN_HEADER_LEN, OUT_HEADER_LEN, ROOT_ID,
};
use vm_memory::ByteValued;

use crate::fixture;
use crate::op::{Offsets, Op, DIR_BUF, LARGE_IO, SMALL_IO};

/// What a run needs to know about the share: node ids and open handles.
pub struct Targets {
    small: u64,
    names: u64,
    read_file: (u64, u64),
    write_file: (u64, u64),
    scratch: u64,
}

impl Targets {
    /// Looks up and opens the fixture's files through `fs`.
    pub fn resolve(fs: &FsDriver) -> Result<Targets, String> {
        let lookup = |name: &str| {
            fs.lookup(ROOT_ID, name.as_bytes())
                .map(|e| e.nodeid)
                .map_err(|e| format!("LOOKUP {name}: {e}"))
        };
        let open = |name: &str| -> Result<(u64, u64), String> {
            let id = lookup(name)?;
            let fh = fs
                .open(id, libc::O_RDWR)
                .map_err(|e| format!("OPEN {name}: {e}"))?
                .fh;
            Ok((id, fh))
        };
        Ok(Targets {
            small: lookup(fixture::SMALL)?,
            names: lookup(fixture::NAMES_DIR)?,
            read_file: open(fixture::READ_FILE)?,
            write_file: open(fixture::WRITE_FILE)?,
            scratch: lookup(fixture::SCRATCH_DIR)?,
        })
    }
}

/// The request buffer and reply buffer sizes `op` needs per slot.
pub fn buffer_sizes(op: Op) -> (u32, u32) {
    let header = (IN_HEADER_LEN + size_of::<WriteIn>()) as u32;
    let reply = OUT_HEADER_LEN as u32;
    match op {
        Op::Write1m => (header + LARGE_IO, reply + 64),
        Op::Read1m => (header + 256, reply + LARGE_IO),
        _ => (header + SMALL_IO, reply + SMALL_IO.max(DIR_BUF)),
    }
}

/// One request to put in a slot.
pub struct Request {
    /// Header and fixed body; the rest of the request is the slot's
    /// prefilled payload.
    pub prefix: Vec<u8>,
    /// Bytes the daemon reads (prefix plus payload).
    pub len: u32,
    /// Room for the reply.
    pub reply_cap: u32,
    /// The request's `unique`.
    pub unique: u64,
}

/// Where a slot is in its operation.
#[derive(Debug, Clone, Copy)]
enum Stage {
    /// Between operations.
    Idle,
    /// CREATE of file number `n` sent.
    Creating { n: u64 },
    /// RELEASE of the created file sent.
    Releasing { n: u64, nodeid: u64 },
    /// UNLINK sent; `nodeid` is forgotten once it is answered.
    Unlinking { nodeid: u64 },
    /// OPENDIR sent.
    Opening,
    /// READDIRPLUS from `offset` sent.
    Listing { fh: u64, offset: u64 },
    /// RELEASEDIR sent.
    Closing,
    /// A single-request operation sent.
    Single,
}

/// How many forgets are sent together.
const FORGET_BATCH: usize = 64;

/// The requests of one operation kind on one queue.
pub struct Workload<'a> {
    op: Op,
    driver: &'a FsDriver,
    targets: &'a Targets,
    offsets: Offsets,
    stages: Vec<Stage>,
    /// Queue index, to keep file names of parallel queues apart.
    queue: usize,
    created: u64,
    forgets: Vec<(u64, u64)>,
}

impl<'a> Workload<'a> {
    /// A workload for `slots` slots of queue `queue`.
    pub fn new(
        op: Op,
        driver: &'a FsDriver,
        targets: &'a Targets,
        queue: usize,
        slots: usize,
    ) -> Self {
        Workload {
            op,
            driver,
            targets,
            offsets: Offsets::new(queue as u64),
            stages: vec![Stage::Idle; slots],
            queue,
            created: 0,
            forgets: Vec::new(),
        }
    }

    /// Payload to prefill slot buffers with at `offset` (writes only).
    pub fn payload(&self) -> Option<(u32, Vec<u8>)> {
        self.op.is_write().then(|| {
            let at = (IN_HEADER_LEN + size_of::<WriteIn>()) as u32;
            let data = (0..self.op.io_size()).map(|i| (i % 253) as u8).collect();
            (at, data)
        })
    }

    fn request(
        &self,
        opcode: Opcode,
        nodeid: u64,
        body: &[u8],
        payload: u32,
        reply: u32,
    ) -> Request {
        let len = body.len() + payload as usize;
        let (unique, header) = self.driver.encode_header(opcode as u32, nodeid, len);
        let mut prefix = header.to_vec();
        prefix.extend_from_slice(body);
        Request {
            prefix,
            len: (IN_HEADER_LEN + len) as u32,
            reply_cap: OUT_HEADER_LEN as u32 + reply,
            unique,
        }
    }

    /// The first request of a new operation in slot `slot`.
    pub fn start(&mut self, slot: usize) -> Request {
        let t = self.targets;
        let (stage, req) = match self.op {
            Op::Getattr => {
                let body = GetattrIn::default();
                let reply = size_of::<AttrOut>() as u32;
                let r = self.request(Opcode::Getattr, t.small, body.as_slice(), 0, reply);
                (Stage::Single, r)
            }
            Op::Lookup => {
                let i = self.offsets.index(fixture::NAMES);
                let mut name = fixture::name_of(i).into_bytes();
                name.push(0);
                let reply = size_of::<EntryOut>() as u32;
                (
                    Stage::Single,
                    self.request(Opcode::Lookup, t.names, &name, 0, reply),
                )
            }
            Op::Read4k | Op::Read1m => {
                let size = self.op.io_size();
                let (id, fh) = t.read_file;
                let body = ReadIn {
                    fh,
                    offset: self.offsets.next(self.op),
                    size,
                    ..Default::default()
                };
                (
                    Stage::Single,
                    self.request(Opcode::Read, id, body.as_slice(), 0, size),
                )
            }
            Op::Write4k | Op::Write1m => {
                let size = self.op.io_size();
                let (id, fh) = t.write_file;
                let body = WriteIn {
                    fh,
                    offset: self.offsets.next(self.op),
                    size,
                    ..Default::default()
                };
                let reply = size_of::<WriteOut>() as u32;
                (
                    Stage::Single,
                    self.request(Opcode::Write, id, body.as_slice(), size, reply),
                )
            }
            Op::CreateUnlink => {
                let n = self.created;
                self.created += 1;
                let arg = CreateIn {
                    flags: (libc::O_RDWR | libc::O_CREAT | libc::O_EXCL) as u32,
                    mode: libc::S_IFREG | 0o644,
                    umask: 0,
                    fuse_flags: 0,
                };
                let mut body = arg.as_slice().to_vec();
                body.extend_from_slice(&self.scratch_name(n));
                let reply = (size_of::<EntryOut>() + size_of::<OpenOut>()) as u32;
                let r = self.request(Opcode::Create, t.scratch, &body, 0, reply);
                (Stage::Creating { n }, r)
            }
            Op::Readdirplus => {
                let arg = OpenIn::default();
                let reply = size_of::<OpenOut>() as u32;
                let r = self.request(Opcode::Opendir, t.names, arg.as_slice(), 0, reply);
                (Stage::Opening, r)
            }
        };
        self.stages[slot] = stage;
        req
    }

    /// NUL-terminated name of created file `n`.
    fn scratch_name(&self, n: u64) -> Vec<u8> {
        let mut name = format!("q{}-{n}", self.queue).into_bytes();
        name.push(0);
        name
    }

    /// Bytes of the reply to read back for slot `slot`'s request (the
    /// header, plus what the next step needs).
    pub fn read_back(&self, slot: usize, used_len: u32) -> usize {
        let want = match self.stages[slot] {
            Stage::Creating { .. } => size_of::<EntryOut>() + size_of::<OpenOut>(),
            Stage::Opening => size_of::<OpenOut>(),
            Stage::Listing { .. } => DIR_BUF as usize,
            _ if self.op.is_write() => size_of::<WriteOut>(),
            _ => 0,
        };
        (OUT_HEADER_LEN + want).min(used_len as usize)
    }

    /// Checks the reply to slot `slot`'s request (`reply` holds what
    /// [`Workload::read_back`] asked for) and returns the slot's next
    /// request, or `None` when the operation is complete.
    pub fn on_reply(
        &mut self,
        slot: usize,
        unique: u64,
        used_len: u32,
        reply: &[u8],
    ) -> Result<Option<Request>, String> {
        let stage = self.stages[slot];
        let header = OutHeader::from_slice(reply.get(..OUT_HEADER_LEN).unwrap_or(&[]))
            .copied()
            .ok_or_else(|| format!("{:?}: reply of {used_len} bytes has no header", stage))?;
        if header.unique != unique || header.len != used_len || header.error != 0 {
            return Err(format!(
                "{}: {stage:?}: bad reply: unique {} (sent {unique}), len {} (used {used_len}), \
                 error {}",
                self.op.key(),
                header.unique,
                header.len,
                header.error
            ));
        }
        let body = &reply[OUT_HEADER_LEN..];
        let t = self.targets;
        let (next, req) = match stage {
            Stage::Single => {
                self.check_single(used_len, body)?;
                (Stage::Idle, None)
            }
            Stage::Creating { n } => {
                let entry: EntryOut = decode(body, "CREATE")?;
                let open: OpenOut = decode(&body[size_of::<EntryOut>()..], "CREATE")?;
                let arg = ReleaseIn {
                    fh: open.fh,
                    ..Default::default()
                };
                let r = self.request(Opcode::Release, entry.nodeid, arg.as_slice(), 0, 0);
                let nodeid = entry.nodeid;
                (Stage::Releasing { n, nodeid }, Some(r))
            }
            Stage::Releasing { n, nodeid } => {
                let name = self.scratch_name(n);
                let r = self.request(Opcode::Unlink, t.scratch, &name, 0, 0);
                (Stage::Unlinking { nodeid }, Some(r))
            }
            Stage::Unlinking { nodeid } => {
                self.forget(nodeid)?;
                (Stage::Idle, None)
            }
            Stage::Opening => {
                let open: OpenOut = decode(body, "OPENDIR")?;
                self.list_from(open.fh, 0)
            }
            Stage::Listing { fh, offset } => {
                let entries = parse_direntplus(body).map_err(|e| format!("READDIRPLUS: {e}"))?;
                match entries.last() {
                    Some(last) => self.list_from(fh, last.dirent.off),
                    None if offset == 0 => return Err("READDIRPLUS: empty listing".into()),
                    None => {
                        let arg = ReleaseIn {
                            fh,
                            ..Default::default()
                        };
                        let r = self.request(Opcode::Releasedir, t.names, arg.as_slice(), 0, 0);
                        (Stage::Closing, Some(r))
                    }
                }
            }
            Stage::Closing => (Stage::Idle, None),
            Stage::Idle => return Err(format!("slot {slot}: a reply to no request")),
        };
        self.stages[slot] = next;
        Ok(req)
    }

    fn list_from(&self, fh: u64, offset: u64) -> (Stage, Option<Request>) {
        let arg = ReadIn {
            fh,
            offset,
            size: DIR_BUF,
            ..Default::default()
        };
        let r = self.request(
            Opcode::Readdirplus,
            self.targets.names,
            arg.as_slice(),
            0,
            DIR_BUF,
        );
        (Stage::Listing { fh, offset }, Some(r))
    }

    /// A single-request operation must have moved all its data.
    fn check_single(&self, used_len: u32, body: &[u8]) -> Result<(), String> {
        let body_len = used_len as usize - OUT_HEADER_LEN;
        let expected = match self.op {
            Op::Getattr => size_of::<AttrOut>(),
            Op::Lookup => size_of::<EntryOut>(),
            Op::Read4k | Op::Read1m => self.op.io_size() as usize,
            Op::Write4k | Op::Write1m => {
                let out: WriteOut = decode(body, "WRITE")?;
                if out.size != self.op.io_size() {
                    return Err(format!("WRITE wrote {} bytes", out.size));
                }
                size_of::<WriteOut>()
            }
            _ => body_len,
        };
        if body_len != expected {
            return Err(format!(
                "{}: reply body of {body_len} bytes, expected {expected}",
                self.op.key()
            ));
        }
        Ok(())
    }

    /// Queues a forget of `nodeid`; sends the batch on the hiprio queue when
    /// it is full.
    fn forget(&mut self, nodeid: u64) -> Result<(), String> {
        self.forgets.push((nodeid, 1));
        if self.forgets.len() >= FORGET_BATCH {
            self.flush_forgets()?;
        }
        Ok(())
    }

    /// Sends the queued forgets.
    pub fn flush_forgets(&mut self) -> Result<(), String> {
        if self.forgets.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.forgets);
        self.driver
            .batch_forget(&batch)
            .map_err(|e| format!("BATCH_FORGET: {e}"))
    }
}

fn decode<T: ByteValued + Default>(bytes: &[u8], what: &str) -> Result<T, String> {
    msb_tests::vhost_driver::decode(bytes, what).map_err(|e| e.to_string())
}
