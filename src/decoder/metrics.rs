//! Evaluation metrics for decoders: accuracy, ROC-AUC, confusion matrix, Cohen's kappa and the
//! Wolpaw information transfer rate, plus [`Report`], the bundle the `evaluate` command prints
//! as JSON.
//!
//! Conventions follow scikit-learn so numbers can be compared with published BCI results
//! computed in Python: [`roc_auc`] equals `roc_auc_score` (ties count one half),
//! [`cohen_kappa`] equals `cohen_kappa_score` (unweighted), confusion matrices have true
//! classes as rows and predicted classes as columns. Every function checks its inputs and
//! returns an error naming what is wrong instead of silently producing a number from
//! mismatched vectors.

use ndarray::ArrayView2;
use serde::Serialize;

use crate::error::{Error, Result};

fn check_same_length(what: &str, a: usize, b: usize) -> Result<()> {
    if a != b {
        return Err(Error::Other(format!(
            "{what}: {a} true labels but {b} predictions"
        )));
    }
    if a == 0 {
        return Err(Error::Other(format!("{what}: no examples")));
    }
    Ok(())
}

/// Fraction of positions where `predicted` equals `truth`.
pub fn accuracy(truth: &[usize], predicted: &[usize]) -> Result<f64> {
    check_same_length("accuracy", truth.len(), predicted.len())?;
    let correct = truth.iter().zip(predicted).filter(|(t, p)| t == p).count();
    Ok(correct as f64 / truth.len() as f64)
}

/// Area under the ROC curve of `scores` (higher = more likely positive) against `positives`.
///
/// Computed as the Mann–Whitney statistic: the probability that a random positive scores above
/// a random negative, ties counting one half — the same number as the trapezoidal ROC area
/// scikit-learn computes. The count is kept as an exact integer (twice the U statistic) and
/// divided once at the end, so the result is correctly rounded and does not depend on the
/// input order.
pub fn roc_auc(scores: &[f64], positives: &[bool]) -> Result<f64> {
    if scores.len() != positives.len() {
        return Err(Error::Other(format!(
            "roc_auc: {} scores but {} labels",
            scores.len(),
            positives.len()
        )));
    }
    if let Some(i) = scores.iter().position(|s| s.is_nan()) {
        return Err(Error::Other(format!("roc_auc: score {i} is NaN")));
    }
    let n_pos = positives.iter().filter(|&&p| p).count() as u128;
    let n_neg = positives.len() as u128 - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return Err(Error::Other(format!(
            "roc_auc: undefined with {n_pos} positive and {n_neg} negative examples (need both)"
        )));
    }

    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));

    // Walk groups of equal scores from lowest to highest. Each positive beats every negative
    // below its group (2 half-points each) and ties with every negative inside it (1 each).
    let mut twice_u: u128 = 0;
    let mut negatives_below: u128 = 0;
    let mut start = 0;
    while start < order.len() {
        let value = scores[order[start]];
        let mut end = start;
        let (mut pos, mut neg) = (0u128, 0u128);
        // -0.0 and 0.0 are the same score: compare with ==, not total_cmp.
        while end < order.len() && scores[order[end]] == value {
            if positives[order[end]] {
                pos += 1;
            } else {
                neg += 1;
            }
            end += 1;
        }
        twice_u += pos * (2 * negatives_below + neg);
        negatives_below += neg;
        start = end;
    }
    Ok(twice_u as f64 / (2 * n_pos * n_neg) as f64)
}

/// Confusion matrix: `matrix[t][p]` counts examples of true class `t` predicted as `p`.
pub fn confusion_matrix(
    truth: &[usize],
    predicted: &[usize],
    classes: usize,
) -> Result<Vec<Vec<usize>>> {
    check_same_length("confusion_matrix", truth.len(), predicted.len())?;
    let mut matrix = vec![vec![0usize; classes]; classes];
    for (i, (&t, &p)) in truth.iter().zip(predicted).enumerate() {
        if t >= classes || p >= classes {
            return Err(Error::Other(format!(
                "confusion_matrix: example {i} has true label {t} and prediction {p}, but labels must be below {classes}"
            )));
        }
        matrix[t][p] += 1;
    }
    Ok(matrix)
}

/// Cohen's kappa (unweighted): agreement between `truth` and `predicted` corrected for the
/// agreement expected by chance from the two label distributions.
///
/// When chance agreement is already 1 (both vectors use one and the same class only) kappa is
/// 0/0; like scikit-learn we return NaN rather than invent a value (it serialises as `null`).
pub fn cohen_kappa(truth: &[usize], predicted: &[usize], classes: usize) -> Result<f64> {
    let matrix = confusion_matrix(truth, predicted, classes)?;
    Ok(kappa_from_confusion(&matrix))
}

fn kappa_from_confusion(matrix: &[Vec<usize>]) -> f64 {
    // kappa = 1 − (observed disagreement)/(chance disagreement). Both are kept as exact
    // integer counts (scaled by n) so the single division at the end is correctly rounded.
    let classes = matrix.len();
    let n: u128 = matrix.iter().flatten().map(|&c| c as u128).sum();
    let agree: u128 = (0..classes).map(|k| matrix[k][k] as u128).sum();
    let chance_agree: u128 = (0..classes)
        .map(|k| {
            let row: u128 = matrix[k].iter().map(|&c| c as u128).sum();
            let col: u128 = matrix.iter().map(|r| r[k] as u128).sum();
            row * col
        })
        .sum();
    let observed = (n - agree) * n;
    let chance = n * n - chance_agree;
    if chance == 0 {
        return f64::NAN;
    }
    1.0 - observed as f64 / chance as f64
}

/// Wolpaw information transfer rate in bits per selection:
/// `B = log2 N + P log2 P + (1 − P) log2((1 − P)/(N − 1))`.
///
/// Defined as 0 at or below chance (`P ≤ 1/N`): the formula would go back up there, which
/// would reward a decoder for being reliably wrong. `P = 1` gives `log2 N` (the `0 log 0`
/// term is taken as its limit, 0).
pub fn itr_bits_per_selection(accuracy: f64, classes: usize) -> Result<f64> {
    if classes < 2 {
        return Err(Error::Other(format!(
            "itr: needs at least 2 classes, got {classes}"
        )));
    }
    if !(0.0..=1.0).contains(&accuracy) {
        return Err(Error::Other(format!(
            "itr: accuracy {accuracy} is outside [0, 1]"
        )));
    }
    let n = classes as f64;
    let p = accuracy;
    if p <= 1.0 / n {
        return Ok(0.0);
    }
    let mut bits = n.log2() + p * p.log2();
    if p < 1.0 {
        bits += (1.0 - p) * ((1.0 - p) / (n - 1.0)).log2();
    }
    Ok(bits)
}

/// Wolpaw information transfer rate in bits per minute, for one selection every
/// `seconds_per_selection` seconds (trial length plus any pause between trials).
pub fn itr_bits_per_minute(
    accuracy: f64,
    classes: usize,
    seconds_per_selection: f64,
) -> Result<f64> {
    if !(seconds_per_selection.is_finite() && seconds_per_selection > 0.0) {
        return Err(Error::Other(format!(
            "itr: seconds per selection must be positive, got {seconds_per_selection}"
        )));
    }
    Ok(itr_bits_per_selection(accuracy, classes)? * 60.0 / seconds_per_selection)
}

/// Evaluation summary written by the `evaluate` command as JSON.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Number of evaluated examples.
    pub n: usize,
    pub classes: usize,
    pub accuracy: f64,
    /// ROC-AUC of the class-1 probability; only for two classes with both present in `truth`.
    pub auc: Option<f64>,
    /// Cohen's kappa; NaN (`null` in JSON) when undefined, see [`cohen_kappa`].
    pub kappa: f64,
    /// `confusion[true][predicted]`.
    pub confusion: Vec<Vec<usize>>,
    /// Seconds per selection used for the ITR, if one was given.
    pub seconds_per_selection: Option<f64>,
    /// Wolpaw ITR in bits per minute, if `seconds_per_selection` was given.
    pub itr_bits_per_minute: Option<f64>,
    /// Brier score of the probabilities (lower is better; see [`brier_score`]); `None` from
    /// hard labels.
    pub brier: Option<f64>,
    /// Mean negative log-likelihood of the true class (see [`log_loss`]); `None` from hard
    /// labels.
    pub log_loss: Option<f64>,
    /// Share of examples whose most probable class has p > 0.95 (for two classes: p < 0.05 or
    /// p > 0.95). A well-calibrated decoder at 70 % accuracy has few; one that puts nearly
    /// every window there makes a confidence threshold useless.
    pub confident_share: Option<f64>,
}

impl Report {
    /// Report from hard predictions (no AUC: it needs scores).
    pub fn from_labels(
        truth: &[usize],
        predicted: &[usize],
        classes: usize,
        seconds_per_selection: Option<f64>,
    ) -> Result<Report> {
        let confusion = confusion_matrix(truth, predicted, classes)?;
        let accuracy = accuracy(truth, predicted)?;
        let itr = seconds_per_selection
            .map(|s| itr_bits_per_minute(accuracy, classes, s))
            .transpose()?;
        Ok(Report {
            n: truth.len(),
            classes,
            accuracy,
            auc: None,
            kappa: kappa_from_confusion(&confusion),
            confusion,
            seconds_per_selection,
            itr_bits_per_minute: itr,
            brier: None,
            log_loss: None,
            confident_share: None,
        })
    }

    /// Report from class probabilities (one row per example, as
    /// [`Decoder::predict_proba`](super::Decoder::predict_proba) writes them). The prediction
    /// is the most probable class (the lowest index on exact ties); with two classes the AUC
    /// is computed from the class-1 probability.
    pub fn from_probabilities(
        truth: &[usize],
        probabilities: ArrayView2<'_, f64>,
        seconds_per_selection: Option<f64>,
    ) -> Result<Report> {
        let classes = probabilities.ncols();
        check_same_length("report", truth.len(), probabilities.nrows())?;
        let predicted: Vec<usize> = probabilities
            .rows()
            .into_iter()
            .map(|row| {
                row.iter()
                    .enumerate()
                    .fold((0, f64::NEG_INFINITY), |best, (k, &p)| {
                        if p > best.1 {
                            (k, p)
                        } else {
                            best
                        }
                    })
                    .0
            })
            .collect();
        let mut report = Report::from_labels(truth, &predicted, classes, seconds_per_selection)?;
        if classes == 2 {
            let scores: Vec<f64> = probabilities.column(1).to_vec();
            let positives: Vec<bool> = truth.iter().map(|&t| t == 1).collect();
            // AUC is undefined when the test set holds one class only: leave it out rather
            // than fail the whole report.
            report.auc = roc_auc(&scores, &positives).ok();
        }
        report.brier = Some(brier_score(truth, probabilities)?);
        report.log_loss = Some(log_loss(truth, probabilities)?);
        report.confident_share = Some(confident_share(probabilities, CONFIDENT));
        Ok(report)
    }
}

/// Probability beyond which (or below one minus which) a two-class output counts as confident.
pub const CONFIDENT: f64 = 0.95;

fn check_probabilities(
    what: &str,
    truth: &[usize],
    probabilities: ArrayView2<'_, f64>,
) -> Result<()> {
    check_same_length(what, truth.len(), probabilities.nrows())?;
    let classes = probabilities.ncols();
    if let Some((i, &t)) = truth.iter().enumerate().find(|(_, &t)| t >= classes) {
        return Err(Error::Other(format!(
            "{what}: example {i} has true label {t}, but there are only {classes} probability columns"
        )));
    }
    if let Some(((i, k), p)) = probabilities
        .indexed_iter()
        .find(|(_, p)| !(0.0..=1.0).contains(*p))
    {
        return Err(Error::Other(format!(
            "{what}: probability {p} of class {k} for example {i} is outside [0, 1]"
        )));
    }
    Ok(())
}

/// Brier score. Two classes: `mean (p₁ − y)²`, scikit-learn's `brier_score_loss` (0 perfect,
/// 0.25 for a constant 0.5). More classes: Brier's original `mean Σₖ (pₖ − [y = k])²`.
pub fn brier_score(truth: &[usize], probabilities: ArrayView2<'_, f64>) -> Result<f64> {
    check_probabilities("brier", truth, probabilities)?;
    let binary = probabilities.ncols() == 2;
    let total: f64 = probabilities
        .rows()
        .into_iter()
        .zip(truth)
        .map(|(row, &t)| {
            if binary {
                let y = if t == 1 { 1.0 } else { 0.0 };
                (row[1] - y).powi(2)
            } else {
                row.iter()
                    .enumerate()
                    .map(|(k, &p)| (p - if k == t { 1.0 } else { 0.0 }).powi(2))
                    .sum()
            }
        })
        .sum();
    Ok(total / truth.len() as f64)
}

/// Mean `−ln p(true class)`, with p clipped to `[1e-15, 1]` as scikit-learn's `log_loss` does
/// (a single p = 0 would otherwise make it infinite). 0.693 for a constant 0.5 on two classes.
pub fn log_loss(truth: &[usize], probabilities: ArrayView2<'_, f64>) -> Result<f64> {
    check_probabilities("log_loss", truth, probabilities)?;
    let total: f64 = probabilities
        .rows()
        .into_iter()
        .zip(truth)
        .map(|(row, &t)| -row[t].clamp(1e-15, 1.0).ln())
        .sum();
    Ok(total / truth.len() as f64)
}

/// Share of rows whose largest probability exceeds `threshold` (0 for no rows).
pub fn confident_share(probabilities: ArrayView2<'_, f64>, threshold: f64) -> f64 {
    if probabilities.nrows() == 0 {
        return 0.0;
    }
    let confident = probabilities
        .rows()
        .into_iter()
        .filter(|row| row.iter().any(|&p| p > threshold))
        .count();
    confident as f64 / probabilities.nrows() as f64
}

/// Paired comparison of two methods over the same units (e.g. subjects): the differences
/// `a − b` and a sign-flip permutation test of their mean.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PairedTest {
    pub n: usize,
    pub mean_difference: f64,
    /// Units where `a > b`, `a == b` and `a < b`.
    pub wins: usize,
    pub ties: usize,
    pub losses: usize,
    /// Two-sided p-value of "mean difference 0".
    pub p_two_sided: f64,
    /// One-sided p-value against "a is better" (small when `a` beats `b`).
    pub p_greater: f64,
    /// `true` when every one of the `2ⁿ` sign patterns was enumerated (n ≤ 20); otherwise the
    /// p-values are from 100 000 seeded random sign patterns.
    pub exact: bool,
}

/// Largest `n` whose `2ⁿ` sign patterns are enumerated exactly.
const EXACT_SIGN_FLIP: usize = 20;

/// Sign-flip permutation test of paired differences: under "no difference" each difference is
/// as likely to have either sign, so the p-value is the share of the `2ⁿ` sign patterns whose
/// sum is at least as extreme as the observed one (counting the observed pattern itself, so
/// p ≥ 2⁻ⁿ: with 6 subjects the smallest two-sided p is 1/32). Exact up to n = 20; beyond that
/// 100 000 random patterns from a fixed seed, with the `(hits + 1)/(draws + 1)` estimate.
/// Needs no normality, unlike a paired t-test, which 6 subjects cannot check.
pub fn paired_sign_flip(a: &[f64], b: &[f64]) -> Result<PairedTest> {
    if a.len() != b.len() {
        return Err(Error::Other(format!(
            "paired test: {} values against {}",
            a.len(),
            b.len()
        )));
    }
    if a.is_empty() {
        return Err(Error::Other("paired test: no pairs".into()));
    }
    let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
    if let Some(i) = d.iter().position(|v| !v.is_finite()) {
        return Err(Error::Other(format!(
            "paired test: pair {i} gives a non-finite difference ({} − {})",
            a[i], b[i]
        )));
    }
    let n = d.len();
    let observed: f64 = d.iter().sum();
    // Sums that equal the observed one up to rounding count as "as extreme".
    let tolerance = 1e-9 * d.iter().map(|v| v.abs()).sum::<f64>().max(1e-300);
    let (mut as_large, mut as_extreme, patterns);
    let exact = n <= EXACT_SIGN_FLIP;
    (as_large, as_extreme) = (0u64, 0u64);
    let mut count = |sum: f64| {
        if sum >= observed - tolerance {
            as_large += 1;
        }
        if sum.abs() >= observed.abs() - tolerance {
            as_extreme += 1;
        }
    };
    if exact {
        patterns = 1u64 << n;
        for mask in 0..patterns {
            let sum: f64 = d
                .iter()
                .enumerate()
                .map(|(i, &v)| if mask >> i & 1 == 1 { -v } else { v })
                .sum();
            count(sum);
        }
    } else {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0x51_6E_F1_1B);
        let draws = 100_000u64;
        count(observed);
        for _ in 0..draws {
            let sum: f64 = d
                .iter()
                .map(|&v| if rng.gen::<bool>() { -v } else { v })
                .sum();
            count(sum);
        }
        patterns = draws + 1;
    }
    Ok(PairedTest {
        n,
        mean_difference: observed / n as f64,
        wins: d.iter().filter(|&&v| v > 0.0).count(),
        ties: d.iter().filter(|&&v| v == 0.0).count(),
        losses: d.iter().filter(|&&v| v < 0.0).count(),
        p_two_sided: as_extreme as f64 / patterns as f64,
        p_greater: as_large as f64 / patterns as f64,
        exact,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_handles_ties_and_extremes() {
        // Perfect separation, reversed, and all tied.
        assert_eq!(
            roc_auc(&[0.1, 0.2, 0.8, 0.9], &[false, false, true, true]).unwrap(),
            1.0
        );
        assert_eq!(
            roc_auc(&[0.9, 0.8, 0.2, 0.1], &[false, false, true, true]).unwrap(),
            0.0
        );
        assert_eq!(
            roc_auc(&[0.5; 4], &[false, true, false, true]).unwrap(),
            0.5
        );
        // One tie between a positive and a negative: 3.5 of 4 pairs.
        assert_eq!(
            roc_auc(&[0.1, 0.5, 0.5, 0.9], &[false, false, true, true]).unwrap(),
            0.875
        );
        assert!(roc_auc(&[0.1, 0.2], &[true, true]).is_err());
        assert!(roc_auc(&[0.1, f64::NAN], &[true, false]).is_err());
        assert!(roc_auc(&[0.1], &[true, false]).is_err());
    }

    #[test]
    fn itr_edges() {
        assert_eq!(itr_bits_per_selection(1.0, 2).unwrap(), 1.0);
        assert_eq!(itr_bits_per_selection(1.0, 4).unwrap(), 2.0);
        assert_eq!(itr_bits_per_selection(0.5, 2).unwrap(), 0.0);
        assert_eq!(itr_bits_per_selection(0.1, 4).unwrap(), 0.0);
        // Textbook value: P = 0.9, N = 2 → 1 − H(0.9) ≈ 0.531 bits.
        let b = itr_bits_per_selection(0.9, 2).unwrap();
        assert!((b - 0.531_004_406_410_719_4).abs() < 1e-12, "{b}");
        assert!((itr_bits_per_minute(0.9, 2, 4.0).unwrap() - b * 15.0).abs() < 1e-12);
        assert!(itr_bits_per_selection(1.2, 2).is_err());
        assert!(itr_bits_per_selection(0.9, 1).is_err());
        assert!(itr_bits_per_minute(0.9, 2, 0.0).is_err());
    }

    #[test]
    fn confusion_and_kappa() {
        let t = [0, 0, 1, 1, 2, 2];
        let p = [0, 1, 1, 1, 2, 0];
        assert_eq!(
            confusion_matrix(&t, &p, 3).unwrap(),
            vec![vec![1, 1, 0], vec![0, 2, 0], vec![1, 0, 1]]
        );
        assert_eq!(accuracy(&t, &p).unwrap(), 4.0 / 6.0);
        // po = 4/6, pe = (2·2 + 2·3 + 2·1)/36 = 1/3 → kappa = (2/3 − 1/3)/(2/3) = 0.5.
        assert!((cohen_kappa(&t, &p, 3).unwrap() - 0.5).abs() < 1e-15);
        assert!(cohen_kappa(&[0, 0], &[0, 0], 2).unwrap().is_nan());
        assert!(confusion_matrix(&[0, 3], &[0, 1], 3).is_err());
        assert!(accuracy(&[0, 1], &[0]).is_err());
    }

    #[test]
    fn report_from_probabilities() {
        let truth = [0, 1, 1, 0];
        let probs = ndarray::array![[0.8, 0.2], [0.3, 0.7], [0.6, 0.4], [0.9, 0.1]];
        let r = Report::from_probabilities(&truth, probs.view(), Some(4.0)).unwrap();
        assert_eq!(r.n, 4);
        assert_eq!(r.accuracy, 0.75);
        assert_eq!(r.auc, Some(1.0));
        assert_eq!(r.confusion, vec![vec![2, 0], vec![1, 1]]);
        assert!(r.itr_bits_per_minute.unwrap() > 0.0);
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains("\"auc\":1.0"), "{json}");
        // (0.2² + 0.3² + 0.6² + 0.1²)/4 and −(ln 0.8 + ln 0.7 + ln 0.4 + ln 0.9)/4.
        assert!((r.brier.unwrap() - 0.125).abs() < 1e-12);
        let ll = -(0.8f64.ln() + 0.7f64.ln() + 0.4f64.ln() + 0.9f64.ln()) / 4.0;
        assert!((r.log_loss.unwrap() - ll).abs() < 1e-12);
        assert_eq!(r.confident_share, Some(0.0));
    }

    #[test]
    fn calibration_scores_match_hand_values_and_reject_bad_input() {
        let p = ndarray::array![[0.5, 0.5], [0.5, 0.5]];
        assert!((brier_score(&[0, 1], p.view()).unwrap() - 0.25).abs() < 1e-15);
        assert!((log_loss(&[0, 1], p.view()).unwrap() - std::f64::consts::LN_2).abs() < 1e-15);
        // p = 0 on the true class is clipped, not infinite.
        let hard = ndarray::array![[1.0, 0.0], [0.01, 0.99]];
        let ll = log_loss(&[1, 1], hard.view()).unwrap();
        assert!(ll.is_finite() && ll > 17.0, "{ll}");
        assert_eq!(confident_share(hard.view(), CONFIDENT), 1.0);
        // Three classes: Brier's sum over classes.
        let three = ndarray::array![[0.6, 0.3, 0.1]];
        assert!((brier_score(&[0], three.view()).unwrap() - (0.16 + 0.09 + 0.01)).abs() < 1e-12);
        assert!(brier_score(&[2], p.slice(ndarray::s![..1, ..])).is_err());
        assert!(log_loss(&[0], ndarray::array![[1.2, -0.2]].view()).is_err());
        assert!(brier_score(&[0, 1], ndarray::array![[0.5, 0.5]].view()).is_err());
    }

    #[test]
    fn sign_flip_test_exact_values() {
        // All 6 differences positive: only the observed pattern is as large (1/64), and it
        // and its mirror image are as extreme (2/64).
        let a = [0.8, 0.7, 0.9, 0.6, 0.75, 0.85];
        let b = [0.7, 0.6, 0.85, 0.5, 0.7, 0.8];
        let t = paired_sign_flip(&a, &b).unwrap();
        assert!(t.exact);
        assert_eq!((t.wins, t.ties, t.losses), (6, 0, 0));
        assert!((t.p_greater - 1.0 / 64.0).abs() < 1e-15, "{}", t.p_greater);
        assert!((t.p_two_sided - 2.0 / 64.0).abs() < 1e-15);
        // Reversed: as small as it can be, so one-sided p = 1.
        let r = paired_sign_flip(&b, &a).unwrap();
        assert_eq!(r.p_greater, 1.0);
        assert_eq!(r.p_two_sided, t.p_two_sided);
        // No differences at all: every pattern ties, p = 1.
        let z = paired_sign_flip(&a, &a).unwrap();
        assert_eq!((z.p_two_sided, z.p_greater, z.ties), (1.0, 1.0, 6));
        // Differences +1, +1, −1: sums ≥ 1 are {+++ , ++−, +−+, −++} = 4 of 8.
        let m = paired_sign_flip(&[1.0, 1.0, 0.0], &[0.0, 0.0, 1.0]).unwrap();
        assert_eq!(m.p_greater, 0.5);
        assert_eq!(m.p_two_sided, 1.0);
        // 30 pairs: Monte Carlo, still tiny for a consistent gain.
        let big_a: Vec<f64> = (0..30).map(|i| 0.7 + 0.001 * i as f64).collect();
        let big_b: Vec<f64> = big_a.iter().map(|v| v - 0.02).collect();
        let mc = paired_sign_flip(&big_a, &big_b).unwrap();
        assert!(!mc.exact && mc.p_greater < 1e-4, "{mc:?}");
        assert!(paired_sign_flip(&[1.0], &[]).is_err());
        assert!(paired_sign_flip(&[f64::NAN], &[0.0]).is_err());
    }
}
