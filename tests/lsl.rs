//! Live LSL end to end, against independent pylsl peers (tests/peers/*.py).
//!
//! Every test re-runs itself inside a fresh loopback-only network namespace with a
//! loopback-only LSL configuration (`neurostream::loopback`), and refuses to open LSL anywhere
//! else: liblsl's discovery must never reach a real network. Timeouts only keep a broken test
//! from hanging; nothing asserts speed.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use neurostream::control::ControlConfig;
use neurostream::loopback;
use neurostream::pipeline::{Pipeline, PipelineConfig, SourceConfig};
use neurostream::service::{Service, ServiceConfig};
use neurostream::source::lsl::{LslConfig, StreamQuery};
use neurostream::source::{Source, SourceItem};
use neurostream::{epochs, evaluate};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

const PATIENCE: Duration = Duration::from_secs(30);

/// Run `test` here when inside the loopback namespace; otherwise re-run this test binary for
/// it inside one and return false (the outer run then only reports the inner result).
fn inside_loopback(test: &str) -> bool {
    if std::env::var_os(loopback::MARKER_VARIABLE).is_some() {
        if let Err(e) = loopback::require() {
            panic!("{e}");
        }
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                std::env::var("RUST_LOG").unwrap_or_else(|_| "neurostream=info".into()),
            )
            .with_test_writer()
            .try_init();
        return true;
    }
    let exe = std::env::current_exe().unwrap();
    let args: Vec<String> = [test, "--exact", "--nocapture", "--test-threads=1"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let status = loopback::command(&exe, &args)
        .unwrap_or_else(|e| panic!("{e}"))
        .status()
        .unwrap();
    assert!(
        status.success(),
        "{test} failed inside its loopback namespace"
    );
    false
}

/// pylsl for the independent peers; absent → skip, or fail where the peers are required (CI).
fn pylsl_available() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import pylsl"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        let message = "python3 with pylsl not found (pip install pylsl)";
        if std::env::var("NEUROSTREAM_REQUIRE_DATA").is_ok_and(|v| v == "1") {
            panic!("{message}");
        }
        eprintln!("SKIPPED: {message}");
    }
    ok
}

fn peer_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/peers")
        .join(name)
}

/// A pylsl process streaming an EDF file; killed (SIGKILL) on drop.
struct EdfPeer(Child);

impl EdfPeer {
    fn start(edf: &Path, name: &str, source_id: &str, extra: &[&str]) -> EdfPeer {
        let mut child = Command::new("python3")
            .arg(peer_script("edf_outlet.py"))
            .arg(edf)
            .args(["--name", name, "--source-id", source_id])
            .args(extra)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.starts_with("ready"), "peer said {line:?}");
        EdfPeer(child)
    }

    fn kill(mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }
}

impl Drop for EdfPeer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Run the independent pylsl inlet on stream `name` for `samples` samples; its JSON summary.
fn pylsl_inlet(name: &str, samples: usize) -> Value {
    let output = Command::new("python3")
        .arg(peer_script("lsl_inlet.py"))
        .args([name, &samples.to_string()])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    serde_json::from_slice(&output.stdout).unwrap()
}

fn labels_of(summary: &Value) -> Vec<&str> {
    summary["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect()
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", std::process::id())
}

fn lsl_config(name: &str) -> LslConfig {
    LslConfig {
        name: Some(name.to_owned()),
        stall_seconds: 1.0,
        resolve_timeout_seconds: 10.0,
        markers: Some(StreamQuery {
            name: Some(format!("{name}-markers")),
            ..StreamQuery::default()
        }),
        ..LslConfig::default()
    }
}

/// pylsl streams S001R04.edf in volts with a marker stream; our inlet reads the channel
/// labels, converts to µV, lines markers up with samples, and a resolve that finds nothing
/// names what it saw.
#[test]
fn pylsl_edf_outlet_into_our_inlet() {
    let Some(edf) = common::eegmmidb_file("S001", 4) else {
        return;
    };
    if !pylsl_available() || !inside_loopback("pylsl_edf_outlet_into_our_inlet") {
        return;
    }
    let recording = neurostream::io::open(&edf).unwrap();
    let file = recording.primary_signal().unwrap();
    let name = unique("ns-inlet");
    let _peer = EdfPeer::start(&edf, &name, &format!("{name}-id"), &["--unit", "V"]);

    let wrong = LslConfig {
        name: Some("no-such-stream".into()),
        resolve_timeout_seconds: 1.0,
        ..LslConfig::default()
    };
    let message = wrong.build().unwrap_err().to_string();
    assert!(message.contains("no-such-stream"), "{message}");
    assert!(
        message.contains(&name),
        "the streams seen are listed: {message}"
    );

    let mut source = lsl_config(&name).build().unwrap();
    let info = source.stream_info().clone();
    assert_eq!(info.channel_count(), 64);
    assert_eq!(info.nominal_rate, 160.0);
    assert!(
        info.labels().eq(file.info.labels()),
        "labels from the description"
    );
    assert!(info.channels.iter().all(|c| c.unit == "uV"));

    let mut frames: Vec<Vec<f32>> = Vec::new();
    let mut stamps = Vec::new();
    let mut events = Vec::new();
    let started = Instant::now();
    while stamps.len() < 6 * 160 {
        assert!(started.elapsed() < PATIENCE, "not enough samples");
        match source.next_item().unwrap().unwrap() {
            SourceItem::Chunk(chunk) => {
                for s in 0..chunk.samples() {
                    frames.push((0..64).map(|c| chunk.channel(c)[s]).collect());
                }
                stamps.extend_from_slice(chunk.timestamps());
            }
            SourceItem::Events(e) => events.extend(e),
            SourceItem::Status(status) => panic!("unexpected {status:?}"),
        }
    }
    // Find where in the file the inlet joined, then every value must match the file (sent as
    // volts in float32, back to µV here).
    let column = |c: usize| file.channel(c).unwrap();
    let start = (0..file.sample_count() - frames.len())
        .find(|&s| (0..64).all(|c| (column(c)[s] - frames[0][c]).abs() <= 1e-3))
        .expect("first received frame found in the file");
    for (k, frame) in frames.iter().enumerate() {
        for (c, value) in frame.iter().enumerate() {
            let expected = column(c)[start + k];
            assert!(
                (value - expected).abs() <= 1e-5 * expected.abs().max(1.0),
                "sample {k} channel {c}: {value} vs {expected}"
            );
        }
    }
    // Timestamps: one per sample period, on this machine's LSL clock.
    for pair in stamps.windows(2) {
        assert!((pair[1] - pair[0] - 1.0 / 160.0).abs() < 0.02, "{pair:?}");
    }
    assert!((lsl::local_clock() - stamps.last().unwrap()).abs() < 1.0);
    // Markers carry the file's cue labels, each on a sample instant of the stream.
    assert!(!events.is_empty(), "markers arrived within 6 s");
    for event in &events {
        assert!(
            ["T0", "T1", "T2"].contains(&event.label.as_str()),
            "{event:?}"
        );
        let nearest = stamps
            .iter()
            .map(|t| (t - event.onset).abs())
            .fold(f64::INFINITY, f64::min);
        assert!(
            nearest < 1e-3,
            "{event:?} is {nearest} s from the nearest sample"
        );
        let file_onset = (event.onset - stamps[0]) + (start as f64) / 160.0;
        assert!(
            recording
                .events()
                .iter()
                .any(|e| e.label == event.label && (e.onset - file_onset).abs() < 0.02),
            "{event:?} (file time {file_onset}) is one of the file's annotations"
        );
    }
    eprintln!(
        "inlet: {} samples from file sample {start}, {} markers",
        stamps.len(),
        events.len()
    );
}

/// Our outlet (`simulate --lsl`'s publisher) read by an independent pylsl inlet.
#[test]
fn our_outlet_into_pylsl_inlet() {
    if !pylsl_available() || !inside_loopback("our_outlet_into_pylsl_inlet") {
        return;
    }
    let name = unique("ns-outlet");
    let config = neurostream::source::simulator::SimulatorConfig {
        duration_seconds: Some(8.0),
        speed: 1.0,
        ..Default::default()
    };
    let mut source = config.build().unwrap().renamed(&name, None);
    let labels: Vec<String> = source.stream_info().labels().map(str::to_owned).collect();
    let publisher = std::thread::spawn(move || {
        let stop = std::sync::atomic::AtomicBool::new(false);
        neurostream::publish::run(&mut source, &stop, |_| {}).unwrap()
    });
    let summary = pylsl_inlet(&name, 320);
    assert_eq!(summary["channel_count"], 16);
    assert_eq!(summary["rate"], 160.0);
    assert_eq!(summary["samples"], 320);
    assert_eq!(labels_of(&summary), labels);
    let span = summary["span"].as_f64().unwrap();
    assert!((span - 319.0 / 160.0).abs() < 0.05, "span {span}");
    let published = publisher.join().unwrap();
    assert_eq!(published.samples, 8 * 160);
    assert!(published.markers >= 1);
}

/// The whole service: a pylsl EDF outlet, our inlet, the decoder, WebSocket commands; the
/// outlet is killed and restarted with the same source id (loss, recovery, commands resume
/// without a restart), then restarted with fewer channels (refused, named).
#[test]
fn service_decodes_pylsl_stream_and_survives_outlet_restarts() {
    let Some(edf) = common::eegmmidb_file("S001", 4) else {
        return;
    };
    if !pylsl_available()
        || !inside_loopback("service_decodes_pylsl_stream_and_survives_outlet_restarts")
    {
        return;
    }
    let name = unique("ns-service");
    let source_id = format!("{name}-id");
    let peer = EdfPeer::start(&edf, &name, &source_id, &[]);

    let mut config = PipelineConfig::from_file(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/live_lsl.toml"),
    )
    .unwrap();
    config.source = SourceConfig::Lsl(lsl_config(&name));
    // A command for every decision window: no threshold, no dwell, no refractory time, and
    // every class (rest too) sends one.
    config.control = ControlConfig {
        commands: Vec::new(),
        threshold: Some(0.0),
        dwell: 1,
        refractory_seconds: 0.0,
        ..ControlConfig::default()
    };
    let calibration = epochs::cut(&neurostream::io::open(&edf).unwrap(), &config).unwrap();
    let model = evaluate::train(&config, &calibration, vec!["S001R04".into()]).unwrap();
    let source = config.source.build().unwrap();
    let pipeline = Pipeline::build(&config, source.stream_info(), Some(model)).unwrap();
    let controller = config.control.build(pipeline.class_names()).unwrap();
    let hop = config.features.hop_seconds;

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async move {
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
        let hello = next_json(&mut socket).await;
        assert_eq!(hello["type"], "hello");
        assert_eq!(hello["stream"]["channel_count"], 64);
        assert_eq!(hello["stream"]["rate"], 160.0);

        // 1. Commands, one per decision window, with sane timestamps.
        let first = commands(&mut socket, 30).await;
        for pair in first.windows(2) {
            assert_eq!(pair[1].seq, pair[0].seq + 1, "no window without a command");
            let step = pair[1].timestamp - pair[0].timestamp;
            assert!(
                (step - hop).abs() < 0.02,
                "windows {hop} s apart, got {step}"
            );
        }
        for command in &first {
            assert!(
                (command.received_lsl - command.timestamp).abs() < 1.0,
                "{command:?}"
            );
            assert!(command.latency_ms >= 0.0 && command.latency_ms < 1000.0);
        }

        // 2. The outlet dies: reported; it comes back with the same source id: reported,
        // and commands resume on the same connection.
        peer.kill();
        let lost = status(&mut socket, "stream_lost").await;
        eprintln!("lost: {lost}");
        let restarted_at = lsl::local_clock();
        let peer = EdfPeer::start(&edf, &name, &source_id, &[]);
        status(&mut socket, "stream_regained").await;
        let resumed = commands(&mut socket, 10).await;
        assert!(resumed[0].seq > first.last().unwrap().seq);
        assert!(resumed.iter().all(|c| c.timestamp > restarted_at));

        // 3. It comes back with 32 channels: refused, and the reason says why.
        peer.kill();
        status(&mut socket, "stream_lost").await;
        let _narrow = EdfPeer::start(&edf, &name, &source_id, &["--channels", "32"]);
        let refused = status(&mut socket, "stream_lost").await;
        let reason = refused["reason"].as_str().unwrap_or_default();
        assert!(reason.contains("32 channels"), "{refused}");

        let metrics = service.metrics().render();
        assert!(metrics.contains("neurostream_commands_out_total"));
        service.shutdown().trigger();
        let summary = service.wait().await.unwrap();
        assert!(summary.commands >= 40);
        eprintln!(
            "service: {} windows, {} commands; refused: {reason}",
            summary.windows, summary.commands
        );
    });
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn next_json(socket: &mut Socket) -> Value {
    loop {
        match tokio::time::timeout(PATIENCE, socket.next())
            .await
            .expect("no message in time")
            .expect("connection ended")
            .unwrap()
        {
            Message::Text(text) => return serde_json::from_str(text.as_str()).unwrap(),
            Message::Close(frame) => panic!("closed: {frame:?}"),
            _ => {}
        }
    }
}

#[derive(Debug)]
struct Received {
    seq: u64,
    timestamp: f64,
    latency_ms: f64,
    received_lsl: f64,
}

/// The next `n` commands (other messages skipped, a status other than samples_dropped fails).
async fn commands(socket: &mut Socket, n: usize) -> Vec<Received> {
    let mut received = Vec::new();
    while received.len() < n {
        let message = next_json(socket).await;
        match message["type"].as_str() {
            Some("command") => received.push(Received {
                seq: message["seq"].as_u64().unwrap(),
                timestamp: message["timestamp"].as_f64().unwrap(),
                latency_ms: message["latency_ms"].as_f64().unwrap(),
                received_lsl: lsl::local_clock(),
            }),
            Some("status") => panic!("unexpected status while decoding: {message}"),
            _ => {}
        }
    }
    received
}

/// The next status message with this event (commands in between are skipped).
async fn status(socket: &mut Socket, event: &str) -> Value {
    loop {
        let message = next_json(socket).await;
        if message["type"] == "status" && message["event"] == event {
            return message;
        }
    }
}

/// `neurostream replay FILE --lsl` puts a recording on LSL; an independent pylsl inlet reads
/// its channel labels, rate and sample timing.
#[test]
fn replay_onto_lsl_read_by_pylsl() {
    let Some(edf) = common::eegmmidb_file("S001", 4) else {
        return;
    };
    if !pylsl_available() || !inside_loopback("replay_onto_lsl_read_by_pylsl") {
        return;
    }
    let file = neurostream::io::open(&edf).unwrap();
    let labels: Vec<String> = file
        .primary_signal()
        .unwrap()
        .info
        .labels()
        .map(str::to_owned)
        .collect();
    let mut replay = Command::new(env!("CARGO_BIN_EXE_neurostream"))
        .arg("replay")
        .arg(&edf)
        .args(["--lsl", "--speed", "10"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let summary = pylsl_inlet("S001R04", 480);
    let _ = replay.kill();
    let _ = replay.wait();
    assert_eq!(summary["channel_count"], 64);
    assert_eq!(summary["rate"], 160.0);
    assert_eq!(summary["samples"], 480);
    assert_eq!(labels_of(&summary), labels);
    // Timestamps keep the recording's timing whatever the replay speed.
    let span = summary["span"].as_f64().unwrap();
    assert!((span - 479.0 / 160.0).abs() < 1e-3, "span {span}");
}

/// The shipped `pipelines/live_lsl.toml` as a new user runs it, for four subjects: a pylsl
/// outlet streams R04 + R08 (calibration; the recording's own T1/T2 markers are the cues),
/// then R12 (online), at 10× real time with real-time time stamps. `neurostream run` without a
/// model calibrates on the first two runs, trains, saves and loads the model, says so, and
/// commands on every cue of R12. The online hit rate is reported next to
/// `evaluate --holdout R12` of the same pipeline.
#[test]
fn live_pipeline_calibrates_on_the_stream_and_commands_on_every_cue() {
    if common::data_dir().is_none()
        || !pylsl_available()
        || !inside_loopback("live_pipeline_calibrates_on_the_stream_and_commands_on_every_cue")
    {
        return;
    }
    let pipeline_file = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/live_lsl.toml");
    let config = PipelineConfig::from_file(&pipeline_file).unwrap();
    let dir = std::env::temp_dir().join(format!("neurostream-live-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut rows = Vec::new();
    let mut commands_right = 0usize;
    let mut commands_in_cues = 0usize;
    let mut expected_precision = Vec::new();
    for subject in ["S001", "S003", "S004", "S007", "S042"] {
        let files = common::imagery_runs(subject).unwrap();
        let runs: Vec<neurostream::io::Recording> = files
            .iter()
            .map(|f| neurostream::io::open(f).unwrap())
            .collect();
        let calibration = epochs::cut_all(&runs[..2], &config).unwrap();
        let per_class = (0..2)
            .map(|c| calibration.labels.iter().filter(|&&l| l == c).count())
            .min()
            .unwrap();
        let name = unique(&format!("ns-live-{subject}"));
        let go = dir.join(format!("go-{subject}"));
        let model_out = dir.join(format!("model-{subject}.json"));
        let _ = std::fs::remove_file(&go);
        let _ = std::fs::remove_file(&model_out);
        let mut peer = Command::new("python3")
            .arg(peer_script("edf_outlet.py"))
            .args(&files)
            .args(["--name", &name, "--source-id", &format!("{name}-id")])
            .args(["--chunk", "16", "--speed", "10", "--hold-after", "2"])
            .arg("--wait-for-consumers")
            .arg("--hold-file")
            .arg(&go)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut peer_out = BufReader::new(peer.stdout.take().unwrap());
        let mut line = String::new();
        peer_out.read_line(&mut line).unwrap();
        assert!(line.starts_with("ready"), "peer said {line:?}");
        let mut service = Command::new(env!("CARGO_BIN_EXE_neurostream"))
            .arg("run")
            .arg("--pipeline")
            .arg(&pipeline_file)
            .args(["--stream-name", &name, "--bind", "127.0.0.1:0"])
            .args(["--calibration-trials", &per_class.to_string()])
            .arg("--model-out")
            .arg(&model_out)
            .env("NO_COLOR", "1")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = BufReader::new(service.stderr.take().unwrap());
        let (address_tx, address_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut address_tx = Some(address_tx);
            for line in stderr.lines().map_while(|l| l.ok()) {
                if let Some(rest) = line.split("serving ws://").nth(1) {
                    let address = rest.split('/').next().unwrap().to_owned();
                    if let Some(tx) = address_tx.take() {
                        let _ = tx.send(address);
                    }
                }
                eprintln!("  service: {line}");
            }
        });
        let address = address_rx.recv_timeout(PATIENCE).unwrap();
        // The peer starts streaming once our inlets are open, and says when.
        line.clear();
        peer_out.read_line(&mut line).unwrap();
        let start: f64 = line
            .strip_prefix("start ")
            .unwrap_or_else(|| panic!("peer said {line:?}"))
            .trim()
            .parse()
            .unwrap();

        let runtime = tokio::runtime::Runtime::new().unwrap();
        let (commands, online, near_chance) = runtime.block_on(async {
            let url = format!("ws://{address}/ws");
            let (mut socket, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
            let mut commands: Vec<(f64, String)> = Vec::new();
            let mut online = (0u64, 0u64);
            let mut near_chance = false;
            let mut done_at: Option<Instant> = None;
            let deadline = Instant::now() + Duration::from_secs(240);
            loop {
                assert!(
                    Instant::now() < deadline,
                    "{subject}: the session did not end"
                );
                if done_at.is_none() && peer.try_wait().unwrap().is_some() {
                    done_at = Some(Instant::now());
                }
                if done_at.is_some_and(|t| t.elapsed() > Duration::from_secs(3)) {
                    break;
                }
                let Ok(next) =
                    tokio::time::timeout(Duration::from_millis(200), socket.next()).await
                else {
                    continue;
                };
                let text = match next {
                    Some(Ok(Message::Text(text))) => text,
                    // Pings (liveness) and pongs are not the session's business.
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                    _ => break,
                };
                let message: Value = serde_json::from_str(text.as_str()).unwrap();
                match message["type"].as_str() {
                    Some("command") => commands.push((
                        message["timestamp"].as_f64().unwrap(),
                        message["class"].as_str().unwrap().to_owned(),
                    )),
                    // The model decides as soon as it is fitted; its calibration (and the
                    // operating point) comes with the CV score: R12 starts after that.
                    Some("session")
                        if message["phase"] == "online" && message["cv_accuracy"].is_number() =>
                    {
                        std::fs::write(&go, b"go").unwrap();
                        near_chance |= message["warning"].is_string();
                        online = (
                            message["trials"].as_u64().unwrap(),
                            message["hits"].as_u64().unwrap(),
                        );
                    }
                    _ => {}
                }
            }
            (commands, online, near_chance)
        });
        let _ = Command::new("kill")
            .args(["-INT", &service.id().to_string()])
            .status();
        let status = service.wait().unwrap();
        assert!(status.success(), "{subject}: run exited with {status}");
        assert!(
            model_out.is_file(),
            "{subject}: the calibrated model was not saved"
        );

        // R12's cues on the LSL clock: the outlet started the first file at `start`.
        let shift = start
            + runs[..2]
                .iter()
                .map(|r| r.primary_signal().unwrap().sample_count() as f64)
                .sum::<f64>()
                / 160.0;
        let cues: Vec<(f64, &str)> = runs[2]
            .events()
            .iter()
            .filter_map(|e| match e.label.as_str() {
                "T1" => Some((shift + e.onset, "left")),
                "T2" => Some((shift + e.onset, "right")),
                _ => None,
            })
            .collect();
        let mut without = 0;
        let mut first_right = 0;
        for (onset, class) in &cues {
            // The cue window: from the cue to the end of the imagery period (4 s in R12).
            let during: Vec<&(f64, String)> = commands
                .iter()
                .filter(|(t, _)| *t >= *onset && *t < onset + 4.5)
                .collect();
            commands_in_cues += during.len();
            commands_right += during.iter().filter(|(_, c)| c == class).count();
            match during.first() {
                None => without += 1,
                Some((_, c)) => first_right += usize::from(c == class),
            }
        }
        let saved: Value =
            serde_json::from_str(&std::fs::read_to_string(&model_out).unwrap()).unwrap();
        let predicted = saved["operating_point"]["expected_precision"]
            .as_f64()
            .unwrap_or_else(|| panic!("{subject}: the saved model has no operating point"));
        expected_precision.push(predicted);
        let test = epochs::cut(&runs[2], &config).unwrap();
        let holdout = evaluate::holdout(&config, &calibration, &test).unwrap();
        // What the service does online (adaptation and label feedback included), offline.
        let offline = evaluate::online(&config, &calibration, &[&runs[2]]).unwrap();
        let offline_hits = (offline.adaptive.accuracy * offline.online_trials as f64).round();
        eprintln!(
            "{subject}: {} commands, {} of {} R12 cues with a command in the cue window (first \
             one right on {first_right}); live cued trials {}/{} right; evaluate --online \
             (R04+R08 → R12) {offline_hits}/{} right; holdout accuracy {:.3}; calibration \
             expects precision {predicted:.3}{}",
            commands.len(),
            cues.len() - without,
            cues.len(),
            online.1,
            online.0,
            offline.online_trials,
            holdout.accuracy,
            if near_chance {
                " (near chance, warned)"
            } else {
                ""
            }
        );
        // The operating point follows the calibration: even a near-chance calibration
        // commands at its best operating point.
        assert_eq!(without, 0, "{subject}: {without} cue(s) without a command");
        assert!(online.0 as usize >= test.len() - 1, "{subject}: {online:?}");
        // Not the same trials to the trial: the service calibrates on the first
        // `--calibration-trials` cues of each class as they stream, the offline run on every
        // R04 + R08 epoch. Compared in the mean below.
        rows.push((
            online.1 as f64 / online.0 as f64,
            holdout.accuracy,
            offline.adaptive.accuracy,
        ));
        let _ = peer.kill();
        let _ = peer.wait();
    }
    let n = rows.len() as f64;
    let online = rows.iter().map(|r| r.0).sum::<f64>() / n;
    let holdout = rows.iter().map(|r| r.1).sum::<f64>() / n;
    let offline = rows.iter().map(|r| r.2).sum::<f64>() / n;
    eprintln!(
        "mean over {n} subjects: live {online:.3}, evaluate --online {offline:.3}, holdout \
         {holdout:.3}"
    );
    assert!(
        (online - offline).abs() <= 0.1,
        "live {online:.3} vs evaluate --online {offline:.3}"
    );
    let precision = commands_right as f64 / commands_in_cues.max(1) as f64;
    let predicted = expected_precision.iter().sum::<f64>() / expected_precision.len() as f64;
    eprintln!(
        "pooled command precision in R12 cue windows {precision:.3} ({commands_right} of \
         {commands_in_cues}); calibration predicted {predicted:.3} on average"
    );
    assert!(
        (precision - predicted).abs() <= 0.07,
        "pooled precision {precision:.3} vs predicted {predicted:.3}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

fn mne_lsl_available() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import mne_lsl"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        let message = "python3 with mne-lsl not found (pip install mne-lsl)";
        if std::env::var("NEUROSTREAM_REQUIRE_DATA").is_ok_and(|v| v == "1") {
            panic!("{message}");
        }
        eprintln!("SKIPPED: {message}");
    }
    ok
}

/// MNE-LSL's `PlayerLSL` streams S001R04.edf the way it does for every lab: volts, with the
/// unit declared as MNE-LSL's power of ten `"0"`, and the annotations on a separate one-hot
/// `annotations` stream. With no `unit` and no `[source.markers]` in the config, our inlet
/// must give the file's µV (within 1e-5 relative) and the file's cues as events.
#[test]
fn mne_lsl_player_into_our_inlet_in_microvolts_with_its_annotations() {
    let Some(edf) = common::eegmmidb_file("S001", 4) else {
        return;
    };
    if !mne_lsl_available()
        || !inside_loopback("mne_lsl_player_into_our_inlet_in_microvolts_with_its_annotations")
    {
        return;
    }
    let recording = neurostream::io::open(&edf).unwrap();
    let file = recording.primary_signal().unwrap();
    let name = unique("ns-mne-player");
    let mut player = Command::new("python3")
        .arg(peer_script("mne_player.py"))
        .arg(&edf)
        .args(["--name", &name, "--source-id", &format!("{name}-id")])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(player.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _player = EdfPeer(player);
    assert!(line.starts_with("streaming"), "player said {line:?}");

    let config = LslConfig {
        name: Some(name.clone()),
        resolve_timeout_seconds: 10.0,
        ..LslConfig::default()
    };
    let mut source = config.build().unwrap();
    let info = source.stream_info().clone();
    assert_eq!(info.channel_count(), 64);
    assert!(
        info.labels().eq(file.info.labels()),
        "labels from MNE-LSL's description"
    );
    assert!(info.channels.iter().all(|c| c.unit == "uV"), "{info:?}");

    let mut frames: Vec<Vec<f32>> = Vec::new();
    let mut events = Vec::new();
    let started = Instant::now();
    // 8 s: at least one cue (they come every ~4 s in R04) after the inlet joined.
    while frames.len() < 8 * 160 || events.is_empty() {
        assert!(started.elapsed() < PATIENCE, "not enough samples or events");
        match source.next_item().unwrap().unwrap() {
            SourceItem::Chunk(chunk) => {
                for s in 0..chunk.samples() {
                    frames.push((0..64).map(|c| chunk.channel(c)[s]).collect());
                }
            }
            SourceItem::Events(e) => events.extend(e),
            SourceItem::Status(status) => panic!("unexpected {status:?}"),
        }
    }
    let column = |c: usize| file.channel(c).unwrap();
    let start = (0..file.sample_count() - frames.len())
        .find(|&s| (0..64).all(|c| (column(c)[s] - frames[0][c]).abs() <= 1e-3))
        .expect("first received frame found in the file (values in µV)");
    for (k, frame) in frames.iter().enumerate() {
        for (c, value) in frame.iter().enumerate() {
            let expected = column(c)[start + k];
            assert!(
                (value - expected).abs() <= 1e-5 * expected.abs().max(1.0),
                "sample {k} channel {c}: {value} µV vs the file's {expected}"
            );
        }
    }
    for event in &events {
        assert!(
            ["T0", "T1", "T2"].contains(&event.label.as_str()),
            "{event:?}"
        );
        assert!(
            event.duration > 1.0 && event.duration < 10.0,
            "the annotation's duration travels with it: {event:?}"
        );
    }
    eprintln!(
        "MNE-LSL player: {} samples from file sample {start}, {} annotations: {:?}",
        frames.len(),
        events.len(),
        events.iter().map(|e| &e.label).collect::<Vec<_>>()
    );
}

/// The other direction: `neurostream replay FILE --lsl` publishes S001R04.edf and MNE-LSL's own
/// consumer, `mne_lsl.stream.StreamLSL`, reads it as a lab would: the file's channel names, EEG
/// channel types, the unit MNE calls volts with a micro multiplier (FIFF_UNIT_V = 107, 10⁻⁶),
/// 160 Hz, and samples equal to the file's µV within 1e-5 relative.
#[test]
fn our_outlet_read_by_mne_lsl_stream_in_microvolts() {
    let Some(edf) = common::eegmmidb_file("S001", 4) else {
        return;
    };
    if !mne_lsl_available() || !inside_loopback("our_outlet_read_by_mne_lsl_stream_in_microvolts") {
        return;
    }
    let recording = neurostream::io::open(&edf).unwrap();
    let file = recording.primary_signal().unwrap();
    let replay = Command::new(env!("CARGO_BIN_EXE_neurostream"))
        .arg("replay")
        .arg(&edf)
        .args(["--lsl", "--speed", "1"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _replay = EdfPeer(replay);
    let output = Command::new("python3")
        .arg(peer_script("mne_stream.py"))
        .args(["S001R04", "2"])
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    let summary: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stdout)));
    assert!(summary.get("error").is_none(), "{summary}");
    let names: Vec<&str> = summary["ch_names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(names.iter().copied().eq(file.info.labels()), "{names:?}");
    assert!(summary["ch_types"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t == "eeg"));
    // FIFF_UNIT_V with FIFF_UNITM_MU: MNE reads our "uV" as microvolts.
    assert!(summary["units"]
        .as_array()
        .unwrap()
        .iter()
        .all(|u| u[0] == 107 && u[1] == -6));
    assert_eq!(summary["sfreq"], 160.0);
    let data = summary["data"].as_array().unwrap();
    assert_eq!(data.len(), 64);
    let row = |c: usize| -> Vec<f64> {
        data[c]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect()
    };
    let rows: Vec<Vec<f64>> = (0..64).map(row).collect();
    let n = rows[0].len();
    assert_eq!(n, 320);
    let column = |c: usize| file.channel(c).unwrap();
    let start = (0..file.sample_count() - n)
        .find(|&s| (0..64).all(|c| (f64::from(column(c)[s]) - rows[c][0]).abs() <= 1e-3))
        .expect("MNE-LSL's first sample found in the file (values in µV)");
    for (c, values) in rows.iter().enumerate() {
        for (k, value) in values.iter().enumerate() {
            let expected = f64::from(column(c)[start + k]);
            assert!(
                (value - expected).abs() <= 1e-5 * expected.abs().max(1.0),
                "sample {k} channel {c}: MNE-LSL read {value}, the file has {expected} µV"
            );
        }
    }
    let span = summary["span"].as_f64().unwrap();
    assert!((span - 319.0 / 160.0).abs() < 1e-3, "span {span}");
    eprintln!("MNE-LSL StreamLSL: 64 × {n} samples from file sample {start}, units µV");
}
