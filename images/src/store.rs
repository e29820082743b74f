//! The [`Store`]: what callers use. See the crate docs for the layout and
//! the guarantees.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::layout;
use crate::lock::FileLock;
use crate::model::{Image, ImageConfig, ImageId, ImageRoot, Layer};
use crate::paths::Paths;
use crate::reference::ImageRef;
use crate::registry::pull::{self, PullOptions};
use crate::spec::{self, Document};

/// The image store under one state root.
#[derive(Debug, Clone)]
pub struct Store {
    paths: Paths,
}

/// What [`Store::remove`] did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Removed {
    /// The image concerned.
    pub image: Image,
    /// The names removed.
    pub untagged: Vec<String>,
    /// Whether the image itself is gone (false: other names still hold it).
    pub deleted: bool,
    /// What the garbage collection freed.
    pub freed: GcReport,
}

/// What a garbage collection deleted.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct GcReport {
    /// Images removed from the index (prune --all).
    pub images: Vec<String>,
    /// Blobs deleted.
    pub blobs: usize,
    /// Unpacked layers deleted.
    pub layers: usize,
    /// Image roots deleted.
    pub roots: usize,
    /// Partial downloads and staging trees deleted.
    pub temporary: usize,
    /// Bytes of blobs deleted.
    pub blob_bytes: u64,
}

impl Store {
    /// Opens (creating when needed) the store under state root `home`.
    pub fn open(home: &Path) -> Result<Store> {
        let paths = Paths::new(home);
        paths.create_dirs()?;
        layout::ensure(&paths)?;
        Ok(Store { paths })
    }

    /// Opens the store under `$MSB_HOME` (default `~/.microsandbox`).
    pub fn open_default() -> Result<Store> {
        let home = volumes::default_home().map_err(|e| Error::Home(e.to_string()))?;
        Store::open(&home)
    }

    /// The store's paths.
    pub fn paths(&self) -> &Paths {
        &self.paths
    }

    /// Pulls `reference` from its registry (always asking the registry,
    /// so a moved tag is followed) and names the image by the normalized
    /// reference.
    pub async fn pull(&self, reference: &str, opts: &PullOptions) -> Result<Image> {
        let r = ImageRef::parse(reference)?;
        let gc_path = self.paths.gc_lock();
        let _gc = tokio::task::spawn_blocking(move || FileLock::shared(&gc_path))
            .await
            .map_err(|e| Error::Home(format!("lock task: {e}")))??;
        let fetched = pull::pull(&self.paths, &r, opts).await?;
        let name = r.to_string();
        let info = layout::EntryInfo {
            media_type: &fetched.media_type,
            size: fetched.size,
            index_digest: fetched.index_digest.as_ref(),
        };
        layout::update(&self.paths, |idx| {
            layout::put(idx, Some(&name), &fetched.manifest, &info);
            Ok(())
        })?;
        self.image(&fetched.manifest)
    }

    /// [`Store::pull`] for callers without a tokio runtime (it makes one;
    /// do not call it from inside a runtime).
    pub fn pull_blocking(&self, reference: &str, opts: &PullOptions) -> Result<Image> {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| Error::io("start runtime", "(tokio)", e))?
            .block_on(self.pull(reference, opts))
    }

    /// Every image, newest first.
    pub fn list(&self) -> Result<Vec<Image>> {
        let idx = layout::read(&self.paths)?;
        let mut by_manifest: BTreeMap<Digest, Vec<&spec::Descriptor>> = BTreeMap::new();
        for d in &idx.manifests {
            by_manifest.entry(d.digest.clone()).or_default().push(d);
        }
        let mut out = Vec::new();
        for (digest, entries) in by_manifest {
            out.push(self.image_from(&digest, &entries)?);
        }
        out.sort_by(|a, b| b.added_at.cmp(&a.added_at).then(a.names.cmp(&b.names)));
        Ok(out)
    }

    /// The image named by `reference`: a name (`alpine`, normalized), a
    /// `repo@sha256:…` digest reference (manifest or index digest), or an
    /// image ID or unique prefix of one (`sha256:…`, `3f5a9c`).
    pub fn inspect(&self, reference: &str) -> Result<Image> {
        self.find(reference)?
            .ok_or_else(|| Error::NotFound(reference.to_string()))
    }

    /// Like [`Store::inspect`], `None` when absent.
    pub fn find(&self, reference: &str) -> Result<Option<Image>> {
        Ok(self.find_all(reference)?.into_iter().next())
    }

    fn find_all(&self, text: &str) -> Result<Vec<Image>> {
        let list = self.list()?;
        if let Ok(r) = ImageRef::parse(text) {
            let name = r.to_string();
            if let Some(img) = list.iter().find(|i| i.names.contains(&name)) {
                return Ok(vec![img.clone()]);
            }
            if let Some(d) = r.digest() {
                let repo = r.name();
                let hit = list.iter().find(|i| {
                    (i.manifest_digest == d || i.index_digest.as_ref() == Some(&d))
                        && i.names
                            .iter()
                            .any(|n| ImageRef::parse(n).is_ok_and(|x| x.name() == repo))
                });
                if let Some(img) = hit {
                    return Ok(vec![img.clone()]);
                }
            }
        }
        let hex = text.strip_prefix("sha256:").unwrap_or(text);
        if hex.len() < 4 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(Vec::new());
        }
        let hex = hex.to_ascii_lowercase();
        let by_id: Vec<Image> = list
            .iter()
            .filter(|i| i.id.0.hex().starts_with(&hex))
            .cloned()
            .collect();
        let ids: BTreeSet<&ImageId> = by_id.iter().map(|i| &i.id).collect();
        if ids.len() > 1 {
            return Err(Error::BadReference {
                reference: text.to_string(),
                why: format!("ambiguous: {} images have IDs starting so", ids.len()),
            });
        }
        if !by_id.is_empty() {
            return Ok(by_id);
        }
        Ok(list
            .into_iter()
            .filter(|i| i.manifest_digest.hex().starts_with(&hex))
            .take(1)
            .collect())
    }

    /// The image with manifest `digest` (all its names).
    pub(crate) fn image(&self, digest: &Digest) -> Result<Image> {
        let idx = layout::read(&self.paths)?;
        let entries: Vec<&spec::Descriptor> = idx
            .manifests
            .iter()
            .filter(|d| &d.digest == digest)
            .collect();
        self.image_from(digest, &entries)
    }

    fn image_from(&self, digest: &Digest, entries: &[&spec::Descriptor]) -> Result<Image> {
        let what = format!("manifest {digest}");
        let bytes = crate::blobs::read_small(&self.paths, digest, &what)?;
        let Document::Manifest(m) = spec::parse_document(&bytes, &what)? else {
            return Err(Error::manifest(what, "an index where a manifest belongs"));
        };
        let cwhat = format!("config {}", m.config.digest);
        let cbytes = crate::blobs::read_small(&self.paths, &m.config.digest, &cwhat)?;
        let cfg = spec::parse_config(&cbytes, &m, &cwhat)?;
        let mut names: Vec<String> = entries
            .iter()
            .filter_map(|d| layout::name_of(d).map(str::to_string))
            .collect();
        names.sort();
        let added_at = entries
            .iter()
            .filter_map(|d| d.annotations.get(spec::ADDED_AT)?.parse::<u64>().ok())
            .min()
            .unwrap_or(0);
        let index_digest = entries
            .iter()
            .find_map(|d| Digest::parse(d.annotations.get(spec::INDEX_DIGEST)?).ok());
        let layers: Vec<Layer> = m
            .layers
            .iter()
            .zip(&cfg.rootfs.diff_ids)
            .map(|(l, diff)| Layer {
                digest: l.digest.clone(),
                diff_id: diff.clone(),
                size: l.size,
                media_type: l.media_type.clone(),
            })
            .collect();
        Ok(Image {
            id: ImageId(m.config.digest.clone()),
            names,
            manifest_digest: digest.clone(),
            index_digest,
            platform: format!("{}/{}", cfg.os, cfg.architecture),
            size: layers.iter().map(|l| l.size).sum(),
            layers,
            created: cfg.created.clone(),
            added_at,
            config: ImageConfig::from(cfg.config),
        })
    }

    /// Names `image` `name` too (a full reference, normalized).
    pub fn tag(&self, image: &Image, name: &str) -> Result<Image> {
        let r = ImageRef::parse(name)?;
        let size = std::fs::metadata(self.paths.blob(&image.manifest_digest))
            .map_err(|e| Error::io("stat", self.paths.blob(&image.manifest_digest), e))?
            .len();
        let info = layout::EntryInfo {
            media_type: spec::OCI_MANIFEST,
            size,
            index_digest: image.index_digest.as_ref(),
        };
        layout::update(&self.paths, |idx| {
            layout::put(idx, Some(&r.to_string()), &image.manifest_digest, &info);
            Ok(())
        })?;
        self.image(&image.manifest_digest)
    }

    /// Removes a name, or (by ID, or its last name) the image: refused
    /// with [`Error::InUse`] while `in_use` says a sandbox uses it. Blobs,
    /// layers and the root no other image needs are deleted. Waits for
    /// pulls and loads in progress to finish.
    pub fn remove(&self, reference: &str, in_use: impl Fn(&ImageId) -> bool) -> Result<Removed> {
        let _gc = FileLock::exclusive(&self.paths.gc_lock())?;
        let found = self.find_all(reference)?;
        let image = found
            .first()
            .cloned()
            .ok_or_else(|| Error::NotFound(reference.to_string()))?;
        let name = ImageRef::parse(reference).ok().map(|r| r.to_string());
        let by_name = name.as_ref().filter(|n| image.names.contains(n));
        if let Some(n) = by_name.filter(|_| image.names.len() > 1) {
            layout::update(&self.paths, |idx| {
                idx.manifests
                    .retain(|d| layout::name_of(d) != Some(n.as_str()));
                Ok(())
            })?;
            return Ok(Removed {
                image,
                untagged: vec![n.clone()],
                deleted: false,
                freed: GcReport::default(),
            });
        }
        if in_use(&image.id) {
            return Err(Error::InUse(describe(&image)));
        }
        let manifests: BTreeSet<Digest> = found.iter().map(|i| i.manifest_digest.clone()).collect();
        layout::update(&self.paths, |idx| {
            idx.manifests.retain(|d| !manifests.contains(&d.digest));
            Ok(())
        })?;
        let freed = self.collect_garbage()?;
        Ok(Removed {
            untagged: found.iter().flat_map(|i| i.names.clone()).collect(),
            image,
            deleted: true,
            freed,
        })
    }

    /// Deletes what no image needs (blobs, unpacked layers, roots,
    /// interrupted downloads and staging trees); with `all`, first removes
    /// every image `in_use` does not claim.
    pub fn prune(&self, all: bool, in_use: impl Fn(&ImageId) -> bool) -> Result<GcReport> {
        let _gc = FileLock::exclusive(&self.paths.gc_lock())?;
        let mut removed = Vec::new();
        if all {
            let unused: Vec<Image> = self
                .list()?
                .into_iter()
                .filter(|i| !in_use(&i.id))
                .collect();
            let manifests: BTreeSet<Digest> =
                unused.iter().map(|i| i.manifest_digest.clone()).collect();
            layout::update(&self.paths, |idx| {
                idx.manifests.retain(|d| !manifests.contains(&d.digest));
                Ok(())
            })?;
            removed = unused.iter().map(describe).collect();
        }
        let mut report = self.collect_garbage()?;
        report.images = removed;
        Ok(report)
    }

    /// Deletes everything the index does not reach. Caller holds the gc
    /// lock exclusively (no pull, load or root build is running).
    fn collect_garbage(&self) -> Result<GcReport> {
        let mut blobs = BTreeSet::new();
        let mut layers = BTreeSet::new();
        let mut roots = BTreeSet::new();
        for img in self.list()? {
            blobs.insert(img.manifest_digest.hex().to_string());
            blobs.insert(img.id.0.hex().to_string());
            roots.insert(img.id.0.hex().to_string());
            for l in &img.layers {
                blobs.insert(l.digest.hex().to_string());
                layers.insert(l.diff_id.hex().to_string());
            }
        }
        let mut report = GcReport::default();
        let trash = |name: &str| self.paths.unique_tmp(&format!("trash-{name}"));
        for (dir, live, count) in [
            (&self.paths.blobs, &blobs, &mut report.blobs),
            (&self.paths.layers, &layers, &mut report.layers),
            (&self.paths.roots, &roots, &mut report.roots),
        ] {
            for (name, path) in entries(dir)? {
                if live.contains(&name) {
                    continue;
                }
                if dir == &self.paths.blobs {
                    report.blob_bytes += std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                }
                crate::fsutil::remove_via(&path, &trash(&name))
                    .map_err(|e| Error::io("delete", &path, e))?;
                *count += 1;
            }
        }
        for (_, path) in entries(&self.paths.tmp)? {
            crate::fsutil::remove_tree(&path).map_err(|e| Error::io("delete", &path, e))?;
            report.temporary += 1;
        }
        Ok(report)
    }

    /// The root filesystem of `image`, built on first use (layers merged
    /// with hard links; see the crate docs). Concurrent callers get the
    /// same directory; building it never blocks on another builder.
    pub fn root(&self, image: &Image) -> Result<ImageRoot> {
        let dest = self.paths.image_root(&image.id.0);
        let done = ImageRoot {
            path: dest.clone(),
            id: image.id.clone(),
            config: image.config.clone(),
        };
        if dest.is_dir() {
            return Ok(done);
        }
        let _gc = FileLock::shared(&self.paths.gc_lock())?;
        let mut dirs = Vec::new();
        for l in &image.layers {
            let dir = self.paths.layer(&l.diff_id);
            if !dir.is_dir() {
                // Blob stored but layer gone (a crash, a manual delete).
                if !crate::blobs::has(&self.paths, &l.digest) {
                    return Err(Error::NotFound(format!(
                        "layer {} of image {} (pull the image again)",
                        l.digest, image.id
                    )));
                }
                crate::unpack::ensure_layer(
                    &self.paths,
                    &self.paths.blob(&l.digest),
                    &l.digest,
                    &l.diff_id,
                )?;
            }
            dirs.push(dir);
        }
        let staging = self
            .paths
            .unique_tmp(&format!("root-{}", image.id.0.short()));
        let built = crate::flatten::build(&dirs, &staging).and_then(|()| {
            match crate::fsutil::rename_noreplace(&staging, &dest) {
                Ok(()) => Ok(()),
                Err(e)
                    if matches!(e.raw_os_error(), Some(libc::EEXIST) | Some(libc::ENOTEMPTY)) =>
                {
                    crate::fsutil::remove_tree(&staging)
                        .map_err(|e| Error::io("delete", &staging, e))
                }
                Err(e) => Err(Error::io("rename into", &dest, e)),
            }
        });
        if built.is_err() {
            let _ = crate::fsutil::remove_tree(&staging);
        }
        built?;
        crate::fsutil::sync_dir(&self.paths.roots);
        Ok(done)
    }
}

/// `name (sha256:…)` or the ID alone.
fn describe(i: &Image) -> String {
    match i.names.first() {
        Some(n) => format!("{n} ({})", i.id),
        None => i.id.to_string(),
    }
}

/// The entries of `dir` (name, path).
fn entries(dir: &PathBuf) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| Error::io("read directory", dir, e))? {
        let e = e.map_err(|e| Error::io("read directory", dir, e))?;
        out.push((e.file_name().to_string_lossy().into_owned(), e.path()));
    }
    Ok(out)
}
