//! The one list of routes: the paths the routers mount and the OpenAPI
//! document served at `/openapi.json`, generated from the same constants
//! (and, for objects, from the configured object types and operations).
//!
//! The REST API is mounted on wildcards (`/api/audit/v1/{*rest}`, …) whose
//! handlers parse the tail; [`routes`] lists every concrete path those
//! handlers answer. A unit test checks that every mount is covered, and the
//! end-to-end tests request every documented path from a running server.

use serde_json::Value;
use stevedore_core::config::Operations;
use utoipa::openapi::path::{OperationBuilder, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, SchemaFormat, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, HttpMethod, InfoBuilder, OpenApiBuilder, PathItem, PathsBuilder,
    Required, ResponseBuilder, SecurityRequirement,
};

/// `GET /healthz`.
pub const HEALTHZ: &str = "/healthz";
/// `GET /readyz`.
pub const READYZ: &str = "/readyz";
/// `GET /metrics`.
pub const METRICS: &str = "/metrics";
/// `GET /openapi.json`.
pub const OPENAPI: &str = "/openapi.json";
/// The credential probe outside the API prefixes.
pub const AUTH_PROBES: &[&str] = &["/auth", "/auth/"];
/// `POST`: start a dashboard session (sets the session cookie).
pub const LOGIN: &str = "/api/v1/login";
/// `POST`: end it.
pub const LOGOUT: &str = "/api/v1/logout";
/// Prefixes of the audit API (and its Tutum v1 alias); mounted as `<prefix>/{*rest}`.
pub const AUDIT_PREFIXES: &[&str] = &["/api/audit/v1", "/api/v1"];
/// The websocket route of an action's logs (with and without the trailing slash).
pub const LOGS_WS: &[&str] = &[
    "/api/audit/v1/action/{uuid}/logs/",
    "/api/audit/v1/action/{uuid}/logs",
    "/v1/action/{uuid}/logs/",
    "/v1/action/{uuid}/logs",
];
/// The websocket route of an action's logs in a namespace.
pub const LOGS_WS_NS: &[&str] = &[
    "/api/audit/v1/{ns}/action/{uuid}/logs/",
    "/api/audit/v1/{ns}/action/{uuid}/logs",
];
/// The websocket route of the events stream.
pub const EVENTS_WS: &[&str] = &[
    "/api/audit/v1/events",
    "/api/audit/v1/events/",
    "/v1/events",
    "/v1/events/",
];
/// The websocket route of a namespace's events stream.
pub const EVENTS_WS_NS: &[&str] = &["/api/audit/v1/{ns}/events", "/api/audit/v1/{ns}/events/"];

/// The QNAP system log (with and without the trailing slash).
pub const QNAP_LOG: &[&str] = &["/api/v1/log", "/api/v1/log/"];
/// The QNAP system log as CSV.
pub const QNAP_LOG_EXPORT: &[&str] = &["/api/v1/log/export", "/api/v1/log/export/"];
/// QNAP event polling.
pub const QNAP_EVENT: &[&str] = &["/api/v1/event", "/api/v1/event/"];
/// QNAP long-poll until a state is reached.
pub const QNAP_WAIT: &[&str] = &[
    "/api/v1/event/wait/{kind}/{id}/{state}",
    "/api/v1/event/wait/{kind}/{id}/{state}/",
];

/// The workers registry (admins only; an extension of the Tutum API).
pub const WORKERS: &[&str] = &["/api/v1/worker/", "/api/v1/worker"];
/// Webhooks of the caller's namespaces: list (GET), create (POST).
pub const WEBHOOKS: &[&str] = &["/api/v1/webhook/", "/api/v1/webhook"];
/// One webhook: GET, PATCH, DELETE.
pub const WEBHOOK: &[&str] = &["/api/v1/webhook/{uuid}/", "/api/v1/webhook/{uuid}"];
/// A webhook's delivery log.
pub const WEBHOOK_DELIVERIES: &[&str] = &[
    "/api/v1/webhook/{uuid}/delivery/",
    "/api/v1/webhook/{uuid}/delivery",
];

/// The mount pattern of a REST prefix.
pub fn mount(prefix: &str) -> String {
    format!("{prefix}/{{*rest}}")
}

/// The subsystems objects are served under (`app`, `infra`, …), sorted.
pub fn subsystems(ops: &Operations) -> Vec<String> {
    let mut subs: Vec<String> = ops.types().all().iter().map(|t| t.subsystem.clone()).collect();
    subs.sort();
    subs.dedup();
    subs
}

/// What a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// `/healthz`, `/readyz`.
    Probes,
    /// `/metrics`, `/openapi.json`.
    Ops,
    /// The REST API: credential probes, actions, objects.
    Rest,
    /// The stream routes (websockets, or Server-Sent Events).
    Stream,
}

/// One documented route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// HTTP method (upper case).
    pub method: &'static str,
    /// OpenAPI path (`{name}` parameters, as axum writes them).
    pub path: String,
    /// Group.
    pub tag: &'static str,
    /// One line.
    pub summary: String,
    /// Whether credentials are required.
    pub auth: bool,
    /// Responses: status and description.
    pub responses: Vec<(u16, &'static str)>,
    /// Allowed values of a `{verb}` parameter.
    pub verbs: Vec<String>,
}

fn route(
    method: &'static str,
    path: impl Into<String>,
    tag: &'static str,
    summary: impl Into<String>,
) -> Route {
    Route {
        method,
        path: path.into(),
        tag,
        summary: summary.into(),
        auth: true,
        responses: vec![],
        verbs: vec![],
    }
}

impl Route {
    fn public(mut self) -> Self {
        self.auth = false;
        self
    }

    /// Adds responses; the two every route may give for its kind follow
    /// from one rule each: 429 wherever credentials are checked
    /// ([`crate::auth_limit`]), and 403 for changes and websocket
    /// handshakes from another origin ([`crate::origin`]).
    fn answers(mut self, r: &[(u16, &'static str)]) -> Self {
        self.responses.extend_from_slice(r);
        let mut implied = vec![];
        if r.contains(&UNAUTH) {
            implied.push(THROTTLED);
        }
        if self.method != "GET" || r.contains(&SWITCHING) {
            implied.push(CROSS_ORIGIN);
        }
        for i in implied {
            if !self.responses.iter().any(|(code, _)| *code == i.0) {
                self.responses.push(i);
            }
        }
        self.responses.sort_by_key(|(code, _)| *code);
        self
    }
}

const OK_JSON: (u16, &str) = (200, "OK (JSON)");
const ACCEPTED: (u16, &str) = (
    202,
    "Accepted: the action JSON; X-DockerCloud-Action-URI and X-Tutum-Action-URI name it",
);
const BAD: (u16, &str) = (400, "Malformed input");
const UNAUTH: (u16, &str) = (401, "Missing or wrong credentials");
const NOT_FOUND: (u16, &str) = (404, "Not found (or another tenant's)");
const CONFLICT: (u16, &str) = (409, "Not allowed in the current state");
const UNAVAILABLE: (u16, &str) = (503, "The database or the broker is unreachable");
const THROTTLED: (u16, &str) = (
    429,
    "Too many failed authentication attempts from this address or for this user; see Retry-After",
);
const CROSS_ORIGIN: (u16, &str) = (403, "Forbidden: a browser request from another origin");
const NOT_ADMIN: (u16, &str) = (403, "Forbidden: the caller is not an admin");
const SWITCHING: (u16, &str) = (101, "Switching Protocols: a websocket of JSON text frames");
const EVENT_STREAM: (u16, &str) = (
    200,
    "With Accept: text/event-stream: the same JSON frames as Server-Sent Events (id: the resume point)",
);
const NO_MORE_LINES: (u16, &str) = (
    204,
    "Event stream only: nothing to send and nothing will come (the action ended); do not reconnect",
);

/// Every route a listener serving `parts` answers, in a stable order.
pub fn routes(ops: &Operations, parts: &[Part]) -> Vec<Route> {
    let mut out = vec![];
    if parts.contains(&Part::Probes) {
        out.push(
            route("GET", HEALTHZ, "probes", "Liveness: the process serves")
                .public()
                .answers(&[OK_JSON]),
        );
        out.push(
            route(
                "GET",
                READYZ,
                "probes",
                "Readiness: the database and the broker answer",
            )
            .public()
            .answers(&[OK_JSON, UNAVAILABLE]),
        );
    }
    if parts.contains(&Part::Ops) {
        out.push(
            route("GET", METRICS, "ops", "Prometheus metrics (text format 0.0.4)")
                .public()
                .answers(&[(200, "Metrics in the Prometheus text format")]),
        );
        out.push(
            route("GET", OPENAPI, "ops", "This document")
                .public()
                .answers(&[(200, "The OpenAPI 3 document")]),
        );
    }
    if parts.contains(&Part::Rest) {
        for p in AUTH_PROBES {
            out.push(route("GET", *p, "auth", "Who am I").answers(&[OK_JSON, UNAUTH]));
        }
        out.push(
            route(
                "POST",
                LOGIN,
                "auth",
                "Log in with {\"user\", \"apikey\"} (JSON or form): starts a session and sets its HttpOnly cookie",
            )
            .public()
            .answers(&[OK_JSON, BAD, UNAUTH]),
        );
        out.push(
            route(
                "POST",
                LOGOUT,
                "auth",
                "End the session on the server and clear the cookie",
            )
            .public()
            .answers(&[(204, "Logged out")]),
        );
        for p in [
            crate::dashboard::INDEX,
            crate::dashboard::SCRIPT,
            crate::dashboard::STYLE,
            crate::dashboard::ICON,
        ] {
            out.push(
                route(
                    "GET",
                    p,
                    "dashboard",
                    "The web dashboard (embedded page, script, style, icon)",
                )
                .public()
                .answers(&[(200, "The asset"), (304, "Not modified (ETag)")]),
            );
        }
        for prefix in AUDIT_PREFIXES {
            out.push(route("GET", format!("{prefix}/auth/"), "auth", "Who am I").answers(&[OK_JSON, UNAUTH]));
            for ns in ["", "/{ns}"] {
                let base = format!("{prefix}{ns}/action");
                out.push(
                    route("GET", format!("{base}/"), "actions", "List actions, newest first")
                        .answers(&[OK_JSON, BAD, UNAUTH, NOT_FOUND]),
                );
                out.push(
                    route("GET", format!("{base}/{{uuid}}/"), "actions", "One action")
                        .answers(&[OK_JSON, BAD, UNAUTH, NOT_FOUND]),
                );
                out.push(
                    route(
                        "POST",
                        format!("{base}/{{uuid}}/cancel/"),
                        "actions",
                        "Cancel an action",
                    )
                    .answers(&[ACCEPTED, UNAUTH, NOT_FOUND, CONFLICT]),
                );
                out.push(
                    route(
                        "POST",
                        format!("{base}/{{uuid}}/retry/"),
                        "actions",
                        "Retry an ended action as a new one",
                    )
                    .answers(&[ACCEPTED, UNAUTH, NOT_FOUND, CONFLICT]),
                );
            }
        }
        let qnap = |paths: &[&str], summary: &str, answers: &[(u16, &'static str)], out: &mut Vec<Route>| {
            for p in paths {
                out.push(route("GET", *p, "qnap", summary).answers(answers));
            }
        };
        qnap(
            QNAP_LOG,
            "System log, newest first (time_start, time_end, limit, offset, user, level, category, text)",
            &[
                (200, "A JSON array of {category,id,level,message,ts,user}"),
                BAD,
                UNAUTH,
            ],
            &mut out,
        );
        qnap(
            QNAP_LOG_EXPORT,
            "System log as CSV (Date,Level,Category,User,Message), same filters",
            &[(200, "text/csv, streamed"), BAD, UNAUTH],
            &mut out,
        );
        qnap(
            QNAP_EVENT,
            "Events after ?index=N as category:user:json strings",
            &[(200, "{index, messages, offset}"), BAD, UNAUTH],
            &mut out,
        );
        qnap(
            QNAP_WAIT,
            "Long-poll until an action or object reaches a state (?duration=seconds)",
            &[OK_JSON, BAD, UNAUTH, NOT_FOUND],
            &mut out,
        );
        for p in WORKERS {
            out.push(
                route(
                    "GET",
                    *p,
                    "workers",
                    "Live workers (admins only): id, host, pid, version, started, concurrency, \
                     running_actions, last_heartbeat, expires; limit, offset",
                )
                .answers(&[OK_JSON, BAD, UNAUTH, NOT_ADMIN]),
            );
        }
        for t in ops.types().all() {
            let mut verbs: Vec<String> = ops
                .verbs(&t.name)
                .into_iter()
                .filter(|v| *v != "create")
                .map(String::from)
                .collect();
            verbs.sort();
            for ns in ["", "/{ns}"] {
                let base = format!("/api/{}/v1{ns}/{}", t.subsystem, t.name);
                let label = &t.label;
                out.push(
                    route(
                        "GET",
                        format!("{base}/"),
                        "objects",
                        format!("List {label} objects"),
                    )
                    .answers(&[OK_JSON, BAD, UNAUTH, NOT_FOUND]),
                );
                out.push(
                    route(
                        "POST",
                        format!("{base}/"),
                        "objects",
                        format!("Create a {label} (records \"{label} Create\")"),
                    )
                    .answers(&[
                        (201, "Created: the object; the action is recorded as Success"),
                        (202, "Accepted: the object; its Create action is dispatched"),
                        BAD,
                        UNAUTH,
                        NOT_FOUND,
                    ]),
                );
                out.push(
                    route(
                        "GET",
                        format!("{base}/{{uuid}}/"),
                        "objects",
                        format!("One {label}"),
                    )
                    .answers(&[OK_JSON, BAD, UNAUTH, NOT_FOUND]),
                );
                out.push(
                    route(
                        "PATCH",
                        format!("{base}/{{uuid}}/"),
                        "objects",
                        format!("Update a {label} (records \"{label} Update\")"),
                    )
                    .answers(&[OK_JSON, ACCEPTED, BAD, UNAUTH, NOT_FOUND, CONFLICT]),
                );
                out.push(
                    route(
                        "DELETE",
                        format!("{base}/{{uuid}}/"),
                        "objects",
                        format!("Terminate a {label} (records \"{label} Terminate\")"),
                    )
                    .answers(&[OK_JSON, ACCEPTED, UNAUTH, NOT_FOUND, CONFLICT]),
                );
                if !verbs.is_empty() {
                    let mut r = route(
                        "POST",
                        format!("{base}/{{uuid}}/{{verb}}/"),
                        "objects",
                        format!("Run an operation on a {label}: {}", verbs.join(", ")),
                    )
                    .answers(&[ACCEPTED, BAD, UNAUTH, NOT_FOUND, CONFLICT]);
                    r.verbs = verbs.clone();
                    out.push(r);
                }
            }
        }
    }
    if parts.contains(&Part::Rest) {
        webhook_routes(&mut out);
    }
    if parts.contains(&Part::Stream) {
        // Every stream route is a websocket, or with `Accept:
        // text/event-stream` the same frames as Server-Sent Events.
        let stream = |paths: &[&str], summary: &str, extra: &[(u16, &'static str)], out: &mut Vec<Route>| {
            for p in paths {
                let answers = [&[SWITCHING, EVENT_STREAM, BAD, UNAUTH, NOT_FOUND][..], extra].concat();
                out.push(route("GET", *p, "stream", summary).answers(&answers));
            }
        };
        stream(
            LOGS_WS,
            "Websocket or event stream: an action's log lines (tail, then follow; Last-Event-ID resumes)",
            &[NO_MORE_LINES],
            &mut out,
        );
        stream(
            LOGS_WS_NS,
            "Websocket or event stream: an action's log lines, in a namespace",
            &[NO_MORE_LINES],
            &mut out,
        );
        stream(
            EVENTS_WS,
            "Websocket or event stream: events of the caller's namespaces (?since=<seq> or Last-Event-ID)",
            &[],
            &mut out,
        );
        stream(
            EVENTS_WS_NS,
            "Websocket or event stream: events of one namespace (?since=<seq> or Last-Event-ID)",
            &[],
            &mut out,
        );
    }
    out
}

/// The webhooks API (an extension of the Docker Cloud API).
fn webhook_routes(out: &mut Vec<Route>) {
    for p in WEBHOOKS {
        out.push(
            route("GET", *p, "webhooks", "List webhooks, oldest first").answers(&[OK_JSON, BAD, UNAUTH]),
        );
        out.push(
            route(
                "POST",
                *p,
                "webhooks",
                "Create a webhook {url, states, object_type?, action?, namespace?}",
            )
            .answers(&[
                (
                    201,
                    "Created: the webhook with its signing secret (shown only here)",
                ),
                BAD,
                UNAUTH,
                NOT_FOUND,
            ]),
        );
    }
    for p in WEBHOOK {
        out.push(route("GET", *p, "webhooks", "One webhook").answers(&[OK_JSON, BAD, UNAUTH, NOT_FOUND]));
        out.push(
            route(
                "PATCH",
                *p,
                "webhooks",
                "Change a webhook's url, states or filters",
            )
            .answers(&[OK_JSON, BAD, UNAUTH, NOT_FOUND]),
        );
        out.push(
            route("DELETE", *p, "webhooks", "Delete a webhook and its delivery log").answers(&[
                (204, "Deleted"),
                BAD,
                UNAUTH,
                NOT_FOUND,
            ]),
        );
    }
    for p in WEBHOOK_DELIVERIES {
        out.push(
            route("GET", *p, "webhooks", "A webhook's deliveries, newest first")
                .answers(&[OK_JSON, BAD, UNAUTH, NOT_FOUND]),
        );
    }
}

fn string_schema(format: Option<&str>) -> ObjectBuilder {
    let b = ObjectBuilder::new().schema_type(Type::String);
    match format {
        Some(f) => b.format(Some(SchemaFormat::Custom(f.into()))),
        None => b,
    }
}

fn operation_id(method: &str, path: &str) -> String {
    let mut id = method.to_lowercase();
    let mut last_us = false;
    for c in path.chars() {
        if c.is_ascii_alphanumeric() {
            id.push(c);
            last_us = false;
        } else if !last_us {
            id.push('_');
            last_us = true;
        }
    }
    // "…/logs" and "…/logs/" are distinct routes.
    if path.ends_with('/') {
        id.push_str("slash");
    }
    id.trim_end_matches('_').to_string()
}

/// The OpenAPI 3 document of a listener serving `parts`.
pub fn document(ops: &Operations, parts: &[Part]) -> Value {
    let mut paths = PathsBuilder::new();
    for r in routes(ops, parts) {
        let method = match r.method {
            "GET" => HttpMethod::Get,
            "POST" => HttpMethod::Post,
            "PATCH" => HttpMethod::Patch,
            "DELETE" => HttpMethod::Delete,
            "PUT" => HttpMethod::Put,
            other => unreachable!("undocumented method {other}"),
        };
        let mut op = OperationBuilder::new()
            .tag(r.tag)
            .summary(Some(r.summary.clone()))
            .operation_id(Some(operation_id(r.method, &r.path)));
        for name in path_params(&r.path) {
            let (description, schema) = match name.as_str() {
                "uuid" => ("Object, action or webhook uuid", string_schema(Some("uuid"))),
                "ns" => ("Namespace (a user or organisation name)", string_schema(None)),
                "verb" => (
                    "A configured operation",
                    string_schema(None).enum_values(Some(r.verbs.clone())),
                ),
                _ => ("", string_schema(None)),
            };
            op = op.parameter(
                ParameterBuilder::new()
                    .name(name)
                    .parameter_in(ParameterIn::Path)
                    .required(Required::True)
                    .description(Some(description))
                    .schema(Some(schema)),
            );
        }
        for (code, description) in &r.responses {
            let mut resp = ResponseBuilder::new().description(*description);
            if *code == 200 && r.path == METRICS {
                resp = resp.content("text/plain; version=0.0.4", ContentBuilder::new().build());
            } else if *code != 101 {
                resp = resp.content("application/json", ContentBuilder::new().build());
            }
            op = op.response(code.to_string(), resp.build());
        }
        if r.auth {
            op = op
                .security(SecurityRequirement::new("basic", Vec::<String>::new()))
                .security(SecurityRequirement::new("apikey", Vec::<String>::new()));
        }
        paths = paths.path(r.path.clone(), PathItem::new(method, op.build()));
    }
    let components = ComponentsBuilder::new()
        .security_scheme("basic", SecurityScheme::Http(Http::new(HttpAuthScheme::Basic)))
        .security_scheme(
            "apikey",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "Authorization",
                "ApiKey <user>:<key>",
            ))),
        )
        .build();
    let doc = OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("Stevedore")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "Message-queue-backed job orchestrator with a Docker Cloud / Tutum compatible Actions API",
                ))
                .build(),
        )
        .paths(paths.build())
        .components(Some(components))
        .build();
    serde_json::to_value(&doc).unwrap_or(Value::Null)
}

/// The `{name}` parameters of a path, in order.
pub fn path_params(path: &str) -> Vec<String> {
    path.split('/')
        .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(String::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use stevedore_core::config::{FileConfig, EXAMPLE_CONFIG};

    fn ops() -> Operations {
        FileConfig::parse(EXAMPLE_CONFIG).unwrap().operations().unwrap()
    }

    const ALL: &[Part] = &[Part::Probes, Part::Ops, Part::Rest, Part::Stream];

    /// Every pattern the routers mount is documented: the explicit paths
    /// literally, each wildcard mount by at least one path under it.
    #[test]
    fn every_mount_is_documented() {
        let ops = ops();
        let docs = routes(&ops, ALL);
        let has = |p: &str| docs.iter().any(|r| r.path == p);
        for p in [HEALTHZ, READYZ, METRICS, OPENAPI]
            .iter()
            .chain(AUTH_PROBES)
            .chain(&[LOGIN, LOGOUT])
            .chain(&[
                crate::dashboard::INDEX,
                crate::dashboard::SCRIPT,
                crate::dashboard::STYLE,
                crate::dashboard::ICON,
            ])
            .chain(LOGS_WS)
            .chain(LOGS_WS_NS)
            .chain(EVENTS_WS)
            .chain(EVENTS_WS_NS)
            .chain(QNAP_LOG)
            .chain(QNAP_LOG_EXPORT)
            .chain(QNAP_EVENT)
            .chain(QNAP_WAIT)
            .chain(WORKERS)
        {
            assert!(has(p), "{p} is mounted but not documented");
        }
        let mut prefixes: Vec<String> = AUDIT_PREFIXES.iter().map(|s| s.to_string()).collect();
        prefixes.extend(subsystems(&ops).iter().map(|s| format!("/api/{s}/v1")));
        for prefix in prefixes {
            assert!(
                docs.iter().any(|r| r.path.starts_with(&format!("{prefix}/"))),
                "{} is mounted but nothing under it is documented",
                mount(&prefix)
            );
        }
        for t in ops.types().all() {
            assert!(has(&format!("/api/{}/v1/{}/{{uuid}}/", t.subsystem, t.name)));
        }
    }

    #[test]
    fn webhook_routes_are_documented() {
        let docs = routes(&ops(), ALL);
        for p in WEBHOOKS.iter().chain(WEBHOOK).chain(WEBHOOK_DELIVERIES) {
            assert!(
                docs.iter().any(|r| r.path == *p),
                "{p} is mounted but not documented"
            );
        }
    }

    #[test]
    fn the_document_is_openapi_3_with_unique_operation_ids() {
        let doc = document(&ops(), ALL);
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        let mut ids = std::collections::HashSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let id = op["operationId"].as_str().unwrap().to_string();
                assert!(ids.insert(id.clone()), "duplicate {id} ({method} {path})");
                let params: Vec<&str> = op["parameters"]
                    .as_array()
                    .map(|a| a.iter().map(|p| p["name"].as_str().unwrap()).collect())
                    .unwrap_or_default();
                assert_eq!(params, path_params(path), "{method} {path}");
            }
        }
        let ws = &doc["paths"]["/v1/events"]["get"]["responses"];
        assert!(ws.get("101").is_some(), "{ws}");
    }

    #[test]
    fn throttling_and_cross_origin_refusals_are_documented_where_they_happen() {
        for r in routes(&ops(), ALL) {
            let codes: Vec<u16> = r.responses.iter().map(|(c, _)| *c).collect();
            let checks_credentials = codes.contains(&401);
            assert_eq!(
                codes.contains(&429),
                checks_credentials,
                "{} {}",
                r.method,
                r.path
            );
            let guarded = r.method != "GET" || codes.contains(&101);
            let admins_only = WORKERS.contains(&r.path.as_str());
            assert_eq!(
                codes.contains(&403),
                guarded || admins_only,
                "{} {}",
                r.method,
                r.path
            );
        }
    }
}
