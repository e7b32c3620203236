//! Threads and queues of a running service.
//!
//! - The **source thread** calls the blocking [`Source::next_item`] and sends each item, with
//!   its arrival time, into a bounded channel (it blocks when the DSP thread is behind: that
//!   is back-pressure on a finite source, never on a client).
//! - The **DSP thread** runs [`Pipeline::process`] and [`Controller::decide`], serialises each
//!   message once and pushes it into every client's [`ClientQueue`] without waiting; between
//!   chunks it applies client feedback from a second bounded channel.
//! - The **client tasks** (see [`super::server`]) drain their own queue onto the socket.
//! - With [`ServiceConfig::record`], the DSP thread also hands every raw chunk, marker batch,
//!   command and feedback step to a [`Recorder`] (its own thread, bounded channel, never
//!   waited for; see [`crate::record`]).

use std::net::SocketAddr;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::Instant;

use rand::Rng;

use super::hub::{FeedbackRequest, Hub, Outgoing};
use super::metrics::{DropReason, Metrics};
use super::protocol::{
    self, DecoderDescription, ErrorCode, Hello, Limits, ServerMessage, Status, StatusEvent,
    StreamDescription, Topic,
};
use super::{ServiceConfig, Shutdown};
use crate::control::Controller;
use crate::error::{Error, Result};
use crate::pipeline::{Pipeline, RecentCommands, RejectKind};
use crate::record::{RecordSummary, Recorder, SessionEvent};
use crate::source::{Source, SourceItem, StreamStatus};

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
}

/// A running service: the source and DSP threads and the HTTP/WebSocket server.
pub struct Service {
    addr: SocketAddr,
    hub: Arc<Hub>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    dsp: Option<std::thread::JoinHandle<Result<DspSummary>>>,
}

impl Service {
    /// Bind `config.bind`, then start the source (on its own thread), the DSP thread and the
    /// server. `controller` turns probabilities into commands (`None`: the pipeline has no
    /// decoder, only features and signal are served). The service stops on
    /// [`Service::shutdown`] or when a finite source ends.
    pub async fn start(
        config: ServiceConfig,
        mut source: Box<dyn Source>,
        pipeline: Pipeline,
        controller: Option<Controller>,
    ) -> Result<Service> {
        config.validate()?;
        let listener = tokio::net::TcpListener::bind(config.bind)
            .await
            .map_err(|e| Error::Other(format!("cannot listen on {}: {e}", config.bind)))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::Other(format!("cannot read the bound address: {e}")))?;
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
                    controller.is_some() && !pipeline.class_names().is_empty(),
                )
            })
            .transpose()?;
        let hello = Hello {
            protocol: protocol::PROTOCOL_VERSION,
            session: format!("{:016x}", rand::thread_rng().gen::<u64>()),
            stream: StreamDescription {
                name: info.name.clone(),
                kind: info.stream_type.clone(),
                rate: info.nominal_rate,
                channel_count: info.channel_count(),
            },
            channels: pipeline.output_info().labels().map(str::to_owned).collect(),
            classes: pipeline.class_names().to_vec(),
            features: pipeline.feature_names().to_vec(),
            decoder: pipeline.decoder().map(|d| DecoderDescription {
                kind: match d {
                    crate::decoder::AnyDecoder::Lda(_) => "lda",
                    crate::decoder::AnyDecoder::Svm(_) => "svm",
                    crate::decoder::AnyDecoder::Mlp(_) => "mlp",
                }
                .into(),
                version: pipeline.decoder_version(),
            }),
            limits: Limits {
                max_message_bytes: config.max_message_bytes,
                messages_per_second: config.client_messages_per_second,
                queue: config.client_queue,
            },
        };
        let (feedback_tx, feedback_rx) = mpsc::sync_channel(FEEDBACK_CHANNEL);
        let hub = Arc::new(Hub::new(config, hello, feedback_tx));

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
            .map_err(|e| Error::Other(format!("cannot start the source thread: {e}")))?;

        let dsp_hub = hub.clone();
        let dsp = std::thread::Builder::new()
            .name("neurostream-dsp".into())
            .spawn(move || {
                let mut recorder = recorder;
                let mut result = dsp_loop(
                    &dsp_hub,
                    pipeline,
                    controller,
                    items_rx,
                    feedback_rx,
                    &mut recorder,
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
                dsp_hub.broadcast(&ServerMessage::Status(status), None, None);
                dsp_hub.shutdown.trigger();
                result
            })
            .map_err(|e| Error::Other(format!("cannot start the DSP thread: {e}")))?;

        let server = tokio::spawn(super::server::serve(listener, hub.clone()));
        Ok(Service {
            addr,
            hub,
            server,
            dsp: Some(dsp),
        })
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
            .map_err(|e| Error::Other(format!("DSP thread: {e}")))?
            .map_err(|_| Error::Other("the DSP thread panicked".into()))??;
        match served {
            Ok(Ok(())) => Ok(summary),
            Ok(Err(e)) => Err(Error::Other(format!("server: {e}"))),
            Err(e) => Err(Error::Other(format!("server task: {e}"))),
        }
    }
}

fn dsp_loop(
    hub: &Hub,
    mut pipeline: Pipeline,
    mut controller: Option<Controller>,
    items: Receiver<(Result<SourceItem>, Instant)>,
    feedback: Receiver<FeedbackRequest>,
    recorder: &mut Option<Recorder>,
) -> Result<DspSummary> {
    let metrics = &hub.metrics;
    let mut summary = DspSummary::default();
    // Stream time of the newest sample processed: where session events sit in the recording.
    let mut now = 0.0;
    let recorder_drop = |recorded: bool| {
        if !recorded {
            metrics.count_drop(DropReason::Recorder, 1);
        }
    };
    let mut seq = 0u64;
    let mut recent = RecentCommands::new(pipeline.feature_names().len());
    let rate = pipeline.output_info().nominal_rate;
    loop {
        // A live stream can go quiet for minutes (headset off): wake up regularly so that
        // shutdown and client feedback are still served.
        let (item, arrived) = match items.recv_timeout(IDLE_WAKEUP) {
            Ok(received) => received,
            Err(RecvTimeoutError::Timeout) => {
                if hub.shutdown.is_triggered() {
                    break;
                }
                apply_feedback(
                    hub,
                    &mut pipeline,
                    &feedback,
                    &mut summary,
                    recorder,
                    &recent,
                    now,
                );
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        };
        if hub.shutdown.is_triggered() {
            break;
        }
        match item? {
            SourceItem::Chunk(mut chunk) => {
                // Raw samples, before the pipeline filters them in place.
                if let Some(recorder) = recorder.as_mut() {
                    recorder_drop(recorder.chunk(&chunk));
                }
                now = chunk.last_timestamp().unwrap_or(now);
                summary.chunks += 1;
                summary.samples += chunk.samples() as u64;
                Metrics::add(&metrics.chunks_in, 1);
                Metrics::add(&metrics.samples_in, chunk.samples() as u64);
                let want_features = hub.any_subscribed(Topic::Features);
                let rejected = pipeline.process(&mut chunk, |window| {
                    summary.windows += 1;
                    Metrics::add(&metrics.windows_processed, 1);
                    if want_features {
                        hub.broadcast(
                            &ServerMessage::Features(protocol::Features {
                                timestamp: window.end_timestamp,
                                values: window.values.to_vec(),
                                probabilities: window.probabilities.map(<[f64]>::to_vec),
                            }),
                            Some(Topic::Features),
                            None,
                        );
                    }
                    let (Some(controller), Some(probabilities)) =
                        (controller.as_mut(), window.probabilities)
                    else {
                        return;
                    };
                    if let Some(decision) = controller.decide(window.end_timestamp, probabilities) {
                        seq += 1;
                        recent.remember(seq, window.values);
                        summary.commands += 1;
                        Metrics::add(&metrics.commands_out, 1);
                        let json = ServerMessage::Command(protocol::Command {
                            seq,
                            command: decision.command.to_owned(),
                            class: decision.class.to_owned(),
                            class_index: decision.class_index,
                            confidence: decision.confidence,
                            probabilities: probabilities.to_vec(),
                            timestamp: window.end_timestamp,
                            latency_ms: arrived.elapsed().as_secs_f64() * 1e3,
                        })
                        .to_json();
                        let text: Arc<str> = json.as_str().into();
                        if let Some(recorder) = recorder.as_mut() {
                            recorder_drop(recorder.command(window.end_timestamp, json));
                        }
                        hub.broadcast_text(text, None, Some(arrived));
                    }
                });
                if let Some(rejected) = rejected {
                    // The pipeline has reset itself; the controller's dwell count must not
                    // bridge the hole either.
                    if let Some(c) = controller.as_mut() {
                        c.reset();
                    }
                    tracing::warn!("{}", rejected.reason);
                    let reason = match rejected.kind {
                        RejectKind::BadValues => DropReason::BadSamples,
                        RejectKind::Duplicate => DropReason::Duplicate,
                    };
                    metrics.count_drop(reason, rejected.samples as u64);
                    if let (Some(recorder), RejectKind::BadValues) =
                        (recorder.as_mut(), rejected.kind)
                    {
                        let event = SessionEvent::Reset {
                            after_samples: summary.samples,
                            reason: rejected.reason.clone(),
                        };
                        recorder_drop(recorder.session(now, &event));
                    }
                    hub.broadcast(
                        &ServerMessage::Status(Status {
                            reason: Some(rejected.reason),
                            samples: Some(rejected.samples as u64),
                            ..Status::event(StatusEvent::SamplesDropped)
                        }),
                        None,
                        None,
                    );
                } else if !chunk.is_empty() && hub.any_subscribed(Topic::Signal) {
                    let values = (0..chunk.channels())
                        .map(|c| chunk.channel(c).to_vec())
                        .collect();
                    hub.broadcast(
                        &ServerMessage::Signal(protocol::Signal {
                            timestamp: chunk.timestamps()[0],
                            rate,
                            values,
                        }),
                        Some(Topic::Signal),
                        None,
                    );
                }
            }
            SourceItem::Events(events) => {
                if let Some(recorder) = recorder.as_mut() {
                    recorder_drop(recorder.markers(events));
                }
            }
            SourceItem::Status(status) => {
                let message = match status {
                    StreamStatus::Lost { reason } => {
                        if let Some(recorder) = recorder.as_mut() {
                            let event = SessionEvent::Reset {
                                after_samples: summary.samples,
                                reason: reason.clone(),
                            };
                            recorder_drop(recorder.session(now, &event));
                        }
                        pipeline.reset();
                        if let Some(c) = controller.as_mut() {
                            c.reset();
                        }
                        Status {
                            reason: Some(reason),
                            ..Status::event(StatusEvent::StreamLost)
                        }
                    }
                    StreamStatus::Regained => Status::event(StatusEvent::StreamRegained),
                    StreamStatus::Dropped { samples, reason } => {
                        metrics.count_drop(DropReason::SourceSamples, samples);
                        Status {
                            reason: Some(reason),
                            samples: Some(samples),
                            ..Status::event(StatusEvent::SamplesDropped)
                        }
                    }
                };
                hub.broadcast(&ServerMessage::Status(message), None, None);
            }
        }
        apply_feedback(
            hub,
            &mut pipeline,
            &feedback,
            &mut summary,
            recorder,
            &recent,
            now,
        );
    }
    Ok(summary)
}

/// Learn from the feedback that clients have sent since the last chunk, and answer each.
fn apply_feedback(
    hub: &Hub,
    pipeline: &mut Pipeline,
    feedback: &Receiver<FeedbackRequest>,
    summary: &mut DspSummary,
    recorder: &mut Option<Recorder>,
    recent: &RecentCommands,
    now: f64,
) {
    while let Ok(request) = feedback.try_recv() {
        let applied = match request.seq {
            None => pipeline.learn(request.label),
            Some(seq) => match recent.features(seq) {
                Some(features) => pipeline.learn_from(features, request.label),
                None => {
                    request.reply.push(Outgoing {
                        text: ServerMessage::error(
                            ErrorCode::BadRequest,
                            format!(
                                "feedback for command seq {seq}: not among the last {} \
                                 commands; nothing learned",
                                RecentCommands::CAPACITY
                            ),
                        )
                        .to_json()
                        .into(),
                        arrived: None,
                    });
                    continue;
                }
            },
        };
        // Recorded with the sample count it follows, so a replay learns at the same point.
        if let Some(recorder) = recorder.as_mut() {
            let event = SessionEvent::Feedback {
                after_samples: summary.samples,
                label: request.label,
                applied,
                seq: request.seq,
            };
            if !recorder.session(now, &event) {
                hub.metrics.count_drop(DropReason::Recorder, 1);
            }
        }
        if applied {
            summary.feedback_applied += 1;
            Metrics::add(&hub.metrics.feedback_applied, 1);
        }
        let version = pipeline.decoder_version();
        hub.set_decoder_version(version);
        request.reply.push(Outgoing {
            text: ServerMessage::Learned(protocol::Learned {
                class: pipeline.class_names()[request.label].clone(),
                applied,
                decoder_version: version,
                seq: request.seq,
            })
            .to_json()
            .into(),
            arrived: None,
        });
    }
}
