//! Support vector machine decoder: linear or RBF kernel, Platt-calibrated probabilities.
//!
//! # What comes from linfa-svm and what is ours
//!
//! Training uses linfa-svm's C-SVC solver (SMO with second-order working-set selection, the
//! libsvm algorithm): that is the hard, well-tested part, and the reason we depend on the
//! crate. We keep only its solution — the dual coefficients `αᵢyᵢ` and the bias `ρ` — and do
//! the rest ourselves:
//!
//! - **Prediction** evaluates `f(x) = Σᵢ αᵢyᵢ K(svᵢ, x) − ρ` from our own copy of the support
//!   vectors. linfa's `predict` takes an ndarray per call, skips zero coefficients on every
//!   call and, for probabilities, rounds through `f32`; ours runs on a preallocated buffer with
//!   a vectorisable inner loop and shares kernel evaluations between the one-vs-rest machines.
//!   For the linear kernel the support vectors collapse into one weight vector per machine,
//!   with the standardisation folded in, so prediction is a single dot product.
//! - **RBF cost** is `n_support × d` per window, e.g. 200 × 2080 at tangent-space size, which
//!   is memory-bound: in `f64` the support vectors (3.3 MB) do not fit a core's L2 cache. So
//!   the standardised support vectors and input are kept in `f32` (the precision the features
//!   arrive in) and squared distances are summed in 16 `f32` lanes, then in `f64`; the
//!   relative error of `‖x − sv‖²` is ~1e-6, far below the solver tolerance. On x86-64 the
//!   loop is also compiled for AVX2 and chosen at run time (same operations in the same
//!   order, so both paths give bit-identical results).
//! - **Serialisation** is of this plain struct (support vectors, coefficients, `ρ`, Platt
//!   parameters, standardisation), not of linfa's `Svm`, which would also store one
//!   coefficient per *training* example and tie the model-file format to linfa's internals.
//! - **Probability calibration** is Platt scaling, `P(y=1|f) = 1/(1 + exp(A·f + B))`, fitted
//!   like libsvm/scikit-learn on *out-of-fold* decision values: an internal stratified 5-fold
//!   cross-validation (fewer folds if a class has fewer than 5 examples, seeded so fitting is
//!   deterministic) trains an SVM per fold and records its decision values on the held-out
//!   fold; `A, B` are then fitted to those by the Newton method of Lin, Lin & Weng (2007,
//!   "A note on Platt's probabilistic outputs"), with Platt's regularised targets. Decision
//!   values on the training set itself are biased (an RBF SVM separates its own training data
//!   almost perfectly), so a sigmoid fitted to them — which is what linfa's
//!   `Svm<_, Pr>` does — is over-confident. If a class has a single example no cross-validation
//!   is possible and the training decision values are used. Unlike scikit-learn's, the
//!   sigmoid is kept increasing in the decision value: a fit with the wrong sign (which
//!   happens near chance, and inverted the ranking of a subject's windows) is refused with a
//!   warning and replaced by the sign-correct fit of
//!   [`fit_platt_increasing`](super::calibration::fit_platt_increasing), so the probability
//!   ranks windows exactly as the decision value does. A pipeline-level calibration
//!   ([`super::calibration`]) works on the raw decision value and replaces these
//!   probabilities in a calibrated model.
//!
//! # More than two classes
//!
//! One-vs-rest: one binary machine per class (class `k` against all others), each Platt
//! calibrated, and the `K` probabilities `P(k | x)` normalised to sum to 1. scikit-learn's
//! `SVC` uses one-vs-one with pairwise coupling instead; one-vs-rest needs `K` instead of
//! `K(K−1)/2` machines, which keeps prediction cheap, and normalised calibrated one-vs-rest
//! probabilities are an established, simple choice. The reference tests compare our per-class
//! decision values with scikit-learn's `OneVsRestClassifier(SVC)`.
//!
//! # Features
//!
//! With `standardize = true` (default) features are z-scored with the training mean and
//! standard deviation stored in the model: an RBF kernel on raw band powers would be dominated
//! by the few largest features. `gamma = "scale"` is `1/(d · Var(X))` over all entries of the
//! (standardised) training matrix, scikit-learn's default.

use std::fmt;

use linfa::traits::Fit;
use linfa::Dataset;
use ndarray::{Array1, Array2, ArrayView2, Axis};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::calibration::{fit_platt_increasing, platt_probability};
use super::cv::stratified_kfold;
use super::lda::{check_training_set, dot_f32};
use super::Decoder;
use crate::error::{Error, Result};

/// Kernel function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kernel {
    /// `K(x, y) = x·y`.
    Linear,
    /// `K(x, y) = exp(−γ‖x − y‖²)`.
    #[default]
    Rbf,
}

/// RBF width `γ`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Gamma {
    /// `1/(d · Var(X))` from the training data (`"scale"`, scikit-learn's default).
    #[default]
    Scale,
    /// A fixed positive value.
    Value(f64),
}

impl Serialize for Gamma {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Gamma::Scale => s.serialize_str("scale"),
            Gamma::Value(g) => s.serialize_f64(*g),
        }
    }
}

// Hand-written so a bad value is reported with its name, value and the allowed values.
impl<'de> Deserialize<'de> for Gamma {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl V {
            fn number<E: de::Error>(g: f64) -> std::result::Result<Gamma, E> {
                if g.is_finite() && g > 0.0 {
                    Ok(Gamma::Value(g))
                } else {
                    Err(E::custom(format_args!(
                        "decoder.gamma = {g} is not valid: expected \"scale\" or a positive number"
                    )))
                }
            }
        }
        impl Visitor<'_> for V {
            type Value = Gamma;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("decoder.gamma: \"scale\" or a positive number")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<Gamma, E> {
                if v == "scale" {
                    Ok(Gamma::Scale)
                } else {
                    Err(E::custom(format_args!(
                        "decoder.gamma = {v:?} is not valid: expected \"scale\" or a positive number"
                    )))
                }
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> std::result::Result<Gamma, E> {
                V::number(v)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> std::result::Result<Gamma, E> {
                V::number(v as f64)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> std::result::Result<Gamma, E> {
                V::number(v as f64)
            }
        }
        d.deserialize_any(V)
    }
}

fn deserialize_c<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<f64, D::Error> {
    let c = f64::deserialize(d)?;
    check_c(c).map_err(de::Error::custom)?;
    Ok(c)
}

fn check_c(c: f64) -> std::result::Result<(), String> {
    if c.is_finite() && c > 0.0 {
        Ok(())
    } else {
        Err(format!(
            "decoder.c = {c} is not valid: expected a positive number"
        ))
    }
}

/// `[decoder] kind = "svm"` in a pipeline file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SvmConfig {
    /// `"linear"` or `"rbf"` (default).
    pub kernel: Kernel,
    /// Penalty on margin violations (default 1.0); larger fits the training data harder.
    #[serde(deserialize_with = "deserialize_c")]
    pub c: f64,
    /// RBF width: `"scale"` (default) or a positive number. Ignored by the linear kernel.
    pub gamma: Gamma,
    /// z-score features with the training mean/std (default true).
    pub standardize: bool,
    /// `[decoder.online]`: the bounded supervised step (see [`SvmOnlineConfig`]).
    pub online: SvmOnlineConfig,
}

/// `[decoder.online]` for `kind = "svm"`: a bounded online correction of the calibrated SVM.
///
/// The calibrated machines are never changed; each machine `m` gets a linear correction on
/// the standardised features `z`, `f'_m(x) = f_m(x) + Δw_m·z + Δb_m`, learnt from labelled
/// trials by a damped passive-aggressive step on the SVM's own hinge loss (Crammer et al.
/// 2006): a trial with target `y = ±1` and loss `ℓ = max(0, 1 − y f'(x))` contributes
/// `η ℓ y [z, 1] / (‖z‖² + 1)`, a step that would remove the fraction `η` of its loss.
///
/// - `rate` η, a floor: for a class with `n_k` calibration trials and `t` online ones the
///   step is `max(rate, 1/(n_k + t + 1))`, the weight a new trial has in a running average
///   that started at the calibration's count.
/// - `class_balanced` (default true): steps wait until every class has a trial waiting,
///   then the class-averaged step is applied at once, so a run of one label cannot pull the
///   boundary towards that class.
/// - `max_drift` B: after each step the correction is projected back so that `‖Δw‖·√d ≤ B`
///   and `|Δb| ≤ B` (B in margin units: on a standardised window, `‖z‖ ≈ √d`, the
///   correction moves the decision value by at most about B). `rollback` drops it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SvmOnlineConfig {
    /// Floor of the step fraction, [0, 1] (0 with no calibration counts: no step).
    pub rate: f64,
    /// Steps wait for one labelled trial of every class.
    pub class_balanced: bool,
    /// Bound on the correction in margin units, (0, 100].
    pub max_drift: f64,
}

impl Default for SvmOnlineConfig {
    fn default() -> Self {
        SvmOnlineConfig {
            rate: 0.05,
            class_balanced: true,
            max_drift: 1.0,
        }
    }
}

impl SvmOnlineConfig {
    /// Every range into `problems` (keys `decoder.online.…`).
    pub fn check(&self, problems: &mut crate::validate::Problems) {
        problems.closed("decoder.online.rate", self.rate, 0.0, 1.0, "[0, 1]");
        problems.positive(
            "decoder.online.max_drift",
            self.max_drift,
            100.0,
            "(0, 100] margin units",
        );
    }
}

impl Default for SvmConfig {
    fn default() -> Self {
        SvmConfig {
            kernel: Kernel::Rbf,
            c: 1.0,
            gamma: Gamma::Scale,
            standardize: true,
            online: SvmOnlineConfig::default(),
        }
    }
}

/// Folds of the internal cross-validation that produces Platt calibration data.
const PLATT_FOLDS: usize = 5;
/// Fixed seed of that cross-validation: refitting on the same data gives the same model.
const PLATT_SEED: u64 = 0x5EED_C0DE;
/// SMO stopping tolerance on the maximal KKT violation. Tighter than libsvm's 1e-3, so the
/// solution is close to the exact optimum both solvers approximate.
const SMO_TOLERANCE: f64 = 1e-5;
/// Dual coefficients below this are zero up to solver rounding; such examples are not kept as
/// support vectors (the threshold linfa itself uses for `f64`).
const ALPHA_ZERO: f64 = 100.0 * f64::EPSILON;

/// SVM decoder (binary, or one-vs-rest for more classes). Serialisable for model files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Svm {
    config: SvmConfig,
    classes: usize,
    n_features: usize,
    /// Standardisation: `(x − mean) / scale` (mean 0 and scale 1 when disabled).
    mean: Vec<f64>,
    scale: Vec<f64>,
    /// Resolved `γ` of the RBF kernel (0 for linear).
    gamma: f64,
    /// Binary machines: 1 for two classes (positive = class 1), else one per class.
    machines: usize,
    /// Linear kernel: per machine, weights on the *raw* features (standardisation folded in),
    /// `machines × n_features`. Empty for RBF.
    weights: Vec<f64>,
    /// RBF kernel: support vectors of all machines (union), standardised, in `f32` (see the
    /// module doc), `n_support × n_features`. Empty for linear.
    support: Vec<f32>,
    n_support: usize,
    /// RBF kernel: `αᵢyᵢ` per machine and support vector, `machines × n_support`.
    dual_coef: Vec<f64>,
    /// Per machine: the constant added to the decision value (`−ρ`, and for the linear kernel
    /// also the folded-in standardisation offset).
    bias: Vec<f64>,
    /// Per machine: Platt parameters `[A, B]`.
    platt: Vec<[f64; 2]>,
    /// Standardised input of the current call (RBF). Not serialised: sized on fit, or on the
    /// first prediction after loading.
    #[serde(skip)]
    scratch: Vec<f32>,
    /// Calibration trials per class (what the online rate starts from); empty in model files
    /// written before the online step.
    #[serde(default)]
    class_counts: Vec<f64>,
    /// The online correction `[Δw_m (d values), Δb_m]` per machine, `machines × (d + 1)`;
    /// empty until the first step (and after loading a model without one).
    #[serde(default)]
    correction: Vec<f64>,
    /// Waiting steps and counts of the online learner; derived.
    #[serde(skip)]
    online: Option<Box<SvmAdaptive>>,
    /// Decision values of every machine (one-vs-rest online step); sized on first use.
    #[serde(skip)]
    online_values: Vec<f64>,
}

/// Online state of the SVM's correction: per class the summed waiting steps
/// (`machines × (d + 1)` each), how many wait, and how many trials its rate has seen.
#[derive(Debug, Clone, Default)]
struct SvmAdaptive {
    pending: Vec<f64>,
    waiting: Vec<usize>,
    counts: Vec<f64>,
    /// Standardised features of the current trial, `d`.
    z: Vec<f64>,
}

impl PartialEq for SvmAdaptive {
    /// Derived state: two models are equal when their stored fields are.
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Svm {
    /// An unfitted model.
    pub fn new(config: SvmConfig) -> Svm {
        Svm {
            config,
            classes: 0,
            n_features: 0,
            mean: Vec::new(),
            scale: Vec::new(),
            gamma: 0.0,
            machines: 0,
            weights: Vec::new(),
            support: Vec::new(),
            n_support: 0,
            dual_coef: Vec::new(),
            bias: Vec::new(),
            platt: Vec::new(),
            scratch: Vec::new(),
            class_counts: Vec::new(),
            correction: Vec::new(),
            online: None,
            online_values: Vec::new(),
        }
    }

    pub fn config(&self) -> &SvmConfig {
        &self.config
    }

    /// Feature dimension the model was fitted on (0 before fitting).
    pub fn n_features(&self) -> usize {
        self.n_features
    }

    /// Number of distinct support vectors kept (RBF; 0 for the linear kernel, which keeps
    /// weight vectors instead).
    pub fn n_support(&self) -> usize {
        self.n_support
    }

    /// The `γ` used by the RBF kernel (resolved from `"scale"` at fit time).
    pub fn gamma(&self) -> f64 {
        self.gamma
    }

    /// Number of binary machines: 1 for two classes, `classes()` for one-vs-rest.
    pub fn machines(&self) -> usize {
        self.machines
    }

    /// Uncalibrated decision values `f(x)` into `out` (length [`Svm::machines`]): for two
    /// classes positive means class 1, as scikit-learn's `decision_function`; for one-vs-rest
    /// `out[k]` is class `k` against the rest.
    pub fn decision_function(&mut self, features: &[f32], out: &mut [f64]) {
        assert_eq!(
            features.len(),
            self.n_features,
            "SVM: feature vector has {} values, the model was fitted on {}",
            features.len(),
            self.n_features
        );
        assert_eq!(
            out.len(),
            self.machines,
            "SVM: output has {} slots for {} machines",
            out.len(),
            self.machines
        );
        let d = self.n_features;
        match self.config.kernel {
            Kernel::Linear => {
                for (m, o) in out.iter_mut().enumerate() {
                    *o = self.bias[m] + dot_f32(&self.weights[m * d..(m + 1) * d], features);
                }
            }
            Kernel::Rbf => {
                if self.scratch.len() != d {
                    self.scratch.resize(d, 0.0);
                }
                for (((z, &x), m), s) in self
                    .scratch
                    .iter_mut()
                    .zip(features)
                    .zip(&self.mean)
                    .zip(&self.scale)
                {
                    *z = ((f64::from(x) - m) / s) as f32;
                }
                out.copy_from_slice(&self.bias);
                let rbf = Rbf {
                    support: &self.support,
                    dual_coef: &self.dual_coef,
                    gamma: self.gamma,
                };
                rbf.accumulate(&self.scratch, out);
            }
        }
        if self.correction.len() == self.machines * (d + 1) {
            for (m, o) in out.iter_mut().enumerate() {
                let c = &self.correction[m * (d + 1)..(m + 1) * (d + 1)];
                let mut s = c[d];
                for (((w, &x), mean), scale) in
                    c[..d].iter().zip(features).zip(&self.mean).zip(&self.scale)
                {
                    s += w * (f64::from(x) - mean) / scale;
                }
                *o += s;
            }
        }
    }

    /// The online correction's size in margin units: per machine `max(‖Δw‖·√d, |Δb|)`, the
    /// largest over machines (0 before any step).
    pub fn drift(&self) -> f64 {
        let d = self.n_features;
        self.correction
            .chunks_exact(d + 1)
            .map(|c| {
                let w = c[..d].iter().map(|v| v * v).sum::<f64>().sqrt() * (d as f64).sqrt();
                w.max(c[d].abs())
            })
            .fold(0.0, f64::max)
    }
}

impl Svm {
    /// Decision value of machine `m` alone (one-vs-rest), correction included.
    fn machine_value(&mut self, features: &[f32], m: usize) -> f64 {
        let mut all = std::mem::take(&mut self.online_values);
        all.resize(self.machines, 0.0);
        self.decision_function(features, &mut all);
        let v = all[m];
        self.online_values = all;
        v
    }

    /// Projects each machine's correction back inside the drift bound.
    fn bound_correction(&mut self, bound: f64) {
        let d = self.n_features;
        let root_d = (d as f64).sqrt();
        for c in self.correction.chunks_exact_mut(d + 1) {
            let norm = c[..d].iter().map(|v| v * v).sum::<f64>().sqrt() * root_d;
            if norm > bound {
                let shrink = bound / norm;
                c[..d].iter_mut().for_each(|v| *v *= shrink);
            }
            c[d] = c[d].clamp(-bound, bound);
        }
    }
}

impl Svm {
    /// Checks a loaded model: shapes against each other and against `features` (the feature
    /// stage's dimension), finite and sane values. Field names are as in the model file.
    pub fn validate(&self, features: usize) -> std::result::Result<(), String> {
        use super::lda::{check_len, check_values};
        let (k, d, m) = (self.classes, self.n_features, self.machines);
        if k < 2 {
            return Err(format!("classes is {k}, expected at least 2"));
        }
        if d != features {
            return Err(format!(
                "n_features is {d}, but the feature stage makes {features} feature(s)"
            ));
        }
        let machines = if k == 2 { 1 } else { k };
        if m != machines {
            return Err(format!(
                "machines is {m}, expected {machines} for {k} classes"
            ));
        }
        check_len("mean", self.mean.len(), Some(d), "one per feature")?;
        check_len("scale", self.scale.len(), Some(d), "one per feature")?;
        check_len("bias", self.bias.len(), Some(m), "one per machine")?;
        check_len("platt", self.platt.len(), Some(m), "one per machine")?;
        check_values("mean", &self.mean)?;
        check_values("scale", &self.scale)?;
        check_values("bias", &self.bias)?;
        check_values("platt", self.platt.iter().flatten())?;
        check_values("gamma", [&self.gamma])?;
        if !self.class_counts.is_empty() {
            check_len(
                "class_counts",
                self.class_counts.len(),
                Some(k),
                "one per class",
            )?;
            check_values("class_counts", &self.class_counts)?;
            if let Some(i) = self.class_counts.iter().position(|c| *c < 0.0) {
                return Err(format!("class_counts[{i}] is negative"));
            }
        }
        if !self.correction.is_empty() {
            check_len(
                "correction",
                self.correction.len(),
                d.checked_add(1).and_then(|e| e.checked_mul(m)),
                &format!("{m} machines x ({d} features + 1)"),
            )?;
            check_values("correction", &self.correction)?;
        }
        if let Some(i) = self.scale.iter().position(|s| *s <= 0.0) {
            return Err(format!("scale[{i}] is {}, expected > 0", self.scale[i]));
        }
        match self.config.kernel {
            Kernel::Linear => {
                let shape = format!("{m} machines x {d} features");
                check_len("weights", self.weights.len(), m.checked_mul(d), &shape)?;
                check_values("weights", &self.weights)?;
                check_len("support", self.support.len(), Some(0), "linear kernel")?;
                check_len("dual_coef", self.dual_coef.len(), Some(0), "linear kernel")?;
            }
            Kernel::Rbf => {
                let n = self.n_support;
                if self.gamma <= 0.0 {
                    return Err(format!(
                        "gamma is {}, expected > 0 for the RBF kernel",
                        self.gamma
                    ));
                }
                let shape = format!("n_support {n} x {d} features");
                check_len("support", self.support.len(), n.checked_mul(d), &shape)?;
                let shape = format!("{m} machines x n_support {n}");
                check_len("dual_coef", self.dual_coef.len(), m.checked_mul(n), &shape)?;
                check_values("dual_coef", &self.dual_coef)?;
                if let Some(i) = self.support.iter().position(|v| {
                    !(v.is_finite() && f64::from(v.abs()) <= super::lda::MAX_PARAMETER)
                }) {
                    return Err(format!(
                        "support[{i}] is not a finite number of magnitude at most {:e}",
                        super::lda::MAX_PARAMETER
                    ));
                }
                check_len("weights", self.weights.len(), Some(0), "RBF kernel")?;
            }
        }
        Ok(())
    }
}

impl Decoder for Svm {
    fn classes(&self) -> usize {
        self.classes
    }

    fn fit(&mut self, features: ArrayView2<'_, f32>, labels: &[usize]) -> Result<()> {
        check_c(self.config.c).map_err(|e| Error::config("decoder.c", e))?;
        if let Gamma::Value(g) = self.config.gamma {
            if !(g.is_finite() && g > 0.0) {
                return Err(Error::config(
                    "decoder.gamma",
                    format!("{g} is not valid: expected \"scale\" or a positive number"),
                ));
            }
        }
        let classes = check_training_set("SVM", features, labels)?;
        let (n, d) = features.dim();
        let mut x = features.mapv(f64::from);

        let (mean, scale) = if self.config.standardize {
            standardisation(&x)
        } else {
            (vec![0.0; d], vec![1.0; d])
        };
        for mut row in x.rows_mut() {
            for ((v, m), s) in row.iter_mut().zip(&mean).zip(&scale) {
                *v = (*v - m) / s;
            }
        }

        let gamma = match (self.config.kernel, self.config.gamma) {
            (Kernel::Linear, _) => 0.0,
            (Kernel::Rbf, Gamma::Value(g)) => g,
            (Kernel::Rbf, Gamma::Scale) => {
                let mean_all = x.mean().expect("non-empty");
                let var = x.iter().map(|v| (v - mean_all).powi(2)).sum::<f64>() / (n * d) as f64;
                // scikit-learn's fallback for constant data: any γ gives the same kernel.
                if var > 0.0 {
                    1.0 / (d as f64 * var)
                } else {
                    1.0
                }
            }
        };
        let trainer = Trainer {
            kernel: self.config.kernel,
            c: self.config.c,
            gamma,
        };

        let machines = if classes == 2 { 1 } else { classes };
        // Dual coefficients over all training rows, per machine.
        let mut alphas: Vec<Vec<f64>> = Vec::with_capacity(machines);
        let mut rhos = Vec::with_capacity(machines);
        let mut platt = Vec::with_capacity(machines);
        for m in 0..machines {
            let positive_class = if classes == 2 { 1 } else { m };
            let targets: Vec<bool> = labels.iter().map(|&l| l == positive_class).collect();
            let (alpha, rho) = trainer.train(&x, &targets)?;
            let cv_values = trainer.out_of_fold_decisions(&x, &targets)?;
            let values = match cv_values {
                Some(v) => v,
                None => (0..n)
                    .map(|i| trainer.decision(&x, &alpha, rho, x.row(i).as_slice().unwrap()))
                    .collect(),
            };
            platt.push(sign_correct_platt(&values, &targets, m));
            alphas.push(alpha);
            rhos.push(rho);
        }

        let mut model = Svm::new(self.config.clone());
        model.classes = classes;
        model.n_features = d;
        model.gamma = gamma;
        model.machines = machines;
        model.platt = platt;
        match self.config.kernel {
            Kernel::Linear => {
                // w = Σ αᵢyᵢ zᵢ on standardised z = (x − mean)/scale; folding the
                // standardisation in gives raw weights w/scale and offset −Σ w·mean/scale.
                for (alpha, rho) in alphas.iter().zip(&rhos) {
                    let w = Array1::from(alpha.clone()).dot(&x);
                    let mut offset = -rho;
                    for ((wj, m), sc) in w.iter().zip(&mean).zip(&scale) {
                        let raw = wj / sc;
                        model.weights.push(raw);
                        offset -= raw * m;
                    }
                    model.bias.push(offset);
                }
            }
            Kernel::Rbf => {
                let keep: Vec<usize> = (0..n)
                    .filter(|&i| alphas.iter().any(|a| a[i].abs() > ALPHA_ZERO))
                    .collect();
                model.n_support = keep.len();
                for &i in &keep {
                    model.support.extend(x.row(i).iter().map(|&v| v as f32));
                }
                for alpha in &alphas {
                    model.dual_coef.extend(keep.iter().map(|&i| alpha[i]));
                }
                model.bias = rhos.iter().map(|r| -r).collect();
                model.scratch = vec![0.0; d];
            }
        }
        model.mean = mean;
        model.scale = scale;
        model.class_counts = (0..classes)
            .map(|k| labels.iter().filter(|&&l| l == k).count() as f64)
            .collect();
        *self = model;
        Ok(())
    }

    /// The bounded online step (see [`SvmOnlineConfig`]). `true` when the trial was taken
    /// (the correction changed, or the trial waits for the other classes); `false` for an
    /// unfitted model, a wrong length, non-finite features, an out-of-range label or a zero
    /// rate without calibration counts. No allocation after the first step.
    fn update(&mut self, features: &[f32], label: usize) -> bool {
        let (d, machines, classes) = (self.n_features, self.machines, self.classes);
        let online = self.config.online.clone();
        let counts_known = self.class_counts.len() == classes;
        if d == 0
            || machines == 0
            || features.len() != d
            || label >= classes
            || !(0.0..=1.0).contains(&online.rate)
            || !(online.max_drift > 0.0 && online.max_drift.is_finite())
            || (online.rate == 0.0 && !counts_known)
            || features.iter().any(|v| !v.is_finite())
        {
            return false;
        }
        let width = machines * (d + 1);
        if self.correction.len() != width {
            self.correction = vec![0.0; width];
        }
        if self.online.is_none() {
            self.online = Some(Box::new(SvmAdaptive {
                pending: vec![0.0; classes * width],
                waiting: vec![0; classes],
                counts: if counts_known {
                    self.class_counts.clone()
                } else {
                    // Unknown calibration size: the rate is the floor from the start.
                    vec![f64::INFINITY; classes]
                },
                z: vec![0.0; d],
            }));
        }
        // The loss is taken at the current model, before this trial's step.
        let mut values = [0.0f64; 1];
        let mut state = self.online.take().expect("built above");
        for (((z, &x), m), s) in state
            .z
            .iter_mut()
            .zip(features)
            .zip(&self.mean)
            .zip(&self.scale)
        {
            *z = (f64::from(x) - m) / s;
        }
        let norm2 = state.z.iter().map(|v| v * v).sum::<f64>() + 1.0;
        for m in 0..machines {
            let f = if machines == 1 {
                self.decision_function(features, &mut values);
                values[0]
            } else {
                self.machine_value(features, m)
            };
            let y = if (machines == 1 && label == 1) || (machines > 1 && label == m) {
                1.0
            } else {
                -1.0
            };
            let loss = (1.0 - y * f).max(0.0);
            if loss > 0.0 {
                let step = loss * y / norm2;
                let p = &mut state.pending[label * width + m * (d + 1)..][..d + 1];
                for (pi, zi) in p[..d].iter_mut().zip(&state.z) {
                    *pi += step * zi;
                }
                p[d] += step;
            }
        }
        state.waiting[label] += 1;
        if !online.class_balanced || state.waiting.iter().all(|&w| w > 0) {
            for k in 0..classes {
                let waiting = state.waiting[k];
                if waiting == 0 {
                    continue;
                }
                let w = waiting as f64;
                let eta = online.rate.max(1.0 / (state.counts[k] + 1.0));
                let pending = &mut state.pending[k * width..(k + 1) * width];
                for (c, p) in self.correction.iter_mut().zip(pending.iter_mut()) {
                    // The class's average step, at its rate.
                    *c += eta * *p / w;
                    *p = 0.0;
                }
                state.counts[k] += w;
                state.waiting[k] = 0;
            }
            self.bound_correction(online.max_drift);
        }
        self.online = Some(state);
        true
    }

    fn predict_proba(&mut self, features: &[f32], probabilities: &mut [f64]) {
        assert_eq!(
            probabilities.len(),
            self.classes,
            "SVM: probabilities has {} slots for {} classes",
            probabilities.len(),
            self.classes
        );
        if self.machines == 1 {
            self.decision_function(features, &mut probabilities[..1]);
            let p1 = platt_probability(probabilities[0], self.platt[0]);
            probabilities[0] = 1.0 - p1;
            probabilities[1] = p1;
        } else {
            self.decision_function(features, probabilities);
            let mut sum = 0.0;
            for (p, ab) in probabilities.iter_mut().zip(&self.platt) {
                *p = platt_probability(*p, *ab);
                sum += *p;
            }
            if sum > 0.0 {
                probabilities.iter_mut().for_each(|p| *p /= sum);
            } else {
                // Every machine says "not mine" with probability 1 to double precision:
                // nothing to choose between.
                let u = 1.0 / self.classes as f64;
                probabilities.iter_mut().for_each(|p| *p = u);
            }
        }
    }
}

/// Platt parameters `[A, B]` for machine `m`, forced increasing in the decision value (see
/// the module doc), with a warning when the unconstrained fit was refused.
fn sign_correct_platt(values: &[f64], targets: &[bool], m: usize) -> [f64; 2] {
    let fit = fit_platt_increasing(values, targets);
    if let Some(a) = fit.refused_a {
        tracing::warn!(
            "SVM machine {m}: Platt fit on {} out-of-fold decision values has A = {a:.4} \
             (probability decreasing in the decision value: it would invert the ranking); \
             refused, using the sign-correct fit A = {:.4}, B = {:.4}",
            values.len(),
            fit.a,
            fit.b
        );
    }
    [fit.a, fit.b]
}

/// Training-set mean and standard deviation per feature (population std, as scikit-learn's
/// StandardScaler); constant features get scale 1 so they stay 0 instead of dividing by 0.
fn standardisation(x: &Array2<f64>) -> (Vec<f64>, Vec<f64>) {
    let n = x.nrows() as f64;
    let mean = x.mean_axis(Axis(0)).expect("non-empty").to_vec();
    let scale = x
        .columns()
        .into_iter()
        .zip(&mean)
        .map(|(c, m)| {
            let var = c.iter().map(|v| (v - m).powi(2)).sum::<f64>() / n;
            let noise = n * f64::EPSILON * var + (n * m * f64::EPSILON).powi(2);
            if var <= noise {
                1.0
            } else {
                var.sqrt()
            }
        })
        .collect();
    (mean, scale)
}

/// The RBF part of the decision values: `out[m] += Σᵢ dual_coef[m][i] · exp(−γ‖svᵢ − z‖²)`.
struct Rbf<'a> {
    support: &'a [f32],
    dual_coef: &'a [f64],
    gamma: f64,
}

impl Rbf<'_> {
    fn accumulate(&self, z: &[f32], out: &mut [f64]) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above.
            return unsafe { self.accumulate_avx2(z, out) };
        }
        self.accumulate_portable(z, out)
    }

    /// The same code as `accumulate_portable`, compiled with AVX2 enabled (8 `f32` lanes per
    /// instruction instead of SSE2's 4); the default x86-64 target cannot assume AVX2.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn accumulate_avx2(&self, z: &[f32], out: &mut [f64]) {
        self.accumulate_portable(z, out)
    }

    #[inline(always)]
    fn accumulate_portable(&self, z: &[f32], out: &mut [f64]) {
        let ns = self.support.len() / z.len();
        for (i, sv) in self.support.chunks_exact(z.len()).enumerate() {
            let k = (-self.gamma * squared_distance_f32(sv, z)).exp();
            for (m, o) in out.iter_mut().enumerate() {
                *o += self.dual_coef[m * ns + i] * k;
            }
        }
    }
}

/// `‖a − b‖²` in 16 independent `f32` lanes (so the loop vectorises and each lane sums only
/// `d/16` terms), combined in `f64`.
#[inline(always)]
fn squared_distance_f32(a: &[f32], b: &[f32]) -> f64 {
    let mut acc = [0.0f32; 16];
    let (ac, bc) = (a.chunks_exact(16), b.chunks_exact(16));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        for l in 0..16 {
            let t = x[l] - y[l];
            acc[l] += t * t;
        }
    }
    let mut total: f64 = acc.iter().map(|&v| f64::from(v)).sum();
    for (x, y) in ar.iter().zip(br) {
        let t = f64::from(*x) - f64::from(*y);
        total += t * t;
    }
    total
}

/// `‖a − b‖²` with four independent accumulators so the loop vectorises.
fn squared_distance(a: &[f64], b: &[f64]) -> f64 {
    let mut acc = [0.0f64; 4];
    let (ac, bc) = (a.chunks_exact(4), b.chunks_exact(4));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        for l in 0..4 {
            let t = x[l] - y[l];
            acc[l] += t * t;
        }
    }
    let mut tail = 0.0;
    for (x, y) in ar.iter().zip(br) {
        tail += (x - y) * (x - y);
    }
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}

/// One binary C-SVC training configuration (kernel, C and resolved γ).
struct Trainer {
    kernel: Kernel,
    c: f64,
    gamma: f64,
}

impl Trainer {
    /// Trains on rows of `x` with boolean targets; returns `αᵢyᵢ` per row and `ρ`.
    fn train(&self, x: &Array2<f64>, targets: &[bool]) -> Result<(Vec<f64>, f64)> {
        let params = linfa_svm::Svm::<f64, bool>::params()
            .pos_neg_weights(self.c, self.c)
            .eps(SMO_TOLERANCE);
        let params = match self.kernel {
            Kernel::Linear => params.linear_kernel(),
            // linfa's Gaussian kernel is exp(−‖x − y‖²/ε), so ε = 1/γ.
            Kernel::Rbf => params.gaussian_kernel(1.0 / self.gamma),
        };
        let dataset = Dataset::new(x.clone(), Array1::from(targets.to_vec()));
        let model = params
            .fit(&dataset)
            .map_err(|e| Error::Other(format!("SVM fit: linfa-svm failed: {e}")))?;
        Ok((model.alpha, model.rho))
    }

    /// `Σ αᵢyᵢ K(xᵢ, z) − ρ` over the training rows of `x` (used during fitting only).
    fn decision(&self, x: &Array2<f64>, alpha: &[f64], rho: f64, z: &[f64]) -> f64 {
        let mut f = -rho;
        for (row, &a) in x.rows().into_iter().zip(alpha) {
            if a == 0.0 {
                continue;
            }
            let row = row.as_slice().expect("standard layout");
            let k = match self.kernel {
                Kernel::Linear => row.iter().zip(z).map(|(p, q)| p * q).sum(),
                Kernel::Rbf => (-self.gamma * squared_distance(row, z)).exp(),
            };
            f += a * k;
        }
        f
    }

    /// Decision values of every row from SVMs that did not see it (stratified k-fold), or
    /// `None` when a class has fewer than two examples and no such split exists.
    fn out_of_fold_decisions(&self, x: &Array2<f64>, targets: &[bool]) -> Result<Option<Vec<f64>>> {
        let labels: Vec<usize> = targets.iter().map(|&t| usize::from(t)).collect();
        let positives = labels.iter().sum::<usize>();
        let smallest = positives.min(labels.len() - positives);
        let k = PLATT_FOLDS.min(smallest);
        if k < 2 {
            return Ok(None);
        }
        let mut values = vec![0.0; labels.len()];
        for fold in stratified_kfold(&labels, k, PLATT_SEED)? {
            let xt = x.select(Axis(0), &fold.train);
            let tt: Vec<bool> = fold.train.iter().map(|&i| targets[i]).collect();
            let (alpha, rho) = self.train(&xt, &tt)?;
            for &i in &fold.test {
                values[i] = self.decision(&xt, &alpha, rho, x.row(i).as_slice().unwrap());
            }
        }
        Ok(Some(values))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_parses_and_rejects() {
        let c: SvmConfig = toml::from_str("").unwrap();
        assert_eq!(c, SvmConfig::default());
        let c: SvmConfig =
            toml::from_str("kernel = \"linear\"\nc = 10\ngamma = 0.5\nstandardize = false")
                .unwrap();
        assert_eq!(c.kernel, Kernel::Linear);
        assert_eq!(c.c, 10.0);
        assert_eq!(c.gamma, Gamma::Value(0.5));
        assert!(!c.standardize);
        for (bad, name) in [
            ("c = -1.0", "decoder.c"),
            ("gamma = 0", "decoder.gamma"),
            ("gamma = \"auto\"", "decoder.gamma"),
        ] {
            let e = toml::from_str::<SvmConfig>(bad).unwrap_err().to_string();
            assert!(e.contains(name), "{bad}: {e}");
        }
        assert!(toml::from_str::<SvmConfig>("kernel = \"poly\"").is_err());
        assert!(toml::from_str::<SvmConfig>("cost = 1").is_err());
    }
}
