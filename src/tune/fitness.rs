//! The fitness of a pipeline: its stratified k-fold cross-validated ROC-AUC or accuracy on the
//! calibration recordings (the same folds, fitting and prediction as
//! [`crate::evaluate::cross_validate`]; optionally averaged over repeated splits), minus an
//! optional penalty on its estimated compute.
//!
//! Most of a genome's cost is in its front end: filtering whole recordings and cutting epochs,
//! then fitting the feature stage (CSP filters, the tangent-space reference) in each fold.
//! Genomes that share a front end share that work:
//!
//! - epochs are cached per (preprocessing, window length, classes, epoch offset);
//! - per-fold feature matrices are cached per (epochs, feature settings). The feature stage is
//!   still fitted on each fold's training epochs only, so the cache does not leak test data;
//! - a pipeline already scored is not scored again (two genomes that differ only in a setting
//!   the pipeline does not use, such as SVM C under an LDA decoder, are the same pipeline).
//!
//! Caches are bounded (oldest entry out first) so a long search over continuous front-end genes
//! does not grow without limit; an evicted entry is recomputed with the same result.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use ndarray::Array2;
use rayon::prelude::*;
use serde::Serialize;

use super::space::{Genome, Metric, SearchSpace};
use super::Objective;
use crate::decoder::cv::{stratified_kfold, Fold};
use crate::decoder::metrics::Report;
use crate::decoder::svm::Kernel;
use crate::decoder::{Decoder, DecoderConfig};
use crate::epochs::{self, Epochs};
use crate::error::{Error, Result};
use crate::evaluate::feature_matrix;
use crate::io::Recording;
use crate::pipeline::PipelineConfig;

/// Epoch sets kept: each is trials × channels × samples of `f32` (about 11 MB for 90 trials of
/// 64 channels × 3 s at 160 Hz).
const EPOCH_SETS_KEPT: usize = 8;
/// Per-fold feature sets kept (a few MB at most each).
const FEATURE_SETS_KEPT: usize = 64;

/// How one pipeline scored.
#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    /// What the optimiser maximises: `cv` minus the compute penalty.
    pub score: f64,
    /// Mean over folds of the metric.
    pub cv: f64,
    pub fold_values: Vec<f64>,
    /// Mean over folds of the accuracy (whatever the metric).
    pub accuracy: f64,
    /// Estimated giga-operations per second of stream (see [`compute_estimate`]).
    pub giga_ops_per_second: f64,
    pub trials: usize,
}

struct Calibration {
    epochs: Epochs,
    folds: Vec<Fold>,
}

struct FoldFeatures {
    train: Array2<f32>,
    test: Array2<f32>,
}

/// A map that forgets its oldest entry beyond `capacity`.
struct Bounded<T> {
    map: HashMap<String, Arc<T>>,
    order: VecDeque<String>,
    capacity: usize,
}

impl<T> Bounded<T> {
    fn new(capacity: usize) -> Self {
        Bounded {
            map: HashMap::new(),
            order: VecDeque::new(),
            capacity,
        }
    }

    fn get(&self, key: &str) -> Option<Arc<T>> {
        self.map.get(key).cloned()
    }

    fn insert(&mut self, key: String, value: Arc<T>) {
        if self.map.insert(key.clone(), value).is_none() {
            self.order.push_back(key);
        }
        while self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.map.remove(&old);
            }
        }
    }
}

/// Work done, for the log: how often each cache was missed.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Work {
    pub epoch_sets_cut: usize,
    pub feature_sets_fitted: usize,
    pub pipelines_scored: usize,
}

type Shared<T> = std::result::Result<T, String>;

/// Cross-validated fitness of the pipelines a search space makes from a base pipeline, on
/// calibration recordings already in memory (the tuner opens only the files it is given).
pub struct PipelineObjective<'a> {
    space: &'a SearchSpace,
    base: &'a PipelineConfig,
    recordings: &'a [Recording],
    folds: usize,
    calibrations: Mutex<Bounded<Shared<Calibration>>>,
    features: Mutex<Bounded<Shared<Vec<FoldFeatures>>>>,
    scores: Mutex<HashMap<String, Shared<Evaluation>>>,
    work: Mutex<Work>,
}

fn json(value: &impl Serialize) -> String {
    serde_json::to_string(value).expect("configs serialise")
}

fn calibration_key(config: &PipelineConfig) -> String {
    json(&(
        &config.preprocess,
        config.features.window_seconds,
        &config.training.classes,
        config.training.epoch_offset,
    ))
}

fn features_key(config: &PipelineConfig) -> String {
    let f = &config.features;
    calibration_key(config) + &json(&(&f.band_power, &f.csp, &f.tangent_space))
}

fn pipeline_key(config: &PipelineConfig) -> String {
    features_key(config) + &json(&(&config.decoder, config.features.hop_seconds))
}

impl<'a> PipelineObjective<'a> {
    pub fn new(
        space: &'a SearchSpace,
        base: &'a PipelineConfig,
        recordings: &'a [Recording],
    ) -> Result<Self> {
        base.training.validate()?;
        if recordings.is_empty() {
            return Err(Error::Other("tuning needs at least one recording".into()));
        }
        Ok(PipelineObjective {
            space,
            base,
            recordings,
            folds: space.fitness.folds.unwrap_or(base.training.folds),
            calibrations: Mutex::new(Bounded::new(EPOCH_SETS_KEPT)),
            features: Mutex::new(Bounded::new(FEATURE_SETS_KEPT)),
            scores: Mutex::new(HashMap::new()),
            work: Mutex::new(Work::default()),
        })
    }

    pub fn work(&self) -> Work {
        *self.work.lock().expect("work counter")
    }

    /// Cut (or fetch) the epochs and folds of `config`'s front end.
    fn calibration(&self, config: &PipelineConfig) -> Arc<Shared<Calibration>> {
        let key = calibration_key(config);
        if let Some(hit) = self.calibrations.lock().expect("cache").get(&key) {
            return hit;
        }
        let cut = || -> Result<Calibration> {
            // Recordings are filtered independently; pooling keeps their given order.
            let parts = self
                .recordings
                .par_iter()
                .map(|r| epochs::cut(r, config))
                .collect::<Result<Vec<_>>>()?;
            let mut parts = parts.into_iter();
            let mut pooled = parts.next().expect("at least one recording");
            for part in parts {
                pooled.append(part)?;
            }
            let mut folds = Vec::new();
            for repeat in 0..self.space.fitness.repeats as u64 {
                let seed = config.training.seed.wrapping_add(repeat);
                folds.extend(stratified_kfold(&pooled.labels, self.folds, seed)?);
            }
            Ok(Calibration {
                epochs: pooled,
                folds,
            })
        };
        let value = Arc::new(cut().map_err(|e| e.to_string()));
        self.work.lock().expect("work counter").epoch_sets_cut += 1;
        self.calibrations
            .lock()
            .expect("cache")
            .insert(key, value.clone());
        value
    }

    /// Fit (or fetch) the feature stage of `config` in every fold.
    fn fold_features(
        &self,
        config: &PipelineConfig,
        calibration: &Calibration,
    ) -> Arc<Shared<Vec<FoldFeatures>>> {
        let key = features_key(config);
        if let Some(hit) = self.features.lock().expect("cache").get(&key) {
            return hit;
        }
        let epochs = &calibration.epochs;
        let channel_labels: Vec<String> = epochs.info.labels().map(str::to_owned).collect();
        let value = calibration
            .folds
            .par_iter()
            .map(|fold| -> Result<FoldFeatures> {
                let mut extractor = config.features.build_extractor(
                    &channel_labels,
                    epochs.rate,
                    epochs.samples,
                )?;
                let labels: Vec<usize> = fold.train.iter().map(|&i| epochs.labels[i]).collect();
                extractor.fit(&epochs.windows(&fold.train), &labels)?;
                let train = feature_matrix(&mut extractor, epochs, &fold.train);
                if train.iter().any(|v| !v.is_finite()) {
                    return Err(Error::Stream(
                        "the feature stage produced non-finite values on the training epochs"
                            .into(),
                    ));
                }
                let test = feature_matrix(&mut extractor, epochs, &fold.test);
                Ok(FoldFeatures { train, test })
            })
            .collect::<Result<Vec<_>>>()
            .map_err(|e| e.to_string());
        let value = Arc::new(value);
        self.work.lock().expect("work counter").feature_sets_fitted += 1;
        self.features
            .lock()
            .expect("cache")
            .insert(key, value.clone());
        value
    }

    /// Score one pipeline (memoised).
    pub fn evaluate_config(&self, config: &PipelineConfig) -> Shared<Evaluation> {
        let key = pipeline_key(config);
        if let Some(done) = self.scores.lock().expect("cache").get(&key) {
            return done.clone();
        }
        let result = self.evaluate_uncached(config);
        self.work.lock().expect("work counter").pipelines_scored += 1;
        self.scores
            .lock()
            .expect("cache")
            .insert(key, result.clone());
        result
    }

    fn evaluate_uncached(&self, config: &PipelineConfig) -> Shared<Evaluation> {
        let decoder = config.decoder.as_ref().ok_or_else(|| {
            "the pipeline has no [decoder] table; add one to the base pipeline or a `decoder` gene"
                .to_string()
        })?;
        let calibration = self.calibration(config);
        let calibration = calibration.as_ref().as_ref().map_err(Clone::clone)?;
        let features = self.fold_features(config, calibration);
        let features = features.as_ref().as_ref().map_err(Clone::clone)?;
        let epochs = &calibration.epochs;
        let classes = config.training.classes.len();
        let metric = self.space.fitness.metric;
        let per_fold = calibration
            .folds
            .par_iter()
            .zip(features.par_iter())
            .map(|(fold, x)| -> Result<(f64, f64)> {
                let labels: Vec<usize> = fold.train.iter().map(|&i| epochs.labels[i]).collect();
                let mut model = decoder.build(classes)?;
                model.fit(x.train.view(), &labels)?;
                let mut p = Array2::<f64>::zeros((fold.test.len(), classes));
                for (row, features) in x.test.rows().into_iter().enumerate() {
                    let out = p.row_mut(row).into_slice().expect("contiguous row");
                    model.predict_proba(features.as_slice().expect("contiguous row"), out);
                }
                let truth: Vec<usize> = fold.test.iter().map(|&i| epochs.labels[i]).collect();
                let report = Report::from_probabilities(&truth, p.view(), None)?;
                let value = match metric {
                    Metric::Accuracy => report.accuracy,
                    Metric::Auc => report.auc.ok_or_else(|| {
                        Error::config(
                            "search space",
                            "fitness.metric = \"auc\" needs two classes; allowed with more: \"accuracy\"",
                        )
                    })?,
                };
                Ok((value, report.accuracy))
            })
            .collect::<Result<Vec<_>>>()
            .map_err(|e| e.to_string())?;
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let fold_values: Vec<f64> = per_fold.iter().map(|f| f.0).collect();
        let accuracies: Vec<f64> = per_fold.iter().map(|f| f.1).collect();
        let cv = mean(&fold_values);
        let giga_ops_per_second = compute_estimate(
            config,
            epochs.channels,
            epochs.rate,
            features.first().map_or(0, |f| f.train.ncols()),
            epochs.len(),
        ) / 1e9;
        Ok(Evaluation {
            score: cv - self.space.fitness.compute_weight * giga_ops_per_second,
            cv,
            fold_values,
            accuracy: mean(&accuracies),
            giga_ops_per_second,
            trials: epochs.len(),
        })
    }
}

impl Objective for PipelineObjective<'_> {
    fn score(&self, genome: &Genome) -> Shared<f64> {
        let config = self
            .space
            .apply(self.base, genome)
            .map_err(|e| e.to_string())?;
        self.evaluate_config(&config).map(|e| e.score)
    }

    /// Genomes grouped by front end: each epoch set and each feature set is computed once,
    /// before the genomes that share it are scored in parallel.
    fn score_batch(&self, genomes: &[Genome]) -> Vec<Shared<f64>> {
        let configs: Vec<Shared<PipelineConfig>> = genomes
            .iter()
            .map(|g| self.space.apply(self.base, g).map_err(|e| e.to_string()))
            .collect();
        let mut groups: BTreeMap<String, BTreeMap<String, Vec<usize>>> = BTreeMap::new();
        for (i, config) in configs.iter().enumerate() {
            if let Ok(config) = config {
                groups
                    .entry(calibration_key(config))
                    .or_default()
                    .entry(features_key(config))
                    .or_default()
                    .push(i);
            }
        }
        let config_of = |i: usize| configs[i].as_ref().expect("grouped configs are valid");
        let scored: Vec<(usize, Shared<f64>)> = groups
            .into_par_iter()
            .flat_map_iter(|(_, by_features)| {
                let first = *by_features
                    .values()
                    .next()
                    .and_then(|m| m.first())
                    .expect("non-empty");
                let calibration = self.calibration(config_of(first));
                by_features
                    .into_par_iter()
                    .flat_map_iter(|(_, members)| {
                        if let Ok(calibration) = calibration.as_ref() {
                            self.fold_features(config_of(members[0]), calibration);
                        }
                        members
                            .into_par_iter()
                            .map(|i| (i, self.evaluate_config(config_of(i)).map(|e| e.score)))
                            .collect::<Vec<_>>()
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        let mut results: Vec<Shared<f64>> = configs
            .iter()
            .map(|c| match c {
                Ok(_) => Err("not scored".to_string()),
                Err(e) => Err(e.clone()),
            })
            .collect();
        for (i, result) in scored {
            results[i] = result;
        }
        results
    }
}

/// Rough multiply-adds per second of stream for `config` running live: the filters on every
/// sample, then the feature stage and the decoder once per hop. A model of the arithmetic,
/// not a measurement, so a search's score does not depend on the machine's load.
pub fn compute_estimate(
    config: &PipelineConfig,
    channels: usize,
    rate: f64,
    feature_dim: usize,
    training_examples: usize,
) -> f64 {
    let c = channels as f64;
    let window = (config.features.window_seconds * rate).max(1.0);
    let filter_sections = config.preprocess.bandpass.as_ref().map_or(0, |b| b.order)
        + usize::from(config.preprocess.notch.is_some());
    // A biquad section costs 5 multiply-adds per sample; the average reference 2.
    let per_sample = c * (5.0 * filter_sections as f64 + 2.0);
    let features = &config.features;
    let per_window_features = if features.csp.is_some() {
        // Spatial filtering, then the variance of each component.
        c * window * features.csp.map_or(4, |k| k.components) as f64 * 2.0
    } else if features.tangent_space.is_some() {
        // Covariance, then an eigendecomposition (~10 c³) for the matrix logarithm.
        c * c * window + 10.0 * c * c * c
    } else {
        // Welch: FFTs of ~window log window per channel.
        c * window * 5.0 * window.log2()
    };
    let d = feature_dim as f64;
    let per_window_decoder = match &config.decoder {
        Some(DecoderConfig::Svm(s)) if s.kernel == Kernel::Rbf => {
            // A kernel evaluation per support vector; at most every training example.
            d * training_examples as f64
        }
        Some(DecoderConfig::Mlp(m)) => {
            m.hidden
                .iter()
                .fold((d, 0.0), |(inputs, ops), &w| {
                    (w as f64, ops + inputs * w as f64)
                })
                .1
        }
        _ => d,
    };
    per_sample * rate + (per_window_features + per_window_decoder) / features.hop_seconds
}
