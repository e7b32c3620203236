//! Raw EEG of a session that another instance publishes to NATS JetStream
//! (`[source] kind = "nats"`).
//!
//! The acquisition instance (near the headset, `[nats] raw = true`) publishes on
//! `<prefix>.<session>.raw` the chunks it reads (`{"type":"raw","timestamps":[…],
//! "values":[[channel 0…],…]}`) and its markers (`{"type":"events","events":[…]}`), numbered
//! by `sequence`, and once at start the stream description on `<prefix>.<session>.stream`.
//! This source reads the latest description, then the session's subjects (using `.raw`, and
//! `.status` for the end of the session) through an ordered JetStream consumer, from the start of that run
//! (`deliver = "all"`) or from now on (`deliver = "new"`).
//!
//! ```text
//!  consumer thread (own tokio runtime) ──bounded channel──► next_item (blocking, source thread)
//!   connect, description, ordered consumer        gap/loss detection from `sequence`
//! ```
//!
//! A jump in `sequence` is reported as [`StreamStatus::Dropped`] (samples estimated from the
//! timestamps); no message for `stall_seconds` once the session has started as
//! [`StreamStatus::Lost`], the next one as
//! [`StreamStatus::Regained`]. The session ends when the publisher says `stream_ended`.

use std::collections::VecDeque;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::Duration;

use async_nats::jetstream;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Source, SourceItem, StreamStatus};
use crate::error::{Error, Result};
use crate::nats::{valid_token, NatsConfig};
use crate::stream::{Chunk, Event, StreamInfo};
use crate::validate::Problems;

/// Where a consumer starts in the session's JetStream stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Deliver {
    /// From the first message of the latest run of the session (its stream description).
    #[default]
    All,
    /// Only messages published from now on.
    New,
}

/// `[source]` with `kind = "nats"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsSourceConfig {
    /// Server URL; credentials as for `[nats]` (in the URL or `NEUROSTREAM_NATS_*`).
    #[serde(default = "default_url")]
    pub url: String,
    /// The session the acquisition instance publishes (its `[nats] session`).
    pub session: String,
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// JetStream stream name (default `NEUROSTREAM_<session>`, as the publisher names it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    #[serde(default)]
    pub deliver: Deliver,
    /// How long to wait for the server, the stream and its description at start.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_seconds: f64,
    /// No message for this long = the stream is reported lost.
    #[serde(default = "default_stall")]
    pub stall_seconds: f64,
    /// Messages held between the consumer thread and the pipeline.
    #[serde(default = "default_buffer")]
    pub buffer_messages: usize,
}

fn default_url() -> String {
    NatsConfig::default().url
}
fn default_prefix() -> String {
    NatsConfig::default().prefix
}
fn default_connect_timeout() -> f64 {
    5.0
}
fn default_stall() -> f64 {
    2.0
}
fn default_buffer() -> usize {
    1024
}

impl NatsSourceConfig {
    /// A config for `session` on `url` with every other setting at its default.
    pub fn new(url: impl Into<String>, session: impl Into<String>) -> Self {
        NatsSourceConfig {
            url: url.into(),
            session: session.into(),
            prefix: default_prefix(),
            stream: None,
            deliver: Deliver::All,
            connect_timeout_seconds: default_connect_timeout(),
            stall_seconds: default_stall(),
            buffer_messages: default_buffer(),
        }
    }

    pub fn check(&self, problems: &mut Problems) {
        if !valid_token(&self.session) {
            problems.push(
                "source.session",
                format!("{:?}", self.session),
                "1 to 64 letters, digits, '_' or '-'",
            );
        }
        if self.prefix.is_empty() || self.prefix.split('.').any(|t| !valid_token(t)) {
            problems.push(
                "source.prefix",
                format!("{:?}", self.prefix),
                "dot-separated tokens of letters, digits, '_' or '-'",
            );
        }
        for (name, value) in [
            (
                "source.connect_timeout_seconds",
                self.connect_timeout_seconds,
            ),
            ("source.stall_seconds", self.stall_seconds),
        ] {
            if !(value.is_finite() && value > 0.0 && value <= 86_400.0) {
                problems.push(name, value, "> 0 and at most 86400");
            }
        }
        if !(1..=1_000_000).contains(&self.buffer_messages) {
            problems.push(
                "source.buffer_messages",
                self.buffer_messages,
                "1 to 1000000",
            );
        }
    }

    pub fn validate(&self) -> Result<()> {
        let mut problems = Problems::default();
        self.check(&mut problems);
        problems.into_result("[source] kind = \"nats\"")
    }

    /// The publisher settings this consumer shares (URL, credentials, TLS, names).
    fn nats_config(&self) -> NatsConfig {
        let mut config = NatsConfig {
            prefix: self.prefix.clone(),
            session: Some(self.session.clone()),
            stream: self.stream.clone(),
            connect_timeout_seconds: self.connect_timeout_seconds,
            ..NatsConfig::default()
        };
        config.apply_env();
        // The source's URL wins over NEUROSTREAM_NATS_URL (that one names the publisher's).
        config.url = self.url.clone();
        config
    }

    /// Connect, read the session's description and start consuming (fails after
    /// `connect_timeout_seconds` when the server, the stream or the description is missing).
    pub fn build(&self) -> Result<NatsSource> {
        self.validate()?;
        NatsSource::open(self)
    }
}

/// What the consumer thread hands over.
enum Incoming {
    Raw {
        sequence: u64,
        chunk: Chunk,
    },
    Events {
        sequence: u64,
        events: Vec<Event>,
    },
    /// The publisher said `stream_ended`.
    End,
}

/// A running consumer of a session's raw stream.
pub struct NatsSource {
    info: StreamInfo,
    items: Receiver<Result<Incoming>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    what: String,
    stall: Duration,
    last_sequence: Option<u64>,
    last_timestamp: Option<f64>,
    lost: bool,
    ended: bool,
    pending: VecDeque<SourceItem>,
}

impl NatsSource {
    fn open(config: &NatsSourceConfig) -> Result<Self> {
        let nats = config.nats_config();
        let what = format!(
            "nats source {}.{} on {}",
            config.prefix,
            config.session,
            nats.redacted_url()
        );
        let (init_tx, init_rx) = mpsc::sync_channel::<Result<StreamInfo>>(1);
        let (items_tx, items_rx) = mpsc::sync_channel(config.buffer_messages);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let thread_config = config.clone();
        let thread = std::thread::Builder::new()
            .name("neurostream-nats-source".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = init_tx.send(Err(Error::Unsupported(format!(
                            "nats source: cannot start its runtime: {e}"
                        ))));
                        return;
                    }
                };
                runtime.block_on(consume(thread_config, nats, init_tx, items_tx, stop_rx));
            })
            .map_err(|e| Error::Unsupported(format!("cannot start the nats source thread: {e}")))?;
        // The thread answers within its own timeouts; the margin only guards a hang.
        let wait = Duration::from_secs_f64(config.connect_timeout_seconds * 3.0 + 5.0);
        let info = match init_rx.recv_timeout(wait) {
            Ok(Ok(info)) => info,
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(Error::Network(format!(
                    "{what}: no answer within {} s",
                    wait.as_secs_f64()
                )))
            }
        };
        tracing::info!(
            "{what}: {} channels at {} Hz ({})",
            info.channel_count(),
            info.nominal_rate,
            info.name
        );
        Ok(NatsSource {
            info,
            items: items_rx,
            stop: Some(stop_tx),
            thread: Some(thread),
            what,
            stall: Duration::from_secs_f64(config.stall_seconds),
            last_sequence: None,
            last_timestamp: None,
            lost: false,
            ended: false,
            pending: VecDeque::new(),
        })
    }

    /// Gap detection: a status item before `sequence` when messages were skipped.
    fn check_sequence(&mut self, sequence: u64, first_timestamp: Option<f64>) {
        if let Some(last) = self.last_sequence {
            if sequence > last + 1 {
                let messages = sequence - last - 1;
                let rate = self.info.nominal_rate;
                let samples = match (self.last_timestamp, first_timestamp) {
                    (Some(a), Some(b)) if rate > 0.0 && b > a => {
                        (((b - a) * rate).round() as u64).saturating_sub(1)
                    }
                    _ => 0,
                };
                self.pending
                    .push_back(SourceItem::Status(StreamStatus::Dropped {
                        samples,
                        reason: format!(
                            "{messages} NATS raw message(s) missing (sequence {} to {})",
                            last + 1,
                            sequence - 1
                        ),
                    }));
            }
        }
        if self.last_sequence.is_none_or(|last| sequence > last) {
            self.last_sequence = Some(sequence);
        }
    }
}

impl Drop for NatsSource {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Source for NatsSource {
    fn stream_info(&self) -> &StreamInfo {
        &self.info
    }

    fn next_item(&mut self) -> Result<Option<SourceItem>> {
        loop {
            if let Some(item) = self.pending.pop_front() {
                return Ok(Some(item));
            }
            if self.ended {
                return Ok(None);
            }
            let incoming = match self.items.recv_timeout(self.stall) {
                Ok(incoming) => incoming?,
                Err(RecvTimeoutError::Timeout) => {
                    // Waiting for the session to start is not a loss.
                    if !self.lost && self.last_sequence.is_some() {
                        self.lost = true;
                        return Ok(Some(SourceItem::Status(StreamStatus::Lost {
                            reason: format!(
                                "{}: no message for {} s",
                                self.what,
                                self.stall.as_secs_f64()
                            ),
                        })));
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(Error::Network(format!(
                        "{}: the consumer stopped without an end of session",
                        self.what
                    )))
                }
            };
            if self.lost && !matches!(incoming, Incoming::End) {
                self.lost = false;
                self.pending
                    .push_back(SourceItem::Status(StreamStatus::Regained));
            }
            match incoming {
                Incoming::Raw { sequence, chunk } => {
                    self.check_sequence(sequence, chunk.timestamps().first().copied());
                    if chunk.channels() != self.info.channel_count() {
                        return Err(Error::Data(format!(
                            "{}: raw message {sequence} has {} channels, the stream \
                             description {}",
                            self.what,
                            chunk.channels(),
                            self.info.channel_count()
                        )));
                    }
                    if let Some(t) = chunk.last_timestamp() {
                        self.last_timestamp = Some(t);
                    }
                    if !chunk.is_empty() {
                        self.pending.push_back(SourceItem::Chunk(chunk));
                    }
                }
                Incoming::Events { sequence, events } => {
                    self.check_sequence(sequence, None);
                    self.pending.push_back(SourceItem::Events(events));
                }
                Incoming::End => self.ended = true,
            }
        }
    }
}

/// The consumer thread: setup (reported on `init`), then every message into `items`.
async fn consume(
    config: NatsSourceConfig,
    nats: NatsConfig,
    init: SyncSender<Result<StreamInfo>>,
    items: SyncSender<Result<Incoming>>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let (info, mut messages, what) = match setup(&config, &nats).await {
        Ok(ready) => ready,
        Err(e) => {
            let _ = init.send(Err(e));
            return;
        }
    };
    let channels = info.channel_count();
    if init.send(Ok(info)).is_err() {
        return;
    }
    let raw_subject = nats.subject(&config.session, "raw");
    let status_subject = nats.subject(&config.session, "status");
    loop {
        let next = tokio::select! {
            _ = &mut stop => return,
            next = messages.next() => next,
        };
        let item = match next {
            Some(Ok(message)) => {
                let raw = message.subject.as_str() == raw_subject;
                if !raw && message.subject.as_str() != status_subject {
                    continue;
                }
                match parse(&message.payload, raw, channels, &config.session, &what) {
                    Ok(Some(item)) => Ok(item),
                    Ok(None) => continue,
                    Err(e) => Err(e),
                }
            }
            Some(Err(e)) => {
                // The ordered consumer recreates itself after most errors; say so and go on.
                tracing::warn!("{what}: {e}");
                continue;
            }
            None => Err(Error::Network(format!("{what}: the consumer ended"))),
        };
        let last = !matches!(item, Ok(Incoming::Raw { .. } | Incoming::Events { .. }));
        let mut item = item;
        loop {
            match items.try_send(item) {
                Ok(()) => break,
                Err(TrySendError::Disconnected(_)) => return,
                Err(TrySendError::Full(back)) => {
                    item = back;
                    tokio::select! {
                        _ = &mut stop => return,
                        _ = tokio::time::sleep(Duration::from_millis(1)) => {}
                    }
                }
            }
        }
        if last {
            return;
        }
    }
}

type Ordered = jetstream::consumer::pull::Ordered;

async fn setup(
    config: &NatsSourceConfig,
    nats: &NatsConfig,
) -> Result<(StreamInfo, Ordered, String)> {
    let session = &config.session;
    let (client, url) =
        crate::nats::connect(nats, &format!("neurostream consumer {session}"), |_| {}).await?;
    let what = format!("nats source {}.{session} on {url}", config.prefix);
    let js = jetstream::new(client);
    let name = nats.stream_name(session);
    let timeout = Duration::from_secs_f64(config.connect_timeout_seconds);
    let deadline = tokio::time::Instant::now() + timeout;
    let description_subject = nats.subject(session, "stream");
    // The stream and its description may appear a moment after this source starts.
    let mut last_error = None;
    let (stream, description) = loop {
        let attempt = async {
            let stream = js.get_stream(&name).await.map_err(|e| {
                format!(
                    "no JetStream stream {name} ({e}); is session {session:?} published there \
                     (`[nats]` with `session = \"{session}\"`)?"
                )
            })?;
            let description = stream
                .get_last_raw_message_by_subject(&description_subject)
                .await
                .map_err(|e| {
                    format!(
                        "no stream description on {description_subject} in {name} ({e}); \
                         was the session published by a neurostream with `[nats]`?"
                    )
                })?;
            Ok::<_, String>((stream, description))
        };
        match tokio::time::timeout_at(deadline, attempt).await {
            Ok(Ok(found)) => break found,
            Ok(Err(e)) if tokio::time::Instant::now() >= deadline => {
                return Err(Error::Network(format!("{what}: {e}")))
            }
            Ok(Err(e)) => {
                last_error = Some(e);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(_) => {
                return Err(Error::Network(match last_error {
                    Some(e) => format!("{what}: {e}"),
                    None => format!(
                        "{what}: no answer within {} s",
                        config.connect_timeout_seconds
                    ),
                }))
            }
        }
    };
    let value: Value = serde_json::from_slice(&description.payload).map_err(|e| {
        Error::Data(format!(
            "{what}: the stream description on {description_subject} is not JSON: {e}"
        ))
    })?;
    if value["session"].as_str() != Some(session.as_str()) {
        return Err(Error::Data(format!(
            "{what}: the stream description on {description_subject} is of session {}, not \
             {session:?}",
            value["session"]
        )));
    }
    let info: StreamInfo = serde_json::from_value(value["stream"].clone()).map_err(|e| {
        Error::Data(format!(
            "{what}: the stream description on {description_subject} has no valid `stream` \
             (channel labels, units, rate): {e}"
        ))
    })?;
    if info.channel_count() == 0 {
        return Err(Error::Data(format!(
            "{what}: the stream description declares no channel"
        )));
    }
    let deliver_policy = match config.deliver {
        Deliver::All => jetstream::consumer::DeliverPolicy::ByStartSequence {
            start_sequence: description.sequence + 1,
        },
        Deliver::New => jetstream::consumer::DeliverPolicy::New,
    };
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::OrderedConfig {
            // One subject filter (several need a 2.10 server feature of the client): the
            // session's subjects, of which only `.raw` and `.status` are read.
            filter_subject: format!("{}.{session}.*", config.prefix),
            deliver_policy,
            ..Default::default()
        })
        .await
        .map_err(|e| Error::Network(format!("{what}: cannot create a consumer on {name}: {e}")))?;
    let messages = consumer
        .messages()
        .await
        .map_err(|e| Error::Network(format!("{what}: cannot consume {name}: {e}")))?;
    Ok((info, messages, what))
}

/// One message of `.raw` (`raw`) or `.status`; `None` for what this source ignores.
fn parse(
    payload: &[u8],
    raw: bool,
    channels: usize,
    session: &str,
    what: &str,
) -> Result<Option<Incoming>> {
    let bad = |detail: String| Error::Data(format!("{what}: {detail}"));
    let value: Value =
        serde_json::from_slice(payload).map_err(|e| bad(format!("a message is not JSON: {e}")))?;
    if value["session"].as_str() != Some(session) {
        return Err(bad(format!(
            "a message of session {} arrived on session {session:?}'s subject",
            value["session"]
        )));
    }
    if !raw {
        let ended = value["type"] == "status" && value["event"] == "stream_ended";
        return Ok(ended.then_some(Incoming::End));
    }
    let sequence = value["sequence"]
        .as_u64()
        .ok_or_else(|| bad("a raw message has no `sequence`".into()))?;
    match value["type"].as_str() {
        Some("raw") => {
            let timestamps: Vec<f64> = serde_json::from_value(value["timestamps"].clone())
                .map_err(|e| bad(format!("raw message {sequence}: `timestamps`: {e}")))?;
            let values: Vec<Vec<f32>> = serde_json::from_value(value["values"].clone())
                .map_err(|e| bad(format!("raw message {sequence}: `values`: {e}")))?;
            if values.len() != channels {
                return Err(bad(format!(
                    "raw message {sequence} has {} channels, the stream description {channels}",
                    values.len()
                )));
            }
            if let Some(row) = values.iter().position(|v| v.len() != timestamps.len()) {
                return Err(bad(format!(
                    "raw message {sequence}: channel {row} has {} values for {} timestamps",
                    values[row].len(),
                    timestamps.len()
                )));
            }
            let data = values.concat();
            Ok(Some(Incoming::Raw {
                sequence,
                chunk: Chunk::from_channel_major(channels, data, timestamps),
            }))
        }
        Some("events") => {
            let events: Vec<Event> = serde_json::from_value(value["events"].clone())
                .map_err(|e| bad(format!("raw message {sequence}: `events`: {e}")))?;
            Ok(Some(Incoming::Events { sequence, events }))
        }
        other => Err(bad(format!(
            "raw message {sequence} has type {other:?}, expected \"raw\" or \"events\""
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_messages_parse_and_bad_ones_are_named() {
        let ok = br#"{"session":"s","sequence":3,"type":"raw","timestamps":[0.0,0.1],"values":[[1,2],[3,4]]}"#;
        match parse(ok, true, 2, "s", "t").unwrap() {
            Some(Incoming::Raw { sequence, chunk }) => {
                assert_eq!(sequence, 3);
                assert_eq!(chunk.channel(1), &[3.0, 4.0]);
            }
            _ => panic!("a raw chunk"),
        }
        let short = br#"{"session":"s","sequence":3,"type":"raw","timestamps":[0.0,0.1],"values":[[1],[3,4]]}"#;
        let e = parse(short, true, 2, "s", "t").err().unwrap().to_string();
        assert!(e.contains("channel 0 has 1 values"), "{e}");
        let other = br#"{"session":"x","sequence":1,"type":"raw","timestamps":[],"values":[]}"#;
        let e = parse(other, true, 2, "s", "t").err().unwrap().to_string();
        assert!(e.contains("session \"x\""), "{e}");
        assert!(parse(b"not json", true, 2, "s", "t").is_err());
        let end = br#"{"session":"s","sequence":9,"type":"status","event":"stream_ended"}"#;
        assert!(matches!(
            parse(end, false, 2, "s", "t").unwrap(),
            Some(Incoming::End)
        ));
    }

    #[test]
    fn bad_settings_are_named() {
        let mut config = NatsSourceConfig::new("nats://127.0.0.1:1", "a b");
        config.stall_seconds = 0.0;
        let e = config.validate().unwrap_err().to_string();
        assert!(
            e.contains("source.session") && e.contains("stall_seconds"),
            "{e}"
        );
    }
}
