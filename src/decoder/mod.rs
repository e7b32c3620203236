//! Decoders: a feature vector → class probabilities. One file per decoder, all behind the
//! [`Decoder`] trait and gathered in [`AnyDecoder`] (the one enum a model file stores), so a new
//! decoder is one new file plus one variant here.
//!
//! - [`lda`]: shrinkage linear discriminant analysis, the standard BCI baseline.
//! - [`svm`]: support vector machine (linfa-svm), linear or RBF, Platt-calibrated.
//! - [`mlp`]: the plastic multi-layer perceptron that keeps learning online.
//! - [`metrics`]: accuracy, ROC-AUC, confusion matrix, Cohen's kappa, information transfer rate.
//! - [`cv`]: seeded stratified k-fold splits.
//!
//! Labels are class indices `0..classes`. Features arrive as `f32` (what the pipeline makes);
//! decoders compute in `f64` internally.

pub mod cv;
pub mod lda;
pub mod metrics;
pub mod mlp;
pub mod svm;

use ndarray::ArrayView2;
use serde::{Deserialize, Serialize};

use crate::error::Result;

/// A trained (or trainable) mapping from feature vectors to class probabilities.
pub trait Decoder: Send {
    /// Number of classes; labels are `0..classes()`.
    fn classes(&self) -> usize;

    /// Fit from scratch on `features` (one row per example) and `labels` (one per row).
    fn fit(&mut self, features: ArrayView2<'_, f32>, labels: &[usize]) -> Result<()>;

    /// Class probabilities for one feature vector into `probabilities` (length `classes()`,
    /// summing to 1). Runs once per window on the hot path: no allocation.
    fn predict_proba(&mut self, features: &[f32], probabilities: &mut [f64]);

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
