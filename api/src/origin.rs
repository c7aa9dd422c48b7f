//! The one rule against cross-site use of a browser's credentials: an
//! unsafe request (POST, PATCH, PUT, DELETE), a websocket handshake or an
//! event-stream request (`Accept: text/event-stream`: a stream route's
//! other transport, which holds one of the user's stream slots) whose
//! `Origin` is neither the API's own nor one the config allows is refused
//! with 403, whatever credentials it carries; so is a stream request
//! without `Origin` that the browser marks as sent by another site
//! (`Sec-Fetch-Site`: a `no-cors` fetch).
//!
//! A browser attaches credentials to cross-site requests by itself: the
//! session cookie where `SameSite` is not honoured, and Basic credentials it
//! cached after a prompt. It also always says where such a request comes
//! from: `Origin` is sent on every cross-origin unsafe request and every
//! websocket handshake, and page scripts cannot forge it. Clients that send
//! no `Origin` (SDKs, the CLI, curl) are not browsers and are unaffected.
//! Safe requests are not checked: another origin cannot read their answers
//! (no CORS headers are ever sent).
//!
//! The API's own origin is the request's `Host` with the scheme the client
//! used: `https` when a trusted proxy says so (`X-Forwarded-Proto`, see
//! [`crate::client_addr`]), else `http`. Behind a TLS-terminating proxy the
//! API does not trust, list the public origin in `allowed_origins`.

use crate::client_addr::ClientAddr;
use crate::error::ApiError;
use crate::ApiState;
use axum::extract::{Request, State};
use axum::http::header::{HOST, ORIGIN, UPGRADE};
use axum::http::{HeaderMap, Method, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// The origins, besides the API's own, allowed to change things.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OriginPolicy {
    allowed: Vec<String>,
}

impl OriginPolicy {
    /// A policy allowing `origins` (`https://ops.example.com`, an optional
    /// port, no path) besides the API's own. The error names a bad entry.
    pub fn new<S: AsRef<str>>(origins: &[S]) -> Result<Self, String> {
        let allowed = origins
            .iter()
            .map(|o| {
                let o = o.as_ref().trim();
                normalize(o).ok_or_else(|| {
                    format!("allowed_origins: {o:?} is not an origin like https://ops.example.com[:port]")
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(OriginPolicy { allowed })
    }

    /// Whether a request from `origin`, sent to `host` (its `Host` header)
    /// by a client using HTTPS or not, may change things.
    pub fn permits(&self, origin: &str, host: Option<&str>, https: bool) -> bool {
        let Some(origin) = normalize(origin) else {
            // `null` (sandboxed frames, file: pages) and garbage.
            return false;
        };
        let scheme = if https { "https" } else { "http" };
        let own = host.and_then(|h| normalize(&format!("{scheme}://{h}")));
        own.as_ref() == Some(&origin) || self.allowed.contains(&origin)
    }

    /// `Ok` unless the request must be refused (see the module docs).
    pub fn check(&self, method: &Method, headers: &HeaderMap, https: bool) -> Result<(), ApiError> {
        let stream = is_websocket_handshake(headers) || crate::stream::sse::wants_event_stream(headers);
        if method.is_safe() && !stream {
            return Ok(());
        }
        let Some(origin) = headers.get(ORIGIN) else {
            // A cross-site `fetch` in `no-cors` mode sends no `Origin`, may
            // set `Accept: text/event-stream` and carries cached
            // credentials: it cannot read the stream, but would hold one of
            // the user's stream slots. The browser says so in
            // `Sec-Fetch-Site`, which page scripts cannot set.
            if stream && from_another_site(headers) {
                return Err(ApiError::Forbidden(
                    "cross-site stream request refused: Sec-Fetch-Site says another site sent it".into(),
                ));
            }
            return Ok(());
        };
        let host = headers.get(HOST).and_then(|h| h.to_str().ok());
        match origin.to_str() {
            Ok(o) if self.permits(o, host, https) => Ok(()),
            _ => Err(ApiError::Forbidden(
                "cross-origin request refused: the Origin is neither this API's nor an allowed one".into(),
            )),
        }
    }
}

/// Whether a browser says another site sent the request
/// (`Sec-Fetch-Site: cross-site` or `same-site`).
fn from_another_site(headers: &HeaderMap) -> bool {
    headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("cross-site") || v.eq_ignore_ascii_case("same-site"))
}

/// Whether the request asks to become a websocket.
pub(crate) fn is_websocket_handshake(headers: &HeaderMap) -> bool {
    headers
        .get_all(UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|p| p.trim().eq_ignore_ascii_case("websocket")))
}

/// `scheme://host[:port]`, lowercased and without the scheme's default
/// port; `None` for anything that is not an http(s) origin.
fn normalize(origin: &str) -> Option<String> {
    let uri: Uri = origin.parse().ok()?;
    let scheme = uri.scheme_str()?.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    let authority = uri.authority()?;
    let path_ok = matches!(uri.path(), "" | "/") && uri.query().is_none();
    if !path_ok || authority.as_str().contains('@') || authority.host().is_empty() {
        return None;
    }
    let host = authority.host().to_ascii_lowercase();
    Some(match authority.port_u16() {
        Some(p) if p != default_port => format!("{scheme}://{host}:{p}"),
        _ => format!("{scheme}://{host}"),
    })
}

/// Middleware: applies the policy of `state` to every request of the
/// routers that serve credentials (the REST routes and the websockets).
pub async fn refuse_cross_site(State(state): State<ApiState>, req: Request, next: Next) -> Response {
    let https = ClientAddr::of(&state.proxies, req.headers(), req.extensions()).https;
    if let Err(e) = state.origins.check(req.method(), req.headers(), https) {
        tracing::info!(
            method = %req.method(),
            path = %req.uri().path(),
            origin = ?req.headers().get(ORIGIN),
            "cross-origin request refused"
        );
        return e.into_response();
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn a_stream_request_another_site_sent_without_an_origin_is_refused() {
        let p = OriginPolicy::default();
        let sse = ("accept", "text/event-stream");
        for site in ["cross-site", "same-site"] {
            let h = headers(&[("host", "ops.example"), sse, ("sec-fetch-site", site)]);
            assert!(p.check(&Method::GET, &h, false).is_err(), "{site}");
        }
        for site in ["same-origin", "none"] {
            let h = headers(&[("host", "ops.example"), sse, ("sec-fetch-site", site)]);
            assert!(p.check(&Method::GET, &h, false).is_ok(), "{site}");
        }
        // Not a browser (curl, SDKs): no Sec-Fetch-Site, no Origin.
        assert!(p
            .check(&Method::GET, &headers(&[("host", "ops.example"), sse]), false)
            .is_ok());
        // An ordinary read another site sent is not a stream: unaffected.
        let read = headers(&[("host", "ops.example"), ("sec-fetch-site", "cross-site")]);
        assert!(p.check(&Method::GET, &read, false).is_ok());
    }

    #[test]
    fn the_own_origin_is_host_and_scheme() {
        let p = OriginPolicy::default();
        assert!(p.permits("http://ops.example:8080", Some("ops.example:8080"), false));
        assert!(p.permits("HTTP://OPS.example:8080/", Some("ops.example:8080"), false));
        assert!(p.permits("http://ops.example", Some("ops.example:80"), false));
        assert!(p.permits("https://ops.example", Some("ops.example"), true));
        // Same host, other scheme or port: another origin.
        assert!(!p.permits("https://ops.example", Some("ops.example"), false));
        assert!(!p.permits("http://ops.example", Some("ops.example"), true));
        assert!(!p.permits("http://ops.example:8081", Some("ops.example:8080"), false));
        for bad in [
            "null",
            "",
            "https://evil.example",
            "ops.example",
            "http://ops.example/x",
        ] {
            assert!(!p.permits(bad, Some("ops.example"), false), "{bad}");
        }
        assert!(!p.permits("http://ops.example", None, false));
        assert!(p.permits("http://[::1]:8080", Some("[::1]:8080"), false));
    }

    #[test]
    fn allowed_origins_are_normalised_and_checked() {
        let p = OriginPolicy::new(&["https://Dash.Example.com:443", "http://127.0.0.1:3000"]).unwrap();
        assert!(p.permits("https://dash.example.com", Some("api.internal"), false));
        assert!(p.permits("http://127.0.0.1:3000", Some("api.internal"), false));
        assert!(!p.permits("http://dash.example.com", Some("api.internal"), false));
        for bad in ["dash.example.com", "ftp://x", "https://x/path", "*"] {
            assert!(OriginPolicy::new(&[bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_unsafe_requests_and_handshakes_with_a_foreign_origin_are_refused() {
        let p = OriginPolicy::default();
        let evil = [("host", "ops.example"), ("origin", "https://evil.example")];
        assert!(
            p.check(&Method::GET, &headers(&evil), false).is_ok(),
            "reads pass"
        );
        for m in [Method::POST, Method::PATCH, Method::PUT, Method::DELETE] {
            assert!(matches!(
                p.check(&m, &headers(&evil), false),
                Err(ApiError::Forbidden(_))
            ));
        }
        let mut ws = headers(&evil);
        ws.insert("upgrade", HeaderValue::from_static("WebSocket"));
        assert!(matches!(
            p.check(&Method::GET, &ws, false),
            Err(ApiError::Forbidden(_))
        ));
        // No Origin: not a browser.
        assert!(p
            .check(&Method::POST, &headers(&[("host", "ops.example")]), false)
            .is_ok());
        let mut sse = headers(&evil);
        sse.insert("accept", HeaderValue::from_static("text/event-stream"));
        assert!(matches!(
            p.check(&Method::GET, &sse, false),
            Err(ApiError::Forbidden(_))
        ));
        let same = [("host", "ops.example"), ("origin", "http://ops.example")];
        assert!(p.check(&Method::POST, &headers(&same), false).is_ok());
    }
}
