//! The errors of the `msb` library: one enum, typed by what went wrong, so
//! SDK users can match on "not found" or "path escape" and the CLI can pick
//! an exit status.

use std::path::PathBuf;

use crate::exit::{self, RunError};

/// Anything the `msb` library can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A sandbox, volume or image that does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// Creating something whose name is taken.
    #[error("{0} already exists")]
    AlreadyExists(String),
    /// Removing something still in use.
    #[error("{0}")]
    InUse(String),
    /// A path that leads outside the root it must stay under.
    #[error("path {path:?} escapes {root}")]
    PathEscape {
        /// The path as given.
        path: String,
        /// What it had to stay in.
        root: String,
    },
    /// A mount spec the user got wrong; the message names the mount.
    #[error("{0}")]
    InvalidMount(String),
    /// A bad name, option or argument; the message names it.
    #[error("{0}")]
    Invalid(String),
    /// The sandbox is not in a state that allows this (e.g. not running).
    #[error("{0}")]
    InvalidState(String),
    /// The VM did not come up, or stopped unexpectedly.
    #[error("{0}")]
    Vm(String),
    /// The guest agent failed or answered with an error.
    #[error("{0}")]
    Agent(String),
    /// Reading or writing msb's state failed.
    #[error("{0}")]
    State(String),
    /// A host I/O error on `path`.
    #[error("{}: {source}", path.display())]
    Io {
        /// What was being accessed.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Shorthand for the library's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// The exit status the CLI leaves with for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::NotFound(_)
            | Error::AlreadyExists(_)
            | Error::InUse(_)
            | Error::PathEscape { .. }
            | Error::InvalidMount(_)
            | Error::Invalid(_)
            | Error::InvalidState(_) => exit::USAGE,
            _ => exit::LAUNCHER,
        }
    }
}

impl From<volumes::Error> for Error {
    fn from(e: volumes::Error) -> Error {
        use volumes::Error as V;
        match e {
            V::NotFound(n) => Error::NotFound(format!("volume {n:?}")),
            V::AlreadyExists(n) => Error::AlreadyExists(format!("volume {n:?}")),
            V::InUse { .. } => Error::InUse(e.to_string()),
            V::PathEscape { path } => Error::PathEscape {
                path,
                root: "the volume root".into(),
            },
            V::InvalidName { .. }
            | V::Invalid { .. }
            | V::InvalidPath { .. }
            | V::Mismatch { .. }
            | V::Conflict { .. } => Error::Invalid(e.to_string()),
            other => Error::State(other.to_string()),
        }
    }
}

impl From<RunError> for Error {
    fn from(e: RunError) -> Error {
        if e.code == exit::USAGE {
            if e.message.starts_with("mount ") || e.message.contains("mount \"") {
                Error::InvalidMount(e.message)
            } else {
                Error::Invalid(e.message)
            }
        } else {
            Error::Vm(e.message)
        }
    }
}
