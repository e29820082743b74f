//! QCOW2 headers (versions 2 and 3, big-endian): the backing file name,
//! the external data file (incompatible feature bit 2 and its name in a
//! header extension), and encryption, read where QEMU reads them.
//!
//! Layout used (offsets in bytes): magic `QFI\xfb` 0, version 4,
//! backing_file_offset 8 (u64), backing_file_size 16 (u32), cluster_bits
//! 20, crypt_method 32; version 3 adds incompatible_features 72 (u64) and
//! header_length 100 (u32). Header extensions (type u32, length u32, data
//! padded to 8 bytes) follow the header up to the backing file name, or the
//! end of the first cluster when there is none.

use std::fs::File;

use super::probe::{read_at, External, ExternalKind};

/// The magic of QCOW images (any version).
const MAGIC: &[u8; 4] = b"QFI\xfb";
/// Header length of version 2 (where its extensions start).
const V2_HEADER_LEN: u64 = 72;
/// Smallest version 3 header.
const V3_MIN_HEADER_LEN: u64 = 104;
/// Header extension: end of the list.
const EXT_END: u32 = 0;
/// Header extension: name of the external data file.
const EXT_DATA_FILE: u32 = 0x4441_5441;
/// Incompatible feature bit: the guest's data live in an external file.
const INCOMPAT_DATA_FILE: u64 = 1 << 2;
/// Longest backing file name QEMU reads.
const MAX_BACKING_NAME: u64 = 1023;
/// Most header extensions looked at (a cluster of 2 MiB holds at most
/// 262,144 empty ones; QEMU walks them all, so must we).
const MAX_EXTENSIONS: usize = 1 << 18;

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn be64(b: &[u8], at: usize) -> u64 {
    (u64::from(be32(b, at)) << 32) | u64::from(be32(b, at + 4))
}

/// Whether `head` starts a QCOW2 image (version 2 or 3; version 1 is
/// QEMU's `qcow` format).
pub(super) fn is_qcow2(head: &[u8]) -> bool {
    head.len() >= 8 && head[..4] == MAGIC[..] && matches!(be32(head, 4), 2 | 3)
}

/// The other files a QCOW2 image names: its backing file and its external
/// data file. Errors: an encrypted image (QEMU would need a key msb has
/// not got), a header QEMU would refuse anyway.
pub(super) fn externals(file: &File, len: u64) -> Result<Vec<External>, String> {
    let corrupt = |what: &str| format!("corrupt QCOW2 header ({what})");
    let head = read_at(file, 0, V3_MIN_HEADER_LEN as usize)?;
    if head.len() < V2_HEADER_LEN as usize {
        return Err(corrupt("truncated"));
    }
    let version = be32(&head, 4);
    let cluster_bits = be32(&head, 20);
    if !(9..=21).contains(&cluster_bits) {
        return Err(corrupt(&format!("cluster_bits {cluster_bits}")));
    }
    let cluster_size = 1u64 << cluster_bits;
    if be32(&head, 32) != 0 {
        return Err("encrypted QCOW2 images are not supported (QEMU would need a key)".into());
    }
    let mut out = Vec::new();
    let backing_offset = be64(&head, 8);
    if backing_offset != 0 {
        let size = u64::from(be32(&head, 16));
        if size > MAX_BACKING_NAME.min(cluster_size.saturating_sub(backing_offset)) {
            return Err(corrupt("backing file name too long"));
        }
        let name = read_at(file, backing_offset, size as usize)?;
        out.push(External::new(
            ExternalKind::Backing,
            String::from_utf8_lossy(&name),
        ));
    }
    let (incompatible, ext_start) = if version == 3 {
        if head.len() < V3_MIN_HEADER_LEN as usize {
            return Err(corrupt("truncated version 3 header"));
        }
        let header_len = u64::from(be32(&head, 100));
        if header_len < V3_MIN_HEADER_LEN {
            return Err(corrupt(&format!("header_length {header_len}")));
        }
        (be64(&head, 72), header_len)
    } else {
        (0, V2_HEADER_LEN)
    };
    let ext_end = if backing_offset != 0 {
        backing_offset
    } else {
        cluster_size
    };
    let data_file = data_file_name(file, ext_start, ext_end.min(len))?;
    if incompatible & INCOMPAT_DATA_FILE != 0 || data_file.is_some() {
        out.push(External::new(
            ExternalKind::DataFile,
            data_file.unwrap_or_default(),
        ));
    }
    Ok(out)
}

/// Walks the header extensions in `[start, end)` and returns the external
/// data file name, if one is there.
fn data_file_name(file: &File, start: u64, end: u64) -> Result<Option<String>, String> {
    if start >= end {
        return Ok(None);
    }
    let area = read_at(file, start, (end - start) as usize)?;
    let mut at = 0usize;
    let mut found = None;
    for _ in 0..MAX_EXTENSIONS {
        if at + 8 > area.len() {
            break;
        }
        let kind = be32(&area, at);
        let len = be32(&area, at + 4) as usize;
        if kind == EXT_END {
            break;
        }
        let data = at + 8;
        let data_end = data
            .checked_add(len)
            .filter(|e| *e <= area.len())
            .ok_or("corrupt QCOW2 header (extension past its area)")?;
        if kind == EXT_DATA_FILE {
            found = Some(String::from_utf8_lossy(&area[data..data_end]).into_owned());
        }
        at = data + len.div_ceil(8) * 8;
    }
    Ok(found)
}
