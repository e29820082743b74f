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
    /// The reference it was asked for by (for messages).
    pub reference: String,
    /// The image's merged tree (never written to).
    pub tree: PathBuf,
    /// How the image says to run it (env, entrypoint, cmd, workdir, user).
    pub config: images::ImageConfig,
    /// The config's `User` resolved against the image's own `/etc/passwd`
    /// and `/etc/group` (root when it names none).
    pub user: images::User,
    /// Where writes go.
    pub upper: Upper,
}

impl ImageRootfs {
    /// The command a VM from this image runs, as `docker run` composes it:
    /// the image's Entrypoint followed by `given`, or by the image's Cmd
    /// when nothing is given. Empty is a usage error.
    pub fn command(&self, given: &[String]) -> Result<Vec<String>, RunError> {
        let tail = if given.is_empty() {
            &self.config.cmd
        } else {
            given
        };
        let argv: Vec<String> = self.config.entrypoint.iter().chain(tail).cloned().collect();
        if argv.is_empty() {
            return Err(RunError::usage(format!(
                "image {:?} has no Entrypoint or Cmd: give a command after `--`",
                self.reference
            )));
        }
        Ok(argv)
    }

    /// The environment the image gives every process: its `Env`, plus
    /// `HOME` of its `User` when it names one and `Env` sets no `HOME`.
    pub fn env(&self) -> Vec<String> {
        let mut env = self.config.env.clone();
        let has_home = env.iter().any(|e| e.split('=').next() == Some("HOME"));
        if self.config.user.is_some() && !has_home {
            env.push(format!("HOME={}", self.user.home));
        }
        env
    }
}

/// The command of `msb run`: the image's composition (see
/// [`ImageRootfs::command`]) or, without an image, `given`, which must not
/// be empty.
pub fn command_line(
    image: Option<&ImageRootfs>,
    given: &[String],
) -> Result<Vec<String>, RunError> {
    match image {
        Some(img) => img.command(given),
        None if given.is_empty() => Err(RunError::usage(
            "give a command after `--` (it may be left out only with --image)",
        )),
        None => Ok(given.to_vec()),
    }
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
    let start = std::time::Instant::now();
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
    let user = images::user::resolve(&root.path, root.config.user.as_deref().unwrap_or(""))
        .map_err(|e| image_err(reference, e))?;
    let root_ms = start.elapsed().as_secs_f64() * 1e3;
    if let Upper::Disk(path) = &upper {
        if !path.exists() {
            volumes::make_ext4("msb-upper", path, UPPER_DISK_MIB)
                .map_err(|e| RunError::launcher(format!("writable layer: {e}")))?;
        }
    }
    // scripts/bench-image reads this line from a sandbox's supervisor log.
    tracing::info!(
        "image {reference}: root ready in {root_ms:.1} ms, with its writable layer in {:.1} ms",
        start.elapsed().as_secs_f64() * 1e3
    );
    Ok(ImageRootfs {
        reference: reference.to_string(),
        tree: root.path,
        config: root.config,
        user,
        upper,
    })
}
