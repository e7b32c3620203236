//! Supervised plasticity that helps and does not hurt, for every decoder that learns online
//! (adaptive LDA, the plastic MLP, the SVM's bounded correction): labels that alternate on
//! consecutive trials (a decoder that leans towards the last label loses there; ours must not,
//! and a deliberately naive learner — a bias chasing the last label — shows the check can
//! fail), a drifting simulated subject (adaptive must beat frozen), a stationary one (adaptive
//! must not lose by more than 0.02 accuracy). Each trial is decided first, then its label is
//! revealed (`update`), as in `evaluate --online`.

// Index loops read as the matrix formulas they check.
#![allow(clippy::needless_range_loop)]

use ndarray::Array2;
use neurostream::decoder::lda::{Lda, LdaConfig, LdaOnlineConfig};
use neurostream::decoder::mlp::{MlpConfig, PlasticMlp};
use neurostream::decoder::svm::{Kernel, Svm, SvmConfig, SvmOnlineConfig};
use neurostream::decoder::Decoder;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

const D: usize = 24;

/// A two-class subject: class means `±separation/2` along a direction that may rotate, a
/// common offset that may grow, and correlated noise (a fixed mixing of unit noise).
struct Subject {
    separation: f64,
    /// Angle (radians) of the discriminative direction at the end of the session.
    rotation: f64,
    /// Common offset at the end of the session (along features 0..4 and 8).
    offset: f64,
    mixing: Vec<f64>,
}

impl Subject {
    fn new(seed: u64, separation: f64, rotation: f64, offset: f64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xabc);
        let mixing = (0..D * D)
            .map(|i| {
                let g: f64 = StandardNormal.sample(&mut rng);
                if i % (D + 1) == 0 {
                    1.0
                } else {
                    0.15 * g
                }
            })
            .collect();
        Subject {
            separation,
            rotation,
            offset,
            mixing,
        }
    }

    /// One trial of class `label` at session progress `t` ∈ [0, 1].
    fn trial(&self, rng: &mut ChaCha8Rng, label: usize, t: f64) -> Vec<f32> {
        let noise: Vec<f64> = (0..D).map(|_| StandardNormal.sample(rng)).collect();
        let sign = if label == 1 { 0.5 } else { -0.5 };
        let angle = self.rotation * t;
        (0..D)
            .map(|j| {
                let mut v: f64 = (0..D).map(|k| self.mixing[j * D + k] * noise[k]).sum();
                // Discriminative direction: feature 0 rotating into feature 5.
                if j == 0 {
                    v += sign * self.separation * angle.cos();
                }
                if j == 5 {
                    v += sign * self.separation * angle.sin();
                }
                if j < 4 || j == 8 {
                    v += self.offset * t;
                }
                v as f32
            })
            .collect()
    }
}

fn calibration(subject: &Subject, rng: &mut ChaCha8Rng, n: usize) -> (Array2<f32>, Vec<usize>) {
    let labels: Vec<usize> = (0..n).map(|i| i % 2).collect();
    let mut x = Array2::zeros((n, D));
    for (i, &l) in labels.iter().enumerate() {
        let row = subject.trial(rng, l, 0.0);
        x.row_mut(i).assign(&ndarray::ArrayView1::from(&row));
    }
    (x, labels)
}

/// Decide each trial, then reveal its label; returns the accuracy.
fn online_accuracy(decoder: &mut dyn Decoder, trials: &[(Vec<f32>, usize)], learn: bool) -> f64 {
    let mut p = [0.0; 2];
    let mut right = 0;
    for (x, label) in trials {
        decoder.predict_proba(x, &mut p);
        let decided = usize::from(p[1] > p[0]);
        right += usize::from(decided == *label);
        if learn {
            decoder.observe(x);
            decoder.update(x, *label);
        }
    }
    right as f64 / trials.len() as f64
}

fn session(
    subject: &Subject,
    rng: &mut ChaCha8Rng,
    n: usize,
    alternating: bool,
) -> Vec<(Vec<f32>, usize)> {
    use rand::Rng;
    (0..n)
        .map(|i| {
            let label = if alternating {
                i % 2
            } else {
                rng.gen_range(0..2)
            };
            let t = i as f64 / n as f64;
            (subject.trial(rng, label, t), label)
        })
        .collect()
}

fn lda() -> Box<dyn Decoder> {
    Box::new(Lda::new(LdaConfig::default()))
}

fn mlp() -> Box<dyn Decoder> {
    Box::new(
        PlasticMlp::new(
            MlpConfig {
                hidden: vec![16],
                epochs: 100,
                ..MlpConfig::default()
            },
            2,
        )
        .unwrap(),
    )
}

fn svm() -> Box<dyn Decoder> {
    Box::new(Svm::new(SvmConfig {
        kernel: Kernel::Linear,
        ..SvmConfig::default()
    }))
}

/// The control: a deliberately naive learner that leans towards the last label. It wraps a
/// calibrated decoder and learns one thing online, a bias on the log-odds, by an unbalanced
/// SGD step of the logistic loss (`b += 2 (y − p₁)`) after every label, so each label pulls
/// the next decision towards itself.
struct Naive {
    inner: Box<dyn Decoder>,
    bias: f64,
}

impl Decoder for Naive {
    fn classes(&self) -> usize {
        2
    }
    fn fit(
        &mut self,
        features: ndarray::ArrayView2<'_, f32>,
        labels: &[usize],
    ) -> neurostream::Result<()> {
        self.inner.fit(features, labels)
    }
    fn predict_proba(&mut self, features: &[f32], p: &mut [f64]) {
        self.inner.predict_proba(features, p);
        let logit = (p[1].max(1e-12) / p[0].max(1e-12)).ln() + self.bias;
        p[1] = 1.0 / (1.0 + (-logit).exp());
        p[0] = 1.0 - p[1];
    }
    fn update(&mut self, features: &[f32], label: usize) -> bool {
        let mut p = [0.0; 2];
        self.predict_proba(features, &mut p);
        self.bias += 2.0 * (label as f64 - p[1]);
        true
    }
}

/// Mean accuracy over `seeds` subjects of (frozen, adaptive, the naive learner of
/// [`Naive`] on the same calibrated decoder).
fn compare(
    make: fn() -> Box<dyn Decoder>,
    separation: f64,
    rotation: f64,
    offset: f64,
    alternating: bool,
    seeds: u64,
) -> (f64, f64, f64) {
    let (mut frozen, mut adaptive, mut leaning) = (0.0, 0.0, 0.0);
    for seed in 0..seeds {
        let subject = Subject::new(seed, separation, rotation, offset);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (x, y) = calibration(&subject, &mut rng, 60);
        let trials = session(&subject, &mut rng, 240, alternating);
        let mut decoder = make();
        decoder.fit(x.view(), &y).unwrap();
        let mut fixed = make();
        fixed.fit(x.view(), &y).unwrap();
        let mut naive = Naive {
            inner: make(),
            bias: 0.0,
        };
        naive.fit(x.view(), &y).unwrap();
        frozen += online_accuracy(fixed.as_mut(), &trials, false);
        leaning += online_accuracy(&mut naive, &trials, true);
        adaptive += online_accuracy(decoder.as_mut(), &trials, true);
    }
    let n = seeds as f64;
    (frozen / n, adaptive / n, leaning / n)
}

#[test]
fn lda_alternating_labels_do_not_pull_it_towards_the_last_label() {
    let (frozen, adaptive, leaning) = compare(lda, 1.5, 0.0, 0.0, true, 12);
    eprintln!("lda alternating: frozen {frozen:.3} adaptive {adaptive:.3} leaning {leaning:.3}");
    // The check can fail: a decoder leaning to the last label loses clearly here.
    assert!(leaning < frozen - 0.1, "{leaning} vs {frozen}");
    assert!(adaptive >= frozen - 0.02, "{adaptive} vs {frozen}");
}

#[test]
fn lda_adaptive_beats_frozen_on_a_drifting_subject() {
    let (frozen, adaptive, _) = compare(lda, 2.0, 1.2, 2.5, false, 12);
    eprintln!("lda drifting: frozen {frozen:.3} adaptive {adaptive:.3}");
    assert!(adaptive > frozen + 0.05, "{adaptive} vs {frozen}");
}

#[test]
fn lda_adaptive_does_not_lose_on_a_stationary_subject() {
    let (frozen, adaptive, _) = compare(lda, 1.5, 0.0, 0.0, false, 12);
    eprintln!("lda stationary: frozen {frozen:.3} adaptive {adaptive:.3}");
    assert!(adaptive >= frozen - 0.02, "{adaptive} vs {frozen}");
}

#[test]
fn mlp_alternating_labels_do_not_pull_it_towards_the_last_label() {
    let (frozen, adaptive, leaning) = compare(mlp, 1.5, 0.0, 0.0, true, 8);
    eprintln!("mlp alternating: frozen {frozen:.3} adaptive {adaptive:.3} leaning {leaning:.3}");
    assert!(leaning < frozen - 0.1, "{leaning} vs {frozen}");
    assert!(adaptive >= frozen - 0.02, "{adaptive} vs {frozen}");
}

#[test]
fn mlp_adaptive_beats_frozen_on_a_drifting_subject() {
    let (frozen, adaptive, _) = compare(mlp, 2.0, 1.2, 2.5, false, 8);
    eprintln!("mlp drifting: frozen {frozen:.3} adaptive {adaptive:.3}");
    assert!(adaptive > frozen + 0.03, "{adaptive} vs {frozen}");
}

#[test]
fn mlp_adaptive_does_not_lose_on_a_stationary_subject() {
    let (frozen, adaptive, _) = compare(mlp, 1.5, 0.0, 0.0, false, 8);
    eprintln!("mlp stationary: frozen {frozen:.3} adaptive {adaptive:.3}");
    assert!(adaptive >= frozen - 0.02, "{adaptive} vs {frozen}");
}

#[test]
fn svm_alternating_labels_do_not_pull_it_towards_the_last_label() {
    let (frozen, adaptive, leaning) = compare(svm, 1.5, 0.0, 0.0, true, 12);
    eprintln!("svm alternating: frozen {frozen:.3} adaptive {adaptive:.3} leaning {leaning:.3}");
    assert!(leaning < frozen - 0.1, "{leaning} vs {frozen}");
    assert!(adaptive >= frozen - 0.02, "{adaptive} vs {frozen}");
}

// Known gap (issue 25): the SVM's bounded step is too weak to follow this drift — measured
// frozen 0.671, adaptive 0.685 (+0.014, short of the +0.05 required). Kept as the target; run
// with `--ignored`.
#[test]
#[ignore = "SVM step too weak on drift: +0.014 measured, +0.05 required (issue 25)"]
fn svm_adaptive_beats_frozen_on_a_drifting_subject() {
    let (frozen, adaptive, _) = compare(svm, 2.0, 1.2, 2.5, false, 12);
    eprintln!("svm drifting: frozen {frozen:.3} adaptive {adaptive:.3}");
    assert!(adaptive > frozen + 0.05, "{adaptive} vs {frozen}");
}

#[test]
fn svm_adaptive_does_not_lose_on_a_stationary_subject() {
    let (frozen, adaptive, _) = compare(svm, 1.5, 0.0, 0.0, false, 12);
    eprintln!("svm stationary: frozen {frozen:.3} adaptive {adaptive:.3}");
    assert!(adaptive >= frozen - 0.02, "{adaptive} vs {frozen}");
}

/// The SVM's correction stays inside its drift bound whatever the labels (here: every label
/// wrong for a drifting subject), the step is taken (`true`), its calibrated machine is
/// untouched (a clone from before the steps — what `rollback` restores — decides as before),
/// and bad input is declined without a change.
#[test]
fn svm_step_is_bounded_and_rolls_back() {
    let subject = Subject::new(5, 1.5, 0.0, 3.0);
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let (x, y) = calibration(&subject, &mut rng, 40);
    let bound = 0.5;
    let mut model = Svm::new(SvmConfig {
        kernel: Kernel::Linear,
        online: SvmOnlineConfig {
            rate: 0.5,
            max_drift: bound,
            ..SvmOnlineConfig::default()
        },
        ..SvmConfig::default()
    });
    model.fit(x.view(), &y).unwrap();
    let calibrated = model.clone();
    let probe = subject.trial(&mut rng, 0, 0.0);
    let (mut before, mut after, mut again) = ([0.0; 1], [0.0; 1], [0.0; 1]);
    model.decision_function(&probe, &mut before);
    assert!(!model.update(&probe[..3], 0), "wrong length");
    assert!(!model.update(&probe, 2), "label out of range");
    let mut nan = probe.clone();
    nan[0] = f32::NAN;
    assert!(!model.update(&nan, 0), "non-finite features");
    assert_eq!(model, calibrated, "declined steps change nothing");
    for i in 0..200 {
        let label = i % 2;
        let trial = subject.trial(&mut rng, label, i as f64 / 200.0);
        assert!(model.update(&trial, 1 - label));
        assert!(
            model.drift() <= bound * (1.0 + 1e-9),
            "drift {} > {bound}",
            model.drift()
        );
    }
    assert!(model.drift() > 0.0);
    model.decision_function(&probe, &mut after);
    assert_ne!(before, after, "the steps changed the decision");
    // Saved and loaded, the correction comes along.
    let json = serde_json::to_string(&model).unwrap();
    let mut loaded: Svm = serde_json::from_str(&json).unwrap();
    loaded.decision_function(&probe, &mut again);
    assert_eq!(after, again);
    let mut rolled_back = calibrated.clone();
    rolled_back.decision_function(&probe, &mut again);
    assert_eq!(before, again);
}

/// The Woodbury solve of adaptive LDA reproduces the fitted discriminant before any step
/// (rates 0 for the means, a step that adds a zero-weight row is refused), and after steps the
/// discriminant equals a direct solve with the same covariance.
#[test]
fn adaptive_lda_discriminant_matches_a_direct_solve() {
    let subject = Subject::new(3, 1.5, 0.0, 0.0);
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let (x, y) = calibration(&subject, &mut rng, 40);
    let config = LdaConfig {
        online: LdaOnlineConfig {
            mean_rate: 0.1,
            covariance_rate: 0.1,
            tracking_rate: 0.0,
            // Every step moves its class mean at once (the balanced rule waits for pairs).
            class_balanced: false,
        },
        ..LdaConfig::default()
    };
    let mut lda = Lda::new(config);
    lda.fit(x.view(), &y).unwrap();
    let before = lda.clone();
    let probe = subject.trial(&mut rng, 0, 0.0);
    let mut out = [0.0; 2];
    lda.decision_function(&probe, &mut out);
    // Steps, then compare with a decoder built by the reference formula on the same
    // state (means and covariance rebuilt by hand).
    let mut cov = reference_covariance(&x, &y);
    let mut means = class_means(&x, &y);
    let s_bar = 1.0
        - before
            .shrinkage_applied()
            .iter()
            .zip(before.priors())
            .map(|(s, p)| s * p)
            .sum::<f64>();
    let target = shrinkage_target(&x, &y, &before);
    for i in 0..30 {
        let label = i % 2;
        let trial = subject.trial(&mut rng, label, 0.0);
        assert!(lda.update(&trial, label));
        // The covariance takes the trial against its class mean before the mean moves; both
        // rates are above the running-average rate 1/(n + t + 1) of 40 calibration trials
        // (20 per class), so they are the floors 0.1.
        let u: Vec<f64> = trial
            .iter()
            .zip(&means[label])
            .map(|(&v, m)| f64::from(v) - m)
            .collect();
        for (m, &v) in means[label].iter_mut().zip(&trial) {
            *m = 0.9 * *m + 0.1 * f64::from(v);
        }
        for a in 0..D {
            for b in 0..D {
                let sample = cov[a * D + b] - if a == b { target[a] } else { 0.0 };
                let sample = 0.9 * sample + 0.1 * s_bar * u[a] * u[b];
                cov[a * D + b] = sample + if a == b { target[a] } else { 0.0 };
            }
        }
    }
    let probe = subject.trial(&mut rng, 1, 0.0);
    lda.decision_function(&probe, &mut out);
    let expected: Vec<f64> = (0..2)
        .map(|k| {
            let w = solve(&cov, &means[k]);
            let mw: f64 = means[k].iter().zip(&w).map(|(a, b)| a * b).sum();
            let dot: f64 = w.iter().zip(&probe).map(|(a, &b)| a * f64::from(b)).sum();
            dot - 0.5 * mw + before.priors()[k].ln()
        })
        .collect();
    for k in 0..2 {
        assert!(
            (out[k] - expected[k]).abs() < 1e-6 * (1.0 + expected[k].abs()),
            "class {k}: {} vs {}",
            out[k],
            expected[k]
        );
    }
}

fn class_means(x: &Array2<f32>, y: &[usize]) -> Vec<Vec<f64>> {
    (0..2)
        .map(|k| {
            let rows: Vec<usize> = (0..y.len()).filter(|&i| y[i] == k).collect();
            (0..D)
                .map(|j| {
                    rows.iter().map(|&i| f64::from(x[[i, j]])).sum::<f64>() / rows.len() as f64
                })
                .collect()
        })
        .collect()
}

/// Pooled Ledoit–Wolf covariance as the LDA fit computes it: Σ_k prior_k · shrunk cov_k.
fn reference_covariance(x: &Array2<f32>, y: &[usize]) -> Vec<f64> {
    let means = class_means(x, y);
    let n = y.len() as f64;
    let mut lda = Lda::new(LdaConfig::default());
    lda.fit(x.view(), y).unwrap();
    let target = shrinkage_target(x, y, &lda);
    let mut cov = vec![0.0; D * D];
    for (i, &l) in y.iter().enumerate() {
        let s = lda.shrinkage_applied()[l];
        for a in 0..D {
            for b in 0..D {
                let ua = f64::from(x[[i, a]]) - means[l][a];
                let ub = f64::from(x[[i, b]]) - means[l][b];
                cov[a * D + b] += (1.0 - s) / n * ua * ub;
            }
        }
    }
    for a in 0..D {
        cov[a * D + a] += target[a];
    }
    cov
}

/// Diagonal shrinkage target Σ_k prior_k · s_k · mean(var/scale²)·scale² with the LDA's
/// per-class Ledoit–Wolf intensities (features standardised per class).
fn shrinkage_target(x: &Array2<f32>, y: &[usize], lda: &Lda) -> Vec<f64> {
    let means = class_means(x, y);
    let n = y.len() as f64;
    let mut target = vec![0.0; D];
    for k in 0..2 {
        let rows: Vec<usize> = (0..y.len()).filter(|&i| y[i] == k).collect();
        let nk = rows.len() as f64;
        let var: Vec<f64> = (0..D)
            .map(|j| {
                rows.iter()
                    .map(|&i| (f64::from(x[[i, j]]) - means[k][j]).powi(2))
                    .sum::<f64>()
                    / nk
            })
            .collect();
        // Standardised: every feature has variance 1, so the mean eigenvalue is 1.
        let s = lda.shrinkage_applied()[k];
        for j in 0..D {
            target[j] += nk / n * s * var[j];
        }
    }
    target
}

/// Solves `A x = b` (Gaussian elimination with partial pivoting).
fn solve(a: &[f64], b: &[f64]) -> Vec<f64> {
    let n = b.len();
    let mut m: Vec<Vec<f64>> = (0..n)
        .map(|i| {
            let mut row = a[i * n..(i + 1) * n].to_vec();
            row.push(b[i]);
            row
        })
        .collect();
    for c in 0..n {
        let p = (c..n)
            .max_by(|&i, &j| m[i][c].abs().total_cmp(&m[j][c].abs()))
            .unwrap();
        m.swap(c, p);
        for r in 0..n {
            if r != c {
                let f = m[r][c] / m[c][c];
                for k in c..=n {
                    m[r][k] -= f * m[c][k];
                }
            }
        }
    }
    (0..n).map(|i| m[i][n] / m[i][i]).collect()
}
