//! Decoders: a feature vector → class probabilities. One file per decoder, all behind the
//! [`Decoder`] trait and gathered in [`AnyDecoder`] (the one enum a model file stores), so a new
//! decoder is one new file plus one variant here.
//!
//! - [`lda`]: shrinkage linear discriminant analysis, the standard BCI baseline.
//! - [`svm`]: support vector machine (linfa-svm), linear or RBF, Platt-calibrated.
//! - [`mlp`]: the plastic multi-layer perceptron that keeps learning online.
//! - [`metrics`]: accuracy, ROC-AUC, confusion matrix, Cohen's kappa, information transfer rate.
//! - [`cv`]: seeded stratified k-fold splits.
//! - [`calibration`]: Platt / temperature scaling of any decoder's decision values, fitted
//!   out of fold, monotone by construction.
//! - [`stats`]: paired Wilcoxon signed-rank and sign tests (`evaluate --online`).
//!
//! Labels are class indices `0..classes`. Features arrive as `f32` (what the pipeline makes);
//! decoders compute in `f64` internally.

pub mod calibration;
pub mod cv;
pub mod lda;
pub mod metrics;
pub mod mlp;
pub mod stats;
pub mod svm;

use ndarray::ArrayView2;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::validate::Problems;

/// A trained (or trainable) mapping from feature vectors to class probabilities.
pub trait Decoder: Send {
    /// Number of classes; labels are `0..classes()`.
    fn classes(&self) -> usize;

    /// Fit from scratch on `features` (one row per example) and `labels` (one per row).
    fn fit(&mut self, features: ArrayView2<'_, f32>, labels: &[usize]) -> Result<()>;

    /// Class probabilities for one feature vector into `probabilities` (length `classes()`,
    /// summing to 1). Runs once per window on the hot path: no allocation.
    fn predict_proba(&mut self, features: &[f32], probabilities: &mut [f64]);

    /// Per-class decision values for one feature vector into `scores` (length `classes()`):
    /// log-probabilities up to a constant per window, so that a larger `scores[k]` means
    /// class `k` is more likely and, with two classes, `scores[1] − scores[0]` is the one
    /// decision value (positive = class 1). What [`calibration`] scales. The default takes
    /// the log of [`Decoder::predict_proba`]; decoders with a native score override it.
    /// No allocation.
    fn decision_values(&mut self, features: &[f32], scores: &mut [f64]) {
        self.predict_proba(features, scores);
        for s in scores.iter_mut() {
            *s = s.max(f64::MIN_POSITIVE).ln();
        }
    }

    /// One online supervised step (a labelled trial or user feedback). Returns `true` if the
    /// model changed. Decoders that do not learn online keep the default.
    fn update(&mut self, _features: &[f32], _label: usize) -> bool {
        false
    }

    /// Unsupervised adaptation to an unlabelled window (e.g. running feature normalisation).
    fn observe(&mut self, _features: &[f32]) {}
}

/// `[decoder]` in a pipeline file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DecoderConfig {
    Lda(lda::LdaConfig),
    Svm(svm::SvmConfig),
    Mlp(mlp::MlpConfig),
}

impl DecoderConfig {
    /// A fresh, unfitted decoder for `classes` classes.
    pub fn build(&self, classes: usize) -> Result<AnyDecoder> {
        Ok(match self {
            DecoderConfig::Lda(config) => AnyDecoder::Lda(lda::Lda::new(config.clone())),
            DecoderConfig::Svm(config) => AnyDecoder::Svm(svm::Svm::new(config.clone())),
            DecoderConfig::Mlp(config) => {
                AnyDecoder::Mlp(Box::new(mlp::PlasticMlp::new(config.clone(), classes)?))
            }
        })
    }

    pub fn kind(&self) -> &'static str {
        match self {
            DecoderConfig::Lda(_) => "lda",
            DecoderConfig::Svm(_) => "svm",
            DecoderConfig::Mlp(_) => "mlp",
        }
    }

    /// Every range of `[decoder]` into `problems` (keys `decoder.…`).
    pub fn check(&self, problems: &mut Problems) {
        match self {
            DecoderConfig::Lda(config) => {
                if let lda::Shrinkage::Fixed(x) = config.shrinkage {
                    problems.closed(
                        "decoder.shrinkage",
                        x,
                        0.0,
                        1.0,
                        "\"auto\" or a number in [0, 1]",
                    );
                }
                config.online.check(problems);
            }
            DecoderConfig::Svm(config) => {
                problems.positive("decoder.c", config.c, f64::MAX, "a positive number");
                if let svm::Gamma::Value(g) = config.gamma {
                    problems.positive(
                        "decoder.gamma",
                        g,
                        f64::MAX,
                        "\"scale\" or a positive number",
                    );
                }
                config.online.check(problems);
            }
            DecoderConfig::Mlp(config) => check_mlp(config, problems),
        }
    }
}

fn check_mlp(config: &mlp::MlpConfig, p: &mut Problems) {
    p.require(
        (1..=2).contains(&config.hidden.len()),
        "decoder.hidden",
        format!("{:?}", config.hidden),
        "1 or 2 hidden layers",
    );
    for (i, &width) in config.hidden.iter().enumerate() {
        p.require(
            (1..=1024).contains(&width),
            format!("decoder.hidden[{i}]"),
            width,
            "1..=1024 units",
        );
    }
    p.require(
        (1..=100_000).contains(&config.epochs),
        "decoder.epochs",
        config.epochs,
        "1..=100000",
    );
    p.require(
        (1..=100_000).contains(&config.batch_size),
        "decoder.batch_size",
        config.batch_size,
        "1..=100000",
    );
    p.positive("decoder.learning_rate", config.learning_rate, 1.0, "(0, 1]");
    p.closed(
        "decoder.weight_decay",
        config.weight_decay,
        0.0,
        10.0,
        "[0, 10]",
    );
    let online = &config.online;
    p.positive(
        "decoder.online.learning_rate",
        online.learning_rate,
        1.0,
        "(0, 1]",
    );
    p.positive("decoder.online.max_rate", online.max_rate, 1.0, "(0, 1]");
    p.closed(
        "decoder.online.min_rate",
        online.min_rate,
        0.0,
        online.max_rate,
        &format!("[0, decoder.online.max_rate = {}]", online.max_rate),
    );
    p.closed(
        "decoder.online.error_memory",
        online.error_memory,
        1.0,
        1e6,
        "[1, 1e6] updates",
    );
    p.closed(
        "decoder.online.normalization_forgetting",
        online.normalization_forgetting,
        0.5,
        1.0,
        "[0.5, 1]",
    );
    p.positive(
        "decoder.online.max_gradient_norm",
        online.max_gradient_norm,
        f64::MAX,
        "(0, ∞)",
    );
    p.positive(
        "decoder.online.max_update_norm",
        online.max_update_norm,
        f64::MAX,
        "(0, ∞)",
    );
    p.closed(
        "decoder.online.outlier_z",
        online.outlier_z,
        1.0,
        1000.0,
        "[1, 1000]",
    );
    p.closed(
        "decoder.online.max_outlier_fraction",
        online.max_outlier_fraction,
        0.0,
        1.0,
        "[0, 1]",
    );
    p.require(
        online.replay_per_class <= mlp::MAX_REPLAY_PER_CLASS,
        "decoder.online.replay_per_class",
        online.replay_per_class,
        "0..=256",
    );
    p.closed(
        "decoder.online.experience_horizon",
        online.experience_horizon,
        1.0,
        1e6,
        "[1, 1e6] updates",
    );
    p.positive(
        "decoder.online.max_drift",
        online.max_drift,
        f64::MAX,
        "(0, ∞)",
    );
}

/// Every decoder, as one type: what a model file stores and the pipeline runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AnyDecoder {
    Lda(lda::Lda),
    Svm(svm::Svm),
    Mlp(Box<mlp::PlasticMlp>),
}

impl AnyDecoder {
    fn inner(&self) -> &dyn Decoder {
        match self {
            AnyDecoder::Lda(d) => d,
            AnyDecoder::Svm(d) => d,
            AnyDecoder::Mlp(d) => d.as_ref(),
        }
    }

    fn inner_mut(&mut self) -> &mut dyn Decoder {
        match self {
            AnyDecoder::Lda(d) => d,
            AnyDecoder::Svm(d) => d,
            AnyDecoder::Mlp(d) => d.as_mut(),
        }
    }

    /// The decoder's `kind` in a pipeline file (`[decoder] kind = ...`) and a model file.
    pub fn kind(&self) -> &'static str {
        match self {
            AnyDecoder::Lda(_) => "lda",
            AnyDecoder::Svm(_) => "svm",
            AnyDecoder::Mlp(_) => "mlp",
        }
    }

    /// The plastic net, when this decoder is one (for its version and learning rate).
    pub fn as_mlp(&self) -> Option<&mlp::PlasticMlp> {
        match self {
            AnyDecoder::Mlp(d) => Some(d),
            _ => None,
        }
    }
}

impl Decoder for AnyDecoder {
    fn classes(&self) -> usize {
        self.inner().classes()
    }

    fn fit(&mut self, features: ArrayView2<'_, f32>, labels: &[usize]) -> Result<()> {
        self.inner_mut().fit(features, labels)
    }

    fn predict_proba(&mut self, features: &[f32], probabilities: &mut [f64]) {
        self.inner_mut().predict_proba(features, probabilities)
    }

    fn decision_values(&mut self, features: &[f32], scores: &mut [f64]) {
        match self {
            // The discriminants, whose softmax is the LDA probability.
            AnyDecoder::Lda(d) => d.decision_function(features, scores),
            // Binary: `[0, f]`, so scores[1] − scores[0] = f; one-vs-rest: `f_k` per class.
            AnyDecoder::Svm(d) => {
                if d.machines() == 1 && scores.len() == 2 {
                    scores[0] = 0.0;
                    d.decision_function(features, &mut scores[1..]);
                } else {
                    d.decision_function(features, scores);
                }
            }
            // The log-softmax of the net's output.
            AnyDecoder::Mlp(d) => d.decision_values(features, scores),
        }
    }

    fn update(&mut self, features: &[f32], label: usize) -> bool {
        self.inner_mut().update(features, label)
    }

    fn observe(&mut self, features: &[f32]) {
        self.inner_mut().observe(features)
    }
}
