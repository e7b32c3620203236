//! The HTTP side: `/ws` (the protocol), `/metrics` (Prometheus text), `/health`, and the
//! dashboard (`/`, from `web/`, embedded in the binary so it needs no files at run time).
//!
//! Each WebSocket connection gets two tasks, as in axum's websocket example: a writer that
//! drains the client's bounded queue onto the socket (reporting drops to the client), and a
//! reader that parses, rate-limits and answers client messages. Checks happen before the
//! upgrade, in this order: token (401), `Origin` allow-list (403), client limit (503).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio::sync::Notify;

use super::hub::{ClientQueue, FeedbackRequest, Hub, Outgoing};
use super::metrics::{DropReason, Metrics};
use super::protocol::{self, ClientMessage, ErrorCode, ServerMessage, Status, StatusEvent};

/// Close codes (RFC 6455 §7.4.1).
pub mod close_code {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const POLICY: u16 = 1008;
    pub const TOO_BIG: u16 = 1009;
}

/// How long a closing client gets to take its last queued messages.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

pub fn router(hub: Arc<Hub>) -> Router {
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
        .route("/ws", get(ws_handler))
        .route("/metrics", get(metrics_handler))
        .route("/health", get(health_handler))
        .with_state(hub)
}

/// Serve until the hub's shutdown is triggered, then give connected clients a moment to
/// receive their close frame.
pub async fn serve(listener: TcpListener, hub: Arc<Hub>) -> std::io::Result<()> {
    let shutdown = hub.shutdown.clone();
    axum::serve(listener, router(hub.clone()))
        .with_graceful_shutdown(async move { shutdown.wait().await })
        .await?;
    let deadline = Instant::now() + CLOSE_GRACE + Duration::from_secs(1);
    while hub.metrics.clients.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// The dashboard's files, compiled in so the binary serves them from anywhere.
const DASHBOARD_HTML: &str = include_str!("../../web/index.html");
const DASHBOARD_JS: &str = include_str!("../../web/dashboard.js");
const DASHBOARD_CSS: &str = include_str!("../../web/dashboard.css");
const PARADIGM_HTML: &str = include_str!("../../web/paradigm.html");
const PARADIGM_JS: &str = include_str!("../../web/paradigm.js");
const PARADIGM_CSS: &str = include_str!("../../web/paradigm.css");

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

async fn metrics_handler(State(hub): State<Arc<Hub>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        hub.metrics.render(),
    )
        .into_response()
}

async fn health_handler(State(hub): State<Arc<Hub>>) -> Response {
    let body = serde_json::json!({
        "status": if hub.shutdown.is_triggered() { "stopping" } else { "ok" },
        "clients": hub.metrics.clients.load(Ordering::Relaxed),
        "protocol": protocol::PROTOCOL_VERSION,
    });
    axum::Json(body).into_response()
}

/// Compare without an early exit on the first differing byte.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn authorized(token: &str, headers: &HeaderMap, query: &HashMap<String, String>) -> bool {
    let from_header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| same_secret(t.trim(), token));
    from_header || query.get("token").is_some_and(|t| same_secret(t, token))
}

/// Browsers send `Origin`; other clients usually do not. With an empty allow-list only local
/// pages (localhost, 127.0.0.1, [::1], or `null` for a file) may connect.
pub fn origin_allowed(allowed: &[String], origin: Option<&str>) -> bool {
    let Some(origin) = origin else {
        return true;
    };
    if allowed.is_empty() {
        if origin == "null" {
            return true;
        }
        let host = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .unwrap_or("");
        let host = if host.starts_with('[') {
            host.split(']')
                .next()
                .map(|h| format!("{h}]"))
                .unwrap_or_default()
        } else {
            host.split(':').next().unwrap_or("").to_owned()
        };
        return ["localhost", "127.0.0.1", "[::1]"].contains(&host.as_str());
    }
    allowed.iter().any(|a| a == "*" || a == origin)
}

/// A place among `max_clients`; released when dropped (disconnect or failed upgrade).
struct ClientSlot(Arc<Metrics>);

impl Drop for ClientSlot {
    fn drop(&mut self) {
        self.0.clients.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn ws_handler(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    if let Some(token) = &hub.config.token {
        if !authorized(token, &headers, &query) {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "missing or wrong token\n",
            )
                .into_response();
        }
    }
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    if !origin_allowed(&hub.config.allowed_origins, origin) {
        return (StatusCode::FORBIDDEN, "origin not allowed\n").into_response();
    }
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => return rejection.into_response(),
    };
    if hub.shutdown.is_triggered() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    }
    let metrics = hub.metrics.clone();
    let before = metrics.clients.fetch_add(1, Ordering::Relaxed);
    let slot = ClientSlot(metrics.clone());
    if before as usize >= hub.config.max_clients {
        metrics.count_drop(DropReason::MaxClients, 1);
        drop(slot);
        return (StatusCode::SERVICE_UNAVAILABLE, "too many clients\n").into_response();
    }
    let limit = hub.config.max_message_bytes;
    // Small per-connection buffers: tungstenite's defaults (128 KiB each way) cost 256 MiB
    // for 1 000 clients; our messages are a few KiB and each is written as soon as it is sent.
    ws.max_message_size(limit)
        .max_frame_size(limit)
        .read_buffer_size(CONNECTION_READ_BUFFER)
        .write_buffer_size(0)
        .on_upgrade(move |socket| async move {
            Metrics::add(&hub.metrics.connections_total, 1);
            client_session(socket, hub).await;
            drop(slot);
        })
}

/// Close request from the reader (or shutdown) to the writer.
#[derive(Default)]
struct Closing {
    notify: Notify,
    frame: Mutex<Option<(u16, &'static str)>>,
}

impl Closing {
    fn request(&self, code: u16, reason: &'static str) {
        let mut frame = self.frame.lock().unwrap_or_else(|e| e.into_inner());
        frame.get_or_insert((code, reason));
        drop(frame);
        self.notify.notify_one();
    }

    fn requested(&self) -> Option<(u16, &'static str)> {
        *self.frame.lock().unwrap_or_else(|e| e.into_inner())
    }
}

async fn client_session(socket: WebSocket, hub: Arc<Hub>) {
    let client = hub.connect();
    let (sender, mut receiver) = socket.split();
    let closing = Arc::new(Closing::default());
    let mut writer = tokio::spawn(write_loop(
        sender,
        client.clone(),
        hub.metrics.clone(),
        closing.clone(),
    ));
    let mut bucket = TokenBucket::new(hub.config.client_messages_per_second);
    let shutdown = hub.shutdown.clone();
    loop {
        let message = tokio::select! {
            message = receiver.next() => message,
            _ = shutdown.wait() => {
                closing.request(close_code::GOING_AWAY, "server shutting down");
                break;
            }
            _ = &mut writer => break,
        };
        match message {
            None => break,
            Some(Err(e)) => {
                if is_too_big(e) {
                    closing.request(close_code::TOO_BIG, "message too big");
                }
                break;
            }
            Some(Ok(Message::Text(text))) => {
                if !bucket.take() {
                    hub.metrics.count_drop(DropReason::RateLimited, 1);
                    reply(
                        &hub,
                        &client,
                        ServerMessage::error(
                            ErrorCode::RateLimited,
                            format!(
                                "more than {} messages per second; message ignored",
                                hub.config.client_messages_per_second
                            ),
                        ),
                    );
                    continue;
                }
                handle_text(&hub, &client, text.as_str());
            }
            Some(Ok(Message::Binary(_))) => {
                if bucket.take() {
                    reply(
                        &hub,
                        &client,
                        ServerMessage::error(
                            ErrorCode::Malformed,
                            "binary messages are not part of the protocol; send JSON text",
                        ),
                    );
                }
            }
            Some(Ok(Message::Close(_))) => {
                closing.request(close_code::NORMAL, "");
                break;
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
        }
    }
    hub.disconnect(&client);
    closing.request(close_code::NORMAL, "");
    if !writer.is_finished()
        && tokio::time::timeout(CLOSE_GRACE, &mut writer)
            .await
            .is_err()
    {
        writer.abort();
    }
}

fn is_too_big(error: axum::Error) -> bool {
    use tokio_tungstenite::tungstenite::Error as WsError;
    let inner = error.into_inner();
    match inner.downcast_ref::<WsError>() {
        Some(WsError::Capacity(_)) => true,
        Some(_) => false,
        None => {
            let text = inner.to_string();
            text.contains("Space limit exceeded") || text.contains("too long")
        }
    }
}

fn reply(hub: &Hub, client: &ClientQueue, message: ServerMessage) {
    if !client.push(Outgoing {
        text: message.to_json().into(),
        arrived: None,
    }) {
        hub.metrics.count_drop(DropReason::ClientQueue, 1);
    }
}

fn handle_text(hub: &Hub, client: &Arc<ClientQueue>, text: &str) {
    let message = match protocol::parse_client(text) {
        Ok(message) => message,
        Err(error) => return reply(hub, client, ServerMessage::Error(error)),
    };
    match message {
        ClientMessage::Ping { id } => {
            reply(hub, client, ServerMessage::Pong(protocol::Pong { id }))
        }
        ClientMessage::ClockSync { id, client_time } => {
            let message = match hub.page.get().and_then(|page| page.clock.now()) {
                Some(stream_time) => ServerMessage::ClockSync(protocol::ClockSyncReply {
                    id,
                    client_time,
                    stream_time,
                }),
                None => ServerMessage::error(
                    ErrorCode::Busy,
                    "no sample has arrived yet, so there is no stream time; retry",
                ),
            };
            reply(hub, client, message)
        }
        ClientMessage::CuePainted { trial, paint_time } => {
            match hub.page.get().map(|page| page.painted(trial, paint_time)) {
                Some(Ok(report)) => hub.broadcast(&ServerMessage::CueTiming(report), None, None),
                Some(Err(e)) => reply(hub, client, ServerMessage::error(ErrorCode::BadRequest, e)),
                None => reply(
                    hub,
                    client,
                    ServerMessage::error(ErrorCode::BadRequest, "this service runs no paradigm"),
                ),
            }
        }
        ClientMessage::Subscribe { topics } => {
            topics.iter().for_each(|t| client.subscribe(*t));
            reply(
                hub,
                client,
                ServerMessage::Subscribed(protocol::Subscribed {
                    topics: client.topics(),
                }),
            );
        }
        ClientMessage::Unsubscribe { topics } => {
            topics.iter().for_each(|t| client.unsubscribe(*t));
            reply(
                hub,
                client,
                ServerMessage::Subscribed(protocol::Subscribed {
                    topics: client.topics(),
                }),
            );
        }
        ClientMessage::Feedback { class, seq } => {
            let classes = hub.classes();
            let Some(label) = classes.iter().position(|c| *c == class) else {
                let detail = if classes.is_empty() {
                    "this service has no decoder to learn".to_owned()
                } else {
                    format!(
                        "class {class:?} is unknown; allowed: {}",
                        classes.join(", ")
                    )
                };
                return reply(
                    hub,
                    client,
                    ServerMessage::error(ErrorCode::BadRequest, detail),
                );
            };
            let request = FeedbackRequest {
                label,
                seq,
                reply: client.clone(),
            };
            if !hub.feedback(request) {
                reply(
                    hub,
                    client,
                    ServerMessage::error(ErrorCode::Busy, "feedback queue full; retry later"),
                );
            }
        }
    }
}

/// Bytes read from a client socket at a time.
const CONNECTION_READ_BUFFER: usize = 8 * 1024;

async fn write_loop(
    mut sender: futures_util::stream::SplitSink<WebSocket, Message>,
    client: Arc<ClientQueue>,
    metrics: Arc<Metrics>,
    closing: Arc<Closing>,
) {
    let mut reported = 0;
    loop {
        loop {
            let dropped = client.dropped();
            if dropped > reported {
                let status = ServerMessage::Status(Status {
                    dropped_total: Some(dropped),
                    dropped: Some(dropped - reported),
                    ..Status::event(StatusEvent::MessagesDropped)
                });
                reported = dropped;
                if sender
                    .send(Message::Text(status.to_json().into()))
                    .await
                    .is_err()
                {
                    return;
                }
                Metrics::add(&metrics.messages_sent, 1);
            }
            let Some(message) = client.pop() else { break };
            if sender
                .send(Message::Text(message.text.as_ref().into()))
                .await
                .is_err()
            {
                return;
            }
            Metrics::add(&metrics.messages_sent, 1);
            if let Some(arrived) = message.arrived {
                metrics.observe_latency(arrived.elapsed());
            }
        }
        if let Some((code, reason)) = closing.requested() {
            let _ = sender
                .send(Message::Close(Some(CloseFrame {
                    code,
                    reason: reason.into(),
                })))
                .await;
            let _ = sender.close().await;
            return;
        }
        tokio::select! {
            _ = client.notify.notified() => {}
            _ = closing.notify.notified() => {}
        }
    }
}

/// `rate` messages per second with a burst of `rate`.
struct TokenBucket {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    fn new(rate: u32) -> Self {
        TokenBucket {
            rate: rate as f64,
            tokens: rate as f64,
            last: Instant::now(),
        }
    }

    fn take(&mut self) -> bool {
        let now = Instant::now();
        let elapsed = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        assert!(origin_allowed(&[], None));
        assert!(origin_allowed(&[], Some("null")));
        assert!(origin_allowed(&[], Some("http://localhost:8000")));
        assert!(origin_allowed(&[], Some("http://127.0.0.1")));
        assert!(origin_allowed(&[], Some("http://[::1]:3000")));
        assert!(!origin_allowed(&[], Some("https://evil.example")));
        assert!(!origin_allowed(&[], Some("http://localhost.evil.example")));
        let list = vec!["https://app.example".to_owned()];
        assert!(origin_allowed(&list, Some("https://app.example")));
        assert!(!origin_allowed(&list, Some("http://localhost:8000")));
        assert!(origin_allowed(
            &["*".to_owned()],
            Some("https://any.example")
        ));
    }

    #[test]
    fn bucket_limits_bursts() {
        let mut bucket = TokenBucket::new(5);
        let taken = (0..20).filter(|_| bucket.take()).count();
        assert!((5..=6).contains(&taken), "{taken}");
    }
}
