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

use biquad::{Coefficients, Hertz, Type};

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

/// Channels filtered together: one lane each, so the per-sample recursion of one section runs
/// on `LANES` independent channels at once (SIMD, and no waiting on one long dependency chain).
const LANES: usize = 8;

/// Coefficients of one section, in the form the inner loop reads them.
#[derive(Debug, Clone, Copy)]
struct Section {
    b0: f64,
    b1: f64,
    b2: f64,
    a1: f64,
    a2: f64,
}

/// State of one section for one group of `LANES` channels (direct form II transposed).
#[derive(Debug, Clone, Copy, Default)]
struct LaneState {
    s1: [f64; LANES],
    s2: [f64; LANES],
}

/// A cascade of biquad sections applied to every channel, each channel with its own state.
///
/// The recursion is `biquad`'s `DirectForm2Transposed::run`, written out with the same
/// operations in the same order (so the output is bit-for-bit what running one
/// `DirectForm2Transposed<f64>` per channel and section gives), but laid out for speed:
/// channels are taken `LANES` at a time, the chunk is transposed into a sample-major `f64`
/// buffer (`buffer[n * LANES + lane]`), and each section sweeps that buffer updating all
/// lanes per sample. Lanes past the last channel are computed on zeros and discarded.
#[derive(Debug, Clone)]
pub struct IirCascade {
    channels: usize,
    sections: Vec<Section>,
    /// `states[g * sections + k]`: section k of channel group g (channels `g * LANES..`).
    states: Vec<LaneState>,
    /// One channel group of the current chunk, sample-major, reused between groups and chunks.
    buffer: Vec<[f64; LANES]>,
}

impl IirCascade {
    pub fn new(channels: usize, sections: Vec<Coefficients<f64>>) -> Self {
        let groups = channels.div_ceil(LANES);
        let sections: Vec<Section> = sections
            .iter()
            .map(|c| Section {
                b0: c.b0,
                b1: c.b1,
                b2: c.b2,
                a1: c.a1,
                a2: c.a2,
            })
            .collect();
        IirCascade {
            channels,
            states: vec![LaneState::default(); groups * sections.len()],
            sections,
            buffer: Vec::new(),
        }
    }

    pub fn section_count(&self) -> usize {
        self.sections.len()
    }
}

/// Run one section over `buffer` in place, all lanes per sample; `state` in, updated state out.
#[inline]
fn run_section(c: &Section, state: &mut LaneState, buffer: &mut [[f64; LANES]]) {
    let LaneState { mut s1, mut s2 } = *state;
    for v in buffer.iter_mut() {
        for l in 0..LANES {
            let x = v[l];
            // Same expression order as `DirectForm2Transposed::run`.
            let out = s1[l] + c.b0 * x;
            s1[l] = s2[l] + c.b1 * x - c.a1 * out;
            s2[l] = c.b2 * x - c.a2 * out;
            v[l] = out;
        }
    }
    *state = LaneState { s1, s2 };
}

impl Stage for IirCascade {
    fn process(&mut self, chunk: &mut Chunk) {
        assert_eq!(
            chunk.channels(),
            self.channels,
            "filter channel count mismatch"
        );
        let sections = self.sections.len();
        if sections == 0 {
            return;
        }
        let samples = chunk.samples();
        self.buffer.resize(samples, [0.0; LANES]);
        for (g, states) in self.states.chunks_exact_mut(sections).enumerate() {
            let first = g * LANES;
            let lanes = LANES.min(self.channels - first);
            for l in 0..LANES {
                if l < lanes {
                    for (b, &x) in self.buffer.iter_mut().zip(chunk.channel(first + l)) {
                        b[l] = f64::from(x);
                    }
                } else {
                    self.buffer.iter_mut().for_each(|b| b[l] = 0.0);
                }
            }
            for (c, state) in self.sections.iter().zip(states.iter_mut()) {
                run_section(c, state, &mut self.buffer);
            }
            for l in 0..lanes {
                for (x, b) in chunk.channel_mut(first + l).iter_mut().zip(&self.buffer) {
                    *x = b[l] as f32;
                }
            }
        }
    }

    fn reset(&mut self) {
        self.states.fill(LaneState::default());
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
    fn lanes_match_biquad_direct_form_2_transposed_exactly() {
        use biquad::{Biquad, DirectForm2Transposed};
        let mut sections = butterworth_bandpass(
            &BandpassConfig {
                low: 1.0,
                high: 40.0,
                order: 4,
            },
            160.0,
        )
        .unwrap();
        sections.extend(
            notch(
                &NotchConfig {
                    frequency: 60.0,
                    quality: 30.0,
                    harmonics: false,
                },
                160.0,
            )
            .unwrap(),
        );
        // 11 channels: one full lane group and a partial one.
        let channels = 11;
        let samples = 50;
        let input: Vec<f32> = (0..channels * samples)
            .map(|i| ((i * 7919) % 1000) as f32 - 500.0)
            .collect();
        let mut cascade = IirCascade::new(channels, sections.clone());
        let mut got = Vec::new();
        for (start, len) in [(0, 7), (7, 16), (23, 27)] {
            let data = (0..channels)
                .flat_map(|c| input[c * samples + start..c * samples + start + len].to_vec())
                .collect();
            let mut chunk = Chunk::from_channel_major(channels, data, vec![0.0; len]);
            cascade.process(&mut chunk);
            got.push(chunk);
        }
        for c in 0..channels {
            let mut reference: Vec<DirectForm2Transposed<f64>> = sections
                .iter()
                .map(|&s| DirectForm2Transposed::<f64>::new(s))
                .collect();
            let want: Vec<f32> = input[c * samples..(c + 1) * samples]
                .iter()
                .map(|&x| {
                    let y = reference
                        .iter_mut()
                        .fold(f64::from(x), |v, section| section.run(v));
                    y as f32
                })
                .collect();
            let got: Vec<f32> = got
                .iter()
                .flat_map(|chunk| chunk.channel(c).to_vec())
                .collect();
            assert_eq!(got, want, "channel {c}");
        }
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
