//! The service's edges (issue 14), against the real binary (`neurostream demo`) on 127.0.0.1,
//! port 0: memory bounded under never-reading clients, slow and silent sockets released,
//! feedback refused without the right, `Origin: null` refused, close codes, SIGTERM, and
//! `--record` refusing to overwrite. Timeouts only keep a broken test from hanging; nothing
//! asserts speed.

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const PATIENCE: Duration = Duration::from_secs(60);

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

/// `neurostream demo` with `args`, serving on a free port; its address from the log.
struct Served {
    child: Child,
    addr: String,
}

impl Served {
    fn start(args: &[&str]) -> Served {
        Self::start_with(args, None)
    }

    /// With `nofile`: under `ulimit -n nofile`.
    fn start_with(args: &[&str], nofile: Option<u32>) -> Served {
        let binary = env!("CARGO_BIN_EXE_neurostream");
        let mut command = match nofile {
            Some(limit) => {
                let mut c = Command::new("sh");
                c.args(["-c", &format!("ulimit -n {limit} && exec \"$0\" \"$@\"")])
                    .arg(binary);
                c
            }
            None => Command::new(binary),
        };
        let mut child = command
            .arg("demo")
            .args(["--calibration-seconds", "30", "--bind", "127.0.0.1:0"])
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .env_remove("NEUROSTREAM_TOKEN")
            .env_remove("NEUROSTREAM_FEEDBACK_TOKEN")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run neurostream");
        let mut log = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let addr = log
            .by_ref()
            .map(|l| l.unwrap())
            .find_map(|l| {
                let start = l.find("ws://")? + "ws://".len();
                Some(l[start..].split('/').next()?.to_owned())
            })
            .expect("the service never said where it serves");
        std::thread::spawn(move || log.count());
        Served { child, addr }
    }

    fn url(&self, query: &str) -> String {
        format!("ws://{}/ws{query}", self.addr)
    }

    /// Resident memory of the service, KiB.
    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("the service is running");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc status")
    }

    fn sigterm(&self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -TERM failed");
    }

    /// Exit status within [`PATIENCE`].
    fn wait(&mut self) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the service did not exit"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

async fn connect(url: &str) -> Socket {
    tokio::time::timeout(PATIENCE, tokio_tungstenite::connect_async(url))
        .await
        .expect("connect timed out")
        .expect("connect")
        .0
}

async fn next_of(socket: &mut Socket, kind: &str) -> Value {
    loop {
        let message = tokio::time::timeout(PATIENCE, socket.next())
            .await
            .unwrap_or_else(|_| panic!("no {kind} in time"))
            .unwrap_or_else(|| panic!("closed before {kind}"))
            .unwrap();
        if let Message::Text(text) = message {
            let value: Value = serde_json::from_str(&text).unwrap();
            if value["type"] == kind {
                return value;
            }
        }
    }
}

async fn close_code(socket: &mut Socket) -> Option<u16> {
    loop {
        match tokio::time::timeout(PATIENCE, socket.next()).await.unwrap() {
            Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => {}
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

/// A raw HTTP/1.0 request; the whole answer.
async fn http(addr: &str, request: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut body = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut body))
        .await
        .expect("no answer in time")
        .unwrap();
    String::from_utf8_lossy(&body).into_owned()
}

async fn get(addr: &str, path: &str) -> String {
    http(
        addr,
        &format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n"),
    )
    .await
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("{series} missing from\n{text}"))
        .parse()
        .unwrap()
}

/// A WebSocket handshake by hand, so the test can then send frames tungstenite never would.
async fn raw_websocket(addr: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        tokio::time::timeout(PATIENCE, stream.read_exact(&mut byte))
            .await
            .unwrap()
            .unwrap();
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{:?}",
        String::from_utf8_lossy(&head)
    );
    stream
}

/// Server frames until a close frame; its code.
async fn raw_close_code(stream: &mut TcpStream) -> Option<u16> {
    loop {
        let mut head = [0u8; 2];
        tokio::time::timeout(PATIENCE, stream.read_exact(&mut head))
            .await
            .unwrap()
            .ok()?;
        let length = match head[1] & 0x7f {
            126 => {
                let mut n = [0u8; 2];
                stream.read_exact(&mut n).await.ok()?;
                u16::from_be_bytes(n) as usize
            }
            127 => {
                let mut n = [0u8; 8];
                stream.read_exact(&mut n).await.ok()?;
                u64::from_be_bytes(n) as usize
            }
            n => n as usize,
        };
        let mut payload = vec![0u8; length];
        stream.read_exact(&mut payload).await.ok()?;
        if head[0] & 0x0f == 0x8 {
            return (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
        }
    }
}

#[test]
fn never_reading_clients_flooding_bad_messages_stay_within_a_memory_bound() {
    let served = Served::start(&["--speed", "16", "--messages-per-second", "1000"]);
    block_on(async {
        // Let the service warm up (calibration done, first windows) before the baseline.
        let mut reader = connect(&served.url("")).await;
        next_of(&mut reader, "command").await;
        let before = served.rss_kib();
        let mut flooders = Vec::new();
        for _ in 0..4 {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.set_recv_buffer_size(4096).unwrap();
            let stream = socket.connect(served.addr.parse().unwrap()).await.unwrap();
            let (client, _) = tokio_tungstenite::client_async(
                served.url("").into_client_request().unwrap(),
                tokio_tungstenite::MaybeTlsStream::Plain(stream),
            )
            .await
            .unwrap();
            let (mut sink, stream) = client.split();
            flooders.push(stream);
            // Each reply used to quote the whole (escaped) type back: ~6× the message.
            let huge = format!(r#"{{"type":"{}"}}"#, "\\u0001".repeat(10_000));
            sink.send(Message::Text(
                r#"{"type":"subscribe","topics":["signal","features"]}"#.into(),
            ))
            .await
            .unwrap();
            tokio::spawn(async move {
                for _ in 0..100_000 {
                    if sink.send(Message::Text(huge.clone().into())).await.is_err() {
                        break;
                    }
                }
                // Keep the connection open, never reading.
                std::future::pending::<()>().await;
                drop(sink);
            });
        }
        // The well-behaved client is still served while the flood goes on, until the
        // flooders' queues have overflowed (the kernel's socket buffers fill first) and for
        // ten more looks after that.
        let mut peak = before;
        let mut seq = next_of(&mut reader, "command").await["seq"]
            .as_u64()
            .unwrap();
        let deadline = std::time::Instant::now() + PATIENCE;
        let mut after_overflow = 0;
        while after_overflow < 10 {
            assert!(
                std::time::Instant::now() < deadline,
                "the flooders' queues never overflowed"
            );
            let next = next_of(&mut reader, "command").await["seq"]
                .as_u64()
                .unwrap();
            assert!(next > seq);
            seq = next;
            peak = peak.max(served.rss_kib());
            let metrics = get(&served.addr, "/metrics").await;
            if metric(&metrics, "neurostream_drops_total{reason=\"client_queue\"}") > 0.0 {
                after_overflow += 1;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let growth = peak.saturating_sub(before);
        println!("RSS before the flood {before} KiB, peak {peak} KiB, growth {growth} KiB");
        // 4 × 1 MiB queues, their read buffers and allocator slack: far below the ~450 MiB of
        // issue 14.
        assert!(growth < 64 * 1024, "RSS grew by {growth} KiB");
        drop(flooders);
    });
}

#[test]
fn slow_and_silent_sockets_are_released_and_health_keeps_answering() {
    let served = Served::start_with(
        &[
            "--speed",
            "4",
            "--header-timeout",
            "1",
            "--idle-timeout",
            "2",
            "--max-connections",
            "512",
        ],
        Some(1024),
    );
    block_on(async {
        let addr = served.addr.clone();
        let mut slow = Vec::new();
        for _ in 0..200 {
            let mut stream = TcpStream::connect(&addr).await.unwrap();
            stream
                .write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
                .await
                .unwrap();
            slow.push(stream);
        }
        let mut silent = Vec::new();
        for _ in 0..100 {
            silent.push(TcpStream::connect(&addr).await.unwrap());
        }
        for (what, sockets) in [("slowloris", &mut slow), ("silent", &mut silent)] {
            for stream in sockets.iter_mut() {
                let mut buffer = [0u8; 256];
                // Released: the server closes (EOF, possibly after a 408) or resets.
                loop {
                    match tokio::time::timeout(PATIENCE, stream.read(&mut buffer)).await {
                        Err(_) => panic!("a {what} socket was never released"),
                        Ok(Ok(0)) | Ok(Err(_)) => break,
                        Ok(Ok(_)) => {}
                    }
                }
            }
        }
        // 1100 idle sockets against a service limited to 1024 descriptors.
        let mut idle = Vec::new();
        for _ in 0..1100 {
            match tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(&addr)).await {
                Ok(Ok(stream)) => idle.push(stream),
                _ => break,
            }
        }
        let health = get(&addr, "/health").await;
        assert!(health.contains("\"status\":\"ok\""), "{health}");
        let metrics = get(&addr, "/metrics").await;
        assert!(metric(&metrics, "neurostream_drops_total{reason=\"timeout\"}") >= 300.0);
        drop(idle);
    });
}

#[test]
fn feedback_needs_the_right_and_hostile_connections_are_refused() {
    let served = Served::start(&[
        "--token",
        "t0k",
        "--allow-feedback",
        "--feedback-token",
        "fb",
        "--max-message-bytes",
        "1024",
    ]);
    block_on(async {
        let addr = served.addr.clone();
        // /metrics needs the token; a rebinding Host is refused on every route.
        assert!(get(&addr, "/metrics").await.starts_with("HTTP/1.0 401"));
        assert!(get(&addr, "/metrics?token=t0k")
            .await
            .contains("neurostream_drops_total"));
        for path in ["/", "/health", "/metrics?token=t0k", "/ws?token=t0k"] {
            let answer = http(
                &addr,
                &format!("GET {path} HTTP/1.0\r\nHost: evil.example:8765\r\n\r\n"),
            )
            .await;
            assert!(answer.starts_with("HTTP/1.0 421"), "{path}: {answer}");
            // Two Host headers: 400 (RFC 9112), in either order, even when the first is local.
            for hosts in [
                "Host: 127.0.0.1\r\nHost: evil.example",
                "Host: evil.example\r\nHost: 127.0.0.1",
                "Host: 127.0.0.1\r\nHost: 127.0.0.1",
            ] {
                let request =
                    format!("GET {path} HTTP/1.1\r\n{hosts}\r\nConnection: close\r\n\r\n");
                let answer = http(&addr, &request).await;
                assert!(
                    answer.starts_with("HTTP/1.1 400"),
                    "{path} {hosts:?}: {answer}"
                );
            }
        }
        // Origin: null and an Origin that is not UTF-8 are foreign.
        for origin in [&b"null"[..], &b"http://\xff.example"[..]] {
            let mut request = served.url("?token=t0k").into_client_request().unwrap();
            request.headers_mut().insert(
                "Origin",
                tokio_tungstenite::tungstenite::http::HeaderValue::from_bytes(origin).unwrap(),
            );
            match tokio_tungstenite::connect_async(request).await {
                Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                    assert_eq!(response.status().as_u16(), 403)
                }
                other => panic!("Origin {origin:?} accepted: {:?}", other.map(|_| ())),
            }
        }
        // Feedback without the feedback token: refused, counted.
        let mut plain = connect(&served.url("?token=t0k")).await;
        for _ in 0..5 {
            plain
                .send(Message::Text(
                    r#"{"type":"feedback","class":"left"}"#.into(),
                ))
                .await
                .unwrap();
            assert_eq!(next_of(&mut plain, "error").await["code"], "forbidden");
        }
        plain
            .send(Message::Text(r#"{"type":"rollback"}"#.into()))
            .await
            .unwrap();
        assert_eq!(next_of(&mut plain, "error").await["code"], "forbidden");
        let metrics = get(&addr, "/metrics?token=t0k").await;
        assert_eq!(
            metric(
                &metrics,
                "neurostream_drops_total{reason=\"feedback_refused\"}"
            ),
            6.0
        );
        assert_eq!(metric(&metrics, "neurostream_feedback_applied_total"), 0.0);
        let refused = http(
            &addr,
            "POST /rollback?token=t0k HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n",
        )
        .await;
        assert!(refused.starts_with("HTTP/1.0 403"), "{refused}");
        // With the feedback token the same message reaches the decoder (LDA: not applied).
        let mut trusted = connect(&served.url("?token=t0k&feedback_token=fb")).await;
        trusted
            .send(Message::Text(
                r#"{"type":"feedback","class":"left"}"#.into(),
            ))
            .await
            .unwrap();
        let learned = next_of(&mut trusted, "learned").await;
        assert_eq!(learned["class"], "left", "{learned}");

        // Close codes: not JSON → 1007, too big → 1009, invalid UTF-8 → 1007, unmasked
        // client frame → 1002.
        let mut client = connect(&served.url("?token=t0k")).await;
        client.send(Message::Text("{oops".into())).await.unwrap();
        assert_eq!(close_code(&mut client).await, Some(1007));
        let mut client = connect(&served.url("?token=t0k")).await;
        client
            .send(Message::Text("x".repeat(4000).into()))
            .await
            .unwrap();
        assert_eq!(close_code(&mut client).await, Some(1009));
    });
}

#[test]
fn raw_protocol_violations_close_with_1002_and_1007() {
    let served = Served::start(&[]);
    block_on(async {
        let mut stream = raw_websocket(&served.addr).await;
        // Masked (key 0) text frame holding 0xFF: not UTF-8.
        stream
            .write_all(&[0x81, 0x81, 0, 0, 0, 0, 0xff])
            .await
            .unwrap();
        assert_eq!(raw_close_code(&mut stream).await, Some(1007));
        let mut stream = raw_websocket(&served.addr).await;
        // Unmasked client frame: RFC 6455 §5.1 requires the server to fail the connection.
        stream.write_all(&[0x81, 0x02, b'h', b'i']).await.unwrap();
        assert_eq!(raw_close_code(&mut stream).await, Some(1002));
    });
}

#[test]
fn sigterm_stops_cleanly_and_the_recording_is_whole_and_never_overwritten() {
    let dir = std::env::temp_dir().join(format!("neurostream-hardening-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("session.xdf");
    let _ = std::fs::remove_file(&path);
    let mut served = Served::start(&["--record", path.to_str().unwrap()]);
    block_on(async {
        let mut client = connect(&served.url("")).await;
        next_of(&mut client, "command").await;
        served.sigterm();
        assert_eq!(close_code(&mut client).await, Some(1001));
    });
    let status = served.wait();
    assert!(status.success(), "exit status {status:?}");
    neurostream::record::load(&path).expect("the recording reads whole");
    let bytes = std::fs::read(&path).unwrap();
    assert!(ends_with_footers(&bytes), "no StreamFooter at the end");

    let size = bytes.len();
    let output = Command::new(env!("CARGO_BIN_EXE_neurostream"))
        .args(["demo", "--bind", "127.0.0.1:0", "--record"])
        .arg(&path)
        .env_remove("NEUROSTREAM_TOKEN")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--overwrite"), "{stderr}");
    assert_eq!(std::fs::metadata(&path).unwrap().len() as usize, size);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Walk the XDF chunks; true when the last one is a StreamFooter (tag 6).
fn ends_with_footers(bytes: &[u8]) -> bool {
    let mut at = 4;
    let mut last = 0u16;
    while at < bytes.len() {
        let width = bytes[at] as usize;
        at += 1;
        if ![1, 4, 8].contains(&width) || at + width > bytes.len() {
            return false;
        }
        let mut length = 0u64;
        for (i, b) in bytes[at..at + width].iter().enumerate() {
            length |= (*b as u64) << (8 * i);
        }
        at += width;
        if at + 2 > bytes.len() {
            return false;
        }
        last = u16::from_le_bytes([bytes[at], bytes[at + 1]]);
        at += length as usize;
    }
    at == bytes.len() && last == 6
}
