//! The audit API: `/api/audit/v1/[<ns>/]action/…` and its Tutum v1 alias
//! `/api/v1/action/…`: list with filters, detail, cancel, retry; and the
//! `auth/` probe under both prefixes.

use super::{parse_uuid, segments, with_action};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::listing::{Envelope, QueryParams};
use crate::request::RequestInfo;
use crate::ApiState;
use axum::extract::{Path, RawQuery, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use stevedore_core::action::{Action, ActionJson};
use stevedore_core::dates;
use stevedore_core::lifecycle;
use stevedore_core::object::{parse_object_uri, Object};
use stevedore_core::state::ActionState;
use stevedore_core::store::{uuid_prefix_range, ActionFilter, ObjectFilter};
use uuid::Uuid;

/// Query parameters the action list understands.
const LIST_PARAMS: &[&str] = &[
    "uuid",
    "uuid__startswith",
    "state",
    "start_date__gte",
    "start_date__lte",
    "end_date__gte",
    "end_date__lte",
    "object",
    "include_related",
    "object_type",
    "limit",
    "offset",
    "format",
];

/// What an audit path names.
#[derive(Debug, PartialEq, Eq)]
enum AuditPath {
    Auth,
    List(Option<String>),
    Action(Uuid),
    Cancel(Uuid),
    Retry(Uuid),
}

fn parse(rest: &str) -> ApiResult<AuditPath> {
    let segs = segments(rest);
    // An optional namespace segment comes first: [ns,] "action", …
    let (ns, segs): (Option<String>, &[&str]) = match segs.as_slice() {
        ["auth"] => return Ok(AuditPath::Auth),
        [ns, "action", ..] => (Some(ns.to_string()), &segs[1..]),
        s => (None, s),
    };
    match segs {
        ["action"] => Ok(AuditPath::List(ns)),
        ["action", id] => Ok(AuditPath::Action(parse_uuid(id)?)),
        ["action", id, "cancel"] => Ok(AuditPath::Cancel(parse_uuid(id)?)),
        ["action", id, "retry"] => Ok(AuditPath::Retry(parse_uuid(id)?)),
        _ => Err(ApiError::NotFound(format!("no such resource: {rest}"))),
    }
}

/// `GET /api/audit/v1/…` and `GET /api/v1/…`.
pub async fn get(
    State(state): State<ApiState>,
    caller: Caller,
    Path(rest): Path<String>,
    uri: Uri,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    match parse(&rest)? {
        AuditPath::Auth => Ok(super::probes::auth_probe(caller).await.into_response()),
        AuditPath::List(ns) => list(&state, &caller, ns, uri.path(), query.as_deref()).await,
        AuditPath::Action(uuid) => {
            let action = load(&state, &caller, uuid).await?;
            Ok(Json(detail(&state, &caller, &action).await?).into_response())
        }
        AuditPath::Cancel(_) | AuditPath::Retry(_) => {
            Err(ApiError::MethodNotAllowed("cancel and retry take POST".into()))
        }
    }
}

/// `POST /api/audit/v1/…/cancel/` and `…/retry/` (and the v1 aliases).
pub async fn post(
    State(state): State<ApiState>,
    caller: Caller,
    info: RequestInfo,
    Path(rest): Path<String>,
) -> ApiResult<Response> {
    match parse(&rest)? {
        AuditPath::Cancel(uuid) => cancel(&state, &caller, uuid).await,
        AuditPath::Retry(uuid) => retry(&state, &caller, &info, uuid).await,
        _ => Err(ApiError::MethodNotAllowed("this resource is read-only".into())),
    }
}

async fn load(state: &ApiState, caller: &Caller, uuid: Uuid) -> ApiResult<Action> {
    state
        .dispatcher
        .store()
        .get_action(caller.scope(), uuid)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("action {uuid} not found")))
}

fn date_param(params: &QueryParams, key: &str) -> ApiResult<Option<chrono::DateTime<chrono::Utc>>> {
    match params.one(key)? {
        None => Ok(None),
        Some(v) => dates::parse_filter(v).map(Some).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "{key}: cannot read {v:?} as a date of the years 1 to 9999; use RFC 2822 (Wed, 17 Sep 2014 08:26:22 +0000) or ISO 8601"
            ))
        }),
    }
}

/// Builds the store filter from the query, validating every value.
async fn action_filter(state: &ApiState, caller: &Caller, params: &QueryParams) -> ApiResult<ActionFilter> {
    let mut f = ActionFilter {
        start_gte: date_param(params, "start_date__gte")?,
        start_lte: date_param(params, "start_date__lte")?,
        end_gte: date_param(params, "end_date__gte")?,
        end_lte: date_param(params, "end_date__lte")?,
        ..Default::default()
    };
    if let Some(u) = params.one("uuid")? {
        f.uuid = Some(parse_uuid(u.trim())?);
    }
    if let Some(p) = params.one("uuid__startswith")? {
        let p = p.trim().to_ascii_lowercase();
        if uuid_prefix_range(&p).is_none() {
            return Err(ApiError::BadRequest(format!(
                "uuid__startswith: {p:?} is not the start of a uuid"
            )));
        }
        f.uuid_prefix = Some(p);
    }
    for s in params.many("state") {
        let st: ActionState = s
            .parse()
            .map_err(|e: stevedore_core::state::UnknownState| ApiError::BadRequest(e.to_string()))?;
        f.states.push(st);
    }
    if let Some(t) = params.one("object_type")? {
        let t = t.trim();
        if state.ops.types().by_name(t).is_none() {
            return Err(ApiError::BadRequest(format!(
                "object_type: unknown object type {t:?}"
            )));
        }
        f.object_type = Some(t.to_string());
    }
    let related = params.flag("include_related")?.unwrap_or(false);
    match params.one("object")? {
        Some(o) => {
            let uuid = parse_object_uri(o)
                .map(|p| p.uuid)
                .or_else(|| Uuid::parse_str(o.trim()).ok())
                .ok_or_else(|| {
                    ApiError::BadRequest(format!("object: {o:?} is not an object resource URI or uuid"))
                })?;
            f.objects = Some(if related {
                related_objects(state, caller, uuid).await?
            } else {
                vec![uuid]
            });
        }
        None if related => {
            return Err(ApiError::BadRequest(
                "include_related needs an object filter".into(),
            ));
        }
        None => {}
    }
    Ok(f)
}

/// The object and its relatives within its API subsystem: its parents, and
/// the objects that list it as a parent. That yields the audit API's table:
/// a container → its service and stack; a service → its containers and
/// stack; a stack → its services and their containers; a node → its
/// cluster; a cluster → its nodes. (A container's node is in another
/// subsystem, `infra`, so a node's actions do not pull in its containers.)
async fn related_objects(state: &ApiState, caller: &Caller, uuid: Uuid) -> ApiResult<Vec<Uuid>> {
    let store = state.dispatcher.store();
    let Some(obj) = store.get_object(caller.scope(), uuid).await? else {
        return Ok(vec![uuid]);
    };
    let subsystem = parse_object_uri(&obj.resource_uri).map(|p| p.subsystem);
    let same = |uri: &str| parse_object_uri(uri).filter(|p| Some(&p.subsystem) == subsystem.as_ref());
    let mut ids = vec![obj.uuid];
    ids.extend(obj.parents.iter().filter_map(|p| same(p)).map(|p| p.uuid));
    // Only uuids and URIs (an object's attributes may be large), and at most
    // `[http] max_related` of them: more is a runaway hierarchy, refused.
    let max = state.limits.max_related;
    let children = store
        .object_refs(
            caller.scope(),
            &ObjectFilter {
                parent: Some(obj.resource_uri.clone()),
                include_deleted: true,
                ..Default::default()
            },
            max + 1,
        )
        .await?;
    if children.len() as i64 > max {
        return Err(ApiError::BadRequest(format!(
            "include_related: {} has more than {max} related objects; filter by one of them instead",
            obj.resource_uri
        )));
    }
    ids.extend(
        children
            .iter()
            .filter(|(_, uri)| same(uri).is_some())
            .map(|(uuid, _)| *uuid),
    );
    ids.sort();
    ids.dedup();
    Ok(ids)
}

async fn list(
    state: &ApiState,
    caller: &Caller,
    ns: Option<String>,
    path: &str,
    query: Option<&str>,
) -> ApiResult<Response> {
    let params = QueryParams::parse(query, LIST_PARAMS)?;
    let page = params.page()?;
    let mut filter = action_filter(state, caller, &params).await?;
    if let Some(ns) = ns {
        if !caller.namespaces.contains(&ns) {
            return Err(ApiError::NotFound(format!("namespace {ns} not found")));
        }
        filter.namespace = Some(ns);
    }
    filter.page_bytes = Some(state.limits.page_bytes);
    let found = state
        .dispatcher
        .store()
        .list_actions(caller.scope(), &filter, page.limit, page.offset)
        .await?;
    let total = found.total;
    let objects: Vec<ActionJson> = super::queue::wire(state, caller, &found.items).await?;
    Ok(Json(Envelope::new(path, &params, page, total, objects)).into_response())
}

/// Cancels an action: what it moves to is the lifecycle's rule
/// ([`lifecycle::cancel_target`]), decided under the action's locks.
async fn cancel(state: &ApiState, caller: &Caller, uuid: Uuid) -> ApiResult<Response> {
    let t = state.dispatcher.store().cancel(caller.scope(), uuid).await?;
    state.dispatcher.publish(&[&t]).await;
    Ok(with_action(
        StatusCode::ACCEPTED,
        &t.action,
        serde_json::to_value(t.action.to_wire())?,
    ))
}

/// Whether `old` can be retried ([`lifecycle::check_retry`]): `Ok` carries
/// the object the retry runs on; `Err` is the 409 that says why not.
async fn retry_target(state: &ApiState, caller: &Caller, old: &Action) -> ApiResult<Object> {
    let configured = state.ops.get(&old.object_type, &old.verb).is_some();
    let object = if old.state.can_be_retried() && configured {
        state
            .dispatcher
            .store()
            .get_object(caller.scope(), old.object_uuid)
            .await?
    } else {
        None
    };
    Ok(lifecycle::check_retry(old, configured, object.as_ref())?.clone())
}

/// One action's JSON, with `can_be_retried` answered by [`retry_target`]
/// (a list answers it from the state alone: one object lookup per row
/// would cost more than the flag is worth there).
async fn detail(state: &ApiState, caller: &Caller, action: &Action) -> ApiResult<ActionJson> {
    let mut json = super::queue::wire_one(state, caller, action).await?;
    if json.can_be_retried {
        json.can_be_retried = match retry_target(state, caller, action).await {
            Ok(_) => true,
            Err(ApiError::Conflict(_)) => false,
            Err(e) => return Err(e),
        };
    }
    Ok(json)
}

async fn retry(state: &ApiState, caller: &Caller, info: &RequestInfo, uuid: Uuid) -> ApiResult<Response> {
    let old = load(state, caller, uuid).await?;
    let object = retry_target(state, caller, &old).await?;
    let by = lifecycle::Requester {
        user: caller.user.clone(),
        ip: info.ip.clone(),
        location: info.location.clone(),
        user_agent: info.user_agent.clone(),
    };
    let submitted = state
        .submitter
        .submit(lifecycle::retry_of(&old, &object, &by))
        .await?;
    Ok(with_action(
        StatusCode::ACCEPTED,
        &submitted.action,
        serde_json::to_value(super::queue::wire_one(state, caller, &submitted.action).await?)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_paths_parse_with_and_without_namespace() {
        let u = Uuid::new_v4();
        assert_eq!(parse(&format!("action/{u}/")).unwrap(), AuditPath::Action(u));
        assert_eq!(parse(&format!("acme/action/{u}")).unwrap(), AuditPath::Action(u));
        assert_eq!(parse("action/").unwrap(), AuditPath::List(None));
        assert_eq!(
            parse("acme/action/").unwrap(),
            AuditPath::List(Some("acme".into()))
        );
        assert_eq!(
            parse(&format!("action/{u}/cancel/")).unwrap(),
            AuditPath::Cancel(u)
        );
        assert_eq!(
            parse(&format!("acme/action/{u}/retry")).unwrap(),
            AuditPath::Retry(u)
        );
        assert_eq!(parse("auth/").unwrap(), AuditPath::Auth);
        assert!(matches!(parse("action/nope/"), Err(ApiError::BadRequest(_))));
        assert!(matches!(parse("stuff/"), Err(ApiError::NotFound(_))));
        assert!(matches!(
            parse(&format!("action/{u}/explode/")),
            Err(ApiError::NotFound(_))
        ));
    }
}
