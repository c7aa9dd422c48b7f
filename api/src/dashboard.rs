//! The web dashboard: a page at `/` and its script, style sheet and icon,
//! compiled into the binary (a release is still one file).
//!
//! The page is a client of the public API only: it logs in with
//! `POST /api/v1/login` (the session cookie), lists and acts through the same
//! REST routes as any client, and follows the events and logs websockets.
//! There is no build step: the script is a plain ES module, so the binary
//! builds from crates.io alone. The one thing the server adds to the page is
//! the list of states and which are final ([`ActionState`]); the Cancel and
//! Retry buttons follow each action's own `can_be_canceled` /
//! `can_be_retried`, so they and the API cannot disagree.

use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::sync::OnceLock;
use stevedore_core::state::ActionState;

/// The page.
pub const INDEX: &str = "/";
/// The script.
pub const SCRIPT: &str = "/ui/app.js";
/// The style sheet.
pub const STYLE: &str = "/ui/app.css";
/// The icon.
pub const ICON: &str = "/ui/icon.svg";

const INDEX_HTML: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const APP_CSS: &str = include_str!("../assets/app.css");
const ICON_SVG: &str = include_str!("../assets/icon.svg");

/// The page's content security policy: nothing from elsewhere, no inline
/// script, no framing.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The states the page needs to know, from [`ActionState`].
fn rules() -> serde_json::Value {
    let names = |f: fn(ActionState) -> bool| -> Vec<&'static str> {
        ActionState::ALL
            .iter()
            .copied()
            .filter(|s| f(*s))
            .map(ActionState::as_str)
            .collect()
    };
    json!({
        "states": ActionState::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        "final": names(ActionState::is_final),
    })
}

/// The page with the rules filled in (built once).
fn index_html() -> &'static str {
    static PAGE: OnceLock<String> = OnceLock::new();
    PAGE.get_or_init(|| {
        // JSON inside <script type="application/json">: `<` is escaped so no
        // value can close the element.
        let rules = rules().to_string().replace('<', "\\u003c");
        INDEX_HTML.replace("{{RULES}}", &rules)
    })
}

fn asset(headers: &HeaderMap, content_type: &'static str, body: &'static str) -> Response {
    let etag = format!("\"{:016x}\"", fnv1a(body.as_bytes()));
    let fresh = headers
        .get(IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut h = HeaderMap::new();
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(ETAG, v);
    }
    h.insert(
        HeaderName::from_static("x-content-type-options"),
        HeaderValue::from_static("nosniff"),
    );
    if fresh {
        return (StatusCode::NOT_MODIFIED, h).into_response();
    }
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    if content_type.starts_with("text/html") {
        h.insert(
            HeaderName::from_static("content-security-policy"),
            HeaderValue::from_static(CSP),
        );
        h.insert(
            HeaderName::from_static("referrer-policy"),
            HeaderValue::from_static("no-referrer"),
        );
        h.insert(
            HeaderName::from_static("x-frame-options"),
            HeaderValue::from_static("DENY"),
        );
    }
    (StatusCode::OK, h, body).into_response()
}

/// A stable content hash for the `ETag` (FNV-1a, 64 bits).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// `GET /`: the page.
pub async fn index(headers: HeaderMap) -> Response {
    asset(&headers, "text/html; charset=utf-8", index_html())
}

/// `GET /ui/app.js`.
pub async fn script(headers: HeaderMap) -> Response {
    asset(&headers, "text/javascript; charset=utf-8", APP_JS)
}

/// `GET /ui/app.css`.
pub async fn style(headers: HeaderMap) -> Response {
    asset(&headers, "text/css; charset=utf-8", APP_CSS)
}

/// `GET /ui/icon.svg`.
pub async fn icon(headers: HeaderMap) -> Response {
    asset(&headers, "image/svg+xml", ICON_SVG)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_carries_the_state_rules() {
        let page = index_html();
        assert!(!page.contains("{{RULES}}"));
        assert!(
            page.contains(r#""final":["Canceled","Success","Failed"]"#),
            "{page}"
        );
    }
}
