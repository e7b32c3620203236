//! Riemannian tangent-space features: each window's regularised spatial covariance, mapped to
//! the tangent space of the SPD manifold at the Riemannian mean of the training covariances
//! and flattened, so that linear decoders (LDA, SVM, the plastic MLP) see a Euclidean vector.
//!
//! Conventions follow pyRiemann (`Covariances(estimator='oas')` + `TangentSpace(metric=
//! 'riemann')`), the reference our accuracies are compared with:
//!
//! - Covariance: channel means removed, C = X Xᵀ / n, then OAS shrinkage as scikit-learn
//!   (`Shrinkage::Oas`, default) or none.
//! - `fit`: reference C_ref = affine-invariant Riemannian mean of the training covariances
//!   ([`linalg::riemann_mean`], tol 1e-8, at most 50 iterations). Labels are ignored.
//! - `extract`: S = logm(C_ref^{-1/2} C C_ref^{-1/2}); the features are the upper triangle of S
//!   including the diagonal, row by row (S₀₀, S₀₁, …, S₀ₙ, S₁₁, …), off-diagonal entries
//!   multiplied by √2 so the Euclidean norm of the vector equals the Frobenius norm of S.
//!   Names are `ts{i}_{j}`; dimension n(n + 1)/2 (2080 at 64 channels).
//! - `adapt(window, rate)`: online re-centring, the unsupervised form of plasticity: the
//!   reference moves along the geodesic towards the window's covariance by `rate`,
//!   C_ref ← C_ref^{1/2} (C_ref^{-1/2} C C_ref^{-1/2})^{rate} C_ref^{1/2}, which keeps features
//!   centred as the signal drifts across a session.
//!
//! Hot path (allocation-free once fitted or loaded):
//! - the covariance of a window from a [`crate::features::window::Windower`] is updated over
//!   the hop ([`SlidingCovariance`]): the new samples' outer products in, the leaving ones'
//!   out, with an exact recomputation every [`crate::features::sliding::EXACT_EVERY`] windows;
//! - the eigendecomposition of the whitened covariance is a Householder tridiagonalisation and
//!   implicit QL in preallocated buffers ([`linalg::WarmEigen`]; measured faster here than
//!   warm-started Jacobi sweeps, docs/performance.md), with Jacobi as the fallback;
//! - `adapt` reuses that solver for W^rate and a second one, warm from the previous
//!   reference, for the new reference's square roots, into preallocated buffers.
//!
//! Figures (before/after, with pyRiemann beside) are in docs/performance.md
//! (`neurostream bench --tangent-space`). The cached C_ref^{±1/2} are not serialized but
//! rebuilt on load.

use nalgebra::DMatrix;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::features::csp::check_windows;
use crate::features::sliding::SlidingCovariance;
use crate::features::{FeatureExtractor, TrainableExtractor, Window};
use crate::linalg::{self, CovWorkspace, Mat, WarmEigen, RIEMANN_MEAN_MAX_ITER, RIEMANN_MEAN_TOL};

pub use crate::linalg::Shrinkage;

/// Tangent-space configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TangentSpaceConfig {
    /// Per-window covariance regularisation: `"oas"` (default) or `"none"`.
    pub shrinkage: Shrinkage,
}

/// Preallocated state and buffers for `extract` / `adapt` (n × n each, n = channels).
#[derive(Debug, Clone, Default)]
struct Workspace {
    sliding: SlidingCovariance,
    /// Eigensolver of the whitened window covariance, warm from the previous window.
    eig: WarmEigen,
    /// Eigensolver of the reference, warm from the previous re-centring step.
    ref_eig: WarmEigen,
    cov: Mat,
    tmp: Mat,
    whitened: Mat,
    log: Mat,
    /// Re-centring: W^rate, the moved reference and its new square roots.
    step: Mat,
    moved: Mat,
    sqrt: Mat,
    invsqrt: Mat,
}

impl Workspace {
    fn new(n: usize) -> Self {
        let z = || Mat::zeros(n, n);
        Self {
            sliding: SlidingCovariance::new(),
            eig: WarmEigen::new(n),
            ref_eig: WarmEigen::new(n),
            cov: z(),
            tmp: z(),
            whitened: z(),
            log: z(),
            step: z(),
            moved: z(),
            sqrt: z(),
            invsqrt: z(),
        }
    }

    /// cov → whitened = C_ref^{-1/2} cov C_ref^{-1/2} → eigendecomposition. `false` when the
    /// window is non-finite or the whitened covariance is not positive definite.
    fn whiten_and_decompose(&mut self, invsqrt: &Mat) -> bool {
        linalg::matmul_into(invsqrt, &self.cov, &mut self.tmp);
        linalg::matmul_into(&self.tmp, invsqrt, &mut self.whitened);
        linalg::symmetrize(&mut self.whitened);
        if !self.eig.decompose(&self.whitened) {
            return false;
        }
        let (lo, hi) = self.eig.eigen_range();
        lo > 0.0 && hi.is_finite()
    }
}

/// Fitted reference point with its cached square roots.
#[derive(Debug, Clone)]
struct Reference {
    mean: Mat,
    sqrt: Mat,
    invsqrt: Mat,
}

impl Reference {
    fn new(mean: Mat) -> Option<Self> {
        let (sqrt, invsqrt) = linalg::sqrtm_invsqrtm(&mean)?;
        Some(Self {
            mean,
            sqrt,
            invsqrt,
        })
    }
}

/// Tangent-space feature stage. Serialized as its config and reference matrix.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "TangentSpaceState", into = "TangentSpaceState")]
pub struct TangentSpace {
    config: TangentSpaceConfig,
    reference: Option<Reference>,
    names: Vec<String>,
    ws: Workspace,
}

/// What a model file stores: the config and the reference (rows), nothing derived.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TangentSpaceState {
    config: TangentSpaceConfig,
    reference: Option<Vec<Vec<f64>>>,
}

impl From<TangentSpace> for TangentSpaceState {
    fn from(ts: TangentSpace) -> Self {
        Self {
            config: ts.config,
            reference: ts.reference.map(|r| {
                r.mean
                    .row_iter()
                    .map(|row| row.iter().copied().collect())
                    .collect()
            }),
        }
    }
}

impl TryFrom<TangentSpaceState> for TangentSpace {
    type Error = String;

    fn try_from(state: TangentSpaceState) -> std::result::Result<Self, String> {
        let mut ts = TangentSpace::new(state.config);
        if let Some(rows) = state.reference {
            let n = rows.len();
            if rows.iter().any(|r| r.len() != n) {
                return Err("tangent space reference is not a square matrix".into());
            }
            let mean = DMatrix::from_fn(n, n, |i, j| rows[i][j]);
            ts.set_reference(mean).map_err(|e| e.to_string())?;
        }
        Ok(ts)
    }
}

/// Feature names for n channels: `ts{i}_{j}` over the upper triangle, row-major.
fn names_for(n: usize) -> Vec<String> {
    (0..n)
        .flat_map(|i| (i..n).map(move |j| format!("ts{i}_{j}")))
        .collect()
}

impl TangentSpace {
    pub fn new(config: TangentSpaceConfig) -> Self {
        Self {
            config,
            reference: None,
            names: Vec::new(),
            ws: Workspace::default(),
        }
    }

    pub fn config(&self) -> &TangentSpaceConfig {
        &self.config
    }

    pub fn is_fitted(&self) -> bool {
        self.reference.is_some()
    }

    /// The current reference point C_ref (after `fit`, moved by `adapt`).
    pub fn reference(&self) -> Option<&Mat> {
        self.reference.as_ref().map(|r| &r.mean)
    }

    /// Set the reference point directly (e.g. a mean from another session, for transfer);
    /// errors unless it is symmetric positive definite.
    pub fn set_reference(&mut self, mean: Mat) -> Result<()> {
        let n = mean.nrows();
        let symmetric =
            mean.ncols() == n && (&mean - mean.transpose()).amax() <= 1e-10 * mean.amax();
        let reference = if symmetric && linalg::is_spd(&mean) {
            Reference::new(mean)
        } else {
            None
        };
        let reference = reference.ok_or_else(|| {
            Error::Other("tangent space: reference is not symmetric positive definite".into())
        })?;
        self.names = names_for(n);
        self.ws = Workspace::new(n);
        self.reference = Some(reference);
        Ok(())
    }

    /// The regularised covariance of a window as this stage computes it, into the workspace
    /// (updated over the hop for consecutive windows). `false` on a non-finite window.
    fn window_cov(&mut self, w: &Window<'_>) -> bool {
        self.ws
            .sliding
            .covariance(w, self.config.shrinkage, &mut self.ws.cov)
            .is_some()
    }
}

impl TangentSpace {
    /// The tangent vector of `window` computed directly, as before the hot-path work: the
    /// whole window's covariance and nalgebra's eigensolver, no state carried between
    /// windows. Allocates; the reference the fast path is tested and benchmarked against.
    /// NaN on the same inputs as [`FeatureExtractor::extract`].
    pub fn extract_direct(&self, window: &Window<'_>, out: &mut [f32]) {
        let Some(reference) = &self.reference else {
            out.fill(f32::NAN);
            return;
        };
        let channels = reference.mean.nrows();
        if window.channels != channels
            || window.samples == 0
            || window.data.len() != channels * window.samples
            || out.len() != self.names.len()
            || !window.data.iter().all(|v| v.is_finite())
        {
            out.fill(f32::NAN);
            return;
        }
        let cov = linalg::covariance(
            window.data,
            channels,
            window.samples,
            true,
            self.config.shrinkage,
        );
        let Some(log) = linalg::logm(&linalg::congruence(&reference.invsqrt, &cov)) else {
            out.fill(f32::NAN);
            return;
        };
        let mut k = 0;
        for i in 0..channels {
            out[k] = log[(i, i)] as f32;
            k += 1;
            for j in i + 1..channels {
                out[k] = (log[(i, j)] * std::f64::consts::SQRT_2) as f32;
                k += 1;
            }
        }
    }

    /// Checks a loaded state: fitted, the reference `channels × channels` (the pipeline's
    /// channels after preprocessing), every entry of it and of its square roots finite and
    /// sane (symmetric positive definiteness was checked when it was read). Returns the feature
    /// dimension. Field names are as in the model file.
    pub fn validate(&self, channels: usize) -> std::result::Result<usize, String> {
        use crate::decoder::lda::check_values;
        let Some(reference) = &self.reference else {
            return Err("reference is null: the tangent-space stage was never fitted".into());
        };
        let n = reference.mean.nrows();
        if n != channels {
            return Err(format!(
                "reference is {n} x {n}, but the model's fingerprint lists {channels} channel(s)"
            ));
        }
        check_values("reference", reference.mean.iter())?;
        // Derived from the reference; a huge but finite reference can still overflow here.
        check_values("reference (its square root)", reference.sqrt.iter())?;
        check_values(
            "reference (its inverse square root)",
            reference.invsqrt.iter(),
        )?;
        Ok(self.names.len())
    }
}

impl FeatureExtractor for TangentSpace {
    fn names(&self) -> &[String] {
        &self.names
    }

    /// Tangent vector of the window's covariance. An unfitted stage, a window with another
    /// channel count or a non-finite window yields NaN rather than a panic on the live path.
    fn extract(&mut self, window: &Window<'_>, out: &mut [f32]) {
        let n = self.names.len();
        let channels = self.reference.as_ref().map_or(0, |r| r.mean.nrows());
        if channels == 0 || window.channels != channels || window.samples == 0 {
            out.fill(f32::NAN);
            return;
        }
        debug_assert_eq!(out.len(), n);
        let reference = self.reference.as_ref().expect("checked above");
        let ws = &mut self.ws;
        let ok = ws
            .sliding
            .covariance(window, self.config.shrinkage, &mut ws.cov)
            .is_some()
            && ws.whiten_and_decompose(&reference.invsqrt);
        if !ok {
            out.fill(f32::NAN);
            return;
        }
        ws.eig.apply(f64::ln, |x| 1.0 / x, &mut ws.log);
        let mut k = 0;
        for i in 0..channels {
            out[k] = ws.log[(i, i)] as f32;
            k += 1;
            for j in i + 1..channels {
                out[k] = (ws.log[(i, j)] * std::f64::consts::SQRT_2) as f32;
                k += 1;
            }
        }
    }
}

impl TrainableExtractor for TangentSpace {
    /// Reference = Riemannian mean of the windows' covariances (labels ignored). Errors on no
    /// windows, inconsistent or non-finite windows, or singular covariances (rank-deficient
    /// data without shrinkage).
    fn fit(&mut self, windows: &[Window<'_>], _labels: &[usize]) -> Result<()> {
        let channels = check_windows("tangent space", windows, None)?;
        let mut ws = CovWorkspace::new();
        let covs: Vec<Mat> = windows
            .iter()
            .map(|w| {
                let mut c = Mat::zeros(channels, channels);
                ws.covariance(
                    w.data,
                    channels,
                    w.samples,
                    true,
                    self.config.shrinkage,
                    &mut c,
                );
                c
            })
            .collect();
        let mean =
            linalg::riemann_mean(&covs, RIEMANN_MEAN_TOL, RIEMANN_MEAN_MAX_ITER).map_err(|e| {
                Error::Other(format!(
                    "tangent space fit: {e}; with rank-deficient data (e.g. after a common \
                     average reference) use shrinkage = \"oas\""
                ))
            })?;
        self.set_reference(mean)
    }

    /// Move the reference by `rate` ∈ (0, 1] along the geodesic towards this window's
    /// covariance and rebuild the cached square roots. Ignored (reference unchanged) when
    /// unfitted, on a channel mismatch, a non-finite window or a rate outside (0, 1].
    fn adapt(&mut self, window: &Window<'_>, rate: f64) {
        let Some(channels) = self.reference.as_ref().map(|r| r.mean.nrows()) else {
            return;
        };
        if window.channels != channels || window.samples == 0 || !(rate > 0.0 && rate <= 1.0) {
            return;
        }
        if !self.window_cov(window) {
            return;
        }
        let Some(reference) = self.reference.as_mut() else {
            return;
        };
        let ws = &mut self.ws;
        if !ws.whiten_and_decompose(&reference.invsqrt) {
            return;
        }
        // C_ref ← C_ref^{1/2} W^rate C_ref^{1/2}, W = C_ref^{-1/2} C C_ref^{-1/2}.
        ws.eig.apply(
            |x| x.powf(rate),
            |x| rate * x.powf(rate - 1.0),
            &mut ws.step,
        );
        linalg::matmul_into(&reference.sqrt, &ws.step, &mut ws.tmp);
        linalg::matmul_into(&ws.tmp, &reference.sqrt, &mut ws.moved);
        linalg::symmetrize(&mut ws.moved);
        // Its square roots, warm from the previous reference's eigenvectors; the reference
        // changes only when the new one is finite and well conditioned.
        if !ws.ref_eig.decompose(&ws.moved) {
            return;
        }
        let (lo, hi) = ws.ref_eig.eigen_range();
        if !(hi.is_finite() && hi > 0.0 && lo > 1e-12 * hi) {
            return;
        }
        ws.ref_eig
            .apply(f64::sqrt, |x| 0.5 / x.sqrt(), &mut ws.sqrt);
        ws.ref_eig.apply(
            |x| 1.0 / x.sqrt(),
            |x| -0.5 / (x * x.sqrt()),
            &mut ws.invsqrt,
        );
        reference.mean.copy_from(&ws.moved);
        std::mem::swap(&mut reference.sqrt, &mut ws.sqrt);
        std::mem::swap(&mut reference.invsqrt, &mut ws.invsqrt);
    }
}
