//! The feature stage a pipeline runs, as one type: band power (fixed), CSP or tangent space
//! (fitted on calibration windows). A model file stores the fitted state of the last two.

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::features::band_power::BandPower;
use crate::features::csp::Csp;
use crate::features::tangent_space::TangentSpace;
use crate::features::{FeatureExtractor, TrainableExtractor, Window};

pub enum AnyExtractor {
    BandPower(Box<BandPower>),
    Csp(Box<Csp>),
    TangentSpace(Box<TangentSpace>),
}

/// What a model file keeps of an extractor: nothing for band power (its configuration is the
/// pipeline's), the fitted filters or reference for the others.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ExtractorState {
    BandPower,
    Csp(Box<Csp>),
    TangentSpace(Box<TangentSpace>),
}

impl AnyExtractor {
    /// Whether [`AnyExtractor::fit`] must run before extraction.
    pub fn needs_fit(&self) -> bool {
        !matches!(self, AnyExtractor::BandPower(_))
    }

    pub fn fit(&mut self, windows: &[Window<'_>], labels: &[usize]) -> Result<()> {
        match self {
            AnyExtractor::BandPower(_) => Ok(()),
            AnyExtractor::Csp(e) => e.fit(windows, labels),
            AnyExtractor::TangentSpace(e) => e.fit(windows, labels),
        }
    }

    /// Unsupervised online adaptation (tangent-space re-centring); a no-op for the others.
    pub fn adapt(&mut self, window: &Window<'_>, rate: f64) {
        if let AnyExtractor::TangentSpace(e) = self {
            e.adapt(window, rate);
        }
    }

    pub fn state(&self) -> ExtractorState {
        match self {
            AnyExtractor::BandPower(_) => ExtractorState::BandPower,
            AnyExtractor::Csp(e) => ExtractorState::Csp(e.clone()),
            AnyExtractor::TangentSpace(e) => ExtractorState::TangentSpace(e.clone()),
        }
    }

    /// Replace fitted state with a model's. The caller has checked that the kinds agree
    /// (the model fingerprint includes the feature configuration).
    pub fn restore(&mut self, state: ExtractorState) -> Result<()> {
        match (self, state) {
            (AnyExtractor::BandPower(_), ExtractorState::BandPower) => Ok(()),
            (AnyExtractor::Csp(e), ExtractorState::Csp(s)) => {
                *e = s;
                Ok(())
            }
            (AnyExtractor::TangentSpace(e), ExtractorState::TangentSpace(s)) => {
                *e = s;
                Ok(())
            }
            (_, state) => Err(crate::Error::Stream(format!(
                "model holds a {} feature stage, the pipeline another kind",
                match state {
                    ExtractorState::BandPower => "band_power",
                    ExtractorState::Csp(_) => "csp",
                    ExtractorState::TangentSpace(_) => "tangent_space",
                }
            ))),
        }
    }
}

impl FeatureExtractor for AnyExtractor {
    fn names(&self) -> &[String] {
        match self {
            AnyExtractor::BandPower(e) => e.names(),
            AnyExtractor::Csp(e) => e.names(),
            AnyExtractor::TangentSpace(e) => e.names(),
        }
    }

    fn extract(&mut self, window: &Window<'_>, out: &mut [f32]) {
        match self {
            AnyExtractor::BandPower(e) => e.extract(window, out),
            AnyExtractor::Csp(e) => e.extract(window, out),
            AnyExtractor::TangentSpace(e) => e.extract(window, out),
        }
    }
}
