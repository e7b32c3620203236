//! A small client of the protocol (tokio-tungstenite): what `neurostream listen URL` runs.

use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

use crate::error::{Error, Result};

/// Connect to `url` (`ws://host:port/ws`), with `token` as a bearer header when given, and
/// call `on_message` with every server text message (raw JSON and its `type`) until the
/// server closes the connection, `on_message` returns `false`, or `stop` resolves.
pub async fn listen(
    url: &str,
    token: Option<&str>,
    stop: impl std::future::Future<Output = ()>,
    mut on_message: impl FnMut(&str, &str) -> bool,
) -> Result<()> {
    let mut request = url
        .into_client_request()
        .map_err(|e| Error::Network(format!("bad URL {url:?}: {e}")))?;
    if let Some(token) = token {
        let value = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|e| Error::Network(format!("bad token: {e}")))?;
        request.headers_mut().insert("Authorization", value);
    }
    let (mut socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .map_err(|e| Error::Network(format!("cannot connect to {url}: {e}")))?;
    tokio::pin!(stop);
    loop {
        let message = tokio::select! {
            message = socket.next() => message,
            _ = &mut stop => {
                let _ = socket.close(None).await;
                return Ok(());
            }
        };
        match message {
            None => return Ok(()),
            Some(Err(e)) => return Err(Error::Network(format!("connection to {url}: {e}"))),
            Some(Ok(Message::Text(text))) => {
                let kind = serde_json::from_str::<serde_json::Value>(text.as_str())
                    .ok()
                    .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_owned))
                    .unwrap_or_default();
                if !on_message(text.as_str(), &kind) {
                    let _ = socket.close(None).await;
                    return Ok(());
                }
            }
            Some(Ok(Message::Close(frame))) => {
                if let Some(frame) = frame {
                    tracing::info!(
                        "server closed the connection: {} {}",
                        frame.code,
                        frame.reason
                    );
                }
                return Ok(());
            }
            Some(Ok(_)) => {}
        }
    }
}
