//! Calibration and honest evaluation: fit a pipeline's feature stage and decoder on epochs,
//! cross-validate it, test it on held-out runs, and run a session online with and without
//! plasticity through the same [`Engine`] the live service runs.
//!
//! Leakage is ruled out by construction: inside each fold a fresh feature stage and decoder
//! are built from the configuration and fitted on the training epochs only (CSP filters, the
//! tangent-space reference and every decoder's normalisation included); test epochs are only
//! ever passed to `extract` and `predict_proba`.

use ndarray::Array2;
use serde::Serialize;

use crate::decoder::cv::stratified_kfold;
use crate::decoder::metrics::Report;
use crate::decoder::{AnyDecoder, Decoder};
use crate::engine::{self, Engine, EngineSink, RecordedSignal, SessionEvent};
use crate::epochs::Epochs;
use crate::error::{Error, Result};
use crate::features::extractor::AnyExtractor;
use crate::features::FeatureExtractor;
use crate::io::{Recording, StreamData};
use crate::model::{Fingerprint, Model};
use crate::pipeline::{PipelineConfig, WindowFeatures};

/// A fitted feature stage and decoder.
pub struct Trained {
    pub extractor: AnyExtractor,
    pub decoder: AnyDecoder,
}

fn labels_of(epochs: &Epochs) -> Vec<String> {
    epochs.info.labels().map(str::to_owned).collect()
}

/// Feature rows of the epochs at `indices`.
pub fn feature_matrix(
    extractor: &mut AnyExtractor,
    epochs: &Epochs,
    indices: &[usize],
) -> Array2<f32> {
    let dim = extractor.names().len();
    let mut x = Array2::<f32>::zeros((indices.len(), dim));
    for (row, &i) in indices.iter().enumerate() {
        let out = x
            .row_mut(row)
            .into_slice()
            .expect("rows of a standard-layout array are contiguous");
        extractor.extract(&epochs.window(i), out);
    }
    x
}

/// Fit a fresh feature stage and decoder on the epochs at `indices`.
pub fn fit(config: &PipelineConfig, epochs: &Epochs, indices: &[usize]) -> Result<Trained> {
    let decoder_config = config.decoder.as_ref().ok_or_else(|| {
        Error::config(
            "pipeline",
            "the pipeline has no [decoder] table; add one (kind = \"lda\", \"svm\" or \"mlp\")",
        )
    })?;
    let classes = config.training.classes.len();
    let mut extractor =
        config
            .features
            .build_extractor(&labels_of(epochs), epochs.rate, epochs.samples)?;
    let labels: Vec<usize> = indices.iter().map(|&i| epochs.labels[i]).collect();
    extractor.fit(&epochs.windows(indices), &labels)?;
    let x = feature_matrix(&mut extractor, epochs, indices);
    if x.iter().any(|v| !v.is_finite()) {
        return Err(Error::Stream(
            "the feature stage produced non-finite values on the training epochs (flat or broken channels?)".into(),
        ));
    }
    let mut decoder = decoder_config.build(classes)?;
    decoder.fit(x.view(), &labels)?;
    Ok(Trained { extractor, decoder })
}

/// Class probabilities for the epochs at `indices`, one row each.
pub fn predict(trained: &mut Trained, epochs: &Epochs, indices: &[usize]) -> Array2<f64> {
    let x = feature_matrix(&mut trained.extractor, epochs, indices);
    let classes = trained.decoder.classes();
    let mut p = Array2::<f64>::zeros((indices.len(), classes));
    for (row, features) in x.rows().into_iter().enumerate() {
        let out = p.row_mut(row).into_slice().expect("contiguous row");
        trained
            .decoder
            .predict_proba(features.as_slice().expect("contiguous row"), out);
    }
    p
}

/// Seconds from cue to decision, the selection time used for the information transfer rate.
pub fn seconds_per_selection(config: &PipelineConfig) -> f64 {
    config.training.epoch_offset.max(0.0) + config.features.window_seconds
}

/// Train on all `epochs` and package the result as a model file.
pub fn train(config: &PipelineConfig, epochs: &Epochs, trained_on: Vec<String>) -> Result<Model> {
    let all: Vec<usize> = (0..epochs.len()).collect();
    let trained = fit(config, epochs, &all)?;
    let fingerprint = Fingerprint::new(config, labels_of(epochs), epochs.rate, epochs.samples);
    Ok(Model::new(
        fingerprint,
        config.training.class_names(),
        trained.extractor.state(),
        trained.decoder,
        trained_on,
        epochs.len(),
    ))
}

/// Result of k-fold cross-validation.
#[derive(Debug, Clone, Serialize)]
pub struct CvOutcome {
    pub folds: usize,
    pub seed: u64,
    /// Mean over folds of the per-fold accuracy (what scikit-learn's `cross_val_score` gives).
    pub accuracy: f64,
    /// Mean over folds of the per-fold ROC-AUC (two classes).
    pub auc: Option<f64>,
    pub fold_accuracy: Vec<f64>,
    pub fold_auc: Vec<Option<f64>>,
    /// Every test prediction pooled: confusion matrix, kappa, ITR.
    pub pooled: Report,
}

/// Stratified k-fold cross-validation (`training.folds`, `training.seed`).
pub fn cross_validate(config: &PipelineConfig, epochs: &Epochs) -> Result<CvOutcome> {
    let folds = stratified_kfold(&epochs.labels, config.training.folds, config.training.seed)?;
    let classes = config.training.classes.len();
    let mut probabilities = Array2::<f64>::zeros((epochs.len(), classes));
    let mut fold_accuracy = Vec::new();
    let mut fold_auc = Vec::new();
    let sps = Some(seconds_per_selection(config));
    for fold in &folds {
        let mut trained = fit(config, epochs, &fold.train)?;
        let p = predict(&mut trained, epochs, &fold.test);
        let truth: Vec<usize> = fold.test.iter().map(|&i| epochs.labels[i]).collect();
        let report = Report::from_probabilities(&truth, p.view(), sps)?;
        fold_accuracy.push(report.accuracy);
        fold_auc.push(report.auc);
        for (row, &i) in fold.test.iter().enumerate() {
            probabilities.row_mut(i).assign(&p.row(row));
        }
    }
    let pooled = Report::from_probabilities(&epochs.labels, probabilities.view(), sps)?;
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let aucs: Option<Vec<f64>> = fold_auc.iter().copied().collect();
    Ok(CvOutcome {
        folds: folds.len(),
        seed: config.training.seed,
        accuracy: mean(&fold_accuracy),
        auc: aucs.map(|a| mean(&a)),
        fold_accuracy,
        fold_auc,
        pooled,
    })
}

/// Train on `train`, test on `test` (e.g. runs R04+R08 → R12).
pub fn holdout(config: &PipelineConfig, train: &Epochs, test: &Epochs) -> Result<Report> {
    let all: Vec<usize> = (0..train.len()).collect();
    let mut trained = fit(config, train, &all)?;
    let test_all: Vec<usize> = (0..test.len()).collect();
    let p = predict(&mut trained, test, &test_all);
    Report::from_probabilities(&test.labels, p.view(), Some(seconds_per_selection(config)))
}

/// Online session replay: the same calibrated model three ways.
#[derive(Debug, Clone, Serialize)]
pub struct OnlineOutcome {
    pub calibration_trials: usize,
    pub online_trials: usize,
    /// Unsupervised + supervised: every unsupervised step (tangent-space re-centring, the
    /// decoder's `observe`) plus a supervised step after each trial once its label is revealed,
    /// as a live session with cued trials would.
    pub adaptive: Report,
    /// Unsupervised steps only: the labels are given as feedback but not learned (free mode).
    pub unsupervised: Report,
    /// The same decoder frozen after calibration.
    pub frozen: Report,
    /// Supervised updates the adaptive decoder accepted.
    pub updates_applied: usize,
    /// The plastic net's learning rate at the end (MLP only).
    pub final_learning_rate: Option<f64>,
}

/// A trial of an online session: its class and the sample (of its recording) at which its
/// decision window is complete.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OnlineTrial {
    pub label: usize,
    pub decided_after: usize,
}

/// The cued trials of `recording` for an online run: the decision falls when the window that
/// starts `training.epoch_offset` after the cue is complete (the window an epoch would cut).
/// Cues too close to the end for a full window are left out.
pub fn online_trials(config: &PipelineConfig, recording: &Recording) -> Result<Vec<OnlineTrial>> {
    let signal = recording
        .primary_signal()
        .ok_or_else(|| Error::Stream("the recording holds no signal samples".into()))?;
    let rate = signal.info.nominal_rate;
    let (window, _) = config.features.window_and_hop(rate)?;
    let timestamps = &signal.timestamps;
    let half_sample = 0.5 / rate;
    Ok(recording
        .events()
        .iter()
        .filter_map(|event| {
            let label = config
                .training
                .classes
                .iter()
                .position(|c| c.event == event.label)?;
            let start_time = event.onset + config.training.epoch_offset;
            let start = timestamps.partition_point(|&t| t < start_time - half_sample);
            let decided_after = start + window;
            (decided_after <= timestamps.len()).then_some(OnlineTrial {
                label,
                decided_after,
            })
        })
        .collect())
}

/// Captures, at each feedback step, the probabilities of the latest window (the trial's
/// decision: the update that follows cannot have changed them).
struct TrialScorer {
    latest: Option<Vec<f64>>,
    decided: Vec<Option<Vec<f64>>>,
}

impl EngineSink for TrialScorer {
    fn window(&mut self, window: WindowFeatures<'_>, _marker: Option<&str>) -> Result<()> {
        if let Some(p) = window.probabilities {
            match &mut self.latest {
                Some(latest) => latest.copy_from_slice(p),
                None => self.latest = Some(p.to_vec()),
            }
        }
        Ok(())
    }

    fn session_event(&mut self, _timestamp: f64, event: &SessionEvent) -> Result<()> {
        if let SessionEvent::Feedback { .. } = event {
            self.decided.push(self.latest.clone());
        }
        Ok(())
    }
}

/// Run `session` through one engine as a live session: each recording streamed in chunks of
/// 16 samples, each trial decided from the latest window when its decision window is
/// complete, then its label given as feedback. Returns the decided probabilities per trial.
fn online_run(
    engine: &mut Engine,
    config: &PipelineConfig,
    session: &[&Recording],
) -> Result<Vec<(usize, Option<Vec<f64>>)>> {
    let mut outcome = Vec::new();
    for (i, recording) in session.iter().enumerate() {
        let signal = recording
            .primary_signal()
            .ok_or_else(|| Error::Stream("the recording holds no signal samples".into()))?;
        let StreamData::Signal { values, .. } = &signal.data else {
            unreachable!("primary_signal returns signal streams");
        };
        if i > 0 {
            // A new run is a new stream: nothing filtered or windowed carries over.
            engine.reset();
        }
        let trials = online_trials(config, recording)?;
        let origin = engine.summary().samples;
        let events: Vec<SessionEvent> = trials
            .iter()
            .map(|t| SessionEvent::Feedback {
                after_samples: origin + t.decided_after as u64,
                label: t.label,
                applied: false,
                seq: None,
            })
            .collect();
        let markers = recording.events();
        let mut scorer = TrialScorer {
            latest: None,
            decided: Vec::with_capacity(trials.len()),
        };
        engine::replay(
            engine,
            RecordedSignal {
                info: &signal.info,
                values,
                timestamps: &signal.timestamps,
                markers: &markers,
            },
            &events,
            16,
            &mut scorer,
        )?;
        outcome.extend(trials.iter().map(|t| t.label).zip(scorer.decided));
    }
    Ok(outcome)
}

/// Calibrate on `calibration`, then stream the `session` recordings through the session
/// [`Engine`] exactly as the live service would, three times: adapting (unsupervised steps on
/// every window, each trial's label given as feedback once its decision is taken), with the
/// unsupervised steps only, and frozen after calibration. Trials are scored on the
/// probabilities of the latest window when their decision window completes.
pub fn online(
    config: &PipelineConfig,
    calibration: &Epochs,
    session: &[&Recording],
) -> Result<OnlineOutcome> {
    let model = train(config, calibration, Vec::new())?;
    let info = session
        .first()
        .and_then(|r| r.primary_signal())
        .map(|s| s.info.clone())
        .ok_or_else(|| Error::Stream("no online recordings with a signal".into()))?;
    let mut adaptive = Engine::build(config, &info, Some(model.clone()))?;
    let mut unsupervised = Engine::build(config, &info, Some(model.clone()))?;
    unsupervised.unsupervised_only();
    let mut frozen = Engine::build(config, &info, Some(model))?;
    frozen.freeze();
    let adaptive_trials = online_run(&mut adaptive, config, session)?;
    let unsupervised_trials = online_run(&mut unsupervised, config, session)?;
    let frozen_trials = online_run(&mut frozen, config, session)?;
    // The engines see the same windows; a trial without a decided window (none complete yet)
    // is left out of all three.
    let classes = config.training.classes.len();
    let kept: Vec<usize> = (0..adaptive_trials.len())
        .filter(|&i| {
            adaptive_trials[i].1.is_some()
                && unsupervised_trials[i].1.is_some()
                && frozen_trials[i].1.is_some()
        })
        .collect();
    let labels: Vec<usize> = kept.iter().map(|&i| adaptive_trials[i].0).collect();
    let matrix = |trials: &[(usize, Option<Vec<f64>>)]| {
        let mut p = Array2::<f64>::zeros((kept.len(), classes));
        for (row, &i) in kept.iter().enumerate() {
            let decided = trials[i].1.as_ref().expect("kept trials are decided");
            for (c, value) in decided.iter().enumerate().take(classes) {
                p[[row, c]] = *value;
            }
        }
        p
    };
    let sps = Some(seconds_per_selection(config));
    let report = |trials: &[(usize, Option<Vec<f64>>)]| {
        Report::from_probabilities(&labels, matrix(trials).view(), sps)
    };
    Ok(OnlineOutcome {
        calibration_trials: calibration.len(),
        online_trials: kept.len(),
        adaptive: report(&adaptive_trials)?,
        unsupervised: report(&unsupervised_trials)?,
        frozen: report(&frozen_trials)?,
        updates_applied: adaptive.summary().feedback_applied as usize,
        final_learning_rate: adaptive
            .pipeline()
            .decoder()
            .and_then(|d| d.as_mlp())
            .map(|m| m.learning_rate()),
    })
}

/// One arm of the online comparison per subject: accuracy and AUC.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ArmScore {
    pub accuracy: f64,
    pub auc: Option<f64>,
}

/// Paired tests between two arms over subjects, for accuracy and (when every subject has
/// one) AUC.
#[derive(Debug, Clone, Serialize)]
pub struct ArmComparison {
    /// e.g. "unsupervised vs frozen": the first arm minus the second.
    pub pair: String,
    pub accuracy: Option<crate::decoder::stats::PairedTest>,
    pub auc: Option<crate::decoder::stats::PairedTest>,
}

/// The three pairwise comparisons of `evaluate --online` from per-subject scores of the arms
/// frozen, unsupervised-only, and unsupervised + supervised (in that order of `arms`).
pub fn compare_arms(arms: [(&str, &[ArmScore]); 3]) -> Vec<ArmComparison> {
    use crate::decoder::stats::paired;
    let pairs = [(1, 0), (2, 1), (2, 0)];
    pairs
        .iter()
        .map(|&(a, b)| {
            let (name_a, score_a) = arms[a];
            let (name_b, score_b) = arms[b];
            let acc = |s: &[ArmScore]| s.iter().map(|x| x.accuracy).collect::<Vec<f64>>();
            let auc = |s: &[ArmScore]| s.iter().map(|x| x.auc).collect::<Option<Vec<f64>>>();
            ArmComparison {
                pair: format!("{name_a} vs {name_b}"),
                accuracy: paired(&acc(score_a), &acc(score_b)),
                auc: match (auc(score_a), auc(score_b)) {
                    (Some(x), Some(y)) => paired(&x, &y),
                    _ => None,
                },
            }
        })
        .collect()
}
