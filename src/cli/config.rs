//! Where the client connects and as whom: flags, then `STEVEDORE_*`
//! environment variables (clap reads both), then the credentials file that
//! `stevedore login` writes, then defaults.

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The API a client talks to when nothing else is configured (`stevedore dev`'s default).
pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";

/// Connection options every client command takes.
#[derive(Debug, Clone, Default, Args)]
pub struct ConnArgs {
    /// API URL [default: the credentials file's, else http://127.0.0.1:8080].
    #[arg(long, env = "STEVEDORE_URL", global = true, help_heading = "Connection")]
    pub url: Option<String>,
    /// Websocket stream URL (logs, events) [default: the API URL].
    #[arg(
        long,
        env = "STEVEDORE_STREAM_URL",
        global = true,
        help_heading = "Connection"
    )]
    pub stream_url: Option<String>,
    /// User name.
    #[arg(long, env = "STEVEDORE_USER", global = true, help_heading = "Connection")]
    pub user: Option<String>,
    /// API key.
    #[arg(
        long,
        env = "STEVEDORE_APIKEY",
        global = true,
        hide_env_values = true,
        help_heading = "Connection"
    )]
    pub apikey: Option<String>,
}

/// What the credentials file holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    /// API URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Stream URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_url: Option<String>,
    /// User name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// API key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apikey: Option<String>,
}

/// Resolved connection settings.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub url: String,
    pub stream_url: String,
    pub user: Option<String>,
    pub apikey: Option<String>,
}

/// `$STEVEDORE_CREDENTIALS`, else `$XDG_CONFIG_HOME/stevedore/credentials.toml`,
/// else `~/.config/stevedore/credentials.toml`.
pub fn credentials_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("STEVEDORE_CREDENTIALS").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let config_dir = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|p| !p.is_empty())
                .map(|h| PathBuf::from(h).join(".config"))
        })?;
    Some(config_dir.join("stevedore").join("credentials.toml"))
}

/// Reads the credentials file; a missing file is empty credentials.
pub fn load_credentials(path: &Path) -> Result<Credentials> {
    match std::fs::read_to_string(path) {
        Ok(text) => toml::from_str(&text).with_context(|| format!("cannot parse {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Credentials::default()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Writes the credentials file readable by its owner only (0600; its
/// directory 0700 when created), replacing it atomically.
pub fn save_credentials(path: &Path, creds: &Credentials) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let text = toml::to_string(creds).context("cannot serialize the credentials")?;
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("credentials"),
        std::process::id()
    ));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    // The umask cannot widen 0600, but be explicit in case the file system ignores `mode`.
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

impl ConnArgs {
    /// Flags and environment first, then the credentials file, then defaults.
    pub fn resolve(&self) -> Result<Resolved> {
        let file = match credentials_path() {
            Some(p) => load_credentials(&p)?,
            None => Credentials::default(),
        };
        Ok(merge(self, &file))
    }
}

fn non_empty(v: &Option<String>) -> Option<String> {
    v.as_ref().filter(|s| !s.trim().is_empty()).cloned()
}

/// Combines flags/environment with the credentials file.
pub fn merge(args: &ConnArgs, file: &Credentials) -> Resolved {
    let url = non_empty(&args.url)
        .or_else(|| non_empty(&file.url))
        .unwrap_or_else(|| DEFAULT_URL.to_string());
    let url = url.trim().trim_end_matches('/').to_string();
    // A stream URL from the file only goes with the file's API URL.
    let file_stream = if non_empty(&args.url).is_none() {
        non_empty(&file.stream_url)
    } else {
        None
    };
    let stream_url = non_empty(&args.stream_url)
        .or(file_stream)
        .unwrap_or_else(|| url.clone())
        .trim()
        .trim_end_matches('/')
        .to_string();
    Resolved {
        url,
        stream_url,
        user: non_empty(&args.user).or_else(|| non_empty(&file.user)),
        apikey: non_empty(&args.apikey).or_else(|| non_empty(&file.apikey)),
    }
}

/// Checks that a URL is one this client can reach: `http://` or `https://`
/// (certificates are checked against the system's roots; `SSL_CERT_FILE`
/// names a PEM file of others, for a private CA).
pub fn check_url(url: &str, what: &str) -> Result<()> {
    let lower = url.to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") {
        Ok(())
    } else {
        bail!("{what} {url:?} is not an http:// or https:// URL")
    }
}

/// The websocket URL for an API URL: `http://` → `ws://`, `https://` → `wss://`.
pub fn websocket_url(url: &str) -> String {
    if let Some(rest) = url.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = url.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        url.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(url: Option<&str>, user: Option<&str>) -> ConnArgs {
        ConnArgs {
            url: url.map(String::from),
            user: user.map(String::from),
            ..Default::default()
        }
    }

    #[test]
    fn flags_and_env_win_over_the_file_which_wins_over_defaults() {
        let file = Credentials {
            url: Some("http://file:1/".into()),
            stream_url: Some("http://file-stream:2".into()),
            user: Some("fileuser".into()),
            apikey: Some("filekey".into()),
        };
        let r = merge(&args(None, None), &file);
        assert_eq!(r.url, "http://file:1");
        assert_eq!(r.stream_url, "http://file-stream:2");
        assert_eq!(r.user.as_deref(), Some("fileuser"));
        assert_eq!(r.apikey.as_deref(), Some("filekey"));

        let r = merge(&args(Some("http://flag:3"), Some("me")), &file);
        assert_eq!(r.url, "http://flag:3");
        assert_eq!(
            r.stream_url, "http://flag:3",
            "the file's stream URL belongs to the file's API"
        );
        assert_eq!(r.user.as_deref(), Some("me"));
        assert_eq!(r.apikey.as_deref(), Some("filekey"));

        let r = merge(&args(Some(""), None), &Credentials::default());
        assert_eq!(r.url, DEFAULT_URL);
        assert_eq!(r.stream_url, DEFAULT_URL);
        assert_eq!(r.user, None);
    }

    #[test]
    fn the_credentials_file_is_private_and_round_trips() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("credentials.toml");
        let creds = Credentials {
            url: Some("http://h:1".into()),
            stream_url: None,
            user: Some("u".into()),
            apikey: Some("k".into()),
        };
        save_credentials(&path, &creds).unwrap();
        save_credentials(&path, &creds).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dir_mode, 0o700);
        assert_eq!(load_credentials(&path).unwrap(), creds);
        assert_eq!(
            load_credentials(&dir.path().join("missing.toml")).unwrap(),
            Credentials::default()
        );
    }

    #[test]
    fn only_http_urls_are_accepted() {
        assert!(check_url("http://127.0.0.1:8080", "API URL").is_ok());
        assert!(check_url("https://stevedore.example.com", "API URL").is_ok());
        assert_eq!(websocket_url("https://h:1/x"), "wss://h:1/x");
        assert_eq!(websocket_url("http://h:1"), "ws://h:1");
        let e = check_url("ftp://example.invalid", "API URL")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not an http:// or https:// URL"), "{e}");
        assert!(check_url("example.invalid", "API URL").is_err());
    }
}
