//! Seeded stratified k-fold cross-validation splits.
//!
//! Same idea as scikit-learn's `StratifiedKFold(shuffle=True)`: every class is shuffled on
//! its own and dealt out over the folds, so each test fold holds each class in (almost) the
//! training proportion — important for BCI data, where a fold without one of the classes
//! makes accuracy and AUC meaningless. The exact index assignment differs from scikit-learn
//! (different RNG and dealing order); only the guarantees below are shared:
//!
//! - every example is in exactly one test fold, and a fold's train set is the complement of
//!   its test set;
//! - per fold, the count of each class differs by at most one from `class size / k`;
//! - fold sizes differ by at most one;
//! - the split is a pure function of `(labels, k, seed)` on every platform (ChaCha RNG).

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::error::{Error, Result};

/// One train/test split; indices into the labels (rows of the feature matrix), ascending.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fold {
    pub train: Vec<usize>,
    pub test: Vec<usize>,
}

/// `k` stratified folds of `labels`, shuffled within each class with `seed`.
///
/// Errors if `k < 2`, or if some class that occurs has fewer than `k` members (a test fold
/// would then miss that class). Label values need not be contiguous.
pub fn stratified_kfold(labels: &[usize], k: usize, seed: u64) -> Result<Vec<Fold>> {
    if k < 2 {
        return Err(Error::Other(format!(
            "stratified k-fold: k must be at least 2, got {k}"
        )));
    }
    let classes = labels.iter().max().map_or(0, |&m| m + 1);
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); classes];
    for (i, &label) in labels.iter().enumerate() {
        members[label].push(i);
    }
    for (class, m) in members.iter().enumerate() {
        if !m.is_empty() && m.len() < k {
            return Err(Error::Other(format!(
                "stratified k-fold: class {class} has {} examples, fewer than the {k} folds",
                m.len()
            )));
        }
    }

    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut fold_of = vec![0usize; labels.len()];
    // Deal each shuffled class round-robin, starting where the previous class stopped: per
    // class the fold counts are ⌊n/k⌋ or ⌈n/k⌉, and the leftovers of successive classes land
    // in different folds, which keeps the total fold sizes within one of each other.
    let mut next_fold = 0;
    for m in members.iter_mut() {
        m.shuffle(&mut rng);
        for &i in m.iter() {
            fold_of[i] = next_fold;
            next_fold = (next_fold + 1) % k;
        }
    }

    Ok((0..k)
        .map(|f| {
            let (test, train) = (0..labels.len()).partition(|&i| fold_of[i] == f);
            Fold { train, test }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors() {
        assert!(stratified_kfold(&[0, 1, 0, 1], 1, 0).is_err());
        let err = stratified_kfold(&[0, 0, 0, 1, 1], 3, 0).unwrap_err();
        assert!(err.to_string().contains("class 1 has 2 examples"), "{err}");
    }

    #[test]
    fn non_contiguous_labels() {
        let labels = [0, 0, 3, 3, 0, 3];
        let folds = stratified_kfold(&labels, 3, 1).unwrap();
        for f in &folds {
            assert_eq!(f.test.len(), 2);
            assert!(f.test.iter().any(|&i| labels[i] == 0));
            assert!(f.test.iter().any(|&i| labels[i] == 3));
        }
    }
}
