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
    /// Minimum probability of the winning class.
    #[serde(default = "default_threshold")]
    pub threshold: f64,
    /// Consecutive agreeing windows before a command.
    #[serde(default = "default_dwell")]
    pub dwell: usize,
    /// Seconds after a command during which no other is sent.
    #[serde(default = "default_refractory")]
    pub refractory_seconds: f64,
}

fn default_threshold() -> f64 {
    0.6
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
            threshold: default_threshold(),
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
        problems.closed("control.threshold", self.threshold, 0.0, 1.0, "0 to 1");
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

    /// Build for a decoder's classes: every mapping must name one of them.
    pub fn build(&self, classes: &[String]) -> Result<Controller> {
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
            threshold: self.threshold,
            dwell: self.dwell,
            refractory: self.refractory_seconds,
            candidate: None,
            streak: 0,
            last_command_at: f64::NEG_INFINITY,
        })
    }
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
            threshold: 0.6,
            dwell,
            refractory_seconds: refractory,
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
            threshold: 1.5,
            ..ControlConfig::default()
        }
        .build(&classes())
        .unwrap_err()
        .to_string();
        assert!(err.contains("control.threshold = 1.5"), "{err}");
    }
}
