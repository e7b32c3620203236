//! The NATS hop beside the WebSocket hop (not a test; figures go to docs/scale.md):
//!
//! ```sh
//! cargo bench --bench nats_hop            # needs nats-server on PATH (apt-get install nats-server)
//! ```
//!
//! Starts its own `nats-server -js` on 127.0.0.1 (free port, temporary store; killed at the
//! end). For two payloads — a 64 ch × 1 kHz raw chunk of 10 samples (100 messages/s) as the
//! publisher encodes it, and a command — it measures:
//! - latency, paced at 100 messages/s: JetStream publish (stored, acknowledged) → a core
//!   subscriber on the same subject receives it; and the same payload over a WebSocket on
//!   127.0.0.1 (tokio-tungstenite server → client);
//! - throughput: messages/s of a burst of 20 000 JetStream publishes, 256 acks in flight;
//! - sessions: N concurrent 64 ch × 160 Hz sessions (raw chunks of 16 samples, 10/s, plus
//!   10 features and ~1 command per second each) publishing through one connection each for
//!   5 s; a session "drops" when a publish is not acknowledged within 1 s or its bounded
//!   queue (4096) overflows. Doubling N until drops appear.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use futures_util::{SinkExt, StreamExt};

struct Server(Child, std::path::PathBuf);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

fn start_server() -> Option<(Server, String)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let store = std::env::temp_dir().join(format!("neurostream-nats-bench-{port}"));
    std::fs::create_dir_all(&store).ok()?;
    let child = Command::new("nats-server")
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(&store)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let server = Server(child, store);
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if started.elapsed() > Duration::from_secs(20) {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Some((server, format!("nats://127.0.0.1:{port}")))
}

fn raw_payload(channels: usize, samples: usize) -> Vec<u8> {
    let values: Vec<Vec<f32>> = (0..channels)
        .map(|c| (0..samples).map(|s| (c * 31 + s) as f32 * 0.173).collect())
        .collect();
    let timestamps: Vec<f64> = (0..samples).map(|s| 1000.0 + s as f64 * 1e-3).collect();
    serde_json::json!({"session":"bench","sequence":1,"published":0.0,
        "type":"raw","timestamps":timestamps,"values":values})
    .to_string()
    .into_bytes()
}

fn command_payload() -> Vec<u8> {
    br#"{"session":"bench","sequence":1,"published":0.0,"type":"command","seq":1,"command":"left","class":"left","class_index":0,"confidence":0.91,"probabilities":[0.91,0.09],"timestamp":12.5,"latency_ms":0.21}"#.to_vec()
}

fn percentiles(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.99))
}

/// Paced JetStream publish → core subscriber, milliseconds.
async fn nats_latency(url: &str, subject: &str, payload: &[u8], n: usize) -> (f64, f64) {
    let client = async_nats::connect(url).await.unwrap();
    let js = jetstream::new(client.clone());
    let mut sub = client.subscribe(subject.to_owned()).await.unwrap();
    client.flush().await.unwrap();
    let payload = bytes::Bytes::from(payload.to_vec());
    let mut latencies = Vec::with_capacity(n);
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    for _ in 0..n {
        tick.tick().await;
        let sent = Instant::now();
        let ack = js
            .publish(subject.to_owned(), payload.clone())
            .await
            .unwrap();
        let _ = tokio::time::timeout(Duration::from_secs(5), sub.next()).await;
        latencies.push(sent.elapsed().as_secs_f64() * 1e3);
        ack.await.unwrap();
    }
    percentiles(latencies)
}

/// Paced WebSocket server → client on 127.0.0.1, milliseconds.
async fn ws_latency(payload: &[u8], n: usize) -> (f64, f64) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let text = String::from_utf8(payload.to_vec()).unwrap();
    let (go_tx, mut go_rx) = tokio::sync::mpsc::channel::<Instant>(16);
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
        while let Some(_sent) = go_rx.recv().await {
            ws.send(tokio_tungstenite::tungstenite::Message::text(text.clone()))
                .await
                .unwrap();
        }
    });
    let (mut client, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/"))
        .await
        .unwrap();
    let mut latencies = Vec::with_capacity(n);
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    for _ in 0..n {
        tick.tick().await;
        let sent = Instant::now();
        go_tx.send(sent).await.unwrap();
        let _ = client.next().await;
        latencies.push(sent.elapsed().as_secs_f64() * 1e3);
    }
    drop(go_tx);
    let _ = server.await;
    percentiles(latencies)
}

/// Burst of `n` JetStream publishes with 256 acks in flight: messages per second.
async fn nats_throughput(url: &str, subject: &str, payload: &[u8], n: usize) -> f64 {
    let client = async_nats::connect(url).await.unwrap();
    let js = jetstream::new(client);
    let payload = bytes::Bytes::from(payload.to_vec());
    let started = Instant::now();
    let mut acks = futures_util::stream::FuturesUnordered::new();
    let check = |r: Option<Result<(), async_nats::jetstream::context::PublishError>>| {
        if let Some(Err(e)) = r {
            panic!("publish not acknowledged: {e}");
        }
    };
    for _ in 0..n {
        if acks.len() >= 256 {
            check(acks.next().await);
        }
        let ack = js
            .publish(subject.to_owned(), payload.clone())
            .await
            .unwrap();
        acks.push(async move { ack.await.map(|_| ()) });
    }
    while !acks.is_empty() {
        check(acks.next().await);
    }
    n as f64 / started.elapsed().as_secs_f64()
}

/// `sessions` concurrent 64 ch × 160 Hz sessions for `seconds`: messages lost in total.
async fn sessions(url: &str, sessions: usize, seconds: f64) -> (u64, u64) {
    let raw = bytes::Bytes::from(raw_payload(64, 16));
    let features = bytes::Bytes::from(vec![b'1'; 64 * 2 * 8]);
    let command = bytes::Bytes::from(command_payload());
    let mut tasks = Vec::new();
    for s in 0..sessions {
        let url = url.to_owned();
        let (raw, features, command) = (raw.clone(), features.clone(), command.clone());
        tasks.push(tokio::spawn(async move {
            let client = async_nats::connect(url).await.unwrap();
            let js = jetstream::new(client);
            let (tx, mut rx) = tokio::sync::mpsc::channel::<(String, bytes::Bytes)>(4096);
            let publisher = tokio::spawn(async move {
                let mut lost = 0u64;
                let mut sent = 0u64;
                let mut acks = futures_util::stream::FuturesUnordered::new();
                while let Some((subject, payload)) = rx.recv().await {
                    while acks.len() >= 256 {
                        if let Some(Err(_)) = acks.next().await {
                            lost += 1;
                        }
                    }
                    match js.publish(subject, payload).await {
                        Ok(ack) => acks
                            .push(tokio::time::timeout(Duration::from_secs(1), async move {
                                ack.await.map(|_| ())
                            })),
                        Err(_) => lost += 1,
                    }
                    sent += 1;
                }
                while let Some(result) = acks.next().await {
                    if !matches!(result, Ok(Ok(_))) {
                        lost += 1;
                    }
                }
                (sent, lost)
            });
            let mut dropped = 0u64;
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            let ticks = (seconds * 10.0) as usize;
            for i in 0..ticks {
                tick.tick().await;
                let mut items = vec![
                    (format!("bench.s{s}.raw"), raw.clone()),
                    (format!("bench.s{s}.features"), features.clone()),
                ];
                if i % 10 == 0 {
                    items.push((format!("bench.s{s}.commands"), command.clone()));
                }
                for item in items {
                    if tx.try_send(item).is_err() {
                        dropped += 1;
                    }
                }
            }
            drop(tx);
            let (sent, lost) = publisher.await.unwrap();
            (sent + dropped, lost + dropped)
        }));
    }
    let mut total = (0, 0);
    for task in tasks {
        let (sent, lost) = task.await.unwrap();
        total.0 += sent;
        total.1 += lost;
    }
    total
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing we need.
    let Some((_server, url)) = start_server() else {
        eprintln!("nats_hop: nats-server not found or did not start; apt-get install nats-server");
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = async_nats::connect(url.as_str()).await.unwrap();
        let js = jetstream::new(client);
        js.create_stream(jetstream::stream::Config {
            name: "BENCH".into(),
            subjects: vec!["bench.>".into()],
            max_bytes: 1 << 30,
            ..Default::default()
        })
        .await
        .unwrap();
        let raw = raw_payload(64, 10);
        let command = command_payload();
        println!(
            "payloads: raw 64 ch x 10 samples {} B, command {} B",
            raw.len(),
            command.len()
        );
        for (name, payload) in [
            ("raw 64ch x 1kHz (10-sample chunks)", &raw),
            ("command", &command),
        ] {
            let (np50, np99) = nats_latency(&url, "bench.lat", payload, 1000).await;
            let (wp50, wp99) = ws_latency(payload, 1000).await;
            let rate = nats_throughput(&url, "bench.burst", payload, 20_000).await;
            println!(
                "{name}: NATS JetStream hop p50 {np50:.3} ms p99 {np99:.3} ms; WebSocket hop p50 \
                 {wp50:.3} ms p99 {wp99:.3} ms; JetStream burst {rate:.0} msg/s"
            );
        }
        let mut n = 1;
        loop {
            let (sent, lost) = sessions(&url, n, 5.0).await;
            println!("{n} sessions of 64 ch x 160 Hz for 5 s: {sent} messages, {lost} lost");
            if lost > 0 || n >= 512 {
                break;
            }
            n *= 2;
        }
    });
}
