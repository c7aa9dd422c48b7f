//! Settings shared by the subcommands: flags, then `STEVEDORE_*` environment
//! variables (clap reads both), then `stevedore.toml`, then defaults.

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use std::path::PathBuf;
use stevedore_shared::config::{FileConfig, Operations, EXAMPLE_CONFIG};

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
