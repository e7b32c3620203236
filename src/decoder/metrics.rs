//! Evaluation metrics for decoders: accuracy, ROC-AUC, confusion matrix, Cohen's kappa, the
//! Wolpaw information transfer rate and the quality of the probabilities (Brier score, log
//! loss, expected calibration error, share of saturated windows), plus [`Report`], the bundle
//! the `evaluate` command prints as JSON.
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

fn check_probabilities(what: &str, truth: &[usize], p: ArrayView2<'_, f64>) -> Result<()> {
    check_same_length(what, truth.len(), p.nrows())?;
    if let Some(i) = truth.iter().position(|&t| t >= p.ncols()) {
        return Err(Error::Other(format!(
            "{what}: true label {} of example {i} is not below the {} classes",
            truth[i],
            p.ncols()
        )));
    }
    if let Some(i) = p
        .iter()
        .position(|v| !(v.is_finite() && (0.0..=1.0).contains(v)))
    {
        return Err(Error::Other(format!(
            "{what}: probability {i} (row-major) is {}, expected in [0, 1]",
            p.iter().nth(i).copied().unwrap_or(f64::NAN)
        )));
    }
    Ok(())
}

/// Brier score, halved: `mean over examples of ½ Σ_k (p_k − [k = truth])²`. For two classes
/// this is the usual binary Brier score of the class-1 probability, `mean (p₁ − y)²`
/// (scikit-learn's `brier_score_loss`); always answering `1/K` scores `(K − 1)/(2K)`, 0.25
/// for two classes. Lower is better.
pub fn brier_score(truth: &[usize], probabilities: ArrayView2<'_, f64>) -> Result<f64> {
    check_probabilities("brier_score", truth, probabilities)?;
    let total: f64 = probabilities
        .rows()
        .into_iter()
        .zip(truth)
        .map(|(row, &t)| {
            row.iter()
                .enumerate()
                .map(|(k, &p)| {
                    let y = if k == t { 1.0 } else { 0.0 };
                    (p - y) * (p - y)
                })
                .sum::<f64>()
        })
        .sum();
    Ok(0.5 * total / truth.len() as f64)
}

/// Log loss (cross-entropy): `mean −ln p_truth`, with `p` clipped to `[1e-15, 1]` as
/// scikit-learn's `log_loss` did, so one zero probability costs 34.5 instead of ∞.
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

/// Expected calibration error of the top-label confidence (Guo et al. 2017): windows binned
/// by the winning class's probability into `bins` equal-width bins of `[0, 1]` (a value on a
/// bin edge goes to the upper bin, 1.0 to the last), then `Σ_b (n_b / n) · |accuracy_b −
/// mean confidence_b|`. The winner is the most probable class, lowest index on exact ties.
pub fn expected_calibration_error(
    truth: &[usize],
    probabilities: ArrayView2<'_, f64>,
    bins: usize,
) -> Result<f64> {
    check_probabilities("expected_calibration_error", truth, probabilities)?;
    if bins == 0 {
        return Err(Error::Other(
            "expected_calibration_error: needs at least one bin".into(),
        ));
    }
    let mut count = vec![0usize; bins];
    let mut correct = vec![0usize; bins];
    let mut confidence = vec![0.0f64; bins];
    for (row, &t) in probabilities.rows().into_iter().zip(truth) {
        let (best, p) = argmax(row.iter().copied());
        let b = ((p * bins as f64) as usize).min(bins - 1);
        count[b] += 1;
        correct[b] += usize::from(best == t);
        confidence[b] += p;
    }
    let n = truth.len() as f64;
    Ok((0..bins)
        .filter(|&b| count[b] > 0)
        .map(|b| {
            let c = count[b] as f64;
            (c / n) * (correct[b] as f64 / c - confidence[b] / c).abs()
        })
        .sum())
}

/// Share of windows whose winning probability exceeds `1 − margin` (for two classes: `p₁ <
/// margin` or `p₁ > 1 − margin`). With `margin = 0.05`: the windows a threshold cannot
/// filter.
pub fn saturated_share(probabilities: ArrayView2<'_, f64>, margin: f64) -> Result<f64> {
    if probabilities.nrows() == 0 {
        return Err(Error::Other("saturated_share: no examples".into()));
    }
    let saturated = probabilities
        .rows()
        .into_iter()
        .filter(|row| argmax(row.iter().copied()).1 > 1.0 - margin)
        .count();
    Ok(saturated as f64 / probabilities.nrows() as f64)
}

/// (index, value) of the largest value, the lowest index on ties.
fn argmax(values: impl Iterator<Item = f64>) -> (usize, f64) {
    values
        .enumerate()
        .fold((0, f64::NEG_INFINITY), |best, (k, p)| {
            if p > best.1 {
                (k, p)
            } else {
                best
            }
        })
}

/// Bins of the expected calibration error in [`Report`].
pub const ECE_BINS: usize = 10;
/// Margin of the saturation share in [`Report`]: `p < 0.05` or `p > 0.95`.
pub const SATURATION_MARGIN: f64 = 0.05;

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
    /// Halved multi-class Brier score (the binary one for two classes), see [`brier_score`];
    /// reports from probabilities only.
    pub brier: Option<f64>,
    /// See [`log_loss`].
    pub log_loss: Option<f64>,
    /// Expected calibration error over [`ECE_BINS`] bins, see [`expected_calibration_error`].
    pub ece: Option<f64>,
    /// Share of windows with `p < 0.05` or `p > 0.95`, see [`saturated_share`].
    pub saturated: Option<f64>,
    /// ROC-AUC of the decoder's decision value (two classes), when the caller had it: equal
    /// to `auc` up to ties for a calibration that is monotone in the decision value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision_auc: Option<f64>,
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
            ece: None,
            saturated: None,
            decision_auc: None,
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
            .map(|row| argmax(row.iter().copied()).0)
            .collect();
        let mut report = Report::from_labels(truth, &predicted, classes, seconds_per_selection)?;
        // Probabilities outside [0, 1] (a broken decoder) leave these out rather than fail.
        report.brier = brier_score(truth, probabilities).ok();
        report.log_loss = log_loss(truth, probabilities).ok();
        report.ece = expected_calibration_error(truth, probabilities, ECE_BINS).ok();
        report.saturated = saturated_share(probabilities, SATURATION_MARGIN).ok();
        if classes == 2 {
            let scores: Vec<f64> = probabilities.column(1).to_vec();
            let positives: Vec<bool> = truth.iter().map(|&t| t == 1).collect();
            // AUC is undefined when the test set holds one class only: leave it out rather
            // than fail the whole report.
            report.auc = roc_auc(&scores, &positives).ok();
        }
        Ok(report)
    }
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
        // Hand-computed: (0.2² + 0.3² + 0.6² + 0.1²)/4 = 0.125.
        assert!((r.brier.unwrap() - 0.125).abs() < 1e-15);
        assert_eq!(r.saturated, Some(0.0));
    }

    #[test]
    fn probability_metrics_by_hand() {
        let truth = [0, 1, 1, 0, 1];
        let p = ndarray::array![[0.9, 0.1], [0.2, 0.8], [0.7, 0.3], [0.96, 0.04], [0.5, 0.5]];
        // Brier: (0.01 + 0.04 + 0.49 + 0.0016 + 0.25)/5.
        let b = brier_score(&truth, p.view()).unwrap();
        assert!((b - 0.7916 / 5.0).abs() < 1e-12, "{b}");
        // Log loss: −(ln 0.9 + ln 0.8 + ln 0.3 + ln 0.96 + ln 0.5)/5.
        let l = log_loss(&truth, p.view()).unwrap();
        let expected =
            -(0.9f64.ln() + 0.8f64.ln() + 0.3f64.ln() + 0.96f64.ln() + 0.5f64.ln()) / 5.0;
        assert!((l - expected).abs() < 1e-12, "{l}");
        // Top-label confidences 0.9 ✓, 0.8 ✓, 0.7 ✗, 0.96 ✓, 0.5 (class 0, ✗): bins 9 {0.9,
        // 0.96}: acc 1, conf 0.93; bin 8 {0.8}: 1 vs 0.8; bin 7 {0.7}: 0 vs 0.7; bin 5
        // {0.5}: 0 vs 0.5. ECE = (2·0.07 + 0.2 + 0.7 + 0.5)/5 = 0.308.
        let e = expected_calibration_error(&truth, p.view(), 10).unwrap();
        assert!((e - 0.308).abs() < 1e-12, "{e}");
        // Saturated: only 0.96 (> 0.95).
        assert_eq!(saturated_share(p.view(), 0.05).unwrap(), 0.2);
        // Three classes: half the multi-class Brier; uniform gives (K − 1)/(2K) = 1/3.
        let u = ndarray::Array2::from_elem((2, 3), 1.0 / 3.0);
        assert!((brier_score(&[0, 2], u.view()).unwrap() - 1.0 / 3.0).abs() < 1e-15);
        // Bad input is named.
        assert!(brier_score(&[0, 2], p.slice(ndarray::s![..2, ..]))
            .unwrap_err()
            .to_string()
            .contains("true label 2"));
        let bad = ndarray::array![[1.5, -0.5]];
        assert!(log_loss(&[0], bad.view()).is_err());
        assert!(expected_calibration_error(&truth, p.view(), 0).is_err());
        // A zero probability on the truth costs −ln 1e-15.
        let zero = ndarray::array![[0.0, 1.0]];
        assert!((log_loss(&[0], zero.view()).unwrap() - 1e-15f64.ln().abs()).abs() < 1e-9);
    }
}
