//! The launcher ↔ guest contract: what to mount and run ([`GuestConfig`]),
//! and how it ended ([`GuestStatus`]).
//!
//! The launcher writes `config.json` onto a small virtio-fs share tagged
//! [`CONTROL_TAG`]; `msb-init` mounts it at [`CONTROL_MOUNT`], reads the
//! config, and writes `status.json` there before powering off.

use serde::{Deserialize, Serialize};

/// Version of the config document this crate reads and writes.
pub const CONFIG_VERSION: u32 = 1;
/// virtio-fs tag of the control share.
pub const CONTROL_TAG: &str = "msb-control";
/// Where `msb-init` mounts the control share.
pub const CONTROL_MOUNT: &str = "/run/msb";
/// Config file name on the control share.
pub const CONFIG_FILE: &str = "config.json";
/// Status file name on the control share.
pub const STATUS_FILE: &str = "status.json";
/// Empty file msb-init creates on the control share once it has mounted the
/// share and read a valid config: the launcher's boot deadline ends there.
pub const BOOTED_FILE: &str = "booted";
/// Line msb-init prints on the console as soon as it starts (after the
/// `msb-init: ` prefix), so the launcher can tell a kernel that never reached
/// init from an init that could not mount the control share.
pub const STARTED_MESSAGE: &str = "started";
/// Where the root share is mounted when the command runs in a `--rootfs`.
pub const NEW_ROOT: &str = "/newroot";

/// Everything the guest needs to know to run one command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestConfig {
    /// Must equal [`CONFIG_VERSION`].
    pub version: u32,
    /// Program and arguments; the program is looked up in `PATH` when it
    /// holds no `/`.
    pub command: Vec<String>,
    /// Environment entries, `KEY=VALUE`.
    #[serde(default)]
    pub env: Vec<String>,
    /// Working directory of the command (inside the rootfs when one is set).
    #[serde(default)]
    pub workdir: Option<String>,
    /// User the command runs as.
    #[serde(default)]
    pub uid: u32,
    /// Group the command runs as.
    #[serde(default)]
    pub gid: u32,
    /// virtio-fs tag of a share that becomes the command's root.
    #[serde(default)]
    pub rootfs_tag: Option<String>,
    /// Mounts, applied in order.
    #[serde(default)]
    pub mounts: Vec<GuestMount>,
    /// Where the command's stdout and stderr go.
    pub stdio: StdioChannels,
    /// An image root: a read-only lower tree with a writable upper layer,
    /// merged with overlayfs into the command's root (instead of
    /// `rootfs_tag`).
    #[serde(default)]
    pub root_overlay: Option<RootOverlay>,
    /// Sandbox mode: instead of running `command` (which is then empty),
    /// serve the agent protocol ([`crate::protocol`]) on this channel until
    /// the host asks for a shutdown.
    #[serde(default)]
    pub agent: Option<AgentChannel>,
}

/// The root filesystem of an image: its tree shared read-only, writes going
/// to a layer of this VM's own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RootOverlay {
    /// virtio-fs tag of the read-only image tree.
    pub lower_tag: String,
    /// Where writes go.
    pub upper: UpperLayer,
}

/// The writable layer of an image root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum UpperLayer {
    /// Memory (gone with the VM): `msb run`.
    Tmpfs {
        /// Size limit in bytes (kernel default when absent).
        #[serde(default)]
        size_bytes: Option<u64>,
    },
    /// A disk of the sandbox's own (kept across stop/start), found by its
    /// serial; its filesystem is detected.
    Block {
        /// The serial the launcher gave the disk.
        serial: String,
    },
}

/// Where the agent talks to the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum AgentChannel {
    /// A named virtio-serial port (QEMU `virtserialport,name=…` on a unix
    /// socket chardev).
    Port {
        /// The port name.
        name: String,
    },
    /// A vsock port the agent listens on (cloud-hypervisor's hybrid vsock).
    Vsock {
        /// The port number.
        port: u32,
    },
}

/// Mount flags shared by every mount kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MountFlags {
    /// Read-only.
    #[serde(default)]
    pub ro: bool,
    /// No program execution.
    #[serde(default)]
    pub noexec: bool,
    /// setuid/setgid bits ignored.
    #[serde(default)]
    pub nosuid: bool,
    /// Device nodes not usable.
    #[serde(default)]
    pub nodev: bool,
}

/// One mount inside the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum GuestMount {
    /// A virtio-fs share served by `virtiofsd-msb`.
    Virtiofs {
        /// Device tag.
        tag: String,
        /// Absolute guest path.
        target: String,
        /// Mount flags.
        #[serde(default)]
        flags: MountFlags,
        /// A single-file share (`virtiofsd-msb --shared-file`): the name of
        /// its one entry. The share is mounted out of sight and that file
        /// bind-mounted onto `target`, which is then a file.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        file: Option<String>,
    },
    /// A tmpfs.
    Tmpfs {
        /// Absolute guest path.
        target: String,
        /// Size limit in bytes (kernel default when absent).
        #[serde(default)]
        size_bytes: Option<u64>,
        /// Mount flags.
        #[serde(default)]
        flags: MountFlags,
    },
    /// A virtio-blk disk, found by its serial.
    Block {
        /// The serial the launcher gave the disk.
        serial: String,
        /// Absolute guest path.
        target: String,
        /// Filesystem type; detected from the superblock when absent.
        #[serde(default)]
        fstype: Option<String>,
        /// Mount flags.
        #[serde(default)]
        flags: MountFlags,
    },
}

impl GuestMount {
    /// The guest path this mount lands on.
    pub fn target(&self) -> &str {
        match self {
            GuestMount::Virtiofs { target, .. }
            | GuestMount::Tmpfs { target, .. }
            | GuestMount::Block { target, .. } => target,
        }
    }
}

/// Output channels of the command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdioChannels {
    /// Where stdout goes.
    pub stdout: OutputChannel,
    /// Where stderr goes.
    pub stderr: OutputChannel,
}

/// A guest character device carrying output to the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum OutputChannel {
    /// A named virtio-serial port (QEMU `virtserialport,name=…`).
    Port {
        /// The port name.
        name: String,
    },
    /// A device path such as `/dev/hvc0` or `/dev/ttyS0`.
    Device {
        /// The device path.
        path: String,
    },
}

/// How the run ended, as the guest reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case", deny_unknown_fields)]
pub enum GuestStatus {
    /// The command exited with `code`.
    Exited {
        /// Exit code.
        code: i32,
    },
    /// The command was killed by `signal`.
    Signaled {
        /// Signal number.
        signal: i32,
    },
    /// The guest could not run the command.
    InitFailed {
        /// What failed.
        stage: InitStage,
        /// A message naming the bad input.
        message: String,
    },
}

/// What `msb-init` writes to the status file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusReport {
    /// How the run ended.
    pub status: GuestStatus,
    /// Guest uptimes of the run's milestones.
    #[serde(default)]
    pub timings: GuestTimings,
}

/// Guest uptime (milliseconds since the kernel started) at each milestone,
/// so the launcher can split boot time; 0 when not reached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestTimings {
    /// `msb-init` started.
    pub init_start_ms: u64,
    /// The command was started.
    pub command_start_ms: u64,
    /// The command ended.
    pub command_end_ms: u64,
}

/// The step of `msb-init` that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InitStage {
    /// Reading or checking the config.
    Config,
    /// Loading kernel modules or mounting system filesystems.
    Setup,
    /// A configured mount.
    Mount,
    /// The command was not found.
    CommandNotFound,
    /// The command could not be started (permissions, bad workdir, …).
    Exec,
}

impl GuestConfig {
    /// Checks what serde cannot: version, a non-empty command, absolute
    /// targets. The message names the bad field.
    pub fn validate(&self) -> Result<(), String> {
        if self.version != CONFIG_VERSION {
            return Err(format!(
                "config version {} (this init reads {CONFIG_VERSION})",
                self.version
            ));
        }
        let no_command = self.command.is_empty() || self.command[0].is_empty();
        match (&self.agent, no_command) {
            (None, true) => return Err("command is empty".into()),
            (Some(_), false) => return Err("a sandbox (agent) config has no command".into()),
            _ => {}
        }
        for m in &self.mounts {
            let t = m.target();
            if !t.starts_with('/') || t.split('/').any(|c| c == "..") {
                return Err(format!(
                    "mount target {t:?} must be an absolute path without '..'"
                ));
            }
            if let GuestMount::Virtiofs {
                file: Some(name), ..
            } = m
            {
                if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
                    return Err(format!("mount {t:?}: file {name:?} is not a file name"));
                }
            }
        }
        if self.rootfs_tag.is_some() && self.root_overlay.is_some() {
            return Err("rootfs_tag and root_overlay exclude each other".into());
        }
        if let Some(w) = &self.workdir {
            if !w.starts_with('/') {
                return Err(format!("workdir {w:?} must be absolute"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> GuestConfig {
        GuestConfig {
            version: CONFIG_VERSION,
            command: vec!["sh".into(), "-c".into(), "echo hi".into()],
            env: vec!["A=1".into()],
            workdir: Some("/".into()),
            uid: 0,
            gid: 0,
            rootfs_tag: None,
            mounts: vec![
                GuestMount::Virtiofs {
                    tag: "m0".into(),
                    target: "/data".into(),
                    flags: MountFlags {
                        ro: true,
                        ..Default::default()
                    },
                    file: None,
                },
                GuestMount::Virtiofs {
                    tag: "m1".into(),
                    target: "/etc/app.conf".into(),
                    flags: MountFlags::default(),
                    file: Some("app.conf".into()),
                },
                GuestMount::Tmpfs {
                    target: "/tmp".into(),
                    size_bytes: Some(1 << 20),
                    flags: MountFlags::default(),
                },
                GuestMount::Block {
                    serial: "msb-d0".into(),
                    target: "/disk".into(),
                    fstype: None,
                    flags: MountFlags::default(),
                },
            ],
            stdio: StdioChannels {
                stdout: OutputChannel::Port {
                    name: "msb.stdout".into(),
                },
                stderr: OutputChannel::Device {
                    path: "/dev/ttyS0".into(),
                },
            },
            root_overlay: None,
            agent: None,
        }
    }

    #[test]
    fn config_round_trips_through_json() {
        let c = sample();
        let text = serde_json::to_string(&c).unwrap();
        assert!(text.contains(r#""type":"virtiofs""#), "{text}");
        assert_eq!(serde_json::from_str::<GuestConfig>(&text).unwrap(), c);
        c.validate().unwrap();
    }

    #[test]
    fn bad_configs_are_named() {
        let mut c = sample();
        c.mounts.push(GuestMount::Tmpfs {
            target: "rel".into(),
            size_bytes: None,
            flags: MountFlags::default(),
        });
        assert!(c.validate().unwrap_err().contains("\"rel\""));
        let mut c = sample();
        c.mounts.push(GuestMount::Virtiofs {
            tag: "m9".into(),
            target: "/f".into(),
            flags: MountFlags::default(),
            file: Some("../x".into()),
        });
        assert!(c.validate().unwrap_err().contains("not a file name"));
        // A config without the field (an older launcher) reads as a
        // directory share.
        let old = r#"{"type":"virtiofs","tag":"t","target":"/d"}"#;
        let m: GuestMount = serde_json::from_str(old).unwrap();
        assert!(matches!(m, GuestMount::Virtiofs { file: None, .. }));
        let mut c = sample();
        c.command.clear();
        assert!(c.validate().unwrap_err().contains("command"));
        assert!(
            serde_json::from_str::<GuestConfig>(r#"{"version":1,"command":["x"],"bogus":1}"#)
                .is_err()
        );
    }

    #[test]
    fn status_json_is_tagged() {
        let s = GuestStatus::InitFailed {
            stage: InitStage::Mount,
            message: "m".into(),
        };
        let t = serde_json::to_string(&s).unwrap();
        assert_eq!(
            t,
            r#"{"outcome":"init_failed","stage":"mount","message":"m"}"#
        );
        assert_eq!(serde_json::from_str::<GuestStatus>(&t).unwrap(), s);
    }
}
