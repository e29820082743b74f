//! Mounts in a sandbox create request, as JSON objects discriminated by
//! `type` (`bind`, `named`, `tmpfs`, `disk`), turned into the SDK's
//! [`Mount`] and from there into the CLI's `--mount` text, so the server
//! goes through the very parser and checks `msb create` uses.
//!
//! The API has no working directory: host paths must be absolute. Values
//! are refused when they hold a `,` (the mount grammar's separator), so no
//! field can smuggle options into another.

use serde::Deserialize;

use super::error::ApiError;
use crate::sdk::{HostPermissions, Mount, MountBuilder, NamedMode, StatVirtualization, VolumeKind};

/// `stat_virtualization` of a bind or named mount.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StatVirt {
    /// Records required (the default).
    Strict,
    /// Records where supported.
    Relaxed,
    /// Host metadata.
    Off,
}

/// `host_permissions` of a bind or named mount.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HostPerms {
    /// Guest chmod kept in the record (the default).
    Private,
    /// rwx bits copied to the host.
    Mirror,
}

/// `mode` of a named mount.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// The volume must exist (the default).
    Existing,
    /// Create it; an error if it exists.
    Create,
    /// Create it when missing, else reuse it if it matches.
    EnsureExists,
}

/// `kind` of a volume a named mount creates.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A directory.
    Dir,
    /// An ext4 image.
    Disk,
}

/// `format` of a disk image.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Raw.
    Raw,
    /// qcow2.
    Qcow2,
    /// vmdk.
    Vmdk,
}

/// One mount of `POST /v1/sandboxes`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum ApiMount {
    /// A host directory.
    Bind {
        /// Guest path.
        path: String,
        /// Absolute host directory.
        source: String,
        /// Read-only.
        #[serde(default)]
        readonly: bool,
        /// No execution.
        #[serde(default)]
        noexec: bool,
        /// setuid ignored.
        #[serde(default)]
        nosuid: bool,
        /// Devices ignored.
        #[serde(default)]
        nodev: bool,
        /// Stat virtualization.
        #[serde(default)]
        stat_virtualization: Option<StatVirt>,
        /// Host permissions.
        #[serde(default)]
        host_permissions: Option<HostPerms>,
    },
    /// A named volume.
    #[serde(alias = "volume")]
    Named {
        /// Guest path.
        path: String,
        /// Volume name.
        name: String,
        /// Existence behaviour.
        #[serde(default)]
        mode: Option<Mode>,
        /// Kind of a volume this mount creates.
        #[serde(default)]
        kind: Option<Kind>,
        /// Capacity in MiB of a disk volume this mount creates.
        #[serde(default)]
        size_mib: Option<u32>,
        /// Quota in MiB of a dir volume this mount creates.
        #[serde(default)]
        quota_mib: Option<u32>,
        /// Read-only.
        #[serde(default)]
        readonly: bool,
        /// No execution.
        #[serde(default)]
        noexec: bool,
        /// setuid ignored.
        #[serde(default)]
        nosuid: bool,
        /// Devices ignored.
        #[serde(default)]
        nodev: bool,
        /// Stat virtualization.
        #[serde(default)]
        stat_virtualization: Option<StatVirt>,
        /// Host permissions.
        #[serde(default)]
        host_permissions: Option<HostPerms>,
    },
    /// A tmpfs.
    Tmpfs {
        /// Guest path.
        path: String,
        /// Size limit in MiB.
        #[serde(default)]
        size_mib: Option<u32>,
        /// Read-only.
        #[serde(default)]
        readonly: bool,
        /// No execution.
        #[serde(default)]
        noexec: bool,
        /// setuid ignored.
        #[serde(default)]
        nosuid: bool,
        /// Devices ignored.
        #[serde(default)]
        nodev: bool,
    },
    /// A disk image.
    Disk {
        /// Guest path.
        path: String,
        /// Absolute host path of the image.
        source: String,
        /// Image format (raw when absent).
        #[serde(default)]
        format: Option<Format>,
        /// Filesystem inside (detected when absent).
        #[serde(default)]
        fstype: Option<String>,
        /// Read-only.
        #[serde(default)]
        readonly: bool,
        /// No execution.
        #[serde(default)]
        noexec: bool,
        /// setuid ignored.
        #[serde(default)]
        nosuid: bool,
        /// Devices ignored.
        #[serde(default)]
        nodev: bool,
    },
}

/// The four flags every mount takes.
#[derive(Debug, Clone, Copy)]
struct Flags {
    readonly: bool,
    noexec: bool,
    nosuid: bool,
    nodev: bool,
}

/// Applies flags to any of the SDK's mount builders (which share these
/// methods).
macro_rules! with_flags {
    ($m:expr, $f:expr) => {{
        let mut m = $m;
        let f: Flags = $f;
        if f.readonly {
            m = m.readonly();
        }
        if f.noexec {
            m = m.noexec();
        }
        if f.nosuid {
            m = m.nosuid();
        }
        if f.nodev {
            m = m.nodev();
        }
        m
    }};
}

/// Applies the virtio-fs policies to a bind or named mount builder.
macro_rules! with_policy {
    ($m:expr, $sv:expr, $hp:expr) => {{
        let mut m = $m;
        if let Some(s) = $sv {
            m = m.stat_virtualization(match s {
                StatVirt::Strict => StatVirtualization::Strict,
                StatVirt::Relaxed => StatVirtualization::Relaxed,
                StatVirt::Off => StatVirtualization::Off,
            });
        }
        if let Some(h) = $hp {
            m = m.host_permissions(match h {
                HostPerms::Private => HostPermissions::Private,
                HostPerms::Mirror => HostPermissions::Mirror,
            });
        }
        m
    }};
}

impl ApiMount {
    /// The guest path.
    pub fn path(&self) -> &str {
        match self {
            ApiMount::Bind { path, .. }
            | ApiMount::Named { path, .. }
            | ApiMount::Tmpfs { path, .. }
            | ApiMount::Disk { path, .. } => path,
        }
    }

    /// Checks what the mount grammar cannot carry; `index` names the mount
    /// in messages.
    fn check(&self, index: usize) -> Result<(), ApiError> {
        let at = |field: &str, value: &str, why: &str| {
            ApiError::invalid_mount(format!("mounts[{index}].{field} {value:?} {why}"))
        };
        let plain = |field: &str, value: &str| -> Result<(), ApiError> {
            if value.contains(',') || value.contains('\0') {
                return Err(at(
                    field,
                    value,
                    "holds a ',' or NUL, which a mount cannot carry",
                ));
            }
            Ok(())
        };
        plain("path", self.path())?;
        match self {
            ApiMount::Bind { source, .. } | ApiMount::Disk { source, .. } => {
                plain("source", source)?;
                if !source.starts_with('/') {
                    return Err(at(
                        "source",
                        source,
                        "must be an absolute host path (the API has no working directory)",
                    ));
                }
            }
            ApiMount::Named { name, .. } => plain("name", name)?,
            ApiMount::Tmpfs { .. } => {}
        }
        if let ApiMount::Disk {
            fstype: Some(f), ..
        } = self
        {
            plain("fstype", f)?;
        }
        Ok(())
    }

    /// The SDK mount this describes.
    fn to_mount(&self) -> Mount {
        let v = MountBuilder;
        match self.clone() {
            ApiMount::Bind {
                source,
                readonly,
                noexec,
                nosuid,
                nodev,
                stat_virtualization,
                host_permissions,
                ..
            } => {
                let flags = Flags {
                    readonly,
                    noexec,
                    nosuid,
                    nodev,
                };
                with_policy!(
                    with_flags!(v.bind(source), flags),
                    stat_virtualization,
                    host_permissions
                )
                .into()
            }
            ApiMount::Named {
                name,
                mode,
                kind,
                size_mib,
                quota_mib,
                readonly,
                noexec,
                nosuid,
                nodev,
                stat_virtualization,
                host_permissions,
                ..
            } => {
                let flags = Flags {
                    readonly,
                    noexec,
                    nosuid,
                    nodev,
                };
                let mut m = with_flags!(v.named(name), flags);
                if let Some(mode) = mode {
                    m = m.mode(match mode {
                        Mode::Existing => NamedMode::Existing,
                        Mode::Create => NamedMode::Create,
                        Mode::EnsureExists => NamedMode::EnsureExists,
                    });
                }
                if let Some(k) = kind {
                    m = m.kind(match k {
                        Kind::Dir => VolumeKind::Dir,
                        Kind::Disk => VolumeKind::Disk,
                    });
                }
                if let Some(s) = size_mib {
                    m = m.size(s);
                }
                if let Some(q) = quota_mib {
                    m = m.quota(q);
                }
                with_policy!(m, stat_virtualization, host_permissions).into()
            }
            ApiMount::Tmpfs {
                size_mib,
                readonly,
                noexec,
                nosuid,
                nodev,
                ..
            } => {
                let flags = Flags {
                    readonly,
                    noexec,
                    nosuid,
                    nodev,
                };
                let mut m = with_flags!(v.tmpfs(), flags);
                if let Some(s) = size_mib {
                    m = m.size(s);
                }
                m.into()
            }
            ApiMount::Disk {
                source,
                format,
                fstype,
                readonly,
                noexec,
                nosuid,
                nodev,
                ..
            } => {
                let flags = Flags {
                    readonly,
                    noexec,
                    nosuid,
                    nodev,
                };
                let mut m = with_flags!(v.disk(source), flags);
                if let Some(f) = format {
                    m = m.format(match f {
                        Format::Raw => "raw",
                        Format::Qcow2 => "qcow2",
                        Format::Vmdk => "vmdk",
                    });
                }
                if let Some(f) = fstype {
                    m = m.fstype(f);
                }
                m.into()
            }
        }
    }
}

/// The mounts as (guest path, SDK mount), checked, then parsed as the CLI
/// would parse them so a bad one is reported before anything starts.
pub fn to_mounts(list: &[ApiMount]) -> Result<Vec<(String, Mount)>, ApiError> {
    let mut out = Vec::with_capacity(list.len());
    for (i, m) in list.iter().enumerate() {
        m.check(i)?;
        let mount = m.to_mount();
        crate::spec::parse_mount(&mount.to_spec(m.path()))
            .map_err(|e| ApiError::invalid_mount(format!("mounts[{i}]: {e}")))?;
        out.push((m.path().to_string(), mount));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::body::parse_json;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Req {
        mounts: Vec<ApiMount>,
    }

    #[test]
    fn each_kind_becomes_a_cli_mount() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().display().to_string();
        let body = format!(
            r#"{{"mounts": [
                {{"type": "bind", "path": "/app", "source": "{src}", "readonly": true,
                  "stat_virtualization": "relaxed", "host_permissions": "mirror"}},
                {{"type": "named", "path": "/data", "name": "cache", "mode": "ensure-exists",
                  "kind": "dir", "quota_mib": 8}},
                {{"type": "tmpfs", "path": "/scratch", "size_mib": 128, "noexec": true}}
            ]}}"#
        );
        let req: Req = parse_json(body.as_bytes()).unwrap();
        let mounts = to_mounts(&req.mounts).unwrap();
        let texts: Vec<String> = mounts.iter().map(|(g, m)| m.to_spec(g)).collect();
        assert_eq!(
            texts[0],
            format!("type=bind,src={src},dst=/app,stat-virt=relaxed,host-perms=mirror,ro")
        );
        assert_eq!(
            texts[1],
            "type=volume,src=cache,dst=/data,mode=ensure-exists,kind=dir,quota=8"
        );
        assert_eq!(texts[2], "type=tmpfs,dst=/scratch,size=128M,noexec");
    }

    #[test]
    fn bad_mounts_are_invalid_mount_naming_the_field() {
        let cases = [
            (r#"{"type": "nfs", "path": "/x"}"#, "unknown variant `nfs`"),
            (
                r#"{"type": "tmpfs", "path": "/x", "stat_virtualization": "off"}"#,
                "unknown field",
            ),
            (r#"{"type": "named", "path": "/x"}"#, "missing field `name`"),
            (
                r#"{"type": "bind", "path": "/x", "source": "rel/dir"}"#,
                "absolute host path",
            ),
            (
                r#"{"type": "bind", "path": "/x,ro", "source": "/tmp"}"#,
                "','",
            ),
            (
                r#"{"type": "named", "path": "/x", "name": "a,dst=/etc"}"#,
                "','",
            ),
            (
                r#"{"type": "named", "path": "relative", "name": "a"}"#,
                "must be absolute",
            ),
            (
                r#"{"type": "tmpfs", "path": "/x", "size_mib": -1}"#,
                "mounts[0]",
            ),
        ];
        for (mount, want) in cases {
            let body = format!(r#"{{"mounts": [{mount}]}}"#);
            let e = parse_json::<Req>(body.as_bytes())
                .and_then(|r| to_mounts(&r.mounts).map(|_| ()))
                .unwrap_err();
            assert_eq!(e.code, "invalid_mount", "{mount}: {e}");
            assert!(e.message.contains(want), "{mount}: {}", e.message);
        }
    }
}
