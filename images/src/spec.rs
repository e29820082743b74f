//! The JSON documents of OCI and Docker images, with just the fields the
//! store uses (unknown fields are ignored; field names are the specs').

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::{Error, Result};

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker image manifest, schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// OCI image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Uncompressed OCI layer.
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// Gzip OCI layer.
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// Docker schema 1 manifests (refused: unsigned, long deprecated).
pub const DOCKER_SCHEMA1: [&str; 2] = [
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
];
/// The manifest types a pull accepts.
pub const ACCEPTED_MANIFESTS: [&str; 4] = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST];
/// Annotation naming a tagged image in `index.json`.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// Annotation containerd and Docker put on an exported image: its full name.
pub const CONTAINERD_NAME: &str = "io.containerd.image.name";
/// Our annotation: when the image was added (seconds since the epoch).
pub const ADDED_AT: &str = "io.microsandbox.image.added";
/// Our annotation: the digest of the index the image was picked from.
pub const INDEX_DIGEST: &str = "io.microsandbox.image.index-digest";

/// A content descriptor.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type of the content.
    #[serde(default)]
    pub media_type: String,
    /// Digest of the content.
    pub digest: Digest,
    /// Size in bytes.
    pub size: u64,
    /// The platform of an index entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<PlatformSpec>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// The platform of an index entry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PlatformSpec {
    /// CPU architecture.
    pub architecture: String,
    /// Operating system.
    pub os: String,
    /// CPU variant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// An image manifest (OCI or Docker schema 2).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Always 2.
    pub schema_version: u32,
    /// The manifest's own media type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The image config.
    pub config: Descriptor,
    /// The layers, bottom first.
    pub layers: Vec<Descriptor>,
}

/// An image index (OCI) or manifest list (Docker); also `index.json`.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    /// Always 2.
    pub schema_version: u32,
    /// The index's own media type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The manifests (or nested indexes) it lists.
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
}

/// The image config blob.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConfigFile {
    /// CPU architecture.
    #[serde(default)]
    pub architecture: String,
    /// Operating system.
    #[serde(default)]
    pub os: String,
    /// When the image was built (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// How to run it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<RunConfig>,
    /// The layers' diff IDs.
    pub rootfs: RootFs,
}

/// `rootfs` of a config.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RootFs {
    /// Always `layers`.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// Digests of the uncompressed layer tarballs, bottom first.
    pub diff_ids: Vec<Digest>,
}

/// `config` of a config: what a container of the image runs.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RunConfig {
    /// `KEY=VALUE` environment.
    #[serde(rename = "Env", default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    /// Entrypoint.
    #[serde(
        rename = "Entrypoint",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub entrypoint: Option<Vec<String>>,
    /// Default command (arguments of the entrypoint).
    #[serde(rename = "Cmd", default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    /// Working directory.
    #[serde(
        rename = "WorkingDir",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub working_dir: Option<String>,
    /// `user[:group]`, by name or number.
    #[serde(rename = "User", default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// Whether a media type names an index (OCI or Docker).
pub fn is_index(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_LIST
}

/// A manifest document: an image manifest or an index.
#[derive(Debug, Clone)]
pub enum Document {
    /// One image.
    Manifest(Manifest),
    /// Several images (platforms).
    Index(Index),
}

/// Parses a manifest or index, by its `mediaType` (or, when absent, by
/// its shape). `what` names it in errors.
pub fn parse_document(bytes: &[u8], what: &str) -> Result<Document> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        #[serde(default)]
        schema_version: Option<u32>,
        #[serde(default)]
        media_type: Option<String>,
        #[serde(default)]
        manifests: Option<serde_json::Value>,
    }
    let probe: Probe = serde_json::from_slice(bytes)
        .map_err(|e| Error::manifest(what, format!("not JSON: {e}")))?;
    let mt = probe.media_type.as_deref().unwrap_or("");
    if DOCKER_SCHEMA1.contains(&mt) || probe.schema_version == Some(1) {
        return Err(Error::manifest(
            what,
            "Docker schema 1 manifests are not supported (re-push the image with a current tool)",
        ));
    }
    if is_index(mt) || (mt.is_empty() && probe.manifests.is_some()) {
        let idx: Index = serde_json::from_slice(bytes)
            .map_err(|e| Error::manifest(what, format!("bad index: {e}")))?;
        return Ok(Document::Index(idx));
    }
    if !(mt.is_empty() || mt == OCI_MANIFEST || mt == DOCKER_MANIFEST) {
        return Err(Error::manifest(
            what,
            format!("unsupported media type {mt}"),
        ));
    }
    let m: Manifest = serde_json::from_slice(bytes)
        .map_err(|e| Error::manifest(what, format!("bad manifest: {e}")))?;
    Ok(Document::Manifest(m))
}

/// Parses a config blob and checks it fits `manifest` (one diff ID per
/// layer).
pub fn parse_config(bytes: &[u8], manifest: &Manifest, what: &str) -> Result<ConfigFile> {
    let cfg: ConfigFile = serde_json::from_slice(bytes)
        .map_err(|e| Error::manifest(what, format!("bad image config: {e}")))?;
    if cfg.rootfs.diff_ids.len() != manifest.layers.len() {
        return Err(Error::manifest(
            what,
            format!(
                "{} diff IDs for {} layers",
                cfg.rootfs.diff_ids.len(),
                manifest.layers.len()
            ),
        ));
    }
    Ok(cfg)
}

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar.
    None,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
}

impl Compression {
    /// From a blob's first bytes (media types lie more often than magic
    /// numbers do).
    pub fn sniff(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// Checks a layer descriptor's media type: tar layers only (gzip, zstd or
/// none); foreign (non-distributable) layers are fine when present.
pub fn check_layer_type(d: &Descriptor) -> Result<()> {
    let t = d.media_type.as_str();
    let ok = t.is_empty()
        || t.starts_with("application/vnd.oci.image.layer.")
        || t.starts_with("application/vnd.docker.image.rootfs.");
    if ok {
        Ok(())
    } else {
        Err(Error::manifest(
            format!("layer {}", d.digest),
            format!("not a filesystem layer (media type {t})"),
        ))
    }
}
