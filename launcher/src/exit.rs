//! Exit statuses of `msb`, and the error type that carries them.

use std::fmt;

/// Bad usage or mount spec; nothing was started.
pub const USAGE: i32 = 2;
/// `--timeout` was reached and the VM stopped.
pub const TIMEOUT: i32 = 124;
/// msb itself or the VM failed (VMM crash, guest panic, daemon crash).
pub const LAUNCHER: i32 = 125;
/// The command exists but could not be run.
pub const CANNOT_RUN: i32 = 126;
/// The command was not found in the guest.
pub const NOT_FOUND: i32 = 127;
/// Offset of "killed by signal N" statuses.
pub const SIGNAL_BASE: i32 = 128;

/// A failure of `msb run` with the status it exits with.
#[derive(Debug)]
pub struct RunError {
    /// Exit status.
    pub code: i32,
    /// Message naming what went wrong.
    pub message: String,
}

impl RunError {
    /// A usage error (exit 2).
    pub fn usage(message: impl Into<String>) -> Self {
        RunError {
            code: USAGE,
            message: message.into(),
        }
    }

    /// A launcher or VM failure (exit 125).
    pub fn launcher(message: impl Into<String>) -> Self {
        RunError {
            code: LAUNCHER,
            message: message.into(),
        }
    }
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for RunError {}
