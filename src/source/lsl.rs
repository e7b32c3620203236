//! Live EEG from Lab Streaming Layer (a headset's vendor app, OpenViBE, MNE-LSL's player, or
//! `neurostream simulate --lsl`).
//!
//! liblsl's inlets are not `Send`, so each [`LslSource`] owns one OS thread (the *inlet
//! thread*) that resolves the streams, pulls samples and markers, and hands plain
//! [`SourceItem`]s to the runtime through a bounded channel. What it does for the pipeline:
//!
//! - **Resolve** by name, type and/or source id (type compared case-insensitively: MNE-LSL
//!   says `eeg`, vendors `EEG`), with a timeout; on timeout the error lists every stream that
//!   was seen, so a typo is obvious.
//! - **Describe**: channel labels, units and types come from `desc/channels/channel`; values
//!   are converted to µV from the declared unit (MNE-LSL streams volts).
//! - **Clock**: timestamps are mapped to this machine's clock with liblsl's time correction
//!   (refreshed every few seconds), so markers from another stream line up with samples.
//! - **Markers**: an optional second inlet for cues/labels, looked for in the background (a
//!   marker outlet may start after the EEG) and re-attached if it goes away.
//! - **Loss and recovery**: when the outlet goes away (liblsl reports the stream lost) or no
//!   sample arrives for `stall_seconds`, the source reports [`StreamStatus::Lost`] and keeps
//!   looking for the same source id (or the same query when the stream has none); when it is
//!   back, [`StreamStatus::Regained`]. A stream that comes back with another channel count or
//!   rate is refused (reported, not used): the pipeline's filters and model are shaped for the
//!   old one.
//! - **Gaps**: a jump in timestamps beyond `gap_tolerance_seconds` is reported as
//!   [`StreamStatus::Dropped`] with the number of samples missing.
//!
//! liblsl recovery is left off (`recover = false`) on purpose: with it, a vanished outlet is
//! invisible to us (pulls just return nothing), and we could not tell the user or the device.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
#[cfg(feature = "lsl")]
pub use inlet::LslSource;

/// Which LSL stream to use: every given field must match.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Content type (`EEG`, `Markers`), compared case-insensitively.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub stream_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_id: Option<String>,
}

impl StreamQuery {
    pub fn is_empty(&self) -> bool {
        self.name.is_none() && self.stream_type.is_none() && self.source_id.is_none()
    }

    /// Does a stream with these properties match?
    pub fn matches(&self, name: &str, stream_type: &str, source_id: &str) -> bool {
        self.name.as_deref().is_none_or(|n| n == name)
            && self
                .stream_type
                .as_deref()
                .is_none_or(|t| t.eq_ignore_ascii_case(stream_type))
            && self.source_id.as_deref().is_none_or(|s| s == source_id)
    }
}

impl std::fmt::Display for StreamQuery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if let Some(n) = &self.name {
            parts.push(format!("name = {n:?}"));
        }
        if let Some(t) = &self.stream_type {
            parts.push(format!("type = {t:?}"));
        }
        if let Some(s) = &self.source_id {
            parts.push(format!("source_id = {s:?}"));
        }
        if parts.is_empty() {
            f.write_str("any stream")
        } else {
            f.write_str(&parts.join(", "))
        }
    }
}

/// `[source]` with `kind = "lsl"`: a live stream. With no name, type or source id, the first
/// stream of type `EEG` is used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LslConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub stream_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_id: Option<String>,
    /// How long to look for the stream at start before giving up.
    #[serde(default = "default_resolve_timeout")]
    pub resolve_timeout_seconds: f64,
    /// No sample for this long while connected = the stream is reported lost.
    #[serde(default = "default_stall")]
    pub stall_seconds: f64,
    /// A timestamp jump this much larger than one sample period is reported as dropped samples.
    #[serde(default = "default_gap_tolerance")]
    pub gap_tolerance_seconds: f64,
    /// liblsl's inlet buffer, seconds: what is kept while we are busy or disconnected briefly.
    #[serde(default = "default_buffer")]
    pub buffer_seconds: u32,
    /// Upper bound on samples per chunk handed to the pipeline (a backlog is split).
    #[serde(default = "default_max_chunk")]
    pub max_chunk_samples: usize,
    /// Unit of the values when the stream does not declare one, or to override it:
    /// `V`, `mV`, `uV` (default: as declared; µV when not declared).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// A marker stream (cues, labels) to attach as a second inlet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub markers: Option<StreamQuery>,
}

fn default_resolve_timeout() -> f64 {
    10.0
}
fn default_stall() -> f64 {
    2.0
}
fn default_gap_tolerance() -> f64 {
    0.05
}
fn default_buffer() -> u32 {
    30
}
fn default_max_chunk() -> usize {
    1024
}

impl Default for LslConfig {
    fn default() -> Self {
        LslConfig {
            name: None,
            stream_type: None,
            source_id: None,
            resolve_timeout_seconds: default_resolve_timeout(),
            stall_seconds: default_stall(),
            gap_tolerance_seconds: default_gap_tolerance(),
            buffer_seconds: default_buffer(),
            max_chunk_samples: default_max_chunk(),
            unit: None,
            markers: None,
        }
    }
}

const ORIGIN: &str = "pipeline";

impl LslConfig {
    /// The stream query, `type = "EEG"` when nothing was given.
    pub fn query(&self) -> StreamQuery {
        let query = StreamQuery {
            name: self.name.clone(),
            stream_type: self.stream_type.clone(),
            source_id: self.source_id.clone(),
        };
        if query.is_empty() {
            StreamQuery {
                stream_type: Some("EEG".into()),
                ..query
            }
        } else {
            query
        }
    }

    pub fn validate(&self) -> Result<()> {
        let positive = |key: &str, value: f64, max: f64| -> Result<()> {
            if value.is_finite() && value > 0.0 && value <= max {
                Ok(())
            } else {
                Err(Error::config(
                    ORIGIN,
                    format!("source.{key} = {value} is out of range; allowed: 0 < {key} <= {max}"),
                ))
            }
        };
        positive(
            "resolve_timeout_seconds",
            self.resolve_timeout_seconds,
            3600.0,
        )?;
        positive("stall_seconds", self.stall_seconds, 3600.0)?;
        positive("gap_tolerance_seconds", self.gap_tolerance_seconds, 60.0)?;
        if !(1..=3600).contains(&self.buffer_seconds) {
            return Err(Error::config(
                ORIGIN,
                format!(
                    "source.buffer_seconds = {} is out of range; allowed: 1..=3600",
                    self.buffer_seconds
                ),
            ));
        }
        if !(1..=65_536).contains(&self.max_chunk_samples) {
            return Err(Error::config(
                ORIGIN,
                format!(
                    "source.max_chunk_samples = {} is out of range; allowed: 1..=65536",
                    self.max_chunk_samples
                ),
            ));
        }
        if let Some(unit) = &self.unit {
            if microvolts_per_unit(unit).is_none() {
                return Err(Error::config(
                    ORIGIN,
                    format!(
                        "source.unit = {unit:?} is not known; allowed: \"V\", \"mV\", \"uV\", \"nV\", \
                         or an MNE-LSL power of ten of volts (\"0\" = V, \"-6\" = µV)"
                    ),
                ));
            }
        }
        if self.markers.as_ref().is_some_and(StreamQuery::is_empty) {
            return Err(Error::config(
                ORIGIN,
                "[source.markers] needs at least one of name, type, source_id",
            ));
        }
        Ok(())
    }

    /// Resolve the stream (blocking up to `resolve_timeout_seconds`) and start the inlet
    /// thread.
    #[cfg(feature = "lsl")]
    pub fn build(&self) -> Result<LslSource> {
        self.validate()?;
        LslSource::connect(self.clone())
    }

    #[cfg(not(feature = "lsl"))]
    pub fn build(&self) -> Result<std::convert::Infallible> {
        self.validate()?;
        Err(Error::Unsupported(
            "this neurostream was built without LSL support; rebuild with the default \
             features (`cargo build --release`, needs cmake)"
                .into(),
        ))
    }
}

/// Factor from a declared unit to µV; `None` for a unit we do not know. An empty unit means
/// µV (the convention of most EEG vendors that leave it out).
///
/// A bare integer is MNE-LSL's convention (FIFF's unit multiplier): the power of ten of the
/// SI unit, volts for EEG — `PlayerLSL` declares `"0"` for volts and `"-6"` for µV. Only the
/// multipliers FIFF names are accepted, so a stray number is not taken for a scale.
pub fn microvolts_per_unit(unit: &str) -> Option<f32> {
    let unit = unit.trim();
    if let Ok(power) = unit.parse::<i32>() {
        const FIFF_MULTIPLIERS: [i32; 15] =
            [12, 9, 6, 3, 2, 1, 0, -1, -2, -3, -6, -9, -12, -15, -18];
        return FIFF_MULTIPLIERS
            .contains(&power)
            .then(|| 10f32.powi(power + 6));
    }
    Some(match unit.to_ascii_lowercase().as_str() {
        "" | "uv" | "µv" | "μv" | "microvolt" | "microvolts" => 1.0,
        "mv" | "millivolt" | "millivolts" => 1e3,
        "v" | "volt" | "volts" => 1e6,
        "nv" | "nanovolt" | "nanovolts" => 1e-3,
        _ => return None,
    })
}

#[cfg(feature = "lsl")]
mod inlet {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::mpsc::{self, Receiver, SyncSender};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use lsl::Pullable;

    use super::{microvolts_per_unit, LslConfig, StreamQuery};
    use crate::error::{Error, Result};
    use crate::source::{Source, SourceItem, StreamStatus};
    use crate::stream::{
        normalize_label, ChannelInfo, Chunk, Event, StreamInfo, ValueFormat, IRREGULAR_RATE,
    };

    /// Items in flight from the inlet thread to the runtime's source thread.
    const ITEM_CHANNEL: usize = 256;
    /// How long one blocking pull waits, so the thread also serves markers and stop requests.
    const PULL_TIMEOUT: f64 = 0.02;
    /// How often the clock offset is refreshed.
    const TIME_CORRECTION_EVERY: Duration = Duration::from_secs(5);
    /// The resolver forgets streams not seen for this long (an outlet that died disappears).
    const FORGET_AFTER: f64 = 2.0;
    /// Pause between looks for a lost stream.
    const RECONNECT_POLL: Duration = Duration::from_millis(100);

    /// A live LSL stream as a [`Source`]. Dropping it stops its inlet thread.
    pub struct LslSource {
        info: StreamInfo,
        marker_info: Option<StreamInfo>,
        items: Receiver<SourceItem>,
        stop: Arc<AtomicBool>,
    }

    impl std::fmt::Debug for LslSource {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("LslSource")
                .field("info", &self.info)
                .finish()
        }
    }

    impl LslSource {
        /// Resolve the configured stream (blocking, up to the resolve timeout) and start the
        /// inlet thread.
        pub fn connect(config: LslConfig) -> Result<LslSource> {
            let (items_tx, items_rx) = mpsc::sync_channel(ITEM_CHANNEL);
            let (ready_tx, ready_rx) = mpsc::channel();
            let stop = Arc::new(AtomicBool::new(false));
            let thread_stop = stop.clone();
            std::thread::Builder::new()
                .name("neurostream-lsl".into())
                .spawn(move || {
                    let mut inlet = match InletThread::start(config, items_tx, thread_stop) {
                        Ok(inlet) => inlet,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    let described = (inlet.info.clone(), inlet.marker_info());
                    if ready_tx.send(Ok(described)).is_err() {
                        return;
                    }
                    inlet.run();
                })
                .map_err(|e| Error::Internal(format!("cannot start the LSL inlet thread: {e}")))?;
            let (info, marker_info) = ready_rx.recv().map_err(|_| {
                Error::Internal("the LSL inlet thread stopped while resolving".into())
            })??;
            Ok(LslSource {
                info,
                marker_info,
                items: items_rx,
                stop,
            })
        }
    }

    impl Drop for LslSource {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::Relaxed);
        }
    }

    impl Source for LslSource {
        fn stream_info(&self) -> &StreamInfo {
            &self.info
        }

        fn marker_info(&self) -> Option<&StreamInfo> {
            self.marker_info.as_ref()
        }

        /// Blocks until the inlet thread has something; a live stream never ends by itself.
        fn next_item(&mut self) -> Result<Option<SourceItem>> {
            self.items
                .recv()
                .map(Some)
                .map_err(|_| Error::Internal("the LSL inlet thread stopped".into()))
        }
    }

    /// Close an inlet on a thread of its own: liblsl 1.13 can block for good destroying an
    /// inlet whose outlet vanished (its info thread waits on a dead socket), and that must not
    /// stop us from finding the stream again.
    fn close_in_background(inlet: lsl::StreamInlet) {
        struct Doomed(lsl::StreamInlet);
        // SAFETY: liblsl's C API objects may be used and destroyed from any thread; the Rust
        // wrapper is not `Send` only because it holds a raw pointer. Nothing else refers to
        // this inlet any more.
        unsafe impl Send for Doomed {}
        impl Doomed {
            fn close(self) {
                drop(self.0);
                tracing::debug!("LSL: closed the inlet of a lost stream");
            }
        }
        let doomed = Doomed(inlet);
        let spawned = std::thread::Builder::new()
            .name("neurostream-lsl-close".into())
            .spawn(move || doomed.close());
        if let Err(e) = spawned {
            tracing::warn!("LSL: cannot close a lost inlet ({e}); leaving it open");
        }
    }

    /// One connected inlet with its clock offset.
    struct Connection {
        inlet: lsl::StreamInlet,
        uid: String,
        offset: f64,
        offset_refreshed: Instant,
    }

    impl Connection {
        /// Open an inlet on a resolved stream and read its full description.
        fn open(
            resolved: &lsl::StreamInfo,
            buffer_seconds: u32,
        ) -> std::result::Result<(Connection, lsl::StreamInfo), String> {
            let inlet = lsl::StreamInlet::new(resolved, buffer_seconds as i32, 0, false)
                .map_err(|e| format!("cannot create an inlet: {e}"))?;
            let opened = inlet
                .info(2.0)
                .map_err(|e| format!("cannot read the stream description: {e}"))
                .and_then(|full| {
                    inlet
                        .open_stream(2.0)
                        .map_err(|e| format!("cannot open the stream: {e}"))?;
                    Ok(full)
                });
            let full = match opened {
                Ok(full) => full,
                Err(e) => {
                    close_in_background(inlet);
                    return Err(e);
                }
            };
            // The first estimate takes a few round trips; until it exists the offset is 0,
            // which is exact for an outlet on this machine.
            let offset = inlet.time_correction(2.0).unwrap_or_else(|e| {
                tracing::warn!("no LSL time correction yet ({e}); assuming offset 0");
                0.0
            });
            Ok((
                Connection {
                    inlet,
                    uid: resolved.uid(),
                    offset,
                    offset_refreshed: Instant::now(),
                },
                full,
            ))
        }

        /// Close the inlet of a stream that went away (see [`close_in_background`]).
        fn abandon(self) {
            close_in_background(self.inlet);
        }

        fn refresh_offset(&mut self) {
            if self.offset_refreshed.elapsed() >= TIME_CORRECTION_EVERY {
                self.offset_refreshed = Instant::now();
                if let Ok(offset) = self.inlet.time_correction(0.1) {
                    self.offset = offset;
                }
            }
        }
    }

    /// State of the signal inlet.
    enum Signal {
        Connected(Connection),
        /// Lost; `since_uid` is the outlet that went away (skipped until the resolver forgets
        /// it), `refused` the outlets that came back with the wrong shape (reported once).
        Lost {
            since_uid: String,
            since: Instant,
            refused: Vec<String>,
        },
    }

    struct InletThread {
        config: LslConfig,
        query: StreamQuery,
        info: StreamInfo,
        /// Per-channel factor to µV.
        scale: Vec<f32>,
        resolver: lsl::ContinuousResolver,
        signal: Signal,
        markers: Option<Connection>,
        /// The marker outlet that went away, and when: not retried until the resolver has
        /// forgotten it.
        markers_lost: Option<(String, Instant)>,
        marker_description: Option<StreamInfo>,
        items: SyncSender<SourceItem>,
        stop: Arc<AtomicBool>,
        /// Reported as lost by the stall watchdog while the inlet is still open.
        stalled: bool,
        last_sample_at: Instant,
        last_timestamp: Option<f64>,
        sample: Vec<f32>,
        interleaved: Vec<f32>,
        timestamps: Vec<f64>,
        marker_sample: Vec<String>,
        /// Channel labels of a numeric one-hot marker stream (MNE-LSL's annotations: one
        /// channel per description, the annotation's duration in its channel, 0 elsewhere);
        /// empty for a one-channel marker stream.
        marker_channels: Vec<String>,
    }

    impl InletThread {
        fn start(
            config: LslConfig,
            items: SyncSender<SourceItem>,
            stop: Arc<AtomicBool>,
        ) -> Result<InletThread> {
            let resolver = lsl::ContinuousResolver::new(FORGET_AFTER)
                .map_err(|e| Error::Stream(format!("cannot start an LSL resolver: {e}")))?;
            let query = config.query();
            let deadline = Instant::now() + Duration::from_secs_f64(config.resolve_timeout_seconds);
            let (connection, full) = loop {
                let found = resolver.results().unwrap_or_default();
                if let Some(resolved) = found.iter().find(|i| matches(&query, i)) {
                    match Connection::open(resolved, config.buffer_seconds) {
                        Ok(opened) => break opened,
                        Err(e) => tracing::warn!("{}: {e}; retrying", describe(resolved)),
                    }
                }
                if Instant::now() >= deadline || stop.load(Ordering::Relaxed) {
                    return Err(Error::Stream(not_found(
                        &query,
                        config.resolve_timeout_seconds,
                        &found,
                    )));
                }
                std::thread::sleep(RECONNECT_POLL);
            };
            let (info, scale) = describe_signal(&full, config.unit.as_deref())?;
            tracing::info!(
                "LSL: connected to {} ({} channels at {} Hz, clock offset {:.3} ms)",
                describe(&full),
                info.channel_count(),
                info.nominal_rate,
                connection.offset * 1e3
            );
            let sample = Vec::with_capacity(info.channel_count());
            let mut thread = InletThread {
                query,
                info,
                scale,
                resolver,
                signal: Signal::Connected(connection),
                markers: None,
                markers_lost: None,
                marker_description: None,
                items,
                stop,
                stalled: false,
                last_sample_at: Instant::now(),
                last_timestamp: None,
                sample,
                interleaved: Vec::new(),
                timestamps: Vec::new(),
                marker_sample: Vec::new(),
                marker_channels: Vec::new(),
                config,
            };
            if thread.config.markers.is_none() {
                thread.attach_mne_lsl_annotations();
            }
            if thread.config.markers.is_some() {
                // Give a marker outlet started together with the EEG a chance to be attached
                // before the first sample; later it is looked for in the background.
                let deadline = Instant::now() + Duration::from_secs(2);
                while thread.markers.is_none() && Instant::now() < deadline {
                    thread.attach_markers();
                    if thread.markers.is_none() {
                        std::thread::sleep(RECONNECT_POLL);
                    }
                }
            }
            Ok(thread)
        }

        fn marker_info(&self) -> Option<StreamInfo> {
            let query = self.config.markers.as_ref()?;
            Some(self.marker_description.clone().unwrap_or_else(|| {
                StreamInfo {
                    name: query.name.clone().unwrap_or_else(|| "markers".into()),
                    stream_type: query
                        .stream_type
                        .clone()
                        .unwrap_or_else(|| "Markers".into()),
                    source_id: query.source_id.clone().unwrap_or_default(),
                    channels: vec![ChannelInfo::new("marker", "")],
                    nominal_rate: IRREGULAR_RATE,
                    format: ValueFormat::String,
                }
            }))
        }

        fn run(&mut self) {
            while !self.stop.load(Ordering::Relaxed) {
                let delivered = match &self.signal {
                    Signal::Connected(_) => self.pull_signal(),
                    Signal::Lost { .. } => {
                        self.try_reconnect();
                        if matches!(self.signal, Signal::Lost { .. }) {
                            std::thread::sleep(RECONNECT_POLL);
                        }
                        true
                    }
                };
                let delivered = delivered && self.pull_markers();
                if !delivered {
                    return; // the consumer has gone
                }
            }
        }

        /// Pull what the signal inlet has (waiting briefly for the first sample) and send it
        /// as one chunk. `false` when the consumer is gone.
        fn pull_signal(&mut self) -> bool {
            let Signal::Connected(connection) = &mut self.signal else {
                return true;
            };
            connection.refresh_offset();
            self.interleaved.clear();
            self.timestamps.clear();
            let mut timeout = PULL_TIMEOUT;
            let mut failure = None;
            while self.timestamps.len() < self.config.max_chunk_samples {
                match connection.inlet.pull_sample_buf(&mut self.sample, timeout) {
                    Ok(t) if t != 0.0 => {
                        self.timestamps.push(t + connection.offset);
                        self.interleaved.extend_from_slice(&self.sample);
                        timeout = 0.0;
                    }
                    Ok(_) => break,
                    Err(e) => {
                        failure = Some((connection.uid.clone(), e));
                        break;
                    }
                }
            }
            if !self.timestamps.is_empty() {
                self.last_sample_at = Instant::now();
                if self.stalled {
                    self.stalled = false;
                    tracing::info!("LSL: samples flow again");
                    if !send(&self.items, SourceItem::Status(StreamStatus::Regained)) {
                        return false;
                    }
                }
                if !self.send_chunk() {
                    return false;
                }
            }
            if let Some((uid, e)) = failure {
                return self.lose(uid, format!("the outlet went away ({e})"));
            }
            if !self.stalled
                && self.last_sample_at.elapsed().as_secs_f64() > self.config.stall_seconds
            {
                self.stalled = true;
                let reason = format!("no samples for {} s", self.config.stall_seconds);
                tracing::warn!("LSL: {reason}");
                return send(
                    &self.items,
                    SourceItem::Status(StreamStatus::Lost { reason }),
                );
            }
            true
        }

        /// Scale, check for gaps and send the pulled samples.
        fn send_chunk(&mut self) -> bool {
            let channels = self.info.channel_count();
            for frame in self.interleaved.chunks_exact_mut(channels) {
                for (value, scale) in frame.iter_mut().zip(&self.scale) {
                    *value *= scale;
                }
            }
            let rate = self.info.nominal_rate;
            let mut missing = 0u64;
            let mut largest_jump = 0.0f64;
            if rate > 0.0 {
                let period = 1.0 / rate;
                let mut previous = self.last_timestamp;
                for &t in &self.timestamps {
                    if let Some(p) = previous {
                        let step = t - p;
                        if step > period + self.config.gap_tolerance_seconds {
                            missing += ((step * rate).round() as u64).saturating_sub(1).max(1);
                            largest_jump = largest_jump.max(step);
                        }
                    }
                    previous = Some(t);
                }
            }
            self.last_timestamp = self.timestamps.last().copied();
            if missing > 0 {
                let reason = format!(
                    "timestamps jumped by up to {:.1} ms (expected {:.1} ms per sample)",
                    largest_jump * 1e3,
                    1e3 / rate
                );
                if !send(
                    &self.items,
                    SourceItem::Status(StreamStatus::Dropped {
                        samples: missing,
                        reason,
                    }),
                ) {
                    return false;
                }
            }
            let chunk = Chunk::from_interleaved(
                channels,
                &self.interleaved,
                std::mem::take(&mut self.timestamps),
            );
            send(&self.items, SourceItem::Chunk(chunk))
        }

        /// The signal outlet is gone: report it (unless the stall watchdog already did) and
        /// start looking for it again.
        fn lose(&mut self, uid: String, reason: String) -> bool {
            tracing::warn!("LSL: stream lost: {reason}");
            let lost = std::mem::replace(
                &mut self.signal,
                Signal::Lost {
                    since_uid: uid,
                    since: Instant::now(),
                    refused: Vec::new(),
                },
            );
            if let Signal::Connected(connection) = lost {
                connection.abandon();
            }
            self.last_timestamp = None;
            if self.stalled {
                return true;
            }
            self.stalled = true;
            send(
                &self.items,
                SourceItem::Status(StreamStatus::Lost { reason }),
            )
        }

        /// Look for the lost stream: the same source id when it had one, else the same query;
        /// refuse one that changed shape.
        fn try_reconnect(&mut self) {
            let Signal::Lost {
                since_uid,
                since,
                refused,
            } = &mut self.signal
            else {
                return;
            };
            let reconnect_query = if self.info.source_id.is_empty() {
                self.query.clone()
            } else {
                StreamQuery {
                    source_id: Some(self.info.source_id.clone()),
                    ..StreamQuery::default()
                }
            };
            let forgotten = since.elapsed().as_secs_f64() > FORGET_AFTER + 1.0;
            let found = self.resolver.results().unwrap_or_default();
            tracing::debug!(
                "LSL: looking for {reconnect_query}; resolver sees {:?}",
                found
                    .iter()
                    .map(|i| (i.stream_name(), i.uid()))
                    .collect::<Vec<_>>()
            );
            let Some(resolved) = found.iter().find(|i| {
                let uid = i.uid();
                matches(&reconnect_query, i)
                    && (forgotten || uid != *since_uid)
                    && !refused.contains(&uid)
            }) else {
                return;
            };
            let channels = resolved.channel_count().max(0) as usize;
            let rate = resolved.nominal_srate();
            if channels != self.info.channel_count() || rate != self.info.nominal_rate {
                let reason = format!(
                    "{} came back with {channels} channels at {rate} Hz; the pipeline expects \
                     {} channels at {} Hz, so it is not used",
                    describe(resolved),
                    self.info.channel_count(),
                    self.info.nominal_rate
                );
                tracing::error!("LSL: {reason}");
                refused.push(resolved.uid());
                let _ = send(
                    &self.items,
                    SourceItem::Status(StreamStatus::Lost { reason }),
                );
                return;
            }
            match Connection::open(resolved, self.config.buffer_seconds) {
                Ok((connection, full)) => {
                    match describe_signal(&full, self.config.unit.as_deref()) {
                        Ok((info, scale)) if info.channel_count() == self.info.channel_count() => {
                            if info.labels().ne(self.info.labels()) {
                                tracing::warn!(
                                    "LSL: the stream came back with other channel labels; \
                                     channels are used by position"
                                );
                            }
                            self.scale = scale;
                        }
                        Ok(_) | Err(_) => {}
                    }
                    tracing::info!("LSL: reconnected to {}", describe(&full));
                    self.signal = Signal::Connected(connection);
                    self.stalled = false;
                    self.last_sample_at = Instant::now();
                    let _ = send(&self.items, SourceItem::Status(StreamStatus::Regained));
                }
                Err(e) => tracing::warn!("LSL: {}: {e}; retrying", describe(resolved)),
            }
        }

        /// With no `[source.markers]`, MNE-LSL's `PlayerLSL` annotation stream of this EEG
        /// stream (`<name>-annotations`, type `annotations`, same source id) is attached when
        /// it is there at connection time, as MNE-LSL's own `StreamLSL` users expect.
        fn attach_mne_lsl_annotations(&mut self) {
            let query = StreamQuery {
                name: Some(format!("{}-annotations", self.info.name)),
                stream_type: Some("annotations".into()),
                source_id: Some(self.info.source_id.clone()),
            };
            // The player opens both outlets together: a short look is enough, and a stream
            // without annotations does not wait.
            let deadline = Instant::now() + Duration::from_millis(500);
            loop {
                let found = self.resolver.results().unwrap_or_default();
                if found.iter().any(|i| matches(&query, i)) {
                    tracing::info!(
                        "LSL: attaching MNE-LSL's annotation stream {:?} as markers",
                        query.name.as_deref().unwrap_or_default()
                    );
                    self.config.markers = Some(query);
                    return;
                }
                if Instant::now() >= deadline {
                    return;
                }
                std::thread::sleep(RECONNECT_POLL);
            }
        }

        /// Attach the marker inlet when its stream is around.
        fn attach_markers(&mut self) {
            let Some(query) = &self.config.markers else {
                return;
            };
            let found = self.resolver.results().unwrap_or_default();
            let lost_uid = match &self.markers_lost {
                Some((uid, since)) if since.elapsed().as_secs_f64() <= FORGET_AFTER + 1.0 => {
                    Some(uid.as_str())
                }
                _ => None,
            };
            let Some(resolved) = found
                .iter()
                .find(|i| matches(query, i) && lost_uid != Some(i.uid().as_str()))
            else {
                return;
            };
            match Connection::open(resolved, self.config.buffer_seconds) {
                Ok((connection, mut full)) => {
                    tracing::info!("LSL: attached marker stream {}", describe(&full));
                    self.marker_channels.clear();
                    if full.channel_format() != lsl::ChannelFormat::String {
                        let count = full.channel_count().max(0) as usize;
                        let mut element = full.desc().child("channels").child("channel");
                        while element.is_valid() && !element.empty() {
                            self.marker_channels
                                .push(normalize_label(&element.child_value_named("label")));
                            element = element.next_sibling_named("channel");
                        }
                        if count > 1 && self.marker_channels.len() == count {
                            tracing::info!(
                                "LSL: marker stream {} is one-hot ({count} labelled channels): \
                                 the channel that is not 0 names the event",
                                describe(&full)
                            );
                        } else {
                            self.marker_channels.clear();
                            tracing::warn!(
                                "LSL: marker stream {} carries numbers; their values are used \
                                 as labels",
                                describe(&full)
                            );
                        }
                    }
                    self.marker_description = Some(StreamInfo {
                        name: full.stream_name(),
                        stream_type: full.stream_type(),
                        source_id: full.source_id(),
                        channels: vec![ChannelInfo::new("marker", "")],
                        nominal_rate: IRREGULAR_RATE,
                        format: ValueFormat::String,
                    });
                    self.markers = Some(connection);
                }
                Err(e) => tracing::warn!("LSL: marker stream {}: {e}", describe(resolved)),
            }
        }

        /// Send the markers that have arrived. `false` when the consumer is gone.
        fn pull_markers(&mut self) -> bool {
            if self.config.markers.is_none() {
                return true;
            }
            let Some(connection) = &mut self.markers else {
                self.attach_markers();
                return true;
            };
            connection.refresh_offset();
            let mut events = Vec::new();
            loop {
                match connection
                    .inlet
                    .pull_sample_buf(&mut self.marker_sample, 0.0)
                {
                    Ok(t) if t != 0.0 && self.marker_channels.is_empty() => {
                        let label = self
                            .marker_sample
                            .first()
                            .map(|s| normalize_label(s))
                            .unwrap_or_default();
                        events.push(Event::new(label, t + connection.offset, 0.0));
                    }
                    Ok(t) if t != 0.0 => {
                        // MNE-LSL writes -1 for an annotation without duration.
                        for (value, label) in self.marker_sample.iter().zip(&self.marker_channels) {
                            let value: f64 = value.trim().parse().unwrap_or(0.0);
                            if value != 0.0 && value.is_finite() {
                                events.push(Event::new(
                                    label.clone(),
                                    t + connection.offset,
                                    value.max(0.0),
                                ));
                            }
                        }
                    }
                    Ok(_) => break,
                    Err(e) => {
                        tracing::warn!("LSL: marker stream lost ({e}); looking for it again");
                        if let Some(lost) = self.markers.take() {
                            self.markers_lost = Some((lost.uid.clone(), Instant::now()));
                            lost.abandon();
                        }
                        break;
                    }
                }
            }
            events.is_empty() || send(&self.items, SourceItem::Events(events))
        }
    }

    /// `false` when the consumer is gone.
    fn send(items: &SyncSender<SourceItem>, item: SourceItem) -> bool {
        items.send(item).is_ok()
    }

    fn matches(query: &StreamQuery, info: &lsl::StreamInfo) -> bool {
        query.matches(&info.stream_name(), &info.stream_type(), &info.source_id())
    }

    fn describe(info: &lsl::StreamInfo) -> String {
        format!(
            "'{}' (type {}, {} ch at {} Hz, source_id {:?}, host {})",
            info.stream_name(),
            info.stream_type(),
            info.channel_count(),
            info.nominal_srate(),
            info.source_id(),
            info.hostname()
        )
    }

    fn not_found(query: &StreamQuery, timeout: f64, seen: &[lsl::StreamInfo]) -> String {
        let mut message = format!("no LSL stream matching {query} appeared within {timeout} s");
        if seen.is_empty() {
            message.push_str(
                "; no LSL streams were seen at all (is the outlet running, and on this network?)",
            );
        } else {
            message.push_str("; streams seen:");
            for info in seen {
                message.push_str("\n  ");
                message.push_str(&describe(info));
            }
        }
        message
    }

    /// Our [`StreamInfo`] and per-channel µV factors from a full LSL description.
    fn describe_signal(
        full: &lsl::StreamInfo,
        unit_override: Option<&str>,
    ) -> Result<(StreamInfo, Vec<f32>)> {
        let format = match full.channel_format() {
            lsl::ChannelFormat::Float32 => ValueFormat::Float32,
            lsl::ChannelFormat::Double64 => ValueFormat::Float64,
            lsl::ChannelFormat::Int8 => ValueFormat::Int8,
            lsl::ChannelFormat::Int16 => ValueFormat::Int16,
            lsl::ChannelFormat::Int32 => ValueFormat::Int32,
            lsl::ChannelFormat::Int64 => ValueFormat::Int64,
            other => {
                return Err(Error::Stream(format!(
                    "{} has channel format {other}; an EEG stream must be numeric",
                    describe(full)
                )))
            }
        };
        let count = full.channel_count().max(0) as usize;
        if count == 0 {
            return Err(Error::Stream(format!("{} has no channels", describe(full))));
        }
        if full.nominal_srate() <= 0.0 {
            return Err(Error::Stream(format!(
                "{} has an irregular rate; a signal stream needs a nominal rate",
                describe(full)
            )));
        }
        let mut full = full.clone();
        let mut channels = Vec::with_capacity(count);
        let mut element = full.desc().child("channels").child("channel");
        while element.is_valid() && !element.empty() && channels.len() < count {
            channels.push(ChannelInfo {
                label: normalize_label(&element.child_value_named("label")),
                unit: element.child_value_named("unit"),
                kind: element.child_value_named("type"),
            });
            element = element.next_sibling_named("channel");
        }
        if channels.len() != count || channels.iter().any(|c| c.label.is_empty()) {
            tracing::warn!(
                "LSL: {} describes {} of {count} channel labels; using Ch1..Ch{count}",
                describe(&full),
                channels.iter().filter(|c| !c.label.is_empty()).count()
            );
            channels = (1..=count)
                .map(|i| ChannelInfo::new(format!("Ch{i}"), ""))
                .collect();
        }
        if let Some(unit) = unit_override {
            let mut declared: Vec<&str> = channels.iter().map(|c| c.unit.as_str()).collect();
            declared.sort_unstable();
            declared.dedup();
            tracing::info!(
                "LSL: source.unit = {unit:?} overrides the unit(s) the stream declares ({})",
                declared
                    .iter()
                    .map(|u| format!("{u:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        let mut scale = Vec::with_capacity(count);
        // One warning per stream, not one per channel: 64 identical lines bury the cause.
        let mut unknown: Vec<(String, String)> = Vec::new();
        for channel in &mut channels {
            let unit = unit_override.unwrap_or(&channel.unit);
            match microvolts_per_unit(unit) {
                Some(factor) => {
                    scale.push(factor);
                    channel.unit = "uV".into();
                }
                None => {
                    scale.push(1.0);
                    unknown.push((channel.label.clone(), unit.to_owned()));
                }
            }
        }
        if let Some((label, unit)) = unknown.first() {
            tracing::warn!(
                "LSL: {} of {count} channels have a unit we do not know (first: {label} in \
                 {unit:?}); their values are used as they are. Set [source] unit = \"V\", \
                 \"mV\" or \"uV\" to say what they are",
                unknown.len()
            );
        }
        Ok((
            StreamInfo {
                name: full.stream_name(),
                stream_type: full.stream_type(),
                source_id: full.source_id(),
                channels,
                nominal_rate: full.nominal_srate(),
                format,
            },
            scale,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_matches_type_case_insensitively_and_all_given_fields() {
        let query = StreamQuery {
            name: Some("BioSemi".into()),
            stream_type: Some("EEG".into()),
            source_id: None,
        };
        assert!(query.matches("BioSemi", "eeg", "abc"));
        assert!(!query.matches("biosemi", "EEG", "abc"));
        assert!(!query.matches("BioSemi", "Markers", "abc"));
        let by_id = StreamQuery {
            source_id: Some("abc".into()),
            ..StreamQuery::default()
        };
        assert!(by_id.matches("anything", "EEG", "abc"));
        assert!(!by_id.matches("anything", "EEG", "abd"));
    }

    #[test]
    fn empty_query_defaults_to_eeg() {
        let config = LslConfig::default();
        assert_eq!(config.query().stream_type.as_deref(), Some("EEG"));
        assert_eq!(config.query().to_string(), "type = \"EEG\"");
    }

    #[test]
    fn units_convert_to_microvolts() {
        assert_eq!(microvolts_per_unit("V"), Some(1e6));
        assert_eq!(microvolts_per_unit("microvolts"), Some(1.0));
        assert_eq!(microvolts_per_unit(""), Some(1.0));
        assert_eq!(microvolts_per_unit("mV"), Some(1e3));
        assert_eq!(microvolts_per_unit("furlong"), None);
        // MNE-LSL's FIFF multipliers of volts.
        assert_eq!(microvolts_per_unit("0"), Some(1e6));
        assert_eq!(microvolts_per_unit("-6"), Some(1.0));
        assert_eq!(microvolts_per_unit("-3"), Some(1e3));
        assert_eq!(microvolts_per_unit("7"), None);
        assert_eq!(microvolts_per_unit("-7"), None);
    }

    #[test]
    fn bad_values_are_named() {
        let config = LslConfig {
            stall_seconds: 0.0,
            ..LslConfig::default()
        };
        let message = config.validate().unwrap_err().to_string();
        assert!(message.contains("source.stall_seconds = 0"), "{message}");
        let config = LslConfig {
            unit: Some("furlong".into()),
            ..LslConfig::default()
        };
        let message = config.validate().unwrap_err().to_string();
        assert!(message.contains("furlong"), "{message}");
        let config = LslConfig {
            markers: Some(StreamQuery::default()),
            ..LslConfig::default()
        };
        assert!(config.validate().is_err());
    }

    #[test]
    fn unknown_keys_are_refused() {
        let error = toml::from_str::<LslConfig>("name = \"x\"\nstal_seconds = 3\n").unwrap_err();
        assert!(error.to_string().contains("stal_seconds"), "{error}");
    }
}
