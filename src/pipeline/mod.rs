//! The synchronous hot path: preprocess → window → features → decoder (→ control, later).
//!
//! [`Pipeline::process`] takes one chunk, filters it in place, advances the sliding window and
//! calls back once per completed window with its feature vector. It owns every buffer it needs,
//! so once the largest chunk has been seen it does not allocate. The driver loop
//! ([`run`]) pulls from a [`Source`] and hands windows to a sink; it is what `replay` and
//! `demo` run, and what the async service will run on its DSP thread.

pub mod config;

pub use config::{FeaturesConfig, PipelineConfig, SourceConfig};

use crate::decoder::{AnyDecoder, Decoder};
use crate::error::Result;
use crate::features::extractor::AnyExtractor;
use crate::features::window::Windower;
use crate::features::FeatureExtractor;
use crate::model::{Fingerprint, Model};
pub use crate::preprocess::guard::{RejectKind, Rejected};
use crate::preprocess::guard::{SampleGuard, DEFAULT_MAX_ABS_VALUE};
use crate::preprocess::Preprocessor;
use crate::source::{Source, SourceItem, StreamStatus};
use crate::stream::{Chunk, Event, StreamInfo};

/// The features of one window, lent to the caller for the duration of a callback.
#[derive(Debug, Clone, Copy)]
pub struct WindowFeatures<'a> {
    /// Timestamp of the newest sample in the window.
    pub end_timestamp: f64,
    /// One value per [`Pipeline::feature_names`] entry.
    pub values: &'a [f32],
    /// Class probabilities (one per [`Pipeline::class_names`] entry) when the pipeline has a
    /// trained decoder.
    pub probabilities: Option<&'a [f64]>,
}

pub struct Pipeline {
    guard: SampleGuard,
    preprocess: Preprocessor,
    windower: Windower,
    extractor: AnyExtractor,
    decoder: Option<AnyDecoder>,
    classes: Vec<String>,
    features: Vec<f32>,
    probabilities: Vec<f64>,
    rate: f64,
    input_channels: usize,
    fingerprint: Fingerprint,
    /// Newest timestamp processed, to recognise a chunk delivered twice.
    last_timestamp: Option<f64>,
    window_seconds: f64,
    /// Whether `features` holds a window's features (false before the first window and after
    /// a reset), for [`Pipeline::learn`].
    has_window: bool,
}

impl Pipeline {
    /// Build for a stream, with the trained `model` when the pipeline decodes or its feature
    /// stage must be fitted (CSP, tangent space). Every stream-dependent check (labels exist,
    /// filters below Nyquist, window long enough, model fits) happens here, before the first
    /// sample.
    pub fn build(
        config: &PipelineConfig,
        input: &StreamInfo,
        model: Option<Model>,
    ) -> Result<Self> {
        if input.is_irregular() {
            return Err(crate::Error::Stream(format!(
                "stream {:?} has an irregular rate; the pipeline needs a regularly sampled signal stream",
                input.name
            )));
        }
        let preprocess = config.preprocess.build(input)?;
        let rate = input.nominal_rate;
        let (window, hop) = config.features.window_and_hop(rate)?;
        let labels: Vec<String> = preprocess
            .output_info()
            .labels()
            .map(str::to_owned)
            .collect();
        let mut extractor = config.features.build_extractor(&labels, rate, window)?;
        let fingerprint = Fingerprint::new(config, labels.clone(), rate, window);
        let (decoder, classes) = match model {
            Some(model) => {
                model.fingerprint.check(&fingerprint)?;
                extractor.restore(model.extractor)?;
                (Some(model.decoder), model.classes)
            }
            None if extractor.needs_fit() => {
                return Err(crate::Error::Stream(
                    "this pipeline's feature stage (CSP or tangent space) is fitted on calibration data: \
                     train a model with `neurostream train` and pass it with --model"
                        .into(),
                ))
            }
            None => (None, Vec::new()),
        };
        let dimension = extractor.names().len();
        Ok(Pipeline {
            guard: SampleGuard::new(
                input,
                config
                    .preprocess
                    .max_abs_value
                    .unwrap_or(DEFAULT_MAX_ABS_VALUE),
            ),
            windower: Windower::new(labels.len(), window, hop),
            preprocess,
            extractor,
            probabilities: vec![0.0; classes.len()],
            decoder,
            classes,
            features: vec![0.0; dimension],
            rate,
            input_channels: input.channel_count(),
            last_timestamp: None,
            window_seconds: window as f64 / rate,
            fingerprint,
            has_window: false,
        })
    }

    pub fn feature_names(&self) -> &[String] {
        self.extractor.names()
    }

    /// Class names when the pipeline decodes, else empty.
    pub fn class_names(&self) -> &[String] {
        &self.classes
    }

    /// The stream after preprocessing (selected channels).
    pub fn output_info(&self) -> &StreamInfo {
        self.preprocess.output_info()
    }

    pub fn fingerprint(&self) -> &Fingerprint {
        &self.fingerprint
    }

    pub fn decoder(&self) -> Option<&AnyDecoder> {
        self.decoder.as_ref()
    }

    /// Filter `chunk` in place and emit the features (and class probabilities) of every
    /// window it completes. A chunk holding NaN, infinities or absurd values is refused whole
    /// (see [`crate::preprocess::guard`]): the pipeline resets, no window is emitted, and the
    /// [`Rejected`] description is returned for the caller to count and report.
    pub fn process(
        &mut self,
        chunk: &mut Chunk,
        mut on_window: impl FnMut(WindowFeatures<'_>),
    ) -> Option<Rejected> {
        debug_assert_eq!(chunk.channels(), self.input_channels);
        if let Some(rejected) = self.guard.check(chunk) {
            self.reset();
            return Some(rejected);
        }
        if let Some(duplicate) = self.duplicate(chunk) {
            return Some(duplicate);
        }
        self.last_timestamp = chunk.last_timestamp().or(self.last_timestamp);
        self.preprocess.process(chunk);
        let Pipeline {
            windower,
            extractor,
            decoder,
            features,
            probabilities,
            rate,
            has_window,
            ..
        } = self;
        windower.push(chunk, *rate, |window| {
            extractor.extract(window, features);
            *has_window = true;
            let probabilities = decoder.as_mut().map(|decoder| {
                // Unsupervised plasticity: a decoder that follows feature drift (the plastic
                // net's running normaliser) sees every window; for the others it is a no-op.
                decoder.observe(features);
                decoder.predict_proba(features, probabilities);
                &probabilities[..]
            });
            on_window(WindowFeatures {
                end_timestamp: window.end_timestamp,
                values: features,
                probabilities,
            });
        });
        None
    }

    /// A chunk whose samples all lie within the last window already processed was delivered
    /// twice. A chunk further back than that is a clock reset: its samples are new, and it is
    /// processed.
    fn duplicate(&self, chunk: &Chunk) -> Option<Rejected> {
        let last = self.last_timestamp?;
        let (first, newest) = (*chunk.timestamps().first()?, chunk.last_timestamp()?);
        if newest > last || first <= last - self.window_seconds {
            return None;
        }
        Some(Rejected {
            kind: RejectKind::Duplicate,
            samples: chunk.samples(),
            bad_values: 0,
            reason: format!(
                "duplicate chunk: {} samples at t = {first:.3}..{newest:.3} s were already \
                 processed; skipped",
                chunk.samples()
            ),
        })
    }

    /// Forget all filter and window state (after a gap or a reconnect).
    pub fn reset(&mut self) {
        self.preprocess.reset();
        self.windower.reset();
        self.has_window = false;
    }

    /// One online supervised step on the most recent window's features with the true class
    /// `label` (user feedback or a correction). Returns `true` if the decoder changed: `false`
    /// without a decoder, before the first window, for an out-of-range label, or when the
    /// decoder does not learn online (LDA, SVM) or declined the step.
    pub fn learn(&mut self, label: usize) -> bool {
        if !self.has_window || label >= self.classes.len() {
            return false;
        }
        match &mut self.decoder {
            Some(decoder) => decoder.update(&self.features, label),
            None => false,
        }
    }

    /// One online supervised step on given features (those a past command was decided on, see
    /// [`RecentCommands`]); same contract as [`Pipeline::learn`].
    pub fn learn_from(&mut self, features: &[f32], label: usize) -> bool {
        if label >= self.classes.len() || features.len() != self.features.len() {
            return false;
        }
        match &mut self.decoder {
            Some(decoder) => decoder.update(features, label),
            None => false,
        }
    }

    /// Version of the plastic decoder's weights (see [`crate::decoder::mlp::PlasticMlp::version`]);
    /// `None` when the decoder is not plastic or absent.
    pub fn decoder_version(&self) -> Option<u64> {
        self.decoder
            .as_ref()
            .and_then(|d| d.as_mlp())
            .map(|m| m.version())
    }
}

/// Receives what the pipeline produces.
pub trait WindowSink {
    /// One window's features; `marker` is the label of the event whose span
    /// `[onset, onset + duration]` holds the window's end, if any.
    fn window(&mut self, features: WindowFeatures<'_>, marker: Option<&str>) -> Result<()>;

    /// Events as the source delivered them.
    fn events(&mut self, _events: &[Event]) -> Result<()> {
        Ok(())
    }

    fn status(&mut self, _status: &StreamStatus) -> Result<()> {
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        Ok(())
    }
}

/// Counts from one [`run`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunSummary {
    pub chunks: u64,
    pub samples: u64,
    pub windows: u64,
    pub events: u64,
    /// Samples in chunks refused for NaN, infinite or absurd values.
    pub rejected_samples: u64,
}

/// Drive `source` through `pipeline` into `sink` until the source ends. `on_progress` is
/// called after each chunk with the running totals (for progress bars).
pub fn run(
    source: &mut dyn Source,
    pipeline: &mut Pipeline,
    sink: &mut dyn WindowSink,
    mut on_progress: impl FnMut(&RunSummary),
) -> Result<RunSummary> {
    let mut summary = RunSummary::default();
    // Events arrive after the chunk that reaches their onset, so a window is labelled with the
    // events known when it is emitted; windows ending inside a cue still get the cue because
    // cues start before the windows that overlap them end.
    let mut active: Vec<Event> = Vec::new();
    let mut sink_error = None;
    while let Some(item) = source.next_item()? {
        match item {
            SourceItem::Chunk(mut chunk) => {
                summary.chunks += 1;
                summary.samples += chunk.samples() as u64;
                let rejected = pipeline.process(&mut chunk, |features| {
                    if sink_error.is_some() {
                        return;
                    }
                    summary.windows += 1;
                    let t = features.end_timestamp;
                    let marker = active
                        .iter()
                        .rev()
                        .find(|e| e.onset <= t && t <= e.onset + e.duration)
                        .map(|e| e.label.as_str());
                    if let Err(e) = sink.window(features, marker) {
                        sink_error = Some(e);
                    }
                });
                if let Some(e) = sink_error.take() {
                    return Err(e);
                }
                if let Some(rejected) = rejected {
                    tracing::warn!("{}", rejected.reason);
                    summary.rejected_samples += rejected.samples as u64;
                    sink.status(&StreamStatus::Dropped {
                        samples: rejected.samples as u64,
                        reason: rejected.reason,
                    })?;
                }
                // Keep only events that can still label a future window.
                if let Some(now) = chunk.last_timestamp() {
                    active.retain(|e| e.onset + e.duration >= now);
                }
                on_progress(&summary);
            }
            SourceItem::Events(events) => {
                summary.events += events.len() as u64;
                sink.events(&events)?;
                active.extend(events);
            }
            SourceItem::Status(status) => {
                if matches!(status, StreamStatus::Lost { .. }) {
                    pipeline.reset();
                }
                sink.status(&status)?;
            }
        }
    }
    sink.finish()?;
    Ok(summary)
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
