//! The cue paradigm run by the service (`[paradigm] cues = "page"`): Graz-style motor-imagery
//! trials scheduled on the EEG stream's clock, shown by the browser page at `/paradigm`.
//!
//! ```text
//!  ┌ fixation ┐┌ cue (arrow) ┐┌── imagery (feedback bar online) ──┐┌ break (random) ┐
//!  fixation    cue onset = the marker                                 next trial
//! ```
//!
//! **Stream time.** Every time here is on the clock of the EEG stream's timestamps (for an LSL
//! source that is the LSL clock the service maps the headset onto). The service's idea of
//! "now" on that clock is *the newest sample's timestamp plus the wall-clock time since its
//! chunk arrived at the DSP thread* ([`StreamClock`]). Cues are planned ahead: each trial is
//! announced to clients (`cue` message, with its planned onsets) [`ParadigmConfig`]`.announce_seconds`
//! before its fixation starts, and never with a cue onset less than [`MIN_LEAD_SECONDS`]
//! ahead. The cue marker itself is an [`Event`] with the *planned* onset, injected into the
//! closed loop and the engine right after the first chunk whose newest sample reaches the
//! onset — the same point at which `replay` delivers a recorded marker, so it is recorded in
//! the session's XDF and a replay sees the same session.
//!
//! **The page's clock.** The page asks for the stream time (`clock_sync` with its
//! `performance.now()`), keeps the offset of the exchange with the lowest round trip, shows
//! each cue in the `requestAnimationFrame` callback whose frame time is nearest the planned
//! onset, and reports that frame time mapped to stream time (`cue_painted`). The service keeps
//! paint − marker offsets ([`CueTiming`]: p50/p99). That is the time the browser *drew* the
//! cue; the photons leave the display later by the compositor and display latency (typically
//! one to three frames, 16–50 ms at 60 Hz), which a browser cannot observe and which a
//! photodiode would have to measure.
//!
//! **Virtual subject.** A [`CueFollower`] given to the simulator (`follow_cues = true`) gets
//! every planned cue when it is announced, so the simulated subject imagines the cued hand
//! from the cue onset to the end of the imagery period.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::config::ParadigmConfig;
use crate::epochs::ClassSpec;
use crate::stream::Event;

pub use crate::source::cues::{CueFollower, FollowedCue, Imagery};

/// A cue onset is never planned closer than this to "now" (stream time), so that the page
/// has the announcement well before it must draw the cue.
pub use crate::config::paradigm::MIN_LEAD_SECONDS;

impl Imagery {
    /// From the class's event and name: EEGMMIDB's `T1`/`T2`, or a name saying left/right.
    pub fn of(class: &ClassSpec) -> Imagery {
        let name = class.name.to_ascii_lowercase();
        if class.event == "T1" || name.contains("left") {
            Imagery::LeftHand
        } else if class.event == "T2" || name.contains("right") {
            Imagery::RightHand
        } else {
            Imagery::Other
        }
    }
}

/// The service's estimate of "now" on the stream's clock: the newest sample's timestamp plus
/// the time since its chunk arrived.
#[derive(Debug, Default)]
pub struct StreamClock {
    newest: Mutex<Option<(f64, Instant)>>,
}

impl StreamClock {
    pub fn update(&self, newest_timestamp: f64, arrived: Instant) {
        *self.newest.lock().unwrap_or_else(|e| e.into_inner()) = Some((newest_timestamp, arrived));
    }

    /// `None` before the first chunk.
    pub fn now(&self) -> Option<f64> {
        self.newest
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map(|(t, arrived)| t + arrived.elapsed().as_secs_f64())
    }
}

/// Marker → paint offsets reported by pages, milliseconds.
#[derive(Debug, Default)]
pub struct CueTiming {
    offsets_ms: Vec<f64>,
}

/// Summary of [`CueTiming`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TimingSummary {
    pub count: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Largest absolute offset.
    pub max_abs_ms: f64,
}

impl CueTiming {
    pub fn push(&mut self, offset_ms: f64) {
        self.offsets_ms.push(offset_ms);
    }

    /// Nearest-rank percentiles of the signed offsets; `None` before the first report.
    pub fn summary(&self) -> Option<TimingSummary> {
        if self.offsets_ms.is_empty() {
            return None;
        }
        let mut sorted = self.offsets_ms.clone();
        sorted.sort_by(f64::total_cmp);
        let rank = |p: f64| {
            let i = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
            sorted[i]
        };
        Some(TimingSummary {
            count: sorted.len(),
            p50_ms: rank(0.5),
            p99_ms: rank(0.99),
            max_abs_ms: sorted.iter().fold(0.0, |m: f64, v| m.max(v.abs())),
        })
    }
}

/// A cue counts as seen when the page reports painting it at most this long after its
/// marker (stream seconds). Later, the subject started the imagery late or not at all.
pub const PAINT_DEADLINE_SECONDS: f64 = 0.5;

/// Intervals without a ready page kept for the trial checks (older ones are long decided).
const MAX_NOT_READY_INTERVALS: usize = 256;
/// Paint reports kept for the trial checks.
const MAX_PAINTED: usize = 1024;

/// Why a cued trial is left out of calibration and of the hit rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Exclusion {
    /// No page reported painting the cue within [`PAINT_DEADLINE_SECONDS`].
    Unpainted,
    /// No paradigm page was ready (hidden, minimised, gone) at some point of the trial.
    PageNotReady,
}

impl Exclusion {
    pub fn describe(self) -> &'static str {
        match self {
            Exclusion::Unpainted => "its cue was not painted by a paradigm page in time",
            Exclusion::PageNotReady => "the paradigm page was hidden or gone during the trial",
        }
    }
}

/// Which pages are ready, and since when none is (stream time).
#[derive(Debug)]
struct Readiness {
    pages: HashSet<usize>,
    /// Stream time since which no page is ready; `None` while one is.
    none_since: Option<f64>,
    /// Closed intervals without a ready page, oldest first.
    gaps: VecDeque<(f64, f64)>,
}

impl Default for Readiness {
    fn default() -> Self {
        Readiness {
            pages: HashSet::new(),
            none_since: Some(f64::NEG_INFINITY),
            gaps: VecDeque::new(),
        }
    }
}

/// What the DSP thread and the server share about the paradigm: the stream clock (answers to
/// `clock_sync`), the planned cue onsets (to score `cue_painted`), the timing statistics and
/// which pages are ready to show cues (`page_ready`).
#[derive(Debug, Default)]
pub struct PageLink {
    pub clock: StreamClock,
    onsets: Mutex<HashMap<u64, f64>>,
    timing: Mutex<CueTiming>,
    /// The latest `paradigm` message, for clients that connect later.
    stage: Mutex<Option<Arc<str>>>,
    /// Pages ready now (read by the DSP thread without a lock).
    ready_pages: AtomicUsize,
    readiness: Mutex<Readiness>,
    /// Cue onsets a page painted, with the paint − marker offset (s), newest last.
    painted: Mutex<VecDeque<(f64, f64)>>,
}

/// The outcome of one `cue_painted` report.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PaintReport {
    pub trial: u64,
    pub offset_ms: f64,
    #[serde(flatten)]
    pub summary: TimingSummary,
}

impl PageLink {
    pub fn new() -> Arc<PageLink> {
        Arc::new(PageLink::default())
    }

    fn planned(&self, trial: u64, onset: f64) {
        self.onsets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(trial, onset);
    }

    /// A page painted cue `trial` at stream time `paint_time`. `Err` names what was wrong
    /// (unknown trial, a second report, a time that is not a number).
    pub fn painted(&self, trial: u64, paint_time: f64) -> Result<PaintReport, String> {
        if !paint_time.is_finite() {
            return Err(format!(
                "cue_painted.paint_time = {paint_time} is not a finite number"
            ));
        }
        let Some(onset) = self
            .onsets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&trial)
        else {
            return Err(format!(
                "cue_painted.trial = {trial}: no such planned cue, or its paint was already reported"
            ));
        };
        let offset_ms = (paint_time - onset) * 1e3;
        {
            let mut painted = self.painted.lock().unwrap_or_else(|e| e.into_inner());
            if painted.len() == MAX_PAINTED {
                painted.pop_front();
            }
            painted.push_back((onset, paint_time - onset));
        }
        let mut timing = self.timing.lock().unwrap_or_else(|e| e.into_inner());
        timing.push(offset_ms);
        let summary = timing.summary().expect("one offset was just added");
        tracing::info!(
            "cue {trial}: painted {offset_ms:+.1} ms after its marker (n = {}, p50 {:+.1} ms, \
             p99 {:+.1} ms; rAF time, display latency not included)",
            summary.count,
            summary.p50_ms,
            summary.p99_ms
        );
        Ok(PaintReport {
            trial,
            offset_ms,
            summary,
        })
    }

    /// Remember the latest `paradigm` message (JSON) for new clients.
    pub fn set_stage_message(&self, json: Arc<str>) {
        *self.stage.lock().unwrap_or_else(|e| e.into_inner()) = Some(json);
    }

    pub fn stage_message(&self) -> Option<Arc<str>> {
        self.stage.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Page `page` (any key unique among connected clients) says it can (`true`) or can no
    /// longer (`false`) show cues; a page that disconnects is `false`.
    pub fn set_ready(&self, page: usize, ready: bool) {
        let now = self.clock.now().unwrap_or(f64::NEG_INFINITY);
        let mut readiness = self.readiness.lock().unwrap_or_else(|e| e.into_inner());
        let changed = if ready {
            readiness.pages.insert(page)
        } else {
            readiness.pages.remove(&page)
        };
        if !changed {
            return;
        }
        let count = readiness.pages.len();
        self.ready_pages.store(count, Ordering::Relaxed);
        match (count, readiness.none_since) {
            (0, None) => {
                readiness.none_since = Some(now);
                tracing::warn!(
                    "no paradigm page is ready any more (hidden, minimised or closed): no new \
                     cue until one is, and trials meanwhile are left out"
                );
            }
            (1.., Some(since)) => {
                readiness.none_since = None;
                if readiness.gaps.len() == MAX_NOT_READY_INTERVALS {
                    readiness.gaps.pop_front();
                }
                readiness.gaps.push_back((since, now));
                tracing::info!("a paradigm page is ready to show cues");
            }
            _ => {}
        }
    }

    /// Whether some page is ready to show cues now.
    pub fn page_ready(&self) -> bool {
        self.ready_pages.load(Ordering::Relaxed) > 0
    }

    /// Whether the cued trial with its marker at `onset` was seen until `until` (stream
    /// times): a page ready all along, and painted within [`PAINT_DEADLINE_SECONDS`].
    pub fn check_trial(&self, onset: f64, until: f64) -> std::result::Result<(), Exclusion> {
        {
            let readiness = self.readiness.lock().unwrap_or_else(|e| e.into_inner());
            let overlaps = |from: f64, to: f64| from < until && to > onset;
            if readiness
                .none_since
                .is_some_and(|since| overlaps(since, f64::INFINITY))
                || readiness.gaps.iter().any(|&(from, to)| overlaps(from, to))
            {
                return Err(Exclusion::PageNotReady);
            }
        }
        let painted = self.painted.lock().unwrap_or_else(|e| e.into_inner());
        let seen = painted.iter().rev().any(|&(painted_onset, offset)| {
            (painted_onset - onset).abs() < 1e-6 && offset <= PAINT_DEADLINE_SECONDS
        });
        if seen {
            Ok(())
        } else {
            Err(Exclusion::Unpainted)
        }
    }

    pub fn timing(&self) -> Option<TimingSummary> {
        self.timing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .summary()
    }
}

/// Cue markers published as an LSL string stream (`[paradigm] lsl_markers`), so LabRecorder
/// or MNE-LSL record them next to the headset. LSL outlets are not `Send`: the outlet lives
/// on its own thread and gets plain data through a bounded channel, never waited for.
///
/// Timestamps: with an LSL source the stream clock *is* the LSL clock of this machine, so a
/// cue goes out at its planned onset; with another source (simulator, replay) the stream
/// clock starts at the source's zero, and onsets are shifted onto the LSL clock by
/// `local_clock() − stream now`, taken once at the first cue.
#[cfg(feature = "lsl")]
#[derive(Debug)]
pub struct CueOutlet {
    tx: std::sync::mpsc::SyncSender<(String, f64)>,
    clock_is_lsl: bool,
    shift: Option<f64>,
}

#[cfg(feature = "lsl")]
impl CueOutlet {
    /// Cues queued for the outlet thread before new ones are dropped (and logged).
    const QUEUE: usize = 256;

    /// Create the outlet `name` (type `Markers`) on its own thread.
    pub fn start(name: &str, source_id: &str, clock_is_lsl: bool) -> crate::Result<CueOutlet> {
        use lsl::ExPushable;
        let (tx, rx) = std::sync::mpsc::sync_channel::<(String, f64)>(Self::QUEUE);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (name, source_id) = (name.to_owned(), source_id.to_owned());
        std::thread::Builder::new()
            .name("neurostream-cue-outlet".into())
            .spawn(move || {
                let outlet = lsl::StreamInfo::new(
                    &name,
                    "Markers",
                    1,
                    crate::stream::IRREGULAR_RATE,
                    lsl::ChannelFormat::String,
                    &source_id,
                )
                .and_then(|info| lsl::StreamOutlet::new(&info, 0, 360));
                let outlet = match outlet {
                    Ok(outlet) => {
                        let _ = ready_tx.send(Ok(()));
                        outlet
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!(
                            "cannot create the LSL cue outlet {name:?}: {e}"
                        )));
                        return;
                    }
                };
                for (label, timestamp) in rx {
                    if let Err(e) = outlet.push_sample_ex(&vec![label.as_str()], timestamp, true) {
                        tracing::warn!("LSL cue outlet: cannot push a marker: {e}");
                    }
                }
            })
            .map_err(|e| {
                crate::Error::Unsupported(format!("cannot start the cue outlet thread: {e}"))
            })?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(CueOutlet {
                tx,
                clock_is_lsl,
                shift: None,
            }),
            Ok(Err(e)) => Err(crate::Error::Stream(e)),
            Err(_) => Err(crate::Error::Stream(
                "the LSL cue outlet thread stopped before creating its outlet".into(),
            )),
        }
    }

    /// Publish `cue` (reached by the stream; `now` is the stream clock).
    pub fn publish(&mut self, cue: &Event, now: f64) {
        let shift = if self.clock_is_lsl {
            0.0
        } else {
            *self.shift.get_or_insert_with(|| lsl::local_clock() - now)
        };
        if self
            .tx
            .try_send((cue.label.clone(), cue.onset + shift))
            .is_err()
        {
            tracing::warn!(
                "LSL cue outlet is behind: marker {} not published",
                cue.label
            );
        }
    }
}

/// Which run a trial belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Block {
    Calibration,
    Online,
}

/// A planned trial, as announced to clients (`cue` message). Times in stream seconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedCue {
    /// 1, 2, 3… over the session.
    pub trial: u64,
    pub block: Block,
    /// Position in its block (1-based) and the block's length.
    pub trial_in_block: usize,
    pub block_trials: usize,
    pub class: String,
    pub class_index: usize,
    /// The marker label (the class's event, e.g. `T1`).
    pub event: String,
    pub fixation_onset: f64,
    pub cue_onset: f64,
    pub cue_seconds: f64,
    pub imagery_seconds: f64,
    pub break_seconds: f64,
}

/// Where the paradigm is (`paradigm` message).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Waiting for the stream (and a page) before the first trial.
    Starting,
    Calibration,
    /// All calibration trials shown; the model is being trained.
    Training,
    Online,
    /// All online trials shown: free mode, no cues.
    Free,
}

/// What the DSP thread should do after a [`Paradigm::step`].
#[derive(Debug, Default)]
pub struct StepOutput {
    /// Cue markers whose onset the stream has reached: inject them now.
    pub due: Vec<Event>,
    /// Newly planned trials to announce.
    pub planned: Vec<PlannedCue>,
    /// A new stage to announce.
    pub stage: Option<Stage>,
}

/// How long the DSP thread waits for a page to connect before it starts the trials anyway
/// (a headless session), in stream seconds after the first sample.
pub const START_WITHOUT_PAGE_SECONDS: f64 = 10.0;

/// The schedule and its progress (see the module doc). Driven by the DSP thread.
#[derive(Debug)]
pub struct Paradigm {
    config: ParadigmConfig,
    classes: Vec<ClassSpec>,
    rng: ChaCha8Rng,
    stage: Stage,
    /// Classes of the trials left to announce in the current block.
    queue: VecDeque<usize>,
    block_trials: usize,
    /// Earliest fixation onset of the next trial.
    next_fixation: Option<f64>,
    /// End of the last announced trial's imagery period.
    last_imagery_end: f64,
    trial: u64,
    first_sample: Option<f64>,
    /// The closed loop's calibration round last seen.
    round: u64,
    pending: VecDeque<Event>,
    link: Arc<PageLink>,
    follower: Option<Arc<CueFollower>>,
    #[cfg(feature = "lsl")]
    outlet: Option<CueOutlet>,
    /// No page ready (with [`Paradigm::needs_page`]): no new trial is planned.
    paused: bool,
    waiting_reported: bool,
}

impl Paradigm {
    pub fn new(config: &ParadigmConfig, classes: &[ClassSpec], link: Arc<PageLink>) -> Self {
        Paradigm {
            config: config.clone(),
            classes: classes.to_vec(),
            rng: ChaCha8Rng::seed_from_u64(config.seed),
            stage: Stage::Starting,
            queue: VecDeque::new(),
            block_trials: 0,
            next_fixation: None,
            last_imagery_end: f64::NEG_INFINITY,
            trial: 0,
            first_sample: None,
            round: 0,
            pending: VecDeque::new(),
            link,
            follower: None,
            #[cfg(feature = "lsl")]
            outlet: None,
            paused: false,
            waiting_reported: false,
        }
    }

    /// Tell `follower` (a virtual subject) every cue when it is planned.
    pub fn set_follower(&mut self, follower: Arc<CueFollower>) {
        self.follower = Some(follower);
    }

    /// Publish every cue marker on this LSL outlet too.
    #[cfg(feature = "lsl")]
    pub fn set_outlet(&mut self, outlet: CueOutlet) {
        self.outlet = Some(outlet);
    }

    /// Whether cues need a ready page: a person watches them. A virtual subject (a
    /// [`CueFollower`]) gets every cue without one.
    pub fn needs_page(&self) -> bool {
        self.follower.is_none()
    }

    /// Cue one more trial of `class` in the current block (a trial that was left out).
    pub fn repeat_trial(&mut self, class: usize) {
        if class < self.classes.len() {
            self.queue.push_back(class);
            self.block_trials += 1;
        }
    }

    pub fn link(&self) -> &Arc<PageLink> {
        &self.link
    }

    pub fn stage(&self) -> Stage {
        self.stage
    }

    /// Whether every online trial has been shown and its imagery period is over.
    pub fn finished(&self, now: f64) -> bool {
        self.stage == Stage::Free && now >= self.last_imagery_end && self.pending.is_empty()
    }

    /// Trials per class in shuffled blocks of one of each class, so any stretch is balanced.
    fn fill(&mut self, per_class: usize) {
        self.queue.clear();
        let mut block: Vec<usize> = (0..self.classes.len()).collect();
        for _ in 0..per_class {
            block.shuffle(&mut self.rng);
            self.queue.extend(block.iter().copied());
        }
        self.block_trials = self.queue.len();
    }

    /// Advance: `newest` is the newest sample's timestamp (markers due up to it), `now` the
    /// stream clock; from the closed loop, `calibration_round` (how many times calibration
    /// restarted: a failed training or a recalibration starts a new calibration block) and
    /// `online` (a model is loaded); `page` whether a paradigm page is ready (see
    /// [`PageLink::page_ready`]): trials start and go on only while one is, unless a virtual
    /// subject follows the cues (then the first trial waits up to
    /// [`START_WITHOUT_PAGE_SECONDS`] for a page and starts anyway).
    pub fn step(
        &mut self,
        newest: Option<f64>,
        now: Option<f64>,
        calibration_round: u64,
        online: bool,
        page: bool,
    ) -> StepOutput {
        let mut out = StepOutput::default();
        if let Some(newest) = newest {
            self.first_sample.get_or_insert(newest);
            while self.pending.front().is_some_and(|e| e.onset <= newest) {
                out.due.extend(self.pending.pop_front());
            }
        }
        let Some(now) = now else { return out };
        #[cfg(feature = "lsl")]
        if let Some(outlet) = self.outlet.as_mut() {
            out.due.iter().for_each(|cue| outlet.publish(cue, now));
        }
        let restarted = calibration_round != self.round;
        self.round = calibration_round;
        let stage = match self.stage {
            Stage::Starting => {
                let waited = now - self.first_sample.unwrap_or(now);
                let headless = !self.needs_page() && waited >= START_WITHOUT_PAGE_SECONDS;
                if !page && !headless && !self.waiting_reported {
                    self.waiting_reported = true;
                    tracing::info!(
                        "waiting for the paradigm page (/paradigm) to connect and be visible \
                         before the first cue"
                    );
                }
                if page || headless {
                    if online {
                        self.fill(self.config.online_trials_per_class);
                        Stage::Online
                    } else {
                        self.fill(self.config.calibration_trials);
                        Stage::Calibration
                    }
                } else {
                    Stage::Starting
                }
            }
            _ if restarted => {
                self.fill(self.config.calibration_trials);
                Stage::Calibration
            }
            Stage::Calibration if self.queue.is_empty() => Stage::Training,
            // A calibration trial left out (unseen cue) is cued again.
            Stage::Training if !online && !self.queue.is_empty() => Stage::Calibration,
            Stage::Training if online => {
                self.fill(self.config.online_trials_per_class);
                Stage::Online
            }
            Stage::Online if self.queue.is_empty() => Stage::Free,
            Stage::Free if !self.queue.is_empty() => Stage::Online,
            stage => stage,
        };
        if stage != self.stage {
            self.stage = stage;
            out.stage = Some(stage);
            if matches!(stage, Stage::Calibration | Stage::Online) {
                let earliest = now + self.config.announce_seconds;
                self.next_fixation = Some(self.next_fixation.map_or(earliest, |t| t.max(earliest)));
            }
        }
        let paused = self.needs_page() && !page;
        if paused != self.paused {
            self.paused = paused;
            if matches!(self.stage, Stage::Calibration | Stage::Online) {
                tracing::info!(
                    "paradigm {}",
                    if paused {
                        "paused: no paradigm page is ready"
                    } else {
                        "resumes: a paradigm page is ready"
                    }
                );
            }
            if !paused {
                let earliest = now + self.config.announce_seconds;
                self.next_fixation = self.next_fixation.map(|t| t.max(earliest));
            }
        }
        if matches!(self.stage, Stage::Calibration | Stage::Online) && !self.paused {
            if let Some(next) = self.next_fixation {
                if now >= next - self.config.announce_seconds && !self.queue.is_empty() {
                    out.planned.push(self.plan(now, next));
                }
            }
        }
        out
    }

    fn plan(&mut self, now: f64, next_fixation: f64) -> PlannedCue {
        let p = &self.config;
        let class_index = self.queue.pop_front().expect("checked by the caller");
        let fixation_onset = next_fixation.max(now + MIN_LEAD_SECONDS - p.fixation_seconds);
        let cue_onset = fixation_onset + p.fixation_seconds;
        let break_seconds = if p.break_max_seconds > p.break_min_seconds {
            self.rng
                .gen_range(p.break_min_seconds..=p.break_max_seconds)
        } else {
            p.break_min_seconds
        };
        let duration = p.cue_seconds + p.imagery_seconds;
        self.last_imagery_end = cue_onset + duration;
        self.next_fixation = Some(cue_onset + duration + break_seconds);
        self.trial += 1;
        let class = &self.classes[class_index];
        let block = if self.stage == Stage::Online {
            Block::Online
        } else {
            Block::Calibration
        };
        let planned = PlannedCue {
            trial: self.trial,
            block,
            trial_in_block: self.block_trials - self.queue.len(),
            block_trials: self.block_trials,
            class: class.name.clone(),
            class_index,
            event: class.event.clone(),
            fixation_onset,
            cue_onset,
            cue_seconds: p.cue_seconds,
            imagery_seconds: p.imagery_seconds,
            break_seconds,
        };
        self.pending
            .push_back(Event::new(&class.event, cue_onset, duration));
        self.link.planned(self.trial, cue_onset);
        if let Some(follower) = &self.follower {
            follower.push(FollowedCue {
                imagery: Imagery::of(class),
                onset: cue_onset,
                duration,
            });
        }
        tracing::info!(
            "trial {} ({:?} {}/{}): {} cue at stream time {cue_onset:.3} (now {now:.3})",
            self.trial,
            block,
            planned.trial_in_block,
            planned.block_trials,
            class.name
        );
        planned
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classes() -> Vec<ClassSpec> {
        vec![
            ClassSpec {
                event: "T1".into(),
                name: "left".into(),
            },
            ClassSpec {
                event: "T2".into(),
                name: "right".into(),
            },
        ]
    }

    fn config() -> ParadigmConfig {
        ParadigmConfig {
            calibration_trials: 5,
            online_trials_per_class: 2,
            fixation_seconds: 0.5,
            cue_seconds: 1.0,
            imagery_seconds: 2.5,
            break_min_seconds: 1.0,
            break_max_seconds: 1.5,
            ..ParadigmConfig::default()
        }
    }

    /// Drive the paradigm over a stream clock ticking every 0.1 s; returns the plans, the
    /// injected markers (with the newest timestamp when injected) and the stages.
    fn run(
        paradigm: &mut Paradigm,
        until: f64,
        online_after: f64,
    ) -> (Vec<PlannedCue>, Vec<(f64, Event)>, Vec<Stage>) {
        let (mut plans, mut due, mut stages) = (Vec::new(), Vec::new(), Vec::new());
        let mut t = 0.0;
        while t < until {
            let out = paradigm.step(Some(t), Some(t), 0, t >= online_after, true);
            plans.extend(out.planned);
            due.extend(out.due.into_iter().map(|e| (t, e)));
            stages.extend(out.stage);
            t += 0.1;
        }
        (plans, due, stages)
    }

    #[test]
    fn trials_are_balanced_planned_ahead_and_injected_at_their_onset() {
        let mut paradigm = Paradigm::new(&config(), &classes(), PageLink::new());
        let (plans, due, stages) = run(&mut paradigm, 200.0, 80.0);
        assert_eq!(
            stages,
            [
                Stage::Calibration,
                Stage::Training,
                Stage::Online,
                Stage::Free
            ]
        );
        let calibration: Vec<_> = plans
            .iter()
            .filter(|p| p.block == Block::Calibration)
            .collect();
        assert_eq!(calibration.len(), 10);
        assert_eq!(calibration.iter().filter(|p| p.class_index == 0).count(), 5);
        assert_eq!(plans.iter().filter(|p| p.block == Block::Online).count(), 4);
        for pair in plans.windows(2) {
            let end = pair[0].cue_onset + pair[0].cue_seconds + pair[0].imagery_seconds;
            assert!(pair[1].fixation_onset >= end + 1.0 - 1e-9, "{pair:?}");
            if pair[0].block == pair[1].block {
                assert!(pair[1].fixation_onset <= end + 1.5 + 0.2, "{pair:?}");
            }
        }
        assert_eq!(due.len(), plans.len());
        for ((newest, event), plan) in due.iter().zip(&plans) {
            assert_eq!(event.onset, plan.cue_onset);
            assert_eq!(event.label, plan.event);
            // Injected after the first tick that reaches the onset.
            assert!(*newest >= plan.cue_onset && *newest < plan.cue_onset + 0.1 + 1e-9);
        }
        assert!(paradigm.finished(200.0));
    }

    #[test]
    fn a_new_calibration_round_starts_a_new_calibration_block() {
        let mut paradigm = Paradigm::new(&config(), &classes(), PageLink::new());
        let mut t = 0.0;
        let mut plans = Vec::new();
        while t < 150.0 {
            // Training "fails" once at 70 s: the closed loop starts round 1.
            let round = u64::from(t >= 70.0);
            let out = paradigm.step(Some(t), Some(t), round, false, true);
            plans.extend(out.planned);
            t += 0.1;
        }
        assert_eq!(paradigm.stage(), Stage::Training);
        assert_eq!(
            plans
                .iter()
                .filter(|p| p.block == Block::Calibration)
                .count(),
            20
        );
    }

    #[test]
    fn a_cue_is_never_planned_closer_than_the_minimum_lead() {
        let mut paradigm = Paradigm::new(&config(), &classes(), PageLink::new());
        let out = paradigm.step(Some(0.0), Some(0.0), 0, false, true);
        assert_eq!(out.planned.len(), 1);
        assert!(out.planned[0].cue_onset >= MIN_LEAD_SECONDS);
        // The clock jumps (a stalled stream): the next plan still leads by MIN_LEAD_SECONDS.
        let out = paradigm.step(Some(50.0), Some(50.0), 0, false, true);
        let plan = &out.planned[0];
        assert!(plan.cue_onset >= 50.0 + MIN_LEAD_SECONDS, "{plan:?}");
    }

    #[test]
    fn cues_wait_for_a_ready_page_and_pause_while_none_is() {
        let mut paradigm = Paradigm::new(&config(), &classes(), PageLink::new());
        // No page, however long: a person must see the cues.
        for t in [0.0, 5.0, 10.0, 60.0] {
            let out = paradigm.step(Some(t), Some(t), 0, false, false);
            assert_eq!((out.stage, out.planned.len()), (None, 0), "t = {t}");
        }
        let out = paradigm.step(Some(61.0), Some(61.0), 0, false, true);
        assert_eq!(out.stage, Some(Stage::Calibration));
        assert_eq!(out.planned.len(), 1);
        let first = &out.planned[0];
        assert!(first.cue_onset >= 61.0 + MIN_LEAD_SECONDS);
        // The page goes away: nothing new is planned until it is back.
        let mut t = 62.0;
        while t < 120.0 {
            let out = paradigm.step(Some(t), Some(t), 0, false, false);
            assert!(out.planned.is_empty(), "planned at {t} with no page");
            t += 0.1;
        }
        let mut resumed = None;
        while t < 140.0 && resumed.is_none() {
            resumed = paradigm
                .step(Some(t), Some(t), 0, false, true)
                .planned
                .into_iter()
                .next();
            t += 0.1;
        }
        let resumed = resumed.expect("the paradigm resumes with a ready page");
        assert!(resumed.fixation_onset >= 120.0 + config().announce_seconds - 1e-9);
    }

    #[test]
    fn a_virtual_subject_starts_without_a_page_after_the_wait() {
        let mut paradigm = Paradigm::new(&config(), &classes(), PageLink::new());
        paradigm.set_follower(CueFollower::new());
        assert!(!paradigm.needs_page());
        let step = |p: &mut Paradigm, t: f64| p.step(Some(t), Some(t), 0, false, false).stage;
        assert_eq!(step(&mut paradigm, 0.0), None);
        assert_eq!(step(&mut paradigm, 5.0), None);
        assert_eq!(step(&mut paradigm, 10.0), Some(Stage::Calibration));
    }

    #[test]
    fn a_trial_is_seen_only_if_painted_in_time_with_a_page_ready_throughout() {
        let link = PageLink::new();
        link.clock.update(0.0, Instant::now());
        link.set_ready(1, true);
        link.planned(1, 1.0);
        link.painted(1, 1.02).unwrap();
        assert_eq!(link.check_trial(1.0, 4.0), Ok(()));
        // Painted too late.
        link.planned(2, 2.0);
        link.painted(2, 2.0 + PAINT_DEADLINE_SECONDS + 0.1).unwrap();
        assert_eq!(link.check_trial(2.0, 5.0), Err(Exclusion::Unpainted));
        // Never painted.
        assert_eq!(link.check_trial(3.0, 6.0), Err(Exclusion::Unpainted));
        // The page is hidden from stream time 2 to 2.5: a trial that overlaps is out, even if
        // painted; while a second page stays ready, one page going away changes nothing.
        link.clock.update(2.0, Instant::now());
        link.set_ready(1, false);
        assert!(!link.page_ready());
        assert_eq!(link.check_trial(1.0, 4.0), Err(Exclusion::PageNotReady));
        link.clock.update(2.5, Instant::now());
        link.set_ready(7, true);
        assert!(link.page_ready());
        link.set_ready(8, true);
        link.set_ready(7, false);
        assert!(link.page_ready());
        assert_eq!(link.check_trial(1.0, 4.0), Err(Exclusion::PageNotReady));
        let later = link.clock.now().unwrap() + 10.0;
        link.planned(3, later);
        link.painted(3, later + 0.01).unwrap();
        assert_eq!(link.check_trial(later, later + 3.0), Ok(()));
    }

    #[test]
    fn paint_reports_are_scored_once_per_planned_cue() {
        let link = PageLink::new();
        let mut paradigm = Paradigm::new(&config(), &classes(), link.clone());
        let (plans, _, _) = run(&mut paradigm, 20.0, 1e9);
        let first = &plans[0];
        let report = link.painted(first.trial, first.cue_onset + 0.004).unwrap();
        assert!((report.offset_ms - 4.0).abs() < 1e-6);
        assert_eq!(report.summary.count, 1);
        assert!(link.painted(first.trial, first.cue_onset).is_err());
        assert!(link.painted(999, 1.0).is_err());
        assert!(link.painted(plans[1].trial, f64::NAN).is_err());
        let second = link
            .painted(plans[1].trial, plans[1].cue_onset - 0.002)
            .unwrap();
        assert_eq!(second.summary.count, 2);
        assert!((second.summary.p50_ms + 2.0).abs() < 1e-6);
        assert!((second.summary.p99_ms - 4.0).abs() < 1e-6);
    }

    #[test]
    fn the_follower_imagines_the_cued_hand_during_the_imagery_period() {
        let follower = CueFollower::new();
        follower.push(FollowedCue {
            imagery: Imagery::LeftHand,
            onset: 1.0,
            duration: 2.0,
        });
        let times = [0.9, 1.0, 2.9, 3.0];
        let mut out = [Imagery::Other; 4];
        follower.imagery_at(&times, &mut out);
        assert_eq!(
            out,
            [
                Imagery::Other,
                Imagery::LeftHand,
                Imagery::LeftHand,
                Imagery::Other
            ]
        );
        assert_eq!(Imagery::of(&classes()[1]), Imagery::RightHand);
    }
}
