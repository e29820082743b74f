//! Where the image store keeps things under the state root.
//!
//! ```text
//! <home>/images/                      an OCI image layout:
//!   oci-layout, index.json            the tagged images (ref.name annotations)
//!   blobs/sha256/<hex>                manifests, configs, layer tarballs
//!   layers/sha256/<diff id>/          a layer unpacked once: tree/ + layer.json
//!   roots/<config hex>/               an image root: layers flattened with
//!                                     hard links into layers/
//!   tmp/                              partial downloads and staging trees
//!                                     (same filesystem: renamed into place)
//!   .lock                             shared while adding, exclusive while
//!                                     deleting (rm, prune)
//!   .index.lock                       held while index.json is rewritten
//! <home>/registry-auth.json           `msb registry login` credentials (0600)
//! ```

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use crate::digest::Digest;
use crate::error::{Error, Result};

/// The paths of one image store.
#[derive(Debug, Clone)]
pub struct Paths {
    /// The state root (`MSB_HOME`).
    pub home: PathBuf,
    /// `<home>/images`, the OCI layout.
    pub root: PathBuf,
    /// `blobs/sha256`.
    pub blobs: PathBuf,
    /// `layers/sha256`.
    pub layers: PathBuf,
    /// `roots`.
    pub roots: PathBuf,
    /// `tmp`.
    pub tmp: PathBuf,
}

impl Paths {
    /// The layout under state root `home`.
    pub fn new(home: &Path) -> Paths {
        let root = home.join("images");
        Paths {
            home: home.to_path_buf(),
            blobs: root.join("blobs").join("sha256"),
            layers: root.join("layers").join("sha256"),
            roots: root.join("roots"),
            tmp: root.join("tmp"),
            root,
        }
    }

    /// Creates the directories (the state root private to the user).
    pub fn create_dirs(&self) -> Result<()> {
        mkdir_all(&self.home, 0o700)?;
        for d in [
            &self.root,
            &self.blobs,
            &self.layers,
            &self.roots,
            &self.tmp,
        ] {
            mkdir_all(d, 0o755)?;
        }
        Ok(())
    }

    /// The file of blob `d`.
    pub fn blob(&self, d: &Digest) -> PathBuf {
        self.blobs.join(d.hex())
    }

    /// The directory of the layer with diff ID `d`.
    pub fn layer(&self, d: &Digest) -> PathBuf {
        self.layers.join(d.hex())
    }

    /// The root of the image with config digest `d`.
    pub fn image_root(&self, d: &Digest) -> PathBuf {
        self.roots.join(d.hex())
    }

    /// `index.json`.
    pub fn index(&self) -> PathBuf {
        self.root.join("index.json")
    }

    /// The lock taken shared by writers, exclusive by deleters.
    pub fn gc_lock(&self) -> PathBuf {
        self.root.join(".lock")
    }

    /// The lock around rewriting `index.json`.
    pub fn index_lock(&self) -> PathBuf {
        self.root.join(".index.lock")
    }

    /// The registry credentials `msb registry login` stores.
    pub fn credentials(&self) -> PathBuf {
        self.home.join("registry-auth.json")
    }

    /// A fresh name in `tmp/` starting with `prefix` (not created).
    pub fn unique_tmp(&self, prefix: &str) -> PathBuf {
        use std::sync::atomic::{AtomicU64, Ordering};
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        self.tmp.join(format!(
            "{prefix}.{}.{nanos}.{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ))
    }
}

/// `mkdir -p` with `mode` for the directories it creates.
pub fn mkdir_all(d: &Path, mode: u32) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(d)
        .map_err(|e| Error::io("create directory", d, e))
}
