//! Calibration and decoding end to end: epochs → feature stage → decoder → model file → live
//! pipeline.

mod common;

use neurostream::decoder::Decoder;
use neurostream::epochs;
use neurostream::evaluate;
use neurostream::features::extractor::AnyExtractor;
use neurostream::io::{self, RecordedStream, Recording, StreamData};
use neurostream::model::Model;
use neurostream::pipeline::{Pipeline, PipelineConfig};
use neurostream::source::replay::Replay;
use neurostream::source::simulator::{self, SimulatorConfig};
use neurostream::source::{Pace, Source, SourceItem};
use neurostream::stream::{ChannelInfo, Event, StreamInfo, ValueFormat};
use rand::{Rng, SeedableRng};

fn pipeline(name: &str) -> PipelineConfig {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("pipelines")
        .join(name);
    PipelineConfig::from_file(&path).unwrap()
}

/// 16 channels of white noise with `trials` random T1/T2 cues: no class information at all.
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
                if rng.gen_bool(0.5) { "T1" } else { "T2" },
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

#[test]
fn cross_validation_does_not_leak_test_epochs() {
    // CSP uses labels and LDA fits on few trials in 16 dimensions: fitted on everything, it
    // "decodes" pure noise with random labels almost perfectly. Cross-validated, with the
    // feature stage and decoder fitted inside each fold, it must stay near chance.
    let mut config = pipeline("mi_csp_lda.toml");
    config.features.csp.as_mut().unwrap().components = 16;
    let epochs = epochs::cut(&noise_recording(7, 60), &config).unwrap();
    assert_eq!(epochs.len(), 60);
    let all: Vec<usize> = (0..epochs.len()).collect();
    let mut leaky = evaluate::fit(&config, &epochs, &all).unwrap();
    let p = evaluate::predict(&mut leaky, &epochs, &all);
    let resubstitution =
        neurostream::decoder::metrics::Report::from_probabilities(&epochs.labels, p.view(), None)
            .unwrap()
            .accuracy;
    let cv = evaluate::cross_validate(&config, &epochs).unwrap();
    eprintln!(
        "noise, random labels: fitted-on-all accuracy {resubstitution:.3}, 5-fold CV {:.3}",
        cv.accuracy
    );
    assert!(
        resubstitution > 0.75,
        "the leak this test guards against is not visible: {resubstitution}"
    );
    assert!(
        cv.accuracy < 0.7,
        "cross-validated accuracy on noise {} suggests leakage",
        cv.accuracy
    );
}

#[test]
fn cross_validation_folds_fit_on_training_epochs_only() {
    // Same result whatever the test epochs hold: scramble every sample of fold 0's test
    // epochs and the predictions on the other folds' test sets do not move.
    let config = pipeline("mi_tangent_lda.toml");
    let sim = SimulatorConfig {
        speed: 0.0,
        ..Default::default()
    };
    let recording = simulator::record(&sim, 200.0).unwrap();
    let epochs = epochs::cut(&recording, &config).unwrap();
    let folds = neurostream::decoder::cv::stratified_kfold(&epochs.labels, 5, 42).unwrap();
    let mut trained = evaluate::fit(&config, &epochs, &folds[1].train).unwrap();
    let before = evaluate::predict(&mut trained, &epochs, &folds[1].test);
    // Folds 1's training set includes fold 0's test epochs, so change something else: fold 1's
    // own test epochs, which must never reach its fit.
    let scrambled = scramble(&recording, &epochs, &folds[1].test);
    let epochs2 = epochs::cut(&scrambled, &config).unwrap();
    let mut trained2 = evaluate::fit(&config, &epochs2, &folds[1].train).unwrap();
    let after = evaluate::predict(&mut trained2, &epochs, &folds[1].test);
    assert_eq!(before, after);
}

/// A copy of `recording` whose samples inside the given epochs' windows are replaced by noise.
fn scramble(recording: &Recording, epochs: &epochs::Epochs, which: &[usize]) -> Recording {
    let mut copy = recording.clone();
    let stream = &mut copy.streams[0];
    let rate = stream.info.nominal_rate;
    let channels = stream.info.channel_count();
    let StreamData::Signal { samples, values } = &mut stream.data else {
        panic!()
    };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    for &i in which {
        // The causal filters spread a change forward only; scrambling from the epoch start to
        // its end leaves every earlier sample alone.
        let start = (epochs.onsets[i] * rate).round() as usize;
        for c in 0..channels {
            for s in start..(start + epochs.samples).min(*samples) {
                values[c * *samples + s] = rng.gen_range(-100.0..100.0);
            }
        }
    }
    copy
}

#[test]
fn csp_on_simulated_lateralised_erd_picks_motor_channels() {
    let config = pipeline("mi_csp_lda.toml");
    let sim = SimulatorConfig {
        speed: 0.0,
        ..Default::default()
    };
    let recording = simulator::record(&sim, 400.0).unwrap();
    let epochs = epochs::cut(&recording, &config).unwrap();
    assert!(epochs.len() >= 40, "{} epochs", epochs.len());
    let all: Vec<usize> = (0..epochs.len()).collect();
    let trained = evaluate::fit(&config, &epochs, &all).unwrap();
    let AnyExtractor::Csp(csp) = &trained.extractor else {
        panic!("not CSP")
    };
    let labels: Vec<&str> = epochs.info.labels().collect();
    let motor = [
        "C3", "C1", "C5", "C4", "C2", "C6", "Cp3", "Cp4", "Fc3", "Fc4",
    ];
    // The two most discriminative components (one per class) peak over the motor strip.
    for pattern in &csp.patterns()[..2] {
        let peak = pattern
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.abs().total_cmp(&b.1.abs()))
            .unwrap()
            .0;
        assert!(
            motor.contains(&labels[peak]),
            "CSP pattern peaks at {}",
            labels[peak]
        );
    }
    // And the whole chain decodes the simulated imagery well above chance.
    let cv = evaluate::cross_validate(&config, &epochs).unwrap();
    eprintln!(
        "simulated ERD, CSP+LDA 5-fold: accuracy {:.3}, auc {:?}",
        cv.accuracy, cv.auc
    );
    assert!(cv.accuracy > 0.8, "{}", cv.accuracy);
}

/// Probabilities of every window of `path` through `config` with `model`.
fn replay_probabilities(
    config: &PipelineConfig,
    model: Model,
    recording: &Recording,
) -> Vec<Vec<f64>> {
    let mut source = Replay::new(recording, None, 16, Pace::AsFastAsPossible).unwrap();
    let mut pipeline = Pipeline::build(config, source.stream_info(), Some(model)).unwrap();
    let mut out = Vec::new();
    while let Some(item) = source.next_item().unwrap() {
        if let SourceItem::Chunk(mut chunk) = item {
            pipeline.process(&mut chunk, |w| out.push(w.probabilities.unwrap().to_vec()));
        }
    }
    out
}

#[test]
fn saved_and_loaded_models_predict_identically() {
    let Some([r04, r08, r12]) = common::imagery_runs("S001") else {
        return;
    };
    let train = [io::open(r04).unwrap(), io::open(r08).unwrap()];
    let test = io::open(r12).unwrap();
    let dir = std::env::temp_dir().join(format!("neurostream-model-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for name in [
        "mi_tangent_svm.toml",
        "mi_csp_lda.toml",
        "mi_bandpower_mlp.toml",
    ] {
        let config = pipeline(name);
        let epochs = epochs::cut_all(&train, &config).unwrap();
        let model =
            evaluate::train(&config, &epochs, vec!["S001R04".into(), "S001R08".into()]).unwrap();
        let path = dir.join(format!("{name}.json"));
        model.save(&path).unwrap();
        let loaded = Model::load(&path).unwrap();
        let a = replay_probabilities(&config, model, &test);
        let b = replay_probabilities(&config, loaded, &test);
        assert_eq!(a.len(), 1 + (20_000 - 480) / 16);
        assert_eq!(a, b, "{name}: loaded model predicts differently");
        for p in &a {
            assert!(
                (p.iter().sum::<f64>() - 1.0).abs() < 1e-9
                    && p.iter().all(|v| (0.0..=1.0).contains(v))
            );
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_model_that_does_not_fit_the_pipeline_is_refused_with_the_reason() {
    let config = pipeline("mi_csp_lda.toml");
    let sim = SimulatorConfig {
        speed: 0.0,
        ..Default::default()
    };
    let recording = simulator::record(&sim, 120.0).unwrap();
    let epochs = epochs::cut(&recording, &config).unwrap();
    let model = evaluate::train(&config, &epochs, vec!["sim".into()]).unwrap();
    let stream = Replay::new(&recording, None, 16, Pace::AsFastAsPossible)
        .unwrap()
        .stream_info()
        .clone();

    let mut fewer_channels = config.clone();
    fewer_channels.preprocess.channels = vec!["C3".into(), "Cz".into(), "C4".into()];
    let err = Pipeline::build(&fewer_channels, &stream, Some(model.clone()))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("16 channel(s)") && err.contains("has 3"),
        "{err}"
    );

    let mut other_window = config.clone();
    other_window.features.window_seconds = 2.0;
    let err = Pipeline::build(&other_window, &stream, Some(model.clone()))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("480 samples") && err.contains("320"), "{err}");

    let mut other_filter = config.clone();
    other_filter.preprocess.bandpass.as_mut().unwrap().high = 30.0;
    let err = Pipeline::build(&other_filter, &stream, Some(model.clone()))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("preprocessing differs"), "{err}");

    let mut faster = stream.clone();
    faster.nominal_rate = 250.0;
    let err = Pipeline::build(&config, &faster, Some(model.clone()))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("160 Hz") || err.contains("samples"), "{err}");

    // A model file that is not one, or from a future version, says so.
    let err = Model::from_json("{\"format\": \"something-else\"}", "x.json")
        .unwrap_err()
        .to_string();
    assert!(err.contains("something-else"), "{err}");
    let mut text = serde_json::to_value(&model).unwrap();
    text["version"] = 99.into();
    let err = Model::from_json(&text.to_string(), "x.json")
        .unwrap_err()
        .to_string();
    assert!(err.contains("version Some(99)"), "{err}");

    // The hop may differ: it only changes how often windows are taken.
    let mut other_hop = config.clone();
    other_hop.features.hop_seconds = 0.5;
    Pipeline::build(&other_hop, &stream, Some(model)).unwrap();
}

#[test]
fn plastic_decoder_learns_online_and_its_version_moves() {
    let config = pipeline("mi_bandpower_mlp.toml");
    let sim = SimulatorConfig {
        speed: 0.0,
        ..Default::default()
    };
    // Calibration and the online session are two runs (two recordings), as in a lab.
    let calibration_run = simulator::record(&sim, 150.0).unwrap();
    let online_run = simulator::record(
        &SimulatorConfig {
            seed: sim.seed + 1,
            ..sim.clone()
        },
        150.0,
    )
    .unwrap();
    let calibration = epochs::cut(&calibration_run, &config).unwrap();
    let session = epochs::cut(&online_run, &config).unwrap();
    let outcome = evaluate::online(&config, &calibration, &[&online_run]).unwrap();
    eprintln!(
        "simulated session: adaptive {:.3}, frozen {:.3}, {} updates",
        outcome.adaptive.accuracy, outcome.frozen.accuracy, outcome.updates_applied
    );
    // Every cue with a full window is a trial, decided by the engine as live.
    assert_eq!(outcome.online_trials, session.len());
    // The MLP's class-balanced replay declines steps until every class has a labelled
    // example: the leading run of the first label.
    let leading = session
        .labels
        .iter()
        .take_while(|&&l| l == session.labels[0])
        .count();
    assert_eq!(outcome.updates_applied, session.len() - leading);
    assert!(outcome.frozen.accuracy > 0.7, "{}", outcome.frozen.accuracy);
    assert!(outcome.final_learning_rate.is_some());

    // The net's version moves with each accepted update.
    let all: Vec<usize> = (0..calibration.len()).collect();
    let mut trained = evaluate::fit(&config, &calibration, &all).unwrap();
    let version = trained.decoder.as_mlp().unwrap().version();
    // Class-balanced replay steps once two classes have a labelled example.
    let other = (0..session.len())
        .find(|&i| session.labels[i] != session.labels[0])
        .unwrap();
    let x = evaluate::feature_matrix(&mut trained.extractor, &session, &[0, other]);
    assert!(!trained
        .decoder
        .update(x.row(0).as_slice().unwrap(), session.labels[0]));
    assert_eq!(trained.decoder.as_mlp().unwrap().version(), version);
    assert!(trained
        .decoder
        .update(x.row(1).as_slice().unwrap(), session.labels[other]));
    assert_eq!(trained.decoder.as_mlp().unwrap().version(), version + 1);
}

#[test]
fn three_classes_left_right_rest_end_to_end() {
    let mut config = pipeline("mi_tangent_lda.toml");
    config.training.classes = ["T0:rest", "T1:left", "T2:right"]
        .iter()
        .map(|s| {
            let (event, name) = s.split_once(':').unwrap();
            neurostream::epochs::ClassSpec {
                event: event.into(),
                name: name.into(),
            }
        })
        .collect();
    let sim = SimulatorConfig {
        speed: 0.0,
        ..Default::default()
    };
    let recording = simulator::record(&sim, 400.0).unwrap();
    let epochs = epochs::cut(&recording, &config).unwrap();
    let cv = evaluate::cross_validate(&config, &epochs).unwrap();
    eprintln!(
        "simulated rest/left/right, tangent space + LDA: accuracy {:.3}",
        cv.accuracy
    );
    assert_eq!(cv.pooled.classes, 3);
    assert_eq!(cv.pooled.confusion.len(), 3);
    assert!(cv.auc.is_none(), "AUC is reported for two classes only");
    assert!(cv.accuracy > 0.6, "3-class accuracy {}", cv.accuracy);
}

#[test]
fn the_live_pipeline_lets_the_plastic_net_follow_feature_drift() {
    let config = pipeline("mi_bandpower_mlp.toml");
    let sim = SimulatorConfig {
        speed: 0.0,
        ..Default::default()
    };
    let recording = simulator::record(&sim, 120.0).unwrap();
    let model = evaluate::train(
        &config,
        &epochs::cut(&recording, &config).unwrap(),
        vec!["sim".into()],
    )
    .unwrap();
    // A later session whose amplitude drifted: every sample ×3 (log power + ln 9).
    let mut drifted = simulator::record(&SimulatorConfig { seed: 9, ..sim }, 60.0).unwrap();
    if let StreamData::Signal { values, .. } = &mut drifted.streams[0].data {
        values.iter_mut().for_each(|v| *v *= 3.0);
    }
    let mut source = Replay::new(&drifted, None, 16, Pace::AsFastAsPossible).unwrap();
    let mut live = Pipeline::build(&config, source.stream_info(), Some(model)).unwrap();
    let mean = |p: &Pipeline| {
        p.decoder()
            .unwrap()
            .as_mlp()
            .unwrap()
            .running_mean()
            .to_vec()
    };
    let before = mean(&live);
    while let Some(item) = source.next_item().unwrap() {
        if let SourceItem::Chunk(mut chunk) = item {
            live.process(&mut chunk, |_| {});
        }
    }
    let after = mean(&live);
    // The running mean of each log-power feature moved towards the drifted level (+ln 9 ≈ 2.2):
    // with forgetting 0.999 per window and ~570 windows, by about (1 − 0.999^570)·2.2 ≈ 0.95.
    let shift: f64 =
        before.iter().zip(&after).map(|(b, a)| a - b).sum::<f64>() / before.len() as f64;
    assert!((0.6..1.5).contains(&shift), "normaliser moved by {shift}");
}
