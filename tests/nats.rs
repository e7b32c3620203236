//! The NATS JetStream publisher end to end, against a real `nats-server -js` that each test
//! starts on 127.0.0.1 (a free port, its own store directory) and kills when it ends. The
//! session is recordings/demo.xdf replayed through the demo pipeline; its WebSocket commands
//! are the reference. Timeouts only keep a broken test from hanging; nothing asserts speed.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use futures_util::StreamExt;
use neurostream::config::NatsConfig;
use neurostream::pipeline::{Pipeline, PipelineConfig, SourceConfig};
use neurostream::service::metrics::DropReason;
use neurostream::service::nats::Kind;
use neurostream::service::{Service, ServiceConfig};
use neurostream::source::nats::NatsSourceConfig;
use neurostream::source::replay::Replay;
use neurostream::source::simulator::{self, SimulatorConfig};
use neurostream::source::{Pace, Source, SourceItem};
use neurostream::stream::StreamInfo;
use neurostream::{epochs, evaluate};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

const PATIENCE: Duration = Duration::from_secs(120);

/// The nats-server binary, or None (the test says SKIPPED; CI sets NEUROSTREAM_REQUIRE_NATS).
fn nats_server_binary() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("nats-server"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("NEUROSTREAM_REQUIRE_NATS").is_none(),
            "nats-server not found (apt-get install -y nats-server)"
        );
        eprintln!("SKIPPED: nats-server not found (apt-get install -y nats-server)");
    }
    found
}

/// A nats-server with JetStream on 127.0.0.1, killed (and reaped) on drop.
struct NatsServer {
    binary: PathBuf,
    port: u16,
    store: PathBuf,
    extra: Vec<String>,
    child: Option<Child>,
}

impl NatsServer {
    fn start(name: &str, extra: &[&str]) -> Option<NatsServer> {
        let binary = nats_server_binary()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let store = std::env::temp_dir().join(format!(
            "neurostream-nats-{name}-{}-{port}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&store);
        std::fs::create_dir_all(&store).unwrap();
        let mut server = NatsServer {
            binary,
            port,
            store,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            child: None,
        };
        server.spawn();
        Some(server)
    }

    fn spawn(&mut self) {
        let child = Command::new(&self.binary)
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(&self.store)
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        self.child = Some(child);
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "nats-server did not listen on {} within 20 s",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stop it (SIGTERM, so JetStream closes its files; SIGKILL after 10 s).
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let started = Instant::now();
            loop {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if started.elapsed() > Duration::from_secs(10) {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.store);
    }
}

/// Waits for the test's gate before its first item, so the WebSocket client is connected
/// before the stream starts; stops after `seconds` of stream.
struct Gated {
    inner: Replay,
    gate: Arc<AtomicBool>,
    remaining: usize,
}

impl Source for Gated {
    fn stream_info(&self) -> &StreamInfo {
        self.inner.stream_info()
    }

    fn next_item(&mut self) -> neurostream::Result<Option<SourceItem>> {
        while !self.gate.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(5));
        }
        if self.remaining == 0 {
            return Ok(None);
        }
        let item = self.inner.next_item()?;
        if let Some(SourceItem::Chunk(chunk)) = &item {
            self.remaining = self.remaining.saturating_sub(chunk.samples());
        }
        Ok(item)
    }
}

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The demo pipeline and a decoder calibrated on simulated data of another seed (what
/// `neurostream demo` does).
fn demo_pipeline() -> (PipelineConfig, neurostream::model::Model) {
    let config = PipelineConfig::default_demo();
    let SourceConfig::Simulator(sim) = &config.source else {
        panic!("the demo pipeline runs the simulator")
    };
    let calibration = SimulatorConfig {
        seed: sim.seed.wrapping_add(1),
        ..sim.clone()
    };
    let recording = simulator::record(&calibration, 120.0).unwrap();
    let epochs = epochs::cut(&recording, &config).unwrap();
    let model = evaluate::train(&config, &epochs, vec!["calibration".into()]).unwrap();
    (config, model)
}

struct Session {
    service: Service,
    gate: Arc<AtomicBool>,
    url: String,
}

/// The demo recording (`seconds` of it at `speed`) served with `nats` publishing.
async fn start(nats: NatsConfig, speed: f64, seconds: f64) -> Session {
    let (config, model) = demo_pipeline();
    start_with(nats, speed, seconds, &config, &model).await
}

/// As [`start`], with the pipeline and model given.
async fn start_with(
    nats: NatsConfig,
    speed: f64,
    seconds: f64,
    config: &PipelineConfig,
    model: &neurostream::model::Model,
) -> Session {
    let recording = neurostream::io::open(repo("recordings/demo.xdf")).unwrap();
    let replay = Replay::new(&recording, None, 16, Pace::from_speed(speed)).unwrap();
    let rate = replay.stream_info().nominal_rate;
    let gate = Arc::new(AtomicBool::new(false));
    let source = Gated {
        inner: replay,
        gate: gate.clone(),
        remaining: (seconds * rate) as usize,
    };
    let pipeline = Pipeline::build(config, source.stream_info(), Some(model.clone())).unwrap();
    let controller = config
        .control
        .build_with(pipeline.class_names(), model.operating_point.as_ref())
        .unwrap();
    let service_config = ServiceConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        client_queue: 100_000,
        client_queue_bytes: 1 << 30,
        nats: Some(nats),
        ..ServiceConfig::default()
    };
    let service = Service::start(service_config, Box::new(source), pipeline, Some(controller))
        .await
        .unwrap();
    let url = format!("ws://{}/ws", service.local_addr());
    Session { service, gate, url }
}

/// Every message a WebSocket client gets until the stream ends; `on_message` sees each as
/// it arrives (to act mid-session).
async fn collect_ws(
    url: &str,
    gate: &AtomicBool,
    mut on_message: impl FnMut(&Value),
) -> Vec<Value> {
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    gate.store(true, Ordering::Relaxed);
    let mut messages = Vec::new();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let next = tokio::time::timeout_at(deadline, socket.next())
            .await
            .expect("the stream did not end in time");
        let text = match next {
            Some(Ok(Message::Text(text))) => text,
            // Pings (answered by the library) and other frames.
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Binary(_))) => continue,
            _ => break,
        };
        let value: Value = serde_json::from_str(&text).unwrap();
        on_message(&value);
        let ended = value["type"] == "status" && value["event"] == "stream_ended";
        messages.push(value);
        if ended {
            break;
        }
    }
    messages
}

fn commands(messages: &[Value]) -> Vec<Value> {
    messages
        .iter()
        .filter(|m| m["type"] == "command")
        .cloned()
        .collect()
}

/// Every message JetStream holds on `subject`, in stream order.
async fn stored(url: &str, stream: &str, subject: &str) -> Vec<Value> {
    let client = tokio::time::timeout(Duration::from_secs(20), async_nats::connect(url))
        .await
        .expect("connect in time")
        .unwrap();
    let js = jetstream::new(client);
    let stream = js.get_stream(stream).await.unwrap();
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::Config {
            filter_subject: subject.to_owned(),
            deliver_policy: jetstream::consumer::DeliverPolicy::All,
            ack_policy: jetstream::consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut out = Vec::new();
    loop {
        let mut batch = consumer
            .fetch()
            .max_messages(1000)
            .expires(Duration::from_secs(1))
            .messages()
            .await
            .unwrap();
        let before = out.len();
        while let Some(message) = tokio::time::timeout(Duration::from_secs(10), batch.next())
            .await
            .expect("a fetch ends in time")
        {
            let message = message.unwrap();
            out.push(serde_json::from_slice::<Value>(&message.payload).unwrap());
        }
        if out.len() == before {
            return out;
        }
    }
}

/// A NATS message without its envelope fields: the WebSocket message.
fn unwrap_envelope(mut value: Value) -> Value {
    let object = value.as_object_mut().unwrap();
    for key in ["session", "sequence", "published"] {
        assert!(object.remove(key).is_some(), "{key} missing");
    }
    value
}

fn config_for(server: &NatsServer, session: &str) -> NatsConfig {
    NatsConfig {
        url: server.url(),
        session: Some(session.into()),
        max_age_seconds: 3600.0,
        max_bytes: Some(256 << 20),
        max_msgs: Some(1_000_000),
        ..NatsConfig::default()
    }
}

/// Commands through NATS equal the WebSocket commands of the same session, in order, none
/// lost; `sequence` counts 1, 2, 3…
async fn same_commands(speed: f64, seconds: f64, session: &str) {
    let Some(server) = NatsServer::start(session, &[]) else {
        return;
    };
    let run = start(config_for(&server, session), speed, seconds).await;
    let stats = run.service.nats_stats().unwrap();
    let messages = collect_ws(&run.url, &run.gate, |_| {}).await;
    let summary = run.service.wait().await.unwrap();
    let ws = commands(&messages);
    assert!(!ws.is_empty(), "no command in {seconds} s");
    assert_eq!(ws.len() as u64, summary.commands);
    let nats = stored(
        &server.url(),
        &format!("NEUROSTREAM_{session}"),
        &format!("neurostream.{session}.commands"),
    )
    .await;
    let sequences: Vec<u64> = nats
        .iter()
        .map(|m| m["sequence"].as_u64().unwrap())
        .collect();
    assert_eq!(sequences, (1..=ws.len() as u64).collect::<Vec<_>>());
    assert!(nats.iter().all(|m| m["session"] == session));
    let nats: Vec<Value> = nats.into_iter().map(unwrap_envelope).collect();
    assert_eq!(nats, ws, "NATS and WebSocket commands differ");
    assert_eq!(stats.dropped(Kind::Commands), 0);
    assert_eq!(stats.published(Kind::Commands), ws.len() as u64);
    // Features too (one per window), and the status stream ends like the socket.
    let features = stored(
        &server.url(),
        &format!("NEUROSTREAM_{session}"),
        &format!("neurostream.{session}.features"),
    )
    .await;
    assert_eq!(features.len() as u64, summary.windows);
    let status = stored(
        &server.url(),
        &format!("NEUROSTREAM_{session}"),
        &format!("neurostream.{session}.status"),
    )
    .await;
    assert_eq!(
        status.last().unwrap()["event"],
        "stream_ended",
        "{status:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_commands_equal_websocket_commands_at_20x() {
    same_commands(20.0, 120.0, "x20").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_commands_equal_websocket_commands_in_real_time() {
    same_commands(1.0, 60.0, "rt").await;
}

/// The server is stopped mid-session and started again on the same store: the service keeps
/// serving WebSocket commands, reports the outage, reconnects; JetStream holds every command
/// not counted as dropped, and every command after the last dropped one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_outage_is_reported_and_counted_exactly() {
    let Some(server) = NatsServer::start("outage", &[]) else {
        return;
    };
    let server = Arc::new(std::sync::Mutex::new(server));
    let url = server.lock().unwrap().url();
    let nats = NatsConfig {
        // Small, so that the outage overflows it.
        queue: 8,
        ..config_for(&server.lock().unwrap(), "outage")
    };
    let run = start(nats, 4.0, 120.0).await;
    let stats = run.service.nats_stats().unwrap();
    let metrics = run.service.metrics();
    let mut commands_seen = 0;
    let outage: Arc<std::sync::Mutex<Option<std::thread::JoinHandle<()>>>> = Default::default();
    let messages = collect_ws(&run.url, &run.gate, |m| {
        if m["type"] == "command" {
            commands_seen += 1;
            if commands_seen == 5 {
                let server = server.clone();
                *outage.lock().unwrap() = Some(std::thread::spawn(move || {
                    server.lock().unwrap().stop();
                    std::thread::sleep(Duration::from_secs(3));
                    server.lock().unwrap().spawn();
                }));
            }
        }
    })
    .await;
    if let Some(thread) = outage.lock().unwrap().take() {
        thread.join().unwrap();
    }
    let summary = run.service.wait().await.unwrap();
    let ws = commands(&messages);
    assert!(
        commands_seen > 5,
        "the outage never started: {commands_seen} commands"
    );
    // The WebSocket side lost nothing.
    assert_eq!(ws.len() as u64, summary.commands);
    let seqs: Vec<u64> = ws.iter().map(|c| c["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=ws.len() as u64).collect::<Vec<_>>());
    // The outage was reported to the clients.
    let events: Vec<&str> = messages
        .iter()
        .filter(|m| m["type"] == "status")
        .filter_map(|m| m["event"].as_str())
        .collect();
    assert!(events.contains(&"nats_lost"), "{events:?}");
    assert!(events.contains(&"nats_regained"), "{events:?}");
    assert_eq!(stats.outages(), 1);
    let nats = stored(&url, "NEUROSTREAM_outage", "neurostream.outage.commands").await;
    let sequences: Vec<u64> = nats
        .iter()
        .map(|m| m["sequence"].as_u64().unwrap())
        .collect();
    let dropped = stats.dropped(Kind::Commands);
    eprintln!(
        "outage: {} commands, {} stored, {dropped} dropped; features stored {}, dropped {}",
        ws.len(),
        nats.len(),
        stats.published(Kind::Features),
        stats.dropped(Kind::Features)
    );
    // Exactly what was not counted as lost is stored, once each.
    assert_eq!(nats.len() as u64 + dropped, ws.len() as u64);
    let unique: std::collections::BTreeSet<u64> = sequences.iter().copied().collect();
    assert_eq!(unique.len(), sequences.len(), "a command stored twice");
    // Every stored command is the WebSocket command of that sequence number.
    for message in nats {
        let sequence = message["sequence"].as_u64().unwrap();
        assert_eq!(unwrap_envelope(message), ws[sequence as usize - 1]);
    }
    // Every command after the last lost one (published after reconnection) is stored.
    let missing: Vec<u64> = (1..=ws.len() as u64)
        .filter(|s| !unique.contains(s))
        .collect();
    if let Some(&last) = missing.last() {
        assert!(
            (last + 1..=ws.len() as u64).all(|s| unique.contains(&s)),
            "missing {missing:?}"
        );
        assert!(last < ws.len() as u64, "nothing published after the outage");
    }
    // /metrics counts the same losses.
    let counted = metrics.drops(DropReason::NatsQueue) + metrics.drops(DropReason::NatsPublish);
    assert_eq!(
        counted,
        Kind::ALL.iter().map(|k| stats.dropped(*k)).sum::<u64>()
    );
}

/// Credentials come from the environment and never appear in the log, even at debug level;
/// a wrong password is refused with the server named, not the password.
#[test]
fn credentials_stay_out_of_the_log() {
    let secret = "hunter2-Secret-0xC0FFEE";
    let Some(server) = NatsServer::start("auth", &["--user", "bob", "--pass", secret]) else {
        return;
    };
    let run = |password: &str, url: String| {
        Command::new(env!("CARGO_BIN_EXE_neurostream"))
            .args([
                "demo",
                "--seconds",
                "4",
                "--speed",
                "8",
                "--calibration-seconds",
                "30",
            ])
            .args([
                "--bind",
                "127.0.0.1:0",
                "--nats",
                &url,
                "--nats-session",
                "auth",
            ])
            .env("RUST_LOG", "debug")
            .env("NO_COLOR", "1")
            .env("NEUROSTREAM_NATS_USER", "bob")
            .env("NEUROSTREAM_NATS_PASSWORD", password)
            .env_remove("NEUROSTREAM_TOKEN")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .expect("run neurostream")
    };
    let good = run(secret, server.url());
    let log = String::from_utf8_lossy(&good.stderr);
    assert!(good.status.success(), "{log}");
    assert!(log.contains("nats: publishing session auth"), "{log}");
    assert!(!log.contains(secret), "the password is in the log");
    let bad = run("wrong-password-1234", server.url());
    let log = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success(), "{log}");
    assert!(log.contains(&server.url()), "{log}");
    assert!(!log.contains("wrong-password-1234"), "{log}");
    // Credentials in the URL are redacted too.
    let url = format!("nats://bob:{secret}@127.0.0.1:{}", server.port);
    let in_url = run(secret, url);
    let log = String::from_utf8_lossy(&in_url.stderr);
    assert!(in_url.status.success(), "{log}");
    assert!(!log.contains(secret), "the password is in the log");
}

/// A command without what depends on the machine (its latency).
fn decoded(mut command: Value) -> Value {
    command.as_object_mut().unwrap().remove("latency_ms");
    command
}

/// Acquisition instance (the recording replayed, `[nats] raw = true`) → NATS → decoding
/// instance with `[source] kind = "nats"`: the decoding instance gets the stream description
/// (labels, units, rate) and its commands equal those of decoding the recording locally (the
/// acquisition instance decodes it too, with the same pipeline and model), in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acquisition_to_decoding_instance_gives_the_local_commands() {
    let Some(server) = NatsServer::start("acq", &[]) else {
        return;
    };
    let (config, model) = demo_pipeline();
    let nats = NatsConfig {
        raw: true,
        queue: 100_000,
        ..config_for(&server, "acq")
    };
    let acquisition = start_with(nats, 20.0, 90.0, &config, &model).await;
    let local_info = neurostream::io::open(repo("recordings/demo.xdf"))
        .unwrap()
        .primary_signal()
        .unwrap()
        .info
        .clone();

    let mut decoding_config = config.clone();
    decoding_config.source = SourceConfig::Nats(NatsSourceConfig::new(server.url(), "acq"));
    decoding_config.validate().unwrap();
    let source = decoding_config.source.build().unwrap();
    assert_eq!(source.stream_info(), &local_info, "the stream description");
    let pipeline =
        Pipeline::build(&decoding_config, source.stream_info(), Some(model.clone())).unwrap();
    let controller = decoding_config
        .control
        .build_with(pipeline.class_names(), model.operating_point.as_ref())
        .unwrap();
    let decoding = Service::start(
        ServiceConfig {
            bind: "127.0.0.1:0".parse().unwrap(),
            client_queue: 100_000,
            client_queue_bytes: 1 << 30,
            ..ServiceConfig::default()
        },
        source,
        pipeline,
        Some(controller),
    )
    .await
    .unwrap();
    let decoding_url = format!("ws://{}/ws", decoding.local_addr());
    // The decoding client connects first, then the acquisition's, which starts the stream.
    let connected = Arc::new(AtomicBool::new(false));
    let (remote, local) = tokio::join!(collect_ws(&decoding_url, &connected, |_| {}), async {
        while !connected.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        collect_ws(&acquisition.url, &acquisition.gate, |_| {}).await
    });
    let acquisition_stats = acquisition.service.nats_stats().unwrap();
    let local_summary = acquisition.service.wait().await.unwrap();
    let remote_summary = decoding.wait().await.unwrap();
    assert_eq!(acquisition_stats.dropped(Kind::Raw), 0);
    let local: Vec<Value> = commands(&local).into_iter().map(decoded).collect();
    let remote_commands: Vec<Value> = commands(&remote).into_iter().map(decoded).collect();
    assert!(!local.is_empty(), "no command decoded locally");
    assert_eq!(local.len() as u64, local_summary.commands);
    assert_eq!(remote_summary.samples, local_summary.samples, "samples");
    assert_eq!(remote_commands, local, "remote and local commands differ");
    // No gap, no loss reported on the decoding side.
    let troubles: Vec<&Value> = remote
        .iter()
        .filter(|m| {
            m["type"] == "status"
                && ["stream_lost", "stream_regained", "samples_dropped"]
                    .contains(&m["event"].as_str().unwrap_or(""))
        })
        .collect();
    assert!(troubles.is_empty(), "{troubles:?}");
    eprintln!(
        "acquisition -> NATS -> decoding: {} commands equal, {} samples, {} raw messages \
         published",
        local.len(),
        local_summary.samples,
        acquisition_stats.published(Kind::Raw)
    );
}

/// What goes wrong at start is said: server down (within the timeout), no such session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_source_errors_are_clear() {
    let Some(server) = NatsServer::start("srcerr", &[]) else {
        return;
    };
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut down = NatsSourceConfig::new(format!("nats://127.0.0.1:{free}"), "acq");
    down.connect_timeout_seconds = 1.0;
    let started = Instant::now();
    let e = tokio::task::spawn_blocking(move || down.build().err().unwrap().to_string())
        .await
        .unwrap();
    assert!(e.contains(&format!("127.0.0.1:{free}")), "{e}");
    assert!(started.elapsed() < PATIENCE);
    let mut missing = NatsSourceConfig::new(server.url(), "nosuch");
    missing.connect_timeout_seconds = 1.0;
    let e = tokio::task::spawn_blocking(move || missing.build().err().unwrap().to_string())
        .await
        .unwrap();
    assert!(e.contains("no JetStream stream NEUROSTREAM_nosuch"), "{e}");
    let e = SourceConfig::Nats(NatsSourceConfig::new(server.url(), "bad session"))
        .build()
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("source.session"), "{e}");
}
