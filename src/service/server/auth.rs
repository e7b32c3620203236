//! Who may reach what: the `Host` check against DNS rebinding, the bearer token as one layer
//! over every route that reads data or changes the model, the `Origin` allow-list for
//! browsers, and the feedback right (who may change the model).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::service::hub::Hub;

/// DNS rebinding: a page on evil.example resolving to 127.0.0.1 sends `Host: evil.example`.
/// IP literals and `localhost` are always accepted, other names only when allowed.
pub fn host_allowed(allowed: &[String], host: Option<&[u8]>) -> bool {
    let Some(host) = host else {
        // HTTP/1.0 without Host: no name that could have been rebound.
        return true;
    };
    let Ok(host) = std::str::from_utf8(host) else {
        return false;
    };
    let name = if let Some(rest) = host.strip_prefix('[') {
        match rest.split_once(']') {
            Some((inner, port)) if port.is_empty() || port.starts_with(':') => {
                return inner.parse::<std::net::Ipv6Addr>().is_ok();
            }
            _ => return false,
        }
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            Some(_) => return false,
            None => host,
        }
    };
    if name.parse::<std::net::Ipv4Addr>().is_ok() || name.eq_ignore_ascii_case("localhost") {
        return true;
    }
    allowed
        .iter()
        .any(|a| a == "*" || a.eq_ignore_ascii_case(name))
}

pub(super) async fn check_host(
    State(hub): State<Arc<Hub>>,
    request: Request,
    next: Next,
) -> Response {
    // RFC 9112 §3.2: more than one Host field is a 400, whatever the first one says.
    if request
        .headers()
        .get_all(header::HOST)
        .iter()
        .nth(1)
        .is_some()
    {
        return (StatusCode::BAD_REQUEST, "more than one Host header\n").into_response();
    }
    let host = request.headers().get(header::HOST).map(|v| v.as_bytes());
    if !host_allowed(&hub.config.allowed_hosts, host) {
        return (
            StatusCode::MISDIRECTED_REQUEST,
            "Host not allowed (add it with --allowed-host)\n",
        )
            .into_response();
    }
    next.run(request).await
}

/// The token layer of `/ws`, `/metrics` and `/rollback`: `Authorization: Bearer` or
/// `?token=`, compared in constant time; 401 otherwise. No token configured: open.
pub(super) async fn require_token(
    State(hub): State<Arc<Hub>>,
    Query(query): Query<HashMap<String, String>>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(token) = &hub.config.token {
        if !authorized(token, request.headers(), &query) {
            return unauthorized();
        }
    }
    next.run(request).await
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        "missing or wrong token\n",
    )
        .into_response()
}

/// Compare without an early exit on the first differing byte.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Whether a connection that passed the token check may send feedback and roll back.
pub(super) fn feedback_right(
    config: &crate::service::ServiceConfig,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
) -> bool {
    if !config.allow_feedback {
        return false;
    }
    match &config.feedback_token {
        Some(token) => {
            headers
                .get("x-feedback-token")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|t| same_secret(t.trim(), token))
                || query
                    .get("feedback_token")
                    .is_some_and(|t| same_secret(t, token))
        }
        // Validation refuses allow_feedback with neither token, so this client has the token.
        None => config.token.is_some(),
    }
}

pub(super) const FEEDBACK_REFUSED: &str =
    "feedback is not allowed on this connection: the service must run \
     with --allow-feedback and the client present the feedback token \
     (X-Feedback-Token header or ?feedback_token=)\n";

fn authorized(token: &str, headers: &HeaderMap, query: &HashMap<String, String>) -> bool {
    let from_header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| same_secret(t.trim(), token));
    from_header || query.get("token").is_some_and(|t| same_secret(t, token))
}

/// Browsers send `Origin`; other clients usually do not. With an empty allow-list only local
/// pages (localhost, 127.0.0.1, [::1]) may connect. `null` (sandboxed frames, `file:` pages,
/// redirects) is foreign: any page can produce it.
pub fn origin_allowed(allowed: &[String], origin: Option<&str>) -> bool {
    let Some(origin) = origin else {
        return true;
    };
    if allowed.is_empty() {
        let host = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .unwrap_or("");
        let host = if host.starts_with('[') {
            host.split(']')
                .next()
                .map(|h| format!("{h}]"))
                .unwrap_or_default()
        } else {
            host.split(':').next().unwrap_or("").to_owned()
        };
        return ["localhost", "127.0.0.1", "[::1]"].contains(&host.as_str());
    }
    allowed.iter().any(|a| a == "*" || a == origin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        assert!(origin_allowed(&[], None));
        assert!(!origin_allowed(&[], Some("null")));
        assert!(!origin_allowed(&[], Some("\u{0}")));
        assert!(origin_allowed(&[], Some("http://localhost:8000")));
        assert!(origin_allowed(&[], Some("http://127.0.0.1")));
        assert!(origin_allowed(&[], Some("http://[::1]:3000")));
        assert!(!origin_allowed(&[], Some("https://evil.example")));
        assert!(!origin_allowed(&[], Some("http://localhost.evil.example")));
        let list = vec!["https://app.example".to_owned()];
        assert!(origin_allowed(&list, Some("https://app.example")));
        assert!(!origin_allowed(&list, Some("http://localhost:8000")));
        assert!(origin_allowed(
            &["*".to_owned()],
            Some("https://any.example")
        ));
    }

    #[test]
    fn hosts() {
        let none: &[String] = &[];
        for ok in [
            "127.0.0.1:8765",
            "localhost:8765",
            "LOCALHOST",
            "[::1]:8765",
            "10.0.0.7",
        ] {
            assert!(host_allowed(none, Some(ok.as_bytes())), "{ok}");
        }
        for bad in [
            "evil.example:8765",
            "evil.example",
            "127.0.0.1.evil.example",
            "[::1",
            "[nope]:1",
            "localhost:80x",
        ] {
            assert!(!host_allowed(none, Some(bad.as_bytes())), "{bad}");
        }
        assert!(!host_allowed(none, Some(b"\xffhost")));
        assert!(host_allowed(none, None));
        let list = vec!["bci.lab".to_owned()];
        assert!(host_allowed(&list, Some(b"BCI.lab:8765")));
        assert!(!host_allowed(&list, Some(b"other.lab")));
        assert!(host_allowed(&["*".to_owned()], Some(b"other.lab")));
    }
}
