//! Preprocessing: causal stages that rewrite a [`Chunk`] in place and keep their state across
//! chunks, so a stream cut into chunks of any size gives the same output as one long block.
//!
//! Stages, one file each:
//!
//! - [`guard`]: refuses chunks holding NaN, infinities or absurd values before they reach a
//!   filter ([`guard::SampleGuard`]); run by the pipeline ahead of the chain.
//! - [`select`]: keep a subset of channels by label ([`select::ChannelSelect`]).
//! - [`reference`](mod@reference): common average reference ([`reference::CommonAverage`]).
//! - [`filter`]: IIR biquad cascades: Butterworth band-pass and mains notch
//!   ([`filter::IirCascade`]).
//!
//! [`PreprocessConfig`] is the `[preprocess]` table of the pipeline file; [`PreprocessConfig::build`]
//! validates it against the input stream and returns a [`Preprocessor`] that runs the chain
//!
//! ```text
//! selection → common average reference → band-pass → notch
//! ```
//!
//! **Why CAR before filtering.** The reference and the filters are both linear and the filters
//! are the same for every channel, so in exact arithmetic the order does not matter. Doing the
//! reference first is the conventional order and is numerically kinder: it removes the
//! common-mode component (electrode DC offsets shared by all channels, most of the mains
//! pick-up) before it reaches the recursive filter states. Selection comes first because it is
//! cheapest to filter only the channels that are kept; note that it also means the average
//! reference is taken over the *selected* channels, so list the whole montage if that is the
//! average you want.
//!
//! The band-pass and the notch are merged into one [`filter::IirCascade`] stage (the notch
//! sections simply follow the band-pass sections), so each sample goes through all sections
//! in one pass over the data instead of one pass per filter.
//!
//! No stage allocates per chunk once its buffers have grown to the largest chunk seen.

pub mod filter;
pub mod guard;
pub mod reference;
pub mod select;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::stream::{Chunk, StreamInfo};
use crate::validate::Problems;

/// Origin string of configuration errors raised here.
const ORIGIN: &str = "pipeline";

/// One causal preprocessing step. `process` rewrites the chunk in place (possibly changing its
/// channel count) and must not allocate in steady state; state carries over between chunks.
pub trait Stage: Send {
    fn process(&mut self, chunk: &mut Chunk);
    /// Forget all history (filter states), as if no sample had been seen.
    fn reset(&mut self);
}

/// Band-pass settings: Butterworth high-pass at `low` cascaded with Butterworth low-pass at
/// `high`, each of order `order`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BandpassConfig {
    /// Lower cut-off, Hz (−3 dB point of the high-pass).
    pub low: f64,
    /// Upper cut-off, Hz (−3 dB point of the low-pass).
    pub high: f64,
    /// Order of each of the high-pass and the low-pass; even, 2..=8.
    #[serde(default = "default_order")]
    pub order: usize,
}

fn default_order() -> usize {
    4
}

/// Mains notch settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotchConfig {
    /// Mains frequency: 50 or 60 Hz.
    pub frequency: f64,
    /// Quality factor (centre frequency / −3 dB bandwidth); default 30.
    #[serde(default = "default_quality")]
    pub quality: f64,
    /// Also notch the harmonics (2f, 3f, ...) that lie below Nyquist. Default false.
    #[serde(default)]
    pub harmonics: bool,
}

fn default_quality() -> f64 {
    30.0
}

/// Re-referencing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reference {
    /// Keep the recording reference.
    #[default]
    None,
    /// Common average reference: subtract the per-sample mean across channels.
    Average,
}

/// The `[preprocess]` table of a pipeline file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreprocessConfig {
    /// Channel labels to keep, in output order; empty keeps all channels. Matched
    /// case-insensitively after label normalisation (`C3..` matches `c3`).
    #[serde(default)]
    pub channels: Vec<String>,
    pub bandpass: Option<BandpassConfig>,
    pub notch: Option<NotchConfig>,
    #[serde(default)]
    pub reference: Reference,
    /// Values beyond ±this (µV for EEG) make their chunk unusable, like NaN and infinities;
    /// default [`guard::DEFAULT_MAX_ABS_VALUE`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_abs_value: Option<f64>,
}

impl PreprocessConfig {
    /// Every range of `[preprocess]` into `problems`; with `rate` (when the source states
    /// it), also the filter edges against Nyquist. Channel labels are matched at build.
    pub fn check(&self, rate: Option<f64>, problems: &mut Problems) {
        if let Some(max) = self.max_abs_value {
            problems.require(
                max.is_finite() && max > 0.0,
                "preprocess.max_abs_value",
                max,
                "a positive number (µV for EEG)",
            );
        }
        if self.reference == Reference::Average && !self.channels.is_empty() {
            problems.require(
                self.channels.len() >= 2,
                "preprocess.reference",
                "\"average\"",
                format!(
                    "\"none\" with {} selected channel(s), or select at least 2",
                    self.channels.len()
                ),
            );
        }
        let nyquist = rate.map(|r| r / 2.0);
        let nyquist_text = |n: f64| format!("below Nyquist, {n} Hz for a {} Hz stream", 2.0 * n);
        if let Some(bp) = &self.bandpass {
            problems.require(
                (2..=8).contains(&bp.order) && bp.order % 2 == 0,
                "preprocess.bandpass.order",
                bp.order,
                "even values 2, 4, 6 or 8",
            );
            problems.require(
                bp.low.is_finite() && bp.low > 0.0,
                "preprocess.bandpass.low",
                bp.low,
                "a positive frequency in Hz, 0 < low < high",
            );
            problems.require(
                bp.high.is_finite() && bp.high > bp.low,
                "preprocess.bandpass.high",
                bp.high,
                format!("above preprocess.bandpass.low ({}), below Nyquist", bp.low),
            );
            if let Some(n) = nyquist {
                problems.require(
                    !bp.high.is_finite() || bp.high < n,
                    "preprocess.bandpass.high",
                    bp.high,
                    nyquist_text(n),
                );
            }
        }
        if let Some(notch) = &self.notch {
            problems.require(
                notch.frequency == 50.0 || notch.frequency == 60.0,
                "preprocess.notch.frequency",
                notch.frequency,
                "a mains frequency, 50 or 60 Hz",
            );
            if let Some(n) = nyquist {
                problems.require(
                    notch.frequency.is_nan() || notch.frequency < n,
                    "preprocess.notch.frequency",
                    notch.frequency,
                    format!("{}, or no notch", nyquist_text(n)),
                );
            }
            problems.require(
                notch.quality.is_finite() && notch.quality > 0.0,
                "preprocess.notch.quality",
                notch.quality,
                "a positive number (default 30)",
            );
        }
    }

    /// Validate against the input stream and build the stage chain.
    pub fn build(&self, input: &StreamInfo) -> Result<Preprocessor> {
        let mut problems = Problems::new();
        let rate = input.nominal_rate;
        self.check(
            (rate.is_finite() && rate > 0.0).then_some(rate),
            &mut problems,
        );
        problems.into_result(ORIGIN)?;
        let mut stages: Vec<Box<dyn Stage>> = Vec::new();
        let mut output = input.clone();

        if !self.channels.is_empty() {
            let select = select::ChannelSelect::new(input, &self.channels)?;
            output.channels = select
                .indices()
                .iter()
                .map(|&i| input.channels[i].clone())
                .collect();
            stages.push(Box::new(select));
        }
        let channels = output.channel_count();

        if self.reference == Reference::Average {
            if channels < 2 {
                return Err(Error::config(
                    ORIGIN,
                    format!(
                        "preprocess.reference = \"average\" needs at least 2 channels, the stream \
                         has {channels} after selection; allowed: \"none\" or select more channels"
                    ),
                ));
            }
            stages.push(Box::new(reference::CommonAverage::new(channels)));
        }

        if self.bandpass.is_some() || self.notch.is_some() {
            let rate = input.nominal_rate;
            if !(rate.is_finite() && rate > 0.0) {
                return Err(Error::config(
                    ORIGIN,
                    format!(
                        "preprocess: filters need a regular stream, but stream '{}' has nominal \
                         rate {rate}",
                        input.name
                    ),
                ));
            }
            let mut sections = Vec::new();
            if let Some(bp) = &self.bandpass {
                sections.extend(filter::butterworth_bandpass(bp, rate)?);
            }
            if let Some(notch) = &self.notch {
                sections.extend(filter::notch(notch, rate)?);
            }
            stages.push(Box::new(filter::IirCascade::new(channels, sections)));
        }

        Ok(Preprocessor { stages, output })
    }
}

/// The built preprocessing chain for one stream.
pub struct Preprocessor {
    stages: Vec<Box<dyn Stage>>,
    output: StreamInfo,
}

impl Preprocessor {
    /// The stream as it leaves the chain (selected channels, same rate).
    pub fn output_info(&self) -> &StreamInfo {
        &self.output
    }

    /// Run every stage on `chunk` in place. Allocation-free in steady state.
    pub fn process(&mut self, chunk: &mut Chunk) {
        for stage in &mut self.stages {
            stage.process(chunk);
        }
    }

    /// Forget all filter history (e.g. after a gap in the stream).
    pub fn reset(&mut self) {
        for stage in &mut self.stages {
            stage.reset();
        }
    }
}

impl std::fmt::Debug for Preprocessor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Preprocessor")
            .field("stages", &self.stages.len())
            .field("output", &self.output)
            .finish()
    }
}

pub(crate) fn config_error(detail: String) -> Error {
    Error::config(ORIGIN, detail)
}
