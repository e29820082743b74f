//! Command-line flags, spelled as virtiofsd spells them.
//!
//! [`Cli`] is what clap parses; [`Cli::resolve`] checks the combinations clap
//! cannot express and turns the flags into a [`Config`] the daemon runs with.

use std::os::unix::io::RawFd;
use std::path::PathBuf;

use clap::{Parser, ValueEnum};

use crate::filesystem::CachePolicy;
use crate::policy::{HostPermissions, QuotaConfig, StatVirtualization};
use crate::sandbox::SandboxMode;
use crate::seccomp::SeccompMode;

/// Default bound on the host fds the inode table may hold open.
pub const DEFAULT_MAX_INODE_FDS: usize = 65536;

/// Longest tag the virtio-fs configuration space can carry, in bytes.
pub const MAX_TAG_LEN: usize = 36;

/// The flags of `virtiofsd-msb`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "virtiofsd-msb",
    version,
    about = "A confined passthrough virtio-fs daemon (vhost-user-fs backend)",
    long_about = "A confined passthrough virtio-fs daemon: a drop-in for virtiofsd's common \
                  flags that serves one host directory to a VM over vhost-user-fs, or on a \
                  host FUSE mount point (--fuse-mount) for testing with stock tools.",
    after_long_help = POLICY_HELP
)]
pub struct Cli {
    /// vhost-user socket path to listen on (created; a stale socket file is replaced)
    #[arg(long, value_name = "PATH", alias = "socket")]
    pub socket_path: Option<PathBuf>,

    /// File descriptor of an already listening vhost-user unix socket
    #[arg(long, value_name = "FD")]
    pub fd: Option<RawFd>,

    /// Serve --shared-dir on this host directory through /dev/fuse instead of vhost-user
    #[arg(long, value_name = "DIR")]
    pub fuse_mount: Option<PathBuf>,

    /// Host directory to share with the guest
    #[arg(long, value_name = "DIR")]
    pub shared_dir: Option<PathBuf>,

    /// Share one regular file instead of a directory: the guest sees a root
    /// directory holding only this file, under its own name; nothing else
    /// of its host directory can be named, listed or changed
    #[arg(long, value_name = "FILE", conflicts_with = "shared_dir")]
    pub shared_file: Option<PathBuf>,

    /// Tag advertised in the device's configuration space (at most 36 bytes);
    /// enables the vhost-user CONFIG protocol feature
    #[arg(long, value_name = "TAG")]
    pub tag: Option<String>,

    /// Reject every mutating request with EROFS
    #[arg(long)]
    pub readonly: bool,

    /// How long the guest may cache entries, attributes and data
    #[arg(long, value_enum, value_name = "POLICY", default_value_t = CacheArg::Auto)]
    pub cache: CacheArg,

    /// Threads handling requests; 0 handles them on each queue's own thread
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub thread_pool_size: usize,

    /// Longest a queue thread keeps looking for the next request after a batch before it
    /// sleeps, in microseconds (adaptive: only while requests come back to back; at most half
    /// the CPUs poll at once); 0 never polls
    #[arg(long, value_name = "US", default_value_t = 50, value_parser = clap::value_parser!(u64).range(0..=10_000))]
    pub poll_us: u64,

    /// Threads that copy large READs (256 KiB and up) into guest memory: one read alone is
    /// split between them, several in flight are served whole side by side; 0 picks the
    /// number of CPUs, at most 4; 1 copies on the queue thread alone
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=64))]
    pub copy_threads: u64,

    /// Sandbox isolating the daemon from the host: namespace forks into new user (when not
    /// root), pid, mount, network, IPC and UTS namespaces and pivot_roots into the shared
    /// directory; chroot (root only) chroots into it where namespaces are unavailable; none
    /// relies on openat2 confinement alone
    #[arg(long, value_enum, value_name = "MODE", default_value_t = SandboxArg::Namespace)]
    pub sandbox: SandboxArg,

    /// System call filter of the serving process: kill ends the daemon on a call off its
    /// allow-list, log lets the call through and logs it to the kernel audit log, trap fails
    /// it with ENOSYS and prints its number, none installs no filter
    #[arg(long, value_enum, value_name = "ACTION", default_value_t = SeccompArg::Kill)]
    pub seccomp: SeccompArg,

    /// Log level (overrides RUST_LOG; default info)
    #[arg(long, value_enum, value_name = "LEVEL")]
    pub log_level: Option<LogLevel>,

    /// Serve extended attributes: user.* names only. security.*, trusted.* and system.*
    /// (ACLs) names from the guest are rejected, not remapped (set/remove: EOPNOTSUPP; get:
    /// ENODATA; never listed), so a guest cannot give host files capabilities, labels or ACLs
    /// (CVE-2021-20263 class). user.msb.* is the daemon's own and invisible (get: ENODATA;
    /// set/remove: EPERM)
    #[arg(long)]
    pub xattr: bool,

    /// Where guest-visible owner, group, mode and device numbers live: strict keeps them in
    /// the host xattr user.msb.override_stat and refuses to start on a filesystem without
    /// user.* xattrs; relaxed does so where the filesystem has them and shows host metadata
    /// elsewhere; off shows host metadata and refuses what would need the record (device
    /// nodes, chown to another owner, setuid/setgid)
    #[arg(long, value_enum, value_name = "MODE", default_value_t = StatVirtArg::Strict)]
    pub stat_virtualization: StatVirtArg,

    /// Host modes under stat virtualization: private keeps guest modes in the record only and
    /// host inodes owner-only (0600 files, 0700 directories); mirror copies the rwx bits of
    /// regular files and directories to the host, never setuid/setgid/sticky, and never below
    /// owner rw (rwx for directories)
    #[arg(long, value_enum, value_name = "MODE", default_value_t = HostPermsArg::Private)]
    pub host_permissions: HostPermsArg,

    /// Byte budget of the share in MiB (apparent sizes, hard links once, directories not
    /// counted); growth past it fails with ENOSPC and statfs reports it; 0 means none
    #[arg(long, value_name = "MIB")]
    pub quota_mib: Option<u64>,

    /// Accounting file holding the quota's running total, shared by every daemon serving the
    /// same directory (give them all the same PATH, outside the shared directory); without it
    /// the total is this daemon's alone
    #[arg(long, value_name = "PATH")]
    pub quota_file: Option<PathBuf>,

    /// Group (name or numeric id) that owns the socket created by --socket-path
    #[arg(long, value_name = "GROUP")]
    pub socket_group: Option<String>,

    /// RLIMIT_NOFILE to set (0 leaves it unchanged) [default: min(1000000, fs.nr_open)]
    #[arg(long, value_name = "N")]
    pub rlimit_nofile: Option<u64>,

    /// Print the vhost-user backend capabilities as JSON and exit
    #[arg(long)]
    pub print_capabilities: bool,

    /// Most host fds the inode table holds open at once; must stay below RLIMIT_NOFILE
    /// [default: 65536, lowered to fit the rlimit]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_inode_fds: Option<u64>,
}

/// `--cache` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CacheArg {
    /// No caching: every access goes to the daemon
    Never,
    /// Short timeouts; page cache kept while the file is unchanged
    Auto,
    /// Long timeouts: the guest has the share to itself
    Always,
}

impl From<CacheArg> for CachePolicy {
    fn from(c: CacheArg) -> Self {
        match c {
            CacheArg::Never => CachePolicy::Never,
            CacheArg::Auto => CachePolicy::Auto,
            CacheArg::Always => CachePolicy::Always,
        }
    }
}

/// Extra help text: the policies in more words.
const POLICY_HELP: &str = "\
Stat virtualization (--stat-virtualization strict|relaxed):
  Guest chown/chmod/mknod/create/mkdir write a 20-byte record in the host xattr
  user.msb.override_stat (version 1; uid, gid, mode, rdev); the host inode keeps
  the daemon's owner. Guest char/block devices, fifos and sockets are stored as
  plain host regular files. Writing to a file clears setuid/setgid in the record
  as the kernel would; no guest-set setuid/setgid bit reaches a host file. With
  off, entries are created with the guest caller's uid/gid. A corrupt
  record makes that inode answer EIO. Guest symlinks are real host symlinks (no
  record can live on one); file-backed symlinks (a regular file whose record
  says S_IFLNK) are read as symlinks.

Quota (--quota-mib, --quota-file):
  Counts st_size of every non-directory inode under the shared directory, each
  inode once (du -sb without directory sizes). A write, fallocate, truncate,
  copy_file_range or symlink request that would pass the budget fails with
  ENOSPC and changes nothing (a guest kernel may split one large write(2) into
  several requests: those that fit succeed, a short write); unlinking and
  truncating give bytes back, but a file unlinked while the guest still holds
  it open stays counted (and its growth too) until its last handle and
  lookup are gone. Several daemons
  serving one directory share a budget when started with the same --quota-file:
  the file holds the total, updated under an fcntl lock; the first daemon to
  open it (no other daemon holding it) rescans the directory. A directory
  already over its quota is served; only growth fails.";

/// `--stat-virtualization` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StatVirtArg {
    /// Record in user.msb.override_stat; refuse a filesystem without user.* xattrs
    Strict,
    /// Record where the filesystem stores user.* xattrs, host metadata elsewhere
    Relaxed,
    /// Host metadata; refuse what needs the record
    Off,
}

impl From<StatVirtArg> for StatVirtualization {
    fn from(a: StatVirtArg) -> Self {
        match a {
            StatVirtArg::Strict => StatVirtualization::Strict,
            StatVirtArg::Relaxed => StatVirtualization::Relaxed,
            StatVirtArg::Off => StatVirtualization::Off,
        }
    }
}

/// `--host-permissions` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum HostPermsArg {
    /// Guest modes in the record only; host inodes owner-only
    Private,
    /// rwx bits of files and directories copied to the host
    Mirror,
}

impl From<HostPermsArg> for HostPermissions {
    fn from(a: HostPermsArg) -> Self {
        match a {
            HostPermsArg::Private => HostPermissions::Private,
            HostPermsArg::Mirror => HostPermissions::Mirror,
        }
    }
}

/// `--sandbox` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SandboxArg {
    /// New namespaces + pivot_root into the shared directory
    Namespace,
    /// chroot into the shared directory
    Chroot,
    /// No sandbox: confinement relies on openat2 resolution alone
    None,
}

impl From<SandboxArg> for SandboxMode {
    fn from(a: SandboxArg) -> Self {
        match a {
            SandboxArg::Namespace => SandboxMode::Namespace,
            SandboxArg::Chroot => SandboxMode::Chroot,
            SandboxArg::None => SandboxMode::None,
        }
    }
}

/// `--seccomp` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SeccompArg {
    /// Kill the process on a forbidden system call
    Kill,
    /// Allow it and log it to the audit log
    Log,
    /// Fail it with ENOSYS and print its number
    Trap,
    /// No system call filter
    None,
}

impl From<SeccompArg> for SeccompMode {
    fn from(a: SeccompArg) -> Self {
        match a {
            SeccompArg::Kill => SeccompMode::Kill,
            SeccompArg::Log => SeccompMode::Log,
            SeccompArg::Trap => SeccompMode::Trap,
            SeccompArg::None => SeccompMode::None,
        }
    }
}

/// `--log-level` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogLevel {
    /// Errors only
    Error,
    /// Warnings and errors
    Warn,
    /// Informational messages and above
    Info,
    /// Debug messages and above
    Debug,
    /// Everything
    Trace,
    /// Nothing
    Off,
}

impl LogLevel {
    /// The filter directive for this level.
    pub fn as_filter(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
            LogLevel::Off => "off",
        }
    }
}

/// Where requests come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// vhost-user, listening on a socket we create at this path.
    SocketPath(PathBuf),
    /// vhost-user, on an inherited listening socket.
    Fd(RawFd),
    /// Host FUSE, mounted on this directory.
    FuseMount(PathBuf),
}

/// Validated settings the daemon runs with.
#[derive(Debug, Clone)]
pub struct Config {
    /// Transport and its endpoint.
    pub mode: Mode,
    /// Host directory to share (with `shared_file`: the file's directory,
    /// never served itself).
    pub shared_dir: PathBuf,
    /// With `--shared-file`: the name of the one file served.
    pub shared_file: Option<std::ffi::OsString>,
    /// Device configuration tag, if any.
    pub tag: Option<String>,
    /// Reject mutating requests.
    pub readonly: bool,
    /// Guest caching policy.
    pub cache: CachePolicy,
    /// Request-handling threads (0: on the queue thread).
    pub thread_pool_size: usize,
    /// Largest polling window of a queue thread (zero: no polling).
    pub poll_window: std::time::Duration,
    /// Threads copying one large READ together (1: no splitting).
    pub copy_threads: usize,
    /// Serve extended attributes.
    pub xattr: bool,
    /// Group owning the created socket.
    pub socket_group: Option<String>,
    /// Requested RLIMIT_NOFILE (`None`: the default target; `Some(0)`: unchanged).
    pub rlimit_nofile: Option<u64>,
    /// Explicit inode fd bound, if given.
    pub max_inode_fds: Option<usize>,
    /// Explicit log level, if given.
    pub log_level: Option<LogLevel>,
    /// Stat virtualization mode.
    pub stat_virtualization: StatVirtualization,
    /// Host permissions under stat virtualization.
    pub host_permissions: HostPermissions,
    /// The quota, if any.
    pub quota: Option<QuotaConfig>,
    /// The process sandbox.
    pub sandbox: SandboxMode,
    /// The system call filter.
    pub seccomp: SeccompMode,
}

/// A flag combination clap cannot reject by itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

impl Cli {
    /// Checks flag combinations and produces the daemon's [`Config`].
    pub fn resolve(&self) -> Result<Config, UsageError> {
        let mut modes = Vec::new();
        if let Some(p) = &self.socket_path {
            modes.push(Mode::SocketPath(p.clone()));
        }
        if let Some(fd) = self.fd {
            modes.push(Mode::Fd(fd));
        }
        if let Some(p) = &self.fuse_mount {
            modes.push(Mode::FuseMount(p.clone()));
        }
        let mode = match modes.len() {
            1 => modes.remove(0),
            0 => {
                return Err(UsageError(
                    "one of --socket-path, --fd or --fuse-mount is required".into(),
                ))
            }
            _ => {
                return Err(UsageError(
                    "--socket-path, --fd and --fuse-mount are mutually exclusive".into(),
                ))
            }
        };
        if let Mode::Fd(fd) = mode {
            if fd < 0 {
                return Err(UsageError(format!("--fd {fd}: not a file descriptor")));
            }
        }
        if self.socket_group.is_some() && !matches!(mode, Mode::SocketPath(_)) {
            return Err(UsageError("--socket-group needs --socket-path".into()));
        }
        let (shared_dir, shared_file) = self.share()?;
        if let Some(tag) = &self.tag {
            if tag.is_empty() {
                return Err(UsageError("--tag: empty tag".into()));
            }
            if tag.len() > MAX_TAG_LEN {
                return Err(UsageError(format!(
                    "--tag {tag:?}: longer than {MAX_TAG_LEN} bytes"
                )));
            }
            if tag.bytes().any(|b| b == 0) {
                return Err(UsageError(format!("--tag {tag:?}: contains NUL")));
            }
        }
        let max_inode_fds = match self.max_inode_fds {
            None => None,
            Some(n) => Some(usize::try_from(n).map_err(|_| {
                UsageError(format!("--max-inode-fds {n}: too large for this platform"))
            })?),
        };
        let stat_virtualization = StatVirtualization::from(self.stat_virtualization);
        let host_permissions = HostPermissions::from(self.host_permissions);
        if stat_virtualization == StatVirtualization::Off
            && host_permissions == HostPermissions::Mirror
        {
            return Err(UsageError(
                "--host-permissions mirror needs --stat-virtualization strict or relaxed \
                 (with off, host modes are the guest's modes already)"
                    .into(),
            ));
        }
        let quota = self.quota()?;
        Ok(Config {
            mode,
            shared_dir,
            shared_file,
            tag: self.tag.clone(),
            readonly: self.readonly,
            cache: self.cache.into(),
            thread_pool_size: self.thread_pool_size,
            poll_window: std::time::Duration::from_micros(self.poll_us),
            copy_threads: match self.copy_threads {
                0 => crate::copy_crew::default_threads(),
                n => n as usize,
            },
            xattr: self.xattr,
            socket_group: self.socket_group.clone(),
            rlimit_nofile: self.rlimit_nofile,
            max_inode_fds,
            log_level: self.log_level,
            stat_virtualization,
            host_permissions,
            quota,
            sandbox: self.sandbox.into(),
            seccomp: self.seccomp.into(),
        })
    }

    /// The shared directory, and with `--shared-file` the file's name in it.
    fn share(&self) -> Result<(PathBuf, Option<std::ffi::OsString>), UsageError> {
        let Some(file) = &self.shared_file else {
            let dir = self
                .shared_dir
                .clone()
                .ok_or_else(|| UsageError("--shared-dir (or --shared-file) is required".into()))?;
            if dir.as_os_str().is_empty() {
                return Err(UsageError("--shared-dir: empty path".into()));
            }
            return Ok((dir, None));
        };
        let bad = |why: &str| UsageError(format!("--shared-file {}: {why}", file.display()));
        let name = match file.components().next_back() {
            Some(std::path::Component::Normal(n)) => n.to_os_string(),
            _ => return Err(bad("must name a file")),
        };
        if self.quota_mib.unwrap_or(0) != 0 {
            return Err(bad("a quota needs a shared directory"));
        }
        let dir = match file.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        Ok((dir, Some(name)))
    }

    fn quota(&self) -> Result<Option<QuotaConfig>, UsageError> {
        let mib = self.quota_mib.unwrap_or(0);
        if mib == 0 {
            if let Some(f) = &self.quota_file {
                return Err(UsageError(format!(
                    "--quota-file {}: needs a non-zero --quota-mib",
                    f.display()
                )));
            }
            return Ok(None);
        }
        let limit_bytes = mib
            .checked_mul(1 << 20)
            .ok_or_else(|| UsageError(format!("--quota-mib {mib}: too large")))?;
        if let Some(f) = &self.quota_file {
            if f.as_os_str().is_empty() {
                return Err(UsageError("--quota-file: empty path".into()));
            }
        }
        Ok(Some(QuotaConfig {
            limit_bytes,
            accounting_file: self.quota_file.clone(),
        }))
    }
}

/// The JSON `--print-capabilities` prints: the vhost-user backend type and
/// the optional features libvirt may use. We accept every option as its own
/// `--flag` ("separate-options"); we do not support migration.
pub fn capabilities_json() -> &'static str {
    "{\n  \"type\": \"fs\",\n  \"features\": [\n    \"separate-options\"\n  ]\n}"
}

#[cfg(test)]
#[path = "cli_tests.rs"]
mod tests;
