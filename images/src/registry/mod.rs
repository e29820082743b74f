//! Talking to registries through `oci-client`: the client setup (plain
//! HTTP only for loopback registries or `--insecure`), credentials
//! ([`auth`]), error mapping, and verified blob downloads with resume.

pub mod auth;
pub mod login;
pub mod pull;
mod stream;

use std::sync::Once;

use futures_util::StreamExt;
use oci_client::client::{BlobResponse, ClientConfig, ClientProtocol, SizedStream};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use oci_client::Client;

use crate::blobs::Partial;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::paths::Paths;
use crate::progress::{Event, Progress};
use crate::reference::ImageRef;
use crate::spec::Descriptor;

/// Installs the TLS crypto provider (ring) once per process.
fn install_crypto() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Whether plain HTTP is used for this reference's registry.
pub fn plain_http(r: &ImageRef, insecure: bool) -> bool {
    insecure || r.is_loopback()
}

/// A client for the registry of `r`.
pub fn client_for(r: &ImageRef, insecure: bool) -> Client {
    install_crypto();
    let protocol = if plain_http(r, insecure) {
        ClientProtocol::HttpsExcept(vec![r.oci().resolve_registry().to_string()])
    } else {
        ClientProtocol::Https
    };
    Client::new(ClientConfig {
        protocol,
        platform_resolver: None,
        connect_timeout: Some(std::time::Duration::from_secs(30)),
        read_timeout: Some(std::time::Duration::from_secs(120)),
        ..ClientConfig::default()
    })
}

/// Turns an oci-client error into ours, naming the registry and reference.
pub fn map_err(r: &ImageRef, e: OciDistributionError) -> Error {
    let registry = r.registry().to_string();
    let denied = |message: String| Error::Unauthorized {
        registry: registry.clone(),
        reference: r.to_string(),
        message,
    };
    let hint = "log in with `msb registry login`, or check the credentials";
    match e {
        OciDistributionError::UnauthorizedError { .. } => {
            denied(format!("not authorized ({hint})"))
        }
        OciDistributionError::AuthenticationFailure(m) => {
            denied(format!("authentication failed: {} ({hint})", m.trim()))
        }
        OciDistributionError::RegistryError { envelope, .. } => {
            let codes: Vec<String> = envelope
                .errors
                .iter()
                .map(|e| format!("{:?}: {}", e.code, e.message))
                .collect();
            let auth = envelope
                .errors
                .iter()
                .any(|e| matches!(e.code, OciErrorCode::Unauthorized | OciErrorCode::Denied));
            let unknown = envelope.errors.iter().any(|e| {
                matches!(
                    e.code,
                    OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::BlobUnknown
                )
            });
            if auth {
                denied(format!("{} ({hint})", codes.join("; ")))
            } else if unknown {
                Error::Registry {
                    registry,
                    message: format!("{r}: not found ({})", codes.join("; ")),
                }
            } else {
                Error::Registry {
                    registry,
                    message: codes.join("; "),
                }
            }
        }
        OciDistributionError::ServerError {
            code: 401, message, ..
        } => denied(format!("{} ({hint})", message.trim())),
        OciDistributionError::ServerError { code: 404, .. } => Error::Registry {
            registry,
            message: format!("{r}: not found"),
        },
        OciDistributionError::RequestError(e) => Error::Registry {
            registry,
            message: format!("request failed: {}", error_chain(&e)),
        },
        other => Error::Registry {
            registry,
            message: other.to_string(),
        },
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

/// A connection to one repository: client, reference and credentials.
pub struct Session {
    /// The client.
    pub client: Client,
    /// The reference pulled.
    pub reference: ImageRef,
    /// The credentials used.
    pub auth: RegistryAuth,
}

impl Session {
    /// Connects (authenticates, getting a bearer token when the registry
    /// asks for one).
    pub async fn open(paths: &Paths, reference: &ImageRef, insecure: bool) -> Result<Session> {
        let client = client_for(reference, insecure);
        let auth = auth::lookup(paths, reference.registry())?;
        client
            .auth(reference.oci(), &auth, oci_client::RegistryOperation::Pull)
            .await
            .map_err(|e| map_err(reference, e))?;
        Ok(Session {
            client,
            reference: reference.clone(),
            auth,
        })
    }

    /// Fetches the manifest (or index) `r` names; its digest is checked
    /// against `expected`, or against the reference's own digest.
    pub async fn manifest(
        &self,
        r: &ImageRef,
        expected: Option<&Digest>,
    ) -> Result<(Vec<u8>, Digest)> {
        let (bytes, _) = self
            .client
            .pull_manifest_raw(r.oci(), &self.auth, &crate::spec::ACCEPTED_MANIFESTS)
            .await
            .map_err(|e| map_err(r, e))?;
        if bytes.len() as u64 > crate::blobs::MAX_DOCUMENT {
            return Err(Error::manifest(
                r.to_string(),
                "manifest larger than 16 MiB",
            ));
        }
        let actual = Digest::of(&bytes);
        if let Some(want) = expected.cloned().or_else(|| r.digest()) {
            if actual != want {
                return Err(Error::DigestMismatch {
                    what: format!("manifest of {r}"),
                    expected: want.to_string(),
                    actual: actual.to_string(),
                });
            }
        }
        Ok((bytes.to_vec(), actual))
    }

    /// Downloads blob `d` into the store (resuming a partial download),
    /// verified against its digest and size.
    pub async fn blob(
        &self,
        paths: &Paths,
        d: &Descriptor,
        what: &str,
        progress: &Progress,
    ) -> Result<()> {
        if crate::blobs::has(paths, &d.digest) {
            return Ok(());
        }
        let mut partial = self.open_partial(paths, d).await?;
        if partial.done() {
            return Ok(());
        }
        let offset = partial.offset();
        let stream = if offset > 0 && offset < d.size {
            tracing::info!("{what}: resuming at byte {offset} of {}", d.size);
            match self
                .client
                .pull_blob_stream_partial(self.reference.oci(), &descriptor(d), offset, None)
                .await
            {
                Ok(BlobResponse::Partial(s)) => s,
                Ok(BlobResponse::Full(s)) => {
                    partial.restart()?;
                    s
                }
                Err(e) => return Err(map_err(&self.reference, e)),
            }
        } else {
            partial.restart()?;
            self.open_stream(d).await?
        };
        self.feed(&mut partial, stream, d, what, progress, None)
            .await?;
        self.commit(partial, d, what).await
    }

    /// Opens (and locks) the partial file of blob `d`.
    async fn open_partial(&self, paths: &Paths, d: &Descriptor) -> Result<Partial> {
        let (p2, digest) = (paths.clone(), d.digest.clone());
        tokio::task::spawn_blocking(move || Partial::open(&p2, &digest))
            .await
            .map_err(|e| self.fail(format!("download task: {e}")))?
    }

    /// Asks for the whole of blob `d`.
    async fn open_stream(&self, d: &Descriptor) -> Result<BlobStream> {
        self.client
            .pull_blob_stream(self.reference.oci(), &descriptor(d))
            .await
            .map_err(|e| map_err(&self.reference, e))
    }

    /// Writes what `stream` brings into `partial` (and, with `tee`, to it
    /// too; a closed `tee` is left alone and the download goes on).
    async fn feed(
        &self,
        partial: &mut Partial,
        mut stream: BlobStream,
        d: &Descriptor,
        what: &str,
        progress: &Progress,
        tee: Option<&tokio::sync::mpsc::Sender<std::io::Result<bytes::Bytes>>>,
    ) -> Result<()> {
        let mut tee = tee;
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(bytes) => {
                    partial.write(&bytes, Some(d.size), what)?;
                    if let Some(t) = tee {
                        if t.send(Ok(bytes)).await.is_err() {
                            tee = None;
                        }
                    }
                }
                // oci-client's own digest check fires after the last byte:
                // ours (at the commit) reports it with the digests.
                Err(e) if is_digest_error(&e) => break,
                // Anything else (network): keep what arrived for a resume.
                Err(e) => return Err(self.fail(format!("downloading {what}: {}", error_chain(&e)))),
            }
            progress(&Event::Downloading {
                digest: d.digest.clone(),
                done: partial.offset(),
                total: d.size,
            });
        }
        Ok(())
    }

    /// Checks size and digest and moves the blob into the store.
    async fn commit(&self, partial: Partial, d: &Descriptor, what: &str) -> Result<()> {
        let (what, size) = (what.to_string(), d.size);
        tokio::task::spawn_blocking(move || partial.commit(Some(size), &what))
            .await
            .map_err(|e| self.fail(format!("download task: {e}")))??;
        Ok(())
    }

    fn fail(&self, message: String) -> Error {
        Error::Registry {
            registry: self.reference.registry().to_string(),
            message,
        }
    }
}

/// A blob download in progress.
type BlobStream = SizedStream;

/// oci-client's descriptor of `d`.
fn descriptor(d: &Descriptor) -> OciDescriptor {
    OciDescriptor {
        media_type: d.media_type.clone(),
        digest: d.digest.to_string(),
        size: d.size as i64,
        urls: None,
        annotations: None,
        artifact_type: None,
    }
}

fn is_digest_error(e: &std::io::Error) -> bool {
    e.get_ref().is_some_and(|inner| {
        inner
            .downcast_ref::<oci_client::errors::DigestError>()
            .is_some()
    })
}
