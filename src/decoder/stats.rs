//! Paired tests for comparing two decoders on the same subjects: the Wilcoxon signed-rank test
//! and the sign test, two-sided, as scipy computes them (`scipy.stats.wilcoxon` with its
//! defaults, `scipy.stats.binomtest(k, n, 0.5)`); `tests/stats.rs` checks them against reference values
//! from scipy 1.17.1.
//!
//! - Wilcoxon: zero differences are dropped (`zero_method = "wilcox"`); tied absolute
//!   differences get their average rank. Without ties and with at most 50 pairs the p-value is
//!   exact (the distribution of `W+` over all `2ⁿ` sign patterns, counted by dynamic
//!   programming); otherwise the normal approximation with the tie correction of the variance
//!   and no continuity correction.
//! - Sign test: the number of positive differences among the non-zero ones against
//!   Binomial(n, ½); the two-sided p-value is twice the smaller tail, capped at 1.

use serde::Serialize;

/// Result of a paired comparison `a − b` over the same subjects.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PairedTest {
    /// Pairs compared.
    pub pairs: usize,
    /// Mean of `a − b`.
    pub mean_difference: f64,
    /// Pairs with `a > b`, `a < b`, `a == b`.
    pub better: usize,
    pub worse: usize,
    pub ties: usize,
    /// Sum of the ranks of positive differences (`W+`), and scipy's statistic `min(W+, W−)`.
    pub w_plus: f64,
    pub wilcoxon_statistic: f64,
    /// Two-sided p-values.
    pub wilcoxon_p: f64,
    pub sign_p: f64,
    /// Whether the Wilcoxon p-value is exact (else the normal approximation).
    pub exact: bool,
}

/// Both tests on the pairs `(a[i], b[i])`. `None` when the lengths differ, a value is not
/// finite, or there are no pairs.
pub fn paired(a: &[f64], b: &[f64]) -> Option<PairedTest> {
    if a.len() != b.len() || a.is_empty() || a.iter().chain(b).any(|v| !v.is_finite()) {
        return None;
    }
    let diffs: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
    let better = diffs.iter().filter(|&&d| d > 0.0).count();
    let worse = diffs.iter().filter(|&&d| d < 0.0).count();
    let (w_plus, w_minus, wilcoxon_p, exact) = wilcoxon(&diffs);
    Some(PairedTest {
        pairs: diffs.len(),
        mean_difference: diffs.iter().sum::<f64>() / diffs.len() as f64,
        better,
        worse,
        ties: diffs.len() - better - worse,
        w_plus,
        wilcoxon_statistic: w_plus.min(w_minus),
        wilcoxon_p,
        sign_p: sign_test(better, better + worse),
        exact,
    })
}

/// Average ranks (1-based) of `values`, ties sharing the mean of their ranks; and whether any
/// tie occurred.
fn ranks(values: &[f64]) -> (Vec<f64>, bool) {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&i, &j| values[i].total_cmp(&values[j]));
    let mut ranks = vec![0.0; values.len()];
    let mut tied = false;
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && values[order[end]] == values[order[start]] {
            end += 1;
        }
        if end - start > 1 {
            tied = true;
        }
        // Ranks start+1 ..= end, averaged.
        let rank = (start + 1 + end) as f64 / 2.0;
        for &i in &order[start..end] {
            ranks[i] = rank;
        }
        start = end;
    }
    (ranks, tied)
}

/// `(W+, W−, two-sided p, exact)` for the differences `d`, with scipy's choice of method:
/// more than 50 pairs → normal approximation; no zero and no tied `|d|` → the exact
/// distribution; otherwise up to 13 pairs → all `2ⁿ` sign flips enumerated (scipy's
/// permutation test, deterministic at that size), more → normal approximation. Zeros are
/// dropped from the ranks. No non-zero difference: p = 1.
pub fn wilcoxon(d: &[f64]) -> (f64, f64, f64, bool) {
    let nonzero: Vec<f64> = d.iter().copied().filter(|&v| v != 0.0).collect();
    let n = nonzero.len();
    if n == 0 {
        return (0.0, 0.0, 1.0, true);
    }
    let zeros = d.len() > n;
    let magnitudes: Vec<f64> = nonzero.iter().map(|v| v.abs()).collect();
    let (r, tied) = ranks(&magnitudes);
    let w_plus: f64 = nonzero
        .iter()
        .zip(&r)
        .filter(|(v, _)| **v > 0.0)
        .map(|(_, r)| r)
        .sum();
    let total = (n * (n + 1)) as f64 / 2.0;
    let w_minus = total - w_plus;
    if d.len() <= 50 {
        if !tied && !zeros {
            return (w_plus, w_minus, exact_p(n, w_plus.round() as usize), true);
        }
        if d.len() <= 13 {
            return (w_plus, w_minus, enumerated_p(&r, w_plus), true);
        }
    }
    // Normal approximation with the tie correction: each group of t tied ranks lowers the
    // variance by (t³ − t)/48.
    let mean = total / 2.0;
    let mut sorted = magnitudes.clone();
    sorted.sort_by(f64::total_cmp);
    let mut correction = 0.0;
    let mut i = 0;
    while i < n {
        let mut j = i + 1;
        while j < n && sorted[j] == sorted[i] {
            j += 1;
        }
        let t = (j - i) as f64;
        correction += t * t * t - t;
        i = j;
    }
    let nf = n as f64;
    let var = nf * (nf + 1.0) * (2.0 * nf + 1.0) / 24.0 - correction / 48.0;
    if var <= 0.0 {
        return (w_plus, w_minus, 1.0, false);
    }
    let z = (w_plus.min(w_minus) - mean) / var.sqrt();
    let p = (2.0 * normal_cdf(z)).min(1.0);
    (w_plus, w_minus, p, false)
}

/// Two-sided p-value of `W+ = w` over all sign flips of the (average) ranks `r`.
fn enumerated_p(r: &[f64], w: f64) -> f64 {
    let n = r.len();
    let tolerance = 1e-14 * w.abs().max(1.0);
    let (mut low, mut high) = (0u64, 0u64);
    for mask in 0u64..1 << n {
        let t: f64 = (0..n).filter(|i| mask >> i & 1 == 1).map(|i| r[i]).sum();
        if t <= w + tolerance {
            low += 1;
        }
        if t >= w - tolerance {
            high += 1;
        }
    }
    let all = (1u64 << n) as f64;
    (2.0 * (low.min(high) as f64) / all).min(1.0)
}

/// Exact two-sided p-value of `W+ = w` with `n` untied non-zero differences.
fn exact_p(n: usize, w: usize) -> f64 {
    let max = n * (n + 1) / 2;
    // counts[s]: sign patterns of ranks 1..=k whose positive ranks sum to s.
    let mut counts = vec![0.0f64; max + 1];
    counts[0] = 1.0;
    for k in 1..=n {
        for s in (k..=max).rev() {
            counts[s] += counts[s - k];
        }
    }
    let all = 2f64.powi(n as i32);
    let lower: f64 = counts[..=w.min(max)].iter().sum::<f64>() / all;
    let upper: f64 = counts[w.min(max)..].iter().sum::<f64>() / all;
    (2.0 * lower.min(upper)).min(1.0)
}

/// Two-sided sign test: `k` successes in `n` trials against Binomial(n, ½).
pub fn sign_test(k: usize, n: usize) -> f64 {
    if n == 0 {
        return 1.0;
    }
    let low = k.min(n - k);
    // P(X ≤ low) summed in log space so that large n cannot overflow.
    let ln_half_n = n as f64 * 0.5f64.ln();
    let mut ln_choose = 0.0; // ln C(n, 0)
    let mut tail = 0.0;
    for i in 0..=low {
        if i > 0 {
            ln_choose += ((n - i + 1) as f64).ln() - (i as f64).ln();
        }
        tail += (ln_choose + ln_half_n).exp();
    }
    if 2 * low == n {
        return 1.0;
    }
    (2.0 * tail).min(1.0)
}

/// Standard normal CDF (through `libm::erfc`, the musl implementation).
pub fn normal_cdf(z: f64) -> f64 {
    0.5 * libm::erfc(-z / std::f64::consts::SQRT_2)
}
