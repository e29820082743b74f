//! `load`: images from files, for hosts without a registry:
//! - an OCI image layout directory (`oci-layout`, `index.json`, `blobs/`),
//! - an oci-archive (that layout as a tarball),
//! - a docker-archive (`docker save`: `manifest.json`, a config and one
//!   tar per layer; newer Docker writes an OCI layout beside it).
//!
//! Tarballs (gzip-compressed or not) are read once, front to back: every
//! `blobs/sha256/<hex>` member is stored verified against its name, other
//! large members (legacy `layer.tar`s) stored under their computed digest,
//! small JSON members kept in memory. Layer tars are checked against the
//! config's diff IDs when unpacked. Names come from `RepoTags` (docker),
//! `io.containerd.image.name` or a full `org.opencontainers.image.ref.name`
//! (OCI); a bare tag (`latest`, as skopeo writes) needs
//! [`LoadOptions::name`] to become a name, else the image is untagged.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::blobs;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::layout;
use crate::lock::FileLock;
use crate::model::Image;
use crate::reference::{ImageRef, Platform};
use crate::spec::{self, Compression, Descriptor, Document, Manifest};
use crate::store::Store;

/// Options of a load.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// A name for what is loaded: `REPO` (combined with the archive's own
    /// tags) or `REPO:TAG` (for an archive holding one image).
    pub name: Option<String>,
    /// The platform to pick from an OCI index [default: linux/amd64].
    pub platform: Option<Platform>,
}

/// Where the archive's files are.
enum Source {
    /// An OCI layout directory.
    Dir(PathBuf),
    /// A tarball already read: small files in memory, the rest stored.
    Tar {
        small: HashMap<String, Vec<u8>>,
        stored: HashMap<String, Digest>,
    },
}

/// One image found in the archive, before it is stored.
struct Found {
    manifest: Vec<u8>,
    media_type: String,
    tags: Vec<String>,
    bare_tags: Vec<String>,
}

fn bad(path: &Path, why: impl Into<String>) -> Error {
    Error::BadArchive {
        path: path.to_path_buf(),
        why: why.into(),
    }
}

/// Member paths as written in a tar (`./x` and `x` alike).
fn clean(member: &str) -> String {
    member.trim_start_matches("./").to_string()
}

impl Store {
    /// Loads the images of a docker-archive, oci-archive or OCI layout
    /// directory at `path`.
    pub fn load(&self, path: &Path, opts: &LoadOptions) -> Result<Vec<Image>> {
        let paths = self.paths().clone();
        let _gc = FileLock::shared(&paths.gc_lock())?;
        let source = if path.is_dir() {
            Source::Dir(path.to_path_buf())
        } else {
            read_tar(self, path)?
        };
        let found = if source.has("index.json") {
            oci_images(self, &source, path, opts)?
        } else if source.has("manifest.json") {
            docker_images(self, &source, path)?
        } else {
            return Err(bad(
                path,
                "neither an OCI layout (index.json) nor a docker-archive (manifest.json)",
            ));
        };
        if found.is_empty() {
            return Err(bad(path, "holds no image"));
        }
        let explicit = opts.name.as_deref().map(|n| (n, has_tag(n)));
        if matches!(explicit, Some((_, true))) && found.len() > 1 {
            return Err(bad(
                path,
                format!(
                    "holds {} images: a name with a tag fits only one",
                    found.len()
                ),
            ));
        }
        let mut out = Vec::new();
        for f in found {
            out.push(self.store_found(&source, path, f, explicit)?);
        }
        Ok(out)
    }

    fn store_found(
        &self,
        source: &Source,
        path: &Path,
        f: Found,
        explicit: Option<(&str, bool)>,
    ) -> Result<Image> {
        let paths = self.paths();
        let what = format!("manifest in {}", path.display());
        let Document::Manifest(m) = spec::parse_document(&f.manifest, &what)? else {
            return Err(bad(path, "an index where a manifest belongs"));
        };
        source.fetch(paths, &m.config, path)?;
        let cwhat = format!("config {}", m.config.digest);
        let cfg = spec::parse_config(
            &blobs::read_small(paths, &m.config.digest, &cwhat)?,
            &m,
            &cwhat,
        )?;
        for (layer, diff_id) in m.layers.iter().zip(&cfg.rootfs.diff_ids) {
            spec::check_layer_type(layer)?;
            source.fetch(paths, layer, path)?;
            crate::unpack::ensure_layer(paths, &paths.blob(&layer.digest), &layer.digest, diff_id)?;
        }
        let digest = blobs::put_bytes(paths, &f.manifest)?;
        let mut names: Vec<String> = f.tags;
        match explicit {
            Some((n, true)) => names.push(n.to_string()),
            Some((repo, false)) if !f.bare_tags.is_empty() => {
                names.extend(f.bare_tags.iter().map(|t| format!("{repo}:{t}")))
            }
            Some((repo, false)) => names.push(repo.to_string()),
            None if names.is_empty() && !f.bare_tags.is_empty() => tracing::warn!(
                "{}: tag {:?} has no repository; the image is untagged (name it with --name REPO)",
                path.display(),
                f.bare_tags.join(", ")
            ),
            None => {}
        }
        let names: Vec<String> = names
            .iter()
            .map(|n| ImageRef::parse(n).map(|r| r.to_string()))
            .collect::<Result<_>>()?;
        let info = layout::EntryInfo {
            media_type: &f.media_type,
            size: f.manifest.len() as u64,
            index_digest: None,
        };
        layout::update(paths, |idx| {
            if names.is_empty() {
                layout::put(idx, None, &digest, &info);
            }
            for n in &names {
                layout::put(idx, Some(n), &digest, &info);
            }
            Ok(())
        })?;
        self.image(&digest)
    }
}

/// Whether a name has its own tag or digest (`repo:tag`, not `host:5000/repo`).
fn has_tag(name: &str) -> bool {
    let last = name.rsplit('/').next().unwrap_or(name);
    last.contains(':') || last.contains('@')
}

impl Source {
    fn has(&self, member: &str) -> bool {
        match self {
            Source::Dir(d) => d.join(member).is_file(),
            Source::Tar { small, stored } => {
                small.contains_key(member) || stored.contains_key(member)
            }
        }
    }

    /// A small member's bytes.
    fn read(&self, paths: &crate::paths::Paths, member: &str, archive: &Path) -> Result<Vec<u8>> {
        match self {
            Source::Dir(d) => {
                let p = d.join(member);
                let f = std::fs::File::open(&p).map_err(|e| Error::io("open", &p, e))?;
                let mut out = Vec::new();
                f.take(blobs::MAX_DOCUMENT + 1)
                    .read_to_end(&mut out)
                    .map_err(|e| Error::io("read", &p, e))?;
                if out.len() as u64 > blobs::MAX_DOCUMENT {
                    return Err(bad(archive, format!("{member} larger than 16 MiB")));
                }
                Ok(out)
            }
            Source::Tar { small, stored } => match (small.get(member), stored.get(member)) {
                (Some(b), _) => Ok(b.clone()),
                (None, Some(d)) => blobs::read_small(paths, d, member),
                _ => Err(bad(archive, format!("{member} missing"))),
            },
        }
    }

    /// Makes sure blob `d` is in the store (copied from the layout,
    /// verified), or was in the tarball.
    fn fetch(&self, paths: &crate::paths::Paths, d: &Descriptor, archive: &Path) -> Result<()> {
        if blobs::has(paths, &d.digest) {
            return Ok(());
        }
        match self {
            Source::Dir(dir) => {
                let p = dir.join("blobs").join("sha256").join(d.digest.hex());
                let f = std::fs::File::open(&p).map_err(|e| Error::io("open blob", &p, e))?;
                blobs::ingest(
                    paths,
                    &d.digest,
                    Some(d.size),
                    &format!("blob {}", d.digest),
                    f,
                )?;
                Ok(())
            }
            Source::Tar { .. } => Err(bad(archive, format!("blob {} missing", d.digest))),
        }
    }
}

/// Reads a tarball once (see the module docs).
fn read_tar(store: &Store, path: &Path) -> Result<Source> {
    let paths = store.paths();
    let f = std::fs::File::open(path).map_err(|e| Error::io("open", path, e))?;
    let mut r = BufReader::with_capacity(256 << 10, f);
    let head = r.fill_buf().map_err(|e| Error::io("read", path, e))?;
    let input: Box<dyn Read> = match Compression::sniff(head) {
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(r)),
        Compression::Zstd => Box::new(
            ruzstd::decoding::StreamingDecoder::new(r)
                .map_err(|e| bad(path, format!("bad zstd stream: {e}")))?,
        ),
        Compression::None => Box::new(r),
    };
    let mut archive = tar::Archive::new(input);
    let mut small = HashMap::new();
    let mut stored = HashMap::new();
    let entries = archive
        .entries()
        .map_err(|e| bad(path, format!("not a tar archive: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| bad(path, format!("bad tar: {e}")))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let member = clean(&String::from_utf8_lossy(&entry.path_bytes()));
        let size = entry.header().size().unwrap_or(u64::MAX);
        if let Some(hex) = member.strip_prefix("blobs/sha256/") {
            let d = Digest::from_hex(hex)
                .map_err(|_| bad(path, format!("blob name {member:?} is not a digest")))?;
            blobs::ingest(paths, &d, Some(size), &format!("blob {d}"), &mut entry)?;
            stored.insert(member, d);
        } else if size <= blobs::MAX_DOCUMENT
            && (member.ends_with(".json") || member == "oci-layout" || member == "repositories")
        {
            let mut bytes = Vec::new();
            entry
                .read_to_end(&mut bytes)
                .map_err(|e| bad(path, format!("{member}: {e}")))?;
            small.insert(member, bytes);
        } else {
            let (d, _) = blobs::ingest_unnamed(paths, &mut entry)?;
            stored.insert(member, d);
        }
    }
    Ok(Source::Tar { small, stored })
}

/// The images of an OCI layout's `index.json`.
fn oci_images(
    store: &Store,
    source: &Source,
    path: &Path,
    opts: &LoadOptions,
) -> Result<Vec<Found>> {
    let paths = store.paths();
    let bytes = source.read(paths, "index.json", path)?;
    let idx: spec::Index =
        serde_json::from_slice(&bytes).map_err(|e| bad(path, format!("index.json: {e}")))?;
    let want = opts
        .platform
        .clone()
        .unwrap_or_else(Platform::default_guest);
    let mut out: Vec<Found> = Vec::new();
    for d in &idx.manifests {
        let mut desc = d.clone();
        if spec::is_index(&d.media_type) {
            source.fetch(paths, d, path)?;
            let nested = blobs::read_small(paths, &d.digest, &format!("index {}", d.digest))?;
            let Document::Index(inner) =
                spec::parse_document(&nested, &format!("index {}", d.digest))?
            else {
                return Err(bad(path, format!("{} is not an index", d.digest)));
            };
            desc =
                crate::registry::pull::pick_platform(&inner, &want, &path.display().to_string())?;
        }
        source.fetch(paths, &desc, path)?;
        let manifest =
            blobs::read_small(paths, &desc.digest, &format!("manifest {}", desc.digest))?;
        let (mut tags, mut bare_tags) = (Vec::new(), Vec::new());
        if let Some(n) = d.annotations.get(spec::CONTAINERD_NAME) {
            tags.push(n.clone());
        } else if let Some(n) = d.annotations.get(spec::REF_NAME) {
            if n.contains('/') || n.contains(':') || n.contains('@') {
                tags.push(n.clone());
            } else {
                bare_tags.push(n.clone());
            }
        }
        match out.iter_mut().find(|f| f.manifest == manifest) {
            Some(f) => {
                f.tags.extend(tags);
                f.bare_tags.extend(bare_tags);
            }
            None => out.push(Found {
                manifest,
                media_type: if desc.media_type.is_empty() {
                    spec::OCI_MANIFEST.into()
                } else {
                    desc.media_type.clone()
                },
                tags,
                bare_tags,
            }),
        }
    }
    Ok(out)
}

#[derive(Deserialize)]
struct DockerEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

/// The images of a docker-archive's `manifest.json`, as OCI manifests.
fn docker_images(store: &Store, source: &Source, path: &Path) -> Result<Vec<Found>> {
    let paths = store.paths();
    let bytes = source.read(paths, "manifest.json", path)?;
    let list: Vec<DockerEntry> =
        serde_json::from_slice(&bytes).map_err(|e| bad(path, format!("manifest.json: {e}")))?;
    let Source::Tar { stored, .. } = source else {
        return Err(bad(path, "a docker-archive must be a tarball"));
    };
    let mut out = Vec::new();
    for e in list {
        let config = source.read(paths, &clean(&e.config), path)?;
        let config_digest = blobs::put_bytes(paths, &config)?;
        let mut layers = Vec::new();
        for l in &e.layers {
            let d = stored
                .get(&clean(l))
                .ok_or_else(|| bad(path, format!("layer {l} missing")))?;
            let blob = paths.blob(d);
            let size = std::fs::metadata(&blob)
                .map_err(|e| Error::io("stat", &blob, e))?
                .len();
            let mut head = [0u8; 4];
            let n = std::fs::File::open(&blob)
                .and_then(|mut f| f.read(&mut head))
                .map_err(|e| Error::io("read", &blob, e))?;
            let media_type = match Compression::sniff(&head[..n]) {
                Compression::Gzip => spec::OCI_LAYER_GZIP,
                Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
                Compression::None => spec::OCI_LAYER_TAR,
            };
            layers.push(Descriptor {
                media_type: media_type.to_string(),
                digest: d.clone(),
                size,
                platform: None,
                annotations: Default::default(),
            });
        }
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(spec::OCI_MANIFEST.to_string()),
            config: Descriptor {
                media_type: spec::OCI_CONFIG.to_string(),
                digest: config_digest,
                size: config.len() as u64,
                platform: None,
                annotations: Default::default(),
            },
            layers,
        };
        let manifest = serde_json::to_vec(&manifest).map_err(|e| bad(path, e.to_string()))?;
        out.push(Found {
            manifest,
            media_type: spec::OCI_MANIFEST.to_string(),
            tags: e.repo_tags.unwrap_or_default(),
            bare_tags: Vec::new(),
        });
    }
    Ok(out)
}
