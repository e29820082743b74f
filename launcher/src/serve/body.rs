//! Request extractors whose failures are API errors: JSON bodies (size
//! limit, unknown fields refused by the types' `deny_unknown_fields`,
//! errors naming the field), raw byte bodies, query strings and path
//! parameters. A body that fails here reaches no handler, so nothing is
//! changed.

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::CONTENT_LENGTH;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// Largest JSON body, in bytes.
pub const MAX_JSON_BODY: usize = 1 << 20;
/// Largest file written through the volume file API, in bytes.
pub const MAX_FILE_BODY: usize = 64 << 20;

/// A JSON body of type `T` (at most [`MAX_JSON_BODY`] bytes).
#[derive(Debug)]
pub struct Json<T>(pub T);

/// A raw body (at most [`MAX_FILE_BODY`] bytes).
#[derive(Debug)]
pub struct FileBody(pub Bytes);

/// A query string of type `T`.
#[derive(Debug)]
pub struct Query<T>(pub T);

/// Path parameters of type `T`.
#[derive(Debug)]
pub struct Path<T>(pub T);

/// Reads a whole body of at most `limit` bytes; a declared or actual
/// length over it is [`ApiError::too_large`].
pub async fn read_limited(parts: &Parts, body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let declared = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::too_large(limit));
    }
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let over = std::error::Error::source(&e)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
        if over {
            ApiError::too_large(limit)
        } else {
            ApiError::invalid(format!("reading the request body: {e}"))
        }
    })
}

/// Parses a JSON document into `T`, naming the field at fault. Errors in
/// `mounts` are `invalid_mount`.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        None => return Err(ApiError::invalid("the request needs a JSON body")),
        Some(b'{') => {}
        Some(_) if serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_err() => {}
        Some(_) => return Err(ApiError::invalid("the request body must be a JSON object")),
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(field_error)?;
    de.end()
        .map_err(|e| ApiError::invalid(format!("request body: {e}")))?;
    Ok(value)
}

fn field_error(e: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let path = e.path().to_string();
    let inner = e.into_inner();
    if inner.is_syntax() || inner.is_eof() {
        return ApiError::invalid(format!("request body is not valid JSON: {inner}"));
    }
    if path == "." {
        return ApiError::invalid(format!("request body: {inner}"));
    }
    let message = format!("field {path:?}: {inner}");
    if path.starts_with("mounts") {
        ApiError::invalid_mount(message)
    } else {
        ApiError::invalid(message)
    }
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, ApiError> {
        let (parts, body) = req.into_parts();
        let bytes = read_limited(&parts, body, MAX_JSON_BODY).await?;
        parse_json(&bytes).map(Json)
    }
}

impl<S: Send + Sync> FromRequest<S> for FileBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, ApiError> {
        let (parts, body) = req.into_parts();
        read_limited(&parts, body, MAX_FILE_BODY)
            .await
            .map(FileBody)
    }
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::try_from_uri(&parts.uri)
            .map(|q| Query(q.0))
            .map_err(|e| ApiError::invalid(format!("query string: {}", e.body_text())))
    }
}

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Path(p.0))
            .map_err(|e| ApiError::invalid(format!("path: {}", e.body_text())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Sample {
        name: String,
        size: Option<u32>,
        mounts: Option<Vec<String>>,
    }

    #[test]
    fn errors_name_the_field() {
        let e = parse_json::<Sample>(br#"{"name": "a", "size": "big"}"#).unwrap_err();
        assert_eq!(e.code, "invalid");
        assert!(e.message.contains("\"size\""), "{}", e.message);
        let e = parse_json::<Sample>(br#"{"name": "a", "colour": 1}"#).unwrap_err();
        assert!(
            e.message.contains("unknown field `colour`"),
            "{}",
            e.message
        );
        let e = parse_json::<Sample>(br#"{"size": 1}"#).unwrap_err();
        assert!(e.message.contains("missing field `name`"), "{}", e.message);
        let e = parse_json::<Sample>(br#"{"name": "a", "mounts": [1]}"#).unwrap_err();
        assert_eq!(e.code, "invalid_mount");
        let e = parse_json::<Sample>(br#"{"name": "a""#).unwrap_err();
        assert!(e.message.contains("not valid JSON"), "{}", e.message);
        let e = parse_json::<Sample>(br#"{"name": "a"} {}"#).unwrap_err();
        assert!(e.message.contains("trailing"), "{}", e.message);
        assert!(parse_json::<Sample>(b" ").is_err());
        let e = parse_json::<Sample>(br#"["a", 1]"#).unwrap_err();
        assert!(e.message.contains("JSON object"), "{}", e.message);
    }
}
