//! The session engine: the one place where a session's logic lives.
//!
//! A session is a stream of [`SourceItem`]s going through the [`Pipeline`] (filters, windows,
//! features, decoder), the [`Controller`] (probabilities → commands), a command sequence
//! number, the features of recent commands (so feedback naming a command trains on the window
//! that command was decided on) and a sample clock. [`Engine`] owns all of that; whoever
//! drives it — the service's DSP thread, `replay`, faithful replay of a recording
//! (`replay --commands`), `evaluate --online` — only hands it items and feedback and receives
//! what happens through an [`EngineSink`]. Replaying a recorded session therefore equals the
//! live session by construction: both are the same code fed the same items.
//!
//! What changes state mid-session (feedback, a reset after a lost stream, a refused chunk) is
//! reported as a [`SessionEvent`] stamped with the sample clock, so a recording can have
//! [`replay`] cut the signal at exactly the same points and apply the same steps.
//!
//! The per-chunk path allocates nothing once warmed up: the pipeline owns its buffers, and
//! [`RecentCommands`] is a fixed ring.

use serde::{Deserialize, Serialize};

use crate::control::{Controller, Decision};
use crate::error::Result;
use crate::model::Model;
use crate::pipeline::{Pipeline, PipelineConfig, RejectKind, Rejected, WindowFeatures};
use crate::source::{Source, SourceItem, StreamStatus};
use crate::stream::{Chunk, Event, StreamInfo};

/// Something that changed the session's state, recorded so that a replay does the same at the
/// same point. `after_samples`: raw signal samples the engine had received before it happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum SessionEvent {
    /// A supervised step with this label (`applied`: whether the decoder changed).
    Feedback {
        after_samples: u64,
        label: usize,
        applied: bool,
        /// The command the feedback was about (its window was learned); absent: the latest
        /// window.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seq: Option<u64>,
    },
    /// The stream was lost: pipeline and controller state were reset.
    Reset { after_samples: u64, reason: String },
    /// A chunk of `samples` samples starting after `after_samples` was refused whole (bad
    /// values reset the pipeline and the controller; a duplicate is skipped). A replay cuts
    /// its chunks at both ends so that the same chunk is refused the same way.
    Refused {
        after_samples: u64,
        samples: u64,
        kind: RefusedKind,
        reason: String,
    },
    /// The decoder went back to the calibrated model.
    Rollback { after_samples: u64 },
    /// A model trained during the session (closed-loop calibration) replaced the pipeline's
    /// decoder and feature stage from this sample on. `model`: the model file, as JSON.
    ModelLoaded { after_samples: u64, model: String },
    /// A cued trial (marker `label` at stream time `onset`) left out of calibration and of
    /// the hit rate because nobody saw its cue (`reason`: `unpainted`, `page_not_ready`).
    /// `train` on the recording leaves it out too; a replay needs nothing from it.
    TrialExcluded {
        after_samples: u64,
        onset: f64,
        label: String,
        reason: String,
    },
}

/// Why a chunk was refused (see [`RejectKind`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusedKind {
    BadValues,
    Duplicate,
}

impl From<RejectKind> for RefusedKind {
    fn from(kind: RejectKind) -> Self {
        match kind {
            RejectKind::BadValues => RefusedKind::BadValues,
            RejectKind::Duplicate => RefusedKind::Duplicate,
        }
    }
}

impl SessionEvent {
    pub fn after_samples(&self) -> u64 {
        match self {
            SessionEvent::Feedback { after_samples, .. }
            | SessionEvent::Reset { after_samples, .. }
            | SessionEvent::Refused { after_samples, .. }
            | SessionEvent::Rollback { after_samples }
            | SessionEvent::ModelLoaded { after_samples, .. }
            | SessionEvent::TrialExcluded { after_samples, .. } => *after_samples,
        }
    }
}

/// A command the controller decided, lent to the sink.
#[derive(Debug, Clone)]
pub struct CommandEvent<'a> {
    /// 1, 2, 3… in decision order over the whole session.
    pub seq: u64,
    pub decision: Decision<'a>,
    pub probabilities: &'a [f64],
    /// Timestamp of the newest sample of the window the command was decided on.
    pub timestamp: f64,
}

/// A decided command as recorded and replayed (the protocol's `command` message without its
/// latency, which is wall-clock and differs on every run).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandRecord {
    pub seq: u64,
    pub command: String,
    pub class: String,
    pub class_index: usize,
    pub confidence: f64,
    pub probabilities: Vec<f64>,
    pub timestamp: f64,
}

impl From<&CommandEvent<'_>> for CommandRecord {
    fn from(command: &CommandEvent<'_>) -> Self {
        CommandRecord {
            seq: command.seq,
            command: command.decision.command.to_owned(),
            class: command.decision.class.to_owned(),
            class_index: command.decision.class_index,
            confidence: command.decision.confidence,
            probabilities: command.probabilities.to_vec(),
            timestamp: command.timestamp,
        }
    }
}

/// The answer to one feedback step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Learned<'a> {
    pub label: usize,
    pub class: &'a str,
    /// Whether the decoder changed (false: no decoder, no window yet, a decoder that does not
    /// learn online, or a step the decoder declined).
    pub applied: bool,
    pub decoder_version: Option<u64>,
    pub seq: Option<u64>,
}

/// Why a feedback step was not taken at all (nothing learned, nothing recorded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedbackRefusal {
    /// The label is not a class index of this decoder.
    UnknownClass { label: usize, classes: usize },
    /// The command `seq` is no longer (or never was) among the recent ones.
    UnknownCommand { seq: u64 },
}

impl std::fmt::Display for FeedbackRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FeedbackRefusal::UnknownClass { label, classes } => write!(
                f,
                "feedback label {label} is not a class (allowed: 0..{classes}); nothing learned"
            ),
            FeedbackRefusal::UnknownCommand { seq } => write!(
                f,
                "feedback for command seq {seq}: not among the last {} commands; nothing learned",
                RecentCommands::CAPACITY
            ),
        }
    }
}

/// Receives what the engine produces. Every method has a default that ignores it, so each
/// sink implements only what it needs. An error stops the engine at the end of the current
/// item and is returned to its driver.
pub trait EngineSink {
    /// A chunk exactly as received, before any check or filtering (recorders).
    fn raw_chunk(&mut self, _chunk: &Chunk) -> Result<()> {
        Ok(())
    }
    /// An accepted chunk after preprocessing (signal views).
    fn filtered_chunk(&mut self, _chunk: &Chunk, _rate: f64) -> Result<()> {
        Ok(())
    }
    /// One window's features (and probabilities); `marker` is the label of the marker active
    /// at the window's end, if any (see [`active_marker`]).
    fn window(&mut self, _window: WindowFeatures<'_>, _marker: Option<&str>) -> Result<()> {
        Ok(())
    }
    fn command(&mut self, _command: &CommandEvent<'_>) -> Result<()> {
        Ok(())
    }
    /// Events (markers) as the source delivered them.
    fn events(&mut self, _events: &[Event]) -> Result<()> {
        Ok(())
    }
    /// What happened to the stream (lost, regained, samples dropped at the source).
    fn status(&mut self, _status: &StreamStatus) -> Result<()> {
        Ok(())
    }
    /// A chunk the pipeline refused whole. By default reported as dropped samples.
    fn refused(&mut self, rejected: &Rejected) -> Result<()> {
        self.status(&StreamStatus::Dropped {
            samples: rejected.samples as u64,
            reason: rejected.reason.clone(),
        })
    }
    /// A state change to record, at stream time `timestamp` (see [`SessionEvent`]).
    fn session_event(&mut self, _timestamp: f64, _event: &SessionEvent) -> Result<()> {
        Ok(())
    }
    fn learned(&mut self, _learned: &Learned<'_>) -> Result<()> {
        Ok(())
    }
    /// The source has ended.
    fn finish(&mut self) -> Result<()> {
        Ok(())
    }
}

/// Running totals of one engine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineSummary {
    pub chunks: u64,
    /// Raw samples received (refused ones included): the sample clock.
    pub samples: u64,
    pub windows: u64,
    pub events: u64,
    pub commands: u64,
    /// Samples in chunks refused for NaN, infinite or absurd values.
    pub rejected_samples: u64,
    /// Samples in chunks refused as delivered twice.
    pub duplicate_samples: u64,
    pub feedback_applied: u64,
    /// Resets after a lost stream.
    pub resets: u64,
}

/// See the module doc.
pub struct Engine {
    pipeline: Pipeline,
    controller: Option<Controller>,
    recent: RecentCommands,
    seq: u64,
    /// Stream time of the newest sample received: where session events sit in a recording.
    now: f64,
    /// Events that can still label a future window.
    active: Vec<Event>,
    summary: EngineSummary,
    /// What the pipeline was built from, so that a model trained mid-session can replace it
    /// ([`Engine::load_model`]); `None` for an engine made from a ready pipeline.
    plan: Option<(PipelineConfig, StreamInfo)>,
}

/// The pipeline a session runs before its first model: the same source and preprocessing,
/// band-power features (which need no fitting, for the dashboard) and no decoder. A pipeline
/// whose feature stage is fitted (CSP, tangent space) cannot run without a model; this one
/// lets the session record and show calibration data until the model is trained.
pub fn calibration_view(config: &PipelineConfig) -> PipelineConfig {
    let mut view = config.clone();
    view.features.csp = None;
    view.features.tangent_space = None;
    view.decoder = None;
    view
}

/// Whether `config` needs a trained model before it can decode or even extract features.
pub fn needs_model(config: &PipelineConfig) -> bool {
    config.decoder.is_some()
        || config.features.csp.is_some()
        || config.features.tangent_space.is_some()
}

impl Engine {
    /// `controller`: `None` when the pipeline has no decoder (features only).
    pub fn new(pipeline: Pipeline, controller: Option<Controller>) -> Self {
        Engine {
            recent: RecentCommands::new(pipeline.feature_names().len()),
            pipeline,
            controller,
            seq: 0,
            now: 0.0,
            active: Vec::new(),
            summary: EngineSummary::default(),
            plan: None,
        }
    }

    /// Build the pipeline and, when it decodes, the controller of `config`. Without a model, a
    /// pipeline that needs one runs its [`calibration_view`] until [`Engine::load_model`].
    pub fn build(
        config: &PipelineConfig,
        input: &StreamInfo,
        model: Option<Model>,
    ) -> Result<Self> {
        let (pipeline, controller) = Self::parts(config, input, model)?;
        let mut engine = Engine::new(pipeline, controller);
        engine.plan = Some((config.clone(), input.clone()));
        Ok(engine)
    }

    fn parts(
        config: &PipelineConfig,
        input: &StreamInfo,
        model: Option<Model>,
    ) -> Result<(Pipeline, Option<Controller>)> {
        let operating_point = model.as_ref().and_then(|m| m.operating_point.clone());
        let pipeline = match model {
            None if needs_model(config) => Pipeline::build(&calibration_view(config), input, None)?,
            model => Pipeline::build(config, input, model)?,
        };
        let controller = if pipeline.class_names().is_empty() {
            None
        } else {
            Some(
                config
                    .control
                    .build_with(pipeline.class_names(), operating_point.as_ref())?,
            )
        };
        Ok((pipeline, controller))
    }

    /// Replace the pipeline by one built with `model` (trained during the session), from the
    /// next sample on; command numbering carries on. Filter and window state restart, as after
    /// a reset. Recorded as [`SessionEvent::ModelLoaded`].
    pub fn load_model(&mut self, model: Model, sink: &mut dyn EngineSink) -> Result<()> {
        let Some((config, input)) = &self.plan else {
            return Err(crate::Error::Internal(
                "this engine was made from a ready pipeline; it cannot load a model".into(),
            ));
        };
        let json = serde_json::to_string(&model)
            .map_err(|e| crate::Error::Internal(format!("cannot serialise the model: {e}")))?;
        let (pipeline, controller) = Self::parts(config, input, Some(model))?;
        self.recent = RecentCommands::new(pipeline.feature_names().len());
        self.pipeline = pipeline;
        self.controller = controller;
        let event = SessionEvent::ModelLoaded {
            after_samples: self.summary.samples,
            model: json,
        };
        sink.session_event(self.now, &event)
    }

    /// Class probabilities of the newest window, when the pipeline decodes and a window has
    /// completed since the last reset.
    pub fn latest_probabilities(&self) -> Option<&[f64]> {
        self.pipeline.latest_probabilities()
    }

    /// The controller's threshold in force and the model's learned operating point (for
    /// `hello` and status), `None` without a decoder.
    pub fn controller(&self) -> Option<&Controller> {
        self.controller.as_ref()
    }

    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    /// Whether decided commands come out (a decoder and a controller).
    pub fn decides(&self) -> bool {
        self.controller.is_some() && !self.pipeline.class_names().is_empty()
    }

    pub fn summary(&self) -> &EngineSummary {
        &self.summary
    }

    /// Stream time of the newest sample received.
    pub fn now(&self) -> f64 {
        self.now
    }

    /// Stop all online learning (supervised and unsupervised): the frozen reference of
    /// `evaluate --online`.
    pub fn freeze(&mut self) {
        self.pipeline.set_adaptation(false);
    }

    /// Stop supervised steps only (feedback is still recorded, `applied: false`); unsupervised
    /// adaptation goes on: the unsupervised-only arm of `evaluate --online`.
    pub fn unsupervised_only(&mut self) {
        self.pipeline.set_supervised(false);
    }

    /// Process one item from a source.
    pub fn on_item(&mut self, item: SourceItem, sink: &mut dyn EngineSink) -> Result<()> {
        match item {
            SourceItem::Chunk(mut chunk) => self.on_chunk(&mut chunk, sink),
            SourceItem::Events(events) => {
                self.summary.events += events.len() as u64;
                sink.events(&events)?;
                self.active.extend(events);
                Ok(())
            }
            SourceItem::Status(status) => {
                if let StreamStatus::Lost { reason } = &status {
                    let event = SessionEvent::Reset {
                        after_samples: self.summary.samples,
                        reason: reason.clone(),
                    };
                    self.reset();
                    sink.session_event(self.now, &event)?;
                }
                sink.status(&status)
            }
        }
    }

    /// Process one chunk (filtered in place).
    pub fn on_chunk(&mut self, chunk: &mut Chunk, sink: &mut dyn EngineSink) -> Result<()> {
        sink.raw_chunk(chunk)?;
        let start = self.summary.samples;
        self.summary.chunks += 1;
        self.summary.samples += chunk.samples() as u64;
        self.now = chunk.last_timestamp().unwrap_or(self.now);
        let Engine {
            pipeline,
            controller,
            recent,
            seq,
            active,
            summary,
            ..
        } = self;
        let mut sink_error = None;
        let rejected = pipeline.process(chunk, |window| {
            if sink_error.is_some() {
                return;
            }
            summary.windows += 1;
            let t = window.end_timestamp;
            let marker = active_marker(active, t);
            if let Err(e) = sink.window(window, marker) {
                sink_error = Some(e);
                return;
            }
            let (Some(controller), Some(probabilities)) =
                (controller.as_mut(), window.probabilities)
            else {
                return;
            };
            if let Some(decision) = controller.decide(t, probabilities) {
                *seq += 1;
                recent.remember(*seq, window.values);
                summary.commands += 1;
                let command = CommandEvent {
                    seq: *seq,
                    decision,
                    probabilities,
                    timestamp: t,
                };
                if let Err(e) = sink.command(&command) {
                    sink_error = Some(e);
                }
            }
        });
        if let Some(e) = sink_error {
            return Err(e);
        }
        match rejected {
            Some(rejected) => {
                match rejected.kind {
                    // The pipeline has reset itself; the controller's dwell count must not
                    // bridge the hole either.
                    RejectKind::BadValues => {
                        self.summary.rejected_samples += rejected.samples as u64;
                        if let Some(c) = self.controller.as_mut() {
                            c.reset();
                        }
                    }
                    // Nothing new arrived and nothing was lost: state carries on.
                    RejectKind::Duplicate => {
                        self.summary.duplicate_samples += rejected.samples as u64
                    }
                }
                tracing::warn!("{}", rejected.reason);
                let event = SessionEvent::Refused {
                    after_samples: start,
                    samples: rejected.samples as u64,
                    kind: rejected.kind.into(),
                    reason: rejected.reason.clone(),
                };
                sink.session_event(self.now, &event)?;
                sink.refused(&rejected)?;
            }
            None => {
                if !chunk.is_empty() {
                    sink.filtered_chunk(chunk, self.pipeline.output_info().nominal_rate)?;
                }
            }
        }
        if let Some(now) = chunk.last_timestamp() {
            // Keep the spans still open, and the latest marker already started (a point
            // marker stays active until the next one).
            let latest = self.active.iter().rposition(|e| e.onset <= now);
            let mut i = 0;
            self.active.retain(|e| {
                let keep = e.onset + e.duration >= now || Some(i) == latest;
                i += 1;
                keep
            });
        }
        Ok(())
    }

    /// A supervised step with the true class `label`: on the window command `seq` was decided
    /// on, or on the latest window. Recorded as a [`SessionEvent::Feedback`] and answered with
    /// [`EngineSink::learned`]; a refusal is neither.
    pub fn feedback(
        &mut self,
        label: usize,
        seq: Option<u64>,
        sink: &mut dyn EngineSink,
    ) -> Result<std::result::Result<bool, FeedbackRefusal>> {
        let classes = self.pipeline.class_names().len();
        if label >= classes {
            return Ok(Err(FeedbackRefusal::UnknownClass { label, classes }));
        }
        let applied = match seq {
            None => self.pipeline.learn(label),
            Some(seq) => match self.recent.features(seq) {
                Some(features) => self.pipeline.learn_from(features, label),
                None => return Ok(Err(FeedbackRefusal::UnknownCommand { seq })),
            },
        };
        if applied {
            self.summary.feedback_applied += 1;
        }
        let event = SessionEvent::Feedback {
            after_samples: self.summary.samples,
            label,
            applied,
            seq,
        };
        sink.session_event(self.now, &event)?;
        sink.learned(&Learned {
            label,
            class: &self.pipeline.class_names()[label],
            applied,
            decoder_version: self.pipeline.decoder_version(),
            seq,
        })?;
        Ok(Ok(applied))
    }

    /// Put the decoder back to the model the session started with. Returns `false` when there
    /// is nothing to roll back to (no decoder).
    pub fn rollback(&mut self, sink: &mut dyn EngineSink) -> Result<bool> {
        if !self.pipeline.rollback() {
            return Ok(false);
        }
        let event = SessionEvent::Rollback {
            after_samples: self.summary.samples,
        };
        sink.session_event(self.now, &event)?;
        Ok(true)
    }

    /// Record that the cued trial at `onset` (marker `label`) is left out, and why.
    pub fn exclude_trial(
        &mut self,
        onset: f64,
        label: &str,
        reason: &str,
        sink: &mut dyn EngineSink,
    ) -> Result<()> {
        let event = SessionEvent::TrialExcluded {
            after_samples: self.summary.samples,
            onset,
            label: label.to_owned(),
            reason: reason.to_owned(),
        };
        sink.session_event(self.now, &event)
    }

    /// Forget filter, window and controller state (after a gap or a reconnect).
    pub fn reset(&mut self) {
        self.summary.resets += 1;
        self.pipeline.reset();
        if let Some(c) = self.controller.as_mut() {
            c.reset();
        }
    }

    /// Drive `source` through the engine into `sink` until the source ends. `on_progress` is
    /// called after each item with the running totals (for progress bars).
    pub fn run(
        &mut self,
        source: &mut dyn Source,
        sink: &mut dyn EngineSink,
        mut on_progress: impl FnMut(&EngineSummary),
    ) -> Result<EngineSummary> {
        while let Some(item) = source.next_item()? {
            self.on_item(item, sink)?;
            on_progress(&self.summary);
        }
        sink.finish()?;
        Ok(self.summary)
    }
}

/// The features of the last [`RecentCommands::CAPACITY`] commands, by sequence number, so
/// that feedback naming a command (`seq`) trains on the window that command was decided on,
/// not on whatever window came last. Fixed storage: nothing is allocated per command.
#[derive(Debug, Clone)]
pub struct RecentCommands {
    dimension: usize,
    seqs: Vec<Option<u64>>,
    features: Vec<f32>,
}

impl RecentCommands {
    pub const CAPACITY: usize = 64;

    pub fn new(dimension: usize) -> Self {
        RecentCommands {
            dimension,
            seqs: vec![None; Self::CAPACITY],
            features: vec![0.0; dimension * Self::CAPACITY],
        }
    }

    pub fn remember(&mut self, seq: u64, features: &[f32]) {
        let slot = (seq % Self::CAPACITY as u64) as usize;
        self.seqs[slot] = Some(seq);
        self.features[slot * self.dimension..(slot + 1) * self.dimension]
            .copy_from_slice(&features[..self.dimension]);
    }

    /// The features command `seq` was decided on, if it is still remembered.
    pub fn features(&self, seq: u64) -> Option<&[f32]> {
        let slot = (seq % Self::CAPACITY as u64) as usize;
        (self.seqs[slot] == Some(seq))
            .then(|| &self.features[slot * self.dimension..(slot + 1) * self.dimension])
    }
}

/// A recorded signal to replay: channel-major `values` (`channels × samples`) with one time
/// stamp per sample, and the markers that went with it.
#[derive(Debug, Clone, Copy)]
pub struct RecordedSignal<'a> {
    pub info: &'a StreamInfo,
    pub values: &'a [f32],
    pub timestamps: &'a [f64],
    pub markers: &'a [Event],
}

impl RecordedSignal<'_> {
    pub fn samples(&self) -> usize {
        self.timestamps.len()
    }
}

/// Feed a recorded signal through `engine` in chunks of at most `chunk_samples`, taking the
/// session `events` at the sample they were recorded after: feedback and rollbacks are
/// applied there, resets replay a lost stream there, and a refused chunk is cut out exactly
/// as it arrived so that the pipeline refuses it the same way. Markers are delivered after
/// the chunk that reaches their onset, as a live source does.
///
/// The windowing and the filters do not depend on where chunks are cut (windows are counted in
/// samples, filters run sample by sample), so only the session events fix cut points.
pub fn replay(
    engine: &mut Engine,
    signal: RecordedSignal<'_>,
    events: &[SessionEvent],
    chunk_samples: usize,
    sink: &mut dyn EngineSink,
) -> Result<EngineSummary> {
    let total = signal.samples();
    let channels = signal.info.channel_count();
    // Where each event's sample clock starts in this signal (an engine may have run before).
    let origin = engine.summary().samples;
    let position_of = |after: u64| after.saturating_sub(origin) as usize;
    // Every point where a chunk must end: events, and both ends of refused chunks; a refused
    // chunk is replayed whole, whatever `chunk_samples` is.
    let mut cuts: Vec<usize> = Vec::with_capacity(events.len() * 2);
    let mut refused: Vec<(usize, usize)> = Vec::new();
    for event in events {
        if matches!(event, SessionEvent::TrialExcluded { .. }) {
            // Changes nothing in the engine: no chunk needs to end there.
            continue;
        }
        let at = position_of(event.after_samples());
        cuts.push(at);
        if let SessionEvent::Refused { samples, .. } = event {
            cuts.push(at + *samples as usize);
            refused.push((at, at + *samples as usize));
        }
    }
    cuts.sort_unstable();
    refused.sort_unstable();
    let mut cuts = cuts.into_iter().peekable();
    let mut refused = refused.into_iter().peekable();
    let mut pending = events.iter().peekable();
    let mut markers = signal.markers.iter().peekable();
    let mut chunk = Chunk::empty(channels);
    let mut marker_batch = Vec::new();
    let chunk_samples = chunk_samples.max(1);
    let mut position = 0usize;
    loop {
        while let Some(event) = pending.next_if(|e| position_of(e.after_samples()) <= position) {
            match event {
                SessionEvent::Feedback { label, seq, .. } => {
                    // A refusal is what live answered too: nothing to do.
                    let _ = engine.feedback(*label, *seq, sink)?;
                }
                SessionEvent::Reset { reason, .. } => {
                    engine.on_item(
                        SourceItem::Status(StreamStatus::Lost {
                            reason: reason.clone(),
                        }),
                        sink,
                    )?;
                }
                SessionEvent::Rollback { .. } => {
                    engine.rollback(sink)?;
                }
                SessionEvent::ModelLoaded { model, .. } => {
                    let model = Model::from_json(model, "the model loaded mid-session")?;
                    engine.load_model(model, sink)?;
                }
                // Re-derived by processing the same chunk.
                SessionEvent::Refused { .. } => {}
                // A note for `train`, not a change of state.
                SessionEvent::TrialExcluded { .. } => {}
            }
        }
        if position >= total {
            break;
        }
        while cuts.next_if(|&c| c <= position).is_some() {}
        while refused.next_if(|&(start, _)| start < position).is_some() {}
        let end = match refused.next_if(|&(start, _)| start == position) {
            Some((_, end)) => end.min(total).max(position + 1),
            None => {
                let cut = cuts.peek().map_or(total, |&c| c.min(total));
                (position + chunk_samples).min(cut).max(position + 1)
            }
        };
        let n = end - position;
        chunk.reset(channels, n);
        for c in 0..channels {
            chunk
                .channel_mut(c)
                .copy_from_slice(&signal.values[c * total + position..c * total + end]);
        }
        chunk
            .timestamps_mut()
            .copy_from_slice(&signal.timestamps[position..end]);
        engine.on_chunk(&mut chunk, sink)?;
        let newest = signal.timestamps[end - 1];
        marker_batch.clear();
        while let Some(marker) = markers.next_if(|m| m.onset <= newest) {
            marker_batch.push(marker.clone());
        }
        if !marker_batch.is_empty() {
            engine.on_item(SourceItem::Events(std::mem::take(&mut marker_batch)), sink)?;
        }
        position = end;
    }
    Ok(*engine.summary())
}

/// A sink that collects commands (faithful replay, tests).
#[derive(Debug, Default)]
pub struct CommandCollector {
    pub commands: Vec<CommandRecord>,
}

impl EngineSink for CommandCollector {
    fn command(&mut self, command: &CommandEvent<'_>) -> Result<()> {
        self.commands.push(command.into());
        Ok(())
    }
}

/// The marker active at time `t` among `events` (in onset order): the latest one started at or
/// before `t` when it is a point marker (duration 0, as every XDF/LSL marker is: active until
/// the next marker starts) or its span `[onset, onset + duration]` still holds `t`; else the
/// latest earlier span that holds `t` (EDF+ annotations with durations).
pub fn active_marker(events: &[Event], t: f64) -> Option<&str> {
    events
        .iter()
        .rev()
        .filter(|e| e.onset <= t)
        .enumerate()
        .find(|(i, e)| t <= e.onset + e.duration || (*i == 0 && e.duration == 0.0))
        .map(|(_, e)| e.label.as_str())
}

#[cfg(test)]
mod marker_tests {
    use super::*;

    #[test]
    fn point_markers_last_until_the_next_and_spans_until_their_end() {
        let points = [
            Event::new("T0".to_owned(), 1.0, 0.0),
            Event::new("T1".to_owned(), 5.0, 0.0),
        ];
        assert_eq!(active_marker(&points, 0.5), None);
        assert_eq!(active_marker(&points, 1.0), Some("T0"));
        assert_eq!(active_marker(&points, 4.9), Some("T0"));
        assert_eq!(active_marker(&points, 5.0), Some("T1"));
        assert_eq!(active_marker(&points, 500.0), Some("T1"));
        // EDF+ annotations: a span ends; a later point marker inside an earlier span wins.
        let spans = [
            Event::new("T2".to_owned(), 1.0, 4.0),
            Event::new("go".to_owned(), 2.0, 0.0),
            Event::new("T0".to_owned(), 10.0, 2.0),
        ];
        assert_eq!(active_marker(&spans, 1.5), Some("T2"));
        assert_eq!(active_marker(&spans, 3.0), Some("go"));
        assert_eq!(active_marker(&spans, 11.0), Some("T0"));
        assert_eq!(active_marker(&spans, 12.5), None);
    }
}
