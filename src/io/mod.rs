//! Recording readers: a file on disk → a [`Recording`] (every stream it holds, with samples,
//! timestamps and markers). [`open`] picks the reader from the file's first bytes, not its
//! extension, so a misnamed file still gets the right reader or a clear error.
//!
//! - [`edf`]: EDF, EDF+ (annotations as events) and BDF.
//! - [`xdf`]: XDF as LabRecorder writes it, clock offsets applied; [`xdf::write`] writes it.

pub mod edf;
pub mod xdf;

use std::path::Path;

use crate::error::{Error, Result};
use crate::stream::{Event, StreamInfo};

/// Samples of one recorded stream.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamData {
    /// Numeric samples converted to `f32` (physical units where the format defines them),
    /// channel-major: `values[c * samples + s]`.
    Signal { samples: usize, values: Vec<f32> },
    /// String samples (marker streams), one event per sample. Multi-channel string samples
    /// are joined with a tab.
    Markers(Vec<Event>),
}

/// One stream of a recording.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedStream {
    pub info: StreamInfo,
    /// One timestamp per sample (seconds). For marker streams equals each event's onset.
    pub timestamps: Vec<f64>,
    pub data: StreamData,
}

impl RecordedStream {
    pub fn sample_count(&self) -> usize {
        self.timestamps.len()
    }

    /// Channel `c` of a signal stream; `None` for marker streams or out of range.
    pub fn channel(&self, c: usize) -> Option<&[f32]> {
        match &self.data {
            StreamData::Signal { samples, values } if c < self.info.channel_count() => {
                Some(&values[c * samples..(c + 1) * samples])
            }
            _ => None,
        }
    }

    pub fn is_signal(&self) -> bool {
        matches!(self.data, StreamData::Signal { .. })
    }

    /// Seconds between first and last sample plus one sample period (the usual "duration" of
    /// a regularly sampled recording); for irregular streams, last − first.
    pub fn duration(&self) -> f64 {
        match (self.timestamps.first(), self.timestamps.last()) {
            (Some(first), Some(last)) => {
                let period = if self.info.nominal_rate > 0.0 {
                    1.0 / self.info.nominal_rate
                } else {
                    0.0
                };
                last - first + period
            }
            _ => 0.0,
        }
    }
}

/// Everything read from one file.
#[derive(Debug, Clone, PartialEq)]
pub struct Recording {
    pub streams: Vec<RecordedStream>,
}

impl Recording {
    /// The stream a pipeline should run on: the first signal stream of type EEG
    /// (case-insensitive), else the signal stream with the most channels.
    pub fn primary_signal(&self) -> Option<&RecordedStream> {
        let signals = || {
            self.streams
                .iter()
                .filter(|s| s.is_signal() && s.sample_count() > 0)
        };
        signals()
            .find(|s| s.info.has_type("EEG"))
            .or_else(|| signals().max_by_key(|s| s.info.channel_count()))
    }

    /// All events of all marker streams, sorted by onset.
    pub fn events(&self) -> Vec<Event> {
        let mut events: Vec<Event> = self
            .streams
            .iter()
            .filter_map(|s| match &s.data {
                StreamData::Markers(events) => Some(events.iter().cloned()),
                _ => None,
            })
            .flatten()
            .collect();
        events.sort_by(|a, b| a.onset.total_cmp(&b.onset));
        events
    }
}

/// Highest nominal rate a reader accepts, Hz. Well above any EEG amplifier (BioSemi tops out
/// at 16 kHz); a header claiming more is corrupt, and downstream window sizes are rate ×
/// seconds, so an absurd rate becomes an absurd allocation.
pub const MAX_RATE_HZ: f64 = 100_000.0;
/// Lowest nominal rate of a regular stream, Hz (one sample per 1000 s): below it a header is
/// corrupt rather than slow, and one nominal period would dwarf any recording.
pub const MIN_RATE_HZ: f64 = 0.001;

/// `Err` with the allowed range unless `rate` is a plausible regular sampling rate.
pub(crate) fn check_rate(rate: f64) -> std::result::Result<(), String> {
    if rate.is_finite() && (MIN_RATE_HZ..=MAX_RATE_HZ).contains(&rate) {
        Ok(())
    } else {
        Err(format!(
            "{rate} Hz, outside the allowed range [{MIN_RATE_HZ}, {MAX_RATE_HZ}] Hz"
        ))
    }
}

/// Read a recording, choosing the reader from the file's magic bytes: `0       ` (EDF/EDF+),
/// `\xFFBIOSEMI` (BDF) or `XDF:`. Warnings (a torn tail that was dropped) go to the log; see
/// [`open_with_warnings`] to get them too.
pub fn open(path: impl AsRef<Path>) -> Result<Recording> {
    open_with_warnings(path).map(|(recording, _)| recording)
}

/// [`open`], also returning what the reader recovered from (e.g. "torn tail: 1234 bytes after
/// the last whole chunk ignored"), for tools that show it to people.
pub fn open_with_warnings(path: impl AsRef<Path>) -> Result<(Recording, Vec<String>)> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let mut warnings = Vec::new();
    let recording = if bytes.starts_with(b"XDF:") {
        xdf::parse_reporting(&bytes, path, &xdf::ParseOptions::default(), &mut warnings)
    } else if bytes.starts_with(b"0       ") || bytes.starts_with(b"\xFFBIOSEMI") {
        edf::parse_reporting(&bytes, path, &mut warnings)
    } else {
        Err(Error::format(
            "recording",
            path,
            "not an EDF, BDF or XDF file (the first bytes match none of their signatures)",
        ))
    }?;
    Ok((recording, warnings))
}
