//! The paired tests of `evaluate --online` (src/decoder/stats.rs) against reference values from
//! scipy 1.17.1 (`scipy.stats.norm.cdf`, `binomtest`, `wilcoxon` with its defaults), written to
//! tests/fixtures/stats_reference.rs by `python3 tests/fixtures/stats_reference.py > …`
//! (then `np.float64(x)` → `x`).

use neurostream::decoder::stats::{normal_cdf, paired, sign_test};

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * b.abs().max(1e-300)
}

#[test]
fn normal_cdf_matches_reference() {
    // scipy.stats.norm.cdf
    for (z, p) in REFERENCE_NORM {
        assert!(
            close(normal_cdf(z), p, 1e-12),
            "{z}: {} vs {p}",
            normal_cdf(z)
        );
    }
}

#[test]
fn sign_test_matches_scipy_binomtest() {
    for (k, n, p) in REFERENCE_SIGN {
        assert!(
            close(sign_test(k, n), p, 1e-10),
            "{k}/{n}: {}",
            sign_test(k, n)
        );
    }
}

#[test]
fn wilcoxon_matches_scipy() {
    for (a, b, stat, p) in reference_wilcoxon() {
        let t = paired(&a, &b).unwrap();
        assert!(
            close(t.wilcoxon_statistic, stat, 1e-12),
            "{a:?}: statistic {} vs {stat}",
            t.wilcoxon_statistic
        );
        assert!(
            close(t.wilcoxon_p, p, 1e-9),
            "{a:?}: p {} vs {p}",
            t.wilcoxon_p
        );
    }
}

#[test]
fn paired_counts_and_refusals() {
    let t = paired(&[0.6, 0.7, 0.5, 0.8], &[0.5, 0.7, 0.6, 0.6]).unwrap();
    assert_eq!((t.better, t.worse, t.ties, t.pairs), (2, 1, 1, 4));
    assert!((t.mean_difference - 0.05).abs() < 1e-12);
    assert!(paired(&[1.0], &[1.0, 2.0]).is_none());
    assert!(paired(&[], &[]).is_none());
    assert!(paired(&[f64::NAN], &[1.0]).is_none());
    // All equal: nothing to test.
    let t = paired(&[0.5, 0.5], &[0.5, 0.5]).unwrap();
    assert_eq!((t.wilcoxon_p, t.sign_p), (1.0, 1.0));
}

include!("fixtures/stats_reference.rs");
