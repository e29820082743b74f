//! Progress of a pull or load, reported to a callback so the CLI can draw
//! bars on a terminal or print log lines.

use std::sync::Arc;

use crate::digest::Digest;

/// One step of a pull or load.
#[derive(Debug, Clone)]
pub enum Event {
    /// The manifest was resolved: what will be fetched.
    Resolved {
        /// The reference (normalized).
        reference: String,
        /// The manifest digest.
        manifest: Digest,
        /// Number of layers.
        layers: usize,
    },
    /// A layer is already in the store.
    LayerPresent {
        /// The layer blob digest.
        digest: Digest,
    },
    /// Bytes of a layer download arrived.
    Downloading {
        /// The layer blob digest.
        digest: Digest,
        /// Bytes stored so far (a resumed download starts above 0).
        done: u64,
        /// Size of the blob.
        total: u64,
    },
    /// A layer is being unpacked.
    Unpacking {
        /// The layer blob digest.
        digest: Digest,
    },
    /// A layer is downloaded, verified and unpacked.
    LayerDone {
        /// The layer blob digest.
        digest: Digest,
    },
}

/// Where events go.
pub type Progress = Arc<dyn Fn(&Event) + Send + Sync>;

/// A sink that drops every event.
pub fn silent() -> Progress {
    Arc::new(|_| {})
}
