//! Helpers of the image-store tests: layer tarballs and OCI layouts built
//! here, a real registry (Debian's `docker-registry`) on a loopback port,
//! and `skopeo` to push to it.

#![allow(dead_code)]

pub mod layers;
pub mod registry;
pub mod token;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use images::Digest;
use serde_json::json;

pub use layers::LayerTar;
#[allow(unused_imports)]
pub use registry::Registry;

/// An image to write into an OCI layout.
#[derive(Clone)]
pub struct ImageSpec {
    /// Uncompressed layer tars, bottom first.
    pub layers: Vec<Vec<u8>>,
    /// gzip the layer blobs.
    pub gzip: bool,
    /// Architecture in the config (and index entry).
    pub arch: String,
    /// `Cmd` of the config.
    pub cmd: Vec<String>,
    /// `Env` of the config.
    pub env: Vec<String>,
}

impl ImageSpec {
    /// A linux/amd64 image of these layers, gzipped.
    pub fn new(layers: Vec<Vec<u8>>) -> ImageSpec {
        ImageSpec {
            layers,
            gzip: true,
            arch: "amd64".into(),
            cmd: vec!["/bin/sh".into()],
            env: vec!["PATH=/usr/bin:/bin".into()],
        }
    }
}

/// gzip of `data`.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn put_blob(dir: &Path, bytes: &[u8]) -> Digest {
    let d = Digest::of(bytes);
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    std::fs::write(blobs.join(d.hex()), bytes).unwrap();
    d
}

/// Writes the image's blobs into layout `dir`; returns the manifest
/// descriptor (JSON) with its platform.
pub fn write_image(dir: &Path, spec: &ImageSpec) -> serde_json::Value {
    let mut layer_descs = Vec::new();
    let mut diff_ids = Vec::new();
    for tar in &spec.layers {
        diff_ids.push(Digest::of(tar).to_string());
        let (blob, mt) = if spec.gzip {
            (gzip(tar), "application/vnd.oci.image.layer.v1.tar+gzip")
        } else {
            (tar.clone(), "application/vnd.oci.image.layer.v1.tar")
        };
        let d = put_blob(dir, &blob);
        layer_descs.push(json!({"mediaType": mt, "digest": d.to_string(), "size": blob.len()}));
    }
    let config = json!({
        "architecture": spec.arch, "os": "linux",
        "created": "2026-01-01T00:00:00Z",
        "config": {"Env": spec.env, "Cmd": spec.cmd, "WorkingDir": "/", "User": "0:0"},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let config = serde_json::to_vec(&config).unwrap();
    let cd = put_blob(dir, &config);
    let manifest = json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd.to_string(), "size": config.len()},
        "layers": layer_descs,
    });
    let manifest = serde_json::to_vec(&manifest).unwrap();
    let md = put_blob(dir, &manifest);
    json!({
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": md.to_string(), "size": manifest.len(),
        "platform": {"os": "linux", "architecture": spec.arch},
    })
}

fn write_index(dir: &Path, entries: Vec<serde_json::Value>) {
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let idx = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": entries});
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&idx).unwrap()).unwrap();
}

/// An OCI layout in `dir` with one image per `(ref name, spec)`.
pub fn oci_layout(dir: &Path, images: &[(&str, &ImageSpec)]) -> Vec<Digest> {
    let mut entries = Vec::new();
    let mut digests = Vec::new();
    for (name, spec) in images {
        let mut d = write_image(dir, spec);
        digests.push(Digest::parse(d["digest"].as_str().unwrap()).unwrap());
        d["annotations"] = json!({"org.opencontainers.image.ref.name": name});
        entries.push(d);
    }
    write_index(dir, entries);
    digests
}

/// An OCI layout in `dir` whose one entry (`tag`) is an image index over
/// `specs` (one per architecture). Returns the index digest.
pub fn oci_multi_platform(dir: &Path, tag: &str, specs: &[&ImageSpec]) -> Digest {
    let manifests: Vec<_> = specs.iter().map(|s| write_image(dir, s)).collect();
    let index = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests});
    let index = serde_json::to_vec(&index).unwrap();
    let d = put_blob(dir, &index);
    write_index(
        dir,
        vec![json!({
            "mediaType": "application/vnd.oci.image.index.v1+json", "digest": d.to_string(), "size": index.len(),
            "annotations": {"org.opencontainers.image.ref.name": tag},
        })],
    );
    d
}

/// Every path under `dir` (relative), for "nothing changed" checks.
pub fn tree_listing(dir: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            out.insert(p.strip_prefix(dir).unwrap().to_path_buf());
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            }
        }
    }
    out
}

/// The store's files that matter for "unchanged" (lock files aside).
pub fn store_listing(home: &Path) -> BTreeSet<PathBuf> {
    tree_listing(&home.join("images"))
        .into_iter()
        .filter(|p| !p.to_string_lossy().ends_with(".lock"))
        .collect()
}

/// The decoded stat-virtualization record of `path` (file or directory).
pub fn record(path: &Path) -> Option<(u32, u32, u32, u32)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let mut buf = [0u8; 32];
    // SAFETY: NUL-terminated strings, a writable buffer of its length.
    let n = unsafe {
        libc::lgetxattr(
            c.as_ptr(),
            c"user.msb.override_stat".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        return None;
    }
    let r = virtiofsd_msb::policy::StatOverride::decode(&buf[..n as usize]).unwrap();
    Some((r.uid, r.gid, r.mode, r.rdev))
}

/// The value of xattr `name` of `path`.
pub fn xattr(path: &Path, name: &std::ffi::CStr) -> Option<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let mut buf = vec![0u8; 4096];
    // SAFETY: NUL-terminated strings, a writable buffer of its length.
    let n = unsafe {
        libc::lgetxattr(
            c.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    (n >= 0).then(|| buf[..n as usize].to_vec())
}

/// A tokio runtime for the async pulls.
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// The effective uid of this process.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// The newest of `target/{release,debug}/msb` (or `$MSB_BIN`).
pub fn msb_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("MSB_BIN") {
        return PathBuf::from(p);
    }
    let ws = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or(ws.join("target"));
    ["release", "debug"]
        .iter()
        .map(|p| target.join(p).join("msb"))
        .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
        .max()
        .map(|(_, p)| p)
        .expect("msb binary not built: cargo build --release -p launcher (or set MSB_BIN)")
}
