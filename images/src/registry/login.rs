//! `msb registry login`: checks credentials against the registry before
//! storing them. The registry's `/v2/` endpoint is asked anonymously; a
//! `Basic` challenge is answered with the credentials, a `Bearer`
//! challenge by asking its token realm with them (as Docker's login
//! does). Plain HTTP only for loopback registries or `insecure`.

use crate::error::{Error, Result};
use crate::paths::Paths;
use crate::reference::ImageRef;
use crate::registry::auth;

/// What the registry answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginOutcome {
    /// The credentials were accepted.
    Accepted,
    /// The registry needs no credentials (they were stored anyway).
    NotRequired,
}

/// The value of `key="…"` in a challenge.
fn challenge_param(header: &str, key: &str) -> Option<String> {
    let start = header.find(&format!("{key}=\""))? + key.len() + 2;
    let rest = &header[start..];
    Some(rest[..rest.find('"')?].to_string())
}

/// Checks `user`/`password` against `registry` and stores them.
pub async fn login(
    paths: &Paths,
    registry: &str,
    user: &str,
    password: &str,
    insecure: bool,
) -> Result<LoginOutcome> {
    let key = auth::registry_key(registry);
    let host = if key == "docker.io" {
        "registry-1.docker.io".to_string()
    } else {
        key.clone()
    };
    let probe = ImageRef::parse(&format!("{host}/probe")).map_err(|_| Error::BadReference {
        reference: registry.to_string(),
        why: "not a registry host[:port]".into(),
    })?;
    super::install_crypto();
    let scheme = if insecure || probe.is_loopback() {
        "http"
    } else {
        "https"
    };
    let fail = |message: String| Error::Registry {
        registry: key.clone(),
        message,
    };
    let denied = |message: String| Error::Unauthorized {
        registry: key.clone(),
        reference: format!("login as {user}"),
        message,
    };
    let client = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(30))
        .build()
        .map_err(|e| fail(format!("HTTP client: {e}")))?;
    let base = format!("{scheme}://{host}/v2/");
    let resp = client
        .get(&base)
        .send()
        .await
        .map_err(|e| fail(format!("GET {base}: {e}")))?;
    let outcome = match resp.status().as_u16() {
        200 => LoginOutcome::NotRequired,
        401 => {
            let challenge = resp
                .headers()
                .get(reqwest::header::WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let lower = challenge.to_ascii_lowercase();
            let answer = if lower.starts_with("bearer") {
                let realm = challenge_param(&challenge, "realm").ok_or_else(|| {
                    fail(format!("bearer challenge without a realm: {challenge}"))
                })?;
                let mut q = vec![("account", user.to_string())];
                if let Some(s) = challenge_param(&challenge, "service") {
                    q.push(("service", s));
                }
                client
                    .get(&realm)
                    .query(&q)
                    .basic_auth(user, Some(password))
                    .send()
                    .await
            } else {
                client
                    .get(&base)
                    .basic_auth(user, Some(password))
                    .send()
                    .await
            };
            let answer = answer.map_err(|e| fail(format!("login request: {e}")))?;
            match answer.status().as_u16() {
                200 => LoginOutcome::Accepted,
                401 | 403 => return Err(denied("the registry refused these credentials".into())),
                s => return Err(fail(format!("login answered HTTP {s}"))),
            }
        }
        s => return Err(fail(format!("GET {base} answered HTTP {s}"))),
    };
    auth::store(paths, &key, Some((user, password)))?;
    Ok(outcome)
}

/// [`login`] for callers without a tokio runtime (do not call it from
/// inside one).
pub fn login_blocking(
    paths: &Paths,
    registry: &str,
    user: &str,
    password: &str,
    insecure: bool,
) -> Result<LoginOutcome> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("start runtime", "(tokio)", e))?
        .block_on(login(paths, registry, user, password, insecure))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge_params() {
        let h = r#"Bearer realm="https://auth.example/token",service="registry.example",scope="x""#;
        assert_eq!(
            challenge_param(h, "realm").as_deref(),
            Some("https://auth.example/token")
        );
        assert_eq!(
            challenge_param(h, "service").as_deref(),
            Some("registry.example")
        );
        assert_eq!(challenge_param(h, "nope"), None);
    }
}
