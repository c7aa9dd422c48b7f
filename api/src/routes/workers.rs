//! `GET /api/v1/worker/`: the live workers of the registry
//! ([`stevedore_core::workers`]) in the Tastypie envelope, oldest first.
//! An extension of the Tutum API for operators: it names actions of every
//! tenant, so only admins may read it (403 for anyone else).

use crate::auth::Caller;
use crate::error::ApiResult;
use crate::listing::{Envelope, QueryParams};
use crate::ApiState;
use axum::extract::{RawQuery, State};
use axum::http::Uri;
use axum::response::{IntoResponse, Response};
use axum::Json;
use stevedore_core::workers::WorkerJson;

/// Query parameters the list understands.
const LIST_PARAMS: &[&str] = &["limit", "offset"];

/// `GET /api/v1/worker/`.
pub async fn list(
    State(state): State<ApiState>,
    caller: Caller,
    uri: Uri,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    caller.require_admin()?;
    let params = QueryParams::parse(query.as_deref(), LIST_PARAMS)?;
    let page = params.page()?;
    let found = state
        .dispatcher
        .store()
        .live_workers(page.limit, page.offset)
        .await?;
    let objects: Vec<WorkerJson> = found.items.iter().map(|w| w.to_wire()).collect();
    Ok(Json(Envelope::new(uri.path(), &params, page, found.total, objects)).into_response())
}
