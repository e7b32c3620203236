//! Threads and queues of a running service.
//!
//! - The **source thread** calls the blocking [`Source::next_item`] and sends each item, with
//!   its arrival time, into a bounded channel (it blocks when the DSP thread is behind: that
//!   is back-pressure on a finite source, never on a client).
//! - The **DSP thread** drives the session [`Engine`] (pipeline, controller, feedback — the
//!   same engine `replay` and `evaluate --online` run), serialises each message once and
//!   pushes it into every client's queue ([`super::hub`]) without waiting; between items it
//!   applies client feedback from a second bounded channel.
//! - The **client tasks** (see [`super::server`]) drain their own queue onto the socket.
//! - With [`ServiceConfig::record`], the DSP thread also hands every raw chunk, marker batch,
//!   command and feedback step to a [`Recorder`] (its own thread, bounded channel, never
//!   waited for; see [`crate::record`]).

use std::net::SocketAddr;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::Instant;

use rand::Rng;

use super::hub::{Command, Hub, Outgoing, Request};
use super::metrics::{DropReason, Metrics};
use super::nats::{Kind, NatsPublisher, NatsStats};
use super::protocol::{
    self, DecoderDescription, ErrorCode, Hello, Limits, ServerMessage, Status, StatusEvent,
    StreamDescription, Topic,
};
use super::{ServiceConfig, Shutdown};
use crate::closed_loop::{ClosedLoop, LoopState};
use crate::control::Controller;
use crate::engine::{CommandEvent, Engine, EngineSink, Learned, SessionEvent};
use crate::error::{Error, Result};
use crate::pipeline::{Pipeline, RejectKind, Rejected, WindowFeatures};
use crate::record::{RecordSummary, Recorder};
use crate::source::{Source, SourceItem, StreamStatus};
use crate::stream::{Chunk, Event};

/// Items in flight from the source thread to the DSP thread.
pub const SOURCE_CHANNEL: usize = 64;
/// How often an idle DSP thread checks for shutdown and feedback.
const IDLE_WAKEUP: std::time::Duration = std::time::Duration::from_millis(100);
/// Feedback requests in flight to the DSP thread.
pub const FEEDBACK_CHANNEL: usize = 64;

/// Counts of one service run's DSP thread.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DspSummary {
    pub chunks: u64,
    pub samples: u64,
    pub windows: u64,
    pub commands: u64,
    pub feedback_applied: u64,
    /// What was recorded, with [`ServiceConfig::record`].
    pub recording: Option<RecordSummary>,
    /// Items the recorder could not take (it fell behind); 0 on a healthy disk.
    pub recorder_dropped: u64,
    /// Closed loop: online cued trials decided and how many were right.
    pub online_trials: Option<(usize, usize)>,
}

/// A running service: the source and DSP threads and the HTTP/WebSocket server.
pub struct Service {
    addr: SocketAddr,
    hub: Arc<Hub>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    dsp: Option<std::thread::JoinHandle<Result<DspSummary>>>,
    /// The NATS publisher task (ends once the DSP thread has dropped its publisher and what
    /// was queued is delivered or counted lost) and its counts.
    nats: Option<(tokio::task::JoinHandle<()>, Arc<NatsStats>)>,
}

impl Service {
    /// Bind `config.bind`, then start the source (on its own thread), the DSP thread and the
    /// server. `controller` turns probabilities into commands (`None`: the pipeline has no
    /// decoder, only features and signal are served). The service stops on
    /// [`Service::shutdown`] or when a finite source ends.
    pub async fn start(
        config: ServiceConfig,
        source: Box<dyn Source>,
        pipeline: Pipeline,
        controller: Option<Controller>,
    ) -> Result<Service> {
        Self::start_session(config, source, Engine::new(pipeline, controller), None).await
    }

    /// [`Service::start`] with a session engine and, for a session that calibrates or runs
    /// cued trials, its [`ClosedLoop`].
    pub async fn start_session(
        config: ServiceConfig,
        mut source: Box<dyn Source>,
        engine: Engine,
        closed_loop: Option<ClosedLoop>,
    ) -> Result<Service> {
        config.validate()?;
        let listener = tokio::net::TcpListener::bind(config.bind)
            .await
            .map_err(|e| Error::Network(format!("cannot listen on {}: {e}", config.bind)))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::Network(format!("cannot read the bound address: {e}")))?;
        let info = source.stream_info().clone();
        // Created before anything runs, so a bad path fails the start, not the session.
        let recorder = config
            .record
            .as_ref()
            .map(|record| {
                Recorder::start(
                    record,
                    &info,
                    source.marker_info(),
                    engine.decides() || closed_loop.is_some(),
                )
            })
            .transpose()?;
        let mut hello = Hello {
            protocol: protocol::PROTOCOL_VERSION,
            session: format!("{:016x}", rand::thread_rng().gen::<u64>()),
            stream: StreamDescription {
                name: info.name.clone(),
                kind: info.stream_type.clone(),
                rate: info.nominal_rate,
                channel_count: info.channel_count(),
            },
            channels: Vec::new(),
            classes: Vec::new(),
            features: Vec::new(),
            decoder: None,
            operating_point: None,
            limits: Limits {
                max_message_bytes: config.max_message_bytes,
                messages_per_second: config.client_messages_per_second,
                queue: config.client_queue,
            },
        };
        describe(&engine, &mut hello);
        let (feedback_tx, feedback_rx) = mpsc::sync_channel(FEEDBACK_CHANNEL);
        let hub = Arc::new(Hub::new(config, hello, feedback_tx));
        let page = closed_loop
            .as_ref()
            .and_then(ClosedLoop::page_link)
            .unwrap_or_default();
        let _ = hub.page.set(page);
        let (nats, nats_task) = match hub.config.nats.clone() {
            Some(nats_config) => {
                let started =
                    super::nats::start(&nats_config, hub.clone(), &info, &hub.hello()).await?;
                (Some(started.publisher), Some((started.task, started.stats)))
            }
            None => (None, None),
        };

        let (items_tx, items_rx) =
            mpsc::sync_channel::<(Result<SourceItem>, Instant)>(SOURCE_CHANNEL);
        let shutdown = hub.shutdown.clone();
        std::thread::Builder::new()
            .name("neurostream-source".into())
            .spawn(move || loop {
                if shutdown.is_triggered() {
                    break;
                }
                let item = match source.next_item() {
                    Ok(Some(item)) => Ok(item),
                    Ok(None) => break,
                    Err(e) => Err(e),
                };
                let failed = item.is_err();
                if items_tx.send((item, Instant::now())).is_err() || failed {
                    break;
                }
            })
            .map_err(|e| Error::Unsupported(format!("cannot start the source thread: {e}")))?;

        let dsp_hub = hub.clone();
        let dsp = std::thread::Builder::new()
            .name("neurostream-dsp".into())
            .spawn(move || {
                let mut recorder = recorder;
                let mut nats = nats;
                let mut result = dsp_loop(
                    &dsp_hub,
                    engine,
                    closed_loop,
                    items_rx,
                    feedback_rx,
                    &mut recorder,
                    &mut nats,
                );
                if let Some(recorder) = recorder {
                    let dropped = recorder.dropped();
                    match (recorder.finish(), &mut result) {
                        (Ok(recorded), Ok(summary)) => {
                            summary.recording = Some(recorded);
                            summary.recorder_dropped = dropped;
                        }
                        (Err(e), Ok(_)) => result = Err(e),
                        (_, Err(_)) => {}
                    }
                }
                // A finite source has ended (or failed): tell the clients, then stop serving.
                let mut status = Status::event(StatusEvent::StreamEnded);
                if let Err(e) = &result {
                    status.reason = Some(e.to_string());
                }
                let message = ServerMessage::Status(status);
                if let Some(nats) = nats.take() {
                    nats.publish(Kind::Status, &message.to_json());
                }
                dsp_hub.broadcast(&message, None, None);
                dsp_hub.shutdown.trigger();
                result
            })
            .map_err(|e| Error::Unsupported(format!("cannot start the DSP thread: {e}")))?;

        let server = tokio::spawn(super::server::serve(listener, hub.clone()));
        Ok(Service {
            addr,
            hub,
            server,
            dsp: Some(dsp),
            nats: nats_task,
        })
    }

    /// The NATS publisher's counts (with `[nats]`).
    pub fn nats_stats(&self) -> Option<Arc<NatsStats>> {
        self.nats.as_ref().map(|(_, stats)| stats.clone())
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn metrics(&self) -> Arc<Metrics> {
        self.hub.metrics.clone()
    }

    /// The service's shutdown signal: trigger it to stop (Ctrl-C).
    pub fn shutdown(&self) -> Shutdown {
        self.hub.shutdown.clone()
    }

    /// Wait until the service has stopped (shutdown triggered or the source ended) and the
    /// clients have been sent their last messages and a close frame.
    pub async fn wait(mut self) -> Result<DspSummary> {
        self.hub.shutdown.wait().await;
        let served = (&mut self.server).await;
        let dsp = self.dsp.take().expect("joined once");
        let summary = tokio::task::spawn_blocking(move || dsp.join())
            .await
            .map_err(|e| Error::Internal(format!("DSP thread: {e}")))?
            .map_err(|_| Error::Internal("the DSP thread panicked".into()))??;
        if let Some((task, _)) = self.nats.take() {
            // The task ends within its flush timeout once the DSP thread has let go.
            let _ = tokio::time::timeout(
                super::nats::FLUSH_TIMEOUT + std::time::Duration::from_secs(5),
                task,
            )
            .await;
        }
        match served {
            Ok(Ok(())) => Ok(summary),
            Ok(Err(e)) => Err(Error::Network(format!("server: {e}"))),
            Err(e) => Err(Error::Internal(format!("server task: {e}"))),
        }
    }
}

/// What a client's `hello` says about the engine's pipeline (after a model is loaded too).
fn describe(engine: &Engine, hello: &mut Hello) {
    let pipeline = engine.pipeline();
    hello.channels = pipeline.output_info().labels().map(str::to_owned).collect();
    hello.classes = pipeline.class_names().to_vec();
    hello.features = pipeline.feature_names().to_vec();
    hello.decoder = pipeline.decoder().map(|d| DecoderDescription {
        kind: match d {
            crate::decoder::AnyDecoder::Lda(_) => "lda",
            crate::decoder::AnyDecoder::Svm(_) => "svm",
            crate::decoder::AnyDecoder::Mlp(_) => "mlp",
        }
        .into(),
        version: pipeline.decoder_version(),
    });
    hello.operating_point = engine
        .controller()
        .map(protocol::OperatingPointDescription::of);
}

fn dsp_loop(
    hub: &Hub,
    mut engine: Engine,
    mut closed_loop: Option<ClosedLoop>,
    items: Receiver<(Result<SourceItem>, Instant)>,
    feedback: Receiver<Request>,
    recorder: &mut Option<Recorder>,
    nats: &mut Option<NatsPublisher>,
) -> Result<DspSummary> {
    if let Some(state) = closed_loop.as_ref().map(ClosedLoop::state) {
        announce(hub, &engine, &state, false);
    }
    let mut sink = ServiceSink {
        hub,
        recorder,
        nats: nats.as_ref(),
        arrived: Instant::now(),
        want_features: false,
        want_signal: false,
        reply: None,
    };
    loop {
        // A live stream can go quiet for minutes (headset off): wake up regularly so that
        // shutdown and client feedback are still served.
        let (item, arrived) = match items.recv_timeout(IDLE_WAKEUP) {
            Ok(received) => received,
            Err(RecvTimeoutError::Timeout) => {
                if hub.shutdown.is_triggered() {
                    break;
                }
                // A model may finish training while the stream is quiet.
                step_paradigm(hub, &mut engine, closed_loop.as_mut(), &mut sink)?;
                step_closed_loop(hub, &mut engine, closed_loop.as_mut(), &mut sink)?;
                apply_feedback(hub, &mut engine, closed_loop.as_mut(), &feedback, &mut sink)?;
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        };
        if hub.shutdown.is_triggered() {
            break;
        }
        sink.arrived = arrived;
        sink.want_features = hub.any_subscribed(Topic::Features);
        sink.want_signal = hub.any_subscribed(Topic::Signal);
        let item = item?;
        if let (SourceItem::Chunk(chunk), Some(page)) = (&item, hub.page.get()) {
            if let Some(newest) = chunk.last_timestamp() {
                page.clock.update(newest, arrived);
            }
        }
        if let Some(closed_loop) = closed_loop.as_mut() {
            closed_loop.observe(&item);
        }
        engine.on_item(item, &mut sink)?;
        // Cues reached by this chunk go in before the loop checks its trials.
        step_paradigm(hub, &mut engine, closed_loop.as_mut(), &mut sink)?;
        step_closed_loop(hub, &mut engine, closed_loop.as_mut(), &mut sink)?;
        apply_feedback(hub, &mut engine, closed_loop.as_mut(), &feedback, &mut sink)?;
        if closed_loop
            .as_ref()
            .is_some_and(|c| c.paradigm_complete(engine.now()))
        {
            tracing::info!("every cued trial has been run and decided: ending the session");
            break;
        }
    }
    if let Some(timing) = hub.page.get().and_then(|page| page.timing()) {
        tracing::info!(
            "cue timing, marker → page paint (requestAnimationFrame time; display latency \
             not included): n = {}, p50 {:+.1} ms, p99 {:+.1} ms, max |offset| {:.1} ms",
            timing.count,
            timing.p50_ms,
            timing.p99_ms,
            timing.max_abs_ms
        );
    }
    let totals = engine.summary();
    Ok(DspSummary {
        chunks: totals.chunks,
        samples: totals.samples,
        windows: totals.windows,
        commands: totals.commands,
        feedback_applied: totals.feedback_applied,
        recording: None,
        recorder_dropped: 0,
        online_trials: closed_loop.as_ref().map(ClosedLoop::online_score),
    })
}

fn step_closed_loop(
    hub: &Hub,
    engine: &mut Engine,
    closed_loop: Option<&mut ClosedLoop>,
    sink: &mut ServiceSink<'_>,
) -> Result<()> {
    if let Some(closed_loop) = closed_loop {
        if let Some(state) = closed_loop.step(engine, sink)? {
            let model_loaded = closed_loop.take_model_loaded();
            announce(hub, engine, &state, model_loaded);
        }
    }
    Ok(())
}

/// Run the page paradigm: announce newly planned trials and stage changes, and inject the
/// cue markers the stream has reached into the closed loop and the engine (which records
/// them), right after the chunk that reached them, where a replay delivers them too.
fn step_paradigm(
    hub: &Hub,
    engine: &mut Engine,
    closed_loop: Option<&mut ClosedLoop>,
    sink: &mut ServiceSink<'_>,
) -> Result<()> {
    let Some(closed_loop) = closed_loop.filter(|c| c.paradigm().is_some()) else {
        return Ok(());
    };
    let newest = (engine.summary().samples > 0).then(|| engine.now());
    let now = hub.page.get().and_then(|page| page.clock.now());
    let out = closed_loop.step_paradigm(newest, now);
    if let Some(stage) = out.stage {
        tracing::info!("paradigm: {stage:?}");
        let text: Arc<str> = ServerMessage::Paradigm(protocol::ParadigmStatus { stage })
            .to_json()
            .into();
        if let Some(page) = hub.page.get() {
            page.set_stage_message(text.clone());
        }
        hub.broadcast_text(text, None, None);
    }
    for planned in out.planned {
        hub.broadcast(&ServerMessage::Cue(planned), None, None);
    }
    if !out.due.is_empty() {
        closed_loop.observe_cues(&out.due);
        engine.on_item(SourceItem::Events(out.due), sink)?;
    }
    Ok(())
}

/// Tell the clients (and those that connect later) where the closed loop is; after a model
/// was loaded, new clients' `hello` describes it.
fn announce(hub: &Hub, engine: &Engine, state: &LoopState, model_loaded: bool) {
    if model_loaded {
        hub.update_hello(|hello| describe(engine, hello));
        // Clients already connected learn the new decoder the way new ones do.
        hub.broadcast(&ServerMessage::Hello(hub.hello()), None, None);
    }
    let message = ServerMessage::Session(state.clone());
    hub.set_session_state(message.to_json().into());
    hub.broadcast(&message, None, None);
}

/// Learn from the feedback that clients have sent since the last item, and answer each.
fn apply_feedback(
    hub: &Hub,
    engine: &mut Engine,
    mut closed_loop: Option<&mut ClosedLoop>,
    feedback: &Receiver<Request>,
    sink: &mut ServiceSink<'_>,
) -> Result<()> {
    while let Ok(request) = feedback.try_recv() {
        match request.command {
            Command::Recalibrate => match closed_loop.as_deref_mut() {
                Some(closed_loop) => {
                    closed_loop.recalibrate();
                    tracing::info!(
                        "recalibration requested by a client: calibration block {} started; \
                         the current model keeps deciding until the new one is loaded",
                        closed_loop.calibrations()
                    );
                    // The answer before the new state, so the client reads them in order.
                    request.answer(&ServerMessage::Recalibrating(protocol::Recalibrating {
                        calibration: closed_loop.calibrations(),
                    }));
                    announce(hub, engine, &closed_loop.state(), false);
                }
                None => request.answer(&ServerMessage::error(
                    ErrorCode::BadRequest,
                    "this service runs no closed-loop session (start it with \
                     `neurostream session` or `run` without a model on a fitted \
                     pipeline) to recalibrate",
                )),
            },
            Command::Rollback => {
                let reply = if engine.rollback(sink)? {
                    let version = engine.pipeline().decoder_version();
                    sink.hub.set_decoder_version(version);
                    tracing::info!("decoder rolled back to the calibrated model");
                    ServerMessage::RolledBack(protocol::RolledBack {
                        decoder_version: version,
                    })
                } else {
                    ServerMessage::error(ErrorCode::BadRequest, "no decoder to roll back")
                };
                request.answer(&reply);
            }
            Command::Learn { label, seq } => {
                sink.reply = request.reply.clone();
                let outcome = engine.feedback(label, seq, sink);
                sink.reply = None;
                if let Err(refusal) = outcome? {
                    request.answer(&ServerMessage::error(
                        ErrorCode::BadRequest,
                        refusal.to_string(),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// What the DSP thread does with the engine's output: metrics, client broadcasts, the
/// recording.
struct ServiceSink<'a> {
    hub: &'a Hub,
    recorder: &'a mut Option<Recorder>,
    nats: Option<&'a NatsPublisher>,
    /// When the item being processed arrived from the source (command latency).
    arrived: Instant,
    want_features: bool,
    want_signal: bool,
    /// The client whose feedback is being applied.
    reply: Option<Arc<super::hub::ClientQueue>>,
}

impl ServiceSink<'_> {
    fn recorded(&self, accepted: bool) {
        if !accepted {
            self.hub.metrics.count_drop(DropReason::Recorder, 1);
        }
    }

    fn broadcast_status(&self, status: Status) {
        let message = ServerMessage::Status(status);
        if let Some(nats) = self.nats {
            nats.publish(Kind::Status, &message.to_json());
        }
        self.hub.broadcast(&message, None, None);
    }
}

impl EngineSink for ServiceSink<'_> {
    fn raw_chunk(&mut self, chunk: &Chunk) -> Result<()> {
        // Raw samples, before the pipeline filters them in place.
        if let Some(recorder) = self.recorder.as_mut() {
            let accepted = recorder.chunk(chunk);
            self.recorded(accepted);
        }
        if let Some(nats) = self.nats {
            nats.publish_raw(chunk);
        }
        let metrics = &self.hub.metrics;
        Metrics::add(&metrics.chunks_in, 1);
        Metrics::add(&metrics.samples_in, chunk.samples() as u64);
        Ok(())
    }

    fn filtered_chunk(&mut self, chunk: &Chunk, rate: f64) -> Result<()> {
        if self.want_signal {
            let values = (0..chunk.channels())
                .map(|c| chunk.channel(c).to_vec())
                .collect();
            self.hub.broadcast(
                &ServerMessage::Signal(protocol::Signal {
                    timestamp: chunk.timestamps()[0],
                    rate,
                    values,
                }),
                Some(Topic::Signal),
                None,
            );
        }
        Ok(())
    }

    fn window(&mut self, window: WindowFeatures<'_>, _marker: Option<&str>) -> Result<()> {
        Metrics::add(&self.hub.metrics.windows_processed, 1);
        let to_nats = self.nats.filter(|n| n.wants_features());
        if self.want_features || to_nats.is_some() {
            let message = ServerMessage::Features(protocol::Features {
                timestamp: window.end_timestamp,
                values: window.values.to_vec(),
                probabilities: window.probabilities.map(<[f64]>::to_vec),
            });
            if let Some(nats) = to_nats {
                nats.publish(Kind::Features, &message.to_json());
            }
            if self.want_features {
                self.hub.broadcast(&message, Some(Topic::Features), None);
            }
        }
        Ok(())
    }

    fn command(&mut self, command: &CommandEvent<'_>) -> Result<()> {
        Metrics::add(&self.hub.metrics.commands_out, 1);
        let json = ServerMessage::Command(protocol::Command {
            seq: command.seq,
            command: command.decision.command.to_owned(),
            class: command.decision.class.to_owned(),
            class_index: command.decision.class_index,
            confidence: command.decision.confidence,
            probabilities: command.probabilities.to_vec(),
            timestamp: command.timestamp,
            latency_ms: self.arrived.elapsed().as_secs_f64() * 1e3,
        })
        .to_json();
        let text: Arc<str> = json.as_str().into();
        if let Some(nats) = self.nats {
            nats.publish(Kind::Commands, &json);
        }
        if let Some(recorder) = self.recorder.as_mut() {
            let accepted = recorder.command(command.timestamp, json);
            self.recorded(accepted);
        }
        self.hub.broadcast_text(text, None, Some(self.arrived));
        Ok(())
    }

    fn events(&mut self, events: &[Event]) -> Result<()> {
        if let Some(recorder) = self.recorder.as_mut() {
            let accepted = recorder.markers(events.to_vec());
            self.recorded(accepted);
        }
        if let Some(nats) = self.nats {
            nats.publish_events(events);
        }
        Ok(())
    }

    fn status(&mut self, status: &StreamStatus) -> Result<()> {
        let message = match status {
            StreamStatus::Lost { reason } => Status {
                reason: Some(reason.clone()),
                ..Status::event(StatusEvent::StreamLost)
            },
            StreamStatus::Regained => Status::event(StatusEvent::StreamRegained),
            StreamStatus::Dropped { samples, reason } => {
                self.hub
                    .metrics
                    .count_drop(DropReason::SourceSamples, *samples);
                Status {
                    reason: Some(reason.clone()),
                    samples: Some(*samples),
                    ..Status::event(StatusEvent::SamplesDropped)
                }
            }
        };
        self.broadcast_status(message);
        Ok(())
    }

    fn refused(&mut self, rejected: &Rejected) -> Result<()> {
        let reason = match rejected.kind {
            RejectKind::BadValues => DropReason::BadSamples,
            RejectKind::Duplicate => DropReason::Duplicate,
        };
        self.hub.metrics.count_drop(reason, rejected.samples as u64);
        self.broadcast_status(Status {
            reason: Some(rejected.reason.clone()),
            samples: Some(rejected.samples as u64),
            ..Status::event(StatusEvent::SamplesDropped)
        });
        Ok(())
    }

    fn session_event(&mut self, timestamp: f64, event: &SessionEvent) -> Result<()> {
        if let Some(recorder) = self.recorder.as_mut() {
            let accepted = recorder.session(timestamp, event);
            self.recorded(accepted);
        }
        Ok(())
    }

    fn learned(&mut self, learned: &Learned<'_>) -> Result<()> {
        if learned.applied {
            Metrics::add(&self.hub.metrics.feedback_applied, 1);
        }
        self.hub.set_decoder_version(learned.decoder_version);
        if let Some(reply) = &self.reply {
            reply.push(Outgoing {
                text: ServerMessage::Learned(protocol::Learned {
                    class: learned.class.to_owned(),
                    applied: learned.applied,
                    decoder_version: learned.decoder_version,
                    seq: learned.seq,
                })
                .to_json()
                .into(),
                arrived: None,
            });
        }
        Ok(())
    }
}
