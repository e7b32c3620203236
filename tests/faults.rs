//! Fault suite: what a glitching headset or driver does to a live stream, injected into the
//! pipeline and the service, with the count of faults per kind printed. Nothing here asserts
//! speed.
//!
//! - NaN, +Inf, −Inf and absurd values: the chunk is refused, counted and reported; no window
//!   containing it produces features or a command; filters restart, so the stream recovers.
//! - Chunks delivered twice are skipped; chunk sizes change freely; a clock that jumps back
//!   does not silence the controller.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use neurostream::control::ControlConfig;
use neurostream::pipeline::{Pipeline, PipelineConfig, RejectKind};
use neurostream::service::{Service, ServiceConfig};
use neurostream::source::simulator::{self, SimulatorConfig};
use neurostream::source::{Source, SourceItem};
use neurostream::stream::{Chunk, StreamInfo};
use neurostream::{epochs, evaluate};
use tokio_tungstenite::tungstenite::Message;

const RATE: f64 = 160.0;

/// The demo pipeline with a decoder trained on simulated data; every window commands.
fn trained_pipeline() -> (PipelineConfig, neurostream::model::Model) {
    let mut config = PipelineConfig::default_demo();
    config.control = ControlConfig {
        commands: Vec::new(),
        threshold: Some(0.0),
        dwell: 1,
        refractory_seconds: 0.0,
        ..ControlConfig::default()
    };
    let calibration = SimulatorConfig {
        seed: 7,
        speed: 0.0,
        ..SimulatorConfig::default()
    };
    let epochs = epochs::cut(&simulator::record(&calibration, 90.0).unwrap(), &config).unwrap();
    let model = evaluate::train(&config, &epochs, vec!["simulated".into()]).unwrap();
    (config, model)
}

/// 60 s of simulated EEG as (channel-major values, timestamps, stream info).
fn stream() -> (Vec<Vec<f32>>, Vec<f64>, StreamInfo) {
    let recording = simulator::record(
        &SimulatorConfig {
            speed: 0.0,
            ..SimulatorConfig::default()
        },
        60.0,
    )
    .unwrap();
    let signal = recording.primary_signal().unwrap();
    let channels = (0..signal.info.channel_count())
        .map(|c| signal.channel(c).unwrap().to_vec())
        .collect();
    (channels, signal.timestamps.clone(), signal.info.clone())
}

fn chunk(channels: &[Vec<f32>], timestamps: &[f64], start: usize, end: usize) -> Chunk {
    let mut data = Vec::with_capacity(channels.len() * (end - start));
    for channel in channels {
        data.extend_from_slice(&channel[start..end]);
    }
    Chunk::from_channel_major(channels.len(), data, timestamps[start..end].to_vec())
}

/// Window end time → (features, probabilities).
type Windows = Vec<(f64, Vec<f32>, Vec<f64>)>;

#[test]
fn bad_values_are_refused_and_the_stream_recovers() {
    let (config, model) = trained_pipeline();
    let (channels, timestamps, info) = stream();
    let window = config.features.window_seconds;

    // Clean reference, fixed chunks of 16.
    let mut clean = Pipeline::build(&config, &info, Some(model.clone())).unwrap();
    let mut reference: Windows = Vec::new();
    let mut start = 0;
    while start < timestamps.len() {
        let end = (start + 16).min(timestamps.len());
        let mut c = chunk(&channels, &timestamps, start, end);
        assert!(clean
            .process(&mut c, |w| reference.push((
                w.end_timestamp,
                w.values.to_vec(),
                w.probabilities.unwrap().to_vec()
            )))
            .is_none());
        start = end;
    }

    // The same stream in chunks of changing size (1 to 40 samples), with faults injected:
    // NaN, +Inf, −Inf, an absurd value, each in its own chunk on some channel.
    let faults: [(&str, f32, f64); 4] = [
        ("NaN", f32::NAN, 10.0),
        ("+Inf", f32::INFINITY, 20.0),
        ("-Inf", f32::NEG_INFINITY, 30.0),
        ("absurd 1e30", 1e30, 40.0),
    ];
    let mut faulty = Pipeline::build(&config, &info, Some(model)).unwrap();
    let mut windows: Windows = Vec::new();
    let mut refused: Vec<(f64, f64, String)> = Vec::new();
    let mut start = 0;
    let mut size = 1;
    while start < timestamps.len() {
        let end = (start + size).min(timestamps.len());
        size = size % 40 + 7;
        let mut c = chunk(&channels, &timestamps, start, end);
        for (k, (_, value, at)) in faults.iter().enumerate() {
            let sample = (at * RATE) as usize;
            if (start..end).contains(&sample) {
                c.channel_mut(k * 3 % info.channel_count())[sample - start] = *value;
            }
        }
        let rejected = faulty.process(&mut c, |w| {
            windows.push((
                w.end_timestamp,
                w.values.to_vec(),
                w.probabilities.unwrap().to_vec(),
            ))
        });
        if let Some(rejected) = rejected {
            assert_eq!(rejected.kind, RejectKind::BadValues);
            assert_eq!(rejected.bad_values, 1);
            refused.push((timestamps[start], timestamps[end - 1], rejected.reason));
        }
        start = end;
    }
    assert_eq!(refused.len(), faults.len(), "{refused:?}");
    for ((name, _, _), (_, _, reason)) in faults.iter().zip(&refused) {
        let shown = name.split(' ').next().unwrap().replace("+Inf", "inf");
        let shown = shown.replace("-Inf", "-inf");
        let shown = if shown == "absurd" {
            "1e30".into()
        } else {
            shown
        };
        assert!(reason.contains(&shown), "{name}: {reason}");
    }
    // No window overlaps a refused chunk, and every value out of the pipeline is finite.
    for (end, values, probabilities) in &windows {
        for (first, last, _) in &refused {
            assert!(
                !(*end - window < *last && *end >= *first),
                "window ending {end} overlaps refused samples {first}..{last}"
            );
        }
        assert!(values.iter().all(|v| v.is_finite()));
        assert!(probabilities.iter().all(|p| p.is_finite()));
    }
    // Recovery: 5 s after each fault the filters have forgotten their restart, and the
    // features match the clean run's windows ending at the same instants.
    let mut compared = 0;
    for (end, values, probabilities) in &windows {
        let settled = refused
            .iter()
            .all(|(_, last, _)| *end < *last || *end > last + 5.0);
        if !settled {
            continue;
        }
        let Some((_, clean_values, clean_probabilities)) =
            reference.iter().find(|(t, _, _)| (t - end).abs() < 1e-9)
        else {
            continue;
        };
        compared += 1;
        for (a, b) in values.iter().zip(clean_values) {
            assert!(
                (a - b).abs() <= 1e-3 * b.abs().max(1.0),
                "{end}: {a} vs {b}"
            );
        }
        for (a, b) in probabilities.iter().zip(clean_probabilities) {
            assert!((a - b).abs() < 1e-3, "{end}: {a} vs {b}");
        }
    }
    // After a reset the window grid restarts, so only some windows line up with the clean
    // run's; those must agree, and windows must go on to the end of the stream.
    assert!(compared >= 20, "compared {compared} windows");
    let last_clean = reference.last().unwrap().0;
    let last = windows.last().unwrap().0;
    assert!(
        last_clean - last <= config.features.hop_seconds + 1e-9,
        "{last} vs {last_clean}"
    );
    let missing = reference.len() - windows.len();
    eprintln!(
        "faults injected: NaN 1, +Inf 1, -Inf 1, absurd 1 (chunk sizes 1..46); refused {} \
         chunks; {} of {} windows withheld around them; {compared} later windows equal the \
         clean run",
        refused.len(),
        missing,
        reference.len()
    );
}

#[test]
fn duplicate_chunks_are_skipped_and_a_clock_reset_keeps_commands_flowing() {
    let (config, model) = trained_pipeline();
    let (channels, timestamps, info) = stream();
    let mut pipeline = Pipeline::build(&config, &info, Some(model)).unwrap();
    let mut controller = ControlConfig {
        refractory_seconds: 1.0,
        ..config.control.clone()
    }
    .build(pipeline.class_names())
    .unwrap();
    let mut duplicates = 0;
    let mut commands_after_reset = 0;
    let mut windows = 0;
    let half = timestamps.len() / 2;
    let mut start = 0;
    while start < timestamps.len() {
        let end = (start + 16).min(timestamps.len());
        let mut c = chunk(&channels, &timestamps, start, end);
        // From half-way, the clock restarts 25 s earlier (a clock reset on the device).
        if start >= half {
            for t in c.timestamps_mut() {
                *t -= 25.0;
            }
        }
        let copy = c.clone();
        let mut decide = |pipeline: &mut Pipeline, c: &mut Chunk| {
            pipeline.process(c, |w| {
                windows += 1;
                if controller
                    .decide(w.end_timestamp, w.probabilities.unwrap())
                    .is_some()
                    && start >= half
                {
                    commands_after_reset += 1;
                }
            })
        };
        assert!(decide(&mut pipeline, &mut c).is_none());
        // Every fifth chunk arrives twice.
        if (start / 16) % 5 == 0 {
            let mut again = copy;
            let rejected = decide(&mut pipeline, &mut again).expect("duplicate refused");
            assert_eq!(rejected.kind, RejectKind::Duplicate);
            assert!(rejected.reason.contains("duplicate"), "{}", rejected.reason);
            duplicates += 1;
        }
        start = end;
    }
    // 30 s after the reset at 1 command per second (refractory 1 s): not silenced for 25 s.
    assert!(
        commands_after_reset >= 25,
        "{commands_after_reset} commands after the clock reset"
    );
    eprintln!(
        "duplicates injected and skipped: {duplicates}; clock reset −25 s: \
         {commands_after_reset} commands in the 30 s after it; {windows} windows"
    );
}

/// A source that injects a NaN chunk and a duplicate chunk into a simulated stream.
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
                return Ok(Some(SourceItem::Chunk(chunk)));
            }
        }
        Ok(item)
    }
}

/// Through the service: clients are told (`samples_dropped` with the reason), the counters
/// say why, and commands keep coming after each fault.
#[test]
fn the_service_reports_faults_and_keeps_commanding() {
    let (config, model) = trained_pipeline();
    let live = SimulatorConfig {
        duration_seconds: Some(30.0),
        speed: 0.0,
        ..SimulatorConfig::default()
    };
    let gate = Arc::new(AtomicBool::new(false));
    let source = Glitchy {
        inner: Box::new(live.build().unwrap()),
        chunks: 0,
        previous: None,
        gate: gate.clone(),
    };
    let pipeline = Pipeline::build(&config, source.stream_info(), Some(model)).unwrap();
    let controller = config.control.build(pipeline.class_names()).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async move {
        let service = Service::start(
            ServiceConfig {
                bind: "127.0.0.1:0".parse().unwrap(),
                client_queue: 100_000,
                ..ServiceConfig::default()
            },
            Box::new(source),
            pipeline,
            Some(controller),
        )
        .await
        .unwrap();
        let metrics = service.metrics();
        let url = format!("ws://{}/ws", service.local_addr());
        let (mut socket, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
        gate.store(true, Ordering::Relaxed);
        let mut statuses = Vec::new();
        let mut commands_after = [0usize; 2];
        while let Ok(Some(Ok(message))) =
            tokio::time::timeout(Duration::from_secs(60), socket.next()).await
        {
            let Message::Text(text) = message else {
                continue;
            };
            let message: serde_json::Value = serde_json::from_str(text.as_str()).unwrap();
            match message["type"].as_str() {
                Some("status") if message["event"] == "samples_dropped" => {
                    statuses.push(message["reason"].as_str().unwrap().to_owned())
                }
                Some("command") if !statuses.is_empty() => {
                    commands_after[statuses.len().min(2) - 1] += 1
                }
                _ => {}
            }
        }
        assert_eq!(statuses.len(), 2, "{statuses:?}");
        assert!(statuses[0].contains("NaN"), "{}", statuses[0]);
        assert!(statuses[1].contains("duplicate"), "{}", statuses[1]);
        assert!(
            commands_after[0] > 0 && commands_after[1] > 0,
            "{commands_after:?}"
        );
        let text = metrics.render();
        assert!(
            text.contains("neurostream_drops_total{reason=\"bad_samples\"} 16"),
            "{text}"
        );
        assert!(text.contains("neurostream_drops_total{reason=\"duplicate\"} 16"));
        eprintln!("service: reported {statuses:?}; commands after: {commands_after:?}");
        let _ = service.wait().await;
    });
}
