//! Image references as users type them (`alpine`, `host:5000/team/app:1`,
//! `repo@sha256:…`) and platforms (`linux/amd64`).

use std::fmt;

use oci_client::Reference;

use crate::digest::Digest;
use crate::error::{Error, Result};

/// A parsed, normalized image reference: Docker Hub names get their
/// registry and `library/` prefix, a missing tag becomes `latest`
/// (`alpine` → `docker.io/library/alpine:latest`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    inner: Reference,
}

impl ImageRef {
    /// Parses a reference.
    pub fn parse(text: &str) -> Result<ImageRef> {
        let bad = |why: &str| Error::BadReference {
            reference: text.to_string(),
            why: why.to_string(),
        };
        if text.is_empty() {
            return Err(bad("empty"));
        }
        if text.len() > 512 {
            return Err(bad("longer than 512 bytes"));
        }
        let inner: Reference = text.parse().map_err(|e| bad(&format!("{e}")))?;
        if inner.repository().bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(bad("repository names must be lowercase"));
        }
        if let Some(d) = inner.digest() {
            Digest::parse(d).map_err(|_| bad("only sha256 digests are supported"))?;
        }
        Ok(ImageRef { inner })
    }

    /// The registry host (and port) as written, `docker.io` for Docker Hub.
    pub fn registry(&self) -> &str {
        self.inner.registry()
    }

    /// The repository path (`library/alpine`).
    pub fn repository(&self) -> &str {
        self.inner.repository()
    }

    /// The tag, if any (`latest` when neither tag nor digest was given).
    pub fn tag(&self) -> Option<&str> {
        self.inner.tag()
    }

    /// The pinned digest, if any.
    pub fn digest(&self) -> Option<Digest> {
        self.inner.digest().and_then(|d| Digest::parse(d).ok())
    }

    /// The same repository pinned to `digest` (no tag).
    pub fn with_digest(&self, digest: &Digest) -> ImageRef {
        ImageRef {
            inner: Reference::with_digest(
                self.registry().to_string(),
                self.repository().to_string(),
                digest.to_string(),
            ),
        }
    }

    /// `registry/repository` without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry(), self.repository())
    }

    /// Whether the registry is on this host (`localhost`, `127.x`, `::1`),
    /// where plain HTTP is allowed without `--insecure`.
    pub fn is_loopback(&self) -> bool {
        let host = self.registry();
        let host = match host.strip_prefix('[') {
            Some(rest) => rest.split(']').next().unwrap_or(""),
            None => host.rsplit_once(':').map_or(host, |(h, _)| h),
        };
        if host == "localhost" {
            return true;
        }
        host.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
    }

    /// The reference in oci-client's type.
    pub(crate) fn oci(&self) -> &Reference {
        &self.inner
    }
}

impl fmt::Display for ImageRef {
    /// The full normalized text (`docker.io/library/alpine:latest`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.inner.whole())
    }
}

/// A target platform: `linux/amd64`, `linux/arm64/v8`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Platform {
    /// Operating system (`linux`).
    pub os: String,
    /// CPU architecture in Go's naming (`amd64`, `arm64`).
    pub architecture: String,
    /// CPU variant (`v8`), if it matters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// The platform of the guests this project runs: linux/amd64.
    pub fn default_guest() -> Platform {
        Platform {
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: None,
        }
    }

    /// Parses `os/arch[/variant]`.
    pub fn parse(text: &str) -> Result<Platform> {
        let parts: Vec<&str> = text.split('/').collect();
        let ok = |s: &&str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
        };
        if !(2..=3).contains(&parts.len()) || !parts.iter().all(ok) {
            return Err(Error::BadPlatform(text.to_string()));
        }
        Ok(Platform {
            os: parts[0].to_string(),
            architecture: parts[1].to_string(),
            variant: parts.get(2).map(|v| v.to_string()),
        })
    }

    /// Whether an index entry's platform fits this one (a variant, when
    /// asked for, must match; none asked accepts any).
    pub fn matches(&self, os: &str, architecture: &str, variant: Option<&str>) -> bool {
        self.os == os
            && self.architecture == architecture
            && self.variant.as_deref().is_none_or(|v| Some(v) == variant)
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_hub_names_are_normalized() {
        let r = ImageRef::parse("alpine").unwrap();
        assert_eq!(r.to_string(), "docker.io/library/alpine:latest");
        assert_eq!(r.registry(), "docker.io");
        assert!(!r.is_loopback());
        let r = ImageRef::parse("team/app:1.2").unwrap();
        assert_eq!(r.to_string(), "docker.io/team/app:1.2");
    }

    #[test]
    fn hosts_ports_and_digests() {
        let d = format!("sha256:{}", "a".repeat(64));
        let r = ImageRef::parse(&format!("127.0.0.1:5000/x/y@{d}")).unwrap();
        assert_eq!(r.registry(), "127.0.0.1:5000");
        assert_eq!(r.repository(), "x/y");
        assert_eq!(r.digest().unwrap().to_string(), d);
        assert!(r.is_loopback());
        assert!(ImageRef::parse("localhost:5000/a:b").unwrap().is_loopback());
        assert!(!ImageRef::parse("example.com:5000/a:b")
            .unwrap()
            .is_loopback());
    }

    #[test]
    fn bad_references() {
        for bad in ["", "UPPER/case", "a:b:c", "x@sha256:abc", "a b"] {
            assert!(ImageRef::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn platforms() {
        assert_eq!(
            Platform::parse("linux/amd64").unwrap(),
            Platform::default_guest()
        );
        let p = Platform::parse("linux/arm64/v8").unwrap();
        assert!(p.matches("linux", "arm64", Some("v8")));
        assert!(!p.matches("linux", "arm64", None));
        assert!(Platform::default_guest().matches("linux", "amd64", Some("v1")));
        for bad in ["linux", "linux/", "a/b/c/d", "linux/amd 64"] {
            assert!(Platform::parse(bad).is_err(), "{bad}");
        }
    }
}
