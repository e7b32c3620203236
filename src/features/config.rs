//! `[features]` of a pipeline file: the sliding window and the one feature stage computed on
//! it. Lives with the features (not in [`crate::config`]) so the stage and its settings
//! change together and the stage never depends on the whole file's schema.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::features::band_power::BandPowerConfig;
use crate::features::csp::{Csp, CspConfig};
use crate::features::extractor::AnyExtractor;
use crate::features::tangent_space::{TangentSpace, TangentSpaceConfig};
use crate::validate::Problems;

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
    /// Every range of `[features]` that needs no stream into `problems`; with `rate` (when
    /// the source states it) also the window length in samples and band edges below Nyquist.
    pub fn check(&self, rate: Option<f64>, problems: &mut Problems) {
        let window_ok = self.window_seconds.is_finite()
            && self.window_seconds > 0.0
            && self.window_seconds <= MAX_WINDOW_SECONDS;
        problems.require(
            window_ok,
            "features.window_seconds",
            self.window_seconds,
            format!("0 < window_seconds <= {MAX_WINDOW_SECONDS} seconds"),
        );
        problems.require(
            self.hop_seconds.is_finite()
                && self.hop_seconds > 0.0
                && self.hop_seconds <= self.window_seconds,
            "features.hop_seconds",
            self.hop_seconds,
            format!(
                "0 < hop_seconds <= features.window_seconds ({})",
                self.window_seconds
            ),
        );
        if let (true, Some(rate)) = (window_ok, rate) {
            let samples = (self.window_seconds * rate).round();
            problems.require(
                samples >= 8.0,
                "features.window_seconds",
                self.window_seconds,
                format!(
                    "a window of at least 8 samples ({:.3} s at {rate} Hz)",
                    8.0 / rate
                ),
            );
        }
        let given = self.given_tables();
        problems.require(
            given.len() <= 1,
            "features",
            format!("{} tables ({})", given.len(), given.join(", ")),
            "at most one of features.band_power, features.csp, features.tangent_space (none: band power with its defaults)",
        );
        if let Some(bp) = &self.band_power {
            bp.check("features.band_power", self.window_seconds, rate, problems);
        }
        if let Some(csp) = &self.csp {
            csp.check("features.csp", problems);
        }
    }

    fn given_tables(&self) -> Vec<&'static str> {
        [
            self.band_power.is_some().then_some("band_power"),
            self.csp.is_some().then_some("csp"),
            self.tangent_space.is_some().then_some("tangent_space"),
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    /// Build the feature stage for `channel_labels` at `rate` with windows of
    /// `window_samples`. Exactly one of `[features.band_power]`, `[features.csp]` and
    /// `[features.tangent_space]` may be given; none means band power with its defaults.
    pub fn build_extractor(
        &self,
        channel_labels: &[String],
        rate: f64,
        window_samples: usize,
    ) -> Result<AnyExtractor> {
        let given = self.given_tables();
        if given.len() > 1 {
            return Err(Error::config(
                "pipeline",
                format!(
                    "[features] has {} tables ({}); allowed: at most one of features.band_power, features.csp, features.tangent_space (none: band power with its defaults)",
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

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn check_lists_every_problem() {
        let config = FeaturesConfig {
            window_seconds: 0.02,
            hop_seconds: 1.0,
            csp: Some(CspConfig::default()),
            band_power: Some(BandPowerConfig::default()),
            ..FeaturesConfig::default()
        };
        let mut problems = Problems::new();
        config.check(Some(160.0), &mut problems);
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert!(keys.contains(&"features.hop_seconds"), "{keys:?}");
        assert!(keys.contains(&"features.window_seconds"), "{keys:?}");
        assert!(keys.contains(&"features"), "{keys:?}");
    }
}
