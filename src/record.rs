//! Recording a live session to XDF, and replaying a recording faithfully.
//!
//! # What a neurostream recording holds
//!
//! One XDF file (see [`crate::io::xdf::write`]) with four streams:
//!
//! | stream | type | content |
//! |---|---|---|
//! | the source's signal stream | as the source says (`EEG`) | every raw chunk, before any filtering, `float32`, one time stamp per sample |
//! | the source's marker stream | `Markers` | cue markers (labels only: XDF markers have no duration) |
//! | `neurostream-commands` | `Commands` | each decided command, as the protocol's `command` JSON |
//! | `neurostream-session` | `Session` | what changed the decoder or the pipeline's state mid-session: feedback steps and resets, as JSON [`SessionEvent`]s |
//!
//! plus a ClockOffset chunk per stream every [`CLOCK_OFFSET_INTERVAL`] (offset 0: our sources
//! are local and their time stamps are already on the recording's clock) and a Boundary chunk
//! with each round of offsets. The FileHeader holds a `<neurostream>` element with the
//! pipeline (TOML) and the model (JSON) the session started with: that, the raw samples and
//! the session events are everything needed to recompute the session's commands exactly
//! ([`replay_commands`]).
//!
//! # Never blocking the pipeline
//!
//! The DSP thread owns a [`Recorder`] handle. It copies each raw chunk into a buffer taken
//! from a fixed pool ([`CHUNK_POOL`] buffers that travel DSP thread → recorder thread → back)
//! and hands it over with `try_send`; markers, commands and session events are moved over the
//! same bounded channel. Nothing waits: when the pool or the channel is exhausted (a disk too
//! slow for [`CHUNK_POOL`] chunks, several seconds of data) the item is dropped and counted,
//! and the recording reports how many. Once every pool buffer has grown to the largest chunk,
//! handing a chunk over allocates nothing.
//!
//! The recorder thread encodes items into memory and writes them with one `write_all` at
//! least every [`FLUSH_INTERVAL`], always whole chunks: a process killed with `kill -9`
//! leaves a file that ends on a chunk boundary, which every XDF reader loads (without the
//! stream footers, which readers treat as optional).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::engine::{self, CommandCollector, Engine, RecordedSignal};
use crate::error::{Error, Result};
use crate::io::xdf::write::{escape, StreamId, XdfWriter};
use crate::io::xdf::{self, ParseOptions};
use crate::io::{RecordedStream, Recording, StreamData};
use crate::model::Model;
use crate::pipeline::PipelineConfig;
use crate::stream::{ChannelInfo, Chunk, Event, StreamInfo, ValueFormat, IRREGULAR_RATE};

/// Raw-chunk buffers in circulation between the DSP and recorder threads. At 160 Hz in
/// chunks of 16 that is 51 s of data, at 1 kHz in chunks of 32 about 16 s: a healthy disk
/// (and even one stalled for seconds) never exhausts it; when it does, chunks are dropped
/// and counted, never waited for.
pub const CHUNK_POOL: usize = 512;
/// Items (chunks, marker batches, commands, session events) in flight to the recorder.
pub const RECORDER_CHANNEL: usize = CHUNK_POOL + 512;
/// Longest time encoded data stays in memory before it is written: at most this much is
/// lost when the process is killed.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(500);
/// Write earlier when this much is pending (fast replays produce seconds of data per
/// millisecond; no point holding megabytes).
pub const FLUSH_BYTES: usize = 1 << 20;
/// Between rounds of clock-offset measurements (LabRecorder measures every 5 s).
pub const CLOCK_OFFSET_INTERVAL: Duration = Duration::from_secs(5);

/// Name and source id of the decoded-command stream.
pub const COMMANDS_STREAM: &str = "neurostream-commands";
/// Name and source id of the session-event stream.
pub const SESSION_STREAM: &str = "neurostream-session";

/// What a session needs to be recomputed: the pipeline and the model it started with.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Session {
    /// The pipeline file, as TOML.
    pub pipeline: String,
    /// The model file, as JSON; `None` when the pipeline has no decoder.
    pub model: Option<String>,
}

impl Session {
    /// Serialise `config` and `model` as they are when the session starts.
    pub fn new(config: &PipelineConfig, model: Option<&Model>) -> Result<Self> {
        let pipeline = toml::to_string(config).map_err(|e| {
            Error::Internal(format!(
                "cannot serialise the pipeline for the recording: {e}"
            ))
        })?;
        let model = model.map(serde_json::to_string).transpose().map_err(|e| {
            Error::Internal(format!("cannot serialise the model for the recording: {e}"))
        })?;
        Ok(Session { pipeline, model })
    }

    pub fn pipeline_config(&self) -> Result<PipelineConfig> {
        PipelineConfig::from_toml(&self.pipeline, "the recording's <neurostream><pipeline>")
    }

    pub fn model(&self) -> Result<Option<Model>> {
        self.model
            .as_deref()
            .map(|json| Model::from_json(json, "in the recording's <neurostream><model>"))
            .transpose()
    }

    fn to_xml(&self) -> String {
        let mut xml = format!(
            "<neurostream><written_by>neurostream {}</written_by><pipeline>{}</pipeline>",
            env!("CARGO_PKG_VERSION"),
            escape(&self.pipeline)
        );
        if let Some(model) = &self.model {
            xml.push_str(&format!("<model>{}</model>", escape(model)));
        }
        xml.push_str("</neurostream>");
        xml
    }

    /// The session stored in a FileHeader's XML; `Ok(None)` if the file was not recorded by
    /// neurostream (no `<neurostream>` element).
    pub fn from_file_header(xml: &str) -> Result<Option<Self>> {
        let bad = |detail: String| Error::Data(format!("XDF FileHeader: {detail}"));
        let doc =
            roxmltree::Document::parse(xml).map_err(|e| bad(format!("XML does not parse: {e}")))?;
        let Some(node) = doc
            .root_element()
            .children()
            .find(|n| n.has_tag_name("neurostream"))
        else {
            return Ok(None);
        };
        let text = |name: &str| {
            node.children()
                .find(|n| n.has_tag_name(name))
                .map(|n| n.text().unwrap_or_default().to_string())
        };
        let pipeline =
            text("pipeline").ok_or_else(|| bad("<neurostream> has no <pipeline>".into()))?;
        Ok(Some(Session {
            pipeline,
            model: text("model"),
        }))
    }
}

/// Where and what to record.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordConfig {
    pub path: PathBuf,
    pub session: Session,
    /// Replace an existing file; otherwise starting on one fails.
    pub overwrite: bool,
}

pub use crate::engine::{CommandRecord, SessionEvent};

/// Counts of one recording.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecordSummary {
    pub samples: u64,
    pub markers: u64,
    pub commands: u64,
    pub session_events: u64,
    /// Bytes written to the file, header included.
    pub bytes: u64,
}

enum Item {
    Chunk(Chunk),
    Markers(Vec<Event>),
    Command { timestamp: f64, json: String },
    Session { timestamp: f64, json: String },
}

/// The DSP thread's side of a recording; see the module doc.
pub struct Recorder {
    items: SyncSender<Item>,
    free: Receiver<Chunk>,
    give_back: SyncSender<Chunk>,
    dropped: u64,
    thread: JoinHandle<Result<RecordSummary>>,
    path: PathBuf,
}

impl Recorder {
    /// Create the file, write its header and the stream headers, and start the recorder
    /// thread. `signal` and `markers` describe the source's streams; `commands`: whether the
    /// session decodes (adds the command stream).
    pub fn start(
        config: &RecordConfig,
        signal: &StreamInfo,
        markers: Option<&StreamInfo>,
        commands: bool,
    ) -> Result<Recorder> {
        let path = config.path.clone();
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(config.overwrite)
            .truncate(config.overwrite)
            .create_new(!config.overwrite)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        let header = format!(
            "<datetime>{}</datetime>{}",
            utc_now_iso8601(),
            config.session.to_xml()
        );
        let mut writer = XdfWriter::new(&header);
        let default_markers = marker_stream_info("markers");
        let ids = Ids {
            signal: writer.add_stream(signal, 0.0, ""),
            markers: writer.add_stream(markers.unwrap_or(&default_markers), 0.0, ""),
            commands: commands.then(|| {
                writer.add_stream(
                    &string_stream(COMMANDS_STREAM, "Commands"),
                    0.0,
                    "<neurostream>decoded commands, protocol JSON</neurostream>",
                )
            }),
            session: writer.add_stream(
                &string_stream(SESSION_STREAM, "Session"),
                0.0,
                "<neurostream>feedback and resets, for faithful replay</neurostream>",
            ),
        };
        let header_bytes = writer.pending() as u64;
        writer
            .write_to(&mut file)
            .map_err(|e| Error::io(&path, e))?;
        let (items_tx, items_rx) = mpsc::sync_channel(RECORDER_CHANNEL);
        let (free_tx, free_rx) = mpsc::sync_channel(CHUNK_POOL);
        for _ in 0..CHUNK_POOL {
            free_tx
                .try_send(Chunk::empty(signal.channel_count()))
                .expect("the pool channel holds the whole pool");
        }
        let thread_path = path.clone();
        let thread_free = free_tx.clone();
        let thread = std::thread::Builder::new()
            .name("neurostream-recorder".into())
            .spawn(move || {
                let written = RecordSummary {
                    bytes: header_bytes,
                    ..RecordSummary::default()
                };
                record_loop(
                    file,
                    writer,
                    ids,
                    items_rx,
                    thread_free,
                    &thread_path,
                    written,
                )
            })
            .map_err(|e| Error::Internal(format!("cannot start the recorder thread: {e}")))?;
        tracing::info!("recording to {}", path.display());
        Ok(Recorder {
            items: items_tx,
            free: free_rx,
            give_back: free_tx,
            dropped: 0,
            thread,
            path,
        })
    }

    /// Copy a raw chunk into a pooled buffer and hand it over; `false` if it was dropped.
    pub fn chunk(&mut self, chunk: &Chunk) -> bool {
        let Ok(mut buffer) = self.free.try_recv() else {
            self.dropped += 1;
            return false;
        };
        buffer.reset(chunk.channels(), chunk.samples());
        buffer.data_mut().copy_from_slice(chunk.data());
        buffer.timestamps_mut().copy_from_slice(chunk.timestamps());
        match self.items.try_send(Item::Chunk(buffer)) {
            Ok(()) => true,
            Err(TrySendError::Full(Item::Chunk(buffer)))
            | Err(TrySendError::Disconnected(Item::Chunk(buffer))) => {
                // Back into the pool: the pool channel has room for every buffer.
                let _ = self.give_back.try_send(buffer);
                self.dropped += 1;
                false
            }
            Err(_) => unreachable!("a chunk was sent"),
        }
    }

    /// Markers as the source delivered them; `false` if dropped.
    pub fn markers(&mut self, events: Vec<Event>) -> bool {
        self.send(Item::Markers(events))
    }

    /// A decided command (its protocol JSON); `false` if dropped.
    pub fn command(&mut self, timestamp: f64, json: String) -> bool {
        self.send(Item::Command { timestamp, json })
    }

    /// A session event at stream time `timestamp`; `false` if dropped.
    pub fn session(&mut self, timestamp: f64, event: &SessionEvent) -> bool {
        let json = serde_json::to_string(event).expect("session events serialise");
        self.send(Item::Session { timestamp, json })
    }

    fn send(&mut self, item: Item) -> bool {
        let sent = self.items.try_send(item).is_ok();
        if !sent {
            self.dropped += 1;
        }
        sent
    }

    /// Items dropped so far because the recorder was behind.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Close the channel, let the thread write what is left and the footers, and wait.
    pub fn finish(self) -> Result<RecordSummary> {
        let Recorder {
            items,
            thread,
            dropped,
            path,
            ..
        } = self;
        // The thread ends when the channel closes.
        drop(items);
        let summary = thread
            .join()
            .map_err(|_| Error::Internal("the recorder thread panicked".into()))??;
        if dropped > 0 {
            tracing::warn!(
                "recording {}: {dropped} item(s) dropped because the disk fell behind; a replay of it will not be exact",
                path.display(),
            );
        }
        tracing::info!(
            samples = summary.samples,
            markers = summary.markers,
            commands = summary.commands,
            bytes = summary.bytes,
            "recorded {}",
            path.display()
        );
        Ok(summary)
    }
}

struct Ids {
    signal: StreamId,
    markers: StreamId,
    commands: Option<StreamId>,
    session: StreamId,
}

fn record_loop(
    mut file: File,
    mut writer: XdfWriter,
    ids: Ids,
    items: Receiver<Item>,
    give_back: SyncSender<Chunk>,
    path: &Path,
    mut summary: RecordSummary,
) -> Result<RecordSummary> {
    let mut latest = f64::NAN;
    let mut next_flush = Instant::now() + FLUSH_INTERVAL;
    let mut next_clock = Instant::now();
    let io = |e| Error::io(path, e);
    let mut flush = |writer: &mut XdfWriter, summary: &mut RecordSummary| {
        summary.bytes += writer.pending() as u64;
        writer.write_to(&mut file).map_err(io)
    };
    loop {
        let wait = next_flush.saturating_duration_since(Instant::now());
        let open = match items.recv_timeout(wait) {
            Ok(item) => {
                match item {
                    Item::Chunk(chunk) => {
                        writer.signal(ids.signal, &chunk);
                        summary.samples += chunk.samples() as u64;
                        latest = chunk.last_timestamp().unwrap_or(latest);
                        let _ = give_back.try_send(chunk);
                    }
                    Item::Markers(events) => {
                        writer.strings(
                            ids.markers,
                            events.iter().map(|e| (e.onset, e.label.as_str())),
                        );
                        summary.markers += events.len() as u64;
                    }
                    Item::Command { timestamp, json } => {
                        if let Some(id) = ids.commands {
                            writer.strings(id, std::iter::once((timestamp, json.as_str())));
                            summary.commands += 1;
                        }
                    }
                    Item::Session { timestamp, json } => {
                        writer.strings(ids.session, std::iter::once((timestamp, json.as_str())));
                        summary.session_events += 1;
                    }
                }
                true
            }
            Err(RecvTimeoutError::Timeout) => true,
            Err(RecvTimeoutError::Disconnected) => false,
        };
        let now = Instant::now();
        if latest.is_finite() && (now >= next_clock || !open) {
            writer.clock_offsets(latest, 0.0);
            writer.boundary();
            next_clock = now + CLOCK_OFFSET_INTERVAL;
        }
        if !open {
            break;
        }
        if now >= next_flush || writer.pending() >= FLUSH_BYTES {
            if let Err(e) = flush(&mut writer, &mut summary) {
                tracing::error!("recording stopped: {e}");
                return Err(e);
            }
            next_flush = now + FLUSH_INTERVAL;
        }
    }
    writer.footers();
    flush(&mut writer, &mut summary)?;
    file.sync_all().map_err(io)?;
    Ok(summary)
}

fn string_stream(name: &str, kind: &str) -> StreamInfo {
    StreamInfo {
        name: name.into(),
        stream_type: kind.into(),
        source_id: name.into(),
        channels: vec![ChannelInfo::new(kind, "")],
        nominal_rate: IRREGULAR_RATE,
        format: ValueFormat::String,
    }
}

/// A one-channel string marker stream called `name` (for sources that declare none).
pub fn marker_stream_info(name: &str) -> StreamInfo {
    string_stream(name, "Markers")
}

/// Whether a stream is one neurostream adds to a recording (commands, session events)
/// rather than one of the source's.
pub fn is_session_stream(stream: &RecordedStream) -> bool {
    [COMMANDS_STREAM, SESSION_STREAM].contains(&stream.info.source_id.as_str())
}

/// A neurostream recording read back: the session, the source's streams and what the
/// session did.
#[derive(Debug, Clone)]
pub struct SessionRecording {
    pub session: Session,
    /// The source's streams only (signal and markers), ready for a [`crate::source::replay::Replay`].
    pub recording: Recording,
    pub commands: Vec<CommandRecord>,
    pub events: Vec<SessionEvent>,
}

/// Read a recording made by neurostream. Time stamps are taken as written (no clock
/// synchronisation: the offsets we write are 0 and a fitted line must not perturb the last
/// bits the controller compares).
pub fn load(path: &Path) -> Result<SessionRecording> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let header = xdf::file_header(&bytes, path)?;
    let session = Session::from_file_header(&header)
        .map_err(|e| Error::format("XDF", path, e.to_string()))?
        .ok_or_else(|| {
            Error::format(
                "XDF",
                path,
                "not a neurostream recording (its FileHeader has no <neurostream> element with the pipeline and model)",
            )
        })?;
    let options = ParseOptions {
        synchronize_clocks: false,
        ..ParseOptions::default()
    };
    let mut recording = xdf::parse_with(&bytes, path, &options)?;
    let bad = |detail: String| Error::format("XDF", path, detail);
    let mut commands = Vec::new();
    let mut events = Vec::new();
    for stream in recording.streams.iter().filter(|s| is_session_stream(s)) {
        let StreamData::Markers(samples) = &stream.data else {
            return Err(bad(format!(
                "stream {:?} is not a string stream",
                stream.info.name
            )));
        };
        for (i, sample) in samples.iter().enumerate() {
            if stream.info.source_id == COMMANDS_STREAM {
                commands.push(serde_json::from_str(&sample.label).map_err(|e| {
                    bad(format!("command #{} is not a command message: {e}", i + 1))
                })?);
            } else {
                events.push(
                    serde_json::from_str(&sample.label)
                        .map_err(|e| bad(format!("session event #{} is not valid: {e}", i + 1)))?,
                );
            }
        }
    }
    recording.streams.retain(|s| !is_session_stream(s));
    Ok(SessionRecording {
        session,
        recording,
        commands,
        events,
    })
}

/// Recompute a recorded session's commands: its signal through its pipeline, model and
/// controller (one [`Engine`], as live) in chunks of `chunk_samples`, with the recorded
/// feedback, rollbacks, resets and refused chunks at the same samples (see
/// [`engine::replay`]).
pub fn replay_commands(
    recorded: &SessionRecording,
    config: &PipelineConfig,
    model: Option<Model>,
    chunk_samples: usize,
) -> Result<Vec<CommandRecord>> {
    let signal = recorded
        .recording
        .primary_signal()
        .ok_or_else(|| Error::Stream("the recording holds no signal samples".into()))?;
    let StreamData::Signal { values, .. } = &signal.data else {
        unreachable!("primary_signal returns signal streams");
    };
    let markers = recorded.recording.events();
    let mut engine = Engine::build(config, &signal.info, model)?;
    let mut sink = CommandCollector::default();
    engine::replay(
        &mut engine,
        RecordedSignal {
            info: &signal.info,
            values,
            timestamps: &signal.timestamps,
            markers: &markers,
        },
        &recorded.events,
        chunk_samples,
        &mut sink,
    )?;
    Ok(sink.commands)
}

/// Current UTC time as `YYYY-MM-DDThh:mm:ssZ` (LabRecorder's FileHeader `<datetime>`).
fn utc_now_iso8601() -> String {
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rest) = (seconds / 86_400, seconds % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian calendar, counting
/// in 400-year eras of 146 097 days that start on 1 March (so the leap day ends a year).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153; // 0 = March
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_513), (2026, 3, 1));
    }

    #[test]
    fn every_shipped_pipeline_survives_the_header() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines");
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "toml") {
                continue; // pipelines/spaces/ holds search spaces, not pipelines
            }
            let config = PipelineConfig::from_file(&path).unwrap();
            let session = Session::new(&config, None).unwrap();
            let xml = format!("<info><version>1.0</version>{}</info>", session.to_xml());
            let back = Session::from_file_header(&xml).unwrap().unwrap();
            assert_eq!(back, session, "{}", path.display());
            assert_eq!(
                back.pipeline_config().unwrap(),
                config,
                "{}",
                path.display()
            );
        }
    }

    #[test]
    fn foreign_file_headers_have_no_session() {
        let xml = "<?xml version=\"1.0\"?><info><version>1.0</version></info>";
        assert_eq!(Session::from_file_header(xml).unwrap(), None);
    }
}
