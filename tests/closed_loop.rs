//! The closed loop on real EEG: a service with no model on a tangent-space pipeline calibrates
//! on the stream's own cues (EEGMMIDB R04 + R08, their T1/T2 markers standing in for the
//! paradigm's cues), trains, hot-loads the model (clients are told, `hello` changes), then
//! decides R12's cued trials online and learns from their labels; the online accuracy is
//! compared with `evaluate --holdout R12` on the same pipeline. The session's recording then
//! replays to the same commands, calibration and model load included.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use neurostream::closed_loop::ClosedLoop;
use neurostream::engine::{Engine, SessionEvent};
use neurostream::io::{self, RecordedStream, Recording, StreamData};
use neurostream::pipeline::PipelineConfig;
use neurostream::record::{self, RecordConfig, Session};
use neurostream::service::{Service, ServiceConfig};
use neurostream::source::replay::Replay;
use neurostream::source::{Pace, Source, SourceItem};
use neurostream::stream::{Event, StreamInfo};
use neurostream::{epochs, evaluate};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

const PATIENCE: Duration = Duration::from_secs(180);

/// Runs one after the other on one clock (each starts one sample after the last ended), as a
/// headset streaming through a calibration and an online run would.
fn concatenate(runs: &[Recording]) -> (Recording, Vec<usize>) {
    let signals: Vec<&RecordedStream> = runs.iter().map(|r| r.primary_signal().unwrap()).collect();
    let info = signals[0].info.clone();
    let channels = info.channel_count();
    let period = 1.0 / info.nominal_rate;
    let mut per_channel: Vec<Vec<f32>> = vec![Vec::new(); channels];
    let mut timestamps = Vec::new();
    let mut events: Vec<Event> = Vec::new();
    let mut ends = Vec::new();
    for (run, signal) in runs.iter().zip(&signals) {
        assert_eq!(signal.info.channel_count(), channels);
        let shift = match timestamps.last() {
            Some(&last) => last + period - signal.timestamps[0],
            None => 0.0,
        };
        for (c, channel) in per_channel.iter_mut().enumerate() {
            channel.extend_from_slice(signal.channel(c).unwrap());
        }
        timestamps.extend(signal.timestamps.iter().map(|t| t + shift));
        events.extend(run.events().into_iter().map(|mut e| {
            e.onset += shift;
            e
        }));
        ends.push(timestamps.len());
    }
    let samples = timestamps.len();
    let marker_info = record::marker_stream_info("cues");
    let recording = Recording {
        streams: vec![
            RecordedStream {
                info,
                timestamps,
                data: StreamData::Signal {
                    samples,
                    values: per_channel.concat(),
                },
            },
            RecordedStream {
                info: marker_info,
                timestamps: events.iter().map(|e| e.onset).collect(),
                data: StreamData::Markers(events),
            },
        ],
    };
    (recording, ends)
}

/// A replay that holds the online part back until the model is loaded, as a user waits for
/// the page to say "go" (training takes a moment; at replay speed the trials would not wait).
struct HeldBack {
    inner: Replay,
    delivered: usize,
    hold_at: usize,
    go: Arc<AtomicBool>,
}

impl Source for HeldBack {
    fn stream_info(&self) -> &StreamInfo {
        self.inner.stream_info()
    }

    fn marker_info(&self) -> Option<&StreamInfo> {
        self.inner.marker_info()
    }

    fn next_item(&mut self) -> neurostream::Result<Option<SourceItem>> {
        if self.delivered >= self.hold_at {
            let deadline = Instant::now() + PATIENCE;
            while !self.go.load(Ordering::Relaxed) {
                if Instant::now() > deadline {
                    return Err(neurostream::Error::Other(
                        "the model was not loaded in time".into(),
                    ));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        let item = self.inner.next_item()?;
        if let Some(SourceItem::Chunk(chunk)) = &item {
            self.delivered += chunk.samples();
        }
        Ok(item)
    }
}

struct Outcome {
    online_trials: usize,
    online_hits: usize,
    commands: u64,
    hello_classes: Vec<String>,
    phases: Vec<String>,
}

fn closed_loop_session(
    config: &PipelineConfig,
    recording: &Recording,
    hold_at: usize,
    record_to: Option<&std::path::Path>,
) -> Outcome {
    let go = Arc::new(AtomicBool::new(false));
    let source = HeldBack {
        inner: Replay::new(recording, None, 16, Pace::AsFastAsPossible).unwrap(),
        delivered: 0,
        hold_at,
        go: go.clone(),
    };
    let info = source.stream_info().clone();
    let engine = Engine::build(config, &info, None).unwrap();
    let closed_loop = ClosedLoop::new(config, &info, false, None)
        .unwrap()
        .unwrap();
    let service_config = ServiceConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        client_queue_bytes: 1 << 40,
        client_queue: 1_000_000,
        record: record_to.map(|path| RecordConfig {
            path: path.to_path_buf(),
            session: Session::new(config, None).unwrap(),
            overwrite: true,
        }),
        ..ServiceConfig::default()
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async move {
        let service =
            Service::start_session(service_config, Box::new(source), engine, Some(closed_loop))
                .await
                .unwrap();
        let url = format!("ws://{}/ws", service.local_addr());
        let (mut socket, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
        let mut phases = Vec::new();
        let mut hello_classes = Vec::new();
        while let Ok(Some(Ok(message))) = tokio::time::timeout(PATIENCE, socket.next()).await {
            let Message::Text(text) = message else {
                continue;
            };
            let message: Value = serde_json::from_str(text.as_str()).unwrap();
            if message["type"] == "session" {
                let phase = message["phase"].as_str().unwrap().to_owned();
                // The fitted model goes live first; the calibrated one (probabilities and
                // operating point) comes with the CV score, and the online run starts then.
                if phase == "online"
                    && message["cv_accuracy"].is_number()
                    && !go.load(Ordering::Relaxed)
                {
                    // A client connecting now gets the hello of the loaded model.
                    let hello = service_hello(&service).await;
                    hello_classes = hello["classes"]
                        .as_array()
                        .map(|a| a.iter().map(|c| c.as_str().unwrap().to_owned()).collect())
                        .unwrap_or_default();
                    go.store(true, Ordering::Relaxed);
                }
                if phases.last() != Some(&phase) {
                    phases.push(phase);
                }
            }
        }
        let summary = service.wait().await.unwrap();
        let (online_trials, online_hits) = summary.online_trials.unwrap();
        Outcome {
            online_trials,
            online_hits,
            commands: summary.commands,
            hello_classes,
            phases,
        }
    })
}

/// The `hello` a new client gets.
async fn service_hello(service: &Service) -> Value {
    let url = format!("ws://{}/ws", service.local_addr());
    let Ok((mut socket, _)) = tokio_tungstenite::connect_async(&url).await else {
        return Value::Null;
    };
    match tokio::time::timeout(Duration::from_secs(5), socket.next()).await {
        Ok(Some(Ok(Message::Text(text)))) => serde_json::from_str(text.as_str()).unwrap(),
        _ => Value::Null,
    }
}

fn pipeline(name: &str) -> PipelineConfig {
    PipelineConfig::from_file(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("pipelines")
            .join(name),
    )
    .unwrap()
}

#[test]
fn calibrate_on_r04_r08_then_online_on_r12_matches_the_holdout_evaluation() {
    let mut rows = Vec::new();
    let mut commands = 0;
    for subject in ["S001", "S003", "S004", "S007", "S042"] {
        let Some(files) = common::imagery_runs(subject) else {
            return;
        };
        let runs: Vec<Recording> = files.iter().map(|f| io::open(f).unwrap()).collect();
        let mut config = pipeline("mi_tangent_lda.toml");
        // Calibrate on every cue of R04 + R08: as many trials per class as the rarer class has.
        let calibration = epochs::cut_all(&runs[..2], &config).unwrap();
        let per_class = (0..2)
            .map(|c| calibration.labels.iter().filter(|&&l| l == c).count())
            .min()
            .unwrap();
        config.paradigm.calibration_trials = per_class;
        let (recording, ends) = concatenate(&runs);
        let outcome = closed_loop_session(&config, &recording, ends[1], None);
        assert_eq!(
            outcome.phases,
            ["calibrating", "training", "online"],
            "{subject}"
        );
        let test = epochs::cut(&runs[2], &config).unwrap();
        let holdout = evaluate::holdout(&config, &calibration, &test).unwrap();
        // The service adapts online (re-centring, label feedback): `evaluate --online` on the
        // same runs is what it must match; the frozen holdout is printed beside it.
        let offline = evaluate::online(&config, &calibration, &[&runs[2]]).unwrap();
        let online = outcome.online_hits as f64 / outcome.online_trials as f64;
        eprintln!(
            "{subject}: online {}/{} = {online:.3}, evaluate --online {:.3}, holdout {:.3} ({} \
             test trials), {} commands",
            outcome.online_hits,
            outcome.online_trials,
            offline.adaptive.accuracy,
            holdout.accuracy,
            test.len(),
            outcome.commands
        );
        assert!(outcome.online_trials >= test.len() - 1, "{subject}");
        // Commands need a confident decoder: calibrated probabilities of a subject near
        // chance rarely pass the controller's threshold, and that is right.
        commands += outcome.commands;
        assert_eq!(outcome.hello_classes, ["left", "right"], "{subject}");
        rows.push((subject, online, offline.adaptive.accuracy, holdout.accuracy));
    }
    assert!(commands > 0);
    let n = rows.len() as f64;
    let online: f64 = rows.iter().map(|r| r.1).sum::<f64>() / n;
    let offline: f64 = rows.iter().map(|r| r.2).sum::<f64>() / n;
    let holdout: f64 = rows.iter().map(|r| r.3).sum::<f64>() / n;
    eprintln!(
        "mean over {n} subjects: online {online:.3}, evaluate --online {offline:.3}, holdout \
         {holdout:.3}"
    );
    assert!(
        (online - offline).abs() <= 0.05,
        "online {online:.3} vs evaluate --online {offline:.3}"
    );
}

#[test]
fn a_closed_loop_session_replays_exactly_from_its_recording() {
    let Some(files) = common::imagery_runs("S001") else {
        return;
    };
    let runs: Vec<Recording> = files.iter().map(|f| io::open(f).unwrap()).collect();
    let mut config = pipeline("mi_tangent_lda.toml");
    config.paradigm.calibration_trials = 7;
    // Calibrate on R04 (half of it), go online for R08.
    let (recording, ends) = concatenate(&runs[..2]);
    let dir = std::env::temp_dir().join(format!("neurostream-loop-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("session.xdf");
    let outcome = closed_loop_session(&config, &recording, ends[0], Some(&file));
    assert_eq!(
        outcome.hello_classes,
        ["left", "right"],
        "hello after the model load"
    );
    assert!(outcome.online_trials >= 14, "{}", outcome.online_trials);

    let recorded = record::load(&file).unwrap();
    assert!(recorded.session.model.is_none());
    let loaded = recorded
        .events
        .iter()
        .filter(|e| matches!(e, SessionEvent::ModelLoaded { .. }))
        .count();
    // The fitted model, then the same weights calibrated (probabilities, operating point).
    assert_eq!(loaded, 2);
    let feedback = recorded
        .events
        .iter()
        .filter(|e| matches!(e, SessionEvent::Feedback { .. }))
        .count();
    assert_eq!(
        feedback, outcome.online_trials,
        "one feedback per decided cued trial"
    );
    // The live default's decoder (tangent space + adaptive LDA) learns from every cued
    // trial: each feedback event is recorded as applied.
    let applied = recorded
        .events
        .iter()
        .filter(|e| matches!(e, SessionEvent::Feedback { applied: true, .. }))
        .count();
    assert_eq!(applied, feedback, "every cued trial's label is learned");
    assert_eq!(recorded.commands.len() as u64, outcome.commands);
    let stored = recorded.session.pipeline_config().unwrap();
    let replayed = record::replay_commands(&recorded, &stored, None, 16).unwrap();
    assert_eq!(replayed, recorded.commands);
    let _ = std::fs::remove_dir_all(dir);
}
