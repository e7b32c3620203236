//! Problems found while checking a pipeline file, collected rather than returned one at a
//! time: a user fixing a file wants every bad value in one run, each with its dotted key
//! (`control.threshold`), the value and what is allowed.
//!
//! Every section type checks itself into a [`Problems`] (`fn check(&self, .., &mut
//! Problems)`); [`crate::config::PipelineConfig::validate`] runs them all and turns the
//! list into one [`Error::Config`] naming the file. This module imports nothing of the
//! crate but the error type, so every stage can use it without depending on the schema.

use std::fmt::{self, Display};

use crate::error::{Error, Result};

/// One bad value.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// Dotted key, e.g. `preprocess.bandpass.high` or `training.classes[1]`.
    pub key: String,
    /// The value as written (or as parsed).
    pub value: String,
    /// What the key accepts.
    pub allowed: String,
}

impl Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} = {} is not allowed; allowed: {}",
            self.key, self.value, self.allowed
        )
    }
}

/// The problems found so far.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Problems {
    list: Vec<Problem>,
}

impl Problems {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(
        &mut self,
        key: impl Into<String>,
        value: impl Display,
        allowed: impl Into<String>,
    ) {
        self.list.push(Problem {
            key: key.into(),
            value: value.to_string(),
            allowed: allowed.into(),
        });
    }

    /// Record a problem unless `ok`.
    pub fn require(
        &mut self,
        ok: bool,
        key: impl Into<String>,
        value: impl Display,
        allowed: impl Into<String>,
    ) {
        if !ok {
            self.push(key, value, allowed);
        }
    }

    /// `lo <= value <= hi` (NaN and infinities fail).
    pub fn closed(&mut self, key: impl Into<String>, value: f64, lo: f64, hi: f64, allowed: &str) {
        self.require(
            value.is_finite() && value >= lo && value <= hi,
            key,
            value,
            allowed,
        );
    }

    /// `0 < value <= hi` (NaN and infinities fail).
    pub fn positive(&mut self, key: impl Into<String>, value: f64, hi: f64, allowed: &str) {
        self.require(
            value.is_finite() && value > 0.0 && value <= hi,
            key,
            value,
            allowed,
        );
    }

    /// Fold in a check that can only report its first problem (a section validated by code
    /// that returns `Result`): its message becomes one problem under `key`.
    pub fn absorb(&mut self, key: &str, result: Result<()>) {
        if let Err(error) = result {
            let detail = match error {
                Error::Config { detail, .. } => detail,
                other => other.to_string(),
            };
            self.list.push(Problem {
                key: key.to_owned(),
                value: String::new(),
                allowed: detail,
            });
        }
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Problem> {
        self.list.iter()
    }

    /// `Ok` when nothing was found, else one [`Error::Config`] from `origin` (a file path)
    /// listing every problem, one per line.
    pub fn into_result(self, origin: &str) -> Result<()> {
        if self.list.is_empty() {
            return Ok(());
        }
        let lines: Vec<String> = self.list.iter().map(line).collect();
        let detail = if lines.len() == 1 {
            lines[0].clone()
        } else {
            format!("{} problems:\n  {}", lines.len(), lines.join("\n  "))
        };
        Err(Error::config(origin, detail))
    }
}

fn line(problem: &Problem) -> String {
    if problem.value.is_empty() {
        // An absorbed message already names its key and value.
        problem.allowed.clone()
    } else {
        problem.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_problem_is_listed_with_the_origin() {
        let mut p = Problems::new();
        p.closed("control.threshold", 2.0, 0.0, 1.0, "0 to 1");
        p.closed(
            "control.refractory_seconds",
            0.5,
            0.0,
            60.0,
            "0 to 60 seconds",
        );
        p.positive("decoder.learning_rate", f64::NAN, 1.0, "(0, 1]");
        p.require(false, "training.folds", 1, "2..=50");
        assert_eq!(p.len(), 3);
        let text = p.into_result("x.toml").unwrap_err().to_string();
        assert!(text.starts_with("config x.toml: 3 problems:"), "{text}");
        assert!(
            text.contains("control.threshold = 2 is not allowed; allowed: 0 to 1"),
            "{text}"
        );
        assert!(text.contains("decoder.learning_rate = NaN"), "{text}");
        assert!(text.contains("training.folds = 1"), "{text}");
        assert!(Problems::new().into_result("x.toml").is_ok());
    }
}
