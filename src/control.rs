//! Control: class probabilities per window → device commands, without flooding the device.
//!
//! A decoder emits probabilities every hop (10 per second); a wheelchair or a cursor wants a
//! command only when the user means it. Three rules, applied in order:
//! 1. **confidence**: the most probable class must reach `threshold`;
//! 2. **dwell**: the same class must win `dwell` consecutive windows;
//! 3. **refractory**: after a command, nothing for `refractory_seconds` (stream time).
//!
//! A class mapped to no command (the rest / no-command class, e.g. `rest`) resets the dwell
//! count and never produces a command: it is the user's way to say "nothing".
//!
//! # The operating point
//!
//! The threshold is learned at calibration ([`choose_operating_point`], run by
//! [`crate::evaluate::calibrate`]): from the out-of-fold *calibrated* probabilities, the
//! lowest threshold whose windows reach `target_precision` (the share of commands that name
//! the true class), or, when no threshold reaches it (a decoder near chance), the threshold
//! of the best precision with a warning. The model stores it with its expected precision and
//! command share; an explicit `threshold` in the pipeline file overrides it. So a weak
//! decoder whose calibrated probabilities stay close to 0.5 still commands (at its best
//! operating point) instead of never reaching a fixed 0.6. `min_precision` makes such a
//! decoder silent instead. The dwell and refractory time stay as configured: calibration
//! data hold one window per trial, which says nothing about runs of windows.

use ndarray::ArrayView2;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::validate::Problems;

/// One class → command mapping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandMapping {
    pub class: String,
    /// Command name sent to the device; absent for the rest / no-command class.
    #[serde(default)]
    pub command: Option<String>,
}

/// `[control]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlConfig {
    /// Class → command. Classes not listed send a command named like the class.
    #[serde(default)]
    pub commands: Vec<CommandMapping>,
    /// Minimum probability of the winning class. Unset (the default): the model's learned
    /// operating point, or 0.6 for a model without one. Set: overrides the operating point.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// Precision (share of commands naming the true class) the learned threshold aims for.
    #[serde(default = "default_target_precision")]
    pub target_precision: f64,
    /// Smallest share of calibration windows the learned threshold lets through, so the
    /// precision estimate rests on enough windows and the user gets commands.
    #[serde(default = "default_min_command_share")]
    pub min_command_share: f64,
    /// If set and the best operating point's expected precision is below it, send no
    /// commands at all (unset: a near-chance calibration still commands, with a warning).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_precision: Option<f64>,
    /// Consecutive agreeing windows before a command.
    #[serde(default = "default_dwell")]
    pub dwell: usize,
    /// Seconds after a command during which no other is sent.
    #[serde(default = "default_refractory")]
    pub refractory_seconds: f64,
}

/// Threshold of a model without a learned operating point.
pub const DEFAULT_THRESHOLD: f64 = 0.6;

fn default_target_precision() -> f64 {
    0.7
}

fn default_min_command_share() -> f64 {
    0.25
}

fn default_dwell() -> usize {
    3
}

fn default_refractory() -> f64 {
    1.0
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig {
            commands: Vec::new(),
            threshold: None,
            target_precision: default_target_precision(),
            min_command_share: default_min_command_share(),
            min_precision: None,
            dwell: default_dwell(),
            refractory_seconds: default_refractory(),
        }
    }
}

/// Longest dwell: at 10 windows per second, 100 windows is 10 s of agreement, beyond any
/// sensible interaction.
pub const MAX_DWELL: usize = 100;

impl ControlConfig {
    /// Every range of `[control]` into `problems`; with the decoder's `classes`, also that
    /// every mapping names one of them.
    pub fn check(&self, classes: Option<&[String]>, problems: &mut Problems) {
        if let Some(threshold) = self.threshold {
            problems.closed("control.threshold", threshold, 0.0, 1.0, "0 to 1");
        }
        problems.positive(
            "control.target_precision",
            self.target_precision,
            1.0,
            "(0, 1]",
        );
        problems.positive(
            "control.min_command_share",
            self.min_command_share,
            1.0,
            "(0, 1]",
        );
        if let Some(min) = self.min_precision {
            problems.closed("control.min_precision", min, 0.0, 1.0, "0 to 1");
        }
        problems.require(
            (1..=MAX_DWELL).contains(&self.dwell),
            "control.dwell",
            self.dwell,
            format!("1..={MAX_DWELL} windows"),
        );
        problems.closed(
            "control.refractory_seconds",
            self.refractory_seconds,
            0.0,
            60.0,
            "0 to 60 seconds",
        );
        if let Some(classes) = classes {
            for (i, mapping) in self.commands.iter().enumerate() {
                problems.require(
                    classes.contains(&mapping.class),
                    format!("control.commands[{i}].class"),
                    format!("{:?}", mapping.class),
                    format!("a class of the decoder: {}", classes.join(", ")),
                );
            }
        }
    }

    /// Which classes send a command (the others are rest / no-command classes).
    pub fn commanding(&self, classes: &[String]) -> Vec<bool> {
        classes
            .iter()
            .map(|c| {
                self.commands
                    .iter()
                    .find(|m| m.class == *c)
                    .is_none_or(|m| m.command.is_some())
            })
            .collect()
    }

    /// Build for a decoder's classes without a learned operating point.
    pub fn build(&self, classes: &[String]) -> Result<Controller> {
        self.build_with(classes, None)
    }

    /// Build for a decoder's classes: every mapping must name one of them. The threshold is
    /// `threshold` when set (an override, logged when it replaces a learned one), else the
    /// model's `operating_point`, else [`DEFAULT_THRESHOLD`].
    pub fn build_with(
        &self,
        classes: &[String],
        operating_point: Option<&OperatingPoint>,
    ) -> Result<Controller> {
        let mut problems = Problems::new();
        self.check(Some(classes), &mut problems);
        problems.into_result("pipeline")?;
        let mut commands: Vec<Option<String>> = classes.iter().map(|c| Some(c.clone())).collect();
        for (i, mapping) in self.commands.iter().enumerate() {
            let Some(k) = classes.iter().position(|c| *c == mapping.class) else {
                return Err(Error::config(
                    "pipeline",
                    format!(
                        "control.commands[{i}].class = {:?} is not a class",
                        mapping.class
                    ),
                ));
            };
            commands[k] = mapping.command.clone();
        }
        Ok(Controller {
            classes: classes.to_vec(),
            commands,
            threshold: self.threshold_for(operating_point),
            operating_point: operating_point.cloned(),
            overridden: self.threshold.is_some(),
            dwell: self.dwell,
            refractory: self.refractory_seconds,
            candidate: None,
            streak: 0,
            last_command_at: f64::NEG_INFINITY,
        })
    }
}

impl ControlConfig {
    fn threshold_for(&self, operating_point: Option<&OperatingPoint>) -> f64 {
        match (self.threshold, operating_point) {
            (Some(t), Some(op)) => {
                tracing::info!(
                    "control.threshold = {t} overrides the model's calibrated operating point \
                     (threshold {:.3}, expected precision {:.3})",
                    op.threshold,
                    op.expected_precision
                );
                t
            }
            (Some(t), None) => t,
            (None, Some(op)) if !op.commands => {
                tracing::warn!(
                    "the model's best operating point (expected precision {:.3}) is below \
                     control.min_precision: no commands will be sent",
                    op.expected_precision
                );
                f64::INFINITY
            }
            (None, Some(op)) => {
                tracing::info!(
                    "threshold {:.3} from the model's calibration: expected precision {:.3}, \
                     commands on {:.0} % of windows",
                    op.threshold,
                    op.expected_precision,
                    100.0 * op.expected_command_share
                );
                op.threshold
            }
            (None, None) => DEFAULT_THRESHOLD,
        }
    }
}

/// The controller's operating point learned at calibration (stored in the model).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OperatingPoint {
    /// Minimum calibrated probability of the winning class.
    pub threshold: f64,
    /// Share of the calibration windows at or above the threshold (with a commanding
    /// winner) whose winner is the true class.
    pub expected_precision: f64,
    /// Share of all calibration windows that pass the threshold with a commanding winner.
    pub expected_command_share: f64,
    /// The precision it aimed for (`control.target_precision`).
    pub target_precision: f64,
    /// Whether `target_precision` was reached (false: near chance, best precision taken).
    pub reached_target: bool,
    /// False when the expected precision is below `control.min_precision`: send nothing.
    pub commands: bool,
    /// Out-of-fold windows it was chosen on.
    pub windows: usize,
}

impl OperatingPoint {
    /// Checks a loaded operating point: every number finite and in range.
    pub fn validate(&self) -> std::result::Result<(), String> {
        for (name, v) in [
            ("threshold", self.threshold),
            ("expected_precision", self.expected_precision),
            ("expected_command_share", self.expected_command_share),
            ("target_precision", self.target_precision),
        ] {
            if !(v.is_finite() && (0.0..=1.0).contains(&v)) {
                return Err(format!("{name} is {v}, expected in [0, 1]"));
            }
        }
        Ok(())
    }
}

/// The operating point from out-of-fold calibrated `probabilities` (one row per window) and
/// their true `labels`; `commanding[k]` says whether class `k` sends a command.
///
/// Windows whose winner sends a command are sorted by the winner's probability; the
/// candidates are the thresholds letting through the top `m` of them (at the boundary of a
/// group of equal probabilities) with `m ≥ min_command_share · n` (or all of them, if fewer).
/// The chosen one is the lowest threshold (most commands) whose precision reaches
/// `target_precision`; if none does, the most precise one (most commands on ties), with a
/// warning. The threshold is half-way between the last window let through and the next one
/// (the class floor `1/K` when all pass). With `min_precision` set and not reached, the
/// point is marked `commands = false`.
pub fn choose_operating_point(
    probabilities: ArrayView2<'_, f64>,
    labels: &[usize],
    commanding: &[bool],
    config: &ControlConfig,
) -> Result<OperatingPoint> {
    let (n, classes) = probabilities.dim();
    if n != labels.len() || n == 0 {
        return Err(Error::Data(format!(
            "operating point: {n} probability rows and {} labels (need the same, at least one)",
            labels.len()
        )));
    }
    if commanding.len() != classes {
        return Err(Error::Data(format!(
            "operating point: {} command flags for {classes} classes",
            commanding.len()
        )));
    }
    if let Some(i) = probabilities.iter().position(|p| !p.is_finite()) {
        return Err(Error::Data(format!(
            "operating point: probability {i} (row-major) is not finite"
        )));
    }
    // (winner's probability, correct) for windows whose winner commands.
    let mut windows: Vec<(f64, bool)> = probabilities
        .rows()
        .into_iter()
        .zip(labels)
        .filter_map(|(row, &label)| {
            let (best, p) =
                row.iter()
                    .copied()
                    .enumerate()
                    .fold(
                        (0, f64::NEG_INFINITY),
                        |a, (i, p)| if p > a.1 { (i, p) } else { a },
                    );
            commanding[best].then_some((p, best == label))
        })
        .collect();
    let floor = 1.0 / classes as f64;
    if windows.is_empty() {
        return Err(Error::Data(
            "operating point: no calibration window is won by a class that sends a command".into(),
        ));
    }
    windows.sort_by(|a, b| b.0.total_cmp(&a.0));
    let min_count = ((config.min_command_share * n as f64).ceil() as usize).clamp(1, windows.len());
    // (count, precision) at each group boundary with count ≥ min_count.
    let mut candidates = Vec::new();
    let mut correct = 0usize;
    for (i, &(p, ok)) in windows.iter().enumerate() {
        correct += usize::from(ok);
        let count = i + 1;
        let boundary = windows.get(i + 1).is_none_or(|next| next.0 < p);
        if boundary && count >= min_count {
            candidates.push((count, correct as f64 / count as f64));
        }
    }
    let reached = candidates
        .iter()
        .rev()
        .find(|c| c.1 >= config.target_precision)
        .copied();
    let (count, precision) = match reached {
        Some(c) => c,
        None => candidates
            .iter()
            .copied()
            .fold((0, f64::NEG_INFINITY), |best, c| {
                if c.1 > best.1 || (c.1 == best.1 && c.0 > best.0) {
                    c
                } else {
                    best
                }
            }),
    };
    let threshold = match windows.get(count) {
        Some(next) => 0.5 * (windows[count - 1].0 + next.0),
        None => floor.min(windows[count - 1].0),
    };
    let commands = config.min_precision.is_none_or(|min| precision >= min);
    if reached.is_none() {
        tracing::warn!(
            "calibration is near chance: no threshold reaches control.target_precision = {} \
             on the {n} calibration windows; best operating point: threshold {threshold:.3}, \
             expected precision {precision:.3}, commands on {:.0} % of windows{}",
            config.target_precision,
            100.0 * count as f64 / n as f64,
            if commands {
                ""
            } else {
                " (below control.min_precision: no commands)"
            }
        );
    }
    Ok(OperatingPoint {
        threshold,
        expected_precision: precision,
        expected_command_share: count as f64 / n as f64,
        target_precision: config.target_precision,
        reached_target: reached.is_some(),
        commands,
        windows: n,
    })
}

/// A command decided by the [`Controller`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision<'a> {
    pub command: &'a str,
    pub class: &'a str,
    pub class_index: usize,
    /// Probability of the class in the window that completed the dwell.
    pub confidence: f64,
}

/// Stateful decision rules over successive windows.
#[derive(Debug, Clone)]
pub struct Controller {
    classes: Vec<String>,
    commands: Vec<Option<String>>,
    threshold: f64,
    /// The model's learned operating point, if it has one.
    operating_point: Option<OperatingPoint>,
    /// Whether `[control] threshold` set the threshold (overriding any operating point).
    overridden: bool,
    dwell: usize,
    refractory: f64,
    candidate: Option<usize>,
    streak: usize,
    last_command_at: f64,
}

impl Controller {
    /// Feed one window's probabilities (stream time `t` of its last sample). Returns a command
    /// when the rules allow one. Non-finite probabilities (a window with bad samples) reset
    /// the dwell and decide nothing.
    pub fn decide(&mut self, t: f64, probabilities: &[f64]) -> Option<Decision<'_>> {
        debug_assert_eq!(probabilities.len(), self.classes.len());
        if probabilities.iter().any(|p| !p.is_finite()) {
            self.reset();
            return None;
        }
        let (best, confidence) =
            probabilities
                .iter()
                .copied()
                .enumerate()
                .fold(
                    (0, f64::NEG_INFINITY),
                    |a, (i, p)| if p > a.1 { (i, p) } else { a },
                );
        if confidence < self.threshold || self.commands[best].is_none() {
            self.reset();
            return None;
        }
        if self.candidate == Some(best) {
            self.streak += 1;
        } else {
            self.candidate = Some(best);
            self.streak = 1;
        }
        if t < self.last_command_at {
            // The stream's clock went back (a clock reset, a restarted outlet): a refractory
            // time measured from the future would silence the device until the clock caught up.
            self.last_command_at = f64::NEG_INFINITY;
        }
        if self.streak < self.dwell || t - self.last_command_at < self.refractory {
            return None;
        }
        self.last_command_at = t;
        self.reset();
        Some(Decision {
            command: self.commands[best].as_deref().expect("checked above"),
            class: &self.classes[best],
            class_index: best,
            confidence,
        })
    }

    /// Forget the dwell count (after a gap in the stream).
    pub fn reset(&mut self) {
        self.candidate = None;
        self.streak = 0;
    }

    pub fn classes(&self) -> &[String] {
        &self.classes
    }

    /// The threshold in force (infinite: the operating point sends no commands).
    pub fn threshold(&self) -> f64 {
        self.threshold
    }

    /// The model's learned operating point (also when the file's threshold overrides it).
    pub fn operating_point(&self) -> Option<&OperatingPoint> {
        self.operating_point.as_ref()
    }

    /// Whether the pipeline file's `threshold` is in force instead of a learned one.
    pub fn threshold_overridden(&self) -> bool {
        self.overridden
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classes() -> Vec<String> {
        vec!["rest".into(), "left".into(), "right".into()]
    }

    fn controller(dwell: usize, refractory: f64) -> Controller {
        ControlConfig {
            commands: vec![
                CommandMapping {
                    class: "rest".into(),
                    command: None,
                },
                CommandMapping {
                    class: "left".into(),
                    command: Some("turn_left".into()),
                },
            ],
            threshold: Some(0.6),
            dwell,
            refractory_seconds: refractory,
            ..ControlConfig::default()
        }
        .build(&classes())
        .unwrap()
    }

    #[test]
    fn dwell_threshold_and_refractory_time() {
        let mut c = controller(3, 1.0);
        let left = [0.1, 0.8, 0.1];
        assert!(c.decide(0.0, &left).is_none());
        assert!(c.decide(0.1, &left).is_none());
        let d = c.decide(0.2, &left).unwrap();
        assert_eq!(
            (d.command, d.class, d.class_index),
            ("turn_left", "left", 1)
        );
        // Refractory: three more agreeing windows within 1 s send nothing.
        for t in [0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9] {
            assert!(c.decide(t, &left).is_none(), "at {t}");
        }
        assert!(c.decide(1.3, &left).is_some());
        // Below threshold breaks the dwell.
        let mut c = controller(2, 0.0);
        assert!(c.decide(0.0, &left).is_none());
        assert!(c.decide(0.1, &[0.3, 0.5, 0.2]).is_none());
        assert!(c.decide(0.2, &left).is_none());
        assert!(c.decide(0.3, &left).is_some());
    }

    #[test]
    fn flickering_classes_and_rest_send_nothing() {
        let mut c = controller(2, 0.0);
        for i in 0..20 {
            let p = if i % 2 == 0 {
                [0.1, 0.8, 0.1]
            } else {
                [0.1, 0.1, 0.8]
            };
            assert!(c.decide(i as f64 * 0.1, &p).is_none());
        }
        for i in 0..20 {
            assert!(c.decide(2.0 + i as f64 * 0.1, &[0.9, 0.05, 0.05]).is_none());
        }
        // An unmapped class sends a command named after it; NaN decides nothing.
        assert!(c.decide(5.0, &[0.1, 0.1, 0.8]).is_none());
        assert!(c.decide(5.1, &[f64::NAN, 0.1, 0.8]).is_none());
        assert!(c.decide(5.2, &[0.1, 0.1, 0.8]).is_none());
        assert_eq!(c.decide(5.3, &[0.1, 0.1, 0.8]).unwrap().command, "right");
    }

    #[test]
    fn config_errors_name_the_key() {
        let config = ControlConfig {
            commands: vec![CommandMapping {
                class: "up".into(),
                command: Some("go".into()),
            }],
            ..ControlConfig::default()
        };
        let err = config.build(&classes()).unwrap_err().to_string();
        assert!(
            err.contains("control.commands[0].class = \"up\"") && err.contains("rest, left, right"),
            "{err}"
        );
        let err = ControlConfig {
            dwell: 0,
            ..ControlConfig::default()
        }
        .build(&classes())
        .unwrap_err()
        .to_string();
        assert!(err.contains("control.dwell = 0"), "{err}");
        let err = ControlConfig {
            threshold: Some(1.5),
            ..ControlConfig::default()
        }
        .build(&classes())
        .unwrap_err()
        .to_string();
        assert!(err.contains("control.threshold = 1.5"), "{err}");
    }
}
