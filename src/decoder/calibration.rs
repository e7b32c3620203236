//! Probability calibration on top of any decoder: Platt scaling (two classes) or temperature
//! scaling (more classes), fitted on *out-of-fold* decision values and monotone increasing in
//! the decision value by construction.
//!
//! # Decision values
//!
//! Every decoder gives per-class scores through [`Decoder::decision_values`](super::Decoder::decision_values):
//! log-probabilities up to a per-window constant (LDA discriminants, the MLP's log-softmax,
//! `[0, f]` for a binary SVM, the one-vs-rest SVM's per-class `f_k`). With two classes the
//! one decision value is `s = score₁ − score₀` (positive = class 1), the log-odds for LDA and
//! the MLP and the SVM's `f`.
//!
//! # The calibrated probability
//!
//! - two classes: `p₁ = σ(slope · s + offset)` with `slope > 0`, fitted by Platt's method
//!   (Newton with a line search, Lin, Lin & Weng 2007, Platt's regularised targets so
//!   separable calibration data still gives a finite slope);
//! - `K > 2` classes: `p = softmax(scores / T)` with `T > 0`, fitted by minimising the
//!   negative log-likelihood over `1/T` (convex), with the same kind of regularised targets.
//!
//! Both are strictly increasing in the decision value, so the ranking of windows (and so the
//! ROC-AUC) is that of the decoder. A Platt fit whose slope comes out non-positive (the
//! out-of-fold decision values rank the classes the wrong way round, as happens near chance)
//! would *invert* the decoder's ranking: it is refused, a warning is logged, and the
//! sign-correct fit is stored instead: the slope fixed at a small positive value
//! ([`MIN_SLOPE_FRACTION`] over the spread of the decision values) and only the offset fitted.
//!
//! Applying a calibration ([`Calibration::apply`]) works in place on the score buffer and
//! allocates nothing: it runs once per window on the hot path.

use ndarray::ArrayView2;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The smallest slope a Platt fit keeps, as a fraction of `1 / std(s)` over the calibration
/// decision values: over ±2 standard deviations the log-odds then move by ±0.1 (p from about
/// 0.475 to 0.525). Only reached when the data say the decoder is at or below chance.
pub const MIN_SLOPE_FRACTION: f64 = 0.05;
/// Bounds of `1/T` for temperature scaling (`T` from 0.001 to 1000).
const MIN_INVERSE_TEMPERATURE: f64 = 1e-3;
const MAX_INVERSE_TEMPERATURE: f64 = 1e3;
/// Scores below this are treated as this (a log-probability of 0 is −∞).
pub const SCORE_FLOOR: f64 = -1e6;

/// How scores become probabilities.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case")]
pub enum CalibrationMap {
    /// Two classes: `p₁ = σ(slope · (score₁ − score₀) + offset)`, `slope > 0`.
    Platt { slope: f64, offset: f64 },
    /// `p = softmax(scores / temperature)`, `temperature > 0`.
    Temperature { temperature: f64 },
}

/// A fitted calibration, as stored in a model file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    pub map: CalibrationMap,
    pub classes: usize,
    /// Out-of-fold windows it was fitted on.
    pub fitted_on: usize,
    /// The unconstrained Platt fit's slope when it was refused (non-positive: it would have
    /// inverted the ranking) and replaced by the sign-correct fit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused_slope: Option<f64>,
}

/// `σ(t) = 1/(1 + e^(−t))` without overflow for either sign.
pub fn sigmoid(t: f64) -> f64 {
    if t >= 0.0 {
        1.0 / (1.0 + (-t).exp())
    } else {
        let e = t.exp();
        e / (1.0 + e)
    }
}

/// Softmax in place (max subtracted first, so nothing overflows).
pub fn softmax_in_place(v: &mut [f64]) {
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

/// `score₁ − score₀` of a two-class score row, scores floored at [`SCORE_FLOOR`].
pub fn binary_decision(scores: &[f64]) -> f64 {
    scores[1].max(SCORE_FLOOR) - scores[0].max(SCORE_FLOOR)
}

/// The result of a sigmoid fit `P(y=1|f) = 1/(1 + exp(A·f + B))` (libsvm's sign convention:
/// increasing in `f` needs `A < 0`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SigmoidFit {
    pub a: f64,
    pub b: f64,
    /// `Some(A)` when the unconstrained fit had `A ≥ −min_slope` (decreasing or flat) and was
    /// replaced by `A = −min_slope` with `B` refitted.
    pub refused_a: Option<f64>,
}

/// Platt's sigmoid fit, forced increasing in `f`: `A ≤ −min_slope`. The unconstrained fit
/// runs first; if it breaks the sign, only `B` is refitted with `A = −min_slope`.
pub fn fit_sigmoid_increasing(f: &[f64], y: &[bool], min_slope: f64) -> SigmoidFit {
    let [a, b] = fit_sigmoid(f, y);
    if a <= -min_slope {
        return SigmoidFit {
            a,
            b,
            refused_a: None,
        };
    }
    let a_fixed = -min_slope;
    SigmoidFit {
        a: a_fixed,
        b: fit_offset(f, y, a_fixed),
        refused_a: Some(a),
    }
}

/// [`fit_sigmoid_increasing`] with the slope floor [`MIN_SLOPE_FRACTION`] over the spread of
/// `f`: what [`Calibration::fit`] and the SVM's internal Platt fit use.
pub fn fit_platt_increasing(f: &[f64], y: &[bool]) -> SigmoidFit {
    fit_sigmoid_increasing(f, y, MIN_SLOPE_FRACTION / spread(f))
}

/// Platt's regularised targets `(N₊+1)/(N₊+2)` and `1/(N₋+2)`.
fn platt_targets(y: &[bool]) -> Vec<f64> {
    let n_pos = y.iter().filter(|&&t| t).count() as f64;
    let n_neg = y.len() as f64 - n_pos;
    let hi = (n_pos + 1.0) / (n_pos + 2.0);
    let lo = 1.0 / (n_neg + 2.0);
    y.iter().map(|&p| if p { hi } else { lo }).collect()
}

/// `P(y = 1 | f) = 1/(1 + exp(A·f + B))`.
pub fn platt_probability(f: f64, [a, b]: [f64; 2]) -> f64 {
    sigmoid(-(a * f + b))
}

/// Negative log-likelihood of `1/(1 + exp(A f + B))` against soft targets `t`.
fn sigmoid_objective(f: &[f64], t: &[f64], a: f64, b: f64) -> f64 {
    f.iter()
        .zip(t)
        .map(|(&fi, &ti)| {
            let z = a * fi + b;
            if z >= 0.0 {
                ti * z + (-z).exp().ln_1p()
            } else {
                (ti - 1.0) * z + z.exp().ln_1p()
            }
        })
        .sum()
}

/// Fits Platt's sigmoid to decision values `f` and targets `y` by Newton's method with a
/// backtracking line search (Lin, Lin & Weng 2007), unconstrained: `A` may come out with
/// either sign. Targets are Platt's regularised ones, so perfectly separated calibration data
/// still gives a finite `A`.
pub fn fit_sigmoid(f: &[f64], y: &[bool]) -> [f64; 2] {
    const MAX_ITER: usize = 100;
    const MIN_STEP: f64 = 1e-10;
    const SIGMA: f64 = 1e-12; // Hessian ridge: keeps the Newton system solvable
    const EPS: f64 = 1e-5;

    let n_pos = y.iter().filter(|&&t| t).count() as f64;
    let n_neg = y.len() as f64 - n_pos;
    let t = platt_targets(y);
    let mut a = 0.0;
    let mut b = ((n_neg + 1.0) / (n_pos + 1.0)).ln();
    let mut fval = sigmoid_objective(f, &t, a, b);
    for _ in 0..MAX_ITER {
        let (mut h11, mut h22, mut h21, mut g1, mut g2) = (SIGMA, SIGMA, 0.0, 0.0, 0.0);
        for (&fi, &ti) in f.iter().zip(&t) {
            let p = platt_probability(fi, [a, b]);
            let d2 = p * (1.0 - p);
            h11 += fi * fi * d2;
            h22 += d2;
            h21 += fi * d2;
            let d1 = ti - p;
            g1 += fi * d1;
            g2 += d1;
        }
        if g1.abs() < EPS && g2.abs() < EPS {
            break;
        }
        let det = h11 * h22 - h21 * h21;
        let da = -(h22 * g1 - h21 * g2) / det;
        let db = -(-h21 * g1 + h11 * g2) / det;
        let gd = g1 * da + g2 * db;
        let mut step = 1.0;
        let mut improved = false;
        while step >= MIN_STEP {
            let (na, nb) = (a + step * da, b + step * db);
            let nf = sigmoid_objective(f, &t, na, nb);
            if nf < fval + 1e-4 * step * gd {
                (a, b, fval) = (na, nb, nf);
                improved = true;
                break;
            }
            step /= 2.0;
        }
        if !improved {
            // No descent possible at working precision.
            break;
        }
    }
    [a, b]
}

/// `B` minimising the sigmoid objective with `A` fixed (1-D Newton with a line search; the
/// objective is convex in `B`).
fn fit_offset(f: &[f64], y: &[bool], a: f64) -> f64 {
    let t = platt_targets(y);
    let n_pos = y.iter().filter(|&&t| t).count() as f64;
    let n_neg = y.len() as f64 - n_pos;
    let mut b = ((n_neg + 1.0) / (n_pos + 1.0)).ln();
    let mut fval = sigmoid_objective(f, &t, a, b);
    for _ in 0..100 {
        let (mut g, mut h) = (0.0, 1e-12);
        for (&fi, &ti) in f.iter().zip(&t) {
            let p = platt_probability(fi, [a, b]);
            g += ti - p;
            h += p * (1.0 - p);
        }
        if g.abs() < 1e-9 {
            break;
        }
        let db = -g / h;
        let mut step = 1.0;
        let mut improved = false;
        while step >= 1e-10 {
            let nb = b + step * db;
            let nf = sigmoid_objective(f, &t, a, nb);
            if nf <= fval {
                (b, fval) = (nb, nf);
                improved = true;
                break;
            }
            step /= 2.0;
        }
        if !improved {
            break;
        }
    }
    b
}

/// Population standard deviation (1 when the values are constant or there are none).
fn spread(values: &[f64]) -> f64 {
    let n = values.len() as f64;
    if values.is_empty() {
        return 1.0;
    }
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    if var.is_finite() && var > 0.0 {
        var.sqrt()
    } else {
        1.0
    }
}

impl Calibration {
    /// Fit on out-of-fold `scores` (one row per window, one column per class, as
    /// [`Decoder::decision_values`](super::Decoder::decision_values) writes them) and the true
    /// `labels`. Errors on mismatched or non-finite input, or fewer than two classes present.
    pub fn fit(scores: ArrayView2<'_, f64>, labels: &[usize]) -> Result<Calibration> {
        let (n, classes) = scores.dim();
        if n != labels.len() {
            return Err(Error::Other(format!(
                "calibration: {n} score rows but {} labels",
                labels.len()
            )));
        }
        if classes < 2 {
            return Err(Error::Other(format!(
                "calibration: needs at least 2 classes, got {classes}"
            )));
        }
        if let Some(i) = labels.iter().position(|&l| l >= classes) {
            return Err(Error::Other(format!(
                "calibration: label {} of window {i} is not below {classes}",
                labels[i]
            )));
        }
        if let Some(i) = scores.iter().position(|s| s.is_nan()) {
            return Err(Error::Other(format!(
                "calibration: score {i} (row-major) is NaN"
            )));
        }
        let mut present = vec![false; classes];
        labels.iter().for_each(|&l| present[l] = true);
        if present.iter().filter(|&&p| p).count() < 2 {
            return Err(Error::Other(
                "calibration: the windows hold fewer than two classes".into(),
            ));
        }
        let (map, refused_slope) = if classes == 2 {
            let f: Vec<f64> = scores
                .rows()
                .into_iter()
                .map(|r| binary_decision(&[r[0], r[1]]))
                .collect();
            let y: Vec<bool> = labels.iter().map(|&l| l == 1).collect();
            let fit = fit_platt_increasing(&f, &y);
            if let Some(a) = fit.refused_a {
                tracing::warn!(
                    "calibration: the Platt fit on {n} out-of-fold windows has slope {:.4} \
                     (it would invert the decoder's ranking: the decoder is at or below chance); \
                     refused, stored the sign-correct fit with slope {:.4}",
                    -a,
                    -fit.a
                );
            }
            let map = CalibrationMap::Platt {
                slope: -fit.a,
                offset: -fit.b,
            };
            (map, fit.refused_a.map(|a| -a))
        } else {
            let temperature = 1.0 / fit_inverse_temperature(scores, labels);
            (CalibrationMap::Temperature { temperature }, None)
        };
        Ok(Calibration {
            map,
            classes,
            fitted_on: n,
            refused_slope,
        })
    }

    /// Turn one window's scores into calibrated probabilities, in place. No allocation.
    pub fn apply(&self, scores: &mut [f64]) {
        debug_assert_eq!(scores.len(), self.classes);
        match self.map {
            CalibrationMap::Platt { slope, offset } => {
                let p1 = sigmoid(slope * binary_decision(scores) + offset);
                scores[0] = 1.0 - p1;
                scores[1] = p1;
            }
            CalibrationMap::Temperature { temperature } => {
                let beta = 1.0 / temperature;
                for s in scores.iter_mut() {
                    *s = s.max(SCORE_FLOOR) * beta;
                }
                softmax_in_place(scores);
            }
        }
    }

    /// Checks a loaded calibration against the decoder's class count: sign and finiteness.
    pub fn validate(&self, classes: usize) -> std::result::Result<(), String> {
        if self.classes != classes {
            return Err(format!(
                "calibration.classes is {}, the decoder has {classes}",
                self.classes
            ));
        }
        match self.map {
            CalibrationMap::Platt { slope, offset } => {
                if classes != 2 {
                    return Err(format!(
                        "calibration: Platt scaling is for 2 classes, the decoder has {classes}"
                    ));
                }
                if !(slope.is_finite() && slope > 0.0 && slope < 1e30) {
                    return Err(format!(
                        "calibration.slope is {slope}, expected a positive finite number \
                         (a non-positive slope would invert the decoder's ranking)"
                    ));
                }
                if !(offset.is_finite() && offset.abs() < 1e30) {
                    return Err(format!("calibration.offset is {offset}, expected finite"));
                }
            }
            CalibrationMap::Temperature { temperature } => {
                if !(temperature.is_finite() && temperature > 0.0 && temperature < 1e30) {
                    return Err(format!(
                        "calibration.temperature is {temperature}, expected a positive finite number"
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Regularised negative log-likelihood of `softmax(β · scores)` and its first two
/// derivatives in `β`. The target of the true class is `(N_k+1)/(N_k+2)` (Platt's), the rest
/// shared out over the other classes.
fn temperature_objective(
    scores: ArrayView2<'_, f64>,
    labels: &[usize],
    targets: &[f64],
    beta: f64,
) -> (f64, f64, f64) {
    let classes = scores.ncols();
    let (mut value, mut d1, mut d2) = (0.0, 0.0, 0.0);
    for (row, &label) in scores.rows().into_iter().zip(labels) {
        let hi = targets[label];
        let lo = (1.0 - hi) / (classes - 1) as f64;
        let max = row
            .iter()
            .map(|s| s.max(SCORE_FLOOR))
            .fold(f64::NEG_INFINITY, f64::max);
        // log Σ exp(β (s_k − max)), with the softmax moments E[s] and Var[s].
        let (mut z, mut m1, mut m2) = (0.0, 0.0, 0.0);
        for &s in row.iter() {
            let d = s.max(SCORE_FLOOR) - max;
            let e = (beta * d).exp();
            z += e;
            m1 += e * d;
            m2 += e * d * d;
        }
        let (mean, second) = (m1 / z, m2 / z);
        let log_z = z.ln();
        for (k, &s) in row.iter().enumerate() {
            let t = if k == label { hi } else { lo };
            let d = s.max(SCORE_FLOOR) - max;
            // −t · log p_k = −t (β d − log Z)
            value -= t * (beta * d - log_z);
            d1 -= t * (d - mean);
        }
        d2 += second - mean * mean;
    }
    (value, d1, d2)
}

/// `β = 1/T` minimising the regularised NLL, within the bounds: Newton with a safeguard by
/// bisection (the objective is convex in `β`).
fn fit_inverse_temperature(scores: ArrayView2<'_, f64>, labels: &[usize]) -> f64 {
    let classes = scores.ncols();
    let mut counts = vec![0usize; classes];
    labels.iter().for_each(|&l| counts[l] += 1);
    let targets: Vec<f64> = counts
        .iter()
        .map(|&c| (c as f64 + 1.0) / (c as f64 + 2.0))
        .collect();
    let (mut lo, mut hi) = (MIN_INVERSE_TEMPERATURE, MAX_INVERSE_TEMPERATURE);
    let derivative = |beta: f64| temperature_objective(scores, labels, &targets, beta).1;
    if derivative(lo) >= 0.0 {
        return lo;
    }
    if derivative(hi) <= 0.0 {
        return hi;
    }
    let mut beta = 1.0f64.clamp(lo, hi);
    for _ in 0..200 {
        let (_, g, h) = temperature_objective(scores, labels, &targets, beta);
        if g.abs() < 1e-10 {
            break;
        }
        if g > 0.0 {
            hi = beta;
        } else {
            lo = beta;
        }
        let newton = beta - g / h;
        beta = if h > 0.0 && newton > lo && newton < hi {
            newton
        } else {
            0.5 * (lo + hi)
        };
        if hi - lo < 1e-12 * hi {
            break;
        }
    }
    beta
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    #[test]
    fn platt_fit_recovers_a_sigmoid() {
        // Decision values with P(y=1|f) = σ(2f): A ≈ −2, B ≈ 0.
        let n = 4000;
        let f: Vec<f64> = (0..n).map(|i| -3.0 + 6.0 * i as f64 / n as f64).collect();
        let y: Vec<bool> = f
            .iter()
            .enumerate()
            .map(|(i, &fi)| ((i as f64 * 0.618_033_988_749_895) % 1.0) < sigmoid(2.0 * fi))
            .collect();
        let [a, b] = fit_sigmoid(&f, &y);
        assert!((a + 2.0).abs() < 0.15 && b.abs() < 0.1, "A = {a}, B = {b}");
        let fit = fit_sigmoid_increasing(&f, &y, 0.01);
        assert_eq!((fit.a, fit.b, fit.refused_a), (a, b, None));
    }

    #[test]
    fn temperature_recovers_a_scale() {
        // Three classes, scores 3× too confident: T ≈ 3.
        let n = 3000;
        let mut scores = Array2::<f64>::zeros((n, 3));
        let mut labels = Vec::new();
        for i in 0..n {
            let label = i % 3;
            let u = (i as f64 * 0.618_033_988_749_895) % 1.0;
            let strength = 0.5 + 2.0 * ((i as f64 * 0.754_877_666) % 1.0);
            // True logits: `strength` on one class; the sampled label follows them.
            let mut logits = [0.0; 3];
            logits[label] = strength;
            let mut p = logits;
            softmax_in_place(&mut p);
            let drawn = if u < p[0] {
                0
            } else if u < p[0] + p[1] {
                1
            } else {
                2
            };
            for k in 0..3 {
                scores[[i, k]] = 3.0 * logits[k];
            }
            labels.push(drawn);
        }
        let c = Calibration::fit(scores.view(), &labels).unwrap();
        let CalibrationMap::Temperature { temperature } = c.map else {
            panic!("{c:?}")
        };
        assert!((temperature - 3.0).abs() < 0.4, "T = {temperature}");
        let mut row = [3.0, 0.0, 0.0];
        c.apply(&mut row);
        assert!(row[0] > row[1] && (row.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn bad_input_is_refused() {
        let s = Array2::<f64>::zeros((3, 2));
        assert!(Calibration::fit(s.view(), &[0, 1]).is_err());
        assert!(Calibration::fit(s.view(), &[0, 0, 0]).is_err());
        assert!(Calibration::fit(s.view(), &[0, 1, 2]).is_err());
        let mut s = s;
        s[[1, 1]] = f64::NAN;
        assert!(Calibration::fit(s.view(), &[0, 1, 0]).is_err());
    }
}
