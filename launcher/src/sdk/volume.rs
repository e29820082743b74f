//! `Volume`: named persistent volumes from Rust, and their host-side files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{blocking, home};
use crate::sandbox::Result;

pub use volumes::{Entry, EntryKind, VolumeHandle, VolumeKind as Kind};

/// A named volume.
#[derive(Debug, Clone)]
pub struct Volume {
    handle: VolumeHandle,
    home: PathBuf,
}

/// Builds a volume: [`Volume::builder`].
#[derive(Debug, Clone)]
pub struct VolumeBuilder {
    name: String,
    opts: volumes::CreateOptions,
}

impl VolumeBuilder {
    /// Quota in MiB (dir volumes).
    pub fn quota(mut self, mib: u32) -> Self {
        self.opts.quota_mib = Some(mib);
        self
    }

    /// Dir (default) or disk.
    pub fn kind(mut self, kind: Kind) -> Self {
        self.opts.kind = Some(kind);
        self
    }

    /// Capacity in MiB (disk volumes).
    pub fn size(mut self, mib: u32) -> Self {
        self.opts.size_mib = Some(mib);
        self
    }

    /// Labels, merged into those given before.
    pub fn labels<I, K, V>(mut self, labels: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        self.opts
            .labels
            .extend(labels.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// Creates it (an error if the name is taken).
    pub async fn create(self) -> Result<Volume> {
        let home = home()?;
        let h = home.clone();
        let handle = blocking(move || {
            let mut store = volumes::Store::open(&h)?;
            Ok(store.create(&self.name, &self.opts)?)
        })
        .await?;
        Ok(Volume { handle, home })
    }
}

impl Volume {
    /// Starts building volume `name`.
    pub fn builder(name: impl Into<String>) -> VolumeBuilder {
        VolumeBuilder {
            name: name.into(),
            opts: volumes::CreateOptions::default(),
        }
    }

    /// An existing volume.
    pub async fn get(name: impl Into<String>) -> Result<Volume> {
        let name = name.into();
        let home = home()?;
        let h = home.clone();
        let handle = blocking(move || Ok(volumes::Store::open(&h)?.get(&name)?)).await?;
        Ok(Volume { handle, home })
    }

    /// Every volume.
    pub async fn list() -> Result<Vec<Volume>> {
        let home = home()?;
        let h = home.clone();
        let handles = blocking(move || Ok(volumes::Store::open(&h)?.list()?)).await?;
        Ok(handles
            .into_iter()
            .map(|handle| Volume {
                handle,
                home: home.clone(),
            })
            .collect())
    }

    /// Removes a volume and its data (refused while a sandbox uses it).
    pub async fn remove(name: impl Into<String>) -> Result<()> {
        let name = name.into();
        let home = home()?;
        blocking(move || Ok(volumes::Store::open(&home)?.remove(&name)?)).await
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.handle.name
    }

    /// Its host directory.
    pub fn path(&self) -> &Path {
        &self.handle.path
    }

    /// Every field (quota, used bytes, labels, users…), as when fetched.
    pub fn handle(&self) -> &VolumeHandle {
        &self.handle
    }

    /// Its files from the host, no sandbox needed. Paths are relative to
    /// the volume root; a leading `/` means the root too (`/a.txt` is
    /// `a.txt`); `..` or symlinks leading out fail with
    /// [`crate::Error::PathEscape`].
    pub fn fs(&self) -> VolumeFs {
        VolumeFs {
            home: self.home.clone(),
            name: self.handle.name.clone(),
        }
    }
}

/// A volume's files, from the host ([`Volume::fs`]).
#[derive(Debug, Clone)]
pub struct VolumeFs {
    home: PathBuf,
    name: String,
}

/// A path below the volume root: leading slashes dropped.
fn rooted(path: &str) -> PathBuf {
    let rel = path.trim_start_matches('/');
    if rel.is_empty() {
        PathBuf::from(".")
    } else {
        PathBuf::from(rel)
    }
}

impl VolumeFs {
    async fn with<T: Send + 'static>(
        &self,
        op: impl FnOnce(&volumes::VolumeFs) -> volumes::Result<T> + Send + 'static,
    ) -> Result<T> {
        let (home, name) = (self.home.clone(), self.name.clone());
        blocking(move || {
            let fs = volumes::Store::open(&home)?.fs(&name)?;
            Ok(op(&fs)?)
        })
        .await
    }

    /// The volume's host directory.
    pub fn root(&self) -> PathBuf {
        self.home.join("volumes").join(&self.name)
    }

    /// A file's contents.
    pub async fn read(&self, path: &str) -> Result<Vec<u8>> {
        let p = rooted(path);
        self.with(move |fs| fs.read(&p)).await
    }

    /// A file's contents as text.
    pub async fn read_string(&self, path: &str) -> Result<String> {
        let p = rooted(path);
        self.with(move |fs| fs.read_string(&p)).await
    }

    /// Writes a file (created 0644 or truncated), counted against the quota.
    pub async fn write(&self, path: &str, data: impl AsRef<[u8]>) -> Result<()> {
        let p = rooted(path);
        let data = data.as_ref().to_vec();
        self.with(move |fs| fs.write(&p, &data)).await
    }

    /// Creates a directory and its parents (0755).
    pub async fn mkdir(&self, path: &str) -> Result<()> {
        let p = rooted(path);
        self.with(move |fs| fs.mkdir(&p)).await
    }

    /// Removes a file or an empty directory.
    pub async fn remove(&self, path: &str) -> Result<()> {
        let p = rooted(path);
        self.with(move |fs| fs.remove(&p)).await
    }

    /// Removes a file or a directory and everything in it.
    pub async fn remove_all(&self, path: &str) -> Result<()> {
        let p = rooted(path);
        self.with(move |fs| fs.remove_all(&p)).await
    }

    /// Whether a path exists.
    pub async fn exists(&self, path: &str) -> Result<bool> {
        let p = rooted(path);
        self.with(move |fs| fs.exists(&p)).await
    }

    /// A directory's entries.
    pub async fn list(&self, path: &str) -> Result<Vec<Entry>> {
        let p = rooted(path);
        self.with(move |fs| fs.read_dir(&p)).await
    }
}

/// Labels as a map, for building volumes from data.
pub type Labels = BTreeMap<String, String>;

#[cfg(test)]
mod tests {
    use super::rooted;
    use std::path::PathBuf;

    #[test]
    fn leading_slash_is_the_volume_root() {
        assert_eq!(
            rooted("/requirements.txt"),
            PathBuf::from("requirements.txt")
        );
        assert_eq!(rooted("a/b"), PathBuf::from("a/b"));
        assert_eq!(rooted("/"), PathBuf::from("."));
        assert_eq!(rooted("//x"), PathBuf::from("x"));
        assert_eq!(rooted("/../x"), PathBuf::from("../x"));
    }
}
