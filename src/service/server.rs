//! The HTTP side: `/ws` (the protocol), `/metrics` (Prometheus text), `/health`, `/rollback`,
//! and the dashboard (`/`, from `web/`, embedded in the binary so it needs no files at run time).
//!
//! Connections are accepted by our own loop on hyper's HTTP/1 connection (axum::serve has no
//! header-read timeout, idle timeout or connection cap): every connection holds one of
//! `max_connections` permits until it closes or becomes a WebSocket client; at the cap the
//! oldest idle connection is closed for the new one, so silent sockets cannot lock out
//! `/health`. Every route checks `Host` first (421: DNS rebinding).
//!
//! Each WebSocket connection gets two tasks, as in axum's websocket example: a writer that
//! drains the client's bounded queue onto the socket (reporting drops to the client, pinging),
//! and a reader that parses, rate-limits and answers client messages. Checks happen before the
//! upgrade, in this order: token (401), `Origin` allow-list (403), client limit (503).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::hub::{ClientQueue, FeedbackAction, FeedbackRequest, Hub, Outgoing};
use super::metrics::{DropReason, Metrics};
use super::protocol::{self, ClientMessage, ErrorCode, ServerMessage, Status, StatusEvent};

/// Close codes (RFC 6455 §7.4.1).
pub mod close_code {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL: u16 = 1002;
    pub const UNSUPPORTED: u16 = 1003;
    pub const INVALID_DATA: u16 = 1007;
    pub const POLICY: u16 = 1008;
    pub const TOO_BIG: u16 = 1009;
}

/// How long a closing client gets to take its last queued messages.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Idle time after which a connection may be closed to make room for a new one.
const EVICT_AFTER: Duration = Duration::from_secs(1);

/// How long a new connection waits for an evicted idle one to give up its permit.
const ADMIT_WAIT: Duration = Duration::from_millis(500);

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
        .route("/rollback", post(rollback_handler))
        .layer(middleware::from_fn_with_state(hub.clone(), check_host))
        .with_state(hub)
}

/// One open HTTP connection, as the accept loop sees it.
struct Connection {
    in_flight: AtomicUsize,
    last_active: Mutex<Instant>,
    cancel: CancellationToken,
}

impl Connection {
    fn idle_since(&self) -> Option<Instant> {
        (self.in_flight.load(Ordering::Acquire) == 0)
            .then(|| *self.last_active.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn touch(&self) {
        *self.last_active.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }
}

/// A request in progress on a [`Connection`]: the connection is not idle meanwhile.
struct InFlight(Arc<Connection>);

impl InFlight {
    fn new(connection: Arc<Connection>) -> Self {
        connection.in_flight.fetch_add(1, Ordering::AcqRel);
        connection.touch();
        InFlight(connection)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The open HTTP connections, oldest first, and the permits that cap them.
struct Connections {
    permits: Arc<Semaphore>,
    open: Mutex<BTreeMap<u64, Arc<Connection>>>,
    next: AtomicU64,
}

impl Connections {
    fn new(max: usize) -> Self {
        Connections {
            permits: Arc::new(Semaphore::new(max)),
            open: Mutex::new(BTreeMap::new()),
            next: AtomicU64::new(0),
        }
    }

    /// A permit, closing the oldest idle connection if all are taken; `None` if every
    /// connection is busy.
    async fn admit(&self, metrics: &Metrics) -> Option<OwnedSemaphorePermit> {
        if let Ok(permit) = self.permits.clone().try_acquire_owned() {
            return Some(permit);
        }
        let oldest_idle = self
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|c| !c.cancel.is_cancelled())
            .filter_map(|c| c.idle_since().map(|since| (since, c.clone())))
            // A burst of honest clients is still sending its handshakes: not idle yet.
            .filter(|(since, _)| since.elapsed() >= EVICT_AFTER)
            .min_by_key(|(since, _)| *since);
        if let Some((_, connection)) = oldest_idle {
            connection.cancel.cancel();
        }
        metrics.count_drop(DropReason::MaxConnections, 1);
        tokio::time::timeout(ADMIT_WAIT, self.permits.clone().acquire_owned())
            .await
            .ok()
            .and_then(Result::ok)
    }

    fn register(&self) -> (u64, Arc<Connection>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let connection = Arc::new(Connection {
            in_flight: AtomicUsize::new(0),
            last_active: Mutex::new(Instant::now()),
            cancel: CancellationToken::new(),
        });
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, connection.clone());
        (id, connection)
    }

    fn remove(&self, id: u64) {
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }

    fn cancel_all(&self) {
        for connection in self.open.lock().unwrap_or_else(|e| e.into_inner()).values() {
            connection.cancel.cancel();
        }
    }
}

/// Serve until the hub's shutdown is triggered, then give connected clients a moment to
/// receive their close frame.
pub async fn serve(listener: TcpListener, hub: Arc<Hub>) -> std::io::Result<()> {
    let app = router(hub.clone());
    let connections = Arc::new(Connections::new(hub.config.max_connections));
    let tasks = TaskTracker::new();
    let shutdown = hub.shutdown.clone();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait() => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, or a connection reset before accept: back off
                // instead of spinning; the open connections' timeouts free descriptors.
                tracing::warn!("cannot accept a connection: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (hub, app, connections) = (hub.clone(), app.clone(), connections.clone());
        // Admission waits in the connection's task, so a flood never stalls the accept loop.
        tasks.spawn(async move {
            let Some(permit) = connections.admit(&hub.metrics).await else {
                return;
            };
            let (id, connection) = connections.register();
            Metrics::add(&hub.metrics.http_connections, 1);
            serve_connection(stream, app, &hub, connection).await;
            hub.metrics.http_connections.fetch_sub(1, Ordering::Relaxed);
            connections.remove(id);
            drop(permit);
        });
    }
    connections.cancel_all();
    tasks.close();
    let _ = tokio::time::timeout(CLOSE_GRACE, tasks.wait()).await;
    hub.sessions.close();
    let _ = tokio::time::timeout(CLOSE_GRACE + Duration::from_secs(1), hub.sessions.wait()).await;
    Ok(())
}

/// One HTTP/1 connection until it closes, becomes a WebSocket, times out or is evicted.
async fn serve_connection(stream: TcpStream, app: Router, hub: &Hub, connection: Arc<Connection>) {
    let _ = stream.set_nodelay(true);
    let service = {
        let connection = connection.clone();
        hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
            let app = app.clone();
            let busy = InFlight::new(connection.clone());
            async move {
                let response = tower::ServiceExt::oneshot(app, request).await;
                drop(busy);
                response
            }
        })
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(hub.config.header_timeout);
    let conn = builder
        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(conn);
    let idle = hub.config.idle_timeout;
    loop {
        let check = connection
            .idle_since()
            .map_or(Instant::now() + idle, |since| since + idle);
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    if e.is_timeout() {
                        hub.metrics.count_drop(DropReason::Timeout, 1);
                    }
                }
                return;
            }
            _ = connection.cancel.cancelled() => break,
            _ = tokio::time::sleep_until(check.into()) => {
                if connection.idle_since().is_some_and(|since| since.elapsed() >= idle) {
                    // Closing a keep-alive connection nobody uses is housekeeping (browsers
                    // keep them open), not a drop: nothing that was sent is lost.
                    tracing::debug!("closing an idle HTTP keep-alive connection");
                    break;
                }
            }
        }
    }
    conn.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(CLOSE_GRACE, conn.as_mut()).await;
}

/// DNS rebinding: a page on evil.example resolving to 127.0.0.1 sends `Host: evil.example`.
/// IP literals and `localhost` are always accepted, other names only when allowed.
pub fn host_allowed(allowed: &[String], host: Option<&[u8]>) -> bool {
    let Some(host) = host else {
        // HTTP/1.0 without Host: no name that could have been rebound.
        return true;
    };
    let Ok(host) = std::str::from_utf8(host) else {
        return false;
    };
    let name = if let Some(rest) = host.strip_prefix('[') {
        match rest.split_once(']') {
            Some((inner, port)) if port.is_empty() || port.starts_with(':') => {
                return inner.parse::<std::net::Ipv6Addr>().is_ok();
            }
            _ => return false,
        }
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            Some(_) => return false,
            None => host,
        }
    };
    if name.parse::<std::net::Ipv4Addr>().is_ok() || name.eq_ignore_ascii_case("localhost") {
        return true;
    }
    allowed
        .iter()
        .any(|a| a == "*" || a.eq_ignore_ascii_case(name))
}

async fn check_host(State(hub): State<Arc<Hub>>, request: Request, next: Next) -> Response {
    // RFC 9112 §3.2: more than one Host field is a 400, whatever the first one says.
    if request
        .headers()
        .get_all(header::HOST)
        .iter()
        .nth(1)
        .is_some()
    {
        return (StatusCode::BAD_REQUEST, "more than one Host header\n").into_response();
    }
    let host = request.headers().get(header::HOST).map(|v| v.as_bytes());
    if !host_allowed(&hub.config.allowed_hosts, host) {
        return (
            StatusCode::MISDIRECTED_REQUEST,
            "Host not allowed (add it with --allowed-host)\n",
        )
            .into_response();
    }
    next.run(request).await
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

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        "missing or wrong token\n",
    )
        .into_response()
}

async fn metrics_handler(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if let Some(token) = &hub.config.token {
        if !authorized(token, &headers, &query) {
            return unauthorized();
        }
    }
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

/// Whether a connection that passed the token check may send feedback and roll back.
fn feedback_right(
    config: &super::ServiceConfig,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
) -> bool {
    if !config.allow_feedback {
        return false;
    }
    match &config.feedback_token {
        Some(token) => {
            headers
                .get("x-feedback-token")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|t| same_secret(t.trim(), token))
                || query
                    .get("feedback_token")
                    .is_some_and(|t| same_secret(t, token))
        }
        // Validation refuses allow_feedback with neither token, so this client has the token.
        None => config.token.is_some(),
    }
}

/// `POST /rollback` (token and feedback right as for `/ws`): the decoder goes back to the
/// model the session started with. 202: queued for the DSP thread.
async fn rollback_handler(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if let Some(token) = &hub.config.token {
        if !authorized(token, &headers, &query) {
            return unauthorized();
        }
    }
    if !feedback_right(&hub.config, &headers, &query) {
        hub.metrics.count_drop(DropReason::FeedbackRefused, 1);
        return (StatusCode::FORBIDDEN, FEEDBACK_REFUSED).into_response();
    }
    let request = FeedbackRequest {
        label: FeedbackRequest::NO_LABEL,
        seq: None,
        // Nobody reads this reply: the HTTP answer is only whether the request was queued.
        reply: Arc::new(ClientQueue::with_bytes(4, 64 * 1024)),
        action: FeedbackAction::Rollback,
    };
    if hub.feedback(request) {
        (StatusCode::ACCEPTED, "rollback queued\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "feedback queue full; retry later\n",
        )
            .into_response()
    }
}

const FEEDBACK_REFUSED: &str = "feedback is not allowed on this connection: the service must run \
     with --allow-feedback and the client present the feedback token \
     (X-Feedback-Token header or ?feedback_token=)\n";

fn authorized(token: &str, headers: &HeaderMap, query: &HashMap<String, String>) -> bool {
    let from_header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| same_secret(t.trim(), token));
    from_header || query.get("token").is_some_and(|t| same_secret(t, token))
}

/// Browsers send `Origin`; other clients usually do not. With an empty allow-list only local
/// pages (localhost, 127.0.0.1, [::1]) may connect. `null` (sandboxed frames, `file:` pages,
/// redirects) is foreign: any page can produce it.
pub fn origin_allowed(allowed: &[String], origin: Option<&str>) -> bool {
    let Some(origin) = origin else {
        return true;
    };
    if allowed.is_empty() {
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
struct ClientSlot {
    metrics: Arc<Metrics>,
    _permit: OwnedSemaphorePermit,
}

impl ClientSlot {
    fn new(metrics: Arc<Metrics>, permit: OwnedSemaphorePermit) -> Self {
        Metrics::add(&metrics.clients, 1);
        ClientSlot {
            metrics,
            _permit: permit,
        }
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        self.metrics.clients.fetch_sub(1, Ordering::Relaxed);
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
            return unauthorized();
        }
    }
    // Bytes that are not text cannot match an allowed origin: present and foreign.
    let origin = headers
        .get(header::ORIGIN)
        .map(|v| v.to_str().unwrap_or("\u{0}"));
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
    let Ok(permit) = hub.client_slots.clone().try_acquire_owned() else {
        hub.metrics.count_drop(DropReason::MaxClients, 1);
        return (StatusCode::SERVICE_UNAVAILABLE, "too many clients\n").into_response();
    };
    let slot = ClientSlot::new(hub.metrics.clone(), permit);
    let can_feedback = feedback_right(&hub.config, &headers, &query);
    let sessions = hub.sessions.clone();
    let limit = hub.config.max_message_bytes;
    // Small per-connection buffers: tungstenite's defaults (128 KiB each way) cost 256 MiB
    // for 1 000 clients; our messages are a few KiB and each is written as soon as it is sent.
    ws.max_message_size(limit)
        .max_frame_size(limit)
        .read_buffer_size(CONNECTION_READ_BUFFER)
        .write_buffer_size(0)
        .on_upgrade(move |socket| {
            sessions.track_future(async move {
                Metrics::add(&hub.metrics.connections_total, 1);
                client_session(socket, hub, can_feedback).await;
                drop(slot);
            })
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

/// What a connection may do beyond reading and subscribing, and its feedback budget.
struct Rights {
    feedback: bool,
    bucket: TokenBucket,
}

async fn client_session(socket: WebSocket, hub: Arc<Hub>, can_feedback: bool) {
    let client = hub.connect();
    let (sender, mut receiver) = socket.split();
    let closing = Arc::new(Closing::default());
    let idle = hub.config.ws_idle_timeout;
    let mut writer = tokio::spawn(write_loop(
        sender,
        client.clone(),
        hub.metrics.clone(),
        closing.clone(),
        // Three pings per idle timeout: a live client answers one in time even if one is late.
        idle / 3,
    ));
    let mut bucket = TokenBucket::new(hub.config.client_messages_per_second);
    let mut rights = Rights {
        feedback: can_feedback,
        bucket: TokenBucket::per_minute(hub.config.feedback_per_minute),
    };
    let shutdown = hub.shutdown.clone();
    let mut heard = Instant::now();
    loop {
        let message = tokio::select! {
            message = receiver.next() => message,
            _ = shutdown.wait() => {
                closing.request(close_code::GOING_AWAY, "server shutting down");
                break;
            }
            _ = tokio::time::sleep_until((heard + idle).into()) => {
                hub.metrics.count_drop(DropReason::Timeout, 1);
                closing.request(close_code::GOING_AWAY, "idle: nothing received, not even a pong");
                break;
            }
            _ = &mut writer => break,
        };
        heard = Instant::now();
        match message {
            None => break,
            Some(Err(e)) => {
                if let Some((code, reason)) = close_for(e) {
                    closing.request(code, reason);
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
                if let Err(violation) = handle_text(&hub, &client, &mut rights, text.as_str()) {
                    closing.request(close_code::INVALID_DATA, violation);
                    break;
                }
            }
            Some(Ok(Message::Binary(_))) => {
                reply(
                    &hub,
                    &client,
                    ServerMessage::error(
                        ErrorCode::Malformed,
                        "binary messages are not part of the protocol; send JSON text",
                    ),
                );
                closing.request(close_code::UNSUPPORTED, "binary messages are not accepted");
                break;
            }
            Some(Ok(Message::Close(_))) => {
                closing.request(close_code::NORMAL, "");
                break;
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
        }
    }
    hub.disconnect(&client);
    if let Some(page) = hub.page.get() {
        page.set_ready(Arc::as_ptr(&client) as usize, false);
    }
    closing.request(close_code::NORMAL, "");
    if !writer.is_finished()
        && tokio::time::timeout(CLOSE_GRACE, &mut writer)
            .await
            .is_err()
    {
        writer.abort();
    }
}

/// The close frame for a read error, when the peer is still there to get one.
fn close_for(error: axum::Error) -> Option<(u16, &'static str)> {
    use tokio_tungstenite::tungstenite::Error as WsError;
    let inner = error.into_inner();
    match inner.downcast_ref::<WsError>() {
        Some(WsError::Capacity(_)) => Some((close_code::TOO_BIG, "message too big")),
        Some(WsError::Utf8(_)) => Some((close_code::INVALID_DATA, "text is not valid UTF-8")),
        Some(WsError::Protocol(_)) => Some((close_code::PROTOCOL, "WebSocket protocol error")),
        Some(_) => None,
        None => {
            let text = inner.to_string();
            if text.contains("Space limit exceeded") || text.contains("too long") {
                Some((close_code::TOO_BIG, "message too big"))
            } else if text.contains("UTF-8") {
                Some((close_code::INVALID_DATA, "text is not valid UTF-8"))
            } else if text.contains("protocol error") {
                Some((close_code::PROTOCOL, "WebSocket protocol error"))
            } else {
                None
            }
        }
    }
}

fn reply(hub: &Hub, client: &ClientQueue, message: ServerMessage) {
    let dropped = client.push_counted(Outgoing {
        text: message.to_json().into(),
        arrived: None,
    });
    if dropped > 0 {
        hub.metrics.count_drop(DropReason::ClientQueue, dropped);
    }
}

/// Whether feedback or rollback may go to the DSP thread now; answers the client if not.
fn feedback_allowed(hub: &Hub, client: &ClientQueue, rights: &mut Rights) -> bool {
    if !rights.feedback {
        hub.metrics.count_drop(DropReason::FeedbackRefused, 1);
        reply(
            hub,
            client,
            ServerMessage::error(ErrorCode::Forbidden, FEEDBACK_REFUSED.trim_end()),
        );
        return false;
    }
    if !rights.bucket.take() {
        hub.metrics.count_drop(DropReason::FeedbackRefused, 1);
        reply(
            hub,
            client,
            ServerMessage::error(
                ErrorCode::RateLimited,
                format!(
                    "more than {} feedback/rollback/recalibrate messages per minute; ignored",
                    hub.config.feedback_per_minute
                ),
            ),
        );
        return false;
    }
    true
}

/// Answer one client message. `Err`: the text was not a JSON object with a `type`, a
/// protocol violation that closes the connection (1007) after the error reply.
fn handle_text(
    hub: &Hub,
    client: &Arc<ClientQueue>,
    rights: &mut Rights,
    text: &str,
) -> Result<(), &'static str> {
    let message = match protocol::parse_client(text) {
        Ok(message) => message,
        Err(error) => {
            let violation = error.code == ErrorCode::Malformed;
            reply(hub, client, ServerMessage::Error(error));
            return if violation {
                Err("not a JSON object with a string \"type\"")
            } else {
                Ok(())
            };
        }
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
        ClientMessage::PageReady { ready } => match hub.page.get() {
            // The client's address is its key among the connected clients.
            Some(page) => page.set_ready(Arc::as_ptr(client) as usize, ready),
            None => reply(
                hub,
                client,
                ServerMessage::error(ErrorCode::BadRequest, "this service runs no paradigm"),
            ),
        },
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
            if !feedback_allowed(hub, client, rights) {
                return Ok(());
            }
            let classes = hub.classes();
            let Some(label) = classes.iter().position(|c| *c == class) else {
                let detail = if classes.is_empty() {
                    "this service has no decoder to learn".to_owned()
                } else {
                    format!(
                        "class {} is unknown; allowed: {}",
                        protocol::quote(&class),
                        classes.join(", ")
                    )
                };
                reply(
                    hub,
                    client,
                    ServerMessage::error(ErrorCode::BadRequest, detail),
                );
                return Ok(());
            };
            let request = FeedbackRequest {
                label,
                seq,
                reply: client.clone(),
                action: FeedbackAction::Learn,
            };
            if !hub.feedback(request) {
                reply(
                    hub,
                    client,
                    ServerMessage::error(ErrorCode::Busy, "feedback queue full; retry later"),
                );
            }
        }
        ClientMessage::Rollback {} | ClientMessage::Recalibrate {} => {
            if !feedback_allowed(hub, client, rights) {
                return Ok(());
            }
            let action = if matches!(message, ClientMessage::Rollback {}) {
                FeedbackAction::Rollback
            } else {
                FeedbackAction::Recalibrate
            };
            let request = FeedbackRequest {
                label: FeedbackRequest::NO_LABEL,
                seq: None,
                reply: client.clone(),
                action,
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
    Ok(())
}

/// Bytes read from a client socket at a time.
const CONNECTION_READ_BUFFER: usize = 8 * 1024;

async fn write_loop(
    mut sender: futures_util::stream::SplitSink<WebSocket, Message>,
    client: Arc<ClientQueue>,
    metrics: Arc<Metrics>,
    closing: Arc<Closing>,
    ping_every: Duration,
) {
    let mut reported = 0;
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
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
            _ = ping.tick() => {
                if sender.send(Message::Ping(Default::default())).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// `rate` messages per second with a burst of `burst`.
struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// `rate` per second, burst `rate`.
    fn new(rate: u32) -> Self {
        TokenBucket {
            rate: rate as f64,
            burst: rate as f64,
            tokens: rate as f64,
            last: Instant::now(),
        }
    }

    /// `count` per minute, burst `count`.
    fn per_minute(count: u32) -> Self {
        TokenBucket {
            rate: count as f64 / 60.0,
            ..Self::new(count)
        }
    }

    fn take(&mut self) -> bool {
        let now = Instant::now();
        let elapsed = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
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
        assert!(!origin_allowed(&[], Some("null")));
        assert!(!origin_allowed(&[], Some("\u{0}")));
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
    fn hosts() {
        let none: &[String] = &[];
        for ok in [
            "127.0.0.1:8765",
            "localhost:8765",
            "LOCALHOST",
            "[::1]:8765",
            "10.0.0.7",
        ] {
            assert!(host_allowed(none, Some(ok.as_bytes())), "{ok}");
        }
        for bad in [
            "evil.example:8765",
            "evil.example",
            "127.0.0.1.evil.example",
            "[::1",
            "[nope]:1",
            "localhost:80x",
        ] {
            assert!(!host_allowed(none, Some(bad.as_bytes())), "{bad}");
        }
        assert!(!host_allowed(none, Some(b"\xffhost")));
        assert!(host_allowed(none, None));
        let list = vec!["bci.lab".to_owned()];
        assert!(host_allowed(&list, Some(b"BCI.lab:8765")));
        assert!(!host_allowed(&list, Some(b"other.lab")));
        assert!(host_allowed(&["*".to_owned()], Some(b"other.lab")));
    }

    #[test]
    fn feedback_bucket_is_per_minute() {
        let mut bucket = TokenBucket::per_minute(3);
        assert_eq!((0..10).filter(|_| bucket.take()).count(), 3);
    }

    #[test]
    fn bucket_limits_bursts() {
        let mut bucket = TokenBucket::new(5);
        let taken = (0..20).filter(|_| bucket.take()).count();
        assert!((5..=6).contains(&taken), "{taken}");
    }
}
