//! The pipeline file: one TOML document that says where samples come from and what happens to
//! them. Every table rejects unknown keys (a typo must not silently fall back to a default),
//! and [`PipelineConfig::validate`] checks every range of every section in one pass before any
//! sample is read, listing each bad value with the file, its dotted key, the value and what
//! is allowed.
//!
//! ```toml
//! [source]            # kind = "simulator" | "replay" | "lsl"
//! [preprocess]        # channels, bandpass, notch, reference
//! [features]          # window_seconds, hop_seconds, one of [features.band_power],
//!                     # [features.csp], [features.tangent_space]
//! [decoder]           # kind = "lda" | "svm" | "mlp" and its settings
//! [control]           # commands per class, threshold, dwell, refractory time
//! [training]          # classes (event → name), epoch offset, folds, seed
//! [output]            # format = "csv" | "jsonl", path
//! [paradigm]          # closed-loop calibration trials
//! [nats]              # publish the session to NATS JetStream (url, session, retention)
//! ```
//!
//! Sections over components live with the components ([`FeaturesConfig`] in
//! [`crate::features`], [`SourceConfig`] in [`crate::source`], ...) and check themselves into
//! a [`Problems`]; this module assembles them. No stage imports this module, so the schema
//! and the hot path do not depend on each other in a loop.

pub use crate::nats;
pub mod output;
pub mod paradigm;
pub mod training;

use std::path::Path;

use serde::{Deserialize, Serialize};

pub use crate::features::FeaturesConfig;
pub use crate::source::SourceConfig;
pub use nats::NatsConfig;
pub use output::{OutputConfig, OutputFormat};
pub use paradigm::ParadigmConfig;
pub use training::{ClassSpec, TrainingConfig};

use crate::control::ControlConfig;
use crate::decoder::DecoderConfig;
use crate::error::{Error, Result};
use crate::preprocess::PreprocessConfig;
use crate::validate::Problems;

/// The pipeline shipped inside the binary: the simulator through the motor-imagery chain, so
/// `neurostream demo` works on a fresh machine with no headset and no download.
pub const DEFAULT_PIPELINE: &str = include_str!("../../pipelines/demo.toml");

/// The motor-imagery pipeline for EEGMMIDB-like recordings, the default of `replay`.
pub const MOTOR_IMAGERY_PIPELINE: &str = include_str!("../../pipelines/motor_imagery.toml");

/// What error messages call a pipeline that came from no file.
const UNNAMED: &str = "pipeline";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Free text shown in logs.
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub source: SourceConfig,
    #[serde(default)]
    pub preprocess: PreprocessConfig,
    #[serde(default)]
    pub features: FeaturesConfig,
    /// How windows become class probabilities; absent: the pipeline stops at features.
    #[serde(default)]
    pub decoder: Option<DecoderConfig>,
    /// Probabilities → device commands (used by the live service).
    #[serde(default)]
    pub control: ControlConfig,
    /// Which events are classes and where the epoch sits (for `train` and `evaluate`).
    #[serde(default)]
    pub training: TrainingConfig,
    #[serde(default)]
    pub output: OutputConfig,
    /// Closed-loop calibration and cued online trials (`run` without a model).
    #[serde(default)]
    pub paradigm: ParadigmConfig,
    /// Publish the session to NATS JetStream (`run`, `demo`, `replay --serve`); absent: off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nats: Option<NatsConfig>,
    /// Where the file came from (a path, "embedded pipelines/demo.toml"), for messages; not
    /// part of the pipeline, so not written and not compared.
    #[serde(skip)]
    pub origin: String,
}

// By hand so that the origin, which is not part of what the pipeline does, is not compared.
impl PartialEq for PipelineConfig {
    fn eq(&self, other: &Self) -> bool {
        self.description == other.description
            && self.source == other.source
            && self.preprocess == other.preprocess
            && self.features == other.features
            && self.decoder == other.decoder
            && self.control == other.control
            && self.training == other.training
            && self.output == other.output
            && self.paradigm == other.paradigm
            && self.nats == other.nats
    }
}

impl PipelineConfig {
    /// Parse a pipeline from TOML text; `origin` (a path or "embedded default") goes into
    /// error messages, now and in [`PipelineConfig::validate`].
    pub fn from_toml(text: &str, origin: &str) -> Result<Self> {
        let mut config: Self =
            toml::from_str(text).map_err(|e| Error::config(origin, e.to_string()))?;
        config.origin = origin.to_owned();
        Ok(config)
    }

    /// Read and parse a pipeline file (no range checks: see [`PipelineConfig::load`]).
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_toml(&text, &path.display().to_string())
    }

    /// Read, parse and [`validate`](PipelineConfig::validate) a pipeline file: what every
    /// command that takes a pipeline does before anything else.
    pub fn load(path: &Path) -> Result<Self> {
        let config = Self::from_file(path)?;
        config.validate()?;
        Ok(config)
    }

    /// The embedded default (simulator) pipeline.
    pub fn default_demo() -> Self {
        Self::from_toml(DEFAULT_PIPELINE, "embedded pipelines/demo.toml")
            .expect("the embedded pipeline is checked by a test")
    }

    /// The embedded motor-imagery pipeline.
    pub fn motor_imagery() -> Self {
        Self::from_toml(
            MOTOR_IMAGERY_PIPELINE,
            "embedded pipelines/motor_imagery.toml",
        )
        .expect("the embedded pipeline is checked by a test")
    }

    /// What messages name this pipeline by: its file, or "pipeline".
    pub fn origin(&self) -> &str {
        if self.origin.is_empty() {
            UNNAMED
        } else {
            &self.origin
        }
    }

    /// Every problem of every section, without a stream: ranges, windows against the hop,
    /// classes, and (when `[source]` states its rate) filter and band edges against
    /// Nyquist. Checks that need the stream itself (channel labels, a band one FFT bin
    /// wide, a model's fit) happen in [`crate::pipeline::Pipeline::build`].
    pub fn problems(&self) -> Problems {
        let mut problems = Problems::new();
        let rate = self
            .source
            .stated_rate()
            .filter(|r| r.is_finite() && *r > 0.0);
        self.source.check(&mut problems);
        self.preprocess.check(rate, &mut problems);
        self.features.check(rate, &mut problems);
        if let Some(decoder) = &self.decoder {
            decoder.check(&mut problems);
        }
        let classes = self.training.class_names();
        self.control.check(
            self.decoder.is_some().then_some(classes.as_slice()),
            &mut problems,
        );
        self.training.check(&mut problems);
        self.paradigm.check(&mut problems);
        if let Some(nats) = &self.nats {
            nats.check(&mut problems);
        }
        problems
    }

    /// [`PipelineConfig::problems`] as one error naming the file and listing every problem.
    pub fn validate(&self) -> Result<()> {
        self.problems().into_result(self.origin())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_pipelines_are_valid() {
        PipelineConfig::default_demo().validate().unwrap();
        PipelineConfig::motor_imagery().validate().unwrap();
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = PipelineConfig::from_toml("[features]\nwindow_secs = 1.0\n", "t").unwrap_err();
        assert!(err.to_string().contains("window_secs"), "{err}");
        let err = PipelineConfig::from_toml("[sauce]\nkind = \"simulator\"\n", "t").unwrap_err();
        assert!(err.to_string().contains("sauce"), "{err}");
        let err = PipelineConfig::from_toml(
            "[source]\nkind = \"replay\"\npath = \"x.edf\"\nspeeed = 2\n",
            "t",
        )
        .unwrap_err();
        assert!(err.to_string().contains("speeed"), "{err}");
        let err = PipelineConfig::from_toml("[source]\nkind = \"headset\"\n", "t").unwrap_err();
        assert!(err.to_string().contains("headset"), "{err}");
    }

    #[test]
    fn one_pass_names_the_file_and_every_problem() {
        let config = PipelineConfig::from_toml(
            "[control]\nthreshold = 2\n[training]\nfolds = 1\n\
             [decoder]\nkind = \"mlp\"\nlearning_rate = -5\n\
             [preprocess.bandpass]\nlow = 1\nhigh = 90\n",
            "p.toml",
        )
        .unwrap();
        let text = config.validate().unwrap_err().to_string();
        assert!(text.starts_with("config p.toml: 4 problems"), "{text}");
        for needle in [
            "control.threshold = 2",
            "training.folds = 1",
            "decoder.learning_rate = -5",
            // The default source is the 160 Hz simulator: 90 Hz is above Nyquist.
            "preprocess.bandpass.high = 90",
        ] {
            assert!(text.contains(needle), "{needle} missing from {text}");
        }
        // The origin is not part of the pipeline.
        let mut other = config.clone();
        other.origin = "elsewhere".into();
        assert_eq!(config, other);
    }
}
