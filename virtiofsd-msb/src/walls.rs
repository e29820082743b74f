//! The walls around the server, raised in order once the filesystem is
//! built and before any thread starts: the process sandbox
//! ([`crate::sandbox`]), then the capability drop and no-new-privileges,
//! then the seccomp filter ([`crate::seccomp`]).
//!
//! # Capabilities
//!
//! The server keeps only what its policies need ([`needed_caps`]), in its
//! permitted and effective sets; the inheritable, ambient and bounding
//! sets are cleared, and no-new-privileges is set, so nothing it could
//! execute (seccomp forbids execve anyway) would gain any:
//! - `DAC_OVERRIDE`, `FOWNER`: reach host files whatever their host modes
//!   and owners (the guest's own kernel checks the guest-visible ones);
//!   `O_NOATIME` and times on files the daemon does not own;
//! - `DAC_READ_SEARCH`: `open_by_handle_at`, when file handles are in use;
//! - without stat virtualization, and only on a writable share: `SETUID`,
//!   `SETGID` (entries are made as the guest caller's fs ids), `CHOWN` and
//!   `FSETID` (the host inode is the guest's inode).
//!
//! Gone in every mode: `SYS_ADMIN` (mounts, namespaces), `MKNOD` (the
//! daemon never makes a device node), `SYS_RESOURCE` (a guest may not eat
//! the root-reserved blocks of the host filesystem), `SETFCAP`,
//! `SYS_PTRACE`, `NET_*`, and all the others.

use std::path::Path;
use std::sync::Arc;

use capctl::{Cap, CapSet, CapState};

use crate::cli::Config;
use crate::daemon::DaemonError;
use crate::filesystem::ConfinedFs;
use crate::{sandbox, seccomp};

/// Raises the walls around `fs`. With a sandbox (or `monitor` set) the
/// calling process forks: it becomes the monitor (which runs `cleanup` on
/// the host once the server has exited, then exits with its status) and
/// this returns in the server only, confined to the shared directory.
pub fn enter(
    config: &Config,
    mut fs: ConfinedFs,
    monitor: bool,
    cleanup: impl FnOnce(),
) -> Result<Arc<ConfinedFs>, DaemonError> {
    sandbox::fork_server(config.sandbox, monitor, cleanup)?;
    let shared_dir = fs.config().shared_dir.clone();
    if let Some(proc_fd) = sandbox::confine(config.sandbox, &shared_dir, config.readonly)? {
        fs.use_proc_fd(proc_fd);
    } else if monitor {
        // Forked without a sandbox: the handle opened before the fork is
        // the monitor's /proc/self/fd (whose fds it closed), not ours.
        let proc_fd = crate::confinement::ProcSelfFd::open()
            .map_err(|e| DaemonError::Privileges(format!("opening /proc/self/fd: {e}")))?;
        fs.use_proc_fd(proc_fd);
    }
    let keep = needed_caps(&fs);
    drop_privileges(keep)?;
    seccomp::install(config.seccomp).map_err(|e| DaemonError::Privileges(e.to_string()))?;
    tracing::debug!(
        sandbox = config.sandbox.as_str(),
        seccomp = config.seccomp.as_str(),
        caps = %keep_names(keep),
        "walls up"
    );
    Ok(Arc::new(fs))
}

/// The capabilities the server keeps for `fs`'s policies (see the module
/// documentation).
pub fn needed_caps(fs: &ConfinedFs) -> CapSet {
    let mut keep = CapSet::empty();
    keep.add_all([Cap::DAC_OVERRIDE, Cap::FOWNER]);
    if fs.uses_file_handles() {
        keep.add(Cap::DAC_READ_SEARCH);
    }
    if !fs.overlay_active() && !fs.config().readonly {
        keep.add_all([Cap::SETUID, Cap::SETGID, Cap::CHOWN, Cap::FSETID]);
    }
    keep
}

fn keep_names(keep: CapSet) -> String {
    let names: Vec<String> = keep.iter().map(|c| format!("{c:?}")).collect();
    names.join(",")
}

/// Clears the bounding, ambient and inheritable sets, keeps `keep` of the
/// permitted set (as effective too), and sets no-new-privileges. A daemon
/// without capabilities (not root, no user namespace) has nothing to drop.
pub fn drop_privileges(keep: CapSet) -> Result<(), DaemonError> {
    let err = |what: &str, e: capctl::Error| DaemonError::Privileges(format!("{what}: {e}"));
    let mut state = CapState::get_current().map_err(|e| err("reading capabilities", e))?;
    if state.effective.has(Cap::SETPCAP) {
        capctl::bounding::clear().map_err(|e| err("clearing the bounding set", e))?;
    }
    if capctl::ambient::is_supported() {
        capctl::ambient::clear().map_err(|e| err("clearing the ambient set", e))?;
    }
    state.permitted &= keep;
    state.effective = state.permitted;
    state.inheritable.clear();
    state
        .set_current()
        .map_err(|e| err("setting capabilities", e))?;
    capctl::prctl::set_no_new_privs().map_err(|e| err("no_new_privs", e))
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
