//! Calibrated probabilities for every decoder: a monotone map from a decoder's raw output to
//! probabilities that mean what they say, fitted on *out-of-fold* outputs of the calibration
//! data.
//!
//! # Why
//!
//! Raw decoder outputs are not probabilities a controller can threshold. Shrinkage LDA on
//! 2080 tangent-space features puts almost every window below 0.05 or above 0.95 (its
//! discriminant grows with the dimension, its accuracy does not), and a sigmoid fitted to a
//! model's outputs on its own training data inherits that over-confidence. So the map is
//! fitted on outputs for examples the model did not see: `evaluate::fit` runs an inner
//! stratified k-fold over the calibration trials (a fresh feature stage and decoder per inner
//! fold, so even the CSP filters or the tangent-space reference do not see the held-out trial)
//! and fits the map to the pooled held-out outputs; nothing of the outer test data is used.
//!
//! # The map
//!
//! Every decoder's raw output is a probability vector `p`; the map works on its log-odds, which
//! for LDA and the MLP are exactly their decision values (`ln p₁ − ln p₀ = δ₁ − δ₀`, the logit
//! difference), and for the SVM a monotone function of its decision value.
//!
//! - **Two classes: Platt scaling without offset** `p₁ = σ(slope · s)` on `s = ln p₁ − ln p₀`,
//!   the slope fitted by Newton's method with Platt's regularised targets (Lin, Lin & Weng
//!   2007), i.e. temperature scaling of the log-odds. The offset is held at 0 so calibration
//!   changes how confident the decoder is, never what it decides: with ≈45 calibration trials
//!   the fitted offset is mostly noise, and when the slope is small (a decoder near chance on
//!   held-out trials) even a small offset moves the decision boundary past every window, so
//!   every trial gets the same class (measured: accuracy fell to exactly 0.5 on 4 of 6
//!   subjects for band power + MLP with a free offset). The SVM's own sigmoid on its decision
//!   values keeps its offset, as in libsvm.
//!   The result is mixed with the uniform distribution so neither class gets less than
//!   `1/(n + 2)`, `n` the smaller class's calibration count (Platt's regularised target): a
//!   later run can shift the decision values far beyond anything the calibration saw
//!   (tangent space with LDA on S042: 97 % of trials beyond 0.05/0.95, log loss 6.0), and
//!   45 trials cannot support more confidence than that. The mixing is strictly increasing, so it keeps the
//!   ranking too.
//! - **More classes: temperature scaling** `softmax(ln p / T)`, `T` minimising the log loss
//!   (convex in `1/T`, so a golden-section search finds it).
//!
//! # The sign check
//!
//! Plain Platt scaling can *flip the sign*: when the held-out outputs happen to rank the classes
//! backwards (a decoder at chance on a small calibration set), the best-fitting sigmoid has a
//! negative slope, and every calibrated probability then ranks the classes opposite to the
//! decoder (a live user steered the wrong way: decision AUC 0.82, probability AUC 0.16 on one
//! subject). Here the slope is constrained to be positive: a fit that wants a slope below
//! [`MIN_SLOPE`]` / spread(s)` gets that small positive slope, i.e. probabilities near 0.5
//! ("this decoder's confidence means nothing on held-out data", which is the honest answer)
//! that still rank windows, and decide, as the decoder does. ([`fit_platt_increasing`], with
//! a free offset, is the SVM's version: there the offset then takes its best value.) The
//! temperature is positive by construction. So calibration never changes the ranking: the AUC
//! of the calibrated probability equals the AUC of the decision value, up to ties at the
//! extremes of double precision.

use ndarray::ArrayView2;
use serde::{Deserialize, Serialize};

use super::AnyDecoder;
use crate::error::{Error, Result};

/// Sets (or removes) `decoder`'s calibration, whatever its kind.
pub fn set(decoder: &mut AnyDecoder, calibration: Option<Calibration>) {
    match decoder {
        AnyDecoder::Lda(d) => d.set_calibration(calibration),
        AnyDecoder::Svm(d) => d.set_calibration(calibration),
        AnyDecoder::Mlp(d) => d.set_calibration(calibration),
    }
}

/// `decoder`'s calibration, if it has one.
pub fn of(decoder: &AnyDecoder) -> Option<&Calibration> {
    match decoder {
        AnyDecoder::Lda(d) => d.calibration(),
        AnyDecoder::Svm(d) => d.calibration(),
        AnyDecoder::Mlp(d) => d.calibration(),
    }
}

/// Smallest Platt slope allowed, relative to the spread (standard deviation) of the scores.
pub const MIN_SLOPE: f64 = 1e-3;

/// Log-odds are kept within ±this: a raw probability that underflowed to 0 would otherwise give
/// an infinite score.
const MAX_SCORE: f64 = 700.0;

/// A fitted map from raw decoder probabilities to calibrated ones.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "kind",
    rename_all = "snake_case",
    try_from = "StoredCalibration"
)]
pub enum Calibration {
    /// Two classes: `p₁ = floor + (1 − 2·floor) · σ(slope · (ln p₁ − ln p₀) + offset)`,
    /// `slope > 0`, `floor ∈ [0, 0.5)`.
    Platt {
        slope: f64,
        offset: f64,
        /// Neither class gets less than this (see [`Calibration::fit`]); 0 in model files
        /// written before it existed.
        #[serde(default)]
        floor: f64,
    },
    /// `K` classes: `softmax(ln p / temperature)`, `temperature > 0`.
    Temperature { temperature: f64 },
}

/// What a model file holds, checked before it becomes a [`Calibration`].
#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum StoredCalibration {
    Platt {
        slope: f64,
        offset: f64,
        #[serde(default)]
        floor: f64,
    },
    Temperature {
        temperature: f64,
    },
}

impl TryFrom<StoredCalibration> for Calibration {
    type Error = Error;

    fn try_from(s: StoredCalibration) -> Result<Self> {
        match s {
            StoredCalibration::Platt {
                slope,
                offset,
                floor,
            } => {
                if !(slope.is_finite() && slope > 0.0 && offset.is_finite()) {
                    return Err(Error::Other(format!(
                        "calibration: Platt slope {slope} and offset {offset}: the slope must be \
                         positive and both finite"
                    )));
                }
                if !(0.0..0.5).contains(&floor) {
                    return Err(Error::Other(format!(
                        "calibration: probability floor {floor} is outside [0, 0.5)"
                    )));
                }
                Ok(Calibration::Platt {
                    slope,
                    offset,
                    floor,
                })
            }
            StoredCalibration::Temperature { temperature } => {
                if !(temperature.is_finite() && temperature > 0.0) {
                    return Err(Error::Other(format!(
                        "calibration: temperature {temperature} must be positive and finite"
                    )));
                }
                Ok(Calibration::Temperature { temperature })
            }
        }
    }
}

fn log_odds(p: &[f64]) -> f64 {
    let ln = |v: f64| v.max(f64::MIN_POSITIVE).ln();
    (ln(p[1]) - ln(p[0])).clamp(-MAX_SCORE, MAX_SCORE)
}

/// `1/(1 + exp(−t))` without overflow for either sign.
fn sigmoid(t: f64) -> f64 {
    if t >= 0.0 {
        1.0 / (1.0 + (-t).exp())
    } else {
        let e = t.exp();
        e / (1.0 + e)
    }
}

impl Calibration {
    /// Calibrates the raw probabilities `p` (one row of a decoder's output) in place. Allocates
    /// nothing: it runs on the hot path after every `predict_proba`.
    pub fn apply(&self, p: &mut [f64]) {
        match *self {
            Calibration::Platt {
                slope,
                offset,
                floor,
            } if p.len() == 2 => {
                let p1 = floor + (1.0 - 2.0 * floor) * sigmoid(slope * log_odds(p) + offset);
                p[0] = 1.0 - p1;
                p[1] = p1;
            }
            Calibration::Platt { .. } => {}
            Calibration::Temperature { temperature } => {
                let beta = 1.0 / temperature;
                p.iter_mut()
                    .for_each(|v| *v = v.max(f64::MIN_POSITIVE).ln() * beta);
                let max = p.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let mut sum = 0.0;
                for v in p.iter_mut() {
                    *v = (*v - max).exp();
                    sum += *v;
                }
                p.iter_mut().for_each(|v| *v /= sum);
            }
        }
    }

    /// Fits the map to out-of-fold raw probabilities (one row per calibration example) and
    /// their labels. Two columns give Platt scaling with the sign check, more give temperature
    /// scaling.
    pub fn fit(probabilities: ArrayView2<'_, f64>, labels: &[usize]) -> Result<Calibration> {
        let (n, classes) = probabilities.dim();
        if n != labels.len() || n == 0 {
            return Err(Error::Other(format!(
                "calibration fit: {n} rows of probabilities for {} labels (need equal, non-zero)",
                labels.len()
            )));
        }
        if classes < 2 {
            return Err(Error::Other(format!(
                "calibration fit: {classes} probability column(s); needs at least 2"
            )));
        }
        if let Some((i, &l)) = labels.iter().enumerate().find(|(_, &l)| l >= classes) {
            return Err(Error::Other(format!(
                "calibration fit: label {l} of row {i} is not a class (0..{classes})"
            )));
        }
        if let Some(((i, k), v)) = probabilities
            .indexed_iter()
            .find(|(_, v)| !(0.0..=1.0).contains(*v))
        {
            return Err(Error::Other(format!(
                "calibration fit: probability {v} of class {k} in row {i} is outside [0, 1]"
            )));
        }
        let mut present = vec![false; classes];
        labels.iter().for_each(|&l| present[l] = true);
        if present.iter().filter(|&&p| p).count() < 2 {
            return Err(Error::Other(format!(
                "calibration fit: all {n} examples have label {}; needs at least 2 classes",
                labels[0]
            )));
        }
        if classes == 2 {
            let scores: Vec<f64> = probabilities
                .rows()
                .into_iter()
                .map(|r| log_odds(&[r[0], r[1]]))
                .collect();
            let targets: Vec<bool> = labels.iter().map(|&l| l == 1).collect();
            // Platt's regularised targets say it: n examples of a class support at most
            // (n+1)/(n+2). Mixing with the uniform distribution keeps every output inside that
            // and, being strictly increasing, keeps the ranking.
            let positives = targets.iter().filter(|&&t| t).count();
            let fewest = positives.min(n - positives) as f64;
            Ok(Calibration::Platt {
                slope: fit_slope(&scores, &targets),
                offset: 0.0,
                floor: 1.0 / (fewest + 2.0),
            })
        } else {
            Ok(Calibration::Temperature {
                temperature: fit_temperature(probabilities, labels),
            })
        }
    }
}

/// Platt's sigmoid `P(y = 1 | f) = σ(a·f + b)` fitted to scores `f` by Newton's method with a
/// backtracking line search (Lin, Lin & Weng 2007), with Platt's regularised targets
/// `(N₊+1)/(N₊+2)` and `1/(N₋+2)` (so separable data still gives a finite slope). No sign
/// constraint: `a` may come out negative. Returns `[a, b]`.
pub fn fit_platt(f: &[f64], y: &[bool]) -> [f64; 2] {
    let targets = platt_targets(y);
    let prior_offset = prior_log_odds(y);
    newton(f, &targets, [0.0, prior_offset], Free::Both)
}

/// [`fit_platt`] with the slope constrained to at least [`MIN_SLOPE`]` / spread(f)`: see the
/// module doc. Returns `[a, b]` with `a > 0`.
pub fn fit_platt_increasing(f: &[f64], y: &[bool]) -> [f64; 2] {
    let [a, b] = fit_platt(f, y);
    let floor = minimum_slope(f);
    if a >= floor {
        return [a, b];
    }
    let targets = platt_targets(y);
    let [_, b] = newton(f, &targets, [floor, b], Free::Offset);
    [floor, b]
}

/// The Platt slope with the offset held at 0, at least [`minimum_slope`]: the map of
/// [`Calibration::fit`] for two classes (see the module doc for why the offset stays 0).
pub fn fit_slope(f: &[f64], y: &[bool]) -> f64 {
    let targets = platt_targets(y);
    let [a, _] = newton(f, &targets, [1.0, 0.0], Free::Slope);
    a.max(minimum_slope(f))
}

/// The smallest slope [`fit_platt_increasing`] and [`fit_slope`] allow for these scores.
pub fn minimum_slope(f: &[f64]) -> f64 {
    let n = f.len().max(1) as f64;
    let mean = f.iter().sum::<f64>() / n;
    let spread = (f.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
    if spread > 0.0 && spread.is_finite() {
        MIN_SLOPE / spread
    } else {
        MIN_SLOPE
    }
}

fn platt_targets(y: &[bool]) -> Vec<f64> {
    let n_pos = y.iter().filter(|&&t| t).count() as f64;
    let n_neg = y.len() as f64 - n_pos;
    let hi = (n_pos + 1.0) / (n_pos + 2.0);
    let lo = 1.0 / (n_neg + 2.0);
    y.iter().map(|&p| if p { hi } else { lo }).collect()
}

fn prior_log_odds(y: &[bool]) -> f64 {
    let n_pos = y.iter().filter(|&&t| t).count() as f64;
    let n_neg = y.len() as f64 - n_pos;
    ((n_pos + 1.0) / (n_neg + 1.0)).ln()
}

/// Which Platt parameters [`newton`] moves.
#[derive(Clone, Copy, PartialEq)]
enum Free {
    Both,
    Offset,
    Slope,
}

/// Newton's method on the cross-entropy of `σ(a·f + b)` against `t`, moving the parameters
/// `free` says; the others stay at their start value.
fn newton(f: &[f64], t: &[f64], start: [f64; 2], free: Free) -> [f64; 2] {
    const MAX_ITER: usize = 100;
    const MIN_STEP: f64 = 1e-10;
    const SIGMA: f64 = 1e-12; // Hessian ridge: keeps the Newton system solvable
    const EPS: f64 = 1e-5;

    // Negative log-likelihood, written for either sign of a·f + b so nothing overflows.
    let objective = |a: f64, b: f64| -> f64 {
        f.iter()
            .zip(t)
            .map(|(&fi, &ti)| {
                let z = a * fi + b;
                if z >= 0.0 {
                    (1.0 - ti) * z + (-z).exp().ln_1p()
                } else {
                    -ti * z + z.exp().ln_1p()
                }
            })
            .sum()
    };
    let [mut a, mut b] = start;
    let mut fval = objective(a, b);
    for _ in 0..MAX_ITER {
        let (mut h11, mut h22, mut h21, mut g1, mut g2) = (SIGMA, SIGMA, 0.0, 0.0, 0.0);
        for (&fi, &ti) in f.iter().zip(t) {
            let p = sigmoid(a * fi + b);
            let d2 = p * (1.0 - p);
            h11 += fi * fi * d2;
            h22 += d2;
            h21 += fi * d2;
            let d1 = p - ti;
            g1 += fi * d1;
            g2 += d1;
        }
        match free {
            Free::Both => {}
            Free::Offset => (g1, h21, h11) = (0.0, 0.0, 1.0),
            Free::Slope => (g2, h21, h22) = (0.0, 0.0, 1.0),
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
            let nf = objective(na, nb);
            if nf < fval + 1e-4 * step * gd {
                (a, b, fval) = (na, nb, nf);
                improved = true;
                break;
            }
            step /= 2.0;
        }
        if !improved {
            // No descent possible at working precision: as good as this data allows.
            break;
        }
    }
    [a, b]
}

/// The temperature minimising the log loss of `softmax(ln p / T)`: golden-section search on
/// `β = 1/T ∈ [1e-3, 1e3]` (log-spaced), where the loss is convex in `β`.
fn fit_temperature(probabilities: ArrayView2<'_, f64>, labels: &[usize]) -> f64 {
    let classes = probabilities.ncols();
    let mut row = vec![0.0; classes];
    let mut loss = |log_beta: f64| -> f64 {
        let calibration = Calibration::Temperature {
            temperature: (-log_beta).exp(),
        };
        let mut total = 0.0;
        for (r, &label) in probabilities.rows().into_iter().zip(labels) {
            row.iter_mut().zip(r).for_each(|(o, &v)| *o = v);
            calibration.apply(&mut row);
            total -= row[label].max(1e-300).ln();
        }
        total
    };
    let ratio = (5f64.sqrt() - 1.0) / 2.0;
    let (mut lo, mut hi) = (1e-3f64.ln(), 1e3f64.ln());
    let mut x1 = hi - ratio * (hi - lo);
    let mut x2 = lo + ratio * (hi - lo);
    let (mut f1, mut f2) = (loss(x1), loss(x2));
    for _ in 0..80 {
        if f1 <= f2 {
            hi = x2;
            (x2, f2) = (x1, f1);
            x1 = hi - ratio * (hi - lo);
            f1 = loss(x1);
        } else {
            lo = x1;
            (x1, f1) = (x2, f2);
            x2 = lo + ratio * (hi - lo);
            f2 = loss(x2);
        }
    }
    (-(0.5 * (lo + hi))).exp()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decoder::metrics::roc_auc;
    use ndarray::Array2;

    fn as_probabilities(scores: &[f64]) -> Array2<f64> {
        Array2::from_shape_fn((scores.len(), 2), |(i, k)| {
            let p1 = sigmoid(scores[i]);
            if k == 1 {
                p1
            } else {
                1.0 - p1
            }
        })
    }

    #[test]
    fn platt_recovers_a_sigmoid() {
        // P(y=1|f) = σ(2f): a ≈ 2, b ≈ 0.
        let n = 4000;
        let f: Vec<f64> = (0..n).map(|i| -3.0 + 6.0 * i as f64 / n as f64).collect();
        let y: Vec<bool> = f
            .iter()
            .enumerate()
            .map(|(i, &fi)| ((i as f64 * 0.618_033_988_749_895) % 1.0) < sigmoid(2.0 * fi))
            .collect();
        let [a, b] = fit_platt_increasing(&f, &y);
        assert!((a - 2.0).abs() < 0.15 && b.abs() < 0.1, "a = {a}, b = {b}");
    }

    /// Held-out scores that rank the classes backwards: plain Platt flips the sign (and with it
    /// every ranking), the checked fit keeps the decoder's order with near-prior probabilities.
    #[test]
    fn plain_platt_flips_the_sign_the_checked_fit_does_not() {
        let n = 60;
        let y: Vec<bool> = (0..n).map(|i| i % 2 == 1).collect();
        // Out-of-fold scores anti-correlated with the labels, plus a deterministic jitter.
        let f: Vec<f64> = (0..n)
            .map(|i| if y[i] { -0.5 } else { 0.5 } + ((i * 37 % 11) as f64 - 5.0) * 0.2)
            .collect();
        let [a, _] = fit_platt(&f, &y);
        assert!(a < 0.0, "plain Platt should flip here, slope {a}");
        let calibration = Calibration::fit(as_probabilities(&f).view(), &y_labels(&y)).unwrap();
        let Calibration::Platt { slope, offset, .. } = calibration else {
            panic!("two classes give Platt, got {calibration:?}");
        };
        assert!(slope > 0.0 && offset.is_finite(), "{slope} {offset}");
        // On new scores the calibrated probability ranks exactly as the decision value.
        let test: Vec<f64> = (0..200).map(|i| -4.0 + 0.04 * i as f64).collect();
        let truth: Vec<bool> = (0..200).map(|i| (i * 7919) % 3 == 0 || i > 120).collect();
        let mut raw = as_probabilities(&test);
        let mut calibrated = Vec::new();
        for mut row in raw.rows_mut() {
            let row = row.as_slice_mut().unwrap();
            calibration.apply(row);
            calibrated.push(row[1]);
        }
        let auc_decision = roc_auc(&test, &truth).unwrap();
        let auc_probability = roc_auc(&calibrated, &truth).unwrap();
        assert_eq!(auc_decision, auc_probability);
        // And the probabilities say "no idea": close to 0.5.
        assert!(
            calibrated.iter().all(|p| (p - 0.5).abs() < 0.05),
            "{calibrated:?}"
        );
        let plain: Vec<f64> = test.iter().map(|&s| sigmoid(a * s)).collect();
        assert!(roc_auc(&plain, &truth).unwrap() < auc_decision);
    }

    fn y_labels(y: &[bool]) -> Vec<usize> {
        y.iter().map(|&t| usize::from(t)).collect()
    }

    #[test]
    fn over_confident_scores_are_shrunk() {
        // Scores ten times too large: the true model is σ(s / 10).
        let n = 2000;
        let s: Vec<f64> = (0..n).map(|i| -30.0 + 60.0 * i as f64 / n as f64).collect();
        let y: Vec<bool> = s
            .iter()
            .enumerate()
            .map(|(i, &si)| ((i as f64 * 0.754_877_666) % 1.0) < sigmoid(si / 10.0))
            .collect();
        let calibration = Calibration::fit(as_probabilities(&s).view(), &y_labels(&y)).unwrap();
        let Calibration::Platt { slope, .. } = calibration else {
            panic!()
        };
        assert!((slope - 0.1).abs() < 0.02, "slope {slope}");
    }

    #[test]
    fn temperature_scaling_three_classes() {
        // Probabilities from logits 4× too sharp.
        let n = 1500;
        let mut p = Array2::zeros((n, 3));
        let mut labels = Vec::new();
        for i in 0..n {
            let logits = [
                ((i * 13) % 17) as f64 / 4.0 - 2.0,
                ((i * 7) % 19) as f64 / 4.0 - 2.0,
                ((i * 5) % 23) as f64 / 4.0 - 2.0,
            ];
            let sharp: Vec<f64> = logits.iter().map(|l| (4.0 * l).exp()).collect();
            let total: f64 = sharp.iter().sum();
            for k in 0..3 {
                p[[i, k]] = sharp[k] / total;
            }
            let soft: Vec<f64> = logits.iter().map(|l| l.exp()).collect();
            let total: f64 = soft.iter().sum();
            let u = (i as f64 * 0.618_033_988_749_895) % 1.0;
            let label = if u < soft[0] / total {
                0
            } else if u < (soft[0] + soft[1]) / total {
                1
            } else {
                2
            };
            labels.push(label);
        }
        let c = Calibration::fit(p.view(), &labels).unwrap();
        let Calibration::Temperature { temperature } = c else {
            panic!()
        };
        assert!((temperature - 4.0).abs() < 0.6, "T = {temperature}");
        let mut row = [0.7, 0.2, 0.1];
        c.apply(&mut row);
        assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert!(row[0] > row[1] && row[1] > row[2] && row[0] < 0.7);
    }

    #[test]
    fn bad_input_and_bad_model_files_are_refused() {
        let p = ndarray::array![[0.5, 0.5], [0.2, 0.8]];
        assert!(Calibration::fit(p.view(), &[0]).is_err());
        assert!(Calibration::fit(p.view(), &[1, 1]).is_err());
        assert!(Calibration::fit(p.view(), &[0, 2]).is_err());
        assert!(Calibration::fit(ndarray::array![[1.5, -0.5]].view(), &[0]).is_err());
        for bad in [
            r#"{"kind":"platt","slope":-1.0,"offset":0.0}"#,
            r#"{"kind":"platt","slope":0.0,"offset":0.0}"#,
            r#"{"kind":"platt","slope":1.0,"offset":0.0,"floor":0.5}"#,
            r#"{"kind":"temperature","temperature":0.0}"#,
            r#"{"kind":"temperature","temperature":1.0,"extra":1}"#,
        ] {
            assert!(serde_json::from_str::<Calibration>(bad).is_err(), "{bad}");
        }
        let good = Calibration::Platt {
            slope: 0.5,
            offset: -0.1,
            floor: 0.02,
        };
        let text = serde_json::to_string(&good).unwrap();
        assert_eq!(serde_json::from_str::<Calibration>(&text).unwrap(), good);
        // A saturated raw output (p₀ underflowed to 0) stays finite and above the floor.
        let mut row = [0.0, 1.0];
        good.apply(&mut row);
        assert!(row.iter().all(|v| v.is_finite()) && row[1] > 0.5);
        assert!((row[0] - 0.02).abs() < 1e-12, "{row:?}");
        // Model files from before the floor load with none.
        let old: Calibration =
            serde_json::from_str(r#"{"kind":"platt","slope":0.5,"offset":0.0}"#).unwrap();
        assert!(matches!(old, Calibration::Platt { floor, .. } if floor == 0.0));
    }
}
