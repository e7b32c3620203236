//! One session engine for every driver: a live session through the service (with a refused NaN
//! chunk, a duplicate chunk, feedback, some naming a command, and a rollback to the calibrated
//! model), recorded to XDF, gives the
//! same commands through `replay --commands`, through the library's faithful replay at any
//! chunk size, and through the engine driver `evaluate --online` uses.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use neurostream::control::ControlConfig;
use neurostream::decoder::mlp::MlpConfig;
use neurostream::decoder::DecoderConfig;
use neurostream::engine::{
    self, CommandCollector, CommandRecord, Engine, RecordedSignal, RefusedKind, SessionEvent,
};
use neurostream::io::StreamData;
use neurostream::pipeline::{Pipeline, PipelineConfig};
use neurostream::record::{self, RecordConfig, Session};
use neurostream::service::{Service, ServiceConfig};
use neurostream::source::simulator::{self, SimulatorConfig};
use neurostream::source::{Source, SourceItem};
use neurostream::stream::{Chunk, StreamInfo};
use neurostream::{epochs, evaluate};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

const BIN: &str = env!("CARGO_BIN_EXE_neurostream");
const PATIENCE: Duration = Duration::from_secs(120);

fn scratch(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("neurostream-engine-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The demo chain with the plastic net (so feedback changes later commands) and a controller
/// that decides readily.
fn plastic_pipeline() -> PipelineConfig {
    let mut config = PipelineConfig::default_demo();
    config.decoder = Some(DecoderConfig::Mlp(MlpConfig::default()));
    config.control = ControlConfig {
        commands: Vec::new(),
        threshold: Some(0.34),
        dwell: 1,
        refractory_seconds: 0.5,
        ..ControlConfig::default()
    };
    config
}

/// A simulated stream that waits for the client, then spoils item 100 with a NaN and repeats
/// the previous chunk as item 200 (a driver delivering twice).
struct Glitchy {
    inner: Box<dyn Source>,
    chunks: usize,
    previous: Option<Chunk>,
    gate: Arc<AtomicBool>,
}

impl Source for Glitchy {
    fn stream_info(&self) -> &StreamInfo {
        self.inner.stream_info()
    }

    fn next_item(&mut self) -> neurostream::Result<Option<SourceItem>> {
        while !self.gate.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(5));
        }
        self.chunks += 1;
        if self.chunks == 200 {
            if let Some(previous) = &self.previous {
                return Ok(Some(SourceItem::Chunk(previous.clone())));
            }
        }
        let item = self.inner.next_item()?;
        if let Some(SourceItem::Chunk(chunk)) = &item {
            let mut chunk = chunk.clone();
            self.previous = Some(chunk.clone());
            if self.chunks == 100 {
                chunk.channel_mut(0)[0] = f32::NAN;
            }
            return Ok(Some(SourceItem::Chunk(chunk)));
        }
        Ok(item)
    }
}

/// Equal command lists, or the first difference named (the lists are long).
fn assert_same(replayed: &[CommandRecord], recorded: &[CommandRecord], what: &str) {
    if let Some(i) =
        (0..replayed.len().max(recorded.len())).find(|&i| replayed.get(i) != recorded.get(i))
    {
        panic!(
            "{what}: {} replayed vs {} recorded commands; first difference at #{}: \
             replayed {:?}, recorded {:?}",
            replayed.len(),
            recorded.len(),
            i + 1,
            replayed.get(i),
            recorded.get(i)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_session_gives_the_same_commands_through_every_driver() {
    let dir = scratch("same");
    let file = dir.join("session.xdf");
    let config = plastic_pipeline();
    let calibration = SimulatorConfig {
        seed: 7,
        speed: 0.0,
        ..SimulatorConfig::default()
    };
    let epochs = epochs::cut(&simulator::record(&calibration, 60.0).unwrap(), &config).unwrap();
    let model = evaluate::train(&config, &epochs, vec!["simulated".into()]).unwrap();
    let live = SimulatorConfig {
        duration_seconds: Some(40.0),
        speed: 8.0,
        ..SimulatorConfig::default()
    };
    let gate = Arc::new(AtomicBool::new(false));
    let source = Glitchy {
        inner: Box::new(live.build().unwrap()),
        chunks: 0,
        previous: None,
        gate: gate.clone(),
    };
    let pipeline = Pipeline::build(&config, source.stream_info(), Some(model.clone())).unwrap();
    let controller = config.control.build(pipeline.class_names()).unwrap();
    let service = Service::start(
        ServiceConfig {
            bind: "127.0.0.1:0".parse().unwrap(),
            client_queue_bytes: 1 << 40,
            allow_feedback: true,
            feedback_token: Some("fb".into()),
            feedback_per_minute: 100_000,
            client_queue: 100_000,
            record: Some(RecordConfig {
                path: file.clone(),
                session: Session::new(&config, Some(&model)).unwrap(),
                overwrite: true,
            }),
            ..ServiceConfig::default()
        },
        Box::new(source),
        pipeline,
        Some(controller),
    )
    .await
    .unwrap();
    let url = format!("ws://{}/ws?feedback_token=fb", service.local_addr());
    let (mut socket, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    gate.store(true, Ordering::Relaxed);

    // Feedback on every third command: alternately about that command (by seq) and about the
    // latest window, with the class the command did not pick half of the time.
    let deadline = Instant::now() + PATIENCE;
    let mut live_commands = Vec::new();
    let mut sent = 0usize;
    let mut rolled_back = 0;
    while let Ok(Some(Ok(message))) = tokio::time::timeout(PATIENCE, socket.next()).await {
        assert!(Instant::now() < deadline, "the session did not end in time");
        let Message::Text(text) = message else {
            continue;
        };
        let message: Value = serde_json::from_str(text.as_str()).unwrap();
        if message["type"] == "rolled_back" {
            rolled_back += 1;
        }
        if message["type"] != "command" {
            continue;
        }
        live_commands.push(message.clone());
        // Halfway, back to the calibrated model (recorded, so replayed at the same sample).
        if live_commands.len() == 36 {
            let rollback = r#"{"type":"rollback"}"#;
            if socket.send(Message::Text(rollback.into())).await.is_err() {
                break;
            }
        }
        if live_commands.len() % 3 != 0 {
            continue;
        }
        let class = if sent % 4 < 2 {
            message["class"].as_str().unwrap().to_owned()
        } else if message["class"] == "left" {
            "right".to_owned()
        } else {
            "left".to_owned()
        };
        let feedback = if sent % 2 == 0 {
            format!(
                r#"{{"type":"feedback","class":"{class}","seq":{}}}"#,
                message["seq"]
            )
        } else {
            format!(r#"{{"type":"feedback","class":"{class}"}}"#)
        };
        sent += 1;
        if socket.send(Message::Text(feedback.into())).await.is_err() {
            break;
        }
    }
    let summary = service.wait().await.unwrap();
    assert_eq!(summary.recorder_dropped, 0);
    assert_eq!(rolled_back, 1, "the rollback was answered");
    assert!(summary.feedback_applied >= 2, "{summary:?}");

    let recorded = record::load(&file).unwrap();
    // The live commands the client saw are the recorded ones.
    assert_eq!(recorded.commands.len(), live_commands.len());
    for (recorded, seen) in recorded.commands.iter().zip(&live_commands) {
        assert_eq!(recorded.seq, seen["seq"].as_u64().unwrap());
        assert_eq!(recorded.class, seen["class"].as_str().unwrap());
        assert_eq!(recorded.timestamp, seen["timestamp"].as_f64().unwrap());
    }
    // The session holds what has to be replayed: both refusals with their extent, feedback
    // about named commands and about the latest window.
    let refused = |kind: RefusedKind| {
        recorded
            .events
            .iter()
            .filter(|e| matches!(e, SessionEvent::Refused { kind: k, .. } if *k == kind))
            .count()
    };
    assert_eq!(refused(RefusedKind::BadValues), 1, "{:?}", recorded.events);
    assert_eq!(refused(RefusedKind::Duplicate), 1, "{:?}", recorded.events);
    let feedback = |named: bool| {
        recorded
            .events
            .iter()
            .filter(|e| {
                matches!(e, SessionEvent::Feedback { applied: true, seq, .. } if seq.is_some() == named)
            })
            .count()
    };
    assert!(
        feedback(true) >= 1 && feedback(false) >= 1,
        "{:?}",
        recorded.events
    );

    // 1. The library's faithful replay, at chunk sizes unlike the live ones.
    let stored = recorded.session.pipeline_config().unwrap();
    let stored_model = recorded.session.model().unwrap();
    for chunk in [1, 11, 1000] {
        let replayed =
            record::replay_commands(&recorded, &stored, stored_model.clone(), chunk).unwrap();
        assert_same(&replayed, &recorded.commands, &format!("chunks of {chunk}"));
    }

    // 2. The engine driver `evaluate --online` runs, fed the same signal and events.
    let signal = recorded.recording.primary_signal().unwrap();
    let StreamData::Signal { values, .. } = &signal.data else {
        unreachable!()
    };
    let markers = recorded.recording.events();
    let mut engine = Engine::build(&stored, &signal.info, stored_model.clone()).unwrap();
    let mut collected = CommandCollector::default();
    engine::replay(
        &mut engine,
        RecordedSignal {
            info: &signal.info,
            values,
            timestamps: &signal.timestamps,
            markers: &markers,
        },
        &recorded.events,
        16,
        &mut collected,
    )
    .unwrap();
    assert_same(&collected.commands, &recorded.commands, "evaluate's driver");
    assert_eq!(engine.summary().feedback_applied, summary.feedback_applied);

    // 3. The command line: `replay --commands` recomputes and checks against the recording.
    let out = Command::new(BIN)
        .args(["replay", file.to_str().unwrap(), "--commands"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "replay --commands: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = String::from_utf8(out.stdout).unwrap();
    assert_eq!(lines.lines().count(), recorded.commands.len());

    // The events matter: without them (no feedback, refusals cut elsewhere) commands differ.
    let mut without = recorded.clone();
    without.events.clear();
    let frozen = record::replay_commands(&without, &stored, stored_model, 16).unwrap();
    assert_ne!(frozen, recorded.commands);
    eprintln!(
        "{} commands, {} session events ({} feedback applied), identical through the service, \
         replay at 1/11/1000/16-sample chunks and the CLI",
        recorded.commands.len(),
        recorded.events.len(),
        summary.feedback_applied
    );
    let _ = std::fs::remove_dir_all(dir);
}
