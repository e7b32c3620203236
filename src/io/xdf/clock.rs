//! Clock synchronisation and dejittering of XDF time stamps: pure numerics, no I/O.
//!
//! Each XDF stream carries its sample time stamps on the *sender's* clock plus a series of
//! clock-offset measurements `(collection_time, offset)`, where `collection_time` is also on
//! the sender's clock and `sender_time + offset` is the recorder's time. Synchronising means
//! modelling `offset` as a function of sender time and adding it to every time stamp.
//!
//! The model follows pyxdf's default (`synchronize_clocks=True, handle_clock_resets=True`),
//! re-derived from its description rather than its code:
//!
//! 1. **Clock segments.** A clock reset (the sender rebooted, or its clock was set) shows as a
//!    glitch in *both* the measurement times and the offset values. Between successive
//!    measurements we look at the interval `Δt` and the absolute change `|Δo|`, each against
//!    its median and its median absolute deviation (MAD). A step is a *time glitch* if
//!    `Δt < 0`, or if `Δt` exceeds the median by more than `reset_threshold_stds` MADs *and*
//!    by more than `reset_threshold_seconds`; it is an *offset glitch* if `|Δo|` exceeds its
//!    median by more than `reset_threshold_offset_stds` MADs *and* by more than
//!    `reset_threshold_offset_seconds`. Both at once is a reset, and the measurements are cut
//!    into segments there. Requiring both keeps a single late measurement or one noisy
//!    offset from splitting a healthy recording.
//! 2. **Per-segment fit.** Within a segment, `offset = a + b·t` is fitted with a Huber loss
//!    whose knee is `winsor_threshold` seconds (0.1 ms): residuals below it count
//!    quadratically, larger ones linearly, so the odd measurement delayed by a busy network
//!    does not drag the line. pyxdf minimises the same loss with 1000 ADMM iterations; we use
//!    iteratively reweighted least squares run to convergence, so results can differ from
//!    pyxdf's by far less than a sample period. Times are centred before fitting because they
//!    can be ~10⁶ s while the slope is ~10⁻⁶. A one-measurement segment gives a constant.
//! 3. **Samples to segments.** Samples are walked in file order and given to the segment
//!    whose measurement time span is nearest to their time stamp (distance 0 inside the span),
//!    moving only forward through the segments: a reset is an event in time, so once samples
//!    belong to the clock after a reset, later ones cannot belong to the clock before it. Ties
//!    stay with the current segment. Samples before the first measurement or after the last
//!    use the nearest segment's line (extrapolation), as pyxdf does.
//!
//! Dejittering (optional, off by default in [`super::parse`]) replaces the time stamps of a
//! regularly sampled stream by a straight line fitted (ordinary least squares on the sample
//! index) within each run of samples without a gap, as pyxdf's `dejitter_timestamps` does.

use super::ParseOptions;

/// `offset(t) = offset_at_centre + slope · (t − centre)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct OffsetLine {
    centre: f64,
    offset_at_centre: f64,
    slope: f64,
}

impl OffsetLine {
    fn constant(offset: f64) -> Self {
        OffsetLine {
            centre: 0.0,
            offset_at_centre: offset,
            slope: 0.0,
        }
    }

    pub(super) fn at(&self, t: f64) -> f64 {
        self.offset_at_centre + self.slope * (t - self.centre)
    }
}

/// Median of a non-empty slice (mean of the two middle values for even lengths, like numpy).
fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        0.5 * (sorted[n / 2 - 1] + sorted[n / 2])
    }
}

/// Which steps `i → i+1` of a series are glitches: far above the median step both in MADs
/// and in absolute terms. `(median, mad)` uses `f64::EPSILON` as a floor on the MAD so a
/// perfectly regular series does not divide by zero (as pyxdf does).
fn glitches(steps: &[f64], threshold_mads: f64, threshold_abs: f64) -> Vec<bool> {
    let med = median(steps);
    let deviations: Vec<f64> = steps.iter().map(|s| (s - med).abs()).collect();
    let mad = median(&deviations) + f64::EPSILON;
    steps
        .iter()
        .map(|&s| (s - med) / mad > threshold_mads && s - med > threshold_abs)
        .collect()
}

/// Inclusive index ranges of the clock-offset measurements between clock resets.
pub(super) fn clock_segments(
    times: &[f64],
    values: &[f64],
    opts: &ParseOptions,
) -> Vec<(usize, usize)> {
    let n = times.len();
    if n < 2 || !opts.handle_clock_resets {
        return vec![(0, n.saturating_sub(1))];
    }
    let time_steps: Vec<f64> = times.windows(2).map(|w| w[1] - w[0]).collect();
    let value_steps: Vec<f64> = values.windows(2).map(|w| (w[1] - w[0]).abs()).collect();
    let time_glitch = glitches(
        &time_steps,
        opts.reset_threshold_stds,
        opts.reset_threshold_seconds,
    );
    let value_glitch = glitches(
        &value_steps,
        opts.reset_threshold_offset_stds,
        opts.reset_threshold_offset_seconds,
    );
    let mut segments = Vec::new();
    let mut start = 0;
    for i in 0..n - 1 {
        let time_reset = time_steps[i] < 0.0 || time_glitch[i];
        if time_reset && value_glitch[i] {
            segments.push((start, i));
            start = i + 1;
        }
    }
    segments.push((start, n - 1));
    segments
}

/// Huber-loss line fit of `y` against `x` (see the module doc), by iteratively reweighted
/// least squares.
pub(super) fn robust_line(x: &[f64], y: &[f64], knee: f64) -> OffsetLine {
    debug_assert_eq!(x.len(), y.len());
    if x.len() == 1 {
        return OffsetLine::constant(y[0]);
    }
    let centre = x.iter().sum::<f64>() / x.len() as f64;
    let u: Vec<f64> = x.iter().map(|&t| t - centre).collect();
    let mut weights = vec![1.0; x.len()];
    let (mut a, mut b) = (f64::NAN, f64::NAN);
    for _ in 0..200 {
        let (mut sw, mut swu, mut swuu, mut swy, mut swuy) = (0.0, 0.0, 0.0, 0.0, 0.0);
        for ((&w, &ui), &yi) in weights.iter().zip(&u).zip(y) {
            sw += w;
            swu += w * ui;
            swuu += w * ui * ui;
            swy += w * yi;
            swuy += w * ui * yi;
        }
        let det = sw * swuu - swu * swu;
        // All measurements at (numerically) one instant: no slope is identifiable.
        let (new_a, new_b) = if det <= f64::EPSILON * sw * swuu.max(f64::MIN_POSITIVE) {
            (swy / sw, 0.0)
        } else {
            (
                (swuu * swy - swu * swuy) / det,
                (sw * swuy - swu * swy) / det,
            )
        };
        let converged = (new_a - a).abs() <= 1e-12 * (1.0 + new_a.abs())
            && (new_b - b).abs() <= 1e-15 * (1.0 + new_b.abs());
        a = new_a;
        b = new_b;
        if converged {
            break;
        }
        for ((w, &ui), &yi) in weights.iter_mut().zip(&u).zip(y) {
            let r = (yi - a - b * ui).abs();
            *w = if r <= knee { 1.0 } else { knee / r };
        }
    }
    OffsetLine {
        centre,
        offset_at_centre: a,
        slope: b,
    }
}

fn distance_to_span(t: f64, (lo, hi): (f64, f64)) -> f64 {
    if t < lo {
        lo - t
    } else if t > hi {
        t - hi
    } else {
        0.0
    }
}

/// Add the modelled clock offset to every time stamp (in place). `times` and `values` are
/// the stream's clock-offset measurements in file order, non-finite ones already dropped.
pub(super) fn synchronize(
    timestamps: &mut [f64],
    times: &[f64],
    values: &[f64],
    opts: &ParseOptions,
) {
    if times.is_empty() || timestamps.is_empty() {
        return;
    }
    let segments = clock_segments(times, values, opts);
    let lines: Vec<OffsetLine> = segments
        .iter()
        .map(|&(s, e)| robust_line(&times[s..=e], &values[s..=e], opts.winsor_threshold))
        .collect();
    if lines.len() == 1 {
        for t in timestamps.iter_mut() {
            *t += lines[0].at(*t);
        }
        return;
    }
    // Measurement times within a segment may be out of order only at its edges (a reset is
    // where order breaks), so take min/max rather than first/last.
    let spans: Vec<(f64, f64)> = segments
        .iter()
        .map(|&(s, e)| {
            let span = &times[s..=e];
            let lo = span.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = span.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            (lo, hi)
        })
        .collect();
    let mut current = 0;
    for t in timestamps.iter_mut() {
        let mut best = current;
        let mut best_distance = distance_to_span(*t, spans[current]);
        for (k, &span) in spans.iter().enumerate().skip(current + 1) {
            let d = distance_to_span(*t, span);
            if d < best_distance {
                best = k;
                best_distance = d;
            }
        }
        current = best;
        *t += lines[current].at(*t);
    }
}

/// Replace the time stamps of a regular stream (`rate > 0`) by a least-squares line over the
/// sample index within each run without a gap. A gap is a step larger (in magnitude) than
/// both `jitter_break_threshold_seconds` and `jitter_break_threshold_samples` periods;
/// backwards steps count too, so a clock reset that synchronisation could not repair is not
/// smeared over.
pub(super) fn dejitter(timestamps: &mut [f64], rate: f64, opts: &ParseOptions) {
    if rate <= 0.0 || timestamps.len() < 2 {
        return;
    }
    let threshold = opts
        .jitter_break_threshold_seconds
        .max(opts.jitter_break_threshold_samples / rate);
    let mut start = 0;
    for i in 1..=timestamps.len() {
        let is_break =
            i == timestamps.len() || (timestamps[i] - timestamps[i - 1]).abs() > threshold;
        if is_break {
            fit_run(&mut timestamps[start..i]);
            start = i;
        }
    }
}

fn fit_run(run: &mut [f64]) {
    let n = run.len();
    if n < 2 {
        return;
    }
    let mean_i = (n - 1) as f64 / 2.0;
    let mean_t = run.iter().sum::<f64>() / n as f64;
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for (i, &t) in run.iter().enumerate() {
        let di = i as f64 - mean_i;
        sxy += di * (t - mean_t);
        sxx += di * di;
    }
    let slope = sxy / sxx;
    for (i, t) in run.iter_mut().enumerate() {
        *t = mean_t + slope * (i as f64 - mean_i);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> ParseOptions {
        ParseOptions::default()
    }

    #[test]
    fn median_matches_numpy_convention() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    }

    #[test]
    fn robust_line_recovers_drift_and_ignores_an_outlier() {
        let times: Vec<f64> = (0..50).map(|i| 600_000.0 + 5.0 * i as f64).collect();
        let mut values: Vec<f64> = times
            .iter()
            .map(|t| -0.25 + 2e-6 * (t - 600_000.0))
            .collect();
        values[20] += 0.05; // one measurement delayed by 50 ms
        let line = robust_line(&times, &values, opts().winsor_threshold);
        // Huber still gives the outlier a pull of `knee / n` ≈ 2 µs; least squares would be
        // off by 1 ms here.
        for (i, (&t, &v)) in times.iter().zip(&values).enumerate() {
            if i != 20 {
                assert!(
                    (line.at(t) - v).abs() < 1e-5,
                    "at {t}: {} vs {v}",
                    line.at(t)
                );
            }
        }
    }

    #[test]
    fn single_measurement_is_a_constant() {
        let line = robust_line(&[10.0], &[-0.5], 1e-4);
        assert_eq!(line.at(0.0), -0.5);
        assert_eq!(line.at(1e6), -0.5);
    }

    #[test]
    fn reset_splits_segments_and_regular_series_does_not() {
        let mut times: Vec<f64> = (0..20).map(|i| 650_000.0 + 5.0 * i as f64).collect();
        let mut values = vec![-649_000.0; 20];
        assert_eq!(clock_segments(&times, &values, &opts()), vec![(0, 19)]);
        times.extend((0..20).map(|i| 250.0 + 5.0 * i as f64));
        values.extend(std::iter::repeat_n(1121.0, 20));
        assert_eq!(
            clock_segments(&times, &values, &opts()),
            vec![(0, 19), (20, 39)]
        );
    }

    #[test]
    fn one_late_measurement_is_not_a_reset() {
        let mut times: Vec<f64> = (0..20).map(|i| 5.0 * i as f64).collect();
        times[10] += 30.0; // late measurement, but the offset did not jump
        let values = vec![0.1; 20];
        assert_eq!(clock_segments(&times, &values, &opts()), vec![(0, 19)]);
    }

    #[test]
    fn samples_follow_their_segment_across_a_reset() {
        let times = [1000.0, 1005.0, 1010.0, 1015.0, 10.0, 15.0, 20.0, 25.0];
        let values = [
            -900.0, -900.0, -900.0, -900.0, 1100.0, 1100.0, 1100.0, 1100.0,
        ];
        let mut stamps = vec![999.0, 1012.0, 1016.0, 9.0, 30.0];
        synchronize(&mut stamps, &times, &values, &opts());
        let expected = [99.0, 112.0, 116.0, 1109.0, 1130.0];
        for (got, want) in stamps.iter().zip(expected) {
            assert!((got - want).abs() < 1e-9, "{stamps:?}");
        }
    }

    #[test]
    fn dejitter_straightens_runs_and_keeps_gaps() {
        let mut stamps = vec![0.0, 0.011, 0.019, 0.030, 10.0, 10.012, 10.018, 10.03];
        dejitter(&mut stamps, 100.0, &opts());
        for w in [&stamps[..4], &stamps[4..]] {
            let step = w[1] - w[0];
            assert!(w.windows(2).all(|p| ((p[1] - p[0]) - step).abs() < 1e-12));
        }
        assert!(stamps[4] > 9.9);
    }
}
