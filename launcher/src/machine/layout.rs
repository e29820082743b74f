//! The host side of a VM's devices: the run directory, the directories
//! `virtiofsd-msb` serves, and how the user's mounts map onto virtio-fs
//! shares, virtio-blk disks and guest mounts.

use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use guest_init::config::{GuestMount, RootOverlay, UpperLayer, CONTROL_TAG};

use super::image::{ImageRootfs, Upper};
use crate::exit::RunError;
use crate::process::{Supervised, PASSED_FD};
use crate::spec::MountSpec;
use crate::vmm::{Disk, DiskFormat, FsShare};

/// Request queues per virtio-fs device.
const FS_QUEUES: u32 = 1;
/// Virtqueue size of virtio-fs devices.
const FS_QUEUE_SIZE: u32 = 1024;
/// virtio-fs tag of the `--rootfs` share.
const ROOTFS_TAG: &str = "msb-root";
/// virtio-fs tag of an image's read-only tree.
const IMAGE_TAG: &str = "msb-image";
/// Serial of a sandbox's writable-layer disk.
const UPPER_SERIAL: &str = "msb-upper";

/// The private directory of one run, removed on drop.
pub(crate) struct RunDir {
    pub(crate) path: PathBuf,
}

impl RunDir {
    pub(crate) fn create() -> Result<RunDir, RunError> {
        let base = std::env::var_os("XDG_RUNTIME_DIR")
            .map(PathBuf::from)
            .filter(|p| p.is_dir());
        let base = base.unwrap_or_else(std::env::temp_dir);
        for attempt in 0..100u32 {
            let path = base.join(format!("msb-run-{}-{attempt}", std::process::id()));
            match std::fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => return Ok(RunDir { path }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    return Err(RunError::launcher(format!(
                        "run directory {}: {e}",
                        path.display()
                    )))
                }
            }
        }
        Err(RunError::launcher(format!(
            "no free run directory under {}",
            base.display()
        )))
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            tracing::warn!("could not remove {}: {e}", self.path.display());
        }
    }
}

/// A directory (or, with `single_file`, one file) one `virtiofsd-msb`
/// serves to the guest.
pub(crate) struct ShareSource {
    pub(crate) tag: String,
    pub(crate) host: PathBuf,
    /// `host` is a regular file, served alone (`--shared-file`).
    pub(crate) single_file: bool,
    pub(crate) readonly: bool,
    /// Extra daemon flags (policies).
    pub(crate) args: Vec<OsString>,
}

impl ShareSource {
    pub(crate) fn socket(&self, dir: &Path) -> PathBuf {
        dir.join(format!("{}.sock", self.tag))
    }

    pub(crate) fn device(&self, dir: &Path) -> FsShare {
        FsShare {
            tag: self.tag.clone(),
            socket: self.socket(dir),
            num_queues: FS_QUEUES,
            queue_size: FS_QUEUE_SIZE,
        }
    }
}

/// How the user's mounts map onto devices and guest mounts, worked out
/// before anything starts.
pub(crate) struct Layout {
    /// Shares to serve: the control share first, then the rootfs, then bind
    /// mounts.
    pub(crate) shares: Vec<ShareSource>,
    pub(crate) disks: Vec<Disk>,
    pub(crate) guest_mounts: Vec<GuestMount>,
    pub(crate) rootfs_tag: Option<String>,
    /// The image root, when the VM boots from an image.
    pub(crate) root_overlay: Option<RootOverlay>,
}

impl Layout {
    /// Fails only for a named volume mount that was not resolved (a bug).
    pub(crate) fn new(
        mounts: &[MountSpec],
        rootfs: Option<&Path>,
        image: Option<&ImageRootfs>,
        control: &Path,
    ) -> Result<Layout, RunError> {
        let share = |tag: &str, host: &Path, readonly, args| ShareSource {
            tag: tag.into(),
            host: host.into(),
            single_file: false,
            readonly,
            args,
        };
        let mut layout = Layout {
            // msb's own scratch directory: no ownership to virtualize, and it
            // may sit on a tmpfs without user xattrs.
            shares: vec![share(
                CONTROL_TAG,
                control,
                false,
                vec!["--stat-virtualization".into(), "off".into()],
            )],
            disks: Vec::new(),
            guest_mounts: Vec::new(),
            rootfs_tag: rootfs.map(|_| ROOTFS_TAG.to_string()),
            root_overlay: None,
        };
        if let Some(root) = rootfs {
            layout
                .shares
                .push(share(ROOTFS_TAG, root, false, Vec::new()));
        }
        if let Some(img) = image {
            // The image's owners and modes are in its stat records.
            let args = vec!["--stat-virtualization".into(), "strict".into()];
            layout.shares.push(share(IMAGE_TAG, &img.tree, true, args));
            let upper = match &img.upper {
                Upper::Tmpfs => UpperLayer::Tmpfs { size_bytes: None },
                Upper::Disk(path) => {
                    layout.disks.push(Disk {
                        path: path.clone(),
                        format: DiskFormat::Raw,
                        readonly: false,
                        serial: UPPER_SERIAL.into(),
                    });
                    UpperLayer::Block {
                        serial: UPPER_SERIAL.into(),
                    }
                }
            };
            layout.root_overlay = Some(RootOverlay {
                lower_tag: IMAGE_TAG.into(),
                upper,
            });
        }
        for (i, m) in mounts.iter().enumerate() {
            let mount = match m {
                MountSpec::Bind {
                    host,
                    guest,
                    flags,
                    policy,
                } => {
                    let tag = format!("msb-m{i}");
                    layout
                        .shares
                        .push(share(&tag, host, flags.ro, policy.daemon_args()));
                    GuestMount::Virtiofs {
                        tag,
                        target: guest.clone(),
                        flags: *flags,
                        file: None,
                    }
                }
                MountSpec::BindFile {
                    host,
                    guest,
                    flags,
                    policy,
                } => {
                    let tag = format!("msb-m{i}");
                    layout.shares.push(ShareSource {
                        single_file: true,
                        ..share(&tag, host, flags.ro, policy.daemon_args())
                    });
                    let name = host.file_name().unwrap_or_default();
                    GuestMount::Virtiofs {
                        tag,
                        target: guest.clone(),
                        flags: *flags,
                        file: Some(name.to_string_lossy().into_owned()),
                    }
                }
                MountSpec::Tmpfs {
                    guest,
                    size_bytes,
                    flags,
                } => GuestMount::Tmpfs {
                    target: guest.clone(),
                    size_bytes: *size_bytes,
                    flags: *flags,
                },
                MountSpec::Disk {
                    host,
                    guest,
                    format,
                    fstype,
                    flags,
                } => {
                    let serial = format!("msb-d{}", layout.disks.len());
                    layout.disks.push(Disk {
                        path: host.clone(),
                        format: *format,
                        readonly: flags.ro,
                        serial: serial.clone(),
                    });
                    GuestMount::Block {
                        serial,
                        target: guest.clone(),
                        fstype: fstype.clone(),
                        flags: *flags,
                    }
                }
                MountSpec::Volume(v) => {
                    return Err(RunError::launcher(format!(
                        "mount {:?}: volume {:?} was not resolved",
                        v.spec, v.name
                    )))
                }
            };
            layout.guest_mounts.push(mount);
        }
        Ok(layout)
    }
}

/// Starts the daemon of `share` on a socket the launcher binds and passes
/// down (`--fd`), so the socket exists before the VMM looks for it.
pub(crate) fn start_daemon(
    bin: &Path,
    share: &ShareSource,
    dir: &Path,
) -> Result<Supervised, RunError> {
    let socket = share.socket(dir);
    let listener = UnixListener::bind(&socket)
        .map_err(|e| RunError::launcher(format!("socket {}: {e}", socket.display())))?;
    let fd = OwnedFd::from(listener);
    let log_path = dir.join(format!("{}.log", share.tag));
    let log = std::fs::File::create(&log_path)
        .map_err(|e| RunError::launcher(format!("daemon log: {e}")))?;
    let mut cmd = Command::new(bin);
    let share_flag = if share.single_file {
        "--shared-file"
    } else {
        "--shared-dir"
    };
    cmd.arg("--fd")
        .arg(PASSED_FD.to_string())
        .arg(share_flag)
        .arg(&share.host)
        .args(["--sandbox", "namespace", "--log-level", "warn"]);
    if share.readonly {
        cmd.arg("--readonly");
    }
    cmd.args(&share.args);
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log);
    let name = format!("virtiofsd-msb for {}", share.host.display());
    Supervised::spawn(name, cmd, Some(&fd), log_path).map_err(|e| RunError::launcher(e.to_string()))
}
