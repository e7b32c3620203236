//! The live service: a pipeline driven by a source, its commands streamed to WebSocket clients.
//!
//! ```text
//!  source thread ──(bounded)──► DSP thread ──► per-client bounded queues ──► WebSocket tasks
//!  (blocking       std channel  (Engine::on_item:     (drop-oldest, loss       (axum, tokio)
//!   next_item)                   pipeline, controller, counted and reported)
//!                                closed loop, sinks)
//!                      ▲                                                        │
//!                      └──── client requests (learn, rollback, recalibrate; ◄────┘
//!                            bounded, try_send)
//! ```
//!
//! The synchronous hot path runs on its own OS thread and never waits on a client: it pushes
//! each message into every client's bounded queue, dropping that client's oldest message when
//! the queue is full. Async code lives only at the edges ([`server`], [`client`]).
//!
//! - [`protocol`]: the versioned JSON messages (docs/protocol.md).
//! - [`hub`]: what the DSP thread and the client tasks share (client queues, `hello`, feedback).
//! - [`runtime`]: the source and DSP threads and [`Service`] (start, address, shutdown).
//! - [`server`]: the axum router (`/ws`, `/metrics`, `/health`, `/rollback`), one file per
//!   job: accept loop and limits, authentication layers, pages, endpoints, WebSocket session.
//! - [`metrics`]: counters and the latency histogram in the Prometheus text format.
//! - [`client`]: the small client behind `neurostream listen`.
//! - [`nats`]: the optional NATS JetStream publisher (`[nats]`), fed like a client queue.

pub mod client;
pub mod hub;
pub mod metrics;
pub mod nats;
pub mod protocol;
pub mod runtime;
pub mod server;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use runtime::Service;

/// Default address: loopback only; `--bind` exposes the service.
pub const DEFAULT_BIND: &str = "127.0.0.1:8765";

/// Settings of the WebSocket service.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceConfig {
    /// Address to listen on (port 0: any free port, see [`Service::local_addr`]).
    pub bind: SocketAddr,
    /// When set, every connection must present it (`Authorization: Bearer T` or `?token=T`).
    pub token: Option<String>,
    /// Connections beyond this many are refused with HTTP 503.
    pub max_clients: usize,
    /// Browser origins allowed to connect (exact match; `"*"` allows any). Empty: only
    /// requests without an `Origin`, `Origin: null` (a local file) and localhost origins.
    pub allowed_origins: Vec<String>,
    /// Messages queued per client before its oldest ones are dropped.
    pub client_queue: usize,
    /// Bytes queued per client before its oldest messages are dropped (whichever of this and
    /// `client_queue` is reached first); one message larger than this is still delivered alone.
    pub client_queue_bytes: usize,
    /// Open HTTP connections that have not become WebSocket clients; at the cap the oldest
    /// idle one is closed for a new one.
    pub max_connections: usize,
    /// A request's headers must arrive within this time, else the connection is closed.
    pub header_timeout: Duration,
    /// An HTTP connection with no request in flight is closed after this time.
    pub idle_timeout: Duration,
    /// A WebSocket client that sends nothing (not even a pong to our pings) for this long is
    /// closed with 1001 and its place among `max_clients` freed.
    pub ws_idle_timeout: Duration,
    /// `Host` names accepted besides IP literals and `localhost` (`"*"`: any); others get 421
    /// (DNS rebinding).
    pub allowed_hosts: Vec<String>,
    /// Feedback and rollback are refused unless this is set.
    pub allow_feedback: bool,
    /// When set, feedback needs it (`X-Feedback-Token: T` or `?feedback_token=T`); when not,
    /// a client authenticated with `token` may send feedback.
    pub feedback_token: Option<String>,
    /// Feedback or rollback messages per client per minute.
    pub feedback_per_minute: u32,
    /// Largest client message, bytes; larger ones close the connection with code 1009.
    pub max_message_bytes: usize,
    /// Client messages per second (token bucket, burst of the same size); more get an
    /// `error` with code `rate_limited`.
    pub client_messages_per_second: u32,
    /// Record the session (raw signal, markers, commands, feedback) to this XDF file.
    pub record: Option<crate::record::RecordConfig>,
    /// Publish the session to NATS JetStream (see [`nats`]).
    pub nats: Option<crate::config::nats::NatsConfig>,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            bind: DEFAULT_BIND.parse().expect("static address"),
            token: None,
            max_clients: 64,
            allowed_origins: Vec::new(),
            client_queue: 256,
            client_queue_bytes: 1024 * 1024,
            max_connections: 256,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            ws_idle_timeout: Duration::from_secs(60),
            allowed_hosts: Vec::new(),
            allow_feedback: false,
            feedback_token: None,
            feedback_per_minute: 30,
            max_message_bytes: 64 * 1024,
            client_messages_per_second: 50,
            record: None,
            nats: None,
        }
    }
}

impl ServiceConfig {
    pub fn validate(&self) -> crate::Result<()> {
        let bad = |detail: String| Err(crate::Error::config("service", detail));
        if self.max_clients == 0 {
            return bad("max_clients = 0; allowed: at least 1".into());
        }
        if self.client_queue == 0 {
            return bad("client_queue = 0; allowed: at least 1 message".into());
        }
        if self.max_message_bytes < 256 {
            return bad(format!(
                "max_message_bytes = {}; allowed: at least 256",
                self.max_message_bytes
            ));
        }
        if self.client_messages_per_second == 0 {
            return bad("client_messages_per_second = 0; allowed: at least 1".into());
        }
        if matches!(&self.token, Some(t) if t.is_empty()) {
            return bad("token is empty; give a non-empty token or none".into());
        }
        if matches!(&self.feedback_token, Some(t) if t.is_empty()) {
            return bad("feedback_token is empty; give a non-empty token or none".into());
        }
        if self.client_queue_bytes < 4096 {
            return bad(format!(
                "client_queue_bytes = {}; allowed: at least 4096",
                self.client_queue_bytes
            ));
        }
        if self.max_connections == 0 {
            return bad("max_connections = 0; allowed: at least 1".into());
        }
        for (name, value) in [
            ("header_timeout", self.header_timeout),
            ("idle_timeout", self.idle_timeout),
            ("ws_idle_timeout", self.ws_idle_timeout),
        ] {
            if value < Duration::from_millis(100) {
                return bad(format!(
                    "{name} = {} s; allowed: at least 0.1 s",
                    value.as_secs_f64()
                ));
            }
        }
        if self.allow_feedback && self.token.is_none() && self.feedback_token.is_none() {
            return bad(
                "allow_feedback without token or feedback_token would let anyone who reaches \
                 the port train the decoder; give --feedback-token (or --token)"
                    .into(),
            );
        }
        if self.feedback_per_minute == 0 {
            return bad("feedback_per_minute = 0; allowed: at least 1".into());
        }
        Ok(())
    }
}

/// A shutdown signal shared by the threads and tasks of one service: triggered once (Ctrl-C,
/// end of a finite source, [`Service::shutdown`]), observed by everyone.
#[derive(Debug, Clone)]
pub struct Shutdown {
    sender: Arc<tokio::sync::watch::Sender<bool>>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    pub fn new() -> Self {
        Shutdown {
            sender: Arc::new(tokio::sync::watch::channel(false).0),
        }
    }

    pub fn trigger(&self) {
        self.sender.send_replace(true);
    }

    pub fn is_triggered(&self) -> bool {
        *self.sender.borrow()
    }

    /// Resolves once [`Shutdown::trigger`] has been called (immediately if it already was).
    pub async fn wait(&self) {
        let mut receiver = self.sender.subscribe();
        // The sender lives in `self`, so `wait_for` only ends when the value is true.
        let _ = receiver.wait_for(|triggered| *triggered).await;
    }
}
