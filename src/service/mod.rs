//! The live service: a pipeline driven by a source, its commands streamed to WebSocket clients.
//!
//! ```text
//!  source thread ──(bounded)──► DSP thread ──► per-client bounded queues ──► WebSocket tasks
//!  (blocking       std channel  (Pipeline::process,  (drop-oldest, loss       (axum, tokio)
//!   next_item)                   Controller::decide)   counted and reported)
//!                      ▲                                                        │
//!                      └──────────── feedback (bounded, try_send) ◄─────────────┘
//! ```
//!
//! The synchronous hot path runs on its own OS thread and never waits on a client: it pushes
//! each message into every client's bounded queue, dropping that client's oldest message when
//! the queue is full. Async code lives only at the edges ([`server`], [`client`]).
//!
//! - [`protocol`]: the versioned JSON messages (docs/protocol.md).
//! - [`hub`]: what the DSP thread and the client tasks share (client queues, `hello`, feedback).
//! - [`runtime`]: the source and DSP threads and [`Service`] (start, address, shutdown).
//! - [`server`]: the axum router (`/ws`, `/metrics`, `/health`), authentication, limits.
//! - [`metrics`]: counters and the latency histogram in the Prometheus text format.
//! - [`client`]: the small client behind `neurostream listen`.

pub mod client;
pub mod hub;
pub mod metrics;
pub mod protocol;
pub mod runtime;
pub mod server;

use std::net::SocketAddr;
use std::sync::Arc;

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
    /// Largest client message, bytes; larger ones close the connection with code 1009.
    pub max_message_bytes: usize,
    /// Client messages per second (token bucket, burst of the same size); more get an
    /// `error` with code `rate_limited`.
    pub client_messages_per_second: u32,
    /// Record the session (raw signal, markers, commands, feedback) to this XDF file.
    pub record: Option<crate::record::RecordConfig>,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            bind: DEFAULT_BIND.parse().expect("static address"),
            token: None,
            max_clients: 64,
            allowed_origins: Vec::new(),
            client_queue: 256,
            max_message_bytes: 64 * 1024,
            client_messages_per_second: 50,
            record: None,
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
