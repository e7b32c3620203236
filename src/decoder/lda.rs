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
        for (k, rows) in members.iter().enumerate() {
            let prior = rows.len() as f64 / n as f64;
            let xk = x.select(Axis(0), rows);
            let mean = xk.mean_axis(Axis(0)).expect("every class has members");
            let centred = &xk - &mean;
            let (cov, s) = shrunk_covariance(centred, mean.as_slice().unwrap(), shrinkage);
            sigma.scaled_add(prior, &cov);
            means.row_mut(k).assign(&mean);
            priors.push(prior);
            applied.push(s);
        }

        let chol = cholesky(&sigma).ok_or_else(|| {
            Error::Other(format!(
                "LDA fit: the within-class covariance of {d} features from {n} examples is singular; \
                 use decoder.shrinkage = \"auto\" or a value above 0"
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

        *self = Lda {
            config: self.config.clone(),
            classes,
            n_features: d,
            priors,
            means: means.into_raw_vec_and_offset().0,
            coef,
            intercept,
            shrinkage_applied: applied,
        };
        Ok(())
    }

    fn predict_proba(&mut self, features: &[f32], probabilities: &mut [f64]) {
        self.decision_function(features, probabilities);
        softmax_in_place(probabilities);
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

/// Covariance of the centred rows of one class, shrunk; returns it with the intensity used.
fn shrunk_covariance(
    centred: Array2<f64>,
    mean: &[f64],
    shrinkage: Shrinkage,
) -> (Array2<f64>, f64) {
    let (n, d) = centred.dim();
    let nf = n as f64;
    match shrinkage {
        Shrinkage::Fixed(alpha) => {
            let mut cov = centred.t().dot(&centred) / nf;
            let mu = cov.diag().sum() / d as f64;
            cov *= 1.0 - alpha;
            cov.diag_mut().mapv_inplace(|v| v + alpha * mu);
            (cov, alpha)
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
            (cov, s)
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
        assert_eq!(json, r#"{"shrinkage":"auto"}"#);
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
