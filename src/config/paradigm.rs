//! `[paradigm]`: closed-loop calibration, cued online trials and the cue page's schedule
//! (`run` without a model, `neurostream session`).

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::validate::Problems;

/// Shortest time between announcing a page cue and its onset (the page must get it in time).
pub const MIN_LEAD_SECONDS: f64 = 0.5;

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
    /// Where cues come from: `"stream"` (the stream's own class markers: a marker stream next
    /// to the headset, a recording's T1/T2, the simulator's schedule) or `"page"` (the service
    /// runs the trial schedule below on the stream's clock and the `/paradigm` page shows it;
    /// see [`crate::paradigm`]).
    #[serde(default)]
    pub cues: CueSource,
    /// Page cues: fixation cross before each cue, seconds.
    #[serde(default = "default_fixation_seconds")]
    pub fixation_seconds: f64,
    /// Page cues: how long the arrow is shown; imagery starts at the cue onset.
    #[serde(default = "default_cue_seconds")]
    pub cue_seconds: f64,
    /// Page cues: imagery continues this long after the arrow (feedback bar when online).
    /// The cue marker lasts `cue_seconds + imagery_seconds`.
    #[serde(default = "default_imagery_seconds")]
    pub imagery_seconds: f64,
    /// Page cues: the inter-trial break is drawn uniformly from this range, seconds.
    #[serde(default = "default_break_min_seconds")]
    pub break_min_seconds: f64,
    #[serde(default = "default_break_max_seconds")]
    pub break_max_seconds: f64,
    /// Page cues: cued online trials per class after the model is loaded (then free mode).
    #[serde(default = "default_online_trials_per_class")]
    pub online_trials_per_class: usize,
    /// Page cues: each trial is announced to clients this long before its fixation starts.
    #[serde(default = "default_announce_seconds")]
    pub announce_seconds: f64,
    /// Page cues: seed of the class order and the breaks.
    #[serde(default = "default_paradigm_seed")]
    pub seed: u64,
    /// Page cues: also publish the cue markers as an LSL stream `neurostream-cues` (builds
    /// with the `lsl` feature). Default: on when the source is an LSL stream (LabRecorder
    /// then records the cues next to the headset), off otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lsl_markers: Option<bool>,
}

/// `[paradigm] cues`: see [`ParadigmConfig::cues`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CueSource {
    #[default]
    Stream,
    Page,
}

fn default_fixation_seconds() -> f64 {
    2.0
}

fn default_cue_seconds() -> f64 {
    1.25
}

fn default_imagery_seconds() -> f64 {
    2.75
}

fn default_break_min_seconds() -> f64 {
    1.5
}

fn default_break_max_seconds() -> f64 {
    2.5
}

fn default_online_trials_per_class() -> usize {
    10
}

fn default_announce_seconds() -> f64 {
    1.0
}

fn default_paradigm_seed() -> u64 {
    42
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
            cues: CueSource::Stream,
            fixation_seconds: default_fixation_seconds(),
            cue_seconds: default_cue_seconds(),
            imagery_seconds: default_imagery_seconds(),
            break_min_seconds: default_break_min_seconds(),
            break_max_seconds: default_break_max_seconds(),
            online_trials_per_class: default_online_trials_per_class(),
            announce_seconds: default_announce_seconds(),
            seed: default_paradigm_seed(),
            lsl_markers: None,
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
        let seconds = [
            ("fixation_seconds", self.fixation_seconds, 0.0, 10.0),
            ("cue_seconds", self.cue_seconds, 0.1, 10.0),
            ("imagery_seconds", self.imagery_seconds, 0.0, 30.0),
            ("break_min_seconds", self.break_min_seconds, 0.0, 60.0),
            ("break_max_seconds", self.break_max_seconds, 0.0, 60.0),
            (
                "announce_seconds",
                self.announce_seconds,
                MIN_LEAD_SECONDS,
                10.0,
            ),
        ];
        for (key, value, lo, hi) in seconds {
            problems.closed(
                format!("paradigm.{key}"),
                value,
                lo,
                hi,
                &format!("{lo} to {hi} seconds"),
            );
        }
        problems.require(
            self.break_max_seconds >= self.break_min_seconds || self.break_max_seconds.is_nan(),
            "paradigm.break_max_seconds",
            self.break_max_seconds,
            format!(
                "at least paradigm.break_min_seconds = {} (the break is drawn from \
                 [break_min_seconds, break_max_seconds])",
                self.break_min_seconds
            ),
        );
        problems.require(
            self.online_trials_per_class <= MAX_CALIBRATION_TRIALS,
            "paradigm.online_trials_per_class",
            self.online_trials_per_class,
            format!("0 to {MAX_CALIBRATION_TRIALS}"),
        );
    }

    /// [`ParadigmConfig::check`] alone, for callers holding only this section.
    pub fn validate(&self) -> Result<()> {
        let mut problems = Problems::new();
        self.check(&mut problems);
        problems.into_result("pipeline")
    }
}
