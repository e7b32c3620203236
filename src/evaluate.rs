//! Calibration and honest evaluation: fit a pipeline's feature stage and decoder on epochs,
//! cross-validate it, test it on held-out runs, and run a session online with and without
//! plasticity through the same [`Engine`] the live service runs.
//!
//! Probabilities are calibrated ([`calibrate`]): the stratified cross-validation that
//! estimates accuracy also yields every epoch's *out-of-fold* decision values, on which a
//! monotone calibration ([`crate::decoder::calibration`]) and the controller's operating point
//! ([`crate::control::choose_operating_point`]) are fitted; both are stored in the model.
//!
//! Leakage is ruled out by construction: inside each fold a fresh feature stage and decoder
//! are built from the configuration and fitted on the training epochs only (CSP filters, the
//! tangent-space reference and every decoder's normalisation included); test epochs are only
//! ever passed to `extract` and `predict_proba`.

use ndarray::Array2;
use serde::Serialize;

use crate::control::{choose_operating_point, OperatingPoint};
use crate::decoder::calibration::{binary_decision, Calibration};
use crate::decoder::cv::stratified_kfold;
use crate::decoder::metrics::{roc_auc, Report};
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

/// Per-class decision values ([`Decoder::decision_values`]) for the epochs at `indices`, one
/// row each: what a calibration maps to probabilities.
pub fn decision_values(trained: &mut Trained, epochs: &Epochs, indices: &[usize]) -> Array2<f64> {
    let x = feature_matrix(&mut trained.extractor, epochs, indices);
    let classes = trained.decoder.classes();
    let mut s = Array2::<f64>::zeros((indices.len(), classes));
    for (row, features) in x.rows().into_iter().enumerate() {
        let out = s.row_mut(row).into_slice().expect("contiguous row");
        trained
            .decoder
            .decision_values(features.as_slice().expect("contiguous row"), out);
    }
    s
}

/// The decoder's own probabilities and its decision values, features extracted once.
fn predict_both(
    trained: &mut Trained,
    epochs: &Epochs,
    indices: &[usize],
) -> (Array2<f64>, Array2<f64>) {
    let x = feature_matrix(&mut trained.extractor, epochs, indices);
    let classes = trained.decoder.classes();
    let mut p = Array2::<f64>::zeros((indices.len(), classes));
    let mut s = Array2::<f64>::zeros((indices.len(), classes));
    for (row, features) in x.rows().into_iter().enumerate() {
        let features = features.as_slice().expect("contiguous row");
        let out = p.row_mut(row).into_slice().expect("contiguous row");
        trained.decoder.predict_proba(features, out);
        let out = s.row_mut(row).into_slice().expect("contiguous row");
        trained.decoder.decision_values(features, out);
    }
    (p, s)
}

/// `calibration` applied to every row of `scores`.
pub fn calibrated(calibration: &Calibration, scores: &Array2<f64>) -> Array2<f64> {
    let mut p = scores.clone();
    for mut row in p.rows_mut() {
        calibration.apply(row.as_slice_mut().expect("contiguous row"));
    }
    p
}

/// Seconds from cue to decision, the selection time used for the information transfer rate.
pub fn seconds_per_selection(config: &PipelineConfig) -> f64 {
    config.training.epoch_offset.max(0.0) + config.features.window_seconds
}

/// Train on all `epochs` and package the result as a model file, *without* calibration (the
/// decoder's own probabilities, the fixed threshold). See [`train`].
pub fn train_uncalibrated(
    config: &PipelineConfig,
    epochs: &Epochs,
    trained_on: Vec<String>,
) -> Result<Model> {
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

/// Train on all `epochs` and package the result as a calibrated model file: the final fit
/// ([`train_uncalibrated`]) plus [`calibrate`]. When no cross-validation is possible (a class
/// with a single epoch) the model stays uncalibrated, with a warning.
pub fn train(config: &PipelineConfig, epochs: &Epochs, trained_on: Vec<String>) -> Result<Model> {
    let mut model = train_uncalibrated(config, epochs, trained_on)?;
    if calibration_folds(config, &epochs.labels).is_none() {
        tracing::warn!(
            "too few epochs per class for a calibration cross-validation: the model keeps \
             the decoder's own probabilities and the fixed threshold"
        );
        return Ok(model);
    }
    calibrate(config, epochs, &mut model)?;
    Ok(model)
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
    /// Every test prediction pooled (the decoder's own probabilities): confusion matrix,
    /// kappa, ITR, probability quality.
    pub pooled: Report,
    /// [`calibrate`] only: the pooled out-of-fold probabilities after calibration (fitted on
    /// these same windows, so its Brier score and ECE are in-sample for the calibration's one
    /// or two parameters), with the decision-value AUC.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub calibrated: Option<Report>,
    /// [`calibrate`] only: the operating point stored in the model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operating_point: Option<OperatingPoint>,
}

/// Folds of the calibration cross-validation: `training.folds`, fewer if the smallest class
/// has fewer epochs; `None` below 2.
fn calibration_folds(config: &PipelineConfig, labels: &[usize]) -> Option<usize> {
    let classes = config.training.classes.len();
    let mut counts = vec![0usize; classes.max(1)];
    for &l in labels {
        if l < counts.len() {
            counts[l] += 1;
        }
    }
    let smallest = counts.iter().copied().filter(|&c| c > 0).min()?;
    let k = config.training.folds.min(smallest);
    (k >= 2 && counts.iter().filter(|&&c| c > 0).count() >= 2).then_some(k)
}

/// Out-of-fold predictions of a k-fold cross-validation.
struct OutOfFold {
    folds: usize,
    /// The decoder's own probabilities.
    probabilities: Array2<f64>,
    /// Decision values.
    scores: Array2<f64>,
    fold_accuracy: Vec<f64>,
    fold_auc: Vec<Option<f64>>,
}

fn out_of_fold(config: &PipelineConfig, epochs: &Epochs, k: usize) -> Result<OutOfFold> {
    let folds = stratified_kfold(&epochs.labels, k, config.training.seed)?;
    let classes = config.training.classes.len();
    let mut probabilities = Array2::<f64>::zeros((epochs.len(), classes));
    let mut scores = Array2::<f64>::zeros((epochs.len(), classes));
    let mut fold_accuracy = Vec::new();
    let mut fold_auc = Vec::new();
    let sps = Some(seconds_per_selection(config));
    for fold in &folds {
        let mut trained = fit(config, epochs, &fold.train)?;
        let (p, s) = predict_both(&mut trained, epochs, &fold.test);
        let truth: Vec<usize> = fold.test.iter().map(|&i| epochs.labels[i]).collect();
        let report = Report::from_probabilities(&truth, p.view(), sps)?;
        fold_accuracy.push(report.accuracy);
        fold_auc.push(report.auc);
        for (row, &i) in fold.test.iter().enumerate() {
            probabilities.row_mut(i).assign(&p.row(row));
            scores.row_mut(i).assign(&s.row(row));
        }
    }
    Ok(OutOfFold {
        folds: folds.len(),
        probabilities,
        scores,
        fold_accuracy,
        fold_auc,
    })
}

/// ROC-AUC of the two-class decision value `score₁ − score₀` (None otherwise or undefined).
pub fn decision_auc(scores: &Array2<f64>, truth: &[usize]) -> Option<f64> {
    if scores.ncols() != 2 {
        return None;
    }
    let values: Vec<f64> = scores
        .rows()
        .into_iter()
        .map(|r| binary_decision(&[r[0], r[1]]))
        .collect();
    let positives: Vec<bool> = truth.iter().map(|&t| t == 1).collect();
    roc_auc(&values, &positives).ok()
}

fn outcome(config: &PipelineConfig, epochs: &Epochs, oof: &OutOfFold) -> Result<CvOutcome> {
    let sps = Some(seconds_per_selection(config));
    let pooled = Report::from_probabilities(&epochs.labels, oof.probabilities.view(), sps)?;
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let aucs: Option<Vec<f64>> = oof.fold_auc.iter().copied().collect();
    Ok(CvOutcome {
        folds: oof.folds,
        seed: config.training.seed,
        accuracy: mean(&oof.fold_accuracy),
        auc: aucs.map(|a| mean(&a)),
        fold_accuracy: oof.fold_accuracy.clone(),
        fold_auc: oof.fold_auc.clone(),
        pooled,
        calibrated: None,
        operating_point: None,
    })
}

/// Stratified k-fold cross-validation (`training.folds`, `training.seed`).
pub fn cross_validate(config: &PipelineConfig, epochs: &Epochs) -> Result<CvOutcome> {
    let oof = out_of_fold(config, epochs, config.training.folds)?;
    outcome(config, epochs, &oof)
}

/// Calibrate `model` (trained on these `epochs`, e.g. by [`train_uncalibrated`]) for the
/// closed loop: runs the stratified cross-validation once (`training.folds`, fewer if a
/// class has fewer epochs; `training.seed`), fits the calibration on the out-of-fold decision
/// values and the operating point (`[control] target_precision`, `min_command_share`,
/// `min_precision`) on the calibrated out-of-fold probabilities, stores both in
/// `model.calibration` and `model.operating_point` (replacing any), and returns the CV
/// outcome (accuracy and AUC as [`cross_validate`] gives them, plus the calibrated report and
/// the operating point). The model's decoder and feature stage are not changed.
///
/// Errors if the model's classes differ from the pipeline's, or a class has fewer than two
/// epochs (no cross-validation possible).
pub fn calibrate(config: &PipelineConfig, epochs: &Epochs, model: &mut Model) -> Result<CvOutcome> {
    if model.classes != config.training.class_names() {
        return Err(Error::Other(format!(
            "calibrate: the model's classes {:?} are not the pipeline's {:?}",
            model.classes,
            config.training.class_names()
        )));
    }
    let k = calibration_folds(config, &epochs.labels).ok_or_else(|| {
        Error::Other(
            "calibrate: every class needs at least 2 epochs (and two classes present) for the \
             calibration cross-validation"
                .into(),
        )
    })?;
    let oof = out_of_fold(config, epochs, k)?;
    let calibration = Calibration::fit(oof.scores.view(), &epochs.labels)?;
    let p = calibrated(&calibration, &oof.scores);
    let commanding = config.control.commanding(&model.classes);
    let op = choose_operating_point(p.view(), &epochs.labels, &commanding, &config.control)?;
    tracing::info!(
        "calibrated on {} out-of-fold windows ({:?}); operating point: threshold {:.3}, \
         expected precision {:.3}, commands on {:.0} % of windows",
        epochs.len(),
        calibration.map,
        op.threshold,
        op.expected_precision,
        100.0 * op.expected_command_share
    );
    let mut out = outcome(config, epochs, &oof)?;
    let mut report = Report::from_probabilities(
        &epochs.labels,
        p.view(),
        Some(seconds_per_selection(config)),
    )?;
    report.decision_auc = decision_auc(&oof.scores, &epochs.labels);
    out.calibrated = Some(report);
    out.operating_point = Some(op.clone());
    model.calibration = Some(calibration);
    model.operating_point = Some(op);
    Ok(out)
}

/// Held-out test of a calibrated model (see [`holdout_detailed`]).
#[derive(Debug, Clone, Serialize)]
pub struct HoldoutOutcome {
    /// On the test epochs, from the calibrated probabilities, with the decision-value AUC.
    pub report: Report,
    /// Learned on the training epochs.
    pub operating_point: Option<OperatingPoint>,
    /// On the test epochs at the operating point's threshold: the share of windows that
    /// would command and the precision of those commands (`None` if none would).
    pub test_command_share: Option<f64>,
    pub test_precision: Option<f64>,
}

/// Train on `train`, test on `test` (e.g. runs R04+R08 → R12), with calibrated
/// probabilities.
pub fn holdout(config: &PipelineConfig, train: &Epochs, test: &Epochs) -> Result<Report> {
    Ok(holdout_detailed(config, train, test)?.report)
}

/// [`holdout`] with the operating point learned on `train` and how it does on `test`.
pub fn holdout_detailed(
    config: &PipelineConfig,
    train_epochs: &Epochs,
    test: &Epochs,
) -> Result<HoldoutOutcome> {
    let all: Vec<usize> = (0..train_epochs.len()).collect();
    let mut trained = fit(config, train_epochs, &all)?;
    let test_all: Vec<usize> = (0..test.len()).collect();
    let scores = decision_values(&mut trained, test, &test_all);
    let sps = Some(seconds_per_selection(config));
    let (p, operating_point) = match calibration_folds(config, &train_epochs.labels) {
        Some(k) => {
            let oof = out_of_fold(config, train_epochs, k)?;
            let calibration = Calibration::fit(oof.scores.view(), &train_epochs.labels)?;
            let p_oof = calibrated(&calibration, &oof.scores);
            let commanding = config.control.commanding(&config.training.class_names());
            let op = choose_operating_point(
                p_oof.view(),
                &train_epochs.labels,
                &commanding,
                &config.control,
            )?;
            (calibrated(&calibration, &scores), Some(op))
        }
        None => (predict(&mut trained, test, &test_all), None),
    };
    let mut report = Report::from_probabilities(&test.labels, p.view(), sps)?;
    report.decision_auc = decision_auc(&scores, &test.labels);
    let (mut test_command_share, mut test_precision) = (None, None);
    if let Some(op) = &operating_point {
        let commanding = config.control.commanding(&config.training.class_names());
        let threshold = match config.control.threshold {
            Some(t) => t,
            None if op.commands => op.threshold,
            None => f64::INFINITY,
        };
        let (mut commands, mut correct) = (0usize, 0usize);
        for (row, &label) in p.rows().into_iter().zip(&test.labels) {
            let (best, q) =
                row.iter()
                    .copied()
                    .enumerate()
                    .fold(
                        (0, f64::NEG_INFINITY),
                        |a, (i, q)| if q > a.1 { (i, q) } else { a },
                    );
            if commanding[best] && q >= threshold {
                commands += 1;
                correct += usize::from(best == label);
            }
        }
        test_command_share = Some(commands as f64 / test.len().max(1) as f64);
        test_precision = (commands > 0).then(|| correct as f64 / commands as f64);
    }
    Ok(HoldoutOutcome {
        report,
        operating_point,
        test_command_share,
        test_precision,
    })
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

impl ArmComparison {
    /// One text row per metric, as `evaluate --online` prints them (and the example that
    /// joins chunked runs): pair, metric, mean difference, better/worse/tied subjects,
    /// Wilcoxon and sign p.
    pub fn rows(&self) -> Vec<String> {
        let p_value = |p: f64| {
            if p < 1e-3 {
                format!("{p:.1e}")
            } else {
                format!("{p:.4}")
            }
        };
        [("accuracy", &self.accuracy), ("auc", &self.auc)]
            .into_iter()
            .filter_map(|(metric, test)| {
                test.as_ref().map(|x| {
                    format!(
                        "    {:<40} {:<8} diff {:+.3}  {:>2}/{:>2}/{:>2}  wilcoxon p {}{}  sign p {}",
                        self.pair,
                        metric,
                        x.mean_difference,
                        x.better,
                        x.worse,
                        x.ties,
                        p_value(x.wilcoxon_p),
                        if x.exact { "" } else { " (normal approx.)" },
                        p_value(x.sign_p)
                    )
                })
            })
            .collect()
    }
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
