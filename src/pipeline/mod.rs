//! The synchronous hot path: guard → preprocess → window → features → decoder.
//!
//! [`Pipeline::process`] takes one chunk, filters it in place, advances the sliding window and
//! calls back once per completed window with its feature vector and class probabilities. It
//! owns every buffer it needs, so once the largest chunk has been seen it does not allocate.
//! Commands, feedback and the session's clock are the [`crate::engine::Engine`]'s, which
//! drives a pipeline for every command (service, replay, evaluation).
//!
//! Online adaptation happens here: the decoder's unsupervised `observe` on every window,
//! tangent-space re-centring once per window length (`training.recentre_rate`), supervised
//! steps through [`Pipeline::learn`]; [`Pipeline::rollback`] restores the calibrated model.

pub use crate::config::PipelineConfig;
pub use crate::features::FeaturesConfig;
pub use crate::source::SourceConfig;

use crate::decoder::calibration::Calibration;
use crate::decoder::{AnyDecoder, Decoder};
use crate::error::Result;
use crate::features::extractor::{AnyExtractor, ExtractorState};
use crate::features::window::Windower;
use crate::features::FeatureExtractor;
use crate::model::{Fingerprint, Model};
pub use crate::preprocess::guard::{RejectKind, Rejected};
use crate::preprocess::guard::{SampleGuard, DEFAULT_MAX_ABS_VALUE};
use crate::preprocess::Preprocessor;
use crate::stream::{Chunk, StreamInfo};

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
    /// The model's calibration: decision values → calibrated probabilities (absent: the
    /// decoder's own probabilities).
    calibration: Option<Calibration>,
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
    /// Online learning on (off: the frozen reference of `evaluate --online`).
    adaptation: bool,
    /// Supervised steps on (off: the unsupervised-only arm of `evaluate --online`).
    supervised: bool,
    /// Weight of each re-centring step of the tangent-space reference (0: never).
    recentre_rate: f64,
    /// Re-centre on one window in this many, so that the steps see disjoint windows (one per
    /// window length, like one per trial offline) and cost little per window.
    recentre_every: usize,
    windows_since_recentre: usize,
    /// The model as calibrated, for [`Pipeline::rollback`].
    calibrated: Option<(AnyDecoder, ExtractorState)>,
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
        let (decoder, classes, calibration) = match model {
            Some(model) => {
                model.check_config(config)?;
                model.fingerprint.check(&fingerprint)?;
                extractor.restore(model.extractor)?;
                (Some(model.decoder), model.classes, model.calibration)
            }
            None if extractor.needs_fit() => {
                return Err(crate::Error::Stream(
                    "this pipeline's feature stage (CSP or tangent space) is fitted on calibration data: \
                     train a model with `neurostream train` and pass it with --model"
                        .into(),
                ))
            }
            None => (None, Vec::new(), None),
        };
        let dimension = extractor.names().len();
        let calibrated = decoder
            .as_ref()
            .map(|d: &AnyDecoder| (d.clone(), extractor.state()));
        Ok(Pipeline {
            adaptation: true,
            supervised: true,
            recentre_rate: config.training.recentre_rate,
            recentre_every: window.div_ceil(hop.max(1)).max(1),
            windows_since_recentre: 0,
            calibrated,
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
            calibration,
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

    /// The feature stage's fitted state as it is now (re-centring moves a tangent-space
    /// reference), as a model file would store it.
    pub fn extractor_state(&self) -> ExtractorState {
        self.extractor.state()
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
            calibration,
            features,
            probabilities,
            rate,
            has_window,
            adaptation,
            recentre_rate,
            recentre_every,
            windows_since_recentre,
            ..
        } = self;
        windower.push(chunk, *rate, |window| {
            // Unsupervised re-centring uses only the window itself, available before the
            // decision; only a fitted (decoding) pipeline has a reference to move.
            if *adaptation && *recentre_rate > 0.0 && decoder.is_some() {
                if *windows_since_recentre == 0 {
                    extractor.adapt(window, *recentre_rate);
                }
                *windows_since_recentre = (*windows_since_recentre + 1) % *recentre_every;
            }
            extractor.extract(window, features);
            *has_window = true;
            let probabilities = decoder.as_mut().map(|decoder| {
                // Unsupervised plasticity: a decoder that follows feature drift (the plastic
                // net's running normaliser) sees every window; for the others it is a no-op.
                if *adaptation {
                    decoder.observe(features);
                }
                match calibration {
                    Some(calibration) => {
                        decoder.decision_values(features, probabilities);
                        calibration.apply(probabilities);
                    }
                    None => decoder.predict_proba(features, probabilities),
                }
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
        self.windows_since_recentre = 0;
    }

    /// Switch all online learning on or off (unsupervised steps and [`Pipeline::learn`]).
    pub fn set_adaptation(&mut self, on: bool) {
        self.adaptation = on;
    }

    /// Switch supervised steps ([`Pipeline::learn`]) on or off, leaving unsupervised
    /// adaptation as it is.
    pub fn set_supervised(&mut self, on: bool) {
        self.supervised = on;
    }

    /// Put the decoder and the fitted feature stage back as the model had them. `false`
    /// without a model.
    pub fn rollback(&mut self) -> bool {
        let Some((decoder, state)) = &self.calibrated else {
            return false;
        };
        // The kinds agree: both came from this pipeline's own extractor and decoder.
        if self.extractor.restore(state.clone()).is_err() {
            return false;
        }
        self.decoder = Some(decoder.clone());
        true
    }

    /// One online supervised step on the most recent window's features with the true class
    /// `label` (user feedback or a correction). Returns `true` if the decoder changed: `false`
    /// without a decoder, before the first window, for an out-of-range label, with learning
    /// switched off, or when the decoder declined the step.
    pub fn learn(&mut self, label: usize) -> bool {
        if !self.adaptation || !self.supervised || !self.has_window || label >= self.classes.len() {
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
        if !self.adaptation
            || !self.supervised
            || label >= self.classes.len()
            || features.len() != self.features.len()
        {
            return false;
        }
        match &mut self.decoder {
            Some(decoder) => decoder.update(features, label),
            None => false,
        }
    }

    /// Class probabilities of the newest window (decoding pipelines, after a window).
    pub fn latest_probabilities(&self) -> Option<&[f64]> {
        (self.has_window && self.decoder.is_some()).then_some(&self.probabilities[..])
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
