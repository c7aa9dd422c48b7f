//! The workers registry: every worker process registers when it starts,
//! heartbeats while it runs (with the actions it runs), and deregisters when
//! it stops gracefully. A worker that dies without deregistering leaves the
//! list once its registry lease passes: a row counts as live only while its
//! `expires_at` (the last heartbeat plus the lease the worker announced) is
//! in the future, and stale rows are pruned.
//!
//! The list is an operators' view (it names actions of every tenant), so the
//! API serves it to admin users only.

use crate::dates;
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

/// What a worker announces when it registers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewWorker {
    /// The worker's id: the owner name its leases carry (`host:pid:random`).
    pub id: String,
    /// The host it runs on.
    pub host: String,
    /// Its process id.
    pub pid: i64,
    /// Its Stevedore version.
    pub version: String,
    /// When the process started.
    pub started_at: DateTime<Utc>,
    /// Actions it runs at once (`[worker] concurrency`).
    pub concurrency: i64,
}

/// A registered worker as the registry lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerInfo {
    /// What it announced.
    pub worker: NewWorker,
    /// The actions it ran at its last heartbeat.
    pub running: Vec<Uuid>,
    /// Its last heartbeat (or registration).
    pub heartbeat_at: DateTime<Utc>,
    /// When it leaves the list unless it heartbeats again.
    pub expires_at: DateTime<Utc>,
}

/// The API's path of the workers list.
pub const WORKERS_PATH: &str = "/api/v1/worker/";

/// A worker's wire JSON (`GET /api/v1/worker/`): dates in the clients'
/// RFC 2822 form.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerJson {
    /// `/api/v1/worker/<id>/`.
    pub resource_uri: String,
    /// The worker's id.
    pub id: String,
    /// Its host.
    pub host: String,
    /// Its process id.
    pub pid: i64,
    /// Its version.
    pub version: String,
    /// When it started.
    #[serde(with = "dates::wire")]
    pub started: DateTime<Utc>,
    /// Actions it runs at once.
    pub concurrency: i64,
    /// The uuids of the actions it ran at its last heartbeat.
    pub running_actions: Vec<Uuid>,
    /// Its last heartbeat.
    #[serde(with = "dates::wire")]
    pub last_heartbeat: DateTime<Utc>,
    /// When it leaves the list unless it heartbeats again.
    #[serde(with = "dates::wire")]
    pub expires: DateTime<Utc>,
}

impl WorkerInfo {
    /// The resource URI of a worker id (the id percent-encoded as a path segment).
    pub fn resource_uri(id: &str) -> String {
        let mut segment = String::with_capacity(id.len());
        for b in id.bytes() {
            if b.is_ascii_alphanumeric() || b"-._~:".contains(&b) {
                segment.push(b as char);
            } else {
                segment.push_str(&format!("%{b:02X}"));
            }
        }
        format!("{WORKERS_PATH}{segment}/")
    }

    /// Its wire JSON.
    pub fn to_wire(&self) -> WorkerJson {
        let w = &self.worker;
        WorkerJson {
            resource_uri: Self::resource_uri(&w.id),
            id: w.id.clone(),
            host: w.host.clone(),
            pid: w.pid,
            version: w.version.clone(),
            started: w.started_at,
            concurrency: w.concurrency,
            running_actions: self.running.clone(),
            last_heartbeat: self.heartbeat_at,
            expires: self.expires_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wire_json_has_rfc2822_dates_and_an_escaped_uri() {
        let t = DateTime::parse_from_rfc3339("2024-05-06T07:08:09Z")
            .unwrap()
            .with_timezone(&Utc);
        let info = WorkerInfo {
            worker: NewWorker {
                id: "host-1:42:ab12cd34".into(),
                host: "host-1".into(),
                pid: 42,
                version: "1.2.3".into(),
                started_at: t,
                concurrency: 8,
            },
            running: vec![Uuid::nil()],
            heartbeat_at: t,
            expires_at: t,
        };
        let json = serde_json::to_value(info.to_wire()).unwrap();
        assert_eq!(json["resource_uri"], "/api/v1/worker/host-1:42:ab12cd34/");
        assert_eq!(json["started"], "Mon, 06 May 2024 07:08:09 +0000");
        assert_eq!(json["running_actions"][0], Uuid::nil().to_string());
        assert_eq!(WorkerInfo::resource_uri("a b/c"), "/api/v1/worker/a%20b%2Fc/");
    }
}
