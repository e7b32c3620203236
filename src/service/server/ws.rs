//! One WebSocket client: the checks before the upgrade (origin, client limit), then a reader
//! (parse, rate-limit, answer, forward feedback to the DSP thread) and a writer (drain the
//! bounded queue, report drops, ping), closed with axum's close codes.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::ws::{close_code, CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{Notify, OwnedSemaphorePermit};

use super::auth::{feedback_right, origin_allowed, FEEDBACK_REFUSED};
use super::rate::TokenBucket;
use super::CLOSE_GRACE;
use crate::service::hub::{ClientQueue, Command, Hub, Outgoing, Request};
use crate::service::metrics::{DropReason, Metrics};
use crate::service::protocol::{
    self, ClientMessage, ErrorCode, ServerMessage, Status, StatusEvent,
};

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

pub(super) async fn upgrade(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
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
                closing.request(close_code::AWAY, "server shutting down");
                break;
            }
            _ = tokio::time::sleep_until((heard + idle).into()) => {
                hub.metrics.count_drop(DropReason::Timeout, 1);
                closing.request(close_code::AWAY, "idle: nothing received, not even a pong");
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
                    closing.request(close_code::INVALID, violation);
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
        Some(WsError::Capacity(_)) => Some((close_code::SIZE, "message too big")),
        Some(WsError::Utf8(_)) => Some((close_code::INVALID, "text is not valid UTF-8")),
        Some(WsError::Protocol(_)) => Some((close_code::PROTOCOL, "WebSocket protocol error")),
        Some(_) => None,
        None => {
            let text = inner.to_string();
            if text.contains("Space limit exceeded") || text.contains("too long") {
                Some((close_code::SIZE, "message too big"))
            } else if text.contains("UTF-8") {
                Some((close_code::INVALID, "text is not valid UTF-8"))
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
            send_request(hub, client, Command::Learn { label, seq });
        }
        ClientMessage::Rollback {} | ClientMessage::Recalibrate {} => {
            if !feedback_allowed(hub, client, rights) {
                return Ok(());
            }
            let command = if matches!(message, ClientMessage::Rollback {}) {
                Command::Rollback
            } else {
                Command::Recalibrate
            };
            send_request(hub, client, command);
        }
    }
    Ok(())
}

/// Queue `command` for the DSP thread, which answers on `client`'s queue; a full queue is
/// answered here.
fn send_request(hub: &Hub, client: &Arc<ClientQueue>, command: Command) {
    let request = Request {
        command,
        reply: Some(client.clone()),
    };
    if !hub.request(request) {
        reply(
            hub,
            client,
            ServerMessage::error(ErrorCode::Busy, "feedback queue full; retry later"),
        );
    }
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
