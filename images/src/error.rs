//! The errors of the image store, each naming the input that was wrong.

use std::path::PathBuf;

/// What went wrong, with the reference, digest, layer or path concerned.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No image by that reference or ID in the store.
    #[error("image {0:?} not found (see `msb image ls`; `msb pull` fetches it)")]
    NotFound(String),
    /// The image is used by a sandbox, so it cannot be removed.
    #[error("image {0} is in use by a sandbox")]
    InUse(String),
    /// A blob's content does not hash to the digest it was asked for.
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        /// What was fetched (a layer, a config, a manifest).
        what: String,
        /// The digest the manifest or reference names.
        expected: String,
        /// The digest of what arrived.
        actual: String,
    },
    /// A blob is longer or shorter than its descriptor says.
    #[error("size mismatch for {what}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        /// What was fetched.
        what: String,
        /// The size the descriptor names.
        expected: u64,
        /// The bytes that arrived (at least).
        actual: u64,
    },
    /// An image reference that cannot be parsed.
    #[error("bad image reference {reference:?}: {why}")]
    BadReference {
        /// The text as given.
        reference: String,
        /// Why it was refused.
        why: String,
    },
    /// A digest string that is not `sha256:` and 64 lowercase hex digits.
    #[error("bad digest {0:?}: want sha256: and 64 lowercase hex digits")]
    BadDigest(String),
    /// A `--platform` that is not `os/arch[/variant]`.
    #[error("bad platform {0:?}: want OS/ARCH[/VARIANT], e.g. linux/amd64")]
    BadPlatform(String),
    /// The image index has no manifest for the wanted platform.
    #[error("{reference}: no image for platform {wanted} (the index has: {available})")]
    NoPlatform {
        /// The reference pulled.
        reference: String,
        /// The platform asked for.
        wanted: String,
        /// The platforms the index lists.
        available: String,
    },
    /// The registry refused the credentials (or their absence).
    #[error("registry {registry}: access denied for {reference}: {message}")]
    Unauthorized {
        /// The registry host.
        registry: String,
        /// The reference pulled.
        reference: String,
        /// The registry's answer and a hint.
        message: String,
    },
    /// Any other failure talking to a registry.
    #[error("registry {registry}: {message}")]
    Registry {
        /// The registry host.
        registry: String,
        /// What failed.
        message: String,
    },
    /// A manifest, index or config that cannot be used.
    #[error("{what}: {why}")]
    BadManifest {
        /// Which document (with its digest or file name).
        what: String,
        /// What is wrong with it.
        why: String,
    },
    /// A layer that tries to escape its directory or is otherwise unsafe or
    /// malformed; nothing of it is kept.
    #[error("layer {layer}: refused entry {path:?}: {why}")]
    UnsafeLayer {
        /// The layer's digest.
        layer: String,
        /// The entry's path as written in the tar.
        path: String,
        /// Why it was refused.
        why: String,
    },
    /// An archive or layout given to `load` that cannot be read.
    #[error("cannot load {path}: {why}")]
    BadArchive {
        /// The file or directory given.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// An I/O error on a path of the store (or an input file).
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: String,
        /// The path concerned.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The image config's `User` cannot be resolved in the image.
    #[error("image user {user:?}: {why}")]
    BadUser {
        /// The `User` as the config gives it.
        user: String,
        /// Why it cannot be used.
        why: String,
    },
    /// The state root could not be found (no `MSB_HOME` nor `HOME`).
    #[error("state directory: {0}")]
    Home(String),
}

/// Results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An I/O error while doing `op` on `path`.
    pub fn io(op: &str, path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            op: op.to_string(),
            path: path.into(),
            source,
        }
    }

    /// An unsafe or malformed entry of layer `layer`.
    pub fn unsafe_layer(layer: &str, path: &[u8], why: impl Into<String>) -> Error {
        Error::UnsafeLayer {
            layer: layer.to_string(),
            path: String::from_utf8_lossy(path).into_owned(),
            why: why.into(),
        }
    }

    /// A bad manifest, index or config.
    pub fn manifest(what: impl Into<String>, why: impl Into<String>) -> Error {
        Error::BadManifest {
            what: what.into(),
            why: why.into(),
        }
    }

    /// Whether the error comes from what the user typed (a reference,
    /// platform or digest), as opposed to the store, the network or the
    /// image's content.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            Error::BadReference { .. } | Error::BadDigest(_) | Error::BadPlatform(_)
        )
    }
}
