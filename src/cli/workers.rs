//! `stevedore worker ls`: the live workers (`GET /api/v1/worker/`, admins
//! only), as a table or JSON.

use super::config::ConnArgs;
use super::http::{Api, ApiError};
use super::output::{self, relative_cell, Cell};
use anyhow::{anyhow, Result};
use clap::{Args, Subcommand};
use reqwest::StatusCode;
use serde_json::Value;

/// The workers registry's collection.
pub const WORKERS: &str = "/api/v1/worker/";
/// Workers read per request.
const PAGE: u64 = 1000;

/// The client subcommands of `stevedore worker` (without one, `stevedore
/// worker` runs a worker).
#[derive(Debug, Subcommand)]
pub enum WorkerCommand {
    /// Lists the live workers (admins only): id, host, pid, version, start,
    /// busy slots and running actions, last heartbeat.
    #[command(visible_alias = "list")]
    Ls(WorkerLsArgs),
}

/// `worker ls` options.
#[derive(Debug, Args)]
pub struct WorkerLsArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Print the workers as a JSON array.
    #[arg(long)]
    pub json: bool,
}

/// A 403 or 404 says what it means here.
fn explain(e: ApiError) -> anyhow::Error {
    match e.status() {
        Some(StatusCode::FORBIDDEN) => anyhow!("{e} (the workers list is for admins)"),
        Some(StatusCode::NOT_FOUND) => anyhow!("this server has no workers API ({WORKERS}): {e}"),
        _ => e.into(),
    }
}

/// Runs a worker subcommand.
pub async fn run(command: WorkerCommand) -> Result<()> {
    match command {
        WorkerCommand::Ls(a) => {
            let api = Api::new(&a.conn.resolve()?)?;
            let workers = api.all_pages(WORKERS, &[], 0, PAGE).await.map_err(explain)?;
            if a.json {
                output::say(serde_json::to_string_pretty(&workers)?);
            } else if workers.is_empty() {
                eprintln!("no live workers");
            } else {
                let table = render(&workers, chrono::Utc::now(), output::stdout_colors());
                output::say(table.trim_end_matches('\n'));
            }
            Ok(())
        }
    }
}

/// The `worker ls` table.
pub fn render(workers: &[Value], now: chrono::DateTime<chrono::Utc>, colors: bool) -> String {
    let rows: Vec<Vec<Cell>> = workers
        .iter()
        .map(|w| {
            let running: Vec<&str> = w["running_actions"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let concurrency = w["concurrency"].as_i64().unwrap_or_default();
            vec![
                Cell::plain(w["id"].as_str().unwrap_or_default()),
                Cell::plain(w["host"].as_str().unwrap_or_default()),
                Cell::plain(w["pid"].as_i64().map(|p| p.to_string()).unwrap_or_default()),
                Cell::plain(w["version"].as_str().unwrap_or_default()),
                Cell::plain(relative_cell(w["started"].as_str(), now)),
                Cell::plain(format!("{}/{concurrency}", running.len())),
                Cell::plain(relative_cell(w["last_heartbeat"].as_str(), now)),
                Cell::plain(running.join(",")),
            ]
        })
        .collect();
    output::table(
        &[
            "ID",
            "HOST",
            "PID",
            "VERSION",
            "STARTED",
            "BUSY",
            "HEARTBEAT",
            "RUNNING",
        ],
        &rows,
        colors,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_render_as_a_table() {
        let now = chrono::DateTime::parse_from_rfc3339("2024-05-06T07:10:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let workers: Vec<Value> = serde_json::from_str(
            r#"[{"id": "h1:42:ab", "host": "h1", "pid": 42, "version": "1.2.3",
                 "started": "Mon, 06 May 2024 07:08:00 +0000", "concurrency": 8,
                 "running_actions": ["7eaf7fff-882c-4f3d-9a8f-a22317ac00ce"],
                 "last_heartbeat": "Mon, 06 May 2024 07:09:58 +0000"}]"#,
        )
        .unwrap();
        let t = render(&workers, now, false);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 2, "{t}");
        assert!(lines[0].starts_with("ID") && lines[0].contains("BUSY"), "{t}");
        assert!(lines[1].starts_with("h1:42:ab  h1"), "{t}");
        assert!(lines[1].contains(" 1/8 "), "{t}");
        assert!(lines[1].ends_with("7eaf7fff-882c-4f3d-9a8f-a22317ac00ce"), "{t}");
    }
}
