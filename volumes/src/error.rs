//! The error type of the volume store and of [`crate::VolumeFs`].

use std::io;
use std::path::Path;

use crate::NameError;

/// Everything the store and `VolumeFs` can refuse or fail with. Every
/// message names the volume, path or value at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A volume name that breaks the rules of [`crate::validate_name`].
    #[error("invalid volume name {name:?}: {reason}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// Which rule it breaks.
        reason: NameError,
    },
    /// A bad option value (size, quota, label, kind…): a usage error.
    #[error("{what}: {reason}")]
    Invalid {
        /// The option or value at fault, e.g. `--size` or `label "a=b"`.
        what: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No volume has this name.
    #[error("volume {0:?} not found")]
    NotFound(String),
    /// A volume of this name exists (or is being created right now).
    #[error("volume {0:?} already exists")]
    AlreadyExists(String),
    /// A running VM holds the volume (a lease of a live launcher).
    #[error("volume {name:?} is in use by {users}; stop it first")]
    InUse {
        /// The volume.
        name: String,
        /// Who holds it, e.g. `msb run (pid 123) at /data`.
        users: String,
    },
    /// An existing volume does not match what a mount asked for
    /// (`mode=ensure-exists` or `existing` with kind/quota/size given).
    #[error("volume {name:?} exists with {found}, but {wanted} was requested (its metadata is never changed; remove it or drop the option)")]
    Mismatch {
        /// The volume.
        name: String,
        /// What the request said, e.g. `quota 64 MiB`.
        wanted: String,
        /// What the volume has, e.g. `quota 32 MiB`.
        found: String,
    },
    /// The operation conflicts with the state on disk or another process
    /// (a foreign directory in the way, a removal in progress…).
    #[error("volume {name:?}: {reason}")]
    Conflict {
        /// The volume.
        name: String,
        /// What is in the way.
        reason: String,
    },
    /// A `VolumeFs` path that is absolute, or whose `..` components or
    /// symlinks lead outside the volume root.
    #[error("path {path:?} escapes the volume root")]
    PathEscape {
        /// The path as given.
        path: String,
    },
    /// A `VolumeFs` path that cannot name what the operation needs (the
    /// root for `remove`, a `..` last component, a NUL byte…).
    #[error("path {path:?}: {reason}")]
    InvalidPath {
        /// The path as given.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A host I/O error, with what was being done.
    #[error("{context}: {source}")]
    Io {
        /// What failed, naming the file.
        context: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The metadata database failed.
    #[error("volume database {path}: {source}")]
    Db {
        /// The database file.
        path: String,
        /// The SQLite error.
        #[source]
        source: rusqlite::Error,
    },
    /// `mkfs.ext4` could not format a disk volume.
    #[error("mkfs.ext4 for volume {name:?}: {reason}")]
    Mkfs {
        /// The volume.
        name: String,
        /// Its error output or why it could not start.
        reason: String,
    },
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// True for errors in what the user typed (bad name, option or value):
    /// the command line maps them to exit status 2.
    pub fn is_usage(&self) -> bool {
        matches!(self, Error::InvalidName { .. } | Error::Invalid { .. })
    }

    /// The OS error behind an [`Error::Io`], if that is what this is.
    pub fn io_error(&self) -> Option<&io::Error> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }

    /// An [`Error::Io`] about `path`.
    pub(crate) fn io(what: &str, path: &Path, source: io::Error) -> Error {
        Error::Io {
            context: format!("{what} {}", path.display()),
            source,
        }
    }

    /// An [`Error::Invalid`].
    pub(crate) fn invalid(what: impl Into<String>, reason: impl Into<String>) -> Error {
        Error::Invalid {
            what: what.into(),
            reason: reason.into(),
        }
    }
}
