//! Headless Chromium driven over its DevTools protocol (JSON over a WebSocket, with the
//! tokio-tungstenite client the crate already has), for the browser tests. Include with
//! `#[path = "common/browser.rs"] mod browser;`. Without Chromium [`chromium`] says SKIPPED,
//! unless `NEUROSTREAM_REQUIRE_BROWSER=1` (CI) makes a missing browser a failure.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

/// Longest wait for anything the page should show; generous for a loaded 2-core CI machine.
pub const PATIENCE: Duration = Duration::from_secs(90);
/// How often the page is asked again while waiting.
pub const POLL: Duration = Duration::from_millis(250);

/// Where artefacts go: under `target/`, kept after the run for CI to collect.
pub fn artefacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Chromium's path, or `None` (after saying SKIPPED) when it is not installed and not required.
pub fn chromium() -> Option<PathBuf> {
    let candidates = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .into_iter()
        .chain(["/usr/bin/chromium", "/usr/bin/chromium-browser"].map(PathBuf::from));
    for candidate in candidates {
        if candidate.is_file() {
            return Some(candidate);
        }
    }
    let msg = "Chromium not found (install Debian's `chromium`, or set CHROMIUM to its path)";
    if std::env::var("NEUROSTREAM_REQUIRE_BROWSER").is_ok_and(|v| v == "1") {
        panic!("{msg}");
    }
    eprintln!("SKIPPED: {msg}");
    None
}

/// A headless Chromium with a fresh profile; killed and its profile removed on drop.
pub struct Browser {
    child: Child,
    profile: PathBuf,
    devtools: String,
    log: PathBuf,
}

impl Browser {
    /// `name` tells this browser's profile and log from another test's.
    pub fn launch(binary: &Path, name: &str) -> Browser {
        let profile = std::env::temp_dir().join(format!(
            "neurostream-chromium-{}-{name}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&profile);
        std::fs::create_dir_all(&profile).unwrap();
        let log_path = artefacts().join(format!("chromium-{name}.log"));
        let log = std::fs::File::create(&log_path).unwrap();
        let child = Command::new(binary)
            .args([
                "--headless",
                // Root in a container: Chromium's sandbox cannot start there.
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                // No network beyond loopback here: stop Chromium from trying (and stalling).
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                // Keep timers and animation frames running at full rate in a headless tab.
                "--disable-background-timer-throttling",
                "--disable-renderer-backgrounding",
                "--hide-scrollbars",
                "--window-size=1400,1000",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let mut browser = Browser {
            child,
            profile,
            devtools: String::new(),
            log: log_path,
        };
        // Chromium writes the port it picked and the browser endpoint's path into the profile.
        let port_file = browser.profile.join("DevToolsActivePort");
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Ok(text) = std::fs::read_to_string(&port_file) {
                let mut lines = text.lines();
                if let (Some(port), Some(path)) = (lines.next(), lines.next()) {
                    browser.devtools = format!("ws://127.0.0.1:{port}{path}");
                    return browser;
                }
            }
            if let Some(status) = browser.child.try_wait().unwrap() {
                panic!("Chromium exited ({status}); see {}", browser.log.display());
            }
            assert!(
                Instant::now() < deadline,
                "Chromium never opened its DevTools port"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Chromium's helper processes outlive the browser process by a moment and may still
        // write into the profile: try again briefly rather than leave it behind.
        for _ in 0..20 {
            if std::fs::remove_dir_all(&self.profile).is_ok() || !self.profile.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

pub type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// One page of the browser, driven over the DevTools protocol (flat sessions: every command
/// carries the page's `sessionId` on the browser's one socket).
pub struct Page {
    socket: Socket,
    session: String,
    next_id: u64,
    /// Evaluated for the failure message of [`Page::wait_for`] (the page's own state).
    state: String,
}

impl Page {
    pub async fn open(browser: &Browser) -> Page {
        let (socket, _) = tokio_tungstenite::connect_async(&browser.devtools)
            .await
            .expect("connect to Chromium's DevTools endpoint");
        let mut page = Page {
            socket,
            session: String::new(),
            next_id: 0,
            state: "document.title".into(),
        };
        let target = page
            .call("Target.createTarget", json!({"url": "about:blank"}))
            .await;
        let attached = page
            .call(
                "Target.attachToTarget",
                json!({"targetId": target["targetId"], "flatten": true}),
            )
            .await;
        page.session = attached["sessionId"].as_str().unwrap().to_owned();
        page.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": 1400, "height": 1000, "deviceScaleFactor": 1, "mobile": false}),
        )
        .await;
        page
    }

    /// Send one command and wait for its answer, skipping the events in between.
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut request = json!({"id": id, "method": method, "params": params});
        if !self.session.is_empty() {
            request["sessionId"] = json!(self.session);
        }
        self.socket
            .send(Message::Text(request.to_string().into()))
            .await
            .unwrap();
        loop {
            let message = tokio::time::timeout(PATIENCE, self.socket.next())
                .await
                .unwrap_or_else(|_| panic!("no answer from Chromium to {method}"))
                .expect("Chromium closed its DevTools socket")
                .unwrap();
            let Message::Text(text) = message else {
                continue;
            };
            let answer: Value = serde_json::from_str(&text).unwrap();
            if answer["id"] == id {
                assert!(answer["error"].is_null(), "{method}: {}", answer["error"]);
                return answer["result"].clone();
            }
        }
    }

    /// Evaluate a JavaScript expression in the page; its value as JSON.
    pub async fn eval(&mut self, expression: &str) -> Value {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
            )
            .await;
        assert!(
            result["exceptionDetails"].is_null(),
            "{expression}: {}",
            result["exceptionDetails"]
        );
        result["result"]["value"].clone()
    }

    pub async fn navigate(&mut self, url: &str) {
        self.call("Page.navigate", json!({"url": url})).await;
    }

    /// Poll `expression` until it is truthy; its value. Fails with `what` and the dashboard's
    /// state after [`PATIENCE`].
    pub async fn wait_for(&mut self, what: &str, expression: &str) -> Value {
        let state = self.state.clone();
        self.wait_for_within(what, expression, PATIENCE, &state)
            .await
    }

    /// What [`Page::wait_for`] shows of the page when it gives up (a JS expression).
    pub fn set_state_expression(&mut self, expression: &str) {
        self.state = expression.to_owned();
    }

    /// [`Page::wait_for`] with its own patience; `state` is evaluated for the failure message.
    pub async fn wait_for_within(
        &mut self,
        what: &str,
        expression: &str,
        patience: Duration,
        state: &str,
    ) -> Value {
        let deadline = Instant::now() + patience;
        loop {
            let value = self.eval(expression).await;
            if !(value.is_null() || value == false || value == 0) {
                return value;
            }
            if Instant::now() > deadline {
                let seen = self.eval(state).await;
                panic!("the page never showed {what}; page state: {seen}");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    pub async fn screenshot(&mut self, path: &Path) {
        let shot = self
            .call("Page.captureScreenshot", json!({"format": "png"}))
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap();
        std::fs::write(path, png).unwrap();
    }
}
