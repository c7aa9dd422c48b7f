//! The audit API: `/api/audit/v1/[<ns>/]action/…` and its Tutum v1 alias
//! `/api/v1/action/…`.

use super::{parse_uuid, segments};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::ApiState;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use uuid::Uuid;

/// What an audit path names.
#[derive(Debug, PartialEq, Eq)]
enum AuditPath {
    Auth,
    Action(Uuid),
}

fn parse(rest: &str) -> ApiResult<AuditPath> {
    let segs = segments(rest);
    // An optional namespace segment comes first: [ns,] "action", uuid.
    let segs: &[&str] = match segs.as_slice() {
        ["auth"] => return Ok(AuditPath::Auth),
        [_, "action", ..] => &segs[1..],
        s => s,
    };
    match segs {
        ["action", id] => Ok(AuditPath::Action(parse_uuid(id)?)),
        _ => Err(ApiError::NotFound(format!("no such resource: {rest}"))),
    }
}

/// `GET /api/audit/v1/…` and `GET /api/v1/…`.
pub async fn get(
    State(state): State<ApiState>,
    caller: Caller,
    Path(rest): Path<String>,
) -> ApiResult<Response> {
    match parse(&rest)? {
        AuditPath::Auth => Ok(super::probes::auth_probe(caller).await.into_response()),
        AuditPath::Action(uuid) => {
            let action = state
                .dispatcher
                .store()
                .get_action(caller.scope(), uuid)
                .await?
                .ok_or_else(|| ApiError::NotFound(format!("action {uuid} not found")))?;
            Ok(Json(action.to_wire()).into_response())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_paths_parse_with_and_without_namespace() {
        let u = Uuid::new_v4();
        assert_eq!(parse(&format!("action/{u}/")).unwrap(), AuditPath::Action(u));
        assert_eq!(parse(&format!("acme/action/{u}")).unwrap(), AuditPath::Action(u));
        assert_eq!(parse("auth/").unwrap(), AuditPath::Auth);
        assert!(matches!(parse("action/nope/"), Err(ApiError::BadRequest(_))));
        assert!(matches!(parse("stuff/"), Err(ApiError::NotFound(_))));
    }
}
