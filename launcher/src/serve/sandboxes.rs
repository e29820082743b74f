//! `/v1/sandboxes`: create (through the SDK's [`crate::SandboxBuilder`]),
//! get, list, stop, start, remove (through [`crate::sandbox::lifecycle`]).
//! A sandbox belongs to its supervisor process: the server only asks.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;

use super::body::{Json, Path, Query};
use super::error::ApiError;
use super::mounts::{to_mounts, ApiMount};
use super::{blocking, AppState};
use crate::sandbox::lifecycle;
use crate::sandbox_cmd::record_json;

/// Most vCPUs a sandbox may ask for (as `--cpus`).
const MAX_CPUS: u32 = 64;

/// `POST /v1/sandboxes` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateSandbox {
    /// Sandbox name.
    pub name: String,
    /// OCI image of the root (pulled when not in the store); the embedded
    /// root (msb-init + busybox) when absent.
    #[serde(default)]
    pub image: Option<String>,
    /// Mounts, in order.
    #[serde(default)]
    pub mounts: Vec<ApiMount>,
    /// vCPUs (default 1).
    #[serde(default)]
    pub cpus: Option<u32>,
    /// Memory in MiB (default 512).
    #[serde(default)]
    pub memory_mib: Option<u64>,
    /// Environment of every command.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory of commands (absolute guest path).
    #[serde(default)]
    pub workdir: Option<String>,
}

/// `?force=` of stop and remove.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Force {
    /// Stop: no clean guest shutdown. Remove: stop a running one first.
    #[serde(default)]
    pub force: bool,
}

/// Checks `KEY=VALUE` material: a key without `=` or NUL, a value without
/// NUL; `field` names the map in messages.
pub fn env_list(field: &str, env: &BTreeMap<String, String>) -> Result<Vec<String>, ApiError> {
    env.iter()
        .map(|(k, v)| {
            if k.is_empty() || k.contains(['=', '\0']) || v.contains('\0') {
                Err(ApiError::invalid(format!(
                    "field \"{field}.{k}\": a variable name is not empty and holds no '=' or NUL; \
                     a value holds no NUL"
                )))
            } else {
                Ok(format!("{k}={v}"))
            }
        })
        .collect()
}

/// Pulls `reference` into the store when it is not there yet, so registry
/// and reference errors come back typed (`not_found`, `registry`…).
fn ensure_image(state: &AppState, reference: &str) -> Result<(), ApiError> {
    let store = images::Store::open(state.home())?;
    if store.find(reference)?.is_none() {
        tracing::info!("image {reference} not in the store: pulling it");
        store.pull_blocking(reference, &images::PullOptions::default())?;
    }
    Ok(())
}

/// A sandbox's JSON view (the same as `msb inspect`).
fn view(state: &AppState, name: &str) -> Result<serde_json::Value, ApiError> {
    Ok(record_json(&lifecycle::inspect(state.home(), name)?))
}

/// `POST /v1/sandboxes`: boots a sandbox and answers once it takes
/// commands; 201 with its view. Nothing is left behind when it fails.
pub async fn create(
    State(state): State<AppState>,
    Json(req): Json<CreateSandbox>,
) -> Result<impl IntoResponse, ApiError> {
    crate::sandbox::spec::validate_name(&req.name)?;
    let mounts = to_mounts(&req.mounts)?;
    let env = env_list("env", &req.env)?;
    let mut builder = crate::Sandbox::builder(&req.name);
    if let Some(cpus) = req.cpus {
        if !(1..=MAX_CPUS).contains(&cpus) {
            return Err(ApiError::invalid(format!(
                "field \"cpus\": {cpus} is not in 1..={MAX_CPUS}"
            )));
        }
        builder = builder.cpus(cpus);
    }
    if let Some(mib) = req.memory_mib {
        builder = builder.memory(mib);
    }
    if let Some(w) = &req.workdir {
        builder = builder.workdir(w);
    }
    for (guest, mount) in mounts {
        builder = builder.volume(guest, |_| mount);
    }
    for kv in env {
        let (k, v) = kv.split_once('=').unwrap_or((&kv, ""));
        builder = builder.env(k, v);
    }
    if let Some(image) = &req.image {
        let (s, r) = (state.clone(), image.clone());
        blocking(move || ensure_image(&s, &r)).await?;
        builder = builder.image(image);
    }
    builder.create().await?;
    let name = req.name;
    let v = blocking(move || view(&state, &name)).await?;
    Ok((StatusCode::CREATED, axum::Json(v)))
}

/// `GET /v1/sandboxes`: every sandbox.
pub async fn list(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let list = blocking(move || lifecycle::list(state.home())).await?;
    Ok(axum::Json(list.iter().map(record_json).collect::<Vec<_>>()))
}

/// `GET /v1/sandboxes/{name}`.
pub async fn get(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(axum::Json(blocking(move || view(&state, &name)).await?))
}

/// `POST /v1/sandboxes/{name}/stop[?force=true]`: a clean guest shutdown
/// (or an immediate stop); its view after.
pub async fn stop(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<Force>,
) -> Result<impl IntoResponse, ApiError> {
    let v = blocking(move || {
        lifecycle::stop(state.home(), &name, q.force)?;
        view(&state, &name)
    })
    .await?;
    Ok(axum::Json(v))
}

/// `POST /v1/sandboxes/{name}/start`: boots a stopped sandbox with the spec
/// it was created with; its view after.
pub async fn start(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let v = blocking(move || {
        lifecycle::start(state.home(), &name)?;
        view(&state, &name)
    })
    .await?;
    Ok(axum::Json(v))
}

/// `DELETE /v1/sandboxes/{name}[?force=true]`: removes a sandbox (a running
/// one only with force); 204.
pub async fn remove(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<Force>,
) -> Result<StatusCode, ApiError> {
    blocking(move || lifecycle::remove(state.home(), &name, q.force)).await?;
    Ok(StatusCode::NO_CONTENT)
}
