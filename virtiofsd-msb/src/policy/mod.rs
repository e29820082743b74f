//! Policies the filesystem consults: small modules with no FUSE in them,
//! unit-tested on their own.
//!
//! - [`stat_override`]: the stat-virtualization record (guest-visible owner,
//!   mode, type and device number in the host xattr
//!   `user.msb.override_stat`);
//! - [`host_perms`]: which mode host inodes get (`private` / `mirror`);
//! - [`xattr_names`]: which xattr names the guest may see and change;
//! - [`quota`], [`quota_file`], [`quota_scan`]: the byte budget, its shared
//!   accounting file and the initial count.
//!
//! Read-only shares need no module: the filesystem refuses every mutating
//! request with `EROFS` before any policy runs.

pub mod host_perms;
pub mod quota;
pub mod quota_file;
pub mod quota_scan;
pub mod stat_override;
pub mod xattr_names;

pub use host_perms::HostPermissions;
pub use quota::{InodeKey, Quota, QuotaConfig};
pub use stat_override::StatOverride;

/// `--stat-virtualization`: where the guest-visible owner and mode come
/// from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StatVirtualization {
    /// Records are read and written; the daemon refuses to start when the
    /// share's filesystem does not store `user.*` xattrs.
    #[default]
    Strict,
    /// Records are read and written where the filesystem stores `user.*`
    /// xattrs; on one that does not, the share is served as with `Off`.
    Relaxed,
    /// The guest sees the host's metadata; what needs a record (special
    /// nodes, chown to another owner, setuid/setgid) is refused.
    Off,
}

impl StatVirtualization {
    /// The flag's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            StatVirtualization::Strict => "strict",
            StatVirtualization::Relaxed => "relaxed",
            StatVirtualization::Off => "off",
        }
    }
}
