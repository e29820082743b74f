//! What the store hands out: images, their run configuration, roots.

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

use crate::digest::Digest;
use crate::spec::RunConfig;

/// An image's identity: the digest of its config blob (the same content
/// gives the same ID whatever it was pulled or loaded as).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct ImageId(pub Digest);

impl fmt::Display for ImageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// One layer of an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Layer {
    /// Digest of the (usually compressed) blob.
    pub digest: Digest,
    /// Digest of the uncompressed tar (names the unpacked directory).
    pub diff_id: Digest,
    /// Size of the blob in bytes.
    pub size: u64,
    /// Media type of the blob.
    pub media_type: String,
}

/// What the image says a container runs (its config's `config`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ImageConfig {
    /// `KEY=VALUE` environment.
    pub env: Vec<String>,
    /// Entrypoint (may be empty).
    pub entrypoint: Vec<String>,
    /// Default command, or the entrypoint's default arguments.
    pub cmd: Vec<String>,
    /// Working directory (absolute in the image), if set.
    pub working_dir: Option<String>,
    /// `user[:group]` by name or number, if set.
    pub user: Option<String>,
}

impl From<Option<RunConfig>> for ImageConfig {
    fn from(c: Option<RunConfig>) -> ImageConfig {
        let c = c.unwrap_or_default();
        ImageConfig {
            env: c.env.unwrap_or_default(),
            entrypoint: c.entrypoint.unwrap_or_default(),
            cmd: c.cmd.unwrap_or_default(),
            working_dir: c.working_dir.filter(|w| !w.is_empty()),
            user: c.user.filter(|u| !u.is_empty()),
        }
    }
}

/// An image in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Image {
    /// Its ID (config digest).
    pub id: ImageId,
    /// The names it is known by (`docker.io/library/alpine:latest`,
    /// `host:5000/app@sha256:…`); empty for an untagged loaded image.
    pub names: Vec<String>,
    /// Digest of its manifest.
    pub manifest_digest: Digest,
    /// Digest of the index (manifest list) it was picked from, if any: the
    /// digest `repo@sha256:…` references of a multi-platform image use.
    pub index_digest: Option<Digest>,
    /// `os/arch[/variant]`.
    pub platform: String,
    /// Layers, bottom first.
    pub layers: Vec<Layer>,
    /// Sum of the layer blob sizes.
    pub size: u64,
    /// When it was built (RFC 3339), as its config says.
    pub created: Option<String>,
    /// When it was added to this store (seconds since the epoch).
    pub added_at: u64,
    /// How to run it.
    pub config: ImageConfig,
}

/// An image's root filesystem, ready to be served read-only to sandboxes
/// (with stat virtualization: owners, modes and special files are in the
/// `user.msb.override_stat` records).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageRoot {
    /// The directory (`<home>/images/roots/<id hex>`). Never write into it:
    /// its files are hard links shared with the layer store and with every
    /// other image holding the same layers.
    pub path: PathBuf,
    /// The image it belongs to.
    pub id: ImageId,
    /// How to run the image.
    pub config: ImageConfig,
}
