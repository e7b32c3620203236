//! The HTTP side: `/ws` (the protocol), `/metrics` (Prometheus text), `/health`, `/rollback`,
//! and the dashboard (`/`, from `web/`, embedded in the binary so it needs no files at run time).
//! One file per job:
//!
//! - [`listener`]: our own accept loop on hyper's HTTP/1 connection (axum::serve has no
//!   header-read timeout, idle timeout or connection cap): every connection holds one of
//!   `max_connections` permits until it closes or becomes a WebSocket client; at the cap the
//!   oldest idle connection is closed for the new one, so silent sockets cannot lock out
//!   `/health`.
//! - [`auth`]: the checks, as layers: every route checks `Host` first (421: DNS rebinding;
//!   two `Host` fields: 400); `/ws`, `/metrics` and `/rollback` then check the token (401) in
//!   one layer; `/ws` checks `Origin` (403) and the feedback right decides what a client may
//!   change.
//! - [`assets`]: the dashboard and paradigm pages.
//! - [`endpoints`]: `/metrics`, `/health`, `/rollback`.
//! - [`ws`]: the WebSocket session. Each connection gets two tasks, as in axum's websocket
//!   example: a writer that drains the client's bounded queue onto the socket (reporting drops
//!   to the client, pinging), and a reader that parses, rate-limits ([`rate`]) and answers
//!   client messages. After the token, before the upgrade: `Origin` (403), client limit (503).
//!   Close codes are axum's ([`axum::extract::ws::close_code`]).

mod assets;
mod auth;
mod endpoints;
mod listener;
mod rate;
mod ws;

use std::sync::Arc;
use std::time::Duration;

use axum::middleware;
use axum::routing::{get, post};
use axum::Router;

use super::hub::Hub;

pub use auth::{host_allowed, origin_allowed};
pub use listener::serve;

/// How long a closing client gets to take its last queued messages (and the accept loop's
/// open connections to finish at shutdown).
const CLOSE_GRACE: Duration = Duration::from_secs(2);

pub fn router(hub: Arc<Hub>) -> Router {
    // What reads data or changes the model needs the token (when one is set); the pages hold
    // no data and no secret, and `/health` answers orchestrators that have no token.
    let protected = Router::new()
        .route("/ws", get(ws::upgrade))
        .route("/metrics", get(endpoints::metrics))
        .route("/rollback", post(endpoints::rollback))
        .route_layer(middleware::from_fn_with_state(
            hub.clone(),
            auth::require_token,
        ));
    assets::routes()
        .route("/health", get(endpoints::health))
        .merge(protected)
        .layer(middleware::from_fn_with_state(
            hub.clone(),
            auth::check_host,
        ))
        .with_state(hub)
}
