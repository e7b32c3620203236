//! `[training]`: which events are classes, where the epoch sits, folds and seed (for
//! `train`, `evaluate`, `tune` and a session's calibration).

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::validate::Problems;

/// One class: the event label that cues it and the name decoders report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassSpec {
    pub event: String,
    pub name: String,
}

/// `[training]`: how calibration epochs are cut and evaluated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingConfig {
    /// Classes in order (class index = position). Default: EEGMMIDB imagery runs R04/R08/R12,
    /// `T1` = left fist, `T2` = right fist.
    #[serde(default = "default_classes")]
    pub classes: Vec<ClassSpec>,
    /// Seconds from the cue to the start of the epoch window (the window is
    /// `features.window_seconds` long).
    #[serde(default)]
    pub epoch_offset: f64,
    /// Folds of the stratified cross-validation in `evaluate`.
    #[serde(default = "default_folds")]
    pub folds: usize,
    /// Seed of the fold shuffle (and of anything else random in training).
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Weight of each new trial when the tangent-space reference re-centres online
    /// (`evaluate --online`, live sessions); 0 disables re-centring.
    #[serde(default = "default_recentre_rate")]
    pub recentre_rate: f64,
}

fn default_classes() -> Vec<ClassSpec> {
    vec![
        ClassSpec {
            event: "T1".into(),
            name: "left".into(),
        },
        ClassSpec {
            event: "T2".into(),
            name: "right".into(),
        },
    ]
}

fn default_folds() -> usize {
    5
}

fn default_seed() -> u64 {
    42
}

fn default_recentre_rate() -> f64 {
    0.05
}

impl Default for TrainingConfig {
    fn default() -> Self {
        TrainingConfig {
            classes: default_classes(),
            epoch_offset: 0.0,
            folds: default_folds(),
            seed: default_seed(),
            recentre_rate: default_recentre_rate(),
        }
    }
}

impl TrainingConfig {
    /// Every range of `[training]` into `problems`.
    pub fn check(&self, problems: &mut Problems) {
        problems.require(
            self.classes.len() >= 2,
            "training.classes",
            format!(
                "{} entr{}",
                self.classes.len(),
                if self.classes.len() == 1 { "y" } else { "ies" }
            ),
            "at least 2 classes",
        );
        for (i, class) in self.classes.iter().enumerate() {
            problems.require(
                !self.classes[..i]
                    .iter()
                    .any(|c| c.event == class.event || c.name == class.name),
                format!("training.classes[{i}]"),
                format!("{{ event = {:?}, name = {:?} }}", class.event, class.name),
                "distinct events and names (this one repeats an earlier class)",
            );
        }
        problems.closed(
            "training.epoch_offset",
            self.epoch_offset,
            -10.0,
            30.0,
            "-10 to 30 seconds",
        );
        problems.require(
            (2..=50).contains(&self.folds),
            "training.folds",
            self.folds,
            "2..=50",
        );
        problems.closed(
            "training.recentre_rate",
            self.recentre_rate,
            0.0,
            1.0,
            "0 to 1 (0: no re-centring)",
        );
    }

    /// [`TrainingConfig::check`] alone, for callers holding only this section.
    pub fn validate(&self) -> Result<()> {
        let mut problems = Problems::new();
        self.check(&mut problems);
        problems.into_result("pipeline")
    }

    pub fn class_names(&self) -> Vec<String> {
        self.classes.iter().map(|c| c.name.clone()).collect()
    }
}
