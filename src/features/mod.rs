//! Features: cut the filtered stream into sliding windows ([`window::Windower`]) and turn each
//! window into a feature vector ([`FeatureExtractor`]).
//!
//! - [`window`]: ring buffer per channel; emits a window every `hop` samples once `length`
//!   samples have arrived, independent of how the input was chunked.
//! - [`band_power`]: Welch or windowed-FFT band power per channel per band, log power.
//! - [`csp`]: common spatial patterns, log-variance of the most discriminative components.
//! - [`tangent_space`]: Riemannian tangent-space vector of the window's covariance matrix.
//! - [`sliding`]: that covariance updated over the hop for overlapping windows.

pub mod band_power;
pub mod config;
pub mod csp;
pub mod extractor;
pub mod sliding;
pub mod tangent_space;
pub mod window;

pub use config::{FeaturesConfig, MAX_WINDOW_SECONDS};

use crate::error::Result;

/// One analysis window: `channels × samples`, channel-major, oldest sample first.
#[derive(Debug, Clone, Copy)]
pub struct Window<'a> {
    pub data: &'a [f32],
    pub channels: usize,
    pub samples: usize,
    /// Sampling rate of the samples, Hz.
    pub rate: f64,
    /// Timestamp of the window's last (newest) sample.
    pub end_timestamp: f64,
    /// Where the window sits in a sliding sequence, when it comes from a
    /// [`window::Windower`]: lets an extractor update per-window statistics over the hop
    /// instead of recomputing them (tangent space). `None` for stand-alone windows (epochs).
    pub slide: Option<Slide>,
}

/// Position of a window in one [`window::Windower`]'s sequence since its last reset: windows
/// with the same `run` and consecutive `index` are `hop` samples apart, so the newer one is
/// the older one minus its first `hop` samples plus `hop` new ones. `run` is unique for the
/// process's lifetime (every windower, clone and reset draws a new one), so equal `(run,
/// index)` means the same samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slide {
    pub run: u64,
    pub index: u64,
    pub hop: usize,
}

impl<'a> Window<'a> {
    pub fn channel(&self, c: usize) -> &'a [f32] {
        &self.data[c * self.samples..(c + 1) * self.samples]
    }
}

/// Turns a window into a fixed-length feature vector. `extract` runs once per window on the
/// hot path: it must not allocate once built.
pub trait FeatureExtractor: Send {
    /// One name per output value, e.g. `C3:mu`; its length is the feature dimension.
    fn names(&self) -> &[String];

    /// Write `names().len()` values into `out`.
    fn extract(&mut self, window: &Window<'_>, out: &mut [f32]);
}

/// An extractor fitted on calibration windows before use (CSP, tangent space).
pub trait TrainableExtractor: FeatureExtractor {
    /// Fit on calibration windows; `labels` has one class index per window (unsupervised
    /// extractors ignore it).
    fn fit(&mut self, windows: &[Window<'_>], labels: &[usize]) -> Result<()>;

    /// Unsupervised online adaptation to one unlabelled window (e.g. re-centring the tangent
    /// space reference). `rate` in (0, 1] is the weight of the new window. Default: none.
    fn adapt(&mut self, _window: &Window<'_>, _rate: f64) {}
}
