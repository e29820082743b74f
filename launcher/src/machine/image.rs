//! An OCI image as a VM's root: the image's tree from the `images` store
//! (pulled when missing), served read-only by its own `virtiofsd-msb`, under
//! a writable layer of the VM's own (merged by overlayfs in the guest).
//! Writes never reach the shared tree or another VM.

use std::path::{Path, PathBuf};

use crate::exit::RunError;

/// Default size of a sandbox's writable layer (a sparse file: only what is
/// written takes host space).
pub const UPPER_DISK_MIB: u32 = 4096;

/// Where a VM's writes to its image root go.
#[derive(Debug, Clone)]
pub enum Upper {
    /// Memory, gone with the VM (`msb run`).
    Tmpfs,
    /// An ext4 image of the sandbox's own, made on first use and kept
    /// across stop/start.
    Disk(PathBuf),
}

/// An image ready to be a VM's root.
#[derive(Debug, Clone)]
pub struct ImageRootfs {
    /// The image's merged tree (never written to).
    pub tree: PathBuf,
    /// How the image says to run it (env, workdir, user).
    pub config: images::ImageConfig,
    /// Where writes go.
    pub upper: Upper,
}

fn image_err(reference: &str, e: images::Error) -> RunError {
    let message = format!("image {reference:?}: {e}");
    if matches!(e, images::Error::BadReference { .. }) {
        RunError::usage(message)
    } else {
        RunError::launcher(message)
    }
}

/// Finds `reference` in the store under `home` (pulling it when missing,
/// with progress on stderr when `progress`), builds its root tree, and makes
/// the writable layer when it is a disk that does not exist yet.
pub fn resolve(
    home: &Path,
    reference: &str,
    upper: Upper,
    progress: bool,
) -> Result<ImageRootfs, RunError> {
    let store = images::Store::open(home).map_err(|e| image_err(reference, e))?;
    let image = match store.find(reference).map_err(|e| image_err(reference, e))? {
        Some(i) => i,
        None => {
            tracing::info!("image {reference} not in the store: pulling it");
            let opts = images::PullOptions {
                progress: if progress {
                    crate::image::progress::for_stderr()
                } else {
                    images::progress::silent()
                },
                ..images::PullOptions::default()
            };
            store
                .pull_blocking(reference, &opts)
                .map_err(|e| image_err(reference, e))?
        }
    };
    let root = store.root(&image).map_err(|e| image_err(reference, e))?;
    if let Upper::Disk(path) = &upper {
        if !path.exists() {
            volumes::make_ext4("msb-upper", path, UPPER_DISK_MIB)
                .map_err(|e| RunError::launcher(format!("writable layer: {e}")))?;
        }
    }
    Ok(ImageRootfs {
        tree: root.path,
        config: root.config,
        upper,
    })
}
