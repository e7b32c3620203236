//! The WebSocket service end to end: a simulator through a trained pipeline, real sockets on
//! 127.0.0.1, port 0. Timeouts only keep a broken test from hanging; nothing asserts speed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use neurostream::decoder::mlp::MlpConfig;
use neurostream::decoder::DecoderConfig;
use neurostream::pipeline::{Pipeline, PipelineConfig};
use neurostream::service::{Service, ServiceConfig};
use neurostream::source::simulator::{self, SimulatorConfig};
use neurostream::source::{Source, SourceItem};
use neurostream::stream::StreamInfo;
use neurostream::{epochs, evaluate};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const PATIENCE: Duration = Duration::from_secs(60);

/// A source that waits until the test opens its gate (so clients connect before the stream)
/// and, at its end, while `hold_end` is set (so the test can look before the service stops).
struct Gated {
    inner: Box<dyn Source>,
    gate: Arc<AtomicBool>,
    hold_end: Arc<AtomicBool>,
}

impl Source for Gated {
    fn stream_info(&self) -> &StreamInfo {
        self.inner.stream_info()
    }

    fn next_item(&mut self) -> neurostream::Result<Option<SourceItem>> {
        while !self.gate.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(5));
        }
        let item = self.inner.next_item()?;
        while item.is_none() && self.hold_end.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(item)
    }
}

struct Setup {
    service: Service,
    gate: Arc<AtomicBool>,
    hold_end: Arc<AtomicBool>,
    url: String,
}

/// The demo pipeline (optionally with another decoder or all channels), calibrated on 90 s of
/// simulated data, served on a simulator of `seconds` (None: endless) at `speed`.
async fn start(
    config: ServiceConfig,
    decoder: Option<DecoderConfig>,
    all_channels: bool,
    seconds: Option<f64>,
    speed: f64,
) -> Setup {
    let mut pipeline = PipelineConfig::default_demo();
    if let Some(decoder) = decoder {
        pipeline.decoder = Some(decoder);
    }
    if all_channels {
        pipeline.preprocess.channels = Vec::new();
    }
    let live = SimulatorConfig {
        duration_seconds: seconds,
        speed,
        ..SimulatorConfig::default()
    };
    let calibration = SimulatorConfig {
        seed: 7,
        ..live.clone()
    };
    let epochs = epochs::cut(&simulator::record(&calibration, 90.0).unwrap(), &pipeline).unwrap();
    let model = evaluate::train(&pipeline, &epochs, vec!["test".into()]).unwrap();
    let source = live.build().unwrap();
    let operating_point = model.operating_point.clone();
    let built = Pipeline::build(&pipeline, source.stream_info(), Some(model)).unwrap();
    // The threshold the model learned at calibration, as the service's own assembly uses it.
    let controller = pipeline
        .control
        .build_with(built.class_names(), operating_point.as_ref())
        .unwrap();
    let gate = Arc::new(AtomicBool::new(false));
    let hold_end = Arc::new(AtomicBool::new(false));
    let source = Gated {
        inner: Box::new(source),
        gate: gate.clone(),
        hold_end: hold_end.clone(),
    };
    let config = ServiceConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        ..config
    };
    let service = Service::start(config, Box::new(source), built, Some(controller))
        .await
        .unwrap();
    let url = format!("ws://{}/ws", service.local_addr());
    Setup {
        service,
        gate,
        hold_end,
        url,
    }
}

/// A client with a tiny receive buffer, subscribed to everything, that the test will not read
/// from: its queue on the server must overflow.
async fn silent_client(setup: &Setup) -> Socket {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(setup.service.local_addr()).await.unwrap();
    let (mut client, _) = tokio_tungstenite::client_async(
        setup.url.as_str(),
        tokio_tungstenite::MaybeTlsStream::Plain(stream),
    )
    .await
    .unwrap();
    send(
        &mut client,
        r#"{"type":"subscribe","topics":["signal","features"]}"#,
    )
    .await;
    // Wait until the subscription is in effect (the reply follows hello).
    assert_eq!(next_json(&mut client).await.unwrap()["type"], "hello");
    assert_eq!(next_json(&mut client).await.unwrap()["type"], "subscribed");
    client
}

async fn connect(url: &str) -> Socket {
    tokio_tungstenite::connect_async(url).await.unwrap().0
}

/// Next text message as JSON (skipping pings); `None` when the connection ends.
async fn next_json(socket: &mut Socket) -> Option<Value> {
    loop {
        match tokio::time::timeout(PATIENCE, socket.next())
            .await
            .expect("no message in time")?
        {
            Ok(Message::Text(text)) => return Some(serde_json::from_str(text.as_str()).unwrap()),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

/// Next message of type `kind`, skipping others.
async fn next_of(socket: &mut Socket, kind: &str) -> Value {
    loop {
        let message = next_json(socket).await.expect("connection ended");
        if message["type"] == kind {
            return message;
        }
    }
}

async fn send(socket: &mut Socket, text: &str) {
    socket.send(Message::Text(text.into())).await.unwrap();
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut body = String::new();
    tokio::time::timeout(PATIENCE, stream.read_to_string(&mut body))
        .await
        .unwrap()
        .unwrap();
    body
}

/// Feedback allowed for clients presenting [`FEEDBACK_TOKEN`] (see [`with_feedback`]).
fn feedback_config() -> ServiceConfig {
    ServiceConfig {
        allow_feedback: true,
        feedback_token: Some(FEEDBACK_TOKEN.into()),
        feedback_per_minute: 1000,
        ..ServiceConfig::default()
    }
}

const FEEDBACK_TOKEN: &str = "fb-t0k";

fn with_feedback(url: &str) -> String {
    format!("{url}?feedback_token={FEEDBACK_TOKEN}")
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("{series} missing from\n{text}"))
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_then_commands_in_order_and_metrics() {
    let setup = start(ServiceConfig::default(), None, false, Some(60.0), 20.0).await;
    let mut client = connect(&setup.url).await;
    setup.gate.store(true, Ordering::Relaxed);
    let hello = next_json(&mut client).await.unwrap();
    assert_eq!(hello["type"], "hello", "{hello}");
    assert_eq!(hello["protocol"], 1);
    assert_eq!(
        hello["classes"],
        serde_json::json!(["rest", "left", "right"])
    );
    assert_eq!(hello["channels"], serde_json::json!(["C3", "Cz", "C4"]));
    assert_eq!(hello["stream"]["rate"], 160.0);
    let mut commands = Vec::new();
    let mut live_metrics = None;
    while let Some(message) = next_json(&mut client).await {
        match message["type"].as_str().unwrap() {
            "command" => {
                commands.push(message);
                if live_metrics.is_none() {
                    live_metrics = Some(http_get(setup.service.local_addr(), "/metrics").await);
                }
            }
            "status" => {
                assert_eq!(message["event"], "stream_ended", "{message}");
                break;
            }
            other => panic!("unexpected {other}: {message}"),
        }
    }
    assert!(commands.len() >= 3, "{} commands", commands.len());
    let mut last_t = 0.0;
    for (i, c) in commands.iter().enumerate() {
        assert_eq!(c["seq"].as_u64().unwrap(), i as u64 + 1, "{c}");
        let t = c["timestamp"].as_f64().unwrap();
        assert!(t > last_t && t <= 60.0, "{c}");
        last_t = t;
        assert!(["turn_left", "turn_right"].contains(&c["command"].as_str().unwrap()));
        let p: Vec<f64> = serde_json::from_value(c["probabilities"].clone()).unwrap();
        assert_eq!(p.len(), 3);
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-6);
        // The threshold the model learned at calibration (hello says which).
        let threshold = hello["operating_point"]["threshold"]
            .as_f64()
            .unwrap_or(0.6);
        assert!(
            c["confidence"].as_f64().unwrap() >= threshold,
            "{c} {hello}"
        );
        assert!(c["latency_ms"].as_f64().unwrap() >= 0.0);
    }
    let live = live_metrics.unwrap();
    assert!(
        live.starts_with("HTTP/1.1 200") || live.starts_with("HTTP/1.0 200"),
        "{live}"
    );
    assert!(
        live.contains("content-type: text/plain; version=0.0.4"),
        "{live}"
    );
    assert!(metric(&live, "neurostream_commands_out_total") >= 1.0);
    assert_eq!(metric(&live, "neurostream_websocket_clients"), 1.0);
    metric(&live, "neurostream_drops_total{reason=\"client_queue\"}");
    metric(
        &live,
        "neurostream_command_latency_seconds_bucket{le=\"+Inf\"}",
    );
    // Final counts, after the stream ended.
    let metrics = setup.service.metrics().render();
    assert_eq!(metric(&metrics, "neurostream_samples_in_total"), 9600.0);
    assert!(metric(&metrics, "neurostream_windows_processed_total") > 200.0);
    assert_eq!(
        metric(&metrics, "neurostream_commands_out_total"),
        commands.len() as f64
    );
    assert_eq!(
        metric(&metrics, "neurostream_command_latency_seconds_count"),
        commands.len() as f64
    );
    let summary = setup.service.wait().await.unwrap();
    assert_eq!(summary.commands, commands.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_loses_messages_and_delays_nobody() {
    let config = ServiceConfig {
        client_queue: 32,
        ..ServiceConfig::default()
    };
    // All 16 channels, as fast as possible: ~15 MB of signal for the slow client.
    let setup = start(config, None, true, Some(600.0), 0.0).await;
    let mut good = connect(&setup.url).await;
    let mut slow = silent_client(&setup).await;
    setup.hold_end.store(true, Ordering::Relaxed);
    setup.gate.store(true, Ordering::Relaxed);
    // Wait until the whole stream went through the pipeline (the source then holds its end).
    let metrics = setup.service.metrics();
    let deadline = std::time::Instant::now() + PATIENCE;
    while metrics.samples_in.load(Ordering::Relaxed) < 96_000 {
        assert!(
            std::time::Instant::now() < deadline,
            "the stream never finished"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let commands = metrics.commands_out.load(Ordering::Relaxed);
    assert!(commands > 0);
    let dropped = metrics.drops(neurostream::service::metrics::DropReason::ClientQueue);
    assert!(dropped > 0, "the slow client's queue never overflowed");
    // The reading client got every command, in order.
    let mut seqs = Vec::new();
    while seqs.len() < commands as usize {
        let message = next_json(&mut good).await.expect("connection ended");
        match message["type"].as_str().unwrap() {
            "command" => seqs.push(message["seq"].as_u64().unwrap()),
            "hello" => {}
            other => panic!("unexpected {other}: {message}"),
        }
    }
    assert_eq!(
        seqs,
        (1..=commands).collect::<Vec<_>>(),
        "the reading client lost commands"
    );
    // The slow client is told about its losses once it reads again.
    let mut reported = false;
    while let Some(message) = next_json(&mut slow).await {
        if message["type"] == "status" && message["event"] == "messages_dropped" {
            assert!(message["dropped"].as_u64().unwrap() > 0);
            reported = true;
            break;
        }
    }
    assert!(reported, "no messages_dropped status");
    setup.hold_end.store(false, Ordering::Relaxed);
    assert_eq!(next_of(&mut good, "status").await["event"], "stream_ended");
    drop(slow);
    setup.service.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_messages_get_errors_and_oversize_closes_with_1009() {
    let config = ServiceConfig {
        max_message_bytes: 1024,
        ..feedback_config()
    };
    let setup = start(config, None, false, None, 1.0).await;
    setup.gate.store(true, Ordering::Relaxed);
    let mut client = connect(&with_feedback(&setup.url)).await;
    assert_eq!(next_json(&mut client).await.unwrap()["type"], "hello");
    send(&mut client, r#"{"type":"teleport"}"#).await;
    assert_eq!(next_of(&mut client, "error").await["code"], "unknown_type");
    send(&mut client, r#"{"type":"feedback","class":"up"}"#).await;
    let error = next_of(&mut client, "error").await;
    assert_eq!(error["code"], "bad_request");
    assert!(error["message"]
        .as_str()
        .unwrap()
        .contains("rest, left, right"));
    send(&mut client, r#"{"type":"ping","id":42}"#).await;
    assert_eq!(next_of(&mut client, "pong").await["id"], 42);
    // Not JSON: a protocol violation since the hardening (issue 14): the error, then 1007.
    send(&mut client, "{not json").await;
    let error = next_of(&mut client, "error").await;
    assert_eq!(error["code"], "malformed", "{error}");
    assert_eq!(close_code(&mut client).await, Some(CloseCode::Invalid));

    let mut client = connect(&setup.url).await;
    let big = format!(r#"{{"type":"ping","id":"{}"}}"#, "x".repeat(4000));
    send(&mut client, &big).await;
    assert_eq!(close_code(&mut client).await, Some(CloseCode::Size));
    setup.service.shutdown().trigger();
    setup.service.wait().await.unwrap();
}

async fn close_code(client: &mut Socket) -> Option<CloseCode> {
    loop {
        match tokio::time::timeout(PATIENCE, client.next()).await.unwrap() {
            Some(Ok(Message::Close(frame))) => break frame.map(|f| f.code),
            Some(Ok(_)) => {}
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_client_limit_and_origin_are_enforced() {
    let config = ServiceConfig {
        token: Some("s3cret".into()),
        max_clients: 1,
        ..ServiceConfig::default()
    };
    let setup = start(config, None, false, None, 1.0).await;
    setup.gate.store(true, Ordering::Relaxed);
    let status = |result: Result<_, tungstenite::Error>| match result {
        Err(tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(e) => panic!("{e}"),
        Ok(_) => 101,
    };
    assert_eq!(
        status(tokio_tungstenite::connect_async(&setup.url).await),
        401
    );
    let wrong = format!("{}?token=nope", setup.url);
    assert_eq!(status(tokio_tungstenite::connect_async(&wrong).await), 401);
    use tungstenite::client::IntoClientRequest;
    let mut request = setup.url.as_str().into_client_request().unwrap();
    request
        .headers_mut()
        .insert("Authorization", "Bearer s3cret".parse().unwrap());
    let (mut first, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(next_json(&mut first).await.unwrap()["type"], "hello");
    let by_query = format!("{}?token=s3cret", setup.url);
    assert_eq!(
        status(tokio_tungstenite::connect_async(&by_query).await),
        503,
        "a second client beyond max_clients = 1"
    );
    drop(first);
    let mut request = by_query.as_str().into_client_request().unwrap();
    request
        .headers_mut()
        .insert("Origin", "https://evil.example".parse().unwrap());
    assert_eq!(status(tokio_tungstenite::connect_async(request).await), 403);
    // The slot of the first client is released once it is gone.
    let mut again = None;
    for _ in 0..100 {
        if let Ok((socket, _)) = tokio_tungstenite::connect_async(&by_query).await {
            again = Some(socket);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut again = again.expect("the first client's slot was never released");
    assert_eq!(next_json(&mut again).await.unwrap()["type"], "hello");
    let metrics = http_get(setup.service.local_addr(), "/metrics?token=s3cret").await;
    assert!(metric(&metrics, "neurostream_drops_total{reason=\"max_clients\"}") >= 1.0);
    setup.service.shutdown().trigger();
    setup.service.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feedback_trains_the_plastic_decoder() {
    let decoder = DecoderConfig::Mlp(MlpConfig::default());
    let setup = start(feedback_config(), Some(decoder), false, None, 4.0).await;
    setup.gate.store(true, Ordering::Relaxed);
    let mut client = connect(&with_feedback(&setup.url)).await;
    let hello = next_json(&mut client).await.unwrap();
    assert_eq!(hello["decoder"]["kind"], "mlp", "{hello}");
    let before = hello["decoder"]["version"].as_u64().unwrap();
    let mut after = before;
    for i in 0..40 {
        let class = ["left", "right"][i % 2];
        send(
            &mut client,
            &format!(r#"{{"type":"feedback","class":"{class}"}}"#),
        )
        .await;
        let learned = next_of(&mut client, "learned").await;
        assert_eq!(learned["class"], class);
        after = learned["decoder_version"].as_u64().unwrap();
        if after > before {
            assert_eq!(learned["applied"], true);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(after > before, "decoder version stayed at {before}");
    // New clients see the new version.
    let mut late = connect(&setup.url).await;
    let hello = next_json(&mut late).await.unwrap();
    assert!(hello["decoder"]["version"].as_u64().unwrap() >= after);
    setup.service.shutdown().trigger();
    let summary = setup.service.wait().await.unwrap();
    assert!(summary.feedback_applied >= 1);
}

#[test]
fn every_example_in_the_protocol_document_parses() {
    use neurostream::service::protocol::{ClientMessage, ServerMessage};
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/protocol.md"),
    )
    .unwrap();
    let mut checked = std::collections::BTreeSet::new();
    for block in doc.split("```json\n").skip(1) {
        let block = block.split("```").next().unwrap();
        let messages: Vec<Value> = match serde_json::from_str(block) {
            Ok(one) => vec![one],
            Err(_) => block
                .lines()
                .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
                .collect(),
        };
        for message in messages {
            let kind = message["type"].as_str().unwrap().to_owned();
            let ok = serde_json::from_value::<ServerMessage>(message.clone()).is_ok()
                || serde_json::from_value::<ClientMessage>(message.clone()).is_ok();
            assert!(ok, "documented example does not parse: {message}");
            checked.insert(kind);
        }
    }
    for kind in [
        "hello",
        "command",
        "status",
        "features",
        "signal",
        "learned",
        "subscribed",
        "pong",
        "error",
        "feedback",
        "subscribe",
        "unsubscribe",
        "ping",
    ] {
        assert!(checked.contains(kind), "no documented example of {kind}");
    }
}

/// Feedback that names a command (`seq`) trains on that command's window; a command too old
/// to be remembered gets an error and nothing is learned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feedback_about_a_command_uses_its_window() {
    let decoder = DecoderConfig::Mlp(MlpConfig::default());
    let setup = start(feedback_config(), Some(decoder), false, None, 4.0).await;
    setup.gate.store(true, Ordering::Relaxed);
    let mut client = connect(&with_feedback(&setup.url)).await;
    let hello = next_json(&mut client).await.unwrap();
    let before = hello["decoder"]["version"].as_u64().unwrap();
    let command = next_of(&mut client, "command").await;
    let seq = command["seq"].as_u64().unwrap();
    send(
        &mut client,
        &format!(
            r#"{{"type":"feedback","class":"right","seq":{}}}"#,
            seq + 1000
        ),
    )
    .await;
    let error = next_of(&mut client, "error").await;
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("not among the last"),
        "{error}"
    );
    let mut applied = false;
    let mut after = before;
    for class in ["left", "right", "left", "right", "left", "right"] {
        send(
            &mut client,
            &format!(r#"{{"type":"feedback","class":"{class}","seq":{seq}}}"#),
        )
        .await;
        let learned = next_of(&mut client, "learned").await;
        assert_eq!(learned["seq"], seq);
        after = learned["decoder_version"].as_u64().unwrap();
        if learned["applied"] == true {
            applied = true;
            break;
        }
    }
    assert!(applied && after > before, "version {before} → {after}");
    setup.service.shutdown().trigger();
    setup.service.wait().await.unwrap();
}

fn resident_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// 1 000 concurrent clients on loopback, 200 of which subscribe to everything and never read:
/// the 800 others get every command in order, the slow ones' losses are counted, and memory
/// stays bounded by the per-client queues (not by how much they failed to read).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_clients_with_a_fifth_never_reading() {
    const READERS: usize = 800;
    const SLOW: usize = 200;
    let config = ServiceConfig {
        client_queue: 32,
        max_clients: READERS + SLOW + 10,
        ..ServiceConfig::default()
    };
    // 240 s of all 16 channels at 12× real time: a pace 800 readers on two cores keep up with
    // (as fast as possible would overflow the readers' queues too), and enough signal (~6 MB
    // per slow client) to get past the kernel's socket buffers into the queues.
    let setup = start(config, None, true, Some(240.0), 12.0).await;
    let rss_before = resident_kib();
    let connecting = std::time::Instant::now();
    let mut slow = Vec::new();
    for _ in 0..SLOW {
        slow.push(silent_client(&setup).await);
    }
    let (total_tx, total_rx) = tokio::sync::watch::channel(0u64);
    let mut readers = Vec::new();
    for _ in 0..READERS {
        let mut client = connect(&setup.url).await;
        let mut total_rx = total_rx.clone();
        readers.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            let mut latencies = Vec::new();
            loop {
                let total = *total_rx.borrow_and_update();
                if total > 0 && seqs.len() as u64 >= total {
                    break;
                }
                // No per-message timeout here: a reader that has everything waits for the
                // total, however long the 1 000 connections took to set up.
                tokio::select! {
                    message = client.next() => {
                        let Some(Ok(Message::Text(text))) = message else {
                            assert!(message.is_some(), "connection ended");
                            continue;
                        };
                        let message: Value = serde_json::from_str(text.as_str()).unwrap();
                        if message["type"] == "command" {
                            seqs.push(message["seq"].as_u64().unwrap());
                            latencies.push(message["latency_ms"].as_f64().unwrap());
                        }
                    }
                    _ = total_rx.changed() => {}
                }
            }
            (seqs, latencies, client)
        }));
    }
    eprintln!("1 000 clients connected in {:?}", connecting.elapsed());
    setup.hold_end.store(true, Ordering::Relaxed);
    setup.gate.store(true, Ordering::Relaxed);
    let metrics = setup.service.metrics();
    let deadline = std::time::Instant::now() + PATIENCE * 4;
    while metrics.samples_in.load(Ordering::Relaxed) < 38_400 {
        assert!(
            std::time::Instant::now() < deadline,
            "the stream never finished"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let commands = metrics.commands_out.load(Ordering::Relaxed);
    assert!(commands > 0);
    total_tx.send(commands).unwrap();
    let mut latencies = Vec::new();
    let mut clients = Vec::new();
    for reader in readers {
        let (seqs, mut l, client) = tokio::time::timeout(PATIENCE * 4, reader)
            .await
            .expect("a reader never got every command")
            .unwrap();
        assert_eq!(
            seqs,
            (1..=commands).collect::<Vec<_>>(),
            "a reader lost commands"
        );
        latencies.append(&mut l);
        clients.push(client);
    }
    let dropped = metrics.drops(neurostream::service::metrics::DropReason::ClientQueue);
    assert!(dropped > 0, "the slow clients' queues never overflowed");
    let rss_after = resident_kib();
    // Unbounded queues would hold the whole 240 s of 16-channel signal and features JSON per
    // slow client (several MB each, hundreds of MB for 200); bounded ones hold 32 messages.
    let growth_mib = rss_after.saturating_sub(rss_before) / 1024;
    assert!(growth_mib < 256, "resident memory grew by {growth_mib} MiB");
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    eprintln!(
        "{READERS} readers got all {commands} commands each; {SLOW} never-reading clients lost \
         {dropped} messages; resident memory {rss_before} kB → {rss_after} kB; command \
         latency (chunk arrival → queued) p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        at(0.5),
        at(0.99),
        latencies.last().unwrap()
    );
    setup.hold_end.store(false, Ordering::Relaxed);
    drop(slow);
    drop(clients);
    setup.service.wait().await.unwrap();
}
