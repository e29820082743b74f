//! What a volume is: its kind, the options it is created with, and the
//! metadata handle [`crate::Store::get`] and [`crate::Store::list`] return.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Serialize, Serializer};

use crate::error::{Error, Result};

/// File name of a disk volume's image inside its directory.
pub const DISK_IMAGE: &str = "disk.raw";
/// Image format of disk volumes.
pub const DISK_FORMAT: &str = "raw";
/// Filesystem inside disk volumes.
pub const DISK_FSTYPE: &str = "ext4";
/// Smallest disk volume, in MiB (room for an ext4 journal).
pub const MIN_DISK_MIB: u32 = 8;
/// Longest label key, in bytes.
pub const MAX_LABEL_KEY: usize = 63;
/// Longest label value, in bytes.
pub const MAX_LABEL_VALUE: usize = 255;

/// How a volume stores its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VolumeKind {
    /// A host directory, served to VMs by `virtiofsd-msb`.
    Dir,
    /// A raw ext4 image (`disk.raw`), attached to VMs as virtio-blk.
    Disk,
}

impl VolumeKind {
    /// `"dir"` or `"disk"`.
    pub fn as_str(self) -> &'static str {
        match self {
            VolumeKind::Dir => "dir",
            VolumeKind::Disk => "disk",
        }
    }
}

impl fmt::Display for VolumeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for VolumeKind {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "dir" => Ok(VolumeKind::Dir),
            "disk" => Ok(VolumeKind::Disk),
            other => Err(Error::invalid(format!("kind {other:?}"), "use dir or disk")),
        }
    }
}

/// What [`crate::Store::create`] makes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreateOptions {
    /// Directory (default) or disk.
    pub kind: Option<VolumeKind>,
    /// Byte budget of a dir volume in MiB; `None` or 0 is unlimited.
    pub quota_mib: Option<u32>,
    /// Capacity of a disk volume in MiB (required for disks, refused for
    /// dirs).
    pub size_mib: Option<u32>,
    /// Labels (key → value).
    pub labels: BTreeMap<String, String>,
}

impl CreateOptions {
    /// The kind, `Dir` when unset.
    pub fn kind(&self) -> VolumeKind {
        self.kind.unwrap_or(VolumeKind::Dir)
    }

    /// The quota with 0 read as unlimited.
    pub fn quota(&self) -> Option<u32> {
        self.quota_mib.filter(|q| *q > 0)
    }

    /// Checks the combination: size only (and always) for disks, at least
    /// [`MIN_DISK_MIB`]; quota only for dirs; labels well-formed.
    pub fn validate(&self) -> Result<()> {
        match (self.kind(), self.size_mib) {
            (VolumeKind::Disk, None) => {
                return Err(Error::invalid(
                    "kind disk",
                    "a disk volume needs a size in MiB (--size / size=)",
                ))
            }
            (VolumeKind::Disk, Some(s)) if s < MIN_DISK_MIB => {
                return Err(Error::invalid(
                    format!("size {s}"),
                    format!("a disk volume needs at least {MIN_DISK_MIB} MiB"),
                ))
            }
            (VolumeKind::Dir, Some(s)) => {
                return Err(Error::invalid(
                    format!("size {s}"),
                    "only disk volumes have a size; limit a dir volume with a quota",
                ))
            }
            _ => {}
        }
        if self.kind() == VolumeKind::Disk && self.quota().is_some() {
            return Err(Error::invalid(
                "quota",
                "only dir volumes have a quota; a disk volume is limited by its size",
            ));
        }
        for (k, v) in &self.labels {
            validate_label(k, v)?;
        }
        Ok(())
    }
}

/// Checks one label: key of 1..=63 bytes of `[A-Za-z0-9_.-/]`, value of
/// at most 255 bytes without control characters.
pub fn validate_label(key: &str, value: &str) -> Result<()> {
    let what = || format!("label {key:?}");
    if key.is_empty() || key.len() > MAX_LABEL_KEY {
        return Err(Error::invalid(
            what(),
            format!("a label key has 1 to {MAX_LABEL_KEY} bytes"),
        ));
    }
    if let Some(c) = key
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '/')))
    {
        return Err(Error::invalid(
            what(),
            format!("key holds {c:?}; use letters, digits, '_', '.', '-', '/'"),
        ));
    }
    if value.len() > MAX_LABEL_VALUE || value.chars().any(char::is_control) {
        return Err(Error::invalid(
            what(),
            format!("a label value has at most {MAX_LABEL_VALUE} bytes and no control characters"),
        ));
    }
    Ok(())
}

/// Parses `KEY=VALUE` (as given to `--label`).
pub fn parse_label(text: &str) -> Result<(String, String)> {
    let (k, v) = text.split_once('=').ok_or_else(|| {
        Error::invalid(
            format!("label {text:?}"),
            "expected KEY=VALUE, e.g. env=prod",
        )
    })?;
    validate_label(k, v)?;
    Ok((k.to_string(), v.to_string()))
}

/// A VM (an `msb run` process) using a volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeaseInfo {
    /// Launcher process id.
    pub pid: u32,
    /// Its start time (clock ticks after boot, /proc/PID/stat field 22),
    /// which tells a reused pid apart.
    pub start_time: u64,
    /// What holds it, e.g. `msb run`.
    pub holder: String,
    /// Guest mount point, if known.
    pub target: Option<String>,
    /// Mounted read-only.
    pub readonly: bool,
    /// When the lease was taken.
    #[serde(serialize_with = "ser_time")]
    pub acquired_at: i64,
    /// False when the launcher is gone (a crash left the lease behind;
    /// it does not block anything and is cleaned up).
    pub live: bool,
}

impl fmt::Display for LeaseInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (pid {})", self.holder, self.pid)?;
        if let Some(t) = &self.target {
            write!(f, " at {t}")?;
        }
        if self.readonly {
            write!(f, " (ro)")?;
        }
        if !self.live {
            write!(f, " [stale]")?;
        }
        Ok(())
    }
}

/// Metadata of one volume (the seeds' `VolumeHandle`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VolumeHandle {
    /// Volume name.
    pub name: String,
    /// Host path of the volume's directory (`<MSB_HOME>/volumes/<name>`).
    pub path: PathBuf,
    /// Dir or disk.
    pub kind: VolumeKind,
    /// Quota in MiB, `None` when unlimited (dir volumes).
    pub quota_mib: Option<u32>,
    /// Bytes used: apparent bytes of the tree for a dir volume (what the
    /// quota counts), allocated bytes of the image for a disk volume.
    pub used_bytes: u64,
    /// Capacity in bytes of a disk volume, `None` for a dir volume.
    pub capacity_bytes: Option<u64>,
    /// Image format of a disk volume (`raw`).
    pub disk_format: Option<String>,
    /// Filesystem inside a disk volume (`ext4`).
    pub disk_fstype: Option<String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Creation time, seconds since the Unix epoch (JSON: RFC 3339).
    #[serde(serialize_with = "ser_time")]
    pub created_at: i64,
    /// VMs using it now (stale leases included, marked).
    pub in_use_by: Vec<LeaseInfo>,
}

impl VolumeHandle {
    /// The disk image of a disk volume.
    pub fn disk_image(&self) -> Option<PathBuf> {
        (self.kind == VolumeKind::Disk).then(|| self.path.join(DISK_IMAGE))
    }

    /// True while a live launcher holds a lease.
    pub fn in_use(&self) -> bool {
        self.in_use_by.iter().any(|l| l.live)
    }

    /// True when every `(key, value)` in `filter` is among its labels.
    pub fn has_labels(&self, filter: &[(String, String)]) -> bool {
        filter
            .iter()
            .all(|(k, v)| self.labels.get(k).is_some_and(|have| have == v))
    }

    /// The volume root `VolumeFs` works in.
    pub fn root(&self) -> &Path {
        &self.path
    }
}

fn ser_time<S: Serializer>(t: &i64, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339(*t))
}

/// Formats Unix seconds as `YYYY-MM-DDTHH:MM:SSZ` (UTC).
pub fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Seconds since the Unix epoch now.
pub(crate) fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_known_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn create_options_rules() {
        let disk = |size| CreateOptions {
            kind: Some(VolumeKind::Disk),
            size_mib: size,
            ..Default::default()
        };
        assert!(disk(None)
            .validate()
            .unwrap_err()
            .to_string()
            .contains("needs a size"));
        assert!(disk(Some(1))
            .validate()
            .unwrap_err()
            .to_string()
            .contains("at least"));
        disk(Some(64)).validate().unwrap();
        let mut d = disk(Some(64));
        d.quota_mib = Some(5);
        assert!(d
            .validate()
            .unwrap_err()
            .to_string()
            .contains("only dir volumes"));
        d.quota_mib = Some(0);
        d.validate().unwrap();
        let dir = CreateOptions {
            size_mib: Some(10),
            ..Default::default()
        };
        assert!(dir.validate().unwrap_err().is_usage());
        assert_eq!(
            CreateOptions {
                quota_mib: Some(0),
                ..Default::default()
            }
            .quota(),
            None
        );
    }

    #[test]
    fn labels_parse_and_validate() {
        assert_eq!(
            parse_label("env=prod").unwrap(),
            ("env".to_string(), "prod".to_string())
        );
        assert_eq!(parse_label("a/b=").unwrap().1, "");
        assert!(parse_label("noequals")
            .unwrap_err()
            .to_string()
            .contains("KEY=VALUE"));
        assert!(parse_label("=v").is_err());
        assert!(parse_label("sp ace=v")
            .unwrap_err()
            .to_string()
            .contains("' '"));
        assert!(parse_label("k=a\nb").is_err());
        assert!(parse_label(&format!("{}=v", "k".repeat(64))).is_err());
    }

    #[test]
    fn kinds_parse() {
        assert_eq!("dir".parse::<VolumeKind>().unwrap(), VolumeKind::Dir);
        assert_eq!("disk".parse::<VolumeKind>().unwrap(), VolumeKind::Disk);
        let e = "blk".parse::<VolumeKind>().unwrap_err();
        assert!(e.is_usage() && e.to_string().contains("\"blk\""), "{e}");
    }
}
