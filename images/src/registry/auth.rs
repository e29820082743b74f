//! Registry credentials: `msb registry login` keeps them in
//! `<home>/registry-auth.json` (mode 0600, Docker's `auths` shape), and
//! Docker's own `~/.docker/config.json` (or `$DOCKER_CONFIG/config.json`)
//! `auths` entries are read too (ours win). Credential helpers
//! (`credsStore`, `credHelpers`) are not run.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use oci_client::secrets::RegistryAuth;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::lock::FileLock;
use crate::paths::Paths;

#[derive(Debug, Default, Serialize, Deserialize)]
struct AuthFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct AuthEntry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    auth: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    password: Option<String>,
}

impl AuthEntry {
    fn credentials(&self) -> Option<(String, String)> {
        if let (Some(u), Some(p)) = (&self.username, &self.password) {
            return Some((u.clone(), p.clone()));
        }
        let raw = base64::engine::general_purpose::STANDARD
            .decode(self.auth.as_deref()?.trim())
            .ok()?;
        let text = String::from_utf8(raw).ok()?;
        let (u, p) = text.split_once(':')?;
        Some((u.to_string(), p.to_string()))
    }
}

/// The key a registry host is stored under: `host[:port]`, Docker Hub's
/// aliases folded into `docker.io`.
pub fn registry_key(text: &str) -> String {
    let t = text.trim();
    let t = t
        .strip_prefix("https://")
        .or_else(|| t.strip_prefix("http://"))
        .unwrap_or(t);
    let host = t.split('/').next().unwrap_or(t);
    match host {
        "index.docker.io" | "registry-1.docker.io" | "docker.io" => "docker.io".to_string(),
        h => h.to_string(),
    }
}

fn read_file(path: &Path) -> Result<AuthFile> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            Error::manifest(
                path.display().to_string(),
                format!("bad credentials file: {e}"),
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(AuthFile::default()),
        Err(e) => Err(Error::io("read", path, e)),
    }
}

fn docker_config() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(d).join("config.json"));
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".docker").join("config.json"))
}

fn find(file: &AuthFile, key: &str) -> Option<(String, String)> {
    file.auths
        .iter()
        .find(|(k, _)| registry_key(k) == key)
        .and_then(|(_, e)| e.credentials())
}

/// The credentials for `registry` (as in a reference): ours, else
/// Docker's, else anonymous.
pub fn lookup(paths: &Paths, registry: &str) -> Result<RegistryAuth> {
    let key = registry_key(registry);
    if let Some((u, p)) = find(&read_file(&paths.credentials())?, &key) {
        return Ok(RegistryAuth::Basic(u, p));
    }
    if let Some(path) = docker_config() {
        // A broken Docker config is Docker's business: log and go on.
        match read_file(&path) {
            Ok(f) => {
                if let Some((u, p)) = find(&f, &key) {
                    return Ok(RegistryAuth::Basic(u, p));
                }
            }
            Err(e) => tracing::warn!("ignoring {}: {e}", path.display()),
        }
    }
    Ok(RegistryAuth::Anonymous)
}

/// Stores (or, with `None`, forgets) the credentials of `registry`.
pub fn store(paths: &Paths, registry: &str, creds: Option<(&str, &str)>) -> Result<bool> {
    let path = paths.credentials();
    crate::paths::mkdir_all(&paths.home, 0o700)?;
    let _lock = FileLock::exclusive(&paths.home.join(".registry-auth.lock"))?;
    let mut file = read_file(&path)?;
    let key = registry_key(registry);
    let existed = file.auths.remove(&key).is_some();
    if let Some((u, p)) = creds {
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
        file.auths.insert(
            key,
            AuthEntry {
                auth: Some(auth),
                ..AuthEntry::default()
            },
        );
    }
    let bytes = serde_json::to_vec_pretty(&file)
        .map_err(|e| Error::manifest("credentials", e.to_string()))?;
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let r = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    })();
    if let Err(e) = r {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io("write", &path, e));
    }
    Ok(existed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_entries() {
        assert_eq!(registry_key("https://index.docker.io/v1/"), "docker.io");
        assert_eq!(registry_key("127.0.0.1:5000"), "127.0.0.1:5000");
        assert_eq!(registry_key("http://127.0.0.1:5000/v2/"), "127.0.0.1:5000");
        let e = AuthEntry {
            auth: Some(base64::engine::general_purpose::STANDARD.encode("u:p:q")),
            ..AuthEntry::default()
        };
        assert_eq!(e.credentials(), Some(("u".into(), "p:q".into())));
    }

    #[test]
    fn stored_with_private_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path());
        store(&paths, "127.0.0.1:5000", Some(("alice", "s3cret"))).unwrap();
        let mode = std::fs::metadata(paths.credentials())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        match lookup(&paths, "127.0.0.1:5000").unwrap() {
            RegistryAuth::Basic(u, p) => assert_eq!((u.as_str(), p.as_str()), ("alice", "s3cret")),
            other => panic!("{other:?}"),
        }
        assert!(store(&paths, "127.0.0.1:5000", None).unwrap());
        assert!(matches!(
            lookup(&paths, "127.0.0.1:5000").unwrap(),
            RegistryAuth::Anonymous | RegistryAuth::Basic(..)
        ));
    }
}
