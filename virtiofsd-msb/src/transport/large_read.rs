//! Recognizing a large `FUSE_READ` in a descriptor chain before it is
//! served, so the queue thread can hand it to a copy helper (see
//! [`crate::copy_crew`]).
//!
//! Only the first readable bytes of the chain are looked at (the request
//! header and `fuse_read_in`, which a frontend may put in one descriptor or
//! several); anything that cannot be read says "no" and the request is
//! served in line, where it is checked in full.

use std::mem::{offset_of, size_of};

use fuse_backend_rs::abi::fuse_abi::{InHeader, Opcode, ReadIn};
use virtio_queue::DescriptorChain;
use vm_memory::{Bytes, GuestMemory};

use crate::copy_crew::MIN_SPLIT;
use crate::transport::fast_path::decode;

/// Bytes of the request read: the header and `fuse_read_in` up to and
/// including its `size`.
const NEEDED: usize = size_of::<InHeader>() + offset_of!(ReadIn, size) + size_of::<u32>();

/// Whether `chain` asks for a `FUSE_READ` of at least [`MIN_SPLIT`] bytes.
pub fn is_large_read<M, Mem>(mem: &Mem, chain: &DescriptorChain<M>) -> bool
where
    M: std::ops::Deref<Target = Mem> + Clone,
    Mem: GuestMemory,
{
    let mut head = [0u8; NEEDED];
    let mut got = 0;
    for desc in chain.clone() {
        if desc.is_write_only() || got == head.len() {
            break;
        }
        let n = (desc.len() as usize).min(head.len() - got);
        if mem
            .read_slice(&mut head[got..got + n], desc.addr())
            .is_err()
        {
            return false;
        }
        got += n;
    }
    let (header, body) = head.split_at(size_of::<InHeader>());
    got == head.len()
        && decode::<InHeader>(header).opcode == Opcode::Read as u32
        && decode::<ReadIn>(body).size as usize >= MIN_SPLIT
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{ByteValued, GuestAddress, GuestMemoryMmap};

    const WRITE_ONLY: u16 = 2;
    const DATA_AT: u64 = 0x8000;
    const IN_HEADER_LEN: usize = size_of::<InHeader>();

    /// The first `len` bytes of a request with this opcode and
    /// `fuse_read_in.size`.
    fn request(opcode: u32, size: u32, len: usize) -> Vec<u8> {
        let header = InHeader {
            len: len as u32,
            opcode,
            ..Default::default()
        };
        let args = ReadIn {
            size,
            ..Default::default()
        };
        let mut r = header.as_slice().to_vec();
        r.extend_from_slice(args.as_slice());
        r.resize(len, 0);
        r
    }

    /// Puts `req` in guest memory cut into descriptors of `cuts` bytes
    /// (the rest in a last one), then a writable reply buffer, and asks.
    fn peek(req: &[u8], cuts: &[usize]) -> bool {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        let queue = MockSplitQueue::new(&mem, 16);
        mem.write_slice(req, GuestAddress(DATA_AT)).unwrap();
        let mut descs = Vec::new();
        let mut at = 0usize;
        for &n in cuts
            .iter()
            .chain(std::iter::once(&(req.len() - cuts.iter().sum::<usize>())))
        {
            descs.push(RawDescriptor::from(SplitDescriptor::new(
                DATA_AT + at as u64,
                n as u32,
                0,
                0,
            )));
            at += n;
        }
        descs.push(RawDescriptor::from(SplitDescriptor::new(
            0x4_0000, 4096, WRITE_ONLY, 0,
        )));
        let chain = queue.build_desc_chain(&descs).unwrap();
        is_large_read(&mem, &chain)
    }

    const READ: u32 = Opcode::Read as u32;
    const BIG: u32 = MIN_SPLIT as u32;

    #[test]
    fn a_large_read_is_seen_in_one_descriptor_or_several() {
        assert!(peek(&request(READ, BIG, 80), &[]));
        assert!(peek(&request(READ, 1 << 20, 80), &[IN_HEADER_LEN]));
        assert!(peek(&request(READ, BIG, 80), &[7, 33, 1]));
    }

    #[test]
    fn small_reads_other_requests_and_short_chains_are_not() {
        assert!(!peek(&request(READ, BIG - 1, 80), &[]));
        assert!(!peek(&request(Opcode::Write as u32, BIG, 80), &[]));
        assert!(!peek(&request(READ, BIG, NEEDED - 1), &[]));
        assert!(!peek(&request(READ, BIG, IN_HEADER_LEN), &[]));
    }

    #[test]
    fn unreadable_memory_says_no() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        let queue = MockSplitQueue::new(&mem, 16);
        let descs = [RawDescriptor::from(SplitDescriptor::new(
            0xF_FFF0, 80, 0, 0,
        ))];
        let chain = queue.build_desc_chain(&descs).unwrap();
        assert!(!is_large_read(&mem, &chain));
    }
}
