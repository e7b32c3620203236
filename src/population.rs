//! Population prior (issue 23): a decoder that learns from other people.
//!
//! **Why this is ours.** Every EEGMMIDB subject brings ~45 labelled trials; a person-only
//! tangent-space + shrinkage LDA fits 2080 features from that alone, and more features only
//! overfit (issue 23). Riemannian re-centring makes different people comparable: each
//! person's covariances are whitened by that person's own Riemannian mean M
//! (C → M^{-1/2} C M^{-1/2}, so the person's mean becomes the identity) and mapped to the
//! tangent space at the identity. That is exactly what our tangent-space stage computes when
//! its reference is the person's own mean, so tangent vectors of different people can be
//! pooled without touching the feature stage, and a model built here is an ordinary model
//! file that the engine, the service and `replay` run unchanged.
//!
//! **What it does.**
//! - [`build_prior`]: from many people's labelled epochs (each person's reference = their own
//!   mean over all their windows, labels unused), the per-class means of the pooled tangent
//!   vectors and their pooled within-class covariance in the LDA convention of
//!   `decoder::lda` (per-class Ledoit–Wolf on standardised features, weighted by class
//!   frequency), with the channel names, the preprocessing / band / window settings and the
//!   subjects used: a [`PopulationPrior`] file.
//! - [`person_model`]: a new person's model. Their reference is their own mean, estimated from
//!   unlabelled windows (calibration trials without their labels, or a short rest period);
//!   their labelled trials (possibly none) give class means and a covariance that are shrunk
//!   towards the population's with weights n/(n + τ) (τ = `strength`, in trials): with no
//!   labelled trials the decoder *is* the population's; as trials accumulate the person's own
//!   statistics take over.
//! - Channels are matched by name (EDF dots and case ignored); the person's channels may come
//!   in any order. A headset with fewer channels needs a prior built for that subset (tangent
//!   vectors of a subset are not a sub-vector of the full ones): build it with a pipeline
//!   whose `[preprocess] channels` lists them.
//! - [`loso`]: leave-one-subject-out evaluation with 0, k and all labelled calibration trials
//!   per class beside the person-only decoder on the same folds, and a Wilcoxon signed-rank
//!   test ([`wilcoxon_signed_rank`]) for the per-subject paired differences.

use std::path::Path;

use ndarray::linalg::general_mat_mul;
use ndarray::{Array2, ArrayView2, Axis};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::config::PipelineConfig;
use crate::decoder::cv::stratified_kfold;
use crate::decoder::lda::Lda;
use crate::decoder::metrics::Report;
use crate::decoder::{AnyDecoder, Decoder};
use crate::epochs::Epochs;
use crate::error::{Error, Result};
use crate::evaluate;
use crate::features::extractor::ExtractorState;
use crate::features::tangent_space::TangentSpace;
use crate::features::FeatureExtractor;
use crate::linalg::{self, Mat, RIEMANN_MEAN_MAX_ITER, RIEMANN_MEAN_TOL};
use crate::model::{Fingerprint, Model};
use crate::stream::normalize_label;

/// Identifies a prior file; checked on load.
pub const PRIOR_FORMAT: &str = "neurostream-population-prior";
/// Bumped when the layout changes incompatibly.
pub const PRIOR_VERSION: u32 = 1;
/// Default τ: the prior counts as this many trials per class (means) and in total
/// (covariance). Fixed before the 35-subject evaluation, not tuned on it.
pub const DEFAULT_STRENGTH: f64 = 20.0;

/// One person who went into a prior.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PriorSubject {
    pub name: String,
    /// Labelled trials per class, in class order.
    pub trials_per_class: Vec<usize>,
}

/// A population prior file: statistics of re-centred tangent vectors pooled over people.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PopulationPrior {
    pub format: String,
    pub version: u32,
    pub written_by: String,
    /// Channels (after preprocessing), rate, window, preprocessing and feature settings.
    pub fingerprint: Fingerprint,
    pub classes: Vec<String>,
    pub subjects: Vec<PriorSubject>,
    /// Where the data came from and under which licence (free text, for people).
    #[serde(default)]
    pub source: String,
    /// Per-class mean tangent vector (class order; the tangent-space feature order).
    pub class_means: Vec<Vec<f64>>,
    /// Pooled within-class covariance of the tangent vectors, upper triangle row by row
    /// (d(d + 1)/2 values).
    pub covariance_upper: Vec<f64>,
}

/// Class means and within-class covariance of feature rows (the `decoder::lda` convention).
#[derive(Debug, Clone)]
pub struct ClassStats {
    pub counts: Vec<usize>,
    pub means: Vec<Vec<f64>>,
    /// d × d, row-major.
    pub covariance: Array2<f64>,
}

fn other(msg: impl Into<String>) -> Error {
    Error::Data(msg.into())
}

/// Ledoit–Wolf shrinkage of already centred rows `x` (n × p), as scikit-learn's
/// `ledoit_wolf_shrinkage`; returns (empirical covariance, shrinkage).
fn ledoit_wolf(x: ArrayView2<'_, f64>) -> (Array2<f64>, f64) {
    let (n, p) = x.dim();
    let mut emp = Array2::<f64>::zeros((p, p));
    general_mat_mul(1.0 / n as f64, &x.t(), &x, 0.0, &mut emp);
    let trace: f64 = (0..p).map(|i| emp[[i, i]]).sum();
    let mu = trace / p as f64;
    // Σ_ij Σ_k x_ki² x_kj² = Σ_k (Σ_i x_ki²)²
    let beta_sum: f64 = x
        .rows()
        .into_iter()
        .map(|r| r.iter().map(|v| v * v).sum::<f64>().powi(2))
        .sum();
    let delta_sum: f64 = emp.iter().map(|v| v * v).sum::<f64>(); // ‖XᵀX‖²/n²
    let beta = (beta_sum / n as f64 - delta_sum) / (p as f64 * n as f64);
    let delta = (delta_sum - 2.0 * mu * trace + p as f64 * mu * mu) / p as f64;
    let beta = beta.min(delta);
    let shrinkage = if beta == 0.0 { 0.0 } else { beta / delta };
    (emp, shrinkage)
}

/// Class statistics of `x` (n × d) in the convention of `decoder::lda` with
/// `shrinkage = "auto"`: per class, Ledoit–Wolf on standardised features scaled back, then
/// weighted by class frequency. Every class needs at least one row.
pub fn class_stats(x: ArrayView2<'_, f64>, labels: &[usize], classes: usize) -> Result<ClassStats> {
    let (n, d) = x.dim();
    if labels.len() != n {
        return Err(other(format!(
            "class statistics: {n} rows but {} labels",
            labels.len()
        )));
    }
    let mut counts = vec![0usize; classes];
    for &l in labels {
        if l >= classes {
            return Err(other(format!(
                "class statistics: label {l} >= {classes} classes"
            )));
        }
        counts[l] += 1;
    }
    if let Some(c) = counts.iter().position(|&c| c == 0) {
        return Err(other(format!("class statistics: class {c} has no trials")));
    }
    let mut means = Vec::with_capacity(classes);
    let mut covariance = Array2::<f64>::zeros((d, d));
    for (c, &nc) in counts.iter().enumerate() {
        let rows: Vec<usize> = (0..n).filter(|&i| labels[i] == c).collect();
        let xc = x.select(Axis(0), &rows);
        let mean = xc.mean_axis(Axis(0)).expect("class has rows");
        let mut z = xc - &mean;
        let mut scale = vec![1.0; d];
        for (j, mut col) in z.columns_mut().into_iter().enumerate() {
            let sd = (col.iter().map(|v| v * v).sum::<f64>() / nc as f64).sqrt();
            if sd > 0.0 && sd.is_finite() {
                scale[j] = sd;
                col.mapv_inplace(|v| v / sd);
            }
        }
        let (emp, s) = ledoit_wolf(z.view());
        let mu = (0..d).map(|i| emp[[i, i]]).sum::<f64>() / d as f64;
        let prior = nc as f64 / n as f64;
        for i in 0..d {
            for j in 0..d {
                let mut v = (1.0 - s) * emp[[i, j]];
                if i == j {
                    v += s * mu;
                }
                covariance[[i, j]] += prior * v * scale[i] * scale[j];
            }
        }
        means.push(mean.to_vec());
    }
    Ok(ClassStats {
        counts,
        means,
        covariance,
    })
}

/// Lower Cholesky factor (row-major, blocked: the trailing updates go through
/// matrixmultiply); `None` unless positive definite.
fn cholesky(a: &Array2<f64>) -> Option<Array2<f64>> {
    let n = a.nrows();
    let mut l = a.clone();
    const B: usize = 64;
    let mut k = 0;
    while k < n {
        let b = B.min(n - k);
        // Factor the diagonal block.
        for j in k..k + b {
            let mut s = l[[j, j]];
            for p in k..j {
                s -= l[[j, p]] * l[[j, p]];
            }
            if !(s > 0.0 && s.is_finite()) {
                return None;
            }
            let djj = s.sqrt();
            l[[j, j]] = djj;
            for i in j + 1..k + b {
                let mut s = l[[i, j]];
                for p in k..j {
                    s -= l[[i, p]] * l[[j, p]];
                }
                l[[i, j]] = s / djj;
            }
        }
        // Panel below: L21 = A21 L11⁻ᵀ.
        for i in k + b..n {
            for j in k..k + b {
                let mut s = l[[i, j]];
                for p in k..j {
                    s -= l[[i, p]] * l[[j, p]];
                }
                l[[i, j]] = s / l[[j, j]];
            }
        }
        // Trailing update A22 -= L21 L21ᵀ.
        if k + b < n {
            let panel = l.slice(ndarray::s![k + b.., k..k + b]).to_owned();
            let mut trailing = l.slice_mut(ndarray::s![k + b.., k + b..]);
            general_mat_mul(-1.0, &panel, &panel.t(), 1.0, &mut trailing);
        }
        k += b;
    }
    for i in 0..n {
        for j in i + 1..n {
            l[[i, j]] = 0.0;
        }
    }
    Some(l)
}

fn cholesky_solve(l: &Array2<f64>, b: &[f64]) -> Vec<f64> {
    let n = l.nrows();
    let mut y = b.to_vec();
    for i in 0..n {
        let row = l.row(i);
        let s: f64 = (0..i).map(|p| row[p] * y[p]).sum();
        y[i] = (y[i] - s) / row[i];
    }
    for i in (0..n).rev() {
        let s: f64 = (i + 1..n).map(|p| l[[p, i]] * y[p]).sum();
        y[i] = (y[i] - s) / l[[i, i]];
    }
    y
}

/// The shrinkage LDA whose class means and covariance are the person's shrunk towards the
/// population's: μ_k = (n_k μ_k,person + τ μ_k,pop)/(n_k + τ),
/// Σ = (n Σ_person + τ Σ_pop)/(n + τ); with no person statistics, the population's. Class
/// priors are uniform (the paradigm balances the classes).
pub fn combine(population: &ClassStats, person: Option<&ClassStats>, strength: f64) -> Result<Lda> {
    if !(strength.is_finite() && strength >= 0.0) {
        return Err(Error::config(
            "training.prior_strength",
            format!("{strength} is not a finite number >= 0"),
        ));
    }
    let classes = population.means.len();
    let d = population.covariance.nrows();
    let (means, sigma) = match person {
        None => (population.means.clone(), population.covariance.clone()),
        Some(p) => {
            if p.means.len() != classes || p.covariance.nrows() != d {
                return Err(other(format!(
                    "the person's statistics ({} classes, {} features) do not match the prior's ({classes}, {d})",
                    p.means.len(),
                    p.covariance.nrows()
                )));
            }
            let means = (0..classes)
                .map(|k| {
                    let nk = p.counts[k] as f64;
                    let w = nk / (nk + strength);
                    p.means[k]
                        .iter()
                        .zip(&population.means[k])
                        .map(|(a, b)| w * a + (1.0 - w) * b)
                        .collect()
                })
                .collect::<Vec<Vec<f64>>>();
            let n: f64 = p.counts.iter().sum::<usize>() as f64;
            let a = if n + strength > 0.0 {
                n / (n + strength)
            } else {
                1.0
            };
            let sigma = &p.covariance * a + &population.covariance * (1.0 - a);
            (means, sigma)
        }
    };
    let chol = cholesky(&sigma).ok_or_else(|| {
        other(
            "the combined covariance is not positive definite (non-finite or degenerate features)",
        )
    })?;
    let prior = 1.0 / classes as f64;
    let mut coef = Vec::with_capacity(classes * d);
    let mut intercept = Vec::with_capacity(classes);
    for mean in &means {
        let w = cholesky_solve(&chol, mean);
        let b = -0.5 * mean.iter().zip(&w).map(|(m, w)| m * w).sum::<f64>() + prior.ln();
        coef.extend(w);
        intercept.push(b);
    }
    let lda: Lda = serde_json::from_value(json!({
        "config": {"shrinkage": "auto"},
        "classes": classes,
        "n_features": d,
        "priors": vec![prior; classes],
        "means": means.concat(),
        "coef": coef,
        "intercept": intercept,
        "shrinkage_applied": vec![0.0; classes],
    }))
    .map_err(|e| other(format!("building the combined LDA: {e}")))?;
    lda.validate(d)
        .map_err(|e| other(format!("the combined LDA is not usable: {e}")))?;
    Ok(lda)
}

fn tangent_config(
    config: &PipelineConfig,
) -> Result<crate::features::tangent_space::TangentSpaceConfig> {
    config.features.tangent_space.ok_or_else(|| {
        Error::config(
            "features",
            "a population prior needs the tangent-space feature stage ([features.tangent_space])",
        )
    })
}

/// The (regularised) covariances of the windows at `indices`, as the tangent-space stage
/// computes them.
pub fn covariances(
    config: &PipelineConfig,
    epochs: &Epochs,
    indices: &[usize],
) -> Result<Vec<Mat>> {
    let shrinkage = tangent_config(config)?.shrinkage;
    let mut ws = linalg::CovWorkspace::new();
    Ok(indices
        .iter()
        .map(|&i| {
            let w = epochs.window(i);
            let mut c = Mat::zeros(w.channels, w.channels);
            ws.covariance(w.data, w.channels, w.samples, true, shrinkage, &mut c);
            c
        })
        .collect())
}

/// Target of the person's own mean: the mean tangent vector after re-centring (the
/// gradient of the Karcher mean) at most this in Frobenius norm, so that the person's
/// re-centred mean is the identity to ~1e-12.
pub const OWN_MEAN_TOL: f64 = 1e-12;

/// The person's own mean: the Riemannian mean of the covariances of the windows at
/// `indices` (labels not used). Re-centring at it (C → M^{-1/2} C M^{-1/2}) makes the
/// person's mean the identity. pyRiemann's iteration ([`linalg::riemann_mean`], tolerance
/// 1e-8) followed by at most 10 full Karcher steps (step 1, which converge fast near the
/// mean where the decaying step of the first stage crawls) until [`OWN_MEAN_TOL`].
pub fn own_mean(config: &PipelineConfig, epochs: &Epochs, indices: &[usize]) -> Result<Mat> {
    if indices.is_empty() {
        return Err(other(
            "no unlabelled windows to estimate the person's own mean from",
        ));
    }
    let covs = covariances(config, epochs, indices)?;
    let mut mean =
        linalg::riemann_mean(&covs, RIEMANN_MEAN_TOL, RIEMANN_MEAN_MAX_ITER).map_err(|e| {
            other(format!(
                "the person's own mean: {e}; with rank-deficient data use shrinkage = \"oas\""
            ))
        })?;
    let weight = 1.0 / covs.len() as f64;
    let spd = || other("the person's own mean left the SPD cone (degenerate covariances)");
    for _ in 0..10 {
        let (sq, isq) = linalg::sqrtm_invsqrtm(&mean).ok_or_else(spd)?;
        let mut grad = Mat::zeros(mean.nrows(), mean.ncols());
        for c in &covs {
            grad += linalg::logm(&linalg::congruence(&isq, c)).ok_or_else(spd)? * weight;
        }
        if grad.norm() <= OWN_MEAN_TOL {
            break;
        }
        mean = linalg::congruence(&sq, &linalg::expm(&grad).ok_or_else(spd)?);
        linalg::symmetrize(&mut mean);
    }
    Ok(mean)
}

/// Re-centre covariances at `mean`: M^{-1/2} C M^{-1/2}.
pub fn recentre(covs: &[Mat], mean: &Mat) -> Result<Vec<Mat>> {
    let isq = linalg::invsqrtm(mean)
        .ok_or_else(|| other("re-centring: the mean is not symmetric positive definite"))?;
    Ok(covs.iter().map(|c| linalg::congruence(&isq, c)).collect())
}

/// Tangent vectors (rows) of the windows at `indices`, re-centred at `reference`: exactly the
/// features the pipeline's tangent-space stage gives with that reference.
pub fn tangent_rows(
    config: &PipelineConfig,
    epochs: &Epochs,
    indices: &[usize],
    reference: &Mat,
) -> Result<Array2<f64>> {
    let mut ts = TangentSpace::new(tangent_config(config)?);
    ts.set_reference(reference.clone())?;
    let d = ts.names().len();
    let mut out = Array2::<f64>::zeros((indices.len(), d));
    let mut row = vec![0f32; d];
    for (r, &i) in indices.iter().enumerate() {
        ts.extract(&epochs.window(i), &mut row);
        if row.iter().any(|v| !v.is_finite()) {
            return Err(Error::Stream(format!(
                "epoch {i}: non-finite tangent vector (flat or broken channels?)"
            )));
        }
        for (o, &v) in out.row_mut(r).iter_mut().zip(&row) {
            *o = f64::from(v);
        }
    }
    Ok(out)
}

/// Re-centre each person on their own mean (all of their windows), pool the tangent vectors.
fn pooled_tangents(
    config: &PipelineConfig,
    people: &[(String, &Epochs)],
) -> Result<(Array2<f64>, Vec<usize>)> {
    let mut blocks = Vec::new();
    let mut labels = Vec::new();
    for (name, epochs) in people {
        let all: Vec<usize> = (0..epochs.len()).collect();
        let mean = own_mean(config, epochs, &all).map_err(|e| other(format!("{name}: {e}")))?;
        blocks.push(tangent_rows(config, epochs, &all, &mean)?);
        labels.extend_from_slice(&epochs.labels);
    }
    let views: Vec<_> = blocks.iter().map(|b| b.view()).collect();
    let x = ndarray::concatenate(Axis(0), &views)
        .map_err(|e| other(format!("pooling tangent vectors: {e}")))?;
    Ok((x, labels))
}

fn pack_upper(m: &Array2<f64>) -> Vec<f64> {
    let d = m.nrows();
    (0..d)
        .flat_map(|i| (i..d).map(move |j| (i, j)))
        .map(|(i, j)| m[[i, j]])
        .collect()
}

/// Build a prior from several people's labelled epochs (same pipeline, montage and rate).
pub fn build_prior(
    config: &PipelineConfig,
    people: &[(String, Epochs)],
    source: String,
) -> Result<PopulationPrior> {
    let first = people
        .first()
        .ok_or_else(|| other("a population prior needs at least one person's recordings"))?;
    let channels: Vec<String> = first.1.info.labels().map(str::to_owned).collect();
    for (name, e) in people {
        let theirs: Vec<String> = e.info.labels().map(str::to_owned).collect();
        if theirs != channels || e.rate != first.1.rate || e.samples != first.1.samples {
            return Err(other(format!(
                "{name}: channels, rate or window differ from {}'s; a prior pools one montage",
                first.0
            )));
        }
    }
    let classes = config.training.classes.len();
    let refs: Vec<(String, &Epochs)> = people.iter().map(|(n, e)| (n.clone(), e)).collect();
    let (x, labels) = pooled_tangents(config, &refs)?;
    let stats = class_stats(x.view(), &labels, classes)?;
    let subjects = people
        .iter()
        .map(|(name, e)| {
            let mut counts = vec![0; classes];
            for &l in &e.labels {
                counts[l] += 1;
            }
            PriorSubject {
                name: name.clone(),
                trials_per_class: counts,
            }
        })
        .collect();
    Ok(PopulationPrior {
        format: PRIOR_FORMAT.into(),
        version: PRIOR_VERSION,
        written_by: env!("CARGO_PKG_VERSION").into(),
        fingerprint: Fingerprint::new(config, channels, first.1.rate, first.1.samples),
        classes: config.training.class_names(),
        subjects,
        source,
        class_means: stats.means,
        covariance_upper: pack_upper(&stats.covariance),
    })
}

impl PopulationPrior {
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string(self)
            .map_err(|e| other(format!("serializing the prior: {e}")))?;
        std::fs::write(path, text).map_err(|e| Error::io(path, e))
    }

    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_json(&text, &path.display().to_string())
    }

    /// Parse and check a prior: format, version, shapes, every number finite.
    pub fn from_json(text: &str, origin: &str) -> Result<Self> {
        let bad = |m: String| Error::config(origin, m);
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| bad(format!("not JSON: {e}")))?;
        match value.get("format").and_then(|f| f.as_str()) {
            Some(PRIOR_FORMAT) => {}
            other => {
                return Err(bad(format!(
                    "not a population prior (format {other:?}, expected {PRIOR_FORMAT:?})"
                )))
            }
        }
        match value.get("version").and_then(|v| v.as_u64()) {
            Some(v) if v == u64::from(PRIOR_VERSION) => {}
            v => {
                return Err(bad(format!(
                    "prior version {v:?}; this build reads version {PRIOR_VERSION}"
                )))
            }
        }
        let prior: PopulationPrior =
            serde_json::from_value(value).map_err(|e| bad(format!("{e}")))?;
        prior.check().map_err(bad)?;
        Ok(prior)
    }

    /// Feature dimension d = n(n + 1)/2.
    pub fn dim(&self) -> usize {
        let n = self.fingerprint.channels.len();
        n * (n + 1) / 2
    }

    fn check(&self) -> std::result::Result<(), String> {
        let d = self.dim();
        if self.fingerprint.channels.is_empty() {
            return Err("fingerprint.channels is empty".into());
        }
        if self.classes.len() < 2 || self.class_means.len() != self.classes.len() {
            return Err(format!(
                "{} class name(s) and {} class mean(s); expected the same number, at least 2",
                self.classes.len(),
                self.class_means.len()
            ));
        }
        if let Some((k, m)) = self
            .class_means
            .iter()
            .enumerate()
            .find(|(_, m)| m.len() != d)
        {
            return Err(format!(
                "class_means[{k}] has {} values, expected {d} for {} channels",
                m.len(),
                self.fingerprint.channels.len()
            ));
        }
        if self.covariance_upper.len() != d * (d + 1) / 2 {
            return Err(format!(
                "covariance_upper has {} values, expected {}",
                self.covariance_upper.len(),
                d * (d + 1) / 2
            ));
        }
        if self
            .class_means
            .iter()
            .flatten()
            .chain(&self.covariance_upper)
            .any(|v| !v.is_finite())
        {
            return Err("class_means or covariance_upper hold a non-finite number".into());
        }
        if self.fingerprint.features.tangent_space.is_none() {
            return Err("fingerprint.features has no tangent_space stage".into());
        }
        Ok(())
    }

    /// The prior's statistics in the feature order of `channels` (the person's, matched by
    /// name, any order). Errors name the channels that do not match.
    pub fn stats_for(&self, channels: &[String]) -> Result<ClassStats> {
        let key = |s: &str| normalize_label(s).to_lowercase();
        let ours: Vec<String> = self.fingerprint.channels.iter().map(|c| key(c)).collect();
        let mut perm = Vec::with_capacity(channels.len());
        let mut missing = Vec::new();
        for c in channels {
            match ours.iter().position(|o| *o == key(c)) {
                Some(i) if !perm.contains(&i) => perm.push(i),
                _ => missing.push(c.clone()),
            }
        }
        if !missing.is_empty() || perm.len() != ours.len() {
            let unused: Vec<&String> = (0..ours.len())
                .filter(|i| !perm.contains(i))
                .map(|i| &self.fingerprint.channels[i])
                .collect();
            return Err(other(format!(
                "the prior's channels do not match this montage: not in the prior {missing:?}, \
                 only in the prior {unused:?}. Tangent vectors of a channel subset differ from \
                 the full montage's: build a prior for these channels (`neurostream train \
                 --population` with [preprocess] channels listing them)"
            )));
        }
        let n = perm.len();
        let d = n * (n + 1) / 2;
        // Index of feature (i, j), i <= j, in the upper-triangle order.
        let idx = |i: usize, j: usize| {
            let (i, j) = if i <= j { (i, j) } else { (j, i) };
            // Rows 0..i hold n + (n - 1) + … + (n - i + 1) features.
            i * n - i * i.saturating_sub(1) / 2 + (j - i)
        };
        let map: Vec<usize> = (0..n)
            .flat_map(|i| (i..n).map(move |j| (i, j)))
            .map(|(i, j)| idx(perm[i], perm[j]))
            .collect();
        debug_assert_eq!(map.len(), d);
        let mut full = Array2::<f64>::zeros((d, d));
        let mut k = 0;
        for i in 0..d {
            for j in i..d {
                full[[i, j]] = self.covariance_upper[k];
                full[[j, i]] = self.covariance_upper[k];
                k += 1;
            }
        }
        let covariance = Array2::from_shape_fn((d, d), |(a, b)| full[[map[a], map[b]]]);
        let means = self
            .class_means
            .iter()
            .map(|m| map.iter().map(|&f| m[f]).collect())
            .collect();
        Ok(ClassStats {
            counts: self
                .subjects
                .iter()
                .fold(vec![0; self.classes.len()], |mut acc, s| {
                    for (a, c) in acc.iter_mut().zip(&s.trials_per_class) {
                        *a += c;
                    }
                    acc
                }),
            means,
            covariance,
        })
    }

    /// Whether the pipeline computes the same features as the prior (rate, window,
    /// band-pass and the rest of preprocessing apart from the channel list, feature stage).
    pub fn check_pipeline(&self, config: &PipelineConfig, rate: f64, samples: usize) -> Result<()> {
        let fp = &self.fingerprint;
        let mut theirs = Fingerprint::new(config, fp.channels.clone(), rate, samples);
        let mut ours = fp.clone();
        theirs.preprocess.channels.clear();
        ours.preprocess.channels.clear();
        ours.check(&theirs).map_err(|e| {
            other(format!(
                "the population prior {}",
                e.to_string().replace(
                    "model does not fit this pipeline: ",
                    "does not fit this pipeline: "
                )
            ))
        })?;
        if self.classes != config.training.class_names() {
            return Err(other(format!(
                "the prior's classes {:?} differ from the pipeline's {:?}",
                self.classes,
                config.training.class_names()
            )));
        }
        Ok(())
    }
}

/// A person's model from a prior: `reference` = the person's own mean ([`own_mean`] of
/// unlabelled windows: calibration cues without their labels, or a rest period), decoder =
/// the prior combined with the labelled windows at `labelled` (may be empty: the population
/// decoder).
pub fn person_model(
    config: &PipelineConfig,
    prior: &PopulationPrior,
    epochs: &Epochs,
    labelled: &[usize],
    reference: Mat,
    strength: f64,
    trained_on: Vec<String>,
) -> Result<Model> {
    prior.check_pipeline(config, epochs.rate, epochs.samples)?;
    let channels: Vec<String> = epochs.info.labels().map(str::to_owned).collect();
    let population = prior.stats_for(&channels)?;
    let lda = fit_person(config, &population, epochs, labelled, &reference, strength)?;
    let mut ts = TangentSpace::new(tangent_config(config)?);
    ts.set_reference(reference)?;
    let model = Model::new(
        Fingerprint::new(config, channels, epochs.rate, epochs.samples),
        config.training.class_names(),
        ExtractorState::TangentSpace(Box::new(ts)),
        AnyDecoder::Lda(lda),
        trained_on,
        labelled.len(),
    );
    model.validate().map_err(other)?;
    Ok(model)
}

fn fit_person(
    config: &PipelineConfig,
    population: &ClassStats,
    epochs: &Epochs,
    labelled: &[usize],
    reference: &Mat,
    strength: f64,
) -> Result<Lda> {
    let classes = population.means.len();
    let person = if labelled.is_empty() {
        None
    } else {
        let x = tangent_rows(config, epochs, labelled, reference)?;
        let labels: Vec<usize> = labelled.iter().map(|&i| epochs.labels[i]).collect();
        Some(class_stats(x.view(), &labels, classes)?)
    };
    combine(population, person.as_ref(), strength)
}

/// Two-sided Wilcoxon signed-rank test of paired differences (zeros dropped, ties given
/// average ranks). Exact null distribution for up to 50 non-zero differences without ties
/// (as SciPy's default), otherwise the normal approximation with tie correction and no
/// continuity correction (SciPy's `wilcoxon(..., method="approx")`). Returns (statistic =
/// the smaller rank sum, p); p = 1 when every difference is zero.
pub fn wilcoxon_signed_rank(differences: &[f64]) -> (f64, f64) {
    let mut d: Vec<f64> = differences
        .iter()
        .copied()
        .filter(|v| *v != 0.0 && v.is_finite())
        .collect();
    let n = d.len();
    if n == 0 {
        return (0.0, 1.0);
    }
    d.sort_by(|a, b| a.abs().total_cmp(&b.abs()));
    let mut ranks = vec![0.0; n];
    let mut ties = false;
    let mut tie_term = 0.0;
    let mut i = 0;
    while i < n {
        let mut j = i;
        while j + 1 < n && d[j + 1].abs() == d[i].abs() {
            j += 1;
        }
        let r = (i + j) as f64 / 2.0 + 1.0;
        for rank in &mut ranks[i..=j] {
            *rank = r;
        }
        let t = (j - i + 1) as f64;
        if t > 1.0 {
            ties = true;
            tie_term += t * t * t - t;
        }
        i = j + 1;
    }
    let plus: f64 = d
        .iter()
        .zip(&ranks)
        .filter(|(v, _)| **v > 0.0)
        .map(|(_, r)| r)
        .sum();
    let total = n as f64 * (n as f64 + 1.0) / 2.0;
    let minus = total - plus;
    let stat = plus.min(minus);
    if n <= 50 && !ties {
        // counts[s] = number of sign assignments with positive rank sum s.
        let max = n * (n + 1) / 2;
        let mut counts = vec![0f64; max + 1];
        counts[0] = 1.0;
        for k in 1..=n {
            for s in (k..=max).rev() {
                counts[s] += counts[s - k];
            }
        }
        let all: f64 = counts.iter().sum();
        let tail: f64 = counts[..=stat as usize].iter().sum::<f64>() / all;
        return (stat, (2.0 * tail).min(1.0));
    }
    let nf = n as f64;
    let mean = nf * (nf + 1.0) / 4.0;
    let var = nf * (nf + 1.0) * (2.0 * nf + 1.0) / 24.0 - tie_term / 48.0;
    if var <= 0.0 {
        return (stat, 1.0);
    }
    let z = (stat - mean) / var.sqrt();
    (stat, (2.0 * normal_cdf(z)).min(1.0))
}

/// Standard normal CDF (erfc via Numerical Recipes' Chebyshev fit, |error| < 1.2e-7).
fn normal_cdf(z: f64) -> f64 {
    let x = -z / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.5 * x.abs());
    let y = t
        * (-x * x - 1.265_512_23
            + t * (1.000_023_68
                + t * (0.374_091_96
                    + t * (0.096_784_18
                        + t * (-0.186_288_06
                            + t * (0.278_868_07
                                + t * (-1.135_203_98
                                    + t * (1.488_515_87
                                        + t * (-0.822_152_23 + t * 0.170_872_77)))))))))
            .exp();
    let erfc = if x >= 0.0 { y } else { 2.0 - y };
    0.5 * erfc
}

/// One condition of the leave-one-subject-out comparison, for one subject: mean over the
/// subject's folds of the per-fold accuracy and ROC-AUC.
#[derive(Debug, Clone, Serialize)]
pub struct Score {
    pub accuracy: f64,
    pub auc: Option<f64>,
}

/// A subject's results under every condition (keys as in [`LosoReport::conditions`]).
#[derive(Debug, Clone, Serialize)]
pub struct SubjectResult {
    pub subject: String,
    pub trials: usize,
    pub scores: Vec<Score>,
}

/// Mean and paired comparison of one condition against the person-only baseline.
#[derive(Debug, Clone, Serialize)]
pub struct ConditionSummary {
    pub condition: String,
    pub mean_accuracy: f64,
    pub mean_auc: Option<f64>,
    pub mean_accuracy_difference: f64,
    pub accuracy_wilcoxon_p: f64,
    pub mean_auc_difference: Option<f64>,
    pub auc_wilcoxon_p: Option<f64>,
    /// Subjects above / below the baseline in AUC (accuracy when AUC is unavailable).
    pub better: usize,
    pub worse: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct LosoReport {
    /// τ of the k-trial conditions (the first of the strengths).
    pub strength: f64,
    pub folds: usize,
    pub seed: u64,
    /// Condition names; the first is the person-only baseline.
    pub conditions: Vec<String>,
    pub subjects: Vec<SubjectResult>,
    pub summary: Vec<ConditionSummary>,
}

/// Leave-one-subject-out: for each person, a prior from everyone else; the person's trials
/// split into the pipeline's stratified folds (`training.folds`, `training.seed`, the same
/// folds as `evaluate` cross-validation). In each fold the training part is the calibration
/// session. Conditions: the person-only pipeline on all calibration trials (the project's own
/// `evaluate::fit`), the prior with 0 labelled trials, with the first k of each class
/// (`ks`, calibration order; τ = `strengths[0]`), and with all of them for each τ in
/// `strengths`; the person's mean is always estimated from the calibration trials without
/// their labels. The test part is never seen by anything.
pub fn loso(
    config: &PipelineConfig,
    people: &[(String, Epochs)],
    ks: &[usize],
    strengths: &[f64],
    mut progress: impl FnMut(&str),
) -> Result<LosoReport> {
    if people.len() < 2 {
        return Err(other("leave-one-subject-out needs at least two subjects"));
    }
    let strength = *strengths
        .first()
        .ok_or_else(|| other("leave-one-subject-out needs at least one prior strength"))?;
    let classes = config.training.classes.len();
    let sps = Some(evaluate::seconds_per_selection(config));
    // Each person's tangent vectors at their own mean, computed once.
    let mut own: Vec<Array2<f64>> = Vec::with_capacity(people.len());
    for (name, e) in people {
        progress(&format!("{name}: own mean"));
        let all: Vec<usize> = (0..e.len()).collect();
        let mean = own_mean(config, e, &all).map_err(|err| other(format!("{name}: {err}")))?;
        own.push(tangent_rows(config, e, &all, &mean)?);
    }
    let mut conditions = vec!["person-only, all".to_string(), "prior, 0".to_string()];
    conditions.extend(ks.iter().map(|k| format!("prior, {k}/class")));
    for tau in strengths {
        conditions.push(if strengths.len() == 1 {
            "prior, all".into()
        } else {
            format!("prior, all, τ={tau}")
        });
    }
    let mut subjects = Vec::new();
    for (s, (name, epochs)) in people.iter().enumerate() {
        progress(&format!("{name}: prior from {} others", people.len() - 1));
        let views: Vec<_> = (0..people.len())
            .filter(|&o| o != s)
            .map(|o| own[o].view())
            .collect();
        let x =
            ndarray::concatenate(Axis(0), &views).map_err(|e| other(format!("pooling: {e}")))?;
        let labels: Vec<usize> = (0..people.len())
            .filter(|&o| o != s)
            .flat_map(|o| people[o].1.labels.iter().copied())
            .collect();
        let population = class_stats(x.view(), &labels, classes)?;
        let folds = stratified_kfold(&epochs.labels, config.training.folds, config.training.seed)?;
        let mut per_condition: Vec<Vec<(f64, Option<f64>)>> = vec![Vec::new(); conditions.len()];
        for (f, fold) in folds.iter().enumerate() {
            progress(&format!("{name}: fold {}/{}", f + 1, folds.len()));
            let truth: Vec<usize> = fold.test.iter().map(|&i| epochs.labels[i]).collect();
            let mut record = |c: usize, p: Array2<f64>| -> Result<()> {
                let r = Report::from_probabilities(&truth, p.view(), sps)?;
                per_condition[c].push((r.accuracy, r.auc));
                Ok(())
            };
            let mut trained = evaluate::fit(config, epochs, &fold.train)?;
            record(0, evaluate::predict(&mut trained, epochs, &fold.test))?;
            let mut labelled_sets: Vec<Vec<usize>> = vec![Vec::new()];
            for &k in ks {
                let mut set = Vec::new();
                for c in 0..classes {
                    set.extend(
                        fold.train
                            .iter()
                            .copied()
                            .filter(|&i| epochs.labels[i] == c)
                            .take(k),
                    );
                }
                set.sort_unstable();
                labelled_sets.push(set);
            }
            let mut taus = vec![strength; labelled_sets.len()];
            for &tau in strengths {
                labelled_sets.push(fold.train.clone());
                taus.push(tau);
            }
            // The person's own mean from the calibration trials, labels unused.
            let reference = own_mean(config, epochs, &fold.train)?;
            let x = tangent_rows(config, epochs, &fold.test, &reference)?;
            for (c, (labelled, &tau)) in labelled_sets.iter().zip(&taus).enumerate() {
                let lda = fit_person(config, &population, epochs, labelled, &reference, tau)?;
                let mut decoder = AnyDecoder::Lda(lda);
                let mut p = Array2::<f64>::zeros((fold.test.len(), classes));
                let mut row32 = vec![0f32; x.ncols()];
                for (r, xr) in x.rows().into_iter().enumerate() {
                    for (o, v) in row32.iter_mut().zip(xr) {
                        *o = *v as f32;
                    }
                    let out = p.row_mut(r).into_slice().expect("contiguous");
                    decoder.predict_proba(&row32, out);
                }
                record(c + 1, p)?;
            }
        }
        let scores = per_condition
            .iter()
            .map(|v| {
                let n = v.len() as f64;
                let aucs: Option<Vec<f64>> = v.iter().map(|x| x.1).collect();
                Score {
                    accuracy: v.iter().map(|x| x.0).sum::<f64>() / n,
                    auc: aucs.map(|a| a.iter().sum::<f64>() / n),
                }
            })
            .collect();
        subjects.push(SubjectResult {
            subject: name.clone(),
            trials: epochs.len(),
            scores,
        });
    }
    let summary = summarise(&conditions, &subjects);
    Ok(LosoReport {
        strength,
        folds: config.training.folds,
        seed: config.training.seed,
        conditions,
        subjects,
        summary,
    })
}

/// Means and paired Wilcoxon tests of every condition against the first.
pub fn summarise(conditions: &[String], subjects: &[SubjectResult]) -> Vec<ConditionSummary> {
    let n = subjects.len() as f64;
    conditions
        .iter()
        .enumerate()
        .map(|(c, name)| {
            let acc: Vec<f64> = subjects.iter().map(|s| s.scores[c].accuracy).collect();
            let dacc: Vec<f64> = subjects
                .iter()
                .map(|s| s.scores[c].accuracy - s.scores[0].accuracy)
                .collect();
            let auc: Option<Vec<f64>> = subjects.iter().map(|s| s.scores[c].auc).collect();
            let dauc: Option<Vec<f64>> = subjects
                .iter()
                .map(|s| Some(s.scores[c].auc? - s.scores[0].auc?))
                .collect();
            let key = dauc.as_ref().unwrap_or(&dacc);
            ConditionSummary {
                condition: name.clone(),
                mean_accuracy: acc.iter().sum::<f64>() / n,
                mean_auc: auc.map(|a| a.iter().sum::<f64>() / n),
                mean_accuracy_difference: dacc.iter().sum::<f64>() / n,
                accuracy_wilcoxon_p: wilcoxon_signed_rank(&dacc).1,
                mean_auc_difference: dauc.as_ref().map(|d| d.iter().sum::<f64>() / n),
                auc_wilcoxon_p: dauc.as_ref().map(|d| wilcoxon_signed_rank(d).1),
                better: key.iter().filter(|v| **v > 0.0).count(),
                worse: key.iter().filter(|v| **v < 0.0).count(),
            }
        })
        .collect()
}

/// The report as a table: per subject, then means, differences and Wilcoxon p.
pub fn render(report: &LosoReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let fmt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3}"));
    let _ = writeln!(
        out,
        "leave-one-subject-out population prior (τ = {}), {}-fold within each subject (seed {}); \
         per subject: ROC-AUC / accuracy, mean over folds",
        report.strength, report.folds, report.seed
    );
    let _ = write!(out, "  {:<8}", "subject");
    for c in &report.conditions {
        let _ = write!(out, " {c:>17}");
    }
    let _ = writeln!(out);
    for s in &report.subjects {
        let _ = write!(out, "  {:<8}", s.subject);
        for sc in &s.scores {
            let _ = write!(
                out,
                " {:>17}",
                format!("{} / {:.3}", fmt(sc.auc), sc.accuracy)
            );
        }
        let _ = writeln!(out);
    }
    let _ = writeln!(
        out,
        "\n  {:<17} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9}",
        "condition", "auc", "acc", "Δauc", "p(auc)", "Δacc", "p(acc)", "+/- auc"
    );
    for c in &report.summary {
        let _ = writeln!(
            out,
            "  {:<17} {:>8} {:>8.3} {:>8} {:>8} {:>+8.3} {:>8.3} {:>9}",
            c.condition,
            fmt(c.mean_auc),
            c.mean_accuracy,
            c.mean_auc_difference
                .map_or("-".into(), |v| format!("{v:+.3}")),
            c.auc_wilcoxon_p.map_or("-".into(), |v| format!("{v:.3}")),
            c.mean_accuracy_difference,
            c.accuracy_wilcoxon_p,
            format!("{}/{}", c.better, c.worse)
        );
    }
    let _ = writeln!(
        out,
        "  (Δ and p: paired per subject against \"{}\", two-sided Wilcoxon signed-rank)",
        report.conditions.first().map_or("", |s| s.as_str())
    );
    out
}
