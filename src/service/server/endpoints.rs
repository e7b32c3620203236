//! `/metrics` (Prometheus text), `/health` (for orchestrators: no token) and `POST /rollback`.
//! The token was checked by the layer in front of `/metrics` and `/rollback`.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::auth::{feedback_right, FEEDBACK_REFUSED};
use crate::service::hub::{Command, Hub, Request};
use crate::service::metrics::DropReason;
use crate::service::protocol;

pub(super) async fn metrics(State(hub): State<Arc<Hub>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        hub.metrics.render(),
    )
        .into_response()
}

pub(super) async fn health(State(hub): State<Arc<Hub>>) -> Response {
    let body = serde_json::json!({
        "status": if hub.shutdown.is_triggered() { "stopping" } else { "ok" },
        "clients": hub.metrics.clients.load(Ordering::Relaxed),
        "protocol": protocol::PROTOCOL_VERSION,
    });
    axum::Json(body).into_response()
}

/// `POST /rollback` (token and feedback right as for `/ws`): the decoder goes back to the
/// model the session started with. 202: queued for the DSP thread; the HTTP answer says only
/// that, so the request carries no reply queue.
pub(super) async fn rollback(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if !feedback_right(&hub.config, &headers, &query) {
        hub.metrics.count_drop(DropReason::FeedbackRefused, 1);
        return (StatusCode::FORBIDDEN, FEEDBACK_REFUSED).into_response();
    }
    if hub.request(Request {
        command: Command::Rollback,
        reply: None,
    }) {
        (StatusCode::ACCEPTED, "rollback queued\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "feedback queue full; retry later\n",
        )
            .into_response()
    }
}
