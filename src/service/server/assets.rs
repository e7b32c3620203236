//! The dashboard and paradigm pages, compiled in so the binary serves them from anywhere.

use std::sync::Arc;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::service::hub::Hub;

const DASHBOARD_HTML: &str = include_str!("../../../web/index.html");
const DASHBOARD_JS: &str = include_str!("../../../web/dashboard.js");
const DASHBOARD_CSS: &str = include_str!("../../../web/dashboard.css");
const PARADIGM_HTML: &str = include_str!("../../../web/paradigm.html");
const PARADIGM_JS: &str = include_str!("../../../web/paradigm.js");
const PARADIGM_CSS: &str = include_str!("../../../web/paradigm.css");

/// The page holds no data and no secret, so it is served without the token; the data comes
/// over `/ws`, which checks it. The policy keeps the page to its own files and its own
/// service (no inline script, nothing fetched from elsewhere).
const DASHBOARD_POLICY: &str =
    "default-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'";

fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, DASHBOARD_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            // Always revalidate: an upgraded binary must not run with last version's script.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// The pages' routes (no token: see [`DASHBOARD_POLICY`]).
pub(super) fn routes() -> Router<Arc<Hub>> {
    Router::new()
        .route(
            "/",
            get(|| async { asset(DASHBOARD_HTML, "text/html; charset=utf-8") }),
        )
        .route(
            "/dashboard.js",
            get(|| async { asset(DASHBOARD_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/dashboard.css",
            get(|| async { asset(DASHBOARD_CSS, "text/css; charset=utf-8") }),
        )
        .route(
            "/paradigm",
            get(|| async { asset(PARADIGM_HTML, "text/html; charset=utf-8") }),
        )
        .route(
            "/paradigm.js",
            get(|| async { asset(PARADIGM_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/paradigm.css",
            get(|| async { asset(PARADIGM_CSS, "text/css; charset=utf-8") }),
        )
}
