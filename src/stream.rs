//! Core data types that flow through every stage: what a stream is ([`StreamInfo`]), a block of
//! samples ([`Chunk`]) and a marker ([`Event`]).
//!
//! Samples are `f32` in physical units (µV for EEG). A [`Chunk`] is stored **channel-major**
//! (`data[c * samples + s]`): every stage after the source works one channel at a time (IIR
//! filters, ring buffers, FFTs), so each channel is one contiguous slice. Sources that receive
//! sample-major (interleaved) data, as LSL delivers it, transpose once at the edge with
//! [`Chunk::from_interleaved`].

use serde::{Deserialize, Serialize};

/// Nominal rate of an irregular stream (markers), as in LSL (`IRREGULAR_RATE = 0.0`).
pub const IRREGULAR_RATE: f64 = 0.0;

/// Value type of a stream as its producer declared it (LSL's `channel_format`). Numeric data
/// is converted to `f32` on the way in; this records what it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ValueFormat {
    Float32,
    Float64,
    Int8,
    Int16,
    Int24,
    Int32,
    Int64,
    String,
}

impl ValueFormat {
    /// Parse LSL / XDF spellings (`float32`, `double64`, `int16`, `string`...).
    pub fn from_lsl_name(name: &str) -> Option<Self> {
        Some(match name.trim().to_ascii_lowercase().as_str() {
            "float32" => ValueFormat::Float32,
            "double64" | "float64" => ValueFormat::Float64,
            "int8" => ValueFormat::Int8,
            "int16" => ValueFormat::Int16,
            "int24" => ValueFormat::Int24,
            "int32" => ValueFormat::Int32,
            "int64" => ValueFormat::Int64,
            "string" => ValueFormat::String,
            _ => return None,
        })
    }

    pub fn is_numeric(self) -> bool {
        self != ValueFormat::String
    }
}

/// One channel of a stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChannelInfo {
    /// Normalised label (`C3`, `Fc5`, `Oz`): dot padding stripped, see [`normalize_label`].
    pub label: String,
    /// Physical unit (`uV`, `microvolts`, ...); empty when the producer gave none.
    pub unit: String,
    /// Channel kind (`EEG`, `EOG`, `Trigger`...); empty when unknown.
    pub kind: String,
}

impl ChannelInfo {
    pub fn new(label: impl Into<String>, unit: impl Into<String>) -> Self {
        ChannelInfo {
            label: label.into(),
            unit: unit.into(),
            kind: String::new(),
        }
    }
}

/// What a stream is, as LSL describes one: enough to match it in a pipeline and to write it
/// back to XDF.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamInfo {
    pub name: String,
    /// LSL content type: `EEG`, `Markers`... Compare case-insensitively (MNE-LSL says `eeg`).
    pub stream_type: String,
    pub source_id: String,
    pub channels: Vec<ChannelInfo>,
    /// Samples per second; [`IRREGULAR_RATE`] (0) for marker streams.
    pub nominal_rate: f64,
    pub format: ValueFormat,
}

impl StreamInfo {
    pub fn channel_count(&self) -> usize {
        self.channels.len()
    }

    pub fn is_irregular(&self) -> bool {
        self.nominal_rate <= 0.0
    }

    pub fn labels(&self) -> impl Iterator<Item = &str> {
        self.channels.iter().map(|c| c.label.as_str())
    }

    /// Index of the channel with this label, compared case-insensitively after normalisation.
    pub fn channel_index(&self, label: &str) -> Option<usize> {
        let wanted = normalize_label(label);
        self.channels
            .iter()
            .position(|c| c.label.eq_ignore_ascii_case(&wanted))
    }

    pub fn has_type(&self, stream_type: &str) -> bool {
        self.stream_type.eq_ignore_ascii_case(stream_type)
    }
}

/// Normalise an electrode label the way `mne.datasets.eegbci.standardize` does for EEGMMIDB:
/// strip surrounding whitespace and the dots that pad EDF labels to four characters
/// (`C3..` → `C3`, `Fc5.` → `Fc5`), keep the case of the rest.
pub fn normalize_label(raw: &str) -> String {
    raw.trim()
        .trim_end_matches('.')
        .trim_start_matches('.')
        .trim()
        .to_string()
}

/// A block of samples: `channels × samples`, channel-major, with one timestamp per sample
/// (seconds, on the clock of the stream: seconds since recording start for EDF, LSL clock for
/// LSL and XDF).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Chunk {
    channels: usize,
    samples: usize,
    /// `data[c * samples + s]`
    data: Vec<f32>,
    timestamps: Vec<f64>,
}

impl Chunk {
    /// An empty chunk for `channels` channels; fill it with [`Chunk::reset`] or build with
    /// [`Chunk::from_channel_major`].
    pub fn empty(channels: usize) -> Self {
        Chunk {
            channels,
            ..Chunk::default()
        }
    }

    /// Build from channel-major data. Panics if the lengths disagree: that is a programming
    /// error in a source, not bad input.
    pub fn from_channel_major(channels: usize, data: Vec<f32>, timestamps: Vec<f64>) -> Self {
        let samples = timestamps.len();
        assert_eq!(
            data.len(),
            channels * samples,
            "chunk data length {} != {channels} channels x {samples} samples",
            data.len()
        );
        Chunk {
            channels,
            samples,
            data,
            timestamps,
        }
    }

    /// Build from sample-major (interleaved) data, as LSL's `pull_chunk` delivers it.
    pub fn from_interleaved(channels: usize, interleaved: &[f32], timestamps: Vec<f64>) -> Self {
        let samples = timestamps.len();
        assert_eq!(interleaved.len(), channels * samples);
        let mut data = vec![0.0; channels * samples];
        for (s, frame) in interleaved.chunks_exact(channels.max(1)).enumerate() {
            for (c, &v) in frame.iter().enumerate() {
                data[c * samples + s] = v;
            }
        }
        Chunk {
            channels,
            samples,
            data,
            timestamps,
        }
    }

    /// Resize in place to `channels × samples`, reusing the allocations (no allocation once
    /// capacity has grown to the largest chunk seen). Contents are unspecified afterwards.
    pub fn reset(&mut self, channels: usize, samples: usize) {
        self.channels = channels;
        self.samples = samples;
        self.data.resize(channels * samples, 0.0);
        self.timestamps.resize(samples, 0.0);
    }

    pub fn channels(&self) -> usize {
        self.channels
    }

    pub fn samples(&self) -> usize {
        self.samples
    }

    pub fn is_empty(&self) -> bool {
        self.samples == 0
    }

    pub fn channel(&self, c: usize) -> &[f32] {
        &self.data[c * self.samples..(c + 1) * self.samples]
    }

    pub fn channel_mut(&mut self, c: usize) -> &mut [f32] {
        &mut self.data[c * self.samples..(c + 1) * self.samples]
    }

    /// All samples, channel-major.
    pub fn data(&self) -> &[f32] {
        &self.data
    }

    pub fn data_mut(&mut self) -> &mut [f32] {
        &mut self.data
    }

    pub fn timestamps(&self) -> &[f64] {
        &self.timestamps
    }

    pub fn timestamps_mut(&mut self) -> &mut [f64] {
        &mut self.timestamps
    }

    /// Swap the sample buffer with `other` (which must hold `channels * samples` values for
    /// the new channel count), so a stage that changes the channel count reuses allocations.
    pub fn swap_data(&mut self, channels: usize, other: &mut Vec<f32>) {
        assert_eq!(other.len(), channels * self.samples);
        std::mem::swap(&mut self.data, other);
        self.channels = channels;
    }

    /// Timestamp of the last sample, if any.
    pub fn last_timestamp(&self) -> Option<f64> {
        self.timestamps.last().copied()
    }
}

/// A marker: a cue, an annotation, a label. Same clock as the samples of its recording.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub label: String,
    /// Onset, seconds (same clock as the sample timestamps).
    pub onset: f64,
    /// Duration, seconds; 0 for a point marker.
    pub duration: f64,
}

impl Event {
    pub fn new(label: impl Into<String>, onset: f64, duration: f64) -> Self {
        Event {
            label: label.into(),
            onset,
            duration,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_normalised() {
        assert_eq!(normalize_label("C3.."), "C3");
        assert_eq!(normalize_label("Fc5."), "Fc5");
        assert_eq!(normalize_label(" Oz  "), "Oz");
        assert_eq!(normalize_label("Iz.."), "Iz");
    }

    #[test]
    fn interleaved_transposes_to_channel_major() {
        let chunk =
            Chunk::from_interleaved(2, &[1.0, 10.0, 2.0, 20.0, 3.0, 30.0], vec![0.0, 1.0, 2.0]);
        assert_eq!(chunk.channel(0), &[1.0, 2.0, 3.0]);
        assert_eq!(chunk.channel(1), &[10.0, 20.0, 30.0]);
    }
}
