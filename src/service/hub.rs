//! What the DSP thread and the client tasks share: the client registry with each client's
//! bounded queue, the `hello` every new client gets, and the feedback channel to the DSP
//! thread. Neither side imports the other: both depend only on this module.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::{Notify, Semaphore};
use tokio_util::task::TaskTracker;

use super::metrics::{DropReason, Metrics};
use super::protocol::{Hello, ServerMessage, Topic};
use super::{ServiceConfig, Shutdown};

/// One queued outgoing message: JSON text, and for commands the chunk arrival time (for the
/// latency histogram when it is actually sent).
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub text: Arc<str>,
    pub arrived: Option<Instant>,
}

/// A client's bounded queue: the producer never waits; when full (in messages or in bytes),
/// the oldest messages go.
#[derive(Debug)]
pub struct ClientQueue {
    queue: Mutex<(VecDeque<Outgoing>, usize)>,
    capacity: usize,
    capacity_bytes: usize,
    pub notify: Notify,
    dropped: AtomicU64,
    topics: AtomicU8,
}

impl ClientQueue {
    /// At most `capacity` messages and `capacity_bytes` bytes of text (a single larger
    /// message is still kept, alone).
    pub fn with_bytes(capacity: usize, capacity_bytes: usize) -> Self {
        ClientQueue {
            // Grows on demand: a never-reading client should not cost its whole quota upfront.
            queue: Mutex::new((VecDeque::new(), 0)),
            capacity,
            capacity_bytes,
            notify: Notify::new(),
            dropped: AtomicU64::new(0),
            topics: AtomicU8::new(0),
        }
    }

    /// Queue `message`; returns `false` if older messages had to be dropped for it.
    pub fn push(&self, message: Outgoing) -> bool {
        self.push_counted(message) == 0
    }

    /// Queue `message`; returns how many older messages were dropped for it.
    pub fn push_counted(&self, message: Outgoing) -> u64 {
        let mut dropped = 0;
        {
            let mut guard = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            let (queue, bytes) = &mut *guard;
            let size = message.text.len();
            while !queue.is_empty()
                && (queue.len() >= self.capacity
                    || bytes.saturating_add(size) > self.capacity_bytes)
            {
                if let Some(old) = queue.pop_front() {
                    *bytes -= old.text.len();
                }
                dropped += 1;
            }
            *bytes += size;
            queue.push_back(message);
        }
        if dropped > 0 {
            self.dropped.fetch_add(dropped, Ordering::Relaxed);
        }
        self.notify.notify_one();
        dropped
    }

    pub fn pop(&self) -> Option<Outgoing> {
        let mut guard = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        let (queue, bytes) = &mut *guard;
        let message = queue.pop_front()?;
        *bytes -= message.text.len();
        Some(message)
    }

    /// Bytes of text queued now.
    pub fn queued_bytes(&self) -> usize {
        self.queue.lock().unwrap_or_else(|e| e.into_inner()).1
    }

    /// Messages dropped since the client connected.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    pub fn subscribe(&self, topic: Topic) {
        self.topics.fetch_or(topic.bit(), Ordering::Relaxed);
    }

    pub fn unsubscribe(&self, topic: Topic) {
        self.topics.fetch_and(!topic.bit(), Ordering::Relaxed);
    }

    pub fn subscribed(&self, topic: Topic) -> bool {
        self.topics.load(Ordering::Relaxed) & topic.bit() != 0
    }

    pub fn topics(&self) -> Vec<Topic> {
        [Topic::Features, Topic::Signal]
            .into_iter()
            .filter(|t| self.subscribed(*t))
            .collect()
    }
}

/// What a client asks of the DSP thread: the typed command channel from the clients (and
/// `POST /rollback`) to the one loop that owns the decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// One learning step with class index `label` on the window of command `seq` (or the
    /// latest).
    Learn { label: usize, seq: Option<u64> },
    /// Put the decoder back to the model the session started with.
    Rollback,
    /// Start a new calibration block (closed-loop sessions only).
    Recalibrate,
}

/// A feedback-authorised request, and where to answer it (`None`: nobody waits for an
/// answer, as for `POST /rollback`, whose HTTP reply only says it was queued).
#[derive(Debug)]
pub struct Request {
    pub command: Command,
    pub reply: Option<Arc<ClientQueue>>,
}

impl Request {
    /// Put `message` on the requesting client's queue, if it has one.
    pub fn answer(&self, message: &super::protocol::ServerMessage) {
        if let Some(reply) = &self.reply {
            reply.push(Outgoing {
                text: message.to_json().into(),
                arrived: None,
            });
        }
    }
}

/// What the DSP thread and the client tasks share.
#[derive(Debug)]
pub struct Hub {
    pub config: ServiceConfig,
    pub metrics: Arc<Metrics>,
    pub shutdown: Shutdown,
    /// One permit per WebSocket client (`max_clients`), held by its session.
    pub client_slots: Arc<Semaphore>,
    /// The WebSocket sessions, so that shutdown waits for their close frames.
    pub sessions: TaskTracker,
    /// The `hello` every new client gets first (decoder version updated by the DSP thread).
    hello: Mutex<Hello>,
    clients: Mutex<Vec<Arc<ClientQueue>>>,
    feedback: SyncSender<Request>,
    /// The latest closed-loop `session` message, sent to new clients after `hello`.
    session_state: Mutex<Option<Arc<str>>>,
    /// The stream clock and the page paradigm's planned cues (set once by the runtime).
    pub page: std::sync::OnceLock<Arc<crate::paradigm::PageLink>>,
}

impl Hub {
    pub fn new(config: ServiceConfig, hello: Hello, feedback: SyncSender<Request>) -> Self {
        Hub {
            client_slots: Arc::new(Semaphore::new(config.max_clients)),
            sessions: TaskTracker::new(),
            config,
            metrics: Arc::new(Metrics::default()),
            shutdown: Shutdown::new(),
            hello: Mutex::new(hello),
            clients: Mutex::new(Vec::new()),
            feedback,
            session_state: Mutex::new(None),
            page: std::sync::OnceLock::new(),
        }
    }

    /// Change the `hello` new clients get (a model was loaded mid-session).
    pub fn update_hello(&self, change: impl FnOnce(&mut Hello)) {
        change(&mut self.hello.lock().unwrap_or_else(|e| e.into_inner()));
    }

    pub fn set_session_state(&self, json: Arc<str>) {
        *self.session_state.lock().unwrap_or_else(|e| e.into_inner()) = Some(json);
    }

    /// The decoder version new clients are told about (after an online update).
    pub fn set_decoder_version(&self, version: Option<u64>) {
        if let Some(decoder) = self
            .hello
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .decoder
            .as_mut()
        {
            decoder.version = version;
        }
    }

    pub fn hello(&self) -> Hello {
        self.hello.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn classes(&self) -> Vec<String> {
        self.hello().classes
    }

    /// Register a client; its queue starts with `hello`.
    pub fn connect(&self) -> Arc<ClientQueue> {
        let client = Arc::new(ClientQueue::with_bytes(
            self.config.client_queue,
            self.config.client_queue_bytes,
        ));
        client.push(Outgoing {
            text: ServerMessage::Hello(self.hello()).to_json().into(),
            arrived: None,
        });
        let session = self
            .session_state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(text) = session {
            client.push(Outgoing {
                text,
                arrived: None,
            });
        }
        if let Some(text) = self.page.get().and_then(|page| page.stage_message()) {
            client.push(Outgoing {
                text,
                arrived: None,
            });
        }
        self.clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(client.clone());
        client
    }

    pub fn disconnect(&self, client: &Arc<ClientQueue>) {
        self.clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|c| !Arc::ptr_eq(c, client));
    }

    /// Send to every client (subscribed to `topic`, when given) without waiting.
    pub fn broadcast(
        &self,
        message: &ServerMessage,
        topic: Option<Topic>,
        arrived: Option<Instant>,
    ) {
        self.broadcast_with(|| message.to_json().into(), topic, arrived);
    }

    /// [`Hub::broadcast`] of an already serialised message.
    pub fn broadcast_text(&self, text: Arc<str>, topic: Option<Topic>, arrived: Option<Instant>) {
        self.broadcast_with(|| text.clone(), topic, arrived);
    }

    /// Serialises (with `text`) only if some client is to receive the message.
    pub fn broadcast_with(
        &self,
        text: impl FnOnce() -> Arc<str>,
        topic: Option<Topic>,
        arrived: Option<Instant>,
    ) {
        let clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        let mut text = Some(text);
        let mut serialised: Option<Arc<str>> = None;
        for client in clients.iter() {
            if topic.is_some_and(|t| !client.subscribed(t)) {
                continue;
            }
            let message = serialised
                .get_or_insert_with(|| text.take().expect("serialised once")())
                .clone();
            let dropped = client.push_counted(Outgoing {
                text: message,
                arrived,
            });
            if dropped > 0 {
                self.metrics.count_drop(DropReason::ClientQueue, dropped);
            }
        }
    }

    pub fn any_subscribed(&self, topic: Topic) -> bool {
        self.clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|c| c.subscribed(topic))
    }

    /// Queue a feedback request for the DSP thread; `false` if its channel is full.
    /// Queue a client request for the DSP thread; `false` (counted) when the queue is full.
    pub fn request(&self, request: Request) -> bool {
        match self.feedback.try_send(request) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.metrics.count_drop(DropReason::FeedbackQueue, 1);
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(bytes: usize) -> Outgoing {
        Outgoing {
            text: "x".repeat(bytes).into(),
            arrived: None,
        }
    }

    #[test]
    fn the_queue_is_bounded_in_bytes_and_keeps_the_newest() {
        let queue = ClientQueue::with_bytes(1000, 10_000);
        for _ in 0..9 {
            assert_eq!(queue.push_counted(message(1000)), 0);
        }
        // The 11th KB does not fit: the oldest two go for one 2 KB message.
        assert_eq!(queue.push_counted(message(2000)), 1);
        assert_eq!(queue.queued_bytes(), 10_000);
        assert_eq!(queue.push_counted(message(5000)), 5);
        assert!(queue.queued_bytes() <= 10_000);
        // Larger than the whole budget: delivered alone.
        assert_eq!(queue.push_counted(message(20_000)), 5);
        assert_eq!(queue.queued_bytes(), 20_000);
        assert_eq!(queue.dropped(), 11);
        assert_eq!(queue.pop().map(|m| m.text.len()), Some(20_000));
        assert_eq!(queue.queued_bytes(), 0);
    }
}
