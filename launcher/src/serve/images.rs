//! `/v1/images`: the `images` store: pull (with progress as NDJSON when
//! asked), load, list, inspect, remove (refused while a sandbox was
//! created from the image).
//!
//! A reference in a path (`/v1/images/{reference}`) may hold `/` and `:`
//! (`docker.io/library/alpine:latest`), which need no escaping.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::body::{Json, Path};
use super::error::ApiError;
use super::{blocking, AppState};
use crate::sandbox::lifecycle;

/// Least time between two download updates of a pull's progress (the
/// last one of a layer always goes through).
const DOWNLOAD_EVERY: Duration = Duration::from_millis(100);

/// `POST /v1/images/pull` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PullRequest {
    /// Image reference (`alpine`, `host:5000/app:1`, `repo@sha256:…`).
    pub reference: String,
    /// `os/arch[/variant]` to pick from an index [default: linux/amd64].
    #[serde(default)]
    pub platform: Option<String>,
    /// Allow plain HTTP to a registry that is not on this host.
    #[serde(default)]
    pub insecure: bool,
    /// Answer with NDJSON progress events, the last one `done` (with the
    /// image) or `error`, instead of the image alone.
    #[serde(default)]
    pub progress: bool,
}

/// `POST /v1/images/load` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadRequest {
    /// Absolute host path of a docker-archive, oci-archive or OCI layout.
    pub path: String,
    /// `REPO` or `REPO:TAG` for what is loaded.
    #[serde(default)]
    pub name: Option<String>,
    /// `os/arch[/variant]` to pick from an OCI index.
    #[serde(default)]
    pub platform: Option<String>,
}

fn store(state: &AppState) -> Result<images::Store, images::Error> {
    images::Store::open(state.home())
}

fn platform(text: Option<&str>) -> Result<Option<images::Platform>, ApiError> {
    Ok(text.map(images::Platform::parse).transpose()?)
}

/// One progress event as a JSON line.
fn event_json(e: &images::Event) -> serde_json::Value {
    use images::Event as E;
    match e {
        E::Resolved {
            reference,
            manifest,
            layers,
        } => {
            json!({"event": "resolved", "reference": reference, "manifest": manifest, "layers": layers})
        }
        E::LayerPresent { digest } => json!({"event": "layer_present", "digest": digest}),
        E::Downloading {
            digest,
            done,
            total,
        } => json!({"event": "downloading", "digest": digest, "done": done, "total": total}),
        E::Unpacking { digest } => json!({"event": "unpacking", "digest": digest}),
        E::LayerDone { digest } => json!({"event": "layer_done", "digest": digest}),
    }
}

fn line(v: &serde_json::Value) -> Result<Vec<u8>, std::io::Error> {
    let mut bytes = serde_json::to_vec(v)?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// `POST /v1/images/pull`: the image, or NDJSON progress ending with it.
pub async fn pull(
    State(state): State<AppState>,
    Json(req): Json<PullRequest>,
) -> Result<Response, ApiError> {
    images::ImageRef::parse(&req.reference)?;
    let platform = platform(req.platform.as_deref())?;
    let mut opts = images::PullOptions {
        platform,
        insecure: req.insecure,
        ..images::PullOptions::default()
    };
    let reference = req.reference;
    if !req.progress {
        let img = blocking(move || store(&state)?.pull_blocking(&reference, &opts)).await?;
        return Ok(axum::Json(img).into_response());
    }
    // The callback runs inside the pull's own runtime, where blocking is
    // not allowed: an unbounded channel, with download updates thinned to
    // a few per second so a slow client cannot make it grow much.
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<serde_json::Value>();
    let events = tx.clone();
    let last_download = std::sync::Mutex::new(None::<Instant>);
    opts.progress = std::sync::Arc::new(move |e: &images::Event| {
        if let images::Event::Downloading { done, total, .. } = e {
            let mut last = last_download.lock().unwrap_or_else(|p| p.into_inner());
            let recent = last.is_some_and(|t| t.elapsed() < DOWNLOAD_EVERY);
            if recent && done < total {
                return;
            }
            *last = Some(Instant::now());
        }
        let _ = events.send(event_json(e));
    });
    tokio::task::spawn_blocking(move || {
        let last = match store(&state).and_then(|s| s.pull_blocking(&reference, &opts)) {
            Ok(img) => json!({"event": "done", "image": img}),
            Err(e) => json!({"event": "error", "error": ApiError::from(e).body()}),
        };
        let _ = tx.send(last);
    });
    let lines = futures_util::stream::unfold(rx, |mut rx| async move {
        let v = rx.recv().await?;
        Some((line(&v), rx))
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(lines),
    )
        .into_response())
}

/// `POST /v1/images/load`: the images loaded from a host archive or layout.
pub async fn load(
    State(state): State<AppState>,
    Json(req): Json<LoadRequest>,
) -> Result<impl IntoResponse, ApiError> {
    if !req.path.starts_with('/') {
        return Err(ApiError::invalid(format!(
            "field \"path\": {:?} must be an absolute host path",
            req.path
        )));
    }
    let opts = images::LoadOptions {
        name: req.name,
        platform: platform(req.platform.as_deref())?,
    };
    let path = std::path::PathBuf::from(req.path);
    let loaded = blocking(move || store(&state)?.load(&path, &opts)).await?;
    Ok(axum::Json(loaded))
}

/// `GET /v1/images`: every image in the store.
pub async fn list(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    Ok(axum::Json(blocking(move || store(&state)?.list()).await?))
}

/// `GET /v1/images/{reference}`: one image.
pub async fn inspect(
    State(state): State<AppState>,
    Path(reference): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(axum::Json(
        blocking(move || store(&state)?.inspect(&reference)).await?,
    ))
}

/// `DELETE /v1/images/{reference}`: untags the name (and deletes the image
/// when no name is left); refused while a sandbox was created from it.
pub async fn remove(
    State(state): State<AppState>,
    Path(reference): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let removed = blocking(move || {
        let home = state.home().to_path_buf();
        store(&state)?.remove(&reference, |id| lifecycle::image_in_use(&home, id))
    })
    .await?;
    Ok(axum::Json(removed))
}
