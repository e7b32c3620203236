//! IIR filtering: Butterworth band-pass and mains notch as cascades of biquads (second-order
//! sections) designed with the `biquad` crate.
//!
//! A Butterworth filter of even order N factors into N/2 second-order sections sharing the
//! cut-off frequency, section k having quality factor `Q_k = 1 / (2 sin((2k + 1)π / 2N))`
//! (the pole angles of the analog prototype). `biquad`'s low-/high-pass sections are bilinear
//! transforms pre-warped at the cut-off, so the cascade is the digital Butterworth filter
//! (the same one `scipy.signal.butter` designs), with −3 dB exactly at the cut-off.
//!
//! Coefficients and states are `f64`: a 1 Hz high-pass at 160+ Hz has poles very close to the
//! unit circle, where `f32` coefficients and states lose precision visibly. Samples stay `f32`
//! on either side.

use biquad::{Biquad, Coefficients, DirectForm2Transposed, Hertz, Type};

use super::{config_error, BandpassConfig, NotchConfig, Stage};
use crate::error::Result;
use crate::stream::Chunk;

/// Quality factors of the N/2 sections of an even-order Butterworth filter.
pub fn butterworth_q(order: usize) -> Vec<f64> {
    (0..order / 2)
        .map(|k| {
            let angle = (2 * k + 1) as f64 * std::f64::consts::PI / (2 * order) as f64;
            1.0 / (2.0 * angle.sin())
        })
        .collect()
}

fn section(kind: Type<f64>, rate: f64, f0: f64, q: f64, key: &str) -> Result<Coefficients<f64>> {
    // Validation happens before this, so a failure here is a bug in the checks, but it is
    // still reported as a config error rather than a panic.
    let fs = Hertz::<f64>::from_hz(rate).map_err(|e| config_error(format!("{key}: {e:?}")))?;
    let f0 = Hertz::<f64>::from_hz(f0).map_err(|e| config_error(format!("{key}: {e:?}")))?;
    Coefficients::from_params(kind, fs, f0, q).map_err(|e| config_error(format!("{key}: {e:?}")))
}

fn nyquist_text(rate: f64) -> String {
    format!("{} Hz for a {rate} Hz stream", rate / 2.0)
}

/// Validate a band-pass config against `rate` and design its sections: N/2 high-pass sections
/// at `low`, then N/2 low-pass sections at `high`.
pub fn butterworth_bandpass(config: &BandpassConfig, rate: f64) -> Result<Vec<Coefficients<f64>>> {
    let nyquist = rate / 2.0;
    let BandpassConfig { low, high, order } = *config;
    if !(2..=8).contains(&order) || order % 2 != 0 {
        return Err(config_error(format!(
            "preprocess.bandpass.order = {order} is not allowed; allowed: even values 2, 4, 6 or 8"
        )));
    }
    if !(low.is_finite() && low > 0.0) {
        return Err(config_error(format!(
            "preprocess.bandpass.low = {low} must be a positive frequency in Hz; allowed: \
             0 < low < high < {nyquist}"
        )));
    }
    if !(high.is_finite() && high < nyquist) {
        return Err(config_error(format!(
            "preprocess.bandpass.high = {high} is at or above Nyquist ({}); allowed: \
             low < high < {nyquist}",
            nyquist_text(rate)
        )));
    }
    if low >= high {
        return Err(config_error(format!(
            "preprocess.bandpass.low = {low} is not below preprocess.bandpass.high = {high}; \
             allowed: 0 < low < high < {nyquist}"
        )));
    }
    let qs = butterworth_q(order);
    let mut sections = Vec::with_capacity(order);
    for &q in &qs {
        sections.push(section(
            Type::HighPass,
            rate,
            low,
            q,
            "preprocess.bandpass.low",
        )?);
    }
    for &q in &qs {
        sections.push(section(
            Type::LowPass,
            rate,
            high,
            q,
            "preprocess.bandpass.high",
        )?);
    }
    Ok(sections)
}

/// Validate a notch config against `rate` and design its sections: one notch at the mains
/// frequency and, if `harmonics`, one at each multiple strictly below Nyquist (same Q).
pub fn notch(config: &NotchConfig, rate: f64) -> Result<Vec<Coefficients<f64>>> {
    let nyquist = rate / 2.0;
    let f = config.frequency;
    if f != 50.0 && f != 60.0 {
        return Err(config_error(format!(
            "preprocess.notch.frequency = {f} is not a mains frequency; allowed: 50 or 60"
        )));
    }
    if f >= nyquist {
        return Err(config_error(format!(
            "preprocess.notch.frequency = {f} is at or above Nyquist ({}); allowed: a mains \
             frequency below {nyquist}, or no notch",
            nyquist_text(rate)
        )));
    }
    let q = config.quality;
    if !(q.is_finite() && q > 0.0) {
        return Err(config_error(format!(
            "preprocess.notch.quality = {q} is not allowed; allowed: a positive number \
             (default 30)"
        )));
    }
    let mut sections = vec![section(
        Type::Notch,
        rate,
        f,
        q,
        "preprocess.notch.frequency",
    )?];
    if config.harmonics {
        let mut h = 2.0 * f;
        while h < nyquist {
            sections.push(section(
                Type::Notch,
                rate,
                h,
                q,
                "preprocess.notch.harmonics",
            )?);
            h += f;
        }
    }
    Ok(sections)
}

/// A cascade of biquad sections applied to every channel, each channel with its own state.
#[derive(Debug, Clone)]
pub struct IirCascade {
    channels: usize,
    sections: usize,
    /// `filters[c * sections + k]`: section k of channel c.
    filters: Vec<DirectForm2Transposed<f64>>,
    /// One channel of the current chunk in `f64`, reused between channels and chunks.
    buffer: Vec<f64>,
}

impl IirCascade {
    pub fn new(channels: usize, sections: Vec<Coefficients<f64>>) -> Self {
        let filters = (0..channels)
            .flat_map(|_| {
                sections
                    .iter()
                    .map(|&c| DirectForm2Transposed::<f64>::new(c))
            })
            .collect();
        IirCascade {
            channels,
            sections: sections.len(),
            filters,
            buffer: Vec::new(),
        }
    }

    pub fn section_count(&self) -> usize {
        self.sections
    }
}

impl Stage for IirCascade {
    fn process(&mut self, chunk: &mut Chunk) {
        assert_eq!(
            chunk.channels(),
            self.channels,
            "filter channel count mismatch"
        );
        if self.sections == 0 {
            return;
        }
        let samples = chunk.samples();
        self.buffer.resize(samples, 0.0);
        for c in 0..self.channels {
            let data = chunk.channel_mut(c);
            for (b, &x) in self.buffer.iter_mut().zip(data.iter()) {
                *b = f64::from(x);
            }
            // Section-major: each section sweeps the whole channel with its state held in
            // registers (copied to a local so the compiler need not reload it per sample).
            for filter in &mut self.filters[c * self.sections..(c + 1) * self.sections] {
                let mut f = *filter;
                for v in self.buffer.iter_mut() {
                    *v = f.run(*v);
                }
                *filter = f;
            }
            for (x, &b) in data.iter_mut().zip(&self.buffer) {
                *x = b as f32;
            }
        }
    }

    fn reset(&mut self) {
        for f in &mut self.filters {
            f.reset_state();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn butterworth_q_values() {
        let q2 = butterworth_q(2);
        assert!((q2[0] - std::f64::consts::FRAC_1_SQRT_2).abs() < 1e-12);
        let q4 = butterworth_q(4);
        assert!((q4[0] - 1.306_562_964_876_376_6).abs() < 1e-12);
        assert!((q4[1] - 0.541_196_100_146_197).abs() < 1e-12);
    }

    #[test]
    fn rejects_odd_order() {
        let err = butterworth_bandpass(
            &BandpassConfig {
                low: 1.0,
                high: 40.0,
                order: 5,
            },
            160.0,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("preprocess.bandpass.order = 5"), "{err}");
    }

    #[test]
    fn harmonics_stop_below_nyquist() {
        let cfg = NotchConfig {
            frequency: 50.0,
            quality: 30.0,
            harmonics: true,
        };
        // 50, 100, 150, 200 < 250
        assert_eq!(notch(&cfg, 500.0).unwrap().len(), 4);
        assert_eq!(notch(&cfg, 250.0).unwrap().len(), 2);
    }
}
