//! Covariance of sliding windows, updated over the hop: when a window is the previous one
//! moved by `hop` samples (same [`Slide::run`], next index), the raw second moment gains the new
//! samples' outer products and loses the leaving ones' — one rank-2·hop product, channels² ×
//! 2·hop multiply-adds instead of channels² × window (30× less at a 0.1 s hop and 3 s
//! windows). Any other window (the first, after a reset, an epoch, every
//! [`EXACT_EVERY`]-th) is computed exactly, which also bounds the rounding drift of adding
//! and subtracting.
//!
//! The moment is kept about a per-channel shift (the channel means at the last exact
//! computation), so a DC offset does not turn C = (M − s sᵀ / n) / n into a difference of
//! large numbers. The result is the same centred covariance, with the same OAS shrinkage, as
//! [`crate::linalg::CovWorkspace::covariance`] (within rounding: tests/spatial.rs compares them
//! on real EEG).

use super::{Slide, Window};
use crate::linalg::{oas_in_place, symmetrize, Mat, Shrinkage};

/// Windows updated over the hop between two exact computations (100 s at a 0.1 s hop).
pub const EXACT_EVERY: u64 = 1000;

/// How the last window's moment was obtained (for tests and benches).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Update {
    /// The same window as the previous call: nothing to do.
    Same,
    /// Updated over the hop.
    Slid,
    /// Computed from the whole window.
    Exact,
}

/// m[i, j] += Σ_t a[i, t] b[j, t] over row-major `a`, `b` with rows of `width`: dot products of
/// contiguous rows, without allocating (matrixmultiply allocates a packing buffer per call).
/// Only the lower triangle is computed and mirrored: both uses are symmetric (a b ᵀ with
/// b = ±a blockwise).
fn add_row_products(m: &mut Mat, a: &[f64], b: &[f64], width: usize) {
    let n = m.nrows();
    for j in 0..n {
        let bj = &b[j * width..(j + 1) * width];
        for i in j..n {
            let ai = &a[i * width..(i + 1) * width];
            let dot: f64 = ai.iter().zip(bj).map(|(x, y)| x * y).sum();
            m[(i, j)] += dot;
            if i != j {
                m[(j, i)] = m[(i, j)];
            }
        }
    }
}

/// See the module doc. Allocation-free once it has seen the largest window.
#[derive(Debug, Clone, Default)]
pub struct SlidingCovariance {
    channels: usize,
    samples: usize,
    /// x − shift of the current window, a ring per channel (`ring[c * samples + i]`); slot
    /// `pos` holds the oldest sample.
    ring: Vec<f64>,
    pos: usize,
    shift: Vec<f64>,
    /// Σ (x − shift) per channel over the window.
    sum: Vec<f64>,
    /// Σ (x − shift)(x − shift)ᵀ over the window.
    moment: Mat,
    /// [new | leaving] and [new | −leaving] samples, channels × 2·hop, row-major.
    left: Vec<f64>,
    right: Vec<f64>,
    last: Option<Slide>,
    since_exact: u64,
}

impl SlidingCovariance {
    pub fn new() -> Self {
        Self::default()
    }

    /// Forget the window: the next one is computed exactly.
    pub fn reset(&mut self) {
        self.last = None;
    }

    /// The centred covariance of `w` with `shrinkage` into `out` (n × n, n = channels), and
    /// how it was obtained. `None` (and the next window exact) when the window holds a
    /// non-finite value or is empty.
    pub fn covariance(
        &mut self,
        w: &Window<'_>,
        shrinkage: Shrinkage,
        out: &mut Mat,
    ) -> Option<Update> {
        if w.samples == 0 || w.channels == 0 || w.data.len() != w.channels * w.samples {
            self.last = None;
            return None;
        }
        let same_shape = self.channels == w.channels && self.samples == w.samples;
        let update = match (w.slide, self.last) {
            (Some(s), Some(l)) if same_shape && s == l => Update::Same,
            (Some(s), Some(l))
                if same_shape
                    && s.run == l.run
                    && s.index == l.index.wrapping_add(1)
                    && s.hop == l.hop
                    && s.hop < w.samples
                    && self.since_exact < EXACT_EVERY =>
            {
                Update::Slid
            }
            _ => Update::Exact,
        };
        let ok = match update {
            Update::Same => true,
            Update::Slid => self.slide(w, w.slide.map_or(0, |s| s.hop)),
            Update::Exact => self.exact(w),
        };
        if !ok {
            self.last = None;
            return None;
        }
        self.last = w.slide;
        self.write(shrinkage, out);
        Some(update)
    }

    fn exact(&mut self, w: &Window<'_>) -> bool {
        let (channels, samples) = (w.channels, w.samples);
        if !w.data.iter().all(|v| v.is_finite()) {
            return false;
        }
        if self.channels != channels || self.samples != samples {
            self.channels = channels;
            self.samples = samples;
            self.ring = vec![0.0; channels * samples];
            self.shift = vec![0.0; channels];
            self.sum = vec![0.0; channels];
            self.moment = Mat::zeros(channels, channels);
        }
        for c in 0..channels {
            let x = &w.data[c * samples..(c + 1) * samples];
            let mean = x.iter().map(|&v| f64::from(v)).sum::<f64>() / samples as f64;
            let ring = &mut self.ring[c * samples..(c + 1) * samples];
            for (r, &v) in ring.iter_mut().zip(x) {
                *r = f64::from(v) - mean;
            }
            self.shift[c] = mean;
            self.sum[c] = ring.iter().sum();
        }
        self.pos = 0;
        self.since_exact = 0;
        self.moment.fill(0.0);
        add_row_products(&mut self.moment, &self.ring, &self.ring, samples);
        true
    }

    /// Move the window by `hop` samples: the newest `hop` of `w` come in, the oldest `hop` of
    /// the ring leave.
    fn slide(&mut self, w: &Window<'_>, hop: usize) -> bool {
        let (channels, samples) = (self.channels, self.samples);
        let fresh = |c: usize| &w.data[c * samples + samples - hop..(c + 1) * samples];
        if !(0..channels).all(|c| fresh(c).iter().all(|v| v.is_finite())) {
            return false;
        }
        let width = 2 * hop;
        self.left.resize(channels * width, 0.0);
        self.right.resize(channels * width, 0.0);
        for c in 0..channels {
            let shift = self.shift[c];
            let ring = &mut self.ring[c * samples..(c + 1) * samples];
            let left = &mut self.left[c * width..(c + 1) * width];
            let right = &mut self.right[c * width..(c + 1) * width];
            let mut delta = 0.0;
            for (i, &v) in fresh(c).iter().enumerate() {
                let slot = (self.pos + i) % samples;
                let new = f64::from(v) - shift;
                let old = ring[slot];
                ring[slot] = new;
                left[i] = new;
                right[i] = new;
                left[hop + i] = old;
                right[hop + i] = -old;
                delta += new - old;
            }
            self.sum[c] += delta;
        }
        self.pos = (self.pos + hop) % samples;
        self.since_exact += 1;
        add_row_products(&mut self.moment, &self.left, &self.right, width);
        true
    }

    /// C = (M − s sᵀ / n) / n, symmetrized, shrunk.
    fn write(&self, shrinkage: Shrinkage, out: &mut Mat) {
        let (channels, n) = (self.channels, self.samples as f64);
        if out.shape() != (channels, channels) {
            *out = Mat::zeros(channels, channels);
        }
        for j in 0..channels {
            for i in 0..channels {
                out[(i, j)] = (self.moment[(i, j)] - self.sum[i] * self.sum[j] / n) / n;
            }
        }
        symmetrize(out);
        if shrinkage == Shrinkage::Oas {
            oas_in_place(out, self.samples);
        }
    }
}
