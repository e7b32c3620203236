//! Calibration and honest evaluation: fit a pipeline's feature stage and decoder on epochs,
//! cross-validate it, test it on held-out runs, and replay a session online with and without
//! plasticity.
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
use crate::epochs::Epochs;
use crate::error::{Error, Result};
use crate::features::extractor::AnyExtractor;
use crate::features::FeatureExtractor;
use crate::model::{Fingerprint, Model};
use crate::pipeline::PipelineConfig;

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

/// Online session replay: adapting vs frozen.
#[derive(Debug, Clone, Serialize)]
pub struct OnlineOutcome {
    pub calibration_trials: usize,
    pub online_trials: usize,
    /// The decoder that kept learning (supervised updates after each trial's label is revealed,
    /// unsupervised normalisation, tangent-space re-centring).
    pub adaptive: Report,
    /// The same decoder frozen after calibration.
    pub frozen: Report,
    /// Supervised updates the adaptive decoder accepted.
    pub updates_applied: usize,
    /// The plastic net's learning rate at the end (MLP only).
    pub final_learning_rate: Option<f64>,
}

/// Calibrate on `calibration`, then take the `session` trials in time order: each trial is
/// decided from its window alone (as a live session decides when the window completes), then
/// its true label is revealed and the adaptive copy learns from it. The frozen copy never
/// changes.
pub fn online(
    config: &PipelineConfig,
    calibration: &Epochs,
    session: &Epochs,
) -> Result<OnlineOutcome> {
    let all: Vec<usize> = (0..calibration.len()).collect();
    let mut adaptive = fit(config, calibration, &all)?;
    let mut frozen = Trained {
        extractor: {
            let mut e = config.features.build_extractor(
                &labels_of(calibration),
                calibration.rate,
                calibration.samples,
            )?;
            e.restore(adaptive.extractor.state())?;
            e
        },
        decoder: adaptive.decoder.clone(),
    };
    let classes = config.training.classes.len();
    let dim = adaptive.extractor.names().len();
    let mut features = vec![0.0f32; dim];
    let mut p_adaptive = Array2::<f64>::zeros((session.len(), classes));
    let mut p_frozen = Array2::<f64>::zeros((session.len(), classes));
    let mut updates_applied = 0;
    let recentre = config.training.recentre_rate;
    for i in 0..session.len() {
        let window = session.window(i);
        frozen.extractor.extract(&window, &mut features);
        frozen.decoder.predict_proba(
            &features,
            p_frozen.row_mut(i).into_slice().expect("contiguous"),
        );

        // Unsupervised adaptation uses only the window itself, available before the decision.
        if recentre > 0.0 {
            adaptive.extractor.adapt(&window, recentre);
        }
        adaptive.extractor.extract(&window, &mut features);
        adaptive.decoder.observe(&features);
        adaptive.decoder.predict_proba(
            &features,
            p_adaptive.row_mut(i).into_slice().expect("contiguous"),
        );
        // The label arrives after the trial: learn from it for the next ones.
        if adaptive.decoder.update(&features, session.labels[i]) {
            updates_applied += 1;
        }
    }
    let sps = Some(seconds_per_selection(config));
    Ok(OnlineOutcome {
        calibration_trials: calibration.len(),
        online_trials: session.len(),
        adaptive: Report::from_probabilities(&session.labels, p_adaptive.view(), sps)?,
        frozen: Report::from_probabilities(&session.labels, p_frozen.view(), sps)?,
        updates_applied,
        final_learning_rate: adaptive.decoder.as_mlp().map(|m| m.learning_rate()),
    })
}
