//! Band power per channel per frequency band, from a Welch PSD or a single Hann periodogram.
//!
//! The definition is scipy's, so the numbers can be checked against it
//! (`tests/fixtures/welch_reference.json`, made by `scripts/welch_reference.py`):
//!
//! ```text
//! f, psd = scipy.signal.welch(x, fs, window='hann', nperseg=round(segment_seconds * fs),
//!                             noverlap=round(overlap * nperseg), detrend='constant',
//!                             scaling='density', return_onesided=True, average='mean')
//! power  = sum(psd[(f >= low) & (f <= high)]) * fs / nperseg      # ln(power) if log
//! ```
//!
//! "periodogram" is the same with `nperseg` = the window length (one Hann-windowed segment;
//! note: *not* `scipy.signal.periodogram`'s default boxcar window).
//!
//! Per segment: subtract the segment mean (in `f64`), multiply by the periodic Hann window,
//! real FFT (`realfft`, `f32`: its relative error, ~1e-6, is far below what band powers need),
//! accumulate `|X_k|²` in `f64` for the bins any band uses. The density scaling, the one-sided
//! doubling (all bins but DC and, for even `nperseg`, Nyquist), the mean over segments and the
//! bin width are folded into one precomputed factor per bin. Everything is planned and
//! allocated in [`BandPowerConfig::build`]; [`FeatureExtractor::extract`] does not allocate.

use std::sync::Arc;

use realfft::num_complex::Complex;
use realfft::{RealFftPlanner, RealToComplex};
use serde::{Deserialize, Serialize};

use super::{FeatureExtractor, Window};
use crate::error::{Error, Result};
use crate::validate::Problems;

const ORIGIN: &str = "pipeline";

/// How the spectrum of a window is estimated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SpectralMethod {
    /// Mean of Hann-windowed periodograms of overlapping segments.
    #[default]
    Welch,
    /// One Hann-windowed periodogram of the whole window.
    Periodogram,
}

/// A named frequency band, `low ≤ f ≤ high` Hz (both edges inclusive, as bins are selected).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Band {
    pub name: String,
    pub low: f64,
    pub high: f64,
}

impl Band {
    pub fn new(name: impl Into<String>, low: f64, high: f64) -> Self {
        Band {
            name: name.into(),
            low,
            high,
        }
    }
}

/// The `[features.band_power]` table of a pipeline file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BandPowerConfig {
    pub method: SpectralMethod,
    /// Welch segment length, seconds (ignored by "periodogram"). Default 0.5.
    pub segment_seconds: f64,
    /// Welch segment overlap as a fraction of the segment, `0 ≤ overlap < 1`. Default 0.5.
    pub overlap: f64,
    /// Output the natural log of the band power (default true).
    pub log: bool,
    /// Default: mu 8–12 Hz, beta 13–30 Hz.
    pub bands: Vec<Band>,
}

impl Default for BandPowerConfig {
    fn default() -> Self {
        BandPowerConfig {
            method: SpectralMethod::Welch,
            segment_seconds: 0.5,
            overlap: 0.5,
            log: true,
            bands: vec![Band::new("mu", 8.0, 12.0), Band::new("beta", 13.0, 30.0)],
        }
    }
}

fn config_error(detail: String) -> Error {
    Error::config(ORIGIN, detail)
}

impl BandPowerConfig {
    /// The ranges that need no stream (and, with `rate`, the band edges against Nyquist)
    /// into `problems`, under `key` (`features.band_power`). Bin-level checks (a band at
    /// least one FFT bin wide) need the window in samples and happen in [`Self::build`].
    pub fn check(
        &self,
        key: &str,
        window_seconds: f64,
        rate: Option<f64>,
        problems: &mut Problems,
    ) {
        if self.method == SpectralMethod::Welch {
            problems.require(
                self.segment_seconds.is_finite()
                    && self.segment_seconds > 0.0
                    && self.segment_seconds <= window_seconds,
                format!("{key}.segment_seconds"),
                self.segment_seconds,
                format!("0 < segment_seconds <= features.window_seconds ({window_seconds})"),
            );
            problems.require(
                self.overlap.is_finite() && (0.0..1.0).contains(&self.overlap),
                format!("{key}.overlap"),
                self.overlap,
                "0 <= overlap < 1",
            );
        }
        problems.require(
            !self.bands.is_empty(),
            format!("{key}.bands"),
            "[]",
            "at least one band",
        );
        let nyquist = rate.map(|r| r / 2.0);
        let below = match nyquist {
            Some(n) => format!("0 < low < high < {n} (Nyquist)"),
            None => "0 < low < high (and high below Nyquist)".to_owned(),
        };
        for (i, band) in self.bands.iter().enumerate() {
            let key = format!("{key}.bands[{i}]");
            problems.require(
                !band.name.trim().is_empty()
                    && !self.bands[..i].iter().any(|b| b.name == band.name),
                format!("{key}.name"),
                format!("{:?}", band.name),
                "a non-empty name, unique among the bands",
            );
            problems.require(
                band.low.is_finite() && band.low > 0.0,
                format!("{key}.low"),
                band.low,
                below.clone(),
            );
            problems.require(
                band.high.is_finite() && band.high > band.low,
                format!("{key}.high"),
                band.high,
                format!("above {key}.low ({}); {below}", band.low),
            );
            if let (Some(n), Some(r)) = (nyquist, rate) {
                problems.require(
                    !band.high.is_finite() || band.high < n,
                    format!("{key}.high"),
                    band.high,
                    format!("below Nyquist, {n} Hz for a {r} Hz stream"),
                );
            }
        }
    }

    /// Validate against the stream and window and plan the FFT. `window_samples` is the
    /// length of the windows [`FeatureExtractor::extract`] will get.
    pub fn build(
        &self,
        channel_labels: &[String],
        rate: f64,
        window_samples: usize,
    ) -> Result<BandPower> {
        const KEY: &str = "features.band_power";
        if !(rate.is_finite() && rate > 0.0) {
            return Err(config_error(format!(
                "{KEY}: needs a regular stream, the sampling rate is {rate}"
            )));
        }
        if window_samples < 2 {
            return Err(config_error(format!(
                "{KEY}: the window is {window_samples} samples; allowed: at least 2"
            )));
        }
        let nyquist = rate / 2.0;
        let window_seconds = window_samples as f64 / rate;

        let (nperseg, noverlap) = match self.method {
            SpectralMethod::Periodogram => (window_samples, 0),
            SpectralMethod::Welch => {
                let seg = self.segment_seconds;
                if !(seg.is_finite() && seg > 0.0) {
                    return Err(config_error(format!(
                        "{KEY}.segment_seconds = {seg} is not allowed; allowed: \
                         0 < segment_seconds <= {window_seconds} (the window length)"
                    )));
                }
                let nperseg = (seg * rate).round() as usize;
                if nperseg > window_samples {
                    return Err(config_error(format!(
                        "{KEY}.segment_seconds = {seg} gives {nperseg}-sample segments, longer \
                         than the {window_samples}-sample window; allowed: \
                         0 < segment_seconds <= {window_seconds}"
                    )));
                }
                if nperseg < 2 {
                    return Err(config_error(format!(
                        "{KEY}.segment_seconds = {seg} gives {nperseg}-sample segments at \
                         {rate} Hz; allowed: at least 2 samples ({} s)",
                        2.0 / rate
                    )));
                }
                let overlap = self.overlap;
                if !(overlap.is_finite() && (0.0..1.0).contains(&overlap)) {
                    return Err(config_error(format!(
                        "{KEY}.overlap = {overlap} is not allowed; allowed: 0 <= overlap < 1"
                    )));
                }
                let noverlap = (overlap * nperseg as f64).round() as usize;
                if noverlap >= nperseg {
                    return Err(config_error(format!(
                        "{KEY}.overlap = {overlap} rounds to {noverlap} of {nperseg} samples, \
                         a segment step of 0; allowed: a smaller overlap"
                    )));
                }
                (nperseg, noverlap)
            }
        };
        let step = nperseg - noverlap;
        // scipy: as many full segments as fit, starting at 0, step apart.
        let segments = (window_samples - noverlap) / step;
        let bins = nperseg / 2 + 1;
        let df = rate / nperseg as f64;

        if self.bands.is_empty() {
            return Err(config_error(format!(
                "{KEY}.bands is empty; allowed: at least one band"
            )));
        }
        let mut ranges = Vec::with_capacity(self.bands.len());
        for (i, band) in self.bands.iter().enumerate() {
            let key = format!("{KEY}.bands[{i}]");
            let Band { name, low, high } = band;
            if name.trim().is_empty() {
                return Err(config_error(format!(
                    "{key}.name = \"{name}\" is empty; allowed: a non-empty, unique name"
                )));
            }
            if let Some(j) = self.bands[..i].iter().position(|b| &b.name == name) {
                return Err(config_error(format!(
                    "{key}.name = \"{name}\" repeats {KEY}.bands[{j}].name; allowed: unique names"
                )));
            }
            if !(low.is_finite() && *low > 0.0) {
                return Err(config_error(format!(
                    "{key}.low = {low} is not allowed; allowed: 0 < low < high < {nyquist}"
                )));
            }
            if !(high.is_finite() && *high < nyquist) {
                return Err(config_error(format!(
                    "{key}.high = {high} is at or above Nyquist ({nyquist} Hz for a {rate} Hz \
                     stream); allowed: low < high < {nyquist}"
                )));
            }
            if low >= high {
                return Err(config_error(format!(
                    "{key}.low = {low} is not below {key}.high = {high}; allowed: \
                     0 < low < high < {nyquist}"
                )));
            }
            // Bin k is at k·df. A relative tolerance of 1e-9 bins keeps an edge that lands on
            // a bin (12 Hz at 2 Hz spacing) inside despite rounding in `low`/`high`.
            let eps = 1e-9;
            let first = ((low / df) - eps).ceil().max(0.0) as usize;
            let last = (((high / df) + eps).floor() as usize).min(bins - 1);
            if first > last {
                return Err(config_error(format!(
                    "{key} (\"{name}\", {low}–{high} Hz) contains no FFT bin: bins are {df} Hz \
                     apart ({nperseg}-sample segments at {rate} Hz); allowed: a band at least \
                     one bin wide: widen it or lengthen {KEY}.segment_seconds"
                )));
            }
            ranges.push((first, last + 1));
        }

        // Periodic Hann (scipy's get_window('hann', n), fftbins=True).
        let taper: Vec<f64> = (0..nperseg)
            .map(|n| 0.5 - 0.5 * (2.0 * std::f64::consts::PI * n as f64 / nperseg as f64).cos())
            .collect();
        let sum_sq: f64 = taper.iter().map(|w| w * w).sum();
        // PSD_k = onesided_k · |X_k|² / (fs · Σw²), averaged over segments; band power adds
        // PSD_k · df. `psd_scale` is PSD per unit |X|²-sum-over-segments.
        let psd_scale: Vec<f64> = (0..bins)
            .map(|k| {
                let onesided = if k == 0 || (nperseg % 2 == 0 && k == nperseg / 2) {
                    1.0
                } else {
                    2.0
                };
                onesided / (rate * sum_sq * segments as f64)
            })
            .collect();
        let used_lo = ranges.iter().map(|r| r.0).min().unwrap_or(0);
        let used_hi = ranges.iter().map(|r| r.1).max().unwrap_or(0);

        let mut names = Vec::with_capacity(channel_labels.len() * self.bands.len());
        for label in channel_labels {
            for band in &self.bands {
                names.push(format!("{label}:{}", band.name));
            }
        }

        let fft = RealFftPlanner::<f32>::new().plan_fft_forward(nperseg);
        let input = fft.make_input_vec();
        let spectrum = fft.make_output_vec();
        let scratch = fft.make_scratch_vec();
        Ok(BandPower {
            names,
            channels: channel_labels.len(),
            window_samples,
            rate,
            nperseg,
            step,
            segments,
            log: self.log,
            taper,
            psd_scale,
            bands: ranges,
            used: (used_lo, used_hi),
            df,
            fft,
            input,
            spectrum,
            scratch,
            power: vec![0.0; bins],
        })
    }
}

/// Band-power feature extractor; build it with [`BandPowerConfig::build`].
pub struct BandPower {
    names: Vec<String>,
    channels: usize,
    window_samples: usize,
    rate: f64,
    nperseg: usize,
    step: usize,
    segments: usize,
    log: bool,
    taper: Vec<f64>,
    psd_scale: Vec<f64>,
    /// Per band, the half-open bin range `first..end`.
    bands: Vec<(usize, usize)>,
    /// Half-open range of bins used by any band: the only ones accumulated in `extract`.
    used: (usize, usize),
    df: f64,
    fft: Arc<dyn RealToComplex<f32>>,
    input: Vec<f32>,
    spectrum: Vec<Complex<f32>>,
    scratch: Vec<Complex<f32>>,
    /// Σ over segments of |X_k|².
    power: Vec<f64>,
}

impl std::fmt::Debug for BandPower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BandPower")
            .field("channels", &self.channels)
            .field("window_samples", &self.window_samples)
            .field("nperseg", &self.nperseg)
            .field("step", &self.step)
            .field("segments", &self.segments)
            .field("bands", &self.bands)
            .finish_non_exhaustive()
    }
}

impl BandPower {
    /// Sampling rate the extractor was built for, Hz.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// Samples per FFT segment (`nperseg`).
    pub fn segment_samples(&self) -> usize {
        self.nperseg
    }

    /// Segments averaged per window.
    pub fn segments(&self) -> usize {
        self.segments
    }

    /// Number of PSD bins (`nperseg / 2 + 1`).
    pub fn bins(&self) -> usize {
        self.psd_scale.len()
    }

    /// Frequency of PSD bin `k`, Hz.
    pub fn bin_frequency(&self, k: usize) -> f64 {
        k as f64 * self.df
    }

    /// Welch (or periodogram) PSD of one channel's window, density scaling (units²/Hz), bins
    /// `0..bins()`: the `psd` scipy's `welch` returns. `samples` must be the window length;
    /// `out` must hold `bins()` values. Does not allocate.
    pub fn psd(&mut self, samples: &[f32], out: &mut [f64]) {
        assert_eq!(out.len(), self.bins(), "psd output length");
        self.accumulate(samples, 0, self.bins());
        for ((o, &p), &s) in out.iter_mut().zip(&self.power).zip(&self.psd_scale) {
            *o = p * s;
        }
    }

    /// Linear (not log) band powers of one channel's window, one per band, into `out`.
    pub fn band_powers(&mut self, samples: &[f32], out: &mut [f64]) {
        assert_eq!(out.len(), self.bands.len(), "band power output length");
        self.accumulate(samples, self.used.0, self.used.1);
        for (o, &(first, end)) in out.iter_mut().zip(&self.bands) {
            *o = self.band_sum(first, end);
        }
    }

    fn band_sum(&self, first: usize, end: usize) -> f64 {
        let psd: f64 = self.power[first..end]
            .iter()
            .zip(&self.psd_scale[first..end])
            .map(|(p, s)| p * s)
            .sum();
        psd * self.df
    }

    /// `power[k] = Σ_segments |X_k|²` for `k` in `lo..hi`.
    fn accumulate(&mut self, samples: &[f32], lo: usize, hi: usize) {
        assert_eq!(
            samples.len(),
            self.window_samples,
            "band power built for {}-sample windows got {}",
            self.window_samples,
            samples.len()
        );
        self.power[lo..hi].iter_mut().for_each(|p| *p = 0.0);
        let n = self.nperseg;
        for seg in 0..self.segments {
            let x = &samples[seg * self.step..seg * self.step + n];
            // detrend='constant': remove the segment mean before tapering.
            let mean = x.iter().map(|&v| f64::from(v)).sum::<f64>() / n as f64;
            for ((dst, &v), &w) in self.input.iter_mut().zip(x).zip(&self.taper) {
                *dst = ((f64::from(v) - mean) * w) as f32;
            }
            self.fft
                .process_with_scratch(&mut self.input, &mut self.spectrum, &mut self.scratch)
                .expect("FFT buffers are planned for this length");
            for (p, z) in self.power[lo..hi].iter_mut().zip(&self.spectrum[lo..hi]) {
                *p += f64::from(z.re) * f64::from(z.re) + f64::from(z.im) * f64::from(z.im);
            }
        }
    }
}

impl FeatureExtractor for BandPower {
    fn names(&self) -> &[String] {
        &self.names
    }

    fn extract(&mut self, window: &Window<'_>, out: &mut [f32]) {
        assert_eq!(window.channels, self.channels, "band power channel count");
        assert_eq!(out.len(), self.names.len(), "band power output length");
        let bands = self.bands.len();
        for c in 0..self.channels {
            self.accumulate(window.channel(c), self.used.0, self.used.1);
            for (b, &(first, end)) in self.bands.iter().enumerate() {
                let p = self.band_sum(first, end);
                // A flat channel has zero power; floor it so the log stays finite.
                let v = if self.log {
                    p.max(f64::MIN_POSITIVE).ln()
                } else {
                    p
                };
                out[c * bands + b] = v as f32;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("ch{i}")).collect()
    }

    #[test]
    fn segment_count_matches_scipy() {
        let bp = BandPowerConfig::default()
            .build(&labels(1), 160.0, 160)
            .unwrap();
        assert_eq!(
            (bp.segment_samples(), bp.segments(), bp.bins()),
            (80, 3, 41)
        );
        assert_eq!(bp.names(), &["ch0:mu".to_string(), "ch0:beta".to_string()]);
    }

    #[test]
    fn constant_has_no_band_power() {
        // detrend='constant' removes it entirely.
        let mut bp = BandPowerConfig {
            log: false,
            ..BandPowerConfig::default()
        }
        .build(&labels(1), 160.0, 160)
        .unwrap();
        let x = vec![3.0f32; 160];
        let mut out = [0.0f32; 2];
        bp.extract(
            &Window {
                data: &x,
                channels: 1,
                samples: 160,
                rate: 160.0,
                end_timestamp: 0.0,
                slide: None,
            },
            &mut out,
        );
        assert!(out.iter().all(|&v| v.abs() < 1e-9), "{out:?}");
    }

    #[test]
    fn band_without_bin_is_rejected() {
        let cfg = BandPowerConfig {
            bands: vec![Band::new("mu", 8.0, 12.0), Band::new("narrow", 10.2, 11.5)],
            ..BandPowerConfig::default()
        };
        let err = cfg.build(&labels(1), 160.0, 160).unwrap_err().to_string();
        assert!(err.contains("features.band_power.bands[1]"), "{err}");
        assert!(err.contains("no FFT bin"), "{err}");
    }
}
