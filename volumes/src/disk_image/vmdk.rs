//! VMDK images: the files QEMU's VMDK driver opens besides the image, read
//! the way it reads them.
//!
//! - A sparse image (`KDMV`, or the older `COWD`) holds its data itself.
//!   A `KDMV` header with capacity 0 and a descriptor offset instead
//!   points to an embedded descriptor whose extents are opened.
//! - A text descriptor (first line that is not a comment: `version=…`)
//!   names extent files: lines `ACCESS SECTORS TYPE "NAME" [OFFSET]`.
//! - Any of them may name a parent (`parentFileNameHint="…"`, a backing
//!   file): QEMU looks for it in the 10 KiB from byte 512 of a sparse image,
//!   from byte 0 of a descriptor, up to the first NUL byte.
//!
//! This reading is a superset of QEMU's: any line starting with `RW`,
//! `RDONLY` or `NOACCESS` that quotes a name counts as an extent.

use std::fs::File;

use super::probe::{read_at, External, ExternalKind};

/// Magic of a VMDK4 sparse extent.
const SPARSE_MAGIC: &[u8; 4] = b"KDMV";
/// Magic of a VMDK3 (COWD) sparse extent.
const COWD_MAGIC: &[u8; 4] = b"COWD";
/// Where QEMU reads a sparse image's descriptor for the parent hint.
const SPARSE_DESC_AT: u64 = 0x200;
/// How many bytes QEMU reads for the parent hint.
const PARENT_WINDOW: usize = 20 * 512;
/// Most bytes of a descriptor QEMU reads.
const MAX_DESCRIPTOR: usize = (1 << 20) - 1;
/// QEMU's limit on an extent name (`%511[^\n\r"]`).
const MAX_EXTENT_NAME: usize = 511;
/// The key of the parent's name.
const PARENT_KEY: &[u8] = b"parentFileNameHint";

fn le64(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v)
}

/// Whether `head` starts a sparse VMDK extent.
pub(super) fn is_sparse(head: &[u8]) -> bool {
    head.len() >= 4 && (head[..4] == SPARSE_MAGIC[..] || head[..4] == COWD_MAGIC[..])
}

/// Whether `head` is a VMDK text descriptor: its first line that is not a
/// comment or blank starts with `version=` (QEMU's probe wants exactly
/// `version=1`, `2` or `3` there).
pub(super) fn is_descriptor(head: &[u8]) -> bool {
    let text = until_nul(head);
    text.split(|b| *b == b'\n')
        .map(trim_start)
        .find(|l| !l.is_empty() && l[0] != b'#')
        .is_some_and(|l| l.starts_with(b"version="))
}

/// The other files of a sparse image: a parent, and the extents of an
/// embedded descriptor when the header says capacity 0.
pub(super) fn sparse_externals(file: &File, len: u64) -> Result<Vec<External>, String> {
    let mut out = parent(&read_at(file, SPARSE_DESC_AT, PARENT_WINDOW)?);
    let head = read_at(file, 0, 44)?;
    if head.len() == 44 && head[..4] == SPARSE_MAGIC[..] {
        let capacity = le64(&head, 12);
        let desc_sector = le64(&head, 28);
        if capacity == 0 && desc_sector != 0 {
            let at = desc_sector
                .checked_mul(512)
                .filter(|at| *at < len)
                .ok_or("corrupt VMDK header (descriptor offset past the end)")?;
            out.extend(extents(&read_at(file, at, MAX_DESCRIPTOR)?));
        }
    }
    Ok(out)
}

/// The other files of a text descriptor: its extents and its parent.
pub(super) fn descriptor_externals(file: &File) -> Result<Vec<External>, String> {
    let text = read_at(file, 0, MAX_DESCRIPTOR)?;
    let mut out = extents(&text);
    out.extend(parent(&text[..text.len().min(PARENT_WINDOW)]));
    Ok(out)
}

fn until_nul(b: &[u8]) -> &[u8] {
    &b[..b.iter().position(|c| *c == 0).unwrap_or(b.len())]
}

fn trim_start(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    &b[start..]
}

/// The parent named in `window` (QEMU: `strstr` for the key, skip it and
/// two more characters (`="`), then up to the next `"`). A key without a
/// closing quote makes QEMU fail; it is reported with an empty name.
fn parent(window: &[u8]) -> Vec<External> {
    let text = until_nul(window);
    let Some(at) = text.windows(PARENT_KEY.len()).position(|w| w == PARENT_KEY) else {
        return Vec::new();
    };
    let rest = text.get(at + PARENT_KEY.len() + 2..).unwrap_or_default();
    let name = match rest.iter().position(|c| *c == b'"') {
        Some(end) => &rest[..end],
        None => &[][..],
    };
    vec![External::new(
        ExternalKind::Backing,
        String::from_utf8_lossy(name),
    )]
}

/// The extent files a descriptor `text` names (up to its first NUL).
fn extents(text: &[u8]) -> Vec<External> {
    let mut out = Vec::new();
    for line in until_nul(text).split(|b| *b == b'\n') {
        let line = trim_start(line);
        let access_end = line
            .iter()
            .position(|c| c.is_ascii_whitespace())
            .unwrap_or(line.len());
        if !matches!(&line[..access_end], b"RW" | b"RDONLY" | b"NOACCESS") {
            continue;
        }
        let Some(open) = line.iter().position(|c| *c == b'"') else {
            continue;
        };
        let name: Vec<u8> = line[open + 1..]
            .iter()
            .take_while(|c| !matches!(c, b'"' | b'\r' | b'\n'))
            .take(MAX_EXTENT_NAME)
            .copied()
            .collect();
        out.push(External::new(
            ExternalKind::Extent,
            String::from_utf8_lossy(&name),
        ));
    }
    out
}
