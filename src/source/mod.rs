//! Sources: where samples come from. Every source is a blocking iterator of [`SourceItem`]s
//! behind the [`Source`] trait; the runtime gives each source its own thread (LSL inlets are
//! not `Send`-friendly and replays sleep to keep pace), so the DSP hot path never waits on I/O.
//!
//! - [`replay`]: a [`crate::io::Recording`] emitted in chunks, at real-time pace ×N or as fast
//!   as possible, with its events.
//! - [`simulator`]: synthetic motor-imagery EEG with cue markers; seeded and deterministic.
//! - [`lsl`]: a live Lab Streaming Layer stream (headset), with an optional marker stream,
//!   loss/recovery and gap reporting.
//! - [`nats`]: raw EEG another instance publishes to NATS JetStream (`[nats] raw = true`).

pub mod cues;
pub mod lsl;
pub mod nats;
pub mod replay;
pub mod simulator;

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::stream::{Chunk, Event, StreamInfo};
use crate::validate::Problems;

/// `[source]` of a pipeline file: where samples come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SourceConfig {
    Simulator(simulator::SimulatorConfig),
    Replay(replay::ReplayConfig),
    /// A live Lab Streaming Layer stream (a headset).
    Lsl(lsl::LslConfig),
    /// Raw EEG of a session another instance publishes to NATS JetStream (`[nats] raw`).
    Nats(nats::NatsSourceConfig),
}

impl Default for SourceConfig {
    fn default() -> Self {
        SourceConfig::Simulator(simulator::SimulatorConfig::default())
    }
}

impl SourceConfig {
    pub fn build(&self) -> Result<Box<dyn Source>> {
        Ok(match self {
            SourceConfig::Simulator(config) => Box::new(config.build()?),
            SourceConfig::Replay(config) => Box::new(config.build()?),
            #[cfg(feature = "lsl")]
            SourceConfig::Lsl(config) => Box::new(config.build()?),
            #[cfg(not(feature = "lsl"))]
            SourceConfig::Lsl(config) => match config.build()? {},
            SourceConfig::Nats(config) => Box::new(config.build()?),
        })
    }

    /// The `kind` of the table.
    pub fn kind(&self) -> &'static str {
        match self {
            SourceConfig::Simulator(_) => "simulator",
            SourceConfig::Replay(_) => "replay",
            SourceConfig::Lsl(_) => "lsl",
            SourceConfig::Nats(_) => "nats",
        }
    }

    /// The sampling rate the table states, if it states one (the simulator's); a replay or
    /// a headset tells its rate only when opened.
    pub fn stated_rate(&self) -> Option<f64> {
        match self {
            SourceConfig::Simulator(config) => Some(config.rate),
            SourceConfig::Replay(_) | SourceConfig::Lsl(_) | SourceConfig::Nats(_) => None,
        }
    }

    /// Every range of `[source]` into `problems`; contacts nothing.
    pub fn check(&self, problems: &mut Problems) {
        match self {
            SourceConfig::Simulator(config) => config.check(problems),
            SourceConfig::Replay(config) => config.check(problems),
            // The LSL settings are checked by code that stops at the first problem.
            SourceConfig::Lsl(config) => problems.absorb("source", config.validate()),
            SourceConfig::Nats(config) => config.check(problems),
        }
    }
}

/// What a source yields, in time order.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceItem {
    /// Samples of the signal stream described by [`Source::stream_info`].
    Chunk(Chunk),
    /// Markers whose onsets fall at or before the last sample already yielded.
    Events(Vec<Event>),
    /// Something happened to the stream itself (lost, regained, samples dropped).
    Status(StreamStatus),
}

/// Changes in a stream's health that the service reports to clients.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum StreamStatus {
    Lost { reason: String },
    Regained,
    Dropped { samples: u64, reason: String },
}

/// A producer of EEG chunks and markers.
pub trait Source: Send {
    /// The signal stream this source yields chunks of.
    fn stream_info(&self) -> &StreamInfo;

    /// The marker stream whose events this source yields, if it has one.
    fn marker_info(&self) -> Option<&StreamInfo> {
        None
    }

    /// Next item; `Ok(None)` at the end of a finite source. May block (pacing, network).
    fn next_item(&mut self) -> Result<Option<SourceItem>>;
}

/// How fast a finite source emits its samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pace {
    /// No sleeping: as fast as the consumer takes chunks (offline processing, tests).
    AsFastAsPossible,
    /// Wall-clock pacing: `speed` = 1.0 is real time, 2.0 twice as fast.
    RealTime { speed: f64 },
}

impl Pace {
    /// `speed <= 0` means as fast as possible, the convention of the `--speed` flag and the
    /// `speed` config key.
    pub fn from_speed(speed: f64) -> Self {
        if speed > 0.0 {
            Pace::RealTime { speed }
        } else {
            Pace::AsFastAsPossible
        }
    }
}

/// Keeps a source on a wall-clock schedule: sleeps until the given stream time (seconds since
/// the source started) is due, at `pace`.
#[derive(Debug)]
pub struct Pacer {
    pace: Pace,
    started: std::time::Instant,
}

impl Pacer {
    pub fn new(pace: Pace) -> Self {
        Pacer {
            pace,
            started: std::time::Instant::now(),
        }
    }

    /// Block until `stream_seconds` of stream time are due.
    pub fn wait_until(&self, stream_seconds: f64) {
        if let Pace::RealTime { speed } = self.pace {
            let due = std::time::Duration::from_secs_f64((stream_seconds / speed).max(0.0));
            let elapsed = self.started.elapsed();
            if due > elapsed {
                std::thread::sleep(due - elapsed);
            }
        }
    }
}
