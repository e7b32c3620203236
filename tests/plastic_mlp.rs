//! The plastic MLP decoder on synthetic EEG-like features: calibration accuracy, determinism,
//! adaptation under drift, robustness to bad labels and artifact windows, the adaptive learning
//! rate, model files and configuration errors.
//!
//! Latency: `cargo test --release --test plastic_mlp -- --ignored --nocapture`.

use ndarray::Array2;
use neurostream::decoder::mlp::{Activation, MlpConfig, OnlineConfig, PlasticMlp};
use neurostream::decoder::{Decoder, DecoderConfig};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

/// Gaussian classes: class `k` has mean `means[k]`, unit noise; then each feature is multiplied
/// by `gain[j]` and shifted by `offset[j]` (how a session's drift acts on band power).
struct Source {
    means: Vec<Vec<f64>>,
    gain: Vec<f64>,
    offset: Vec<f64>,
}

impl Source {
    fn new(means: Vec<Vec<f64>>) -> Self {
        let d = means[0].len();
        Source {
            means,
            gain: vec![1.0; d],
            offset: vec![0.0; d],
        }
    }

    fn dim(&self) -> usize {
        self.means[0].len()
    }

    fn sample(&self, rng: &mut ChaCha8Rng, label: usize) -> Vec<f32> {
        (0..self.dim())
            .map(|j| {
                let noise: f64 = StandardNormal.sample(rng);
                ((self.means[label][j] + noise) * self.gain[j] + self.offset[j]) as f32
            })
            .collect()
    }

    /// `n` rows, labels cycling through the classes.
    fn dataset(&self, rng: &mut ChaCha8Rng, n: usize) -> (Array2<f32>, Vec<usize>) {
        let classes = self.means.len();
        let labels: Vec<usize> = (0..n).map(|i| i % classes).collect();
        let mut x = Array2::zeros((n, self.dim()));
        for (i, &label) in labels.iter().enumerate() {
            let row = self.sample(rng, label);
            x.row_mut(i).assign(&ndarray::ArrayView1::from(&row));
        }
        (x, labels)
    }
}

/// `classes` well-separated means in `d` dimensions: class `k` sits at `+separation` on features
/// `2k` and `2k+1`, the other features carry only noise.
fn separable(d: usize, classes: usize, separation: f64) -> Source {
    let means = (0..classes)
        .map(|k| {
            let mut m = vec![0.0; d];
            m[2 * k] = separation;
            m[2 * k + 1] = separation;
            m
        })
        .collect();
    Source::new(means)
}

fn argmax(p: &[f64]) -> usize {
    p.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i)
        .unwrap()
}

fn accuracy(model: &mut PlasticMlp, x: &Array2<f32>, labels: &[usize]) -> f64 {
    let mut p = vec![0.0; model.classes()];
    let correct = x
        .rows()
        .into_iter()
        .zip(labels)
        .filter(|(row, &label)| {
            model.predict_proba(row.as_slice().unwrap(), &mut p);
            argmax(&p) == label
        })
        .count();
    correct as f64 / labels.len() as f64
}

fn distance(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f64>()
        .sqrt()
}

fn fitted(source: &Source, config: MlpConfig, n: usize, seed: u64) -> PlasticMlp {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (x, y) = source.dataset(&mut rng, n);
    let mut model = PlasticMlp::new(config, source.means.len()).unwrap();
    model.fit(x.view(), &y).unwrap();
    model
}

fn state(model: &PlasticMlp) -> String {
    serde_json::to_string(model).unwrap()
}

#[test]
fn recovers_separable_two_and_three_class_problems() {
    for (d, classes, activation) in [
        (20, 2, Activation::Tanh),
        (20, 3, Activation::Tanh),
        (128, 3, Activation::Tanh),
        (20, 3, Activation::Relu),
    ] {
        let source = separable(d, classes, 2.5);
        let config = MlpConfig {
            activation,
            ..MlpConfig::default()
        };
        // A calibration-sized training set: 45 trials × a few windows.
        let mut model = fitted(&source, config, 300, 1);
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let (x, y) = source.dataset(&mut rng, 1500);
        let acc = accuracy(&mut model, &x, &y);
        println!("{classes} classes, {d}-d, {activation:?}: held-out accuracy {acc:.3}");
        assert!(acc >= 0.95, "{classes} classes, {d}-d: accuracy {acc}");
        assert_eq!(model.version(), 1);
    }
}

#[test]
fn fit_is_deterministic_per_seed() {
    let source = separable(12, 3, 1.5);
    let config = |seed| MlpConfig {
        seed,
        epochs: 30,
        hidden: vec![8, 6],
        ..MlpConfig::default()
    };
    let a = fitted(&source, config(5), 120, 9);
    let b = fitted(&source, config(5), 120, 9);
    let c = fitted(&source, config(6), 120, 9);
    assert_eq!(a.parameters(), b.parameters());
    assert_ne!(a.parameters(), c.parameters());
    let (mut a, mut b) = (a, b);
    let x: Vec<f32> = (0..12).map(|j| j as f32 * 0.1).collect();
    let (mut pa, mut pb) = ([0.0; 3], [0.0; 3]);
    a.predict_proba(&x, &mut pa);
    b.predict_proba(&x, &mut pb);
    assert_eq!(pa, pb);
}

/// Session drift: after calibration on A, the features are rescaled and shifted (gain and
/// offset per feature, as impedance and arousal change band power) and one informative feature
/// pair loses its class information while another pair gains it (the user's strategy changes).
/// Labels are revealed after each prediction. The adaptive copy follows; the frozen one cannot.
#[test]
fn plasticity_helps_under_drift() {
    let d = 16;
    let a = separable(d, 2, 2.0);
    let mut rng = ChaCha8Rng::seed_from_u64(30);
    let mut b = separable(d, 2, 2.0);
    // Class 0's pattern moves from features 0–1 to 4–5.
    b.means[0][0] = 0.0;
    b.means[0][1] = 0.0;
    b.means[0][4] = 2.0;
    b.means[0][5] = 2.0;
    b.gain = (0..d).map(|_| rng.gen_range(1.3..2.2)).collect();
    // Offsets of a few noise units, in directions that bias the frozen model.
    b.offset = (0..d).map(|_| rng.gen_range(-3.0..3.0)).collect();
    b.offset[..4].copy_from_slice(&[3.0, 2.5, -1.0, -1.5]);

    let mut frozen = fitted(&a, MlpConfig::default(), 300, 31);
    let mut observing = frozen.clone();
    let mut adaptive = frozen.clone();
    let mut rng_a = ChaCha8Rng::seed_from_u64(32);
    let (xa, ya) = a.dataset(&mut rng_a, 1000);
    let acc_a = accuracy(&mut frozen, &xa, &ya);

    let stream = 600;
    let mut p = [0.0; 2];
    let (mut right_frozen, mut right_observing, mut right_adaptive) = (0, 0, 0);
    let (mut late_frozen, mut late_adaptive) = (0, 0);
    let mut stream_rng = ChaCha8Rng::seed_from_u64(33);
    for i in 0..stream {
        let label = stream_rng.gen_range(0..2);
        let x = b.sample(&mut stream_rng, label);
        // Unlabelled adaptation happens as the window arrives, before it is classified.
        observing.observe(&x);
        adaptive.observe(&x);
        frozen.predict_proba(&x, &mut p);
        let f = (argmax(&p) == label) as usize;
        observing.predict_proba(&x, &mut p);
        let o = (argmax(&p) == label) as usize;
        adaptive.predict_proba(&x, &mut p);
        let ad = (argmax(&p) == label) as usize;
        right_frozen += f;
        right_observing += o;
        right_adaptive += ad;
        if i >= stream / 2 {
            late_frozen += f;
            late_adaptive += ad;
        }
        // The label arrives after the prediction (cue end or user feedback).
        adaptive.update(&x, label);
    }
    let mut rng_b = ChaCha8Rng::seed_from_u64(34);
    let (xb, yb) = b.dataset(&mut rng_b, 1000);
    let held_frozen = accuracy(&mut frozen, &xb, &yb);
    let held_observing = accuracy(&mut observing, &xb, &yb);
    let held_adaptive = accuracy(&mut adaptive, &xb, &yb);
    let n = stream as f64;
    println!("accuracy on A (calibration distribution): {acc_a:.3}");
    println!(
        "streamed B accuracy: frozen {:.3}, observe only {:.3}, observe + update {:.3}; \
         second half: frozen {:.3}, observe + update {:.3}",
        right_frozen as f64 / n,
        right_observing as f64 / n,
        right_adaptive as f64 / n,
        late_frozen as f64 / (n / 2.0),
        late_adaptive as f64 / (n / 2.0),
    );
    println!(
        "held-out B after the stream: frozen {held_frozen:.3}, observe only \
         {held_observing:.3}, observe + update {held_adaptive:.3}; adaptive version {}, \
         rate {:.4}, recent error {:.3}",
        adaptive.version(),
        adaptive.learning_rate(),
        adaptive.recent_error()
    );
    assert!(acc_a >= 0.9);
    assert!(
        held_adaptive >= held_frozen + 0.15,
        "{held_adaptive} vs {held_frozen}"
    );
    assert!(
        held_adaptive > held_observing,
        "{held_adaptive} vs {held_observing}"
    );
    assert!(late_adaptive > late_frozen);
}

#[test]
fn bad_labels_and_artifact_windows_do_bounded_damage() {
    let source = separable(20, 2, 2.0);
    let mut model = fitted(&source, single_step(), 300, 40);
    let max_update = model.config().online.max_update_norm;
    let mut rng = ChaCha8Rng::seed_from_u64(41);
    let (x, y) = source.dataset(&mut rng, 1000);
    let base_acc = accuracy(&mut model, &x, &y);
    let w0 = model.parameters().to_vec();

    // One wrong label on a typical class-0 window.
    let mut one = model.clone();
    let window = source.sample(&mut rng, 0);
    assert!(one.update(&window, 1));
    let step = distance(one.parameters(), &w0);
    let acc = accuracy(&mut one, &x, &y);
    println!("one wrong label: ‖Δw‖ = {step:.4}, accuracy {base_acc:.3} → {acc:.3}");
    assert!(step <= max_update * (1.0 + 1e-12));
    assert!((acc - base_acc).abs() <= 0.01);

    // Windows the model must refuse without any change of state: `update` on all of them,
    // `observe` on the non-finite ones. (`observe` on the all-1e6 window only counts it towards
    // the outlier patience; its weights and normaliser must not move.)
    let before = state(&model);
    let version = model.version();
    for (what, value) in [
        ("huge", 1e6f32),
        ("NaN", f32::NAN),
        ("+inf", f32::INFINITY),
        ("-inf", f32::NEG_INFINITY),
    ] {
        let mut bad = source.sample(&mut rng, 1);
        if value.is_finite() {
            bad.iter_mut().for_each(|v| *v = value);
        } else {
            bad[3] = value;
        }
        assert!(!model.update(&bad, 0), "{what} window was learnt from");
        assert!(
            state(&model) == before,
            "update on a {what} window changed the model"
        );
        let mut observer = model.clone();
        observer.observe(&bad);
        if value.is_finite() {
            assert_eq!(observer.parameters(), model.parameters());
            assert_eq!(observer.running_mean(), model.running_mean());
            assert_eq!(observer.running_variance(), model.running_variance());
        } else {
            assert!(
                state(&observer) == before,
                "observe on a {what} window changed the model"
            );
        }
        // Predictions on it are still a distribution.
        let mut p = [0.0; 2];
        model.predict_proba(&bad, &mut p);
        assert!(p.iter().all(|v| v.is_finite()) && (p[0] + p[1] - 1.0).abs() < 1e-12);
    }
    assert_eq!(model.version(), version);

    // One wild channel in an otherwise normal window is clipped, not refused: bounded step.
    let mut spiky = model.clone();
    let mut window = source.sample(&mut rng, 0);
    window[0] = 1e6;
    assert!(spiky.update(&window, 1));
    assert!(distance(spiky.parameters(), &w0) <= max_update * (1.0 + 1e-12));
    let acc = accuracy(&mut spiky, &x, &y);
    println!("wrong label on a window with a 1e6 channel: accuracy {acc:.3}");
    assert!((acc - base_acc).abs() <= 0.01);

    // 100 consecutive wrong labels: moved by at most 100 capped steps, all finite.
    let mut stubborn = model.clone();
    for _ in 0..100 {
        let window = source.sample(&mut rng, 0);
        assert!(stubborn.update(&window, 1));
    }
    let moved = distance(stubborn.parameters(), &w0);
    let acc = accuracy(&mut stubborn, &x, &y);
    println!(
        "100 wrong labels: ‖Δw‖ = {moved:.3} (bound {:.3}), accuracy {acc:.3}, rate {:.4}",
        100.0 * max_update,
        stubborn.learning_rate()
    );
    assert!(moved <= 100.0 * max_update * (1.0 + 1e-12));
    assert!(stubborn.parameters().iter().all(|w| w.is_finite()));
    assert_eq!(stubborn.version(), model.version() + 100);
}

#[test]
fn observe_moves_the_normaliser_not_the_weights() {
    let source = separable(10, 2, 2.0);
    let mut model = fitted(&source, MlpConfig::default(), 200, 50);
    let weights = model.parameters().to_vec();
    let mean0 = model.running_mean().to_vec();
    let version = model.version();
    let mut shifted = separable(10, 2, 2.0);
    shifted.offset = vec![3.0; 10];
    let mut rng = ChaCha8Rng::seed_from_u64(51);
    for _ in 0..3000 {
        let label = rng.gen_range(0..2);
        model.observe(&shifted.sample(&mut rng, label));
    }
    assert_eq!(model.parameters(), &weights[..]);
    assert_eq!(model.version(), version);
    for (m, m0) in model.running_mean().iter().zip(&mean0) {
        assert!((m - m0 - 3.0).abs() < 0.3, "mean moved {m0} → {m}");
    }
}

#[test]
fn observe_skips_artifact_bursts_but_follows_a_lasting_gain_change() {
    let source = separable(8, 2, 2.0);
    let mut model = fitted(&source, MlpConfig::default(), 200, 60);
    let patience = model.config().online.outlier_patience as usize;
    let mean0 = model.running_mean().to_vec();
    let artifact = vec![500.0f32; 8];
    for _ in 0..patience {
        model.observe(&artifact);
    }
    assert_eq!(
        model.running_mean(),
        &mean0[..],
        "artifact burst moved the mean"
    );
    // Still there after the patience: a new regime, followed through clipped values.
    for _ in 0..patience {
        model.observe(&artifact);
    }
    let moved = distance(model.running_mean(), &mean0);
    assert!(moved > 0.0);
    assert!(model.running_variance().iter().all(|v| v.is_finite()));
}

#[test]
fn learning_rate_rises_with_errors_and_falls_with_success() {
    let source = separable(10, 2, 2.5);
    let mut model = fitted(&source, single_step(), 200, 70);
    let OnlineConfig {
        learning_rate: base,
        min_rate,
        max_rate,
        ..
    } = model.config().online.clone();
    assert_eq!(model.learning_rate(), base);
    let mut rng = ChaCha8Rng::seed_from_u64(71);
    let in_bounds = |m: &PlasticMlp| (min_rate..=max_rate).contains(&m.learning_rate());
    for _ in 0..30 {
        let window = source.sample(&mut rng, 0);
        model.update(&window, 1);
        assert!(in_bounds(&model));
    }
    let after_errors = model.learning_rate();
    let error_high = model.recent_error();
    for _ in 0..150 {
        let label = rng.gen_range(0..2);
        let window = source.sample(&mut rng, label);
        model.update(&window, label);
        assert!(in_bounds(&model));
    }
    let after_success = model.learning_rate();
    println!(
        "rate: base {base}, after 30 errors {after_errors:.4} (recent error {error_high:.3}), \
         after 150 correct {after_success:.4} (recent error {:.3})",
        model.recent_error()
    );
    assert!(after_errors > base);
    assert!(after_success < base);
    assert!(after_success < after_errors);
}

#[test]
fn save_and_load_predict_identically() {
    let source = separable(16, 3, 2.0);
    let mut model = fitted(&source, single_step(), 150, 80);
    let mut rng = ChaCha8Rng::seed_from_u64(81);
    // Non-trivial online state: drifted normaliser, some updates.
    for i in 0..50 {
        let window = source.sample(&mut rng, i % 3);
        model.observe(&window);
        model.update(&window, i % 3);
    }
    // TOML: its float parser is exact, so the loaded weights are bit-identical. (serde_json's
    // default parser may be off by one ulp on 17-digit numbers unless its `float_roundtrip`
    // feature is on; the JSON round trip below is checked to 1e-12.)
    let text = toml::to_string(&model).unwrap();
    let mut loaded: PlasticMlp = toml::from_str(&text).unwrap();
    assert_eq!(loaded.version(), model.version());
    assert_eq!(loaded.parameters(), model.parameters());
    assert_eq!(loaded.learning_rate(), model.learning_rate());
    // The session's own state (drift anchor, replay buffer, steps taken) is not in the file:
    // a loaded model starts a session afresh, so it is compared with the saved one loaded.
    let mut model: PlasticMlp = toml::from_str(&text).unwrap();
    let (mut p, mut q) = ([0.0; 3], [0.0; 3]);
    for i in 0..100 {
        let window = source.sample(&mut rng, i % 3);
        model.predict_proba(&window, &mut p);
        loaded.predict_proba(&window, &mut q);
        assert_eq!(p, q);
        // And they keep learning identically.
        model.observe(&window);
        loaded.observe(&window);
        assert_eq!(model.update(&window, i % 3), loaded.update(&window, i % 3));
    }
    assert!(state(&model) == state(&loaded));

    let json = serde_json::to_string(&model).unwrap();
    let mut from_json: PlasticMlp = serde_json::from_str(&json).unwrap();
    for i in 0..100 {
        let window = source.sample(&mut rng, i % 3);
        model.predict_proba(&window, &mut p);
        from_json.predict_proba(&window, &mut q);
        assert!(p.iter().zip(&q).all(|(a, b)| (a - b).abs() <= 1e-12));
    }

    // A corrupted file is refused, not loaded into a net that would panic.
    let broken = json.replacen("\"sizes\":[16,", "\"sizes\":[17,", 1);
    assert_ne!(broken, json);
    assert!(serde_json::from_str::<PlasticMlp>(&broken).is_err());
}

#[test]
fn unfitted_model_is_uniform_and_does_not_learn() {
    let mut model = PlasticMlp::new(MlpConfig::default(), 4).unwrap();
    let mut p = [0.0; 4];
    model.predict_proba(&[1.0, 2.0], &mut p);
    assert_eq!(p, [0.25; 4]);
    assert!(!model.update(&[1.0, 2.0], 0));
    assert_eq!(model.version(), 0);
    assert!(PlasticMlp::new(MlpConfig::default(), 1).is_err());
    let x = Array2::<f32>::zeros((4, 2));
    assert!(model.fit(x.view(), &[0, 0, 0, 0]).is_err(), "one class");
    assert!(
        model.fit(x.view(), &[0, 1, 4, 0]).is_err(),
        "label out of range"
    );
}

#[test]
fn config_defaults_parse_and_errors_name_the_key() {
    let parse = |text: &str| -> MlpConfig {
        match toml::from_str::<DecoderConfig>(text).unwrap() {
            DecoderConfig::Mlp(c) => c,
            other => panic!("parsed as {other:?}"),
        }
    };
    assert_eq!(parse("kind = \"mlp\""), MlpConfig::default());
    let custom = parse(
        "kind = \"mlp\"\nhidden = [64, 16]\nactivation = \"relu\"\n\
         [online]\nmax_rate = 0.2\noutlier_z = 4.0\n",
    );
    assert_eq!(custom.hidden, vec![64, 16]);
    assert_eq!(custom.activation, Activation::Relu);
    assert_eq!(custom.online.max_rate, 0.2);
    assert_eq!(custom.online.min_rate, OnlineConfig::default().min_rate);
    custom.validate().unwrap();

    let unknown = toml::from_str::<DecoderConfig>("kind = \"mlp\"\nhiden = [8]\n").unwrap_err();
    assert!(unknown.to_string().contains("hiden"), "{unknown}");
    let unknown =
        toml::from_str::<DecoderConfig>("kind = \"mlp\"\n[online]\nmax_rat = 1.0\n").unwrap_err();
    assert!(unknown.to_string().contains("max_rat"), "{unknown}");

    let error = |c: MlpConfig| c.validate().unwrap_err().to_string();
    let online = |o: OnlineConfig| MlpConfig {
        online: o,
        ..MlpConfig::default()
    };
    let cases = [
        (
            error(online(OnlineConfig {
                max_rate: 5.0,
                ..OnlineConfig::default()
            })),
            "decoder.online.max_rate",
            "5",
        ),
        (
            error(online(OnlineConfig {
                min_rate: 0.5,
                ..OnlineConfig::default()
            })),
            "decoder.online.min_rate",
            "0.5",
        ),
        (
            error(online(OnlineConfig {
                normalization_forgetting: 1.5,
                ..OnlineConfig::default()
            })),
            "decoder.online.normalization_forgetting",
            "1.5",
        ),
        (
            error(online(OnlineConfig {
                max_update_norm: f64::NAN,
                ..OnlineConfig::default()
            })),
            "decoder.online.max_update_norm",
            "NaN",
        ),
        (
            error(MlpConfig {
                hidden: vec![32, 2000],
                ..MlpConfig::default()
            }),
            "decoder.hidden[1]",
            "2000",
        ),
        (
            error(MlpConfig {
                hidden: vec![],
                ..MlpConfig::default()
            }),
            "decoder.hidden",
            "1 or 2",
        ),
        (
            error(MlpConfig {
                learning_rate: 0.0,
                ..MlpConfig::default()
            }),
            "decoder.learning_rate",
            "(0, 1]",
        ),
        (
            error(MlpConfig {
                epochs: 0,
                ..MlpConfig::default()
            }),
            "decoder.epochs",
            "0",
        ),
    ];
    for (message, key, value) in cases {
        assert!(
            message.contains(key) && message.contains(value),
            "{message:?} should name {key} and {value}"
        );
    }
    assert!(PlasticMlp::new(
        MlpConfig {
            batch_size: 0,
            ..MlpConfig::default()
        },
        2
    )
    .is_err());
}

/// Per-window cost on the hot path; prints only (never asserts on wall-clock time).
///
/// Measured on the shared 2-core dev machine under load average ≈ 6–8 (so upper bounds):
/// 128-d → 32 → 3: predict 4.7–5.4 µs, observe 1.2–1.4 µs, update 18–24 µs;
/// 2080-d → 32 → 3: predict 41–55 µs, observe 16–18 µs, update ≈ 262 µs;
/// fit of 300 rows × 200 epochs ≈ 0.5–1.1 s at 128-d, 5–8 s at 2080-d.
#[test]
#[ignore = "latency report: run with --release -- --ignored --nocapture"]
fn latency_report() {
    use std::time::Instant;
    for d in [128, 200, 2080] {
        let source = separable(d, 3, 1.0);
        let config = MlpConfig {
            epochs: 20,
            ..MlpConfig::default()
        };
        let start = Instant::now();
        let mut model = fitted(&source, config.clone(), 300, 90);
        let fit_20 = start.elapsed().as_secs_f64();
        let mut rng = ChaCha8Rng::seed_from_u64(91);
        let windows: Vec<Vec<f32>> = (0..256).map(|i| source.sample(&mut rng, i % 3)).collect();
        let mut p = [0.0; 3];
        let reps = 20_000;
        let time = |f: &mut dyn FnMut(usize)| {
            for i in 0..1000 {
                f(i);
            }
            let start = Instant::now();
            for i in 0..reps {
                f(i);
            }
            start.elapsed().as_secs_f64() / reps as f64 * 1e6
        };
        let predict = time(&mut |i| model.predict_proba(&windows[i % 256], &mut p));
        let observe = time(&mut |i| model.observe(&windows[i % 256]));
        let update = time(&mut |i| {
            model.update(&windows[i % 256], i % 3);
        });
        println!(
            "{d}-d → 32 → 3: predict_proba {predict:.2} µs, observe {observe:.2} µs, \
             update {update:.2} µs; fit 300 rows × 20 epochs {fit_20:.2} s \
             (default 200 epochs ≈ {:.1} s)",
            fit_20 * 10.0
        );
    }
}

/// The single-example online step (no class-balanced replay, `replay_per_class = 0`): what
/// the bounded-damage, rate and save/load tests here pin down. Replay is tested in
/// tests/plasticity.rs.
fn single_step() -> MlpConfig {
    let mut config = MlpConfig::default();
    config.online.replay_per_class = 0;
    config
}
