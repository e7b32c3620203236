//! NATS, below both of its users: the `[nats]` settings (publish a session's commands,
//! features, status and, opt-in, raw EEG to a JetStream server: [`crate::service::nats`]; the
//! same settings name the server of `[source] kind = "nats"`: [`crate::source::nats`]) and the
//! one `connect` both use. It imports neither, so the module graph stays acyclic
//! (tests/module_cycles.rs). Re-exported as `crate::config::nats`.
//!
//! ```toml
//! [nats]
//! url = "nats://127.0.0.1:4222"
//! session = "alice"          # subjects neurostream.alice.{commands,features,status,raw}
//! raw = false                # also publish the raw EEG chunks (.raw)
//! queue = 4096               # messages buffered for the publisher; beyond, counted drops
//! max_age_seconds = 86400    # JetStream retention (0: unlimited)
//! max_bytes = 1073741824     # (absent: unlimited)
//! max_msgs = 10000000        # (absent: unlimited)
//! # credentials: user + password, token, nkey_file or creds_file; TLS: ca_file,
//! # cert_file + key_file, require_tls. Each also from NEUROSTREAM_NATS_* variables.
//! ```
//!
//! Secrets (password, token) are never written back out (a recording stores its pipeline)
//! and print as `***` in debug output.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::validate::Problems;

/// Environment variables read by [`NatsConfig::apply_env`].
pub const ENV_URL: &str = "NEUROSTREAM_NATS_URL";
pub const ENV_USER: &str = "NEUROSTREAM_NATS_USER";
pub const ENV_PASSWORD: &str = "NEUROSTREAM_NATS_PASSWORD";
pub const ENV_TOKEN: &str = "NEUROSTREAM_NATS_TOKEN";
pub const ENV_NKEY_FILE: &str = "NEUROSTREAM_NATS_NKEY_FILE";
pub const ENV_CREDS_FILE: &str = "NEUROSTREAM_NATS_CREDS_FILE";
pub const ENV_CA_FILE: &str = "NEUROSTREAM_NATS_CA_FILE";

/// A password or token: compared, never serialised, `***` in debug output.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

fn default_url() -> String {
    "nats://127.0.0.1:4222".into()
}
fn default_prefix() -> String {
    "neurostream".into()
}
fn default_queue() -> usize {
    4096
}
fn default_true() -> bool {
    true
}
fn default_connect_timeout() -> f64 {
    5.0
}
fn default_in_flight() -> usize {
    256
}

/// `[nats]`: where and how a session is published. Its debug output shows the URL without
/// credentials and secrets as `***`.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsConfig {
    /// Server URL(s), comma-separated (`nats://host:4222`, `tls://host:4222`).
    #[serde(default = "default_url")]
    pub url: String,
    /// First subject token.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// Second subject token; absent: the service run's random session id (`hello.session`).
    #[serde(default)]
    pub session: Option<String>,
    /// JetStream stream name; absent: `NEUROSTREAM_<session>` (dots and dashes become `_`).
    #[serde(default)]
    pub stream: Option<String>,
    /// Publish every window's features (`.features`).
    #[serde(default = "default_true")]
    pub features: bool,
    /// Publish the raw EEG chunks (`.raw`), for a decoding instance elsewhere.
    #[serde(default)]
    pub raw: bool,
    /// Messages buffered between the DSP thread and the publisher; when full, new messages
    /// are dropped and counted (the DSP thread never waits).
    #[serde(default = "default_queue")]
    pub queue: usize,
    /// Publishes awaiting their JetStream acknowledgement at once.
    #[serde(default = "default_in_flight")]
    pub in_flight: usize,
    /// Retention: oldest messages go after this many seconds (0: no age limit).
    #[serde(default)]
    pub max_age_seconds: f64,
    /// Retention: total bytes kept (absent: unlimited).
    #[serde(default)]
    pub max_bytes: Option<u64>,
    /// Retention: messages kept (absent: unlimited).
    #[serde(default)]
    pub max_msgs: Option<u64>,
    /// Seconds to wait for the server at start.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_seconds: f64,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default, skip_serializing)]
    pub password: Option<Secret>,
    #[serde(default, skip_serializing)]
    pub token: Option<Secret>,
    /// File holding an nkey seed (`SU...`).
    #[serde(default)]
    pub nkey_file: Option<PathBuf>,
    /// A `.creds` file (JWT + nkey seed).
    #[serde(default)]
    pub creds_file: Option<PathBuf>,
    /// CA certificate(s) (PEM) to verify the server with.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key (PEM) for mutual TLS.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Refuse a connection without TLS.
    #[serde(default)]
    pub require_tls: bool,
}

impl std::fmt::Debug for NatsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsConfig")
            .field("url", &self.redacted_url())
            .field("prefix", &self.prefix)
            .field("session", &self.session)
            .field("stream", &self.stream)
            .field("features", &self.features)
            .field("raw", &self.raw)
            .field("queue", &self.queue)
            .field("in_flight", &self.in_flight)
            .field("max_age_seconds", &self.max_age_seconds)
            .field("max_bytes", &self.max_bytes)
            .field("max_msgs", &self.max_msgs)
            .field("user", &self.user)
            .field("password", &self.password)
            .field("token", &self.token)
            .field("nkey_file", &self.nkey_file)
            .field("creds_file", &self.creds_file)
            .field("ca_file", &self.ca_file)
            .field("require_tls", &self.require_tls)
            .finish_non_exhaustive()
    }
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            url: default_url(),
            prefix: default_prefix(),
            session: None,
            stream: None,
            features: true,
            raw: false,
            queue: default_queue(),
            in_flight: default_in_flight(),
            max_age_seconds: 0.0,
            max_bytes: None,
            max_msgs: None,
            connect_timeout_seconds: default_connect_timeout(),
            user: None,
            password: None,
            token: None,
            nkey_file: None,
            creds_file: None,
            ca_file: None,
            cert_file: None,
            key_file: None,
            require_tls: false,
        }
    }
}

/// A valid subject token or stream name: letters, digits, `_` and `-`, 1 to 64 characters.
pub fn valid_token(token: &str) -> bool {
    (1..=64).contains(&token.len())
        && token
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

impl NatsConfig {
    /// Fill what the environment gives (`NEUROSTREAM_NATS_*`); the environment wins over the
    /// file, so a secret need never be written into a pipeline file.
    pub fn apply_env(&mut self) {
        self.apply(|name| std::env::var(name).ok().filter(|v| !v.is_empty()));
    }

    fn apply(&mut self, get: impl Fn(&str) -> Option<String>) {
        if let Some(url) = get(ENV_URL) {
            self.url = url;
        }
        if let Some(user) = get(ENV_USER) {
            self.user = Some(user);
        }
        if let Some(password) = get(ENV_PASSWORD) {
            self.password = Some(Secret(password));
        }
        if let Some(token) = get(ENV_TOKEN) {
            self.token = Some(Secret(token));
        }
        if let Some(path) = get(ENV_NKEY_FILE) {
            self.nkey_file = Some(path.into());
        }
        if let Some(path) = get(ENV_CREDS_FILE) {
            self.creds_file = Some(path.into());
        }
        if let Some(path) = get(ENV_CA_FILE) {
            self.ca_file = Some(path.into());
        }
    }

    /// The subject of one kind of message of `session`: `<prefix>.<session>.<kind>`.
    pub fn subject(&self, session: &str, kind: &str) -> String {
        format!("{}.{session}.{kind}", self.prefix)
    }

    /// The JetStream stream name of `session`.
    pub fn stream_name(&self, session: &str) -> String {
        self.stream.clone().unwrap_or_else(|| {
            format!("NEUROSTREAM_{session}")
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect()
        })
    }

    /// The URL without any `user:password@` part, for messages.
    pub fn redacted_url(&self) -> String {
        redact_url(&self.url)
    }

    pub fn check(&self, problems: &mut Problems) {
        problems.require(
            !self.url.trim().is_empty(),
            "nats.url",
            "\"\"",
            "a server URL such as nats://127.0.0.1:4222",
        );
        problems.require(
            valid_token(&self.prefix),
            "nats.prefix",
            format!("{:?}", self.prefix),
            "1 to 64 letters, digits, '_' or '-'",
        );
        if let Some(session) = &self.session {
            problems.require(
                valid_token(session),
                "nats.session",
                format!("{session:?}"),
                "1 to 64 letters, digits, '_' or '-'",
            );
        }
        if let Some(stream) = &self.stream {
            problems.require(
                valid_token(stream),
                "nats.stream",
                format!("{stream:?}"),
                "1 to 64 letters, digits, '_' or '-'",
            );
        }
        problems.require(
            (1..=1_000_000).contains(&self.queue),
            "nats.queue",
            self.queue,
            "1 to 1000000 messages",
        );
        problems.require(
            (1..=65_536).contains(&self.in_flight),
            "nats.in_flight",
            self.in_flight,
            "1 to 65536 publishes",
        );
        problems.closed(
            "nats.max_age_seconds",
            self.max_age_seconds,
            0.0,
            1e9,
            "0 (no limit) to 1e9 seconds",
        );
        problems.closed(
            "nats.connect_timeout_seconds",
            self.connect_timeout_seconds,
            0.1,
            600.0,
            "0.1 to 600 seconds",
        );
        for (key, value) in [("max_bytes", self.max_bytes), ("max_msgs", self.max_msgs)] {
            if let Some(v) = value {
                problems.require(
                    v >= 1 && v <= i64::MAX as u64,
                    format!("nats.{key}"),
                    v,
                    "at least 1 (leave it out for no limit)",
                );
            }
        }
        problems.require(
            self.password.is_none() || self.user.is_some(),
            "nats.password",
            "***",
            "only with nats.user",
        );
        problems.require(
            self.cert_file.is_some() == self.key_file.is_some(),
            "nats.cert_file",
            self.cert_file
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "(none)".into()),
            "cert_file and key_file together",
        );
        let methods = [
            self.user.is_some(),
            self.token.is_some(),
            self.nkey_file.is_some(),
            self.creds_file.is_some(),
        ];
        problems.require(
            methods.iter().filter(|m| **m).count() <= 1,
            "nats",
            "several credentials",
            "one of user + password, token, nkey_file, creds_file",
        );
    }
}

/// Credentials found in the URL(s): user + password, or a token (`nats://TOKEN@host`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct UrlCredentials {
    pub user: Option<String>,
    pub password: Option<Secret>,
    pub token: Option<Secret>,
}

/// The URL(s) without their `user:password@` parts, and the first credentials found: the
/// NATS client would otherwise carry them in its own (debug) log lines.
pub fn split_url_credentials(url: &str) -> (String, UrlCredentials) {
    let mut found = UrlCredentials::default();
    let clean = url
        .split(',')
        .map(|one| {
            let one = one.trim();
            let (scheme, rest) = match one.find("://") {
                Some(i) => (&one[..i + 3], &one[i + 3..]),
                None => ("", one),
            };
            let Some(at) = rest.rfind('@') else {
                return one.to_owned();
            };
            let info = &rest[..at];
            if found == UrlCredentials::default() {
                match info.split_once(':') {
                    Some((user, password)) => {
                        found.user = Some(user.to_owned());
                        found.password = Some(Secret(password.to_owned()));
                    }
                    None => found.token = Some(Secret(info.to_owned())),
                }
            }
            format!("{scheme}{}", &rest[at + 1..])
        })
        .collect::<Vec<_>>()
        .join(",");
    (clean, found)
}

/// `scheme://user:pass@host` → `scheme://***@host`, for every comma-separated URL.
pub fn redact_url(url: &str) -> String {
    url.split(',')
        .map(|one| {
            let (scheme, rest) = match one.find("://") {
                Some(i) => (&one[..i + 3], &one[i + 3..]),
                None => ("", one),
            };
            match rest.rfind('@') {
                Some(at) => format!("{scheme}***@{}", &rest[at + 1..]),
                None => one.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// A client connected to `config.url` (credentials from the config, else from the URL),
/// bounded by `connect_timeout_seconds`; `on_event` sees connection events. Returns the
/// client and the URL without credentials, for messages.
pub async fn connect(
    config: &NatsConfig,
    name: &str,
    on_event: impl Fn(async_nats::Event) + Send + Sync + 'static,
) -> Result<(async_nats::Client, String)> {
    let url = config.redacted_url();
    // Credentials in the URL move into the options (explicit ones win).
    let (connect_url, in_url) = split_url_credentials(&config.url);
    let mut config = config.clone();
    let explicit = config.user.is_some()
        || config.token.is_some()
        || config.nkey_file.is_some()
        || config.creds_file.is_some();
    if !explicit {
        config.user = in_url.user;
        config.password = in_url.password;
        config.token = in_url.token;
    }
    let config = &config;
    let on_event = Arc::new(on_event);
    let options = options(config, name).await?.event_callback(move |event| {
        let on_event = on_event.clone();
        async move { on_event(event) }
    });
    let timeout = Duration::from_secs_f64(config.connect_timeout_seconds);
    match tokio::time::timeout(timeout, options.connect(connect_url.as_str())).await {
        Ok(Ok(client)) => Ok((client, url)),
        Ok(Err(e)) => Err(Error::Network(format!(
            "nats: cannot connect to {url}: {}",
            scrub(&e.to_string(), config)
        ))),
        Err(_) => Err(Error::Network(format!(
            "nats: no answer from {url} within {} s",
            config.connect_timeout_seconds
        ))),
    }
}

/// Error text with any password or token replaced (a library error could quote a URL).
fn scrub(text: &str, config: &NatsConfig) -> String {
    let mut text = text.replace(&config.url, &config.redacted_url());
    for secret in [&config.password, &config.token].into_iter().flatten() {
        if !secret.expose().is_empty() {
            text = text.replace(secret.expose(), "***");
        }
    }
    text
}

/// The options for `config` (credentials and TLS), without connecting.
async fn options(config: &NatsConfig, name: &str) -> Result<async_nats::ConnectOptions> {
    let what = |detail: String| Error::config("nats", detail);
    let mut options = match (&config.creds_file, &config.nkey_file) {
        (Some(path), _) => async_nats::ConnectOptions::with_credentials_file(path)
            .await
            .map_err(|e| {
                what(format!(
                    "creds_file {}: cannot read it as NATS credentials: {e}",
                    path.display()
                ))
            })?,
        (None, Some(path)) => {
            let seed = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
            let seed = seed.trim().to_owned();
            if !seed.starts_with('S') {
                return Err(what(format!(
                    "nkey_file {}: does not hold an nkey seed (a line starting with 'S')",
                    path.display()
                )));
            }
            async_nats::ConnectOptions::with_nkey(seed)
        }
        (None, None) => async_nats::ConnectOptions::new(),
    };
    if let Some(user) = &config.user {
        let password = config
            .password
            .as_ref()
            .map(|p| p.expose().to_owned())
            .unwrap_or_default();
        options = options.user_and_password(user.clone(), password);
    }
    if let Some(token) = &config.token {
        options = options.token(token.expose().to_owned());
    }
    if let Some(ca) = &config.ca_file {
        if !ca.is_file() {
            return Err(what(format!("ca_file {}: no such file", ca.display())));
        }
        options = options.add_root_certificates(ca.clone());
    }
    if let (Some(cert), Some(key)) = (&config.cert_file, &config.key_file) {
        for path in [cert, key] {
            if !path.is_file() {
                return Err(what(format!("{}: no such file", path.display())));
            }
        }
        options = options.add_client_certificate(cert.clone(), key.clone());
    }
    if config.require_tls {
        options = options.require_tls(true);
    }
    Ok(options
        .name(name)
        .connection_timeout(Duration::from_secs_f64(config.connect_timeout_seconds))
        .max_reconnects(None)
        .reconnect_delay_callback(backoff))
}

/// Longest pause between two attempts while the server is unreachable.
pub const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Reconnection delay after `attempts` failed attempts: 0, 100 ms, 200 ms… up to 2 s.
pub fn backoff(attempts: usize) -> Duration {
    if attempts == 0 {
        return Duration::ZERO;
    }
    let exponent = (attempts - 1).min(10) as u32;
    (Duration::from_millis(100) * 2u32.pow(exponent)).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_neither_serialised_nor_printed() {
        let config: NatsConfig = toml::from_str(
            "url = \"nats://bob:hunter2@h:4222\"\nuser = \"bob\"\npassword = \"hunter2\"\n",
        )
        .unwrap();
        let debug = format!("{config:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        let written = toml::to_string(&config).unwrap();
        assert!(!written.contains("password"), "{written}");
        assert_eq!(config.redacted_url(), "nats://***@h:4222");
        assert_eq!(
            redact_url("nats://a:4222,nats://u:p@b:1"),
            "nats://a:4222,nats://***@b:1"
        );
    }

    #[test]
    fn environment_overrides_the_file() {
        let mut config = NatsConfig::default();
        config.apply(|name| match name {
            ENV_URL => Some("nats://x:1".into()),
            ENV_TOKEN => Some("t0k".into()),
            _ => None,
        });
        assert_eq!(config.url, "nats://x:1");
        assert_eq!(config.token.as_ref().map(Secret::expose), Some("t0k"));
    }

    #[test]
    fn bad_values_are_named() {
        let config = NatsConfig {
            session: Some("a.b".into()),
            queue: 0,
            user: Some("u".into()),
            token: Some(Secret::new("t")),
            ..NatsConfig::default()
        };
        let mut problems = Problems::new();
        config.check(&mut problems);
        let text = problems.into_result("p.toml").unwrap_err().to_string();
        for needle in ["nats.session", "nats.queue", "several credentials"] {
            assert!(text.contains(needle), "{needle} missing from {text}");
        }
        assert_eq!(
            NatsConfig::default().stream_name("ab-c.d"),
            "NEUROSTREAM_ab_c_d"
        );
    }
}
