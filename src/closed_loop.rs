//! The closed loop for a new user: calibrate on the live stream, train, hot-load the model,
//! then decode cued trials online and learn from their known labels.
//!
//! ```text
//!  calibrating ──(N cued trials per class, last window complete)──► training (own thread)
//!       ▲                                                                │
//!       └──────────── recalibrate / training failed ◄────────────────────┤
//!                                                                        ▼
//!                                     online: each cued trial decided when its window
//!                                     completes, scored, then given as feedback
//! ```
//!
//! Cues are the class events of the stream itself (a marker stream next to an LSL headset,
//! the simulator's cues, a recording's T1/T2, or the paradigm page's cues once they are
//! stamped on the stream's clock), so cue onsets are on the EEG clock by construction.
//! While calibrating, the [`Engine`] runs its calibration view (band power, no decoder) and
//! this module keeps the raw samples and cues; training runs on its own thread so that the
//! DSP thread never stalls; the trained model enters the engine through
//! [`Engine::load_model`], which the recording logs with the model, so `replay --commands`
//! reproduces the whole session, calibration included. Online, the label of a cued trial is
//! known after its decision: it is fed back through [`Engine::feedback`] (the decoder's
//! supervised adaptation, recorded like any other feedback).

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::config::PipelineConfig;
use crate::engine::{needs_model, Engine, EngineSink};
use crate::error::{Error, Result};
use crate::evaluate;
use crate::io::{RecordedStream, Recording, StreamData};
use crate::model::Model;
use crate::paradigm::{CueFollower, Exclusion, PageLink, Paradigm, StepOutput};
use crate::source::SourceItem;
use crate::stream::{Event, StreamInfo};

pub use crate::config::paradigm::{
    CueSource, ParadigmConfig, MAX_CALIBRATION_TRIALS, MIN_CALIBRATION_TRIALS,
};

/// What the closed loop tells the session's clients and log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum LoopState {
    /// Collecting cued trials: `trials[i]` of class `i` so far, `needed` per class.
    Calibrating {
        trials: Vec<usize>,
        needed: usize,
        /// Trials left out so far because nobody saw their cue (they are cued again).
        #[serde(default)]
        excluded: usize,
    },
    /// Fitting on `trials` trials (off the DSP thread).
    Training { trials: usize },
    /// A model is loaded. `cv_*`: cross-validated on the calibration trials; `warning` when
    /// that is within chance; online `trials` decided so far, `hits` of them right.
    Online {
        cv_accuracy: f64,
        cv_auc: Option<f64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        warning: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        model_path: Option<String>,
        trials: usize,
        hits: usize,
        /// Trials left out since the session started because nobody saw their cue (not in
        /// `trials`).
        #[serde(default)]
        excluded: usize,
        /// The last decided trial: its class index, the predicted one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        last: Option<(usize, usize)>,
    },
    /// Training failed; calibration goes on to collect more trials.
    Failed { reason: String },
}

/// A cued trial waiting for its window to complete.
#[derive(Debug, Clone)]
struct CuedTrial {
    cue: Event,
    class: usize,
    /// Stream time at which its decision window is complete.
    decided_at: f64,
}

/// Raw samples and cues kept while calibrating (bounded).
struct CalibrationBuffer {
    info: StreamInfo,
    values: Vec<Vec<f32>>,
    timestamps: Vec<f64>,
    events: Vec<Event>,
    max_samples: usize,
    full_reported: bool,
}

impl CalibrationBuffer {
    fn new(info: &StreamInfo, max_seconds: f64) -> Self {
        CalibrationBuffer {
            info: info.clone(),
            values: vec![Vec::new(); info.channel_count()],
            timestamps: Vec::new(),
            events: Vec::new(),
            max_samples: (max_seconds * info.nominal_rate).ceil() as usize,
            full_reported: false,
        }
    }

    fn push(&mut self, chunk: &crate::stream::Chunk) {
        if self.timestamps.len() + chunk.samples() > self.max_samples {
            if !self.full_reported {
                tracing::warn!(
                    "calibration buffer full ({} samples): later samples are not kept",
                    self.max_samples
                );
                self.full_reported = true;
            }
            return;
        }
        for (c, channel) in self.values.iter_mut().enumerate() {
            channel.extend_from_slice(chunk.channel(c));
        }
        self.timestamps.extend_from_slice(chunk.timestamps());
    }

    fn into_recording(self) -> Recording {
        let samples = self.timestamps.len();
        let values = self.values.concat();
        let marker_info = crate::record::marker_stream_info("cues");
        let marker_times = self.events.iter().map(|e| e.onset).collect();
        Recording {
            streams: vec![
                RecordedStream {
                    info: self.info,
                    timestamps: self.timestamps,
                    data: StreamData::Signal { samples, values },
                },
                RecordedStream {
                    info: marker_info,
                    timestamps: marker_times,
                    data: StreamData::Markers(self.events),
                },
            ],
        }
    }
}

enum Phase {
    Calibrating(CalibrationBuffer),
    Training(Receiver<TrainingNews>),
    Online,
}

/// See the module doc. Driven by the DSP thread around each [`Engine::on_item`].
pub struct ClosedLoop {
    config: PipelineConfig,
    info: StreamInfo,
    model_out: Option<PathBuf>,
    /// Where the loaded model was saved (each calibration saves to its own file).
    saved_model: Option<PathBuf>,
    phase: Phase,
    /// Calibration trials per class so far, and the time the last one's window completes.
    counts: Vec<usize>,
    last_cue_complete: f64,
    /// Online cued trials awaiting their decision.
    pending: VecDeque<CuedTrial>,
    /// Calibration trials (page cues watched by a person) whose cue is not yet known to have
    /// been seen: counted, or left out, once their window is complete.
    unconfirmed: VecDeque<CuedTrial>,
    /// Trials left out because nobody saw their cue (this calibration block and online).
    excluded: usize,
    /// Seconds from a cue to the newest sample of its decision window.
    cue_to_decision: f64,
    trials: usize,
    hits: usize,
    last: Option<(usize, usize)>,
    score: Option<(f64, Option<f64>, Option<String>)>,
    /// The training thread, after the model arrived: its score comes later.
    scoring: Option<Receiver<TrainingNews>>,
    /// Set when a model was loaded, until [`ClosedLoop::take_model_loaded`].
    model_loaded: bool,
    /// The trial schedule, with page cues.
    page: Option<Paradigm>,
    /// End the session once the page paradigm's online run is over (`neurostream session`).
    stop_when_done: bool,
    /// Calibrations restarted (failed training, recalibration): the paradigm follows.
    calibration_round: u64,
    /// A calibration trial was counted since the last [`ClosedLoop::step`].
    counts_changed: bool,
}

impl ClosedLoop {
    /// A loop for a session on `info`. With `model` given the session starts online;
    /// without, it calibrates first (only pipelines that need a model have a loop to run:
    /// `None` for a features-only pipeline).
    pub fn new(
        config: &PipelineConfig,
        info: &StreamInfo,
        has_model: bool,
        model_out: Option<PathBuf>,
    ) -> Result<Option<Self>> {
        if !needs_model(config) {
            return Ok(None);
        }
        config.paradigm.validate()?;
        config.training.validate()?;
        // The decision window is the epoch `train` cuts: its newest sample is one sample
        // period before offset + window.
        let cue_to_decision = config.training.epoch_offset.max(0.0)
            + config.features.window_seconds
            - 1.0 / info.nominal_rate;
        let page = match config.paradigm.cues {
            CueSource::Stream => None,
            CueSource::Page => {
                let p = &config.paradigm;
                let marker = p.cue_seconds + p.imagery_seconds;
                if cue_to_decision > marker + 1e-9 {
                    return Err(Error::config(
                        "pipeline",
                        format!(
                            "paradigm.cue_seconds + paradigm.imagery_seconds = {marker} s is \
                             shorter than the decision window (training.epoch_offset + \
                             features.window_seconds = {cue_to_decision} s): a trial would be \
                             decided after its imagery ended; lengthen the imagery period"
                        ),
                    ));
                }
                if config.training.classes.len() < 2 {
                    return Err(Error::config(
                        "pipeline",
                        "paradigm.cues = \"page\" needs at least two [training] classes to cue",
                    ));
                }
                let paradigm = Paradigm::new(p, &config.training.classes, PageLink::new());
                let lsl_source = matches!(config.source, crate::pipeline::SourceConfig::Lsl(_));
                if p.lsl_markers.unwrap_or(lsl_source) {
                    Some(with_cue_outlet(paradigm, info, lsl_source)?)
                } else {
                    Some(paradigm)
                }
            }
        };
        let phase = if has_model {
            Phase::Online
        } else {
            Phase::Calibrating(CalibrationBuffer::new(
                info,
                config.paradigm.max_calibration_seconds,
            ))
        };
        Ok(Some(ClosedLoop {
            cue_to_decision,
            config: config.clone(),
            page,
            stop_when_done: false,
            calibration_round: 0,
            counts_changed: false,
            info: info.clone(),
            model_out,
            saved_model: None,
            phase,
            counts: vec![0; config.training.classes.len()],
            last_cue_complete: f64::NEG_INFINITY,
            pending: VecDeque::new(),
            unconfirmed: VecDeque::new(),
            excluded: 0,
            scoring: None,
            trials: 0,
            hits: 0,
            last: None,
            score: None,
            model_loaded: false,
        }))
    }

    pub fn state(&self) -> LoopState {
        match &self.phase {
            Phase::Calibrating(_) => LoopState::Calibrating {
                trials: self.counts.clone(),
                needed: self.config.paradigm.calibration_trials,
                excluded: self.excluded,
            },
            Phase::Training(_) => LoopState::Training {
                trials: self.counts.iter().sum(),
            },
            Phase::Online => {
                let (cv_accuracy, cv_auc, warning) =
                    self.score.clone().unwrap_or((f64::NAN, None, None));
                LoopState::Online {
                    cv_accuracy,
                    cv_auc,
                    warning,
                    model_path: self.saved_model.as_ref().map(|p| p.display().to_string()),
                    trials: self.trials,
                    hits: self.hits,
                    excluded: self.excluded,
                    last: self.last,
                }
            }
        }
    }

    /// Whether a model was loaded since the last call.
    pub fn take_model_loaded(&mut self) -> bool {
        std::mem::take(&mut self.model_loaded)
    }

    /// Online cued trials decided so far and how many were right.
    pub fn online_score(&self) -> (usize, usize) {
        (self.trials, self.hits)
    }

    /// `--model-out` for the first calibration; `<stem>.calibration-<n>.<ext>` beside it
    /// for the n-th, so a recalibration never replaces the model of an earlier one.
    fn model_path_for_this_calibration(&self) -> Option<PathBuf> {
        let first = self.model_out.as_ref()?;
        if self.calibration_round == 0 {
            return Some(first.clone());
        }
        let stem = first
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".into());
        let extension = first
            .extension()
            .map(|e| e.to_string_lossy().into_owned())
            .unwrap_or_else(|| "json".into());
        Some(first.with_file_name(format!(
            "{stem}.calibration-{}.{extension}",
            self.calibrations()
        )))
    }

    /// Calibration blocks started so far (the first one included).
    pub fn calibrations(&self) -> u64 {
        self.calibration_round + 1
    }

    /// Start a new calibration (keeps the loaded model running until the new one is ready).
    pub fn recalibrate(&mut self) {
        self.calibration_round += 1;
        self.counts.iter_mut().for_each(|c| *c = 0);
        self.unconfirmed.clear();
        self.last_cue_complete = f64::NEG_INFINITY;
        self.phase = Phase::Calibrating(CalibrationBuffer::new(
            &self.info,
            self.config.paradigm.max_calibration_seconds,
        ));
    }

    fn class_of(&self, event: &Event) -> Option<usize> {
        self.config
            .training
            .classes
            .iter()
            .position(|c| c.event == event.label)
    }

    /// Before the engine sees `item` (raw samples, before filtering).
    pub fn observe(&mut self, item: &SourceItem) {
        match item {
            SourceItem::Chunk(chunk) => {
                if let Phase::Calibrating(buffer) = &mut self.phase {
                    buffer.push(chunk);
                }
            }
            // With page cues, the stream's own markers are recorded but are not trials.
            SourceItem::Events(events) if self.page.is_none() => self.cues(events),
            SourceItem::Events(_) => {}
            SourceItem::Status(_) => {}
        }
    }

    /// Cue markers the paradigm injected at their onset (page cues).
    pub fn observe_cues(&mut self, events: &[Event]) {
        self.cues(events);
    }

    fn cues(&mut self, events: &[Event]) {
        for event in events {
            let Some(class) = self.class_of(event) else {
                continue;
            };
            let trial = CuedTrial {
                cue: event.clone(),
                class,
                decided_at: event.onset + self.cue_to_decision,
            };
            let watched = self.page.as_ref().is_some_and(|p| p.needs_page());
            match &mut self.phase {
                Phase::Calibrating(_) if watched => self.unconfirmed.push_back(trial),
                Phase::Calibrating(buffer) => {
                    buffer.events.push(trial.cue);
                    self.counts[class] += 1;
                    self.counts_changed = true;
                    self.last_cue_complete = trial.decided_at;
                }
                Phase::Online | Phase::Training(_) => self.pending.push_back(trial),
            }
        }
        // Non-class markers ride along so the calibration recording keeps them.
        if let Phase::Calibrating(buffer) = &mut self.phase {
            buffer.events.extend(
                events
                    .iter()
                    .filter(|e| {
                        self.config
                            .training
                            .classes
                            .iter()
                            .all(|c| c.event != e.label)
                    })
                    .cloned(),
            );
        }
    }

    /// The page paradigm, with `[paradigm] cues = "page"`.
    pub fn paradigm(&self) -> Option<&Paradigm> {
        self.page.as_ref()
    }

    /// What the page paradigm shares with the server (clock, planned onsets, timing).
    pub fn page_link(&self) -> Option<Arc<PageLink>> {
        self.page.as_ref().map(|p| p.link().clone())
    }

    /// With page cues: end the session (the service stops) once every online trial has been
    /// shown and decided, instead of staying in free mode.
    pub fn set_stop_when_done(&mut self, stop: bool) {
        self.stop_when_done = stop;
    }

    /// Whether the session should end now (see [`ClosedLoop::set_stop_when_done`]): `newest`
    /// is the newest sample's timestamp.
    pub fn paradigm_complete(&self, newest: f64) -> bool {
        self.stop_when_done
            && self.pending.is_empty()
            && self.page.as_ref().is_some_and(|p| p.finished(newest))
    }

    /// Let a virtual subject follow the page paradigm's cues.
    pub fn set_follower(&mut self, follower: Arc<CueFollower>) {
        if let Some(page) = self.page.as_mut() {
            page.set_follower(follower);
        }
    }

    /// Advance the page paradigm (see [`Paradigm::step`]); nothing without page cues.
    pub fn step_paradigm(&mut self, newest: Option<f64>, now: Option<f64>) -> StepOutput {
        let online = matches!(self.phase, Phase::Online);
        let round = self.calibration_round;
        match self.page.as_mut() {
            Some(page) => {
                let ready = page.link().page_ready();
                page.step(newest, now, round, online, ready)
            }
            None => StepOutput::default(),
        }
    }

    /// After the engine has processed an item: start training when enough trials are in,
    /// load a trained model, decide and learn from online trials. Returns the new state when
    /// it changed (for clients and the log).
    pub fn step(
        &mut self,
        engine: &mut Engine,
        sink: &mut dyn EngineSink,
    ) -> Result<Option<LoopState>> {
        let now = engine.now();
        let half_sample = 0.5 / self.info.nominal_rate;
        match &mut self.phase {
            Phase::Calibrating(_) => {
                self.confirm_calibration_trials(now + half_sample, engine, sink)?;
                let needed = self.config.paradigm.calibration_trials;
                let ready = self.counts.iter().all(|&c| c >= needed)
                    && now + half_sample >= self.last_cue_complete;
                if !ready {
                    // The running count is news for the page and the dashboard.
                    let counted = std::mem::take(&mut self.counts_changed);
                    return Ok(counted.then(|| self.state()));
                }
                let Phase::Calibrating(buffer) = std::mem::replace(&mut self.phase, Phase::Online)
                else {
                    unreachable!("matched above");
                };
                self.unconfirmed.clear();
                let (tx, rx) = mpsc::sync_channel(2);
                let config = self.config.clone();
                let recording = buffer.into_recording();
                std::thread::Builder::new()
                    .name("neurostream-calibration".into())
                    .spawn(move || train(&config, &recording, &tx))
                    .map_err(|e| Error::Other(format!("cannot start the training thread: {e}")))?;
                self.phase = Phase::Training(rx);
                let state = self.state();
                tracing::info!(
                    "calibration complete ({} trials); training",
                    self.counts.iter().sum::<usize>()
                );
                Ok(Some(state))
            }
            Phase::Training(rx) => match rx.try_recv() {
                Err(TryRecvError::Empty) => Ok(None),
                Err(TryRecvError::Disconnected) => {
                    self.recalibrate();
                    Ok(Some(LoopState::Failed {
                        reason: "the training thread stopped without a result".into(),
                    }))
                }
                Ok(TrainingNews::Failed(e)) => {
                    let reason = format!("training failed: {e}; collecting more trials");
                    tracing::warn!("{reason}");
                    self.recalibrate();
                    Ok(Some(LoopState::Failed { reason }))
                }
                // The score comes after the model; nothing else can come first.
                Ok(TrainingNews::Scored { .. } | TrainingNews::ScoreFailed(_)) => Ok(None),
                Ok(TrainingNews::Fitted {
                    model,
                    trials,
                    fit_seconds,
                }) => {
                    let Phase::Training(rx) = std::mem::replace(&mut self.phase, Phase::Online)
                    else {
                        unreachable!("matched above");
                    };
                    self.scoring = Some(rx);
                    self.saved_model = None;
                    if let Some(path) = self.model_path_for_this_calibration() {
                        // The model serves even if it cannot be saved (full disk, a file in
                        // the way): the session goes on and the log says so.
                        match model.save_new(&path) {
                            Ok(()) => {
                                tracing::info!("model saved to {}", path.display());
                                self.saved_model = Some(path);
                            }
                            Err(e) => tracing::error!("the calibrated model was not saved: {e}"),
                        }
                    }
                    engine.load_model(*model, sink)?;
                    tracing::info!(
                        "model live {:.2} s after the last calibration trial's window was \
                         complete (fitted on {trials} trials in {fit_seconds:.2} s); the \
                         cross-validated score follows",
                        (now - self.last_cue_complete).max(0.0)
                    );
                    // The online hit rate describes the model that is deciding now.
                    (self.trials, self.hits, self.last) = (0, 0, None);
                    self.model_loaded = true;
                    self.score = None;
                    self.phase = Phase::Online;
                    // Trials cued while training ended before the model could decide them.
                    self.pending.retain(|t| t.decided_at > now);
                    Ok(Some(self.state()))
                }
            },
            Phase::Online => {
                let mut changed = self.take_score(engine, sink)?;
                while let Some(trial) = self.pending.front() {
                    if now + half_sample < trial.decided_at {
                        break;
                    }
                    let trial = self.pending.pop_front().expect("front was Some");
                    if let Err(reason) = self.check_seen(&trial) {
                        self.exclude(&trial, reason, engine, sink)?;
                        changed = true;
                        continue;
                    }
                    let label = trial.class;
                    let Some(probabilities) = engine.latest_probabilities() else {
                        continue;
                    };
                    let predicted = argmax(probabilities);
                    self.trials += 1;
                    self.hits += usize::from(predicted == label);
                    self.last = Some((label, predicted));
                    changed = true;
                    if self.config.paradigm.cued_feedback {
                        // A refusal cannot happen for a class index of this pipeline.
                        let _ = engine.feedback(label, None, sink)?;
                    }
                }
                Ok(changed.then(|| self.state()))
            }
        }
    }
}

impl ClosedLoop {
    /// Whether a person could see `trial`'s cue: always, unless the cues come from the page
    /// paradigm and a person watches them (see [`PageLink::check_trial`]).
    fn check_seen(&self, trial: &CuedTrial) -> std::result::Result<(), Exclusion> {
        match self.page.as_ref().filter(|p| p.needs_page()) {
            Some(page) => page.link().check_trial(trial.cue.onset, trial.decided_at),
            None => Ok(()),
        }
    }

    /// Leave `trial` out (calibration and hit rate), record why, and cue it again.
    fn exclude(
        &mut self,
        trial: &CuedTrial,
        reason: Exclusion,
        engine: &mut Engine,
        sink: &mut dyn EngineSink,
    ) -> Result<()> {
        self.excluded += 1;
        tracing::warn!(
            "trial with cue {} at {:.3} s left out: {}; it is cued again",
            trial.cue.label,
            trial.cue.onset,
            reason.describe()
        );
        let name = serde_json::to_value(reason)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        engine.exclude_trial(trial.cue.onset, &trial.cue.label, &name, sink)?;
        if let Some(page) = self.page.as_mut() {
            page.repeat_trial(trial.class);
        }
        Ok(())
    }

    /// Count the calibration trials whose window is complete by `now` and whose cue was
    /// seen; leave out the others.
    fn confirm_calibration_trials(
        &mut self,
        now: f64,
        engine: &mut Engine,
        sink: &mut dyn EngineSink,
    ) -> Result<()> {
        while self
            .unconfirmed
            .front()
            .is_some_and(|t| t.decided_at <= now)
        {
            let trial = self.unconfirmed.pop_front().expect("front was Some");
            match self.check_seen(&trial) {
                Ok(()) => {
                    if let Phase::Calibrating(buffer) = &mut self.phase {
                        buffer.events.push(trial.cue.clone());
                    }
                    self.counts[trial.class] += 1;
                    self.counts_changed = true;
                    self.last_cue_complete = trial.decided_at;
                }
                Err(reason) => {
                    self.exclude(&trial, reason, engine, sink)?;
                    self.counts_changed = true;
                }
            }
        }
        Ok(())
    }
}

/// `paradigm` publishing its cues on the LSL stream `neurostream-cues`.
#[cfg(feature = "lsl")]
fn with_cue_outlet(mut paradigm: Paradigm, info: &StreamInfo, lsl_clock: bool) -> Result<Paradigm> {
    paradigm.set_outlet(crate::paradigm::CueOutlet::start(
        "neurostream-cues",
        &format!("{}-cues", info.source_id),
        lsl_clock,
    )?);
    Ok(paradigm)
}

#[cfg(not(feature = "lsl"))]
fn with_cue_outlet(_: Paradigm, _: &StreamInfo, _: bool) -> Result<Paradigm> {
    Err(Error::config(
        "pipeline",
        "paradigm.lsl_markers = true, but this build has no LSL (build with --features lsl)",
    ))
}

fn argmax(values: &[f64]) -> usize {
    values
        .iter()
        .enumerate()
        .fold((0, f64::NEG_INFINITY), |best, (i, &v)| {
            if v > best.1 {
                (i, v)
            } else {
                best
            }
        })
        .0
}

/// What the training thread tells the loop, in this order: the model (or why not), then
/// its cross-validated score.
enum TrainingNews {
    Fitted {
        model: Box<Model>,
        trials: usize,
        fit_seconds: f64,
    },
    Failed(Error),
    Scored {
        cv_accuracy: f64,
        cv_auc: Option<f64>,
        trials: usize,
        /// The fitted model with its probability calibration and operating point.
        calibrated: Box<Model>,
    },
    ScoreFailed(Error),
}

/// Cut and fit on a calibration recording and send the model at once, so that it decides
/// as early as possible; then cross-validate and send the score.
fn train(config: &PipelineConfig, recording: &Recording, news: &mpsc::SyncSender<TrainingNews>) {
    let started = std::time::Instant::now();
    let epochs = match crate::epochs::cut(recording, config) {
        Ok(epochs) => epochs,
        Err(e) => {
            let _ = news.send(TrainingNews::Failed(e));
            return;
        }
    };
    let model =
        match evaluate::train_uncalibrated(config, &epochs, vec!["closed-loop calibration".into()])
        {
            Ok(model) => model,
            Err(e) => {
                let _ = news.send(TrainingNews::Failed(e));
                return;
            }
        };
    let mut calibrated = model.clone();
    let fitted = TrainingNews::Fitted {
        model: Box::new(model),
        trials: epochs.len(),
        fit_seconds: started.elapsed().as_secs_f64(),
    };
    if news.send(fitted).is_err() {
        return;
    }
    // One cross-validation gives the score and the out-of-fold decision values that
    // calibrate the probabilities and choose the operating point.
    let _ = news.send(
        match evaluate::calibrate(config, &epochs, &mut calibrated) {
            Ok(cv) => TrainingNews::Scored {
                cv_accuracy: cv.accuracy,
                cv_auc: cv.auc,
                trials: epochs.len(),
                calibrated: Box::new(calibrated),
            },
            Err(e) => TrainingNews::ScoreFailed(e),
        },
    );
}

impl ClosedLoop {
    /// Take the cross-validated score when the training thread has sent it, and load the
    /// calibrated model it comes with (same weights; calibrated probabilities and the
    /// learned operating point); `true` when it arrived now.
    fn take_score(&mut self, engine: &mut Engine, sink: &mut dyn EngineSink) -> Result<bool> {
        let Some(rx) = &self.scoring else {
            return Ok(false);
        };
        Ok(match rx.try_recv() {
            Err(TryRecvError::Empty) => false,
            Err(TryRecvError::Disconnected) => {
                self.scoring = None;
                false
            }
            Ok(TrainingNews::Scored {
                cv_accuracy,
                cv_auc,
                trials,
                calibrated,
            }) => {
                self.scoring = None;
                if let Some(path) = &self.saved_model {
                    // The file this calibration wrote a moment ago gets the calibration too.
                    match calibrated.save(path) {
                        Ok(()) => tracing::info!(
                            "calibrated model saved to {} (probabilities and operating point)",
                            path.display()
                        ),
                        Err(e) => tracing::error!("the calibrated model was not saved: {e}"),
                    }
                }
                engine.load_model(*calibrated, sink)?;
                self.model_loaded = true;
                let warning = chance_warning(cv_accuracy, trials, self.counts.len());
                match &warning {
                    Some(w) => tracing::warn!("{w}"),
                    None => tracing::info!(
                        "calibrated on {trials} trials: CV accuracy {cv_accuracy:.3}{}",
                        cv_auc.map(|a| format!(", AUC {a:.3}")).unwrap_or_default()
                    ),
                }
                self.score = Some((cv_accuracy, cv_auc, warning));
                true
            }
            Ok(TrainingNews::ScoreFailed(e)) => {
                self.scoring = None;
                tracing::warn!(
                    "the calibration could not be cross-validated ({e}): the model keeps its \
                     own probabilities and the configured or default threshold"
                );
                false
            }
            Ok(_) => false,
        })
    }
}

/// A warning when `accuracy` on `trials` trials of `classes` balanced classes is not above
/// chance at the 95 % level (one-sided normal approximation of the binomial:
/// p₀ + 1.645·√(p₀(1 − p₀) / n), p₀ = 1 / classes).
pub fn chance_warning(accuracy: f64, trials: usize, classes: usize) -> Option<String> {
    let chance = 1.0 / classes.max(2) as f64;
    let bound = chance + 1.645 * (chance * (1.0 - chance) / trials.max(1) as f64).sqrt();
    (accuracy < bound).then(|| {
        format!(
            "calibration CV accuracy {accuracy:.3} on {trials} trials is within chance \
             (the 95 % chance bound is {bound:.3}): the decoder will be unreliable; check the \
             electrodes and recalibrate"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chance_bound_shrinks_with_trials() {
        assert!(chance_warning(0.6, 20, 2).is_some());
        assert!(chance_warning(0.6, 400, 2).is_none());
        assert!(chance_warning(0.9, 40, 2).is_none());
        // Three classes: chance is a third.
        assert!(chance_warning(0.5, 300, 3).is_none());
        assert!(chance_warning(0.4, 30, 3).is_some());
    }

    #[test]
    fn page_cues_must_last_until_the_trial_is_decided() {
        let mut config = crate::pipeline::PipelineConfig::from_toml(
            "[decoder]\nkind = \"lda\"\n[features]\nwindow_seconds = 3.0\n\
             [training]\nclasses = [{ event = \"T1\", name = \"left\" }, \
             { event = \"T2\", name = \"right\" }]\nepoch_offset = 0.5\n\
             [paradigm]\ncues = \"page\"\ncue_seconds = 1.0\nimagery_seconds = 2.0\n",
            "test",
        )
        .unwrap();
        use crate::source::Source;
        let info = crate::source::simulator::SimulatorConfig::default()
            .build()
            .unwrap()
            .stream_info()
            .clone();
        let error = ClosedLoop::new(&config, &info, false, None)
            .err()
            .expect("a 3 s marker cannot hold a 3.5 s decision")
            .to_string();
        assert!(
            error.contains("paradigm.cue_seconds + paradigm.imagery_seconds = 3"),
            "{error}"
        );
        config.paradigm.imagery_seconds = 2.5;
        let closed_loop = ClosedLoop::new(&config, &info, false, None)
            .unwrap()
            .unwrap();
        assert!(closed_loop.paradigm().is_some());
        assert!(closed_loop.page_link().is_some());
    }

    #[test]
    fn paradigm_timings_are_checked() {
        let p = ParadigmConfig {
            break_max_seconds: 0.5,
            ..ParadigmConfig::default()
        };
        let e = p.validate().unwrap_err().to_string();
        assert!(
            e.contains("paradigm.break_max_seconds = 0.5") && e.contains("break_min_seconds"),
            "{e}"
        );
        let p = ParadigmConfig {
            cue_seconds: f64::NAN,
            ..ParadigmConfig::default()
        };
        let e = p.validate().unwrap_err().to_string();
        assert!(e.contains("paradigm.cue_seconds = NaN"), "{e}");
        let p = ParadigmConfig {
            announce_seconds: 0.1,
            ..ParadigmConfig::default()
        };
        assert!(p.validate().is_err());
    }

    #[test]
    fn paradigm_ranges_are_checked() {
        let mut p = ParadigmConfig::default();
        p.validate().unwrap();
        p.calibration_trials = 2;
        let e = p.validate().unwrap_err().to_string();
        assert!(e.contains("paradigm.calibration_trials = 2"), "{e}");
        p.calibration_trials = 20;
        p.max_calibration_seconds = 1.0;
        assert!(p.validate().is_err());
    }
}
