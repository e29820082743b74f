//! The walls around the server, raised in order once the filesystem is
//! built and before any thread starts: the process sandbox
//! ([`crate::sandbox`]), then the capability drop and no-new-privileges,
//! then the seccomp filter.

use std::path::Path;
use std::sync::Arc;

use crate::cli::Config;
use crate::daemon::DaemonError;
use crate::filesystem::ConfinedFs;
use crate::sandbox;

/// Raises the walls around `fs`. With a sandbox the calling process forks:
/// it becomes the monitor (which runs `cleanup` on the host once the server
/// has exited, then exits with its status) and this returns in the server
/// only, confined to the shared directory.
pub fn enter(
    config: &Config,
    mut fs: ConfinedFs,
    cleanup: impl FnOnce(),
) -> Result<Arc<ConfinedFs>, DaemonError> {
    sandbox::fork_server(config.sandbox, cleanup)?;
    let shared_dir = fs.config().shared_dir.clone();
    if let Some(proc_fd) = sandbox::confine(config.sandbox, &shared_dir, config.readonly)? {
        fs.use_proc_fd(proc_fd);
    }
    tracing::debug!(sandbox = config.sandbox.as_str(), "walls up");
    Ok(Arc::new(fs))
}

/// Unmounts a `--fuse-mount` from the monitor, outside the sandbox: lazily,
/// through `fusermount3` when we may not unmount ourselves. A mount already
/// gone is fine.
pub fn unmount_host(mountpoint: &Path) {
    use nix::errno::Errno;
    use nix::mount::{umount2, MntFlags};
    match umount2(mountpoint, MntFlags::MNT_DETACH) {
        Ok(()) => tracing::info!("unmounted {}", mountpoint.display()),
        Err(Errno::EINVAL | Errno::ENOENT) => {}
        Err(Errno::EPERM) => {
            let status = std::process::Command::new("fusermount3")
                .args(["-u", "-z", "--"])
                .arg(mountpoint)
                .status();
            if !matches!(status, Ok(s) if s.success()) {
                tracing::warn!(
                    "unmounting {}: fusermount3 {status:?}",
                    mountpoint.display()
                );
            }
        }
        Err(e) => tracing::warn!("unmounting {}: {e}", mountpoint.display()),
    }
}
