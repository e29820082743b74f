//! The mounts of [`super::SandboxBuilder::volume`], in the seeds'
//! vocabulary: `|v| v.bind("./src").readonly()`, `|v| v.named("cache")`,
//! `|v| v.tmpfs().size(100)`, `|v| v.disk("./data.qcow2")`.
//!
//! Each builds the CLI's `--mount` text, so the SDK goes through the very
//! parser and checks `msb run` and `msb create` use.

use std::path::{Path, PathBuf};

/// What the closure of `.volume(path, |v| …)` starts from.
#[derive(Debug, Default, Clone, Copy)]
pub struct MountBuilder;

impl MountBuilder {
    /// A host directory (or file), relative paths from the current
    /// directory.
    pub fn bind(self, host: impl AsRef<Path>) -> BindMount {
        BindMount {
            host: host.as_ref().to_path_buf(),
            flags: Flags::default(),
            stat_virt: None,
            host_perms: None,
        }
    }

    /// A named volume (it must exist unless a mode says otherwise).
    pub fn named(self, name: impl AsRef<str>) -> NamedMount {
        NamedMount {
            name: name.as_ref().to_string(),
            flags: Flags::default(),
            mode: None,
            kind: None,
            size_mib: None,
            quota_mib: None,
            stat_virt: None,
            host_perms: None,
        }
    }

    /// An in-memory filesystem that disappears with the sandbox.
    pub fn tmpfs(self) -> TmpfsMount {
        TmpfsMount {
            size_mib: None,
            flags: Flags::default(),
        }
    }

    /// A disk image attached as a virtio-blk device.
    pub fn disk(self, image: impl AsRef<Path>) -> DiskMount {
        DiskMount {
            image: image.as_ref().to_path_buf(),
            format: None,
            fstype: None,
            flags: Flags::default(),
        }
    }
}

/// Flags every mount kind takes.
#[derive(Debug, Default, Clone, Copy)]
struct Flags {
    ro: bool,
    noexec: bool,
    nosuid: bool,
    nodev: bool,
}

impl Flags {
    fn push(&self, out: &mut Vec<String>) {
        for (on, name) in [
            (self.ro, "ro"),
            (self.noexec, "noexec"),
            (self.nosuid, "nosuid"),
            (self.nodev, "nodev"),
        ] {
            if on {
                out.push(name.into());
            }
        }
    }
}

macro_rules! flag_methods {
    () => {
        /// Read-only in the guest.
        pub fn readonly(mut self) -> Self {
            self.flags.ro = true;
            self
        }

        /// No program execution from this mount.
        pub fn noexec(mut self) -> Self {
            self.flags.noexec = true;
            self
        }

        /// setuid/setgid bits ignored.
        pub fn nosuid(mut self) -> Self {
            self.flags.nosuid = true;
            self
        }

        /// Device nodes not usable.
        pub fn nodev(mut self) -> Self {
            self.flags.nodev = true;
            self
        }
    };
}

macro_rules! policy_methods {
    () => {
        /// Stat virtualization of this mount.
        pub fn stat_virtualization(mut self, s: StatVirtualization) -> Self {
            self.stat_virt = Some(s);
            self
        }

        /// Host permissions policy of this mount.
        pub fn host_permissions(mut self, h: HostPermissions) -> Self {
            self.host_perms = Some(h);
            self
        }
    };
}

/// How guest owners and modes are kept on a virtio-fs mount (the daemon's
/// `--stat-virtualization`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatVirtualization {
    /// Records required (the default).
    Strict,
    /// Records where the host filesystem supports them.
    Relaxed,
    /// Host metadata as is.
    Off,
}

/// How guest chmods reach the host (the daemon's `--host-permissions`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostPermissions {
    /// Kept in the record only (the default).
    Private,
    /// rwx bits copied to the host.
    Mirror,
}

fn stat_virt_word(s: StatVirtualization) -> &'static str {
    match s {
        StatVirtualization::Strict => "strict",
        StatVirtualization::Relaxed => "relaxed",
        StatVirtualization::Off => "off",
    }
}

fn host_perms_word(h: HostPermissions) -> &'static str {
    match h {
        HostPermissions::Private => "private",
        HostPermissions::Mirror => "mirror",
    }
}

/// A bind mount.
#[derive(Debug, Clone)]
pub struct BindMount {
    host: PathBuf,
    flags: Flags,
    stat_virt: Option<StatVirtualization>,
    host_perms: Option<HostPermissions>,
}

impl BindMount {
    flag_methods!();

    policy_methods!();
}

/// When a named volume is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NamedMode {
    /// It must exist (the default).
    Existing,
    /// Create it; an error if it exists.
    Create,
    /// Create it when missing, else reuse it if compatible.
    EnsureExists,
}

/// The kind of a volume a named mount may create.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumeKind {
    /// A host directory served by virtiofsd-msb.
    Dir,
    /// An ext4 image attached as virtio-blk.
    Disk,
}

/// A named volume mount.
#[derive(Debug, Clone)]
pub struct NamedMount {
    name: String,
    flags: Flags,
    mode: Option<NamedMode>,
    kind: Option<VolumeKind>,
    size_mib: Option<u32>,
    quota_mib: Option<u32>,
    stat_virt: Option<StatVirtualization>,
    host_perms: Option<HostPermissions>,
}

impl NamedMount {
    flag_methods!();

    /// When the volume is created (default: it must exist).
    pub fn mode(mut self, mode: NamedMode) -> Self {
        self.mode = Some(mode);
        self
    }

    /// Kind of a volume this mount creates.
    pub fn kind(mut self, kind: VolumeKind) -> Self {
        self.kind = Some(kind);
        self
    }

    /// Capacity in MiB of a disk volume this mount creates.
    pub fn size(mut self, mib: u32) -> Self {
        self.size_mib = Some(mib);
        self
    }

    /// Quota in MiB of a dir volume this mount creates.
    pub fn quota(mut self, mib: u32) -> Self {
        self.quota_mib = Some(mib);
        self
    }

    policy_methods!();
}

/// A tmpfs mount.
#[derive(Debug, Clone)]
pub struct TmpfsMount {
    size_mib: Option<u32>,
    flags: Flags,
}

impl TmpfsMount {
    flag_methods!();

    /// Size limit in MiB.
    pub fn size(mut self, mib: u32) -> Self {
        self.size_mib = Some(mib);
        self
    }
}

/// A disk image mount.
#[derive(Debug, Clone)]
pub struct DiskMount {
    image: PathBuf,
    format: Option<String>,
    fstype: Option<String>,
    flags: Flags,
}

impl DiskMount {
    flag_methods!();

    /// Image format (`raw`, `qcow2`, `vmdk`).
    pub fn format(mut self, format: impl Into<String>) -> Self {
        self.format = Some(format.into());
        self
    }

    /// Filesystem type (detected from the superblock when not given).
    pub fn fstype(mut self, fstype: impl Into<String>) -> Self {
        self.fstype = Some(fstype.into());
        self
    }
}

/// Any mount, as `--mount` text for a guest path.
#[derive(Debug, Clone)]
pub enum Mount {
    /// See [`BindMount`].
    Bind(BindMount),
    /// See [`NamedMount`].
    Named(NamedMount),
    /// See [`TmpfsMount`].
    Tmpfs(TmpfsMount),
    /// See [`DiskMount`].
    Disk(DiskMount),
}

impl From<BindMount> for Mount {
    fn from(m: BindMount) -> Mount {
        Mount::Bind(m)
    }
}

impl From<NamedMount> for Mount {
    fn from(m: NamedMount) -> Mount {
        Mount::Named(m)
    }
}

impl From<TmpfsMount> for Mount {
    fn from(m: TmpfsMount) -> Mount {
        Mount::Tmpfs(m)
    }
}

impl From<DiskMount> for Mount {
    fn from(m: DiskMount) -> Mount {
        Mount::Disk(m)
    }
}

impl Mount {
    /// The `--mount` text of this mount at `guest`.
    pub fn to_spec(&self, guest: &str) -> String {
        let mut o: Vec<String> = Vec::new();
        let path = |p: &Path| p.to_string_lossy().into_owned();
        let flags = match self {
            Mount::Bind(b) => {
                o.push("type=bind".into());
                o.push(format!("src={}", path(&b.host)));
                o.push(format!("dst={guest}"));
                policy(&mut o, b.stat_virt, b.host_perms);
                b.flags
            }
            Mount::Named(n) => {
                o.push("type=volume".into());
                o.push(format!("src={}", n.name));
                o.push(format!("dst={guest}"));
                if let Some(m) = n.mode {
                    let word = match m {
                        NamedMode::Existing => "existing",
                        NamedMode::Create => "create",
                        NamedMode::EnsureExists => "ensure-exists",
                    };
                    o.push(format!("mode={word}"));
                }
                if let Some(k) = n.kind {
                    let kind = if k == VolumeKind::Disk { "disk" } else { "dir" };
                    o.push(format!("kind={kind}"));
                }
                if let Some(s) = n.size_mib {
                    o.push(format!("size={s}"));
                }
                if let Some(q) = n.quota_mib {
                    o.push(format!("quota={q}"));
                }
                policy(&mut o, n.stat_virt, n.host_perms);
                n.flags
            }
            Mount::Tmpfs(t) => {
                o.push("type=tmpfs".into());
                o.push(format!("dst={guest}"));
                if let Some(s) = t.size_mib {
                    o.push(format!("size={s}M"));
                }
                t.flags
            }
            Mount::Disk(d) => {
                o.push("type=disk".into());
                o.push(format!("src={}", path(&d.image)));
                o.push(format!("dst={guest}"));
                if let Some(f) = &d.format {
                    o.push(format!("format={f}"));
                }
                if let Some(f) = &d.fstype {
                    o.push(format!("fstype={f}"));
                }
                d.flags
            }
        };
        flags.push(&mut o);
        o.join(",")
    }
}

fn policy(o: &mut Vec<String>, s: Option<StatVirtualization>, h: Option<HostPermissions>) {
    if let Some(s) = s {
        o.push(format!("stat-virt={}", stat_virt_word(s)));
    }
    if let Some(h) = h {
        o.push(format!("host-perms={}", host_perms_word(h)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{parse_mount, MountSpec};

    #[test]
    fn every_builder_yields_a_spec_the_cli_parser_accepts() {
        let dir = tempfile::tempdir().unwrap();
        let v = MountBuilder;
        let cases: Vec<Mount> = vec![
            v.bind(dir.path()).readonly().into(),
            v.bind(dir.path())
                .stat_virtualization(StatVirtualization::Relaxed)
                .host_permissions(HostPermissions::Mirror)
                .into(),
            v.named("cache").readonly().into(),
            v.named("pg")
                .mode(NamedMode::EnsureExists)
                .kind(VolumeKind::Disk)
                .size(64)
                .into(),
            v.named("q")
                .mode(NamedMode::Create)
                .quota(8)
                .noexec()
                .into(),
            v.tmpfs().size(100).nosuid().nodev().into(),
        ];
        for m in cases {
            let text = m.to_spec("/data");
            let parsed = parse_mount(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(parsed.guest(), "/data", "{text}");
            match (&m, &parsed) {
                (Mount::Bind(_), MountSpec::Bind { .. })
                | (Mount::Named(_), MountSpec::Volume(_))
                | (Mount::Tmpfs(_), MountSpec::Tmpfs { .. }) => {}
                _ => panic!("{text} parsed as {parsed:?}"),
            }
        }
        let t = Mount::from(v.tmpfs().size(100)).to_spec("/tmp/scratch");
        assert_eq!(t, "type=tmpfs,dst=/tmp/scratch,size=100M");
        assert!(matches!(
            parse_mount(&t).unwrap(),
            MountSpec::Tmpfs { size_bytes: Some(b), .. } if b == 100 << 20
        ));
    }
}
