//! What the DSP thread and the client tasks share: the client registry with each client's
//! bounded queue, the `hello` every new client gets, and the feedback channel to the DSP
//! thread. Neither side imports the other: both depend only on this module.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::Notify;

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

/// A client's bounded queue: the producer never waits; when full, the oldest message goes.
#[derive(Debug)]
pub struct ClientQueue {
    queue: Mutex<VecDeque<Outgoing>>,
    capacity: usize,
    pub notify: Notify,
    dropped: AtomicU64,
    topics: AtomicU8,
}

impl ClientQueue {
    pub fn new(capacity: usize) -> Self {
        ClientQueue {
            queue: Mutex::new(VecDeque::with_capacity(capacity)),
            capacity,
            notify: Notify::new(),
            dropped: AtomicU64::new(0),
            topics: AtomicU8::new(0),
        }
    }

    /// Queue `message`; returns `false` if an older message had to be dropped for it.
    pub fn push(&self, message: Outgoing) -> bool {
        let mut dropped = false;
        {
            let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            if queue.len() >= self.capacity {
                queue.pop_front();
                dropped = true;
            }
            queue.push_back(message);
        }
        if dropped {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        self.notify.notify_one();
        !dropped
    }

    pub fn pop(&self) -> Option<Outgoing> {
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front()
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

/// A client's request to learn from the most recent window.
#[derive(Debug)]
pub struct FeedbackRequest {
    pub label: usize,
    pub seq: Option<u64>,
    pub reply: Arc<ClientQueue>,
}

/// What the DSP thread and the client tasks share.
#[derive(Debug)]
pub struct Hub {
    pub config: ServiceConfig,
    pub metrics: Arc<Metrics>,
    pub shutdown: Shutdown,
    /// The `hello` every new client gets first (decoder version updated by the DSP thread).
    hello: Mutex<Hello>,
    clients: Mutex<Vec<Arc<ClientQueue>>>,
    feedback: SyncSender<FeedbackRequest>,
    /// The latest closed-loop `session` message, sent to new clients after `hello`.
    session_state: Mutex<Option<Arc<str>>>,
    /// The stream clock and the page paradigm's planned cues (set once by the runtime).
    pub page: std::sync::OnceLock<Arc<crate::paradigm::PageLink>>,
}

impl Hub {
    pub fn new(config: ServiceConfig, hello: Hello, feedback: SyncSender<FeedbackRequest>) -> Self {
        Hub {
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
        let client = Arc::new(ClientQueue::new(self.config.client_queue));
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
            if !client.push(Outgoing {
                text: message,
                arrived,
            }) {
                self.metrics.count_drop(DropReason::ClientQueue, 1);
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
    pub fn feedback(&self, request: FeedbackRequest) -> bool {
        match self.feedback.try_send(request) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.metrics.count_drop(DropReason::FeedbackQueue, 1);
                false
            }
        }
    }
}
