//! Actions: the record of one requested operation, and its wire JSON.

use crate::dates;
use crate::state::ActionState;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The resource URI of an action.
pub fn action_uri(uuid: &Uuid) -> String {
    format!("/api/audit/v1/action/{uuid}/")
}

/// A stored action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Action {
    /// Lowercase v4 uuid.
    pub uuid: Uuid,
    /// The namespace that owns the action (the object's namespace).
    pub namespace: String,
    /// Operation name, e.g. "Service Start".
    pub action: String,
    /// Resource URI of the object it acts on.
    pub object: String,
    /// The object's uuid.
    pub object_uuid: Uuid,
    /// The object's type name.
    pub object_type: String,
    /// The verb of the operation (`start`, `create`, …).
    pub verb: String,
    /// HTTP method of the request that created it.
    pub method: String,
    /// HTTP path of the request that created it.
    pub path: String,
    /// Body of the request that created it (as sent, possibly empty).
    pub body: String,
    /// Client IP address.
    pub ip: String,
    /// Geographic location of the IP (empty when unknown).
    pub location: String,
    /// The authenticated user that requested it.
    pub user: String,
    /// The client's User-Agent.
    pub user_agent: String,
    /// Whether a user (not the system) triggered it.
    pub is_user_action: bool,
    /// Current state.
    pub state: ActionState,
    /// When the request was accepted.
    pub start_date: Option<DateTime<Utc>>,
    /// When it reached a final state.
    pub end_date: Option<DateTime<Utc>>,
    /// The action this one retries, if it is a retry.
    pub retry_of: Option<Uuid>,
    /// How many times a worker has claimed it (1 on the first run).
    pub claims: i32,
    /// The handler's last progress report, 0–100 (`None` before any).
    pub progress: Option<u8>,
    /// The message of that report (empty before any).
    pub progress_message: String,
}

impl Action {
    /// Its resource URI.
    pub fn resource_uri(&self) -> String {
        action_uri(&self.uuid)
    }

    /// The JSON the audit API returns for it.
    pub fn to_wire(&self) -> ActionJson {
        ActionJson {
            uuid: self.uuid,
            resource_uri: self.resource_uri(),
            action: self.action.clone(),
            object: self.object.clone(),
            method: self.method.clone(),
            path: self.path.clone(),
            body: self.body.clone(),
            ip: self.ip.clone(),
            location: self.location.clone(),
            user: self.user.clone(),
            user_agent: self.user_agent.clone(),
            is_user_action: self.is_user_action,
            can_be_canceled: self.state.can_be_canceled(),
            can_be_retried: self.state.can_be_retried(),
            state: self.state,
            start_date: self.start_date,
            end_date: self.end_date,
            progress: self.progress,
            progress_message: self.progress_message.clone(),
            queue_position: None,
            waiting_for: None,
        }
    }
}

/// Where a Pending action waits in its object's queue (computed when read,
/// never stored: see the store's `ActionStore::queue_places`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueuePlace {
    /// 1 = the next to run once the object is free.
    pub position: i64,
    /// The action directly ahead: the previous Pending action, or for
    /// position 1 the In progress or Canceling action holding the object
    /// (`None` only if nothing holds it, for the instant before a promotion
    /// commits).
    pub waiting_for: Option<Uuid>,
}

impl ActionJson {
    /// The JSON with the action's queue place, if it has one (only a
    /// Pending action does); without one both fields stay null.
    pub fn with_queue(mut self, place: Option<&QueuePlace>) -> Self {
        if let Some(p) = place.filter(|_| self.state == ActionState::Pending) {
            self.queue_position = Some(p.position);
            self.waiting_for = p.waiting_for.as_ref().map(action_uri);
        }
        self
    }
}

/// The wire form of an action, field for field as in the Docker Cloud audit API
/// (plus `user`, `can_be_retried`, `body`, `progress`, `progress_message`,
/// `queue_position` and `waiting_for`).
/// It deliberately has no key named like an SDK method (`logs`, `cancel`,
/// `retry`, …): the Python SDKs `setattr` every key onto the object, and such
/// a key would shadow the method.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionJson {
    /// Lowercase v4 uuid.
    pub uuid: Uuid,
    /// `/api/audit/v1/action/<uuid>/`.
    pub resource_uri: String,
    /// Operation name.
    pub action: String,
    /// Object resource URI.
    pub object: String,
    /// HTTP method of the request.
    pub method: String,
    /// HTTP path of the request.
    pub path: String,
    /// Request body as sent.
    pub body: String,
    /// Client IP.
    pub ip: String,
    /// Location of the client IP.
    pub location: String,
    /// Requesting user.
    pub user: String,
    /// Client User-Agent.
    pub user_agent: String,
    /// Triggered by a user.
    pub is_user_action: bool,
    /// A cancel would be accepted now.
    pub can_be_canceled: bool,
    /// A retry would be accepted now.
    pub can_be_retried: bool,
    /// Current state.
    pub state: ActionState,
    /// RFC 2822, or null.
    #[serde(with = "dates::wire_opt")]
    pub start_date: Option<DateTime<Utc>>,
    /// RFC 2822, or null.
    #[serde(with = "dates::wire_opt")]
    pub end_date: Option<DateTime<Utc>>,
    /// Extension: the handler's last progress report, 0–100, or null
    /// before any (kept in final states; see `stevedore_core::progress`).
    #[serde(default)]
    pub progress: Option<u8>,
    /// Extension: the message of that report ("" before any).
    #[serde(default)]
    pub progress_message: String,

    // Queue place (an extension; see `QueuePlace`): both null unless the
    // action is Pending.
    /// 1-based place of a Pending action in its object's queue (1 = next
    /// to run), or null.
    #[serde(default)]
    pub queue_position: Option<i64>,
    /// Resource URI of the action a Pending one waits directly behind, or
    /// null.
    #[serde(default)]
    pub waiting_for: Option<String>,
}

/// What a caller supplies to record a new action; the store decides its
/// initial state (In progress, or Pending when its object is busy).
#[derive(Debug, Clone, PartialEq)]
pub struct NewAction {
    /// Fresh v4 uuid.
    pub uuid: Uuid,
    /// Owning namespace.
    pub namespace: String,
    /// Operation name.
    pub action: String,
    /// Object URI.
    pub object: String,
    /// Object uuid.
    pub object_uuid: Uuid,
    /// Object type name.
    pub object_type: String,
    /// Parents of the object (resource URIs), for the action's event.
    pub object_parents: Vec<String>,
    /// Operation verb.
    pub verb: String,
    /// Request method.
    pub method: String,
    /// Request path.
    pub path: String,
    /// Request body.
    pub body: String,
    /// Client IP.
    pub ip: String,
    /// Client location.
    pub location: String,
    /// Requesting user.
    pub user: String,
    /// Client User-Agent.
    pub user_agent: String,
    /// Triggered by a user.
    pub is_user_action: bool,
    /// Retried action, if any.
    pub retry_of: Option<Uuid>,
    /// When set, the action is recorded directly in this final state (for
    /// synchronous calls such as a create with no handler); otherwise it is
    /// dispatched to the workers.
    pub completed: Option<ActionState>,
}

impl NewAction {
    /// Takes the action's object fields (uuid, type, namespace, URI,
    /// parents) from the object it runs on.
    pub fn set_object(&mut self, o: &crate::object::Object) {
        self.object_uuid = o.uuid;
        self.object_type = o.object_type.clone();
        self.namespace = o.namespace.clone();
        self.object = o.resource_uri.clone();
        self.object_parents = o.parents.clone();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn wire_json_matches_the_spec_shape() {
        let uuid = Uuid::parse_str("6246c558-976c-4df6-ba60-eb1a344a17af").unwrap();
        let t = Utc.with_ymd_and_hms(2014, 9, 17, 8, 26, 22).unwrap();
        let a = Action {
            uuid,
            namespace: "user_namespace".into(),
            action: "Cluster Create".into(),
            object: "/api/infra/v1/user_namespace/nodecluster/eea638f4-b77a-4183-b241-22dbd7866f22/".into(),
            object_uuid: Uuid::new_v4(),
            object_type: "nodecluster".into(),
            verb: "create".into(),
            method: "POST".into(),
            path: "/api/infra/v1/user_namespace/nodecluster/".into(),
            body: String::new(),
            ip: "56.78.90.12".into(),
            location: "New York, USA".into(),
            user: "user_namespace".into(),
            user_agent: "curl/8".into(),
            is_user_action: true,
            state: ActionState::Success,
            start_date: Some(t),
            end_date: None,
            retry_of: None,
            claims: 1,
            progress: Some(42),
            progress_message: "Copying layers".into(),
        };
        let v = serde_json::to_value(a.to_wire()).unwrap();
        assert_eq!(
            v["resource_uri"],
            "/api/audit/v1/action/6246c558-976c-4df6-ba60-eb1a344a17af/"
        );
        assert_eq!(v["start_date"], "Wed, 17 Sep 2014 08:26:22 +0000");
        assert_eq!(v["end_date"], serde_json::Value::Null);
        assert_eq!(v["state"], "Success");
        assert_eq!(v["can_be_canceled"], false);
        assert_eq!(v["can_be_retried"], true);
        assert_eq!(v["progress"], 42);
        assert_eq!(v["progress_message"], "Copying layers");
        assert_eq!(v["queue_position"], serde_json::Value::Null);
        assert_eq!(v["waiting_for"], serde_json::Value::Null);
        let obj = v.as_object().unwrap();
        for forbidden in [
            "logs", "cancel", "retry", "refresh", "fetch", "list", "delete", "save", "pk",
        ] {
            assert!(!obj.contains_key(forbidden), "{forbidden}");
        }
    }

    #[test]
    fn only_a_pending_action_shows_its_queue_place() {
        let ahead = Uuid::new_v4();
        let place = QueuePlace {
            position: 2,
            waiting_for: Some(ahead),
        };
        let mut json = ActionJson {
            state: ActionState::Pending,
            ..sample().to_wire()
        };
        json = json.with_queue(Some(&place));
        assert_eq!(json.queue_position, Some(2));
        assert_eq!(json.waiting_for, Some(action_uri(&ahead)));
        let running = sample().to_wire().with_queue(Some(&place));
        assert_eq!((running.queue_position, running.waiting_for), (None, None));
        let unknown = ActionJson {
            state: ActionState::Pending,
            ..sample().to_wire()
        }
        .with_queue(None);
        assert_eq!((unknown.queue_position, unknown.waiting_for), (None, None));
    }

    fn sample() -> Action {
        Action {
            uuid: Uuid::new_v4(),
            namespace: "acme".into(),
            action: "Service Start".into(),
            object: "/api/app/v1/acme/service/eea638f4-b77a-4183-b241-22dbd7866f22/".into(),
            object_uuid: Uuid::new_v4(),
            object_type: "service".into(),
            verb: "start".into(),
            method: "POST".into(),
            path: "/".into(),
            body: String::new(),
            ip: String::new(),
            location: String::new(),
            user: "acme".into(),
            user_agent: String::new(),
            is_user_action: true,
            state: ActionState::InProgress,
            start_date: None,
            end_date: None,
            retry_of: None,
            claims: 0,
            progress: None,
            progress_message: String::new(),
        }
    }
}
