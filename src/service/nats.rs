//! The NATS JetStream publisher of a service (`[nats]`, see [`crate::nats`]).
//!
//! ```text
//!  DSP thread ──try_send──► bounded queue ──► publisher task ──► JetStream (acked, pipelined)
//!  (never waits; full queue:          (tokio)   retries unacked messages after a
//!   message dropped and counted)                reconnection, deduplicated by Nats-Msg-Id
//! ```
//!
//! Subjects of a session `S` under prefix `P`: `P.S.commands`, `P.S.features`, `P.S.status`,
//! `P.S.raw` (opt-in) and `P.S.stream` (one message at start: the source's stream description
//! and the service's `hello`). Each message is the WebSocket protocol's JSON object with three
//! more fields first: `session`, `sequence` (1, 2, 3… per subject; a gap is a counted drop)
//! and `published` (Unix seconds when the DSP thread handed it over).
//!
//! While the server is down the task keeps what it has (messages in flight are published
//! again, with the same message id, once it is back: JetStream stores each once); the queue
//! fills and further messages are dropped at the DSP thread, counted per subject in
//! [`NatsStats`] and in `neurostream_drops_total{reason="nats_queue"}`. WebSocket clients are
//! served throughout and told `nats_lost` / `nats_regained`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, context::Publish};
use bytes::Bytes;
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::hub::Hub;
use super::metrics::{DropReason, Metrics};
use super::protocol::{Hello, ServerMessage, Status, StatusEvent};
use crate::error::{Error, Result};
use crate::nats::{backoff, connect, valid_token, NatsConfig};

/// How long the publisher keeps trying to deliver what is left after the session ended.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);
use crate::stream::{Chunk, StreamInfo};

/// What a message is about: one subject each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Commands = 0,
    Features = 1,
    Status = 2,
    Raw = 3,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Commands, Kind::Features, Kind::Status, Kind::Raw];

    /// The last subject token.
    pub const fn token(self) -> &'static str {
        match self {
            Kind::Commands => "commands",
            Kind::Features => "features",
            Kind::Status => "status",
            Kind::Raw => "raw",
        }
    }
}

/// Per-subject counts of one publisher, shared with whoever wants to look (tests, `/metrics`).
#[derive(Debug, Default)]
pub struct NatsStats {
    handed: [AtomicU64; 4],
    published: [AtomicU64; 4],
    dropped: [AtomicU64; 4],
    outages: AtomicU64,
    connected: AtomicBool,
}

impl NatsStats {
    /// Messages the service produced for `kind` (the last `sequence` given out).
    pub fn handed(&self, kind: Kind) -> u64 {
        self.handed[kind as usize].load(Ordering::Relaxed)
    }
    /// Messages of `kind` JetStream acknowledged.
    pub fn published(&self, kind: Kind) -> u64 {
        self.published[kind as usize].load(Ordering::Relaxed)
    }
    /// Messages of `kind` never published (queue full, or still unacknowledged at the end).
    pub fn dropped(&self, kind: Kind) -> u64 {
        self.dropped[kind as usize].load(Ordering::Relaxed)
    }
    /// Times the connection was lost.
    pub fn outages(&self) -> u64 {
        self.outages.load(Ordering::Relaxed)
    }
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }
    fn drop_counts(&self) -> [u64; 4] {
        Kind::ALL.map(|k| self.dropped(k))
    }
}

/// One message on its way: subject kind, its per-subject sequence number, the JSON bytes.
#[derive(Debug, Clone)]
struct Message {
    kind: Kind,
    sequence: u64,
    payload: Bytes,
}

/// What the DSP thread holds: hands messages to the publisher task without waiting.
pub struct NatsPublisher {
    tx: mpsc::Sender<Message>,
    shared: Arc<Shared>,
    features: bool,
    raw: bool,
}

/// What the DSP side and the task share (not the queue's sender: when the DSP thread drops
/// its [`NatsPublisher`], the queue closes and the task finishes).
struct Shared {
    session: String,
    stats: Arc<NatsStats>,
    metrics: Arc<Metrics>,
}

impl Shared {
    fn envelope(&self, kind: Kind, json: &str) -> Message {
        let sequence = self.stats.handed[kind as usize].fetch_add(1, Ordering::Relaxed) + 1;
        let published = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let body = json.strip_prefix('{').unwrap_or("}");
        let sep = if body.trim_start().starts_with('}') {
            ""
        } else {
            ","
        };
        let text = format!(
            "{{\"session\":{},\"sequence\":{sequence},\"published\":{published:.6}{sep}{body}",
            serde_json::Value::from(self.session.as_str())
        );
        Message {
            kind,
            sequence,
            payload: Bytes::from(text),
        }
    }

    fn count_drop(&self, kind: Kind, n: u64, reason: DropReason) {
        self.stats.dropped[kind as usize].fetch_add(n, Ordering::Relaxed);
        self.metrics.count_drop(reason, n);
    }
}

impl NatsPublisher {
    /// Hand one protocol message (its JSON object) to the publisher; never waits.
    pub fn publish(&self, kind: Kind, json: &str) {
        match kind {
            Kind::Features if !self.features => return,
            Kind::Raw if !self.raw => return,
            _ => {}
        }
        let message = self.shared.envelope(kind, json);
        if self.tx.try_send(message).is_err() {
            self.shared.count_drop(kind, 1, DropReason::NatsQueue);
        }
    }

    pub fn wants_features(&self) -> bool {
        self.features
    }

    pub fn wants_raw(&self) -> bool {
        self.raw
    }

    /// A raw chunk as `{"type":"raw","timestamps":[…],"values":[[channel 0…],…]}`.
    pub fn publish_raw(&self, chunk: &Chunk) {
        if !self.raw {
            return;
        }
        let values: Vec<&[f32]> = (0..chunk.channels()).map(|c| chunk.channel(c)).collect();
        let json = serde_json::json!({
            "type": "raw",
            "timestamps": chunk.timestamps(),
            "values": values,
        });
        self.publish(Kind::Raw, &json.to_string());
    }

    /// Markers of the raw stream as `{"type":"events","events":[{label, onset, duration}…]}`
    /// on the raw subject (numbered with the chunks, so a consumer keeps their order).
    pub fn publish_events(&self, events: &[crate::stream::Event]) {
        if !self.raw || events.is_empty() {
            return;
        }
        let json = serde_json::json!({ "type": "events", "events": events });
        self.publish(Kind::Raw, &json.to_string());
    }

    pub fn stats(&self) -> Arc<NatsStats> {
        self.shared.stats.clone()
    }
}

/// A started publisher: the DSP thread's handle, the counts, and the task to await at the end.
pub struct Started {
    pub publisher: NatsPublisher,
    pub stats: Arc<NatsStats>,
    pub task: tokio::task::JoinHandle<()>,
    /// `prefix.session`: the subjects' common part.
    pub subject_root: String,
}

/// Connect (bounded by `connect_timeout_seconds`), create or update the session's JetStream
/// stream and start the publisher task. Fails with the server address (never credentials)
/// and what went wrong.
pub async fn start(
    config: &NatsConfig,
    hub: Arc<Hub>,
    info: &StreamInfo,
    hello: &Hello,
) -> Result<Started> {
    let session = config
        .session
        .clone()
        .unwrap_or_else(|| hello.session.clone());
    if !valid_token(&session) {
        return Err(Error::config(
            "nats.session",
            format!("{session:?}: allowed: 1 to 64 letters, digits, '_' or '-'"),
        ));
    }
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let (client, url) = connect(config, &format!("neurostream {session}"), move |event| {
        let _ = events_tx.send(event);
    })
    .await?;
    let timeout = Duration::from_secs_f64(config.connect_timeout_seconds);
    let js = jetstream::new(client.clone());
    let subject_root = format!("{}.{session}", config.prefix);
    let stream = config.stream_name(&session);
    let limit = |v: Option<u64>| v.map(|v| v.min(i64::MAX as u64) as i64).unwrap_or(-1);
    let stream_config = jetstream::stream::Config {
        name: stream.clone(),
        subjects: vec![format!("{subject_root}.>")],
        max_age: Duration::from_secs_f64(config.max_age_seconds),
        max_bytes: limit(config.max_bytes),
        max_messages: limit(config.max_msgs),
        max_messages_per_subject: -1,
        max_consumers: -1,
        storage: jetstream::stream::StorageType::File,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    };
    tokio::time::timeout(timeout, js.create_or_update_stream(stream_config))
        .await
        .map_err(|_| {
            Error::Network(format!(
                "nats: {url} did not answer the JetStream stream request within {} s",
                config.connect_timeout_seconds
            ))
        })?
        .map_err(|e| {
            Error::Network(format!(
                "nats: cannot create or update the JetStream stream {stream} on {url} (is \
                 JetStream enabled, `nats-server -js`?): {e}"
            ))
        })?;
    tracing::info!(
        "nats: publishing session {session} to {url} as {subject_root}.{{commands,features,\
         status{}}} in JetStream stream {stream}",
        if config.raw { ",raw" } else { "" }
    );
    let stats = Arc::new(NatsStats::default());
    stats.connected.store(true, Ordering::Relaxed);
    Metrics::add(&hub.metrics.nats_connected, 1);
    let shared = Arc::new(Shared {
        session: session.clone(),
        stats: stats.clone(),
        metrics: hub.metrics.clone(),
    });
    let (tx, rx) = mpsc::channel(config.queue);
    // The description first, so a consumer (a decoding instance, `replay nats://`) finds it.
    let description = serde_json::json!({
        "type": "stream",
        "stream": info,
        "hello": hello,
    });
    let first = shared.envelope_untracked(&description.to_string());
    let task = tokio::spawn(
        Task {
            js,
            client,
            root: subject_root.clone(),
            url,
            shared: shared.clone(),
            hub,
            in_flight_cap: config.in_flight,
        }
        .run(rx, events_rx, first),
    );
    Ok(Started {
        publisher: NatsPublisher {
            tx,
            shared,
            features: config.features,
            raw: config.raw,
        },
        stats,
        task,
        subject_root,
    })
}

impl Shared {
    /// The `.stream` message: not numbered with the others.
    fn envelope_untracked(&self, json: &str) -> Bytes {
        let body = json.strip_prefix('{').unwrap_or("}");
        Bytes::from(format!(
            "{{\"session\":{},{body}",
            serde_json::Value::from(self.session.as_str())
        ))
    }
}

struct Task {
    js: jetstream::Context,
    client: async_nats::Client,
    root: String,
    url: String,
    shared: Arc<Shared>,
    hub: Arc<Hub>,
    in_flight_cap: usize,
}

type Ack = std::result::Result<jetstream::publish::PublishAck, String>;

impl Task {
    fn subject(&self, kind: Kind) -> String {
        format!("{}.{}", self.root, kind.token())
    }

    fn message_id(&self, message: &Message) -> String {
        format!("{}-{}", message.kind.token(), message.sequence)
    }

    async fn run(
        self,
        mut rx: mpsc::Receiver<Message>,
        mut events: mpsc::UnboundedReceiver<async_nats::Event>,
        first: Bytes,
    ) {
        let stats = self.shared.stats.clone();
        // The description, once, acknowledged before anything else is sent.
        if let Err(e) = self
            .js
            .send_publish(
                format!("{}.stream", self.root),
                Publish::build().payload(first).message_id("stream"),
            )
            .await
        {
            tracing::warn!("nats: the stream description was not published: {e}");
        }
        let mut in_flight = FuturesUnordered::new();
        // Messages in flight per kind (counted as lost if the flush times out).
        let mut pending = [0u64; 4];
        // Messages to publish again (after a failure), in (kind, sequence) order.
        let mut retry: BTreeMap<(Kind, u64), Message> = BTreeMap::new();
        let mut failures = 0usize;
        let mut resume_at = Instant::now();
        let mut closed = false;
        let mut deadline: Option<tokio::time::Instant> = None;
        let mut dropped_at_outage = stats.drop_counts();
        loop {
            // Send what may be sent now: retries first (in order), then the queue.
            while in_flight.len() < self.in_flight_cap {
                let next = if !retry.is_empty() {
                    if Instant::now() < resume_at {
                        break;
                    }
                    retry.pop_first().map(|(_, m)| m)
                } else {
                    match rx.try_recv() {
                        Ok(message) => Some(message),
                        Err(mpsc::error::TryRecvError::Empty) => None,
                        Err(mpsc::error::TryRecvError::Disconnected) => {
                            closed = true;
                            None
                        }
                    }
                };
                let Some(message) = next else { break };
                let publish = Publish::build()
                    .payload(message.payload.clone())
                    .message_id(self.message_id(&message));
                match self
                    .js
                    .send_publish(self.subject(message.kind), publish)
                    .await
                {
                    Ok(ack) => {
                        pending[message.kind as usize] += 1;
                        in_flight.push(async move {
                            let result: Ack = ack.await.map_err(|e| e.to_string());
                            (message, result)
                        })
                    }
                    Err(e) => {
                        tracing::debug!("nats: publish not sent: {e}");
                        retry.insert((message.kind, message.sequence), message);
                        failures += 1;
                        resume_at = Instant::now() + backoff(failures);
                        break;
                    }
                }
            }
            if closed && in_flight.is_empty() && retry.is_empty() {
                break;
            }
            if closed && deadline.is_none() {
                deadline = Some(tokio::time::Instant::now() + FLUSH_TIMEOUT);
            }
            let can_take = retry.is_empty() && in_flight.len() < self.in_flight_cap && !closed;
            let wake = tokio::time::Instant::from_std(resume_at.max(Instant::now()));
            tokio::select! {
                Some((message, result)) = in_flight.next(), if !in_flight.is_empty() => {
                    pending[message.kind as usize] -= 1;
                    match result {
                        Ok(_) => {
                            failures = 0;
                            stats.published[message.kind as usize].fetch_add(1, Ordering::Relaxed);
                            Metrics::add(&self.shared.metrics.nats_published, 1);
                        }
                        Err(e) => {
                            tracing::debug!("nats: no acknowledgement for {} {}: {e}",
                                message.kind.token(), message.sequence);
                            retry.insert((message.kind, message.sequence), message);
                            failures += 1;
                            resume_at = Instant::now() + backoff(failures);
                        }
                    }
                }
                received = rx.recv(), if can_take => match received {
                    Some(message) => {
                        // Back in front of the queue: the loop above sends it.
                        retry.insert((message.kind, message.sequence), message);
                    }
                    None => closed = true,
                },
                Some(event) = events.recv() => {
                    self.on_event(event, &mut dropped_at_outage);
                }
                _ = tokio::time::sleep_until(wake), if !retry.is_empty() => {}
                _ = tokio::time::sleep_until(deadline.unwrap_or(wake)), if deadline.is_some() => {
                    if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                        break;
                    }
                }
            }
        }
        // What could not be delivered in time is lost: counted, like queue drops.
        let mut lost = pending;
        for (kind, _) in retry.keys() {
            lost[*kind as usize] += 1;
        }
        drop(in_flight);
        rx.close();
        while let Ok(message) = rx.try_recv() {
            lost[message.kind as usize] += 1;
        }
        for kind in Kind::ALL {
            if lost[kind as usize] > 0 {
                self.shared
                    .count_drop(kind, lost[kind as usize], DropReason::NatsPublish);
            }
        }
        let _ = self.client.flush().await;
        let total_lost: u64 = Kind::ALL.iter().map(|k| stats.dropped(*k)).sum();
        tracing::info!(
            "nats: {} stopped; published commands {}, features {}, status {}, raw {}; \
             dropped {total_lost} (commands {}, features {}, status {}, raw {}); outages {}",
            self.url,
            stats.published(Kind::Commands),
            stats.published(Kind::Features),
            stats.published(Kind::Status),
            stats.published(Kind::Raw),
            stats.dropped(Kind::Commands),
            stats.dropped(Kind::Features),
            stats.dropped(Kind::Status),
            stats.dropped(Kind::Raw),
            stats.outages()
        );
    }

    fn on_event(&self, event: async_nats::Event, dropped_at_outage: &mut [u64; 4]) {
        let stats = &self.shared.stats;
        let metrics = &self.shared.metrics;
        match event {
            async_nats::Event::Disconnected => {
                if stats.connected.swap(false, Ordering::Relaxed) {
                    stats.outages.fetch_add(1, Ordering::Relaxed);
                    metrics.nats_connected.store(0, Ordering::Relaxed);
                    *dropped_at_outage = stats.drop_counts();
                    tracing::warn!(
                        "nats: lost the connection to {}; reconnecting with backoff, WebSocket \
                         clients are still served, messages beyond the queue are dropped and \
                         counted",
                        self.url
                    );
                    let status = Status {
                        reason: Some(format!("NATS server {} unreachable", self.url)),
                        ..Status::event(StatusEvent::NatsLost)
                    };
                    self.hub
                        .broadcast(&ServerMessage::Status(status), None, None);
                }
            }
            async_nats::Event::Connected => {
                if !stats.connected.swap(true, Ordering::Relaxed) {
                    metrics.nats_connected.store(1, Ordering::Relaxed);
                    let now = stats.drop_counts();
                    let lost: Vec<u64> = (0..4).map(|i| now[i] - dropped_at_outage[i]).collect();
                    let total: u64 = lost.iter().sum();
                    tracing::warn!(
                        "nats: reconnected to {}; {total} message(s) dropped during the outage \
                         (commands {}, features {}, status {}, raw {})",
                        self.url,
                        lost[0],
                        lost[1],
                        lost[2],
                        lost[3]
                    );
                    let regained = Status {
                        reason: Some(format!(
                            "NATS server {} reachable again; {total} message(s) were not \
                             published (commands {})",
                            self.url, lost[0]
                        )),
                        dropped: Some(total),
                        dropped_total: Some(now.iter().sum()),
                        ..Status::event(StatusEvent::NatsRegained)
                    };
                    let message = ServerMessage::Status(regained);
                    self.hub.broadcast(&message, None, None);
                }
            }
            other => tracing::debug!("nats: {other}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_cap() {
        assert_eq!(backoff(0), Duration::ZERO);
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(3), Duration::from_millis(400));
        assert_eq!(backoff(50), crate::nats::MAX_BACKOFF);
    }

    #[test]
    fn the_envelope_keeps_the_protocol_fields() {
        let shared = Shared {
            session: "s1".into(),
            stats: Arc::new(NatsStats::default()),
            metrics: Arc::new(Metrics::default()),
        };
        let message = shared.envelope(Kind::Commands, r#"{"type":"command","seq":7}"#);
        let value: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
        assert_eq!(value["session"], "s1");
        assert_eq!(value["sequence"], 1);
        assert_eq!(value["seq"], 7);
        assert_eq!(value["type"], "command");
        let second = shared.envelope(Kind::Commands, "{}");
        let value: serde_json::Value = serde_json::from_slice(&second.payload).unwrap();
        assert_eq!(value["sequence"], 2);
    }
}
