//! Model files: a trained feature stage and decoder, with the fingerprint of the pipeline they
//! were trained for. JSON, versioned and self-describing, so a model can be inspected with any
//! JSON tool, and loading one into a pipeline it does not fit fails with the first mismatch
//! named instead of producing silent garbage.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::PipelineConfig;
use crate::control::OperatingPoint;
use crate::decoder::calibration::Calibration;
use crate::decoder::AnyDecoder;
use crate::error::{Error, Result};
use crate::features::extractor::ExtractorState;
use crate::features::FeaturesConfig;
use crate::preprocess::PreprocessConfig;

/// Identifies the file type; checked on load.
pub const MODEL_FORMAT: &str = "neurostream-model";
/// Bumped when the layout changes incompatibly; older versions are refused with a message.
pub const MODEL_VERSION: u32 = 1;

/// What a model depends on: the channels after preprocessing, the rate, the window, and the
/// preprocessing and feature settings. The hop and the source may differ freely.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fingerprint {
    pub channels: Vec<String>,
    pub rate: f64,
    pub window_samples: usize,
    pub preprocess: PreprocessConfig,
    pub features: FeaturesConfig,
}

impl Fingerprint {
    pub fn new(
        config: &PipelineConfig,
        channels: Vec<String>,
        rate: f64,
        window_samples: usize,
    ) -> Self {
        let mut features = config.features.clone();
        // The hop only sets how often windows are taken, not what a window means.
        features.hop_seconds = 0.0;
        Fingerprint {
            channels,
            rate,
            window_samples,
            preprocess: config.preprocess.clone(),
            features,
        }
    }

    /// `Ok` if `self` (the model's) fits `other` (the pipeline's), else the first difference.
    pub fn check(&self, other: &Fingerprint) -> Result<()> {
        let mismatch = |what: String| {
            Err(Error::Stream(format!(
                "model does not fit this pipeline: {what}"
            )))
        };
        if self.channels != other.channels {
            let first = self
                .channels
                .iter()
                .zip(&other.channels)
                .position(|(a, b)| a != b)
                .map(|i| {
                    format!(
                        "; first difference at channel {i}: {:?} in the model, {:?} here",
                        self.channels[i], other.channels[i]
                    )
                })
                .unwrap_or_default();
            return mismatch(format!(
                "it was trained on {} channel(s), the stream after preprocessing has {}{first}",
                self.channels.len(),
                other.channels.len()
            ));
        }
        if self.rate != other.rate {
            return mismatch(format!(
                "it was trained at {} Hz, the stream runs at {} Hz",
                self.rate, other.rate
            ));
        }
        if self.window_samples != other.window_samples {
            return mismatch(format!(
                "it was trained on windows of {} samples, the pipeline makes {}",
                self.window_samples, other.window_samples
            ));
        }
        if self.preprocess != other.preprocess {
            return mismatch(format!(
                "preprocessing differs: model {}, pipeline {}",
                serde_json::to_string(&self.preprocess).unwrap_or_default(),
                serde_json::to_string(&other.preprocess).unwrap_or_default()
            ));
        }
        if self.features != other.features {
            return mismatch(format!(
                "feature settings differ: model {}, pipeline {}",
                serde_json::to_string(&self.features).unwrap_or_default(),
                serde_json::to_string(&other.features).unwrap_or_default()
            ));
        }
        Ok(())
    }
}

/// A trained model.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Model {
    pub format: String,
    pub version: u32,
    /// neurostream version that wrote it.
    pub written_by: String,
    pub fingerprint: Fingerprint,
    /// Class names, in class-index order.
    pub classes: Vec<String>,
    pub extractor: ExtractorState,
    pub decoder: AnyDecoder,
    /// Where the training data came from, for people reading the file.
    pub trained_on: Vec<String>,
    pub training_epochs: usize,
    /// Maps the decoder's decision values to calibrated probabilities (fitted out of fold by
    /// [`crate::evaluate::calibrate`]); absent: the decoder's own probabilities are used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<Calibration>,
    /// The controller's threshold learned with the calibration, with its expected precision
    /// and command share; an explicit `[control] threshold` overrides it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operating_point: Option<OperatingPoint>,
}

impl Model {
    pub fn new(
        fingerprint: Fingerprint,
        classes: Vec<String>,
        extractor: ExtractorState,
        decoder: AnyDecoder,
        trained_on: Vec<String>,
        training_epochs: usize,
    ) -> Self {
        Model {
            format: MODEL_FORMAT.into(),
            version: MODEL_VERSION,
            written_by: env!("CARGO_PKG_VERSION").into(),
            fingerprint,
            classes,
            extractor,
            decoder,
            trained_on,
            training_epochs,
            calibration: None,
            operating_point: None,
        }
    }

    /// Whether this model can decode for `config`: the same decoder kind and the same classes
    /// in the same order. Every command that takes a model runs this (through
    /// [`crate::pipeline::Pipeline::build`]), so a pipeline file whose `[decoder]` or
    /// `[training] classes` differ from the model's is refused with both named, instead of the
    /// model's decoder running under the file's name. A pipeline without `[decoder]` (features
    /// only) may still load a model for its fitted feature stage.
    pub fn check_config(&self, config: &PipelineConfig) -> Result<()> {
        if let Some(decoder) = &config.decoder {
            if decoder.kind() != self.decoder.kind() {
                return Err(Error::config(
                    config.origin(),
                    format!(
                        "decoder.kind = {:?}, but the model's decoder is {:?}; use a pipeline \
                         whose [decoder] kind is {:?} or train a model for this pipeline",
                        decoder.kind(),
                        self.decoder.kind(),
                        self.decoder.kind()
                    ),
                ));
            }
        }
        let classes = config.training.class_names();
        if classes != self.classes {
            return Err(Error::config(
                config.origin(),
                format!(
                    "training.classes names {classes:?}, but the model was trained on {:?}; \
                     use the model's classes in its order or train a model for this pipeline",
                    self.classes
                ),
            ));
        }
        Ok(())
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string(self)
            .map_err(|e| Error::Internal(format!("serializing the model: {e}")))?;
        std::fs::write(path, text).map_err(|e| Error::io(path, e))
    }

    /// Like [`Model::save`], but refuses to replace an existing file.
    pub fn save_new(&self, path: &Path) -> Result<()> {
        use std::io::Write;
        let text = serde_json::to_string(self)
            .map_err(|e| Error::Internal(format!("serializing the model: {e}")))?;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| Error::io(path, e))
    }

    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_json(&text, &path.display().to_string())
    }

    pub fn from_json(text: &str, origin: &str) -> Result<Self> {
        // Check the header first, so a wrong file or version gets that message rather than a
        // missing-field error from deep inside.
        #[derive(Deserialize)]
        struct Header {
            format: Option<String>,
            version: Option<u32>,
        }
        let bad = |detail: String| Error::Model {
            origin: origin.to_owned(),
            detail,
        };
        let header: Header =
            serde_json::from_str(text).map_err(|e| bad(format!("not a JSON model file: {e}")))?;
        if header.format.as_deref() != Some(MODEL_FORMAT) {
            return Err(bad(format!(
                "format is {:?}, expected {MODEL_FORMAT:?}",
                header.format
            )));
        }
        if header.version != Some(MODEL_VERSION) {
            return Err(bad(format!(
                "version {:?} is not supported; this neurostream reads version {MODEL_VERSION}",
                header.version
            )));
        }
        let model: Model = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
        model.validate().map_err(bad)?;
        Ok(model)
    }

    /// Checks what deserialising cannot: the feature stage's fitted state against the
    /// fingerprint's channels, the decoder's shapes against the feature dimension and the
    /// class names, every stored number finite and sane. Run by every loader, so no path
    /// (check, replay, run, the service, a recording's embedded model) gets a model that
    /// would panic or produce NaN later. The error names the field, what was found and what
    /// was expected.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let fp = &self.fingerprint;
        if !(fp.rate.is_finite() && fp.rate > 0.0 && fp.rate <= crate::io::MAX_RATE_HZ) {
            return Err(format!(
                "fingerprint.rate is {}, expected in (0, {}] Hz",
                fp.rate,
                crate::io::MAX_RATE_HZ
            ));
        }
        let channels = fp.channels.len();
        if channels == 0 {
            return Err("fingerprint.channels is empty".into());
        }
        let features = match &self.extractor {
            ExtractorState::BandPower => {
                // No table means band power with its defaults, as the pipeline builds it.
                let bands = match &fp.features.band_power {
                    Some(config) => config.bands.len(),
                    None => crate::features::band_power::BandPowerConfig::default()
                        .bands
                        .len(),
                };
                channels
                    .checked_mul(bands)
                    .ok_or("fingerprint: channels x bands overflows")?
            }
            ExtractorState::Csp(csp) => csp
                .validate(channels)
                .map_err(|e| format!("extractor (csp): {e}"))?,
            ExtractorState::TangentSpace(ts) => ts
                .validate(channels)
                .map_err(|e| format!("extractor (tangent_space): {e}"))?,
        };
        let (kind, checked) = match &self.decoder {
            AnyDecoder::Lda(d) => ("lda", d.validate(features)),
            AnyDecoder::Svm(d) => ("svm", d.validate(features)),
            AnyDecoder::Mlp(d) => ("mlp", d.validate(features)),
        };
        checked.map_err(|e| format!("decoder ({kind}): {e}"))?;
        let decoded = crate::decoder::Decoder::classes(&self.decoder);
        if self.classes.len() != decoded {
            return Err(format!(
                "classes lists {} name(s), the {kind} decoder has {decoded} class(es)",
                self.classes.len()
            ));
        }
        if let Some(calibration) = &self.calibration {
            calibration.validate(decoded)?;
        }
        if let Some(op) = &self.operating_point {
            op.validate().map_err(|e| format!("operating_point: {e}"))?;
        }
        Ok(())
    }
}
