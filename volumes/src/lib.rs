//! Named persistent volumes: the store under `MSB_HOME` (default
//! `~/.microsandbox`) and host-side file access.
//!
//! - [`Store`]: create ([`Store::create`]), look up ([`Store::get`],
//!   [`Store::list`]), remove ([`Store::remove`]) and lease
//!   ([`Store::lease`]) volumes; metadata in SQLite (`db/msb.db`, schema
//!   migrations in [`db`]); atomic against concurrent processes and
//!   crashes (the protocol is described in the `store` module source);
//! - [`VolumeHandle`]: a volume's metadata;
//! - [`VolumeFs`]: read and write a dir volume from the host, confined to
//!   its root by `openat2(RESOLVE_BENEATH)`, counted against its quota;
//! - [`Provision`]: what `msb run` mounts ask for (`mode=existing|create|
//!   ensure-exists`);
//! - [`disk_image`]: the format of a disk image, found on the host and
//!   pinned for raw images, shared by `--disk` and disk volumes;
//! - the name rules ([`validate_name`]) every part of the project agrees on.
//!
//! Quota accounting is the daemon's own: this crate depends on the
//! `virtiofsd-msb` library for the shared accounting file
//! (`policy::quota`) and the tree scan (`policy::quota_scan`), so a volume
//! is counted identically by `msb volume ls`, by `VolumeFs` and by every
//! daemon serving it.

pub mod db;
mod disk;
pub mod disk_image;
mod error;
mod fs;
mod lease;
mod model;
mod paths;
mod process;
mod provision;
mod recovery;
mod store;

pub use disk::{find_mkfs, make_ext4, MKFS_ENV};
pub use error::{Error, Result};
pub use fs::{Entry, EntryKind, VolumeFs, DIR_MODE, FILE_MODE};
pub use lease::{Lease, LeaseRequest};
pub use model::{
    parse_label, rfc3339, validate_label, CreateOptions, LeaseInfo, VolumeHandle, VolumeKind,
    DISK_FORMAT, DISK_FSTYPE, DISK_IMAGE, MIN_DISK_MIB,
};
pub use paths::{default_home, HOME_ENV};
pub use process::ProcessId;
pub use provision::{Mode, Provision};
pub use recovery::Recovery;
pub use store::{Store, CRASH_ENV};

/// Longest accepted volume name, in bytes.
pub const MAX_NAME_LEN: usize = 63;

/// Why a volume name was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameError {
    /// The name is empty.
    Empty,
    /// The name is longer than [`MAX_NAME_LEN`].
    TooLong(usize),
    /// The name holds a character outside `[A-Za-z0-9_.-]`.
    BadChar(char),
    /// The name starts with `.` or `-`, which would read as a path or a flag.
    BadStart(char),
}

impl std::fmt::Display for NameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NameError::Empty => write!(f, "volume name is empty"),
            NameError::TooLong(n) => write!(
                f,
                "volume name is {n} bytes, at most {MAX_NAME_LEN} allowed"
            ),
            NameError::BadChar(c) => write!(
                f,
                "volume name holds {c:?}; use letters, digits, '_', '.', '-'"
            ),
            NameError::BadStart(c) => write!(f, "volume name must not start with {c:?}"),
        }
    }
}

impl std::error::Error for NameError {}

/// Checks a volume name: 1..=63 bytes of `[A-Za-z0-9_.-]`, not starting
/// with `.` or `-` (so `..`, `/`, and NUL can never appear).
pub fn validate_name(name: &str) -> Result<(), NameError> {
    let first = name.chars().next().ok_or(NameError::Empty)?;
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong(name.len()));
    }
    if first == '.' || first == '-' {
        return Err(NameError::BadStart(first));
    }
    match name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        Some(c) => Err(NameError::BadChar(c)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_names() {
        assert_eq!(validate_name("cache"), Ok(()));
        assert_eq!(validate_name("build-2.x_y"), Ok(()));
    }

    #[test]
    fn refuses_path_like_names() {
        assert_eq!(validate_name(""), Err(NameError::Empty));
        assert_eq!(validate_name(".."), Err(NameError::BadStart('.')));
        assert_eq!(validate_name("a/b"), Err(NameError::BadChar('/')));
        assert_eq!(validate_name("a\0b"), Err(NameError::BadChar('\0')));
        assert_eq!(validate_name("-rf"), Err(NameError::BadStart('-')));
        assert_eq!(validate_name(&"x".repeat(64)), Err(NameError::TooLong(64)));
    }
}
