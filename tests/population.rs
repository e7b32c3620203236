//! Population prior (src/population.rs): re-centring, prior files, channel matching by name,
//! the combined decoder, the Wilcoxon test, and a synthetic population in which the prior
//! decodes a new person with zero labelled trials.

use nalgebra::DMatrix;
use ndarray::Array2;
use neurostream::decoder::Decoder;
use neurostream::epochs::{self, Epochs};
use neurostream::evaluate;
use neurostream::io::{RecordedStream, Recording, StreamData};
use neurostream::linalg::{self, Mat};
use neurostream::pipeline::PipelineConfig;
use neurostream::population::{self, PopulationPrior};
use neurostream::stream::{ChannelInfo, Event, StreamInfo, ValueFormat};
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};

const CHANNELS: usize = 6;
const RATE: f64 = 160.0;

fn pipeline() -> PipelineConfig {
    PipelineConfig::from_toml(
        r#"
[source]
kind = "replay"
path = "x.edf"
speed = 0
[preprocess.bandpass]
low = 8.0
high = 32.0
order = 4
[features]
window_seconds = 2.0
hop_seconds = 0.1
[features.tangent_space]
shrinkage = "oas"
[decoder]
kind = "lda"
shrinkage = "auto"
[training]
classes = [{ event = "T1", name = "left" }, { event = "T2", name = "right" }]
folds = 5
seed = 42
"#,
        "test pipeline",
    )
    .unwrap()
}

fn random_spd(rng: &mut rand_chacha::ChaCha8Rng, n: usize, spread: f64) -> Mat {
    // exp of a random symmetric matrix: SPD, eigenvalues within e^{±spread·…}.
    let a = DMatrix::from_fn(n, n, |_, _| {
        let v: f64 = StandardNormal.sample(rng);
        v * spread
    });
    linalg::expm(&((&a + a.transpose()) * 0.5)).unwrap()
}

/// A person: sources with a class-dependent variance (class 0 boosts source 0, class 1
/// source 1, each by 2.5 while damping the other by 0.4, so the sources' mean covariance is a
/// multiple of I), seen through the person's own SPD mixing `mixing` (a strongly different
/// "head" per person): re-centring on the person's mean undoes the mixing. Cues every 3.5 s; white noise passes the band-pass unchanged in shape.
fn person_recording(seed: u64, mixing: &Mat, trials: usize, names: &[String]) -> Recording {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let trial_seconds = 3.5;
    let samples = ((trials as f64 + 1.0) * trial_seconds * RATE) as usize;
    let mut labels = Vec::new();
    let mut events = Vec::new();
    for t in 0..trials {
        let label = t % 2;
        labels.push(label);
        events.push(Event::new(
            if label == 0 { "T1" } else { "T2" },
            0.5 + trial_seconds * t as f64,
            3.0,
        ));
    }
    let mut values = vec![0f32; CHANNELS * samples];
    let mut source = [0f64; CHANNELS];
    for s in 0..samples {
        let t = s as f64 / RATE;
        let active = events
            .iter()
            .zip(&labels)
            .find(|(e, _)| t >= e.onset && t < e.onset + 3.0)
            .map(|(_, &l)| l);
        for (k, v) in source.iter_mut().enumerate() {
            let gain = match active {
                Some(l) if l == k => 2.5,
                Some(l) if l + k == 1 => 0.4,
                _ => 1.0,
            };
            let z: f64 = StandardNormal.sample(&mut rng);
            *v = gain * z * 10.0;
        }
        for c in 0..CHANNELS {
            let x: f64 = (0..CHANNELS).map(|k| mixing[(c, k)] * source[k]).sum();
            values[c * samples + s] = x as f32;
        }
    }
    let info = StreamInfo {
        name: "synthetic".into(),
        stream_type: "EEG".into(),
        source_id: format!("person{seed}"),
        channels: names
            .iter()
            .map(|n| ChannelInfo::new(n.clone(), "uV"))
            .collect(),
        nominal_rate: RATE,
        format: ValueFormat::Float32,
    };
    Recording {
        streams: vec![
            RecordedStream {
                info: info.clone(),
                timestamps: (0..samples).map(|i| i as f64 / RATE).collect(),
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

fn names() -> Vec<String> {
    ["C3", "C4", "Cz", "FC3", "FC4", "CPz"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// People 0..n, each with its own mixing.
fn population_epochs(
    config: &PipelineConfig,
    people: usize,
    trials: usize,
) -> Vec<(String, Epochs)> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    (0..people)
        .map(|p| {
            let mixing = random_spd(&mut rng, CHANNELS, 0.5);
            let rec = person_recording(100 + p as u64, &mixing, trials, &names());
            (format!("P{p}"), epochs::cut(&rec, config).unwrap())
        })
        .collect()
}

fn extractor(
    model: &neurostream::model::Model,
    config: &PipelineConfig,
    epochs: &Epochs,
) -> neurostream::features::extractor::AnyExtractor {
    let labels: Vec<String> = epochs.info.labels().map(str::to_owned).collect();
    let mut ex = config
        .features
        .build_extractor(&labels, epochs.rate, epochs.samples)
        .unwrap();
    ex.restore(model.extractor.clone()).unwrap();
    ex
}

fn accuracy(model: &neurostream::model::Model, config: &PipelineConfig, epochs: &Epochs) -> f64 {
    let mut extractor = extractor(model, config, epochs);
    let all: Vec<usize> = (0..epochs.len()).collect();
    let x = evaluate::feature_matrix(&mut extractor, epochs, &all);
    let mut decoder = model.decoder.clone();
    let mut p = vec![0.0; 2];
    let mut right = 0;
    for (i, row) in x.rows().into_iter().enumerate() {
        decoder.predict_proba(row.as_slice().unwrap(), &mut p);
        let guess = usize::from(p[1] > p[0]);
        right += usize::from(guess == epochs.labels[i]);
    }
    right as f64 / epochs.len() as f64
}

#[test]
fn recentring_makes_a_persons_mean_the_identity() {
    let config = pipeline();
    let people = population_epochs(&config, 2, 20);
    for (name, epochs) in &people {
        let all: Vec<usize> = (0..epochs.len()).collect();
        let mean = population::own_mean(&config, epochs, &all).unwrap();
        // The person's raw mean is far from the identity (their own mixing) ...
        let eye = Mat::identity(CHANNELS, CHANNELS);
        assert!(
            (&mean - &eye).norm() > 1.0,
            "{name}: raw mean too close to I"
        );
        let covs = population::covariances(&config, epochs, &all).unwrap();
        let recentred = population::recentre(&covs, &mean).unwrap();
        // The Riemannian mean is the unique point where the mean log-map vanishes; at the
        // identity the log-map is logm itself: Σ logm(M^{-1/2} C M^{-1/2}) / n = 0, and the
        // distance of the true mean from I is of the order of that residual.
        let mut mean_log = Mat::zeros(CHANNELS, CHANNELS);
        for c in &recentred {
            mean_log += linalg::logm(c).unwrap();
        }
        mean_log /= recentred.len() as f64;
        let grad = mean_log.amax();
        // One Karcher step from I (expm of the mean log-map) must not move away from I.
        let err = (&linalg::expm(&mean_log).unwrap() - &eye).amax();
        assert!(
            err < 1e-9,
            "{name}: mean after re-centring is {err:e} from I"
        );
        assert!(grad < 1e-9, "{name}: mean tangent vector {grad:e}");
    }
}

#[test]
fn the_prior_decodes_a_new_person_with_zero_labelled_trials_only_after_recentring() {
    let config = pipeline();
    let mut people = population_epochs(&config, 7, 40);
    let (_, new_person) = people.pop().unwrap();
    let prior = population::build_prior(&config, &people, "synthetic".into()).unwrap();
    assert_eq!(prior.subjects.len(), 6);
    let all: Vec<usize> = (0..new_person.len()).collect();
    // Zero labelled trials: the person's mean from their windows, labels unused.
    let mean = population::own_mean(&config, &new_person, &all).unwrap();
    let model =
        population::person_model(&config, &prior, &new_person, &[], mean, 20.0, vec![]).unwrap();
    let with_own_mean = accuracy(&model, &config, &new_person);
    // The same population decoder at someone else's mean (no re-centring on this person).
    let other_mean = population::own_mean(
        &config,
        &people[0].1,
        &(0..people[0].1.len()).collect::<Vec<_>>(),
    )
    .unwrap();
    let model_other =
        population::person_model(&config, &prior, &new_person, &[], other_mean, 20.0, vec![])
            .unwrap();
    let with_other_mean = accuracy(&model_other, &config, &new_person);
    eprintln!("zero labelled trials: own mean {with_own_mean:.3}, another person's mean {with_other_mean:.3}");
    assert!(
        with_own_mean >= 0.85,
        "prior with own mean: {with_own_mean}"
    );
    assert!(
        with_own_mean > with_other_mean + 0.15,
        "re-centring made no difference: {with_own_mean} vs {with_other_mean}"
    );
    // The model is an ordinary model: it passes the loader's checks and round-trips.
    let text = serde_json::to_string(&model).unwrap();
    neurostream::model::Model::from_json(&text, "test").unwrap();
}

#[test]
fn prior_files_round_trip_and_channels_match_by_name_in_any_order() {
    let config = pipeline();
    let people = population_epochs(&config, 3, 20);
    let prior = population::build_prior(&config, &people[..2], "synthetic".into()).unwrap();
    let dir = std::env::temp_dir().join(format!("ns-prior-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("prior.json");
    prior.save(&path).unwrap();
    let loaded = PopulationPrior::load(&path).unwrap();
    assert_eq!(loaded.class_means, prior.class_means);
    assert_eq!(loaded.covariance_upper, prior.covariance_upper);
    assert_eq!(loaded.fingerprint.channels, names());

    // The third person, recorded with the channels in reverse order (and EDF-style labels).
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(99);
    let mixing = random_spd(&mut rng, CHANNELS, 0.5);
    let straight = epochs::cut(&person_recording(5, &mixing, 20, &names()), &config).unwrap();
    let perm: Vec<usize> = (0..CHANNELS).rev().collect();
    let mixing_rev = Mat::from_fn(CHANNELS, CHANNELS, |i, j| mixing[(perm[i], j)]);
    let rev_names: Vec<String> = perm
        .iter()
        .map(|&i| format!("{}..", names()[i].to_lowercase()))
        .collect();
    let reversed = epochs::cut(&person_recording(5, &mixing_rev, 20, &rev_names), &config).unwrap();
    let labelled: Vec<usize> = (0..8).collect();
    let all: Vec<usize> = (0..straight.len()).collect();
    let m1 = population::own_mean(&config, &straight, &all).unwrap();
    let m2 = population::own_mean(&config, &reversed, &all).unwrap();
    let a =
        population::person_model(&config, &loaded, &straight, &labelled, m1, 20.0, vec![]).unwrap();
    let b =
        population::person_model(&config, &loaded, &reversed, &labelled, m2, 20.0, vec![]).unwrap();
    let probs = |model: &neurostream::model::Model, e: &Epochs| -> Array2<f64> {
        let mut ex = extractor(model, &config, e);
        let x = evaluate::feature_matrix(&mut ex, e, &all);
        let mut d = model.decoder.clone();
        let mut p = Array2::zeros((all.len(), 2));
        for (i, row) in x.rows().into_iter().enumerate() {
            d.predict_proba(row.as_slice().unwrap(), p.row_mut(i).into_slice().unwrap());
        }
        p
    };
    let (pa, pb) = (probs(&a, &straight), probs(&b, &reversed));
    let diff = (&pa - &pb).mapv(f64::abs).fold(0.0f64, |m, v| m.max(*v));
    assert!(
        diff < 1e-4,
        "same person, channels reordered: probabilities differ by {diff}"
    );

    // A montage the prior does not cover is refused, naming the channels.
    let mut short = names();
    short[5] = "O1".into();
    let other = epochs::cut(&person_recording(6, &mixing, 20, &short), &config).unwrap();
    let m3 = population::own_mean(&config, &other, &all).unwrap();
    let err = population::person_model(&config, &loaded, &other, &labelled, m3, 20.0, vec![])
        .unwrap_err()
        .to_string();
    assert!(err.contains("O1") && err.contains("CPz"), "{err}");

    // Damaged files are refused with the field named.
    let mut text: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    text["covariance_upper"].as_array_mut().unwrap().pop();
    let err = PopulationPrior::from_json(&text.to_string(), "damaged")
        .unwrap_err()
        .to_string();
    assert!(err.contains("covariance_upper"), "{err}");
    text["version"] = 99.into();
    let err = PopulationPrior::from_json(&text.to_string(), "damaged")
        .unwrap_err()
        .to_string();
    assert!(err.contains("version"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn more_labelled_trials_move_the_decoder_from_the_population_to_the_person() {
    // One class statistic: the combined class means lie between the person's and the
    // population's with weight n/(n + τ).
    let d = 3;
    let pop = population::ClassStats {
        counts: vec![100, 100],
        means: vec![vec![0.0; d], vec![1.0; d]],
        covariance: Array2::eye(d),
    };
    let person = population::ClassStats {
        counts: vec![10, 10],
        means: vec![vec![0.0; d], vec![-1.0; d]],
        covariance: Array2::eye(d),
    };
    let lda0 = population::combine(&pop, None, 10.0).unwrap();
    let lda = population::combine(&pop, Some(&person), 10.0).unwrap();
    let json0 = serde_json::to_value(&lda0).unwrap();
    let json = serde_json::to_value(&lda).unwrap();
    assert_eq!(json0["means"][d].as_f64().unwrap(), 1.0);
    // w = 10/(10 + 10) = 0.5: (−1 + 1)/2 = 0.
    assert!((json["means"][d].as_f64().unwrap() - 0.0).abs() < 1e-12);
    assert!(population::combine(&pop, Some(&person), -1.0).is_err());
}

#[test]
fn wilcoxon_matches_scipy() {
    // scipy.stats.wilcoxon([-1, 2, 3, -4, 5, 6, 7, 8, 9, 10]) → (5.0, 0.01953125), exact.
    let (stat, p) = population::wilcoxon_signed_rank(&[-1., 2., 3., -4., 5., 6., 7., 8., 9., 10.]);
    assert_eq!(stat, 5.0);
    assert!((p - 0.01953125).abs() < 1e-12, "{p}");
    // With ties and a zero: scipy.stats.wilcoxon(d, method="approx") → (6.5, 0.0573643...).
    let (stat, p) =
        population::wilcoxon_signed_rank(&[0.1, -0.1, 0.2, 0.2, -0.3, 0.4, 0.5, 0.5, 0.6, 0.0]);
    assert_eq!(stat, 6.5);
    assert!((p - 0.057364337754043496).abs() < 1e-6, "{p}");
    // 35 paired differences with one tie in |d| (scipy: 136.5, 0.0034586899903).
    let d = [
        0.0373, 0.0611, 0.0365, -0.0452, 0.0653, 0.0423, -0.0068, 0.0491, 0.0382, 0.0347, 0.0214,
        0.0473, -0.0168, 0.0119, -0.0041, 0.0499, 0.022, 0.0054, -0.0191, 0.0071, 0.0204, 0.0062,
        0.0847, 0.0703, -0.1156, -0.0745, 0.0113, -0.0011, 0.0307, 0.0309, 0.1259, -0.0356, 0.0011,
        0.1221, 0.0523,
    ];
    let (stat, p) = population::wilcoxon_signed_rank(&d);
    assert_eq!(stat, 136.5);
    assert!((p - 0.003458689990316792).abs() < 1e-6, "{p}");
    assert_eq!(population::wilcoxon_signed_rank(&[0.0, 0.0]), (0.0, 1.0));
}

#[test]
fn leave_one_subject_out_runs_every_condition_on_the_same_folds() {
    let config = pipeline();
    let people = population_epochs(&config, 4, 30);
    let report = population::loso(&config, &people, &[5], &[20.0], |_| {}).unwrap();
    assert_eq!(report.conditions.len(), 4); // person-only, 0, 5/class, all
    assert_eq!(report.subjects.len(), 4);
    // The person-only column is the project's own cross-validation on the same folds.
    for (name, epochs) in &people {
        let cv = evaluate::cross_validate(&config, epochs).unwrap();
        let row = report.subjects.iter().find(|s| &s.subject == name).unwrap();
        assert!((row.scores[0].accuracy - cv.accuracy).abs() < 1e-12);
    }
    // In this population re-centring makes people identical up to noise: the prior alone
    // decodes everyone.
    let zero = &report.summary[1];
    assert!(
        zero.mean_accuracy > 0.8,
        "prior with 0 trials: {}",
        zero.mean_accuracy
    );
    assert!(population::render(&report).contains("prior, 5/class"));
}

/// The prior shipped in the repository (built by `neurostream train --population` from the 35
/// shared EEGMMIDB subjects, docs/decoding.md) loads, names its source and licence, and fits
/// the pipeline it was built with: the 21 motor-strip channels at 160 Hz, 3 s windows.
#[test]
fn the_shipped_motor_strip_prior_fits_its_pipeline() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let prior = PopulationPrior::load(&root.join("pipelines/priors/eegmmidb_motor21.json"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(prior.subjects.len(), 35);
    assert!(prior.source.contains("ODC-By"), "{}", prior.source);
    assert_eq!(prior.dim(), 21 * 22 / 2);
    let config =
        PipelineConfig::from_file(&root.join("pipelines/mi_tangent_lda_motor21.toml")).unwrap();
    prior.check_pipeline(&config, 160.0, 480).unwrap();
    let channels = config.preprocess.channels.clone();
    assert_eq!(channels.len(), 21);
    let stats = prior.stats_for(&channels).unwrap();
    assert_eq!(stats.means.len(), 2);
}
