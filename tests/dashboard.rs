//! The dashboard in a real browser. `neurostream replay S001R04.edf --serve` decodes a real EEG
//! run with a model trained on two other runs of the same subject; headless Chromium opens the
//! page the service serves at `/` and the test reads what a person would see: traces drawing,
//! the band-power heatmap filled, class probabilities moving, commands in the log, and a refusal
//! without the right token. A screenshot is saved under `target/` and its path printed.
//!
//! Chromium is driven over its DevTools protocol, which is JSON over a WebSocket: the
//! tokio-tungstenite client the crate already has is the whole driver, so no WebDriver crate or
//! chromedriver is needed. Without Chromium (or the EEG data) the test says SKIPPED, unless
//! `NEUROSTREAM_REQUIRE_BROWSER=1` (CI) makes a missing browser a failure.
//!
//! Timeouts only keep a broken run from hanging; nothing asserts speed.

#[path = "common/browser.rs"]
mod browser;
mod common;

use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use browser::{artefacts, chromium, Browser, Page, PATIENCE};
use serde_json::json;

const TOKEN: &str = "dash-t0k";
/// Replay pace: 125 s of S001R04 in about 42 s, long enough for a slow browser start and for
/// several trials (and commands) to pass while the page watches; the test stops it when done.
const SPEED: &str = "3";

/// `neurostream ARGS --bind 127.0.0.1:0 --token TOKEN`, killed on drop.
struct Served {
    child: Child,
    base: String,
}

impl Served {
    fn start(args: &[&str]) -> Served {
        let mut child = Command::new(env!("CARGO_BIN_EXE_neurostream"))
            .args(args)
            .args(["--bind", "127.0.0.1:0", "--token", TOKEN])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .env_remove("NEUROSTREAM_TOKEN")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run neurostream");
        let mut log = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let address = log
            .by_ref()
            .map(|l| l.unwrap())
            .find_map(|l| {
                let start = l.find("ws://")? + "ws://".len();
                Some(l[start..].split('/').next()?.to_owned())
            })
            .expect("the service never said where it serves");
        // Keep reading the log so the service never blocks on a full pipe.
        std::thread::spawn(move || log.count());
        Served {
            child,
            base: format!("http://{address}"),
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the page knows, for failure messages (the large buffers left out).
const DASHBOARD_STATE: &str =
    "window.dashboard ? JSON.stringify({connection: dashboard.connection, \
     authError: dashboard.authError, stream: dashboard.stream, counters: dashboard.counters, \
     probabilities: dashboard.probabilities.length}) : 'no dashboard object'";

/// A canvas as the person sees it: a hash of its pixels and how many are in a given hue.
/// `colour` is a JS predicate on (r, g, b, a).
fn canvas_pixels(id: &str, colour: &str) -> String {
    format!(
        "(() => {{ const c = document.getElementById('{id}'); \
         const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; \
         const match = {colour}; let count = 0, hash = 2166136261; \
         for (let i = 0; i < d.length; i += 4) {{ \
           if (match(d[i], d[i + 1], d[i + 2], d[i + 3])) count++; \
           hash = Math.imul(hash ^ d[i] ^ (d[i + 1] << 8) ^ (d[i + 2] << 16), 16777619) >>> 0; }} \
         return {{count, hash}}; }})()"
    )
}

/// Trace pixels: the traces are drawn in green (#7ee787); labels and grid lines are grey.
const TRACE_GREEN: &str = "(r, g, b, a) => a > 0 && g - r > 40 && g - b > 40";
/// Heatmap cells: any opaque coloured pixel (the background is transparent).
const ANY_PAINT: &str = "(r, g, b, a) => a > 200 && (r + g + b) > 60";

fn neurostream(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_neurostream"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("NO_COLOR", "1")
        .output()
        .expect("run neurostream");
    assert!(
        output.status.success(),
        "neurostream {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// The page with a wrong token: it says so, and no data reaches it.
async fn refused(page: &mut Page, served: &Served) {
    page.navigate(&format!("{}/?token=wrong", served.base))
        .await;
    let refusal = page
        .wait_for(
            "a refusal of the wrong token",
            "window.dashboard && dashboard.authError",
        )
        .await;
    assert!(
        refusal.as_str().unwrap().contains("Not authorized"),
        "{refusal}"
    );
    let banner = page
        .eval("(b => b.hidden ? null : b.textContent)(document.getElementById('banner'))")
        .await;
    assert_eq!(banner, refusal);
    let received = page
        .eval(
            "dashboard.hello === null && dashboard.counters.signal \
             + dashboard.counters.windows + dashboard.counters.commands",
        )
        .await;
    assert_eq!(received, 0, "data reached a page with the wrong token");
}

/// Open the page with the right token; the number of channels its hello announced.
async fn connected(page: &mut Page, served: &Served) -> u64 {
    page.navigate(&format!("{}/?token={TOKEN}", served.base))
        .await;
    page.wait_for(
        "the hello",
        "window.dashboard && dashboard.hello && dashboard.hello.channels.length",
    )
    .await
    .as_u64()
    .unwrap()
}

/// Wait until the page has drawn a frame after `messages` more signal chunks arrived.
async fn next_signal_frame(page: &mut Page, messages: u64) {
    let signal = page
        .eval("dashboard.counters.signal")
        .await
        .as_u64()
        .unwrap();
    page.wait_for(
        "more signal",
        &format!("dashboard.counters.signal >= {}", signal + messages),
    )
    .await;
    let frames = page.eval("dashboard.counters.framesDrawn").await;
    page.wait_for(
        "a frame drawn with it",
        &format!("dashboard.counters.framesDrawn > {frames}"),
    )
    .await;
}

/// Traces drawing: green pixels on the canvas for each of `traces` rows, and different
/// pixels once more signal has arrived.
async fn traces_move(page: &mut Page, traces: u64) {
    next_signal_frame(page, 10).await;
    let first = page.eval(&canvas_pixels("traces", TRACE_GREEN)).await;
    next_signal_frame(page, 10).await;
    let second = page.eval(&canvas_pixels("traces", TRACE_GREEN)).await;
    // A trace crosses ~900 px of canvas: at least that many pixels each once it is drawn
    // across, fewer only in the first seconds; 300 per trace cannot be met by labels alone.
    for seen in [&first, &second] {
        assert!(
            seen["count"].as_u64().unwrap() > 300 * traces,
            "traces not drawn: {seen}"
        );
    }
    assert_ne!(first["hash"], second["hash"], "the traces did not move");
}

/// Probabilities changing, as the legend a person reads shows them.
async fn probabilities_change(page: &mut Page) {
    let legend = page
        .wait_for(
            "probabilities",
            "(t => /\\d/.test(t) && t)(document.getElementById('prob-legend').textContent)",
        )
        .await;
    page.wait_for(
        "the probabilities changing",
        &format!("document.getElementById('prob-legend').textContent !== {legend}"),
    )
    .await;
}

/// At least `count` commands in the log, each with its latency, and every command received
/// is there.
async fn commands_logged(page: &mut Page, count: usize) {
    page.wait_for(
        "commands in the log",
        &format!("document.querySelectorAll('#commands li').length >= {count}"),
    )
    .await;
    // Read in one evaluation, so no command can arrive between the counts.
    let seen = page
        .eval(
            "[document.querySelectorAll('#commands li').length, dashboard.counters.commands, \
             document.querySelector('#commands li').textContent]",
        )
        .await;
    assert_eq!(seen[0], seen[1], "every command received is in the log");
    assert!(seen[2].as_str().unwrap().ends_with(" ms"), "{seen}");
    let status = page
        .eval("document.getElementById('counters').textContent")
        .await;
    assert!(
        status.as_str().unwrap().contains("latency (last)"),
        "{status}"
    );
}

/// Loss and recovery of the stream, as the status badge and counters show them. Neither the
/// simulator nor a replay loses its stream (a live LSL source does), so the test hands the
/// page's message handler the `status` messages of docs/protocol.md itself.
async fn stream_status_shown(page: &mut Page) {
    let badge = "document.getElementById('stream-state')";
    page.eval(
        r#"handle({type: "status", event: "stream_lost", reason: "no data for 2 s"}),
           handle({type: "status", event: "samples_dropped", reason: "gap", samples: 160}),
           handle({type: "status", event: "messages_dropped", dropped_total: 40, dropped: 8}),
           state.dirty = true"#,
    )
    .await;
    let lost = page
        .wait_for(
            "the stream lost",
            &format!(
                "{badge}.textContent.includes('lost') && [{badge}.textContent, {badge}.className]"
            ),
        )
        .await;
    assert_eq!(lost, json!(["stream lost: no data for 2 s", "badge bad"]));
    let status = page
        .eval("document.getElementById('counters').textContent")
        .await;
    let status = status.as_str().unwrap();
    assert!(status.contains("samples dropped (source)160"), "{status}");
    assert!(
        status.contains("messages dropped (this page)40"),
        "{status}"
    );
    page.eval(r#"handle({type: "status", event: "stream_regained"}), state.dirty = true"#)
        .await;
    page.wait_for(
        "the stream regained",
        &format!("{badge}.textContent === 'stream live'"),
    )
    .await;
}

async fn screenshot(page: &mut Page, name: &str) {
    let path = artefacts().join(name);
    page.screenshot(&path).await;
    let seen = page.eval(DASHBOARD_STATE).await;
    // For CI's log (the artefact to collect): written to stderr itself, because the test
    // harness captures `println!`/`eprintln!` of passing tests, and this line must show.
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "dashboard screenshot: {} ({seen})",
        path.display()
    );
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

#[test]
fn dashboard_shows_a_replay_decoded_live() {
    let Some([r04, r08, r12]) = common::imagery_runs("S001") else {
        return;
    };
    let Some(binary) = chromium() else {
        return;
    };
    // Start the browser first: it takes the longest to come up on a busy machine.
    let browser = Browser::launch(&binary, "replay");
    let model = artefacts().join("s001_bandpower_svm.json");
    let pipeline = "pipelines/mi_bandpower_svm.toml";
    neurostream(&[
        "train",
        "--pipeline",
        pipeline,
        "--recording",
        r08.to_str().unwrap(),
        r12.to_str().unwrap(),
        "--out",
        model.to_str().unwrap(),
    ]);
    let served = Served::start(&[
        "replay",
        r04.to_str().unwrap(),
        "--serve",
        "--speed",
        SPEED,
        "--pipeline",
        pipeline,
        "--model",
        model.to_str().unwrap(),
    ]);
    block_on(async {
        let mut page = Page::open(&browser).await;
        page.set_state_expression(DASHBOARD_STATE);
        refused(&mut page, &served).await;
        assert_eq!(connected(&mut page, &served).await, 64);
        traces_move(&mut page, 8).await;
        // The heatmap: 2 bands × 64 channels, painted.
        page.wait_for("features", "dashboard.counters.windows >= 2")
            .await;
        let rows = page.eval("dashboard.features.rows").await;
        assert_eq!(rows, json!(["mu", "beta"]));
        next_signal_frame(&mut page, 1).await;
        let heat = page.eval(&canvas_pixels("bands", ANY_PAINT)).await;
        assert!(
            heat["count"].as_u64().unwrap() > 10_000,
            "heatmap empty: {heat}"
        );
        probabilities_change(&mut page).await;
        commands_logged(&mut page, 2).await;
        screenshot(&mut page, "replay-S001R04.png").await;
    });
}

#[test]
fn dashboard_shows_the_demo() {
    let Some(binary) = chromium() else {
        return;
    };
    let browser = Browser::launch(&binary, "demo");
    // Twice real time: trials, and commands, every few seconds; a minute of wall time at most
    // (the test stops it when done).
    let served = Served::start(&["demo", "--seconds", "120", "--speed", "2"]);
    block_on(async {
        let mut page = Page::open(&browser).await;
        page.set_state_expression(DASHBOARD_STATE);
        refused(&mut page, &served).await;
        assert_eq!(connected(&mut page, &served).await, 3);
        traces_move(&mut page, 3).await;
        // Three channels leave room for the values in the heatmap's cells.
        page.wait_for("features", "dashboard.counters.windows >= 2")
            .await;
        let grid = page
            .eval("[dashboard.features.rows, dashboard.features.columns]")
            .await;
        assert_eq!(grid, json!([["mu", "beta"], ["C3", "Cz", "C4"]]));
        probabilities_change(&mut page).await;
        let classes = page.eval("dashboard.hello.classes").await;
        assert_eq!(classes, json!(["rest", "left", "right"]));
        commands_logged(&mut page, 2).await;
        screenshot(&mut page, "demo.png").await;
        stream_status_shown(&mut page).await;
    });
}

/// `GET path` over plain HTTP/1.1: the status line, the headers (lower-case) and the body.
fn http_get(base: &str, path: &str) -> (String, String, String) {
    use std::io::{Read, Write};
    let address = base.strip_prefix("http://").unwrap();
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let (status, headers) = head.split_once("\r\n").unwrap();
    (status.to_owned(), headers.to_lowercase(), body.to_owned())
}

/// Without a browser too: the binary serves the files of `web/` as they are in the checkout
/// (so it needs none at run time), with their types and a policy that keeps the page to its
/// own service; the token guards the data, not the page.
#[test]
fn the_service_serves_the_dashboard_files_from_the_binary() {
    let served = Served::start(&["demo", "--seconds", "30"]);
    let web = Path::new(env!("CARGO_MANIFEST_DIR")).join("web");
    for (path, file, kind) in [
        ("/", "index.html", "text/html"),
        ("/?token=anything", "index.html", "text/html"),
        ("/dashboard.js", "dashboard.js", "text/javascript"),
        ("/dashboard.css", "dashboard.css", "text/css"),
    ] {
        let (status, headers, body) = http_get(&served.base, path);
        assert!(status.ends_with("200 OK"), "{path}: {status}");
        assert!(
            headers.contains(&format!("content-type: {kind}")),
            "{path}: {headers}"
        );
        assert!(
            headers.contains("content-security-policy: default-src 'self'"),
            "{path}: {headers}"
        );
        let on_disk = std::fs::read_to_string(web.join(file)).unwrap();
        // Chunked transfer would wrap the body; axum sends a static body with its length.
        assert_eq!(body, on_disk, "{path} differs from web/{file}");
    }
    let (index, _, html) = http_get(&served.base, "/");
    assert!(index.ends_with("200 OK"));
    assert!(html.contains(r#"<script src="dashboard.js">"#));
    // The data needs the token: a plain GET of /ws tells a page why its WebSocket was refused.
    let (status, _, _) = http_get(&served.base, "/ws?token=wrong");
    assert!(status.contains("401"), "{status}");
    let (status, _, _) = http_get(&served.base, &format!("/ws?token={TOKEN}"));
    assert!(!status.contains("401"), "{status}");
    let (status, _, _) = http_get(&served.base, "/nothing-here");
    assert!(status.contains("404"), "{status}");
}
