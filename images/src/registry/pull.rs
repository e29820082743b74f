//! `pull`: resolve a reference to one image manifest (picking a platform
//! from an index), then fetch its config and layers into the store, each
//! verified by digest, layers unpacked once per diff ID (while they
//! download, unless a download resumes). Up to three layers are fetched
//! and unpacked at a time.

use futures_util::{StreamExt, TryStreamExt};

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::paths::Paths;
use crate::progress::{Event, Progress};
use crate::reference::{ImageRef, Platform};
use crate::registry::Session;
use crate::spec::{self, Descriptor, Document, Manifest};

/// Layers fetched at the same time.
const PARALLEL_LAYERS: usize = 3;

/// Options of a pull.
#[derive(Clone)]
pub struct PullOptions {
    /// The platform to pick from an index [default: linux/amd64].
    pub platform: Option<Platform>,
    /// Allow plain HTTP to a registry that is not on this host.
    pub insecure: bool,
    /// Where progress goes.
    pub progress: Progress,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            platform: None,
            insecure: false,
            progress: crate::progress::silent(),
        }
    }
}

/// What a pull stored (the index entry is the caller's).
pub struct Fetched {
    /// The manifest's digest.
    pub manifest: Digest,
    /// Its media type.
    pub media_type: String,
    /// Its size.
    pub size: u64,
    /// The index it was picked from.
    pub index_digest: Option<Digest>,
}

/// Picks the descriptor for `want` from an index.
pub fn pick_platform(index: &spec::Index, want: &Platform, reference: &str) -> Result<Descriptor> {
    let found = index.manifests.iter().find(|d| {
        d.platform
            .as_ref()
            .is_some_and(|p| want.matches(&p.os, &p.architecture, p.variant.as_deref()))
    });
    found.cloned().ok_or_else(|| {
        let available: Vec<String> = index
            .manifests
            .iter()
            .filter_map(|d| d.platform.as_ref())
            .map(|p| match &p.variant {
                Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
                None => format!("{}/{}", p.os, p.architecture),
            })
            .collect();
        Error::NoPlatform {
            reference: reference.to_string(),
            wanted: want.to_string(),
            available: if available.is_empty() {
                "none".into()
            } else {
                available.join(", ")
            },
        }
    })
}

/// Pulls `reference` into the store's blobs and layers.
pub async fn pull(paths: &Paths, reference: &ImageRef, opts: &PullOptions) -> Result<Fetched> {
    let want = opts
        .platform
        .clone()
        .unwrap_or_else(Platform::default_guest);
    let session = Session::open(paths, reference, opts.insecure).await?;
    let (mut bytes, mut digest) = session.manifest(reference, None).await?;
    let mut index_digest = None;
    let mut media_type = String::new();
    let manifest: Manifest =
        match spec::parse_document(&bytes, &format!("manifest of {reference}"))? {
            Document::Manifest(m) => m,
            Document::Index(idx) => {
                let d = pick_platform(&idx, &want, &reference.to_string())?;
                if spec::is_index(&d.media_type) {
                    return Err(Error::manifest(
                        format!("index of {reference}"),
                        "nested indexes are not supported",
                    ));
                }
                index_digest = Some(digest);
                let pinned = reference.with_digest(&d.digest);
                (bytes, digest) = session.manifest(&pinned, Some(&d.digest)).await?;
                media_type = d.media_type.clone();
                match spec::parse_document(&bytes, &format!("manifest {}", d.digest))? {
                    Document::Manifest(m) => m,
                    Document::Index(_) => {
                        return Err(Error::manifest(
                            format!("manifest {}", d.digest),
                            "an index where a manifest belongs",
                        ))
                    }
                }
            }
        };
    if media_type.is_empty() {
        media_type = manifest
            .media_type
            .clone()
            .unwrap_or_else(|| spec::OCI_MANIFEST.to_string());
    }
    (opts.progress)(&Event::Resolved {
        reference: reference.to_string(),
        manifest: digest.clone(),
        layers: manifest.layers.len(),
    });
    let silent = crate::progress::silent();
    session
        .blob(
            paths,
            &manifest.config,
            &format!("config {}", manifest.config.digest),
            &silent,
        )
        .await?;
    let what = format!("config {}", manifest.config.digest);
    let config_bytes = crate::blobs::read_small(paths, &manifest.config.digest, &what)?;
    let config = spec::parse_config(&config_bytes, &manifest, &what)?;
    if !want.matches(&config.os, &config.architecture, None) {
        let msg = format!(
            "{reference} is {}/{}, not {want}",
            config.os, config.architecture
        );
        if opts.platform.is_some() {
            return Err(Error::manifest(what, msg));
        }
        tracing::warn!("{msg}");
    }
    for l in &manifest.layers {
        spec::check_layer_type(l)?;
    }
    let jobs = manifest
        .layers
        .iter()
        .zip(&config.rootfs.diff_ids)
        .map(|(layer, diff_id)| fetch_layer(paths, &session, layer, diff_id, &opts.progress));
    futures_util::stream::iter(jobs)
        .buffer_unordered(PARALLEL_LAYERS)
        .try_collect::<Vec<()>>()
        .await?;
    crate::blobs::put_bytes(paths, &bytes)?;
    Ok(Fetched {
        manifest: digest,
        media_type,
        size: bytes.len() as u64,
        index_digest,
    })
}

/// Downloads (unless stored) and unpacks (unless unpacked) one layer.
async fn fetch_layer(
    paths: &Paths,
    session: &Session,
    layer: &Descriptor,
    diff_id: &Digest,
    progress: &Progress,
) -> Result<()> {
    if crate::blobs::has(paths, &layer.digest) && paths.layer(diff_id).is_dir() {
        progress(&Event::LayerPresent {
            digest: layer.digest.clone(),
        });
        return Ok(());
    }
    let what = format!("layer {}", layer.digest);
    if !paths.layer(diff_id).is_dir()
        && session
            .stream_layer(paths, layer, diff_id, &what, progress)
            .await?
    {
        progress(&Event::LayerDone {
            digest: layer.digest.clone(),
        });
        return Ok(());
    }
    session.blob(paths, layer, &what, progress).await?;
    progress(&Event::Unpacking {
        digest: layer.digest.clone(),
    });
    let (p, l, d) = (paths.clone(), layer.digest.clone(), diff_id.clone());
    tokio::task::spawn_blocking(move || crate::unpack::ensure_layer(&p, &p.blob(&l), &l, &d))
        .await
        .map_err(|e| Error::Registry {
            registry: session.reference.registry().to_string(),
            message: format!("unpack task: {e}"),
        })??;
    progress(&Event::LayerDone {
        digest: layer.digest.clone(),
    });
    Ok(())
}
