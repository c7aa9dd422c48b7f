//! Settings shared by the subcommands: flags, then `STEVEDORE_*` environment
//! variables (clap reads both), then `stevedore.toml`, then defaults.

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;
use stevedore_core::config::{FileConfig, HttpSettings, Operations, EXAMPLE_CONFIG};

/// Default listen address of the servers.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default data directory of `stevedore dev`.
pub const DEFAULT_DATA_DIR: &str = "./stevedore-data";

/// Log output format.
#[derive(Debug, Clone, Copy, Default, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Options every subcommand takes.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// Configuration file (stevedore.toml).
    #[arg(long, env = "STEVEDORE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Database URL: postgres://… or sqlite://… (default for dev and admin
    /// commands: the dev data directory's SQLite file).
    #[arg(long, env = "STEVEDORE_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Log format.
    #[arg(long, env = "STEVEDORE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

impl CommonArgs {
    /// The config file's contents (empty config when none is given).
    pub fn file(&self) -> Result<FileConfig> {
        match &self.config {
            Some(p) => Ok(FileConfig::load(p)?),
            None => Ok(FileConfig::default()),
        }
    }

    /// The database URL from flag/env, then the file.
    pub fn database_url(&self, file: &FileConfig) -> Option<String> {
        self.database_url.clone().or_else(|| file.database_url.clone())
    }

    /// Starts logging to stderr (`RUST_LOG` filters; default `info`).
    pub fn init_logging(&self) {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn,lapin=warn"));
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr);
        let _ = match self.log_format {
            LogFormat::Text => builder.try_init(),
            LogFormat::Json => builder.json().try_init(),
        };
    }
}

/// The `[http]` limits, each overridable by a flag or `STEVEDORE_HTTP_*`
/// variable (servers only: `dev`, `api`, `stream`).
#[derive(Debug, Clone, Default, Args)]
pub struct HttpArgs {
    /// Time a client has to send a request's headers ([http] header_read_timeout).
    #[arg(long, env = "STEVEDORE_HTTP_HEADER_READ_TIMEOUT", value_parser = humantime::parse_duration)]
    pub header_read_timeout: Option<Duration>,
    /// A connection idle this long is closed ([http] idle_timeout).
    #[arg(long, env = "STEVEDORE_HTTP_IDLE_TIMEOUT", value_parser = humantime::parse_duration)]
    pub idle_timeout: Option<Duration>,
    /// Longest a non-streaming request may take ([http] request_timeout).
    #[arg(long, env = "STEVEDORE_HTTP_REQUEST_TIMEOUT", value_parser = humantime::parse_duration)]
    pub request_timeout: Option<Duration>,
    /// Connections served at once ([http] max_connections).
    #[arg(long, env = "STEVEDORE_HTTP_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Streams (websockets and event streams) one user may hold open ([http] max_websockets_per_user).
    #[arg(long, env = "STEVEDORE_HTTP_MAX_WEBSOCKETS_PER_USER")]
    pub max_websockets_per_user: Option<usize>,
    /// Long-polls one user may hold ([http] max_waits_per_user).
    #[arg(long, env = "STEVEDORE_HTTP_MAX_WAITS_PER_USER")]
    pub max_waits_per_user: Option<usize>,
    /// Bytes of rows one list page may hold ([http] page_bytes).
    #[arg(long, env = "STEVEDORE_HTTP_PAGE_BYTES")]
    pub page_bytes: Option<usize>,
    /// Most objects include_related may expand to ([http] max_related).
    #[arg(long, env = "STEVEDORE_HTTP_MAX_RELATED")]
    pub max_related: Option<i64>,
    /// Largest logs websocket `tail` ([http] max_log_tail).
    #[arg(long, env = "STEVEDORE_HTTP_MAX_LOG_TAIL")]
    pub max_log_tail: Option<i64>,
    /// Bytes one stream client (websocket or event stream) may have queued ([http] client_queue_bytes).
    #[arg(long, env = "STEVEDORE_HTTP_CLIENT_QUEUE_BYTES")]
    pub client_queue_bytes: Option<usize>,
}

impl HttpArgs {
    /// The file's `[http]` settings with the flags and environment on top.
    pub fn resolve(&self, file: &FileConfig) -> Result<HttpSettings> {
        let mut h = file.http.clone();
        macro_rules! over {
            ($($field:ident),*) => { $( if let Some(v) = self.$field { h.$field = v; } )* };
        }
        over!(
            header_read_timeout,
            idle_timeout,
            request_timeout,
            max_connections,
            max_websockets_per_user,
            max_waits_per_user,
            page_bytes,
            max_related,
            max_log_tail,
            client_queue_bytes
        );
        if h.max_connections == 0 || h.page_bytes == 0 || h.client_queue_bytes == 0 || h.max_related < 1 {
            anyhow::bail!(
                "[http] max_connections, page_bytes, client_queue_bytes and max_related must be positive"
            );
        }
        if h.max_log_tail < 0 {
            anyhow::bail!("[http] max_log_tail must not be negative");
        }
        Ok(h)
    }
}

/// The operations of a config file, or the example config's demo operations
/// when the file declares none and `demo_fallback` is set.
pub fn operations(file: &FileConfig, demo_fallback: bool) -> Result<Operations> {
    if file.operations.is_empty() && demo_fallback {
        let demo = FileConfig::parse(EXAMPLE_CONFIG).context("the built-in example config")?;
        return Ok(demo.operations()?);
    }
    Ok(file.operations()?)
}

/// The SQLite URL of a dev data directory (created if missing).
pub fn dev_database_url(data_dir: &std::path::Path) -> Result<String> {
    std::fs::create_dir_all(data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
    Ok(format!("sqlite://{}", data_dir.join("stevedore.db").display()))
}
