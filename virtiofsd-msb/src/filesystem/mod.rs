//! Our passthrough `FileSystem`: serves one host directory, resolving every
//! guest path through [`crate::confinement`].

use std::path::PathBuf;

/// How long the guest may cache entries and attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CachePolicy {
    /// No caching: every access goes to the daemon.
    Never,
    /// Cache for one second; keep page cache only while the file is unchanged.
    Auto,
    /// Cache for a long time: the guest has exclusive access to the share.
    Always,
}

/// Settings of one served directory.
#[derive(Debug, Clone)]
pub struct FsConfig {
    /// Host directory shown to the guest as its root.
    pub shared_dir: PathBuf,
    /// Reject every mutating request with EROFS.
    pub readonly: bool,
    /// Guest caching policy.
    pub cache: CachePolicy,
    /// Serve extended attributes (otherwise xattr requests answer ENOSYS).
    pub xattr: bool,
    /// Most host fds the inode table may hold open at once.
    pub max_inode_fds: usize,
}

/// The confined passthrough filesystem.
pub struct ConfinedFs {
    config: FsConfig,
}

impl ConfinedFs {
    /// Opens the shared directory and prepares the inode table.
    pub fn new(config: FsConfig) -> std::io::Result<Self> {
        Ok(ConfinedFs { config })
    }

    /// The settings this filesystem was built with.
    pub fn config(&self) -> &FsConfig {
        &self.config
    }
}
