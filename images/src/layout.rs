//! The store's `index.json` (an OCI image layout index): one descriptor
//! per name of an image, the name in the `org.opencontainers.image.ref.name`
//! annotation (full references: `docker.io/library/alpine:latest`); an
//! untagged image has a descriptor without one. Rewritten atomically
//! (temporary file + rename) under `.index.lock`.

use std::collections::BTreeMap;
use std::io::Write;

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::lock::FileLock;
use crate::paths::Paths;
use crate::spec::{self, Descriptor, Index};

/// Creates `oci-layout` and an empty `index.json` when missing.
pub fn ensure(paths: &Paths) -> Result<()> {
    let marker = paths.root.join("oci-layout");
    if !marker.exists() {
        write_atomic(paths, &marker, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    }
    if !paths.index().exists() {
        let _lock = FileLock::exclusive(&paths.index_lock())?;
        if !paths.index().exists() {
            write_index(paths, &empty())?;
        }
    }
    Ok(())
}

fn empty() -> Index {
    Index {
        schema_version: 2,
        media_type: Some(spec::OCI_INDEX.to_string()),
        manifests: Vec::new(),
    }
}

/// Reads `index.json`.
pub fn read(paths: &Paths) -> Result<Index> {
    let p = paths.index();
    match std::fs::read(&p) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            Error::manifest(p.display().to_string(), format!("corrupt store index: {e}"))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(empty()),
        Err(e) => Err(Error::io("read", &p, e)),
    }
}

/// Reads, changes (with `f`) and rewrites `index.json` under its lock.
pub fn update<T>(paths: &Paths, f: impl FnOnce(&mut Index) -> Result<T>) -> Result<T> {
    let _lock = FileLock::exclusive(&paths.index_lock())?;
    let mut idx = read(paths)?;
    let out = f(&mut idx)?;
    write_index(paths, &idx)?;
    Ok(out)
}

fn write_index(paths: &Paths, idx: &Index) -> Result<()> {
    let bytes =
        serde_json::to_vec_pretty(idx).map_err(|e| Error::manifest("index.json", e.to_string()))?;
    write_atomic(paths, &paths.index(), &bytes)
}

fn write_atomic(paths: &Paths, dest: &std::path::Path, bytes: &[u8]) -> Result<()> {
    let tmp = paths.unique_tmp("index");
    let r = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, dest)
    })();
    if let Err(e) = r {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io("write", dest, e));
    }
    crate::fsutil::sync_dir(&paths.root);
    Ok(())
}

/// The name annotation of a descriptor.
pub fn name_of(d: &Descriptor) -> Option<&str> {
    d.annotations.get(spec::REF_NAME).map(String::as_str)
}

/// What an index entry records besides the manifest.
pub struct EntryInfo<'a> {
    /// The manifest's media type.
    pub media_type: &'a str,
    /// The manifest's size.
    pub size: u64,
    /// The index the manifest was picked from.
    pub index_digest: Option<&'a Digest>,
}

/// Points `name` (or, with `None`, an untagged entry) at `manifest`: an
/// entry of that name is replaced (a tag moves); an untagged entry is
/// only added when nothing names the manifest yet.
pub fn put(idx: &mut Index, name: Option<&str>, manifest: &Digest, info: &EntryInfo<'_>) {
    if name.is_none() && idx.manifests.iter().any(|d| &d.digest == manifest) {
        return;
    }
    if let Some(n) = name {
        idx.manifests.retain(|d| name_of(d) != Some(n));
        // The manifest is named now: drop its untagged entry.
        idx.manifests
            .retain(|d| !(&d.digest == manifest && name_of(d).is_none()));
    }
    let mut annotations = BTreeMap::new();
    if let Some(n) = name {
        annotations.insert(spec::REF_NAME.to_string(), n.to_string());
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    annotations.insert(spec::ADDED_AT.to_string(), now.to_string());
    if let Some(d) = info.index_digest {
        annotations.insert(spec::INDEX_DIGEST.to_string(), d.to_string());
    }
    idx.manifests.push(Descriptor {
        media_type: info.media_type.to_string(),
        digest: manifest.clone(),
        size: info.size,
        platform: None,
        annotations,
    });
}
