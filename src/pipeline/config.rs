//! The pipeline file: one TOML document that says where samples come from and what happens to
//! them. Every table rejects unknown keys (a typo must not silently fall back to a default)
//! and every value is range-checked against the stream it will run on, with a message that
//! names the key, the value and what is allowed.
//!
//! ```toml
//! [source]            # kind = "simulator" | "replay"
//! [preprocess]        # channels, bandpass, notch, reference
//! [features]          # window_seconds, hop_seconds, one of [features.band_power],
//!                     # [features.csp], [features.tangent_space]
//! [decoder]           # kind = "lda" | "svm" | "mlp" and its settings
//! [control]           # commands per class, threshold, dwell, refractory time
//! [training]          # classes (event → name), epoch offset, folds, seed
//! [output]            # format = "csv" | "jsonl", path
//! ```

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::control::ControlConfig;
use crate::decoder::DecoderConfig;
use crate::epochs::TrainingConfig;
use crate::error::{Error, Result};
use crate::features::band_power::BandPowerConfig;
use crate::features::csp::{Csp, CspConfig};
use crate::features::extractor::AnyExtractor;
use crate::features::tangent_space::{TangentSpace, TangentSpaceConfig};
use crate::output::OutputConfig;
use crate::preprocess::PreprocessConfig;
use crate::source::lsl::LslConfig;
use crate::source::replay::ReplayConfig;
use crate::source::simulator::SimulatorConfig;
use crate::source::Source;

/// The pipeline shipped inside the binary: the simulator through the motor-imagery chain, so
/// `neurostream demo` works on a fresh machine with no headset and no download.
pub const DEFAULT_PIPELINE: &str = include_str!("../../pipelines/demo.toml");

/// The motor-imagery pipeline for EEGMMIDB-like recordings, the default of `replay`.
pub const MOTOR_IMAGERY_PIPELINE: &str = include_str!("../../pipelines/motor_imagery.toml");

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    pub paradigm: crate::closed_loop::ParadigmConfig,
}

/// `[source]`: where samples come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SourceConfig {
    Simulator(SimulatorConfig),
    Replay(ReplayConfig),
    /// A live Lab Streaming Layer stream (a headset).
    Lsl(LslConfig),
}

impl Default for SourceConfig {
    fn default() -> Self {
        SourceConfig::Simulator(SimulatorConfig::default())
    }
}

impl SourceConfig {
    pub fn build(&self) -> Result<Box<dyn Source>> {
        Ok(match self {
            SourceConfig::Simulator(config) => Box::new(config.build()?),
            SourceConfig::Replay(config) => Box::new(config.build()?),
            #[cfg(feature = "lsl")]
            SourceConfig::Lsl(config) => Box::new(config.build()?),
            #[cfg(not(feature = "lsl"))]
            SourceConfig::Lsl(config) => match config.build()? {},
        })
    }
}

/// `[features]`: the sliding window and what is computed on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeaturesConfig {
    /// Window length, seconds.
    #[serde(default = "default_window_seconds")]
    pub window_seconds: f64,
    /// Step between consecutive windows, seconds.
    #[serde(default = "default_hop_seconds")]
    pub hop_seconds: f64,
    /// Log band power per channel and band (the default when no feature table is given).
    #[serde(default)]
    pub band_power: Option<BandPowerConfig>,
    /// Common spatial patterns (fitted on calibration data by `neurostream train`).
    #[serde(default)]
    pub csp: Option<CspConfig>,
    /// Riemannian tangent space of the window covariance (fitted by `neurostream train`).
    #[serde(default)]
    pub tangent_space: Option<TangentSpaceConfig>,
}

fn default_window_seconds() -> f64 {
    1.0
}

fn default_hop_seconds() -> f64 {
    0.1
}

impl Default for FeaturesConfig {
    fn default() -> Self {
        FeaturesConfig {
            window_seconds: default_window_seconds(),
            hop_seconds: default_hop_seconds(),
            band_power: None,
            csp: None,
            tangent_space: None,
        }
    }
}

/// Longest analysis window: motor-imagery epochs are a few seconds; a minute-long window is
/// almost certainly a unit mistake (samples typed as seconds).
pub const MAX_WINDOW_SECONDS: f64 = 60.0;

impl FeaturesConfig {
    /// Build the feature stage for `channel_labels` at `rate` with windows of
    /// `window_samples`. Exactly one of `[features.band_power]`, `[features.csp]` and
    /// `[features.tangent_space]` may be given; none means band power with its defaults.
    pub fn build_extractor(
        &self,
        channel_labels: &[String],
        rate: f64,
        window_samples: usize,
    ) -> Result<AnyExtractor> {
        let given = [
            self.band_power.is_some().then_some("band_power"),
            self.csp.is_some().then_some("csp"),
            self.tangent_space.is_some().then_some("tangent_space"),
        ];
        let given: Vec<&str> = given.into_iter().flatten().collect();
        if given.len() > 1 {
            return Err(Error::config(
                "pipeline",
                format!(
                    "[features] has {} tables ({}); allowed: exactly one of features.band_power, features.csp, features.tangent_space",
                    given.len(),
                    given.join(", ")
                ),
            ));
        }
        Ok(if let Some(csp) = &self.csp {
            AnyExtractor::Csp(Box::new(Csp::new(*csp)?))
        } else if let Some(ts) = &self.tangent_space {
            AnyExtractor::TangentSpace(Box::new(TangentSpace::new(*ts)))
        } else {
            let config = self.band_power.clone().unwrap_or_default();
            AnyExtractor::BandPower(Box::new(config.build(
                channel_labels,
                rate,
                window_samples,
            )?))
        })
    }

    /// Window and hop in samples at `rate`, checked.
    pub fn window_and_hop(&self, rate: f64) -> Result<(usize, usize)> {
        let bad = |key: &str, value: f64, allowed: String| {
            Err(Error::config(
                "pipeline",
                format!("features.{key} = {value} is out of range; allowed: {allowed}"),
            ))
        };
        if !(self.window_seconds.is_finite()
            && self.window_seconds > 0.0
            && self.window_seconds <= MAX_WINDOW_SECONDS)
        {
            return bad(
                "window_seconds",
                self.window_seconds,
                format!("0 < window_seconds <= {MAX_WINDOW_SECONDS}"),
            );
        }
        if !(self.hop_seconds.is_finite()
            && self.hop_seconds > 0.0
            && self.hop_seconds <= self.window_seconds)
        {
            return bad(
                "hop_seconds",
                self.hop_seconds,
                format!(
                    "0 < hop_seconds <= window_seconds ({})",
                    self.window_seconds
                ),
            );
        }
        let window = (self.window_seconds * rate).round() as usize;
        let hop = ((self.hop_seconds * rate).round() as usize).max(1);
        if window < 8 {
            return bad(
                "window_seconds",
                self.window_seconds,
                format!(
                    "a window of at least 8 samples ({:.3} s at {rate} Hz)",
                    8.0 / rate
                ),
            );
        }
        Ok((window, hop))
    }
}

impl PipelineConfig {
    /// Parse a pipeline from TOML text; `origin` (a path or "embedded default") goes into
    /// error messages.
    pub fn from_toml(text: &str, origin: &str) -> Result<Self> {
        toml::from_str(text).map_err(|e| Error::config(origin, e.to_string()))
    }

    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_toml(&text, &path.display().to_string())
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

    /// Checks that need no stream: source settings. Stream-dependent checks (Nyquist,
    /// channel labels, window length) happen in [`crate::pipeline::Pipeline::build`].
    pub fn validate(&self) -> Result<()> {
        match &self.source {
            SourceConfig::Simulator(config) => config.validate(),
            SourceConfig::Replay(config) => config.validate(),
            SourceConfig::Lsl(config) => config.validate(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_pipelines_parse() {
        PipelineConfig::default_demo().validate().unwrap();
        PipelineConfig::motor_imagery();
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
    fn window_out_of_range_is_named() {
        let config = FeaturesConfig {
            window_seconds: 120.0,
            ..FeaturesConfig::default()
        };
        let err = config.window_and_hop(160.0).unwrap_err().to_string();
        assert!(err.contains("features.window_seconds = 120"), "{err}");
        let config = FeaturesConfig {
            hop_seconds: 2.0,
            ..FeaturesConfig::default()
        };
        let err = config.window_and_hop(160.0).unwrap_err().to_string();
        assert!(err.contains("features.hop_seconds = 2"), "{err}");
        assert_eq!(
            FeaturesConfig::default().window_and_hop(160.0).unwrap(),
            (160, 16)
        );
    }
}
