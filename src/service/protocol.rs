//! The WebSocket protocol, version [`PROTOCOL_VERSION`]: JSON text messages with a `"type"`
//! tag. docs/protocol.md describes every message with an example; these types are the source
//! of truth and a test checks the documented examples parse.

use serde::{Deserialize, Serialize};

/// Bumped on any incompatible change; sent in `hello`. Fields may be added within a version,
/// so clients must ignore fields they do not know.
pub const PROTOCOL_VERSION: u32 = 1;

/// Server → client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    Hello(Hello),
    Command(Command),
    Status(Status),
    Features(Features),
    Signal(Signal),
    Learned(Learned),
    /// Reply to `rollback`: the decoder is the calibrated model again.
    RolledBack(RolledBack),
    /// Reply to `recalibrate`: a new calibration block started (the current model keeps
    /// deciding until the new one is trained and loaded).
    Recalibrating(Recalibrating),
    Subscribed(Subscribed),
    Pong(Pong),
    Error(ErrorMessage),
    /// Where the closed loop is: calibrating (trials so far), training, online (CV score,
    /// online hit rate, the last trial).
    Session(crate::closed_loop::LoopState),
    /// A planned paradigm trial (page cues), announced before its fixation starts; times
    /// on the stream's clock.
    Cue(crate::paradigm::PlannedCue),
    /// The paradigm's stage changed.
    Paradigm(ParadigmStatus),
    /// Answer to the client's `clock_sync`: the stream time when the service handled it.
    ClockSync(ClockSyncReply),
    /// A page reported a cue's paint: its marker → paint offset and the running p50/p99.
    CueTiming(crate::paradigm::PaintReport),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParadigmStatus {
    pub stage: crate::paradigm::Stage,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClockSyncReply {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<serde_json::Value>,
    /// The client's clock when it sent the request, echoed.
    pub client_time: f64,
    /// Stream-clock seconds (newest sample's timestamp + time since its chunk arrived).
    pub stream_time: f64,
}

/// First message on every connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    pub protocol: u32,
    /// Random id of this service run (changes on restart).
    pub session: String,
    pub stream: StreamDescription,
    /// Channel labels after preprocessing (the order of `signal` rows).
    pub channels: Vec<String>,
    /// Decoder classes (the order of `command.probabilities`); empty without a decoder.
    pub classes: Vec<String>,
    /// Feature names (the order of `features.values`).
    pub features: Vec<String>,
    pub decoder: Option<DecoderDescription>,
    /// The controller's operating point (threshold, and what calibration expects of it);
    /// absent without a controller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operating_point: Option<OperatingPointDescription>,
    pub limits: Limits,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamDescription {
    pub name: String,
    #[serde(rename = "stream_type")]
    pub kind: String,
    pub rate: f64,
    /// Channels the source delivers (before channel selection).
    pub channel_count: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecoderDescription {
    pub kind: String,
    /// Plastic decoders only: increments on every applied learning step.
    pub version: Option<u64>,
}

/// The controller's operating point, for `hello` and status: the threshold in force, where it
/// came from and, when the model learned it at calibration, the precision and command share
/// expected there. Every field but `source` is optional (clients ignore what they lack).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OperatingPointDescription {
    /// Minimum probability of the winning class; `null` when the learned operating point is
    /// below `control.min_precision` and no command is sent.
    pub threshold: Option<f64>,
    /// `"calibration"` (learned with the model), `"pipeline"` (`[control] threshold`, an
    /// override) or `"default"` (a model without an operating point: 0.6).
    pub source: String,
    /// Learned operating point: the share of commands naming the true class on the
    /// out-of-fold calibration windows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_precision: Option<f64>,
    /// Learned operating point: the share of calibration windows that command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_command_share: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_precision: Option<f64>,
    /// `false`: no threshold reached `target_precision` (a near-chance calibration); the best
    /// one is in force.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reached_target: Option<bool>,
}

impl OperatingPointDescription {
    /// What `controller` runs with.
    pub fn of(controller: &crate::control::Controller) -> Self {
        let op = controller.operating_point();
        let threshold = controller.threshold();
        OperatingPointDescription {
            threshold: threshold.is_finite().then_some(threshold),
            source: if controller.threshold_overridden() {
                "pipeline"
            } else if op.is_some() {
                "calibration"
            } else {
                "default"
            }
            .into(),
            expected_precision: op.map(|o| o.expected_precision),
            expected_command_share: op.map(|o| o.expected_command_share),
            target_precision: op.map(|o| o.target_precision),
            reached_target: op.map(|o| o.reached_target),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    pub max_message_bytes: usize,
    pub messages_per_second: u32,
    pub queue: usize,
}

/// A decision of the controller.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Command {
    /// 1, 2, 3... per service run, in decision order; a gap means this client lost messages.
    pub seq: u64,
    pub command: String,
    pub class: String,
    pub class_index: usize,
    pub confidence: f64,
    /// One per `hello.classes` entry.
    pub probabilities: Vec<f64>,
    /// Stream timestamp (seconds) of the newest sample used.
    pub timestamp: f64,
    /// Chunk arrival at the DSP thread → decision, milliseconds.
    pub latency_ms: f64,
}

/// What happened to the stream or to this client's queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub event: StatusEvent,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `samples_dropped`: samples the source lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub samples: Option<u64>,
    /// `messages_dropped`: messages this client lost since it connected / since the last report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropped_total: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropped: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatusEvent {
    StreamLost,
    StreamRegained,
    SamplesDropped,
    StreamEnded,
    MessagesDropped,
    /// The NATS publisher lost its server (WebSocket clients are still served).
    NatsLost,
    /// The NATS publisher is connected again.
    NatsRegained,
}

impl Status {
    pub fn event(event: StatusEvent) -> Self {
        Status {
            event,
            reason: None,
            samples: None,
            dropped_total: None,
            dropped: None,
        }
    }
}

/// One window's features (topic `features`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Features {
    pub timestamp: f64,
    pub values: Vec<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probabilities: Option<Vec<f64>>,
}

/// One preprocessed chunk (topic `signal`): `values[channel][sample]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Signal {
    /// Timestamp of the first sample.
    pub timestamp: f64,
    pub rate: f64,
    pub values: Vec<Vec<f32>>,
}

/// Reply to `feedback`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Learned {
    pub class: String,
    /// Whether the decoder changed (false for non-plastic decoders, before the first window,
    /// or when the decoder declined the step).
    pub applied: bool,
    pub decoder_version: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
}

/// Reply to `rollback`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolledBack {
    pub decoder_version: Option<u64>,
}

/// Reply to `recalibrate`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recalibrating {
    /// Calibration blocks started in this session, this one included.
    pub calibration: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Subscribed {
    pub topics: Vec<Topic>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pong {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorMessage {
    pub code: ErrorCode,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not JSON, not an object, or no string `type`.
    Malformed,
    /// A `type` this protocol version does not know.
    UnknownType,
    /// A known type with missing or invalid fields.
    BadRequest,
    /// Over the per-client message rate; the message was ignored.
    RateLimited,
    /// The server could not take the request now (feedback queue full); retry later.
    Busy,
    /// This connection may not do that (feedback or rollback without the feedback right).
    Forbidden,
}

/// Optional data streams a client can subscribe to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Topic {
    Features,
    Signal,
}

impl Topic {
    pub fn bit(self) -> u8 {
        match self {
            Topic::Features => 1,
            Topic::Signal => 2,
        }
    }
}

/// Client → server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    /// The true class of what the user is doing now (or a correction of command `seq`): one
    /// learning step of a plastic decoder on the most recent window.
    Feedback {
        class: String,
        #[serde(default)]
        seq: Option<u64>,
    },
    Subscribe {
        topics: Vec<Topic>,
    },
    Unsubscribe {
        topics: Vec<Topic>,
    },
    Ping {
        #[serde(default)]
        id: Option<serde_json::Value>,
    },
    /// Put the decoder back to the model the session started with (feedback right needed).
    Rollback {},
    /// Start a new calibration block now (closed-loop sessions; feedback right needed).
    Recalibrate {},
    /// Ask for the stream clock; `client_time` (any unit, e.g. `performance.now()` ms) is
    /// echoed so the client can measure the round trip.
    ClockSync {
        #[serde(default)]
        id: Option<serde_json::Value>,
        client_time: f64,
    },
    /// The page drew cue `trial` in the animation frame at stream time `paint_time` (s).
    CuePainted {
        trial: u64,
        paint_time: f64,
    },
    /// The paradigm page can show cues (`ready`: connected, visible, full size) or no
    /// longer can (hidden, minimised, too small). Cues start only while a page is ready; a
    /// trial during which no page was ready is left out of calibration and the hit rate.
    PageReady {
        ready: bool,
    },
}

/// Known client message types, for telling `unknown_type` from `bad_request`.
pub const CLIENT_TYPES: &[&str] = &[
    "feedback",
    "subscribe",
    "unsubscribe",
    "ping",
    "rollback",
    "recalibrate",
    "clock_sync",
    "cue_painted",
    "page_ready",
];

/// Characters of client input quoted back in an error, at most: a reply never grows with
/// what a client sends.
pub const QUOTE_CHARS: usize = 32;

/// `input` for an error message: at most [`QUOTE_CHARS`] characters, control characters and
/// quotes escaped, `…` when cut.
pub fn quote(input: &str) -> String {
    let mut out = String::with_capacity(QUOTE_CHARS + 8);
    out.push('"');
    for (i, c) in input.chars().enumerate() {
        if i == QUOTE_CHARS {
            out.push('…');
            break;
        }
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => out.push('?'),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A parser's message, which may quote the input (serde: "unknown variant `...`"), cut to a
/// fixed length.
fn bounded(detail: impl std::fmt::Display) -> String {
    let text = detail.to_string();
    match text.char_indices().nth(4 * QUOTE_CHARS) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text,
    }
}

/// Parse a client text message, or the error to send back.
pub fn parse_client(text: &str) -> Result<ClientMessage, ErrorMessage> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| ErrorMessage {
        code: ErrorCode::Malformed,
        message: format!("not valid JSON: {}", bounded(e)),
    })?;
    let Some(kind) = value
        .get("type")
        .and_then(|t| t.as_str())
        .map(str::to_owned)
    else {
        return Err(ErrorMessage {
            code: ErrorCode::Malformed,
            message: "expected a JSON object with a string \"type\"".into(),
        });
    };
    if !CLIENT_TYPES.contains(&kind.as_str()) {
        return Err(ErrorMessage {
            code: ErrorCode::UnknownType,
            message: format!(
                "unknown message type {}; allowed: {}",
                quote(&kind),
                CLIENT_TYPES.join(", ")
            ),
        });
    }
    serde_json::from_value(value).map_err(|e| ErrorMessage {
        code: ErrorCode::BadRequest,
        message: format!("invalid {kind:?} message: {}", bounded(e)),
    })
}

impl ServerMessage {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("protocol messages always serialize")
    }

    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        ServerMessage::Error(ErrorMessage {
            code,
            message: message.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_messages_parse_or_name_the_problem() {
        assert_eq!(
            parse_client(r#"{"type":"ping","id":3}"#).unwrap(),
            ClientMessage::Ping { id: Some(3.into()) }
        );
        assert_eq!(
            parse_client(r#"{"type":"subscribe","topics":["features","signal"]}"#).unwrap(),
            ClientMessage::Subscribe {
                topics: vec![Topic::Features, Topic::Signal]
            }
        );
        assert_eq!(
            parse_client("{oops").unwrap_err().code,
            ErrorCode::Malformed
        );
        assert_eq!(parse_client("[1]").unwrap_err().code, ErrorCode::Malformed);
        assert_eq!(
            parse_client(r#"{"type":"dance"}"#).unwrap_err().code,
            ErrorCode::UnknownType
        );
        assert_eq!(
            parse_client(r#"{"type":"feedback"}"#).unwrap_err().code,
            ErrorCode::BadRequest
        );
    }

    #[test]
    fn errors_quote_little_of_the_input() {
        let huge = format!(r#"{{"type":"{}"}}"#, "\\u0000x".repeat(10_000));
        let error = parse_client(&huge).unwrap_err();
        assert_eq!(error.code, ErrorCode::UnknownType);
        assert!(error.message.len() < 300, "{}", error.message);
        let bad_topic = format!(
            r#"{{"type":"subscribe","topics":["{}"]}}"#,
            "a".repeat(50_000)
        );
        let error = parse_client(&bad_topic).unwrap_err();
        assert_eq!(error.code, ErrorCode::BadRequest);
        assert!(error.message.len() < 700, "{}", error.message);
        assert_eq!(quote("a\"b\n"), r#""a\"b?""#);
        assert_eq!(quote(&"é".repeat(40)).chars().count(), QUOTE_CHARS + 3);
        assert_eq!(
            parse_client(r#"{"type":"rollback"}"#).unwrap(),
            ClientMessage::Rollback {}
        );
    }

    #[test]
    fn operating_point_description_follows_the_controller() {
        use crate::control::{ControlConfig, OperatingPoint};
        let classes = vec!["left".to_string(), "right".to_string()];
        let op = OperatingPoint {
            threshold: 0.55,
            expected_precision: 0.75,
            expected_command_share: 0.6,
            target_precision: 0.7,
            reached_target: true,
            commands: true,
            windows: 30,
        };
        let learned = ControlConfig::default()
            .build_with(&classes, Some(&op))
            .unwrap();
        let d = OperatingPointDescription::of(&learned);
        assert_eq!(
            serde_json::to_string(&d).unwrap(),
            r#"{"threshold":0.55,"source":"calibration","expected_precision":0.75,"expected_command_share":0.6,"target_precision":0.7,"reached_target":true}"#
        );
        let fixed = ControlConfig::default().build(&classes).unwrap();
        let d = OperatingPointDescription::of(&fixed);
        assert_eq!(
            serde_json::to_string(&d).unwrap(),
            r#"{"threshold":0.6,"source":"default"}"#
        );
        let silent = OperatingPoint {
            commands: false,
            ..op
        };
        let c = ControlConfig::default()
            .build_with(&classes, Some(&silent))
            .unwrap();
        assert_eq!(OperatingPointDescription::of(&c).threshold, None);
    }

    #[test]
    fn server_messages_carry_their_type() {
        let json = ServerMessage::Status(Status::event(StatusEvent::StreamEnded)).to_json();
        assert_eq!(json, r#"{"type":"status","event":"stream_ended"}"#);
        let back: ServerMessage = serde_json::from_str(&json).unwrap();
        assert!(matches!(back, ServerMessage::Status(_)));
    }
}
