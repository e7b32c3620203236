//! Live latency over LSL on loopback: 64 channels × 1000 Hz published in chunks of 10 samples
//! by our outlet, pulled by our inlet, decoded every 50 ms (band power on all 64 channels +
//! LDA, a command for every window), sent over WebSocket to a client in the same process.
//!
//! Prints p50/p99/p99.9 of
//! - **processing**: chunk arrival at the source thread → command built and queued (the
//!   command's `latency_ms`), i.e. our own work;
//! - **end to end**: the LSL timestamp of the window's last sample (stamped when the outlet
//!   pushes it) → the command frame received by the client, on liblsl's clock;
//! - their difference: what liblsl's transport (and the loopback WebSocket hop) adds.
//!
//! LSL must stay on this machine, so the bench re-runs itself in a loopback-only network
//! namespace (`neurostream::loopback`). Run: `cargo bench --bench lsl_latency [-- SECONDS]`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use neurostream::control::ControlConfig;
use neurostream::loopback;
use neurostream::pipeline::{Pipeline, PipelineConfig, SourceConfig};
use neurostream::service::{Service, ServiceConfig};
use neurostream::source::lsl::LslConfig;
use neurostream::source::simulator::{self, Montage, SimulatorConfig};
use neurostream::{epochs, evaluate};
use tokio_tungstenite::tungstenite::Message;

const RATE: f64 = 1000.0;
const CHUNK: usize = 10;
const HOP_SECONDS: f64 = 0.05;
/// Commands before this many seconds are left out: liblsl's first time-correction estimate
/// blocks the inlet for about 0.6 s and the backlog drains afterwards.
const WARM_UP_SECONDS: f64 = 3.0;

fn main() {
    let seconds: f64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(60.0);
    if std::env::var_os(loopback::MARKER_VARIABLE).is_none() {
        let exe = std::env::current_exe().unwrap();
        let status = loopback::command(&exe, &[seconds.to_string()])
            .unwrap_or_else(|e| panic!("{e}"))
            .status()
            .unwrap();
        std::process::exit(status.code().unwrap_or(1));
    }
    loopback::require().unwrap_or_else(|e| panic!("{e}"));
    run(seconds);
}

fn simulator(seconds: Option<f64>, seed: u64) -> SimulatorConfig {
    SimulatorConfig {
        seed,
        rate: RATE,
        montage: Montage::Eegmmidb64,
        chunk_samples: CHUNK,
        duration_seconds: seconds,
        speed: 1.0,
        ..SimulatorConfig::default()
    }
}

fn run(seconds: f64) {
    let name = format!("ns-latency-{}", std::process::id());
    let mut config = PipelineConfig::default_demo();
    config.preprocess.channels = Vec::new();
    config.features.hop_seconds = HOP_SECONDS;
    config.control = ControlConfig {
        commands: Vec::new(),
        threshold: Some(0.0),
        dwell: 1,
        refractory_seconds: 0.0,
        ..ControlConfig::default()
    };
    let calibration = simulator::record(
        &SimulatorConfig {
            speed: 0.0,
            ..simulator(None, 7)
        },
        90.0,
    )
    .unwrap();
    let epochs = epochs::cut(&calibration, &config).unwrap();
    let model = evaluate::train(&config, &epochs, vec!["simulated".into()]).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let publisher_stop = stop.clone();
    let publisher_name = name.clone();
    let publisher = std::thread::spawn(move || {
        let mut source = simulator(Some(seconds + 2.0), 42)
            .build()
            .unwrap()
            .renamed(&publisher_name, None);
        neurostream::publish::run(&mut source, &publisher_stop, |_| {}).unwrap()
    });

    config.source = SourceConfig::Lsl(LslConfig {
        name: Some(name.clone()),
        ..LslConfig::default()
    });
    let source = config.source.build().unwrap();
    let pipeline = Pipeline::build(&config, source.stream_info(), Some(model)).unwrap();
    let controller = config.control.build(pipeline.class_names()).unwrap();

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (processing, end_to_end) = runtime.block_on(async move {
        let service = Service::start(
            ServiceConfig {
                bind: "127.0.0.1:0".parse().unwrap(),
                ..ServiceConfig::default()
            },
            source,
            pipeline,
            Some(controller),
        )
        .await
        .unwrap();
        let url = format!("ws://{}/ws", service.local_addr());
        let (mut socket, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
        let mut processing = Vec::new();
        let mut end_to_end = Vec::new();
        let started = lsl::local_clock();
        let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(seconds + 10.0);
        while lsl::local_clock() - started < seconds {
            let next = tokio::time::timeout_at(deadline, socket.next()).await;
            let Ok(Some(Ok(Message::Text(text)))) = next else {
                if next.is_err() {
                    break;
                }
                continue;
            };
            let received = lsl::local_clock();
            let message: serde_json::Value = serde_json::from_str(text.as_str()).unwrap();
            if message["type"] != "command" || received - started < WARM_UP_SECONDS {
                continue;
            }
            processing.push(message["latency_ms"].as_f64().unwrap());
            end_to_end.push((received - message["timestamp"].as_f64().unwrap()) * 1e3);
        }
        service.shutdown().trigger();
        let _ = service.wait().await;
        (processing, end_to_end)
    });
    stop.store(true, Ordering::Relaxed);
    let published = publisher.join().unwrap();

    println!(
        "LSL loopback latency: 64 ch × {RATE} Hz, chunks of {CHUNK}, hop {} ms, {} commands \
         over {seconds} s (first {WARM_UP_SECONDS} s left out), {} samples published",
        HOP_SECONDS * 1e3,
        processing.len(),
        published.samples
    );
    let transport: Vec<f64> = end_to_end
        .iter()
        .zip(&processing)
        .map(|(total, ours)| total - ours)
        .collect();
    for (label, values) in [
        ("processing (chunk arrival → command queued)", processing),
        ("end to end (sample pushed → command received)", end_to_end),
        ("liblsl transport + WebSocket hop (difference)", transport),
    ] {
        let (p50, p99, p999, max) = percentiles(values);
        println!(
            "  {label:<48} p50 {p50:7.3} ms  p99 {p99:7.3} ms  p99.9 {p999:7.3} ms  max {max:7.3} ms"
        );
    }
}

fn percentiles(mut values: Vec<f64>) -> (f64, f64, f64, f64) {
    assert!(!values.is_empty(), "no commands were received");
    values.sort_by(f64::total_cmp);
    let at = |q: f64| values[((values.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.99), at(0.999), *values.last().unwrap())
}
