//! The accept loop: connection cap with eviction of the oldest idle connection, header-read
//! and idle timeouts, graceful shutdown.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{router, CLOSE_GRACE};
use crate::service::hub::Hub;
use crate::service::metrics::{DropReason, Metrics};

/// Idle time after which a connection may be closed to make room for a new one.
const EVICT_AFTER: Duration = Duration::from_secs(1);

/// How long a new connection waits for an evicted idle one to give up its permit.
const ADMIT_WAIT: Duration = Duration::from_millis(500);

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
