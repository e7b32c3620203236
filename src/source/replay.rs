//! Replay: a recording's primary signal stream emitted in chunks, with its markers, at real-time
//! pace ×N or as fast as possible. The same [`Source`] contract as a live headset, so a pipeline
//! cannot tell a replay from the real thing (apart from the clock).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::io::{RecordedStream, Recording, StreamData};
use crate::source::{Pace, Pacer, Source, SourceItem};
use crate::stream::{Chunk, Event, StreamInfo, ValueFormat, IRREGULAR_RATE};
use crate::validate::Problems;

/// `[source]` with `kind = "replay"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayConfig {
    /// EDF, BDF or XDF file; may be left out when the command line names the recording.
    #[serde(default)]
    pub path: PathBuf,
    /// 1.0 = real time, 2.0 = twice as fast, 0 = as fast as possible.
    #[serde(default = "default_speed")]
    pub speed: f64,
    /// Samples per emitted chunk (LSL headsets typically deliver 4–32).
    #[serde(default = "default_chunk_samples")]
    pub chunk_samples: usize,
    /// Name of the stream to replay; default: the first EEG stream, else the widest one.
    #[serde(default)]
    pub stream: Option<String>,
}

fn default_speed() -> f64 {
    1.0
}

fn default_chunk_samples() -> usize {
    16
}

/// Upper bound on `chunk_samples`: beyond a few seconds of samples a "chunk" stops meaning
/// streaming, and a typo (an extra zero or three) should be caught, not honoured.
pub const MAX_CHUNK_SAMPLES: usize = 65_536;

impl ReplayConfig {
    /// Every range of a replay `[source]` into `problems`. An empty `path` is not a problem
    /// here: the recording is often given on the command line (`replay FILE`, `check
    /// --recording FILE`); [`ReplayConfig::build`] refuses it.
    pub fn check(&self, problems: &mut Problems) {
        problems.require(
            self.speed.is_finite() && self.speed >= 0.0,
            "source.speed",
            self.speed,
            "0 (as fast as possible) or a positive factor (1.0 = real time)",
        );
        problems.require(
            (1..=MAX_CHUNK_SAMPLES).contains(&self.chunk_samples),
            "source.chunk_samples",
            self.chunk_samples,
            format!("1..={MAX_CHUNK_SAMPLES}"),
        );
    }

    /// [`ReplayConfig::check`] as a `Result` listing every problem.
    pub fn validate(&self) -> Result<()> {
        let mut problems = Problems::new();
        self.check(&mut problems);
        problems.into_result("pipeline")
    }

    pub fn build(&self) -> Result<Replay> {
        self.validate()?;
        if self.path.as_os_str().is_empty() {
            return Err(Error::config(
                "pipeline",
                "source.path is not set; allowed: an EDF, BDF or XDF file (or give the \
                 recording on the command line)",
            ));
        }
        let recording = crate::io::open(&self.path)?;
        Replay::new(
            &recording,
            self.stream.as_deref(),
            self.chunk_samples,
            Pace::from_speed(self.speed),
        )
    }
}

/// Replays one signal stream of a [`Recording`] plus all its markers.
pub struct Replay {
    info: StreamInfo,
    marker_info: StreamInfo,
    samples: usize,
    /// Channel-major, as in [`StreamData::Signal`].
    values: Vec<f32>,
    timestamps: Vec<f64>,
    events: Vec<Event>,
    chunk_samples: usize,
    pacer: Pacer,
    /// Next sample to emit.
    position: usize,
    /// Next event to emit.
    next_event: usize,
    pending_events: bool,
}

impl Replay {
    /// `stream`: name of the signal stream to replay, or `None` for
    /// [`Recording::primary_signal`].
    pub fn new(
        recording: &Recording,
        stream: Option<&str>,
        chunk_samples: usize,
        pace: Pace,
    ) -> Result<Self> {
        let chosen: &RecordedStream = match stream {
            Some(name) => recording
                .streams
                .iter()
                .find(|s| s.is_signal() && s.info.name == name)
                .ok_or_else(|| {
                    let names: Vec<&str> = recording
                        .streams
                        .iter()
                        .filter(|s| s.is_signal())
                        .map(|s| s.info.name.as_str())
                        .collect();
                    Error::Stream(format!(
                        "no signal stream named {name:?} in the recording; signal streams: {names:?}"
                    ))
                })?,
            None => recording.primary_signal().ok_or_else(|| {
                Error::Stream("the recording holds no signal stream with samples".into())
            })?,
        };
        let StreamData::Signal { samples, values } = &chosen.data else {
            unreachable!("chosen stream is a signal stream");
        };
        let marker_info = StreamInfo {
            name: format!("{}-markers", chosen.info.name),
            stream_type: "Markers".into(),
            source_id: format!("{}-markers", chosen.info.source_id),
            channels: vec![crate::stream::ChannelInfo::new("marker", "")],
            nominal_rate: IRREGULAR_RATE,
            format: ValueFormat::String,
        };
        Ok(Replay {
            info: chosen.info.clone(),
            marker_info,
            samples: *samples,
            values: values.clone(),
            timestamps: chosen.timestamps.clone(),
            events: recording.events(),
            chunk_samples: chunk_samples.max(1),
            pacer: Pacer::new(pace),
            position: 0,
            next_event: 0,
            pending_events: false,
        })
    }

    /// Samples not yet emitted.
    pub fn remaining(&self) -> usize {
        self.samples - self.position
    }

    pub fn total_samples(&self) -> usize {
        self.samples
    }
}

impl Source for Replay {
    fn stream_info(&self) -> &StreamInfo {
        &self.info
    }

    fn marker_info(&self) -> Option<&StreamInfo> {
        Some(&self.marker_info)
    }

    fn next_item(&mut self) -> Result<Option<SourceItem>> {
        // Events follow the chunk that reached their onset, so a consumer has always seen the
        // samples an event refers to (or the recording ended first).
        if self.pending_events {
            self.pending_events = false;
            let horizon = if self.position >= self.samples {
                f64::INFINITY
            } else {
                self.timestamps[self.position - 1]
            };
            let start = self.next_event;
            while self.next_event < self.events.len()
                && self.events[self.next_event].onset <= horizon
            {
                self.next_event += 1;
            }
            if self.next_event > start {
                return Ok(Some(SourceItem::Events(
                    self.events[start..self.next_event].to_vec(),
                )));
            }
        }
        if self.position >= self.samples {
            return Ok(None);
        }
        let end = (self.position + self.chunk_samples).min(self.samples);
        let n = end - self.position;
        let channels = self.info.channel_count();
        let mut data = Vec::with_capacity(channels * n);
        for c in 0..channels {
            data.extend_from_slice(
                &self.values[c * self.samples + self.position..c * self.samples + end],
            );
        }
        let timestamps = self.timestamps[self.position..end].to_vec();
        let elapsed = timestamps[n - 1] - self.timestamps[0];
        self.pacer.wait_until(elapsed);
        self.position = end;
        self.pending_events = true;
        Ok(Some(SourceItem::Chunk(Chunk::from_channel_major(
            channels, data, timestamps,
        ))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::ChannelInfo;

    fn recording(samples: usize) -> Recording {
        let info = StreamInfo {
            name: "test".into(),
            stream_type: "EEG".into(),
            source_id: "t".into(),
            channels: vec![ChannelInfo::new("C3", "uV"), ChannelInfo::new("C4", "uV")],
            nominal_rate: 10.0,
            format: ValueFormat::Float32,
        };
        let values: Vec<f32> = (0..2 * samples).map(|v| v as f32).collect();
        let timestamps: Vec<f64> = (0..samples).map(|i| i as f64 / 10.0).collect();
        let events = vec![
            Event::new("T0", 0.0, 0.4),
            Event::new("T1", 0.5, 0.4),
            Event::new("T2", 2.5, 0.4),
        ];
        Recording {
            streams: vec![
                RecordedStream {
                    info: info.clone(),
                    timestamps,
                    data: StreamData::Signal { samples, values },
                },
                RecordedStream {
                    info: StreamInfo {
                        name: "m".into(),
                        stream_type: "Markers".into(),
                        channels: vec![ChannelInfo::new("m", "")],
                        nominal_rate: 0.0,
                        format: ValueFormat::String,
                        ..info
                    },
                    timestamps: events.iter().map(|e| e.onset).collect(),
                    data: StreamData::Markers(events),
                },
            ],
        }
    }

    #[test]
    fn replays_every_sample_once_with_events_after_their_chunk() {
        let rec = recording(23);
        let mut replay = Replay::new(&rec, None, 7, Pace::AsFastAsPossible).unwrap();
        let mut c3 = Vec::new();
        let mut seen_until = f64::NEG_INFINITY;
        let mut events = Vec::new();
        while let Some(item) = replay.next_item().unwrap() {
            match item {
                SourceItem::Chunk(chunk) => {
                    c3.extend_from_slice(chunk.channel(0));
                    seen_until = chunk.last_timestamp().unwrap();
                }
                SourceItem::Events(batch) => {
                    // Events beyond the last sample come out at the end, after every chunk.
                    let finished = replay.remaining() == 0;
                    for e in &batch {
                        assert!(
                            finished || e.onset <= seen_until,
                            "event {e:?} before its samples"
                        );
                    }
                    events.extend(batch);
                }
                SourceItem::Status(_) => unreachable!(),
            }
        }
        assert_eq!(c3, (0..23).map(|v| v as f32).collect::<Vec<_>>());
        assert_eq!(
            events.iter().map(|e| e.label.as_str()).collect::<Vec<_>>(),
            ["T0", "T1", "T2"]
        );
    }

    #[test]
    fn unknown_stream_name_lists_the_streams() {
        let err = Replay::new(&recording(5), Some("nope"), 4, Pace::AsFastAsPossible)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("nope") && err.contains("\"test\""), "{err}");
    }
}
