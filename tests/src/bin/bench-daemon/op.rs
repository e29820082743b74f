//! The operations measured, and what they share between the native and
//! the daemon runs: offsets and a small deterministic random generator.

use crate::fixture::DATA_BYTES;

/// One measured operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    /// Attributes of a file by node id (`fstatat(fd, "", AT_EMPTY_PATH)`).
    Getattr,
    /// A name in a 1,000-entry directory, cycling through the names.
    Lookup,
    /// 4 KiB read at a random 4 KiB-aligned offset of a 64 MiB file.
    Read4k,
    /// 4 KiB write at a random 4 KiB-aligned offset of a 64 MiB file.
    Write4k,
    /// 1 MiB reads in sequence through a 64 MiB file (wrapping).
    Read1m,
    /// 1 MiB writes in sequence through a 64 MiB file (wrapping).
    Write1m,
    /// Create a new file, close it, unlink it.
    CreateUnlink,
    /// List a 1,000-entry directory with READDIRPLUS (4 KiB per request,
    /// as a Linux guest asks), from OPENDIR to RELEASEDIR.
    Readdirplus,
}

/// 4 KiB.
pub const SMALL_IO: u32 = 4096;
/// 1 MiB.
pub const LARGE_IO: u32 = 1 << 20;
/// Reply room a Linux guest gives READDIRPLUS (one page).
pub const DIR_BUF: u32 = 4096;

impl Op {
    /// Every operation, in table order.
    pub const ALL: [Op; 8] = [
        Op::Getattr,
        Op::Lookup,
        Op::Read4k,
        Op::Write4k,
        Op::Read1m,
        Op::Write1m,
        Op::CreateUnlink,
        Op::Readdirplus,
    ];

    /// Short name used on the command line.
    pub fn key(self) -> &'static str {
        match self {
            Op::Getattr => "getattr",
            Op::Lookup => "lookup",
            Op::Read4k => "read4k",
            Op::Write4k => "write4k",
            Op::Read1m => "read1m",
            Op::Write1m => "write1m",
            Op::CreateUnlink => "create",
            Op::Readdirplus => "readdirplus",
        }
    }

    /// Name in the tables.
    pub fn label(self) -> &'static str {
        match self {
            Op::Getattr => "getattr",
            Op::Lookup => "lookup",
            Op::Read4k => "read 4 KiB random",
            Op::Write4k => "write 4 KiB random",
            Op::Read1m => "read 1 MiB sequential",
            Op::Write1m => "write 1 MiB sequential",
            Op::CreateUnlink => "create+unlink",
            Op::Readdirplus => "readdirplus 1,000 entries",
        }
    }

    /// The operation a command-line key names.
    pub fn parse(key: &str) -> Option<Op> {
        Op::ALL.into_iter().find(|op| op.key() == key)
    }

    /// Bytes of data one operation moves (0 for metadata operations).
    pub fn io_size(self) -> u32 {
        match self {
            Op::Read4k | Op::Write4k => SMALL_IO,
            Op::Read1m | Op::Write1m => LARGE_IO,
            _ => 0,
        }
    }

    /// Whether the data moves from the host to the guest.
    pub fn is_write(self) -> bool {
        matches!(self, Op::Write4k | Op::Write1m)
    }
}

/// Offsets of one stream of I/O operations: random 4 KiB-aligned, or
/// sequential wrapping at the end of the file.
pub struct Offsets {
    state: u64,
    next_sequential: u64,
}

impl Offsets {
    /// A stream seeded by `seed`; sequential streams start at a
    /// seed-dependent 1 MiB boundary so parallel streams do not overlap.
    pub fn new(seed: u64) -> Self {
        Offsets {
            state: seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1,
            next_sequential: (seed * (DATA_BYTES / 2)) % DATA_BYTES,
        }
    }

    /// The offset of the next operation of `size` bytes, random or not.
    pub fn next(&mut self, op: Op) -> u64 {
        let size = u64::from(op.io_size().max(1));
        match op {
            Op::Read1m | Op::Write1m => {
                let at = self.next_sequential;
                self.next_sequential = (at + size) % DATA_BYTES;
                at
            }
            _ => (self.random() % (DATA_BYTES / size)) * size,
        }
    }

    /// A random index below `n` (`n` > 0).
    pub fn index(&mut self, n: usize) -> usize {
        (self.random() % n as u64) as usize
    }

    /// xorshift64: enough to spread offsets, and repeatable.
    fn random(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.state = x;
        x
    }
}
