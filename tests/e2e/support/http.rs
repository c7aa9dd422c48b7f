//! Plain HTTP requests that are not the API's JSON.

use reqwest::{header::HeaderMap, StatusCode};
use std::time::Duration;

/// A plain GET with optional headers: status, headers and body text (for
/// `/metrics`, which is not JSON).
pub async fn get_text(url: &str, headers: &[(&str, &str)]) -> (StatusCode, HeaderMap, String) {
    let mut req = reqwest::Client::new().get(url).timeout(Duration::from_secs(30));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status();
    let headers = resp.headers().clone();
    (status, headers, resp.text().await.unwrap_or_default())
}
