//! Object types, object references and their resource URIs.
//!
//! An *object* is the typed resource an operation acts on (a service, a node…).
//! Its resource URI is always the namespaced form
//! `/api/<subsystem>/v1/<namespace>/<type>/<uuid>/`, as in the audit API's
//! example; the API also accepts the form without the namespace segment.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A kind of object: its name in URLs, the API subsystem it lives under, its
/// display label (used in action names like "Service Start") and the types
/// that may be its parents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectType {
    /// URL name: `service`, `nodecluster`, …
    pub name: String,
    /// API subsystem: `app` or `infra` (or any declared in config).
    pub subsystem: String,
    /// Human label: `Service`, `Node Cluster`, …
    pub label: String,
    /// Types whose objects may be parents of this type's objects.
    #[serde(default)]
    pub parents: Vec<String>,
}

impl ObjectType {
    fn builtin(name: &str, subsystem: &str, label: &str, parents: &[&str]) -> Self {
        ObjectType {
            name: name.into(),
            subsystem: subsystem.into(),
            label: label.into(),
            parents: parents.iter().map(|p| p.to_string()).collect(),
        }
    }

    /// The five built-in types with the parent hierarchy of the Tutum events spec.
    pub fn builtins() -> Vec<ObjectType> {
        vec![
            Self::builtin("stack", "app", "Stack", &[]),
            Self::builtin("service", "app", "Service", &["stack"]),
            Self::builtin(
                "container",
                "app",
                "Container",
                &["service", "stack", "node", "nodecluster"],
            ),
            Self::builtin("nodecluster", "infra", "Node Cluster", &[]),
            Self::builtin("node", "infra", "Node", &["nodecluster"]),
        ]
    }

    /// The object's resource URI.
    pub fn uri(&self, namespace: &str, uuid: &Uuid) -> String {
        format!("/api/{}/v1/{}/{}/{}/", self.subsystem, namespace, self.name, uuid)
    }

    /// The URI of this type's list endpoint in a namespace.
    pub fn list_uri(&self, namespace: &str) -> String {
        format!("/api/{}/v1/{}/{}/", self.subsystem, namespace, self.name)
    }
}

/// The registry of known object types (built-ins plus those declared in config).
#[derive(Debug, Clone)]
pub struct ObjectTypes {
    types: Vec<ObjectType>,
}

impl Default for ObjectTypes {
    fn default() -> Self {
        ObjectTypes {
            types: ObjectType::builtins(),
        }
    }
}

impl ObjectTypes {
    /// Built-ins plus `extra` (an extra type with a built-in's name replaces it).
    pub fn with_extra(extra: &[ObjectType]) -> Self {
        let mut types = ObjectType::builtins();
        for t in extra {
            types.retain(|b| b.name != t.name);
            types.push(t.clone());
        }
        ObjectTypes { types }
    }

    /// Looks a type up by subsystem and name.
    pub fn get(&self, subsystem: &str, name: &str) -> Option<&ObjectType> {
        self.types
            .iter()
            .find(|t| t.subsystem == subsystem && t.name == name)
    }

    /// Looks a type up by name alone.
    pub fn by_name(&self, name: &str) -> Option<&ObjectType> {
        self.types.iter().find(|t| t.name == name)
    }

    /// Every known type.
    pub fn all(&self) -> &[ObjectType] {
        &self.types
    }
}

/// The parts of an object resource URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedUri {
    /// `app`, `infra`, …
    pub subsystem: String,
    /// The namespace segment, when the URI has one.
    pub namespace: Option<String>,
    /// The type name.
    pub object_type: String,
    /// The object's uuid.
    pub uuid: Uuid,
}

/// Parses `/api/<subsystem>/v1/[<ns>/]<type>/<uuid>/` (a full URL is accepted
/// too: scheme and host are ignored).
pub fn parse_object_uri(uri: &str) -> Option<ParsedUri> {
    let path = match uri.find("/api/") {
        Some(i) => &uri[i..],
        None => return None,
    };
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    // ["api", subsystem, "v1", (ns,) type, uuid]
    if segs.len() < 5 || segs[0] != "api" || segs[2] != "v1" {
        return None;
    }
    let (namespace, ty, id) = match segs.len() {
        5 => (None, segs[3], segs[4]),
        6 => (Some(segs[3].to_string()), segs[4], segs[5]),
        _ => return None,
    };
    Some(ParsedUri {
        subsystem: segs[1].to_string(),
        namespace,
        object_type: ty.to_string(),
        uuid: Uuid::parse_str(id).ok()?,
    })
}

/// A stored object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Object {
    /// Its uuid (lowercase v4).
    pub uuid: Uuid,
    /// The namespace that owns it.
    pub namespace: String,
    /// Its type name.
    pub object_type: String,
    /// Its resource URI.
    pub resource_uri: String,
    /// Its name (free text given at creation).
    pub name: String,
    /// Its current state (free text; handlers may set it).
    pub state: String,
    /// Resource URIs of its parents.
    pub parents: Vec<String>,
    /// Attributes given at creation or by PATCH.
    pub attributes: serde_json::Value,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it was last changed.
    pub updated_at: DateTime<Utc>,
    /// When it was deleted (terminated), if it was.
    pub deleted_at: Option<DateTime<Utc>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_uris_parse_with_and_without_namespace() {
        let u = Uuid::new_v4();
        let t = ObjectTypes::default();
        let svc = t.get("app", "service").unwrap();
        let uri = svc.uri("acme", &u);
        assert_eq!(uri, format!("/api/app/v1/acme/service/{u}/"));
        let p = parse_object_uri(&uri).unwrap();
        assert_eq!(p.namespace.as_deref(), Some("acme"));
        assert_eq!(p.object_type, "service");
        assert_eq!(p.uuid, u);
        let p = parse_object_uri(&format!("http://h:1/api/infra/v1/node/{u}")).unwrap();
        assert_eq!((p.subsystem.as_str(), p.namespace, p.uuid), ("infra", None, u));
        assert!(parse_object_uri("/api/app/v1/service/not-a-uuid/").is_none());
        assert!(parse_object_uri("/etc/passwd").is_none());
    }
}
