//! What an image file is, read from its header: the format, and every
//! other host file QEMU would open with it.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::{qcow2, qemu_img, vmdk, DiskFormat};

/// Bytes of the head that decide the format (QEMU probes with 2 KiB too).
const HEAD_BYTES: usize = 2048;

/// What kind of other file an image names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExternalKind {
    /// A backing file (QCOW2, QED, QCOW) or parent (VMDK): read for every
    /// cluster the image does not hold itself.
    Backing,
    /// A QCOW2 external data file: holds all of the guest's data.
    DataFile,
    /// A VMDK extent named by a descriptor: holds part of the guest's data.
    Extent,
}

impl ExternalKind {
    /// How messages call it.
    pub fn describe(self) -> &'static str {
        match self {
            ExternalKind::Backing => "backing file",
            ExternalKind::DataFile => "external data file",
            ExternalKind::Extent => "extent file",
        }
    }
}

/// One other file an image names, as written in the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct External {
    /// Its role.
    pub kind: ExternalKind,
    /// The name as the image holds it (relative to the image's directory
    /// unless absolute).
    pub name: String,
}

impl External {
    pub(super) fn new(kind: ExternalKind, name: impl Into<String>) -> External {
        External {
            kind,
            name: name.into(),
        }
    }
}

/// What [`probe`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// The format.
    pub format: DiskFormat,
    /// Other files it names (the image itself excluded).
    pub externals: Vec<External>,
}

/// Reads up to `len` bytes at `offset` (fewer at the end of the file).
pub(super) fn read_at(file: &File, offset: u64, len: usize) -> Result<Vec<u8>, String> {
    let mut buf = vec![0u8; len];
    let mut done = 0;
    while done < len {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("cannot read it: {e}")),
        }
    }
    buf.truncate(done);
    Ok(buf)
}

/// The format `head` (the first bytes of a file) announces, among those
/// parsed here: QCOW2 v2/v3, sparse VMDK, a VMDK text descriptor.
pub(super) fn magic_format(head: &[u8]) -> Option<DiskFormat> {
    if qcow2::is_qcow2(head) {
        Some(DiskFormat::Qcow2)
    } else if vmdk::is_sparse(head) || vmdk::is_descriptor(head) {
        Some(DiskFormat::Vmdk)
    } else {
        None
    }
}

/// The format `image`'s header announces, when it is one parsed here;
/// `None` otherwise or when it cannot be read (for warnings only).
pub(super) fn looks_like(image: &Path) -> Option<DiskFormat> {
    let file = File::open(image).ok()?;
    magic_format(&read_at(&file, 0, HEAD_BYTES).ok()?)
}

/// Identifies `image` (an absolute path) and the files it names: QCOW2 and
/// VMDK from their headers, anything else through `qemu-img info` (raw
/// when `qemu-img` is not installed). The error says what is wrong with
/// the image, without naming it.
pub fn probe(image: &Path) -> Result<Probe, String> {
    let file = File::open(image).map_err(|e| format!("cannot open it: {e}"))?;
    let len = file
        .metadata()
        .map_err(|e| format!("cannot stat it: {e}"))?
        .len();
    let head = read_at(&file, 0, HEAD_BYTES)?;
    let (format, names) = if qcow2::is_qcow2(&head) {
        (DiskFormat::Qcow2, qcow2::externals(&file, len)?)
    } else if vmdk::is_sparse(&head) {
        (DiskFormat::Vmdk, vmdk::sparse_externals(&file, len)?)
    } else if vmdk::is_descriptor(&head) {
        (DiskFormat::Vmdk, vmdk::descriptor_externals(&file)?)
    } else {
        match qemu_img::info(image)? {
            Some(found) => (found.format, found.externals),
            None => (DiskFormat::Raw, Vec::new()),
        }
    };
    let externals = names
        .into_iter()
        .filter(|e| !super::chain::names_itself(image, &e.name))
        .collect();
    Ok(Probe { format, externals })
}
