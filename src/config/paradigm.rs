//! `[paradigm]`: closed-loop calibration and cued online trials (`run` without a model).

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::validate::Problems;

/// `[paradigm]`: how a session calibrates and runs its cued trials.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParadigmConfig {
    /// Cued calibration trials per class before the first model is trained.
    #[serde(default = "default_calibration_trials")]
    pub calibration_trials: usize,
    /// Online cued trials teach the decoder their label once decided (supervised adaptation).
    #[serde(default = "default_true")]
    pub cued_feedback: bool,
    /// Longest calibration kept in memory, seconds (about 12 MB per 10 min at 64 ch × 160 Hz).
    #[serde(default = "default_max_calibration_seconds")]
    pub max_calibration_seconds: f64,
}

fn default_calibration_trials() -> usize {
    20
}

fn default_true() -> bool {
    true
}

fn default_max_calibration_seconds() -> f64 {
    1800.0
}

impl Default for ParadigmConfig {
    fn default() -> Self {
        ParadigmConfig {
            calibration_trials: default_calibration_trials(),
            cued_feedback: true,
            max_calibration_seconds: default_max_calibration_seconds(),
        }
    }
}

/// Fewer calibration trials per class than this cannot be cross-validated honestly.
pub const MIN_CALIBRATION_TRIALS: usize = 5;
/// Trials per class above this are a unit mistake (minutes typed as trials).
pub const MAX_CALIBRATION_TRIALS: usize = 1000;

impl ParadigmConfig {
    /// Every range of `[paradigm]` into `problems`.
    pub fn check(&self, problems: &mut Problems) {
        problems.require(
            (MIN_CALIBRATION_TRIALS..=MAX_CALIBRATION_TRIALS).contains(&self.calibration_trials),
            "paradigm.calibration_trials",
            self.calibration_trials,
            format!("{MIN_CALIBRATION_TRIALS} to {MAX_CALIBRATION_TRIALS} trials per class"),
        );
        problems.closed(
            "paradigm.max_calibration_seconds",
            self.max_calibration_seconds,
            60.0,
            7200.0,
            "60 to 7200 s",
        );
    }

    /// [`ParadigmConfig::check`] alone, for callers holding only this section.
    pub fn validate(&self) -> Result<()> {
        let mut problems = Problems::new();
        self.check(&mut problems);
        problems.into_result("pipeline")
    }
}
