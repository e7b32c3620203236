//! Calibrated probabilities and the learned operating point: the calibration never inverts a
//! decoder's ranking, the operating point is the one worked out by hand, and the threshold in
//! force follows the model unless the pipeline file overrides it.

mod common;

use ndarray::{array, Array2};
use neurostream::control::{choose_operating_point, ControlConfig, OperatingPoint};
use neurostream::decoder::calibration::{
    fit_sigmoid, platt_probability, Calibration, CalibrationMap,
};
use neurostream::decoder::metrics::{roc_auc, Report};
use neurostream::epochs;
use neurostream::evaluate;
use neurostream::io::{RecordedStream, Recording, StreamData};
use neurostream::model::Model;
use neurostream::pipeline::PipelineConfig;
use neurostream::stream::{ChannelInfo, Event, StreamInfo, ValueFormat};
use rand::{Rng, SeedableRng};

/// Out-of-fold decision values that rank the classes the wrong way round (a decoder below
/// chance in cross-validation): class 1 mostly gets the lower values.
fn inverted_case() -> (Array2<f64>, Vec<usize>) {
    let values = [
        (-2.0, 1),
        (-1.5, 1),
        (-1.0, 1),
        (-0.5, 0),
        (-0.2, 1),
        (0.1, 0),
        (0.4, 1),
        (0.8, 0),
        (1.2, 0),
        (1.9, 0),
    ];
    let mut scores = Array2::<f64>::zeros((values.len(), 2));
    let mut labels = Vec::new();
    for (i, &(f, label)) in values.iter().enumerate() {
        // Any decoder's two scores whose difference is the decision value.
        scores[[i, 0]] = 3.0 - 0.5 * f;
        scores[[i, 1]] = 3.0 + 0.5 * f;
        labels.push(label);
    }
    (scores, labels)
}

#[test]
fn a_platt_fit_that_would_invert_the_ranking_is_refused() {
    let (scores, labels) = inverted_case();
    let f: Vec<f64> = scores.rows().into_iter().map(|r| r[1] - r[0]).collect();
    let y: Vec<bool> = labels.iter().map(|&l| l == 1).collect();

    // The unconstrained fit (what the SVM's Platt scaling and scikit-learn do) decreases in
    // the decision value: A > 0 in P = 1/(1 + exp(A f + B)).
    let [a, b] = fit_sigmoid(&f, &y);
    assert!(a > 0.0, "the raw fit should invert here: A = {a}");
    assert!(platt_probability(2.0, [a, b]) < platt_probability(-2.0, [a, b]));

    // The stored calibration refuses it and keeps the ranking.
    let calibration = Calibration::fit(scores.view(), &labels).unwrap();
    let CalibrationMap::Platt { slope, .. } = calibration.map else {
        panic!("two classes use Platt scaling: {calibration:?}")
    };
    assert!(slope > 0.0, "slope {slope}");
    let refused = calibration.refused_slope.expect("the refusal is recorded");
    assert!(
        (refused + a).abs() < 1e-12,
        "refused slope {refused}, raw A {a}"
    );

    // Strictly increasing in the decision value, over the data and far outside it.
    let mut previous = 0.0;
    for i in -50..=50 {
        let mut row = [0.0, i as f64 * 0.1];
        calibration.apply(&mut row);
        assert!(
            row[1] > previous,
            "p1 not increasing at f = {}",
            i as f64 * 0.1
        );
        assert!((row[0] + row[1] - 1.0).abs() < 1e-15);
        previous = row[1];
    }
    // So the AUC of the probabilities is the AUC of the decision values (no ties here).
    let p = evaluate::calibrated(&calibration, &scores);
    let auc_p = roc_auc(&p.column(1).to_vec(), &y).unwrap();
    let auc_f = roc_auc(&f, &y).unwrap();
    assert_eq!(auc_p, auc_f);
    assert!(auc_f < 0.5);

    // And the model file keeps it: a stored calibration with a non-positive slope is refused
    // on load, naming the field.
    let json = serde_json::to_string(&calibration).unwrap();
    let back: Calibration = serde_json::from_str(&json).unwrap();
    assert_eq!(back, calibration);
    let mut bad = calibration.clone();
    bad.map = CalibrationMap::Platt {
        slope: -1.0,
        offset: 0.0,
    };
    let err = bad.validate(2).unwrap_err();
    assert!(err.contains("calibration.slope is -1"), "{err}");
}

#[test]
fn calibration_keeps_the_ranking_of_random_scores() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    for classes in [2usize, 3, 4] {
        let n = 200;
        let mut scores = Array2::<f64>::zeros((n, classes));
        let labels: Vec<usize> = (0..n).map(|i| i % classes).collect();
        for (i, &l) in labels.iter().enumerate() {
            for k in 0..classes {
                scores[[i, k]] = rng.gen_range(-5.0..5.0) + if k == l { 1.0 } else { 0.0 };
            }
        }
        let calibration = Calibration::fit(scores.view(), &labels).unwrap();
        let p = evaluate::calibrated(&calibration, &scores);
        for row in 0..n {
            assert!((p.row(row).sum() - 1.0).abs() < 1e-12);
        }
        if classes > 2 {
            // Temperature scaling keeps the order of the classes within every window.
            for row in 0..n {
                let (s, q) = (scores.row(row), p.row(row));
                for a in 0..classes {
                    for b in 0..classes {
                        if s[a] > s[b] {
                            assert!(q[a] > q[b], "row {row}: {s} → {q}");
                        }
                    }
                }
            }
        } else {
            // Platt scaling orders the windows like the decision value s₁ − s₀ (its offset
            // may move the 0.5 point, never the order).
            let mut order: Vec<usize> = (0..n).collect();
            order.sort_by(|&a, &b| {
                let f = |i: usize| scores[[i, 1]] - scores[[i, 0]];
                f(a).total_cmp(&f(b))
            });
            for w in order.windows(2) {
                assert!(p[[w[0], 1]] <= p[[w[1], 1]], "rows {w:?}");
            }
            let positives: Vec<bool> = labels.iter().map(|&l| l == 1).collect();
            let f: Vec<f64> = scores.rows().into_iter().map(|r| r[1] - r[0]).collect();
            assert_eq!(
                roc_auc(&p.column(1).to_vec(), &positives).unwrap(),
                roc_auc(&f, &positives).unwrap()
            );
        }
    }
}

/// Ten calibration windows, two classes, both commanding: (p₁, true label).
fn table() -> (Array2<f64>, Vec<usize>) {
    let rows = [
        (0.95, 1),
        (0.90, 1),
        (0.15, 0),
        (0.80, 0),
        (0.25, 0),
        (0.70, 1),
        (0.35, 1),
        (0.60, 0),
        (0.45, 0),
        (0.52, 1),
    ];
    let mut p = Array2::<f64>::zeros((rows.len(), 2));
    for (i, &(p1, _)) in rows.iter().enumerate() {
        p[[i, 0]] = 1.0 - p1;
        p[[i, 1]] = p1;
    }
    (p, rows.iter().map(|r| r.1).collect())
}

fn control(target: f64, share: f64, min: Option<f64>) -> ControlConfig {
    ControlConfig {
        target_precision: target,
        min_command_share: share,
        min_precision: min,
        ..ControlConfig::default()
    }
}

#[test]
fn operating_point_matches_the_hand_computed_one() {
    // Winners sorted by probability: 0.95 ✓, 0.90 ✓, 0.85 ✓, 0.80 ✗, 0.75 ✓, 0.70 ✓, 0.65 ✗,
    // 0.60 ✗, 0.55 ✓, 0.52 ✓. Precision of the top m: 1, 1, 1, 3/4, 4/5, 5/6, 5/7, 5/8, 6/9,
    // 7/10. At least ⌈0.25 · 10⌉ = 3 windows must pass.
    let (p, labels) = table();
    let both = [true, true];
    let close = |a: f64, b: f64| (a - b).abs() < 1e-12;

    // Target 0.75: the most commands reaching it is the top 6 → threshold (0.70 + 0.65)/2.
    let op = choose_operating_point(p.view(), &labels, &both, &control(0.75, 0.25, None)).unwrap();
    assert!(close(op.threshold, 0.675), "{op:?}");
    assert!(close(op.expected_precision, 5.0 / 6.0), "{op:?}");
    assert!(close(op.expected_command_share, 0.6), "{op:?}");
    assert!(op.reached_target && op.commands);
    assert_eq!(op.windows, 10);

    // Target 0.7: everything passes (7/10), threshold at the two-class floor 0.5.
    let op = choose_operating_point(p.view(), &labels, &both, &control(0.7, 0.25, None)).unwrap();
    assert!(close(op.threshold, 0.5) && close(op.expected_command_share, 1.0));
    assert!(close(op.expected_precision, 0.7), "{op:?}");

    // Target 0.9: the top 3 (precision 1) → threshold (0.85 + 0.80)/2.
    let op = choose_operating_point(p.view(), &labels, &both, &control(0.9, 0.25, None)).unwrap();
    assert!(close(op.threshold, 0.825) && close(op.expected_precision, 1.0));

    // Target 0.9 but at least half the windows: unreachable (best 5/6 at the top 6): the best
    // operating point, marked, and still commanding...
    let op = choose_operating_point(p.view(), &labels, &both, &control(0.9, 0.5, None)).unwrap();
    assert!(!op.reached_target && op.commands, "{op:?}");
    assert!(close(op.threshold, 0.675) && close(op.expected_precision, 5.0 / 6.0));
    // ...unless the user set a minimum precision it misses.
    let op =
        choose_operating_point(p.view(), &labels, &both, &control(0.9, 0.5, Some(0.9))).unwrap();
    assert!(!op.commands, "{op:?}");

    // Class 0 sends no command (rest): its windows never count. Left: 0.95 ✓, 0.90 ✓, 0.80 ✗,
    // 0.70 ✓, 0.60 ✗, 0.52 ✓ → precisions 1, 1, 2/3, 3/4, 3/5, 4/6; target 0.75 → top 4,
    // threshold (0.70 + 0.60)/2, 4 of 10 windows.
    let op = choose_operating_point(
        p.view(),
        &labels,
        &[false, true],
        &control(0.75, 0.25, None),
    )
    .unwrap();
    assert!(close(op.threshold, 0.65) && close(op.expected_precision, 0.75));
    assert!(close(op.expected_command_share, 0.4), "{op:?}");

    // Bad input is named.
    let err = choose_operating_point(p.view(), &labels[..3], &both, &control(0.7, 0.25, None))
        .unwrap_err()
        .to_string();
    assert!(err.contains("10 probability rows and 3 labels"), "{err}");
}

#[test]
fn the_threshold_follows_the_model_unless_the_file_sets_one() {
    let classes = vec!["left".to_string(), "right".to_string()];
    let op = OperatingPoint {
        threshold: 0.53,
        expected_precision: 0.72,
        expected_command_share: 0.8,
        target_precision: 0.7,
        reached_target: true,
        commands: true,
        windows: 30,
    };
    let learned = ControlConfig::default();
    assert_eq!(
        learned.build_with(&classes, Some(&op)).unwrap().threshold(),
        0.53
    );
    assert_eq!(learned.build_with(&classes, None).unwrap().threshold(), 0.6);
    let explicit = ControlConfig {
        threshold: Some(0.8),
        ..ControlConfig::default()
    };
    assert_eq!(
        explicit
            .build_with(&classes, Some(&op))
            .unwrap()
            .threshold(),
        0.8
    );
    let silent = OperatingPoint {
        commands: false,
        ..op.clone()
    };
    let mut controller = learned.build_with(&classes, Some(&silent)).unwrap();
    assert_eq!(controller.threshold(), f64::INFINITY);
    assert!(controller.decide(0.0, &[0.0, 1.0]).is_none());

    // A pipeline file without `threshold` parses to "learned"; the keys are checked.
    let config: ControlConfig = toml::from_str("target_precision = 0.8").unwrap();
    assert_eq!((config.threshold, config.target_precision), (None, 0.8));
    let err = ControlConfig {
        target_precision: 1.5,
        ..ControlConfig::default()
    }
    .build(&classes)
    .unwrap_err()
    .to_string();
    assert!(err.contains("control.target_precision = 1.5"), "{err}");
}

#[test]
fn report_carries_probability_quality() {
    let truth = [1, 0, 1, 0];
    let p = array![[0.2, 0.8], [0.99, 0.01], [0.6, 0.4], [0.5, 0.5]];
    let r = Report::from_probabilities(&truth, p.view(), None).unwrap();
    // (0.04 + 0.0001 + 0.36 + 0.25)/4
    assert!((r.brier.unwrap() - 0.6501 / 4.0).abs() < 1e-12);
    let ll = -(0.8f64.ln() + 0.99f64.ln() + 0.4f64.ln() + 0.5f64.ln()) / 4.0;
    assert!((r.log_loss.unwrap() - ll).abs() < 1e-12);
    assert_eq!(r.saturated, Some(0.25));
    // Bins: 0.8 ✓ (bin 8), 0.99 ✓ (bin 9), 0.6 ✗ (bin 6), 0.5 → class 0 ✓ (bin 5):
    // (0.2 + 0.01 + 0.6 + 0.5)/4.
    assert!((r.ece.unwrap() - 1.31 / 4.0).abs() < 1e-12, "{:?}", r.ece);
}

/// 16 channels of white noise with random T1/T2 cues: no class information at all.
fn noise_recording(seed: u64, trials: usize) -> Recording {
    let rate = 160.0;
    let channels = 16;
    let samples = (trials * 5 + 5) * rate as usize;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let values: Vec<f32> = (0..channels * samples)
        .map(|_| rng.gen_range(-30.0..30.0))
        .collect();
    let events: Vec<Event> = (0..trials)
        .map(|i| {
            Event::new(
                if i % 2 == 0 { "T1" } else { "T2" },
                1.0 + 5.0 * i as f64,
                4.0,
            )
        })
        .collect();
    let info = StreamInfo {
        name: "noise".into(),
        stream_type: "EEG".into(),
        source_id: "noise".into(),
        channels: (0..channels)
            .map(|c| ChannelInfo::new(format!("N{c}"), "uV"))
            .collect(),
        nominal_rate: rate,
        format: ValueFormat::Float32,
    };
    Recording {
        streams: vec![
            RecordedStream {
                info: info.clone(),
                timestamps: (0..samples).map(|i| i as f64 / rate).collect(),
                data: StreamData::Signal { samples, values },
            },
            RecordedStream {
                info: StreamInfo {
                    stream_type: "Markers".into(),
                    nominal_rate: 0.0,
                    format: ValueFormat::String,
                    channels: vec![ChannelInfo::new("m", "")],
                    ..info
                },
                timestamps: events.iter().map(|e| e.onset).collect(),
                data: StreamData::Markers(events),
            },
        ],
    }
}

fn pipeline(name: &str) -> PipelineConfig {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("pipelines")
        .join(name);
    PipelineConfig::from_file(&path).unwrap()
}

#[test]
fn calibrated_models_on_noise_are_sign_correct_and_still_command() {
    // Pure noise: cross-validation decodes at chance, and for some seeds below it, where the
    // unconstrained Platt fit would invert the ranking. Every stored calibration must be
    // increasing, and the operating point must still let commands through.
    let config = pipeline("mi_csp_lda.toml");
    let mut refused = 0;
    for seed in 0..6 {
        let recording = noise_recording(seed, 40);
        let epochs = epochs::cut(&recording, &config).unwrap();
        let model = evaluate::train(&config, &epochs, vec!["noise".into()]).unwrap();
        let calibration = model.calibration.as_ref().expect("train calibrates");
        let CalibrationMap::Platt { slope, .. } = calibration.map else {
            panic!("{calibration:?}")
        };
        assert!(slope > 0.0, "seed {seed}: slope {slope}");
        refused += usize::from(calibration.refused_slope.is_some());
        let op = model
            .operating_point
            .as_ref()
            .expect("train learns a threshold");
        assert!(op.commands && op.expected_command_share >= 0.25, "{op:?}");
        assert!(op.threshold < 1.0);
        // The model file round-trips and validates.
        let json = serde_json::to_string(&model).unwrap();
        let back = Model::from_json(&json, "test").unwrap();
        assert_eq!(back.calibration, model.calibration);
        assert_eq!(back.operating_point, model.operating_point);
    }
    assert!(
        refused > 0,
        "no seed produced an inverted raw fit; the test no longer covers the refusal"
    );
}

#[test]
fn held_out_real_eeg_probability_auc_equals_decision_auc() {
    let Some(runs) = common::imagery_runs("S001") else {
        eprintln!("skipped: NEUROSTREAM_DATA not set");
        return;
    };
    for name in ["mi_tangent_lda.toml", "mi_csp_svm.toml"] {
        let config = pipeline(name);
        let open = |p: &std::path::Path| neurostream::io::open(p).unwrap();
        let (r4, r8, r12) = (open(&runs[0]), open(&runs[1]), open(&runs[2]));
        let train = epochs::cut_all([&r4, &r8], &config).unwrap();
        let test = epochs::cut(&r12, &config).unwrap();
        let out = evaluate::holdout_detailed(&config, &train, &test).unwrap();
        let r = &out.report;
        let (auc, dec) = (r.auc.unwrap(), r.decision_auc.unwrap());
        assert!((auc - dec).abs() <= 0.01, "{name}: {auc} vs {dec}");
        assert!(
            r.brier.unwrap() < 0.5 && r.saturated.unwrap() < 0.5,
            "{name}: {r:?}"
        );
        assert!(out.operating_point.is_some());
    }
}
