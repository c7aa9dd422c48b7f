//! `stevedore apikey ls` and `stevedore apikey revoke`: listing a user's
//! keys (never the keys) and taking one back.
//!
//! A revocation is committed to the store first (the key and every session
//! made from it are deleted, the credential revision advances), then
//! announced on RabbitMQ's control exchange when a RabbitMQ URL is
//! configured, so that running API and stream processes forget the user's
//! cached credentials at once. `stevedore dev` processes need no message:
//! they read the store's revision (see the API's `revocation` module).

use crate::roles::{admin_log, admin_store};
use crate::settings::{CommonArgs, DEFAULT_DATA_DIR};
use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use clap::Args;
use std::path::PathBuf;
use std::time::Duration;
use stevedore_broker::amqp::AmqpBroker;
use stevedore_core::broker::{Broker, BrokerNames};
use stevedore_core::messages::Control;
use stevedore_core::store::{redact_url, ApiKeyInfo, DynStore};
use stevedore_core::Error;

/// How long a revocation's announcement may take before the command gives
/// up on it (the revocation itself is committed by then).
const ANNOUNCE_TIMEOUT: Duration = Duration::from_secs(10);

/// `stevedore apikey ls` options.
#[derive(Debug, Args)]
pub struct ApikeyLsArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// The user whose keys to list.
    user: String,
    /// Where the dev SQLite database lives (when no database URL is given).
    #[arg(long, env = "STEVEDORE_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
}

/// `stevedore apikey revoke` options.
#[derive(Debug, Args)]
pub struct ApikeyRevokeArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// The user the key belongs to.
    user: String,
    /// The key's id, as `stevedore apikey ls` shows it.
    key_id: i64,
    /// RabbitMQ URL, to tell running API and stream processes at once
    /// (without it they notice within [auth] credential_cache_ttl, 5 s by default).
    #[arg(long, env = "STEVEDORE_AMQP_URL")]
    amqp_url: Option<String>,
    /// Prefix of queue and exchange names.
    #[arg(long, env = "STEVEDORE_BROKER_PREFIX")]
    broker_prefix: Option<String>,
    /// Where the dev SQLite database lives (when no database URL is given).
    #[arg(long, env = "STEVEDORE_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
}

/// The user's keys, or an error that names the way out.
async fn keys_of(store: &DynStore, user: &str) -> Result<Vec<ApiKeyInfo>> {
    match store.api_keys(user).await {
        Err(Error::NotFound(_)) => {
            bail!("no user named {user:?}; create it with `stevedore user create`")
        }
        other => Ok(other?),
    }
}

fn when(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// The listing: one line per key, oldest first.
fn key_table(keys: &[ApiKeyInfo]) -> String {
    let mut out = format!(
        "{:<8} {:<11} {:<23} {}\n",
        "ID", "FINGERPRINT", "CREATED", "LAST USED"
    );
    for k in keys {
        let used = k.last_used_at.map_or_else(|| "never".to_string(), when);
        out.push_str(&format!(
            "{:<8} {:<11} {:<23} {}\n",
            k.id,
            k.fingerprint,
            when(k.created_at),
            used
        ));
    }
    out
}

/// `stevedore apikey ls`.
pub async fn apikey_ls(a: ApikeyLsArgs) -> Result<()> {
    let store = admin_store(&a.common, &a.data_dir).await?;
    let keys = keys_of(&store, &a.user).await?;
    if keys.is_empty() {
        eprintln!(
            "{} has no API key; create one with `stevedore apikey create {}`",
            a.user, a.user
        );
        return Ok(());
    }
    print!("{}", key_table(&keys));
    Ok(())
}

/// `stevedore apikey revoke`.
pub async fn apikey_revoke(a: ApikeyRevokeArgs) -> Result<()> {
    let file = a.common.file()?;
    let store = admin_store(&a.common, &a.data_dir).await?;
    keys_of(&store, &a.user).await?;
    let revoked = match store.revoke_api_key(&a.user, a.key_id).await {
        Err(Error::NotFound(_)) => bail!(
            "{} has no API key {}; `stevedore apikey ls {}` lists their keys",
            a.user,
            a.key_id,
            a.user
        ),
        other => other?,
    };
    let sessions = match revoked.sessions {
        1 => "1 session".to_string(),
        n => format!("{n} sessions"),
    };
    admin_log(
        &store,
        &a.user,
        format!(
            "API key {} ({}) of {} revoked; {sessions} ended",
            a.key_id, revoked.fingerprint, a.user
        ),
    )
    .await;
    eprintln!(
        "revoked API key {} ({}) of {}; {sessions} ended",
        a.key_id, revoked.fingerprint, a.user
    );

    let prefix = a
        .broker_prefix
        .or_else(|| file.broker_prefix.clone())
        .unwrap_or_else(|| "stevedore".into());
    let amqp = a.amqp_url.or_else(|| file.amqp_url.clone());
    tell_running_processes(amqp, prefix, &a.user, &a.common, &file).await;
    if keys_of(&store, &a.user).await?.is_empty() {
        eprintln!(
            "{} has no API key left; create one with `stevedore apikey create {}`",
            a.user, a.user
        );
    }
    Ok(())
}

/// After `user`'s credentials changed in the store (a key revoked, the admin
/// flag changed): tells running API and stream processes to forget their
/// cached credentials, on RabbitMQ when a URL is configured, and says what
/// happened. `stevedore dev` needs no message: it reads the store's revision.
pub(crate) async fn tell_running_processes(
    amqp_url: Option<String>,
    prefix: String,
    user: &str,
    common: &CommonArgs,
    file: &stevedore_core::config::FileConfig,
) {
    let within = humantime::format_duration(file.auth.credential_cache_ttl);
    let postgres = common
        .database_url(file)
        .is_some_and(|u| u.starts_with("postgres"));
    match amqp_url {
        Some(url) => {
            let told = tokio::time::timeout(ANNOUNCE_TIMEOUT, announce(&url, prefix, user)).await;
            match told {
                Ok(Ok(())) => eprintln!("running API and stream processes were told"),
                Ok(Err(e)) => eprintln!(
                    "warning: running API and stream processes were not told ({e:#}); they notice within {within}"
                ),
                Err(_) => eprintln!(
                    "warning: RabbitMQ at {} did not answer; running API and stream processes notice within {within}",
                    redact_url(&url)
                ),
            }
        }
        None if postgres => eprintln!(
            "note: no RabbitMQ URL (--amqp-url, STEVEDORE_AMQP_URL or amqp_url), so running API and \
             stream processes were not told; they notice within {within}"
        ),
        // `stevedore dev` reads the store's revision before trusting its cache.
        None => {}
    }
}

/// Publishes the revocation of `user`'s credentials on the control exchange.
async fn announce(url: &str, prefix: String, user: &str) -> Result<()> {
    let broker = AmqpBroker::connect(url, BrokerNames::new(prefix))
        .await
        .with_context(|| format!("connecting to {}", redact_url(url)))?;
    broker
        .declare()
        .await
        .context("declaring the RabbitMQ topology")?;
    broker
        .publish_control(&Control::Revoke {
            user: user.to_string(),
        })
        .await
        .context("publishing the revocation")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listing_shows_ids_fingerprints_and_uses_only() {
        let t = DateTime::parse_from_rfc3339("2024-05-06T07:08:09Z")
            .unwrap()
            .with_timezone(&Utc);
        let keys = [
            ApiKeyInfo {
                id: 1,
                fingerprint: "0a1b2c3d".into(),
                created_at: t,
                last_used_at: None,
            },
            ApiKeyInfo {
                id: 12,
                fingerprint: "ffeeddcc".into(),
                created_at: t,
                last_used_at: Some(t),
            },
        ];
        let table = key_table(&keys);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3, "{table}");
        assert!(lines[0].starts_with("ID") && lines[0].contains("FINGERPRINT"));
        assert!(lines[1].starts_with("1 ") && lines[1].contains("0a1b2c3d") && lines[1].ends_with("never"));
        assert!(lines[2].contains("2024-05-06 07:08:09 UTC") && lines[2].starts_with("12 "));
    }
}
