//! Typed FUSE requests on top of [`FsDriver::send_on`], and decoding of
//! directory listings.

use std::mem::size_of;

use fuse_backend_rs::abi::fuse_abi::{
    Attr, AttrOut, BatchForgetIn, CreateIn, Dirent, EntryOut, ForgetIn, ForgetOne, FsOptions,
    GetattrIn, InitIn, InitIn2, InitOut, Kstatfs, MkdirIn, Opcode, OpenIn, OpenOut, ReadIn,
    ReleaseIn, RenameIn, WriteIn, WriteOut,
};
use vm_memory::ByteValued;

use super::{decode, DriverError, FsDriver, Result, FIRST_REQUEST_QUEUE, HIPRIO_QUEUE};

/// Room for replies whose size is not known in advance (names, listings).
const SMALL_REPLY: u32 = 4096;

/// One entry of a `READDIR` reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// Inode number the daemon reports.
    pub ino: u64,
    /// Offset to continue listing after this entry.
    pub off: u64,
    /// `DT_*` type.
    pub typ: u32,
    /// Name bytes.
    pub name: Vec<u8>,
}

/// One entry of a `READDIRPLUS` reply: a lookup result plus the dirent.
/// A non-zero `entry.nodeid` counts as a lookup (forget it when done).
#[derive(Debug, Clone)]
pub struct DirEntryPlus {
    /// Lookup result (nodeid 0 for entries the daemon did not look up).
    pub entry: EntryOut,
    /// The directory entry.
    pub dirent: DirEntry,
}

fn with_name(prefix: &[u8], name: &[u8]) -> Vec<u8> {
    let mut v = prefix.to_vec();
    v.extend_from_slice(name);
    v.push(0);
    v
}

fn pad8(n: usize) -> usize {
    n.div_ceil(8) * 8
}

/// Decodes a `READDIR` reply body.
pub fn parse_dirents(mut body: &[u8]) -> Result<Vec<DirEntry>> {
    let mut out = Vec::new();
    while !body.is_empty() {
        let (d, used) = parse_one_dirent(body)?;
        out.push(d);
        body = &body[used.min(body.len())..];
    }
    Ok(out)
}

fn parse_one_dirent(body: &[u8]) -> Result<(DirEntry, usize)> {
    let d: Dirent = decode(body, "dirent")?;
    let start = size_of::<Dirent>();
    let end = start + d.namelen as usize;
    if d.namelen == 0 || end > body.len() {
        return Err(DriverError::Protocol(format!(
            "dirent name length {} does not fit the {} bytes left",
            d.namelen,
            body.len()
        )));
    }
    let entry = DirEntry {
        ino: d.ino,
        off: d.off,
        typ: d.type_,
        name: body[start..end].to_vec(),
    };
    Ok((entry, pad8(end)))
}

/// Decodes a `READDIRPLUS` reply body.
pub fn parse_direntplus(mut body: &[u8]) -> Result<Vec<DirEntryPlus>> {
    let mut out = Vec::new();
    while !body.is_empty() {
        let entry: EntryOut = decode(body, "direntplus")?;
        let rest = &body[size_of::<EntryOut>()..];
        let (dirent, used) = parse_one_dirent(rest)?;
        out.push(DirEntryPlus { entry, dirent });
        body = &rest[used.min(rest.len())..];
    }
    Ok(out)
}

/// Typed FUSE requests. Implemented by [`FsDriver`] (first request queue)
/// and [`QueueClient`] (any request queue); FORGETs go to the hiprio queue.
/// An error reply is [`DriverError::Errno`].
pub trait FuseClient {
    /// The driver requests go through.
    fn driver(&self) -> &FsDriver;
    /// The queue requests go to.
    fn queue(&self) -> usize;

    /// Sends `opcode` with `body`; returns the reply body of a success reply.
    fn call(
        &self,
        opcode: Opcode,
        nodeid: u64,
        body: &[u8],
        reply_capacity: u32,
    ) -> Result<Vec<u8>> {
        self.driver()
            .send_on(self.queue(), opcode as u32, nodeid, body, reply_capacity)?
            .into_result()
    }

    /// Like [`FuseClient::call`] for replies that are exactly one `T`.
    fn call_obj<T: ByteValued + Default>(
        &self,
        opcode: Opcode,
        nodeid: u64,
        body: &[u8],
    ) -> Result<T> {
        let reply = self.call(opcode, nodeid, body, size_of::<T>() as u32)?;
        if reply.len() != size_of::<T>() {
            return Err(DriverError::Protocol(format!(
                "{opcode:?}: reply body is {} bytes, expected {}",
                reply.len(),
                size_of::<T>()
            )));
        }
        decode(&reply, &format!("{opcode:?}"))
    }

    /// `FUSE_INIT` as a recent Linux guest sends it (7.36, `INIT_EXT`).
    fn init(&self) -> Result<InitOut> {
        let flags = FsOptions::ASYNC_READ
            | FsOptions::POSIX_LOCKS
            | FsOptions::ATOMIC_O_TRUNC
            | FsOptions::EXPORT_SUPPORT
            | FsOptions::BIG_WRITES
            | FsOptions::FLOCK_LOCKS
            | FsOptions::AUTO_INVAL_DATA
            | FsOptions::DO_READDIRPLUS
            | FsOptions::READDIRPLUS_AUTO
            | FsOptions::ASYNC_DIO
            | FsOptions::PARALLEL_DIROPS
            | FsOptions::MAX_PAGES
            | FsOptions::CACHE_SYMLINKS
            | FsOptions::EXPLICIT_INVAL_DATA
            | FsOptions::INIT_EXT;
        self.init_with(7, 36, flags.bits())
    }

    /// `FUSE_INIT` with chosen version and flags (`INIT_EXT` adds `flags2`).
    fn init_with(&self, major: u32, minor: u32, flags: u64) -> Result<InitOut> {
        let mut body = InitIn {
            major,
            minor,
            max_readahead: 128 * 1024,
            flags: flags as u32,
        }
        .as_slice()
        .to_vec();
        if flags & FsOptions::INIT_EXT.bits() != 0 {
            let ext = InitIn2 {
                flags2: (flags >> 32) as u32,
                unused: [0; 11],
            };
            body.extend_from_slice(ext.as_slice());
        }
        let reply = self.call(Opcode::Init, 0, &body, size_of::<InitOut>() as u32)?;
        // Old minors get a shorter reply; missing fields read as zero.
        let mut out = InitOut::default();
        let n = reply.len().min(size_of::<InitOut>());
        out.as_mut_slice()[..n].copy_from_slice(&reply[..n]);
        Ok(out)
    }

    /// `FUSE_LOOKUP` of `name` (sent with a NUL terminator) in `parent`.
    fn lookup(&self, parent: u64, name: &[u8]) -> Result<EntryOut> {
        self.call_obj(Opcode::Lookup, parent, &with_name(&[], name))
    }

    /// `FUSE_FORGET` on the hiprio queue; there is no reply.
    fn forget(&self, nodeid: u64, nlookup: u64) -> Result<()> {
        let body = ForgetIn { nlookup };
        self.driver()
            .send_no_reply(HIPRIO_QUEUE, Opcode::Forget as u32, nodeid, body.as_slice())
    }

    /// `FUSE_BATCH_FORGET` of (nodeid, nlookup) pairs on the hiprio queue.
    fn batch_forget(&self, items: &[(u64, u64)]) -> Result<()> {
        let mut body = BatchForgetIn {
            count: items.len() as u32,
            dummy: 0,
        }
        .as_slice()
        .to_vec();
        for &(nodeid, nlookup) in items {
            body.extend_from_slice(ForgetOne { nodeid, nlookup }.as_slice());
        }
        self.driver()
            .send_no_reply(HIPRIO_QUEUE, Opcode::BatchForget as u32, 0, &body)
    }

    /// `FUSE_GETATTR` without a file handle.
    fn getattr(&self, nodeid: u64) -> Result<Attr> {
        let body = GetattrIn::default();
        Ok(self
            .call_obj::<AttrOut>(Opcode::Getattr, nodeid, body.as_slice())?
            .attr)
    }

    /// `FUSE_CREATE` (umask 0); returns the new entry and the open handle.
    fn create(
        &self,
        parent: u64,
        name: &[u8],
        mode: u32,
        flags: i32,
    ) -> Result<(EntryOut, OpenOut)> {
        let arg = CreateIn {
            flags: flags as u32,
            mode,
            umask: 0,
            fuse_flags: 0,
        };
        let reply = self.call(
            Opcode::Create,
            parent,
            &with_name(arg.as_slice(), name),
            (size_of::<EntryOut>() + size_of::<OpenOut>()) as u32,
        )?;
        if reply.len() != size_of::<EntryOut>() + size_of::<OpenOut>() {
            return Err(DriverError::Protocol(format!(
                "CREATE: reply body is {} bytes",
                reply.len()
            )));
        }
        let entry: EntryOut = decode(&reply, "CREATE entry")?;
        let open: OpenOut = decode(&reply[size_of::<EntryOut>()..], "CREATE open")?;
        Ok((entry, open))
    }

    /// `FUSE_OPEN` with `O_*` flags.
    fn open(&self, nodeid: u64, flags: i32) -> Result<OpenOut> {
        let arg = OpenIn {
            flags: flags as u32,
            fuse_flags: 0,
        };
        self.call_obj(Opcode::Open, nodeid, arg.as_slice())
    }

    /// `FUSE_READ` of up to `size` bytes at `offset`.
    fn read(&self, nodeid: u64, fh: u64, offset: u64, size: u32) -> Result<Vec<u8>> {
        let arg = ReadIn {
            fh,
            offset,
            size,
            ..Default::default()
        };
        let data = self.call(Opcode::Read, nodeid, arg.as_slice(), size)?;
        if data.len() > size as usize {
            return Err(DriverError::Protocol(format!(
                "READ of {size} bytes returned {}",
                data.len()
            )));
        }
        Ok(data)
    }

    /// `FUSE_WRITE` of `data` at `offset`; returns the count written.
    fn write(&self, nodeid: u64, fh: u64, offset: u64, data: &[u8]) -> Result<u32> {
        let arg = WriteIn {
            fh,
            offset,
            size: data.len() as u32,
            ..Default::default()
        };
        let mut body = arg.as_slice().to_vec();
        body.extend_from_slice(data);
        Ok(self
            .call_obj::<WriteOut>(Opcode::Write, nodeid, &body)?
            .size)
    }

    /// `FUSE_RELEASE` of a file handle.
    fn release(&self, nodeid: u64, fh: u64) -> Result<()> {
        let arg = ReleaseIn {
            fh,
            ..Default::default()
        };
        self.call(Opcode::Release, nodeid, arg.as_slice(), 0)
            .map(drop)
    }

    /// `FUSE_OPENDIR`; returns the directory handle.
    fn opendir(&self, nodeid: u64) -> Result<u64> {
        let arg = OpenIn::default();
        Ok(self
            .call_obj::<OpenOut>(Opcode::Opendir, nodeid, arg.as_slice())?
            .fh)
    }

    /// `FUSE_RELEASEDIR` of a directory handle.
    fn releasedir(&self, nodeid: u64, fh: u64) -> Result<()> {
        let arg = ReleaseIn {
            fh,
            ..Default::default()
        };
        self.call(Opcode::Releasedir, nodeid, arg.as_slice(), 0)
            .map(drop)
    }

    /// One `FUSE_READDIR` of up to `size` bytes from `offset`.
    fn readdir(&self, nodeid: u64, fh: u64, offset: u64, size: u32) -> Result<Vec<DirEntry>> {
        let arg = ReadIn {
            fh,
            offset,
            size,
            ..Default::default()
        };
        parse_dirents(&self.call(Opcode::Readdir, nodeid, arg.as_slice(), size)?)
    }

    /// One `FUSE_READDIRPLUS` of up to `size` bytes from `offset`.
    fn readdirplus(
        &self,
        nodeid: u64,
        fh: u64,
        offset: u64,
        size: u32,
    ) -> Result<Vec<DirEntryPlus>> {
        let arg = ReadIn {
            fh,
            offset,
            size,
            ..Default::default()
        };
        parse_direntplus(&self.call(Opcode::Readdirplus, nodeid, arg.as_slice(), size)?)
    }

    /// Lists a whole directory with `READDIR` (opendir … releasedir).
    fn list(&self, nodeid: u64) -> Result<Vec<DirEntry>> {
        let fh = self.opendir(nodeid)?;
        let mut all = Vec::new();
        let mut offset = 0;
        let res = loop {
            match self.readdir(nodeid, fh, offset, SMALL_REPLY) {
                Ok(batch) if batch.is_empty() => break Ok(()),
                Ok(batch) => {
                    offset = batch.last().map(|e| e.off).unwrap_or(offset);
                    all.extend(batch);
                }
                Err(e) => break Err(e),
            }
        };
        self.releasedir(nodeid, fh)?;
        res.map(|()| all)
    }

    /// Lists a whole directory with `READDIRPLUS`. Entries with a nodeid
    /// are looked up once each; the caller forgets them.
    fn list_plus(&self, nodeid: u64) -> Result<Vec<DirEntryPlus>> {
        let fh = self.opendir(nodeid)?;
        let mut all = Vec::new();
        let mut offset = 0;
        let res = loop {
            match self.readdirplus(nodeid, fh, offset, SMALL_REPLY) {
                Ok(batch) if batch.is_empty() => break Ok(()),
                Ok(batch) => {
                    offset = batch.last().map(|e| e.dirent.off).unwrap_or(offset);
                    all.extend(batch);
                }
                Err(e) => break Err(e),
            }
        };
        self.releasedir(nodeid, fh)?;
        res.map(|()| all)
    }

    /// `FUSE_MKDIR` (umask 0).
    fn mkdir(&self, parent: u64, name: &[u8], mode: u32) -> Result<EntryOut> {
        let arg = MkdirIn { mode, umask: 0 };
        self.call_obj(Opcode::Mkdir, parent, &with_name(arg.as_slice(), name))
    }

    /// `FUSE_SYMLINK`: creates `name` in `parent` pointing at `target`.
    fn symlink(&self, parent: u64, name: &[u8], target: &[u8]) -> Result<EntryOut> {
        let body = with_name(&with_name(&[], name), target);
        self.call_obj(Opcode::Symlink, parent, &body)
    }

    /// `FUSE_READLINK`; returns the link text.
    fn readlink(&self, nodeid: u64) -> Result<Vec<u8>> {
        self.call(Opcode::Readlink, nodeid, &[], SMALL_REPLY)
    }

    /// `FUSE_UNLINK` of `name` in `parent`.
    fn unlink(&self, parent: u64, name: &[u8]) -> Result<()> {
        self.call(Opcode::Unlink, parent, &with_name(&[], name), 0)
            .map(drop)
    }

    /// `FUSE_RMDIR` of `name` in `parent`.
    fn rmdir(&self, parent: u64, name: &[u8]) -> Result<()> {
        self.call(Opcode::Rmdir, parent, &with_name(&[], name), 0)
            .map(drop)
    }

    /// `FUSE_RENAME` of `parent/name` to `newparent/newname`.
    fn rename(&self, parent: u64, name: &[u8], newparent: u64, newname: &[u8]) -> Result<()> {
        let arg = RenameIn { newdir: newparent };
        let body = with_name(&with_name(arg.as_slice(), name), newname);
        self.call(Opcode::Rename, parent, &body, 0).map(drop)
    }

    /// `FUSE_STATFS`.
    fn statfs(&self, nodeid: u64) -> Result<Kstatfs> {
        self.call_obj(Opcode::Statfs, nodeid, &[])
    }
}

impl FuseClient for FsDriver {
    fn driver(&self) -> &FsDriver {
        self
    }
    fn queue(&self) -> usize {
        FIRST_REQUEST_QUEUE
    }
}

/// A [`FuseClient`] bound to one request queue of a driver; cheap to create,
/// one per thread to drive queues concurrently.
#[derive(Clone, Copy)]
pub struct QueueClient<'a> {
    driver: &'a FsDriver,
    queue: usize,
}

impl<'a> QueueClient<'a> {
    /// Binds `driver`'s queue `queue`.
    pub fn new(driver: &'a FsDriver, queue: usize) -> Self {
        QueueClient { driver, queue }
    }
}

impl FuseClient for QueueClient<'_> {
    fn driver(&self) -> &FsDriver {
        self.driver
    }
    fn queue(&self) -> usize {
        self.queue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dirent(ino: u64, off: u64, name: &[u8]) -> Vec<u8> {
        let d = Dirent {
            ino,
            off,
            namelen: name.len() as u32,
            type_: 8,
        };
        let mut v = d.as_slice().to_vec();
        v.extend_from_slice(name);
        v.resize(pad8(v.len()), 0);
        v
    }

    #[test]
    fn parses_padded_dirents() {
        let mut body = dirent(5, 1, b"a");
        body.extend(dirent(6, 2, b"eightchr"));
        body.extend(dirent(7, 3, b"ninechars"));
        let got = parse_dirents(&body).unwrap();
        let names: Vec<_> = got.iter().map(|e| e.name.clone()).collect();
        assert_eq!(
            names,
            [b"a".to_vec(), b"eightchr".to_vec(), b"ninechars".to_vec()]
        );
        assert_eq!(got[2].ino, 7);
        assert_eq!(got[2].off, 3);
    }

    #[test]
    fn parses_direntplus_and_rejects_overlong_names() {
        let entry = EntryOut {
            nodeid: 42,
            ..Default::default()
        };
        let mut body = entry.as_slice().to_vec();
        body.extend(dirent(9, 1, b"file"));
        let got = parse_direntplus(&body).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].entry.nodeid, 42);
        assert_eq!(got[0].dirent.name, b"file");

        let mut bad = dirent(1, 1, b"x");
        bad[16..20].copy_from_slice(&100u32.to_le_bytes());
        assert!(matches!(parse_dirents(&bad), Err(DriverError::Protocol(_))));
        assert!(matches!(
            parse_dirents(&[0u8; 10]),
            Err(DriverError::Protocol(_))
        ));
    }

    #[test]
    fn names_are_nul_terminated() {
        assert_eq!(with_name(&[1, 2], b"ab"), vec![1, 2, b'a', b'b', 0]);
    }
}
