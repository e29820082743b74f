//! Mount specs of `msb run`: parsing the short forms (`-v`, `--tmpfs`,
//! `--disk`) and the long form (`--mount`), and checking them before any
//! process starts. Every error names the mount as the user wrote it.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use guest_init::config::MountFlags;
use volumes::disk_image::{self, BackingPolicy, DiskRequest};

use crate::vmm::DiskFormat;

/// `stat-virt=`: how `virtiofsd-msb` presents ownership and modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatVirt {
    /// Guest owner/mode in a host xattr record; refuse shares without xattrs.
    Strict,
    /// Records where the share supports them.
    Relaxed,
    /// Literal host metadata.
    Off,
}

/// `host-perms=`: what a guest chmod does to the host inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostPerms {
    /// Host inodes keep owner-only access.
    Private,
    /// The rwx bits are copied to the host (never setuid/setgid/sticky).
    Mirror,
}

/// The byte budget of a share (named dir volumes with a quota).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareQuota {
    /// Budget in MiB.
    pub mib: u32,
    /// Accounting file shared by every daemon of the volume (outside it).
    pub file: PathBuf,
}

/// Daemon policies of a share (the daemon's defaults when unset).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SharePolicy {
    /// Stat virtualization mode.
    pub stat_virt: Option<StatVirt>,
    /// Host permission mode.
    pub host_perms: Option<HostPerms>,
    /// Quota (set by the volume store, never by a user's option).
    pub quota: Option<ShareQuota>,
}

impl SharePolicy {
    /// The `virtiofsd-msb` flags carrying this policy.
    pub fn daemon_args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = Vec::new();
        if let Some(s) = self.stat_virt {
            args.push("--stat-virtualization".into());
            args.push(
                match s {
                    StatVirt::Strict => "strict",
                    StatVirt::Relaxed => "relaxed",
                    StatVirt::Off => "off",
                }
                .into(),
            );
        }
        if let Some(h) = self.host_perms {
            args.push("--host-permissions".into());
            args.push(
                match h {
                    HostPerms::Private => "private",
                    HostPerms::Mirror => "mirror",
                }
                .into(),
            );
        }
        if let Some(q) = &self.quota {
            args.push("--quota-mib".into());
            args.push(q.mib.to_string().into());
            args.push("--quota-file".into());
            args.push(q.file.clone().into_os_string());
        }
        args
    }
}

/// A named volume mount (`-v NAME:/guest`, `--mount type=volume,…`),
/// resolved through the volume store before anything starts (see
/// [`crate::volume::mounts`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeMount {
    /// The spec as the user wrote it, for messages.
    pub spec: String,
    /// Volume name (checked by [`volumes::validate_name`]).
    pub name: String,
    /// Guest path.
    pub guest: String,
    /// Mount flags.
    pub flags: MountFlags,
    /// Daemon policies (dir volumes only).
    pub policy: SharePolicy,
    /// `mode=`, `kind=`, `size=`, `quota=`.
    pub provision: volumes::Provision,
}

/// One mount the user asked for, parsed and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountSpec {
    /// A host directory served by `virtiofsd-msb`.
    Bind {
        /// Host directory (absolute).
        host: PathBuf,
        /// Guest path.
        guest: String,
        /// Mount flags.
        flags: MountFlags,
        /// Daemon policies.
        policy: SharePolicy,
    },
    /// One host file served alone by `virtiofsd-msb --shared-file` and
    /// bind-mounted by the guest onto a file at `guest`: nothing else of
    /// its host directory is reachable.
    BindFile {
        /// Host file (absolute, a regular file).
        host: PathBuf,
        /// Guest path of the file.
        guest: String,
        /// Mount flags.
        flags: MountFlags,
        /// Daemon policies.
        policy: SharePolicy,
    },
    /// A tmpfs in the guest.
    Tmpfs {
        /// Guest path.
        guest: String,
        /// Size limit in bytes.
        size_bytes: Option<u64>,
        /// Mount flags.
        flags: MountFlags,
    },
    /// A disk image attached as virtio-blk.
    Disk {
        /// Host image (absolute).
        host: PathBuf,
        /// Guest path.
        guest: String,
        /// Image format, as found on the host ([`disk_image::check_image`]).
        format: DiskFormat,
        /// Filesystem type; detected in the guest when absent.
        fstype: Option<String>,
        /// Mount flags.
        flags: MountFlags,
    },
    /// A named volume, before the store resolved it into a `Bind` (dir
    /// volume) or a `Disk` (disk volume).
    Volume(VolumeMount),
}

impl MountSpec {
    /// The guest path of the mount.
    pub fn guest(&self) -> &str {
        match self {
            MountSpec::Bind { guest, .. }
            | MountSpec::BindFile { guest, .. }
            | MountSpec::Tmpfs { guest, .. }
            | MountSpec::Disk { guest, .. } => guest,
            MountSpec::Volume(v) => &v.guest,
        }
    }
}

/// A mount spec the user got wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    /// The spec as written.
    pub spec: String,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "mount {:?}: {}", self.spec, self.reason)
    }
}

impl std::error::Error for SpecError {}

fn err(spec: &str, reason: impl Into<String>) -> SpecError {
    SpecError {
        spec: spec.to_string(),
        reason: reason.into(),
    }
}

/// Parses a size such as `64M`, `1g`, `512k` or `1048576` (bytes).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let (digits, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("bad size {text:?} (use e.g. 64M, 1G)"))?;
    let mult: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return Err(format!("bad size unit in {text:?} (use k, M, G or T)")),
    };
    let bytes = n
        .checked_mul(mult)
        .ok_or_else(|| format!("size {text:?} is too large"))?;
    if bytes == 0 {
        return Err(format!("size {text:?} must be positive"));
    }
    Ok(bytes)
}

/// Parses a size in MiB: a plain number is MiB (`64`), a size with a unit
/// (`1G`, `512M`) must be a whole number of MiB.
pub fn parse_mib(text: &str) -> Result<u32, String> {
    let t = text.trim();
    let mib = if !t.is_empty() && t.chars().all(|c| c.is_ascii_digit()) {
        t.parse::<u64>()
            .map_err(|_| format!("size {text:?} is too large"))?
    } else {
        let bytes = parse_size(t)?;
        if bytes % (1 << 20) != 0 {
            return Err(format!("size {text:?} is not a whole number of MiB"));
        }
        bytes >> 20
    };
    u32::try_from(mib).map_err(|_| format!("size {text:?} is too large"))
}

/// Options gathered from a comma list; each parser takes what it allows.
#[derive(Default)]
struct Options {
    flags: MountFlags,
    size: Option<u64>,
    format: Option<DiskFormat>,
    backing: BackingPolicy,
    fstype: Option<String>,
    policy: SharePolicy,
    provision: volumes::Provision,
}

/// Which option keys a mount kind accepts.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bind,
    Tmpfs,
    Disk,
    Volume,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Bind => "bind",
            Kind::Tmpfs => "tmpfs",
            Kind::Disk => "disk",
            Kind::Volume => "volume",
        }
    }
}

/// Applies one `key[=value]` option of a `kind` mount.
fn apply_option(spec: &str, kind: Kind, opts: &mut Options, item: &str) -> Result<(), SpecError> {
    let (key, value) = match item.split_once('=') {
        Some((k, v)) => (k, Some(v)),
        None => (item, None),
    };
    let flag = |on: &mut bool| match value {
        None | Some("true") | Some("1") => {
            *on = true;
            Ok(())
        }
        Some("false") | Some("0") => Ok(()),
        Some(v) => Err(err(spec, format!("option {key:?} takes no value {v:?}"))),
    };
    match (key, kind) {
        ("ro" | "readonly", _) => flag(&mut opts.flags.ro),
        ("rw", _) if value.is_none() => Ok(()),
        ("noexec", _) => flag(&mut opts.flags.noexec),
        ("nosuid", _) => flag(&mut opts.flags.nosuid),
        ("nodev", _) => flag(&mut opts.flags.nodev),
        ("size", Kind::Tmpfs) => {
            let v = value.ok_or_else(|| err(spec, "size needs a value, e.g. size=64M"))?;
            opts.size = Some(parse_size(v).map_err(|m| err(spec, m))?);
            Ok(())
        }
        ("format", Kind::Disk) => {
            let v = value.unwrap_or_default();
            opts.format = Some(v.parse().map_err(|m: String| err(spec, m))?);
            Ok(())
        }
        ("backing", Kind::Disk) => {
            let v = value.unwrap_or_default();
            opts.backing = v.parse().map_err(|m: String| err(spec, m))?;
            Ok(())
        }
        ("fstype", Kind::Disk) => {
            let v = value.filter(|v| !v.is_empty() && v.chars().all(|c| c.is_ascii_alphanumeric()));
            opts.fstype = Some(
                v.ok_or_else(|| err(spec, "fstype needs a name, e.g. fstype=ext4"))?
                    .to_string(),
            );
            Ok(())
        }
        ("stat-virt" | "host-perms", Kind::Tmpfs | Kind::Disk) => Err(err(
            spec,
            format!(
                "{key} applies only to bind mounts and volumes served by virtiofsd-msb, not to {} mounts",
                kind.name()
            ),
        )),
        ("mode", Kind::Volume) => {
            let v = value.unwrap_or_default();
            opts.provision.mode = v.parse().map_err(|e: volumes::Error| err(spec, e.to_string()))?;
            Ok(())
        }
        ("kind", Kind::Volume) => {
            let v = value.unwrap_or_default();
            opts.provision.kind = Some(v.parse().map_err(|e: volumes::Error| err(spec, e.to_string()))?);
            Ok(())
        }
        ("size" | "quota", Kind::Volume) => {
            let v = value.ok_or_else(|| err(spec, format!("{key} needs a value in MiB, e.g. {key}=64")))?;
            let mib = parse_mib(v).map_err(|m| err(spec, format!("{key}: {m}")))?;
            if key == "size" {
                opts.provision.size_mib = Some(mib);
            } else {
                opts.provision.quota_mib = Some(mib);
            }
            Ok(())
        }
        ("stat-virt", Kind::Bind | Kind::Volume) => {
            opts.policy.stat_virt = Some(match value {
                Some("strict") => StatVirt::Strict,
                Some("relaxed") => StatVirt::Relaxed,
                Some("off") => StatVirt::Off,
                other => {
                    return Err(err(
                        spec,
                        format!("stat-virt {other:?}: use strict, relaxed or off"),
                    ))
                }
            });
            Ok(())
        }
        ("host-perms", Kind::Bind | Kind::Volume) => {
            opts.policy.host_perms = Some(match value {
                Some("private") => HostPerms::Private,
                Some("mirror") => HostPerms::Mirror,
                other => {
                    return Err(err(
                        spec,
                        format!("host-perms {other:?}: use private or mirror"),
                    ))
                }
            });
            Ok(())
        }
        _ => Err(err(
            spec,
            format!("unknown option {item:?} for a {} mount", kind.name()),
        )),
    }
}

fn parse_options(spec: &str, kind: Kind, list: &str) -> Result<Options, SpecError> {
    let mut opts = Options::default();
    for item in list.split(',').filter(|s| !s.is_empty()) {
        apply_option(spec, kind, &mut opts, item)?;
    }
    Ok(opts)
}

/// Checks a guest target: absolute, no `..`, not `/` itself.
fn check_guest(spec: &str, guest: &str) -> Result<String, SpecError> {
    if !guest.starts_with('/') {
        return Err(err(spec, format!("guest path {guest:?} must be absolute")));
    }
    if guest.split('/').any(|c| c == "..") {
        return Err(err(
            spec,
            format!("guest path {guest:?} must not contain '..'"),
        ));
    }
    let trimmed = guest.trim_end_matches('/');
    if trimmed.is_empty() {
        return Err(err(spec, "cannot mount over the guest's /"));
    }
    Ok(trimmed.to_string())
}

/// A host path given on the command line: a `/`, `./`, `../` or `~`-free
/// path. Anything else is a volume name.
pub fn is_host_path(src: &str) -> bool {
    src.starts_with('/') || src.starts_with('.')
}

/// The bind mount of host path `src` (a directory, or a single regular
/// file) on `guest`.
fn bind_spec(spec: &str, src: &str, guest: String, opts: Options) -> Result<MountSpec, SpecError> {
    let host_err = |e: std::io::Error| err(spec, format!("host path {src:?}: {e}"));
    let meta = std::fs::metadata(src).map_err(host_err)?;
    let host = std::fs::canonicalize(src).map_err(host_err)?;
    let (flags, policy) = (opts.flags, opts.policy);
    if meta.is_dir() {
        return Ok(MountSpec::Bind {
            host,
            guest,
            flags,
            policy,
        });
    }
    if !meta.is_file() {
        return Err(err(
            spec,
            format!("host path {src:?} is neither a directory nor a regular file"),
        ));
    }
    if host.file_name().and_then(|n| n.to_str()).is_none() {
        return Err(err(
            spec,
            format!("host file {src:?}: its name must be valid UTF-8 to be bind-mounted alone"),
        ));
    }
    Ok(MountSpec::BindFile {
        host,
        guest,
        flags,
        policy,
    })
}

/// A disk image given on the command line: an existing regular file, made
/// absolute.
fn check_image_path(spec: &str, host: &str) -> Result<PathBuf, SpecError> {
    let path = Path::new(host);
    let meta =
        std::fs::metadata(path).map_err(|e| err(spec, format!("host path {host:?}: {e}")))?;
    if !meta.is_file() {
        return Err(err(
            spec,
            format!("disk image {host:?} is not a regular file"),
        ));
    }
    std::fs::canonicalize(path).map_err(|e| err(spec, format!("host path {host:?}: {e}")))
}

fn split_src_dst<'a>(spec: &'a str, what: &str) -> Result<(&'a str, &'a str, &'a str), SpecError> {
    let mut parts = spec.splitn(3, ':');
    let src = parts.next().unwrap_or("");
    let dst = parts
        .next()
        .ok_or_else(|| err(spec, format!("expected {what}")))?;
    Ok((src, dst, parts.next().unwrap_or("")))
}

/// The named volume mount of `name` on `guest`.
fn volume_spec(
    spec: &str,
    name: &str,
    guest: String,
    opts: Options,
) -> Result<MountSpec, SpecError> {
    volumes::validate_name(name).map_err(|e| {
        err(
            spec,
            format!("{name:?} is not a volume name ({e}); a host path starts with / or ."),
        )
    })?;
    Ok(MountSpec::Volume(VolumeMount {
        spec: spec.to_string(),
        name: name.to_string(),
        guest,
        flags: opts.flags,
        policy: opts.policy,
        provision: opts.provision,
    }))
}

/// Parses `-v HOST:GUEST[:OPTS]` (a bind mount of a directory or of one
/// file) or `-v NAME:GUEST[:OPTS]` (a named volume: a source not starting
/// with `/` or `.`).
pub fn parse_volume(spec: &str) -> Result<MountSpec, SpecError> {
    let (src, dst, opts) = split_src_dst(spec, "HOST:GUEST[:ro,noexec,nosuid,nodev]")?;
    if !is_host_path(src) {
        let opts = parse_options(spec, Kind::Volume, opts)?;
        return volume_spec(spec, src, check_guest(spec, dst)?, opts);
    }
    let opts = parse_options(spec, Kind::Bind, opts)?;
    bind_spec(spec, src, check_guest(spec, dst)?, opts)
}

/// Parses `--tmpfs GUEST[:size=64M,ro,noexec,nosuid,nodev]`.
pub fn parse_tmpfs(spec: &str) -> Result<MountSpec, SpecError> {
    let (dst, opts) = spec.split_once(':').unwrap_or((spec, ""));
    let opts = parse_options(spec, Kind::Tmpfs, opts)?;
    Ok(MountSpec::Tmpfs {
        guest: check_guest(spec, dst)?,
        size_bytes: opts.size,
        flags: opts.flags,
    })
}

/// Parses `--disk HOST:GUEST[:format=…,backing=deny|allow,fstype=…,ro,
/// noexec,nosuid,nodev]`.
pub fn parse_disk(spec: &str) -> Result<MountSpec, SpecError> {
    let (src, dst, opts) = split_src_dst(
        spec,
        "HOST:GUEST[:format=raw|qcow2|vmdk|…,backing=allow,fstype=…,ro]",
    )?;
    let opts = parse_options(spec, Kind::Disk, opts)?;
    disk_spec(spec, src, check_guest(spec, dst)?, opts)
}

/// The disk mount of image `src` on `guest`: the image's format decided on
/// the host now, before any VMM opens it ([`disk_image::check_image`]:
/// detected from its header when `format=` is not given, a raw image pinned
/// as raw, other files it names refused unless `backing=allow`).
fn disk_spec(spec: &str, src: &str, guest: String, opts: Options) -> Result<MountSpec, SpecError> {
    let host = check_image_path(spec, src)?;
    let request = DiskRequest {
        format: opts.format,
        backing: opts.backing,
        writable: !opts.flags.ro,
    };
    let format = disk_image::check_image(&host, &request).map_err(|e| err(spec, e.to_string()))?;
    Ok(MountSpec::Disk {
        host,
        guest,
        format,
        fstype: opts.fstype,
        flags: opts.flags,
    })
}

/// Parses the long form `--mount type=bind|volume|tmpfs|disk,src=…,dst=…,…`.
pub fn parse_mount(spec: &str) -> Result<MountSpec, SpecError> {
    let mut kind = None;
    let mut src = None;
    let mut dst = None;
    let mut rest = Vec::new();
    for item in spec.split(',').filter(|s| !s.is_empty()) {
        match item.split_once('=') {
            Some(("type", v)) => kind = Some(v),
            Some(("src" | "source", v)) => src = Some(v),
            Some(("dst" | "destination" | "target", v)) => dst = Some(v),
            _ => rest.push(item),
        }
    }
    let dst = dst.ok_or_else(|| err(spec, "missing dst=GUEST_PATH"))?;
    let need_src = || src.ok_or_else(|| err(spec, "missing src=HOST_PATH"));
    let kind = match kind {
        Some("bind") => Kind::Bind,
        Some("tmpfs") => Kind::Tmpfs,
        Some("disk") => Kind::Disk,
        Some("volume") => Kind::Volume,
        Some(other) => {
            return Err(err(
                spec,
                format!("unknown type {other:?} (bind, volume, tmpfs or disk)"),
            ))
        }
        None => return Err(err(spec, "missing type=bind|volume|tmpfs|disk")),
    };
    let opts = parse_options(spec, kind, &rest.join(","))?;
    let guest = check_guest(spec, dst)?;
    Ok(match kind {
        Kind::Volume => {
            let name = src.ok_or_else(|| err(spec, "missing src=VOLUME_NAME"))?;
            if is_host_path(name) {
                return Err(err(
                    spec,
                    format!(
                        "type=volume takes a volume name in src=, not the path {name:?} \
                         (use type=bind)"
                    ),
                ));
            }
            volume_spec(spec, name, guest, opts)?
        }
        Kind::Bind => bind_spec(spec, need_src()?, guest, opts)?,
        Kind::Tmpfs => {
            if src.is_some() {
                return Err(err(spec, "a tmpfs mount takes no src="));
            }
            MountSpec::Tmpfs {
                guest,
                size_bytes: opts.size,
                flags: opts.flags,
            }
        }
        Kind::Disk => disk_spec(spec, need_src()?, guest, opts)?,
    })
}

/// Refuses two mounts on one guest path; `specs` pairs each mount with the
/// text the user wrote.
pub fn check_unique_targets(specs: &[(String, MountSpec)]) -> Result<(), SpecError> {
    let mut seen = HashSet::new();
    for (text, m) in specs {
        if !seen.insert(m.guest().to_string()) {
            return Err(err(
                text,
                format!("guest path {:?} is already a mount target", m.guest()),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
