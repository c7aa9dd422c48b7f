//! `stevedore log ls|export`: the system log (`GET /api/v1/log`,
//! `GET /api/v1/log/export`).

use super::config::ConnArgs;
use super::http::{Api, ApiError};
use super::output::{self, Cell, Color};
use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};
use reqwest::StatusCode;
use serde_json::Value;
use std::io::Write;
use std::path::PathBuf;

const LOG: &str = "/api/v1/log";
const EXPORT: &str = "/api/v1/log/export";

/// `stevedore log …`.
#[derive(Debug, Args)]
pub struct LogArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    #[command(subcommand)]
    pub command: LogCommand,
}

/// The system log subcommands.
#[derive(Debug, Subcommand)]
pub enum LogCommand {
    /// Lists system log records, newest first.
    #[command(visible_alias = "list")]
    Ls(LogLsArgs),
    /// Writes the system log as CSV to stdout or a file.
    Export(LogExportArgs),
}

/// Filters both subcommands take.
#[derive(Debug, Args, Default)]
pub struct LogFilters {
    /// Only records of this level: INFO, WARN, ERROR.
    #[arg(long)]
    pub level: Option<String>,
    /// Only records of this category (e.g. container, system).
    #[arg(long)]
    pub category: Option<String>,
    /// Only records of this user.
    #[arg(long = "by", value_name = "USER")]
    pub by: Option<String>,
    /// Only records whose message contains this text.
    #[arg(long)]
    pub text: Option<String>,
    /// From this time: epoch seconds, RFC 3339, a date (YYYY-MM-DD, UTC) or
    /// an age such as 10m, 2h.
    #[arg(long)]
    pub since: Option<String>,
    /// Until this time, as for --since.
    #[arg(long)]
    pub until: Option<String>,
}

/// `log ls` options.
#[derive(Debug, Args)]
pub struct LogLsArgs {
    #[command(flatten)]
    pub filters: LogFilters,
    /// At most this many records.
    #[arg(short = 'n', long, default_value_t = 20)]
    pub limit: u64,
    /// Skip this many records.
    #[arg(long)]
    pub offset: Option<u64>,
    /// Print the records as a JSON array.
    #[arg(long)]
    pub json: bool,
}

/// `log export` options.
#[derive(Debug, Args)]
pub struct LogExportArgs {
    #[command(flatten)]
    pub filters: LogFilters,
    /// Write the CSV to this file instead of stdout.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
}

/// Epoch seconds from a time given as epoch seconds, RFC 3339, a date or an age.
pub fn epoch(value: &str) -> Result<i64> {
    let v = value.trim();
    if let Ok(n) = v.parse::<i64>() {
        return Ok(n);
    }
    if let Ok(d) = chrono::DateTime::parse_from_rfc3339(v) {
        return Ok(d.timestamp());
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).expect("midnight").and_utc().timestamp());
    }
    if let Ok(age) = humantime::parse_duration(v) {
        let at = chrono::Utc::now() - chrono::Duration::from_std(age).unwrap_or_default();
        return Ok(at.timestamp());
    }
    bail!("{v:?} is not a time: give epoch seconds, RFC 3339, YYYY-MM-DD or an age such as 2h")
}

impl LogFilters {
    /// The query parameters the log API documents.
    pub fn query(&self) -> Result<Vec<(&'static str, String)>> {
        let mut q = vec![];
        for (k, v) in [
            ("level", &self.level),
            ("category", &self.category),
            ("user", &self.by),
            ("text", &self.text),
        ] {
            if let Some(v) = v.as_ref().filter(|v| !v.is_empty()) {
                q.push((k, v.clone()));
            }
        }
        if let Some(s) = &self.since {
            q.push(("time_start", epoch(s).context("--since")?.to_string()));
        }
        if let Some(u) = &self.until {
            q.push(("time_end", epoch(u).context("--until")?.to_string()));
        }
        Ok(q)
    }
}

/// A 404 from a server without the log API says so plainly.
fn explain(e: ApiError) -> anyhow::Error {
    if e.status() == Some(StatusCode::NOT_FOUND) {
        anyhow!("this server has no system log API ({LOG}): {e}")
    } else {
        e.into()
    }
}

/// Runs a log subcommand.
pub async fn run(args: LogArgs) -> Result<()> {
    let api = Api::new(&args.conn.resolve()?)?;
    match args.command {
        LogCommand::Ls(a) => ls(&api, a).await,
        LogCommand::Export(a) => export(&api, a).await,
    }
}

/// The `log ls` table.
pub fn render(records: &[Value], colors: bool) -> String {
    let rows: Vec<Vec<Cell>> = records
        .iter()
        .map(|r| {
            let date = r["ts"]
                .as_i64()
                .and_then(|t| chrono::DateTime::from_timestamp(t, 0))
                .map(|d| d.format("%Y-%m-%d %H:%M:%S").to_string())
                .unwrap_or_default();
            let level = r["level"].as_str().unwrap_or_default();
            let level_cell = match level {
                "ERROR" => Cell::colored(level, Color::Red),
                "WARN" | "WARNING" => Cell::colored(level, Color::Yellow),
                _ => Cell::plain(level),
            };
            vec![
                Cell::plain(r["id"].as_i64().map(|i| i.to_string()).unwrap_or_default()),
                Cell::plain(date),
                level_cell,
                Cell::plain(r["category"].as_str().unwrap_or_default()),
                Cell::plain(r["user"].as_str().unwrap_or_default()),
                Cell::plain(r["message"].as_str().unwrap_or_default()),
            ]
        })
        .collect();
    output::table(
        &["ID", "DATE (UTC)", "LEVEL", "CATEGORY", "USER", "MESSAGE"],
        &rows,
        colors,
    )
}

async fn ls(api: &Api, a: LogLsArgs) -> Result<()> {
    let mut q = a.filters.query()?;
    q.push(("limit", a.limit.to_string()));
    if let Some(o) = a.offset {
        q.push(("offset", o.to_string()));
    }
    let body = api.get(LOG, &q).await.map_err(explain)?;
    let Some(records) = body.as_array() else {
        bail!("unexpected response: {LOG} did not answer with a JSON array");
    };
    if a.json {
        output::say(format_args!("{}", serde_json::to_string_pretty(records)?));
    } else {
        output::say(render(records, output::stdout_colors()).trim_end_matches('\n'));
    }
    Ok(())
}

async fn export(api: &Api, a: LogExportArgs) -> Result<()> {
    let q = a.filters.query()?;
    let mut resp = api.get_raw(EXPORT, &q).await.map_err(explain)?;
    let mut sink: Box<dyn Write> = match &a.output {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
        )),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut written = 0usize;
    let result: Result<()> = async {
        while let Some(chunk) = resp.chunk().await.map_err(|e| api.read_error(e))? {
            sink.write_all(&chunk)?;
            written += chunk.len();
        }
        sink.flush()?;
        Ok(())
    }
    .await;
    if let Err(e) = result {
        if let Some(p) = &a.output {
            let _ = std::fs::remove_file(p);
        }
        return Err(e);
    }
    if let Some(p) = &a.output {
        eprintln!("wrote {written} bytes to {}", p.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_become_the_documented_query() {
        let f = LogFilters {
            level: Some("ERROR".into()),
            category: Some("container".into()),
            by: Some("alice".into()),
            text: Some("backup".into()),
            since: Some("1426613400".into()),
            until: Some("2015-03-18".into()),
        };
        let q = f.query().unwrap();
        assert_eq!(
            q,
            vec![
                ("level", "ERROR".to_string()),
                ("category", "container".to_string()),
                ("user", "alice".to_string()),
                ("text", "backup".to_string()),
                ("time_start", "1426613400".to_string()),
                ("time_end", "1426636800".to_string()),
            ]
        );
        assert_eq!(epoch("2015-03-17T17:30:00Z").unwrap(), 1426613400);
        assert!(epoch("soon").is_err());
    }

    #[test]
    fn records_render_as_a_table() {
        let records: Vec<Value> = serde_json::from_str(
            r#"[{"category": "import", "id": 52, "level": "INFO",
                 "message": "Finished import", "ts": 1426613412, "user": "Anonymous"},
                {"category": "backup", "id": 51, "level": "ERROR",
                 "message": "Backup error", "ts": 1426613408, "user": "system"}]"#,
        )
        .unwrap();
        let t = render(&records, false);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(
            lines[1].starts_with("52  2015-03-17 17:30:12  INFO   import    Anonymous  Finished import"),
            "{t}"
        );
        assert!(
            lines[2].contains("ERROR  backup    system     Backup error"),
            "{t}"
        );
    }
}
