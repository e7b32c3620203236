//! Shrinkage linear discriminant analysis: the standard BCI baseline.
//!
//! Numerically the model is scikit-learn's
//! `LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto")` (our reference values come
//! from it, see `tests/fixtures/classifier_reference.json`):
//!
//! - class priors are the training class frequencies;
//! - the within-class covariance is `Σ = Σ_k prior_k · S_k`, with `S_k` the (biased, divide by
//!   `n_k`) covariance of class `k`, shrunk towards `mu·I` (`mu` = mean eigenvalue);
//! - with `shrinkage = "auto"` the shrinkage intensity of each class is the Ledoit–Wolf
//!   estimate computed on the class's *standardised* features, and the shrunk correlation
//!   matrix is scaled back by the feature standard deviations. Standardising first matters for
//!   EEG features, whose scales differ by orders of magnitude (band power of different bands);
//! - discriminants `δ_k(x) = wₖ·x + b_k` with `w_k = Σ⁻¹ μ_k` and
//!   `b_k = −½ μ_k·w_k + ln prior_k`; probabilities are the softmax of the `δ_k` (for two
//!   classes that is the logistic sigmoid of `δ_1 − δ_0`, as scikit-learn writes it).
//!
//! Shrinkage is what makes LDA usable with many features and few trials (2080 tangent-space
//! features from ~100 trials): the shrunk `Σ` is positive definite whenever the intensity is
//! positive, so a Cholesky solve suffices. With `shrinkage = 0` and fewer trials than features
//! `Σ` is singular and fitting fails with an error that says so.
//!
//! Training is `O(n·d² + d³)`; prediction is `K` dot products, allocation-free.

use std::fmt;

use ndarray::{Array2, ArrayView2, Axis};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::Decoder;
use crate::error::{Error, Result};

/// Shrinkage intensity of the within-class covariance.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Shrinkage {
    /// Ledoit–Wolf estimate per class, on standardised features (`"auto"`).
    #[default]
    Auto,
    /// A fixed intensity in `[0, 1]`: 0 = empirical covariance, 1 = scaled identity.
    Fixed(f64),
}

impl Shrinkage {
    fn check(self) -> Result<Self> {
        match self {
            Shrinkage::Fixed(x) if !(0.0..=1.0).contains(&x) => Err(Error::config(
                "decoder.shrinkage",
                format!("{x} is out of range: expected \"auto\" or a number in [0, 1]"),
            )),
            s => Ok(s),
        }
    }
}

impl Serialize for Shrinkage {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Shrinkage::Auto => s.serialize_str("auto"),
            Shrinkage::Fixed(x) => s.serialize_f64(*x),
        }
    }
}

// A hand-written visitor rather than `#[serde(untagged)]`: untagged enums can only say "did not
// match any variant", while the pipeline file needs to be told the value and the allowed range.
impl<'de> Deserialize<'de> for Shrinkage {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl V {
            fn number<E: de::Error>(x: f64) -> std::result::Result<Shrinkage, E> {
                if (0.0..=1.0).contains(&x) {
                    Ok(Shrinkage::Fixed(x))
                } else {
                    Err(E::custom(format_args!(
                        "decoder.shrinkage = {x} is out of range: expected \"auto\" or a number in [0, 1]"
                    )))
                }
            }
        }
        impl Visitor<'_> for V {
            type Value = Shrinkage;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("decoder.shrinkage: \"auto\" or a number in [0, 1]")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<Shrinkage, E> {
                if v == "auto" {
                    Ok(Shrinkage::Auto)
                } else {
                    Err(E::custom(format_args!(
                        "decoder.shrinkage = {v:?} is not valid: expected \"auto\" or a number in [0, 1]"
                    )))
                }
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> std::result::Result<Shrinkage, E> {
                V::number(v)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> std::result::Result<Shrinkage, E> {
                V::number(v as f64)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> std::result::Result<Shrinkage, E> {
                V::number(v as f64)
            }
        }
        d.deserialize_any(V)
    }
}

/// `[decoder] kind = "lda"` in a pipeline file.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LdaConfig {
    /// `"auto"` (Ledoit–Wolf, default) or a fixed intensity in `[0, 1]`.
    #[serde(default)]
    pub shrinkage: Shrinkage,
    /// `[decoder.online]`: how the discriminant keeps adapting while it runs.
    #[serde(default)]
    pub online: LdaOnlineConfig,
}

/// `[decoder.online]` for `kind = "lda"`: adaptive LDA with exponential forgetting.
///
/// - `mean_rate` η_μ, the floor of the class-mean rate: a class mean is the running average
///   of the trials it has seen, counting its `n_k` calibration trials, until that rate
///   (`1/(n_k + t + 1)` after `t` online trials of the class) falls to η_μ; from then on it
///   forgets at η_μ. So a model calibrated on many trials moves less per trial than one
///   calibrated on few: the rate reflects how much evidence the calibration already holds
///   (a Bayesian running update started at the calibration's count).
/// - `class_balanced` (default true): a labelled trial waits until every class has one
///   waiting; then each class mean moves towards the average of its waiting trials, all in
///   the same step. A run of one class's labels therefore cannot drag the boundary towards
///   that class (a drift common to all classes moves all means alike), and labels that
///   alternate on consecutive trials move the means in pairs.
/// - `covariance_rate` η_Σ, the floor of the covariance rate (likewise `1/(n + t + 1)` over
///   all `n` calibration trials first): the sample part `S` of the shrunk pooled covariance
///   `Σ = D + S` (`D` the shrinkage target fixed at calibration) forgets by `1 − η_Σ` and
///   takes `η_Σ (1 − s̄) u uᵀ`, `u = x − μ_y` (`s̄` the calibration shrinkage), so the
///   shrinkage a small calibration set needed is kept however long the session runs. The
///   covariance is within-class scatter, so it is updated at once, trial by trial.
/// - `tracking_rate` η_g (unsupervised, every window): the global mean `m = Σ_k p_k μ_k`
///   moves towards the window, `δ = η_g (x − m)`, and every class mean moves by `δ` (bias
///   adaptation; the discriminant directions are unchanged).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LdaOnlineConfig {
    /// Weight of a labelled trial in its class mean, [0, 0.5] (0: class means fixed).
    pub mean_rate: f64,
    /// Weight of a labelled trial in the pooled covariance, [0, 0.5] (0: covariance fixed).
    pub covariance_rate: f64,
    /// Per-window weight of unsupervised global-mean tracking, [0, 0.1] (0: off).
    pub tracking_rate: f64,
    /// Class means move only once every class has a labelled trial waiting (see above).
    pub class_balanced: bool,
}

impl Default for LdaOnlineConfig {
    fn default() -> Self {
        LdaOnlineConfig {
            mean_rate: DEFAULT_MEAN_RATE,
            covariance_rate: DEFAULT_COVARIANCE_RATE,
            tracking_rate: DEFAULT_TRACKING_RATE,
            class_balanced: true,
        }
    }
}

/// Defaults of [`LdaOnlineConfig`] (see `docs/decoding.md`, "Online adaptation").
pub const DEFAULT_MEAN_RATE: f64 = 0.05;
pub const DEFAULT_COVARIANCE_RATE: f64 = 0.05;
pub const DEFAULT_TRACKING_RATE: f64 = 0.0;

impl LdaOnlineConfig {
    /// Every range into `problems` (keys `decoder.online.…`).
    pub fn check(&self, problems: &mut crate::validate::Problems) {
        problems.closed(
            "decoder.online.mean_rate",
            self.mean_rate,
            0.0,
            0.5,
            "[0, 0.5] (0: class means fixed)",
        );
        problems.closed(
            "decoder.online.covariance_rate",
            self.covariance_rate,
            0.0,
            0.5,
            "[0, 0.5] (0: covariance fixed)",
        );
        problems.closed(
            "decoder.online.tracking_rate",
            self.tracking_rate,
            0.0,
            0.1,
            "[0, 0.1] per window (0: off)",
        );
    }
}

/// Shrinkage LDA decoder. Serialisable: a model file stores it with its fitted parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lda {
    config: LdaConfig,
    classes: usize,
    n_features: usize,
    /// Class priors (training frequencies).
    priors: Vec<f64>,
    /// Class means, `classes × n_features`, row-major.
    means: Vec<f64>,
    /// Discriminant weights `Σ⁻¹ μ_k`, `classes × n_features`, row-major.
    coef: Vec<f64>,
    intercept: Vec<f64>,
    /// Shrinkage intensity actually applied to each class covariance.
    shrinkage_applied: Vec<f64>,
    /// The pooled covariance as `Σ = diag(cov_diag) + Σ_r cov_weights[r] · r rᵀ` over the
    /// centred calibration rows `cov_rows` (row-major, one per calibration example): what the
    /// online covariance update starts from. Empty in model files written before adaptive LDA
    /// (those do not learn online: `update` declines).
    #[serde(default)]
    cov_diag: Vec<f64>,
    #[serde(default)]
    cov_rows: Vec<f64>,
    #[serde(default)]
    cov_weights: Vec<f64>,
    /// `1 − s̄`: the weight of the sample part in the shrunk covariance.
    #[serde(default)]
    sample_weight: f64,
    /// Online state, built from the fields above on the first supervised step; derived.
    #[serde(skip)]
    online: Option<Box<Adaptive>>,
}

impl Lda {
    /// An unfitted model.
    pub fn new(config: LdaConfig) -> Lda {
        Lda {
            config,
            classes: 0,
            n_features: 0,
            priors: Vec::new(),
            means: Vec::new(),
            coef: Vec::new(),
            intercept: Vec::new(),
            shrinkage_applied: Vec::new(),
            cov_diag: Vec::new(),
            cov_rows: Vec::new(),
            cov_weights: Vec::new(),
            sample_weight: 0.0,
            online: None,
        }
    }

    pub fn config(&self) -> &LdaConfig {
        &self.config
    }

    /// Feature dimension the model was fitted on (0 before fitting).
    pub fn n_features(&self) -> usize {
        self.n_features
    }

    /// Class priors from the training frequencies.
    pub fn priors(&self) -> &[f64] {
        &self.priors
    }

    /// Shrinkage intensity used for each class covariance (the Ledoit–Wolf estimate with
    /// `"auto"`): worth logging, values near 1 mean the data barely supports a covariance.
    pub fn shrinkage_applied(&self) -> &[f64] {
        &self.shrinkage_applied
    }

    /// Linear discriminants `δ_k(x)` into `out` (length `classes()`); the softmax of these is
    /// [`Decoder::predict_proba`]. For two classes `δ_1 − δ_0` is scikit-learn's
    /// `decision_function`.
    pub fn decision_function(&self, features: &[f32], out: &mut [f64]) {
        assert_eq!(
            features.len(),
            self.n_features,
            "LDA: feature vector has {} values, the model was fitted on {}",
            features.len(),
            self.n_features
        );
        assert_eq!(
            out.len(),
            self.classes,
            "LDA: output has {} slots for {} classes",
            out.len(),
            self.classes
        );
        for (k, o) in out.iter_mut().enumerate() {
            let w = &self.coef[k * self.n_features..(k + 1) * self.n_features];
            *o = self.intercept[k] + dot_f32(w, features);
        }
    }
}

impl Decoder for Lda {
    fn classes(&self) -> usize {
        self.classes
    }

    fn fit(&mut self, features: ArrayView2<'_, f32>, labels: &[usize]) -> Result<()> {
        let shrinkage = self.config.shrinkage.check()?;
        let classes = check_training_set("LDA", features, labels)?;
        let (n, d) = features.dim();
        let x = features.mapv(f64::from);

        let mut members: Vec<Vec<usize>> = vec![Vec::new(); classes];
        for (i, &l) in labels.iter().enumerate() {
            members[l].push(i);
        }

        let mut priors = Vec::with_capacity(classes);
        let mut means = Array2::<f64>::zeros((classes, d));
        let mut sigma = Array2::<f64>::zeros((d, d));
        let mut applied = Vec::with_capacity(classes);
        let mut cov_diag = vec![0.0; d];
        let mut cov_rows = Vec::with_capacity(n * d);
        let mut cov_weights = Vec::with_capacity(n);
        for (k, rows) in members.iter().enumerate() {
            let prior = rows.len() as f64 / n as f64;
            let xk = x.select(Axis(0), rows);
            let mean = xk.mean_axis(Axis(0)).expect("every class has members");
            let centred = &xk - &mean;
            for row in centred.rows() {
                cov_rows.extend(row.iter());
            }
            let (cov, s, target) = shrunk_covariance(centred, mean.as_slice().unwrap(), shrinkage);
            sigma.scaled_add(prior, &cov);
            // Σ_k prior_k · cov_k = Σ_k prior_k · target_k + Σ_rows (1 − s_k)/n · r rᵀ.
            for (c, t) in cov_diag.iter_mut().zip(&target) {
                *c += prior * t;
            }
            cov_weights.extend(std::iter::repeat_n((1.0 - s) / n as f64, rows.len()));
            means.row_mut(k).assign(&mean);
            priors.push(prior);
            applied.push(s);
        }

        let chol = cholesky(&sigma).ok_or_else(|| {
            let fix = match shrinkage {
                Shrinkage::Auto => format!(
                    "shrinkage = \"auto\" is set, but the Ledoit–Wolf estimate chose {applied:.3?} \
                     (little or no shrinkage); set decoder.shrinkage to a fixed value above 0, \
                     e.g. 0.1, or drop constant or duplicated features"
                ),
                Shrinkage::Fixed(x) => {
                    format!("decoder.shrinkage = {x}; use \"auto\" or a fixed value above {x}")
                }
            };
            Error::Other(format!(
                "LDA fit: the within-class covariance of {d} features from {n} examples is \
                 singular; {fix}"
            ))
        })?;

        let mut coef = Vec::with_capacity(classes * d);
        let mut intercept = Vec::with_capacity(classes);
        for (mean, prior) in means.rows().into_iter().zip(&priors) {
            let mu = mean.to_vec();
            let w = cholesky_solve(&chol, &mu);
            let mw: f64 = mu.iter().zip(&w).map(|(a, b)| a * b).sum();
            intercept.push(-0.5 * mw + prior.ln());
            coef.extend_from_slice(&w);
        }

        let sample_weight = 1.0 - applied.iter().zip(&priors).map(|(s, p)| s * p).sum::<f64>();
        *self = Lda {
            config: self.config.clone(),
            classes,
            n_features: d,
            priors,
            means: means.into_raw_vec_and_offset().0,
            coef,
            intercept,
            shrinkage_applied: applied,
            cov_diag,
            cov_rows,
            cov_weights,
            sample_weight,
            online: None,
        };
        Ok(())
    }

    fn predict_proba(&mut self, features: &[f32], probabilities: &mut [f64]) {
        self.decision_function(features, probabilities);
        softmax_in_place(probabilities);
    }

    /// Adaptive LDA (see [`LdaOnlineConfig`]): the labelled trial enters the pooled covariance
    /// at once and its class mean (at once, or with `class_balanced` once every class has a
    /// trial waiting), and the discriminant is recomputed. `true` when the trial was taken
    /// (the covariance or a mean changed, or it waits for the other classes); `false`
    /// (nothing changed) for an unfitted model, a wrong length, non-finite features, an
    /// out-of-range label, both rates 0, or a model file without the calibration covariance.
    /// No allocation after the first step.
    fn update(&mut self, features: &[f32], label: usize) -> bool {
        let d = self.n_features;
        let online = &self.config.online;
        let (eta_mu, eta_cov) = (online.mean_rate, online.covariance_rate);
        let balanced = online.class_balanced;
        if d == 0
            || features.len() != d
            || label >= self.classes
            || !(eta_mu > 0.0 || eta_cov > 0.0)
            || !(eta_mu <= 0.5 && eta_cov <= 0.5)
            || features.iter().any(|v| !v.is_finite())
        {
            return false;
        }
        if self.online.is_none() {
            match Adaptive::new(self) {
                Some(state) => self.online = Some(Box::new(state)),
                None => return false,
            }
        }
        let state = self.online.as_mut().expect("built above");
        if eta_cov > 0.0 {
            // Running average over the calibration trials first, then forgetting at η_Σ.
            let eta = eta_cov.max(1.0 / (state.seen + 1.0));
            let mean = &self.means[label * d..(label + 1) * d];
            state.add_row(features, mean, eta, self.sample_weight);
            state.seen += 1.0;
        }
        if eta_mu > 0.0 {
            let pending = &mut state.pending[label * d..(label + 1) * d];
            for (p, &x) in pending.iter_mut().zip(features) {
                *p += f64::from(x);
            }
            state.waiting[label] += 1;
            if !balanced || state.waiting.iter().all(|&w| w > 0) {
                state.apply_means(&mut self.means, eta_mu);
            }
        }
        state.discriminant(
            &self.means,
            &self.priors,
            &mut self.coef,
            &mut self.intercept,
        );
        true
    }

    /// Unsupervised global-mean tracking (`tracking_rate` per window): every class mean moves
    /// by `η_g (x − m)`, `m` the prior-weighted mean of the class means; the intercepts follow.
    /// No allocation.
    fn observe(&mut self, features: &[f32]) {
        let d = self.n_features;
        let eta = self.config.online.tracking_rate;
        if d == 0
            || features.len() != d
            || !(eta > 0.0 && eta <= 0.1)
            || features.iter().any(|v| !v.is_finite())
        {
            return;
        }
        for (i, &x) in features.iter().enumerate() {
            let m: f64 = (0..self.classes)
                .map(|k| self.priors[k] * self.means[k * d + i])
                .sum();
            let delta = eta * (f64::from(x) - m);
            for k in 0..self.classes {
                self.means[k * d + i] += delta;
            }
        }
        for k in 0..self.classes {
            let mu = &self.means[k * d..(k + 1) * d];
            let w = &self.coef[k * d..(k + 1) * d];
            let mw: f64 = mu.iter().zip(w).map(|(a, b)| a * b).sum();
            self.intercept[k] = -0.5 * mw + self.priors[k].ln();
        }
    }
}

/// Extra rows the online covariance keeps beyond the calibration rows; when full, the row
/// with the smallest weight (the oldest) is replaced.
const ONLINE_ROWS: usize = 160;
/// A row whose weight falls below this fraction of the largest is replaced first.
const NEGLIGIBLE_WEIGHT: f64 = 1e-9;

/// Online state of adaptive LDA: `Σ = D + Uᵀ C U` with `D` the fixed diagonal shrinkage target,
/// `U` the stored rows and `C` their weights, solved through the Woodbury identity
/// `Σ⁻¹ = D⁻¹ − D⁻¹Uᵀ (C⁻¹ + U D⁻¹ Uᵀ)⁻¹ U D⁻¹`: `O(m·d + m³)` per step for `m` rows instead of
/// `O(d³)`, in buffers sized once (`m ≤ calibration rows + ONLINE_ROWS`), so the steady state
/// does not allocate.
#[derive(Debug, Clone)]
struct Adaptive {
    d: usize,
    capacity: usize,
    /// Rows in use (the first `used` of `rows` / `weights`).
    used: usize,
    inv_diag: Vec<f64>,
    rows: Vec<f64>,
    weights: Vec<f64>,
    /// `G = U D⁻¹ Uᵀ`, `capacity × capacity`.
    gram: Vec<f64>,
    /// Cholesky factor of `C⁻¹ + G` (leading `used × used`, stride `capacity`).
    chol: Vec<f64>,
    /// Work vectors: length `capacity` (two) and `d`.
    t: Vec<f64>,
    z: Vec<f64>,
    v: Vec<f64>,
    /// Per class: the (effective) number of trials its mean already averages, starting at
    /// its calibration count.
    counts: Vec<f64>,
    /// Trials in the covariance so far, starting at the calibration count.
    seen: f64,
    /// Per class: the sum of the labelled trials waiting to move its mean (`classes × d`)
    /// and how many there are.
    pending: Vec<f64>,
    waiting: Vec<usize>,
}

impl PartialEq for Adaptive {
    /// Derived state: two models are equal when their stored fields are.
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Adaptive {
    /// From a fitted model's calibration covariance; `None` when it has none (an older model
    /// file) or its shrinkage target is not positive (`shrinkage = 0`).
    fn new(lda: &Lda) -> Option<Adaptive> {
        let d = lda.n_features;
        let n = lda.cov_weights.len();
        if lda.cov_diag.len() != d || lda.cov_rows.len() != n * d {
            return None;
        }
        let max = lda.cov_diag.iter().fold(0.0f64, |m, &v| m.max(v));
        // `max` is NaN-free (`f64::max` skips NaN); a NaN entry fails `v > floor`.
        let floor = max * 1e-12;
        if max <= 0.0 || lda.cov_diag.iter().any(|&v| v.is_nan() || v <= floor) {
            return None;
        }
        let capacity = n + ONLINE_ROWS;
        let mut state = Adaptive {
            d,
            capacity,
            used: 0,
            inv_diag: lda.cov_diag.iter().map(|v| 1.0 / v).collect(),
            rows: vec![0.0; capacity * d],
            weights: vec![0.0; capacity],
            gram: vec![0.0; capacity * capacity],
            chol: vec![0.0; capacity * capacity],
            t: vec![0.0; capacity],
            z: vec![0.0; capacity],
            v: vec![0.0; d],
            counts: lda.priors.iter().map(|p| (p * n as f64).round()).collect(),
            seen: n as f64,
            pending: vec![0.0; lda.classes * d],
            waiting: vec![0; lda.classes],
        };
        for (r, &w) in lda.cov_weights.iter().enumerate() {
            if w > 0.0 {
                let row = &lda.cov_rows[r * d..(r + 1) * d];
                state.put(state.used, row.iter().copied(), w);
                state.used += 1;
            }
        }
        Some(state)
    }

    /// Moves every class mean with waiting trials towards their average and clears them: a
    /// class with `m` waiting trials and count `n` moves by `max(m/(n + m), 1 − (1 − floor)^m)`
    /// (the running average, or `m` steps of forgetting at `floor`, whichever is larger).
    fn apply_means(&mut self, means: &mut [f64], floor: f64) {
        let d = self.d;
        for (k, waiting) in self.waiting.iter_mut().enumerate() {
            if *waiting == 0 {
                continue;
            }
            let m = *waiting as f64;
            let count = &mut self.counts[k];
            let eta = (m / (*count + m)).max(1.0 - (1.0 - floor).powf(m));
            let pending = &mut self.pending[k * d..(k + 1) * d];
            for (mu, p) in means[k * d..(k + 1) * d].iter_mut().zip(pending.iter_mut()) {
                *mu += eta * (*p / m - *mu);
                *p = 0.0;
            }
            *count += m;
            *waiting = 0;
        }
    }

    /// Writes `row` with `weight` into slot `slot` and refreshes its row/column of `G`.
    fn put(&mut self, slot: usize, row: impl Iterator<Item = f64>, weight: f64) {
        let d = self.d;
        for (dst, v) in self.rows[slot * d..(slot + 1) * d].iter_mut().zip(row) {
            *dst = v;
        }
        self.weights[slot] = weight;
        let last = self.used.max(slot + 1);
        let new = &self.rows[slot * d..(slot + 1) * d];
        for other in 0..last {
            let o = &self.rows[other * d..(other + 1) * d];
            let g: f64 = new
                .iter()
                .zip(o)
                .zip(&self.inv_diag)
                .map(|((a, b), c)| a * b * c)
                .sum();
            self.gram[slot * self.capacity + other] = g;
            self.gram[other * self.capacity + slot] = g;
        }
    }

    /// Forget by `1 − eta` and add `(x − mean)` with weight `eta · sample_weight`.
    fn add_row(&mut self, x: &[f32], mean: &[f64], eta: f64, sample_weight: f64) {
        for w in &mut self.weights[..self.used] {
            *w *= 1.0 - eta;
        }
        let max = self.weights[..self.used]
            .iter()
            .fold(0.0f64, |m, &w| m.max(w));
        let slot = if self.used < self.capacity {
            self.used
        } else {
            // Smallest weight = oldest row (all decay at the same rate once online).
            (0..self.used)
                .min_by(|&a, &b| self.weights[a].total_cmp(&self.weights[b]))
                .expect("capacity > 0")
        };
        let weight = eta * sample_weight.max(0.0);
        if weight <= 0.0 {
            return;
        }
        let row = x.iter().zip(mean).map(|(&a, &m)| f64::from(a) - m);
        self.put(slot, row, weight);
        self.used = self.used.max(slot + 1);
        // Rows whose weight no longer counts keep `C⁻¹` finite: they are dropped by swapping
        // the last row into their slot.
        let floor = max.max(weight) * NEGLIGIBLE_WEIGHT;
        let mut r = 0;
        while r < self.used {
            if self.weights[r] < floor {
                self.remove(r);
            } else {
                r += 1;
            }
        }
    }

    /// Drops row `r` (the last row moves into its slot).
    fn remove(&mut self, r: usize) {
        let last = self.used - 1;
        let (d, cap) = (self.d, self.capacity);
        if r != last {
            self.rows.copy_within(last * d..(last + 1) * d, r * d);
            self.weights[r] = self.weights[last];
            for o in 0..self.used {
                let g = self.gram[last * cap + o];
                self.gram[r * cap + o] = g;
                self.gram[o * cap + r] = g;
            }
            self.gram[r * cap + r] = self.gram[last * cap + last];
        }
        self.used -= 1;
    }

    /// `coef_k = Σ⁻¹ μ_k`, `intercept_k = −½ μ_k·coef_k + ln prior_k` for every class.
    fn discriminant(
        &mut self,
        means: &[f64],
        priors: &[f64],
        coef: &mut [f64],
        intercept: &mut [f64],
    ) {
        let (d, m, cap) = (self.d, self.used, self.capacity);
        // A = C⁻¹ + G, factorised in place (positive definite: G ⪰ 0, C⁻¹ > 0).
        for i in 0..m {
            for j in 0..=i {
                let mut s = self.gram[i * cap + j];
                if i == j {
                    s += 1.0 / self.weights[i];
                }
                for k in 0..j {
                    s -= self.chol[i * cap + k] * self.chol[j * cap + k];
                }
                self.chol[i * cap + j] = if i == j {
                    s.max(f64::MIN_POSITIVE).sqrt()
                } else {
                    s / self.chol[j * cap + j]
                };
            }
        }
        for (k, prior) in priors.iter().enumerate() {
            let mu = &means[k * d..(k + 1) * d];
            for ((v, &a), &c) in self.v.iter_mut().zip(mu).zip(&self.inv_diag) {
                *v = a * c;
            }
            for r in 0..m {
                let row = &self.rows[r * d..(r + 1) * d];
                self.t[r] = row.iter().zip(&self.v).map(|(a, b)| a * b).sum();
            }
            // Solve L Lᵀ z = t.
            for i in 0..m {
                let mut s = self.t[i];
                for j in 0..i {
                    s -= self.chol[i * cap + j] * self.z[j];
                }
                self.z[i] = s / self.chol[i * cap + i];
            }
            for i in (0..m).rev() {
                let mut s = self.z[i];
                for j in i + 1..m {
                    s -= self.chol[j * cap + i] * self.z[j];
                }
                self.z[i] = s / self.chol[i * cap + i];
            }
            let w = &mut coef[k * d..(k + 1) * d];
            w.copy_from_slice(&self.v);
            for r in 0..m {
                let zr = self.z[r];
                let row = &self.rows[r * d..(r + 1) * d];
                for ((wi, &u), &c) in w.iter_mut().zip(row).zip(&self.inv_diag) {
                    *wi -= zr * u * c;
                }
            }
            let mw: f64 = mu.iter().zip(w.iter()).map(|(a, b)| a * b).sum();
            intercept[k] = -0.5 * mw + prior.ln();
        }
    }
}

/// Largest magnitude a stored parameter may have. Training on `f32` features never produces
/// more; a file with more (1e308) is corrupt or hostile and would overflow to ∞/NaN in the
/// first dot product.
pub(crate) const MAX_PARAMETER: f64 = 1e30;

/// `Err` naming `field` unless it has exactly `expected` values (`what` says why).
pub(crate) fn check_len(
    field: &str,
    found: usize,
    expected: Option<usize>,
    what: &str,
) -> std::result::Result<(), String> {
    match expected {
        Some(n) if n == found => Ok(()),
        Some(n) => Err(format!(
            "{field} has {found} value(s), expected {n} ({what})"
        )),
        None => Err(format!("{field}: {what} overflows")),
    }
}

/// `Err` naming `field` and the first bad index unless every value is finite and at most
/// [`MAX_PARAMETER`] in magnitude.
pub(crate) fn check_values<'a>(
    field: &str,
    values: impl IntoIterator<Item = &'a f64>,
) -> std::result::Result<(), String> {
    match values
        .into_iter()
        .position(|v| !(v.is_finite() && v.abs() <= MAX_PARAMETER))
    {
        None => Ok(()),
        Some(i) => Err(format!(
            "{field}[{i}] is not a finite number of magnitude at most {MAX_PARAMETER:e}"
        )),
    }
}

impl Lda {
    /// Checks a loaded model: shapes against each other and against `features` (the feature
    /// stage's dimension), finite and sane values. Field names are as in the model file.
    pub fn validate(&self, features: usize) -> std::result::Result<(), String> {
        let (k, d) = (self.classes, self.n_features);
        if k < 2 {
            return Err(format!("classes is {k}, expected at least 2"));
        }
        if d != features {
            return Err(format!(
                "n_features is {d}, but the feature stage makes {features} feature(s)"
            ));
        }
        let kd = k.checked_mul(d);
        let shape = format!("{k} classes x {d} features");
        check_len("priors", self.priors.len(), Some(k), "one per class")?;
        check_len("means", self.means.len(), kd, &shape)?;
        check_len("coef", self.coef.len(), kd, &shape)?;
        check_len("intercept", self.intercept.len(), Some(k), "one per class")?;
        check_len(
            "shrinkage_applied",
            self.shrinkage_applied.len(),
            Some(k),
            "one per class",
        )?;
        check_values("priors", &self.priors)?;
        check_values("means", &self.means)?;
        check_values("coef", &self.coef)?;
        check_values("intercept", &self.intercept)?;
        if let Some(i) = self.priors.iter().position(|p| !(*p > 0.0 && *p <= 1.0)) {
            return Err(format!(
                "priors[{i}] is {}, expected in (0, 1]",
                self.priors[i]
            ));
        }
        let sum: f64 = self.priors.iter().sum();
        if (sum - 1.0).abs() > 1e-6 {
            return Err(format!("priors sum to {sum}, expected 1"));
        }
        if let Some(i) = self
            .shrinkage_applied
            .iter()
            .position(|s| !(0.0..=1.0).contains(s))
        {
            return Err(format!(
                "shrinkage_applied[{i}] is {}, expected in [0, 1]",
                self.shrinkage_applied[i]
            ));
        }
        // The calibration covariance for online learning: absent in older files (then the
        // model does not learn from labels), else consistent.
        if !(self.cov_diag.is_empty() && self.cov_rows.is_empty() && self.cov_weights.is_empty()) {
            check_len("cov_diag", self.cov_diag.len(), Some(d), "one per feature")?;
            let rows = self.cov_weights.len();
            check_len(
                "cov_rows",
                self.cov_rows.len(),
                rows.checked_mul(d),
                &format!("{rows} calibration rows x {d} features"),
            )?;
            check_values("cov_diag", &self.cov_diag)?;
            check_values("cov_rows", &self.cov_rows)?;
            check_values("cov_weights", &self.cov_weights)?;
            if let Some(i) = self.cov_diag.iter().position(|v| *v < 0.0) {
                return Err(format!("cov_diag[{i}] is negative"));
            }
            if let Some(i) = self
                .cov_weights
                .iter()
                .position(|w| !(0.0..=1.0).contains(w))
            {
                return Err(format!("cov_weights[{i}] is not in [0, 1]"));
            }
            if !(0.0..=1.0).contains(&self.sample_weight) {
                return Err(format!(
                    "sample_weight is {}, expected in [0, 1]",
                    self.sample_weight
                ));
            }
        }
        Ok(())
    }
}

/// Numerically stable softmax (shift by the maximum so `exp` cannot overflow).
pub(super) fn softmax_in_place(v: &mut [f64]) {
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mut sum = 0.0;
    for x in v.iter_mut() {
        *x = (*x - max).exp();
        sum += *x;
    }
    for x in v.iter_mut() {
        *x /= sum;
    }
}

/// `w · x` for f64 weights and f32 features, with four independent accumulators so the
/// compiler can vectorise it (a single running sum is a serial dependency chain).
pub(super) fn dot_f32(w: &[f64], x: &[f32]) -> f64 {
    let mut acc = [0.0f64; 4];
    let (wc, xc) = (w.chunks_exact(4), x.chunks_exact(4));
    let (wr, xr) = (wc.remainder(), xc.remainder());
    for (a, b) in wc.zip(xc) {
        for l in 0..4 {
            acc[l] += a[l] * f64::from(b[l]);
        }
    }
    let mut tail = 0.0;
    for (a, b) in wr.iter().zip(xr) {
        tail += a * f64::from(*b);
    }
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}

/// Checks a training set shared by the decoders in this folder and returns the class count:
/// one label per row, finite features, labels `0..K` with `K ≥ 2` and every class present.
pub(super) fn check_training_set(
    name: &str,
    features: ArrayView2<'_, f32>,
    labels: &[usize],
) -> Result<usize> {
    let (n, d) = features.dim();
    if labels.len() != n {
        return Err(Error::Other(format!(
            "{name} fit: {} labels for {n} feature rows",
            labels.len()
        )));
    }
    if n == 0 || d == 0 {
        return Err(Error::Other(format!(
            "{name} fit: empty training set ({n} rows × {d} features)"
        )));
    }
    for ((i, j), v) in features.indexed_iter() {
        if !v.is_finite() {
            return Err(Error::Other(format!(
                "{name} fit: feature {j} of training row {i} is {v}; features must be finite"
            )));
        }
    }
    let classes = labels.iter().max().map_or(0, |&m| m + 1);
    let mut counts = vec![0usize; classes];
    for &l in labels {
        counts[l] += 1;
    }
    if classes < 2 {
        return Err(Error::Other(format!(
            "{name} fit: needs at least two classes, but every label is {}",
            labels[0]
        )));
    }
    if let Some(missing) = counts.iter().position(|&c| c == 0) {
        return Err(Error::Other(format!(
            "{name} fit: class {missing} has no examples (labels must be 0..{classes}, each present)"
        )));
    }
    Ok(classes)
}

/// Covariance of the centred rows of one class, shrunk; returns it with the intensity `s` used
/// and the diagonal of its shrinkage target (the covariance is `(1 − s)·rᵀr/n + diag(target)`).
fn shrunk_covariance(
    centred: Array2<f64>,
    mean: &[f64],
    shrinkage: Shrinkage,
) -> (Array2<f64>, f64, Vec<f64>) {
    let (n, d) = centred.dim();
    let nf = n as f64;
    match shrinkage {
        Shrinkage::Fixed(alpha) => {
            let mut cov = centred.t().dot(&centred) / nf;
            let mu = cov.diag().sum() / d as f64;
            cov *= 1.0 - alpha;
            cov.diag_mut().mapv_inplace(|v| v + alpha * mu);
            (cov, alpha, vec![alpha * mu; d])
        }
        Shrinkage::Auto => {
            // Standardise: features whose variance is within rounding error of zero keep
            // scale 1 (the bound scikit-learn's StandardScaler uses), as dividing by ~0 would
            // turn rounding noise into unit-variance signal.
            let scale: Vec<f64> = centred
                .columns()
                .into_iter()
                .zip(mean)
                .map(|(c, m)| {
                    let var = c.iter().map(|v| v * v).sum::<f64>() / nf;
                    let noise = nf * f64::EPSILON * var + (nf * m * f64::EPSILON).powi(2);
                    if var <= noise {
                        1.0
                    } else {
                        var.sqrt()
                    }
                })
                .collect();
            let mut z = centred;
            for mut row in z.rows_mut() {
                for (v, s) in row.iter_mut().zip(&scale) {
                    *v /= s;
                }
            }
            let mut cov = z.t().dot(&z) / nf;
            let s = ledoit_wolf_intensity(&z, &cov);
            let mu = cov.diag().sum() / d as f64;
            cov *= 1.0 - s;
            cov.diag_mut().mapv_inplace(|v| v + s * mu);
            for ((i, j), v) in cov.indexed_iter_mut() {
                *v *= scale[i] * scale[j];
            }
            let target = scale.iter().map(|c| s * mu * c * c).collect();
            (cov, s, target)
        }
    }
}

/// Ledoit–Wolf (2004) optimal shrinkage intensity towards `mu·I` for centred data `z` with
/// empirical covariance `cov = zᵀz/n`.
///
/// `δ = ‖cov − mu·I‖²_F / d` measures how far the sample covariance is from the target, `β`
/// estimates how much of that is sampling noise (`Σ_i ‖z_i z_iᵀ − cov‖²_F / n² / d`,
/// expanded so it needs only `O(n·d)` beyond `cov`); the intensity is `min(β, δ)/δ`.
fn ledoit_wolf_intensity(z: &Array2<f64>, cov: &Array2<f64>) -> f64 {
    let (n, d) = z.dim();
    if d == 1 {
        // One feature: shrinking towards its own variance changes nothing.
        return 0.0;
    }
    let (nf, df) = (n as f64, d as f64);
    let trace = cov.diag().sum();
    let mu = trace / df;
    let frob2: f64 = cov.iter().map(|v| v * v).sum();
    let fourth: f64 = z
        .rows()
        .into_iter()
        .map(|r| {
            let sq: f64 = r.iter().map(|v| v * v).sum();
            sq * sq
        })
        .sum();
    let beta = (fourth / nf - frob2) / (df * nf);
    let delta = (frob2 - 2.0 * mu * trace + df * mu * mu) / df;
    let beta = beta.min(delta);
    if beta == 0.0 {
        0.0
    } else {
        beta / delta
    }
}

/// Lower Cholesky factor `L` (`A = L Lᵀ`) of a symmetric matrix, row-major; `None` unless
/// positive definite (to working precision).
fn cholesky(a: &Array2<f64>) -> Option<Vec<f64>> {
    let d = a.nrows();
    let mut l = vec![0.0; d * d];
    // Pivots below this (relative to the largest diagonal entry) mean the matrix is singular
    // in double precision: solving would amplify rounding noise into the weights.
    let max_diag = a.diag().iter().fold(0.0f64, |m, &v| m.max(v.abs()));
    let tiny = max_diag * f64::EPSILON * d as f64;
    for i in 0..d {
        for j in 0..=i {
            let (ri, rj) = (&l[i * d..i * d + j], &l[j * d..j * d + j]);
            let s: f64 = ri.iter().zip(rj).map(|(x, y)| x * y).sum();
            let v = a[[i, j]] - s;
            if i == j {
                if v.is_nan() || v <= tiny {
                    return None;
                }
                l[i * d + i] = v.sqrt();
            } else {
                l[i * d + j] = v / l[j * d + j];
            }
        }
    }
    Some(l)
}

/// Solves `L Lᵀ x = b` by forward then backward substitution.
fn cholesky_solve(l: &[f64], b: &[f64]) -> Vec<f64> {
    let d = b.len();
    let mut y = b.to_vec();
    for i in 0..d {
        let s: f64 = (0..i).map(|k| l[i * d + k] * y[k]).sum();
        y[i] = (y[i] - s) / l[i * d + i];
    }
    for i in (0..d).rev() {
        let s: f64 = (i + 1..d).map(|k| l[k * d + i] * y[k]).sum();
        y[i] = (y[i] - s) / l[i * d + i];
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn cholesky_solves() {
        let a = array![[4.0, 2.0, 0.4], [2.0, 5.0, 1.0], [0.4, 1.0, 3.0]];
        let l = cholesky(&a).unwrap();
        let x = cholesky_solve(&l, &[1.0, 2.0, 3.0]);
        let back = a.dot(&ndarray::Array1::from(x));
        for (b, e) in back.iter().zip([1.0, 2.0, 3.0]) {
            assert!((b - e).abs() < 1e-12);
        }
        assert!(cholesky(&array![[1.0, 1.0], [1.0, 1.0]]).is_none());
    }

    #[test]
    fn shrinkage_config_parses_and_rejects() {
        let c: LdaConfig = toml::from_str("").unwrap();
        assert_eq!(c.shrinkage, Shrinkage::Auto);
        let c: LdaConfig = toml::from_str("shrinkage = \"auto\"").unwrap();
        assert_eq!(c.shrinkage, Shrinkage::Auto);
        let c: LdaConfig = toml::from_str("shrinkage = 0.25").unwrap();
        assert_eq!(c.shrinkage, Shrinkage::Fixed(0.25));
        let c: LdaConfig = toml::from_str("shrinkage = 1").unwrap();
        assert_eq!(c.shrinkage, Shrinkage::Fixed(1.0));
        let e = toml::from_str::<LdaConfig>("shrinkage = 1.5")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("decoder.shrinkage = 1.5") && e.contains("[0, 1]"),
            "{e}"
        );
        let e = toml::from_str::<LdaConfig>("shrinkage = \"lw\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("decoder.shrinkage"), "{e}");
        assert!(toml::from_str::<LdaConfig>("shrink = 0.1").is_err());
        let json = serde_json::to_string(&LdaConfig::default()).unwrap();
        assert!(
            json.starts_with(r#"{"shrinkage":"auto","online":{"mean_rate":"#),
            "{json}"
        );
    }

    #[test]
    fn ledoit_wolf_is_zero_for_one_feature_and_bounded() {
        let z = array![[1.0], [-1.0]];
        let cov = z.t().dot(&z) / 2.0;
        assert_eq!(ledoit_wolf_intensity(&z, &cov), 0.0);
        let z = array![[1.0, 0.5], [-1.0, 0.2], [0.0, -0.7]];
        let cov = z.t().dot(&z) / 3.0;
        let s = ledoit_wolf_intensity(&z, &cov);
        assert!((0.0..=1.0).contains(&s), "{s}");
    }
}
