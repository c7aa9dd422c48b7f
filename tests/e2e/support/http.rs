//! HTTP clients besides the deployment's own: plain GETs of what is not
//! the API's JSON, and an API client that tasks can own.

use reqwest::{header::HeaderMap, StatusCode};
use serde_json::Value;
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

/// A client of a deployment's API as one user (`Deployment::client`): it
/// needs no borrow of the deployment, so submitters can run in tasks while
/// the test kills and starts processes.
#[derive(Clone)]
pub struct ApiClient {
    pub url: String,
    pub user: String,
    pub key: String,
    pub http: reqwest::Client,
}

impl ApiClient {
    /// Submits `verb` on a service with `body`; the action's uuid on 202,
    /// `None` on any other answer (a request that met a fault).
    pub async fn try_submit(&self, service: &str, verb: &str, body: &str) -> Option<String> {
        let resp = self
            .http
            .post(format!("{}/api/app/v1/service/{service}/{verb}/", self.url))
            .basic_auth(&self.user, Some(&self.key))
            .header("Content-Type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .ok()?;
        if resp.status() != StatusCode::ACCEPTED {
            return None;
        }
        let json: Value = resp.json().await.ok()?;
        json["uuid"].as_str().map(str::to_string)
    }

    /// Asks for an action's cancel; whatever the answer.
    pub async fn cancel(&self, uuid: &str) {
        let _ = self
            .http
            .post(format!("{}/api/audit/v1/action/{uuid}/cancel/", self.url))
            .basic_auth(&self.user, Some(&self.key))
            .send()
            .await;
    }
}
