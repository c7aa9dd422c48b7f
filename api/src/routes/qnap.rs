//! The QNAP Container Station log and event API, over Stevedore's data:
//!
//! - `GET /api/v1/log`: the system log, newest first, as a JSON array.
//! - `GET /api/v1/log/export`: the same as CSV `Date,Level,Category,User,Message`,
//!   streamed page by page, quoted, and safe from formula injection.
//! - `GET /api/v1/event?index=N`: events after `N` as `category:user:json`
//!   strings; polling with the returned `index` never misses or repeats one.
//! - `GET /api/v1/event/wait/<type>/<id>/<state>?duration=S`: long-poll until
//!   the action or object reaches a state; woken by the update fan-out, so
//!   waiters cost the database nothing while they wait.

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::input::{integer, MAX_OFFSET};
use crate::listing::QueryParams;
use crate::routes::objects::object_json;
use crate::routes::parse_uuid;
use crate::stream::{Delivery, Next};
use crate::ApiState;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use std::ops::RangeInclusive;
use std::time::Duration;
use stevedore_core::dates;
use stevedore_core::store::{EventPoll, PolledEvent, Scope};
use stevedore_core::syslog::{LogLevel, SystemLogEntry, SystemLogFilter};
use uuid::Uuid;

/// `/api/v1/log` page size when none is given (the QNAP default).
const DEFAULT_LOG_LIMIT: i64 = 20;
/// Largest `/api/v1/log` page.
const MAX_LOG_LIMIT: i64 = 1000;
/// Rows read from the store per CSV chunk.
const EXPORT_PAGE: i64 = 1000;
/// Events `/api/v1/event` returns without an index (the QNAP default).
const LATEST_EVENTS: i64 = 20;
/// Events returned per poll at most.
const MAX_EVENTS: i64 = 500;
/// Default and largest long-poll duration: a waiter holds a connection, so it
/// is bounded well under common proxy timeouts.
const DEFAULT_WAIT: Duration = Duration::from_secs(60);
const MAX_WAIT: Duration = Duration::from_secs(300);

const LOG_PARAMS: &[&str] = &[
    "time_start",
    "time_end",
    "limit",
    "offset",
    "user",
    "level",
    "category",
    "text",
];

/// An integer parameter within `range`; empty means absent (QNAP clients send `key=`).
fn int_param(params: &QueryParams, key: &str, range: RangeInclusive<i64>) -> ApiResult<Option<i64>> {
    match params.one(key)? {
        None | Some("") => Ok(None),
        Some(v) => integer(key, v, range).map(Some),
    }
}

fn log_filter(params: &QueryParams) -> ApiResult<SystemLogFilter> {
    // Epoch seconds up to the last instant both stores hold; the QNAP API
    // documents 0 as the default: no bound.
    let epoch = |key: &str| -> ApiResult<Option<i64>> {
        Ok(int_param(params, key, 0..=dates::MAX_EPOCH_SECONDS)?.filter(|&n| n != 0))
    };
    let text = |key: &str| -> ApiResult<Option<String>> {
        Ok(params.one(key)?.filter(|v| !v.is_empty()).map(str::to_string))
    };
    let level =
        match params.one("level")? {
            None | Some("") => None,
            Some(l) => Some(LogLevel::parse(l).ok_or_else(|| {
                ApiError::BadRequest(format!("level must be INFO, WARN or ERROR, not {l:?}"))
            })?),
        };
    let (time_start, time_end) = (epoch("time_start")?, epoch("time_end")?);
    if let (Some(a), Some(b)) = (time_start, time_end) {
        if a > b {
            return Err(ApiError::BadRequest("time_start is after time_end".into()));
        }
    }
    Ok(SystemLogFilter {
        time_start,
        time_end,
        user: text("user")?,
        level,
        category: text("category")?,
        text: text("text")?,
        before_id: None,
    })
}

/// `GET /api/v1/log`.
pub async fn log(
    State(state): State<ApiState>,
    caller: Caller,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let params = QueryParams::parse(q.as_deref(), LOG_PARAMS)?;
    let filter = log_filter(&params)?;
    let limit =
        int_param(&params, "limit", 1..=i64::MAX)?.map_or(DEFAULT_LOG_LIMIT, |n| n.min(MAX_LOG_LIMIT));
    let offset = int_param(&params, "offset", 0..=MAX_OFFSET)?.unwrap_or(0);
    let entries = state
        .dispatcher
        .store()
        .system_log(caller.scope(), &filter, limit, offset)
        .await?;
    Ok(Json(entries).into_response())
}

/// `GET /api/v1/log/export`: streamed CSV. Pages are read by id (keyset), so
/// memory stays flat whatever the size of the log.
pub async fn export(
    State(state): State<ApiState>,
    caller: Caller,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let params = QueryParams::parse(q.as_deref(), LOG_PARAMS)?;
    let filter = log_filter(&params)?;
    let store = state.dispatcher.store().clone();
    let namespaces = caller.namespaces.clone();
    let header_row = futures::stream::once(async {
        Ok::<_, std::io::Error>(b"Date,Level,Category,User,Message\n".to_vec())
    });
    let rows = futures::stream::unfold(Some(filter), move |cursor| {
        let (store, namespaces) = (store.clone(), namespaces.clone());
        async move {
            let filter = cursor?;
            match store
                .system_log(Scope::Namespaces(&namespaces), &filter, EXPORT_PAGE, 0)
                .await
            {
                Ok(page) if page.is_empty() => None,
                Ok(page) => {
                    let mut chunk = Vec::with_capacity(page.len() * 96);
                    for e in &page {
                        chunk.extend_from_slice(csv_row(e).as_bytes());
                    }
                    let next = page.last().map(|last| SystemLogFilter {
                        before_id: Some(last.id),
                        ..filter
                    });
                    Some((Ok(chunk), next))
                }
                Err(e) => {
                    tracing::warn!(error = %e, "log export stopped");
                    Some((Err(std::io::Error::other("log export failed")), None))
                }
            }
        }
    });
    let body = Body::from_stream(futures::StreamExt::chain(header_row, rows));
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"stevedore-log.csv\"",
            ),
        ],
        body,
    )
        .into_response())
}

/// One CSV line: `2015-03-17 17:27:06.452144,INFO,container,Anonymous,"…"`.
pub fn csv_row(e: &SystemLogEntry) -> String {
    let date = chrono::DateTime::from_timestamp_micros(e.ts_micros)
        .map(|d| d.format("%Y-%m-%d %H:%M:%S%.6f").to_string())
        .unwrap_or_default();
    [date.as_str(), e.level.as_str(), &e.category, &e.user, &e.message]
        .iter()
        .map(|c| csv_cell(c))
        .collect::<Vec<_>>()
        .join(",")
        + "\n"
}

/// A cell, quoted when it must be, and neutralised when a spreadsheet would
/// read it as a formula (`=`, `+`, `-`, `@`, tab or CR first): such a cell
/// gets a leading `'` (OWASP's advice for CSV injection).
pub fn csv_cell(raw: &str) -> String {
    let mut v = String::with_capacity(raw.len() + 2);
    if raw.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        v.push('\'');
    }
    v.push_str(raw);
    if v.contains([',', '"', '\n', '\r']) || v.starts_with(' ') || v.ends_with(' ') {
        format!("\"{}\"", v.replace('"', "\"\""))
    } else {
        v
    }
}

/// `category:user:json` for an event. The user is the action's requester for
/// action events; object events are for everyone in the namespace (`all`).
fn message(p: &PolledEvent) -> String {
    let e = &p.event;
    let user = match (&p.user, e.object_type.as_str()) {
        (Some(user), "action") => user.as_str(),
        _ => "all",
    };
    format!(
        "{}:{}:{}",
        e.object_type,
        user,
        serde_json::to_string(e).unwrap_or_default()
    )
}

/// `GET /api/v1/event[?index=N]`: events after `index` (oldest first, at most
/// 500), or the latest 20 without one. `index` in the answer is the sequence
/// number to poll from next; `offset` the newest sequence number stored. The
/// PostgreSQL store numbers events in commit order (ARCHITECTURE.md), so a
/// poll from the returned index never skips an event that commits late.
///
/// A poll costs two statements whatever the numbers: the newest sequence
/// number, and the events with their actions' requesters
/// ([`Store::poll_events`](stevedore_core::store::Store::poll_events)).
pub async fn events(
    State(state): State<ApiState>,
    caller: Caller,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let params = QueryParams::parse(q.as_deref(), &["index", "offset"])?;
    let (poll, limit) = match int_param(&params, "index", 0..=i64::MAX)? {
        Some(n) => (EventPoll::After(n), MAX_EVENTS),
        None => (EventPoll::Latest, LATEST_EVENTS),
    };
    let store = state.dispatcher.store();
    let newest = store.last_event_seq().await?;
    let list = store.poll_events(caller.scope(), poll, limit).await?;
    let index = list.last().map(|p| p.event.seq).unwrap_or(match poll {
        EventPoll::After(n) => n,
        EventPoll::Latest => newest,
    });
    let messages: Vec<String> = list.iter().map(message).collect();
    Ok(Json(json!({ "index": index, "messages": messages, "offset": newest })).into_response())
}

/// `GET /api/v1/event/wait/<type>/<id>/<state>?duration=S` (`type`: `action`
/// or an object type; `state` compared case-insensitively): the object as
/// soon as it is in `state`, or as it is when `duration` (default 60 s, at
/// most 300 s) runs out.
pub async fn wait(
    State(state): State<ApiState>,
    caller: Caller,
    Path((kind, id, want)): Path<(String, String, String)>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let params = QueryParams::parse(q.as_deref(), &["duration"])?;
    let duration = match params.one("duration")? {
        None | Some("") => DEFAULT_WAIT,
        Some(d) => wait_duration(d)?,
    };
    let uuid = parse_uuid(&id)?;
    // Events carry the canonical (lowercase) spelling, whatever the path's was.
    let id = uuid.to_string();
    if kind != "action" && state.ops.types().by_name(&kind).is_none() {
        return Err(ApiError::NotFound(format!("unknown type {kind:?}")));
    }
    // Held until the answer: a user may hold `[http] max_waits_per_user`.
    let _slot = state.waits.acquire(&caller.user)?;
    // Subscribe first, then read: a change between the two is not missed.
    let mut sub = state.hub.subscribe_events(&caller.namespaces);
    let deadline = tokio::time::Instant::now() + duration;
    loop {
        let (current, reached) = snapshot(&state, &caller, &kind, uuid, &want).await?;
        if reached {
            return Ok(Json(current).into_response());
        }
        // Wait for an event on this object (or a gap), then look again.
        loop {
            match tokio::time::timeout_at(deadline, sub.next()).await {
                Err(_) => {
                    let (current, _) = snapshot(&state, &caller, &kind, uuid, &want).await?;
                    return Ok(Json(current).into_response());
                }
                Ok(Next::Overflowed) => {
                    sub = state.hub.subscribe_events(&caller.namespaces);
                    break;
                }
                Ok(Next::Delivery(Delivery::Event(e))) if e.event.uuid == id => break,
                Ok(Next::Delivery(Delivery::Gap)) => break,
                Ok(Next::Delivery(_)) => {}
            }
        }
    }
}

/// A `duration` in seconds (fractions allowed), capped at [`MAX_WAIT`]
/// before it becomes a `Duration` (which cannot hold every `f64`).
fn wait_duration(raw: &str) -> ApiResult<Duration> {
    let secs: f64 = raw
        .trim()
        .parse()
        .ok()
        .filter(|s: &f64| s.is_finite() && *s >= 0.0)
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "duration must be a non-negative number of seconds, not {raw:?}"
            ))
        })?;
    Ok(Duration::from_secs_f64(secs.min(MAX_WAIT.as_secs_f64())))
}

/// The object's JSON and whether it is in `want`.
async fn snapshot(
    state: &ApiState,
    caller: &Caller,
    kind: &str,
    uuid: Uuid,
    want: &str,
) -> ApiResult<(Value, bool)> {
    let store = state.dispatcher.store();
    if kind == "action" {
        let a = store
            .get_action(caller.scope(), uuid)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("action {uuid} not found")))?;
        let reached = a.state.as_str().eq_ignore_ascii_case(want.trim());
        let json = super::queue::wire_one(state, caller, &a).await?;
        Ok((serde_json::to_value(json)?, reached))
    } else {
        let o = store
            .get_object(caller.scope(), uuid)
            .await?
            .filter(|o| o.object_type == kind)
            .ok_or_else(|| ApiError::NotFound(format!("{kind} {uuid} not found")))?;
        let reached = o.state.eq_ignore_ascii_case(want.trim());
        Ok((object_json(&o), reached))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_cells_are_quoted_and_defused() {
        assert_eq!(csv_cell("plain"), "plain");
        assert_eq!(csv_cell("a,b"), "\"a,b\"");
        assert_eq!(csv_cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_cell("two\nlines"), "\"two\nlines\"");
        assert_eq!(csv_cell("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(csv_cell("+1"), "'+1");
        assert_eq!(csv_cell("-2+3"), "'-2+3");
        assert_eq!(csv_cell("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(csv_cell("\tx"), "'\tx");
        assert_eq!(csv_cell(" padded "), "\" padded \"");
    }

    #[test]
    fn wait_durations_are_capped_before_conversion() {
        assert_eq!(wait_duration("1.5").unwrap(), Duration::from_millis(1500));
        for huge in ["1e20", "1e308", "18446744073709551616"] {
            assert_eq!(wait_duration(huge).unwrap(), MAX_WAIT, "{huge}");
        }
        for bad in ["-1", "NaN", "inf", "-inf", "x", "1e400"] {
            let e = wait_duration(bad).unwrap_err().to_string();
            assert!(e.starts_with("duration"), "{bad}: {e}");
        }
    }

    #[test]
    fn rows_have_the_qnap_date_format() {
        let e = SystemLogEntry {
            category: "action".into(),
            id: 1,
            level: LogLevel::Info,
            message: "Service Start: Success".into(),
            ts: 1_426_613_226,
            user: "ann".into(),
            ts_micros: 1_426_613_226_452_144,
        };
        assert_eq!(
            csv_row(&e),
            "2015-03-17 17:27:06.452144,INFO,action,ann,Service Start: Success\n"
        );
    }
}
