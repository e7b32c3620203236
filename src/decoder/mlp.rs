//! The plastic multi-layer perceptron: a small neural net that keeps adapting while it runs.
//!
//! # What it is
//!
//! A fully connected net `input → hidden (1–2 layers, tanh or ReLU) → softmax over the classes`,
//! hand-written on flat `Vec<f64>` parameters. No ML framework: one online step on a 40→16→3 net
//! costs about a microsecond by hand and 45–210 µs through a framework, and the hot path must not
//! allocate.
//!
//! # Calibration ([`Decoder::fit`])
//!
//! 1. Each feature is standardised with the calibration mean and variance. These statistics seed
//!    the running normaliser used online, so calibration and online inputs share one scale.
//! 2. Weights are drawn from a ChaCha RNG seeded by [`MlpConfig::seed`] (Glorot-uniform for tanh
//!    layers and the output layer, He-normal for ReLU layers; biases zero) and the mini-batch
//!    order is shuffled by the same RNG, so a fit is bit-for-bit deterministic per seed.
//! 3. Mini-batch Adam, with a cosine decay of its step size to zero over the run, minimises the
//!    mean softmax cross-entropy plus `weight_decay / 2 · ‖W‖²` (biases are not decayed). The
//!    default `weight_decay = 0.1` was the best of 1e-3…3 on synthetic 20-, 128- and 512-input
//!    problems with 300 training rows (≥ 1 collapses the net to chance). Calibration sets are small (≈45 trials, a few hundred windows)
//!    against 128–2080 inputs, so the L2 term and a narrow hidden layer are the regularisation;
//!    dropout is not implemented (it would make the online step stochastic). Known limit: with
//!    300 rows and 512+ inputs of which few are informative, the net still overfits (≈0.87
//!    held-out accuracy where a shrinkage-linear model reaches ≈0.95); for 2080-d tangent
//!    vectors prefer fewer hidden units or a feature selection stage upstream.
//!
//! # Online adaptation
//!
//! Two separate mechanisms, because EEG changes in two ways across a session:
//!
//! - **Unsupervised: [`Decoder::observe`]** follows slow drift of the feature distribution
//!   (electrode impedance, fatigue, changing arousal shift and rescale band power). It updates a
//!   running mean and variance per feature with exponential forgetting
//!   ([`OnlineConfig::normalization_forgetting`], e.g. 0.999 per window ≈ a 1000-window memory).
//!   It never moves weights: no label, no gradient.
//! - **Supervised: [`Decoder::update`]** is one plain-SGD step of backpropagation on one
//!   labelled example (a cued trial or user feedback). Its learning rate follows recent error:
//!   the *recent error* is an exponential moving average (horizon
//!   [`OnlineConfig::error_memory`] updates) of `1 − p(true class)` measured *before* the step,
//!   and the rate is `clamp(base · 2 · recent_error / chance_error, min_rate, max_rate)` where
//!   `chance_error = 1 − 1/classes`. So the rate equals `base` when the model errs half as much
//!   as chance, rises up to twice `base` at chance level and beyond when it is confidently wrong
//!   (more plasticity while the user or the signal has changed), and falls towards `min_rate`
//!   while predictions are right (consolidation: stop chasing noise once it works). `1 − p` is
//!   used rather than the cross-entropy because it is bounded in `[0, 1]`: one confidently wrong
//!   example cannot throw the rate to its ceiling for the whole memory horizon.
//!
//!   Plain SGD (no momentum, no Adam state online) keeps each step's effect exactly bounded
//!   and attributable to its example, and leaves no optimiser state to store in a model file.
//!
//! # Bounds, and why each exists
//!
//! Online learning on a live user means learning from whatever arrives: mislabelled trials
//! (the user did not do what the cue said), artifact windows (blinks, jaw clenches, a loose
//! electrode reading 1e6 µV), dropped samples turned into NaN. Every bound below limits what a
//! single bad input can do:
//!
//! - **Non-finite input is refused.** `update` and `observe` ignore a window containing NaN or
//!   ±∞ and return without any state change; `predict_proba` replaces a non-finite standardised
//!   value by 0 (the running mean: "no information") so the output stays a distribution.
//! - **Outlier clipping** ([`OnlineConfig::outlier_z`]): standardised values are clipped to
//!   `±outlier_z` everywhere (fit, predict, update, observe), so a single wild channel has a
//!   bounded effect on the hidden layer.
//! - **Outlier windows are skipped** ([`OnlineConfig::max_outlier_fraction`]): a window with more
//!   than that fraction of features beyond `outlier_z` is an artifact, not a brain state;
//!   `update` refuses it. `observe` skips it too, unless such windows keep coming for more than
//!   [`OnlineConfig::outlier_patience`] consecutive windows: then they are a new regime (a gain
//!   change), and the normaliser follows it, still through clipped values, so it moves by at
//!   most `(1 − forgetting) · outlier_z` standard deviations per window.
//! - **Gradient clipping** ([`OnlineConfig::max_gradient_norm`]): caps the gradient norm of one
//!   example, so a confidently wrong label gives a large but finite gradient.
//! - **Rate cap** (`min_rate ≤ rate ≤ max_rate`): the adaptive rate can never run away.
//! - **Step cap** ([`OnlineConfig::max_update_norm`]): caps `‖Δw‖` per step whatever the rate and
//!   gradient, so `n` steps move the weights by at most `n · max_update_norm` (the triangle
//!   inequality) — a run of 100 wrong labels is bounded before anything else is considered.
//! - **Variance floor**: the running variance cannot fall below 1e-4 of the calibration variance,
//!   so a channel that goes flat (disconnected electrode) does not turn every tiny change into a
//!   huge z-score.
//!
//! # Hot path
//!
//! `predict_proba` standardises into a preallocated buffer and runs the forward pass in buffers
//! kept in the struct (`#[serde(skip)]`, rebuilt on first use after a fit or a load); it does not
//! allocate. Weights are stored input-major (`W[i][o]`), so the forward pass is an `axpy` over the
//! hidden units per input, which the compiler vectorises without reordering any sum.
//!
//! # Model files
//!
//! [`PlasticMlp`] serialises its configuration, weights, normaliser state, recent error, rate and
//! [`PlasticMlp::version`]; loading checks that the shapes agree and every number is finite, and
//! a loaded model predicts identically to the saved one.

use ndarray::ArrayView2;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal, Uniform};
use serde::{Deserialize, Serialize};

use super::Decoder;
use crate::error::{Error, Result};

/// Hidden-unit nonlinearity.
///
/// The default is `tanh`: its output is bounded, so an input that slips past the outlier clip
/// saturates units instead of inflating the logits, and its smooth gradient suits the small,
/// noisy calibration sets of BCI work. ReLU is available for larger nets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    #[default]
    Tanh,
    Relu,
}

impl Activation {
    fn apply(self, values: &mut [f64]) {
        match self {
            Activation::Tanh => values.iter_mut().for_each(|v| *v = v.tanh()),
            Activation::Relu => values.iter_mut().for_each(|v| *v = v.max(0.0)),
        }
    }

    /// Derivative expressed through the unit's output `a` (what the backward pass has kept).
    fn derivative_from_output(self, a: f64) -> f64 {
        match self {
            Activation::Tanh => 1.0 - a * a,
            Activation::Relu => {
                if a > 0.0 {
                    1.0
                } else {
                    0.0
                }
            }
        }
    }
}

/// `[decoder]` with `kind = "mlp"` in a pipeline file. Every field has a default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MlpConfig {
    /// Hidden layer widths: one or two layers, each 1..=1024 units.
    pub hidden: Vec<usize>,
    /// Hidden nonlinearity.
    pub activation: Activation,
    /// Passes over the calibration set (1..=100000).
    pub epochs: usize,
    /// Mini-batch size for calibration (1..=100000; larger than the set means full batch).
    pub batch_size: usize,
    /// Adam step size for calibration, (0, 1].
    pub learning_rate: f64,
    /// L2 coefficient on weights (not biases) during calibration, [0, 10]. Not applied online:
    /// thousands of single-example steps would shrink the calibrated weights towards zero.
    pub weight_decay: f64,
    /// Seed of the ChaCha RNG for initialisation and batch order.
    pub seed: u64,
    /// Online adaptation.
    pub online: OnlineConfig,
}

impl Default for MlpConfig {
    fn default() -> Self {
        MlpConfig {
            hidden: vec![32],
            activation: Activation::Tanh,
            epochs: 200,
            batch_size: 32,
            learning_rate: 3e-3,
            weight_decay: 0.1,
            seed: 0,
            online: OnlineConfig::default(),
        }
    }
}

/// `[decoder.online]`: how the model keeps learning while it runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OnlineConfig {
    /// Base SGD rate: the rate when the recent error is half the chance-level error. (0, 1].
    pub learning_rate: f64,
    /// Floor of the adaptive rate, [0, max_rate].
    pub min_rate: f64,
    /// Ceiling of the adaptive rate, (0, 1].
    pub max_rate: f64,
    /// Horizon, in labelled updates, of the moving average of recent error. [1, 1e6].
    pub error_memory: f64,
    /// Forgetting factor of the running mean and variance per observed window, [0.5, 1]
    /// (1 freezes the normaliser at its calibration values).
    pub normalization_forgetting: f64,
    /// Clip on the gradient norm of one online example, > 0.
    pub max_gradient_norm: f64,
    /// Cap on the weight change `‖Δw‖` of one online step, > 0.
    pub max_update_norm: f64,
    /// Standardised values beyond ±this are clipped; [1, 1000].
    pub outlier_z: f64,
    /// A window with more than this fraction of clipped features is an artifact: not learnt
    /// from. [0, 1].
    pub max_outlier_fraction: f64,
    /// After this many consecutive outlier windows, `observe` accepts them as a new regime.
    pub outlier_patience: u32,
    /// Labelled examples kept per class for class-balanced replay, 0..=256: each supervised
    /// step descends the mean of the per-class mean gradients over the newest this-many
    /// examples of every class, so a run of one label cannot pull the net towards that label.
    /// 0: the step uses the new example alone (the pre-replay behaviour).
    pub replay_per_class: usize,
    /// Experience horizon τ, in supervised steps, [1, 1e6]: the rate is multiplied by
    /// `τ / (τ + steps taken)`, so it falls as the net has seen more labels.
    pub experience_horizon: f64,
    /// Largest distance `‖θ − θ_calibrated‖` the online steps may take the weights from the
    /// calibrated ones, > 0; a step beyond is projected back onto that ball.
    pub max_drift: f64,
}

impl Default for OnlineConfig {
    fn default() -> Self {
        OnlineConfig {
            learning_rate: 0.01,
            min_rate: 1e-3,
            max_rate: 0.05,
            error_memory: 20.0,
            normalization_forgetting: 0.999,
            max_gradient_norm: 5.0,
            max_update_norm: 0.05,
            outlier_z: 6.0,
            max_outlier_fraction: 0.25,
            outlier_patience: 50,
            replay_per_class: 8,
            experience_horizon: 50.0,
            max_drift: 1.0,
        }
    }
}

/// `Err` naming `key`, its value and what is allowed.
fn out_of_range(key: &str, value: impl std::fmt::Display, allowed: &str) -> Error {
    Error::config(key, format!("{value} is out of range: allowed {allowed}"))
}

/// Checks `lo <= value <= hi` (which also rejects NaN).
fn check_closed(key: &str, value: f64, lo: f64, hi: f64, allowed: &str) -> Result<()> {
    if value >= lo && value <= hi {
        Ok(())
    } else {
        Err(out_of_range(key, value, allowed))
    }
}

/// Checks `0 < value <= hi` (which also rejects NaN).
fn check_positive(key: &str, value: f64, hi: f64, allowed: &str) -> Result<()> {
    if value > 0.0 && value <= hi {
        Ok(())
    } else {
        Err(out_of_range(key, value, allowed))
    }
}

impl MlpConfig {
    /// Checks every field; the error names the key path (`decoder.online.max_rate`), the value
    /// and the allowed range.
    pub fn validate(&self) -> Result<()> {
        if self.hidden.is_empty() || self.hidden.len() > 2 {
            return Err(Error::config(
                "decoder.hidden",
                format!(
                    "{:?} has {} layers: allowed 1 or 2 hidden layers",
                    self.hidden,
                    self.hidden.len()
                ),
            ));
        }
        for (i, &width) in self.hidden.iter().enumerate() {
            if !(1..=1024).contains(&width) {
                return Err(out_of_range(
                    &format!("decoder.hidden[{i}]"),
                    width,
                    "1..=1024 units",
                ));
            }
        }
        if !(1..=100_000).contains(&self.epochs) {
            return Err(out_of_range("decoder.epochs", self.epochs, "1..=100000"));
        }
        if !(1..=100_000).contains(&self.batch_size) {
            return Err(out_of_range(
                "decoder.batch_size",
                self.batch_size,
                "1..=100000",
            ));
        }
        check_positive("decoder.learning_rate", self.learning_rate, 1.0, "(0, 1]")?;
        check_closed(
            "decoder.weight_decay",
            self.weight_decay,
            0.0,
            10.0,
            "[0, 10]",
        )?;
        self.online.validate()
    }
}

impl OnlineConfig {
    fn validate(&self) -> Result<()> {
        check_positive(
            "decoder.online.learning_rate",
            self.learning_rate,
            1.0,
            "(0, 1]",
        )?;
        check_positive("decoder.online.max_rate", self.max_rate, 1.0, "(0, 1]")?;
        check_closed(
            "decoder.online.min_rate",
            self.min_rate,
            0.0,
            self.max_rate,
            &format!("[0, decoder.online.max_rate = {}]", self.max_rate),
        )?;
        check_closed(
            "decoder.online.error_memory",
            self.error_memory,
            1.0,
            1e6,
            "[1, 1e6] updates",
        )?;
        check_closed(
            "decoder.online.normalization_forgetting",
            self.normalization_forgetting,
            0.5,
            1.0,
            "[0.5, 1]",
        )?;
        check_positive(
            "decoder.online.max_gradient_norm",
            self.max_gradient_norm,
            f64::MAX,
            "(0, ∞)",
        )?;
        check_positive(
            "decoder.online.max_update_norm",
            self.max_update_norm,
            f64::MAX,
            "(0, ∞)",
        )?;
        check_closed(
            "decoder.online.outlier_z",
            self.outlier_z,
            1.0,
            1000.0,
            "[1, 1000]",
        )?;
        check_closed(
            "decoder.online.max_outlier_fraction",
            self.max_outlier_fraction,
            0.0,
            1.0,
            "[0, 1]",
        )?;
        if self.replay_per_class > MAX_REPLAY_PER_CLASS {
            return Err(out_of_range(
                "decoder.online.replay_per_class",
                self.replay_per_class,
                "0..=256",
            ));
        }
        check_closed(
            "decoder.online.experience_horizon",
            self.experience_horizon,
            1.0,
            1e6,
            "[1, 1e6] updates",
        )?;
        check_positive(
            "decoder.online.max_drift",
            self.max_drift,
            f64::MAX,
            "(0, ∞)",
        )
    }
}

/// Largest `replay_per_class`.
pub const MAX_REPLAY_PER_CLASS: usize = 256;

/// Online state that lives only while a session runs (rebuilt empty after a fit or a load):
/// the calibrated weights the drift is measured from, the replay buffer, the steps taken.
#[derive(Debug, Clone, Default)]
struct Plastic {
    /// Weights when the first online step was taken (the calibrated or loaded ones).
    anchor: Vec<f64>,
    /// `classes × replay_per_class × d` raw features, a ring per class.
    replay: Vec<f32>,
    /// Examples held per class, and the slot the next one goes to.
    held: Vec<usize>,
    next: Vec<usize>,
    steps: u64,
}

/// Per-feature running mean and variance with exponential forgetting.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Normalizer {
    mean: Vec<f64>,
    var: Vec<f64>,
    /// Lowest variance allowed per feature (see the module doc: flat channels).
    var_floor: Vec<f64>,
    /// `1 / sqrt(var)`, kept in step with `var`; derived, so not stored.
    #[serde(skip)]
    inv_std: Vec<f64>,
}

/// Smallest variance any feature may have, whatever its calibration variance (a feature that was
/// constant during calibration).
const ABSOLUTE_VAR_FLOOR: f64 = 1e-12;
/// The running variance may shrink to this fraction of the calibration variance, not below.
const RELATIVE_VAR_FLOOR: f64 = 1e-4;

impl Normalizer {
    /// Mean and population variance of the `rows` (row-major, `d` columns).
    fn from_rows(rows: &[f64], d: usize) -> Self {
        let n = (rows.len() / d) as f64;
        let mut mean = vec![0.0; d];
        for row in rows.chunks_exact(d) {
            mean.iter_mut().zip(row).for_each(|(m, &x)| *m += x);
        }
        mean.iter_mut().for_each(|m| *m /= n);
        let mut var = vec![0.0; d];
        for row in rows.chunks_exact(d) {
            for ((v, &x), &m) in var.iter_mut().zip(row).zip(&mean) {
                *v += (x - m) * (x - m);
            }
        }
        var.iter_mut()
            .for_each(|v| *v = (*v / n).max(ABSOLUTE_VAR_FLOOR));
        let var_floor = var
            .iter()
            .map(|v| (v * RELATIVE_VAR_FLOOR).max(ABSOLUTE_VAR_FLOOR))
            .collect();
        let mut normalizer = Normalizer {
            mean,
            var,
            var_floor,
            inv_std: Vec::new(),
        };
        normalizer.refresh_inv_std();
        normalizer
    }

    fn refresh_inv_std(&mut self) {
        self.inv_std.clear();
        self.inv_std.extend(self.var.iter().map(|v| 1.0 / v.sqrt()));
    }

    /// Rebuilds the derived `inv_std` after a load; no-op (no allocation) otherwise.
    fn ensure_derived(&mut self) {
        if self.inv_std.len() != self.var.len() {
            self.refresh_inv_std();
        }
    }

    /// Writes clipped z-scores of `x` into `z` and returns how many were clipped. A NaN z-score
    /// (only possible from non-finite input) becomes 0.
    fn standardize(&self, x: &[f32], clip: f64, z: &mut [f64]) -> usize {
        let mut clipped = 0;
        for (((zi, &xi), &m), &s) in z.iter_mut().zip(x).zip(&self.mean).zip(&self.inv_std) {
            let v = (f64::from(xi) - m) * s;
            *zi = if v.is_nan() {
                0.0
            } else if v.abs() > clip {
                clipped += 1;
                v.clamp(-clip, clip)
            } else {
                v
            };
        }
        clipped
    }

    /// One forgetting step towards the (already clipped) z-scores `z`.
    fn absorb(&mut self, z: &[f64], forgetting: f64) {
        let gain = 1.0 - forgetting;
        for (i, &zi) in z.iter().enumerate() {
            // West's exponentially weighted mean/variance, on the winsorised value.
            let diff = zi / self.inv_std[i];
            let step = gain * diff;
            self.mean[i] += step;
            self.var[i] = (forgetting * (self.var[i] + diff * step)).max(self.var_floor[i]);
            self.inv_std[i] = 1.0 / self.var[i].sqrt();
        }
    }
}

/// Per-call buffers. Not stored; sized on first use, then reused without allocating.
#[derive(Debug, Clone, Default)]
struct Scratch {
    /// `acts[0]` = standardised input; `acts[l]` = output of layer `l`; the last = probabilities.
    acts: Vec<Vec<f64>>,
    /// `deltas[l]` = ∂loss/∂(pre-activation of `acts[l + 1]`).
    deltas: Vec<Vec<f64>>,
    /// Gradient, same layout as the parameters.
    grad: Vec<f64>,
}

impl Scratch {
    fn fits(&self, sizes: &[usize], n_params: usize) -> bool {
        self.grad.len() == n_params
            && self.acts.len() == sizes.len()
            && self.acts.iter().zip(sizes).all(|(a, &s)| a.len() == s)
    }

    fn for_sizes(sizes: &[usize], n_params: usize) -> Self {
        Scratch {
            acts: sizes.iter().map(|&s| vec![0.0; s]).collect(),
            deltas: sizes[1..].iter().map(|&s| vec![0.0; s]).collect(),
            grad: vec![0.0; n_params],
        }
    }
}

/// Number of parameters of a net with layer widths `sizes` (input, hidden..., output).
fn parameter_count(sizes: &[usize]) -> usize {
    checked_parameter_count(sizes).unwrap_or(usize::MAX)
}

/// [`parameter_count`] of sizes read from a file, which may overflow.
fn checked_parameter_count(sizes: &[usize]) -> Option<usize> {
    sizes.windows(2).try_fold(0usize, |sum, w| {
        w[0].checked_mul(w[1])?.checked_add(w[1])?.checked_add(sum)
    })
}

/// Forward pass: `acts[0]` holds the input; fills the other layers, the last with softmax
/// probabilities. Layer `l` stores `W` input-major (`sizes[l] × sizes[l+1]`) then the bias.
fn forward(sizes: &[usize], activation: Activation, params: &[f64], acts: &mut [Vec<f64>]) {
    let layers = sizes.len() - 1;
    let mut offset = 0;
    for l in 0..layers {
        let (n_in, n_out) = (sizes[l], sizes[l + 1]);
        let weights = &params[offset..offset + n_in * n_out];
        let bias = &params[offset + n_in * n_out..offset + n_in * n_out + n_out];
        offset += n_in * n_out + n_out;
        let (done, rest) = acts.split_at_mut(l + 1);
        let (input, out) = (&done[l], &mut rest[0]);
        out.copy_from_slice(bias);
        for (row, &a) in weights.chunks_exact(n_out).zip(input.iter()) {
            for (o, &w) in out.iter_mut().zip(row) {
                *o += a * w;
            }
        }
        if l + 1 < layers {
            activation.apply(out);
        } else {
            softmax(out);
        }
    }
}

fn softmax(values: &mut [f64]) {
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mut sum = 0.0;
    for v in values.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    values.iter_mut().for_each(|v| *v /= sum);
}

/// Adds `scale · ∂CE/∂params` for one example, whose forward pass is in `acts`, to `grad`.
#[allow(clippy::too_many_arguments)]
fn backward(
    sizes: &[usize],
    activation: Activation,
    params: &[f64],
    acts: &[Vec<f64>],
    deltas: &mut [Vec<f64>],
    label: usize,
    scale: f64,
    grad: &mut [f64],
) {
    let layers = sizes.len() - 1;
    // Softmax + cross-entropy: ∂CE/∂logit = p − onehot.
    deltas[layers - 1].copy_from_slice(&acts[layers]);
    deltas[layers - 1][label] -= 1.0;
    let mut end = params.len();
    for l in (0..layers).rev() {
        let (n_in, n_out) = (sizes[l], sizes[l + 1]);
        let start = end - (n_in * n_out + n_out);
        let (grad_w, grad_b) = grad[start..end].split_at_mut(n_in * n_out);
        let (before, here) = deltas.split_at_mut(l);
        let delta = &here[0];
        for (g, &d) in grad_b.iter_mut().zip(delta) {
            *g += scale * d;
        }
        for (row, &a) in grad_w.chunks_exact_mut(n_out).zip(&acts[l]) {
            let sa = scale * a;
            for (g, &d) in row.iter_mut().zip(delta) {
                *g += sa * d;
            }
        }
        // The input layer needs no delta of its own.
        if l > 0 {
            let weights = &params[start..start + n_in * n_out];
            for ((prev, row), &a) in before[l - 1]
                .iter_mut()
                .zip(weights.chunks_exact(n_out))
                .zip(&acts[l])
            {
                let back: f64 = row.iter().zip(delta).map(|(w, d)| w * d).sum();
                *prev = back * activation.derivative_from_output(a);
            }
        }
        end = start;
    }
}

/// Adds `weight_decay · W` (the gradient of `weight_decay / 2 · ‖W‖²`) for weights, not biases.
fn add_weight_decay(sizes: &[usize], params: &[f64], weight_decay: f64, grad: &mut [f64]) {
    if weight_decay == 0.0 {
        return;
    }
    let mut offset = 0;
    for w in sizes.windows(2) {
        let n = w[0] * w[1];
        for (g, &p) in grad[offset..offset + n]
            .iter_mut()
            .zip(&params[offset..offset + n])
        {
            *g += weight_decay * p;
        }
        offset += n + w[1];
    }
}

fn initial_parameters(sizes: &[usize], activation: Activation, rng: &mut ChaCha8Rng) -> Vec<f64> {
    let mut params = Vec::with_capacity(parameter_count(sizes));
    let layers = sizes.len() - 1;
    for l in 0..layers {
        let (n_in, n_out) = (sizes[l], sizes[l + 1]);
        let hidden = l + 1 < layers;
        if hidden && activation == Activation::Relu {
            // He: keeps the activation variance constant through ReLU layers.
            let normal = Normal::new(0.0, (2.0 / n_in as f64).sqrt()).expect("finite std");
            params.extend((0..n_in * n_out).map(|_| normal.sample(rng)));
        } else {
            // Glorot: balances forward and backward variance for tanh and the linear output.
            let limit = (6.0 / (n_in + n_out) as f64).sqrt();
            let uniform = Uniform::new_inclusive(-limit, limit);
            params.extend((0..n_in * n_out).map(|_| uniform.sample(rng)));
        }
        params.extend(std::iter::repeat_n(0.0, n_out));
    }
    params
}

/// `clamp(base · 2 · recent_error / chance_error, min_rate, max_rate)`: see the module doc.
fn adaptive_rate(online: &OnlineConfig, chance_error: f64, recent_error: f64) -> f64 {
    let rate = online.learning_rate * 2.0 * recent_error / chance_error;
    rate.clamp(online.min_rate, online.max_rate)
}

/// The plastic MLP decoder. See the [module documentation](self).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "StoredMlp")]
pub struct PlasticMlp {
    config: MlpConfig,
    classes: usize,
    /// Layer widths `[input, hidden..., classes]`; empty until fitted.
    sizes: Vec<usize>,
    params: Vec<f64>,
    normalizer: Normalizer,
    recent_error: f64,
    learning_rate: f64,
    version: u64,
    /// Consecutive outlier windows seen by `observe`.
    outlier_streak: u32,
    #[serde(skip)]
    scratch: Scratch,
    #[serde(skip)]
    plastic: Plastic,
}

/// What a model file holds, checked before it becomes a [`PlasticMlp`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredMlp {
    config: MlpConfig,
    classes: usize,
    sizes: Vec<usize>,
    params: Vec<f64>,
    normalizer: Normalizer,
    recent_error: f64,
    learning_rate: f64,
    version: u64,
    outlier_streak: u32,
}

impl TryFrom<StoredMlp> for PlasticMlp {
    type Error = Error;

    fn try_from(s: StoredMlp) -> Result<Self> {
        s.config.validate()?;
        let bad = |what: &str| Err(Error::Other(format!("MLP model: {what}")));
        if s.classes < 2 {
            return bad("fewer than 2 classes");
        }
        if !s.sizes.is_empty() {
            let expected_layers = s.config.hidden.len() + 2;
            if s.sizes.len() != expected_layers
                || s.sizes[1..expected_layers - 1] != s.config.hidden[..]
                || s.sizes[expected_layers - 1] != s.classes
                || s.sizes[0] == 0
            {
                return bad("layer sizes disagree with the configuration");
            }
        }
        let d = s.sizes.first().copied().unwrap_or(0);
        let n = &s.normalizer;
        if Some(s.params.len()) != checked_parameter_count(&s.sizes)
            || n.mean.len() != d
            || n.var.len() != d
            || n.var_floor.len() != d
        {
            return bad("parameter or normaliser length disagrees with the layer sizes");
        }
        let all_finite = s.params.iter().chain(&n.mean).all(|v| v.is_finite())
            && n.var
                .iter()
                .chain(&n.var_floor)
                .all(|v| v.is_finite() && *v > 0.0)
            && s.recent_error.is_finite()
            && s.learning_rate.is_finite();
        if !all_finite {
            return bad("non-finite or non-positive value in weights or normaliser");
        }
        Ok(PlasticMlp {
            config: s.config,
            classes: s.classes,
            sizes: s.sizes,
            params: s.params,
            normalizer: s.normalizer,
            recent_error: s.recent_error,
            learning_rate: s.learning_rate,
            version: s.version,
            outlier_streak: s.outlier_streak,
            scratch: Scratch::default(),
            plastic: Plastic::default(),
        })
    }
}

impl PlasticMlp {
    /// An unfitted net for `classes` (≥ 2) classes; the input width is set by [`Decoder::fit`].
    pub fn new(config: MlpConfig, classes: usize) -> Result<Self> {
        config.validate()?;
        if classes < 2 {
            return Err(Error::Other(format!(
                "MLP decoder: needs at least 2 classes, got {classes}"
            )));
        }
        let mut mlp = PlasticMlp {
            config,
            classes,
            sizes: Vec::new(),
            params: Vec::new(),
            normalizer: Normalizer::default(),
            recent_error: 0.0,
            learning_rate: 0.0,
            version: 0,
            outlier_streak: 0,
            scratch: Scratch::default(),
            plastic: Plastic::default(),
        };
        mlp.reset_online_state();
        Ok(mlp)
    }

    pub fn config(&self) -> &MlpConfig {
        &self.config
    }

    pub fn is_fitted(&self) -> bool {
        !self.sizes.is_empty()
    }

    /// Input width the net was fitted on.
    pub fn input_dim(&self) -> Option<usize> {
        self.sizes.first().copied()
    }

    /// Increments every time the weights change (a fit or an applied online step), so a reader
    /// can tell whether a copy it holds is stale. Starts at 0 for an unfitted net.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The online SGD rate, as set by the last applied or attempted labelled step.
    pub fn learning_rate(&self) -> f64 {
        self.learning_rate
    }

    /// Moving average of `1 − p(true class)` over recent labelled examples, in `[0, 1]`.
    pub fn recent_error(&self) -> f64 {
        self.recent_error
    }

    /// All weights and biases, flat, layer by layer (each layer: input-major weights, then bias).
    pub fn parameters(&self) -> &[f64] {
        &self.params
    }

    /// Running per-feature mean of the normaliser (empty until fitted).
    pub fn running_mean(&self) -> &[f64] {
        &self.normalizer.mean
    }

    /// Running per-feature variance of the normaliser (empty until fitted).
    pub fn running_variance(&self) -> &[f64] {
        &self.normalizer.var
    }

    fn chance_error(&self) -> f64 {
        1.0 - 1.0 / self.classes as f64
    }

    fn rate_for(&self, recent_error: f64) -> f64 {
        adaptive_rate(&self.config.online, self.chance_error(), recent_error)
    }

    /// Starts the error average at half of chance, where the rate equals the base rate.
    fn reset_online_state(&mut self) {
        self.recent_error = 0.5 * self.chance_error();
        self.learning_rate = self.rate_for(self.recent_error);
        self.outlier_streak = 0;
        self.plastic = Plastic::default();
    }

    /// Makes the buffers fit the net; allocates only on first use after a fit or a load.
    fn prepare(&mut self) {
        self.normalizer.ensure_derived();
        if !self.scratch.fits(&self.sizes, self.params.len()) {
            self.scratch = Scratch::for_sizes(&self.sizes, self.params.len());
        }
    }

    /// Mean loss over `rows` (`z`-standardised, row-major) picked by `batch`, and its gradient
    /// (cross-entropy mean plus L2) into the scratch gradient.
    fn batch_gradient(&mut self, rows: &[f64], labels: &[usize], batch: &[usize]) -> f64 {
        let d = self.sizes[0];
        let scale = 1.0 / batch.len() as f64;
        let Scratch { acts, deltas, grad } = &mut self.scratch;
        grad.fill(0.0);
        let mut loss = 0.0;
        for &r in batch {
            acts[0].copy_from_slice(&rows[r * d..(r + 1) * d]);
            forward(&self.sizes, self.config.activation, &self.params, acts);
            let p = acts[self.sizes.len() - 1][labels[r]];
            loss -= p.max(f64::MIN_POSITIVE).ln() * scale;
            backward(
                &self.sizes,
                self.config.activation,
                &self.params,
                acts,
                deltas,
                labels[r],
                scale,
                grad,
            );
        }
        let weight_decay = self.config.weight_decay;
        add_weight_decay(&self.sizes, &self.params, weight_decay, grad);
        loss + 0.5 * weight_decay * self.squared_weight_norm()
    }

    fn squared_weight_norm(&self) -> f64 {
        let mut offset = 0;
        let mut sum = 0.0;
        for w in self.sizes.windows(2) {
            let n = w[0] * w[1];
            sum += self.params[offset..offset + n]
                .iter()
                .map(|p| p * p)
                .sum::<f64>();
            offset += n + w[1];
        }
        sum
    }

    /// Mini-batch Adam on standardised rows.
    fn train(&mut self, rows: &[f64], labels: &[usize], rng: &mut ChaCha8Rng) {
        const BETA1: f64 = 0.9;
        const BETA2: f64 = 0.999;
        const EPSILON: f64 = 1e-8;
        let n = labels.len();
        let batch_size = self.config.batch_size.min(n);
        let mut m = vec![0.0; self.params.len()];
        let mut v = vec![0.0; self.params.len()];
        let mut order: Vec<usize> = (0..n).collect();
        let mut t = 0i32;
        let total_steps = self.config.epochs * n.div_ceil(batch_size);
        for _ in 0..self.config.epochs {
            order.shuffle(rng);
            for batch in order.chunks(batch_size) {
                self.batch_gradient(rows, labels, batch);
                t += 1;
                // Cosine decay to zero: the last epochs take ever smaller steps, so the result
                // does not depend on the noise of the last few mini-batches.
                let progress = t as f64 / total_steps as f64;
                let schedule = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
                let step = self.config.learning_rate * schedule * (1.0 - BETA2.powi(t)).sqrt()
                    / (1.0 - BETA1.powi(t));
                for (((p, &g), m), v) in self
                    .params
                    .iter_mut()
                    .zip(&self.scratch.grad)
                    .zip(&mut m)
                    .zip(&mut v)
                {
                    *m = BETA1 * *m + (1.0 - BETA1) * g;
                    *v = BETA2 * *v + (1.0 - BETA2) * g * g;
                    *p -= step * *m / (v.sqrt() + EPSILON);
                }
            }
        }
    }

    /// Stores `features` in the replay ring of `label` and leaves in the scratch gradient the
    /// class-balanced gradient: the mean over the classes holding examples of the mean gradient
    /// of each class's held examples (standardised with the current normaliser). `false` (no
    /// gradient) while fewer than two classes have examples. Allocates the ring once per fit
    /// or load.
    fn replay_step(&mut self, features: &[f32], label: usize, k: usize) -> bool {
        let (d, classes) = (self.sizes[0], self.classes);
        let plastic = &mut self.plastic;
        if plastic.replay.len() != classes * k * d {
            plastic.replay = vec![0.0; classes * k * d];
            plastic.held = vec![0; classes];
            plastic.next = vec![0; classes];
        }
        let slot = plastic.next[label];
        let at = (label * k + slot) * d;
        plastic.replay[at..at + d].copy_from_slice(features);
        plastic.next[label] = (slot + 1) % k;
        plastic.held[label] = (plastic.held[label] + 1).min(k);
        // Balanced over the classes that have examples; at least two of them (a class never
        // labelled, e.g. rest when feedback only names left and right, does not block learning).
        let present = plastic.held.iter().filter(|&&h| h > 0).count();
        if present < 2 {
            return false;
        }
        let clip = self.config.online.outlier_z;
        let Scratch { acts, deltas, grad } = &mut self.scratch;
        grad.fill(0.0);
        for class in 0..classes {
            let held = plastic.held[class];
            if held == 0 {
                continue;
            }
            let scale = 1.0 / (present * held) as f64;
            for i in 0..held {
                let at = (class * k + i) * d;
                self.normalizer
                    .standardize(&plastic.replay[at..at + d], clip, &mut acts[0]);
                forward(&self.sizes, self.config.activation, &self.params, acts);
                backward(
                    &self.sizes,
                    self.config.activation,
                    &self.params,
                    acts,
                    deltas,
                    class,
                    scale,
                    grad,
                );
            }
        }
        true
    }

    /// Fraction of features an outlier window may have clipped, as a count.
    fn outlier_limit(&self) -> f64 {
        self.config.online.max_outlier_fraction * self.sizes[0] as f64
    }
}

impl PlasticMlp {
    /// Checks a loaded model beyond what loading already checks (layer sizes against the
    /// configuration, lengths, finiteness): fitted, input width = `features` (the feature
    /// stage's dimension), sane magnitudes. Field names are as in the model file.
    pub fn validate(&self, features: usize) -> std::result::Result<(), String> {
        use super::lda::{check_len, check_values};
        let Some(&d) = self.sizes.first() else {
            return Err("sizes is empty: the net was never fitted".into());
        };
        if d != features {
            return Err(format!(
                "sizes[0] (input width) is {d}, but the feature stage makes {features} feature(s)"
            ));
        }
        if self.sizes.last() != Some(&self.classes) || self.classes < 2 {
            return Err(format!(
                "sizes {:?} must end with classes = {} (at least 2)",
                self.sizes, self.classes
            ));
        }
        check_len(
            "params",
            self.params.len(),
            checked_parameter_count(&self.sizes),
            "weights and biases of the layer sizes",
        )?;
        check_len(
            "normalizer.mean",
            self.normalizer.mean.len(),
            Some(d),
            "one per feature",
        )?;
        check_len(
            "normalizer.var",
            self.normalizer.var.len(),
            Some(d),
            "one per feature",
        )?;
        check_len(
            "normalizer.var_floor",
            self.normalizer.var_floor.len(),
            Some(d),
            "one per feature",
        )?;
        check_values("params", &self.params)?;
        check_values("normalizer.mean", &self.normalizer.mean)?;
        check_values("normalizer.var", &self.normalizer.var)?;
        check_values("normalizer.var_floor", &self.normalizer.var_floor)?;
        if let Some(i) = self.normalizer.var.iter().position(|v| *v <= 0.0) {
            return Err(format!(
                "normalizer.var[{i}] is {}, expected > 0",
                self.normalizer.var[i]
            ));
        }
        if let Some(i) = self.normalizer.var_floor.iter().position(|v| *v <= 0.0) {
            return Err(format!(
                "normalizer.var_floor[{i}] is {}, expected > 0",
                self.normalizer.var_floor[i]
            ));
        }
        if !(0.0..=1.0).contains(&self.recent_error) {
            return Err(format!(
                "recent_error is {}, expected in [0, 1]",
                self.recent_error
            ));
        }
        check_values("learning_rate", [&self.learning_rate])?;
        Ok(())
    }
}

impl Decoder for PlasticMlp {
    fn classes(&self) -> usize {
        self.classes
    }

    fn fit(&mut self, features: ArrayView2<'_, f32>, labels: &[usize]) -> Result<()> {
        let (n, d) = features.dim();
        if n != labels.len() {
            return Err(Error::Other(format!(
                "MLP fit: {n} feature rows but {} labels",
                labels.len()
            )));
        }
        if d == 0 || n < 2 {
            return Err(Error::Other(format!(
                "MLP fit: needs at least 2 rows of at least 1 feature, got {n} × {d}"
            )));
        }
        if let Some((i, &label)) = labels.iter().enumerate().find(|(_, &l)| l >= self.classes) {
            return Err(Error::Other(format!(
                "MLP fit: label {label} at row {i} is not a class (0..{})",
                self.classes
            )));
        }
        if labels.iter().all(|&l| l == labels[0]) {
            return Err(Error::Other(format!(
                "MLP fit: all {n} rows have label {}; needs at least 2 classes",
                labels[0]
            )));
        }
        // Logical (row-major) order whatever the view's memory layout.
        let raw: Vec<f64> = features.iter().map(|&x| f64::from(x)).collect();
        if let Some(k) = raw.iter().position(|x| !x.is_finite()) {
            return Err(Error::Other(format!(
                "MLP fit: non-finite feature {} in row {} (column {})",
                raw[k],
                k / d,
                k % d
            )));
        }
        self.normalizer = Normalizer::from_rows(&raw, d);
        let clip = self.config.online.outlier_z;
        let mut rows = vec![0.0; n * d];
        for (z, x) in rows.chunks_exact_mut(d).zip(features.rows()) {
            let x: Vec<f32> = x.iter().copied().collect();
            self.normalizer.standardize(&x, clip, z);
        }

        self.sizes = std::iter::once(d)
            .chain(self.config.hidden.iter().copied())
            .chain(std::iter::once(self.classes))
            .collect();
        let mut rng = ChaCha8Rng::seed_from_u64(self.config.seed);
        self.params = initial_parameters(&self.sizes, self.config.activation, &mut rng);
        self.prepare();
        self.train(&rows, labels, &mut rng);
        if !self.params.iter().all(|p| p.is_finite()) {
            self.sizes.clear();
            self.params.clear();
            return Err(Error::Other(
                "MLP fit diverged (non-finite weights): lower decoder.learning_rate".into(),
            ));
        }
        self.reset_online_state();
        self.version += 1;
        Ok(())
    }

    fn predict_proba(&mut self, features: &[f32], probabilities: &mut [f64]) {
        assert_eq!(
            probabilities.len(),
            self.classes,
            "MLP predict_proba: output length"
        );
        if !self.is_fitted() {
            probabilities.fill(1.0 / self.classes as f64);
            return;
        }
        assert_eq!(
            features.len(),
            self.sizes[0],
            "MLP predict_proba: feature length"
        );
        self.prepare();
        let acts = &mut self.scratch.acts;
        self.normalizer
            .standardize(features, self.config.online.outlier_z, &mut acts[0]);
        forward(&self.sizes, self.config.activation, &self.params, acts);
        probabilities.copy_from_slice(&acts[self.sizes.len() - 1]);
    }

    fn update(&mut self, features: &[f32], label: usize) -> bool {
        if !self.is_fitted()
            || label >= self.classes
            || features.len() != self.sizes[0]
            || !features.iter().all(|x| x.is_finite())
        {
            return false;
        }
        self.prepare();
        let online = self.config.online.clone();
        let clipped =
            self.normalizer
                .standardize(features, online.outlier_z, &mut self.scratch.acts[0]);
        if clipped as f64 > self.outlier_limit() {
            return false;
        }

        let chance_error = self.chance_error();
        forward(
            &self.sizes,
            self.config.activation,
            &self.params,
            &mut self.scratch.acts,
        );
        // The error is measured before learning from the example: how surprised the model was.
        let error = 1.0 - self.scratch.acts[self.sizes.len() - 1][label];
        let memory = 1.0 / online.error_memory;
        let recent_error = (1.0 - memory) * self.recent_error + memory * error;
        let experience =
            online.experience_horizon / (online.experience_horizon + self.plastic.steps as f64);
        let rate = adaptive_rate(&online, chance_error, recent_error) * experience;
        self.recent_error = recent_error;
        self.learning_rate = rate;

        let k = online.replay_per_class;
        if k == 0 {
            // The new example alone.
            let Scratch { acts, deltas, grad } = &mut self.scratch;
            grad.fill(0.0);
            backward(
                &self.sizes,
                self.config.activation,
                &self.params,
                acts,
                deltas,
                label,
                1.0,
                grad,
            );
        } else if !self.replay_step(features, label, k) {
            // Fewer than two classes labelled yet: a step now would lean towards the one seen.
            return false;
        }
        // No weight decay online: applied at every one of the thousands of steps of a session it
        // would steadily erase the calibration; the drift bound limits the distance instead.
        let grad = &self.scratch.grad;
        let norm = grad.iter().map(|g| g * g).sum::<f64>().sqrt();
        if !norm.is_finite() || norm == 0.0 || rate == 0.0 {
            return false;
        }
        if self.plastic.anchor.len() != self.params.len() {
            self.plastic.anchor.clone_from(&self.params);
        }
        let clipped_norm = norm.min(online.max_gradient_norm);
        let step_norm = (rate * clipped_norm).min(online.max_update_norm);
        let factor = step_norm / norm;
        for (p, &g) in self.params.iter_mut().zip(grad.iter()) {
            *p -= factor * g;
        }
        // Bounded drift: back onto the ball of radius max_drift around the calibrated weights.
        let drift = self
            .params
            .iter()
            .zip(&self.plastic.anchor)
            .map(|(p, a)| (p - a) * (p - a))
            .sum::<f64>()
            .sqrt();
        if drift > online.max_drift {
            let shrink = online.max_drift / drift;
            for (p, a) in self.params.iter_mut().zip(&self.plastic.anchor) {
                *p = a + (*p - a) * shrink;
            }
        }
        self.plastic.steps += 1;
        self.version += 1;
        true
    }

    fn observe(&mut self, features: &[f32]) {
        // A copy (no heap fields), so `self` stays free to mutate.
        let online = self.config.online.clone();
        if !self.is_fitted()
            || online.normalization_forgetting >= 1.0
            || features.len() != self.sizes[0]
            || !features.iter().all(|x| x.is_finite())
        {
            return;
        }
        self.prepare();
        let clipped =
            self.normalizer
                .standardize(features, online.outlier_z, &mut self.scratch.acts[0]);
        if clipped as f64 > self.outlier_limit() {
            self.outlier_streak = self.outlier_streak.saturating_add(1);
            if self.outlier_streak <= online.outlier_patience {
                return;
            }
        } else {
            self.outlier_streak = 0;
        }
        self.normalizer
            .absorb(&self.scratch.acts[0], online.normalization_forgetting);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;
    use rand::Rng;

    fn tiny(hidden: Vec<usize>, activation: Activation, d: usize, classes: usize) -> PlasticMlp {
        let config = MlpConfig {
            hidden,
            activation,
            weight_decay: 0.03,
            ..MlpConfig::default()
        };
        let mut mlp = PlasticMlp::new(config, classes).unwrap();
        mlp.sizes = std::iter::once(d)
            .chain(mlp.config.hidden.iter().copied())
            .chain(std::iter::once(classes))
            .collect();
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        mlp.params = initial_parameters(&mlp.sizes, activation, &mut rng);
        // Non-zero biases so their gradient is exercised too.
        mlp.params
            .iter_mut()
            .for_each(|p| *p += rng.gen_range(-0.3..0.3));
        mlp.prepare();
        mlp
    }

    /// Analytic backprop gradient vs central finite differences of the full objective.
    fn gradient_check(hidden: Vec<usize>, activation: Activation) {
        let (d, classes, n) = (3, 3, 5);
        let mut mlp = tiny(hidden, activation, d, classes);
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let rows: Vec<f64> = (0..n * d).map(|_| rng.gen_range(-2.0..2.0)).collect();
        let labels: Vec<usize> = (0..n).map(|i| i % classes).collect();
        let batch: Vec<usize> = (0..n).collect();
        mlp.batch_gradient(&rows, &labels, &batch);
        let analytic = mlp.scratch.grad.clone();
        let h = 1e-6;
        let mut numeric = vec![0.0; analytic.len()];
        for (k, slope) in numeric.iter_mut().enumerate() {
            let original = mlp.params[k];
            mlp.params[k] = original + h;
            let plus = mlp.batch_gradient(&rows, &labels, &batch);
            mlp.params[k] = original - h;
            let minus = mlp.batch_gradient(&rows, &labels, &batch);
            mlp.params[k] = original;
            *slope = (plus - minus) / (2.0 * h);
        }
        let diff = analytic
            .iter()
            .zip(&numeric)
            .map(|(a, b)| (a - b) * (a - b))
            .sum::<f64>()
            .sqrt();
        let norm_a = analytic.iter().map(|a| a * a).sum::<f64>().sqrt();
        let norm_n = numeric.iter().map(|a| a * a).sum::<f64>().sqrt();
        let relative = diff / (norm_a + norm_n);
        println!("gradient check {activation:?}: relative error {relative:.3e}");
        assert!(norm_a > 1e-3, "degenerate gradient");
        assert!(relative < 1e-5, "relative error {relative:e}");
    }

    #[test]
    fn gradient_matches_finite_differences_tanh_one_layer() {
        gradient_check(vec![4], Activation::Tanh);
    }

    #[test]
    fn gradient_matches_finite_differences_tanh_two_layers() {
        gradient_check(vec![4, 3], Activation::Tanh);
    }

    #[test]
    fn gradient_matches_finite_differences_relu_two_layers() {
        // Random pre-activations are almost surely away from the kink at 0 by more than h.
        gradient_check(vec![5, 4], Activation::Relu);
    }

    #[test]
    fn normalizer_follows_a_shift_and_respects_its_floor() {
        let rows: Vec<f64> = (0..100).flat_map(|i| [i as f64 % 2.0, 5.0]).collect();
        let mut n = Normalizer::from_rows(&rows, 2);
        assert!((n.mean[0] - 0.5).abs() < 1e-12 && (n.var[0] - 0.25).abs() < 1e-12);
        // The constant feature gets the absolute floor, not zero.
        assert_eq!(n.var[1], ABSOLUTE_VAR_FLOOR);
        let mut z = [0.0; 2];
        for _ in 0..5000 {
            let clipped = n.standardize(&[3.0, 5.0], 6.0, &mut z);
            assert_eq!(clipped, 0);
            n.absorb(&z, 0.99);
        }
        assert!((n.mean[0] - 3.0).abs() < 1e-6, "mean {}", n.mean[0]);
        // A constant input lets the variance decay, but only to the floor.
        assert!((n.var[0] - 0.25 * RELATIVE_VAR_FLOOR).abs() < 1e-12);
    }

    #[test]
    fn rate_is_base_at_half_chance_error_and_clamped() {
        let mlp = PlasticMlp::new(MlpConfig::default(), 2).unwrap();
        let o = &mlp.config.online;
        assert!((mlp.rate_for(0.25) - o.learning_rate).abs() < 1e-15);
        assert_eq!(mlp.rate_for(0.0), o.min_rate);
        assert!(mlp.rate_for(1.0) <= o.max_rate);
        assert_eq!(mlp.learning_rate(), o.learning_rate);
    }

    #[test]
    fn predict_does_not_reallocate_buffers() {
        let mut mlp = PlasticMlp::new(
            MlpConfig {
                epochs: 2,
                ..MlpConfig::default()
            },
            2,
        )
        .unwrap();
        let x = Array2::from_shape_fn((10, 4), |(i, j)| (i * 3 + j) as f32 % 5.0);
        let labels: Vec<usize> = (0..10).map(|i| i % 2).collect();
        mlp.fit(x.view(), &labels).unwrap();
        let mut p = [0.0; 2];
        mlp.predict_proba(&[0.0; 4], &mut p);
        let before: Vec<*const f64> = mlp.scratch.acts.iter().map(|a| a.as_ptr()).collect();
        for _ in 0..10 {
            mlp.predict_proba(&[1.0, 2.0, 3.0, 4.0], &mut p);
            mlp.update(&[1.0, 2.0, 3.0, 4.0], 1);
            mlp.observe(&[1.0, 2.0, 3.0, 4.0]);
        }
        let after: Vec<*const f64> = mlp.scratch.acts.iter().map(|a| a.as_ptr()).collect();
        assert_eq!(before, after);
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    }
}
