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
    }
}
