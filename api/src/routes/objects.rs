//! The objects API: `/api/<subsystem>/v1/[<ns>/]<type>/[<uuid>/[<verb>/]]`.
//!
//! - `POST …/<type>/` creates an object and records a "<Type> Create" action
//!   (dispatched when a `create` operation is configured, otherwise recorded
//!   as Success at once): 202 or 201.
//! - `GET …/<type>/` lists the caller's objects of a type (Tastypie envelope).
//! - `GET …/<type>/<uuid>/` returns the object.
//! - `PATCH …/<type>/<uuid>/` updates it ("<Type> Update"); `DELETE`
//!   terminates it ("<Type> Terminate").
//! - `POST …/<type>/<uuid>/<verb>/` records the operation's action and
//!   dispatches it: 202 with the action JSON and both action-URI headers.

use super::{parse_uuid, segments, with_action};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::listing::{Envelope, QueryParams};
use crate::request::{json_object_body, RequestInfo};
use crate::ApiState;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{Map, Value};
use stevedore_core::action::NewAction;
use stevedore_core::config::title_case;
use stevedore_core::lifecycle::engine::ObjectRequest;
use stevedore_core::lifecycle::{ObjectChange, ObjectPatch};
use stevedore_core::object::{parse_object_uri, Object, ObjectType};
use stevedore_core::state::ActionState;
use stevedore_core::store::{ObjectFilter, ObjectLookup};
use uuid::Uuid;

/// Keys the server sets; a client may not.
const RESERVED: &[&str] = &["uuid", "resource_uri", "state", "parents", "created", "deleted"];

/// Longest object name accepted.
const MAX_NAME_LEN: usize = 256;

/// What an objects path names.
struct ObjectPath {
    ty: ObjectType,
    namespace: Option<String>,
    uuid: Option<Uuid>,
    verb: Option<String>,
}

fn resolve(state: &ApiState, uri: &Uri) -> ApiResult<ObjectPath> {
    let segs = segments(uri.path());
    // ["api", subsystem, "v1", …]
    let (sub, rest) = match segs.as_slice() {
        ["api", sub, "v1", rest @ ..] => (*sub, rest),
        _ => return Err(ApiError::NotFound(format!("no such resource: {}", uri.path()))),
    };
    let types = state.ops.types();
    let (namespace, rest) = match rest {
        [first, tail @ ..] if types.get(sub, first).is_some() => (None, {
            let mut v = vec![*first];
            v.extend_from_slice(tail);
            v
        }),
        [ns, second, tail @ ..] if types.get(sub, second).is_some() => (Some(ns.to_string()), {
            let mut v = vec![*second];
            v.extend_from_slice(tail);
            v
        }),
        _ => {
            let known: Vec<&str> = types
                .all()
                .iter()
                .filter(|t| t.subsystem == sub)
                .map(|t| t.name.as_str())
                .collect();
            return Err(ApiError::NotFound(format!(
                "unknown object type in {}; known types here: {}",
                uri.path(),
                known.join(", ")
            )));
        }
    };
    let ty = types
        .get(sub, rest[0])
        .cloned()
        .ok_or_else(|| ApiError::NotFound("unknown object type".into()))?;
    let (uuid, verb) = match &rest[1..] {
        [] => (None, None),
        [id] => (Some(parse_uuid(id)?), None),
        [id, verb] => (Some(parse_uuid(id)?), Some(verb.to_string())),
        _ => return Err(ApiError::NotFound(format!("no such resource: {}", uri.path()))),
    };
    Ok(ObjectPath {
        ty,
        namespace,
        uuid,
        verb,
    })
}

/// The namespace a request acts in: the path's (which the caller must belong
/// to; otherwise it does not exist for them) or the caller's own.
fn namespace_for(caller: &Caller, path_ns: Option<&str>) -> ApiResult<String> {
    match path_ns {
        None => Ok(caller.own_namespace().to_string()),
        Some(ns) if caller.namespaces.iter().any(|n| n == ns) => Ok(ns.to_string()),
        Some(ns) => Err(ApiError::NotFound(format!("namespace {ns} not found"))),
    }
}

/// An object visible to the caller, of the path's type (and namespace, if given).
async fn load_object(state: &ApiState, caller: &Caller, p: &ObjectPath, uuid: Uuid) -> ApiResult<Object> {
    let found = state.dispatcher.store().get_object(caller.scope(), uuid).await?;
    Ok(lookup(caller, p)?.find(&p.ty.name, uuid, found)?)
}

/// How a request on an object path finds its object (see [`ObjectLookup`]).
fn lookup(caller: &Caller, p: &ObjectPath) -> ApiResult<ObjectLookup> {
    Ok(ObjectLookup {
        visible: Some(caller.namespaces.clone()),
        // The path's namespace, if any: an error when the caller is not a
        // member of it.
        namespace: p
            .namespace
            .as_deref()
            .map(|ns| namespace_for(caller, Some(ns)))
            .transpose()?,
    })
}

/// The JSON of an object: its attributes, its parent links (`"stack": uri`),
/// and the fields every object has.
pub fn object_json(o: &Object) -> Value {
    let mut m: Map<String, Value> = o.attributes.as_object().cloned().unwrap_or_default();
    for p in &o.parents {
        if let Some(parsed) = parse_object_uri(p) {
            m.insert(parsed.object_type, Value::String(p.clone()));
        }
    }
    m.insert("uuid".into(), Value::String(o.uuid.to_string()));
    m.insert("resource_uri".into(), Value::String(o.resource_uri.clone()));
    m.insert("name".into(), Value::String(o.name.clone()));
    m.insert("state".into(), Value::String(o.state.clone()));
    m.insert("parents".into(), Value::from(o.parents.clone()));
    m.insert(
        "created".into(),
        Value::String(stevedore_core::dates::format(&o.created_at)),
    );
    m.insert(
        "deleted".into(),
        o.deleted_at
            .map(|d| Value::String(stevedore_core::dates::format(&d)))
            .unwrap_or(Value::Null),
    );
    Value::Object(m)
}

/// A user's action on the object `object_uuid` of type `object_type`, its
/// other object fields left for the submission to fill in
/// ([`SubmitBatcher::submit_on`]).
///
/// [`SubmitBatcher::submit_on`]: stevedore_core::dispatch::SubmitBatcher::submit_on
fn new_action_on(
    info: &RequestInfo,
    caller: &Caller,
    object_uuid: Uuid,
    object_type: &str,
    action: String,
    verb: &str,
    body: String,
) -> NewAction {
    NewAction {
        uuid: Uuid::new_v4(),
        namespace: String::new(),
        action,
        object: String::new(),
        object_uuid,
        object_type: object_type.to_string(),
        object_parents: Vec::new(),
        verb: verb.to_string(),
        method: info.method.clone(),
        path: info.path.clone(),
        body,
        ip: info.ip.clone(),
        location: info.location.clone(),
        user: caller.user.clone(),
        user_agent: info.user_agent.clone(),
        is_user_action: true,
        retry_of: None,
        completed: None,
    }
}

/// `GET` on an objects path.
pub async fn get(State(state): State<ApiState>, caller: Caller, uri: Uri) -> ApiResult<Response> {
    let p = resolve(&state, &uri)?;
    match (p.uuid, &p.verb) {
        (Some(uuid), None) => {
            Ok(Json(object_json(&load_object(&state, &caller, &p, uuid).await?)).into_response())
        }
        (None, None) => list(&state, &caller, &p, &uri).await,
        (_, Some(_)) => Err(ApiError::NotFound(format!("no such resource: {}", uri.path()))),
    }
}

/// `POST` on an objects path: create, or run a verb.
pub async fn post(
    State(state): State<ApiState>,
    caller: Caller,
    info: RequestInfo,
    uri: Uri,
    body: Bytes,
) -> ApiResult<Response> {
    let p = resolve(&state, &uri)?;
    match (p.uuid, p.verb.clone()) {
        (None, None) => create(state, caller, info, p, &body).await,
        (Some(uuid), Some(verb)) => run_verb(state, caller, info, p, uuid, verb, &body).await,
        (Some(_), None) => Err(ApiError::NotFound(format!(
            "POST {} names no operation: use POST …/{}/<uuid>/<verb>/",
            uri.path(),
            p.ty.name
        ))),
        (None, Some(_)) => Err(ApiError::NotFound(format!("no such resource: {}", uri.path()))),
    }
}

async fn create(
    state: ApiState,
    caller: Caller,
    info: RequestInfo,
    p: ObjectPath,
    body: &[u8],
) -> ApiResult<Response> {
    let (raw, mut attrs) = json_object_body(body)?;
    let namespace = namespace_for(&caller, p.namespace.as_deref())?;
    let name = match attrs.remove("name") {
        None => String::new(),
        Some(Value::String(s)) if s.len() <= MAX_NAME_LEN => s,
        Some(Value::String(_)) => {
            return Err(ApiError::BadRequest(format!(
                "name is longer than {MAX_NAME_LEN} bytes"
            )))
        }
        Some(_) => return Err(ApiError::BadRequest("name must be a string".into())),
    };
    for reserved in RESERVED {
        if attrs.contains_key(*reserved) {
            return Err(ApiError::BadRequest(format!(
                "{reserved} is set by the server and cannot be given"
            )));
        }
    }
    let store = state.dispatcher.store();
    let mut parents: Vec<String> = Vec::new();
    for parent_type in &p.ty.parents {
        let Some(v) = attrs.remove(parent_type) else {
            continue;
        };
        let Value::String(reference) = v else {
            return Err(ApiError::BadRequest(format!(
                "{parent_type} must be a resource URI or uuid string"
            )));
        };
        let id = parse_object_uri(&reference)
            .map(|u| u.uuid)
            .or_else(|| Uuid::parse_str(&reference).ok())
            .ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "{parent_type}: {reference:?} is not a resource URI or uuid"
                ))
            })?;
        let parent = store
            .get_object(caller.scope(), id)
            .await?
            .filter(|o| &o.object_type == parent_type && o.namespace == namespace && o.deleted_at.is_none())
            .ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "{parent_type} {reference} not found in namespace {namespace}"
                ))
            })?;
        for uri in std::iter::once(parent.resource_uri.clone()).chain(parent.parents.iter().cloned()) {
            if !parents.contains(&uri) {
                parents.push(uri);
            }
        }
    }
    let uuid = Uuid::new_v4();
    let now = chrono::Utc::now();
    let obj = Object {
        uuid,
        namespace: namespace.clone(),
        object_type: p.ty.name.clone(),
        resource_uri: p.ty.uri(&namespace, &uuid),
        name,
        state: "Created".into(),
        parents,
        attributes: Value::Object(attrs),
        created_at: now,
        updated_at: now,
        deleted_at: None,
    };
    let lookup = lookup(&caller, &p)?;
    change(
        &state,
        &caller,
        &info,
        &p,
        uuid,
        lookup,
        ObjectChange::Create(obj),
        raw,
        StatusCode::CREATED,
    )
    .await
}

/// Makes an object change with the action that records it, in one
/// transaction ([`ObjectStore::change_object`]), publishes it, and answers
/// with the object and the action's URI: `202` when the action was
/// dispatched (an operation is configured for the change's verb),
/// otherwise `done`, the action recorded as Success at once.
#[allow(clippy::too_many_arguments)]
async fn change(
    state: &ApiState,
    caller: &Caller,
    info: &RequestInfo,
    p: &ObjectPath,
    uuid: Uuid,
    lookup: ObjectLookup,
    change: ObjectChange,
    body: String,
    done: StatusCode,
) -> ApiResult<Response> {
    let verb = change.verb();
    let op = state.ops.get(&p.ty.name, verb);
    let name = op
        .and_then(|o| o.action.clone())
        .unwrap_or_else(|| format!("{} {}", p.ty.label, title_case(verb)));
    let mut action = new_action_on(info, caller, uuid, &p.ty.name, name, verb, body);
    if op.is_none() {
        action.completed = Some(ActionState::Success);
    }
    let request = ObjectRequest {
        uuid,
        object_type: p.ty.name.clone(),
        lookup,
        change,
        action,
    };
    let changed = state.dispatcher.store().change_object(request).await?;
    state.dispatcher.publish(&[&changed]).await;
    let status = if op.is_some() { StatusCode::ACCEPTED } else { done };
    Ok(with_action(
        status,
        &changed.action.action,
        object_json(&changed.object),
    ))
}

/// Query parameters of an object list.
const LIST_PARAMS: &[&str] = &["limit", "offset", "format", "include_deleted"];

async fn list(state: &ApiState, caller: &Caller, p: &ObjectPath, uri: &Uri) -> ApiResult<Response> {
    let params = QueryParams::parse(uri.query(), LIST_PARAMS)?;
    let page = params.page()?;
    let namespace = p
        .namespace
        .as_deref()
        .map(|ns| namespace_for(caller, Some(ns)))
        .transpose()?;
    let filter = ObjectFilter {
        object_type: Some(p.ty.name.clone()),
        namespace,
        parent: None,
        include_deleted: params.flag("include_deleted")?.unwrap_or(false),
        page_bytes: Some(state.limits.page_bytes),
    };
    let found = state
        .dispatcher
        .store()
        .list_objects(caller.scope(), &filter, page.limit, page.offset)
        .await?;
    let total = found.total;
    let objects: Vec<Value> = found.items.into_iter().map(|o| object_json(&o)).collect();
    Ok(Json(Envelope::new(uri.path(), &params, page, total, objects)).into_response())
}

/// The object a `PATCH` or `DELETE` names: a path of one object, no verb.
fn one_object(state: &ApiState, uri: &Uri, method: &str) -> ApiResult<(ObjectPath, Uuid)> {
    let p = resolve(state, uri)?;
    match (p.uuid, &p.verb) {
        (Some(uuid), None) => Ok((p, uuid)),
        _ => Err(ApiError::MethodNotAllowed(format!(
            "{method} takes an object: …/<type>/<uuid>/"
        ))),
    }
}

/// `PATCH …/<type>/<uuid>/`: changes the name and attributes (a `null`
/// attribute is removed); records "<Type> Update".
pub async fn patch(
    State(state): State<ApiState>,
    caller: Caller,
    info: RequestInfo,
    uri: Uri,
    body: Bytes,
) -> ApiResult<Response> {
    let (p, uuid) = one_object(&state, &uri, "PATCH")?;
    let (raw, changes) = json_object_body(&body)?;
    if changes.is_empty() {
        return Err(ApiError::BadRequest(
            "nothing to change: send a JSON object of attributes".into(),
        ));
    }
    let mut patch = ObjectPatch::default();
    for (k, v) in changes {
        if RESERVED.contains(&k.as_str()) || p.ty.parents.contains(&k) {
            return Err(ApiError::BadRequest(format!("{k} cannot be changed")));
        }
        match (k.as_str(), v) {
            ("name", Value::String(s)) if s.len() <= MAX_NAME_LEN => patch.name = Some(s),
            ("name", _) => {
                return Err(ApiError::BadRequest(format!(
                    "name must be a string of at most {MAX_NAME_LEN} bytes"
                )))
            }
            (_, Value::Null) => patch.attributes.push((k, None)),
            (_, v) => patch.attributes.push((k, Some(v))),
        }
    }
    let lookup = lookup(&caller, &p)?;
    let update = ObjectChange::Update(patch);
    change(
        &state,
        &caller,
        &info,
        &p,
        uuid,
        lookup,
        update,
        raw,
        StatusCode::OK,
    )
    .await
}

/// `DELETE …/<type>/<uuid>/`: terminates the object (it stays readable with
/// state Terminated); records "<Type> Terminate".
pub async fn delete(
    State(state): State<ApiState>,
    caller: Caller,
    info: RequestInfo,
    uri: Uri,
) -> ApiResult<Response> {
    let (p, uuid) = one_object(&state, &uri, "DELETE")?;
    let lookup = lookup(&caller, &p)?;
    let terminate = ObjectChange::Terminate;
    change(
        &state,
        &caller,
        &info,
        &p,
        uuid,
        lookup,
        terminate,
        String::new(),
        StatusCode::ACCEPTED,
    )
    .await
}

async fn run_verb(
    state: ApiState,
    caller: Caller,
    info: RequestInfo,
    p: ObjectPath,
    uuid: Uuid,
    verb: String,
    body: &[u8],
) -> ApiResult<Response> {
    let op = state.ops.get(&p.ty.name, &verb).ok_or_else(|| {
        ApiError::NotFound(format!(
            "{} has no operation {verb:?}; configured: {}",
            p.ty.name,
            state.ops.verbs(&p.ty.name).join(", ")
        ))
    })?;
    let (raw, _) = json_object_body(body)?;
    let name = op
        .action
        .clone()
        .unwrap_or_else(|| format!("{} {verb}", p.ty.label));
    // The object is looked up in the submission's batch (one statement for
    // the batch), with the same answers `load_object` gives.
    let new = new_action_on(&info, &caller, uuid, &p.ty.name, name, &verb, raw);
    let submitted = state.submitter.submit_on(new, lookup(&caller, &p)?).await?;
    Ok(with_action(
        StatusCode::ACCEPTED,
        &submitted.action,
        serde_json::to_value(super::queue::wire_one(&state, &caller, &submitted.action).await?)?,
    ))
}

impl From<serde_json::Error> for ApiError {
    fn from(e: serde_json::Error) -> Self {
        ApiError::Internal(e.to_string())
    }
}
