//! `/v1/volumes`: named volumes (the `volumes` store) and their host-side
//! files (`volumes::VolumeFs`: every path resolved beneath the volume root
//! by the kernel; absolute paths, `..` and symlinks leading out are
//! `path_escape`; writes count against the quota).

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use serde::Deserialize;

use super::body::{FileBody, Json, Path, Query};
use super::error::ApiError;
use super::{blocking, AppState};

/// `POST /v1/volumes` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateVolume {
    /// Volume name.
    pub name: String,
    /// `dir` (default) or `disk`.
    #[serde(default)]
    pub kind: Option<String>,
    /// Quota in MiB of a dir volume; 0 or absent is unlimited.
    #[serde(default)]
    pub quota_mib: Option<u32>,
    /// Capacity in MiB of a disk volume (required for disks).
    #[serde(default)]
    pub size_mib: Option<u32>,
    /// Labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// The `?path=` of the file operations: relative to the volume root.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FsPath {
    /// Path relative to the volume root.
    pub path: String,
}

fn store(state: &AppState) -> Result<volumes::Store, volumes::Error> {
    volumes::Store::open(state.home())
}

/// `POST /v1/volumes`: creates a volume; 201 with its metadata.
pub async fn create(
    State(state): State<AppState>,
    Json(req): Json<CreateVolume>,
) -> Result<impl IntoResponse, ApiError> {
    let kind = req
        .kind
        .as_deref()
        .map(str::parse::<volumes::VolumeKind>)
        .transpose()?;
    let opts = volumes::CreateOptions {
        kind,
        quota_mib: req.quota_mib,
        size_mib: req.size_mib,
        labels: req.labels,
    };
    let handle = blocking(move || store(&state)?.create(&req.name, &opts)).await?;
    Ok((StatusCode::CREATED, axum::Json(handle)))
}

/// `GET /v1/volumes`: every volume's metadata.
pub async fn list(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let list = blocking(move || store(&state)?.list()).await?;
    Ok(axum::Json(list))
}

/// `GET /v1/volumes/{name}`: one volume's metadata.
pub async fn get(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let handle = blocking(move || store(&state)?.get(&name)).await?;
    Ok(axum::Json(handle))
}

/// `DELETE /v1/volumes/{name}`: removes a volume and its data (refused
/// while a sandbox uses it); 204.
pub async fn remove(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    blocking(move || store(&state)?.remove(&name)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Runs one file operation on volume `name`.
async fn with_fs<T: Send + 'static>(
    state: AppState,
    name: String,
    op: impl FnOnce(&volumes::VolumeFs) -> volumes::Result<T> + Send + 'static,
) -> Result<T, ApiError> {
    blocking(move || op(&store(&state)?.fs(&name)?)).await
}

/// `GET /v1/volumes/{name}/fs/read?path=P`: a file's bytes.
pub async fn fs_read(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<FsPath>,
) -> Result<impl IntoResponse, ApiError> {
    let bytes = with_fs(state, name, move |fs| fs.read(&q.path)).await?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes))
}

/// `PUT /v1/volumes/{name}/fs/write?path=P`: the body becomes the file
/// (created 0644 or truncated); 204.
pub async fn fs_write(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<FsPath>,
    FileBody(data): FileBody,
) -> Result<StatusCode, ApiError> {
    with_fs(state, name, move |fs| fs.write(&q.path, &data)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/volumes/{name}/fs/mkdir?path=P`: a directory and its missing
/// parents (0755); 204.
pub async fn fs_mkdir(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<FsPath>,
) -> Result<StatusCode, ApiError> {
    with_fs(state, name, move |fs| fs.mkdir(&q.path)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/volumes/{name}/fs/remove?path=P`: a file or empty directory;
/// 204.
pub async fn fs_remove(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<FsPath>,
) -> Result<StatusCode, ApiError> {
    with_fs(state, name, move |fs| fs.remove(&q.path)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/volumes/{name}/fs/remove-all?path=P`: a path and everything
/// under it; 204.
pub async fn fs_remove_all(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<FsPath>,
) -> Result<StatusCode, ApiError> {
    with_fs(state, name, move |fs| fs.remove_all(&q.path)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/volumes/{name}/fs/exists?path=P`: `{"exists": bool}`.
pub async fn fs_exists(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<FsPath>,
) -> Result<impl IntoResponse, ApiError> {
    let exists = with_fs(state, name, move |fs| fs.exists(&q.path)).await?;
    Ok(axum::Json(serde_json::json!({ "exists": exists })))
}
