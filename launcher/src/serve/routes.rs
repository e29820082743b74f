//! The route table: the one place the API's routes are written. The router
//! is built from it, and [`ROUTES`] lists the same (method, path) pairs for
//! the test that holds `docs/openapi.json` to them.

use axum::http::{Method, Uri};
use axum::routing::{delete, get, post, put};
use axum::Router;

use super::error::ApiError;
use super::{exec, images, sandboxes, stream, volumes, AppState};

/// Declares the routes once: `METHOD "path" => handler`. Expands to
/// [`ROUTES`] and to the function adding them to a router.
macro_rules! route_table {
    ($($method:ident $path:literal => $handler:path),* $(,)?) => {
        /// Every route served, as (method, path) with axum's path syntax
        /// (`{name}`, `{*rest}`).
        pub const ROUTES: &[(&str, &str)] = &[$((stringify!($method), $path)),*];

        fn add_routes(router: Router<AppState>) -> Router<AppState> {
            router $(.route($path, $method($handler)))*
        }
    };
}

route_table! {
    get "/v1/version" => version,

    post "/v1/volumes" => volumes::create,
    get "/v1/volumes" => volumes::list,
    get "/v1/volumes/{name}" => volumes::get,
    delete "/v1/volumes/{name}" => volumes::remove,
    get "/v1/volumes/{name}/fs/read" => volumes::fs_read,
    put "/v1/volumes/{name}/fs/write" => volumes::fs_write,
    post "/v1/volumes/{name}/fs/mkdir" => volumes::fs_mkdir,
    post "/v1/volumes/{name}/fs/remove" => volumes::fs_remove,
    post "/v1/volumes/{name}/fs/remove-all" => volumes::fs_remove_all,
    get "/v1/volumes/{name}/fs/exists" => volumes::fs_exists,

    post "/v1/sandboxes" => sandboxes::create,
    get "/v1/sandboxes" => sandboxes::list,
    get "/v1/sandboxes/{name}" => sandboxes::get,
    delete "/v1/sandboxes/{name}" => sandboxes::remove,
    post "/v1/sandboxes/{name}/stop" => sandboxes::stop,
    post "/v1/sandboxes/{name}/start" => sandboxes::start,
    post "/v1/sandboxes/{name}/exec" => exec::run,
    post "/v1/sandboxes/{name}/exec/stream" => stream::exec,

    get "/v1/images" => images::list,
    post "/v1/images/pull" => images::pull,
    post "/v1/images/load" => images::load,
    get "/v1/images/{*reference}" => images::inspect,
    delete "/v1/images/{*reference}" => images::remove,
}

/// The whole API: the routes, and JSON errors for unknown paths and
/// methods.
pub fn router(state: AppState) -> Router {
    add_routes(Router::new())
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// `GET /v1/version`: what serves this socket.
async fn version() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({
        "name": "msb",
        "version": env!("CARGO_PKG_VERSION"),
        "api": "v1",
    }))
}

async fn no_route(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::NOT_FOUND,
        "no_route",
        format!("no route {method} {} (see docs/openapi.json)", uri.path()),
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} does not take {method}", uri.path()),
    )
}

/// [`ROUTES`] in OpenAPI's path syntax (`{*reference}` is `{reference}`),
/// methods in lower case.
pub fn served() -> std::collections::BTreeSet<(String, String)> {
    ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.replace("{*", "{")))
        .collect()
}

/// The (method, path) pairs an OpenAPI document describes.
pub fn documented(doc: &serde_json::Value) -> std::collections::BTreeSet<(String, String)> {
    const METHODS: &[&str] = &["get", "put", "post", "delete", "patch", "head", "options"];
    let mut out = std::collections::BTreeSet::new();
    if let Some(paths) = doc["paths"].as_object() {
        for (path, item) in paths {
            for m in METHODS {
                if item.get(*m).is_some() {
                    out.insert((m.to_string(), path.clone()));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `docs/openapi.json` documents exactly the routes the router serves.
    #[test]
    fn openapi_document_matches_the_route_table() {
        let text = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi.json"));
        let doc: serde_json::Value = serde_json::from_str(text).expect("docs/openapi.json is JSON");
        assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
        let (served, documented) = (served(), documented(&doc));
        let undocumented: Vec<_> = served.difference(&documented).collect();
        let unserved: Vec<_> = documented.difference(&served).collect();
        assert!(
            undocumented.is_empty() && unserved.is_empty(),
            "served but not in docs/openapi.json: {undocumented:?}; documented but not served: {unserved:?}"
        );
    }

    /// The router accepts the table (no overlapping routes).
    #[test]
    fn router_builds() {
        let _ = router(AppState::new("/nonexistent".into()));
    }
}
