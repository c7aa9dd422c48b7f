//! `stevedore webhook add|ls|rm|deliveries`: the webhooks API
//! (`/api/v1/webhook/…`).

use super::config::ConnArgs;
use super::http::Api;
use super::output::{self, Cell, Color};
use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{json, Value};

const WEBHOOKS: &str = "/api/v1/webhook/";

/// `stevedore webhook …`.
#[derive(Debug, Args)]
pub struct WebhookArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    #[command(subcommand)]
    pub command: WebhookCommand,
}

/// The webhook subcommands.
#[derive(Debug, Subcommand)]
pub enum WebhookCommand {
    /// Adds a webhook and prints its signing secret (shown only once).
    Add(AddArgs),
    /// Lists the webhooks of your namespaces.
    #[command(visible_alias = "list")]
    Ls(LsArgs),
    /// Removes a webhook and its delivery log.
    Rm(RmArgs),
    /// Shows a webhook's deliveries, newest first.
    Deliveries(DeliveriesArgs),
}

/// `webhook add` options.
#[derive(Debug, Args)]
pub struct AddArgs {
    /// The URL to POST to (http:// or https://). (Not `url`: that name is
    /// the global --url of the server to talk to.)
    #[arg(value_name = "URL")]
    pub target: String,
    /// Action states that trigger a delivery, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "Success,Failed")]
    pub states: Vec<String>,
    /// Only actions on objects of this type (service, node, …).
    #[arg(long = "type", value_name = "OBJECT_TYPE")]
    pub object_type: Option<String>,
    /// Only actions of this verb (start, create, …).
    #[arg(long)]
    pub action: Option<String>,
    /// The namespace (an organisation you belong to; default: your own).
    #[arg(long)]
    pub namespace: Option<String>,
    /// Print the webhook's JSON.
    #[arg(long)]
    pub json: bool,
}

/// `webhook ls` options.
#[derive(Debug, Args)]
pub struct LsArgs {
    /// Print the list as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `webhook rm` options.
#[derive(Debug, Args)]
pub struct RmArgs {
    /// The webhook's uuid.
    pub uuid: String,
}

/// `webhook deliveries` options.
#[derive(Debug, Args)]
pub struct DeliveriesArgs {
    /// The webhook's uuid.
    pub uuid: String,
    /// At most this many deliveries.
    #[arg(short = 'n', long, default_value_t = 20)]
    pub limit: u64,
    /// Print the deliveries as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs a webhook subcommand.
pub async fn run(args: WebhookArgs) -> Result<()> {
    let api = Api::new(&args.conn.resolve()?)?;
    match args.command {
        WebhookCommand::Add(a) => add(&api, a).await,
        WebhookCommand::Ls(a) => ls(&api, a).await,
        WebhookCommand::Rm(a) => rm(&api, a).await,
        WebhookCommand::Deliveries(a) => deliveries(&api, a).await,
    }
}

/// A path segment that must be a uuid (so nothing else reaches the URL).
fn uuid_segment(s: &str) -> Result<String> {
    match uuid::Uuid::parse_str(s) {
        Ok(u) => Ok(u.to_string()),
        Err(_) => bail!("{s:?} is not a webhook uuid"),
    }
}

async fn add(api: &Api, a: AddArgs) -> Result<()> {
    let mut body = json!({"url": a.target, "states": a.states});
    for (k, v) in [
        ("object_type", a.object_type),
        ("action", a.action),
        ("namespace", a.namespace),
    ] {
        if let Some(v) = v {
            body[k] = Value::String(v);
        }
    }
    let hook = api.post(WEBHOOKS, Some(body.to_string())).await?.json;
    if a.json {
        output::say(serde_json::to_string_pretty(&hook)?);
        return Ok(());
    }
    output::say(format_args!(
        "Added webhook {} for {}",
        hook["uuid"].as_str().unwrap_or_default(),
        hook["url"].as_str().unwrap_or_default()
    ));
    output::say(format_args!(
        "Signing secret (shown only now): {}",
        hook["secret"].as_str().unwrap_or_default()
    ));
    Ok(())
}

fn filters(h: &Value) -> String {
    let mut parts = vec![];
    if let Some(t) = h["object_type"].as_str() {
        parts.push(format!("type={t}"));
    }
    if let Some(a) = h["action"].as_str() {
        parts.push(format!("action={a}"));
    }
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(" ")
    }
}

async fn ls(api: &Api, a: LsArgs) -> Result<()> {
    let body = api.get(WEBHOOKS, &[("limit", "0".into())]).await?;
    let hooks = body["objects"].as_array().cloned().unwrap_or_default();
    if a.json {
        output::say(serde_json::to_string_pretty(&hooks)?);
        return Ok(());
    }
    let rows: Vec<Vec<Cell>> = hooks
        .iter()
        .map(|h| {
            let states: Vec<&str> = h["states"]
                .as_array()
                .map(|s| s.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            vec![
                Cell::plain(h["uuid"].as_str().unwrap_or_default()),
                Cell::plain(h["namespace"].as_str().unwrap_or_default()),
                Cell::plain(h["url"].as_str().unwrap_or_default()),
                Cell::plain(states.join(",")),
                Cell::plain(filters(h)),
            ]
        })
        .collect();
    output::say(
        output::table(
            &["UUID", "NAMESPACE", "URL", "STATES", "FILTERS"],
            &rows,
            output::stdout_colors(),
        )
        .trim_end_matches('\n'),
    );
    Ok(())
}

async fn rm(api: &Api, a: RmArgs) -> Result<()> {
    let uuid = uuid_segment(&a.uuid)?;
    api.send(Method::DELETE, &format!("{WEBHOOKS}{uuid}/"), &[], None)
        .await?;
    output::say(format_args!("Removed webhook {uuid}"));
    Ok(())
}

async fn deliveries(api: &Api, a: DeliveriesArgs) -> Result<()> {
    let uuid = uuid_segment(&a.uuid)?;
    let body = api
        .get(
            &format!("{WEBHOOKS}{uuid}/delivery/"),
            &[("limit", a.limit.max(1).to_string())],
        )
        .await?;
    let items = body["objects"].as_array().cloned().unwrap_or_default();
    if a.json {
        output::say(serde_json::to_string_pretty(&items)?);
        return Ok(());
    }
    let now = chrono::Utc::now();
    let rows: Vec<Vec<Cell>> = items
        .iter()
        .map(|d| {
            let status = d["status"].as_str().unwrap_or_default();
            let color = match status {
                "delivered" => Color::Green,
                "failed" => Color::Red,
                _ => Color::Yellow,
            };
            let result = match (d["last_status_code"].as_i64(), d["last_error"].as_str()) {
                (_, Some(e)) if status != "delivered" => e.to_string(),
                (Some(code), _) => format!("HTTP {code}"),
                _ => "-".into(),
            };
            vec![
                Cell::plain(d["uuid"].as_str().unwrap_or_default()),
                Cell::plain(d["action_uuid"].as_str().unwrap_or_default()),
                Cell::plain(d["state"].as_str().unwrap_or_default()),
                Cell::colored(status, color),
                Cell::plain(d["attempts"].as_i64().unwrap_or_default().to_string()),
                Cell::plain(result),
                Cell::plain(output::relative_cell(d["next_attempt_at"].as_str(), now)),
            ]
        })
        .collect();
    output::say(
        output::table(
            &[
                "DELIVERY",
                "ACTION",
                "STATE",
                "STATUS",
                "ATTEMPTS",
                "LAST RESULT",
                "NEXT ATTEMPT",
            ],
            &rows,
            output::stdout_colors(),
        )
        .trim_end_matches('\n'),
    );
    Ok(())
}
