//! The sample guard: the first thing a chunk meets. A NaN, an infinity or an absurd value
//! (a disconnected electrode railing, a driver bug, a unit mix-up) would otherwise enter the
//! recursive filters and poison every later sample of that channel, so a chunk that holds one
//! is refused whole: the pipeline forgets its filter and window state and the windows that
//! would have contained it produce no features and no command. The caller counts and reports
//! the [`Rejected`] chunk. Checking costs one pass over the chunk and allocates nothing unless
//! something is wrong.

use crate::stream::{Chunk, StreamInfo};

/// Default bound on |value| (µV for EEG): 10 V. Far beyond any EEG, yet above the DC offsets
/// of unreferenced active-electrode systems (BioSemi raw values reach hundreds of mV).
pub const DEFAULT_MAX_ABS_VALUE: f64 = 1e7;

/// What was wrong with a refused chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectKind {
    /// NaN, infinite or absurd values: the pipeline has reset.
    BadValues,
    /// Samples already processed (a source delivered a chunk twice): skipped, nothing reset.
    Duplicate,
}

/// Why a chunk was refused.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    pub kind: RejectKind,
    /// Samples (time points) discarded: the whole chunk.
    pub samples: usize,
    /// Values that were NaN, infinite or beyond the bound.
    pub bad_values: usize,
    /// What the first bad value was and where, for the status message.
    pub reason: String,
}

/// Refuses chunks with non-finite or absurd values.
#[derive(Debug, Clone)]
pub struct SampleGuard {
    max_abs: f32,
    labels: Vec<String>,
}

impl SampleGuard {
    pub fn new(input: &StreamInfo, max_abs: f64) -> Self {
        SampleGuard {
            max_abs: max_abs as f32,
            labels: input.labels().map(str::to_owned).collect(),
        }
    }

    /// `None` when every value is usable.
    pub fn check(&self, chunk: &Chunk) -> Option<Rejected> {
        let bad = |v: f32| !v.is_finite() || v.abs() > self.max_abs;
        let mut first: Option<(usize, usize, f32)> = None;
        let mut bad_values = 0;
        for c in 0..chunk.channels() {
            for (s, &v) in chunk.channel(c).iter().enumerate() {
                if bad(v) {
                    bad_values += 1;
                    if first.is_none_or(|(_, first_s, _)| s < first_s) {
                        first = Some((c, s, v));
                    }
                }
            }
        }
        let (channel, sample, value) = first?;
        let label = self.labels.get(channel).map_or("?", String::as_str);
        let what = if value.is_nan() {
            "NaN".to_string()
        } else if value.is_infinite() {
            format!("{value}")
        } else {
            format!("{value:e} beyond ±{:e}", self.max_abs)
        };
        let at = chunk
            .timestamps()
            .get(sample)
            .map_or(String::new(), |t| format!(" at t = {t:.3} s"));
        Some(Rejected {
            kind: RejectKind::BadValues,
            samples: chunk.samples(),
            bad_values,
            reason: format!(
                "{bad_values} unusable value(s) in a chunk of {} samples, first {what} on \
                 channel {label}{at}; chunk discarded, filters and windows reset",
                chunk.samples()
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::{ChannelInfo, ValueFormat};

    fn info() -> StreamInfo {
        StreamInfo {
            name: "t".into(),
            stream_type: "EEG".into(),
            source_id: String::new(),
            channels: vec![ChannelInfo::new("C3", "uV"), ChannelInfo::new("C4", "uV")],
            nominal_rate: 100.0,
            format: ValueFormat::Float32,
        }
    }

    #[test]
    fn finds_nan_inf_and_absurd_values_and_names_the_first() {
        let guard = SampleGuard::new(&info(), 1e6);
        let good = Chunk::from_channel_major(2, vec![1.0, -2.0, 3.0, 4.0], vec![0.0, 0.01]);
        assert_eq!(guard.check(&good), None);
        let nan = Chunk::from_channel_major(2, vec![1.0, 2.0, 3.0, f32::NAN], vec![0.0, 0.01]);
        let rejected = guard.check(&nan).unwrap();
        assert_eq!((rejected.samples, rejected.bad_values), (2, 1));
        assert!(
            rejected.reason.contains("NaN on channel C4"),
            "{}",
            rejected.reason
        );
        let mixed =
            Chunk::from_channel_major(2, vec![1.0, f32::INFINITY, -5e6, 4.0], vec![0.0, 0.01]);
        let rejected = guard.check(&mixed).unwrap();
        assert_eq!(rejected.bad_values, 2);
        assert!(
            rejected.reason.contains("on channel C4 at t = 0.000"),
            "{}",
            rejected.reason
        );
        let edge = Chunk::from_channel_major(2, vec![1e6, -1e6, 0.0, 0.0], vec![0.0, 0.01]);
        assert_eq!(guard.check(&edge), None, "the bound itself is allowed");
    }
}
