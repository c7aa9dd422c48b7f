//! `stevedore action ls|inspect|logs|cancel|retry`.

use super::config::ConnArgs;
use super::http::Api;
use super::output::{self, paint, relative_cell, state_color, Cell, Spinner};
use super::stream::{self, LogFrame, LogsEnd};
use super::Exit;
use anyhow::{anyhow, bail, Result};
use clap::{Args, Subcommand};
use reqwest::StatusCode;
use serde_json::Value;
use std::time::Duration;

/// The audit API's action collection.
pub const ACTIONS: &str = "/api/audit/v1/action/";

/// `stevedore action …`.
#[derive(Debug, Args)]
pub struct ActionArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    #[command(subcommand)]
    pub command: ActionCommand,
}

/// The action subcommands.
#[derive(Debug, Subcommand)]
pub enum ActionCommand {
    /// Lists actions, newest first.
    #[command(visible_alias = "list")]
    Ls(LsArgs),
    /// Prints actions as JSON.
    Inspect(InspectArgs),
    /// Prints an action's log lines; with --follow, waits for the end and
    /// exits with the action's final state (0 Success, 1 Failed, 2 Canceled).
    Logs(LogsArgs),
    /// Cancels a Pending or In progress action.
    Cancel(IdArgs),
    /// Runs a finished action's operation again; prints the new action's uuid.
    Retry(IdArgs),
}

/// `action ls` options.
#[derive(Debug, Args)]
pub struct LsArgs {
    /// Only actions in these states (repeat or separate with commas):
    /// Pending, "In progress", Canceling, Canceled, Success, Failed.
    #[arg(long, value_delimiter = ',')]
    pub state: Vec<String>,
    /// Only actions on this object (uuid or resource URI).
    #[arg(long)]
    pub object: Option<String>,
    /// With --object: also the actions of its parents and children.
    #[arg(long, requires = "object")]
    pub include_related: bool,
    /// Started at or after: a date (RFC 2822, ISO 8601, epoch seconds) or an
    /// age such as 10m, 2h, 3days.
    #[arg(long)]
    pub since: Option<String>,
    /// Started at or before: a date or an age, as for --since.
    #[arg(long)]
    pub until: Option<String>,
    /// At most this many actions (0: all).
    #[arg(short = 'n', long, default_value_t = 25)]
    pub limit: usize,
    /// Actions fetched per request [default: up to 100].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub page_size: Option<u64>,
    /// Print the actions as a JSON array.
    #[arg(long, conflicts_with = "quiet")]
    pub json: bool,
    /// Print only full uuids.
    #[arg(short, long)]
    pub quiet: bool,
}

/// `action inspect` options.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Action uuids or unambiguous uuid prefixes.
    #[arg(required = true)]
    pub ids: Vec<String>,
}

/// `action logs` options.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Action uuid or unambiguous uuid prefix.
    pub id: String,
    /// Print only the last N lines first [server default: 300].
    #[arg(short = 't', long)]
    pub tail: Option<u64>,
    /// Keep printing new lines until the action ends; exit with its final
    /// state: 0 Success, 1 Failed, 2 Canceled.
    #[arg(short, long)]
    pub follow: bool,
}

/// An action identifier.
#[derive(Debug, Args)]
pub struct IdArgs {
    /// Action uuid or unambiguous uuid prefix.
    pub id: String,
}

/// Runs an action subcommand.
pub async fn run(args: ActionArgs) -> Result<()> {
    let api = Api::new(&args.conn.resolve()?)?;
    match args.command {
        ActionCommand::Ls(a) => ls(&api, a).await,
        ActionCommand::Inspect(a) => inspect(&api, a).await,
        ActionCommand::Logs(a) => logs(&api, a).await,
        ActionCommand::Cancel(a) => cancel(&api, a).await,
        ActionCommand::Retry(a) => retry(&api, a).await,
    }
}

/// The path of one action.
pub fn action_path(uuid: &str) -> String {
    format!("{ACTIONS}{uuid}/")
}

fn str_field<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or_default()
}

/// The exit status for a final state: 0 Success, 1 Failed, 2 Canceled.
pub fn exit_code(state: &str) -> Option<u8> {
    match state {
        "Success" => Some(0),
        "Failed" => Some(1),
        "Canceled" => Some(2),
        _ => None,
    }
}

fn looks_like_prefix(id: &str) -> bool {
    !id.is_empty() && id.len() <= 36 && id.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
}

/// Finds the action `id` names: a full uuid, or a prefix that only one
/// action's uuid starts with.
pub async fn resolve(api: &Api, id: &str) -> Result<Value> {
    let id = id.trim();
    let no_match = || anyhow!("no action matches '{id}'");
    if uuid::Uuid::parse_str(id).is_ok() && id.len() == 36 {
        return match api.get(&action_path(&id.to_ascii_lowercase()), &[]).await {
            Ok(v) => Ok(v),
            Err(e) if e.status() == Some(StatusCode::NOT_FOUND) => Err(no_match()),
            Err(e) => Err(e.into()),
        };
    }
    if !looks_like_prefix(id) {
        return Err(no_match());
    }
    let query = [
        ("uuid__startswith", id.to_ascii_lowercase()),
        ("limit", "5".to_string()),
    ];
    let page = match api.get(ACTIONS, &query).await {
        Ok(v) => v,
        Err(e) if e.status() == Some(StatusCode::BAD_REQUEST) => return Err(no_match()),
        Err(e) => return Err(e.into()),
    };
    let objects = page["objects"].as_array().cloned().unwrap_or_default();
    match objects.len() {
        0 => Err(no_match()),
        1 => Ok(objects.into_iter().next().unwrap()),
        n => {
            let total = page["meta"]["total_count"].as_u64().unwrap_or(n as u64) as usize;
            let shown: Vec<&str> = objects.iter().map(|o| str_field(o, "uuid")).collect();
            let more = if total > n {
                format!(" and {} more", total - n)
            } else {
                String::new()
            };
            bail!("'{id}' is ambiguous: {}{more}", shown.join(", "))
        }
    }
}

/// Turns an age ("10m", "2h") into epoch seconds; anything else is passed on
/// for the server to parse.
fn date_filter(value: &str) -> String {
    match humantime::parse_duration(value.trim()) {
        Ok(age) => {
            let at = chrono::Utc::now() - chrono::Duration::from_std(age).unwrap_or_default();
            at.timestamp().to_string()
        }
        Err(_) => value.trim().to_string(),
    }
}

/// The list query for `ls` options (without paging).
fn list_query(a: &LsArgs) -> Vec<(&'static str, String)> {
    let mut q = vec![];
    for s in a.state.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        q.push(("state", s.to_string()));
    }
    if let Some(o) = &a.object {
        q.push(("object", o.trim().to_string()));
    }
    if a.include_related {
        q.push(("include_related", "true".to_string()));
    }
    if let Some(s) = &a.since {
        q.push(("start_date__gte", date_filter(s)));
    }
    if let Some(u) = &a.until {
        q.push(("start_date__lte", date_filter(u)));
    }
    q
}

/// `service/<uuid>` from an object URI (`/api/app/v1/<ns>/service/<uuid>/`).
pub fn target(object: &str) -> String {
    let segs: Vec<&str> = object
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    match segs.as_slice() {
        [.., kind, uuid] if segs.len() >= 4 => format!("{kind}/{uuid}"),
        _ => object.to_string(),
    }
}

/// An action's STATE cell: its state, and for a Pending action its place
/// in its object's queue (`Pending #2`; 1 = next to run).
fn state_text(a: &Value) -> String {
    let state = str_field(a, "state");
    match a.get("queue_position").and_then(Value::as_i64) {
        Some(n) if state == "Pending" => format!("{state} #{n}"),
        _ => state.to_string(),
    }
}

/// The `action ls` table.
pub fn render_table(actions: &[Value], now: chrono::DateTime<chrono::Utc>, colors: bool) -> String {
    let rows: Vec<Vec<Cell>> = actions
        .iter()
        .map(|a| {
            let uuid = str_field(a, "uuid");
            let state = str_field(a, "state");
            vec![
                Cell::plain(uuid.chars().take(8).collect::<String>()),
                Cell::plain(str_field(a, "action")),
                Cell::plain(relative_cell(a.get("start_date").and_then(Value::as_str), now)),
                Cell::plain(relative_cell(a.get("end_date").and_then(Value::as_str), now)),
                Cell::plain(target(str_field(a, "object"))),
                Cell::plain(str_field(a, "ip")),
                Cell::plain(str_field(a, "location")),
                Cell::colored(state_text(a), state_color(state)),
            ]
        })
        .collect();
    output::table(
        &[
            "UUID", "ACTION", "START", "END", "TARGET", "IP", "LOCATION", "STATE",
        ],
        &rows,
        colors,
    )
}

async fn ls(api: &Api, a: LsArgs) -> Result<()> {
    let page_size = a.page_size.unwrap_or(match a.limit {
        0 => 100,
        n => n.min(100) as u64,
    });
    let actions = api
        .all_pages(ACTIONS, &list_query(&a), a.limit, page_size)
        .await?;
    if a.quiet {
        for x in &actions {
            output::say(format_args!("{}", str_field(x, "uuid")));
        }
    } else if a.json {
        output::say(format_args!("{}", serde_json::to_string_pretty(&actions)?));
    } else {
        let table = render_table(&actions, chrono::Utc::now(), output::stdout_colors());
        output::say(table.trim_end_matches('\n'));
    }
    Ok(())
}

async fn inspect(api: &Api, a: InspectArgs) -> Result<()> {
    let mut failed = false;
    for id in &a.ids {
        match resolve(api, id).await {
            Ok(v) => output::say(serde_json::to_string_pretty(&v)?),
            Err(e) => {
                super::print_error(&e);
                failed = true;
            }
        }
    }
    if failed {
        return Err(Exit(super::ERROR_EXIT).into());
    }
    Ok(())
}

async fn logs(api: &Api, a: LogsArgs) -> Result<()> {
    let action = resolve(api, &a.id).await?;
    let uuid = str_field(&action, "uuid").to_string();
    if !a.follow {
        let printer = Spinner::none();
        let print = |f: LogFrame<'_>| {
            if let LogFrame::Line(l) = f {
                printer.println(l)
            }
        };
        match stream::logs(api, &uuid, a.tail, false, print).await? {
            LogsEnd::Closed => return Ok(()),
            LogsEnd::Dropped(why) => bail!("the log stream ended early: {why}"),
        }
    }
    // On a terminal, a status line with the progress bar under the lines.
    let label = format!("{} {}", str_field(&action, "action"), &uuid[..uuid.len().min(8)]);
    let printer = Spinner::start(&label);
    let code = follow(api, &uuid, a.tail, &printer).await;
    printer.finish();
    let code = code?;
    if code != 0 {
        return Err(Exit(code).into());
    }
    Ok(())
}

/// Prints an action's log lines and shows its progress until it finishes;
/// returns the exit status of its final state. If the socket drops first,
/// polls the action instead.
pub async fn follow(api: &Api, uuid: &str, tail: Option<u64>, printer: &Spinner) -> Result<u8> {
    let show = |f: LogFrame<'_>| match f {
        LogFrame::Line(l) => printer.println(l),
        LogFrame::Progress(percent, message) => printer.set_progress(percent, message),
    };
    let end = stream::logs(api, uuid, tail, true, show).await?;
    if let LogsEnd::Dropped(why) = &end {
        printer.println_err(&format!(
            "the log stream was interrupted ({why}); waiting for the action to finish"
        ));
    }
    let action = wait_final(api, uuid, printer).await?;
    let state = str_field(&action, "state");
    printer.finish();
    Ok(exit_code(state).expect("wait_final returns a final state"))
}

/// Polls an action until its state is final.
pub async fn wait_final(api: &Api, uuid: &str, printer: &Spinner) -> Result<Value> {
    let mut delay = Duration::from_millis(100);
    loop {
        let action = api.get(&action_path(uuid), &[]).await?;
        let state = str_field(&action, "state");
        if exit_code(state).is_some() {
            return Ok(action);
        }
        printer.set_message(&format!("{} {}", str_field(&action, "action"), state));
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

async fn cancel(api: &Api, a: IdArgs) -> Result<()> {
    let action = resolve(api, &a.id).await?;
    let uuid = str_field(&action, "uuid");
    let reply = api.post(&format!("{}cancel/", action_path(uuid)), None).await?;
    let state = str_field(&reply.json, "state");
    let colors = output::stdout_colors();
    output::say(format_args!(
        "{uuid} {}",
        paint(state, state_color(state), colors)
    ));
    Ok(())
}

async fn retry(api: &Api, a: IdArgs) -> Result<()> {
    let action = resolve(api, &a.id).await?;
    let uuid = str_field(&action, "uuid");
    let reply = api.post(&format!("{}retry/", action_path(uuid)), None).await?;
    let new = str_field(&reply.json, "uuid");
    if new.is_empty() {
        bail!("the server answered without the new action's uuid");
    }
    output::say(format_args!("{new}"));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn targets_are_the_type_and_uuid_of_the_object() {
        assert_eq!(
            target("/api/app/v1/acme/service/7eaf7fff-882c-4f3d-9a8f-a22317ac00ce/"),
            "service/7eaf7fff-882c-4f3d-9a8f-a22317ac00ce"
        );
        assert_eq!(target("/api/infra/v1/node/abc/"), "node/abc");
        assert_eq!(target(""), "");
    }

    #[test]
    fn exit_codes_follow_the_final_state() {
        assert_eq!(exit_code("Success"), Some(0));
        assert_eq!(exit_code("Failed"), Some(1));
        assert_eq!(exit_code("Canceled"), Some(2));
        assert_eq!(exit_code("Canceling"), None);
        assert_eq!(exit_code("In progress"), None);
    }

    #[test]
    fn the_table_has_the_original_columns_plus_state() {
        let now = chrono::Utc.with_ymd_and_hms(2014, 9, 17, 9, 26, 22).unwrap();
        let a = serde_json::json!({
            "uuid": "6246c558-976c-4df6-ba60-eb1a344a17af",
            "action": "Cluster Create",
            "start_date": "Wed, 17 Sep 2014 08:26:22 +0000",
            "end_date": null,
            "object": "/api/infra/v1/acme/nodecluster/eea638f4-b77a-4183-b241-22dbd7866f22/",
            "ip": "56.78.90.12",
            "location": "New York, USA",
            "state": "In progress",
        });
        let t = render_table(&[a], now, false);
        let lines: Vec<&str> = t.lines().collect();
        let cols: Vec<&str> = lines[0].split_whitespace().collect();
        assert_eq!(
            cols,
            ["UUID", "ACTION", "START", "END", "TARGET", "IP", "LOCATION", "STATE"]
        );
        assert!(
            lines[1].starts_with("6246c558  Cluster Create  an hour ago"),
            "{t}"
        );
        assert!(
            lines[1].contains(
                "nodecluster/eea638f4-b77a-4183-b241-22dbd7866f22  56.78.90.12  New York, USA  In progress"
            ),
            "{t}"
        );
    }

    #[test]
    fn a_pending_action_shows_its_queue_position_in_the_state_column() {
        let now = chrono::Utc::now();
        let pending = serde_json::json!({
            "uuid": "6246c558-976c-4df6-ba60-eb1a344a17af",
            "state": "Pending",
            "queue_position": 2,
            "waiting_for": "/api/audit/v1/action/7246c558-976c-4df6-ba60-eb1a344a17af/",
        });
        let t = render_table(&[pending], now, false);
        assert!(
            t.lines().nth(1).unwrap().trim_end().ends_with("Pending #2"),
            "{t}"
        );
        let unplaced = serde_json::json!({"uuid": "6246c558", "state": "Pending"});
        let t = render_table(&[unplaced], now, false);
        assert!(t.lines().nth(1).unwrap().trim_end().ends_with("Pending"), "{t}");
    }

    #[test]
    fn prefixes_are_hex_and_dashes() {
        assert!(looks_like_prefix("6246c5"));
        assert!(looks_like_prefix("6246C558-97"));
        assert!(!looks_like_prefix(""));
        assert!(!looks_like_prefix("web"));
        assert!(!looks_like_prefix(&"a".repeat(37)));
    }

    #[test]
    fn ages_become_epoch_seconds_and_dates_pass_through() {
        let now = chrono::Utc::now().timestamp();
        let t: i64 = date_filter("10m").parse().unwrap();
        assert!((now - 600 - t).abs() <= 2, "{t}");
        assert_eq!(date_filter("2026-01-01"), "2026-01-01");
        assert_eq!(date_filter(" 1700000000 "), "1700000000");
    }
}
