//! The webhooks API (an extension): `/api/v1/webhook/` — create and list a
//! namespace's webhooks; `/api/v1/webhook/<uuid>/` — read, change, delete
//! one; `/api/v1/webhook/<uuid>/delivery/` — its delivery log. Every read is
//! scoped to the caller's namespaces (another tenant's webhook is a 404),
//! and every change follows such a read.

use super::parse_uuid;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::listing::{Envelope, QueryParams};
use crate::ApiState;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{Map, Value};
use stevedore_core::store::Scope;
use stevedore_core::webhook::{check_url, generate_secret, parse_states, NewWebhook, Webhook, WebhookJson};
use uuid::Uuid;

/// Query parameters of the two lists.
const LIST_PARAMS: &[&str] = &["limit", "offset"];
/// Keys a create request may hold.
const CREATE_KEYS: &[&str] = &["url", "states", "object_type", "action", "namespace"];
/// Keys a change request may hold.
const PATCH_KEYS: &[&str] = &["url", "states", "object_type", "action"];
/// Webhooks one namespace may have: each costs every delivery worker a
/// match per event.
pub const MAX_WEBHOOKS_PER_NAMESPACE: i64 = 100;
/// The verbs every object type has (object changes).
const CHANGE_VERBS: &[&str] = &["create", "update", "terminate"];

/// `GET /api/v1/webhook/`: the caller's webhooks, oldest first.
pub async fn list(
    State(state): State<ApiState>,
    caller: Caller,
    uri: Uri,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<Envelope<WebhookJson>>> {
    let params = QueryParams::parse(query.as_deref(), LIST_PARAMS)?;
    let page = params.page()?;
    let found = state
        .dispatcher
        .store()
        .list_webhooks(caller.scope(), page.limit, page.offset)
        .await?;
    let items = found.items.iter().map(Webhook::to_wire).collect();
    Ok(Json(Envelope::new(uri.path(), &params, page, found.total, items)))
}

/// `POST /api/v1/webhook/`: creates a webhook; the answer (201) holds its
/// signing secret, which is never shown again.
pub async fn create(State(state): State<ApiState>, caller: Caller, body: Bytes) -> ApiResult<Response> {
    let input = object_body(&body, CREATE_KEYS)?;
    let namespace = match input.get("namespace") {
        None | Some(Value::Null) => caller.own_namespace().to_string(),
        Some(Value::String(ns)) if caller.namespaces.contains(ns) => ns.clone(),
        Some(Value::String(ns)) => return Err(ApiError::NotFound(format!("namespace {ns} not found"))),
        Some(_) => return Err(ApiError::BadRequest("namespace must be a string".into())),
    };
    let url = match input.get("url") {
        Some(v) => url_of(v)?,
        None => return Err(ApiError::BadRequest("url is required".into())),
    };
    let states = match input.get("states") {
        Some(v) => states_of(v)?,
        None => {
            return Err(ApiError::BadRequest(
                "states is required (e.g. [\"Success\", \"Failed\"])".into(),
            ))
        }
    };
    let object_type = optional_text(&input, "object_type")?.flatten();
    let action = optional_text(&input, "action")?.flatten();
    check_filters(&state, object_type.as_deref(), action.as_deref())?;
    let store = state.dispatcher.store();
    let held = store
        .list_webhooks(Scope::Namespaces(std::slice::from_ref(&namespace)), 1, 0)
        .await?
        .total;
    if held >= MAX_WEBHOOKS_PER_NAMESPACE {
        return Err(ApiError::Conflict(format!(
            "namespace {namespace} has {held} webhooks, the most it may have; remove one first"
        )));
    }
    let new = NewWebhook {
        uuid: Uuid::new_v4(),
        namespace,
        url,
        states,
        object_type,
        action,
        secret: generate_secret(),
    };
    let created = store.create_webhook(&new).await?;
    tracing::info!(webhook = %created.uuid, namespace = %created.namespace, "webhook created");
    let mut wire = created.to_wire();
    wire.secret = Some(created.secret);
    Ok((StatusCode::CREATED, Json(wire)).into_response())
}

/// `GET /api/v1/webhook/<uuid>/`.
pub async fn get(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<WebhookJson>> {
    Ok(Json(load(&state, &caller, &id).await?.to_wire()))
}

/// `PATCH /api/v1/webhook/<uuid>/`: changes its url, states or filters
/// (`null` clears a filter); what is not given stays.
pub async fn patch(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<WebhookJson>> {
    let mut webhook = load(&state, &caller, &id).await?;
    let input = object_body(&body, PATCH_KEYS)?;
    if let Some(v) = input.get("url") {
        webhook.url = url_of(v)?;
    }
    if let Some(v) = input.get("states") {
        webhook.states = states_of(v)?;
    }
    if let Some(t) = optional_text(&input, "object_type")? {
        webhook.object_type = t;
    }
    if let Some(a) = optional_text(&input, "action")? {
        webhook.action = a;
    }
    check_filters(&state, webhook.object_type.as_deref(), webhook.action.as_deref())?;
    if !state.dispatcher.store().save_webhook(&webhook).await? {
        return Err(gone(&webhook.uuid));
    }
    Ok(Json(webhook.to_wire()))
}

/// `DELETE /api/v1/webhook/<uuid>/`: deletes it and its delivery log (204).
pub async fn delete(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let webhook = load(&state, &caller, &id).await?;
    if !state.dispatcher.store().delete_webhook(webhook.uuid).await? {
        return Err(gone(&webhook.uuid));
    }
    tracing::info!(webhook = %webhook.uuid, "webhook deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/v1/webhook/<uuid>/delivery/`: its deliveries, newest first.
pub async fn deliveries(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
    uri: Uri,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    let params = QueryParams::parse(query.as_deref(), LIST_PARAMS)?;
    let page = params.page()?;
    let webhook = load(&state, &caller, &id).await?;
    let found = state
        .dispatcher
        .store()
        .webhook_deliveries(webhook.id, page.limit, page.offset)
        .await?;
    Ok(Json(Envelope::new(uri.path(), &params, page, found.total, found.items)).into_response())
}

/// A webhook visible to the caller.
async fn load(state: &ApiState, caller: &Caller, id: &str) -> ApiResult<Webhook> {
    let uuid = parse_uuid(id)?;
    state
        .dispatcher
        .store()
        .get_webhook(caller.scope(), uuid)
        .await?
        .ok_or_else(|| gone(&uuid))
}

fn gone(uuid: &Uuid) -> ApiError {
    ApiError::NotFound(format!("webhook {uuid} not found"))
}

/// The request body: a JSON object with only `allowed` keys.
fn object_body(body: &[u8], allowed: &[&str]) -> ApiResult<Map<String, Value>> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("the body must be a JSON object: {e}")))?;
    let Value::Object(map) = value else {
        return Err(ApiError::BadRequest("the body must be a JSON object".into()));
    };
    if let Some(k) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(ApiError::BadRequest(format!(
            "unknown field {k:?}; supported: {}",
            allowed.join(", ")
        )));
    }
    Ok(map)
}

fn url_of(v: &Value) -> ApiResult<String> {
    let url = v
        .as_str()
        .ok_or_else(|| ApiError::BadRequest("url must be a string".into()))?;
    crate::input::no_nul("url", url)?;
    check_url(url).map_err(ApiError::BadRequest)?;
    Ok(url.to_string())
}

fn states_of(v: &Value) -> ApiResult<Vec<stevedore_core::state::ActionState>> {
    let names = v
        .as_array()
        .and_then(|a| {
            a.iter()
                .map(|s| s.as_str().map(String::from))
                .collect::<Option<Vec<_>>>()
        })
        .ok_or_else(|| ApiError::BadRequest("states must be a list of state names".into()))?;
    parse_states(&names).map_err(ApiError::BadRequest)
}

/// A filter field: absent (`None`), null (`Some(None)`) or a string.
fn optional_text(input: &Map<String, Value>, key: &str) -> ApiResult<Option<Option<String>>> {
    match input.get(key) {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(Value::String(s)) => Ok(Some(Some(s.clone()))),
        Some(_) => Err(ApiError::BadRequest(format!("{key} must be a string or null"))),
    }
}

/// The filters name a known object type and a verb it (or, without a type,
/// any type) has.
fn check_filters(state: &ApiState, object_type: Option<&str>, action: Option<&str>) -> ApiResult<()> {
    let types = state.ops.types();
    if let Some(t) = object_type {
        if types.by_name(t).is_none() {
            let known: Vec<&str> = types.all().iter().map(|t| t.name.as_str()).collect();
            return Err(ApiError::BadRequest(format!(
                "object_type: unknown type {t:?}; use one of {}",
                known.join(", ")
            )));
        }
    }
    if let Some(verb) = action {
        let mut verbs: Vec<&str> = CHANGE_VERBS.to_vec();
        match object_type {
            Some(t) => verbs.extend(state.ops.verbs(t)),
            None => verbs.extend(state.ops.all().iter().map(|o| o.verb.as_str())),
        }
        if !verbs.contains(&verb) {
            verbs.sort();
            verbs.dedup();
            return Err(ApiError::BadRequest(format!(
                "action: unknown verb {verb:?}{}; use one of {}",
                object_type.map(|t| format!(" for {t}")).unwrap_or_default(),
                verbs.join(", ")
            )));
        }
    }
    Ok(())
}
