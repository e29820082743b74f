//! API errors: an HTTP status plus a JSON body with a stable machine code,
//! a message naming what was wrong, and (when known) the kind of resource
//! concerned:
//!
//! ```json
//! {"code": "not_found", "message": "volume \"cache\" not found", "resource": "volume"}
//! ```
//!
//! The codes are part of the API (documented in `docs/openapi.json`):
//! `invalid`, `invalid_mount`, `path_escape`, `not_found`, `no_route`,
//! `method_not_allowed`, `already_exists`, `in_use`, `invalid_state`,
//! `conflict`, `too_large`, `upgrade_required`, `no_space`, `forbidden`,
//! `registry`, `bad_image`, `vm`, `agent`, `io`, `internal`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// An error answer of the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Machine code.
    pub code: &'static str,
    /// What went wrong, naming the field, path or name at fault.
    pub message: String,
    /// `volume`, `sandbox`, `image` or `file`, when the error is about one.
    pub resource: Option<&'static str>,
}

/// The JSON body of an error.
#[derive(Debug, Serialize)]
pub struct ErrorBody<'a> {
    /// Machine code.
    pub code: &'a str,
    /// Human-readable message.
    pub message: &'a str,
    /// Kind of resource concerned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<&'a str>,
}

impl ApiError {
    /// An error with `status`, `code` and `message`.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            resource: None,
        }
    }

    /// The same error, about a `resource`.
    pub fn about(mut self, resource: &'static str) -> ApiError {
        self.resource = Some(resource);
        self
    }

    /// 400 `invalid`: a bad field, value, name or body.
    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid", message)
    }

    /// 400 `invalid_mount`: a mount the client got wrong.
    pub fn invalid_mount(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_mount", message)
    }

    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 409 `conflict`: the state on disk does not allow it.
    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// 500 `internal`.
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// 413 `too_large`: a body over `limit` bytes.
    pub fn too_large(limit: usize) -> ApiError {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("request body over the limit of {limit} bytes"),
        )
    }

    /// The body as JSON text (for streams that report errors in-line).
    pub fn body(&self) -> ErrorBody<'_> {
        ErrorBody {
            code: self.code,
            message: &self.message,
            resource: self.resource,
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.code, self.status, self.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!("{self}");
        } else {
            tracing::debug!("{self}");
        }
        (self.status, axum::Json(self.body())).into_response()
    }
}

/// The resource a library message is about, from its first word
/// (`volume "x" not found`, `sandbox "x" is running`, `image …`).
fn resource_of(message: &str) -> Option<&'static str> {
    let first = message.split([' ', ':']).next().unwrap_or("");
    match first {
        "volume" => Some("volume"),
        "sandbox" => Some("sandbox"),
        "image" => Some("image"),
        _ => None,
    }
}

/// A host I/O error, typed by its errno (file not found, exists, no space…).
pub fn from_io(message: String, e: &std::io::Error) -> ApiError {
    let errno = e.raw_os_error().unwrap_or(0);
    match errno {
        libc::ENOENT => ApiError::not_found(message).about("file"),
        libc::EEXIST => {
            ApiError::new(StatusCode::CONFLICT, "already_exists", message).about("file")
        }
        libc::ENOTEMPTY | libc::EISDIR | libc::ENOTDIR | libc::EBUSY => {
            ApiError::conflict(message).about("file")
        }
        libc::ENOSPC | libc::EDQUOT | libc::EFBIG => {
            ApiError::new(StatusCode::INSUFFICIENT_STORAGE, "no_space", message)
        }
        libc::EACCES | libc::EPERM | libc::EROFS => {
            ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
        }
        _ => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "io", message),
    }
}

impl From<volumes::Error> for ApiError {
    fn from(e: volumes::Error) -> ApiError {
        use volumes::Error as V;
        let message = e.to_string();
        match &e {
            V::InvalidName { .. } | V::Invalid { .. } | V::InvalidPath { .. } => {
                ApiError::invalid(message)
            }
            V::NotFound(_) => ApiError::not_found(message).about("volume"),
            V::AlreadyExists(_) => {
                ApiError::new(StatusCode::CONFLICT, "already_exists", message).about("volume")
            }
            V::InUse { .. } => {
                ApiError::new(StatusCode::CONFLICT, "in_use", message).about("volume")
            }
            V::Mismatch { .. } | V::Conflict { .. } => ApiError::conflict(message).about("volume"),
            V::PathEscape { .. } => ApiError::new(StatusCode::BAD_REQUEST, "path_escape", message),
            V::Io { source, .. } => from_io(message, source),
            V::Db { .. } | V::Mkfs { .. } => ApiError::internal(message),
        }
    }
}

impl From<crate::Error> for ApiError {
    fn from(e: crate::Error) -> ApiError {
        use crate::Error as E;
        let message = e.to_string();
        let resource = resource_of(&message);
        let err = match &e {
            E::NotFound(_) => ApiError::not_found(message),
            E::AlreadyExists(_) => ApiError::new(StatusCode::CONFLICT, "already_exists", message),
            E::InUse(_) => ApiError::new(StatusCode::CONFLICT, "in_use", message),
            E::PathEscape { .. } => ApiError::new(StatusCode::BAD_REQUEST, "path_escape", message),
            E::InvalidMount(_) => ApiError::invalid_mount(message),
            E::Invalid(_) => ApiError::invalid(message),
            E::InvalidState(_) => ApiError::new(StatusCode::CONFLICT, "invalid_state", message),
            E::Vm(_) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "vm", message),
            E::Agent(_) => ApiError::new(StatusCode::BAD_GATEWAY, "agent", message),
            E::State(_) => ApiError::internal(message),
            E::Io { source, .. } => from_io(message, source),
        };
        ApiError {
            resource: err.resource.or(resource),
            ..err
        }
    }
}

impl From<images::Error> for ApiError {
    fn from(e: images::Error) -> ApiError {
        use images::Error as I;
        let message = e.to_string();
        let err = match &e {
            I::NotFound(_) => ApiError::not_found(message),
            I::InUse(_) => ApiError::new(StatusCode::CONFLICT, "in_use", message),
            I::BadReference { .. }
            | I::BadDigest(_)
            | I::BadPlatform(_)
            | I::BadArchive { .. }
            | I::BadUser { .. } => ApiError::invalid(message),
            I::NoPlatform { .. } => ApiError::not_found(message),
            // The distribution protocol's own codes for a missing
            // repository or tag.
            I::Registry { message: m, .. }
                if [
                    "ManifestUnknown",
                    "NameUnknown",
                    "manifest unknown",
                    "name unknown",
                ]
                .iter()
                .any(|c| m.contains(c)) =>
            {
                ApiError::not_found(message)
            }
            I::Unauthorized { .. } | I::Registry { .. } => {
                ApiError::new(StatusCode::BAD_GATEWAY, "registry", message)
            }
            I::DigestMismatch { .. }
            | I::SizeMismatch { .. }
            | I::BadManifest { .. }
            | I::UnsafeLayer { .. } => ApiError::new(StatusCode::BAD_GATEWAY, "bad_image", message),
            I::Io { source, .. } => from_io(message, source),
            I::Home(_) => ApiError::internal(message),
        };
        err.about("image")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn library_errors_keep_their_resource() {
        let e = ApiError::from(crate::Error::NotFound("sandbox \"web\"".into()));
        assert_eq!(
            (e.status, e.code, e.resource),
            (StatusCode::NOT_FOUND, "not_found", Some("sandbox"))
        );
        let e = ApiError::from(volumes::Error::NotFound("cache".into()));
        assert_eq!((e.code, e.resource), ("not_found", Some("volume")));
        let e = ApiError::from(volumes::Error::PathEscape {
            path: "../x".into(),
        });
        assert_eq!((e.status, e.code), (StatusCode::BAD_REQUEST, "path_escape"));
    }

    #[test]
    fn io_errors_are_typed_by_errno() {
        let io = |n| std::io::Error::from_raw_os_error(n);
        assert_eq!(from_io("x".into(), &io(libc::ENOENT)).code, "not_found");
        assert_eq!(from_io("x".into(), &io(libc::ENOSPC)).code, "no_space");
        assert_eq!(from_io("x".into(), &io(libc::EIO)).code, "io");
    }
}
