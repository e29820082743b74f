//! Disk images as `msb` attaches them: the format found on the host from
//! the image's header before any VMM opens it, and the rules that keep a
//! guest from steering how its disk is opened next time.
//!
//! Safe by construction, in two layers:
//! - **A raw image stays raw.** The first time msb sees an image as raw it
//!   records that in the image's `user.msb.disk-format` xattr
//!   ([`FORMAT_XATTR`]); the record wins over the header from then on. A
//!   guest writes only the disk's bytes, never the host file's xattrs, so a
//!   QCOW2 header it writes into a raw disk changes nothing at the next run.
//!   A raw image the guest may write whose filesystem keeps no user xattrs
//!   is refused (nothing could pin it): attach it `ro` or move it.
//! - **Only the image itself is opened.** A QCOW2 or VMDK image naming any
//!   other host file (backing file, external data file, VMDK extents) is
//!   refused unless the mount says `backing=allow`, and even then every such
//!   file, followed down the chain, must lie inside the image's own
//!   directory. So an image that does look like another format can still
//!   only show the guest bytes of that one file.
//!
//! Detection: QCOW2 (v2, v3) and VMDK (sparse, and text descriptors) are
//! parsed here ([`qcow2`], [`vmdk`]), reading what QEMU reads; anything else
//! is what `qemu-img info --output=json` says ([`qemu_img`]), limited to the
//! formats in [`DiskFormat`]. A `format=` given by the user must agree.

mod chain;
mod probe;
mod qcow2;
mod qemu_img;
mod record;
#[cfg(test)]
mod tests;
mod vmdk;

use std::fmt;
use std::path::Path;
use std::str::FromStr;

pub use probe::{probe, External, ExternalKind, Probe};
pub use qemu_img::QEMU_IMG_ENV;
pub use record::{read_record, record_raw, FORMAT_XATTR};

/// Image formats msb attaches (QEMU's driver names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DiskFormat {
    /// The bytes as they are.
    Raw,
    /// QEMU copy-on-write, versions 2 and 3.
    Qcow2,
    /// VMware disk (sparse, stream-optimized, or a descriptor with extents).
    Vmdk,
    /// QEMU copy-on-write version 1.
    Qcow,
    /// QEMU enhanced disk.
    Qed,
    /// VirtualBox disk.
    Vdi,
    /// Hyper-V disk.
    Vhdx,
    /// Virtual PC disk (VHD).
    Vpc,
    /// Parallels disk.
    Parallels,
    /// Apple disk image (read-only in QEMU).
    Dmg,
    /// Compressed loop image (read-only in QEMU).
    Cloop,
    /// Bochs disk (read-only in QEMU).
    Bochs,
}

impl DiskFormat {
    /// Every format, in the order error messages list them.
    pub const ALL: [DiskFormat; 12] = [
        DiskFormat::Raw,
        DiskFormat::Qcow2,
        DiskFormat::Vmdk,
        DiskFormat::Qcow,
        DiskFormat::Qed,
        DiskFormat::Vdi,
        DiskFormat::Vhdx,
        DiskFormat::Vpc,
        DiskFormat::Parallels,
        DiskFormat::Dmg,
        DiskFormat::Cloop,
        DiskFormat::Bochs,
    ];

    /// QEMU's name of the format (`-drive format=`, `qemu-img -f`).
    pub fn name(self) -> &'static str {
        match self {
            DiskFormat::Raw => "raw",
            DiskFormat::Qcow2 => "qcow2",
            DiskFormat::Vmdk => "vmdk",
            DiskFormat::Qcow => "qcow",
            DiskFormat::Qed => "qed",
            DiskFormat::Vdi => "vdi",
            DiskFormat::Vhdx => "vhdx",
            DiskFormat::Vpc => "vpc",
            DiskFormat::Parallels => "parallels",
            DiskFormat::Dmg => "dmg",
            DiskFormat::Cloop => "cloop",
            DiskFormat::Bochs => "bochs",
        }
    }

    /// Whether QEMU can write images of this format.
    pub fn writable(self) -> bool {
        !matches!(
            self,
            DiskFormat::Dmg | DiskFormat::Cloop | DiskFormat::Bochs
        )
    }

    /// `raw, qcow2, …`: the accepted names.
    pub fn names() -> String {
        DiskFormat::ALL.map(DiskFormat::name).join(", ")
    }
}

impl fmt::Display for DiskFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DiskFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        DiskFormat::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| format!("unknown disk format {s:?} (use {})", DiskFormat::names()))
    }
}

/// `backing=`: whether an image may name other host files.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BackingPolicy {
    /// Refuse any image naming another file (the default).
    #[default]
    Deny,
    /// Follow backing files, external data files and extents, each inside
    /// the image's directory.
    Allow,
}

impl FromStr for BackingPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "deny" => Ok(BackingPolicy::Deny),
            "allow" => Ok(BackingPolicy::Allow),
            other => Err(format!("backing {other:?}: use deny or allow")),
        }
    }
}

/// What a mount asks of its image.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskRequest {
    /// `format=`, when given.
    pub format: Option<DiskFormat>,
    /// `backing=`.
    pub backing: BackingPolicy,
    /// Whether the guest may write the disk (not `ro`).
    pub writable: bool,
}

/// Why an image cannot be attached as asked; the message names the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskImageError(pub String);

impl fmt::Display for DiskImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DiskImageError {}

/// Decides the format `image` (an absolute, canonical path to a regular
/// file) is opened with, applying the rules of this module, and records a
/// raw image as raw. Nothing but reading the image (and the files it names,
/// with `backing=allow`) and writing its record happens.
pub fn check_image(image: &Path, req: &DiskRequest) -> Result<DiskFormat, DiskImageError> {
    let fail = |m: String| DiskImageError(format!("disk image {}: {m}", image.display()));
    if read_record(image).map_err(fail)? == Some(DiskFormat::Raw) {
        if let Some(given) = req.format.filter(|f| *f != DiskFormat::Raw) {
            return Err(fail(format!(
                "format={given} given, but msb recorded this image as raw on its first use \
                 ({FORMAT_XATTR}); if it really was replaced by a {given} image, remove the \
                 record: setfattr -x {FORMAT_XATTR} {}",
                image.display()
            )));
        }
        if let Some(looks) = probe::looks_like(image) {
            tracing::warn!(
                "disk image {} begins like a {} image but msb recorded it as raw on its first \
                 use ({FORMAT_XATTR}): it stays raw (if you replaced it with a {} image, remove \
                 the record: setfattr -x {FORMAT_XATTR} FILE)",
                image.display(),
                looks,
                looks
            );
        }
        return Ok(DiskFormat::Raw);
    }
    let probed = probe(image).map_err(fail)?;
    if let Some(given) = req.format {
        if given != probed.format {
            let hint = if given == DiskFormat::Raw {
                format!(
                    "; if it is a raw disk whose guest wrote this header, mark it raw: \
                     setfattr -n {FORMAT_XATTR} -v raw {}",
                    image.display()
                )
            } else {
                String::new()
            };
            return Err(fail(format!(
                "format={given} given, but the image is {} (from its header){hint}",
                probed.format
            )));
        }
    }
    let format = probed.format;
    if req.writable && !format.writable() {
        return Err(fail(format!(
            "QEMU opens {format} images read-only: add ro to the mount"
        )));
    }
    chain::check_externals(image, &probed, req.backing).map_err(fail)?;
    if format == DiskFormat::Raw {
        match record_raw(image) {
            Ok(()) => {}
            Err(e) if req.writable => {
                return Err(fail(format!(
                    "cannot record it as raw ({FORMAT_XATTR}: {e}), so a guest writing a \
                     QCOW2 or VMDK header into it could change how it opens next time: keep \
                     it on a filesystem with user xattrs (ext4, xfs, btrfs, tmpfs) or attach \
                     it read-only (ro)"
                )))
            }
            Err(e) => tracing::debug!("{}: no raw record ({e})", image.display()),
        }
    }
    Ok(format)
}

/// The format of a disk volume's image: raw, by the store's own metadata.
/// The same is recorded on the file (best effort), so a `--disk` of that
/// file is raw as well.
pub fn volume_image_format(image: &Path) -> DiskFormat {
    if let Err(e) = record_raw(image) {
        tracing::debug!("{}: no raw record ({e})", image.display());
    }
    DiskFormat::Raw
}
