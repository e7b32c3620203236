//! `neurostream listen [URL] [--token T]`: connect to a running service and print its `hello`
//! and its commands as JSON lines on stdout (everything else the server sends goes to the log,
//! or to stdout too with `--all`).

use clap::Args;
use neurostream::Result;

/// The service's WebSocket on this machine with the default `--bind`.
const DEFAULT_URL: &str = "ws://127.0.0.1:8765/ws";

#[derive(Args)]
pub struct ListenArgs {
    /// WebSocket URL of the service, e.g. ws://127.0.0.1:8765/ws; without a path (or with
    /// `/`), `/ws` is used; `http(s)://` becomes `ws(s)://`.
    #[arg(default_value = DEFAULT_URL)]
    pub url: String,
    /// Bearer token, when the service requires one (default: NEUROSTREAM_TOKEN).
    #[arg(long, env = "NEUROSTREAM_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print every message, not only `hello` and commands.
    #[arg(long)]
    pub all: bool,
}

/// The URL to connect to: `http(s)://` → `ws(s)://`, no scheme → `ws://`, and the service's
/// `/ws` path when the URL has none.
pub fn websocket_url(url: &str) -> String {
    let url = url.trim();
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => {
            let scheme = match scheme.to_ascii_lowercase().as_str() {
                "http" => "ws".to_owned(),
                "https" => "wss".to_owned(),
                other => other.to_owned(),
            };
            (scheme, rest)
        }
        None => ("ws".to_owned(), url),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let tail = if tail.is_empty() || tail.starts_with(['?', '#']) {
        format!("/ws{tail}")
    } else if let Some(after) = tail
        .strip_prefix('/')
        .filter(|t| t.is_empty() || t.starts_with(['?', '#']))
    {
        format!("/ws{after}")
    } else {
        tail.to_owned()
    };
    format!("{scheme}://{authority}{tail}")
}

pub fn run(args: ListenArgs) -> Result<()> {
    let url = websocket_url(&args.url);
    if url != args.url {
        tracing::info!("connecting to {url}");
    }
    let runtime = tokio::runtime::Runtime::new().map_err(|e| {
        neurostream::Error::Unsupported(format!("cannot start the async runtime: {e}"))
    })?;
    runtime.block_on(async {
        let signal = super::stop_signal()?;
        let stop = async {
            signal.await;
        };
        neurostream::service::client::listen(&url, args.token.as_deref(), stop, |text, kind| {
            use std::io::Write;
            match kind {
                "command" | "hello" => {}
                "status" | "error" if !args.all => {
                    tracing::info!("{text}");
                    return true;
                }
                _ if !args.all => return true,
                _ => {}
            }
            let mut out = std::io::stdout().lock();
            writeln!(out, "{text}").and_then(|()| out.flush()).is_ok()
        })
        .await
    })
}

#[cfg(test)]
mod tests {
    use super::websocket_url;

    #[test]
    fn urls_without_a_path_get_the_service_path() {
        for (given, used) in [
            ("ws://127.0.0.1:8765", "ws://127.0.0.1:8765/ws"),
            ("ws://127.0.0.1:8765/", "ws://127.0.0.1:8765/ws"),
            ("ws://host:8765?token=x", "ws://host:8765/ws?token=x"),
            ("ws://host:8765/?token=x", "ws://host:8765/ws?token=x"),
            ("ws://127.0.0.1:8765/ws", "ws://127.0.0.1:8765/ws"),
            ("ws://h/proxy/ws", "ws://h/proxy/ws"),
            ("http://127.0.0.1:8765", "ws://127.0.0.1:8765/ws"),
            ("https://bci.lab/ws", "wss://bci.lab/ws"),
            ("127.0.0.1:8765", "ws://127.0.0.1:8765/ws"),
            ("wss://[::1]:8765", "wss://[::1]:8765/ws"),
        ] {
            assert_eq!(websocket_url(given), used, "{given}");
        }
    }
}
